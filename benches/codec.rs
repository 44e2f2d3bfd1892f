//! Decoding throughput of the TCP codec on a large pipelined buffer (what
//! a reconnecting nsqd sends: thousands of REGISTER lines in one burst).
//!
//! Run: `cargo bench --bench codec`.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nsqlookupd::tcp::codec::LookupCodec;
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
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
