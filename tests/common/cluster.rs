//! Shared by the cluster-mode tests (`tests/cluster.rs`,
//! `tests/cluster_security.rs`): replicas are real `nsqlookupd` processes
//! on ephemeral ports in cluster mode on a [`EtcdCluster`], nsqd are played
//! over real sockets ([`Nsqd`]), and every expectation is a condition polled
//! with a deadline ([`wait_for`]).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::etcd::EtcdCluster;
use super::{Server, http_get, identify_command, read_frame, tcp_connect};

/// How long a change may take to show on another replica.
pub const PROPAGATION: Duration = Duration::from_secs(5);
/// The lease TTL of the replicas in these tests (etcd's floor is a few seconds).
pub const LEASE_TTL: &str = "5s";

/// The arguments of a replica of the cluster on `etcd` (its endpoints,
/// [`LEASE_TTL`], a broadcast address) followed by `extra`.
pub fn replica_args(etcd: &EtcdCluster, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        format!("--etcd-endpoints={}", etcd.endpoints_arg()),
        format!("--etcd-lease-ttl={LEASE_TTL}"),
        "--broadcast-address=lookupd.test".to_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A replica of the cluster on `etcd`, once it listens: not waited for to
/// be ready (for one that is not expected to reach etcd).
pub fn start_replica(etcd: &EtcdCluster, extra: &[&str]) -> Server {
    Server::start_with(replica_args(etcd, extra))
}

/// A replica of the cluster on `etcd`, once it is ready (has loaded the
/// cluster's state). Panics with its log tail if it is not within
/// [`PROPAGATION`].
pub fn replica(etcd: &EtcdCluster, extra: &[&str]) -> Server {
    let server = start_replica(etcd, extra);
    let ready = poll_until(PROPAGATION, || {
        http_get(server.http_addr(), "/ready").status == 200
    });
    assert!(
        ready.is_some(),
        "the replica was not ready within {PROPAGATION:?}\n--- replica log (tail) ---\n{}",
        server.log_tail(20)
    );
    server
}

/// Polls `cond` (every 20 ms) until it holds and returns how long that
/// took; `None` if it still does not after `deadline`.
pub fn poll_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` until it holds; panics after `deadline` naming `what`.
pub fn wait_for(deadline: Duration, what: &str, cond: impl FnMut() -> bool) -> Duration {
    poll_until(deadline, cond)
        .unwrap_or_else(|| panic!("timed out after {deadline:?} waiting for {what}"))
}

/// A played nsqd: one TCP connection to one replica.
pub struct Nsqd {
    stream: TcpStream,
}

impl Nsqd {
    /// Connects to `server` and identifies as `name` (broadcast address)
    /// with `tcp_port` (HTTP port `tcp_port + 1`).
    pub fn connect(server: &Server, name: &str, tcp_port: u16) -> Nsqd {
        Nsqd::connect_to(server.tcp_addr(), name, tcp_port)
    }

    pub fn connect_to(addr: SocketAddr, name: &str, tcp_port: u16) -> Nsqd {
        let mut stream = tcp_connect(addr, true).expect("connect to the replica");
        let body = serde_json::json!({
            "broadcast_address": name,
            "hostname": name,
            "tcp_port": tcp_port,
            "http_port": tcp_port + 1,
            "version": "1.3.0",
        });
        stream
            .write_all(&identify_command(body.to_string().as_bytes()))
            .unwrap();
        let answer = read_frame(&mut stream, Duration::from_secs(5)).expect("IDENTIFY answer");
        assert!(answer.starts_with(b"{"), "IDENTIFY: {answer:?}");
        Nsqd { stream }
    }

    /// Sends one command and expects `OK`.
    pub fn ok(&mut self, command: &str) -> Duration {
        let start = Instant::now();
        self.stream.write_all(command.as_bytes()).unwrap();
        let answer = read_frame(&mut self.stream, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{command:?}: no answer: {e}"));
        assert_eq!(answer, b"OK", "{command:?}");
        start.elapsed()
    }

    pub fn register(&mut self, topic: &str, channel: Option<&str>) -> Duration {
        match channel {
            Some(c) => self.ok(&format!("REGISTER {topic} {c}\n")),
            None => self.ok(&format!("REGISTER {topic}\n")),
        }
    }

    pub fn unregister(&mut self, topic: &str, channel: Option<&str>) -> Duration {
        match channel {
            Some(c) => self.ok(&format!("UNREGISTER {topic} {c}\n")),
            None => self.ok(&format!("UNREGISTER {topic}\n")),
        }
    }
}

/// The broadcast addresses `/lookup?topic=` lists on `server`, sorted
/// (empty for 404).
pub fn producers(server: &Server, topic: &str) -> Vec<String> {
    let r = http_get(server.http_addr(), &format!("/lookup?topic={topic}"));
    if r.status == 404 {
        return Vec::new();
    }
    assert_eq!(r.status, 200, "/lookup?topic={topic}: {}", r.text());
    let mut out = super::producer_addresses(&r.json());
    out.sort();
    out
}

pub fn channels(server: &Server, topic: &str) -> Vec<String> {
    let v = http_get(server.http_addr(), &format!("/channels?topic={topic}")).json();
    let mut out: Vec<String> = v["channels"]
        .as_array()
        .map(|a| a.iter().map(|c| c.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

pub fn topics(server: &Server) -> Vec<String> {
    let v = http_get(server.http_addr(), "/topics").json();
    let mut out: Vec<String> = v["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

pub fn node_count(server: &Server) -> usize {
    http_get(server.http_addr(), "/nodes").json()["producers"]
        .as_array()
        .unwrap()
        .len()
}

pub fn metric(server: &Server, name: &str) -> Option<f64> {
    let text = http_get(server.http_addr(), "/metrics").text();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
