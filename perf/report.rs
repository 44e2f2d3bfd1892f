//! Every figure of a run: the structure written by `--json`, and the
//! summary table printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::ceiling::AnswersSummary;
use crate::presets::Preset;
use crate::procstat::ProcDelta;
use crate::scheme::Workload;
use crate::stats::{Errors, LatencySummary};
use crate::tls::HttpClientReport;

/// Everything measured in one invocation.
#[derive(Serialize, Default)]
pub struct Report {
    pub tool: String,
    pub mode: String,
    pub label: Option<String>,
    /// Unix time the run started.
    pub started_at_unix: u64,
    pub tcp_address: Option<String>,
    pub http_address: Option<String>,
    /// How the server under test was asked over HTTP: scheme, TLS
    /// verification, whether the Bearer secret was sent.
    pub http_client: Option<HttpClientReport>,
    pub server_pid: Option<u32>,
    pub workload: Option<WorkloadReport>,
    pub registration: Option<RegistrationReport>,
    pub steady: Option<SteadyReport>,
    pub storm: Option<StormReport>,
    /// Consumer load against the server under test.
    pub lookups: Option<LoadReport>,
    /// The same consumer load against the built-in ceiling server with
    /// one body for every request (`--ceiling-kind single` or `both`).
    pub ceiling: Option<LoadReport>,
    /// The same against the ceiling server with one body per topic, each
    /// request its topic's (`--ceiling-kind distinct` or `both`).
    pub ceiling_distinct: Option<LoadReport>,
    pub checks: ChecksReport,
    /// TCP errors over the whole run, by kind.
    pub tcp_errors: Errors,
    /// Whether the run passed (every check correct, fleet registered).
    pub passed: bool,
    /// Why it did not.
    pub problems: Vec<String>,
    /// The fleet and consumer options used (durations as seconds + nanos).
    pub settings: serde_json::Value,
    /// How long the server kept working after the fleet disconnected.
    pub disconnect_cleanup: Option<CleanupReport>,
    /// `propagation`: from a REGISTER on one replica to /lookup on another.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation: Option<PropagationReport>,
    /// `converge`: until a replica answers right for the whole fleet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converge: Option<ConvergeReport>,
    /// `soak`: samples over time, per-minute percentiles, drift, bounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<crate::soak::SoakReport>,
}

/// Cluster propagation, measured with probe nodes (`propagation`).
#[derive(Serialize, Default)]
pub struct PropagationReport {
    /// Where the probe nodes register (A).
    pub tcp_address: String,
    /// Where their topics are looked up (B).
    pub http_address: String,
    pub probes: usize,
    pub probe_nodes: usize,
    pub poll_interval_s: f64,
    pub deadline_s: f64,
    /// From the `OK` of `REGISTER topic` on A to the arrival of the first
    /// `/lookup?topic=` answer of B listing the probe node.
    pub register: LatencySummary,
    /// Probes not listed by B within the deadline.
    pub register_missed: u64,
    /// From the `OK` of `UNREGISTER topic` on A to the first answer of B
    /// without the probe node (None with `--no-unregister`).
    pub unregister: Option<LatencySummary>,
    pub unregister_missed: u64,
    /// A's answer time to the probes' REGISTER and UNREGISTER commands.
    pub tcp_answer: LatencySummary,
    /// `/lookup` requests sent to B.
    pub polls: u64,
    /// TCP and HTTP errors by kind (a probe whose command failed is skipped).
    pub errors: Errors,
}

/// One moment of a `converge` run: how many topics were right.
#[derive(Serialize, Default, Clone, Debug, PartialEq)]
pub struct ConvergePoint {
    /// Seconds since the command started (at the end of a pass).
    pub s: f64,
    pub correct: usize,
}

/// How long a replica took to answer right for the whole fleet (`converge`).
#[derive(Serialize, Default)]
pub struct ConvergeReport {
    pub http_address: String,
    /// Topics checked (every registered topic unless `--check-topics`).
    pub topics: usize,
    /// Every time below is in seconds from the start of the command.
    /// The first HTTP answer of any kind (the replica is listening).
    pub http_up_s: Option<f64>,
    /// Whether `--wait-ready` was given.
    pub waited_ready: bool,
    /// The first `GET /ready` answered 200.
    pub ready_s: Option<f64>,
    /// The first topic answered with its full and correct producer set.
    pub first_topic_correct_s: Option<f64>,
    /// Every topic answered right (each one at least once; the fleet is
    /// stable, so an answer once right stays right).
    pub converged_s: Option<f64>,
    /// Passes over the topics still wrong.
    pub passes: u64,
    /// `/lookup` requests sent.
    pub lookups: u64,
    /// Topics never answered right (when it did not converge).
    pub still_wrong: usize,
    pub errors: Errors,
    /// Topics right after each pass (at most 200 points, evenly thinned).
    pub timeline: Vec<ConvergePoint>,
}

/// The server's work after every node disconnected (`--server-pid` only).
#[derive(Serialize, Default)]
pub struct CleanupReport {
    /// Wall time from closing the connections until the server was idle.
    pub seconds: f64,
    /// Server CPU time used meanwhile.
    pub server_cpu_s: f64,
    /// False if it was still busy when the bench stopped waiting.
    pub completed: bool,
}

#[derive(Serialize)]
pub struct WorkloadReport {
    pub preset: Option<Preset>,
    #[serde(flatten)]
    pub shape: Workload,
    pub total_registrations: u64,
    /// Topics with at least one producer (the ones consumers look up).
    pub registered_topics: usize,
    pub producers_per_topic_min: usize,
    pub producers_per_topic_max: usize,
    /// Size of a `/lookup` answer for one topic, computed from the scheme.
    pub lookup_answer_bytes_estimate: usize,
}

impl WorkloadReport {
    pub fn new(w: &Workload, preset: Option<Preset>) -> Self {
        let covered = w.covered_topics();
        let (lo, hi) = if covered == 0 {
            (0, 0)
        } else {
            // Counts differ by at most one between topics: the first and
            // the last registered topic hold both extremes.
            let a = w.producers_of(0).count();
            let b = w.producers_of(covered - 1).count();
            (a.min(b), a.max(b))
        };
        WorkloadReport {
            preset,
            shape: w.clone(),
            total_registrations: w.total_registrations(),
            registered_topics: covered,
            producers_per_topic_min: lo,
            producers_per_topic_max: hi,
            lookup_answer_bytes_estimate: w.lookup_answer_size(0),
        }
    }
}

/// The initial registration of the whole fleet.
#[derive(Serialize, Default)]
pub struct RegistrationReport {
    /// Whether every node finished registering in time.
    pub completed: bool,
    /// From the first connect to the last node's last REGISTER answered.
    pub seconds: f64,
    /// REGISTER commands answered OK.
    pub registrations: u64,
    pub per_second: f64,
    /// REGISTER commands in flight per connection (1 = like nsqd).
    pub window: usize,
    /// Latency of every TCP response (IDENTIFY and REGISTER) in this phase.
    pub tcp_latency: LatencySummary,
    pub server: Option<ProcDelta>,
    /// Server CPU time (user + system) per registration, microseconds.
    pub server_cpu_us_per_registration: Option<f64>,
    pub load_generator: Option<ProcDelta>,
    pub machine: Option<MachineLoad>,
}

/// How busy the whole machine was during a phase.
#[derive(Serialize, Default, Clone, Debug)]
pub struct MachineLoad {
    /// Cores in the machine.
    pub cores: f64,
    /// Cores busy on average: all processes, interrupts and softirqs.
    pub busy_cores: f64,
    /// Of which interrupts and softirqs (on loopback, mostly the kernel
    /// carrying the benchmark's own traffic, charged to no process).
    pub interrupt_cores: f64,
    /// Cores spent running processes other than the server and the load
    /// generator: anything well above zero means the figures were disturbed.
    pub other_cores: f64,
}

/// After registration: heartbeats and churn.
#[derive(Serialize, Default)]
pub struct SteadyReport {
    pub pings: u64,
    /// Latency of PINGs and churn re-registrations.
    pub tcp_latency: LatencySummary,
    /// Configured fraction of nodes restarted per second.
    pub churn_per_s: f64,
    pub churn_restarts: u64,
    /// REGISTER commands answered OK outside the initial phase and storms.
    pub registrations: u64,
    /// From a node's disconnect (churn or failure) to it being fully
    /// registered again.
    pub reregistration: LatencySummary,
    pub sessions: u64,
}

/// A reconnect storm.
#[derive(Serialize, Default)]
pub struct StormReport {
    /// Seconds into the consumer phase it was triggered.
    pub at_s: f64,
    /// Seconds until every node was registered again (None: not in time).
    pub reregistered_after_s: Option<f64>,
    pub registrations: u64,
    /// Every TCP response during the storm; `max_us` is the worst an nsqd saw.
    pub tcp_latency: LatencySummary,
}

/// A consumer load run.
#[derive(Serialize, Default)]
pub struct LoadReport {
    pub http_address: String,
    /// Scheme, TLS verification, whether the Bearer secret was sent.
    pub http_client: HttpClientReport,
    /// "closed" or "open".
    pub loop_kind: String,
    /// Target rate when open loop.
    pub rate: f64,
    pub workers: usize,
    pub seconds: f64,
    /// Requests answered 200.
    pub requests_ok: u64,
    pub per_second: f64,
    pub ok_by_kind: BTreeMap<String, u64>,
    /// Mean body size of `/lookup` answers (of every answer when there
    /// were none), inflated when it came gzip.
    pub mean_body_bytes: Option<usize>,
    /// Whether gzip was asked for, how many answers came compressed, and
    /// the body bytes on the wire next to the inflated ones.
    pub encoding: EncodingReport,
    /// From the scheduled time (open loop) or the send (closed loop).
    pub latency: LatencySummary,
    /// `latency` by kind of request, when the run mixed kinds.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub latency_by_kind: BTreeMap<String, LatencySummary>,
    /// From the actual send.
    pub service_time: LatencySummary,
    pub errors: Errors,
    pub connects: u64,
    /// Open loop: requests due before the end but never sent because the
    /// server was too slow (each would have had a latency of at least the
    /// time it was overdue).
    pub unsent: u64,
    pub server: Option<ProcDelta>,
    pub load_generator: Option<ProcDelta>,
    pub machine: Option<MachineLoad>,
    /// A ceiling load: what the ceiling server rendered and served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling_answers: Option<AnswersSummary>,
}

/// Compressed and plain answers of one load, by the bytes their bodies
/// had on the wire and once inflated.
#[derive(Serialize, Default, Clone, Debug, PartialEq)]
pub struct EncodingReport {
    /// Requests carried `Accept-Encoding: gzip` (`--accept-gzip`).
    pub accept_gzip: bool,
    /// Which gzip answers were inflated: `all`, or `checked` (only the
    /// sampled ones; the others' content size is their trailer's word).
    pub gzip_decode: String,
    /// 200 answers that came `Content-Encoding: gzip`, of every kind.
    pub answers_gzip: u64,
    /// 200 answers that came plain, of every kind.
    pub answers_plain: u64,
    /// Mean body bytes per answer as received (after any chunked framing;
    /// compressed when gzip): over the `/lookup` answers, or every answer
    /// when there were none, as `mean_body_bytes`.
    pub wire_body_bytes_mean: Option<f64>,
    /// Mean body bytes per answer once inflated (the same answers).
    pub content_body_bytes_mean: Option<f64>,
    /// The same figures for each kind of request, when the load mixed kinds.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_kind: BTreeMap<String, KindEncoding>,
}

/// [`EncodingReport`]'s figures for one kind of request.
#[derive(Serialize, Default, Clone, Debug, PartialEq)]
pub struct KindEncoding {
    pub answers_gzip: u64,
    pub answers_plain: u64,
    pub wire_body_bytes_mean: f64,
    pub content_body_bytes_mean: f64,
}

impl EncodingReport {
    /// The text line of a load: what was asked, what came, the sizes.
    pub fn text(&self) -> String {
        let mut t = format!(
            "encoding: {}; {} answers gzip, {} plain",
            if self.accept_gzip {
                format!("Accept-Encoding: gzip (inflated: {})", self.gzip_decode)
            } else {
                "no Accept-Encoding sent".to_string()
            },
            fmt_int(self.answers_gzip),
            fmt_int(self.answers_plain)
        );
        if let (Some(w), Some(c)) = (self.wire_body_bytes_mean, self.content_body_bytes_mean) {
            let _ = write!(
                t,
                "; body per answer {} B on the wire, {} B inflated",
                fmt_int(w.round() as u64),
                fmt_int(c.round() as u64)
            );
            if w > 0.0 && (c - w).abs() >= 0.5 {
                let _ = write!(t, " ({:.1}x)", c / w);
            }
        }
        t
    }
}

#[derive(Serialize, Default)]
pub struct ChecksReport {
    /// Answers checked while under load.
    pub sampled: u64,
    pub sampled_failed: u64,
    /// `/lookup` answers checked once the load stopped (fleet at rest).
    pub final_checked: u64,
    pub final_failed: u64,
    /// The first problems found.
    pub failures: Vec<String>,
}

/// `1234` us as `1.23ms`, etc.
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// Seconds with a unit that keeps three significant figures.
pub fn fmt_secs(s: f64) -> String {
    fmt_us((s * 1e6) as u64)
}

/// `1234567` as `1,234,567`.
pub fn fmt_int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn latency_row(out: &mut String, name: &str, s: &LatencySummary) {
    let _ = writeln!(
        out,
        "  {:<22} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6}",
        name,
        fmt_int(s.count),
        fmt_us(s.p50_us),
        fmt_us(s.p90_us),
        fmt_us(s.p99_us),
        fmt_us(s.p999_us),
        fmt_us(s.max_us),
        fmt_int(s.over_100ms),
        fmt_int(s.over_1s)
    );
}

fn latency_header(out: &mut String, title: &str) {
    let _ = writeln!(
        out,
        "  {:<22} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6}",
        title, "count", "p50", "p90", "p99", "p99.9", "max", ">100ms", ">1s"
    );
}

fn machine_text(m: &Option<MachineLoad>) -> Option<String> {
    m.as_ref().map(|m| {
        format!(
            "machine: {:.2} of {:.0} cores busy ({:.2} in interrupts), {:.2} by other processes{}",
            m.busy_cores,
            m.cores,
            m.interrupt_cores,
            m.other_cores,
            if m.other_cores > 0.15 {
                " (DISTURBED)"
            } else {
                ""
            }
        )
    })
}

fn proc_text(p: &Option<ProcDelta>) -> String {
    match p {
        Some(p) => format!(
            "{:.2} CPU-s ({:.0}% of a core), RSS {} (peak {})",
            p.cpu_s,
            p.cores * 100.0,
            fmt_mib(p.rss_end_kib),
            fmt_mib(p.peak_rss_kib)
        ),
        None => "-".into(),
    }
}

fn propagation_text(o: &mut String, p: &PropagationReport) {
    let _ = writeln!(
        o,
        "propagation: REGISTER on {} -> /lookup on {}: {} probes by {} probe nodes, polled every {}, deadline {}",
        p.tcp_address,
        p.http_address,
        fmt_int(p.probes as u64),
        p.probe_nodes,
        fmt_secs(p.poll_interval_s),
        fmt_secs(p.deadline_s)
    );
    latency_header(o, "propagation latency");
    latency_row(o, "REGISTER -> listed", &p.register);
    if let Some(u) = &p.unregister {
        latency_row(o, "UNREGISTER -> gone", u);
    }
    latency_row(o, "TCP answer", &p.tcp_answer);
    let _ = writeln!(
        o,
        "  missed the deadline: {} registrations{}; {} lookups sent{}",
        fmt_int(p.register_missed),
        p.unregister
            .as_ref()
            .map(|_| format!(", {} unregistrations", fmt_int(p.unregister_missed)))
            .unwrap_or_default(),
        fmt_int(p.polls),
        if p.errors.0.is_empty() {
            String::new()
        } else {
            format!("; errors: {:?}", p.errors.0)
        }
    );
}

fn converge_text(o: &mut String, c: &ConvergeReport) {
    let at = |s: Option<f64>| s.map(fmt_secs).unwrap_or_else(|| "never".into());
    let _ = writeln!(
        o,
        "converge on {}: {} topics; HTTP up after {}{}; first topic right after {}",
        c.http_address,
        fmt_int(c.topics as u64),
        at(c.http_up_s),
        if c.waited_ready {
            format!(", /ready 200 after {}", at(c.ready_s))
        } else {
            String::new()
        },
        at(c.first_topic_correct_s)
    );
    match c.converged_s {
        Some(s) => {
            let _ = writeln!(
                o,
                "  whole fleet answered right after {}{} ({} passes, {} lookups)",
                fmt_secs(s),
                c.ready_s
                    .filter(|_| c.waited_ready)
                    .map(|r| format!(", {} after /ready", fmt_secs((s - r).max(0.0))))
                    .unwrap_or_default(),
                fmt_int(c.passes),
                fmt_int(c.lookups)
            );
        }
        None => {
            let _ = writeln!(
                o,
                "  NOT CONVERGED: {} of {} topics still wrong after {} passes, {} lookups",
                fmt_int(c.still_wrong as u64),
                fmt_int(c.topics as u64),
                fmt_int(c.passes),
                fmt_int(c.lookups)
            );
        }
    }
    if !c.errors.0.is_empty() {
        let _ = writeln!(o, "  errors: {:?}", c.errors.0);
    }
}

impl Report {
    /// The human summary printed at the end of a run.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "== {} {} ==", self.tool, self.mode);
        if let Some(l) = &self.label {
            let _ = writeln!(o, "label: {l}");
        }
        if let Some(h) = &self.http_client {
            let _ = writeln!(
                o,
                "HTTP: {} over {h}",
                self.http_address.as_deref().unwrap_or("-")
            );
        }
        if let Some(w) = &self.workload {
            let _ = writeln!(
                o,
                "workload: {}{} nodes x {} topics over {} topics x {} channels = {} REGISTERs; {}-{} producers/topic; /lookup ~{} B",
                w.preset
                    .map(|p| format!("{p:?} = ").to_lowercase())
                    .unwrap_or_default(),
                w.shape.nodes,
                fmt_int(w.shape.topics_per_node as u64),
                fmt_int(w.shape.topic_universe as u64),
                w.shape.channels,
                fmt_int(w.total_registrations),
                w.producers_per_topic_min,
                w.producers_per_topic_max,
                fmt_int(w.lookup_answer_bytes_estimate as u64)
            );
        }
        if let Some(r) = &self.registration {
            let _ = writeln!(
                o,
                "registration: {} REGISTERs in {} = {} reg/s (window {}){}",
                fmt_int(r.registrations),
                fmt_secs(r.seconds),
                fmt_int(r.per_second as u64),
                r.window,
                if r.completed { "" } else { "  (INCOMPLETE)" }
            );
            if r.server.is_some() {
                let _ = writeln!(
                    o,
                    "  server: {}; {:.2} us CPU per registration",
                    proc_text(&r.server),
                    r.server_cpu_us_per_registration.unwrap_or(0.0)
                );
            }
            if r.load_generator.is_some() {
                let _ = writeln!(o, "  load generator: {}", proc_text(&r.load_generator));
            }
            if let Some(m) = machine_text(&r.machine) {
                let _ = writeln!(o, "  {m}");
            }
        }
        let tcp_rows: Vec<(&str, &LatencySummary)> = [
            self.registration
                .as_ref()
                .map(|r| ("registration", &r.tcp_latency)),
            self.steady
                .as_ref()
                .map(|s| ("steady (ping, churn)", &s.tcp_latency)),
            self.storm
                .as_ref()
                .map(|s| ("reconnect storm", &s.tcp_latency)),
            self.steady
                .as_ref()
                .filter(|s| s.reregistration.count > 0)
                .map(|s| ("node re-registration", &s.reregistration)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !tcp_rows.is_empty() {
            latency_header(&mut o, "TCP response latency");
            for (name, s) in tcp_rows {
                latency_row(&mut o, name, s);
            }
        }
        if let Some(c) = &self.disconnect_cleanup {
            let _ = writeln!(
                o,
                "fleet disconnect: server busy for {} after the connections closed ({:.2} CPU-s){}",
                fmt_secs(c.seconds),
                c.server_cpu_s,
                if c.completed {
                    ""
                } else {
                    ", STILL BUSY when the bench stopped waiting"
                }
            );
        }
        if let Some(s) = &self.steady {
            let _ = writeln!(
                o,
                "steady: {} pings; churn {:.3}/s -> {} restarts, {} re-REGISTERs; {} TCP sessions",
                fmt_int(s.pings),
                s.churn_per_s,
                fmt_int(s.churn_restarts),
                fmt_int(s.registrations),
                fmt_int(s.sessions)
            );
        }
        if let Some(s) = &self.storm {
            let _ = writeln!(
                o,
                "storm at {:.1} s: whole fleet re-registered after {}; {} REGISTERs; worst response {}",
                s.at_s,
                s.reregistered_after_s
                    .map(fmt_secs)
                    .unwrap_or_else(|| "NOT COMPLETED".into()),
                fmt_int(s.registrations),
                fmt_us(s.tcp_latency.max_us)
            );
        }
        let ceiling_name = |l: &LoadReport| {
            let n = l.ceiling_answers.as_ref().map_or(1, |a| a.bodies);
            format!(
                "ceiling, {} {}",
                fmt_int(n as u64),
                if n == 1 { "body" } else { "bodies" }
            )
        };
        let loads: Vec<(String, &LoadReport)> = [
            self.lookups.as_ref().map(|l| ("server".to_string(), l)),
            self.ceiling.as_ref().map(|l| (ceiling_name(l), l)),
            self.ceiling_distinct.as_ref().map(|l| (ceiling_name(l), l)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !loads.is_empty() {
            let _ = writeln!(
                o,
                "  {:<22} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "HTTP load", "req/s", "p50", "p90", "p99", "p99.9", "max", "errors"
            );
            for (name, l) in &loads {
                let _ = writeln!(
                    o,
                    "  {:<22} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    name,
                    fmt_int(l.per_second as u64),
                    fmt_us(l.latency.p50_us),
                    fmt_us(l.latency.p90_us),
                    fmt_us(l.latency.p99_us),
                    fmt_us(l.latency.p999_us),
                    fmt_us(l.latency.max_us),
                    fmt_int(l.errors.total())
                );
                for (kind, k) in &l.latency_by_kind {
                    let count = l.ok_by_kind.get(kind).copied().unwrap_or(0);
                    let _ = writeln!(
                        o,
                        "  {:<22} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9}",
                        format!("  /{kind}"),
                        format!("{} ok", fmt_int(count)),
                        fmt_us(k.p50_us),
                        fmt_us(k.p90_us),
                        fmt_us(k.p99_us),
                        fmt_us(k.p999_us),
                        fmt_us(k.max_us),
                    );
                }
            }
            for (name, l) in &loads {
                let _ = writeln!(
                    o,
                    "  {name}: {} loop{}, {} workers, {:.1} s, {} ok, body ~{} B, {} connects; {}{}",
                    l.loop_kind,
                    if l.rate > 0.0 {
                        format!(" at {}/s", fmt_int(l.rate as u64))
                    } else {
                        String::new()
                    },
                    l.workers,
                    l.seconds,
                    fmt_int(l.requests_ok),
                    l.mean_body_bytes
                        .map(|b| fmt_int(b as u64))
                        .unwrap_or("-".into()),
                    l.connects,
                    l.http_client.scheme,
                    if l.http_client.auth_secret_sent {
                        ", Bearer secret sent"
                    } else {
                        ""
                    }
                );
                if let Some(a) = &l.ceiling_answers {
                    let _ = writeln!(o, "    answers: {}", a.text());
                }
                let _ = writeln!(o, "    {}", l.encoding.text());
                if l.unsent > 0 {
                    let _ = writeln!(
                        o,
                        "    {} requests fell due but were never sent: the server fell behind the rate",
                        fmt_int(l.unsent)
                    );
                }
                if l.server.is_some() {
                    let _ = writeln!(o, "    server: {}", proc_text(&l.server));
                }
                if l.load_generator.is_some() {
                    let _ = writeln!(o, "    load generator: {}", proc_text(&l.load_generator));
                }
                if let Some(m) = machine_text(&l.machine) {
                    let _ = writeln!(o, "    {m}");
                }
                if !l.errors.0.is_empty() {
                    let _ = writeln!(o, "    errors: {:?}", l.errors.0);
                }
            }
            for c in [&self.ceiling, &self.ceiling_distinct]
                .into_iter()
                .flatten()
            {
                if let Some(s) = &self.lookups
                    && c.per_second > 0.0
                {
                    let _ = writeln!(
                        o,
                        "  server reaches {:.0}% of the {}-body ceiling's req/s ({})",
                        s.per_second / c.per_second * 100.0,
                        c.ceiling_answers
                            .as_ref()
                            .map_or("single", |a| a.kind.as_str()),
                        ceiling_name(c)
                    );
                }
            }
        }
        if !self.tcp_errors.0.is_empty() {
            let _ = writeln!(o, "TCP errors: {:?}", self.tcp_errors.0);
        }
        if let Some(p) = &self.propagation {
            propagation_text(&mut o, p);
        }
        if let Some(c) = &self.converge {
            converge_text(&mut o, c);
        }
        if let Some(s) = &self.soak {
            crate::soak::text(&mut o, s);
        }
        let c = &self.checks;
        let _ = writeln!(
            o,
            "checks: {} sampled under load ({} failed), {} topics at rest ({} failed)",
            fmt_int(c.sampled),
            c.sampled_failed,
            fmt_int(c.final_checked),
            c.final_failed
        );
        for f in &c.failures {
            let _ = writeln!(o, "  ! {f}");
        }
        let _ = writeln!(o, "result: {}", if self.passed { "PASS" } else { "FAIL" });
        for p in &self.problems {
            let _ = writeln!(o, "  ! {p}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_us(850), "850us");
        assert_eq!(fmt_us(1_250), "1.25ms");
        assert_eq!(fmt_us(2_500_000), "2.50s");
        assert_eq!(fmt_int(0), "0");
        assert_eq!(fmt_int(999), "999");
        assert_eq!(fmt_int(1_000), "1,000");
        assert_eq!(fmt_int(1_234_567), "1,234,567");
    }

    #[test]
    fn cluster_sections_in_the_table() {
        let lat = |p50_us, count| LatencySummary {
            count,
            p50_us,
            p99_us: p50_us * 3,
            max_us: p50_us * 9,
            ..Default::default()
        };
        let r = Report {
            tool: "t".into(),
            mode: "propagation".into(),
            propagation: Some(PropagationReport {
                tcp_address: "127.0.0.1:1".into(),
                http_address: "127.0.0.1:2".into(),
                probes: 200,
                probe_nodes: 4,
                poll_interval_s: 0.001,
                deadline_s: 5.0,
                register: lat(2_500, 199),
                register_missed: 1,
                unregister: Some(lat(2_000, 200)),
                tcp_answer: lat(100, 400),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = r.table();
        assert!(
            t.contains("REGISTER on 127.0.0.1:1 -> /lookup on 127.0.0.1:2"),
            "{t}"
        );
        assert!(t.contains("REGISTER -> listed"), "{t}");
        assert!(t.contains("2.50ms"), "{t}");
        assert!(t.contains("UNREGISTER -> gone"), "{t}");
        assert!(
            t.contains("missed the deadline: 1 registrations, 0 unregistrations"),
            "{t}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["propagation"]["register"]["p99_us"], 7_500);
        assert!(json.get("converge").is_none());

        let mut c = ConvergeReport {
            http_address: "b:1".into(),
            topics: 10_000,
            http_up_s: Some(0.012),
            waited_ready: true,
            ready_s: Some(0.25),
            first_topic_correct_s: Some(0.26),
            converged_s: Some(0.5),
            passes: 3,
            lookups: 10_200,
            ..Default::default()
        };
        let mut r = Report {
            converge: Some(c),
            ..Default::default()
        };
        let t = r.table();
        assert!(t.contains("/ready 200 after 250.00ms"), "{t}");
        assert!(
            t.contains("whole fleet answered right after 500.00ms, 250.00ms after /ready"),
            "{t}"
        );
        c = r.converge.take().unwrap();
        c.converged_s = None;
        c.still_wrong = 17;
        r.converge = Some(c);
        assert!(
            r.table()
                .contains("NOT CONVERGED: 17 of 10,000 topics still wrong"),
            "{}",
            r.table()
        );
    }

    #[test]
    fn encoding_line() {
        let mut e = EncodingReport {
            accept_gzip: true,
            gzip_decode: "all".into(),
            answers_gzip: 1_000,
            answers_plain: 2,
            wire_body_bytes_mean: Some(4_492.4),
            content_body_bytes_mean: Some(48_814.0),
            ..Default::default()
        };
        assert_eq!(
            e.text(),
            "encoding: Accept-Encoding: gzip (inflated: all); 1,000 answers gzip, 2 plain; \
             body per answer 4,492 B on the wire, 48,814 B inflated (10.9x)"
        );
        e.accept_gzip = false;
        e.answers_gzip = 0;
        e.wire_body_bytes_mean = Some(1_003.0);
        e.content_body_bytes_mean = Some(1_003.0);
        assert_eq!(
            e.text(),
            "encoding: no Accept-Encoding sent; 0 answers gzip, 2 plain; \
             body per answer 1,003 B on the wire, 1,003 B inflated"
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["wire_body_bytes_mean"], 1_003.0);
        assert!(json.get("by_kind").is_none());
    }

    #[test]
    fn both_ceilings_next_to_the_server() {
        let load = |per_second: f64, bodies: Option<usize>| LoadReport {
            per_second,
            requests_ok: 1_000,
            ceiling_answers: bodies.map(|n| AnswersSummary {
                kind: if n == 1 { "single" } else { "distinct" }.into(),
                bodies: n,
                selection: "by topic".into(),
                body_bytes_mean: 1_003.0,
                body_bytes_min: 1_003,
                body_bytes_max: 1_003,
                gzip_min_size: 1024,
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = Report {
            tool: "t".into(),
            mode: "run".into(),
            lookups: Some(load(80_000.0, None)),
            ceiling: Some(load(100_000.0, Some(1))),
            ceiling_distinct: Some(load(90_000.0, Some(20_000))),
            ..Default::default()
        };
        let t = r.table();
        assert!(t.contains("  ceiling, 1 body "), "{t}");
        assert!(t.contains("  ceiling, 20,000 bodies "), "{t}");
        assert!(
            t.contains("server reaches 80% of the single-body ceiling's req/s (ceiling, 1 body)"),
            "{t}"
        );
        assert!(
            t.contains(
                "server reaches 89% of the distinct-body ceiling's req/s (ceiling, 20,000 bodies)"
            ),
            "{t}"
        );
        assert!(t.contains("answers: 20,000 bodies of 1,003 B"), "{t}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["ceiling_distinct"]["ceiling_answers"]["bodies"],
            20_000
        );
        assert!(json["lookups"].get("ceiling_answers").is_none());
    }

    #[test]
    fn table_says_fail_with_reasons() {
        let r = Report {
            tool: "t".into(),
            mode: "run".into(),
            problems: vec!["a check failed".into()],
            ..Default::default()
        };
        let t = r.table();
        assert!(t.contains("result: FAIL"));
        assert!(t.contains("a check failed"));
    }
}
