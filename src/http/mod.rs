//! The consumer and admin HTTP API (spec section 4), on hyper 1.
//!
//! - [`router`]: path + method → endpoint, with the original router's
//!   redirects, OPTIONS and 405 behaviour.
//! - [`query`]: query-string parameters with Go's parsing rules.
//! - [`handlers`]: one function per endpoint.
//! - [`response`]: the exact status/headers/body shapes.
//! - [`head_deadline`]: the request-head timeout, one watcher per connection.
//!
//! Handlers read registry snapshots and never wait on a TCP writer.
//!
//! Two listeners serve the same API through the same code ([`serve`]): plain
//! HTTP ([`run`]) and, with `--tls-cert`, HTTPS ([`run_tls`]), whose
//! connections first go through `crate::tls`'s handshake.
//!
//! Limits (each a flag): simultaneous connections (the excess is closed at
//! accept and counted; one pool for both listeners), the size of a request
//! head (hyper answers 431/414), the time to send a request head, which
//! also bounds how long an idle keep-alive connection is kept (slowloris)
//! and, on HTTPS, the TLS handshake before it, and the size of a body.

pub mod encoding;
pub mod handlers;
pub mod head_deadline;
pub mod query;
pub mod response;
pub mod router;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::accept::{AcceptRate, Accepted, Acceptor};
use crate::access::{Access, Remembered};
use crate::registry::Registry;
use crate::stats::{GaugeGuard, Limit, Stats};
use crate::tls::{Failure, Tls};
use head_deadline::{Progress, Stall, Watched};

/// Limits of the HTTP side; each is a flag (see `config`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Most simultaneous connections; more are closed at accept.
    pub max_connections: usize,
    /// Most new connections accepted a second, HTTP and HTTPS together;
    /// 0 = no limit (`--max-http-accept-rate`, see [`crate::accept::AcceptRate`]).
    pub max_accept_rate: usize,
    /// Time allowed to send a complete request head; also how long an idle
    /// keep-alive connection stays open.
    pub header_timeout: Duration,
    /// Largest request head (request line + headers), bytes; at least 8192.
    pub max_header_size: usize,
    /// Request bodies (read and ignored, as the original does) beyond this
    /// size are refused with 400 `INVALID_REQUEST`.
    pub max_body_size: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 10_000,
            max_accept_rate: 0,
            header_timeout: Duration::from_secs(30),
            max_header_size: 64 * 1024,
            max_body_size: 1 << 20,
        }
    }
}

/// What every HTTP connection shares.
#[derive(Debug)]
pub struct HttpContext {
    pub registry: Arc<Registry>,
    /// `/info`'s answer, rendered once.
    pub info_body: Bytes,
    pub limits: HttpLimits,
    pub stats: Arc<Stats>,
    /// Turns for the whole-registry views (see `handlers::off_the_reactor`).
    pub heavy_views: Semaphore,
    /// Who may read and administer (`--read-allow`, `--admin-token-file`, ...).
    pub access: Arc<Access>,
    /// The `--max-http-connections` slots, one pool for the HTTP and the
    /// HTTPS listener.
    pub connection_slots: Arc<Semaphore>,
    /// `--max-http-accept-rate`, one pace for both listeners; `None`: no limit.
    pub accept_rate: Option<Arc<AcceptRate>>,
    /// `--tls-required`: the HTTPS port that plain-HTTP requests are sent
    /// to (403 `TLS_REQUIRED`, see `handlers`); `None`: plain HTTP serves.
    pub tls_redirect: Option<u16>,
}

/// What the handlers know of the connection a request came on: who sent it
/// and, over HTTPS, what its certificate proved. Access control
/// (`crate::access`) decides on these, never on anything the request says
/// about itself.
#[derive(Debug)]
pub struct Conn {
    pub peer: SocketAddr,
    /// `Some` on the HTTPS listener.
    pub tls: Option<TlsPeer>,
    /// Its consumer's last grant (auth server mode).
    pub remembered: Remembered,
}

impl Conn {
    pub fn new(peer: SocketAddr, tls: Option<TlsPeer>) -> Conn {
        Conn {
            peer,
            tls,
            remembered: Remembered::default(),
        }
    }
}

/// A connection's TLS facts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsPeer {
    /// The common name of a client certificate that the server verified
    /// against `--tls-root-ca-file`; `None` without one.
    pub common_name: Option<String>,
}

/// Whole-registry views computed at the same time, at most.
pub const HEAVY_VIEWS: usize = 2;

impl HttpContext {
    pub fn new(
        registry: Arc<Registry>,
        limits: HttpLimits,
        stats: Arc<Stats>,
        access: Arc<Access>,
    ) -> Self {
        HttpContext {
            registry,
            info_body: Bytes::from(format!("{{\"version\":\"{}\"}}", crate::NSQ_VERSION)),
            limits,
            stats,
            heavy_views: Semaphore::new(HEAVY_VIEWS),
            access,
            connection_slots: Arc::new(Semaphore::new(limits.max_connections)),
            accept_rate: AcceptRate::new(limits.max_accept_rate).map(Arc::new),
            tls_redirect: None,
        }
    }

    /// Plain-HTTP requests (but `/ping` and `/ready`) are answered 403
    /// `TLS_REQUIRED` with this HTTPS port (`--tls-required`).
    pub fn with_tls_redirect(mut self, https_port: u16) -> Self {
        self.tls_redirect = Some(https_port);
        self
    }
}

/// How long an in-flight request may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Closes (cancels `closing`) a connection that stalls: no progress for
/// `timeout`; ends when `closing` is cancelled by anyone else.
async fn watch(
    progress: Arc<Progress>,
    closing: CancellationToken,
    timeout: Duration,
    stats: Arc<Stats>,
    peer: SocketAddr,
) {
    tokio::select! {
        stall = progress.stalled(timeout) => {
            match stall {
                Stall::SlowHead => {
                    stats.limit_hit(Limit::HttpHeaderTimeout);
                    warn!(peer = %peer, "HTTP: {peer} sent no complete request head in {timeout:?} \
                        (--http-header-timeout), closing");
                }
                Stall::Idle => debug!(peer = %peer, "HTTP: {peer} idle for {timeout:?}, closing"),
            }
            closing.cancel();
        }
        _ = closing.cancelled() => {}
    }
}

/// Accepts plain HTTP until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    ctx: Arc<HttpContext>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    accept_loop(
        listener,
        "HTTP",
        ctx,
        tasks,
        shutdown,
        |stream, peer, ctx, shutdown| serve(stream, Conn::new(peer, None), ctx, shutdown),
    )
    .await;
}

/// Accepts HTTPS until `shutdown` is cancelled: each connection's TLS
/// handshake must be done within `--http-header-timeout` (a client that
/// sends nothing, or part of a ClientHello, is closed after it, and
/// counted as `http_header_timeout` when some bytes came, as on plain
/// HTTP); then it is served as a plain one is.
pub async fn run_tls(
    listener: TcpListener,
    ctx: Arc<HttpContext>,
    tls: Arc<Tls>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    accept_loop(
        listener,
        "HTTPS",
        ctx,
        tasks,
        shutdown,
        move |stream, peer, ctx, shutdown| {
            handshake_then_serve(stream, peer, Arc::clone(&tls), ctx, shutdown)
        },
    )
    .await;
}

/// One HTTPS connection: its handshake (cut off by the header timeout or
/// by `shutdown`), then [`serve`].
async fn handshake_then_serve(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Arc<Tls>,
    ctx: Arc<HttpContext>,
    shutdown: CancellationToken,
) {
    let stats = Arc::clone(&ctx.stats);
    let _tls_open = GaugeGuard::new(&stats.tls.connections_open, &stats.tls.connections_total);
    let handshake = tokio::select! {
        done = tls.handshake(stream, peer, ctx.limits.header_timeout) => done,
        _ = shutdown.cancelled() => return,
    };
    let established = match handshake {
        Ok(established) => established,
        Err(Failure::Timeout { partial: true }) => {
            stats.limit_hit(Limit::HttpHeaderTimeout);
            return;
        }
        Err(_) => return,
    };
    let conn = Conn::new(
        peer,
        Some(TlsPeer {
            common_name: established.common_name,
        }),
    );
    serve(established.stream, conn, ctx, shutdown).await;
}

/// The accept loop of both listeners: each accepted connection gets a task
/// that holds its slot and the HTTP connection gauge while `connect`'s
/// future (a handshake, if any, then [`serve`]) runs.
async fn accept_loop<C, F>(
    listener: TcpListener,
    name: &'static str,
    ctx: Arc<HttpContext>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    connect: C,
) where
    C: Fn(TcpStream, SocketAddr, Arc<HttpContext>, CancellationToken) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let acceptor = acceptor(listener, name, &ctx);
    while let Some(Accepted { stream, peer, slot }) = acceptor.next(&shutdown).await {
        let stats = Arc::clone(&ctx.stats);
        let connection = connect(stream, peer, Arc::clone(&ctx), shutdown.clone());
        tasks.spawn(async move {
            let _slot = slot;
            let _open =
                GaugeGuard::new(&stats.http_connections_open, &stats.http_connections_total);
            connection.await;
        });
    }
    info!("{name}: closing {}", acceptor.local_addr());
}

/// A listener's acceptor, with the HTTP connection slots.
fn acceptor(listener: TcpListener, name: &'static str, ctx: &HttpContext) -> Acceptor {
    Acceptor::new(
        listener,
        name,
        ctx.limits.max_connections,
        Limit::HttpConnections,
        Arc::clone(&ctx.stats),
    )
    .with_slots(Arc::clone(&ctx.connection_slots))
    .pacing(ctx.accept_rate.clone())
}

/// Serves one connection, plain or TLS, until it ends, stalls, or
/// `shutdown` is cancelled.
async fn serve<S>(stream: S, conn: Conn, ctx: Arc<HttpContext>, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stats = Arc::clone(&ctx.stats);
    let limits = ctx.limits;
    let peer = conn.peer;
    // The header timeout is kept by a watcher task, not by hyper's
    // `header_read_timeout` (see `head_deadline` for why). It closes the
    // connection through `closing`, the one token the connection polls,
    // which shutdown cancels too; the connection cancels it when it ends,
    // which ends the watcher.
    let progress = Arc::new(Progress::default());
    let closing = shutdown.child_token();
    let _end_watch = closing.clone().drop_guard();
    tokio::spawn(watch(
        Arc::clone(&progress),
        closing.clone(),
        limits.header_timeout,
        Arc::clone(&stats),
        peer,
    ));
    let io = TokioIo::new(Watched::new(stream, Arc::clone(&progress)));
    let conn = Arc::new(conn);
    let service = service_fn(move |req| {
        let ctx = Arc::clone(&ctx);
        let conn = Arc::clone(&conn);
        let answering = progress.head_received();
        async move {
            let response = handlers::handle(ctx, &conn, req).await;
            drop(answering);
            Ok::<_, Infallible>(response)
        }
    });
    let mut conn = pin!(
        http1::Builder::new()
            .max_header_size(limits.max_header_size)
            .max_buf_size(limits.max_header_size.max(8192))
            .serve_connection(io, service)
    );
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = closing.cancelled() => {
            // A stall needs nothing more: dropping `conn` closes the
            // socket.
            if shutdown.is_cancelled() {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
            }
        }
    }
}
