//! `soak`: endurance against any lookupd.
//!
//! A fleet (default 5,000 nodes, one command at a time as nsqd sends them,
//! pings every 15 s, 2 % of the nodes reconnecting every second, a share
//! of nodes taking a topic out and back, ephemeral topics appearing and
//! disappearing) and open-loop consumers (by default at half the
//! closed-loop maximum, measured first) run for `--duration`. The load
//! runs in stretches of `--sample-every` on the same connections; at the
//! end of each the server is sampled (RSS, open descriptors, CPU from
//! `/proc`, the numeric gauges of `/metrics` when it has one) with the
//! stretch's figures (lookup rate and percentiles, errors, TCP answers),
//! and the ephemeral topics and the topics taken out are checked. The end
//! of the run reports errors by kind, slow TCP answers, lookup percentiles
//! per minute, and the drift of memory and descriptors between a base
//! window (the second minute) and the last one, against stated bounds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::{FaultKind, FaultSpec, SoakArgs, SoakOpts};
use crate::consumers::{self, ConsumerStats, Session};
use crate::fleet::{
    EPHEMERAL_CHANNEL, EphemeralBook, Fleet, NodeStates, Out, TcpWindow, ephemeral_topic,
};
use crate::httpc::{HttpConn, Target};
use crate::modes::{self, Outcome};
use crate::procstat::{self, MachineProbe, Probe};
use crate::progress::note;
use crate::report::{WorkloadReport, fmt_int, fmt_us};
use crate::scheme::Workload;
use crate::stats::{Errors, Latency, LatencySummary};

/// One sample: the server at the end of a stretch, and the stretch's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    /// Seconds from the start of the load to the end of the stretch.
    pub t_s: f64,
    /// Length of the stretch.
    pub seconds: f64,
    pub rss_kib: Option<u64>,
    pub fds: Option<u64>,
    /// Server CPU over the stretch, in cores.
    pub server_cores: Option<f64>,
    /// Lookups answered 200 per second (every kind).
    pub per_second: f64,
    /// `/lookup` latency over the stretch.
    pub lookup: LatencySummary,
    /// HTTP errors of the stretch (every kind).
    pub http_errors: u64,
    /// Open loop: requests of the stretch that fell due but were never sent.
    pub unsent: u64,
    /// TCP answers of the stretch (every phase).
    pub tcp: TcpWindow,
    /// Nodes registered when sampled.
    pub registered_nodes: usize,
    /// Ephemeral topics registered (or being registered) when sampled.
    pub ephemeral_live: usize,
    /// Numeric gauges of `/metrics` (series -> value), when it has one.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub gauges: BTreeMap<String, f64>,
}

/// `/lookup` figures of one minute of the load.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct MinuteRow {
    /// 1 for the first minute.
    pub minute: usize,
    pub from_s: f64,
    pub to_s: f64,
    /// Answers 200 of every kind, and their rate.
    pub requests_ok: u64,
    pub per_second: f64,
    pub lookup: LatencySummary,
    pub http_errors: u64,
}

/// The drift of one resource between two windows.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Drift {
    pub base_mean: f64,
    pub last_mean: f64,
    /// last - base.
    pub change: f64,
    /// (last - base) / base, percent.
    pub change_pct: f64,
    /// The largest growth allowed.
    pub bound: f64,
    pub within: bool,
}

/// Memory and descriptor drift.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DriftReport {
    /// The windows compared, seconds from the start of the load.
    pub base_window_s: (f64, f64),
    pub last_window_s: (f64, f64),
    pub base_samples: usize,
    pub last_samples: usize,
    /// RSS in KiB; `bound` is in KiB too (`--max-rss-drift-pct` of the base,
    /// at least `--max-rss-drift-mib`).
    pub rss: Option<Drift>,
    /// Open descriptors; `bound` is max(`--max-fd-drift`,
    /// `--max-fd-drift-pct` of the base).
    pub fds: Option<Drift>,
    /// Why there is no drift figure, when there is none.
    pub not_computed: Option<String>,
}

/// A fault injected during the soak.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    pub kind: FaultKind,
    pub at_s: f64,
    /// What happened (e.g. the storm's re-registration time).
    pub outcome: String,
    pub passed: bool,
}

/// Everything the soak adds to the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SoakReport {
    pub duration_s: f64,
    pub sample_every_s: f64,
    /// The open-loop rate, and how it was chosen.
    pub rate: f64,
    pub rate_source: String,
    /// With `--rate 0`: the closed-loop maximum measured first (req/s).
    pub measured_max_per_second: Option<f64>,
    pub samples: Vec<Sample>,
    pub minutes: Vec<MinuteRow>,
    pub drift: DriftReport,
    /// HTTP and TCP errors by kind over the whole soak (`http:KIND`,
    /// `tcp:KIND`), the measurement of the rate included: must be empty.
    pub errors: BTreeMap<String, u64>,
    /// TCP answers of every phase (registration, steady, storms).
    pub tcp_over_100ms: u64,
    pub tcp_over_1s: u64,
    pub tcp_max_us: u64,
    pub churn_restarts: u64,
    pub unregister_orders: u64,
    pub ephemeral_created: u64,
    pub ephemeral_removed: u64,
    /// Answers checked by the soak itself at each sample (topics taken
    /// out, ephemeral topics live and gone), and those found wrong.
    pub soak_checks: u64,
    pub soak_checks_failed: u64,
    /// `/metrics`: "gauges recorded" or why not.
    pub metrics: String,
    /// Time between stretches with no load scheduled, in all (ms).
    pub gaps_ms: f64,
    pub faults: Vec<FaultRecord>,
    /// The bounds held, in words.
    pub bounds: Vec<String>,
}

/// Mean of the values whose time falls in `[from, to]` (the window's
/// samples: a sample's time is the end of its stretch), and how many.
fn window_mean(points: &[(f64, f64)], from: f64, to: f64) -> Option<(f64, usize)> {
    let v: Vec<f64> = points
        .iter()
        .filter(|(t, _)| *t > from + 1e-9 && *t <= to + 1e-9)
        .map(|p| p.1)
        .collect();
    (!v.is_empty()).then(|| (v.iter().sum::<f64>() / v.len() as f64, v.len()))
}

/// The drift of `points` (time, value) from the base window to the last
/// one, with `bound` the allowed growth given the base mean.
pub fn drift(
    points: &[(f64, f64)],
    base: (f64, f64),
    last: (f64, f64),
    bound: impl Fn(f64) -> f64,
) -> Option<(Drift, usize, usize)> {
    let (b, nb) = window_mean(points, base.0, base.1)?;
    let (l, nl) = window_mean(points, last.0, last.1)?;
    let change = l - b;
    let allowed = bound(b);
    Some((
        Drift {
            base_mean: b,
            last_mean: l,
            change,
            change_pct: if b > 0.0 { change / b * 100.0 } else { 0.0 },
            bound: allowed,
            within: change <= allowed,
        },
        nb,
        nl,
    ))
}

/// A time window, seconds from the start: (from, to).
pub type Window = (f64, f64);

/// The windows compared for a run of `duration`: the base starts at
/// `base_start`, both last `window`, the last ends the run; `Err` says why
/// they do not fit.
pub fn drift_windows(
    duration: f64,
    base_start: f64,
    window: f64,
) -> Result<(Window, Window), String> {
    let base = (base_start, base_start + window);
    let last = (duration - window, duration);
    if window <= 0.0 {
        return Err("the drift window is empty".into());
    }
    if base.1 > last.0 + 1e-9 {
        return Err(format!(
            "the run ({duration:.0} s) is too short for a base window at {:.0}-{:.0} s and a last window of {window:.0} s that do not overlap",
            base.0, base.1
        ));
    }
    Ok((base, last))
}

/// The drift section from the samples.
pub fn drift_report(samples: &[Sample], duration: f64, o: &SoakOpts) -> DriftReport {
    let (base, last) = match drift_windows(
        duration,
        o.drift_base_start.as_secs_f64(),
        o.drift_window.as_secs_f64(),
    ) {
        Ok(w) => w,
        Err(e) => {
            return DriftReport {
                not_computed: Some(e),
                ..Default::default()
            };
        }
    };
    let rss: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| s.rss_kib.map(|r| (s.t_s, r as f64)))
        .collect();
    let fds: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| s.fds.map(|r| (s.t_s, r as f64)))
        .collect();
    let (rss_pct, rss_abs_kib) = (o.max_rss_drift_pct, o.max_rss_drift_mib * 1024.0);
    let (fd_abs, fd_pct) = (o.max_fd_drift, o.max_fd_drift_pct);
    let r = drift(&rss, base, last, |b| rss_abs_kib.max(b * rss_pct / 100.0));
    let f = drift(&fds, base, last, |b| fd_abs.max(b * fd_pct / 100.0));
    let mut out = DriftReport {
        base_window_s: base,
        last_window_s: last,
        ..Default::default()
    };
    if let Some((d, nb, nl)) = &r {
        out.base_samples = *nb;
        out.last_samples = *nl;
        out.rss = Some(d.clone());
    }
    out.fds = f.map(|(d, _, _)| d);
    if out.rss.is_none() && out.fds.is_none() {
        out.not_computed = Some(if rss.is_empty() {
            "no server samples (give --server-pid)".into()
        } else {
            "no sample in one of the windows".into()
        });
    }
    out
}

/// Per-minute rows from the stretches' `/lookup` histograms: each stretch
/// goes to the minute its start falls in.
pub fn minute_rows(stretches: &[(f64, f64, u64, u64, &Latency)]) -> Vec<MinuteRow> {
    let mut rows: BTreeMap<usize, (f64, f64, u64, u64, Latency)> = BTreeMap::new();
    for &(from, to, ok, errors, lat) in stretches {
        let m = (from / 60.0 + 1e-9).floor() as usize;
        let e = rows
            .entry(m)
            .or_insert_with(|| (from, to, 0, 0, Latency::new()));
        e.0 = e.0.min(from);
        e.1 = e.1.max(to);
        e.2 += ok;
        e.3 += errors;
        e.4.merge(lat);
    }
    rows.into_iter()
        .map(|(m, (from, to, ok, errors, lat))| MinuteRow {
            minute: m + 1,
            from_s: from,
            to_s: to,
            requests_ok: ok,
            per_second: ok as f64 / (to - from).max(1e-9),
            lookup: lat.summary(),
            http_errors: errors,
        })
        .collect()
}

/// The numeric gauges of a Prometheus / OpenMetrics text exposition:
/// series (`name{labels}`) -> value, for every metric whose `# TYPE` is
/// `gauge`.
pub fn parse_gauges(text: &str) -> BTreeMap<String, f64> {
    let mut gauges = std::collections::BTreeSet::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some("gauge")) = (it.next(), it.next()) {
                gauges.insert(name.to_string());
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        // `series value [timestamp]`; labels may hold spaces, so the
        // series ends at the closing brace when there is one.
        let (series, rest) = match line.find('{') {
            Some(open) => match line[open..].find('}') {
                Some(close) => line.split_at(open + close + 1),
                None => continue,
            },
            None => match line.split_once(' ') {
                Some((a, b)) => (a, b),
                None => continue,
            },
        };
        let name = series.split('{').next().unwrap_or(series);
        if !gauges.contains(name) {
            continue;
        }
        if let Some(v) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            out.insert(series.to_string(), v);
        }
    }
    out
}

/// What the sampler asks the server besides the load.
struct Prober {
    target: Arc<Target>,
    timeout: Duration,
    /// None once `/metrics` answered anything but 200 (the original has none).
    metrics: Option<String>,
    metrics_note: String,
}

impl Prober {
    async fn gauges(&mut self) -> BTreeMap<String, f64> {
        let Some(path) = self.metrics.clone() else {
            return BTreeMap::new();
        };
        let mut c = HttpConn::new(self.target.clone());
        match c.get(&path, self.timeout).await {
            Ok(r) if r.status == 200 => {
                let g = parse_gauges(&String::from_utf8_lossy(r.body));
                self.metrics_note = format!("{} gauges recorded from {path}", g.len());
                g
            }
            Ok(r) => {
                self.metrics_note = format!("{path} answered {}: no gauges", r.status);
                self.metrics = None;
                BTreeMap::new()
            }
            Err(e) => {
                self.metrics_note = format!("{path}: {}: no gauges", e.kind());
                self.metrics = None;
                BTreeMap::new()
            }
        }
    }
}

/// The soak's own checks at a sample: `/lookup` of topics taken out (the
/// node must not be listed), of live ephemeral topics (their node must be)
/// and of gone ones (no producer), and `/topics` for both kinds.
async fn soak_checks(
    w: &Workload,
    states: &NodeStates,
    book: &EphemeralBook,
    conn: &mut HttpConn,
    timeout: Duration,
    failures: &mut Vec<String>,
) -> (u64, u64) {
    let (mut checked, mut failed) = (0u64, 0u64);
    let note_fail = |failures: &mut Vec<String>, p: String| {
        if failures.len() < 10 {
            failures.push(p);
        }
    };
    // Topics taken out: a few nodes whose slot is out now.
    let mut out_nodes = Vec::new();
    for n in 0..w.nodes {
        if out_nodes.len() >= 3 {
            break;
        }
        let o = states.out_word(n);
        if let Out::Gone(k) = Out::of(o) {
            out_nodes.push((n, w.topic_of(n, k)));
        }
    }
    for (_, topic) in out_nodes {
        let before = consumers::carriers_before(states, w, topic);
        let path = format!("/lookup?topic={}", w.topic_name(topic));
        let problems = match conn.get(&path, timeout).await {
            Err(e) => vec![format!("lookup {}: {}", w.topic_name(topic), e.kind())],
            Ok(r) if r.status != 200 => vec![format!(
                "lookup {}: status {}",
                w.topic_name(topic),
                r.status
            )],
            Ok(r) => crate::check::check_lookup(
                w,
                topic,
                r.body,
                &consumers::carriers(states, w, topic, &before),
            ),
        };
        checked += 1;
        if !problems.is_empty() {
            failed += 1;
            for p in problems {
                note_fail(failures, p);
            }
        }
    }
    // Ephemeral topics.
    let live = book.live_sample(3);
    let live_before: Vec<(u64, usize, u64, u64)> = live
        .iter()
        .map(|&(id, node, word)| (id, node, word, states.snapshot(node)))
        .collect();
    let gone = book.gone_sample(3);
    let still_live = |id: u64, node: usize, word: u64| {
        book.still_live(id, word) && states.snapshot(node) == word
    };
    for &(id, node, word, snap) in &live_before {
        if snap != word {
            continue;
        }
        let name = ephemeral_topic(w, id);
        let got = ephemeral_producers(conn, &name, timeout).await;
        if !still_live(id, node, word) {
            continue;
        }
        checked += 1;
        let want = Workload::identity(node).broadcast_address;
        match got {
            Ok(Some((producers, channels))) if producers.contains(&want) => {
                if !channels.iter().any(|c| c == EPHEMERAL_CHANNEL) {
                    failed += 1;
                    note_fail(
                        failures,
                        format!("lookup {name}: channels {channels:?} lack {EPHEMERAL_CHANNEL}"),
                    );
                }
            }
            Ok(other) => {
                failed += 1;
                note_fail(
                    failures,
                    format!(
                        "lookup {name}: registered producer {want} missing (answer {:?})",
                        other.map(|o| o.0)
                    ),
                );
            }
            Err(e) => {
                failed += 1;
                note_fail(failures, format!("lookup {name}: {e}"));
            }
        }
    }
    for &id in &gone {
        let name = ephemeral_topic(w, id);
        checked += 1;
        match ephemeral_producers(conn, &name, timeout).await {
            Ok(None) => {}
            Ok(Some((p, _))) if p.is_empty() => {}
            Ok(Some((p, _))) => {
                failed += 1;
                note_fail(
                    failures,
                    format!("lookup {name}: unregistered ephemeral topic still lists {p:?}"),
                );
            }
            Err(e) => {
                failed += 1;
                note_fail(failures, format!("lookup {name}: {e}"));
            }
        }
    }
    // /topics: the live ones listed, the gone ones not.
    let live_before: Vec<_> = book
        .live_sample(3)
        .into_iter()
        .filter(|&(_, node, word)| states.snapshot(node) == word)
        .collect();
    let gone = book.gone_sample(3);
    match conn.get("/topics", timeout).await {
        Err(e) => {
            checked += 1;
            failed += 1;
            note_fail(failures, format!("topics: {}", e.kind()));
        }
        Ok(r) if r.status != 200 => {
            checked += 1;
            failed += 1;
            note_fail(failures, format!("topics: status {}", r.status));
        }
        Ok(r) => {
            #[derive(serde::Deserialize)]
            struct T {
                topics: Vec<String>,
            }
            checked += 1;
            match serde_json::from_slice::<T>(r.body) {
                Err(e) => {
                    failed += 1;
                    note_fail(failures, format!("topics: unparseable answer: {e}"));
                }
                Ok(t) => {
                    let listed: std::collections::HashSet<&str> =
                        t.topics.iter().map(String::as_str).collect();
                    let mut bad = Vec::new();
                    for &(id, node, word) in &live_before {
                        let name = ephemeral_topic(w, id);
                        if still_live(id, node, word) && !listed.contains(name.as_str()) {
                            bad.push(format!("topics: registered ephemeral topic {name} missing"));
                        }
                    }
                    for &id in &gone {
                        let name = ephemeral_topic(w, id);
                        if listed.contains(name.as_str()) {
                            bad.push(format!(
                                "topics: unregistered ephemeral topic {name} still listed"
                            ));
                        }
                    }
                    if !bad.is_empty() {
                        failed += 1;
                        for b in bad {
                            note_fail(failures, b);
                        }
                    }
                }
            }
        }
    }
    (checked, failed)
}

/// The producers' broadcast addresses and the channels of an ephemeral
/// topic's `/lookup`, None for a 404 (no such topic).
async fn ephemeral_producers(
    conn: &mut HttpConn,
    name: &str,
    timeout: Duration,
) -> Result<Option<(Vec<String>, Vec<String>)>, String> {
    let path = format!("/lookup?topic={}", name.replace('#', "%23"));
    match conn.get(&path, timeout).await {
        Err(e) => Err(e.kind().to_string()),
        Ok(r) if r.status == 404 => Ok(None),
        Ok(r) if r.status != 200 => Err(format!("status {}", r.status)),
        Ok(r) => {
            let a: crate::check::LookupAnswer =
                serde_json::from_slice(r.body).map_err(|e| format!("unparseable answer: {e}"))?;
            Ok(Some((
                a.producers
                    .into_iter()
                    .map(|p| p.broadcast_address)
                    .collect(),
                a.channels,
            )))
        }
    }
}

/// The server's resources now.
struct ServerNow {
    rss_kib: Option<u64>,
    fds: Option<u64>,
    cpu_s: Option<f64>,
}

fn server_now(pid: Option<&str>) -> ServerNow {
    let Some(pid) = pid else {
        return ServerNow {
            rss_kib: None,
            fds: None,
            cpu_s: None,
        };
    };
    let s = procstat::sample(pid).ok();
    ServerNow {
        rss_kib: s.map(|s| s.rss_kib),
        fds: procstat::open_fds(pid),
        cpu_s: s.map(|s| s.cpu_s),
    }
}

/// Raises this process's soft descriptor limit to its hard limit: a
/// 5,000-node fleet is 5,000 sockets.
fn raise_nofile(nodes: usize, workers: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if (n as usize) < nodes + workers + 64 => note(&format!(
            "warning: only {n} file descriptors allowed for {nodes} nodes and {workers} consumers"
        )),
        Ok(_) => {}
        Err(e) => note(&format!("could not raise the file descriptor limit: {e}")),
    }
}

/// `soak`.
pub async fn soak(a: SoakArgs) -> Result<Outcome, String> {
    let w = Arc::new(a.workload.workload()?);
    let mut fcfg = a.fleet.config()?;
    fcfg.unregister_hold = a.soak.unregister_hold;
    fcfg.ephemeral_life = a.soak.ephemeral_life;
    let mut ccfg = a.consumers.config(0.01)?;
    if fcfg.tcp_addresses.len() != 1 || ccfg.http.len() != 1 {
        return Err("soak takes one TCP and one HTTP address (one lookupd)".into());
    }
    if a.soak.sample_every.is_zero() {
        return Err("--sample-every must be above 0".into());
    }
    if !(a.soak.rate_share > 0.0 && a.soak.rate_share.is_finite()) {
        return Err("--rate-share must be above 0".into());
    }
    raise_nofile(w.nodes, ccfg.workers);
    let mut rep = modes::new_report("soak", &a.output);
    rep.settings = serde_json::json!({
        "fleet": a.fleet,
        "consumers": a.consumers,
        "soak": a.soak,
    });
    rep.tcp_address = Some(a.fleet.tcp_address.join(","));
    modes::report_consumers(&mut rep, &ccfg);
    rep.workload = Some(WorkloadReport::new(&w, a.workload.pure_preset()));
    let pid = a.output.server_pid.map(|p| p.to_string());
    let o = &a.soak;
    let mut sr = SoakReport {
        duration_s: ccfg.duration.as_secs_f64(),
        sample_every_s: o.sample_every.as_secs_f64(),
        ..Default::default()
    };
    let mut plots = Vec::new();

    let (mut fleet, registered) =
        modes::register_fleet(&w, &a.fleet, fcfg, pid.as_deref(), &mut rep).await;
    let mut http_errors = Errors::default();
    let mut total = ConsumerStats::default();
    if registered {
        fleet.start_churn(a.fleet.churn);
        fleet.start_unregisters(o.unregister_rate);
        fleet.start_ephemerals(o.ephemeral_rate);
        let states = fleet.states();
        let book = fleet.ephemerals();
        let wanted_rate = ccfg.rate;
        ccfg.rate = 0.0;
        let done = Arc::new(AtomicU64::new(0));
        let mut session =
            Session::connect(w.clone(), Some(states.clone()), ccfg.clone(), done).await;
        if wanted_rate > 0.0 {
            sr.rate = wanted_rate;
            sr.rate_source = "given (--rate)".into();
        } else {
            note(&format!(
                "measuring the closed-loop maximum for {:?} (fleet registered, churning)",
                o.rate_measure
            ));
            let m = session.segment(o.rate_measure).await;
            let max = m.ok() as f64 / m.elapsed.as_secs_f64().max(1e-9);
            http_errors.merge(&m.errors);
            modes::apply_checks(&mut rep, &m);
            sr.measured_max_per_second = Some(max);
            sr.rate = (max * o.rate_share).max(1.0);
            sr.rate_source = format!(
                "{:.0}% of the closed-loop maximum, {} req/s measured over {:.1} s with {} workers",
                o.rate_share * 100.0,
                fmt_int(max as u64),
                m.elapsed.as_secs_f64(),
                ccfg.workers
            );
        }
        ccfg.rate = sr.rate;
        session.set_rate(sr.rate);
        note(&format!(
            "soak: {:?} at {}/s open loop ({}), sampled every {:?}",
            ccfg.duration,
            fmt_int(sr.rate as u64),
            sr.rate_source,
            o.sample_every
        ));

        let mut prober = Prober {
            target: ccfg.http[0].clone(),
            timeout: ccfg.http_timeout,
            metrics: Some("/metrics".into()),
            metrics_note: String::new(),
        };
        let mut check_conn = HttpConn::new(ccfg.http[0].clone());
        let mut soak_failures = Vec::new();
        if !ccfg.warmup.is_zero() {
            note(&format!("warm-up: {:?} unrecorded", ccfg.warmup));
            let warm = session.segment(ccfg.warmup).await;
            http_errors.merge(&warm.errors);
            modes::apply_checks(&mut rep, &warm);
        }
        let server_probe = pid.as_deref().map(Probe::start);
        let me = Probe::start("self");
        let machine = MachineProbe::start();
        let shared = Arc::new(fleet);
        let mut fault_tasks = Vec::new();
        let start = Instant::now();
        let mut faults = o.faults.clone();
        if let Some(at) = a.fleet.storm_at {
            faults.push(FaultSpec {
                kind: FaultKind::Storm,
                at,
            });
        }
        for f in &faults {
            let (fleet, f) = (shared.clone(), f.clone());
            fault_tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until((start + f.at).into()).await;
                run_fault(&fleet, &f, start).await
            }));
        }
        let mut before = server_now(pid.as_deref());
        let _ = shared.take_window();
        let _ = prober.gauges().await;
        let duration = ccfg.duration;
        let step = o.sample_every;
        let mut stretches: Vec<(f64, f64, u64, u64, Latency)> = Vec::new();
        let mut offset = Duration::ZERO;
        let mut last_ended;
        let mut next = {
            let d = step.min(duration);
            tokio::spawn(async move {
                let s = session.segment(d).await;
                (session, s)
            })
        };
        let progress_every = (duration.as_secs_f64() / 10.0).max(step.as_secs_f64());
        let mut last_note = 0.0;
        loop {
            let (mut session, stats) = next
                .await
                .map_err(|e| format!("consumer task failed: {e}"))?;
            last_ended = start.elapsed();
            let from = offset.as_secs_f64();
            offset += stats.elapsed;
            let more = offset < duration;
            let mut pending = None;
            if more {
                let d = step.min(duration - offset);
                pending = Some(tokio::spawn(async move {
                    let s = session.segment(d).await;
                    (session, s)
                }));
            }
            // What is read first is read at the stretch's end.
            let now = server_now(pid.as_deref());
            let tcp = shared.take_window();
            let registered_nodes = shared.registered();
            let gauges = prober.gauges().await;
            let (c, f) = soak_checks(
                &w,
                &states,
                &book,
                &mut check_conn,
                ccfg.http_timeout,
                &mut soak_failures,
            )
            .await;
            sr.soak_checks += c;
            sr.soak_checks_failed += f;
            let secs = stats.elapsed.as_secs_f64().max(1e-9);
            let lookup = &stats.latency_by_kind[0];
            let sample = Sample {
                t_s: offset.as_secs_f64(),
                seconds: secs,
                rss_kib: now.rss_kib,
                fds: now.fds,
                server_cores: now
                    .cpu_s
                    .zip(before.cpu_s)
                    .map(|(b, a)| (b - a).max(0.0) / secs),
                per_second: stats.ok() as f64 / secs,
                lookup: lookup.summary(),
                http_errors: stats.errors.total(),
                unsent: stats.unsent,
                tcp,
                registered_nodes,
                ephemeral_live: book.live_count(),
                gauges,
            };
            before = now;
            stretches.push((
                from,
                offset.as_secs_f64(),
                stats.ok(),
                stats.errors.total(),
                lookup.clone(),
            ));
            if sample.t_s - last_note >= progress_every - 1e-9 || !more {
                last_note = sample.t_s;
                note(&format!(
                    "soak {:.0}/{:.0} s: {} req/s, lookup p99 {}, RSS {}, {} fds, {} HTTP + {} TCP errors, TCP max {}",
                    sample.t_s,
                    duration.as_secs_f64(),
                    fmt_int(sample.per_second as u64),
                    fmt_us(sample.lookup.p99_us),
                    sample
                        .rss_kib
                        .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                        .unwrap_or("-".into()),
                    sample.fds.map(|f| f.to_string()).unwrap_or("-".into()),
                    sample.http_errors,
                    sample.tcp.errors,
                    fmt_us(sample.tcp.max_us)
                ));
            }
            sr.samples.push(sample);
            // A connection's count of connects is its whole life's.
            let connects = stats.connects;
            total.merge(stats);
            total.connects = connects;
            match pending {
                Some(p) => next = p,
                None => break,
            }
        }
        total.elapsed = offset;
        // Wall time to the end of the last stretch, less the stretches:
        // the time between them, when no request was scheduled.
        sr.gaps_ms = last_ended.saturating_sub(offset).as_secs_f64() * 1e3;
        let (sp, mp) = (server_probe.and_then(|p| p.finish()), me.finish());
        let ml = modes::machine_load(&machine, &sp, &mp);
        for t in fault_tasks {
            match t.await {
                Ok(r) => sr.faults.push(r),
                Err(e) => rep.problems.push(format!("fault task failed: {e}")),
            }
        }
        sr.metrics = if prober.metrics_note.is_empty() {
            "no /metrics scraped".into()
        } else {
            prober.metrics_note.clone()
        };
        sr.minutes = minute_rows(
            &stretches
                .iter()
                .map(|(a, b, c, d, l)| (*a, *b, *c, *d, l))
                .collect::<Vec<_>>(),
        );
        sr.drift = drift_report(&sr.samples, offset.as_secs_f64(), o);
        sr.churn_restarts = shared.churn_restarts();
        sr.unregister_orders = shared.unregisters_sent();
        sr.ephemeral_created = book.created.load(std::sync::atomic::Ordering::Relaxed);
        sr.ephemeral_removed = book.removed.load(std::sync::atomic::Ordering::Relaxed);
        http_errors.merge(&total.errors);
        rep.lookups = Some(modes::load_report(&ccfg, &total, sp, mp, ml));
        modes::apply_checks(&mut rep, &total);
        rep.checks.sampled += sr.soak_checks;
        rep.checks.sampled_failed += sr.soak_checks_failed;
        let room = 10usize.saturating_sub(rep.checks.failures.len());
        rep.checks
            .failures
            .extend(soak_failures.into_iter().take(room));
        plots.push((
            "lookup (server)".to_string(),
            total.latency_by_kind[0].clone(),
        ));
        fleet = match Arc::try_unwrap(shared) {
            Ok(f) => f,
            Err(_) => return Err("the fleet is still shared after the soak".into()),
        };
        fleet.stop_churn();
        modes::final_check(
            &w,
            &fleet,
            &ccfg.http[0],
            a.final_check_topics,
            ccfg.http_timeout,
            &mut rep,
        )
        .await;
    }
    let churn_restarts = fleet.churn_restarts();
    let fs = fleet.stop().await;
    modes::fleet_sections(&mut rep, &fs, a.fleet.churn, churn_restarts, &mut plots);
    if let Some(pid) = &pid {
        note("waiting for the server to finish cleaning up after the fleet");
        rep.disconnect_cleanup = modes::cleanup(pid).await;
    }
    for (k, n) in &http_errors.0 {
        sr.errors.insert(format!("http:{k}"), *n);
    }
    for (k, n) in &fs.errors.0 {
        sr.errors.insert(format!("tcp:{k}"), *n);
    }
    for l in &fs.latency {
        let s = l.summary();
        sr.tcp_over_100ms += s.over_100ms;
        sr.tcp_over_1s += s.over_1s;
        sr.tcp_max_us = sr.tcp_max_us.max(s.max_us);
    }
    soak_verdict(&mut rep, &mut sr, o);
    rep.soak = Some(sr);
    modes::verdict(&mut rep);
    Ok(Outcome { report: rep, plots })
}

/// Runs one fault at its time.
async fn run_fault(fleet: &Fleet, f: &FaultSpec, start: Instant) -> FaultRecord {
    let at_s = start.elapsed().as_secs_f64();
    match f.kind {
        FaultKind::Storm => {
            note("fault: reconnect storm, dropping every fleet connection");
            let out = fleet.storm(Duration::from_secs(300)).await;
            FaultRecord {
                kind: f.kind,
                at_s,
                outcome: match out.reregistered_after_s {
                    Some(s) => format!("whole fleet registered again after {s:.3} s"),
                    None => "the fleet did not register again within 300 s".into(),
                },
                passed: out.reregistered_after_s.is_some(),
            }
        }
    }
}

/// The soak's own pass conditions, as problems of the report.
fn soak_verdict(rep: &mut crate::report::Report, sr: &mut SoakReport, o: &SoakOpts) {
    sr.bounds = vec![
        "errors of any kind (HTTP, TCP, wrong answers): 0".into(),
        "TCP answers slower than 1 s: 0 (slower than 100 ms: counted)".into(),
        format!(
            "RSS drift (mean of the last {:.0} s against the mean of {:.0}-{:.0} s): at most +max({} MiB, {}% of the base)",
            o.drift_window.as_secs_f64(),
            o.drift_base_start.as_secs_f64(),
            (o.drift_base_start + o.drift_window).as_secs_f64(),
            o.max_rss_drift_mib,
            o.max_rss_drift_pct
        ),
        format!(
            "open descriptors drift (same windows): at most +max({}, {}% of the base)",
            o.max_fd_drift, o.max_fd_drift_pct
        ),
    ];
    if !sr.errors.is_empty() {
        rep.problems.push(format!(
            "{} errors: {:?}",
            sr.errors.values().sum::<u64>(),
            sr.errors
        ));
    }
    if sr.tcp_over_1s > 0 {
        rep.problems.push(format!(
            "{} TCP answers took over 1 s (slowest {}): nsqd would have reconnected",
            sr.tcp_over_1s,
            fmt_us(sr.tcp_max_us)
        ));
    }
    if let Some(d) = &sr.drift.rss
        && !d.within
    {
        rep.problems.push(format!(
            "RSS grew {:+.1}% ({:.1} -> {:.1} MiB), bound +{:.1} MiB (max of {} MiB and {}%)",
            d.change_pct,
            d.base_mean / 1024.0,
            d.last_mean / 1024.0,
            d.bound / 1024.0,
            o.max_rss_drift_mib,
            o.max_rss_drift_pct
        ));
    }
    if let Some(d) = &sr.drift.fds
        && !d.within
    {
        rep.problems.push(format!(
            "open descriptors grew by {:+.0} ({:.0} -> {:.0}), bound +{:.0}",
            d.change, d.base_mean, d.last_mean, d.bound
        ));
    }
    for f in &sr.faults {
        if !f.passed {
            rep.problems.push(format!(
                "fault {:?} at {:.1} s: {}",
                f.kind, f.at_s, f.outcome
            ));
        }
    }
}

/// The soak's section of the text report.
pub fn text(o: &mut String, s: &SoakReport) {
    let _ = writeln!(
        o,
        "soak: {:.0} s at {}/s open loop ({}); sampled every {:.0} s",
        s.duration_s,
        fmt_int(s.rate as u64),
        s.rate_source,
        s.sample_every_s
    );
    let _ = writeln!(
        o,
        "  fleet: {} churn restarts, {} topics taken out and back, {} ephemeral topics created, {} unregistered",
        fmt_int(s.churn_restarts),
        fmt_int(s.unregister_orders),
        fmt_int(s.ephemeral_created),
        fmt_int(s.ephemeral_removed)
    );
    let _ = writeln!(
        o,
        "  errors by kind: {}",
        if s.errors.is_empty() {
            "none".to_string()
        } else {
            format!("{:?}", s.errors)
        }
    );
    let _ = writeln!(
        o,
        "  TCP answers (every phase): {} over 100 ms, {} over 1 s, slowest {}",
        fmt_int(s.tcp_over_100ms),
        fmt_int(s.tcp_over_1s),
        fmt_us(s.tcp_max_us)
    );
    let _ = writeln!(
        o,
        "  soak checks (topics taken out, ephemeral topics): {} ({} failed); {}",
        fmt_int(s.soak_checks),
        s.soak_checks_failed,
        s.metrics
    );
    let _ = writeln!(
        o,
        "  {:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "minute", "req/s", "ok", "p50", "p99", "p99.9", "max", "errors"
    );
    for m in &s.minutes {
        let _ = writeln!(
            o,
            "  {:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
            m.minute,
            fmt_int(m.per_second as u64),
            fmt_int(m.requests_ok),
            fmt_us(m.lookup.p50_us),
            fmt_us(m.lookup.p99_us),
            fmt_us(m.lookup.p999_us),
            fmt_us(m.lookup.max_us),
            m.http_errors
        );
    }
    let _ = writeln!(
        o,
        "  {:>7} {:>10} {:>6} {:>6} {:>9} {:>9} {:>9} {:>8} {:>6} {:>9}",
        "t (s)", "RSS MiB", "fds", "cores", "req/s", "p99", "TCP ans", ">100ms", ">1s", "TCP max"
    );
    for x in &s.samples {
        let _ = writeln!(
            o,
            "  {:>7.0} {:>10} {:>6} {:>6} {:>9} {:>9} {:>9} {:>8} {:>6} {:>9}",
            x.t_s,
            x.rss_kib
                .map(|k| format!("{:.1}", k as f64 / 1024.0))
                .unwrap_or("-".into()),
            x.fds.map(|f| f.to_string()).unwrap_or("-".into()),
            x.server_cores
                .map(|c| format!("{c:.2}"))
                .unwrap_or("-".into()),
            fmt_int(x.per_second as u64),
            fmt_us(x.lookup.p99_us),
            fmt_int(x.tcp.answers),
            x.tcp.over_100ms,
            x.tcp.over_1s,
            fmt_us(x.tcp.max_us)
        );
    }
    let d = &s.drift;
    match &d.not_computed {
        Some(why) => {
            let _ = writeln!(o, "  drift: not computed: {why}");
        }
        None => {
            let _ = writeln!(
                o,
                "  drift, last {:.0}-{:.0} s against {:.0}-{:.0} s ({} and {} samples):",
                d.last_window_s.0,
                d.last_window_s.1,
                d.base_window_s.0,
                d.base_window_s.1,
                d.last_samples,
                d.base_samples
            );
            if let Some(r) = &d.rss {
                let _ = writeln!(
                    o,
                    "    RSS {:.1} -> {:.1} MiB = {:+.2}% (bound +{:.1} MiB){}",
                    r.base_mean / 1024.0,
                    r.last_mean / 1024.0,
                    r.change_pct,
                    r.bound / 1024.0,
                    if r.within { "" } else { "  OVER" }
                );
            }
            if let Some(f) = &d.fds {
                let _ = writeln!(
                    o,
                    "    descriptors {:.0} -> {:.0} = {:+.0} ({:+.2}%, bound +{:.0}){}",
                    f.base_mean,
                    f.last_mean,
                    f.change,
                    f.change_pct,
                    f.bound,
                    if f.within { "" } else { "  OVER" }
                );
            }
        }
    }
    for f in &s.faults {
        let _ = writeln!(o, "  fault {:?} at {:.1} s: {}", f.kind, f.at_s, f.outcome);
    }
    for b in &s.bounds {
        let _ = writeln!(o, "  bound: {b}");
    }
    let _ = writeln!(
        o,
        "  between stretches (no request scheduled): {:.1} ms in all",
        s.gaps_ms
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: f64, rss_kib: u64, fds: u64) -> Sample {
        Sample {
            t_s,
            rss_kib: Some(rss_kib),
            fds: Some(fds),
            ..Default::default()
        }
    }

    #[test]
    fn windows_fit_or_say_why() {
        assert_eq!(
            drift_windows(600.0, 60.0, 60.0),
            Ok(((60.0, 120.0), (540.0, 600.0)))
        );
        // The CI's one minute: 10-30 s against 40-60 s.
        assert_eq!(
            drift_windows(60.0, 10.0, 20.0),
            Ok(((10.0, 30.0), (40.0, 60.0)))
        );
        assert!(drift_windows(100.0, 60.0, 60.0).is_err());
        assert!(drift_windows(600.0, 60.0, 0.0).is_err());
    }

    fn default_opts() -> SoakOpts {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(["b", "soak"]).unwrap();
        let crate::cli::Cmd::Soak(a) = cli.cmd else {
            panic!("not soak")
        };
        a.soak
    }

    #[test]
    fn drift_of_a_flat_and_a_growing_series() {
        let o = default_opts();
        // Samples every 10 s over 10 minutes: flat RSS, growing fds.
        let samples: Vec<Sample> = (1..=60)
            .map(|i| {
                let t = i as f64 * 10.0;
                sample(
                    t,
                    100_000 + if i % 2 == 0 { 500 } else { 0 },
                    5_000 + i * 10,
                )
            })
            .collect();
        let d = drift_report(&samples, 600.0, &o);
        assert!(d.not_computed.is_none());
        // Base: samples at 70..=120 s (6), last: 550..=600 s (6).
        assert_eq!((d.base_samples, d.last_samples), (6, 6));
        let r = d.rss.unwrap();
        assert!(r.within && r.change.abs() < 1.0, "{r:?}");
        assert!((r.bound - 100_250.0 * 0.05).abs() < 1.0, "{r:?}");
        let f = d.fds.unwrap();
        // Means 5,095 and 5,575: +480, over max(50, 5% of 5,095 = 255).
        assert!((f.base_mean - 5_095.0).abs() < 1e-9, "{f:?}");
        assert!((f.change - 480.0).abs() < 1e-9, "{f:?}");
        assert!((f.bound - 254.75).abs() < 1e-9 && !f.within, "{f:?}");
        // A small fleet: the absolute bound applies.
        let f = drift(
            &[(15.0, 40.0), (45.0, 80.0)],
            (10.0, 30.0),
            (40.0, 60.0),
            |b| 50f64.max(b * 0.05),
        )
        .unwrap()
        .0;
        assert!(f.within && f.bound == 50.0, "{f:?}");
        // RSS up 6 % over 5 %, with no floor.
        let s = vec![sample(20.0, 1000, 1), sample(50.0, 1060, 1)];
        let mut o2 = o.clone();
        o2.drift_base_start = Duration::from_secs(10);
        o2.drift_window = Duration::from_secs(20);
        o2.max_rss_drift_mib = 0.0;
        let d = drift_report(&s, 60.0, &o2);
        let r = d.rss.unwrap();
        assert!(!r.within && (r.change_pct - 6.0).abs() < 1e-9, "{r:?}");
        // The same 60 KiB under the default 2 MiB floor: within.
        o2.max_rss_drift_mib = 2.0;
        let r = drift_report(&s, 60.0, &o2).rss.unwrap();
        assert!(r.within && r.bound == 2048.0, "{r:?}");
        // No server samples: said so.
        let d = drift_report(&[Sample::default()], 600.0, &o);
        assert!(d.not_computed.unwrap().contains("--server-pid"));
        // Too short.
        let d = drift_report(&samples, 100.0, &o);
        assert!(d.not_computed.unwrap().contains("too short"));
    }

    #[test]
    fn percentiles_per_minute() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        let mut c = Latency::new();
        for us in 1..=1000 {
            a.record(Duration::from_micros(us));
            b.record(Duration::from_micros(us + 1000));
            c.record(Duration::from_micros(10 * us));
        }
        // Stretches of 30 s: two in minute 1, one in minute 2.
        let rows = minute_rows(&[
            (0.0, 30.0, 1000, 0, &a),
            (30.0, 60.0, 1000, 2, &b),
            (60.0, 90.0, 1000, 0, &c),
        ]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].minute, 1);
        assert_eq!((rows[0].from_s, rows[0].to_s), (0.0, 60.0));
        assert_eq!(rows[0].requests_ok, 2000);
        assert_eq!(rows[0].http_errors, 2);
        assert!((rows[0].per_second - 2000.0 / 60.0).abs() < 1e-9);
        assert_eq!(rows[0].lookup.count, 2000);
        assert_eq!(rows[0].lookup.p50_us, 1000);
        assert_eq!(rows[0].lookup.max_us, 2000);
        assert_eq!(rows[1].minute, 2);
        // (The histogram keeps three significant digits.)
        assert!(
            rows[1].lookup.p99_us.abs_diff(9900) <= 10,
            "{}",
            rows[1].lookup.p99_us
        );
        assert!((rows[1].per_second - 1000.0 / 30.0).abs() < 1e-9);
    }

    #[test]
    fn gauges_from_an_exposition() {
        let text = "# HELP nsqlookupd_producers Producers.\n\
            # TYPE nsqlookupd_producers gauge\n\
            nsqlookupd_producers 5000\n\
            # TYPE nsqlookupd_tcp_commands counter\n\
            nsqlookupd_tcp_commands_total{command=\"PING\"} 12\n\
            # TYPE nsqlookupd_build_info gauge\n\
            nsqlookupd_build_info{version=\"1.3.0\",git_commit=\"a b\"} 1\n\
            # TYPE nsqlookupd_lookup_cache_bytes gauge\n\
            nsqlookupd_lookup_cache_bytes 1.5e6\n\
            # EOF\n";
        let g = parse_gauges(text);
        assert_eq!(g.len(), 3, "{g:?}");
        assert_eq!(g["nsqlookupd_producers"], 5000.0);
        assert_eq!(g["nsqlookupd_lookup_cache_bytes"], 1.5e6);
        assert_eq!(
            g["nsqlookupd_build_info{version=\"1.3.0\",git_commit=\"a b\"}"],
            1.0
        );
        assert!(parse_gauges("404 page not found").is_empty());
    }
}
