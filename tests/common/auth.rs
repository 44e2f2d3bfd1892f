//! A real auth server speaking nsqd's auth protocol, for the tests of the
//! auth client and of access control: HTTP/1.1 on 127.0.0.1 (an ephemeral
//! port), plain or TLS, on a thread and runtime of its own, so that both
//! blocking and `#[tokio::test]` tests can use it. Stopped on drop.
//!
//! It answers each request by its `secret`, taken from the query string
//! (GET), or from a POST body: JSON `{"name": ["value"], ...}` (nsqd's
//! encoding of `url.Values`) or a form. A secret set up with
//! [`AuthServer::set_answer`] (or [`AuthServer::allow`]) gets its reply;
//! any other `403 {"message":"AUTH_FAILED"}`. [`Mode`] turns the whole
//! server into one that answers a fixed status, never answers, or closes
//! connections; [`AuthServer::hold`] makes answers wait. Every request is
//! counted and logged ([`AuthRequest`]), hung and closed ones included.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// How the whole server behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Each secret gets its configured reply, any other a 403.
    Answer,
    /// Every request gets this status with a small JSON body.
    Status(u16),
    /// Every request is read and never answered; its connection stays open
    /// until the server stops.
    Hang,
    /// Every request is read, then its connection is closed unanswered.
    Close,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct AuthRequest {
    pub peer: SocketAddr,
    pub method: String,
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    /// The raw body.
    pub body: String,
    /// `remote_ip`, `tls`, `secret`, `common_name` (and whatever else was
    /// sent): from the query string, then the body; the first value of
    /// each name.
    pub params: BTreeMap<String, String>,
}

impl AuthRequest {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub fn secret(&self) -> Option<&str> {
        self.param("secret")
    }
}

struct Shared {
    mode: Mutex<Mode>,
    /// secret → (status, body).
    replies: Mutex<HashMap<String, (u16, String)>>,
    log: Mutex<Vec<AuthRequest>>,
    /// True while answers wait ([`AuthServer::hold`]).
    held: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running auth server; dropping it stops it (hung connections too).
pub struct AuthServer {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl AuthServer {
    /// Plain HTTP on 127.0.0.1, an ephemeral port.
    pub fn start() -> AuthServer {
        AuthServer::start_with(None)
    }

    /// HTTPS on 127.0.0.1 with this certificate and key (PEM files, e.g.
    /// [`super::pki::Pki`]'s `server`, which is valid for 127.0.0.1).
    pub fn start_tls(cert: &Path, key: &Path) -> AuthServer {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(cert)
            .expect("read the certificate")
            .collect::<Result<Vec<_>, _>>()
            .expect("parse the certificate");
        let key = PrivateKeyDer::from_pem_file(key).expect("read the key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("certificate and key");
        AuthServer::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> AuthServer {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the auth server");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Answer),
            replies: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            held: watch::channel(false).0,
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let is_tls = tls.is_some();
        let served = shared.clone();
        let thread = thread::Builder::new()
            .name(format!("auth-server-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("auth server runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("listener");
                    serve(listener, tls, served, stop_rx).await;
                });
                // Dropping the runtime drops every connection task.
            })
            .expect("spawn the auth server thread");
        AuthServer {
            addr,
            tls: is_tls,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, an `--auth-http-address` that is queried at
    /// `http://127.0.0.1:PORT/auth` (plain servers only: a TLS one needs
    /// [`AuthServer::url`]).
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// A full-URL address of this server with `path` (e.g. `/auth`),
    /// `https://` for a TLS one.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// `secret` gets `200` with this body (any text: invalid JSON too).
    pub fn set_answer(&self, secret: &str, body: impl Into<String>) {
        self.set_reply(secret, 200, body);
    }

    /// `secret` gets this status and body.
    pub fn set_reply(&self, secret: &str, status: u16, body: impl Into<String>) {
        lock(&self.shared.replies).insert(secret.to_owned(), (status, body.into()));
    }

    /// `secret` may subscribe to (any channel of) the topics matching
    /// `topic_pattern`, for `ttl` seconds; identity `user-<secret>`.
    pub fn allow(&self, secret: &str, ttl: i64, topic_pattern: &str) {
        let identity = format!("user-{secret}");
        self.set_answer(
            secret,
            grant(ttl, &identity, &[(topic_pattern, &[".*"], &["subscribe"])]),
        );
    }

    /// `secret` is refused again (the default 403).
    pub fn remove(&self, secret: &str) {
        lock(&self.shared.replies).remove(secret);
    }

    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
    }

    /// Answers wait (once their request is logged) until [`AuthServer::release`].
    pub fn hold(&self) {
        self.shared.held.send_replace(true);
    }

    pub fn release(&self) {
        self.shared.held.send_replace(false);
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        lock(&self.shared.log).len()
    }

    /// Requests received so far with this secret.
    pub fn requests_for(&self, secret: &str) -> usize {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.secret() == Some(secret))
            .count()
    }

    pub fn request_log(&self) -> Vec<AuthRequest> {
        lock(&self.shared.log).clone()
    }

    pub fn last_request(&self) -> Option<AuthRequest> {
        lock(&self.shared.log).last().cloned()
    }

    /// Blocks until `n` requests have arrived or `timeout` passed; whether
    /// they did. (From async code, poll [`AuthServer::requests`] instead.)
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.requests() < n {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.release();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An answer granting `authorizations`, each (topic pattern, channel
/// patterns, permissions), valid `ttl` seconds.
pub fn grant(ttl: i64, identity: &str, authorizations: &[(&str, &[&str], &[&str])]) -> String {
    let authorizations: Vec<serde_json::Value> = authorizations
        .iter()
        .map(|(topic, channels, permissions)| {
            serde_json::json!({"topic": topic, "channels": channels, "permissions": permissions})
        })
        .collect();
    serde_json::json!({
        "ttl": ttl,
        "identity": identity,
        "identity_url": format!("https://auth.test/{identity}"),
        "authorizations": authorizations,
    })
    .to_string()
}

async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, peer, shared.clone()));
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
                None => {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            }
        });
    }
}

/// An error from the service makes hyper close the connection unanswered.
#[derive(Debug)]
struct CloseUnanswered;

impl std::fmt::Display for CloseUnanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("closed unanswered (Mode::Close)")
    }
}

impl std::error::Error for CloseUnanswered {}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, CloseUnanswered> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header(CONTENT_TYPE);
    let mut params = BTreeMap::new();
    if let Some(q) = parts.uri.query() {
        for (k, v) in parse_form(q) {
            params.entry(k).or_insert(v);
        }
    }
    if parts.method == hyper::Method::POST {
        if let Ok(values) = serde_json::from_str::<HashMap<String, Vec<String>>>(&body) {
            for (k, v) in values {
                if let Some(first) = v.into_iter().next() {
                    params.entry(k).or_insert(first);
                }
            }
        } else {
            for (k, v) in parse_form(&body) {
                params.entry(k).or_insert(v);
            }
        }
    }
    let secret = params.get("secret").cloned();
    lock(&shared.log).push(AuthRequest {
        peer,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        content_type,
        accept: header(ACCEPT),
        body,
        params,
    });

    let mut held = shared.held.subscribe();
    let _ = held.wait_for(|h| !*h).await;

    let mode = *lock(&shared.mode);
    let (status, body) = match mode {
        Mode::Hang => std::future::pending().await,
        Mode::Close => return Err(CloseUnanswered),
        Mode::Status(status) => (status, format!(r#"{{"message":"status {status}"}}"#)),
        Mode::Answer => secret
            .and_then(|s| lock(&shared.replies).get(&s).cloned())
            .unwrap_or_else(|| (403, r#"{"message":"AUTH_FAILED"}"#.to_owned())),
    };
    let response = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("response");
    Ok(response)
}

/// `a=b&c=d` with `+` and `%XX` decoded (bad escapes kept as they are).
fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= bytes.len() => {
                match u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
