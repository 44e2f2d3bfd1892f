//! Accepts nsqd connections and runs each on its own task until it ends or
//! the server shuts down.
//!
//! Connections past `--max-tcp-connections` are refused by the shared
//! [`Acceptor`]. Every accepted socket gets TCP keepalive, so a peer whose
//! host vanished is detected by the kernel within about two minutes even
//! if it never sent a FIN.

use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use super::TcpContext;
use super::connection;
use crate::accept::{Accepted, Acceptor};
use crate::stats::{GaugeGuard, Limit};

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
    let acceptor = Acceptor::new(
        listener,
        "TCP",
        ctx.limits.max_connections,
        Limit::TcpConnections,
        Arc::clone(&ctx.stats),
    )
    .allowing(ctx.allow.clone());
    while let Some(Accepted { stream, peer, slot }) = acceptor.next(&shutdown).await {
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
    info!("TCP: closing {}", acceptor.local_addr());
}
