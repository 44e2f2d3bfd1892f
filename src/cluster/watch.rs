//! Follows the other replicas: a snapshot at one revision, then a watch
//! from the next, each batch handed to the [`Applier`] on a blocking
//! thread (in order: one batch at a time).
//!
//! A watch that fails is resumed from the revision after the last one
//! applied; one whose start revision etcd has compacted away means a fresh
//! snapshot (the applier replaces what it knew), never a crash. Meanwhile
//! the registry keeps what it has: the other replicas' producers as last
//! seen.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::apply::{Applier, Update};
use super::keys::Layout;
use super::mirror::Mirror;
use crate::stats::ClusterStats;

/// Keys per page of a snapshot (etcd answers each page at the snapshot's
/// revision). etcd 3.4 walks its index over the whole rest of the range
/// for every page, so small pages cost the square of the key count: a
/// medium fleet's 100,100 keys took 2.4 s to fetch in pages of 2,000, and
/// 0.77 s in pages of 20,000 (this 2-core VM, the fleet's bench running).
const PAGE: i64 = 20_000;

/// The largest snapshot page accepted: 20,000 keys of up to ~3 KB each
/// (gRPC's default limit, 4 MiB, holds pages of ~150-byte keys only).
const MAX_PAGE_BYTES: usize = 64 << 20;

pub struct Watcher {
    pub client: Client,
    pub layout: Layout,
    pub applier: Arc<Mutex<Applier>>,
    pub mirror: Arc<Mirror>,
    pub stats: Arc<ClusterStats>,
    pub stop: CancellationToken,
}

type Result<T> = std::result::Result<T, etcd_client::Error>;

/// The state of retrying etcd calls: whether an outage is under way (its
/// first failure was logged) and the pause before the next attempt.
struct Retry {
    failing: bool,
    backoff: Duration,
}

/// The first pause after a failure (doubling up to [`MAX_BACKOFF`]).
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why a watch ended.
enum Ended {
    /// The revision to resume from is gone: load a snapshot.
    Compacted,
    /// The connection failed; resume from the next revision.
    Lost(etcd_client::Error),
    Stopped,
}

impl Watcher {
    pub async fn run(self) {
        let mut retry = Retry {
            failing: false,
            backoff: MIN_BACKOFF,
        };
        // The next revision to watch from; None = load a snapshot first.
        let mut next: Option<i64> = None;
        while !self.stop.is_cancelled() {
            let revision = match next {
                Some(r) => r,
                None => match self.snapshot().await {
                    Ok(r) => r + 1,
                    Err(e) => {
                        let what = || format!("loading the cluster's state from etcd failed: {e}");
                        if self.failed(&mut retry, what).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            next = Some(revision);
            match self.watch(revision, &mut next, &mut retry).await {
                Ended::Stopped => return,
                Ended::Compacted => {
                    info!(
                        "cluster: watch revision {revision} was compacted: loading a fresh snapshot"
                    );
                    next = None;
                }
                Ended::Lost(e) => {
                    let what = || format!("lost the etcd watch: {e}");
                    if self.failed(&mut retry, what).await {
                        return;
                    }
                    continue;
                }
            }
            retry.backoff = MIN_BACKOFF;
        }
    }

    /// After a failed etcd call: logs `what` once per outage (the first
    /// failure), clears the connected gauge and pauses (doubling the next
    /// pause); true if stopped meanwhile.
    async fn failed(&self, retry: &mut Retry, what: impl FnOnce() -> String) -> bool {
        if !retry.failing {
            warn!(
                "cluster: {}; retrying, serving the fleet as last seen",
                what()
            );
            retry.failing = true;
        }
        self.stats.connected.store(false, Relaxed);
        let stopped = tokio::select! {
            _ = tokio::time::sleep(retry.backoff) => false,
            _ = self.stop.cancelled() => true,
        };
        retry.backoff = (retry.backoff * 2).min(MAX_BACKOFF);
        stopped
    }

    /// Loads every key of the cluster at one revision and hands it to the
    /// applier as a resync; returns that revision.
    async fn snapshot(&self) -> Result<i64> {
        let started = Instant::now();
        let root = self.layout.root();
        let end = prefix_end(root.as_bytes());
        let mut client = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_PAGE_BYTES);
        let mut updates = Vec::new();
        let mut from = root.clone().into_bytes();
        let mut revision = 0;
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let page = client.get(from.clone(), Some(options)).await?;
            if revision == 0 {
                revision = page.header().map_or(0, |h| h.revision());
            }
            for kv in page.kvs() {
                if let Some(key) = self.layout.parse(kv.key()) {
                    updates.push(Update::Put(key, kv.value().to_vec()));
                }
            }
            match (page.more(), page.kvs().last()) {
                (true, Some(last)) => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        let keys = updates.len();
        let fetched = started.elapsed();
        self.blocking(move |a| a.resync(updates)).await;
        self.stats.resyncs.fetch_add(1, Relaxed);
        self.stats.connected.store(true, Relaxed);
        let what = if self.stats.ready.swap(true, Relaxed) {
            "resynchronised"
        } else {
            "loaded the cluster's state"
        };
        info!(
            "cluster: {what}: {keys} keys at revision {revision} in {:?} (fetched in {fetched:?})",
            started.elapsed()
        );
        Ok(revision)
    }

    /// Watches from `revision`, applying each batch; keeps `next` at the
    /// revision after the last one applied. A watch that answers ends an
    /// outage: the next failure pauses [`MIN_BACKOFF`] first again.
    async fn watch(&self, revision: i64, next: &mut Option<i64>, retry: &mut Retry) -> Ended {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision);
        let mut client = self.client.clone();
        let mut stream = match client.watch(self.layout.root(), Some(options)).await {
            Ok(s) => s,
            Err(e) => return Ended::Lost(e),
        };
        loop {
            let message = tokio::select! {
                m = stream.message() => m,
                _ = self.mirror.local_changed.notified() => {
                    self.blocking(|a| a.local_changed()).await;
                    continue;
                }
                _ = self.stop.cancelled() => return Ended::Stopped,
            };
            let response = match message {
                Ok(Some(r)) => r,
                Ok(None) => {
                    return Ended::Lost(etcd_client::Error::WatchError(
                        "watch stream ended".into(),
                    ));
                }
                Err(e) => return Ended::Lost(e),
            };
            if response.compact_revision() > 0 {
                return Ended::Compacted;
            }
            if response.canceled() {
                let reason = response.cancel_reason();
                // etcd answers a watch made with an expired or unknown auth
                // token (simple tokens expire unused after --auth-token-ttl,
                // and all die with an etcd restart) with a cancel, "invalid
                // auth token", not with an error of the call: etcd-client's
                // automatic refresh never sees it, and the same dead token
                // would be tried forever by a replica with nothing to
                // publish. Take a new one for the next attempt (nothing to
                // take without credentials).
                debug!("cluster: etcd canceled the watch ({reason}): taking a new auth token");
                tokio::select! {
                    r = self.client.refresh_token() => if let Err(e) = r {
                        debug!("cluster: taking a new etcd auth token failed: {e}");
                    },
                    _ = self.stop.cancelled() => return Ended::Stopped,
                }
                return Ended::Lost(etcd_client::Error::WatchError(format!(
                    "watch canceled: {reason}"
                )));
            }
            if retry.failing {
                info!("cluster: watching etcd again");
                retry.failing = false;
            }
            retry.backoff = MIN_BACKOFF;
            self.stats.connected.store(true, Relaxed);
            let mut updates = Vec::with_capacity(response.events().len());
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let Some(key) = self.layout.parse(kv.key()) else {
                    continue;
                };
                // Resume after the last event seen (not the header's
                // revision: a watch catching up reports the store's).
                *next = Some(kv.mod_revision() + 1);
                updates.push(match event.event_type() {
                    EventType::Put => Update::Put(key, kv.value().to_vec()),
                    EventType::Delete => Update::Delete(key),
                });
            }
            if !updates.is_empty() {
                self.stats.received.fetch_add(updates.len() as u64, Relaxed);
                self.blocking(move |a| a.apply(updates)).await;
            }
        }
    }

    /// Runs `f` on the applier on a blocking thread (registry writes for a
    /// whole fleet must not hold up a runtime worker) and waits for it.
    async fn blocking(&self, f: impl FnOnce(&mut Applier) + Send + 'static) {
        let applier = Arc::clone(&self.applier);
        let done = tokio::task::spawn_blocking(move || {
            let mut a = applier.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut a);
        })
        .await;
        if let Err(e) = done {
            warn!("cluster: applying changes from etcd failed: {e}");
        }
    }
}

/// The end of the range of keys starting with `prefix` (etcd's rule: the
/// prefix with its last byte incremented).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
