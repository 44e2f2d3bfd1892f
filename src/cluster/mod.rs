//! Cluster mode: several replicas behind one address, sharing state
//! through etcd (`--etcd-endpoints`).
//!
//! Owns the etcd client and nothing else: the registry stays free of I/O
//! and does not know where a producer came from. Three parts, one way each,
//! and the client's upkeep:
//! - [`mirror`]: the registry's observer. Follows this replica's own
//!   writes (its TCP sessions, its admin endpoints) and marks what is to
//!   be published.
//! - `publish`: keeps this replica's lease alive and writes the marked keys
//!   to etcd, batched in transactions, never on a TCP answer's path.
//! - `watch` + [`apply`]: loads a snapshot of the other replicas'
//!   keys at one revision, watches from the next, and applies what changes
//!   to the registry through its unobserved API, as producers of their own.
//! - `endpoints`: probes each etcd member and keeps the client's requests
//!   on those that answer (a dead member would otherwise keep getting them).
//!
//! Reads never touch etcd: `/lookup` and the other views are served from
//! the registry, which holds the whole fleet. When etcd is away, both
//! sides keep serving what they have and retry; see `keys` for the layout.

pub mod apply;
pub mod endpoints;
pub mod keys;
pub mod mirror;
pub mod publish;
pub mod watch;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::EtcdOptions;
use crate::registry::Registry;
use crate::stats::ClusterStats;
use apply::{Applier, Own};
use keys::Layout;
use mirror::Mirror;
use publish::Publisher;
use watch::Watcher;

/// How often a PING of a local producer republishes its node key, for an
/// inactivity timeout of `inactive`: a fifth of it (within 1 s and 60 s),
/// so another replica hides an nsqd that stopped pinging at most a fifth
/// later than this one does.
pub fn ping_refresh(inactive: Duration) -> Duration {
    (inactive / 5).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// The mirror to install as the registry's observer in cluster mode.
pub fn mirror(inactive: Duration) -> Arc<Mirror> {
    Mirror::new(ping_refresh(inactive))
}

/// Starts cluster mode: connects to etcd (retrying, never fatal), then
/// publishes this replica's registrations and applies the others'. Ends
/// when `stop` is cancelled; cancel it before the TCP connections close,
/// so that their goodbyes are not published (the lease expiring removes
/// this replica's registrations from the others, after its nsqd had time
/// to move to another replica).
pub fn start(
    options: EtcdOptions,
    registry: Arc<Registry>,
    mirror: Arc<Mirror>,
    stats: Arc<ClusterStats>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    stats
        .enabled
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::spawn(async move {
        let Some(client) = connect(&options, &stop).await else {
            return;
        };
        let layout = Layout::new(&options.prefix);
        let probing = tokio::spawn(endpoints::run(
            client.clone(),
            options.clone(),
            layout.health(),
            Arc::clone(&stats),
            stop.clone(),
        ));
        let own: Own = Arc::new(Mutex::new(HashSet::new()));
        let applier = Applier::new(
            Arc::clone(&registry),
            Arc::clone(&mirror),
            Arc::clone(&stats),
            Arc::clone(&own),
        );
        let publisher = Publisher::new(
            client.clone(),
            layout.clone(),
            Arc::clone(&mirror),
            Arc::clone(&stats),
            own,
            options.lease_ttl.as_secs().max(1) as i64,
            registry.tombstone_lifetime().as_secs().max(1) as i64,
            options.max_txn_ops,
            stop.clone(),
        );
        let watcher = Watcher {
            client,
            layout,
            applier: Arc::new(Mutex::new(applier)),
            mirror,
            stats,
            stop,
        };
        let publishing = tokio::spawn(publisher.run());
        watcher.run().await;
        let _ = publishing.await;
        let _ = probing.await;
    })
}

/// A client for `options`, retried until it connects or `stop`.
async fn connect(options: &EtcdOptions, stop: &CancellationToken) -> Option<Client> {
    let mut backoff = Duration::from_millis(200);
    let mut logged = false;
    loop {
        match try_connect(options, &options.endpoints).await {
            Ok(client) => {
                info!(
                    "cluster: etcd client for {} (prefix {})",
                    options.endpoints.join(","),
                    options.prefix
                );
                return Some(client);
            }
            Err(e) => {
                if !logged {
                    warn!(
                        "cluster: cannot connect to etcd at {}: {e}; retrying",
                        options.endpoints.join(",")
                    );
                    logged = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return None,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// A client of `endpoints` with `o`'s timeouts, credentials and TLS.
async fn try_connect(o: &EtcdOptions, endpoints: &[String]) -> Result<Client, String> {
    let mut connect = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(10))
        // Notice a dead etcd member within seconds, even while idle; etcd
        // closes connections that ping more often than every 5 s
        // (--grpc-keepalive-min-time), so not more often than that.
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(true)
        // A member cut off from its cluster's quorum answers "no leader"
        // at once instead of holding requests and watches; the retry then
        // goes to a member that has one. (A transaction that was in flight
        // when the leader died still waits for etcd's own request timeout,
        // about 6 s: measured by tests/cluster.rs.)
        .with_require_leader(true);
    if let (Some(user), Some(password)) = (&o.username, &o.password) {
        connect = connect
            .with_user(user.clone(), password.clone())
            .with_auto_token_refresh(true);
    }
    if o.uses_tls() {
        let mut tls = TlsOptions::new();
        match &o.ca_file {
            Some(ca) => {
                let pem = std::fs::read(ca)
                    .map_err(|e| format!("--etcd-cacert {}: {e}", ca.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            None => tls = tls.with_native_roots(),
        }
        if let (Some(cert), Some(key)) = (&o.cert_file, &o.key_file) {
            let cert =
                std::fs::read(cert).map_err(|e| format!("--etcd-cert {}: {e}", cert.display()))?;
            let key =
                std::fs::read(key).map_err(|e| format!("--etcd-key {}: {e}", key.display()))?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        connect = connect.with_tls(tls);
    }
    Client::connect(endpoints, Some(connect))
        .await
        .map_err(|e| e.to_string())
}
