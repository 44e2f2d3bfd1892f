//! The client of an nsqd-style auth server (`--auth-http-address`), as a
//! lookupd uses it: a consumer's secret (its `Authorization: Bearer`
//! header), with the facts of its connection, is sent to the auth server,
//! whose answer says which topics it may subscribe to.
//!
//! The request is the one nsqd sends (NSQ's `internal/auth`):
//! - an address `host:port` is queried at `http://host:port/auth`; an
//!   address with `://` is a full URL, used exactly as given: nsqd appends
//!   no `/auth` to it (`http://auth:4181` is queried at `/`);
//! - GET (the default) sends `common_name`, `remote_ip`, `secret` and `tls`
//!   in the query string, sorted and escaped as Go's `url.Values.Encode`;
//! - POST (nsqd after 1.3.0, `--auth-http-request-method=post`) sends the
//!   same values NOT as a form but as Go's JSON encoding of `url.Values`,
//!   `{"common_name":[""],"remote_ip":["10.0.0.1"],"secret":["s"],"tls":["false"]}`,
//!   with `Content-Type: application/json`;
//! - both send `Accept: application/vnd.nsq; version=1.0`.
//!
//! The answer is checked as nsqd checks it (see [`parse_answer`]). Unlike
//! nsqd, which asks the auth server again for every new connection, answers
//! are cached by (secret, remote IP, TLS, common name) for their `ttl`, and
//! refusals for [`AuthOptions::denied_ttl`]; concurrent calls with the same
//! key share one query, and the number of queries under way is capped.
//!
//! Not done as nsqd's HTTP client does: redirects (Go follows them) and the
//! NSQ-specific retry of a 403 `{"https_port": N}` answer at https are not
//! followed (both count as a refusal); credentials and a query string in a
//! URL address are refused at start (Go would send basic auth, and append a
//! second `?`).
//!
//! The secret is never logged and never in a `Debug` output; the cache
//! keeps only a SHA-256 of each key, so neither its memory nor a heap dump
//! depends on the secrets that clients send.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::http::uri::Authority;
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use regex::{Regex, RegexBuilder};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::{debug, warn};

/// The largest answer body read; a longer one is a refusal.
pub const MAX_ANSWER_SIZE: usize = 1024 * 1024;
/// The most authorizations in one answer; more is a refusal.
pub const MAX_AUTHORIZATIONS: usize = 1024;
/// The most patterns (topics and channels, counted once each whatever the
/// number of times they appear) in one answer; more is a refusal.
pub const MAX_PATTERNS: usize = 4096;
/// Compiled size limit of one pattern (the `regex` crate's `size_limit`);
/// a pattern over it is one that "does not compile". Go has no such limit,
/// but a pattern this large is no name rule.
pub const PATTERN_SIZE_LIMIT: usize = 256 * 1024;
/// The lazy DFA cache of one pattern (per thread using it).
const PATTERN_DFA_LIMIT: usize = 256 * 1024;
/// What nsqd's HTTP client says it accepts (NSQ's `http_api.GETV1`).
const NSQ_ACCEPT: &str = "application/vnd.nsq; version=1.0";
/// Idle pooled connections to the auth servers are closed after this (Go's
/// `IdleConnTimeout` in NSQ's transport).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most idle pooled connections kept per auth server.
const POOL_MAX_IDLE_PER_HOST: usize = 16;
/// At most one warning a second about unreachable auth servers.
const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// How the auth server is asked (nsqd's `--auth-http-request-method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthMethod {
    /// The values in the query string.
    #[default]
    Get,
    /// The values as a JSON body (see the module documentation).
    Post,
}

/// Everything the client needs; [`Default`] has nsqd's defaults and no
/// address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthOptions {
    /// Each `host:port` (queried at `http://host:port/auth`) or a full
    /// `http://` or `https://` URL (queried as given); nsqd's
    /// `--auth-http-address`, which may be repeated.
    pub addresses: Vec<String>,
    /// nsqd's `--auth-http-request-method`.
    pub method: AuthMethod,
    /// TCP connect timeout (nsqd's `--http-client-connect-timeout`).
    pub connect_timeout: Duration,
    /// Whole exchange with one auth server, connect to last byte of the
    /// answer (nsqd's `--http-client-request-timeout`). A query tries the
    /// servers in turn, so it may take this times the number of addresses.
    pub request_timeout: Duration,
    /// The most cached answers (grants and refusals together); 0 caches
    /// nothing.
    pub cache_size: usize,
    /// How long a refusal is remembered, so that forged secrets cannot
    /// flood the auth server; zero remembers none.
    pub denied_ttl: Duration,
    /// The most queries under way at once; beyond, a call is answered
    /// [`AuthError::Unavailable`] at once (no queue).
    pub max_inflight: usize,
    /// PEM file of the CAs that https auth servers are checked against
    /// (nsqd's `--tls-root-ca-file`); without it, the system's roots.
    pub tls_root_ca_file: Option<PathBuf>,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            addresses: Vec::new(),
            method: AuthMethod::Get,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            cache_size: 10_000,
            denied_ttl: Duration::from_secs(1),
            max_inflight: 64,
            tls_root_ca_file: None,
        }
    }
}

/// What one request tells about its client. Every field is sent to the
/// auth server, and the answer is cached for this combination only.
#[derive(Clone, Copy)]
pub struct AuthQuery<'a> {
    /// The client's address (an IPv4-mapped IPv6 address is sent as IPv4,
    /// as Go shows it).
    pub remote_ip: IpAddr,
    /// Whether the request came over TLS.
    pub tls: bool,
    /// The secret the client presented.
    pub secret: &'a str,
    /// The CN of the client's certificate, or empty.
    pub common_name: &'a str,
}

impl fmt::Debug for AuthQuery<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthQuery")
            .field("remote_ip", &self.remote_ip)
            .field("tls", &self.tls)
            .field("secret", &"<redacted>")
            .field("common_name", &self.common_name)
            .finish()
    }
}

/// Why no grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// The auth server said no, or answered something invalid.
    Denied,
    /// No auth server answered: unreachable, timed out, or too many queries
    /// under way. Never cached.
    Unavailable,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthError::Denied => "refused by the auth server",
            AuthError::Unavailable => "auth server unavailable",
        })
    }
}

impl std::error::Error for AuthError {}

/// What a valid answer grants, until [`Grant::expires`].
/// Cloning shares the compiled patterns, each clone with its own match
/// scratch space (the `regex` crate's per-`Regex` cache pool).
#[derive(Clone, Debug)]
pub struct Grant {
    pub identity: String,
    pub identity_url: String,
    expires: Instant,
    authorizations: Vec<Authorization>,
}

/// One entry of the answer's `authorizations`, patterns compiled.
#[derive(Clone, Debug)]
struct Authorization {
    topic: Regex,
    channels: Vec<Regex>,
    subscribe: bool,
    publish: bool,
}

impl Grant {
    /// Whether the client may subscribe to some channel of `topic`: some
    /// authorization has `subscribe`, its topic pattern matches, and it has
    /// at least one channel pattern (nsqd refuses every SUB under one with
    /// none).
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.authorizations
            .iter()
            .any(|a| a.subscribe && !a.channels.is_empty() && a.topic.is_match(topic))
    }

    /// nsqd's check of a SUB to (`topic`, `channel`): some authorization
    /// has `subscribe`, its topic pattern matches the topic and one of its
    /// channel patterns the channel.
    pub fn may_subscribe_to(&self, topic: &str, channel: &str) -> bool {
        self.authorizations.iter().any(|a| {
            a.subscribe && a.topic.is_match(topic) && a.channels.iter().any(|c| c.is_match(channel))
        })
    }

    /// Whether the client may know of `topic` at all: some authorization
    /// (`subscribe` or `publish`) matches it. (nsqd's own publish check
    /// also wants a channel pattern matching the empty channel name; that
    /// does not matter for seeing a topic.)
    pub fn may_see(&self, topic: &str) -> bool {
        self.authorizations
            .iter()
            .any(|a| (a.subscribe || a.publish) && a.topic.is_match(topic))
    }

    /// When the answer stops being valid (`ttl` seconds after it arrived).
    pub fn expires(&self) -> Instant {
        self.expires
    }

    /// The number of authorizations (nsqd's `permission_count`).
    pub fn authorization_count(&self) -> usize {
        self.authorizations.len()
    }
}

/// The client's counters: plain relaxed atomics, read by whoever reports
/// them.
#[derive(Debug, Default)]
pub struct AuthStats {
    /// Calls answered from the cache (grants and refusals).
    pub cache_hits: AtomicU64,
    /// Calls not answered from the cache.
    pub cache_misses: AtomicU64,
    /// Misses that waited for a query already under way for the same key.
    pub shared_queries: AtomicU64,
    /// Queries (each to one or more auth servers) that ended in a grant.
    pub queries_ok: AtomicU64,
    /// Queries that ended in a refusal.
    pub queries_denied: AtomicU64,
    /// Queries that no auth server answered.
    pub queries_unavailable: AtomicU64,
    /// Calls answered `Unavailable` at once: `max_inflight` queries were
    /// under way (not counted as queries).
    pub overloaded: AtomicU64,
    /// Requests to one auth server that got no answer (a query tries the
    /// next server after each).
    pub server_failures: AtomicU64,
    /// Gauge: cached answers.
    pub cache_entries: AtomicU64,
    /// Gauge: queries under way.
    pub inflight: AtomicU64,
}

/// The client, shared by all HTTP connections (through an `Arc`).
pub struct AuthClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for AuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addresses: Vec<&str> = self
            .inner
            .endpoints
            .iter()
            .map(|e| e.address.as_str())
            .collect();
        f.debug_struct("AuthClient")
            .field("addresses", &addresses)
            .field("method", &self.inner.method)
            .finish_non_exhaustive()
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A cached or shared answer.
type Answer = Result<Arc<Grant>, AuthError>;

struct Inner {
    endpoints: Vec<Endpoint>,
    method: AuthMethod,
    request_timeout: Duration,
    denied_ttl: Duration,
    http: HttpClient,
    state: Mutex<State>,
    inflight: Arc<Semaphore>,
    stats: AuthStats,
    /// (last warning, failures not warned about since).
    warned: Mutex<(Option<Instant>, u64)>,
}

struct State {
    cache: Cache,
    /// Queries under way, by key: their answer, once there.
    flights: HashMap<Key, watch::Receiver<Option<Answer>>>,
}

impl AuthClient {
    /// Checks the options (addresses, timeouts, the CA file) and builds the
    /// client; nothing is sent yet.
    pub fn new(options: AuthOptions) -> Result<AuthClient, String> {
        if options.addresses.is_empty() {
            return Err("no auth server address".into());
        }
        let endpoints = options
            .addresses
            .iter()
            .map(|a| Endpoint::parse(a))
            .collect::<Result<Vec<_>, _>>()?;
        if options.connect_timeout.is_zero() || options.request_timeout.is_zero() {
            return Err("the auth server timeouts must be longer than zero".into());
        }
        if options.max_inflight == 0 {
            return Err("at least one auth query must be allowed at once".into());
        }
        let max_inflight = options.max_inflight.min(Semaphore::MAX_PERMITS);
        let tls = tls_config(&endpoints, options.tls_root_ca_file.as_deref())?;

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(options.connect_timeout));
        http.set_nodelay(true);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST.min(max_inflight))
            .build(connector);

        Ok(AuthClient {
            inner: Arc::new(Inner {
                endpoints,
                method: options.method,
                request_timeout: options.request_timeout,
                denied_ttl: options.denied_ttl,
                http,
                state: Mutex::new(State {
                    cache: Cache::new(options.cache_size),
                    flights: HashMap::new(),
                }),
                inflight: Arc::new(Semaphore::new(max_inflight)),
                stats: AuthStats::default(),
                warned: Mutex::new((None, 0)),
            }),
        })
    }

    /// The grant for `q`: from the cache, from a query for the same key
    /// already under way, or from a new query. The query runs on a task of
    /// its own, so a caller that gives up cancels nothing for the others.
    /// Must be called within a tokio runtime.
    pub async fn authorize(&self, q: &AuthQuery<'_>) -> Result<Arc<Grant>, AuthError> {
        let inner = &self.inner;
        let key = Key::of(q);
        let mut answer = {
            let mut state = inner.lock_state();
            let hit = state.cache.get(&key, Instant::now());
            inner.count_entries(&state);
            if let Some(answer) = hit {
                inner.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                return answer;
            }
            inner.stats.cache_misses.fetch_add(1, Ordering::Relaxed);
            if let Some(rx) = state.flights.get(&key) {
                inner.stats.shared_queries.fetch_add(1, Ordering::Relaxed);
                rx.clone()
            } else {
                let Ok(permit) = inner.inflight.clone().try_acquire_owned() else {
                    inner.stats.overloaded.fetch_add(1, Ordering::Relaxed);
                    return Err(AuthError::Unavailable);
                };
                let (tx, rx) = watch::channel(None);
                state.flights.insert(key, rx.clone());
                inner.stats.inflight.fetch_add(1, Ordering::Relaxed);
                let flight = Flight {
                    inner: inner.clone(),
                    key,
                    _permit: permit,
                    landed: false,
                };
                tokio::spawn(flight.run(OwnedQuery::of(q), tx));
                rx
            }
        };
        // The sender is gone without an answer only if the query's task
        // died (a panic): its flight is already unlisted.
        match answer.wait_for(Option::is_some).await {
            Ok(a) => a.clone().unwrap_or(Err(AuthError::Unavailable)),
            Err(_) => Err(AuthError::Unavailable),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &AuthStats {
        &self.inner.stats
    }
}

impl Inner {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        // Nothing under this lock can leave the state half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count_entries(&self, state: &State) {
        self.stats
            .cache_entries
            .store(state.cache.len() as u64, Ordering::Relaxed);
    }

    /// Asks the auth servers, starting at a random one, until one grants
    /// (as nsqd, a refusal too makes it try the next). A refusal from any
    /// is a refusal; no answer from all is `Unavailable`.
    async fn query(&self, q: &OwnedQuery) -> Answer {
        let n = self.endpoints.len();
        let start = random_index(n);
        let mut refused = false;
        for i in 0..n {
            let endpoint = &self.endpoints[(start + i) % n];
            match self.attempt(endpoint, q).await {
                Attempt::Granted(grant) => return Ok(Arc::new(grant)),
                Attempt::Refused(why) => {
                    debug!(
                        auth_server = %endpoint.address,
                        remote_ip = %q.remote_ip,
                        "auth server {} refused a secret from {}: {why}",
                        endpoint.address,
                        q.remote_ip
                    );
                    refused = true;
                }
                Attempt::Failed(why) => {
                    self.stats.server_failures.fetch_add(1, Ordering::Relaxed);
                    self.warn_failure(endpoint, &why);
                }
            }
        }
        Err(if refused {
            AuthError::Denied
        } else {
            AuthError::Unavailable
        })
    }

    /// One request to one auth server, within `request_timeout`.
    async fn attempt(&self, endpoint: &Endpoint, q: &OwnedQuery) -> Attempt {
        let request = match build_request(self.method, endpoint, q) {
            Ok(r) => r,
            Err(e) => return Attempt::Failed(format!("building the request: {e}")),
        };
        let exchange = async {
            let response = match self.http.request(request).await {
                Ok(r) => r,
                Err(e) => return Attempt::Failed(error_chain(&e)),
            };
            let status = response.status();
            if status != StatusCode::OK {
                return Attempt::Refused(format!("status {status}"));
            }
            let body = match Limited::new(response.into_body(), MAX_ANSWER_SIZE)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                    return Attempt::Refused(format!("answer over {MAX_ANSWER_SIZE} bytes"));
                }
                Err(e) => return Attempt::Failed(format!("reading the answer: {e}")),
            };
            match parse_answer(&body, Instant::now()) {
                Ok(grant) => Attempt::Granted(grant),
                Err(why) => Attempt::Refused(why),
            }
        };
        match tokio::time::timeout(self.request_timeout, exchange).await {
            Ok(attempt) => attempt,
            Err(_) => Attempt::Failed(format!(
                "no answer within {:?} (request timeout)",
                self.request_timeout
            )),
        }
    }

    /// Warns about an auth server that did not answer, at most once per
    /// [`WARN_INTERVAL`], with the number of failures not warned about.
    fn warn_failure(&self, endpoint: &Endpoint, why: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if warned
            .0
            .is_some_and(|last| now.duration_since(last) < WARN_INTERVAL)
        {
            warned.1 += 1;
            return;
        }
        let skipped = std::mem::take(&mut warned.1);
        warned.0 = Some(now);
        drop(warned);
        if skipped > 0 {
            warn!(auth_server = %endpoint.address, "auth server {}: {why} ({skipped} more failure(s) since the last warning)", endpoint.address);
        } else {
            warn!(auth_server = %endpoint.address, "auth server {}: {why}", endpoint.address);
        }
    }
}

/// One query under way: owns its in-flight permit, and unlists itself
/// whatever happens (a panic included), so that no call ever waits on a
/// query that nobody runs.
struct Flight {
    inner: Arc<Inner>,
    key: Key,
    _permit: OwnedSemaphorePermit,
    landed: bool,
}

impl Flight {
    async fn run(mut self, q: OwnedQuery, tx: watch::Sender<Option<Answer>>) {
        let answer = self.inner.query(&q).await;
        drop(q);
        let inner = &self.inner;
        let counter = match &answer {
            Ok(_) => &inner.stats.queries_ok,
            Err(AuthError::Denied) => &inner.stats.queries_denied,
            Err(AuthError::Unavailable) => &inner.stats.queries_unavailable,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        {
            let mut state = inner.lock_state();
            state.flights.remove(&self.key);
            let now = Instant::now();
            match &answer {
                Ok(grant) => state
                    .cache
                    .insert(self.key, answer.clone(), grant.expires, now),
                Err(AuthError::Denied) if !inner.denied_ttl.is_zero() => {
                    if let Some(expires) = now.checked_add(inner.denied_ttl) {
                        state.cache.insert(self.key, answer.clone(), expires, now);
                    }
                }
                Err(_) => {}
            }
            inner.count_entries(&state);
            self.landed = true;
        }
        tx.send_replace(Some(answer));
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if !self.landed {
            self.inner.lock_state().flights.remove(&self.key);
        }
        self.inner.stats.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The outcome of one request to one auth server.
enum Attempt {
    Granted(Grant),
    /// It answered, but no (the reason, for the debug log).
    Refused(String),
    /// It did not answer (the reason, for the warning).
    Failed(String),
}

/// The query, owned by the task that sends it. No `Debug`: it holds the
/// secret.
struct OwnedQuery {
    remote_ip: IpAddr,
    tls: bool,
    secret: String,
    common_name: String,
}

impl OwnedQuery {
    fn of(q: &AuthQuery<'_>) -> OwnedQuery {
        OwnedQuery {
            remote_ip: q.remote_ip.to_canonical(),
            tls: q.tls,
            secret: q.secret.to_owned(),
            common_name: q.common_name.to_owned(),
        }
    }

    /// The values nsqd sends, sorted by name (as Go's `url.Values.Encode`
    /// and `json.Marshal` of a map write them).
    fn values(&self) -> [(&'static str, String); 4] {
        [
            ("common_name", self.common_name.clone()),
            ("remote_ip", self.remote_ip.to_string()),
            ("secret", self.secret.clone()),
            ("tls", if self.tls { "true" } else { "false" }.to_owned()),
        ]
    }
}

/// The HTTP request nsqd would send for `q` to `endpoint`.
fn build_request(
    method: AuthMethod,
    endpoint: &Endpoint,
    q: &OwnedQuery,
) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
    let values = q.values();
    let user_agent = HeaderValue::from_static(concat!("nsqlookupd/", env!("CARGO_PKG_VERSION")));
    match method {
        AuthMethod::Get => {
            let mut uri = String::with_capacity(endpoint.base.len() + 64 + q.secret.len() * 3);
            uri.push_str(&endpoint.base);
            uri.push('?');
            for (i, (name, value)) in values.iter().enumerate() {
                if i > 0 {
                    uri.push('&');
                }
                uri.push_str(name);
                uri.push('=');
                query_escape(value, &mut uri);
            }
            Request::get(uri)
                .header(ACCEPT, NSQ_ACCEPT)
                .header(USER_AGENT, user_agent)
                .body(Full::default())
        }
        AuthMethod::Post => {
            let form: BTreeMap<&str, [&str; 1]> =
                values.iter().map(|(n, v)| (*n, [v.as_str()])).collect();
            let body = serde_json::to_vec(&form).expect("strings always serialize");
            Request::post(endpoint.base.as_str())
                .header(ACCEPT, NSQ_ACCEPT)
                .header(USER_AGENT, user_agent)
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
        }
    }
}

/// Go's `url.QueryEscape`: letters, digits and `-_.~` as they are, space as
/// `+`, every other byte `%XX`.
fn query_escape(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
    }
}

/// An error and its sources, `a: b: c` (hyper's own Display says little).
/// None of them holds the request URI, so none the secret.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// A random index below `n` (which auth server is asked first), from the
/// std hasher's random keys: no generator needed for spreading load.
fn random_index(n: usize) -> usize {
    let r = RandomState::new().build_hasher().finish();
    (r % n as u64) as usize
}

// ------------------------------------------------------------- addresses

/// One auth server address, resolved to what is requested.
#[derive(Clone, Debug)]
struct Endpoint {
    /// As configured, for logs.
    address: String,
    /// `scheme://authority/path`, without a query.
    base: String,
    https: bool,
}

impl Endpoint {
    /// nsqd's rule: with `://` the address is the URL, else
    /// `http://<address>/auth`.
    fn parse(address: &str) -> Result<Endpoint, String> {
        let bad = |why: &str| format!("auth server address {address:?}: {why}");
        if address.contains("://") {
            let uri: Uri = address
                .parse()
                .map_err(|e| bad(&format!("not a URL ({e})")))?;
            let https = match uri.scheme_str() {
                Some("http") => false,
                Some("https") => true,
                _ => return Err(bad("the scheme must be http:// or https://")),
            };
            let authority = uri.authority().ok_or_else(|| bad("no host"))?;
            check_authority(authority).map_err(bad)?;
            if uri.query().is_some() {
                return Err(bad(
                    "a query string is not supported (nsqd would append a second '?')",
                ));
            }
            let scheme = if https { "https" } else { "http" };
            let path = match uri.path() {
                "" => "/",
                p => p,
            };
            Ok(Endpoint {
                address: address.to_owned(),
                base: format!("{scheme}://{authority}{path}"),
                https,
            })
        } else {
            if address.contains(['/', '?', '#', '@']) || address.contains(char::is_whitespace) {
                return Err(bad("expected host:port or a full http(s):// URL"));
            }
            let authority: Authority = address
                .parse()
                .map_err(|_| bad("expected host:port or a full http(s):// URL"))?;
            check_authority(&authority).map_err(bad)?;
            Ok(Endpoint {
                address: address.to_owned(),
                base: format!("http://{authority}/auth"),
                https: false,
            })
        }
    }
}

fn check_authority(authority: &Authority) -> Result<(), &'static str> {
    if authority.as_str().contains('@') {
        return Err("credentials in the address are not supported");
    }
    if authority.host().is_empty() {
        return Err("no host");
    }
    Ok(())
}

/// The TLS settings of https auth servers: ring, the CA file or else the
/// system roots (loaded only when some address is https).
fn tls_config(
    endpoints: &[Endpoint],
    ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("auth server TLS: {e}"))?;
    if let Some(path) = ca_file {
        let bad = |why: String| format!("auth server CA file {}: {why}", path.display());
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(bad("no usable certificate".into()));
        }
        return Ok(builder.with_root_certificates(roots).with_no_client_auth());
    }
    if endpoints.iter().any(|e| e.https) {
        return Ok(builder
            .with_native_roots()
            .map_err(|e| format!("auth server TLS: no system CA certificates ({e})"))?
            .with_no_client_auth());
    }
    Ok(builder
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

// ---------------------------------------------------------------- answer

/// The answer as Go decodes it: every field may be missing or `null`
/// (Go's zero value then), unknown fields are ignored. (Go also matches
/// field names case-insensitively and lets a repeated field win; serde
/// does neither: such an answer is refused.)
#[derive(Deserialize)]
struct RawAnswer {
    ttl: Option<i64>,
    identity: Option<String>,
    identity_url: Option<String>,
    authorizations: Option<Vec<Option<RawAuthorization>>>,
}

#[derive(Deserialize)]
struct RawAuthorization {
    topic: Option<String>,
    channels: Option<Vec<Option<String>>>,
    permissions: Option<Vec<Option<String>>>,
}

/// Checks a 200 answer as nsqd does: JSON, each permission `subscribe` or
/// `publish`, each topic and channel pattern compiles, `ttl > 0`; the
/// grant is valid `ttl` seconds from `received`. Also refused: over
/// [`MAX_AUTHORIZATIONS`] or [`MAX_PATTERNS`].
///
/// Patterns are Go regexps matched unanchored (`MatchString`), compiled
/// here with the `regex` crate, once each per answer. Both are RE2 syntax;
/// the differences known:
/// - Go refuses what `regex` accepts: repetition counts over 1000
///   (`a{1001}`), the `x` and `R` flags (`(?x)`), nested classes and class
///   set operations (`[a-z&&[^x]]`, `--`, `~~`: in Go `[a[b]` is a class
///   of `a`, `[`, `b`, and `&&` two literal `&`), `\<` and `\>`.
/// - `regex` refuses what Go accepts: `\Q...\E` literal runs, and
///   patterns over [`PATTERN_SIZE_LIMIT`] compiled.
/// - `\d`, `\w`, `\s`, `\b` are Unicode in `regex`, ASCII in Go: the same
///   on NSQ names, which are ASCII.
pub fn parse_answer(body: &[u8], received: Instant) -> Result<Grant, String> {
    let raw: RawAnswer =
        serde_json::from_slice(body).map_err(|e| format!("answer is not valid JSON: {e}"))?;
    let raw_authorizations = raw.authorizations.unwrap_or_default();
    if raw_authorizations.len() > MAX_AUTHORIZATIONS {
        return Err(format!(
            "{} authorizations (at most {MAX_AUTHORIZATIONS})",
            raw_authorizations.len()
        ));
    }
    let mut compiled: HashMap<String, Regex> = HashMap::new();
    let mut compile = |pattern: Option<String>, what: &str| -> Result<Regex, String> {
        let pattern = pattern.unwrap_or_default();
        if let Some(re) = compiled.get(&pattern) {
            return Ok(re.clone());
        }
        if compiled.len() >= MAX_PATTERNS {
            return Err(format!("more than {MAX_PATTERNS} patterns"));
        }
        let re = RegexBuilder::new(&pattern)
            .size_limit(PATTERN_SIZE_LIMIT)
            .dfa_size_limit(PATTERN_DFA_LIMIT)
            .build()
            .map_err(|e| format!("unable to compile {what} {pattern:?}: {e}"))?;
        compiled.insert(pattern, re.clone());
        Ok(re)
    };
    let mut authorizations = Vec::with_capacity(raw_authorizations.len());
    for raw in raw_authorizations {
        let raw = raw.unwrap_or(RawAuthorization {
            topic: None,
            channels: None,
            permissions: None,
        });
        let (mut subscribe, mut publish) = (false, false);
        for p in raw.permissions.unwrap_or_default() {
            match p.as_deref().unwrap_or("") {
                "subscribe" => subscribe = true,
                "publish" => publish = true,
                other => return Err(format!("unknown permission {other:?}")),
            }
        }
        let topic = compile(raw.topic, "topic")?;
        let channels = raw
            .channels
            .unwrap_or_default()
            .into_iter()
            .map(|c| compile(c, "channel"))
            .collect::<Result<Vec<_>, _>>()?;
        authorizations.push(Authorization {
            topic,
            channels,
            subscribe,
            publish,
        });
    }
    let ttl = raw.ttl.unwrap_or(0);
    if ttl <= 0 {
        return Err(format!("invalid TTL {ttl} (must be >0)"));
    }
    // A ttl past what an Instant holds is as good as forever.
    let expires = received
        .checked_add(Duration::from_secs(ttl as u64))
        .or_else(|| received.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(received);
    Ok(Grant {
        identity: raw.identity.unwrap_or_default(),
        identity_url: raw.identity_url.unwrap_or_default(),
        expires,
        authorizations,
    })
}

// ----------------------------------------------------------------- cache

/// A cache key: SHA-256 of (remote IP, TLS, secret, common name), each
/// length-prefixed; the secret itself is not kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key([u8; 32]);

impl Key {
    fn of(q: &AuthQuery<'_>) -> Key {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        match q.remote_ip.to_canonical() {
            IpAddr::V4(ip) => {
                ctx.update(&[4]);
                ctx.update(&ip.octets());
            }
            IpAddr::V6(ip) => {
                ctx.update(&[6]);
                ctx.update(&ip.octets());
            }
        }
        ctx.update(&[u8::from(q.tls)]);
        for field in [q.secret, q.common_name] {
            ctx.update(&(field.len() as u64).to_le_bytes());
            ctx.update(field.as_bytes());
        }
        let mut key = [0; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        Key(key)
    }
}

/// Answers by key, at most `capacity`, each until its expiry. Making room
/// drops the expired entries first, then the oldest (by arrival). Every
/// operation is O(log n); time is a parameter, for the tests.
struct Cache {
    capacity: usize,
    entries: HashMap<Key, Slot>,
    /// (expiry, sequence) → key.
    by_expiry: BTreeMap<(Instant, u64), Key>,
    /// sequence (arrival order) → key.
    by_age: BTreeMap<u64, Key>,
    next_seq: u64,
}

struct Slot {
    answer: Answer,
    expires: Instant,
    seq: u64,
}

impl Cache {
    fn new(capacity: usize) -> Cache {
        Cache {
            capacity,
            entries: HashMap::new(),
            by_expiry: BTreeMap::new(),
            by_age: BTreeMap::new(),
            next_seq: 0,
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The answer for `key` if it has not expired at `now` (an expired one
    /// is dropped).
    fn get(&mut self, key: &Key, now: Instant) -> Option<Answer> {
        let slot = self.entries.get(key)?;
        if now < slot.expires {
            return Some(slot.answer.clone());
        }
        self.remove(key);
        None
    }

    fn insert(&mut self, key: Key, answer: Answer, expires: Instant, now: Instant) {
        self.remove(&key);
        if self.capacity == 0 || expires <= now {
            return;
        }
        while let Some((&(at, _), &old)) = self.by_expiry.first_key_value() {
            if at > now {
                break;
            }
            self.remove(&old);
        }
        while self.entries.len() >= self.capacity {
            let Some((_, &oldest)) = self.by_age.first_key_value() else {
                break;
            };
            self.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_expiry.insert((expires, seq), key);
        self.by_age.insert(seq, key);
        self.entries.insert(
            key,
            Slot {
                answer,
                expires,
                seq,
            },
        );
    }

    fn remove(&mut self, key: &Key) {
        if let Some(slot) = self.entries.remove(key) {
            self.by_expiry.remove(&(slot.expires, slot.seq));
            self.by_age.remove(&slot.seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(json: &str) -> Grant {
        parse_answer(json.as_bytes(), Instant::now()).unwrap()
    }

    fn refused(json: &str) -> String {
        parse_answer(json.as_bytes(), Instant::now()).unwrap_err()
    }

    fn query<'a>(secret: &'a str) -> AuthQuery<'a> {
        AuthQuery {
            remote_ip: "10.0.0.1".parse().unwrap(),
            tls: false,
            secret,
            common_name: "",
        }
    }

    #[test]
    fn a_valid_answer_is_a_grant_valid_for_its_ttl() {
        let received = Instant::now();
        let g = parse_answer(
            br#"{"ttl": 30, "identity": "alice", "identity_url": "https://id/alice", "extra": 1,
                 "authorizations": [{"topic": "^orders$", "channels": [".*"], "permissions": ["subscribe"]},
                                    {"topic": "^audit", "channels": [], "permissions": ["publish"]}]}"#,
            received,
        )
        .unwrap();
        assert_eq!(g.identity, "alice");
        assert_eq!(g.identity_url, "https://id/alice");
        assert_eq!(g.expires(), received + Duration::from_secs(30));
        assert_eq!(g.authorization_count(), 2);
        assert!(g.may_subscribe("orders"));
        assert!(!g.may_subscribe("orders2"));
        assert!(!g.may_subscribe("audit_log"), "publish only");
        assert!(g.may_see("audit_log"), "publish is enough to see it");
        assert!(g.may_see("orders"));
        assert!(!g.may_see("billing"));
    }

    #[test]
    fn patterns_match_unanchored_as_go_matchstring() {
        let g = grant(
            r#"{"ttl": 1, "authorizations": [{"topic": "ok_.*", "channels": ["^c$", "x"], "permissions": ["subscribe"]}]}"#,
        );
        assert!(g.may_subscribe("ok_1"));
        assert!(g.may_subscribe("not_ok_1"), "unanchored");
        assert!(!g.may_subscribe("ok"));
        assert!(g.may_subscribe_to("ok_1", "c"));
        assert!(g.may_subscribe_to("ok_1", "a_x_b"), "unanchored channel");
        assert!(!g.may_subscribe_to("ok_1", "cc"));
        assert!(!g.may_subscribe_to("nope", "c"));
    }

    #[test]
    fn subscribe_needs_a_channel_pattern_and_empty_topic_matches_all() {
        let g =
            grant(r#"{"ttl": 1, "authorizations": [{"topic": "", "permissions": ["subscribe"]}]}"#);
        assert!(
            !g.may_subscribe("t"),
            "no channel pattern: nsqd refuses every SUB"
        );
        assert!(g.may_see("t"));
        let g = grant(
            r#"{"ttl": 1, "authorizations": [{"topic": "", "channels": [""], "permissions": ["subscribe", "publish"]}]}"#,
        );
        assert!(g.may_subscribe("anything"));
        assert!(g.may_subscribe_to("anything", "at_all"));
    }

    #[test]
    fn no_permission_no_access() {
        let g = grant(
            r#"{"ttl": 1, "authorizations": [{"topic": ".*", "channels": [".*"], "permissions": []}, null]}"#,
        );
        assert!(!g.may_see("t"));
        assert!(!g.may_subscribe("t"));
        let g = grant(r#"{"ttl": 1}"#);
        assert_eq!(g.authorization_count(), 0);
        assert!(!g.may_see("t"));
        let g = grant(r#"{"ttl": 1, "authorizations": null, "identity": null}"#);
        assert_eq!(g.identity, "");
    }

    #[test]
    fn invalid_answers_are_refusals() {
        for (body, why) in [
            ("", "JSON"),
            ("not json", "JSON"),
            (r#"{"ttl": 1} x"#, "JSON"),
            (r#"{"ttl": "10"}"#, "JSON"),
            (r#"{"ttl": 1.5}"#, "JSON"),
            (r#"{"ttl": 0}"#, "TTL"),
            (r#"{"ttl": -5}"#, "TTL"),
            (r#"{"identity": "x"}"#, "TTL"),
            ("null", "JSON"),
            (
                r#"{"ttl": 1, "authorizations": [{"topic": "t", "permissions": ["read"]}]}"#,
                "permission",
            ),
            (
                r#"{"ttl": 1, "authorizations": [{"topic": "t", "permissions": ["Subscribe"]}]}"#,
                "permission",
            ),
            (
                r#"{"ttl": 1, "authorizations": [{"topic": "t", "permissions": [null]}]}"#,
                "permission",
            ),
            (
                r#"{"ttl": 1, "authorizations": [{"topic": "(", "permissions": ["subscribe"]}]}"#,
                "compile topic",
            ),
            (
                r#"{"ttl": 1, "authorizations": [{"topic": "t", "channels": ["[z-a]"], "permissions": ["subscribe"]}]}"#,
                "compile channel",
            ),
            (
                r#"{"ttl": 1, "authorizations": [{"topic": "a{1000}{1000}", "permissions": ["subscribe"]}]}"#,
                "compile topic",
            ),
        ] {
            let err = refused(body);
            assert!(err.contains(why), "{body:?}: {err:?} should say {why:?}");
        }
    }

    #[test]
    fn a_permission_error_wins_even_with_a_good_ttl_and_order_is_nsqds() {
        // nsqd checks the authorizations before the ttl.
        let err =
            refused(r#"{"ttl": 0, "authorizations": [{"topic": "t", "permissions": ["x"]}]}"#);
        assert!(err.contains("permission"), "{err}");
    }

    #[test]
    fn answers_are_bounded() {
        let one = r#"{"topic": "t", "channels": [".*"], "permissions": ["subscribe"]}"#;
        let many = vec![one; MAX_AUTHORIZATIONS + 1].join(",");
        let err = refused(&format!(r#"{{"ttl": 1, "authorizations": [{many}]}}"#));
        assert!(err.contains("authorizations"), "{err}");
        let ok = vec![one; MAX_AUTHORIZATIONS].join(",");
        let g = grant(&format!(r#"{{"ttl": 1, "authorizations": [{ok}]}}"#));
        assert_eq!(g.authorization_count(), MAX_AUTHORIZATIONS);
        let patterns: Vec<String> = (0..MAX_PATTERNS).map(|i| format!("\"c{i}\"")).collect();
        let err = refused(&format!(
            r#"{{"ttl": 1, "authorizations": [{{"topic": "t", "channels": [{}], "permissions": ["subscribe"]}}]}}"#,
            patterns.join(",")
        ));
        assert!(err.contains("patterns"), "{err}");
    }

    #[test]
    fn go_syntax_differences_noted_in_parse_answer_hold() {
        let compiles = |p: &str| Regex::new(p).is_ok();
        assert!(!compiles(r"\Qa.b\E"), "regex lacks \\Q...\\E");
        assert!(compiles("a{1001}"), "Go refuses counts over 1000");
        assert!(compiles("(?x) a"), "Go has no x flag");
        assert!(compiles("[a-z&&[^x]]"), "class set operations");
        // What NSQ names are made of matches the same.
        let re = Regex::new(r"^\w+\.\d+$").unwrap();
        assert!(re.is_match("topic_a.12"));
        assert!(!re.is_match("topic-a.12"));
    }

    #[test]
    fn a_huge_ttl_is_clamped_not_a_panic() {
        let g = grant(r#"{"ttl": 9223372036854775807}"#);
        assert!(g.expires() > Instant::now() + Duration::from_secs(365 * 86_400));
    }

    #[test]
    fn query_escape_is_gos() {
        let mut s = String::new();
        query_escape("a b+c/d?e=f&g%h~i-j_k.l\u{e9}\"", &mut s);
        assert_eq!(s, "a+b%2Bc%2Fd%3Fe%3Df%26g%25h~i-j_k.l%C3%A9%22");
    }

    fn owned(secret: &str, ip: &str, tls: bool, cn: &str) -> OwnedQuery {
        OwnedQuery::of(&AuthQuery {
            remote_ip: ip.parse().unwrap(),
            tls,
            secret,
            common_name: cn,
        })
    }

    #[test]
    fn get_requests_are_nsqds() {
        let ep = Endpoint::parse("127.0.0.1:4181").unwrap();
        let r = build_request(
            AuthMethod::Get,
            &ep,
            &owned("s e&cret", "::ffff:10.1.2.3", true, "cn x"),
        )
        .unwrap();
        assert_eq!(r.method(), hyper::Method::GET);
        assert_eq!(
            r.uri().to_string(),
            "http://127.0.0.1:4181/auth?common_name=cn+x&remote_ip=10.1.2.3&secret=s+e%26cret&tls=true"
        );
        assert_eq!(r.headers()[ACCEPT], NSQ_ACCEPT);
        let ep = Endpoint::parse("https://auth.example:8443/v1/check").unwrap();
        let r = build_request(AuthMethod::Get, &ep, &owned("s", "fd00::1", false, "")).unwrap();
        assert_eq!(
            r.uri().to_string(),
            "https://auth.example:8443/v1/check?common_name=&remote_ip=fd00%3A%3A1&secret=s&tls=false"
        );
    }

    #[test]
    fn post_requests_are_nsqds_json_of_url_values() {
        let ep = Endpoint::parse("http://auth:4181").unwrap();
        let r = build_request(
            AuthMethod::Post,
            &ep,
            &owned("sec\"ret", "10.0.0.1", false, ""),
        )
        .unwrap();
        assert_eq!(r.method(), hyper::Method::POST);
        assert_eq!(
            r.uri().to_string(),
            "http://auth:4181/",
            "no /auth added to a URL"
        );
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()[ACCEPT], NSQ_ACCEPT);
        let body = futures_body(r.into_body());
        assert_eq!(
            body,
            r#"{"common_name":[""],"remote_ip":["10.0.0.1"],"secret":["sec\"ret"],"tls":["false"]}"#
        );
    }

    fn futures_body(body: Full<Bytes>) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt.block_on(body.collect()).unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn addresses_follow_nsqds_rule() {
        let base = |a: &str| Endpoint::parse(a).map(|e| (e.base, e.https));
        assert_eq!(
            base("auth:4181").unwrap(),
            ("http://auth:4181/auth".into(), false)
        );
        assert_eq!(
            base("[::1]:4181").unwrap(),
            ("http://[::1]:4181/auth".into(), false)
        );
        assert_eq!(base("auth").unwrap(), ("http://auth/auth".into(), false));
        assert_eq!(
            base("http://auth:1/").unwrap(),
            ("http://auth:1/".into(), false)
        );
        assert_eq!(
            base("https://auth/x/auth").unwrap(),
            ("https://auth/x/auth".into(), true)
        );
        assert_eq!(
            base("HTTPS://auth/").unwrap(),
            ("https://auth/".into(), true)
        );
        for bad in [
            "",
            "auth:4181/auth",
            "auth 1:2",
            "user@auth:1",
            "ftp://auth/",
            "http://",
            "http://:80/auth",
            "http://user:pw@auth/auth",
            "http://auth/auth?x=1",
            "://auth",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn new_checks_its_options() {
        let with = |f: fn(&mut AuthOptions)| {
            let mut o = AuthOptions {
                addresses: vec!["127.0.0.1:1".into()],
                ..AuthOptions::default()
            };
            f(&mut o);
            AuthClient::new(o)
        };
        assert!(with(|_| {}).is_ok());
        assert!(with(|o| o.addresses.clear()).is_err());
        assert!(with(|o| o.addresses.push("ftp://x/".into())).is_err());
        assert!(with(|o| o.max_inflight = 0).is_err());
        assert!(with(|o| o.request_timeout = Duration::ZERO).is_err());
        assert!(with(|o| o.connect_timeout = Duration::ZERO).is_err());
        assert!(with(|o| o.tls_root_ca_file = Some("/nonexistent/ca.pem".into())).is_err());
        let err = with(|o| o.tls_root_ca_file = Some("Cargo.toml".into())).unwrap_err();
        assert!(err.contains("no usable certificate"), "{err}");
    }

    #[test]
    fn the_secret_is_in_no_debug_output() {
        let q = query("hunter2-secret");
        let s = format!("{q:?}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("10.0.0.1"), "{s}");
        let c = AuthClient::new(AuthOptions {
            addresses: vec!["127.0.0.1:1".into()],
            ..AuthOptions::default()
        })
        .unwrap();
        assert!(format!("{c:?}").contains("127.0.0.1:1"));
    }

    #[test]
    fn the_client_and_its_calls_cross_threads() {
        fn shared<T: Send + Sync>(_: &T) {}
        fn sent<T: Send>(_: T) {}
        let c = AuthClient::new(AuthOptions {
            addresses: vec!["127.0.0.1:1".into()],
            ..AuthOptions::default()
        })
        .unwrap();
        shared(&c);
        let q = query("s");
        sent(c.authorize(&q)); // never polled
    }

    #[test]
    fn keys_differ_by_every_field() {
        let base = Key::of(&query("s"));
        let mut q = query("s");
        q.tls = true;
        assert!(Key::of(&q) != base);
        let mut q = query("s");
        q.common_name = "cn";
        assert!(Key::of(&q) != base);
        let mut q = query("s");
        q.remote_ip = "10.0.0.2".parse().unwrap();
        assert!(Key::of(&q) != base);
        assert!(Key::of(&query("t")) != base);
        // Fields are length-prefixed: moving bytes between them changes it.
        let a = AuthQuery {
            secret: "ab",
            common_name: "c",
            ..query("")
        };
        let b = AuthQuery {
            secret: "a",
            common_name: "bc",
            ..query("")
        };
        assert!(Key::of(&a) != Key::of(&b));
        // The IPv4-mapped form is the IPv4 address (that is what is sent).
        let mut q = query("s");
        q.remote_ip = "::ffff:10.0.0.1".parse().unwrap();
        assert!(Key::of(&q) == base);
    }

    fn key(i: u32) -> Key {
        let s = i.to_string();
        Key::of(&query(&s))
    }

    fn denied() -> Answer {
        Err(AuthError::Denied)
    }

    #[test]
    fn cache_entries_expire_at_their_time() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = Cache::new(10);
        c.insert(key(1), denied(), t0 + 2 * s, t0);
        assert!(matches!(
            c.get(&key(1), t0 + s),
            Some(Err(AuthError::Denied))
        ));
        assert!(
            c.get(&key(1), t0 + 2 * s).is_none(),
            "expired at its expiry"
        );
        assert_eq!(c.len(), 0, "an expired entry is dropped when looked up");
        c.insert(key(2), denied(), t0, t0);
        assert_eq!(c.len(), 0, "already expired: not kept");
        assert!(c.get(&key(3), t0).is_none());
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first_then_the_oldest() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = Cache::new(3);
        c.insert(key(1), denied(), t0 + 100 * s, t0); // oldest, long-lived
        c.insert(key(2), denied(), t0 + 2 * s, t0);
        c.insert(key(3), denied(), t0 + 100 * s, t0);
        // At t0+5, key 2 has expired: it goes, and the oldest stays.
        c.insert(key(4), denied(), t0 + 100 * s, t0 + 5 * s);
        assert_eq!(c.len(), 3);
        assert!(c.get(&key(1), t0 + 5 * s).is_some());
        assert!(c.get(&key(2), t0 + 5 * s).is_none());
        // Nothing expired: the oldest (key 1) goes.
        c.insert(key(5), denied(), t0 + 100 * s, t0 + 6 * s);
        assert_eq!(c.len(), 3);
        assert!(c.get(&key(1), t0 + 6 * s).is_none());
        for k in [3, 4, 5] {
            assert!(c.get(&key(k), t0 + 6 * s).is_some(), "{k}");
        }
        // Replacing an entry does not count twice, and makes it the newest.
        c.insert(key(3), denied(), t0 + 100 * s, t0 + 7 * s);
        assert_eq!(c.len(), 3);
        c.insert(key(6), denied(), t0 + 100 * s, t0 + 7 * s);
        assert!(c.get(&key(4), t0 + 7 * s).is_none(), "4 was the oldest now");
        assert!(c.get(&key(3), t0 + 7 * s).is_some());
        assert_eq!((c.by_age.len(), c.by_expiry.len()), (3, 3), "indexes agree");
    }

    #[test]
    fn many_distinct_keys_stay_within_the_capacity() {
        let t0 = Instant::now();
        let mut c = Cache::new(100);
        for i in 0..10_000 {
            c.insert(key(i), denied(), t0 + Duration::from_secs(60), t0);
        }
        assert_eq!(c.len(), 100);
        assert_eq!((c.by_age.len(), c.by_expiry.len()), (100, 100));
        assert!(c.get(&key(9_999), t0).is_some());
        assert!(c.get(&key(0), t0).is_none());
        let mut z = Cache::new(0);
        z.insert(key(1), denied(), t0 + Duration::from_secs(60), t0);
        assert_eq!(z.len(), 0);
    }
}
