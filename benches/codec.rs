//! Throughput of the TCP side on a large pipelined buffer (what a
//! reconnecting nsqd sends: thousands of REGISTER lines in one burst): the
//! codec alone, and the connection's whole decode/apply loop (the
//! `Driver`: codec + session + registry, everything but the socket).
//!
//! Run: `cargo bench --bench codec`.

use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nsqlookupd::registry::{Registry, RegistryOptions};
use nsqlookupd::stats::Stats;
use nsqlookupd::tcp::codec::{LookupCodec, MAGIC_V1};
use nsqlookupd::tcp::driver::{Driver, Ending, Output, put_frame};
use nsqlookupd::tcp::session::Session;
use tokio_util::codec::Decoder;

fn pipelined_buffer() -> Vec<u8> {
    let mut buf = Vec::new();
    for t in 0..2500 {
        buf.extend_from_slice(format!("REGISTER topic-{t:06}\n").as_bytes());
        for c in 0..4 {
            buf.extend_from_slice(format!("REGISTER topic-{t:06} channel-{c}\n").as_bytes());
        }
    }
    buf.extend_from_slice(b"PING\n");
    buf
}

fn decode(c: &mut Criterion) {
    let input = pipelined_buffer();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("decode_pipelined_12501_commands", |b| {
        b.iter(|| {
            let mut codec = LookupCodec::after_magic(4096, 65536);
            let mut buf = BytesMut::from(&input[..]);
            let mut n = 0usize;
            while let Some(frame) = codec.decode(&mut buf).expect("valid input") {
                black_box(frame);
                n += 1;
            }
            assert_eq!(n, 12_501);
        })
    });
    // A whole nsqd connection: magic, IDENTIFY, the same 12,501 commands,
    // answered into one buffer as the connection does, then closed (the
    // session's drop removes its 12,500 registrations).
    let mut connection = MAGIC_V1.to_vec();
    let body = br#"{"broadcast_address":"n1","hostname":"n1","tcp_port":4150,"http_port":4151,"version":"1.3.0"}"#;
    connection.extend_from_slice(b"IDENTIFY\n");
    connection.extend_from_slice(&(body.len() as u32).to_be_bytes());
    connection.extend_from_slice(body);
    connection.extend_from_slice(&input);
    group.throughput(Throughput::Bytes(connection.len() as u64));
    group.bench_function("drive_connection_12501_commands", |b| {
        let registry = Arc::new(Registry::new(RegistryOptions::default()));
        let stats = Arc::new(Stats::default());
        let peer = "127.0.0.1:4150".parse().expect("address");
        b.iter(|| {
            let session = Session::new(
                Arc::clone(&registry),
                peer,
                Bytes::from_static(br#"{"tcp_port":4160}"#),
                100_000,
                Arc::clone(&stats),
            );
            let mut driver = Driver::new(LookupCodec::new(4096, 65536), session);
            let mut buf = BytesMut::from(&connection[..]);
            let mut out = BytesMut::new();
            let mut answers = 0usize;
            let ending = driver.pump(&mut buf, true, |o| {
                if let Output::Answer(data) = o {
                    put_frame(&mut out, &data);
                    answers += 1;
                }
            });
            assert!(matches!(ending, Some(Ending::Closed)));
            assert_eq!(answers, 12_502);
            black_box(out);
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
