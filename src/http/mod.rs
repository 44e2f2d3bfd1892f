//! The consumer and admin HTTP API (spec section 4), on hyper 1.
//!
//! - [`router`]: path + method → endpoint, with the original router's
//!   redirects, OPTIONS and 405 behaviour.
//! - [`query`]: query-string parameters with Go's parsing rules.
//! - [`handlers`]: one function per endpoint.
//! - [`response`]: the exact status/headers/body shapes.
//!
//! Handlers read registry snapshots and never wait on a TCP writer.

pub mod handlers;
pub mod query;
pub mod response;
pub mod router;

use std::convert::Infallible;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::registry::Registry;

/// What every HTTP connection shares.
#[derive(Debug)]
pub struct HttpContext {
    pub registry: Arc<Registry>,
    /// `/info`'s answer, rendered once.
    pub info_body: Bytes,
    /// Request bodies (read and ignored, as the original does) beyond this
    /// size are refused with 400 `INVALID_REQUEST`.
    pub max_body_size: usize,
}

impl HttpContext {
    pub fn new(registry: Arc<Registry>) -> Self {
        HttpContext {
            registry,
            info_body: Bytes::from(format!("{{\"version\":\"{}\"}}", crate::NSQ_VERSION)),
            max_body_size: 1 << 20,
        }
    }
}

/// How long an in-flight request may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Accepts until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    ctx: Arc<HttpContext>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                error!("HTTP: accept error - {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = Arc::clone(&ctx);
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let service = service_fn(move |req| {
                let ctx = Arc::clone(&ctx);
                async move { Ok::<_, Infallible>(handlers::handle(ctx, req).await) }
            });
            let mut conn = pin!(
                http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service)
            );
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
                }
            }
        });
    }
    info!(
        "HTTP: closing {}",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
}
