//! Cluster mode: what several replicas sharing state (through etcd) look
//! like from outside, measured over the public protocols only.
//!
//! * `propagation`: probe nodes of the bench's own (not the workload's
//!   fleet) take turns to `REGISTER` a fresh topic on one replica (A); the
//!   `OK` starts a clock, and another replica (B) is polled with
//!   `/lookup?topic=` until it lists the probe node; then the same for
//!   `UNREGISTER`, until B no longer lists it. Probes run one at a time, so
//!   each measures one change on its own (not a batch).
//! * `converge`: from the start of the command, a replica is polled until
//!   every topic of the workload answers with its full and correct producer
//!   set (the at-rest check of [`crate::check`]), optionally after waiting
//!   for `GET /ready`: how long a (re)started replica takes to answer for the
//!   whole fleet that other replicas hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

use crate::check::{self, Carrier};
use crate::cli::{ConvergeArgs, PropagationArgs};
use crate::consumers::spread_topics;
use crate::httpc::{HttpConn, HttpError};
use crate::modes::{Outcome, new_report, verdict};
use crate::progress::note;
use crate::report::{ConvergePoint, ConvergeReport, PropagationReport, WorkloadReport, fmt_int};
use crate::scheme::{NSQD_VERSION, Workload};
use crate::stats::{Errors, Latency, io_kind};
use crate::wire::{self, Frame, FrameBuf};

/// The identity of probe node `k`: distinct from every fleet node
/// (`node-NNNNN.bench`), so the fleet's checks never see it.
pub fn probe_identity(k: usize) -> (String, u16) {
    (
        format!("probe-{k:05}.bench"),
        30_000 + 2 * (k % 10_000) as u16,
    )
}

/// The topic of probe `j` of run `run`: unique per run, valid for NSQ
/// (at most 64 characters of `[.a-zA-Z0-9_-]`).
pub fn probe_topic(prefix: &str, run: &str, j: usize) -> String {
    format!("{prefix}-probe-{run}-{j:05}")
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Whether a `/lookup` answer (status, body) lists the producer with this
/// broadcast address and TCP port. A 404 (the topic is unknown there) lists
/// nobody; other statuses and bodies that are not a lookup answer are errors.
pub fn lists_producer(status: u16, body: &[u8], address: &str, port: u16) -> Result<bool, String> {
    #[derive(Deserialize)]
    struct Answer {
        producers: Vec<check::Peer>,
    }
    match status {
        404 => Ok(false),
        200 => {
            let a: Answer = serde_json::from_slice(body).map_err(|_| "bad_body".to_string())?;
            Ok(a.producers
                .iter()
                .any(|p| p.broadcast_address == address && p.tcp_port == port))
        }
        s => Err(format!("status_{s}")),
    }
}

/// One probe node's TCP connection to the register side.
struct ProbeNode {
    stream: TcpStream,
    frames: FrameBuf,
    limit: Duration,
}

impl ProbeNode {
    /// Connects, sends the magic and IDENTIFY as probe node `k`.
    async fn connect(addr: &str, k: usize, limit: Duration) -> Result<ProbeNode, &'static str> {
        let stream = match timeout(limit, TcpStream::connect(addr)).await {
            Err(_) => return Err("connect_timeout"),
            Ok(Err(e)) => return Err(io_kind(&e)),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let mut node = ProbeNode {
            stream,
            frames: FrameBuf::default(),
            limit,
        };
        let (address, port) = probe_identity(k);
        let body = serde_json::json!({
            "broadcast_address": address,
            "hostname": format!("probe-{k:05}"),
            "tcp_port": port,
            "http_port": port + 1,
            "version": NSQD_VERSION,
        });
        let mut out = wire::MAGIC.to_vec();
        wire::put_identify(&mut out, body.to_string().as_bytes());
        match node.exchange(&out).await? {
            (Frame::Data(d), _) if d.first() == Some(&b'{') => Ok(node),
            (Frame::Error(_), _) => Err("error_response"),
            _ => Err("bad_identify_answer"),
        }
    }

    /// Writes one command and reads its answer frame; returns it with the
    /// moment it arrived and the time it took.
    async fn exchange(&mut self, cmd: &[u8]) -> Result<(Frame, Instant), &'static str> {
        match timeout(self.limit, self.stream.write_all(cmd)).await {
            Err(_) => return Err("timeout"),
            Ok(Err(e)) => return Err(io_kind(&e)),
            Ok(Ok(())) => {}
        }
        loop {
            match self.frames.next_frame() {
                Err(_) => return Err("bad_frame"),
                Ok(Some(f)) => return Ok((f, Instant::now())),
                Ok(None) => {}
            }
            match timeout(self.limit, self.stream.read_buf(self.frames.spare(4096))).await {
                Err(_) => return Err("timeout"),
                Ok(Err(e)) => return Err(io_kind(&e)),
                Ok(Ok(0)) => return Err("closed_by_server"),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// `REGISTER`/`UNREGISTER topic`, which must be answered `OK`; returns
    /// the moment the `OK` arrived and the answer time.
    async fn command(&mut self, cmd: &[u8]) -> Result<(Instant, Duration), &'static str> {
        let sent = Instant::now();
        match self.exchange(cmd).await? {
            (Frame::Ok, at) => Ok((at, at - sent)),
            (Frame::Error(_), _) => Err("error_response"),
            _ => Err("bad_register_answer"),
        }
    }
}

/// B's side of the probes: one keep-alive connection and its tallies.
struct Poller {
    conn: HttpConn,
    /// `/lookup` requests sent.
    polls: u64,
    errors: Errors,
}

impl Poller {
    /// Polls `path` until B's answer lists the producer `who` (`listed`) or
    /// no longer does (`!listed`), or `a.probe_timeout` passes from `t0`;
    /// returns the time from `t0` to the answer that showed it.
    async fn until(
        &mut self,
        path: &str,
        (address, port): (&str, u16),
        listed: bool,
        t0: Instant,
        a: &PropagationArgs,
    ) -> Option<Duration> {
        loop {
            self.polls += 1;
            let r = self.conn.get(path, a.http_timeout).await;
            let now = Instant::now();
            match r {
                Err(e) => {
                    self.errors.add(e.kind());
                    if e == HttpError::ConnectRefused {
                        sleep(Duration::from_millis(10)).await;
                    }
                }
                Ok(r) => match lists_producer(r.status, r.body, address, port) {
                    Ok(now_listed) if now_listed == listed => return Some(now - t0),
                    Ok(_) => {}
                    Err(kind) => self.errors.add(&kind),
                },
            }
            if now - t0 > a.probe_timeout {
                return None;
            }
            if !a.poll_interval.is_zero() {
                sleep(a.poll_interval).await;
            }
        }
    }
}

/// `propagation`: REGISTER on A, seen on B; UNREGISTER on A, gone on B.
pub async fn propagation(a: PropagationArgs) -> Result<Outcome, String> {
    let run = format!(
        "{}-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        std::process::id()
    );
    let last = probe_topic(&a.topic_prefix, &run, a.probes.max(1) - 1);
    if !valid_name(&last) {
        return Err(format!(
            "probe topic {last:?} is not a valid NSQ name (shorten --topic-prefix)"
        ));
    }
    let (client, target) = a.http_client.single(&a.http_address)?;
    let mut rep = new_report("propagation", &a.output);
    rep.settings = serde_json::json!({ "propagation": a });
    rep.tcp_address = Some(a.tcp_address.clone());
    rep.http_address = Some(a.http_address.clone());
    rep.http_client = Some(client.report(std::slice::from_ref(&target)));
    let k = a.probe_nodes.max(1);
    note(&format!(
        "propagation: {} probes by {k} probe nodes, REGISTER on {} -> /lookup on {}",
        a.probes, a.tcp_address, a.http_address
    ));

    let mut errors = Errors::default();
    let mut nodes: Vec<Option<ProbeNode>> = Vec::with_capacity(k);
    for i in 0..k {
        match ProbeNode::connect(&a.tcp_address, i, a.tcp_timeout).await {
            Ok(n) => nodes.push(Some(n)),
            Err(e) => {
                errors.add(e);
                nodes.push(None);
            }
        }
    }
    if nodes.iter().all(Option::is_none) {
        return Err(format!(
            "no probe node could connect to {}: {:?}",
            a.tcp_address, errors.0
        ));
    }
    let mut b = Poller {
        conn: HttpConn::new(target),
        polls: 0,
        errors: Errors::default(),
    };
    let _ = b.conn.connect(a.http_timeout).await;

    let (mut reg, mut unreg, mut answer) = (Latency::new(), Latency::new(), Latency::new());
    let (mut reg_missed, mut unreg_missed) = (0u64, 0u64);
    let mut cmd = Vec::with_capacity(128);
    'probes: for j in 0..a.probes {
        let i = j % k;
        if nodes[i].is_none() {
            match ProbeNode::connect(&a.tcp_address, i, a.tcp_timeout).await {
                Ok(n) => nodes[i] = Some(n),
                Err(e) => {
                    errors.add(e);
                    continue;
                }
            }
        }
        let Some(node) = nodes[i].as_mut() else {
            continue;
        };
        let topic = probe_topic(&a.topic_prefix, &run, j);
        let path = format!("/lookup?topic={topic}");
        let (address, port) = probe_identity(i);
        let who = (address.as_str(), port);

        // REGISTER until B lists the node, then (unless --no-unregister)
        // UNREGISTER until it does not.
        let phases: &[bool] = if a.no_unregister {
            &[true]
        } else {
            &[true, false]
        };
        for &listed in phases {
            cmd.clear();
            if listed {
                wire::put_register(&mut cmd, &topic, None);
            } else {
                wire::put_unregister(&mut cmd, &topic, None);
            }
            let sent = match node.command(&cmd).await {
                Ok((at, took)) => {
                    answer.record(took);
                    at
                }
                Err(e) => {
                    errors.add(e);
                    nodes[i] = None;
                    continue 'probes;
                }
            };
            let (latency, missed) = if listed {
                (&mut reg, &mut reg_missed)
            } else {
                (&mut unreg, &mut unreg_missed)
            };
            match b.until(&path, who, listed, sent, &a).await {
                Some(d) => latency.record(d),
                None => *missed += 1,
            }
        }
        if !a.probe_gap.is_zero() {
            sleep(a.probe_gap).await;
        }
    }
    drop(nodes);
    errors.merge(&b.errors);

    let measured = reg.count() + reg_missed;
    if measured < a.probes as u64 {
        rep.problems.push(format!(
            "{} of {} probes could not be made (TCP errors: {:?})",
            a.probes as u64 - measured,
            a.probes,
            errors.0
        ));
    }
    if reg_missed > 0 {
        rep.problems.push(format!(
            "{reg_missed} registrations were not listed on {} within {:?}",
            a.http_address, a.probe_timeout
        ));
    }
    if unreg_missed > 0 {
        rep.problems.push(format!(
            "{unreg_missed} unregistrations were still listed on {} after {:?}",
            a.http_address, a.probe_timeout
        ));
    }
    rep.propagation = Some(PropagationReport {
        tcp_address: a.tcp_address.clone(),
        http_address: a.http_address.clone(),
        probes: a.probes,
        probe_nodes: k,
        poll_interval_s: a.poll_interval.as_secs_f64(),
        deadline_s: a.probe_timeout.as_secs_f64(),
        register: reg.summary(),
        register_missed: reg_missed,
        unregister: (!a.no_unregister).then(|| unreg.summary()),
        unregister_missed: unreg_missed,
        tcp_answer: answer.summary(),
        polls: b.polls,
        errors,
    });
    verdict(&mut rep);
    let mut plots = vec![("REGISTER -> listed".to_string(), reg)];
    if !a.no_unregister {
        plots.push(("UNREGISTER -> gone".to_string(), unreg));
    }
    Ok(Outcome { report: rep, plots })
}

/// The bookkeeping of a `converge` run: which topics were answered right
/// yet, and when (seconds from the start).
#[derive(Debug)]
pub struct Convergence {
    /// Topics not answered right yet.
    pub pending: Vec<usize>,
    pub topics: usize,
    pub first_correct_s: Option<f64>,
    /// When the last pending topic was answered right.
    pub converged_s: Option<f64>,
    pub passes: u64,
    pub timeline: Vec<ConvergePoint>,
}

/// Timeline points kept at most (every other one is dropped when full).
const MAX_TIMELINE: usize = 200;

impl Convergence {
    pub fn new(topics: Vec<usize>) -> Self {
        Convergence {
            topics: topics.len(),
            pending: topics,
            first_correct_s: None,
            converged_s: None,
            passes: 0,
            timeline: Vec::new(),
        }
    }

    /// Takes the outcome of one pass over `pending`: for each topic,
    /// `Some(s)` if its answer (arriving `s` seconds from the start) was
    /// right. `end_s` is when the pass ended.
    pub fn record_pass(&mut self, results: &[(usize, Option<f64>)], end_s: f64) {
        self.passes += 1;
        let mut right_at: Vec<f64> = Vec::new();
        let right: std::collections::HashSet<usize> = results
            .iter()
            .filter_map(|&(t, at)| {
                at.map(|s| {
                    right_at.push(s);
                    t
                })
            })
            .collect();
        if let Some(first) = right_at.iter().copied().reduce(f64::min) {
            self.first_correct_s = Some(self.first_correct_s.map_or(first, |f| f.min(first)));
        }
        self.pending.retain(|t| !right.contains(t));
        if self.pending.is_empty() && self.converged_s.is_none() {
            self.converged_s = Some(right_at.iter().copied().fold(0.0, f64::max));
        }
        if self.timeline.len() >= MAX_TIMELINE {
            let mut i = 0;
            self.timeline.retain(|_| {
                i += 1;
                i % 2 == 1
            });
        }
        self.timeline.push(ConvergePoint {
            s: end_s,
            correct: self.topics - self.pending.len(),
        });
    }
}

/// Polls `path` until the answer's status satisfies `done` (any status
/// with `|_| true`), or `end`; returns the seconds from `t0` at that answer.
async fn wait_for_status(
    conn: &mut HttpConn,
    path: &str,
    done: impl Fn(u16) -> bool,
    t0: Instant,
    end: Instant,
    a: &ConvergeArgs,
    errors: &mut Errors,
) -> Option<f64> {
    while Instant::now() < end {
        match conn.get(path, a.http_timeout).await {
            Ok(r) if done(r.status) => return Some(t0.elapsed().as_secs_f64()),
            Ok(_) => {}
            // A replica still starting refuses connections: expected.
            Err(HttpError::ConnectRefused) => {}
            Err(e) => errors.add(e.kind()),
        }
        sleep(a.poll_interval.max(Duration::from_millis(1))).await;
    }
    None
}

/// One pass over `topics` on `conns` in parallel; returns, per topic, when
/// its right answer arrived (seconds from `t0`), and the first problems.
async fn check_pass(
    w: &Arc<Workload>,
    conns: &mut Vec<HttpConn>,
    topics: &[usize],
    t0: Instant,
    http_timeout: Duration,
) -> (Vec<(usize, Option<f64>)>, Vec<String>, Errors, u64) {
    let topics = Arc::new(topics.to_vec());
    let next = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = std::mem::take(conns)
        .into_iter()
        .map(|mut conn| {
            let (w, topics, next) = (w.clone(), topics.clone(), next.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                let mut problems: Vec<String> = Vec::new();
                let mut errors = Errors::default();
                let mut sent = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&topic) = topics.get(i) else { break };
                    let carriers: Vec<Carrier> = w
                        .producers_of(topic)
                        .map(|node| Carrier {
                            node,
                            must_appear: true,
                            may_repeat: false,
                            must_not_appear: false,
                        })
                        .collect();
                    let path = format!("/lookup?topic={}", w.topic_name(topic));
                    sent += 1;
                    let found = match conn.get(&path, http_timeout).await {
                        Err(e) => {
                            errors.add(e.kind());
                            vec![format!("lookup {}: {}", w.topic_name(topic), e.kind())]
                        }
                        Ok(r) if r.status != 200 => {
                            vec![format!(
                                "lookup {}: status {}",
                                w.topic_name(topic),
                                r.status
                            )]
                        }
                        Ok(r) => check::check_lookup(&w, topic, r.body, &carriers),
                    };
                    let at = t0.elapsed().as_secs_f64();
                    if found.is_empty() {
                        out.push((topic, Some(at)));
                    } else {
                        out.push((topic, None));
                        let room = 5usize.saturating_sub(problems.len());
                        problems.extend(found.into_iter().take(room));
                    }
                }
                (out, problems, errors, sent, conn)
            })
        })
        .collect();
    let (mut results, mut problems, mut errors, mut sent) =
        (Vec::new(), Vec::new(), Errors::default(), 0);
    for h in handles {
        if let Ok((r, p, e, s, conn)) = h.await {
            results.extend(r);
            let room = 10usize.saturating_sub(problems.len());
            problems.extend(p.into_iter().take(room));
            errors.merge(&e);
            sent += s;
            conns.push(conn);
        }
    }
    (results, problems, errors, sent)
}

/// `converge`: from now until a replica answers right for the whole fleet.
pub async fn converge(a: ConvergeArgs) -> Result<Outcome, String> {
    let t0 = Instant::now();
    let end = t0 + a.converge_timeout;
    let w = Arc::new(a.workload.workload()?);
    let (client, target) = a.http_client.single(&a.http_address)?;
    let mut rep = new_report("converge", &a.output);
    rep.settings = serde_json::json!({
        "http_address": a.http_address,
        "http_client": a.http_client,
        "wait_ready": a.wait_ready,
        "converge_timeout_s": a.converge_timeout.as_secs_f64(),
        "poll_interval_s": a.poll_interval.as_secs_f64(),
        "connections": a.connections,
    });
    rep.http_address = Some(a.http_address.clone());
    rep.http_client = Some(client.report(std::slice::from_ref(&target)));
    rep.workload = Some(WorkloadReport::new(&w, a.workload.pure_preset()));
    let topics = if a.check_topics == 0 {
        (0..w.covered_topics()).collect()
    } else {
        spread_topics(&w, a.check_topics)
    };
    let mut cv = Convergence::new(topics);
    let mut errors = Errors::default();
    let mut lookups = 0u64;
    let mut conn = HttpConn::new(target.clone());

    // Up: anything answered (a replica still starting refuses connections).
    let http_up_s = wait_for_status(&mut conn, "/ping", |_| true, t0, end, &a, &mut errors).await;
    let mut ready_s = None;
    if http_up_s.is_some() && a.wait_ready {
        note(&format!("waiting for /ready on {}", a.http_address));
        ready_s =
            wait_for_status(&mut conn, "/ready", |s| s == 200, t0, end, &a, &mut errors).await;
        if ready_s.is_none() {
            rep.problems.push(format!(
                "GET /ready on {} did not answer 200 within {:?}",
                a.http_address, a.converge_timeout
            ));
        }
    }
    note(&format!(
        "checking /lookup of {} topics on {} until all are right",
        fmt_int(cv.topics as u64),
        a.http_address
    ));
    let mut conns: Vec<HttpConn> = (0..a.connections.max(1))
        .map(|_| HttpConn::new(target.clone()))
        .collect();
    let mut last_problems = Vec::new();
    while http_up_s.is_some() && !cv.pending.is_empty() && Instant::now() < end {
        let pending = cv.pending.clone();
        let (results, problems, e, sent) =
            check_pass(&w, &mut conns, &pending, t0, a.http_timeout).await;
        cv.record_pass(&results, t0.elapsed().as_secs_f64());
        errors.merge(&e);
        lookups += sent;
        last_problems = problems;
        if !cv.pending.is_empty() && !a.poll_interval.is_zero() {
            sleep(a.poll_interval).await;
        }
    }
    if http_up_s.is_none() {
        rep.problems.push(format!(
            "{} did not answer HTTP within {:?}",
            a.http_address, a.converge_timeout
        ));
    } else if cv.converged_s.is_none() {
        rep.problems.push(format!(
            "{} of {} topics were still wrong on {} after {:?}",
            cv.pending.len(),
            cv.topics,
            a.http_address,
            a.converge_timeout
        ));
        rep.checks.failures = last_problems;
    } else {
        note(&format!(
            "every topic right after {}",
            crate::report::fmt_secs(cv.converged_s.unwrap_or(0.0))
        ));
    }
    rep.checks.final_checked = cv.topics as u64;
    rep.checks.final_failed = cv.pending.len() as u64;
    rep.converge = Some(ConvergeReport {
        http_address: a.http_address.clone(),
        topics: cv.topics,
        http_up_s,
        waited_ready: a.wait_ready,
        ready_s,
        first_topic_correct_s: cv.first_correct_s,
        converged_s: cv.converged_s,
        passes: cv.passes,
        lookups,
        still_wrong: cv.pending.len(),
        errors,
        timeline: cv.timeline,
    });
    verdict(&mut rep);
    Ok(Outcome {
        report: rep,
        plots: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_names_are_valid_and_apart_from_the_fleet() {
        let t = probe_topic("bench", "1764000000-12345", 199);
        assert_eq!(t, "bench-probe-1764000000-12345-00199");
        assert!(valid_name(&t));
        assert!(!valid_name(&probe_topic(&"x".repeat(60), "1", 0)));
        let (addr, port) = probe_identity(3);
        assert_eq!((addr.as_str(), port), ("probe-00003.bench", 30_006));
        // Not a fleet node: the fleet's checker does not take it for one.
        assert_eq!(Workload::node_of_address(&addr), None);
        // And the workload's topics never look like probe topics.
        let w = Workload {
            nodes: 1,
            topics_per_node: 1,
            topic_universe: 1,
            channels: 0,
            topic_prefix: "bench".into(),
        };
        assert_eq!(w.topic_index(&t), None);
    }

    #[test]
    fn listed_or_not() {
        let body = br#"{"channels":[],"producers":[
            {"remote_address":"127.0.0.1:1","hostname":"probe-00001","broadcast_address":"probe-00001.bench",
             "tcp_port":30002,"http_port":30003,"version":"1.3.0"}]}"#;
        assert_eq!(
            lists_producer(200, body, "probe-00001.bench", 30_002),
            Ok(true)
        );
        assert_eq!(
            lists_producer(200, body, "probe-00002.bench", 30_004),
            Ok(false)
        );
        // Same address, another port: another nsqd.
        assert_eq!(lists_producer(200, body, "probe-00001.bench", 1), Ok(false));
        assert_eq!(
            lists_producer(200, br#"{"channels":[],"producers":[]}"#, "a", 1),
            Ok(false)
        );
        assert_eq!(lists_producer(404, b"TOPIC_NOT_FOUND", "a", 1), Ok(false));
        assert_eq!(lists_producer(500, b"", "a", 1), Err("status_500".into()));
        assert_eq!(lists_producer(200, b"{", "a", 1), Err("bad_body".into()));
    }

    #[test]
    fn convergence_is_when_the_last_topic_was_right() {
        let mut c = Convergence::new(vec![0, 1, 2, 3]);
        // Pass 1: topics 1 and 3 right, at 0.2 s and 0.1 s.
        c.record_pass(
            &[(0, None), (1, Some(0.2)), (2, None), (3, Some(0.1))],
            0.25,
        );
        assert_eq!(c.pending, vec![0, 2]);
        assert_eq!(c.first_correct_s, Some(0.1));
        assert_eq!(c.converged_s, None);
        // Pass 2: topic 2 right; pass 3: topic 0, the last.
        c.record_pass(&[(0, None), (2, Some(0.4))], 0.45);
        assert_eq!(c.converged_s, None);
        c.record_pass(&[(0, Some(0.6))], 0.61);
        assert!(c.pending.is_empty());
        assert_eq!(c.converged_s, Some(0.6));
        assert_eq!(c.first_correct_s, Some(0.1));
        assert_eq!(c.passes, 3);
        let correct: Vec<usize> = c.timeline.iter().map(|p| p.correct).collect();
        assert_eq!(correct, [2, 3, 4]);
        assert_eq!(c.timeline[2].s, 0.61);
        // Nothing to check: converged at the first pass.
        let mut none = Convergence::new(Vec::new());
        none.record_pass(&[], 0.01);
        assert_eq!(none.converged_s, Some(0.0));
    }

    #[test]
    fn convergence_timeline_is_thinned_not_unbounded() {
        let mut c = Convergence::new(vec![0]);
        for i in 0..1000 {
            c.record_pass(&[(0, None)], i as f64);
        }
        assert!(c.timeline.len() <= MAX_TIMELINE);
        assert!(c.timeline.len() >= MAX_TIMELINE / 2);
        assert!(c.timeline.windows(2).all(|p| p[0].s < p[1].s));
        assert_eq!(c.timeline.last().map(|p| p.s), Some(999.0));
    }
}
