//! Binds the listeners (TCP; HTTP unless `--http-address` is empty; HTTPS
//! with `--tls-cert`), runs them, and shuts them down. With HTTPS, SIGHUP
//! reloads its certificate, key and CA (`tls::Tls::reload`); without it
//! SIGHUP is left alone.
//!
//! Shutdown (SIGINT/SIGTERM in `main`): the accept loops stop, every
//! connection is told to finish (TCP sessions end at once and their
//! registrations are removed; HTTP connections finish the request in
//! flight), and the server waits for them within a bound so that the
//! process exits promptly even if a peer does not cooperate.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::access::Access;
use crate::cluster::{self, mirror::Mirror};
use crate::config::Options;
use crate::http::{self, HttpContext};
use crate::json;
use crate::registry::{Registry, RegistryOptions};
use crate::stats::Stats;
use crate::tcp::janitor::Janitor;
use crate::tcp::{self, TcpContext};
use crate::tls::Tls;

/// How long shutdown waits for connections to finish.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(800);

/// How long shutdown waits for the cluster task to stop publishing.
const CLUSTER_STOP_TIMEOUT: Duration = Duration::from_millis(150);

/// The async runtime. On one CPU (a container limited to one core, or the
/// process pinned with `taskset`), a single-threaded scheduler: with one
/// worker there is nothing to steal, and the multi-threaded scheduler's
/// cross-thread wake-ups and queues cost every request for nothing. With
/// more CPUs, tokio's multi-threaded scheduler with one worker per CPU.
/// Heavy work never runs on the workers either way (`http::handlers`,
/// `tcp::janitor`).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    }
}

/// A listen address could not be bound.
#[derive(Debug)]
pub struct BindError {
    pub address: String,
    pub error: io::Error,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "listen ({}) failed - {}", self.address, self.error)
    }
}

impl std::error::Error for BindError {}

/// Binds `address` (`host:port`; `:port` means every interface, as in Go).
async fn bind(address: &str) -> Result<TcpListener, BindError> {
    let fail = |error| BindError {
        address: address.to_owned(),
        error,
    };
    let normalized = match address.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => address.to_owned(),
    };
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to bind");
    for addr in tokio::net::lookup_host(&normalized).await.map_err(fail)? {
        match listen(addr) {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
    }
    Err(fail(last))
}

/// The accept backlog: the kernel's `net.core.somaxconn`, as Go uses.
/// tokio's default (128) drops SYNs when a whole fleet reconnects at once,
/// and each dropped SYN costs that nsqd a 1-second retransmission.
fn backlog() -> i32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n: &i32| n > 0)
        .unwrap_or(4096)
}

/// A listening socket with `SO_REUSEADDR` (a restart does not wait for
/// old connections in TIME_WAIT, as with Go) and the kernel's backlog.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog())?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// A server with its listeners bound, ready to run.
pub struct Server {
    tcp: TcpListener,
    /// Plain HTTP; `None` with `--http-address=""` (then HTTPS is on).
    http: Option<TcpListener>,
    /// HTTPS, with its TLS configuration (`--tls-cert`).
    https: Option<(TcpListener, Arc<Tls>)>,
    registry: Arc<Registry>,
    stats: Arc<Stats>,
    janitor: Janitor,
    /// Cluster mode: the registry's observer, handed to the cluster task.
    mirror: Option<Arc<Mirror>>,
    access: Arc<Access>,
    options: Options,
}

impl Server {
    /// Binds the listeners (port 0 picks a free port) and loads the TLS
    /// files (checked at start already; a failure here, a file changed
    /// meanwhile, is reported as the HTTPS listener's).
    pub async fn bind(options: Options) -> Result<Server, BindError> {
        let stats = Arc::new(Stats::default());
        let tcp = bind(&options.tcp_address).await?;
        let http = match options.http_address.as_str() {
            "" => None,
            address => Some(bind(address).await?),
        };
        let https = match &options.tls {
            Some(tls) => {
                let loaded =
                    Tls::new(tls.clone(), Arc::clone(&stats.tls)).map_err(|e| BindError {
                        address: tls.https_address.clone(),
                        error: io::Error::other(e.to_string()),
                    })?;
                Some((bind(&tls.https_address).await?, Arc::new(loaded)))
            }
            None => None,
        };
        let mirror = options
            .etcd
            .as_ref()
            .map(|_| cluster::mirror(options.inactive_producer_timeout));
        let observer = mirror
            .clone()
            .map(|m| m as Arc<dyn crate::registry::Observer>);
        let registry = Arc::new(Registry::with_observer(
            RegistryOptions {
                inactive_producer_timeout: options.inactive_producer_timeout,
                tombstone_lifetime: options.tombstone_lifetime,
                lookup_cache_size: options.lookup_cache_size,
                compression: options.compression,
                caps: options.caps,
            },
            observer,
        ));
        Ok(Server {
            tcp,
            http,
            https,
            registry,
            stats,
            janitor: Janitor::start().map_err(|error| BindError {
                address: "janitor thread".into(),
                error,
            })?,
            mirror,
            access: Arc::new(Access::new(options.access.clone()).map_err(|e| BindError {
                address: "auth client (--auth-http-address)".into(),
                error: io::Error::other(e),
            })?),
            options,
        })
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The plain HTTP listener's address; `None` when it is off.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
            .as_ref()
            .map(|l| l.local_addr().expect("bound listener has an address"))
    }

    /// The HTTPS listener's address; `None` without TLS.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https
            .as_ref()
            .map(|(l, _)| l.local_addr().expect("bound listener has an address"))
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The IDENTIFY answer: this lookupd's real ports, version, broadcast
    /// address and hostname, keys sorted as Go marshals a map. `http_port`
    /// is the plain listener's, or the HTTPS one's when plain HTTP is off
    /// (nsqd speaks plain HTTP only: its `/channels` call then fails, as it
    /// would with no port at all).
    fn identify_response(&self) -> Bytes {
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        let mut out = String::from("{");
        json::push_key(&mut out, "broadcast_address");
        json::push_str(&mut out, &self.options.broadcast_address);
        out.push(',');
        json::push_key(&mut out, "hostname");
        json::push_str(&mut out, &hostname);
        out.push(',');
        json::push_key(&mut out, "http_port");
        let http_port = self
            .http_addr()
            .or_else(|| self.https_addr())
            .map_or(0, |a| a.port());
        json::push_int(&mut out, i64::from(http_port));
        out.push(',');
        json::push_key(&mut out, "tcp_port");
        json::push_int(&mut out, i64::from(self.tcp_addr().port()));
        out.push(',');
        json::push_key(&mut out, "version");
        json::push_str(&mut out, crate::NSQ_VERSION);
        out.push('}');
        Bytes::from(out)
    }

    /// Serves until `stop` completes, then shuts down gracefully.
    pub async fn run_until(self, stop: impl Future<Output = ()>) {
        crate::metrics::mark_start();
        // Before the listening lines: a SIGHUP sent once they are out is
        // a reload, never the default action (exit).
        let reloader = self
            .https
            .as_ref()
            .and_then(|(_, tls)| reload_on_sighup(tls));
        info!("TCP: listening on {}", self.tcp_addr());
        if let Some(addr) = self.http_addr() {
            info!("HTTP: listening on {addr}");
        }
        if let Some(addr) = self.https_addr() {
            info!("HTTPS: listening on {addr}");
        }
        let identify_response = self.identify_response();
        let tls_redirect = match (self.https_addr(), &self.https) {
            (Some(addr), Some((_, tls))) if tls.required() => Some(addr.port()),
            _ => None,
        };
        let tcp_ctx = Arc::new(TcpContext {
            registry: Arc::clone(&self.registry),
            identify_response,
            limits: self.options.tcp_limits,
            stats: Arc::clone(&self.stats),
            janitor: self.janitor,
            allow: self.options.tcp_allow.clone(),
        });
        let mut http_ctx = HttpContext::new(
            Arc::clone(&self.registry),
            self.options.http_limits,
            Arc::clone(&self.stats),
            Arc::clone(&self.access),
        );
        if let Some(port) = tls_redirect {
            http_ctx = http_ctx.with_tls_redirect(port);
        }
        let http_ctx = Arc::new(http_ctx);

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let cluster_stop = CancellationToken::new();
        let cluster = match (&self.options.etcd, self.mirror) {
            (Some(etcd), Some(mirror)) => Some(cluster::start(
                etcd.clone(),
                Arc::clone(&self.registry),
                mirror,
                Arc::clone(&self.stats.cluster),
                cluster_stop.clone(),
            )),
            _ => None,
        };
        let tcp = tokio::spawn(tcp::listener::run(
            self.tcp,
            tcp_ctx,
            tasks.clone(),
            shutdown.clone(),
        ));
        let http = self.http.map(|listener| {
            tokio::spawn(http::run(
                listener,
                Arc::clone(&http_ctx),
                tasks.clone(),
                shutdown.clone(),
            ))
        });
        let https = self.https.map(|(listener, tls)| {
            tokio::spawn(http::run_tls(
                listener,
                Arc::clone(&http_ctx),
                tls,
                tasks.clone(),
                shutdown.clone(),
            ))
        });

        stop.await;
        // Cluster mode stops publishing first: the connections closing
        // below must not tell the other replicas that their nsqd left
        // (this replica's lease expiring does, once they had time to
        // register elsewhere).
        cluster_stop.cancel();
        if let Some(cluster) = cluster {
            let _ = tokio::time::timeout(CLUSTER_STOP_TIMEOUT, cluster).await;
        }
        // The connections closing below need not take their producers
        // out of the registry: the process is exiting.
        self.registry.close();
        shutdown.cancel();
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        let _ = tcp.await;
        for listener in [http, https].into_iter().flatten() {
            let _ = listener.await;
        }
        tasks.close();
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, tasks.wait())
            .await
            .is_err()
        {
            info!(
                "shutdown: {} connections did not finish in time",
                tasks.len()
            );
        }
    }
}

/// Reloads the TLS files on each SIGHUP, in a task of its own.
fn reload_on_sighup(tls: &Arc<Tls>) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            error!("TLS: cannot listen for SIGHUP, no certificate reloads - {e}");
            return None;
        }
    };
    let tls = Arc::clone(tls);
    Some(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            info!("TLS: SIGHUP, reloading the certificate, key and CA");
            // File reads: off the async workers.
            let tls = Arc::clone(&tls);
            let _ = tokio::task::spawn_blocking(move || tls.reload()).await;
        }
    }))
}
