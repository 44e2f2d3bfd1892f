//! Registry costs at three registry sizes, with the same number of
//! producers per topic, so any growth with size shows up as a slope:
//!
//! - `lookup`: a `/lookup` answer served from the topic's cache, cycling
//!   over 1,024 topics (what the map probe costs when it stays in cache);
//! - `lookup_every_topic`: the same, visiting every topic in a scrambled
//!   order, as consumers of a whole fleet do: on the larger registries the
//!   probe and the answer's metadata come from far memory, so this is
//!   where the number of dependent cache misses per lookup shows;
//! - `lookup_render`: the same answer rendered from snapshots (the cost of
//!   the first lookup after a change), at 10 and 250 producers per topic;
//! - `register_unregister`: one producer joining then leaving a topic and
//!   one of its channels (two REGISTER-equivalent writes and their undo);
//!   `register_unregister_cluster` the same on a registry that has cluster
//!   mode's observer installed (the mirror of local writes), next to it.
//!
//! Run: `cargo bench --bench registry`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use nsqlookupd::registry::{Observer, PeerInfo, ProducerHandle, Registry, RegistryOptions};

const PRODUCERS_PER_TOPIC: usize = 10;
const SIZES: [usize; 3] = [100, 10_000, 100_000];

fn peer(n: usize) -> PeerInfo {
    PeerInfo {
        remote_address: format!("10.0.{}.{}:{}", n / 250, n % 250, 40000 + n % 20000),
        hostname: format!("nsqd-{n:05}.example.internal"),
        broadcast_address: format!("nsqd-{n:05}.example.internal"),
        tcp_port: 4150,
        http_port: 4151,
        version: "1.3.0".into(),
        topology_zone: "zone-a".into(),
        topology_region: "region-1".into(),
    }
}

/// A registry of `topics` topics, each with `per_topic` producers and 4
/// channels; producers each carry `topics * per_topic / producers` topics.
fn registry(topics: usize, per_topic: usize) -> (Arc<Registry>, Vec<ProducerHandle>) {
    registry_with(topics, per_topic, None)
}

fn registry_with(
    topics: usize,
    per_topic: usize,
    observer: Option<Arc<dyn Observer>>,
) -> (Arc<Registry>, Vec<ProducerHandle>) {
    let registry = Arc::new(Registry::with_observer(
        RegistryOptions::default(),
        observer,
    ));
    let producers = per_topic.max(topics * per_topic / 1000).max(1);
    let mut handles: Vec<ProducerHandle> =
        (0..producers).map(|n| registry.identify(peer(n))).collect();
    for t in 0..topics {
        let topic = format!("topic-{t:06}");
        for k in 0..per_topic {
            let h = &mut handles[(t * per_topic + k) % producers];
            for c in 0..4 {
                h.register(&topic, Some(&format!("channel-{c}")));
            }
        }
    }
    (registry, handles)
}

fn topic_name(i: usize, topics: usize) -> String {
    // A cheap spread over the topic space (not sequential).
    format!("topic-{:06}", (i * 7919) % topics)
}

fn lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    for size in SIZES {
        let (registry, _handles) = registry(size, PRODUCERS_PER_TOPIC);
        let names: Vec<String> = (0..1024).map(|i| topic_name(i, size)).collect();
        for n in &names {
            registry.lookup(n).expect("topic exists"); // warm the caches
        }
        let mut i = 0;
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                i = (i + 1) & 1023;
                black_box(registry.lookup(&names[i]))
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("lookup_every_topic");
    for size in SIZES {
        let (registry, _handles) = registry(size, PRODUCERS_PER_TOPIC);
        // 7919 is prime, so i * 7919 % size visits every topic once.
        let names: Vec<String> = (0..size).map(|i| topic_name(i, size)).collect();
        for n in &names {
            registry.lookup(n).expect("topic exists"); // render every answer once
        }
        let mut i = 0;
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                i = (i + 1) % size;
                black_box(registry.lookup(&names[i]))
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("lookup_render");
    for per_topic in [10, 250] {
        let (registry, _handles) = registry(1000, per_topic);
        let name = topic_name(1, 1000);
        group.bench_with_input(
            BenchmarkId::new("producers", per_topic),
            &per_topic,
            |b, _| b.iter(|| black_box(registry.lookup_uncached(&name))),
        );
    }
    group.finish();
}

fn writes(c: &mut Criterion) {
    write_group(c, "register_unregister", || None, || {});
    let mirror = nsqlookupd::cluster::mirror(std::time::Duration::from_secs(300));
    let observer = Arc::clone(&mirror) as Arc<dyn Observer>;
    write_group(
        c,
        "register_unregister_cluster",
        || Some(Arc::clone(&observer)),
        // As the publisher would have by then: the set-up's keys published.
        || mirror.lock().dirty.clear(),
    );
}

fn write_group(
    c: &mut Criterion,
    name: &str,
    observer: impl Fn() -> Option<Arc<dyn Observer>>,
    after_setup: impl Fn(),
) {
    let mut group = c.benchmark_group(name);
    for size in SIZES {
        let (registry, _handles) = registry_with(size, PRODUCERS_PER_TOPIC, observer());
        after_setup();
        let mut newcomer = registry.identify(peer(1_000_000));
        let names: Vec<String> = (0..1024).map(|i| topic_name(i, size)).collect();
        let mut i = 0;
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                i = (i + 1) & 1023;
                newcomer.register(&names[i], Some("channel-0"));
                newcomer.unregister(&names[i], None);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookups, writes);
criterion_main!(benches);
