//! Keeps the etcd client's requests on the members that answer.
//!
//! Owns one probe connection per configured endpoint and the choice of
//! which endpoints the shared client balances over; touches nothing else
//! (not the registry, not the keys).
//!
//! Why: etcd-client balances every request over all its endpoints (tonic's
//! power-of-two-choices balancer), and a member that died stays in that
//! balancer. tonic reports a connection it had and lost as ready, so a
//! request sent its way fails at once with a connect error instead of going
//! to a live member; measured in `tests/cluster.rs` after the leader of
//! three was killed, retries of the publisher went to the dead member
//! again and again, each failure doubling the backoff. So every
//! [`PROBE_INTERVAL`] each endpoint is asked for one key on a connection of
//! its own, with the client's credentials and `require_leader` (a member
//! cut off from its cluster's quorum fails too); one that fails
//! [`FAILURES_TO_DROP`] probes in a row is taken out of the shared client,
//! and put back at its first answer. The last endpoints are never all
//! taken out: when none answers, every one stays in use and the callers'
//! retries go on as before.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::EtcdOptions;
use crate::stats::ClusterStats;

/// How often each endpoint is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// How long a probe may take: a member slower than that to read one key
/// is not one to send the fleet's writes to.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Failed probes in a row before an endpoint is taken out: one slow answer
/// under load does not move the traffic.
pub const FAILURES_TO_DROP: u32 = 2;

/// One configured endpoint as the prober sees it.
struct Member {
    url: String,
    /// Its own client (one endpoint), made at the first probe.
    probe: Option<Client>,
    failures: u32,
    /// Why its last probe failed.
    last_error: String,
    in_use: bool,
}

/// Runs until `stop`: probes every endpoint of `options` and keeps
/// `client`'s balancer on those that answer. A no-op with one endpoint
/// (there is nothing to move its requests to).
pub async fn run(
    client: Client,
    options: EtcdOptions,
    probe_key: String,
    stats: Arc<ClusterStats>,
    stop: CancellationToken,
) {
    let configured = options.endpoints.len();
    stats.endpoints_in_use.store(configured as u64, Relaxed);
    if configured < 2 {
        return;
    }
    let options = Arc::new(options);
    let mut members: Vec<Member> = options
        .endpoints
        .iter()
        .map(|url| Member {
            url: url.clone(),
            probe: None,
            failures: 0,
            last_error: String::new(),
            in_use: true,
        })
        .collect();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = stop.cancelled() => return,
        }
        let answers = tokio::select! {
            a = probe_all(&mut members, &options, &probe_key) => a,
            _ = stop.cancelled() => return,
        };
        let anyone_answers = answers.iter().any(|(_, r)| r.is_ok());
        for (i, result) in answers {
            let m = &mut members[i];
            match result {
                Ok(()) => m.failures = 0,
                Err(e) => {
                    m.failures = m.failures.saturating_add(1);
                    m.last_error = e;
                }
            }
        }
        for m in &mut members {
            let want = wanted(m.failures, anyone_answers);
            if want == m.in_use {
                continue;
            }
            let changed = if want {
                client.add_endpoint(&m.url).await
            } else {
                client.remove_endpoint(&m.url).await
            };
            match changed {
                Ok(()) => {
                    m.in_use = want;
                    if !want {
                        warn!(
                            "cluster: etcd member {} failed {} health checks in a row ({}): \
                             sending requests to the others",
                            m.url, m.failures, m.last_error
                        );
                    } else if m.failures == 0 {
                        info!("cluster: etcd member {} answers again: back in use", m.url);
                    } else {
                        info!(
                            "cluster: no etcd member answers its health check: {} back in use",
                            m.url
                        );
                    }
                }
                Err(e) => warn!("cluster: updating the etcd endpoints failed: {e}"),
            }
        }
        let in_use = members.iter().filter(|m| m.in_use).count();
        stats.endpoints_in_use.store(in_use as u64, Relaxed);
    }
}

/// Whether an endpoint with `failures` failed probes in a row is to be in
/// use: answering, or not failing long enough, or nobody answers (then
/// every endpoint is, so requests keep going out).
fn wanted(failures: u32, anyone_answers: bool) -> bool {
    failures < FAILURES_TO_DROP || !anyone_answers
}

/// Probes every member at once; each answer with its member's index.
async fn probe_all(
    members: &mut [Member],
    options: &Arc<EtcdOptions>,
    probe_key: &str,
) -> Vec<(usize, Result<(), String>)> {
    let mut probes = JoinSet::new();
    for (i, m) in members.iter_mut().enumerate() {
        let client = m.probe.clone();
        let url = m.url.clone();
        let options = Arc::clone(options);
        let key = probe_key.to_owned();
        probes.spawn(async move {
            let answer = tokio::time::timeout(PROBE_TIMEOUT, probe(client, &url, &options, key))
                .await
                .unwrap_or_else(|_| (None, Err(format!("no answer within {PROBE_TIMEOUT:?}"))));
            (i, answer)
        });
    }
    let mut answers = Vec::with_capacity(members.len());
    while let Some(done) = probes.join_next().await {
        let Ok((i, (client, result))) = done else {
            continue;
        };
        if client.is_some() {
            members[i].probe = client;
        }
        answers.push((i, result));
    }
    answers
}

/// One probe of `url`: a serializable read of `key` (absent or not, the
/// member must answer it, with a leader). Returns the probe client to keep.
async fn probe(
    client: Option<Client>,
    url: &str,
    options: &EtcdOptions,
    key: String,
) -> (Option<Client>, Result<(), String>) {
    let mut client = match client {
        Some(c) => c,
        None => match super::try_connect(options, std::slice::from_ref(&url.to_owned())).await {
            Ok(c) => c,
            Err(e) => return (None, Err(e)),
        },
    };
    let read = GetOptions::new().with_serializable().with_keys_only();
    let result = client
        .get(key, Some(read))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    (Some(client), result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_dropped_after_failures_in_a_row_and_never_the_last() {
        // One slow answer moves nothing.
        assert!(wanted(1, true));
        assert!(!wanted(FAILURES_TO_DROP, true));
        assert!(!wanted(FAILURES_TO_DROP + 5, true));
        // Nobody answers: everyone stays (or comes back) in use.
        assert!(wanted(FAILURES_TO_DROP + 5, false));
        // An answer resets the count: back in use.
        assert!(wanted(0, true));
    }
}
