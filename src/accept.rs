//! The accept loop every listener shares: accept, cap the number of open
//! connections, refuse (and count) the excess.
//!
//! A refused connection is closed at once, before any byte is read, so a
//! flood of sockets costs one file descriptor for an instant each and never
//! touches the connections already served. Refusals are logged at most once
//! a second, with their count, so a flood cannot flood the log too.
//!
//! An [`AcceptRate`] (`--max-http-accept-rate`) paces the accepts: past
//! it, the loop waits before taking the next socket, and new connections
//! wait in the kernel's backlog (up to `net.core.somaxconn`, then their
//! SYNs are retried by the client's kernel) instead of in the server. A new
//! connection costs the server ~84 us of CPU, three quarters of it in the
//! kernel (accept, epoll registration, the answer's write, shutdown and
//! close; measured on a 2-core VM with a burst of 20,000), so a burst of
//! 20,000 in a second is 1.7 s of one core's work: unpaced, it queues the
//! open connections' requests and an nsqd's PING behind it for hundreds of
//! milliseconds (perf/faults.sh burst).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::allow::AllowList;
use crate::stats::{Limit, LogThrottle, Stats};

/// An accepted connection, holding one of the listener's slots until dropped.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub slot: OwnedSemaphorePermit,
}

/// A pace for accepts: at most `per_second` on average, with up to a tenth
/// of a second's worth taken at once after a quiet spell (the generic cell
/// rate algorithm: one theoretical arrival time, no timer, no task). Shared
/// by every acceptor given it (HTTP and HTTPS).
#[derive(Debug)]
pub struct AcceptRate {
    per_second: usize,
    /// Time one accept uses up.
    interval: Duration,
    /// How far ahead of now the theoretical arrival time may run before an
    /// accept waits: the burst allowed.
    tolerance: Duration,
    /// When the next accept would be due at exactly the rate.
    next_due: Mutex<Option<Instant>>,
}

impl AcceptRate {
    /// `None` for 0: no limit.
    pub fn new(per_second: usize) -> Option<Self> {
        (per_second > 0).then(|| {
            let interval = Duration::from_secs(1) / per_second.min(u32::MAX as usize) as u32;
            let burst = (per_second / 10).max(1) as u32;
            AcceptRate {
                per_second,
                interval,
                tolerance: interval * (burst - 1),
                next_due: Mutex::new(None),
            }
        })
    }

    /// Books one accept at `now`: when it may be taken (`now` itself when
    /// within the rate and its burst).
    fn book(&self, now: Instant) -> Instant {
        let mut due = self.next_due.lock().unwrap_or_else(PoisonError::into_inner);
        let tat = due.map_or(now, |t| t.max(now));
        *due = Some(tat + self.interval);
        tat.checked_sub(self.tolerance)
            .map_or(now, |at| at.max(now))
    }
}

/// A listener with a connection cap.
pub struct Acceptor {
    listener: TcpListener,
    /// `TCP`, `HTTP` or `HTTPS`, for the logs.
    name: &'static str,
    slots: Arc<Semaphore>,
    max: usize,
    limit: Limit,
    stats: Arc<Stats>,
    refusals: LogThrottle,
    /// `--max-http-accept-rate`; None: accept as fast as they come.
    rate: Option<Arc<AcceptRate>>,
    paused: LogThrottle,
    /// Only these peers may connect (`--tcp-allow`); None: everyone.
    allow: Option<AllowList>,
    outsiders: LogThrottle,
}

impl Acceptor {
    /// `limit` is the flag counted when the cap of `max` open connections is hit.
    pub fn new(
        listener: TcpListener,
        name: &'static str,
        max: usize,
        limit: Limit,
        stats: Arc<Stats>,
    ) -> Self {
        Acceptor {
            listener,
            name,
            slots: Arc::new(Semaphore::new(max)),
            max,
            limit,
            stats,
            refusals: LogThrottle::new(Duration::from_secs(1)),
            rate: None,
            paused: LogThrottle::new(Duration::from_secs(10)),
            allow: None,
            outsiders: LogThrottle::new(Duration::from_secs(1)),
        }
    }

    /// Takes its slots from `slots`, a pool shared with other listeners
    /// (HTTP and HTTPS share `--max-http-connections`); `max` stays the
    /// number reported when the pool is empty.
    pub fn with_slots(mut self, slots: Arc<Semaphore>) -> Self {
        self.slots = slots;
        self
    }

    /// Paces accepts to `rate` (shared with the other acceptors given it).
    pub fn pacing(mut self, rate: Option<Arc<AcceptRate>>) -> Self {
        self.rate = rate;
        self
    }

    /// Closes connections from peers outside `allow` at accept, before a
    /// byte is read (counted as `not_allowed`).
    pub fn allowing(mut self, allow: Option<AllowList>) -> Self {
        if allow.is_some() {
            self.stats.tcp_allow_enabled.store(true, Ordering::Relaxed);
        }
        self.allow = allow;
        self
    }

    /// The next connection within the cap, or `None` once `shutdown` is cancelled.
    pub async fn next(&self, shutdown: &CancellationToken) -> Option<Accepted> {
        loop {
            if let Some(rate) = &self.rate {
                let now = Instant::now();
                let at = rate.book(now);
                if at > now {
                    self.stats.limit_hit(Limit::HttpAcceptRate);
                    if let Some(n) = self.paused.hit() {
                        warn!(
                            "{}: new connections arrive faster than --max-http-accept-rate={}/s: \
                            they wait in the backlog ({n} pause(s) since the last such line)",
                            self.name, rate.per_second
                        );
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
            }
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return None,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // instead of spinning on the error.
                    error!("{}: accept error - {e}", self.name);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Some(allow) = &self.allow
                && !allow.allows(peer.ip())
            {
                drop(stream);
                self.stats.tcp_not_allowed.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = self.outsiders.hit() {
                    warn!(peer = %peer, "{}: refused {n} connection(s) from outside --tcp-allow={allow} (last from {})",
                        self.name, peer.ip());
                }
                continue;
            }
            let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                self.stats.limit_hit(self.limit);
                if let Some(n) = self.refusals.hit() {
                    warn!(peer = %peer, "{}: refused {n} connection(s): --{}={} reached",
                        self.name, self.limit.name().replace('_', "-"), self.max);
                }
                continue;
            };
            let _ = stream.set_nodelay(true);
            return Some(Accepted { stream, peer, slot });
        }
    }

    /// The address listened on.
    pub fn local_addr(&self) -> String {
        self.listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rate_is_no_limit() {
        assert!(AcceptRate::new(0).is_none());
    }

    #[test]
    fn a_tenth_of_a_second_passes_at_once_then_the_rate() {
        // 100/s: a burst of 10, then one every 10 ms.
        let rate = AcceptRate::new(100).unwrap();
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(rate.book(t0), t0, "accept {i} of the burst");
        }
        for i in 1..=5u32 {
            assert_eq!(rate.book(t0), t0 + Duration::from_millis(10) * i);
        }
        // Later bookings queue behind those, not at `now`.
        let t1 = t0 + Duration::from_millis(20);
        assert_eq!(rate.book(t1), t0 + Duration::from_millis(60));
    }

    #[test]
    fn a_quiet_spell_gives_the_burst_back_not_more() {
        let rate = AcceptRate::new(100).unwrap();
        let t0 = Instant::now();
        for _ in 0..30 {
            rate.book(t0);
        }
        // 10 s later the debt is long paid: a burst of 10 again, no more.
        let t1 = t0 + Duration::from_secs(10);
        for _ in 0..10 {
            assert_eq!(rate.book(t1), t1);
        }
        assert_eq!(rate.book(t1), t1 + Duration::from_millis(10));
    }
}
