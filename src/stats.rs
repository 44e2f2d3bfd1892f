//! Process-wide counters: connections, refusals and limit hits.
//!
//! Plain relaxed atomics, written on the paths that hit them and read by
//! whoever reports them (logs now, `/metrics` later). Nothing here is ever
//! behind a lock, so counting costs a lookup nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::sync::Mutex;

/// A configured limit that a client ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `--max-command-size`: a TCP command line too long.
    CommandSize,
    /// `--max-identify-body-size`: an IDENTIFY body size out of range.
    IdentifyBodySize,
    /// `--max-registrations-per-connection`.
    RegistrationsPerConnection,
    /// `--max-registrations`: a REGISTER refused, the registry is full.
    Registrations,
    /// `--max-keys`: a REGISTER or an admin create refused, no room for a key.
    Keys,
    /// `--tcp-idle-timeout`: a registration connection went silent.
    TcpIdleTimeout,
    /// `--max-tcp-connections`: a connection refused at accept.
    TcpConnections,
    /// `--max-http-connections`: a connection refused at accept.
    HttpConnections,
    /// `--max-http-accept-rate`: the HTTP accept loop paused, new
    /// connections left in the kernel's backlog (counted once a pause).
    HttpAcceptRate,
    /// An HTTP request body over the limit.
    HttpBodySize,
    /// `--http-header-timeout`: part of a request head, and not the rest
    /// (idle keep-alive connections closed after the same time are not
    /// counted: that is ordinary client behaviour).
    HttpHeaderTimeout,
}

impl Limit {
    pub const ALL: [Limit; 11] = [
        Limit::CommandSize,
        Limit::IdentifyBodySize,
        Limit::RegistrationsPerConnection,
        Limit::Registrations,
        Limit::Keys,
        Limit::TcpIdleTimeout,
        Limit::TcpConnections,
        Limit::HttpConnections,
        Limit::HttpAcceptRate,
        Limit::HttpBodySize,
        Limit::HttpHeaderTimeout,
    ];

    /// The name used in logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Limit::CommandSize => "max_command_size",
            Limit::IdentifyBodySize => "max_identify_body_size",
            Limit::RegistrationsPerConnection => "max_registrations_per_connection",
            Limit::Registrations => "max_registrations",
            Limit::Keys => "max_keys",
            Limit::TcpIdleTimeout => "tcp_idle_timeout",
            Limit::TcpConnections => "max_tcp_connections",
            Limit::HttpConnections => "max_http_connections",
            Limit::HttpAcceptRate => "max_http_accept_rate",
            Limit::HttpBodySize => "http_max_body_size",
            Limit::HttpHeaderTimeout => "http_header_timeout",
        }
    }

    fn index(self) -> usize {
        Limit::ALL.iter().position(|l| *l == self).expect("listed")
    }
}

/// HTTP routes as metric labels; `other` is every unrouted request.
pub const HTTP_ROUTES: [&str; 14] = [
    "/ping",
    "/info",
    "/debug",
    "/lookup",
    "/topics",
    "/channels",
    "/nodes",
    "/topic/create",
    "/topic/delete",
    "/channel/create",
    "/channel/delete",
    "/topic/tombstone",
    "/metrics",
    "other",
];

/// HTTP statuses counted separately; anything else counts as `other`.
pub const HTTP_STATUSES: [&str; 8] = ["200", "301", "307", "400", "404", "405", "413", "other"];

/// TCP commands as metric labels.
pub const TCP_COMMANDS: [&str; 5] = ["PING", "IDENTIFY", "REGISTER", "UNREGISTER", "other"];

/// TCP error codes as metric labels.
pub const TCP_ERROR_CODES: [&str; 6] = [
    "E_INVALID",
    "E_BAD_BODY",
    "E_BAD_TOPIC",
    "E_BAD_CHANNEL",
    "E_BAD_PROTOCOL",
    "E_REGISTRATION_LIMIT",
];

/// Upper bounds (seconds) of the request latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// A latency histogram made of atomics: observing is three relaxed adds,
/// never a lock (the hot path is `/lookup`).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per-bucket (not cumulative) counts; the last slot is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// (sum in seconds, count, per-bucket counts with their upper bounds),
    /// the form prometheus-client's encoder accumulates into `le` buckets.
    /// The last bound is `f64::MAX`, which it writes as `+Inf`.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::MAX),
                    n.load(Ordering::Relaxed),
                )
            })
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

/// Requests and latency of one HTTP route.
#[derive(Debug, Default)]
pub struct RouteStats {
    pub by_status: [AtomicU64; HTTP_STATUSES.len()],
    pub latency: Histogram,
}

/// Cluster mode's counters (`cluster`), exported only when it is on.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Cluster mode is on (`--etcd-endpoints`).
    pub enabled: AtomicBool,
    /// The last etcd read or write succeeded (the watch, a snapshot or a
    /// publish; lease calls do not count: etcd grants leases to users it
    /// lets read and write nothing).
    pub connected: AtomicBool,
    /// The first snapshot of the other replicas is applied.
    pub ready: AtomicBool,
    /// etcd endpoints the client sends requests to (the configured ones
    /// less those failing their health checks; see `cluster::endpoints`).
    pub endpoints_in_use: AtomicU64,
    /// The TTL etcd last granted or confirmed for this replica's lease.
    pub lease_ttl_seconds: AtomicU64,
    pub keepalive_failures: AtomicU64,
    /// Keys written or deleted for this replica's own registrations.
    pub published: AtomicU64,
    /// Transactions sent.
    pub batches: AtomicU64,
    pub publish_errors: AtomicU64,
    /// Keys waiting to be published.
    pub pending: AtomicU64,
    /// Full republishes under a new lease.
    pub republishes: AtomicU64,
    /// Keys received from the watch.
    pub received: AtomicU64,
    /// Registry writes made for other replicas' registrations.
    pub applied: AtomicU64,
    /// Snapshots loaded (at start, after a compacted or lost watch).
    pub resyncs: AtomicU64,
    /// Producers shown for nsqd connected to other replicas only.
    pub remote_producers: AtomicU64,
    /// From a key's publication on one replica to its application here.
    pub watch_lag: Histogram,
}

/// Why a TLS handshake failed, as metric labels (see `tls::Failure`).
pub const TLS_HANDSHAKE_FAILURES: [&str; 6] = [
    "timeout",
    "closed",
    "no_client_certificate",
    "bad_client_certificate",
    "alert",
    "protocol",
];

/// The HTTPS listener's counters (`tls`, `http::run_tls`), exported only
/// when it is on.
#[derive(Debug, Default)]
pub struct TlsStats {
    /// HTTPS is on (`--tls-cert`, `--tls-key`).
    pub enabled: AtomicBool,
    /// HTTPS connections open (they also count as HTTP connections).
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    /// Handshakes completed.
    pub handshakes: AtomicU64,
    /// Handshakes failed, by [`TLS_HANDSHAKE_FAILURES`] index.
    pub handshake_failures: [AtomicU64; TLS_HANDSHAKE_FAILURES.len()],
    /// SIGHUP reloads of the certificate, key and CA.
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Not-after of the certificate in use, Unix seconds.
    pub not_after: AtomicI64,
}

/// The counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Cluster mode (etcd).
    pub cluster: Arc<ClusterStats>,
    /// HTTPS.
    pub tls: Arc<TlsStats>,
    /// `--tcp-allow` is set (its refusals are exported only then).
    pub tcp_allow_enabled: AtomicBool,
    /// TCP connections closed at accept: peer outside `--tcp-allow`.
    pub tcp_not_allowed: AtomicU64,
    /// HTTP answers sent gzip-compressed, and the bytes that saved.
    pub gzip_responses: AtomicU64,
    pub gzip_saved_bytes: AtomicU64,
    pub tcp_connections_open: AtomicU64,
    pub tcp_connections_total: AtomicU64,
    pub http_connections_open: AtomicU64,
    pub http_connections_total: AtomicU64,
    limit_hits: [AtomicU64; Limit::ALL.len()],
    /// By [`HTTP_ROUTES`] index.
    pub http: [RouteStats; HTTP_ROUTES.len()],
    /// By [`TCP_COMMANDS`] index: [ok, error].
    pub tcp_commands: [[AtomicU64; 2]; TCP_COMMANDS.len()],
    /// By [`TCP_ERROR_CODES`] index.
    pub tcp_errors: [AtomicU64; TCP_ERROR_CODES.len()],
    /// Writes refused by `--max-registrations` / `--max-keys`, for their
    /// warning (at most one line a second, with a count).
    pub cap_refusals: LogThrottle,
}

impl Stats {
    pub fn limit_hit(&self, limit: Limit) {
        self.limit_hits[limit.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn limit_hits(&self, limit: Limit) -> u64 {
        self.limit_hits[limit.index()].load(Ordering::Relaxed)
    }

    /// Records one HTTP request (`route`: an [`HTTP_ROUTES`] index; out of
    /// range counts as the last, "other").
    pub fn http_request(&self, route: usize, status: u16, latency: Duration) {
        let r = route.min(HTTP_ROUTES.len() - 1);
        const CODES: [u16; HTTP_STATUSES.len() - 1] = [200, 301, 307, 400, 404, 405, 413];
        let s = CODES
            .iter()
            .position(|c| *c == status)
            .unwrap_or(HTTP_STATUSES.len() - 1);
        self.http[r].by_status[s].fetch_add(1, Ordering::Relaxed);
        self.http[r].latency.observe(latency);
    }

    /// Records one TCP command and, for an error, its code (the text up to
    /// the first space of the error frame).
    pub fn tcp_command(&self, command: &str, error: Option<&[u8]>) {
        let c = TCP_COMMANDS
            .iter()
            .position(|x| *x == command)
            .unwrap_or(TCP_COMMANDS.len() - 1);
        self.tcp_commands[c][usize::from(error.is_some())].fetch_add(1, Ordering::Relaxed);
        if let Some(frame) = error {
            self.tcp_error(frame);
        }
    }

    /// Records a TCP error frame by its code.
    pub fn tcp_error(&self, frame: &[u8]) {
        let code = frame.split(|&b| b == b' ').next().unwrap_or_default();
        if let Some(i) = TCP_ERROR_CODES.iter().position(|x| x.as_bytes() == code) {
            self.tcp_errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Holds a gauge up for as long as it lives (one per open connection).
#[derive(Debug)]
pub struct GaugeGuard<'a>(&'a AtomicU64);

impl<'a> GaugeGuard<'a> {
    pub fn new(open: &'a AtomicU64, total: &AtomicU64) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(open)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Lets a repeated event (a refused connection) be logged at most once per
/// interval, with the number of occurrences since the last line.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Default for LogThrottle {
    /// At most one line a second.
    fn default() -> Self {
        LogThrottle::new(Duration::from_secs(1))
    }
}

impl LogThrottle {
    pub fn new(interval: Duration) -> Self {
        LogThrottle {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// Records one occurrence; returns `Some(count)` when a line is due.
    pub fn hit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
        let due = state.0.is_none_or(|at| at.elapsed() >= self.interval);
        if due {
            let count = state.1;
            *state = (Some(Instant::now()), 0);
            Some(count)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_counted_separately() {
        let s = Stats::default();
        s.limit_hit(Limit::CommandSize);
        s.limit_hit(Limit::CommandSize);
        s.limit_hit(Limit::TcpConnections);
        assert_eq!(s.limit_hits(Limit::CommandSize), 2);
        assert_eq!(s.limit_hits(Limit::TcpConnections), 1);
        assert_eq!(s.limit_hits(Limit::HttpBodySize), 0);
    }

    #[test]
    fn histogram_counts_each_observation_in_one_bucket() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_secs(5));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 5.00071).abs() < 1e-9);
        assert_eq!(buckets[0], (0.000_05, 1));
        assert_eq!(
            buckets[4],
            (0.001, 1),
            "700us is in the (500us, 1ms] bucket"
        );
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 3);
        assert_eq!(buckets.last().unwrap().1, 1, "5s is beyond the last bound");
        assert_eq!(buckets.last().unwrap().0, f64::MAX, "written as +Inf");
    }

    #[test]
    fn requests_and_commands_by_label() {
        let s = Stats::default();
        s.http_request(3, 200, Duration::from_micros(30));
        s.http_request(3, 404, Duration::from_micros(30));
        s.http_request(99, 999, Duration::from_micros(30));
        assert_eq!(s.http[3].by_status[0].load(Ordering::Relaxed), 1);
        assert_eq!(s.http[3].by_status[4].load(Ordering::Relaxed), 1);
        assert_eq!(s.http[13].by_status[7].load(Ordering::Relaxed), 1);
        s.tcp_command("REGISTER", None);
        s.tcp_command(
            "REGISTER",
            Some(b"E_BAD_TOPIC REGISTER topic name '' is not valid"),
        );
        assert_eq!(s.tcp_commands[2][0].load(Ordering::Relaxed), 1);
        assert_eq!(s.tcp_commands[2][1].load(Ordering::Relaxed), 1);
        assert_eq!(s.tcp_errors[2].load(Ordering::Relaxed), 1);
    }

    #[test]
    fn gauge_guard() {
        let s = Stats::default();
        {
            let _a = GaugeGuard::new(&s.tcp_connections_open, &s.tcp_connections_total);
            let _b = GaugeGuard::new(&s.tcp_connections_open, &s.tcp_connections_total);
            assert_eq!(s.tcp_connections_open.load(Ordering::Relaxed), 2);
        }
        assert_eq!(s.tcp_connections_open.load(Ordering::Relaxed), 0);
        assert_eq!(s.tcp_connections_total.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn throttle_logs_first_then_waits() {
        let t = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(t.hit(), Some(1));
        assert_eq!(t.hit(), None);
        assert_eq!(t.hit(), None);
        let t = LogThrottle::new(Duration::ZERO);
        assert_eq!(t.hit(), Some(1));
        assert_eq!(t.hit(), Some(1));
    }
}
