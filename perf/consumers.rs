//! Consumer load: M workers, each with one keep-alive HTTP connection,
//! issuing `/lookup?topic=` for random registered topics (optionally mixed
//! with `/nodes`, `/topics`, `/channels`).
//!
//! * Closed loop (`rate = 0`): each worker sends its next request as soon
//!   as the previous answer arrives: measures the maximum throughput.
//! * Open loop (`rate > 0`): requests are put on a fixed timeline (request
//!   `j` of the run is due at `j / rate`), and latency is measured from the
//!   *scheduled* time, so a server that stalls is charged for every request
//!   that should have been sent meanwhile (no coordinated omission). The
//!   time from the actual send is reported separately as service time.
//!
//! In open loop a pacer releases one "ticket" per request as it falls due,
//! as permits of a semaphore, and a worker that is free takes the next
//! ticket. The pacer is one task on the workers' own runtime that, when the
//! next ticket is less than a few milliseconds away, waits by yielding: each
//! yield lets tokio poll its I/O driver and run whatever became ready, so
//! answers are read as they arrive and tickets leave within microseconds of
//! their due time. Two designs measured worse (server on core 0, bench on
//! core 1, medium, 30,000/s): every worker yielding until its own due time
//! (64 spinning tasks: p99 0.6-5.8 ms between identical runs), and a pacer
//! on its own thread sleeping with `std::thread::sleep` (tickets ~100 µs
//! late at the median, and several ms late at p99 when the kernel ran the
//! busy runtime thread before the waking pacer: latency p99 15.6 ms while
//! the server's own service time p99 was 1.4 ms). The price is that the
//! bench keeps its core busy in open loop, so its CPU figure there says
//! nothing about its load. tokio's timer (1 ms granularity) is only used
//! for waits longer than that, at low rates. Tickets go to whichever worker
//! is free rather than being dealt round-robin in advance, so one slow
//! connection does not hold back requests that idle workers could send. A
//! ticket that falls due while every worker is waiting for an answer waits
//! for the first free one (and its latency includes that wait); tickets
//! that fell due within the run but found no worker free before the end
//! are reported as `unsent`.
//!
//! A sample of answers is checked against what the fleet registered (see
//! [`crate::check`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::check::{self, Carrier};
use crate::fleet::{NodeStates, Out};
use crate::httpc::{HttpConn, Target};
use crate::scheme::Workload;
use crate::stats::{Errors, Latency};
use crate::tls::HttpClient;

/// Percentages of non-lookup requests (the rest are `/lookup`).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Mix {
    pub nodes_pct: f64,
    pub topics_pct: f64,
    pub channels_pct: f64,
}

/// Which gzip answers of a load are inflated (`--gzip-decode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GzipDecode {
    /// Every one, as a real client does.
    #[default]
    All,
    /// Only those sampled for checking; the others are counted with the
    /// size their gzip trailer states.
    Checked,
}

/// How to load the HTTP side.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Worker `i` asks `http[i % n]` (several replicas of a cluster, or
    /// one server), each over http or https.
    pub http: Vec<Arc<Target>>,
    /// The TLS configuration and secret the targets were made with.
    pub client: HttpClient,
    pub workers: usize,
    /// Total requests per second over all workers; 0 = closed loop.
    pub rate: f64,
    pub duration: Duration,
    /// Unrecorded load run first on the same connections.
    pub warmup: Duration,
    pub mix: Mix,
    /// Fraction of answers checked (0..=1); needs node states.
    pub check_sample: f64,
    pub http_timeout: Duration,
    /// Which gzip answers are inflated (with `client.accept_gzip`).
    pub gzip_decode: GzipDecode,
    pub seed: u64,
    /// The pacer yields when the next ticket is closer than this, else
    /// sleeps (`--pacer-spin`, 2 ms by default).
    pub pacer_spin: Duration,
}

impl ConsumerConfig {
    /// The address worker `worker` asks.
    pub fn address_of(&self, worker: usize) -> &Arc<Target> {
        &self.http[worker % self.http.len().max(1)]
    }

    /// The addresses as given (`a,https://b`), for reports.
    pub fn addresses_text(&self) -> String {
        let list: Vec<&str> = self.http.iter().map(|t| t.address.as_str()).collect();
        list.join(",")
    }
}

/// The kinds of request, in report order.
pub const KINDS: [&str; 4] = ["lookup", "nodes", "topics", "channels"];

/// Figures of one consumer run.
#[derive(Default)]
pub struct ConsumerStats {
    /// Latency of answered requests (from the scheduled time when open loop).
    pub latency: Latency,
    /// Latency from the actual send.
    pub service: Latency,
    /// `latency`, by kind (see [`KINDS`]): a mix's `/lookup` figures alone.
    pub latency_by_kind: [Latency; 4],
    /// Requests answered with status 200, by kind (see [`KINDS`]).
    pub ok_by_kind: [u64; 4],
    /// Body bytes of 200 answers, by kind: the content, inflated when it
    /// came gzip.
    pub bytes_by_kind: [u64; 4],
    /// Body bytes of 200 answers as received (compressed when gzip), by kind.
    pub wire_bytes_by_kind: [u64; 4],
    /// 200 answers that came `Content-Encoding: gzip`, by kind.
    pub gzip_by_kind: [u64; 4],
    pub errors: Errors,
    pub checks: u64,
    pub check_failures: u64,
    /// The first few problems found.
    pub failures: Vec<String>,
    /// TCP connections opened (reconnects show as more than `workers`).
    pub connects: u64,
    /// Requests sent (answered or not).
    pub sent: u64,
    /// Sampled answers to check once every worker is done.
    deferred: Vec<DeferredCheck>,
    /// Open loop: requests due before the end that could not be sent
    /// because the answers to earlier ones were still outstanding.
    pub unsent: u64,
    pub elapsed: Duration,
}

impl ConsumerStats {
    /// Adds `o` in; takes it by value so that the sampled answers kept for
    /// later checks (up to 2 MB each) move instead of being copied.
    pub fn merge(&mut self, o: ConsumerStats) {
        self.latency.merge(&o.latency);
        self.service.merge(&o.service);
        for i in 0..4 {
            self.latency_by_kind[i].merge(&o.latency_by_kind[i]);
            self.ok_by_kind[i] += o.ok_by_kind[i];
            self.bytes_by_kind[i] += o.bytes_by_kind[i];
            self.wire_bytes_by_kind[i] += o.wire_bytes_by_kind[i];
            self.gzip_by_kind[i] += o.gzip_by_kind[i];
        }
        self.errors.merge(&o.errors);
        self.checks += o.checks;
        self.check_failures += o.check_failures;
        for f in o.failures {
            if self.failures.len() < 10 {
                self.failures.push(f);
            }
        }
        self.connects += o.connects;
        self.sent += o.sent;
        self.deferred.extend(o.deferred);
        self.unsent += o.unsent;
    }

    /// Empty figures with every histogram the run will fill already built
    /// and faulted in (see [`Latency::prepare`]): made before the clock
    /// starts.
    fn prepared(mix: &Mix) -> Self {
        let mut st = ConsumerStats::default();
        st.latency.prepare();
        st.service.prepare();
        let shares = [
            100.0 - mix.nodes_pct - mix.topics_pct - mix.channels_pct,
            mix.nodes_pct,
            mix.topics_pct,
            mix.channels_pct,
        ];
        if shares.iter().filter(|p| **p > 0.0).count() > 1 {
            for (l, p) in st.latency_by_kind.iter_mut().zip(shares) {
                if p > 0.0 {
                    l.prepare();
                }
            }
        }
        st
    }

    /// Counts one checked answer and keeps its first problems.
    fn note_check(&mut self, problems: Vec<String>) {
        self.checks += 1;
        if !problems.is_empty() {
            self.check_failures += 1;
            for p in problems {
                if self.failures.len() < 10 {
                    self.failures.push(p);
                }
            }
        }
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

/// When ticket (request) `j` of an open-loop run is due, as an offset from
/// the start.
pub fn due_offset(j: u64, rate: f64) -> Duration {
    Duration::try_from_secs_f64(j as f64 / rate).unwrap_or(Duration::MAX)
}

/// How many tickets are due `elapsed` after the start at `rate`/s: those
/// whose [`due_offset`] is at most `elapsed` (ticket 0 is due at once).
pub fn due_by(elapsed: Duration, rate: f64) -> u64 {
    // The product is the answer up to rounding; settle the edge with the
    // same function that gives the due times, so the two always agree.
    let mut n = ((elapsed.as_secs_f64() * rate) as u64).saturating_add(1);
    while n > 0 && due_offset(n - 1, rate) > elapsed {
        n -= 1;
    }
    while due_offset(n, rate) <= elapsed {
        n += 1;
    }
    n
}

/// How many tickets fall due strictly before `end` (the length of a run).
pub fn due_before(end: Duration, rate: f64) -> u64 {
    if end.is_zero() {
        0
    } else {
        due_by(end - Duration::from_nanos(1), rate)
    }
}

/// Sampled `/nodes` and `/topics` answers each worker keeps, to check
/// once every worker is done: parsing a 2 MB `/nodes` answer takes the bench's only
/// thread tens of milliseconds, which, done on the spot, made every other
/// worker's requests that late (open loop, medium, 46,000/s with 0.05 %
/// /nodes and /topics: /lookup p99 7.7 ms with the checks in line, 0.56 ms
/// without them).
const MAX_DEFERRED_CHECKS: usize = 2;

/// A sampled `/nodes` (kind 1) or `/topics` (kind 2) answer, with the
/// nodes that had to be listed in it.
struct DeferredCheck {
    kind: usize,
    body: Vec<u8>,
    stable: Vec<usize>,
}

/// The pacer sleeps on tokio's timer (1 ms granularity) only when the next
/// ticket is further away than this; closer, it yields: `--pacer-spin`'s
/// default (perf/cli.rs), which the tests use.
#[cfg(test)]
const PACER_SPIN: Duration = Duration::from_millis(2);

/// The open-loop timeline, shared by the pacer task and the workers.
struct Timeline {
    start: Instant,
    rate: f64,
    duration: Duration,
    /// Yield rather than sleep when the next ticket is closer than this.
    spin: Duration,
    /// One permit per ticket released and not yet taken; closed at the end.
    permits: Semaphore,
    /// The next ticket to take.
    next: AtomicU64,
    /// Tickets released in all, set just before `permits` is closed
    /// (`u64::MAX` until then).
    released: AtomicU64,
}

impl Timeline {
    fn new(start: Instant, rate: f64, duration: Duration, spin: Duration) -> Self {
        Timeline {
            start,
            rate,
            duration,
            spin,
            permits: Semaphore::new(0),
            next: AtomicU64::new(0),
            released: AtomicU64::new(u64::MAX),
        }
    }

    /// The pacer: releases each ticket as it falls due, until the end of
    /// the run; then releases those due before the end it has not released
    /// yet, closes the semaphore and returns how many it released.
    async fn pace(&self) -> u64 {
        let mut released = 0u64;
        loop {
            let elapsed = self.start.elapsed();
            let over = elapsed >= self.duration;
            let due = if over {
                due_before(self.duration, self.rate)
            } else {
                due_by(elapsed, self.rate)
            };
            if due > released {
                self.permits.add_permits((due - released) as usize);
                released = due;
            }
            if over {
                self.released.store(released, Ordering::SeqCst);
                self.permits.close();
                return released;
            }
            let wake = due_offset(released, self.rate).min(self.duration);
            match wake.checked_sub(elapsed) {
                Some(left) if left > self.spin => {
                    tokio::time::sleep(left - self.spin / 2).await;
                }
                _ => tokio::task::yield_now().await,
            }
        }
    }

    /// Waits for the next ticket and returns when it was due, or `None`
    /// when the worker should stop. The end is checked when the worker
    /// becomes free, not when it gets its ticket: a worker free before the
    /// end sends a ticket released just before it even if it wakes up a
    /// little after, so a server that keeps up is not charged `unsent`
    /// requests; one free only after the end sends nothing more.
    async fn take(&self) -> Option<Instant> {
        if self.start.elapsed() >= self.duration {
            return None;
        }
        // Closed: the run is over, but tickets released at the last moment
        // may still be there for the workers that were waiting.
        if let Ok(permit) = self.permits.acquire().await {
            permit.forget();
        }
        let j = self.next.fetch_add(1, Ordering::SeqCst);
        if j >= self.released.load(Ordering::SeqCst) {
            return None;
        }
        Some(self.start + due_offset(j, self.rate))
    }
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
    let mut session = Session::connect(w, states, cfg, done).await;
    let warmup = session.ctx.cfg.warmup;
    if !warmup.is_zero() {
        session.segment(warmup).await;
    }
    let duration = session.ctx.cfg.duration;
    session.segment(duration).await
}

/// The consumers' connections, kept from one stretch of load to the next
/// (the soak runs one stretch per sample period).
pub struct Session {
    ctx: Arc<Ctx>,
    conns: Vec<HttpConn>,
}

impl Session {
    /// Sets the consumers up and connects every worker.
    pub async fn connect(
        w: Arc<Workload>,
        states: Option<Arc<NodeStates>>,
        cfg: ConsumerConfig,
        done: Arc<AtomicU64>,
    ) -> Session {
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
        let conns = connect_workers(&ctx).await;
        Session { ctx, conns }
    }

    /// One stretch of load of `duration` (recorded from its own start) on
    /// the same connections, at `cfg.rate` as given when connecting.
    pub async fn segment(&mut self, duration: Duration) -> ConsumerStats {
        let conns = std::mem::take(&mut self.conns);
        let (stats, conns) = timed_run(&self.ctx, conns, duration).await;
        self.conns = conns;
        stats
    }

    /// Changes the open-loop rate of the next stretches (0: closed loop).
    pub fn set_rate(&mut self, rate: f64) {
        let mut cfg = self.ctx.cfg.clone();
        cfg.rate = rate;
        self.ctx = Arc::new(Ctx {
            w: self.ctx.w.clone(),
            states: self.ctx.states.clone(),
            lookup_paths: self.ctx.lookup_paths.clone(),
            channels_paths: self.ctx.channels_paths.clone(),
            done: self.ctx.done.clone(),
            cfg,
        });
    }
}

/// Connects every worker of `ctx` (the connections of a [`Session`]).
async fn connect_workers(ctx: &Arc<Ctx>) -> Vec<HttpConn> {
    // Connect every worker before the clock starts: the load is lookups on
    // keep-alive connections, and 64 connects landing on the first
    // milliseconds of an open-loop timeline made the first ~0.2 s of every
    // run late by ~20 ms (3 % of a 30,000/s run, the whole p99).
    let connecting: Vec<_> = (0..ctx.cfg.workers.max(1))
        .map(|i| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let mut conn = HttpConn::new(ctx.cfg.address_of(i).clone());
                // A failure is retried, and counted, by the first request.
                let _ = conn.connect(ctx.cfg.http_timeout).await;
                conn
            })
        })
        .collect();
    let mut conns: Vec<HttpConn> = Vec::with_capacity(connecting.len());
    for (i, c) in connecting.into_iter().enumerate() {
        conns.push(
            c.await
                .unwrap_or_else(|_| HttpConn::new(ctx.cfg.address_of(i).clone())),
        );
    }
    conns
}

/// One stretch of load on `conns`, for `duration`; returns the figures and
/// the connections, for the next stretch.
async fn timed_run(
    ctx: &Arc<Ctx>,
    conns: Vec<HttpConn>,
    duration: Duration,
) -> (ConsumerStats, Vec<HttpConn>) {
    let stats: Vec<ConsumerStats> = conns
        .iter()
        .map(|_| ConsumerStats::prepared(&ctx.cfg.mix))
        .collect();
    let start = Instant::now();
    let timeline = (ctx.cfg.rate > 0.0).then(|| {
        Arc::new(Timeline::new(
            start,
            ctx.cfg.rate,
            duration,
            ctx.cfg.pacer_spin,
        ))
    });
    let pacer = timeline
        .clone()
        .map(|t| tokio::spawn(async move { t.pace().await }));
    let handles: Vec<_> = conns
        .into_iter()
        .zip(stats)
        .enumerate()
        .map(|(i, (conn, st))| {
            tokio::spawn(worker(
                ctx.clone(),
                i,
                conn,
                st,
                start,
                duration,
                timeline.clone(),
            ))
        })
        .collect();
    let mut total = ConsumerStats::default();
    let mut conns = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok((s, conn)) => {
                total.merge(s);
                conns.push(conn);
            }
            Err(_) => total.errors.add("bench_task_failed"),
        }
    }
    if let Some(h) = pacer {
        // The pacer ends at the end of the run.
        match h.await {
            Ok(released) => total.unsent = released.saturating_sub(total.sent),
            Err(_) => total.errors.add("bench_pacer_failed"),
        }
    }
    total.elapsed = start.elapsed();
    for c in std::mem::take(&mut total.deferred) {
        total.note_check(if c.kind == 1 {
            check::check_nodes(&ctx.w, &c.body, &c.stable)
        } else {
            check::check_topics(&ctx.w, &c.body)
        });
    }
    (total, conns)
}

async fn worker(
    ctx: Arc<Ctx>,
    index: usize,
    mut conn: HttpConn,
    mut st: ConsumerStats,
    start: Instant,
    duration: Duration,
    timeline: Option<Arc<Timeline>>,
) -> (ConsumerStats, HttpConn) {
    let cfg = &ctx.cfg;
    let w = &ctx.w;
    let end = start + duration;
    let mut rng = Rng::new(cfg.seed ^ ((index as u64 + 1) << 32));
    let covered = w.covered_topics().max(1);
    let mut deferred: Vec<DeferredCheck> = Vec::new();
    loop {
        // When this request is due.
        let due = match &timeline {
            Some(t) => match t.take().await {
                Some(due) => due,
                None => break,
            },
            None => {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                now
            }
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
        let before: Vec<Before> = match (checking, kind) {
            (Some(s), 0) => w.producers_of(topic).map(|n| before_of(s, n)).collect(),
            (Some(s), 1) => (0..w.nodes).map(|n| before_of(s, n)).collect(),
            _ => Vec::new(),
        };

        // Sampled answers are inflated and checked whatever --gzip-decode says.
        let inflate = cfg.gzip_decode == GzipDecode::All || checking.is_some();
        let sent = Instant::now();
        st.sent += 1;
        let result = conn.get_as(path, cfg.http_timeout, inflate).await;
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
                st.latency_by_kind[kind].record(now - due);
                st.service.record(now - sent);
                st.ok_by_kind[kind] += 1;
                st.bytes_by_kind[kind] += r.content_len as u64;
                st.wire_bytes_by_kind[kind] += r.wire_len as u64;
                ctx.done.fetch_add(1, Ordering::Relaxed);
                if r.gzip {
                    st.gzip_by_kind[kind] += 1;
                    if !cfg.client.accept_gzip {
                        // Inflated and checked all the same, but a client
                        // that did not ask could not have read it.
                        st.errors.add("gzip_not_asked");
                    }
                }
                if !r.still_compressed && r.body.first() != Some(&b'{') {
                    st.errors.add("bad_body");
                }
                if let Some(states) = checking {
                    match kind {
                        0 => {
                            let carriers = carriers(states, w, topic, &before);
                            st.note_check(check::check_lookup(w, topic, r.body, &carriers));
                        }
                        1 | 2 if deferred.len() < MAX_DEFERRED_CHECKS => {
                            // Who must be listed is decided now; the parse,
                            // tens of ms for a /nodes answer at medium, waits
                            // for the end of the run (see MAX_DEFERRED_CHECKS).
                            // With all its topics: none taken out meanwhile.
                            let stable: Vec<usize> = before
                                .iter()
                                .filter(|&&(n, word, out)| {
                                    states.unchanged(n, word, out) && Out::of(out) == Out::None
                                })
                                .map(|&(n, _, _)| n)
                                .collect();
                            deferred.push(DeferredCheck {
                                kind,
                                body: r.body.to_vec(),
                                stable,
                            });
                        }
                        1 | 2 => {}
                        _ => st.note_check(check::check_channels(w, topic, r.body)),
                    }
                }
            }
        }
    }
    st.deferred = deferred;
    st.connects = conn.connects;
    (st, conn)
}

/// A node's state before a request: (node, session word, UNREGISTER-cycle
/// word), see [`NodeStates`].
type Before = (usize, u64, u64);

fn before_of(states: &NodeStates, node: usize) -> Before {
    (node, states.snapshot(node), states.out_word(node))
}

/// What is known, now that the answer arrived, about the carriers of
/// `topic` whose node states were `before` when the request was sent: a
/// carrier must be listed if it stayed registered, in one session, with
/// the topic never taken out meanwhile (the soak's UNREGISTER share); it
/// must not be listed if, in one session, the topic was out (its
/// UNREGISTER answered OK, not yet registered again) the whole time.
pub fn carriers(
    states: &NodeStates,
    w: &Workload,
    topic: usize,
    before: &[Before],
) -> Vec<Carrier> {
    before
        .iter()
        .map(|&(node, word, out)| {
            let same = states.unchanged(node, word, out);
            let slot = w.slot_of(node, topic);
            let (touched, taken_out) = match Out::of(out) {
                Out::None => (false, false),
                Out::InFlux(k) => (Some(k) == slot, false),
                Out::Gone(k) => (Some(k) == slot, Some(k) == slot),
            };
            Carrier {
                node,
                must_appear: same && !touched,
                may_repeat: states.has_restarted(node),
                must_not_appear: same && taken_out,
            }
        })
        .collect()
}

/// Node states of `topic`'s carriers before a request (see [`carriers`]).
pub fn carriers_before(states: &NodeStates, w: &Workload, topic: usize) -> Vec<Before> {
    w.producers_of(topic)
        .map(|n| before_of(states, n))
        .collect()
}

/// Checks the `/lookup` answer of `topics` (all expected stable) over a
/// few connections; returns (topics checked, topics failed, problems).
pub async fn verify_topics(
    w: Arc<Workload>,
    states: Arc<NodeStates>,
    http: &Arc<Target>,
    topics: Vec<usize>,
    http_timeout: Duration,
) -> (u64, u64, Vec<String>) {
    let topics = Arc::new(topics);
    let next = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..4 {
        let (w, states, topics, next) = (w.clone(), states.clone(), topics.clone(), next.clone());
        let mut conn = HttpConn::new(http.clone());
        handles.push(tokio::spawn(async move {
            let (mut checked, mut failed, mut problems) = (0u64, 0u64, Vec::new());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(&topic) = topics.get(i) else { break };
                let before = carriers_before(&states, &w, topic);
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
                    Ok(r) => check::check_lookup(
                        &w,
                        topic,
                        r.body,
                        &carriers(&states, &w, topic, &before),
                    ),
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
    fn ticket_due_times() {
        assert_eq!(due_offset(0, 1000.0), Duration::ZERO);
        assert_eq!(due_offset(3, 1000.0), Duration::from_millis(3));
        assert_eq!(due_offset(1, 3.0), Duration::from_nanos(333_333_333));
        // Absurdly low rates do not overflow.
        assert_eq!(due_offset(1, 1e-300), Duration::MAX);
    }

    #[test]
    fn tickets_due_by_elapsed() {
        // 1000/s: ticket k is due at k ms; ticket 0 at once.
        assert_eq!(due_by(Duration::ZERO, 1000.0), 1);
        assert_eq!(due_by(Duration::from_micros(999), 1000.0), 1);
        assert_eq!(due_by(Duration::from_millis(1), 1000.0), 2);
        assert_eq!(due_by(Duration::from_micros(2500), 1000.0), 3);
        // A run of 1 s at 1000/s has tickets 0..1000 strictly before its end.
        assert_eq!(due_before(Duration::from_secs(1), 1000.0), 1000);
        assert_eq!(due_before(Duration::ZERO, 1000.0), 0);
        // Rates that do not divide a second: counting agrees with the due
        // times exactly at every ticket's due time and just before it.
        for rate in [3.0, 7.0, 29_999.0, 48_000.0, 0.5] {
            for j in 0..2000u64 {
                let at = due_offset(j, rate);
                assert_eq!(due_by(at, rate), j + 1, "rate {rate} ticket {j}");
                if !at.is_zero() {
                    assert_eq!(due_before(at, rate), j, "rate {rate} ticket {j}");
                }
            }
        }
    }

    /// One 200 ms run of the pacer and 4 workers at 2000/s (see below):
    /// tickets released, how late each taken ticket was, when the workers
    /// were done.
    fn pacer_run(rate: f64, run: Duration) -> (u64, Vec<Duration>, Duration) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let t = Arc::new(Timeline::new(Instant::now(), rate, run, PACER_SPIN));
            let pacer = {
                let t = t.clone();
                tokio::spawn(async move { t.pace().await })
            };
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    let t = t.clone();
                    tokio::spawn(async move {
                        let mut late = Vec::new();
                        while let Some(due) = t.take().await {
                            late.push(Instant::now().saturating_duration_since(due));
                        }
                        late
                    })
                })
                .collect();
            // Deadlines: the whole run must be over well within 5 s.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            let mut lateness = Vec::new();
            for w in workers {
                let late = tokio::time::timeout_at(deadline, w)
                    .await
                    .expect("a worker did not stop at the end of the run")
                    .unwrap();
                lateness.extend(late);
            }
            let workers_ended = t.start.elapsed();
            let released = tokio::time::timeout_at(deadline, pacer)
                .await
                .expect("the pacer did not stop at the end of the run")
                .unwrap();
            (released, lateness, workers_ended)
        })
    }

    /// The pacer and `Timeline::take` together, without HTTP: a few worker
    /// tasks take tickets for 200 ms at 2000/s and note how late they got
    /// each one. The timing marks get three tries: a run is 200 ms of real
    /// time, and a thread kept off its core for tens of ms near the end
    /// (the other tests' load on a 2-core machine, kdamond) loses the
    /// tickets due meanwhile; the counts must hold in every run.
    #[test]
    fn pacer_releases_the_timeline_to_free_workers() {
        const RATE: f64 = 2000.0;
        const RUN: Duration = Duration::from_millis(200);
        let want = due_before(RUN, RATE);
        assert_eq!(want, 400);
        let mut misses = Vec::new();
        for _ in 0..3 {
            let (released, mut lateness, workers_ended) = pacer_run(RATE, RUN);
            // Exactly the tickets due before the end were released...
            assert_eq!(released, want);
            let taken = lateness.len() as u64;
            assert!(taken <= released);
            assert!(workers_ended >= RUN, "stopped early, at {workers_ended:?}");
            // ... and idle workers took (nearly) all of them, on time, not
            // in a lump: the median ticket was taken within a few ms of its
            // due time (a lump at the end would make it ~100 ms late).
            lateness.sort();
            let median = lateness.get(lateness.len() / 2).copied();
            if taken * 100 >= want * 97 && median.is_some_and(|m| m < Duration::from_millis(20)) {
                return;
            }
            misses.push(format!(
                "took {taken} of {want}, median lateness {median:?}"
            ));
        }
        panic!("the pacer missed its marks in 3 runs: {misses:?}");
    }

    #[test]
    fn take_stops_at_the_end_but_serves_the_last_tickets() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // A worker free only after the end takes nothing, even if
            // tickets are left.
            let over = Timeline::new(
                Instant::now() - Duration::from_secs(2),
                1000.0,
                Duration::from_secs(1),
                PACER_SPIN,
            );
            over.permits.add_permits(3);
            assert_eq!(over.take().await, None);

            // Workers waiting when the pacer closes (as at the end of a run)
            // still get the tickets it released last, and no more.
            let t = Arc::new(Timeline::new(
                Instant::now(),
                1000.0,
                Duration::from_secs(3600),
                PACER_SPIN,
            ));
            let waiting = {
                let t = t.clone();
                tokio::spawn(async move { t.take().await })
            };
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished());
            t.released.store(2, Ordering::SeqCst);
            t.permits.close();
            let first = tokio::time::timeout(Duration::from_secs(5), waiting)
                .await
                .expect("closing must wake the waiting worker")
                .unwrap();
            assert_eq!(first, Some(t.start));
            assert_eq!(t.take().await, Some(t.start + Duration::from_millis(1)));
            assert_eq!(t.take().await, None);
        });
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
