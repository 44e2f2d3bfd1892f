//! Consumer load: M workers, each with one keep-alive HTTP connection,
//! issuing `/lookup?topic=` for random registered topics (optionally mixed
//! with `/nodes`, `/topics`, `/channels`).
//!
//! * Closed loop (`rate = 0`): each worker sends its next request as soon
//!   as the previous answer arrives: measures the maximum throughput.
//! * Open loop (`rate > 0`): requests are put on a fixed timeline (request
//!   `j` of the run is due at `j / rate`, dealt round-robin to the
//!   workers), and latency is measured from the *scheduled* time, so a
//!   server that stalls is charged for every request that should have been
//!   sent meanwhile (no coordinated omission). The time from the actual
//!   send is reported separately as service time.
//!
//! A sample of answers is checked against what the fleet registered (see
//! [`crate::check`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::check::{self, Carrier};
use crate::fleet::NodeStates;
use crate::httpc::HttpConn;
use crate::scheme::Workload;
use crate::stats::{Errors, Latency};

/// Percentages of non-lookup requests (the rest are `/lookup`).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Mix {
    pub nodes_pct: f64,
    pub topics_pct: f64,
    pub channels_pct: f64,
}

/// How to load the HTTP side.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    pub http_address: String,
    pub workers: usize,
    /// Total requests per second over all workers; 0 = closed loop.
    pub rate: f64,
    pub duration: Duration,
    pub mix: Mix,
    /// Fraction of answers checked (0..=1); needs node states.
    pub check_sample: f64,
    pub http_timeout: Duration,
    pub seed: u64,
}

/// The kinds of request, in report order.
pub const KINDS: [&str; 4] = ["lookup", "nodes", "topics", "channels"];

/// Figures of one consumer run.
#[derive(Clone, Default)]
pub struct ConsumerStats {
    /// Latency of answered requests (from the scheduled time when open loop).
    pub latency: Latency,
    /// Latency from the actual send.
    pub service: Latency,
    /// Requests answered with status 200, by kind (see [`KINDS`]).
    pub ok_by_kind: [u64; 4],
    /// Body bytes of 200 answers, by kind.
    pub bytes_by_kind: [u64; 4],
    pub errors: Errors,
    pub checks: u64,
    pub check_failures: u64,
    /// The first few problems found.
    pub failures: Vec<String>,
    /// TCP connections opened (reconnects show as more than `workers`).
    pub connects: u64,
    /// Open loop: requests due before the end that could not be sent
    /// because the answers to earlier ones were still outstanding.
    pub unsent: u64,
    pub elapsed: Duration,
}

impl ConsumerStats {
    fn merge(&mut self, o: &ConsumerStats) {
        self.latency.merge(&o.latency);
        self.service.merge(&o.service);
        for i in 0..4 {
            self.ok_by_kind[i] += o.ok_by_kind[i];
            self.bytes_by_kind[i] += o.bytes_by_kind[i];
        }
        self.errors.merge(&o.errors);
        self.checks += o.checks;
        self.check_failures += o.check_failures;
        for f in &o.failures {
            if self.failures.len() < 10 {
                self.failures.push(f.clone());
            }
        }
        self.connects += o.connects;
        self.unsent += o.unsent;
    }

    pub fn ok(&self) -> u64 {
        self.ok_by_kind.iter().sum()
    }

    /// Mean body size of `/lookup` answers, if any were received.
    pub fn mean_lookup_bytes(&self) -> Option<usize> {
        (self.ok_by_kind[0] > 0).then(|| (self.bytes_by_kind[0] / self.ok_by_kind[0]) as usize)
    }
}

/// xorshift64*: a tiny deterministic generator, good enough to pick topics
/// (the bench needs no cryptographic or statistical quality).
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Mix the seed (splitmix64) so nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The request kind for a uniform draw `u` in `[0, 1)`.
pub fn pick_kind(mix: &Mix, u: f64) -> usize {
    let p = u * 100.0;
    if p < mix.nodes_pct {
        1
    } else if p < mix.nodes_pct + mix.topics_pct {
        2
    } else if p < mix.nodes_pct + mix.topics_pct + mix.channels_pct {
        3
    } else {
        0
    }
}

/// When request `j` of worker `w` is due, as an offset from the start.
pub fn scheduled_offset(j: u64, w: usize, workers: usize, rate: f64) -> Duration {
    Duration::from_secs_f64((j as f64 * workers as f64 + w as f64) / rate)
}

/// What the workers share.
struct Ctx {
    w: Arc<Workload>,
    states: Option<Arc<NodeStates>>,
    cfg: ConsumerConfig,
    lookup_paths: Vec<String>,
    channels_paths: Vec<String>,
    done: Arc<AtomicU64>,
}

/// Runs the consumer load for `cfg.duration`. `states` enables checking
/// (None for the ceiling server, whose answers are filler). `done` counts
/// answered requests live, for the progress bar.
pub async fn run(
    w: Arc<Workload>,
    states: Option<Arc<NodeStates>>,
    cfg: ConsumerConfig,
    done: Arc<AtomicU64>,
) -> ConsumerStats {
    let covered = w.covered_topics();
    let ctx = Arc::new(Ctx {
        lookup_paths: (0..covered)
            .map(|t| format!("/lookup?topic={}", w.topic_name(t)))
            .collect(),
        channels_paths: (0..covered)
            .map(|t| format!("/channels?topic={}", w.topic_name(t)))
            .collect(),
        w,
        states,
        cfg,
        done,
    });
    let start = Instant::now();
    let handles: Vec<_> = (0..ctx.cfg.workers.max(1))
        .map(|i| tokio::spawn(worker(ctx.clone(), i, start)))
        .collect();
    let mut total = ConsumerStats::default();
    for h in handles {
        match h.await {
            Ok(s) => total.merge(&s),
            Err(_) => total.errors.add("bench_task_failed"),
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// Waits until `at`: sleeps while far away (the timer has 1 ms
/// granularity), then yields until due, so open-loop sends leave on time
/// instead of up to a millisecond late.
async fn wait_until(at: Instant) {
    loop {
        let now = Instant::now();
        if now >= at {
            return;
        }
        let left = at - now;
        if left > Duration::from_micros(1500) {
            tokio::time::sleep(left - Duration::from_millis(1)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

async fn worker(ctx: Arc<Ctx>, index: usize, start: Instant) -> ConsumerStats {
    let cfg = &ctx.cfg;
    let w = &ctx.w;
    let end = start + cfg.duration;
    let mut rng = Rng::new(cfg.seed ^ ((index as u64 + 1) << 32));
    let mut conn = HttpConn::new(&cfg.http_address);
    let mut st = ConsumerStats::default();
    let covered = w.covered_topics().max(1);
    let workers = cfg.workers.max(1);
    let mut j: u64 = 0;
    loop {
        // When this request is due.
        let due = if cfg.rate > 0.0 {
            let due = start + scheduled_offset(j, index, workers, cfg.rate);
            if due >= end {
                break;
            }
            if Instant::now() >= end {
                // Due within the run but never sent: the server fell behind.
                st.unsent = (end - due)
                    .as_secs_f64()
                    .mul_add(cfg.rate / workers as f64, 1.0) as u64;
                break;
            }
            j += 1;
            wait_until(due).await;
            due
        } else {
            let now = Instant::now();
            if now >= end {
                break;
            }
            now
        };

        let kind = pick_kind(&cfg.mix, rng.unit());
        let topic = rng.below(covered);
        let path: &str = match kind {
            1 => "/nodes",
            2 => "/topics",
            3 => &ctx.channels_paths[topic],
            _ => &ctx.lookup_paths[topic],
        };
        let checking = ctx
            .states
            .as_ref()
            .filter(|_| cfg.check_sample > 0.0 && rng.unit() < cfg.check_sample);
        // Node states before the request: who must be in the answer.
        let before: Vec<(usize, u64)> = match (checking, kind) {
            (Some(s), 0) => w.producers_of(topic).map(|n| (n, s.snapshot(n))).collect(),
            (Some(s), 1) => (0..w.nodes).map(|n| (n, s.snapshot(n))).collect(),
            _ => Vec::new(),
        };

        let sent = Instant::now();
        let result = conn.get(path, cfg.http_timeout).await;
        let now = Instant::now();
        match result {
            Err(e) => {
                st.errors.add(e.kind());
                if e == crate::httpc::HttpError::ConnectRefused {
                    // Do not spin on a server that is not there.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            Ok(r) if r.status != 200 => {
                st.errors.add(&format!("status_{}", r.status));
            }
            Ok(r) => {
                st.latency.record(now - due);
                st.service.record(now - sent);
                st.ok_by_kind[kind] += 1;
                st.bytes_by_kind[kind] += r.body.len() as u64;
                ctx.done.fetch_add(1, Ordering::Relaxed);
                if r.body.first() != Some(&b'{') {
                    st.errors.add("bad_body");
                }
                if let Some(states) = checking {
                    let problems = match kind {
                        0 => {
                            let carriers: Vec<Carrier> = before
                                .iter()
                                .map(|&(node, word)| Carrier {
                                    node,
                                    must_appear: NodeStates::is_registered(word)
                                        && states.snapshot(node) == word,
                                    may_repeat: states.has_restarted(node),
                                })
                                .collect();
                            check::check_lookup(w, topic, r.body, &carriers)
                        }
                        1 => {
                            let stable: Vec<usize> = before
                                .iter()
                                .filter(|&&(n, word)| {
                                    NodeStates::is_registered(word) && states.snapshot(n) == word
                                })
                                .map(|&(n, _)| n)
                                .collect();
                            check::check_nodes(w, r.body, &stable)
                        }
                        2 => check::check_topics(w, r.body),
                        _ => check::check_channels(w, topic, r.body),
                    };
                    st.checks += 1;
                    if !problems.is_empty() {
                        st.check_failures += 1;
                        for p in problems {
                            if st.failures.len() < 10 {
                                st.failures.push(p);
                            }
                        }
                    }
                }
            }
        }
    }
    st.connects = conn.connects;
    st
}

/// Checks the `/lookup` answer of `topics` (all expected stable) over a
/// few connections; returns (topics checked, topics failed, problems).
pub async fn verify_topics(
    w: Arc<Workload>,
    states: Arc<NodeStates>,
    http_address: &str,
    topics: Vec<usize>,
    http_timeout: Duration,
) -> (u64, u64, Vec<String>) {
    let topics = Arc::new(topics);
    let next = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..4 {
        let (w, states, topics, next) = (w.clone(), states.clone(), topics.clone(), next.clone());
        let mut conn = HttpConn::new(http_address);
        handles.push(tokio::spawn(async move {
            let (mut checked, mut failed, mut problems) = (0u64, 0u64, Vec::new());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(&topic) = topics.get(i) else { break };
                let before: Vec<(usize, u64)> = w
                    .producers_of(topic)
                    .map(|n| (n, states.snapshot(n)))
                    .collect();
                let path = format!("/lookup?topic={}", w.topic_name(topic));
                let found = match conn.get(&path, http_timeout).await {
                    Err(e) => vec![format!("lookup {}: {}", w.topic_name(topic), e.kind())],
                    Ok(r) if r.status != 200 => {
                        vec![format!(
                            "lookup {}: status {}",
                            w.topic_name(topic),
                            r.status
                        )]
                    }
                    Ok(r) => {
                        let carriers: Vec<Carrier> = before
                            .iter()
                            .map(|&(node, word)| Carrier {
                                node,
                                must_appear: NodeStates::is_registered(word)
                                    && states.snapshot(node) == word,
                                may_repeat: states.has_restarted(node),
                            })
                            .collect();
                        check::check_lookup(&w, topic, r.body, &carriers)
                    }
                };
                checked += 1;
                if !found.is_empty() {
                    failed += 1;
                    problems.extend(
                        found
                            .into_iter()
                            .take(10usize.saturating_sub(problems.len())),
                    );
                }
            }
            (checked, failed, problems)
        }));
    }
    let (mut checked, mut failed, mut problems) = (0, 0, Vec::new());
    for h in handles {
        if let Ok((c, f, p)) = h.await {
            checked += c;
            failed += f;
            problems.extend(p.into_iter().take(10usize.saturating_sub(problems.len())));
        }
    }
    (checked, failed, problems)
}

/// Up to `max` topics spread evenly over the registered ones.
pub fn spread_topics(w: &Workload, max: usize) -> Vec<usize> {
    let covered = w.covered_topics();
    if max == 0 || covered == 0 {
        return Vec::new();
    }
    if max >= covered {
        return (0..covered).collect();
    }
    (0..max).map(|i| i * covered / max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let mut hits = [0u32; 10];
        for _ in 0..10_000 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            hits[x] += 1;
        }
        assert!(hits.iter().all(|&h| h > 800 && h < 1200), "{hits:?}");
        let u = Rng::new(1).unit();
        assert!((0.0..1.0).contains(&u));
    }

    #[test]
    fn mix_percentages() {
        let mix = Mix {
            nodes_pct: 10.0,
            topics_pct: 5.0,
            channels_pct: 5.0,
        };
        assert_eq!(pick_kind(&mix, 0.05), 1);
        assert_eq!(pick_kind(&mix, 0.12), 2);
        assert_eq!(pick_kind(&mix, 0.17), 3);
        assert_eq!(pick_kind(&mix, 0.5), 0);
        assert_eq!(pick_kind(&Mix::default(), 0.0), 0);
    }

    #[test]
    fn open_loop_timeline_is_dealt_round_robin() {
        // 4 workers at 1000/s: request k of the run is due at k ms.
        let mut due: Vec<Duration> = Vec::new();
        for w in 0..4 {
            for j in 0..3 {
                due.push(scheduled_offset(j, w, 4, 1000.0));
            }
        }
        due.sort();
        let want: Vec<Duration> = (0..12).map(Duration::from_millis).collect();
        for (d, w) in due.iter().zip(&want) {
            assert!(d.abs_diff(*w) < Duration::from_nanos(10), "{d:?} vs {w:?}");
        }
    }

    #[test]
    fn spread_covers_evenly() {
        let w = Workload {
            nodes: 10,
            topics_per_node: 10,
            topic_universe: 20,
            channels: 2,
            topic_prefix: "b".into(),
        };
        assert_eq!(spread_topics(&w, 100).len(), 20);
        assert_eq!(spread_topics(&w, 4), vec![0, 5, 10, 15]);
        assert!(spread_topics(&w, 0).is_empty());
    }
}
