//! Cleans up closed connections off the async worker, one at a time.
//!
//! Dropping a big nsqd's session removes it from tens of thousands of keys:
//! milliseconds of work. Done inline it would stall the worker that answers
//! every other nsqd and consumer; done on tokio's blocking pool, a reconnect
//! storm (every node dropping at once) would put a hundred runnable threads
//! beside the worker and starve it of the CPU. So one dedicated thread takes
//! them in order: at most one extra runnable thread, whatever the storm.

use std::sync::mpsc::{self, Sender};
use std::thread;

use super::session::Session;

/// Hands sessions to the cleanup thread.
#[derive(Debug)]
pub struct Janitor {
    /// Unbounded: a queued session is memory already held, and sending
    /// must never make a connection task wait.
    queue: Sender<Session>,
}

impl Janitor {
    /// Starts the cleanup thread. It ends when the janitor is dropped and
    /// every queued session has been cleaned up.
    pub fn start() -> std::io::Result<Janitor> {
        let (tx, rx) = mpsc::channel::<Session>();
        thread::Builder::new()
            .name("nsqlookupd-janitor".into())
            .spawn(move || {
                for session in rx {
                    drop(session);
                }
            })?;
        Ok(Janitor { queue: tx })
    }

    /// Cleans `session` up on the janitor thread (inline if it is gone).
    pub fn dispose(&self, session: Session) {
        if let Err(mpsc::SendError(session)) = self.queue.send(session) {
            drop(session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Registry, RegistryOptions};
    use crate::stats::Stats;
    use crate::tcp::codec::{Command, Frame};
    use bytes::Bytes;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn disposed_sessions_leave_the_registry() {
        let registry = Arc::new(Registry::new(RegistryOptions::default()));
        let janitor = Janitor::start().unwrap();
        for n in 0..10u16 {
            let mut s = Session::new(
                Arc::clone(&registry),
                format!("127.0.0.1:{}", 5000 + n).parse().unwrap(),
                Bytes::new(),
                100,
                Arc::new(Stats::default()),
            );
            s.apply(Frame::Command(Command::Identify));
            let body = br#"{"broadcast_address":"b","tcp_port":1,"http_port":2,"version":"v"}"#;
            s.apply(Frame::IdentifyBody(Bytes::from_static(body)));
            janitor.dispose(s);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while registry.producer_count() > 0 {
            assert!(Instant::now() < deadline, "janitor never cleaned up");
            thread::sleep(Duration::from_millis(1));
        }
    }
}
