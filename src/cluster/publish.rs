//! Publishes this replica's registrations to etcd, and keeps its lease.
//!
//! Waits for the mirror to mark keys, then writes each marked key's current
//! value (or deletes it) in transactions of at most `--etcd-max-txn-ops`
//! operations; admin writes go first, in order, each in a transaction of
//! its own, so that a topic deleted then registered again ends registered.
//! Nothing waits for it: a TCP answer was sent when the registry changed.
//!
//! Every key of this replica carries its lease, kept alive every third of
//! its TTL, also while transactions are waiting for their answers (one
//! that was in flight when etcd's leader died waits out etcd's request
//! timeout, about 6 s, longer than the shortest lease). A republish (at
//! start, after the lease was lost, or when the mirror's dirty set
//! overflowed during an outage) takes a fresh lease
//! (a new replica id), writes the whole local state under it and only then
//! revokes the old one: other replicas see each nsqd under both ids for a
//! moment and under the new one after, never under none.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use etcd_client::{Client, DeleteOptions, PutOptions, Txn, TxnOp};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::apply::Own;
use super::keys::{EventValue, Layout, NodeValue, OriginValue, RegValue, replica_id, unix_micros};
use super::mirror::{AdminOp, Dirty, Mirror};
use crate::stats::ClusterStats;

/// How long an event key (a delete) lives: long enough for every watcher
/// to see it; it stays in etcd's history after that until compaction.
const EVENT_TTL_SECS: i64 = 60;

/// Transactions in flight at once.
const PIPELINE: usize = 8;

/// How long a lease keep-alive may wait for its answer.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// How soon a failed keep-alive is tried again while transactions are in
/// flight (between rounds, the publisher's backoff applies).
const KEEP_ALIVE_RETRY: Duration = Duration::from_millis(500);

pub struct Publisher {
    pub client: Client,
    pub layout: Layout,
    pub mirror: Arc<Mirror>,
    pub stats: Arc<ClusterStats>,
    pub own: Own,
    pub lease_ttl: i64,
    pub tombstone_ttl: i64,
    pub max_ops: usize,
    pub stop: CancellationToken,
    lease: Option<i64>,
    replica: String,
    /// The lease must be replaced and everything republished.
    must_republish: bool,
    /// When the lease is to be renewed next.
    next_keep_alive: Instant,
    seq: u64,
}

type Result<T> = std::result::Result<T, etcd_client::Error>;

impl Publisher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        layout: Layout,
        mirror: Arc<Mirror>,
        stats: Arc<ClusterStats>,
        own: Own,
        lease_ttl: i64,
        tombstone_ttl: i64,
        max_ops: usize,
        stop: CancellationToken,
    ) -> Self {
        Publisher {
            client,
            layout,
            mirror,
            stats,
            own,
            lease_ttl,
            tombstone_ttl,
            max_ops: max_ops.max(1),
            stop,
            lease: None,
            replica: String::new(),
            must_republish: true,
            next_keep_alive: Instant::now(),
            seq: 0,
        }
    }

    /// Runs until `stop`; errors are logged and retried with backoff.
    pub async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        let mut failing = false;
        while !self.stop.is_cancelled() {
            match self.round().await {
                Ok(()) => {
                    if failing {
                        info!("cluster: publishing to etcd again");
                        failing = false;
                    }
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    self.stats.publish_errors.fetch_add(1, Relaxed);
                    self.stats.connected.store(false, Relaxed);
                    if !failing {
                        warn!("cluster: publishing to etcd failed: {e}; retrying");
                        failing = true;
                    } else {
                        debug!("cluster: publishing to etcd failed again: {e}");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// One pass: republish if needed, admin writes, then one batch of keys;
    /// or wait for work (or the next keep-alive) when there is none.
    async fn round(&mut self) -> Result<()> {
        if self.must_republish || self.mirror.lock().overflowed {
            self.republish().await?;
        }
        self.keep_alive_if_due().await?;
        loop {
            let next = self.mirror.lock().admin.pop_front();
            let Some(op) = next else { break };
            if let Err(e) = self.send_admin(&op).await {
                self.mirror.lock().admin.push_front(op);
                return Err(e);
            }
        }
        let batch = self.take_batch(PIPELINE * self.max_ops);
        if batch.is_empty() {
            let due = self.keep_alive_due();
            tokio::select! {
                _ = self.mirror.publish.notified() => {}
                _ = tokio::time::sleep(due) => {}
                _ = self.stop.cancelled() => {}
            }
            return Ok(());
        }
        self.send(batch).await
    }

    /// How long until the lease is to be renewed (zero: now).
    fn keep_alive_due(&self) -> Duration {
        self.next_keep_alive
            .saturating_duration_since(Instant::now())
    }

    fn keep_alive_interval(&self) -> Duration {
        Duration::from_secs((self.lease_ttl / 3).max(1) as u64)
    }

    /// Renews the lease if a third of its TTL has passed since the last
    /// renewal; a lease etcd no longer knows means a republish. A failure
    /// is tried again after [`KEEP_ALIVE_RETRY`] at the latest.
    async fn keep_alive_if_due(&mut self) -> Result<()> {
        let Some(lease) = self.lease else {
            return Ok(());
        };
        if Instant::now() < self.next_keep_alive {
            return Ok(());
        }
        self.next_keep_alive = Instant::now() + KEEP_ALIVE_RETRY.min(self.keep_alive_interval());
        // A keep-alive is a stream: bound the wait for its answer (the
        // client's request timeout covers only opening it).
        let answer = tokio::time::timeout(KEEP_ALIVE_TIMEOUT, self.keep_alive_once(lease))
            .await
            .unwrap_or_else(|_| {
                Err(etcd_client::Error::LeaseKeepAliveError(
                    "no keep-alive answer in time".into(),
                ))
            });
        let ttl = match answer {
            Ok(ttl) => ttl,
            Err(e) => {
                self.stats.keepalive_failures.fetch_add(1, Relaxed);
                return Err(e);
            }
        };
        self.next_keep_alive = Instant::now() + self.keep_alive_interval();
        self.stats
            .lease_ttl_seconds
            .store(ttl.max(0) as u64, Relaxed);
        if ttl <= 0 {
            warn!(
                "cluster: lease {} expired (etcd was away for longer than its TTL): republishing",
                self.replica
            );
            self.must_republish = true;
        }
        Ok(())
    }

    /// One renewal; the lease's TTL after it, 0 when etcd no longer
    /// knows the lease. (etcd-client's `lease_keep_alive` sends the first
    /// renewal itself and fails when etcd answers TTL 0: that answer is
    /// confirmed with a TTL query before the lease is given up.)
    async fn keep_alive_once(&mut self, lease: i64) -> Result<i64> {
        match self.client.lease_keep_alive(lease).await {
            Ok(_) => Ok(self.lease_ttl),
            Err(e) => match self.client.lease_time_to_live(lease, None).await {
                Ok(r) if r.ttl() <= 0 => Ok(0),
                _ => Err(e),
            },
        }
    }

    /// Takes up to `n` marked keys.
    fn take_batch(&self, n: usize) -> Vec<Dirty> {
        let mut state = self.mirror.lock();
        let batch: Vec<Dirty> = state.dirty.iter().take(n).cloned().collect();
        for d in &batch {
            state.dirty.remove(d);
        }
        self.stats.pending.store(state.dirty.len() as u64, Relaxed);
        batch
    }

    /// The operations that bring `batch`'s keys to their current values.
    fn ops(&self, batch: &[Dirty]) -> Vec<TxnOp> {
        let lease = self.lease.unwrap_or(0);
        let put = || Some(PutOptions::new().with_lease(lease));
        let at = unix_micros();
        let state = self.mirror.lock();
        batch
            .iter()
            .map(|d| match d {
                Dirty::Node(id) => {
                    let key = self.layout.node(&self.replica, *id);
                    match state.producers.get(id) {
                        Some(p) => TxnOp::put(key, json(&NodeValue::new(&p.peer, at)), put()),
                        None => TxnOp::delete(key, None),
                    }
                }
                Dirty::Reg(id, topic) => {
                    let key = self.layout.reg(topic, &self.replica, *id);
                    match state.producers.get(id).and_then(|p| p.topics.get(topic)) {
                        Some(channels) => {
                            let value = RegValue {
                                channels: channels.iter().cloned().collect(),
                                at,
                            };
                            TxnOp::put(key, json(&value), put())
                        }
                        None => TxnOp::delete(key, None),
                    }
                }
            })
            .collect()
    }

    /// Writes `keys` (distinct) at their current values: transactions of
    /// `max_ops`, up to [`PIPELINE`] of them in flight (etcd commits
    /// concurrent ones in one disk sync; one at a time, a medium fleet's
    /// 100,000 keys took 8 s). Returns once all are answered, so that no
    /// key is ever in two transactions at once: each key's writes stay in
    /// order. The keys of failed transactions are marked again. The lease
    /// is kept alive meanwhile.
    async fn send(&mut self, keys: Vec<Dirty>) -> Result<()> {
        let mut chunks = keys.chunks(self.max_ops);
        let mut in_flight = tokio::task::JoinSet::new();
        let mut failure = None;
        loop {
            while in_flight.len() < PIPELINE
                && failure.is_none()
                && let Some(chunk) = chunks.next()
            {
                let txn = Txn::new().and_then(self.ops(chunk));
                let mut kv = self.client.kv_client();
                let chunk = chunk.to_vec();
                in_flight.spawn(async move { (kv.txn(txn).await, chunk) });
            }
            let due = self.keep_alive_due();
            let done = tokio::select! {
                done = in_flight.join_next() => done,
                _ = tokio::time::sleep(due), if self.lease.is_some() => {
                    // A failure is counted and retried; the transactions'
                    // own answers decide this call's outcome.
                    if let Err(e) = self.keep_alive_if_due().await {
                        debug!("cluster: lease keep-alive failed while publishing: {e}");
                    }
                    continue;
                }
            };
            let Some(done) = done else {
                break;
            };
            let (result, chunk) = done.expect("a publish transaction panicked");
            match result {
                Ok(_) => {
                    self.stats.batches.fetch_add(1, Relaxed);
                    self.stats.published.fetch_add(chunk.len() as u64, Relaxed);
                    self.stats.connected.store(true, Relaxed);
                }
                Err(e) => {
                    self.mark_again(chunk);
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            None => Ok(()),
            Some(e) => {
                // Chunks never sent are still to do as well.
                self.mark_again(chunks.flatten().cloned().collect());
                Err(e)
            }
        }
    }

    fn mark_again(&self, keys: Vec<Dirty>) {
        let mut state = self.mirror.lock();
        if !state.overflowed {
            state.dirty.extend(keys);
        }
    }

    async fn commit(&mut self, ops: Vec<TxnOp>) -> Result<()> {
        self.client.txn(Txn::new().and_then(ops)).await?;
        self.stats.batches.fetch_add(1, Relaxed);
        self.stats.connected.store(true, Relaxed);
        Ok(())
    }

    async fn send_admin(&mut self, op: &AdminOp) -> Result<()> {
        let l = self.layout.clone();
        let origin = json(&OriginValue {
            origin: self.replica.clone(),
            at: unix_micros(),
        });
        let ops = match op {
            AdminOp::CreateTopic(t) => vec![TxnOp::put(l.admin_topic(t), origin, None)],
            AdminOp::CreateChannel(t, c) => vec![
                TxnOp::put(l.admin_topic(t), origin.clone(), None),
                TxnOp::put(l.admin_channel(t, c), origin, None),
            ],
            AdminOp::DeleteTopic(t) => {
                let event = self.event(t, None).await?;
                vec![
                    TxnOp::delete(l.admin_topic(t), None),
                    TxnOp::delete(
                        l.admin_channels_of_topic(t),
                        Some(DeleteOptions::new().with_prefix()),
                    ),
                    TxnOp::delete(l.regs_of_topic(t), Some(DeleteOptions::new().with_prefix())),
                    event,
                ]
            }
            AdminOp::DeleteChannel(t, c) => {
                let event = self.event(t, Some(c)).await?;
                vec![TxnOp::delete(l.admin_channel(t, c), None), event]
            }
            AdminOp::Tombstone(t, node) => {
                let lease = self
                    .client
                    .lease_grant(self.tombstone_ttl.max(1), None)
                    .await?
                    .id();
                vec![TxnOp::put(
                    l.tombstone(t, node),
                    origin,
                    Some(PutOptions::new().with_lease(lease)),
                )]
            }
        };
        self.commit(ops).await
    }

    /// The put of a delete event, on a short lease of its own.
    async fn event(&mut self, topic: &str, channel: Option<&str>) -> Result<TxnOp> {
        let lease = self.client.lease_grant(EVENT_TTL_SECS, None).await?.id();
        self.seq += 1;
        let value = EventValue {
            origin: self.replica.clone(),
            topic: topic.to_owned(),
            channel: channel.map(str::to_owned),
            at: unix_micros(),
        };
        Ok(TxnOp::put(
            self.layout.event(&self.replica, self.seq),
            json(&value),
            Some(PutOptions::new().with_lease(lease)),
        ))
    }

    /// A fresh lease, the whole local state under it, then the old lease
    /// revoked.
    async fn republish(&mut self) -> Result<()> {
        let started = Instant::now();
        let grant = self.client.lease_grant(self.lease_ttl, None).await?;
        let old = self.lease.replace(grant.id());
        self.replica = replica_id(grant.id());
        self.own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.replica.clone());
        self.next_keep_alive = Instant::now() + self.keep_alive_interval();
        self.stats
            .lease_ttl_seconds
            .store(grant.ttl().max(0) as u64, Relaxed);
        let everything = {
            let mut state = self.mirror.lock();
            state.overflowed = false;
            state.dirty.clear();
            state.everything()
        };
        let total = everything.len();
        let step = PIPELINE * self.max_ops;
        for part in everything.chunks(step) {
            if self.stop.is_cancelled() {
                return Ok(());
            }
            if let Err(e) = self.send(part.to_vec()).await {
                // Start over with yet another lease: this one's keys expire.
                self.must_republish = true;
                return Err(e);
            }
            self.keep_alive_if_due().await?;
        }
        if let Some(old) = old {
            // Its keys are superseded; a lease that already expired is fine.
            let _ = self.client.lease_revoke(old).await;
        }
        self.must_republish = false;
        self.stats.republishes.fetch_add(1, Relaxed);
        info!(
            "cluster: replica {} published {total} keys (lease TTL {}s) in {:?}",
            self.replica,
            grant.ttl(),
            started.elapsed()
        );
        Ok(())
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("plain structs serialise")
}
