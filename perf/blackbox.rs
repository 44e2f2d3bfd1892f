//! End-to-end tests: the bench's own modes against this project's real
//! server, started in-process on ephemeral ports. They exercise the whole
//! path (fleet, churn, storm, consumers, checks) for a few seconds, and
//! show that the checker fails a server whose answers do not match.

use std::net::SocketAddr;

use clap::Parser;
use nsqlookupd::config::{self, Parsed};
use nsqlookupd::server::Server;
use tokio::sync::oneshot;

use crate::cli::{Cli, Cmd};
use crate::modes;

/// A running server and the means to stop it.
struct Running {
    tcp: SocketAddr,
    http: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start_server() -> Running {
    let args = [
        "nsqlookupd",
        "--tcp-address=127.0.0.1:0",
        "--http-address=127.0.0.1:0",
    ];
    let Ok(Parsed::Run { options, .. }) = config::parse_args(args) else {
        panic!("the server's command line was refused");
    };
    let server = Server::bind(*options).await.expect("server binds");
    let (tcp, http) = (server.tcp_addr(), server.http_addr());
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async move {
        let _ = rx.await;
    }));
    Running {
        tcp,
        http,
        stop,
        task,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_churn_and_storm_passes_its_checks() {
    let srv = start_server().await;
    let (tcp, http) = (srv.tcp.to_string(), srv.http.to_string());
    let Cmd::Run(args) = cli(&[
        "run",
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
    ]) else {
        unreachable!()
    };
    let out = modes::run(args).await.expect("run completes");
    let r = &out.report;
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
    let fleet = tokio::spawn(modes::fleet_only(fleet));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // ...but the consumers expect 9 nodes: node 9's producers are "unexpected".
    let Cmd::Consumers(cons) = cli(&[
        "consumers",
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
    ]) else {
        unreachable!()
    };
    let out = modes::consumers_only(cons)
        .await
        .expect("consumers complete");
    assert!(!out.report.passed);
    assert!(out.report.checks.sampled_failed > 0);
    assert!(
        out.report
            .checks
            .failures
            .iter()
            .any(|f| f.contains("node-00009.bench"))
    );
    let fleet = fleet.await.expect("fleet task").expect("fleet completes");
    assert!(fleet.report.passed, "{}", fleet.report.table());
    srv.shutdown().await;
}
