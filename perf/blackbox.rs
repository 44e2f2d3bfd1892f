//! End-to-end tests: the bench's own modes against this project's real
//! server, started in-process on ephemeral ports. They exercise the whole
//! path (fleet, churn, storm, consumers, checks) for a few seconds, and
//! show that the checker fails a server whose answers do not match.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use nsqlookupd::config::{self, Parsed};
use nsqlookupd::server::Server;
use tokio::sync::oneshot;

use crate::cli::{Cli, Cmd};
use crate::modes;
use crate::report::Report;

/// A running server and the means to stop it.
struct Running {
    tcp: SocketAddr,
    http: SocketAddr,
    registry: Arc<nsqlookupd::registry::Registry>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start_server() -> Running {
    start_server_with(&[]).await
}

/// The server, with `extra` options after the ephemeral addresses.
async fn start_server_with(extra: &[&str]) -> Running {
    let mut args = vec![
        "nsqlookupd",
        "--tcp-address=127.0.0.1:0",
        "--http-address=127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let Ok(Parsed::Run { options, .. }) = config::parse_args(args) else {
        panic!("the server's command line was refused");
    };
    let server = Server::bind(*options).await.expect("server binds");
    let (tcp, http) = (
        server.tcp_addr(),
        server.http_addr().expect("plain HTTP is on"),
    );
    let registry = Arc::clone(server.registry());
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async move {
        let _ = rx.await;
    }));
    Running {
        tcp,
        http,
        registry,
        stop,
        task,
    }
}

/// Waits (at most 20 s) until `servers` hold, together, every registration
/// of a fleet's workload `w` (a `client` one per node, then its topics and
/// channels): the fleet is registered, and holds for its `--duration`.
async fn registered(servers: &[&Running], w: &crate::scheme::Workload) {
    let want = w.nodes + w.total_registrations() as usize;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let held: usize = servers
            .iter()
            .map(|s| {
                s.registry
                    .counts()
                    .registrations
                    .load(std::sync::atomic::Ordering::Relaxed) as usize
            })
            .sum();
        if held >= want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fleet did not register within 20 s: {held} of {want} registrations"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

impl Running {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

fn cli(args: &[&str]) -> Cmd {
    let mut all = vec!["nsqlookupd-bench"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all).expect("valid bench arguments").cmd
}

/// `nsqlookupd-bench run ARGS`: its report.
async fn run_report(args: &[&str]) -> Report {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    let Cmd::Run(args) = cli(&all) else {
        unreachable!()
    };
    modes::run(args).await.expect("run completes").report
}

/// `nsqlookupd-bench consumers ARGS`: its report.
async fn consumers_report(args: &[&str]) -> Report {
    let mut all = vec!["consumers"];
    all.extend_from_slice(args);
    let Cmd::Consumers(args) = cli(&all) else {
        unreachable!()
    };
    modes::consumers_only(args)
        .await
        .expect("consumers complete")
        .report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_churn_and_storm_passes_its_checks() {
    let srv = start_server().await;
    let (tcp, http) = (srv.tcp.to_string(), srv.http.to_string());
    let r = run_report(&[
        "--tcp-address",
        &tcp,
        "--http-address",
        &http,
        "--duration",
        "3s",
        "--workers",
        "4",
        "--churn",
        "0.3",
        "--storm-at",
        "1s",
        "--ping-interval",
        "300ms",
        "--check-sample",
        "0.5",
        "--nodes-pct",
        "5",
        "--topics-pct",
        "5",
        "--channels-pct",
        "5",
    ])
    .await;
    assert!(r.passed, "{}", r.table());
    assert!(r.checks.sampled > 100, "{}", r.table());
    assert_eq!(r.checks.final_checked, 20);
    assert_eq!(r.registration.as_ref().map(|g| g.registrations), Some(300));
    assert!(
        r.storm
            .as_ref()
            .is_some_and(|s| s.reregistered_after_s.is_some())
    );
    assert!(
        r.steady
            .as_ref()
            .is_some_and(|s| s.churn_restarts > 0 && s.pings > 0)
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_do_not_match_the_fleet_fail_the_run() {
    let srv = start_server().await;
    let (tcp, http) = (srv.tcp.to_string(), srv.http.to_string());
    // A 10-node fleet is registered...
    let Cmd::Fleet(fleet) = cli(&["fleet", "--tcp-address", &tcp, "--duration", "3s"]) else {
        unreachable!()
    };
    let w = fleet.workload.workload().expect("the fleet's workload");
    let fleet = tokio::spawn(modes::fleet_only(fleet));
    registered(&[&srv], &w).await;
    // ...but the consumers expect 9 nodes: node 9's producers are "unexpected".
    let r = consumers_report(&[
        "--http-address",
        &http,
        "--nodes",
        "9",
        "--duration",
        "1s",
        "--workers",
        "2",
        "--check-sample",
        "1",
    ])
    .await;
    assert!(!r.passed);
    assert!(r.checks.sampled_failed > 0);
    assert!(
        r.checks
            .failures
            .iter()
            .any(|f| f.contains("node-00009.bench"))
    );
    let fleet = fleet.await.expect("fleet task").expect("fleet completes");
    assert!(fleet.report.passed, "{}", fleet.report.table());
    srv.shutdown().await;
}

/// `consumers --accept-gzip` against the real server: whatever it
/// answers, gzip or plain (at `small` every answer is under the 1 KiB a
/// server compresses from), every answer is checked as without the option,
/// and the run passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_asking_for_gzip_check_the_servers_answers() {
    let srv = start_server().await;
    let (tcp, http) = (srv.tcp.to_string(), srv.http.to_string());
    let Cmd::Fleet(fleet) = cli(&["fleet", "--tcp-address", &tcp, "--duration", "3s"]) else {
        unreachable!()
    };
    let w = fleet.workload.workload().expect("the fleet's workload");
    let fleet = tokio::spawn(modes::fleet_only(fleet));
    registered(&[&srv], &w).await;
    let Cmd::Consumers(cons) = cli(&[
        "consumers",
        "--http-address",
        &http,
        "--accept-gzip",
        "--duration",
        "1s",
        "--workers",
        "2",
        "--check-sample",
        "1",
    ]) else {
        unreachable!()
    };
    let out = modes::consumers_only(cons)
        .await
        .expect("consumers complete");
    let r = &out.report;
    assert!(r.passed, "{}", r.table());
    let l = r.lookups.as_ref().expect("lookups");
    assert_eq!(l.errors.total(), 0, "{}", r.table());
    assert!(r.checks.sampled > 20 && r.checks.sampled == l.requests_ok);
    let e = &l.encoding;
    assert!(e.accept_gzip);
    assert_eq!(e.answers_gzip + e.answers_plain, l.requests_ok);
    assert!(e.wire_body_bytes_mean.unwrap() > 0.0);
    assert!(
        r.table()
            .contains("encoding: Accept-Encoding: gzip (inflated: all)")
    );
    assert!(r.table().contains("Accept-Encoding: gzip"), "{}", r.table());
    let fleet = fleet.await.expect("fleet task").expect("fleet completes");
    assert!(fleet.report.passed, "{}", fleet.report.table());
    srv.shutdown().await;
}

/// The distinct-body ceiling (in-process: the `serve-ceiling` child is
/// this binary's own code) loaded by `consumers --accept-gzip` with every
/// answer checked: each request gets its topic's real answer, gzip, which
/// is inflated and found right, and counted as compressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_check_the_distinct_ceilings_gzip_answers() {
    use crate::ceiling::{self, Answers, CeilingSpec};
    let Cmd::Consumers(probe) = cli(&["consumers"]) else {
        unreachable!()
    };
    let w = probe.workload.workload().unwrap();
    // Small's answers (~1 KB) are under the server's 1 KiB threshold:
    // compress every one here.
    let spec = CeilingSpec {
        kind: "distinct",
        bodies: w.covered_topics(),
        body_size: None,
        gzip_level: 1,
        gzip_min_size: 0,
    };
    let answers = Arc::new(Answers::render(&w, &spec));
    assert_eq!(answers.summary.gzip_bodies, 20);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(ceiling::serve(l, answers.clone()));
    let load = |extra: &[&str]| {
        let mut args = vec![
            "consumers",
            "--http-address",
            &addr,
            "--duration",
            "700ms",
            "--workers",
            "2",
        ];
        args.extend_from_slice(extra);
        let Cmd::Consumers(c) = cli(&args) else {
            unreachable!()
        };
        modes::consumers_only(c)
    };
    let mean_body = (0..20).map(|t| w.lookup_answer_size(t)).sum::<usize>() as f64 / 20.0;

    let out = load(&["--accept-gzip", "--check-sample", "1"])
        .await
        .unwrap();
    let r = &out.report;
    assert!(r.passed, "{}", r.table());
    let l = r.lookups.as_ref().unwrap();
    assert_eq!(l.errors.total(), 0, "{}", r.table());
    assert!(l.requests_ok > 50, "{}", r.table());
    assert_eq!(r.checks.sampled, l.requests_ok);
    let e = &l.encoding;
    assert_eq!((e.answers_gzip, e.answers_plain), (l.requests_ok, 0));
    let (wire, content) = (
        e.wire_body_bytes_mean.unwrap(),
        e.content_body_bytes_mean.unwrap(),
    );
    assert!(wire * 2.0 < content, "{wire} vs {content}");
    assert!(
        (content - mean_body).abs() < 2.0,
        "{content} vs {mean_body}"
    );
    let t = r.table();
    assert!(
        t.contains(&format!(
            "{} answers gzip, 0 plain",
            crate::report::fmt_int(l.requests_ok)
        )),
        "{t}"
    );

    // Only the sampled ones inflated: the others still counted as gzip,
    // with the content size their trailers state.
    let out = load(&[
        "--accept-gzip",
        "--gzip-decode",
        "checked",
        "--check-sample",
        "0.1",
    ])
    .await
    .unwrap();
    let r = &out.report;
    assert!(r.passed, "{}", r.table());
    let l = r.lookups.as_ref().unwrap();
    assert!(r.checks.sampled > 0 && r.checks.sampled < l.requests_ok);
    assert_eq!(l.encoding.answers_gzip, l.requests_ok);
    assert_eq!(l.encoding.gzip_decode, "checked");
    assert!((l.encoding.content_body_bytes_mean.unwrap() - mean_body).abs() < 2.0);

    // Not asked: plain answers, of the same content.
    let out = load(&["--check-sample", "1"]).await.unwrap();
    let r = &out.report;
    assert!(r.passed, "{}", r.table());
    let e = &r.lookups.as_ref().unwrap().encoding;
    assert!(!e.accept_gzip && e.answers_gzip == 0 && e.answers_plain > 50);
    assert_eq!(e.wire_body_bytes_mean, e.content_body_bytes_mean);
}

/// `run --accept-gzip` against the real server told to compress every
/// answer (`--http-compression-min-size=1`; by default small's 1 KB answers
/// stay plain): the sampled answers under load and the topics at rest are
/// inflated and found right, and every answer is counted as compressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_inflates_and_checks_the_servers_gzip_answers() {
    let srv = start_server_with(&["--http-compression-min-size=1"]).await;
    let (tcp, http) = (srv.tcp.to_string(), srv.http.to_string());
    let r = run_report(&[
        "--tcp-address",
        &tcp,
        "--http-address",
        &http,
        "--accept-gzip",
        "--duration",
        "1s",
        "--workers",
        "2",
        "--check-sample",
        "1",
        "--channels-pct",
        "10",
    ])
    .await;
    assert!(r.passed, "{}", r.table());
    assert_eq!((r.checks.final_checked, r.checks.final_failed), (20, 0));
    let l = r.lookups.as_ref().expect("lookups");
    assert_eq!(l.errors.total(), 0, "{}", r.table());
    assert!(r.checks.sampled > 20 && r.checks.sampled == l.requests_ok);
    let e = &l.encoding;
    // /lookup and /channels alike, but the first gzip reader of each
    // topic's /lookup answer since it changed (the fleet registered it)
    // gets it plain: the server compresses it for the second (each of
    // the 2 workers may be a first reader, or arrive while the other's
    // answer is being compressed).
    let topics = r.workload.as_ref().expect("workload").registered_topics as u64;
    assert_eq!(e.answers_gzip + e.answers_plain, l.requests_ok);
    assert!(e.answers_plain <= 2 * topics, "{}", r.table());
    assert!(e.answers_gzip > e.answers_plain, "{}", r.table());
    assert_eq!(e.by_kind.len(), 2);
    let (wire, content) = (
        e.wire_body_bytes_mean.unwrap(),
        e.content_body_bytes_mean.unwrap(),
    );
    assert!(wire * 2.0 < content, "{wire} vs {content}");
    assert_eq!(l.mean_body_bytes, Some(content as usize));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_spreads_over_several_servers() {
    let (s1, s2) = (start_server().await, start_server().await);
    let tcp = format!("{},{}", s1.tcp, s2.tcp);
    let Cmd::Fleet(fleet) = cli(&["fleet", "--tcp-address", &tcp, "--duration", "1s"]) else {
        unreachable!()
    };
    let w = fleet.workload.workload().expect("the fleet's workload");
    let fleet = tokio::spawn(modes::fleet_only(fleet));
    registered(&[&s1, &s2], &w).await;
    // Nodes 0, 2, ... on the first server, 1, 3, ... on the second.
    for (srv, first) in [(&s1, 0usize), (&s2, 1)] {
        let mut c = crate::httpc::HttpConn::plain(&srv.http.to_string());
        let r = c
            .get("/nodes", std::time::Duration::from_secs(5))
            .await
            .expect("/nodes answers");
        let v: serde_json::Value = serde_json::from_slice(r.body).unwrap();
        let mut got: Vec<String> = v["producers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["broadcast_address"].as_str().unwrap().to_string())
            .collect();
        got.sort();
        let want: Vec<String> = (first..10)
            .step_by(2)
            .map(|n| crate::scheme::Workload::identity(n).broadcast_address)
            .collect();
        assert_eq!(got, want);
    }
    let fleet = fleet.await.expect("fleet task").expect("fleet completes");
    assert!(fleet.report.passed, "{}", fleet.report.table());
    s1.shutdown().await;
    s2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converge_and_propagation_on_one_server() {
    let srv = start_server().await;
    let (tcp, http) = (srv.tcp.to_string(), srv.http.to_string());
    // Watched from before the fleet registers: converges once it has.
    let Cmd::Converge(conv) = cli(&[
        "converge",
        "--http-address",
        &http,
        "--converge-timeout",
        "20s",
    ]) else {
        unreachable!()
    };
    let conv = tokio::spawn(crate::cluster::converge(conv));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let Cmd::Fleet(fleet) = cli(&["fleet", "--tcp-address", &tcp, "--duration", "3s"]) else {
        unreachable!()
    };
    let fleet = tokio::spawn(modes::fleet_only(fleet));
    let out = conv.await.expect("converge task").expect("converge runs");
    let r = &out.report;
    assert!(r.passed, "{}", r.table());
    let c = r.converge.as_ref().expect("converge section");
    assert_eq!((c.topics, c.still_wrong), (20, 0));
    assert!(c.converged_s.unwrap() >= c.first_topic_correct_s.unwrap());
    assert!(c.passes > 1, "it was watched before the fleet registered");

    // A workload the fleet does not match never converges, and says so.
    let Cmd::Converge(wrong) = cli(&[
        "converge",
        "--http-address",
        &http,
        "--nodes",
        "11",
        "--converge-timeout",
        "500ms",
    ]) else {
        unreachable!()
    };
    let out = crate::cluster::converge(wrong)
        .await
        .expect("converge runs");
    assert!(!out.report.passed);
    assert!(out.report.converge.as_ref().unwrap().still_wrong > 0);
    // A standalone server has no /ready.
    let Cmd::Converge(ready) = cli(&[
        "converge",
        "--http-address",
        &http,
        "--wait-ready",
        "--converge-timeout",
        "300ms",
    ]) else {
        unreachable!()
    };
    let out = crate::cluster::converge(ready)
        .await
        .expect("converge runs");
    assert!(!out.report.passed);
    assert!(out.report.problems.iter().any(|p| p.contains("/ready")));

    // Propagation from a server to itself: every probe seen, both ways.
    let Cmd::Propagation(p) = cli(&[
        "propagation",
        "--tcp-address",
        &tcp,
        "--http-address",
        &http,
        "--probes",
        "20",
        "--probe-nodes",
        "3",
        "--probe-gap",
        "0s",
    ]) else {
        unreachable!()
    };
    let out = crate::cluster::propagation(p)
        .await
        .expect("propagation runs");
    let r = &out.report;
    assert!(r.passed, "{}", r.table());
    let p = r.propagation.as_ref().expect("propagation section");
    assert_eq!(p.register.count, 20);
    assert_eq!(p.unregister.as_ref().map(|u| u.count), Some(20));
    assert_eq!((p.register_missed, p.unregister_missed), (0, 0));
    assert_eq!(p.tcp_answer.count, 40);
    assert!(r.table().contains("REGISTER -> listed"));

    let fleet = fleet.await.expect("fleet task").expect("fleet completes");
    assert!(fleet.report.passed, "{}", fleet.report.table());
    srv.shutdown().await;
}

/// `run` over https: the real server behind a TLS-terminating proxy (it
/// does not speak TLS itself), the CA given as a file, a Bearer secret;
/// the answers are checked under load and at rest exactly as over http.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_over_https_passes_its_checks() {
    let srv = start_server().await;
    let pki = crate::testtls::Pki::generate();
    let (proxy, sessions) = crate::testtls::tls_proxy(pki.server_config(false), srv.http).await;
    let (tcp, https) = (srv.tcp.to_string(), format!("https://{proxy}"));
    let r = run_report(&[
        "--tcp-address",
        &tcp,
        "--http-address",
        &https,
        "--http-ca-file",
        pki.ca_file.to_str().unwrap(),
        "--auth-secret",
        "bench-secret",
        "--duration",
        "1s",
        "--workers",
        "3",
        "--check-sample",
        "0.5",
    ])
    .await;
    assert!(r.passed, "{}", r.table());
    assert!(r.checks.sampled > 20, "{}", r.table());
    assert_eq!((r.checks.final_checked, r.checks.final_failed), (20, 0));
    let l = r.lookups.as_ref().expect("lookups");
    assert_eq!(l.errors.total(), 0, "{}", r.table());
    // Keep-alive over TLS: one session per worker for the whole load, and
    // at most 4 more for the check at rest (one per checking connection).
    assert_eq!(l.connects, 3, "{}", r.table());
    let tls_sessions = sessions.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (4..=3 + 4).contains(&tls_sessions),
        "{tls_sessions} TLS sessions"
    );
    assert!(l.requests_ok > 20, "{}", r.table());
    assert_eq!(l.http_client.scheme, "https");
    assert!(l.http_client.auth_secret_sent);
    let t = r.table();
    assert!(t.contains(&format!(
        "HTTP: {https} over https (server verified against CA file"
    )));
    assert!(t.contains("3 connects; https, Bearer secret sent"), "{t}");
    let json = serde_json::to_string(&r).unwrap();
    assert!(
        !json.contains("bench-secret"),
        "the secret leaked into the JSON"
    );
    srv.shutdown().await;
}

/// `consumers` against a fixed-answer TLS server that requires a client
/// certificate: every request arrives on a kept-alive session, with the
/// Bearer secret read from a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_over_mutual_tls_send_the_bearer_secret() {
    let pki = crate::testtls::Pki::generate();
    let body: &'static [u8] = br#"{"channels":["c0"],"producers":[]}"#;
    let srv = crate::testtls::FixedServer::start(pki.server_config(true), body).await;
    let secret = pki.dir.path().join("secret");
    std::fs::write(&secret, "file-secret\n").unwrap();
    let https = format!("https://{}", srv.addr);
    let r = consumers_report(&[
        "--http-address",
        &https,
        "--http-ca-file",
        pki.ca_file.to_str().unwrap(),
        "--http-client-cert",
        pki.client_cert_file.to_str().unwrap(),
        "--http-client-key",
        pki.client_key_file.to_str().unwrap(),
        "--auth-secret-file",
        secret.to_str().unwrap(),
        "--duration",
        "500ms",
        "--workers",
        "2",
    ])
    .await;
    assert!(r.passed, "{}", r.table());
    let l = r.lookups.as_ref().expect("lookups");
    assert!(l.requests_ok > 10, "{}", r.table());
    assert_eq!(l.errors.total(), 0, "{}", r.table());
    assert_eq!(l.mean_body_bytes, Some(body.len()));
    assert_eq!(srv.sessions.load(std::sync::atomic::Ordering::Relaxed), 2);
    let heads = srv.heads();
    assert_eq!(heads.len() as u64, l.requests_ok);
    let bad = heads.iter().find(|h| {
        !h.starts_with("GET /lookup?topic=bench.t")
            || !h
                .split("\r\n")
                .any(|l| l == "Authorization: Bearer file-secret")
    });
    assert_eq!(bad, None);
    let h = r.http_client.as_ref().expect("http client section");
    assert!(h.client_certificate && h.auth_secret_sent);
    assert_eq!(h.scheme, "https");

    // Without the client certificate the server refuses every connection,
    // and the run fails with TLS errors, not with a hang.
    let r = consumers_report(&[
        "--http-address",
        &https,
        "--http-ca-file",
        pki.ca_file.to_str().unwrap(),
        "--duration",
        "300ms",
        "--workers",
        "1",
    ])
    .await;
    assert!(!r.passed);
    let l = r.lookups.as_ref().expect("lookups");
    assert!(l.errors.0.contains_key("tls_alert"), "{}", r.table());
    // Each attempt reached the server, and none got through its handshake.
    let accepted = srv.accepted.load(std::sync::atomic::Ordering::Relaxed);
    assert!(accepted > 2, "{accepted} connections");
    assert_eq!(srv.sessions.load(std::sync::atomic::Ordering::Relaxed), 2);
}

/// `soak` against the real server for a few seconds, sampled every
/// 500 ms, with every kind of fleet change (churn, topics taken out and
/// back, ephemeral topics) at a high rate and a reconnect storm: it has
/// samples, per-minute rows, a drift figure, no error, and it passes;
/// its ephemeral topics came and went from the server's registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_samples_the_server_and_passes() {
    let srv = start_server().await;
    let (tcp, http) = (srv.tcp.to_string(), srv.http.to_string());
    let pid = std::process::id().to_string();
    let Cmd::Soak(args) = cli(&[
        "soak",
        "--tcp-address",
        &tcp,
        "--http-address",
        &http,
        "--server-pid",
        &pid,
        "--nodes",
        "50",
        "--topics-per-node",
        "10",
        "--topic-universe",
        "100",
        "--workers",
        "4",
        "--duration",
        "4s",
        "--sample-every",
        "500ms",
        "--rate-measure",
        "500ms",
        "--drift-base-start",
        "500ms",
        "--drift-window",
        "1s",
        // The process sampled is this test binary, whose other tests open
        // sockets and allocate beside this one: its drift says nothing of
        // the server's here (drift itself is unit-tested in soak.rs).
        "--max-rss-drift-pct",
        "1000",
        "--max-fd-drift",
        "100000",
        "--ping-interval",
        "300ms",
        "--churn",
        "0.2",
        "--unregister-rate",
        "0.2",
        "--unregister-hold",
        "300ms",
        "--ephemeral-rate",
        "40",
        "--ephemeral-life",
        "500ms",
        "--check-sample",
        "0.5",
        "--nodes-pct",
        "2",
        "--topics-pct",
        "2",
        "--fault",
        "storm@2s",
    ]) else {
        unreachable!()
    };
    let r = crate::soak::soak(args).await.expect("soak runs").report;
    let t = r.table();
    assert!(r.passed, "{t}");
    let s = r.soak.as_ref().expect("soak section");
    assert!(s.samples.len() >= 7, "{t}");
    assert!(
        s.samples
            .iter()
            .all(|x| x.rss_kib.is_some() && x.fds.is_some()),
        "{t}"
    );
    assert!(s.errors.is_empty(), "{t}");
    assert_eq!(s.tcp_over_1s, 0, "{t}");
    assert!(s.measured_max_per_second.is_some_and(|m| m > 0.0), "{t}");
    assert_eq!(s.minutes.len(), 1, "{t}");
    assert!(s.minutes[0].lookup.count > 0, "{t}");
    assert!(s.drift.rss.is_some() && s.drift.fds.is_some(), "{t}");
    // The gauges of this server's /metrics are recorded.
    assert!(
        s.samples
            .iter()
            .any(|x| x.gauges.contains_key("nsqlookupd_producers")),
        "{t}"
    );
    assert!(s.metrics.contains("gauges recorded"), "{t}");
    // Every kind of change happened, and was checked.
    assert!(s.churn_restarts > 0 && s.unregister_orders > 0, "{t}");
    assert!(s.ephemeral_removed > 10, "{t}");
    assert!(s.soak_checks > 10 && s.soak_checks_failed == 0, "{t}");
    assert_eq!(s.faults.len(), 1, "{t}");
    assert!(s.faults[0].passed, "{t}");
    assert!(
        r.checks.sampled > 50 && r.checks.final_checked == 100,
        "{t}"
    );
    // The ephemeral topics unregistered are gone from the registry: it
    // holds the workload's 100 topics and the few still live.
    let mut c = crate::httpc::HttpConn::plain(&http);
    let v: serde_json::Value = serde_json::from_slice(
        c.get("/topics", std::time::Duration::from_secs(5))
            .await
            .expect("/topics answers")
            .body,
    )
    .unwrap();
    let topics = v["topics"].as_array().unwrap().len() as u64;
    assert!(
        topics >= 100 && topics <= 100 + s.ephemeral_created - s.ephemeral_removed,
        "{topics} topics, {} ephemeral created, {} removed",
        s.ephemeral_created,
        s.ephemeral_removed
    );
    assert!(t.contains("errors by kind: none"), "{t}");
    srv.shutdown().await;
}

/// A server without /metrics (as the original Go one): the soak records
/// no gauges and still runs; a soak given several addresses is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_without_metrics_and_with_two_addresses() {
    let srv = start_server_with(&["--metrics-allow=10.9.9.9/32"]).await;
    let (tcp, http) = (srv.tcp.to_string(), srv.http.to_string());
    let Cmd::Soak(args) = cli(&[
        "soak",
        "--tcp-address",
        &tcp,
        "--http-address",
        &http,
        "--preset",
        "small",
        "--nodes",
        "10",
        "--duration",
        "1s",
        "--sample-every",
        "500ms",
        "--rate",
        "200",
        "--workers",
        "2",
    ]) else {
        unreachable!()
    };
    let r = crate::soak::soak(args).await.expect("soak runs").report;
    let t = r.table();
    assert!(r.passed, "{t}");
    let s = r.soak.as_ref().unwrap();
    assert!(s.samples.iter().all(|x| x.gauges.is_empty()), "{t}");
    assert!(s.metrics.contains("answered 403"), "{t}");
    assert_eq!(s.rate, 200.0);
    // No --server-pid: no drift, and said so; the run is too short anyway.
    assert!(s.drift.not_computed.is_some(), "{t}");
    assert!(t.contains("drift: not computed"), "{t}");

    let two = format!("{tcp},{tcp}");
    let Cmd::Soak(args) = cli(&["soak", "--tcp-address", &two, "--http-address", &http]) else {
        unreachable!()
    };
    assert!(crate::soak::soak(args).await.is_err());
    srv.shutdown().await;
}
