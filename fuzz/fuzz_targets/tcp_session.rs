//! Fuzz target: bytes an nsqd-side peer sends → the connection's own
//! decode/apply loop (`nsqlookupd::tcp::driver`, codec + session) on a
//! fresh registry, stopping where the connection would (the first fatal
//! reply or codec error, or the end of input).
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

use nsqlookupd::registry::{Registry, RegistryOptions};
use nsqlookupd::stats::Stats;
use nsqlookupd::tcp::codec::{CodecError, LookupCodec};
use nsqlookupd::tcp::driver::{Driver, Ending, Output};
use nsqlookupd::tcp::session::Session;

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
    let session = Session::new(
        Arc::clone(&registry),
        peer,
        Bytes::from_static(br#"{"tcp_port":4160,"http_port":4161}"#),
        MAX_REGISTRATIONS,
        Arc::new(Stats::default()),
    );
    let mut driver = Driver::new(LookupCodec::new(MAX_LINE, MAX_BODY), session);
    let mut input = BytesMut::new();
    let mut events = Vec::new();
    let reads = chunks.iter().map(Some).chain([None]);
    for read in reads {
        let eof = match read {
            Some(chunk) => {
                input.extend_from_slice(chunk);
                false
            }
            None => true,
        };
        let ending = driver.pump(&mut input, eof, |o| {
            if let Output::Answer(data) = o {
                events.push(Event::Send(data));
            }
        });
        match ending {
            None => assert!(
                input.len() <= MAX_LINE.max(MAX_BODY),
                "read buffer holds {} bytes",
                input.len()
            ),
            Some(Ending::Closed) => {
                events.push(Event::Closed);
                break;
            }
            Some(Ending::Fatal(data)) => {
                events.push(Event::Fatal(data));
                break;
            }
            Some(Ending::Codec(CodecError::Io(_))) => unreachable!("no I/O here"),
            Some(Ending::Codec(e)) => {
                events.push(Event::CodecError(e.response()));
                break;
            }
        }
    }
    let Driver { session, .. } = driver;
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
