//! `--http-header-timeout`, kept per connection rather than per request.
//!
//! The limit: a client that has not sent a complete request head within
//! the timeout is disconnected (slowloris), and so is a keep-alive
//! connection left idle that long. hyper can enforce it itself
//! (`header_read_timeout`), but it boxes a fresh sleep into tokio's timer
//! wheel each time it starts reading a request head and takes it out again
//! once the head is in: about 1,190 of the 12,380 user-space instructions
//! of a keep-alive `/lookup` (callgrind, `perf/README.md`). Here each
//! connection carries a [`Progress`] record that the request path updates
//! with plain loads and stores, and a watcher task (`http::run`, looping in
//! [`Progress::stalled`]) wakes every quarter of the timeout to see whether
//! it moved. With the watcher in a task of its own, the connection polls
//! one cancellation token per wake-up, as it did for shutdown alone:
//! 11,276 instructions a `/lookup` in all, against 11,163 with no header
//! timeout at all.
//!
//! The price is precision: a connection is closed between 1 and 1.5 times
//! the timeout after its last progress, never earlier. Progress is a
//! complete request head, a request being answered, or response bytes taken
//! by the socket (a slow reader of a large answer is not a slow sender, and
//! hyper's timer does not run while it writes either).
//!
//! This module owns the record and the I/O wrapper that feeds it; it knows
//! nothing of HTTP beyond "a head arrived" and "an answer is done", which
//! `http::run` reports.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// What one connection has done lately.
///
/// Only the connection's own task writes it (hyper polls the service's
/// futures and the socket inside it), so updates are plain load-then-store
/// pairs, not read-modify-write instructions; atomics are here because the
/// watcher task reads it, possibly from another worker thread.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bumped by every complete head, every answer done and every write
    /// that the socket took bytes from.
    events: AtomicU64,
    /// Requests handed to the service and not yet answered.
    in_flight: AtomicU64,
    /// Bytes arrived since the last complete head: a head is on its way.
    partial_head: AtomicBool,
}

/// Why [`Progress::stalled`] gave up on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    /// Part of a request head arrived, and not the rest (a slow sender).
    SlowHead,
    /// Nothing arrived: an idle keep-alive connection, or one never used.
    Idle,
}

fn bump(counter: &AtomicU64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Relaxed,
    );
}

impl Progress {
    /// A complete request head arrived and goes to the service; the answer
    /// is in flight until the returned guard is dropped.
    pub fn head_received(self: &Arc<Self>) -> Answering {
        bump(&self.events);
        bump(&self.in_flight);
        self.partial_head.store(false, Ordering::Relaxed);
        Answering(Arc::clone(self))
    }

    /// Resolves once the connection has made no progress for `timeout`
    /// (checked every quarter of it), with what it was doing meanwhile.
    pub async fn stalled(&self, timeout: Duration) -> Stall {
        let tick = (timeout / 4).max(Duration::from_millis(1));
        let mut seen = self.events.load(Ordering::Relaxed);
        let mut quiet_since = Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            let events = self.events.load(Ordering::Relaxed);
            if events != seen || self.in_flight.load(Ordering::Relaxed) > 0 {
                seen = events;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= timeout {
                return if self.partial_head.load(Ordering::Relaxed) {
                    Stall::SlowHead
                } else {
                    Stall::Idle
                };
            }
        }
    }
}

/// A request being answered (see [`Progress::head_received`]).
#[derive(Debug)]
pub struct Answering(Arc<Progress>);

impl Drop for Answering {
    fn drop(&mut self) {
        let progress = &self.0;
        progress.in_flight.store(
            progress.in_flight.load(Ordering::Relaxed).saturating_sub(1),
            Ordering::Relaxed,
        );
        bump(&progress.events);
    }
}

/// A socket that reports reads and writes to its connection's [`Progress`].
#[derive(Debug)]
pub struct Watched<S> {
    stream: S,
    progress: Arc<Progress>,
}

impl<S> Watched<S> {
    pub fn new(stream: S, progress: Arc<Progress>) -> Self {
        Watched { stream, progress }
    }

    fn wrote(&self, result: &Poll<io::Result<usize>>) {
        if matches!(result, Poll::Ready(Ok(n)) if *n > 0) {
            bump(&self.progress.events);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.progress.partial_head.store(true, Ordering::Relaxed);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUT: Duration = Duration::from_secs(40);

    /// Runs `stalled` on paused time until it resolves; returns when.
    async fn stalls_after(progress: &Progress) -> (Duration, Stall) {
        let start = Instant::now();
        let stall = progress.stalled(TIMEOUT).await;
        (start.elapsed(), stall)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_idle_after_the_timeout_and_no_earlier() {
        let progress = Progress::default();
        let (after, stall) = stalls_after(&progress).await;
        assert_eq!(stall, Stall::Idle);
        assert!(after >= TIMEOUT && after <= TIMEOUT * 3 / 2, "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_without_a_complete_head_are_a_slow_head() {
        let progress = Arc::new(Progress::default());
        let (mut client, server) = tokio::io::duplex(64);
        let mut watched = Watched::new(server, Arc::clone(&progress));
        client.write_all(b"GET / HT").await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(watched.read(&mut buf).await.unwrap(), 8);
        let (after, stall) = stalls_after(&progress).await;
        assert_eq!(stall, Stall::SlowHead);
        assert!(after >= TIMEOUT, "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_in_flight_holds_the_deadline_off() {
        let progress = Arc::new(Progress::default());
        let answering = progress.head_received();
        let watch = stalls_after(&progress);
        tokio::pin!(watch);
        tokio::select! {
            _ = &mut watch => panic!("stalled while answering"),
            _ = tokio::time::sleep(TIMEOUT * 5) => {}
        }
        drop(answering);
        let done_at = Instant::now();
        let (_, stall) = watch.await;
        let quiet = done_at.elapsed();
        assert_eq!(stall, Stall::Idle);
        assert!(quiet >= TIMEOUT && quiet <= TIMEOUT * 3 / 2, "{quiet:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn writes_that_move_are_progress() {
        let progress = Arc::new(Progress::default());
        let (mut client, server) = tokio::io::duplex(16);
        let mut watched = Watched::new(server, Arc::clone(&progress));
        let writer = async {
            // A slow reader: 16 bytes every TIMEOUT / 2, for 5 timeouts.
            for _ in 0..10 {
                watched.write_all(&[b'x'; 16]).await.unwrap();
                tokio::time::sleep(TIMEOUT / 2).await;
            }
        };
        let reader = async {
            let mut buf = [0u8; 16];
            for _ in 0..10 {
                client.read_exact(&mut buf).await.unwrap();
            }
        };
        tokio::select! {
            _ = progress.stalled(TIMEOUT) => panic!("stalled while the reader kept reading"),
            _ = async { tokio::join!(writer, reader) } => {}
        }
    }
}
