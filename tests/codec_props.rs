//! Property tests for the hostile-input paths (issue 5, point 4):
//!
//! - the TCP codec never panics on any byte stream, and splitting the
//!   stream into chunks at any points never changes the frames decoded nor
//!   the final outcome (EOF or the error);
//! - the codec's buffer stays bounded by its limits whatever is sent;
//! - the codec + session pair answers a stream the same way whatever its
//!   chunking;
//! - query-string parsing never panics, and decodes what a reference
//!   percent-encoder produced.
//!
//! Streams come both from plain random bytes and from biased generators
//! (valid and invalid command lines, IDENTIFY with good and bad sizes,
//! full, partial and bad magic) so the interesting states are reached.
//! Regression inputs found by fuzzing (see `fuzz/README.md`) go at the end
//! as plain tests.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::sample::Index;
use tokio_util::codec::Decoder;

use nsqlookupd::http::query::Params;
use nsqlookupd::registry::{Registry, RegistryOptions};
use nsqlookupd::stats::Stats;
use nsqlookupd::tcp::codec::{Command, Frame, LookupCodec, MAGIC_V1};
use nsqlookupd::tcp::driver::{Driver, Ending, Output};
use nsqlookupd::tcp::session::Session;

/// Cases per property: enough to reach every codec state many times over,
/// small enough for the whole file to run in a few seconds.
const CASES: u32 = 1000;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        // Failure persistence files would land in the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Driving the codec
// ---------------------------------------------------------------------------

/// How a decoded stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// `decode_eof` returned `Ok(None)`.
    Eof,
    /// The first error, as its `Debug` text (`CodecError` is not `PartialEq`).
    Error(String),
}

/// Everything a run of the codec produced.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    frames: Vec<Frame>,
    outcome: Outcome,
}

/// Called after each `Ok(None)` from `decode`, with the buffer and the
/// length of the chunk appended last.
type Check<'a> = &'a mut dyn FnMut(&BytesMut, usize);

/// Decodes `chunks` the way the connection does: each chunk is appended to
/// the buffer and `decode` called until it asks for more; at the end
/// `decode_eof` is called until it has nothing left. Every IDENTIFY is
/// accepted (as a session that has not identified yet would).
fn decode_chunks(max_line: usize, max_body: usize, chunks: &[&[u8]], check: Check) -> Decoded {
    let mut codec = LookupCodec::new(max_line, max_body);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut take = |codec: &mut LookupCodec, frame: Frame| {
        if frame == Frame::Command(Command::Identify) {
            codec.expect_identify_body();
        }
        frames.push(frame);
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => take(&mut codec, frame),
                Ok(None) => {
                    check(&buf, chunk.len());
                    break;
                }
                Err(e) => {
                    return Decoded {
                        frames,
                        outcome: Outcome::Error(format!("{e:?}")),
                    };
                }
            }
        }
    }
    let outcome = loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => take(&mut codec, frame),
            Ok(None) => break Outcome::Eof,
            Err(e) => break Outcome::Error(format!("{e:?}")),
        }
    };
    Decoded { frames, outcome }
}

fn decode_whole(max_line: usize, max_body: usize, input: &[u8]) -> Decoded {
    decode_chunks(max_line, max_body, &[input], &mut |_, _| {})
}

/// Splits `input` at the given cut points (any order, duplicates allowed:
/// a duplicate makes an empty chunk, which is also what a read can give).
fn split_at<'a>(input: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::with_capacity(points.len() + 1);
    let mut start = 0;
    for p in points {
        chunks.push(&input[start..p]);
        start = p;
    }
    chunks.push(&input[start..]);
    chunks
}

/// How to cut a stream into chunks.
#[derive(Clone, Debug)]
enum Split {
    /// At these points.
    Cuts(Vec<Index>),
    /// Into pieces of this size (1 = byte by byte).
    Every(usize),
}

fn split_strategy() -> impl Strategy<Value = Split> {
    prop_oneof![
        3 => prop::collection::vec(any::<Index>(), 0..24).prop_map(Split::Cuts),
        1 => (1usize..=7).prop_map(Split::Every),
    ]
}

fn chunks_of<'a>(input: &'a [u8], split: &Split) -> Vec<&'a [u8]> {
    match split {
        Split::Cuts(cuts) => split_at(input, cuts),
        Split::Every(n) => input.chunks(*n).collect(),
    }
}

// ---------------------------------------------------------------------------
// Stream generators
// ---------------------------------------------------------------------------

/// A command line's name: the real ones, near misses and junk.
fn command_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(vec![
            &b"PING"[..],
            b"REGISTER",
            b"UNREGISTER",
            b"IDENTIFY",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => prop::sample::select(vec![
            &b"ping"[..],
            b"PINGX",
            b"REGISTE",
            b"IDENTIFY2",
            b"",
            b"\x00",
            b"\xff\xfe",
            b"V1",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ]
}

/// A topic or channel parameter: valid names, invalid ones, binary junk.
fn param() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[a-zA-Z0-9._-]{1,20}(#ephemeral)?".prop_map(String::into_bytes),
        1 => Just(Vec::new()),
        1 => "[a-z]{0,70}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..16),
    ]
}

/// White space the codec trims, including multi-byte Unicode spaces and
/// their truncated prefixes (which are not space).
fn padding() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::sample::select(vec![
            &b" "[..],
            b"\t",
            b"\r",
            b"\x0b",
            b"\x0c",
            "\u{a0}".as_bytes(),
            "\u{2003}".as_bytes(),
            "\u{3000}".as_bytes(),
            "\u{85}".as_bytes(),
            b"\xe2\x80",
            b"\xc2",
        ]),
        0..3,
    )
    .prop_map(|parts| parts.concat())
}

/// One command line, newline included.
fn command_line() -> impl Strategy<Value = Vec<u8>> {
    (
        padding(),
        command_name(),
        prop::collection::vec((1usize..=2, param()), 0..4),
        padding(),
        prop::sample::select(vec![&b"\n"[..], b"\r\n"]),
    )
        .prop_map(|(lead, name, params, trail, end)| {
            let mut line = lead;
            line.extend_from_slice(&name);
            for (spaces, p) in params {
                line.extend(std::iter::repeat_n(b' ', spaces));
                line.extend_from_slice(&p);
            }
            line.extend_from_slice(&trail);
            line.extend_from_slice(end);
            line
        })
}

/// A plausible IDENTIFY JSON body, or junk.
fn identify_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => ("[a-z.-]{1,12}", 1u32..65536, 1u32..65536).prop_map(|(addr, tcp, http)| {
            format!(
                r#"{{"broadcast_address":"{addr}","hostname":"h","tcp_port":{tcp},"http_port":{http},"version":"1.3.0"}}"#
            )
            .into_bytes()
        }),
        1 => prop::sample::select(vec![
            &b"{}"[..],
            b"{not json",
            b"null",
            b"[]",
            b"",
            br#"{"broadcast_address":1}"#,
        ])
        .prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 0..300),
    ]
}

/// `IDENTIFY\n`, a 4-byte size and a body; the size may lie.
fn identify() -> impl Strategy<Value = Vec<u8>> {
    (identify_body(), 0u8..8, any::<i32>()).prop_map(|(body, how, random)| {
        let len = body.len() as i32;
        let (size, body) = match how {
            0..=2 => (len, body),
            3 => (-1, body),
            4 => (0, Vec::new()),
            5 => (len + 1, body),               // one byte short
            6 => (len.saturating_sub(1), body), // one byte extra
            _ => (random, body),                // anything, usually huge
        };
        let mut out = b"IDENTIFY\n".to_vec();
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&body);
        out
    })
}

/// A well-formed PING, REGISTER or UNREGISTER with valid names, as a
/// healthy nsqd sends them.
fn valid_command() -> impl Strategy<Value = Vec<u8>> {
    let name = "[a-z0-9._-]{1,12}(#ephemeral)?";
    prop_oneof![
        1 => Just(b"PING\n".to_vec()),
        3 => (
            prop::sample::select(vec!["REGISTER", "UNREGISTER"]),
            name,
            prop::option::of(name),
        )
            .prop_map(|(cmd, topic, channel)| match channel {
                Some(c) => format!("{cmd} {topic} {c}\n").into_bytes(),
                None => format!("{cmd} {topic}\n").into_bytes(),
            }),
    ]
}

/// One piece of a biased stream.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => valid_command(),
        3 => identify(),
        3 => command_line(),
        // A line without its newline (the stream may end there).
        1 => prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..40),
        // A long line with a newline, around the limits used here.
        1 => (1usize..300).prop_map(|n| {
            let mut v = vec![b'A'; n];
            v.push(b'\n');
            v
        }),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
}

/// What a stream starts with.
fn prefix() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        32 => Just(MAGIC_V1.to_vec()),
        1 => Just(Vec::new()),
        1 => Just(b"  V".to_vec()),
        1 => Just(b"  V2".to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..6),
    ]
}

/// Streams: mostly structured, sometimes plain random bytes (with and
/// without the magic in front).
fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => (prefix(), prop::collection::vec(piece(), 0..16)).prop_map(|(p, pieces)| {
            let mut s = p;
            for piece in pieces {
                s.extend_from_slice(&piece);
            }
            s
        }),
        1 => prop::collection::vec(any::<u8>(), 0..1024),
        1 => prop::collection::vec(any::<u8>(), 0..1024).prop_map(|rest| {
            let mut s = MAGIC_V1.to_vec();
            s.extend_from_slice(&rest);
            s
        }),
    ]
}

/// Streams as a registering nsqd would start them (magic, then usually a
/// valid IDENTIFY), so that the session gets past its first command.
fn session_stream() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::bool::weighted(0.85),
        ("[a-z.-]{1,12}", 1u32..65536, 1u32..65536),
        prop::collection::vec(piece(), 0..16),
    )
        .prop_map(|(identify, (addr, tcp, http), pieces)| {
            let mut s = MAGIC_V1.to_vec();
            if identify {
                let body = format!(
                    r#"{{"broadcast_address":"{addr}","tcp_port":{tcp},"http_port":{http},"version":"1.3.0"}}"#
                );
                s.extend_from_slice(b"IDENTIFY\n");
                s.extend_from_slice(&(body.len() as i32).to_be_bytes());
                s.extend_from_slice(body.as_bytes());
            }
            for piece in pieces {
                s.extend_from_slice(&piece);
            }
            s
        })
}

// ---------------------------------------------------------------------------
// Driving codec + session: the connection's own loop (src/tcp/driver.rs)
// ---------------------------------------------------------------------------

/// What the connection would write and how it would end.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Send(Bytes),
    Fatal(Bytes),
    CodecError(String),
    Closed,
}

fn peer() -> SocketAddr {
    "127.0.0.1:4150".parse().expect("address")
}

/// Feeds `chunks` through the connection's decode/apply loop (the
/// [`Driver`]) on a fresh registry, stopping at the first fatal reply or
/// codec error; returns what was answered, and checks that the producer is
/// gone once the session is.
fn run_session(chunks: &[&[u8]], max_registrations: usize) -> Vec<Event> {
    let registry = Arc::new(Registry::new(RegistryOptions::default()));
    let session = Session::new(
        Arc::clone(&registry),
        peer(),
        Bytes::from_static(b"{\"tcp_port\":4160}"),
        max_registrations,
        Arc::new(Stats::default()),
    );
    let mut driver = Driver::new(LookupCodec::new(64, 512), session);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let feed = chunks.iter().map(Some).chain([None]);
    for next in feed {
        let eof = match next {
            Some(chunk) => {
                buf.extend_from_slice(chunk);
                false
            }
            None => true,
        };
        let ending = driver.pump(&mut buf, eof, |o| {
            if let Output::Answer(data) = o {
                events.push(Event::Send(data));
            }
        });
        let last = match ending {
            None => continue,
            Some(Ending::Closed) => Event::Closed,
            Some(Ending::Fatal(data)) => Event::Fatal(data),
            Some(Ending::Codec(e)) => Event::CodecError(format!("{e:?}")),
        };
        events.push(last);
        break;
    }
    drop(driver);
    assert_eq!(registry.producer_count(), 0, "the session's producer left");
    events
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Chunking never changes the frames or the outcome (biased streams,
    /// limits small enough that every limit is hit often).
    #[test]
    fn chunking_never_changes_what_is_decoded(
        input in stream(),
        split in split_strategy(),
        max_line in prop_oneof![0usize..16, 16usize..300],
        max_body in prop_oneof![0usize..16, 16usize..400],
    ) {
        let whole = decode_whole(max_line, max_body, &input);
        let chunks = chunks_of(&input, &split);
        let chunked = decode_chunks(max_line, max_body, &chunks, &mut |_, _| {});
        prop_assert_eq!(chunked, whole);
    }

    /// The same on plain random bytes behind the magic, with the server's
    /// default limits (so nothing but junk decides the outcome).
    #[test]
    fn chunking_never_changes_random_bytes(
        rest in prop::collection::vec(any::<u8>(), 0..4096),
        split in split_strategy(),
    ) {
        let mut input = MAGIC_V1.to_vec();
        input.extend_from_slice(&rest);
        let whole = decode_whole(4096, 64 * 1024, &input);
        let chunked = decode_chunks(4096, 64 * 1024, &chunks_of(&input, &split), &mut |_, _| {});
        prop_assert_eq!(chunked, whole);
    }

    /// Whatever is sent, a buffer the codec asks to fill further holds no
    /// more than a line or a body plus the chunk just read (with
    /// max_line = 64, max_body = 256); in fact no more than the larger
    /// limit.
    #[test]
    fn buffer_stays_bounded(input in stream(), split in split_strategy()) {
        const MAX_LINE: usize = 64;
        const MAX_BODY: usize = 256;
        let mut worst = 0usize;
        let mut violation = None;
        let chunks = chunks_of(&input, &split);
        decode_chunks(MAX_LINE, MAX_BODY, &chunks, &mut |buf, chunk_len| {
            worst = worst.max(buf.len());
            let loose = MAX_LINE + 4 + MAX_BODY + chunk_len;
            let tight = MAX_LINE.max(MAX_BODY);
            if violation.is_none() && (buf.len() > loose || buf.len() > tight) {
                violation = Some((buf.len(), chunk_len));
            }
        });
        prop_assert_eq!(violation, None, "worst buffer {} bytes", worst);
    }

    /// The same bound when a peer streams a huge body or an endless line
    /// in small pieces.
    #[test]
    fn buffer_stays_bounded_on_endless_input(
        identify in any::<bool>(),
        size in any::<i32>(),
        piece in 1usize..64,
        total in 0usize..4096,
    ) {
        let mut input = MAGIC_V1.to_vec();
        if identify {
            input.extend_from_slice(b"IDENTIFY\n");
            input.extend_from_slice(&size.to_be_bytes());
        }
        input.extend(std::iter::repeat_n(b'x', total));
        let mut worst = 0;
        let chunks: Vec<&[u8]> = input.chunks(piece).collect();
        decode_chunks(64, 256, &chunks, &mut |buf, chunk_len| {
            assert!(buf.len() <= 64 + 4 + 256 + chunk_len);
            worst = worst.max(buf.len());
        });
        prop_assert!(worst <= 256, "worst buffer {} bytes", worst);
    }

    /// Codec + session (on a real registry) answer a stream the same way
    /// whatever its chunking, and never keep a producer once dropped.
    #[test]
    fn session_answers_do_not_depend_on_chunking(
        input in prop_oneof![3 => session_stream(), 1 => stream()],
        split in split_strategy(),
        max_registrations in 1usize..6,
    ) {
        let whole = run_session(&[&input], max_registrations);
        let chunked = run_session(&chunks_of(&input, &split), max_registrations);
        prop_assert_eq!(chunked, whole);
    }

    /// Query parsing never panics, whatever the string.
    #[test]
    fn query_parse_never_panics(
        query in prop_oneof![
            any::<String>(),
            "[a-z%+=&;0-9A-F\u{e9}]{0,40}",
        ],
        name in prop_oneof![Just(String::from("topic")), any::<String>()],
    ) {
        if let Ok(params) = Params::parse(&query) {
            let _ = params.get(&name);
            let _ = params.get("topic");
            let _ = params.get("");
        }
    }

    /// What a reference encoder produced, the parser decodes: for each key,
    /// `get` gives the value of its first occurrence; absent keys give
    /// `None`.
    #[test]
    fn query_round_trips_through_a_reference_encoder(
        pairs in prop::collection::vec(
            (
                prop_oneof![any::<String>(), "[a-c&=;%+ ]{0,3}"],
                prop::collection::vec(any::<u8>(), 0..12),
            ),
            0..8,
        ),
        style in any::<EncodeStyle>(),
        absent in "[a-z]{1,8}",
    ) {
        let query = encode_query(&pairs, &style);
        let params = Params::parse(&query);
        prop_assert!(params.is_ok(), "{:?} failed to parse", query);
        let params = params.expect("checked");
        for (key, _) in &pairs {
            let first = &pairs.iter().find(|(k, _)| k == key).expect("present").1;
            prop_assert_eq!(params.get(key), Some(&first[..]), "key {:?} in {:?}", key, query);
        }
        if !pairs.iter().any(|(k, _)| *k == absent) {
            prop_assert_eq!(params.get(&absent), None);
        }
    }
}

// ---------------------------------------------------------------------------
// Reference percent-encoder
// ---------------------------------------------------------------------------

/// Choices the encoder makes that the decoder must all accept.
#[derive(Clone, Debug)]
struct EncodeStyle {
    /// Escape every byte, not only those that must be.
    escape_all: bool,
    /// Encode a space as `+` (else `%20`).
    space_as_plus: bool,
    lowercase_hex: bool,
    /// `&` separators doubled (empty pairs are skipped).
    extra_separators: bool,
}

impl Arbitrary for EncodeStyle {
    type Parameters = ();
    type Strategy = BoxedStrategy<EncodeStyle>;

    fn arbitrary_with(_: ()) -> Self::Strategy {
        any::<(bool, bool, bool, bool)>()
            .prop_map(|(a, b, c, d)| EncodeStyle {
                escape_all: a,
                space_as_plus: b,
                lowercase_hex: c,
                extra_separators: d,
            })
            .boxed()
    }
}

fn encode_component(bytes: &[u8], is_key: bool, style: &EncodeStyle, out: &mut String) {
    for &b in bytes {
        let must = matches!(b, b'&' | b';' | b'%' | b'+' | b'#')
            || (is_key && b == b'=')
            || !b.is_ascii()
            || b.is_ascii_control();
        if b == b' ' {
            out.push_str(if style.space_as_plus { "+" } else { "%20" });
        } else if must || style.escape_all {
            if style.lowercase_hex {
                out.push_str(&format!("%{b:02x}"));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(char::from(b));
        }
    }
}

fn encode_query(pairs: &[(String, Vec<u8>)], style: &EncodeStyle) -> String {
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 || style.extra_separators {
            out.push('&');
        }
        if style.extra_separators {
            out.push('&');
        }
        encode_component(key.as_bytes(), true, style, &mut out);
        out.push('=');
        encode_component(value, false, style, &mut out);
    }
    out
}

// ---------------------------------------------------------------------------
// Fixed cases and regressions
// ---------------------------------------------------------------------------

/// Sanity check of the harness itself: a known stream decodes to the known
/// frames, byte by byte as well as whole.
#[test]
fn harness_decodes_a_known_stream() {
    let body = br#"{"broadcast_address":"a","tcp_port":1,"http_port":2,"version":"v"}"#;
    let mut input = b"  V1PING\nIDENTIFY\n".to_vec();
    input.extend_from_slice(&(body.len() as i32).to_be_bytes());
    input.extend_from_slice(body);
    input.extend_from_slice(b"REGISTER t c\nIDENTIFY\n\xff\xff\xff\xff");
    let whole = decode_whole(64, 256, &input);
    assert_eq!(
        whole.frames,
        [
            Frame::Command(Command::Ping),
            Frame::Command(Command::Identify),
            Frame::IdentifyBody(Bytes::copy_from_slice(body)),
            Frame::Command(Command::Register {
                topic: Some(Bytes::from_static(b"t")),
                channel: Some(Bytes::from_static(b"c")),
            }),
            Frame::Command(Command::Identify),
        ]
    );
    assert!(matches!(&whole.outcome, Outcome::Error(e) if e.starts_with("BadBodySize")));
    let bytewise: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(decode_chunks(64, 256, &bytewise, &mut |_, _| {}), whole);

    let events = run_session(&[&input], 10);
    assert_eq!(
        events,
        [
            Event::Send(Bytes::from_static(b"OK")),
            Event::Send(Bytes::from_static(b"{\"tcp_port\":4160}")),
            Event::Send(Bytes::from_static(b"OK")),
            Event::Fatal(Bytes::from_static(b"E_INVALID cannot IDENTIFY again")),
        ]
    );
}

/// Regression (found by review while writing these properties): after
/// `decode_eof` dropped a partial line, the codec kept its count of bytes
/// already scanned for `\n`, so a later `decode` (tokio-util's `FramedRead`
/// does call it when a reader yields data after an EOF) searched past the
/// new data: it panicked on fewer new bytes, or framed `x\nPING` as one
/// command on more.
#[test]
fn decode_after_decode_eof_dropped_a_partial_line() {
    for more in [&b"x\n"[..], b"x\nPING\n"] {
        let mut codec = LookupCodec::new(64, 256);
        let mut buf = BytesMut::from(&b"  V1abc"[..]);
        assert_eq!(codec.decode(&mut buf).expect("no error"), None);
        assert_eq!(codec.decode_eof(&mut buf).expect("no error"), None);
        buf.extend_from_slice(more);
        let frame = codec.decode(&mut buf).expect("no error");
        assert_eq!(
            frame,
            Some(Frame::Command(Command::Unknown {
                name: Bytes::from_static(b"x")
            })),
            "after {more:?}"
        );
    }
}
