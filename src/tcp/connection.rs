//! Drives one accepted TCP connection: reads bytes, lets the [`Driver`]
//! (codec + session, no I/O) answer them, writes the answers, and logs and
//! counts how the connection ended.
//!
//! Responses to pipelined commands are batched: every command already in
//! the read buffer is answered into one output buffer, which is written
//! with a single `write_all` before the next read. On a fatal error the
//! error frame is written, the connection is shut down, and the session
//! (with its registrations) is dropped.
//!
//! A connection that sends nothing for `--tcp-idle-timeout` is closed the
//! same way (without an error frame): that is how a peer whose host
//! vanished stops being listed, where TCP keepalive has not noticed yet.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{error, info, warn};

use super::TcpContext;
use super::codec::{CodecError, LookupCodec};
use super::driver::{Driver, Ending, Output, put_frame};
use super::session::Session;
use crate::stats::Limit;

/// Read buffer growth step.
const READ_CHUNK: usize = 4096;

/// A closed connection with more keys than this is cleaned up off the
/// async worker.
const CLEANUP_INLINE_MAX_KEYS: usize = 256;

/// How a connection ended.
enum End {
    /// The peer closed (or the stream failed).
    Closed,
    /// Nothing received for the idle timeout.
    Idle,
    /// A fatal protocol error, already sent.
    Fatal(Bytes),
}

/// Serves the connection until it ends. Never panics on input.
pub async fn serve(mut stream: TcpStream, peer: SocketAddr, ctx: Arc<TcpContext>) {
    info!(peer = %peer, "TCP: new client({peer})");
    let session = Session::new(
        Arc::clone(&ctx.registry),
        peer,
        ctx.identify_response.clone(),
        ctx.limits.max_registrations_per_connection,
        Arc::clone(&ctx.stats),
    );
    let codec = LookupCodec::new(
        ctx.limits.max_command_size,
        ctx.limits.max_identify_body_size,
    );
    let mut driver = Driver::new(codec, session);
    let end = run(&mut stream, peer, &mut driver, &ctx).await;
    let session = driver.session;
    match &end {
        End::Fatal(err) => error!(peer = %peer, "[{peer}] - {}", String::from_utf8_lossy(err)),
        End::Idle => {
            ctx.stats.limit_hit(Limit::TcpIdleTimeout);
            warn!(peer = %peer, "client({peer}) sent nothing for {:?} (--tcp-idle-timeout), closing",
                ctx.limits.idle_timeout.unwrap_or_default());
        }
        End::Closed => {}
    }
    let _ = stream.shutdown().await;
    drop(stream);
    info!(peer = %peer, "PROTOCOL(V1): [{peer}] exiting ioloop");
    // Dropping the session removes its producer from every key it is in:
    // for a big nsqd, milliseconds of work, left to the janitor thread.
    let keys = session.producer().map_or(0, |p| p.registration_count());
    if keys > CLEANUP_INLINE_MAX_KEYS {
        ctx.janitor.dispose(session);
    } else {
        drop(session);
    }
}

async fn run(
    stream: &mut TcpStream,
    peer: SocketAddr,
    driver: &mut Driver,
    ctx: &TcpContext,
) -> End {
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut output = BytesMut::with_capacity(READ_CHUNK);
    let mut eof = false;
    loop {
        // Answer everything already buffered.
        let ending = driver.pump(&mut input, eof, |o| match o {
            Output::Magic => info!(peer = %peer, "CLIENT({peer}): desired protocol magic '  V1'"),
            Output::Answer(data) => put_frame(&mut output, &data),
        });
        let ended = ending.map(|ending| match ending {
            Ending::Closed | Ending::Codec(CodecError::Io(_)) => End::Closed,
            Ending::Fatal(data) => {
                put_frame(&mut output, &data);
                End::Fatal(data)
            }
            Ending::Codec(e) => {
                match &e {
                    CodecError::BadMagic(magic) => error!(peer = %peer,
                        "client({peer}) bad protocol magic '{}'", String::from_utf8_lossy(magic)),
                    CodecError::LineTooLong { .. } => ctx.stats.limit_hit(Limit::CommandSize),
                    CodecError::BadBodySize { .. } => ctx.stats.limit_hit(Limit::IdentifyBodySize),
                    _ => {}
                }
                let response = e.response().unwrap_or_default();
                ctx.stats.tcp_error(&response);
                put_frame(&mut output, &response);
                End::Fatal(response)
            }
        });
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                return End::Closed;
            }
            output.clear();
        }
        if let Some(end) = ended {
            return end;
        }
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK);
        }
        let read = stream.read_buf(&mut input);
        let read = match ctx.limits.idle_timeout {
            Some(idle) => match tokio::time::timeout(idle, read).await {
                Ok(read) => read,
                Err(_) => return End::Idle,
            },
            None => read.await,
        };
        match read {
            Ok(0) => eof = true,
            Ok(_) => {}
            Err(_) => return End::Closed,
        }
    }
}
