//! Process-wide counters: connections, refusals and limit hits.
//!
//! Plain relaxed atomics, written on the paths that hit them and read by
//! whoever reports them (logs now, `/metrics` later). Nothing here is ever
//! behind a lock, so counting costs a lookup nothing.

use std::sync::atomic::{AtomicU64, Ordering};
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
    /// `--tcp-idle-timeout`: a registration connection went silent.
    TcpIdleTimeout,
    /// `--max-tcp-connections`: a connection refused at accept.
    TcpConnections,
    /// `--max-http-connections`: a connection refused at accept.
    HttpConnections,
    /// An HTTP request body over the limit.
    HttpBodySize,
}

impl Limit {
    pub const ALL: [Limit; 7] = [
        Limit::CommandSize,
        Limit::IdentifyBodySize,
        Limit::RegistrationsPerConnection,
        Limit::TcpIdleTimeout,
        Limit::TcpConnections,
        Limit::HttpConnections,
        Limit::HttpBodySize,
    ];

    /// The name used in logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Limit::CommandSize => "max_command_size",
            Limit::IdentifyBodySize => "max_identify_body_size",
            Limit::RegistrationsPerConnection => "max_registrations_per_connection",
            Limit::TcpIdleTimeout => "tcp_idle_timeout",
            Limit::TcpConnections => "max_tcp_connections",
            Limit::HttpConnections => "max_http_connections",
            Limit::HttpBodySize => "http_max_body_size",
        }
    }

    fn index(self) -> usize {
        Limit::ALL.iter().position(|l| *l == self).expect("listed")
    }
}

/// The counters.
#[derive(Debug, Default)]
pub struct Stats {
    pub tcp_connections_open: AtomicU64,
    pub tcp_connections_total: AtomicU64,
    pub http_connections_open: AtomicU64,
    pub http_connections_total: AtomicU64,
    limit_hits: [AtomicU64; Limit::ALL.len()],
}

impl Stats {
    pub fn limit_hit(&self, limit: Limit) {
        self.limit_hits[limit.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn limit_hits(&self, limit: Limit) -> u64 {
        self.limit_hits[limit.index()].load(Ordering::Relaxed)
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
