//! Fuzz target: bytes an nsqd-side peer sends → codec + session on a fresh
//! registry, driven exactly as `src/tcp/connection.rs` drives them (decode
//! until the codec wants more, `decode_eof` at the end, the IDENTIFY body
//! read only when the session asks for it, stop at the first fatal reply
//! or codec error).
//!
//! The input is fed twice: whole, and in 2 or 3 chunks whose cut points
//! come from the first input byte. Checked besides "no panic":
//! - both feedings answer exactly the same (chunking changes nothing);
//! - the read buffer never holds more than the larger limit once the codec
//!   asks for more input;
//! - the registry's read views work on whatever was registered, and
//!   dropping the session removes its producer.

#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

use nsqlookupd::registry::{Registry, RegistryOptions};
use nsqlookupd::stats::Stats;
use nsqlookupd::tcp::codec::{CodecError, LookupCodec};
use nsqlookupd::tcp::session::{Reply, Session};

/// Limits small enough for fuzzed inputs to reach them (the server's
/// defaults are 4096 / 65536 / 100000).
const MAX_LINE: usize = 256;
const MAX_BODY: usize = 1024;
const MAX_REGISTRATIONS: usize = 16;

/// What the connection would write, and how it would end.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Send(Bytes),
    Fatal(Bytes),
    CodecError(Option<Bytes>),
    Closed,
}

fn drive(chunks: &[&[u8]]) -> Vec<Event> {
    let registry = Arc::new(Registry::new(RegistryOptions::default()));
    let peer: SocketAddr = "127.0.0.1:4150".parse().expect("address");
    let mut session = Session::new(
        Arc::clone(&registry),
        peer,
        Bytes::from_static(br#"{"tcp_port":4160,"http_port":4161}"#),
        MAX_REGISTRATIONS,
        Arc::new(Stats::default()),
    );
    let mut codec = LookupCodec::new(MAX_LINE, MAX_BODY);
    let mut input = BytesMut::new();
    let mut events = Vec::new();
    let reads = chunks.iter().map(Some).chain([None]);
    'read: for read in reads {
        let eof = match read {
            Some(chunk) => {
                input.extend_from_slice(chunk);
                false
            }
            None => true,
        };
        // Answer everything already buffered (connection.rs's inner loop).
        loop {
            let decoded = if eof {
                codec.decode_eof(&mut input)
            } else {
                codec.decode(&mut input)
            };
            match decoded {
                Ok(Some(frame)) => match session.apply(frame) {
                    Reply::Send(data) | Reply::Error(data) => events.push(Event::Send(data)),
                    Reply::ReadIdentifyBody => codec.expect_identify_body(),
                    Reply::Fatal(data) => {
                        events.push(Event::Fatal(data));
                        break 'read;
                    }
                },
                Ok(None) if eof => {
                    events.push(Event::Closed);
                    break 'read;
                }
                Ok(None) => {
                    assert!(
                        input.len() <= MAX_LINE.max(MAX_BODY),
                        "read buffer holds {} bytes",
                        input.len()
                    );
                    break;
                }
                Err(CodecError::Io(_)) => unreachable!("no I/O here"),
                Err(e) => {
                    events.push(Event::CodecError(e.response()));
                    break 'read;
                }
            }
        }
    }
    // Read views over whatever the session registered.
    for topic in registry.topics() {
        let _ = registry.lookup(&topic);
        let _ = registry.channels(&topic);
    }
    let _ = registry.nodes();
    let _ = registry.debug();
    drop(session);
    assert_eq!(
        registry.producer_count(),
        0,
        "the producer left with its session"
    );
    events
}

fuzz_target!(|data: &[u8]| {
    let whole = drive(&[data]);
    let Some(&first) = data.first() else {
        return;
    };
    // Cut points from the first byte: low nibble places the first cut,
    // high nibble the second (0 = only two chunks).
    let n = data.len();
    let a = usize::from(first & 0x0f) * n / 15;
    let chunked = match usize::from(first >> 4) {
        0 => drive(&[&data[..a], &data[a..]]),
        hi => {
            let b = a + hi * (n - a) / 15;
            drive(&[&data[..a], &data[a..b], &data[b..]])
        }
    };
    assert_eq!(whole, chunked, "chunking changed the answers");
});
