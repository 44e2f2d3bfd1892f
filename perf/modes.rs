//! The subcommands: how the fleet, the consumers, the ceiling server and the
//! measurements are sequenced, and how a run's verdict is reached.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::ceiling::{self, Answers, CeilingProcess, CeilingSpec};
use crate::cli::{
    CeilingArgs, CeilingKind, CeilingOpts, ConsumersOnlyArgs, FleetArgs, FleetOnlyArgs, OutputArgs,
    RunArgs, ServeCeilingArgs,
};
use crate::consumers::{self, ConsumerConfig, ConsumerStats, GzipDecode, KINDS};
use crate::fleet::{Fleet, FleetConfig, FleetStats, NodeStates, Phase};
use crate::httpc::Target;
use crate::plot;
use crate::procstat::{self, MachineProbe, Probe, ProcDelta};
use crate::progress::{Progress, note};
use crate::report::{
    ChecksReport, CleanupReport, EncodingReport, KindEncoding, LoadReport, MachineLoad,
    RegistrationReport, Report, SteadyReport, StormReport, WorkloadReport, fmt_int,
};
use crate::scheme::Workload;
use crate::stats::Latency;
use crate::tls::Endpoint;

/// A finished run: its figures and the distributions to plot.
pub struct Outcome {
    pub report: Report,
    pub plots: Vec<(String, Latency)>,
}

/// TCP error kinds that mean the server broke the protocol (as opposed to
/// being slow or going away): they fail the run.
const PROTOCOL_ERRORS: [&str; 6] = [
    "error_response",
    "bad_frame",
    "unexpected_frame",
    "bad_identify_answer",
    "bad_register_answer",
    "bad_ping_answer",
];

/// Records which HTTP addresses the consumers ask, and how (`run`,
/// `consumers`, `soak`).
pub(crate) fn report_consumers(rep: &mut Report, ccfg: &ConsumerConfig) {
    rep.http_address = Some(ccfg.addresses_text());
    rep.http_client = Some(ccfg.client.report(&ccfg.http));
}

pub(crate) fn new_report(mode: &str, out: &OutputArgs) -> Report {
    Report {
        tool: format!("nsqlookupd-bench {}", env!("CARGO_PKG_VERSION")),
        mode: mode.into(),
        label: out.label.clone(),
        started_at_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        server_pid: out.server_pid,
        ..Default::default()
    }
}

/// Whole-machine load over a phase, with the share of other processes.
pub(crate) fn machine_load(
    p: &MachineProbe,
    server: &Option<ProcDelta>,
    me: &Option<ProcDelta>,
) -> Option<MachineLoad> {
    let m = p.finish()?;
    let ours = server.as_ref().map_or(0.0, |s| s.cores) + me.as_ref().map_or(0.0, |s| s.cores);
    Some(MachineLoad {
        cores: m.cores,
        busy_cores: m.tasks_cores + m.interrupt_cores,
        interrupt_cores: m.interrupt_cores,
        other_cores: (m.tasks_cores - ours).max(0.0),
    })
}

pub(crate) fn load_report(
    cfg: &ConsumerConfig,
    s: &ConsumerStats,
    server: Option<ProcDelta>,
    loadgen: Option<ProcDelta>,
    machine: Option<MachineLoad>,
) -> LoadReport {
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    let total_bytes: u64 = s.bytes_by_kind.iter().sum();
    LoadReport {
        http_address: cfg.addresses_text(),
        http_client: cfg.client.report(&cfg.http),
        loop_kind: if cfg.rate > 0.0 { "open" } else { "closed" }.into(),
        rate: cfg.rate,
        workers: cfg.workers,
        seconds: secs,
        requests_ok: s.ok(),
        per_second: s.ok() as f64 / secs,
        ok_by_kind: KINDS
            .iter()
            .zip(s.ok_by_kind)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.to_string(), n))
            .collect(),
        mean_body_bytes: s
            .mean_lookup_bytes()
            .or((s.ok() > 0).then(|| (total_bytes / s.ok()) as usize)),
        encoding: encoding_report(cfg, s),
        latency: s.latency.summary(),
        latency_by_kind: if s.ok_by_kind.iter().filter(|n| **n > 0).count() > 1 {
            KINDS
                .iter()
                .zip(&s.latency_by_kind)
                .zip(s.ok_by_kind)
                .filter(|(_, n)| *n > 0)
                .map(|((k, l), _)| (k.to_string(), l.summary()))
                .collect()
        } else {
            BTreeMap::new()
        },
        service_time: s.service.summary(),
        errors: s.errors.clone(),
        connects: s.connects,
        unsent: s.unsent,
        server,
        load_generator: loadgen,
        machine,
        ceiling_answers: None,
    }
}

/// The gzip and plain answers of a load and their sizes.
fn encoding_report(cfg: &ConsumerConfig, s: &ConsumerStats) -> EncodingReport {
    let kinds: Vec<usize> = (0..KINDS.len()).filter(|&k| s.ok_by_kind[k] > 0).collect();
    // The means are over /lookup answers, or over every answer when there
    // were none (as `mean_body_bytes`).
    let over: Vec<usize> = if s.ok_by_kind[0] > 0 {
        vec![0]
    } else {
        kinds.clone()
    };
    let n: u64 = over.iter().map(|&k| s.ok_by_kind[k]).sum();
    let mean = |bytes: &[u64; 4]| {
        (n > 0).then(|| over.iter().map(|&k| bytes[k]).sum::<u64>() as f64 / n as f64)
    };
    let gzip: u64 = s.gzip_by_kind.iter().sum();
    EncodingReport {
        accept_gzip: cfg.client.accept_gzip,
        gzip_decode: match cfg.gzip_decode {
            GzipDecode::All => "all",
            GzipDecode::Checked => "checked",
        }
        .into(),
        answers_gzip: gzip,
        answers_plain: s.ok() - gzip,
        wire_body_bytes_mean: mean(&s.wire_bytes_by_kind),
        content_body_bytes_mean: mean(&s.bytes_by_kind),
        by_kind: if kinds.len() > 1 {
            kinds
                .iter()
                .map(|&k| {
                    let ok = s.ok_by_kind[k];
                    (
                        KINDS[k].to_string(),
                        KindEncoding {
                            answers_gzip: s.gzip_by_kind[k],
                            answers_plain: ok - s.gzip_by_kind[k],
                            wire_body_bytes_mean: s.wire_bytes_by_kind[k] as f64 / ok as f64,
                            content_body_bytes_mean: s.bytes_by_kind[k] as f64 / ok as f64,
                        },
                    )
                })
                .collect()
        } else {
            BTreeMap::new()
        },
    }
}

/// Runs consumers with a time-based progress bar.
async fn load_with_progress(
    label: &str,
    w: Arc<Workload>,
    states: Option<Arc<NodeStates>>,
    cfg: ConsumerConfig,
) -> ConsumerStats {
    let done = Arc::new(AtomicU64::new(0));
    let d = done.clone();
    let start = Instant::now();
    let total_ms = (cfg.warmup + cfg.duration).as_millis() as u64;
    let bar = Progress::start(label, total_ms.max(1), move || {
        let el = start.elapsed();
        let n = d.load(Ordering::Relaxed);
        (
            (el.as_millis() as u64).min(total_ms),
            format!(
                "{} ok, {} req/s",
                fmt_int(n),
                fmt_int((n as f64 / el.as_secs_f64().max(1e-3)) as u64)
            ),
        )
    });
    let stats = consumers::run(w, states, cfg, done).await;
    bar.finish();
    stats
}

/// Waits `at`, drops every connection of the fleet at once, and reports
/// when it was registered again (the rest of the report is filled later).
async fn storm_after(fleet: &Fleet, at: Duration) -> StormReport {
    tokio::time::sleep(at).await;
    note("reconnect storm: dropping every connection");
    let out = fleet.storm(Duration::from_secs(300)).await;
    StormReport {
        at_s: at.as_secs_f64(),
        reregistered_after_s: out.reregistered_after_s,
        ..Default::default()
    }
}

/// Starts the fleet and waits for it to be registered; fills the
/// registration section.
pub(crate) async fn register_fleet(
    w: &Arc<Workload>,
    fa: &FleetArgs,
    cfg: FleetConfig,
    server_pid: Option<&str>,
    rep: &mut Report,
) -> (Fleet, bool) {
    note(&format!(
        "registering {} nodes, {} REGISTERs, on {}",
        w.nodes,
        fmt_int(w.total_registrations()),
        fa.tcp_address.join(",")
    ));
    let server = server_pid.map(Probe::start);
    let me = Probe::start("self");
    let machine = MachineProbe::start();
    let fleet = Fleet::start(w.clone(), cfg);
    let total = w.total_registrations();
    let progress = {
        let states = fleet.states();
        let counter = fleet.live_registrations();
        let n = w.nodes;
        Progress::start("register", total, move || {
            let registered = (0..n)
                .filter(|&i| NodeStates::is_registered(states.snapshot(i)))
                .count();
            (
                counter.load(Ordering::Relaxed),
                format!("{registered}/{n} nodes"),
            )
        })
    };
    let done = fleet.wait_all_registered(fa.register_timeout).await;
    progress.finish();
    let server = server.and_then(|p| p.finish());
    let me = me.finish();
    let machine = machine_load(&machine, &server, &me);
    let seconds = done
        .map(|d| d.as_secs_f64())
        .unwrap_or(fa.register_timeout.as_secs_f64());
    let regs = fleet.registrations_ok();
    rep.registration = Some(RegistrationReport {
        window: fa.window.max(1),
        completed: done.is_some(),
        seconds,
        registrations: regs,
        per_second: regs as f64 / seconds.max(1e-9),
        tcp_latency: Default::default(), // filled from the fleet's figures at the end
        server_cpu_us_per_registration: server
            .as_ref()
            .filter(|_| regs > 0)
            .map(|s| s.cpu_s * 1e6 / regs as f64),
        server,
        load_generator: me,
        machine,
    });
    if done.is_none() {
        rep.problems.push(format!(
            "the fleet was not registered within {:?} ({} of {} nodes)",
            fa.register_timeout,
            fleet.registered(),
            w.nodes
        ));
    } else {
        note(&format!(
            "registered in {} ({} reg/s)",
            crate::report::fmt_secs(seconds),
            fmt_int((regs as f64 / seconds.max(1e-9)) as u64)
        ));
    }
    fleet.set_phase(Phase::Steady);
    (fleet, done.is_some())
}

/// Fills the TCP sections from the fleet's merged figures.
pub(crate) fn fleet_sections(
    rep: &mut Report,
    fs: &FleetStats,
    churn: f64,
    churn_restarts: u64,
    plots: &mut Vec<(String, Latency)>,
) {
    if let Some(r) = rep.registration.as_mut() {
        r.tcp_latency = fs.latency[Phase::Register as usize].summary();
        r.registrations = fs.registrations[Phase::Register as usize];
        r.per_second = r.registrations as f64 / r.seconds.max(1e-9);
        if let Some(s) = &r.server
            && r.registrations > 0
        {
            r.server_cpu_us_per_registration = Some(s.cpu_s * 1e6 / r.registrations as f64);
        }
    }
    rep.steady = Some(SteadyReport {
        pings: fs.pings,
        tcp_latency: fs.latency[Phase::Steady as usize].summary(),
        churn_per_s: churn,
        churn_restarts,
        registrations: fs.registrations[Phase::Steady as usize],
        reregistration: fs.reregistration.summary(),
        sessions: fs.sessions,
    });
    if let Some(s) = rep.storm.as_mut() {
        s.tcp_latency = fs.latency[Phase::Storm as usize].summary();
        s.registrations = fs.registrations[Phase::Storm as usize];
    }
    rep.tcp_errors = fs.errors.clone();
    for kind in PROTOCOL_ERRORS {
        if let Some(n) = fs.errors.0.get(kind) {
            rep.problems
                .push(format!("the server broke the TCP protocol: {n} x {kind}"));
        }
    }
    for (name, phase) in [
        ("TCP registration", Phase::Register),
        ("TCP steady", Phase::Steady),
        ("TCP storm", Phase::Storm),
    ] {
        plots.push((name.into(), fs.latency[phase as usize].clone()));
    }
}

/// Checks `/lookup` for a spread of topics once the fleet is at rest.
pub(crate) async fn final_check(
    w: &Arc<Workload>,
    fleet: &Fleet,
    http: &Arc<Target>,
    topics: usize,
    timeout: Duration,
    rep: &mut Report,
) {
    if topics == 0 {
        return;
    }
    if fleet
        .wait_all_registered(Duration::from_secs(60))
        .await
        .is_none()
    {
        rep.problems
            .push("the fleet did not settle (all nodes registered) before the final check".into());
    }
    let list = consumers::spread_topics(w, topics);
    note(&format!(
        "checking /lookup of {} topics at rest on {}",
        list.len(),
        http.address
    ));
    let (checked, failed, problems) =
        consumers::verify_topics(w.clone(), fleet.states(), http, list, timeout).await;
    rep.checks.final_checked += checked;
    rep.checks.final_failed += failed;
    let room = 10usize.saturating_sub(rep.checks.failures.len());
    rep.checks.failures.extend(problems.into_iter().take(room));
}

pub(crate) fn apply_checks(rep: &mut Report, s: &ConsumerStats) {
    rep.checks.sampled += s.checks;
    rep.checks.sampled_failed += s.check_failures;
    let room = 10usize.saturating_sub(rep.checks.failures.len());
    rep.checks
        .failures
        .extend(s.failures.iter().take(room).cloned());
}

pub(crate) fn verdict(rep: &mut Report) {
    let c: &ChecksReport = &rep.checks;
    if c.sampled_failed > 0 {
        rep.problems.push(format!(
            "{} of {} answers checked under load were wrong",
            c.sampled_failed, c.sampled
        ));
    }
    if c.final_failed > 0 {
        rep.problems.push(format!(
            "{} of {} topics checked at rest were wrong",
            c.final_failed, c.final_checked
        ));
    }
    if let Some(l) = &rep.lookups
        && l.requests_ok == 0
    {
        rep.problems
            .push("no request was answered with status 200".into());
    }
    if let Some(s) = &rep.storm
        && s.reregistered_after_s.is_none()
    {
        rep.problems
            .push("the fleet did not re-register after the storm".into());
    }
    rep.passed = rep.problems.is_empty();
}

/// Waits (up to 10 minutes) for the server to go idle once the fleet has
/// disconnected: that time is a figure of its own, and the ceiling phase
/// must not share the core with a server still cleaning up.
pub(crate) async fn cleanup(pid: &str) -> Option<CleanupReport> {
    let (seconds, server_cpu_s, completed) =
        procstat::wait_idle(pid, Duration::from_secs(600)).await?;
    Some(CleanupReport {
        seconds,
        server_cpu_s,
        completed,
    })
}

/// Runs the consumer load against a ceiling server child process.
async fn ceiling_load(
    w: &Arc<Workload>,
    cfg: &ConsumerConfig,
    spec: &CeilingSpec,
    cpus: Option<&str>,
) -> Result<(LoadReport, Latency), String> {
    if spec.bodies > 1 {
        note(&format!(
            "ceiling ({}): rendering {} bodies",
            spec.kind,
            fmt_int(spec.bodies as u64)
        ));
    }
    let server = CeilingProcess::spawn(w, spec, cpus)?;
    note(&format!(
        "ceiling ({}): {} from pid {} on {}{}",
        spec.kind,
        server.answers.text(),
        server.pid,
        server.addr,
        cpus.map(|c| format!(" (cpus {c})")).unwrap_or_default()
    ));
    let mut cfg = cfg.clone();
    // Plain HTTP (the ceiling server has no TLS), with the same secret, so
    // that the requests are the same bytes.
    cfg.http = vec![cfg.client.target(&Endpoint::plain(&server.addr))?];
    cfg.check_sample = 0.0;
    let probe = Probe::start(&server.pid.to_string());
    let me = Probe::start("self");
    let machine = MachineProbe::start();
    let label = format!("ceiling ({})", spec.kind);
    let stats = load_with_progress(&label, w.clone(), None, cfg.clone()).await;
    let (sp, mp) = (probe.finish(), me.finish());
    let ml = machine_load(&machine, &sp, &mp);
    let answers = server.answers.clone();
    server.stop();
    let mut report = load_report(&cfg, &stats, sp, mp, ml);
    report.ceiling_answers = Some(answers);
    Ok((report, stats.latency))
}

/// Runs every ceiling `opts` asks for, in turn, into `rep`; returns their
/// latency plots. A ceiling that cannot start is a problem of the run.
async fn ceilings(
    w: &Arc<Workload>,
    cfg: &ConsumerConfig,
    opts: &CeilingOpts,
    rep: &mut Report,
) -> Vec<(String, Latency)> {
    let mut plots = Vec::new();
    for &kind in opts.ceiling_kind.kinds() {
        let spec = opts.spec(kind, w);
        match ceiling_load(w, cfg, &spec, opts.ceiling_cpus.as_deref()).await {
            Ok((lr, lat)) => {
                plots.push((ceiling_name(&lr), lat));
                match kind {
                    CeilingKind::Distinct => rep.ceiling_distinct = Some(lr),
                    _ => rep.ceiling = Some(lr),
                }
            }
            Err(e) => rep.problems.push(e),
        }
    }
    plots
}

/// `lookup (ceiling, 1 body)` / `lookup (ceiling, 20,000 bodies)`.
fn ceiling_name(l: &LoadReport) -> String {
    let n = l.ceiling_answers.as_ref().map_or(1, |a| a.bodies);
    format!(
        "lookup (ceiling, {} {})",
        fmt_int(n as u64),
        if n == 1 { "body" } else { "bodies" }
    )
}

/// `run`: optionally the ceiling, then the fleet, then consumers on the
/// same server while the fleet stays connected.
pub async fn run(a: RunArgs) -> Result<Outcome, String> {
    let w = Arc::new(a.workload.workload()?);
    let ccfg = a.consumers.config(0.01)?;
    let fcfg = a.fleet.config()?;
    let mut rep = new_report("run", &a.output);
    rep.settings = serde_json::json!({
        "fleet": a.fleet,
        "consumers": a.consumers,
        "ceiling": a.ceiling,
        "ceiling_opts": a.ceiling_opts,
    });
    rep.tcp_address = Some(a.fleet.tcp_address.join(","));
    report_consumers(&mut rep, &ccfg);
    rep.workload = Some(WorkloadReport::new(&w, a.workload.pure_preset()));
    let mut plots = Vec::new();
    let pid = a.output.server_pid.map(|p| p.to_string());

    // The ceilings go first, while the machine holds nothing else: after
    // a large fleet the server sits on gigabytes that it may still be
    // releasing. Their bodies are real /lookup answers of this workload
    // (the size a conforming server's has), one, then one per topic.
    let mut ceiling_plots = Vec::new();
    if a.ceiling {
        ceiling_plots = ceilings(&w, &ccfg, &a.ceiling_opts, &mut rep).await;
    }

    let (mut fleet, registered) =
        register_fleet(&w, &a.fleet, fcfg, pid.as_deref(), &mut rep).await;
    if registered {
        fleet.start_churn(a.fleet.churn);
        note(&format!(
            "consumers: {} workers, {}, {:?}{}",
            ccfg.workers,
            if ccfg.rate > 0.0 {
                format!("open loop at {}/s", fmt_int(ccfg.rate as u64))
            } else {
                "closed loop".into()
            },
            ccfg.duration,
            if ccfg.warmup.is_zero() {
                String::new()
            } else {
                format!(" after {:?} of unrecorded warm-up", ccfg.warmup)
            }
        ));
        let server = pid.as_deref().map(Probe::start);
        let me = Probe::start("self");
        let machine = MachineProbe::start();
        let load = tokio::spawn(load_with_progress(
            "lookups",
            w.clone(),
            Some(fleet.states()),
            ccfg.clone(),
        ));
        if let Some(at) = a.fleet.storm_at {
            rep.storm = Some(storm_after(&fleet, at).await);
        }
        let stats = load
            .await
            .map_err(|e| format!("consumer task failed: {e}"))?;
        let (sp, mp) = (server.and_then(|p| p.finish()), me.finish());
        let ml = machine_load(&machine, &sp, &mp);
        rep.lookups = Some(load_report(&ccfg, &stats, sp, mp, ml));
        apply_checks(&mut rep, &stats);
        plots.push(("lookup (server)".to_string(), stats.latency.clone()));
        fleet.stop_churn();
        // Every replica asked must give the right answers at rest.
        for http in &ccfg.http {
            final_check(
                &w,
                &fleet,
                http,
                a.final_check_topics,
                ccfg.http_timeout,
                &mut rep,
            )
            .await;
        }
    }
    let churn_restarts = fleet.churn_restarts();
    let fs = fleet.stop().await;
    fleet_sections(&mut rep, &fs, a.fleet.churn, churn_restarts, &mut plots);
    if let Some(pid) = &pid {
        note("waiting for the server to finish cleaning up after the fleet");
        rep.disconnect_cleanup = cleanup(pid).await;
    }

    plots.extend(ceiling_plots);
    verdict(&mut rep);
    Ok(Outcome { report: rep, plots })
}

/// Ctrl-C or SIGTERM: ends a `fleet` early, with its report. SIGTERM too,
/// because a script's background job ignores SIGINT (perf/cluster.sh).
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `fleet`: register, hold, optionally verify.
pub async fn fleet_only(a: FleetOnlyArgs) -> Result<Outcome, String> {
    let w = Arc::new(a.workload.workload()?);
    let fcfg = a.fleet.config()?;
    let verify = a
        .verify_http
        .as_deref()
        .map(|h| a.http_client.single(h))
        .transpose()?;
    let mut rep = new_report("fleet", &a.output);
    rep.settings = serde_json::json!({
        "fleet": a.fleet,
        "duration_s": a.duration.as_secs_f64(),
        "http_client": a.http_client,
    });
    rep.tcp_address = Some(a.fleet.tcp_address.join(","));
    rep.http_address = a.verify_http.clone();
    rep.http_client = verify
        .as_ref()
        .map(|(c, t)| c.report(std::slice::from_ref(t)));
    rep.workload = Some(WorkloadReport::new(&w, a.workload.pure_preset()));
    let mut plots = Vec::new();
    let pid = a.output.server_pid.map(|p| p.to_string());
    let (mut fleet, registered) =
        register_fleet(&w, &a.fleet, fcfg, pid.as_deref(), &mut rep).await;
    if registered {
        fleet.start_churn(a.fleet.churn);
        note(&format!("holding the fleet for {:?}", a.duration));
        let end = Instant::now() + a.duration;
        if let Some(at) = a.fleet.storm_at {
            rep.storm = Some(storm_after(&fleet, at).await);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(end.into()) => {}
            _ = stop_signal() => note("interrupted"),
        }
        fleet.stop_churn();
        if let Some((_, http)) = &verify {
            final_check(
                &w,
                &fleet,
                http,
                a.final_check_topics,
                Duration::from_secs(10),
                &mut rep,
            )
            .await;
        }
    }
    let churn_restarts = fleet.churn_restarts();
    let fs = fleet.stop().await;
    fleet_sections(&mut rep, &fs, a.fleet.churn, churn_restarts, &mut plots);
    if let Some(pid) = &pid {
        rep.disconnect_cleanup = cleanup(pid).await;
    }
    verdict(&mut rep);
    Ok(Outcome { report: rep, plots })
}

/// `consumers`: HTTP load only; checks assume the fleet is registered
/// elsewhere with the same workload options.
pub async fn consumers_only(a: ConsumersOnlyArgs) -> Result<Outcome, String> {
    let w = Arc::new(a.workload.workload()?);
    let cfg = a.consumers.config(0.0)?;
    let mut rep = new_report("consumers", &a.output);
    rep.settings = serde_json::json!({"consumers": a.consumers});
    report_consumers(&mut rep, &cfg);
    rep.workload = Some(WorkloadReport::new(&w, a.workload.pure_preset()));
    let states = (cfg.check_sample > 0.0).then(|| Arc::new(NodeStates::all_registered(w.nodes)));
    let pid = a.output.server_pid.map(|p| p.to_string());
    let server = pid.as_deref().map(Probe::start);
    let me = Probe::start("self");
    let machine = MachineProbe::start();
    let stats = load_with_progress("lookups", w.clone(), states, cfg.clone()).await;
    let (sp, mp) = (server.and_then(|p| p.finish()), me.finish());
    let ml = machine_load(&machine, &sp, &mp);
    rep.lookups = Some(load_report(&cfg, &stats, sp, mp, ml));
    apply_checks(&mut rep, &stats);
    verdict(&mut rep);
    Ok(Outcome {
        report: rep,
        plots: vec![("lookup (server)".into(), stats.latency)],
    })
}

/// `ceiling`: consumers against the built-in server (single body, then
/// distinct bodies, as --ceiling-kind says), or just serve it.
pub async fn ceiling(a: CeilingArgs) -> Result<Outcome, String> {
    let w = Arc::new(a.workload.workload()?);
    if let Some(addr) = &a.serve {
        let kind = match a.ceiling_opts.ceiling_kind {
            CeilingKind::Distinct => CeilingKind::Distinct,
            _ => CeilingKind::Single,
        };
        let spec = a.ceiling_opts.spec(kind, &w);
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("binding {addr}: {e}"))?;
        let answers = Answers::render(&w, &spec);
        note(&format!(
            "serving {} on {}",
            answers.summary.text(),
            l.local_addr().map(|a| a.to_string()).unwrap_or_default()
        ));
        tokio::select! {
            _ = ceiling::serve(l, Arc::new(answers)) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        return Err("ceiling server stopped".into());
    }
    let cfg = a.consumers.config(0.0)?;
    let mut rep = new_report("ceiling", &a.output);
    rep.settings = serde_json::json!({"consumers": a.consumers, "ceiling_opts": a.ceiling_opts});
    rep.workload = Some(WorkloadReport::new(&w, a.workload.pure_preset()));
    let plots = ceilings(&w, &cfg, &a.ceiling_opts, &mut rep).await;
    if rep.ceiling.is_none() && rep.ceiling_distinct.is_none() {
        return Err(rep.problems.join("; "));
    }
    verdict(&mut rep);
    Ok(Outcome { report: rep, plots })
}

/// The hidden `serve-ceiling` child: renders its answers, says what they
/// are and where it listens (one line each), and serves until killed.
pub async fn serve_ceiling(a: ServeCeilingArgs) -> Result<(), String> {
    let w = a.workload.workload()?;
    let spec = CeilingSpec {
        kind: a.kind.name(),
        bodies: a.bodies.max(1),
        body_size: a.body_size,
        gzip_level: a.gzip_level,
        gzip_min_size: a.gzip_min_size,
    };
    let l = tokio::net::TcpListener::bind(&a.listen)
        .await
        .map_err(|e| format!("binding {}: {e}", a.listen))?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let answers = Answers::render(&w, &spec);
    {
        use std::io::Write;
        let summary = serde_json::to_string(&answers.summary).map_err(|e| e.to_string())?;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "answers {summary}");
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
    }
    ceiling::serve(l, Arc::new(answers)).await;
    Ok(())
}

/// Prints the table and writes the requested files.
pub fn finish(o: &Outcome, out: &OutputArgs) -> Result<(), String> {
    print!("{}", o.report.table());
    if let Some(path) = &out.json {
        let text = serde_json::to_string_pretty(&o.report).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("writing {path}: {e}"))?;
        note(&format!("figures written to {path}"));
    }
    if let (Some(path), Some(soak)) = (&out.plot, &o.report.soak) {
        match plot::write_soak_svg(path, &plot_title(o), soak) {
            Ok(()) => note(&format!("RSS and p99 over time written to {path}")),
            Err(e) => note(&format!("no plot: {e}")),
        }
    } else if let Some(path) = &out.plot {
        let series: Vec<(String, &Latency)> = o.plots.iter().map(|(n, l)| (n.clone(), l)).collect();
        let title = plot_title(o);
        match plot::write_svg(path, &title, &series) {
            Ok(()) => note(&format!("latency plot written to {path}")),
            Err(e) => note(&format!("no plot: {e}")),
        }
    }
    Ok(())
}

fn plot_title(o: &Outcome) -> String {
    format!(
        "nsqlookupd-bench {}{}",
        o.report.mode,
        o.report
            .label
            .as_deref()
            .map(|l| format!(" - {l}"))
            .unwrap_or_default()
    )
}
