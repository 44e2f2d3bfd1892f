//! Accepts nsqd connections and runs each on its own task until it ends or
//! the server shuts down.
//!
//! Two protections live here: a cap on simultaneous connections
//! (`--max-tcp-connections`; the excess is closed at once and counted, so a
//! flood of idle sockets cannot exhaust file descriptors or memory while
//! existing nsqd connections carry on), and TCP keepalive on every accepted
//! socket (a peer whose host vanished is detected by the kernel within
//! about two minutes even if it never sent a FIN).

use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::TcpContext;
use super::connection;
use crate::stats::{GaugeGuard, Limit, LogThrottle};

/// Keepalive: first probe after 60 s of silence, then every 10 s, 6 tries.
fn keepalive() -> TcpKeepalive {
    TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(6)
}

/// Accepts until `shutdown` is cancelled; connection tasks are spawned on
/// `tasks` and end when `shutdown` is cancelled (their registrations are
/// then removed as for any closed connection).
pub async fn run(
    listener: TcpListener,
    ctx: Arc<TcpContext>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(ctx.limits.max_connections));
    let refusals = LogThrottle::new(Duration::from_secs(1));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                error!("TCP: accept error - {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            ctx.stats.limit_hit(Limit::TcpConnections);
            if let Some(n) = refusals.hit() {
                warn!(peer = %peer, "TCP: refused {n} connection(s): --max-tcp-connections={} reached",
                    ctx.limits.max_connections);
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let _ = SockRef::from(&stream).set_tcp_keepalive(&keepalive());
        let ctx = Arc::clone(&ctx);
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let _slot = slot;
            let _open = GaugeGuard::new(
                &ctx.stats.tcp_connections_open,
                &ctx.stats.tcp_connections_total,
            );
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = connection::serve(stream, peer, Arc::clone(&ctx)) => {}
            }
        });
    }
    info!(
        "TCP: closing {}",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
}
