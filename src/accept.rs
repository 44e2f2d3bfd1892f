//! The accept loop every listener shares: accept, cap the number of open
//! connections, refuse (and count) the excess.
//!
//! A refused connection is closed at once, before any byte is read, so a
//! flood of sockets costs one file descriptor for an instant each and never
//! touches the connections already served. Refusals are logged at most once
//! a second, with their count, so a flood cannot flood the log too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
