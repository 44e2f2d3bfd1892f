//! Cluster mode against a real etcd (started by `common::etcd`): replicas
//! are real `nsqlookupd` processes on ephemeral ports, nsqd are played over
//! real sockets, and every expectation is a condition polled with a
//! deadline.

mod common;

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{
    LEASE_TTL, Nsqd, PROPAGATION, channels, metric, names, node_count, producers, replica, topics,
    wait_for,
};
use common::etcd::EtcdCluster;
use common::{Server, http_get, http_post};
use serde_json::Value;

#[test]
fn a_registration_on_one_replica_is_seen_on_the_other_and_back() {
    let etcd = EtcdCluster::start(1);
    let a = replica(&etcd, &[]);
    let b = replica(&etcd, &[]);
    let mut n1 = Nsqd::connect(&a, "n1", 4150);
    n1.register("orders", Some("billing"));
    wait_for(PROPAGATION, "n1 on B", || producers(&b, "orders") == ["n1"]);
    assert_eq!(channels(&b, "orders"), ["billing"]);
    let mut n2 = Nsqd::connect(&b, "n2", 4250);
    n2.register("orders", None);
    wait_for(PROPAGATION, "n2 on A", || {
        producers(&a, "orders") == ["n1", "n2"]
    });
    assert_eq!(producers(&b, "orders"), ["n1", "n2"]);
    // Same peer fields on both replicas.
    let on_a = http_get(a.http_addr(), "/lookup?topic=orders").json();
    let on_b = http_get(b.http_addr(), "/lookup?topic=orders").json();
    let sorted = |v: &Value| {
        let mut p = v["producers"].as_array().unwrap().clone();
        p.sort_by_key(|p| p["broadcast_address"].as_str().unwrap().to_owned());
        p
    };
    assert_eq!(sorted(&on_a), sorted(&on_b));
    assert_eq!(metric(&b, "nsqlookupd_cluster_remote_producers"), Some(1.0));
    assert_eq!(metric(&b, "nsqlookupd_cluster_etcd_connected"), Some(1.0));
}

#[test]
fn unregister_disconnect_tombstone_and_deletes_apply_cluster_wide() {
    let etcd = EtcdCluster::start(1);
    let a = replica(&etcd, &["--tombstone-lifetime=3s"]);
    let b = replica(&etcd, &["--tombstone-lifetime=3s"]);
    let mut n1 = Nsqd::connect(&a, "n1", 4150);
    n1.register("t", Some("c1"));
    n1.register("t", Some("c2#ephemeral"));
    n1.register("u", None);
    wait_for(PROPAGATION, "both channels on B", || {
        channels(&b, "t") == ["c1", "c2#ephemeral"]
    });
    // UNREGISTER of an ephemeral channel: gone everywhere.
    n1.unregister("t", Some("c2#ephemeral"));
    wait_for(PROPAGATION, "the ephemeral channel gone on B", || {
        channels(&b, "t") == ["c1"]
    });
    // A tombstone set on B hides n1 on A for its lifetime.
    assert_eq!(
        http_post(b.http_addr(), "/topic/tombstone?topic=t&node=n1:4151").status,
        200
    );
    wait_for(PROPAGATION, "the tombstone on A", || {
        producers(&a, "t").is_empty()
    });
    assert_eq!(producers(&a, "u"), ["n1"], "only topic t is tombstoned");
    wait_for(
        Duration::from_secs(10),
        "the tombstone to expire on A",
        || producers(&a, "t") == ["n1"],
    );
    // /channel/delete on B.
    assert_eq!(
        http_post(b.http_addr(), "/channel/delete?topic=t&channel=c1").status,
        200
    );
    wait_for(PROPAGATION, "the channel deleted on A", || {
        channels(&a, "t").is_empty()
    });
    // /topic/delete on A removes it on B, and a new REGISTER brings it back.
    assert_eq!(
        http_post(a.http_addr(), "/topic/delete?topic=u").status,
        200
    );
    wait_for(PROPAGATION, "topic u deleted on B", || {
        !topics(&b).contains(&"u".into())
    });
    n1.register("u", None);
    wait_for(PROPAGATION, "topic u back on B", || {
        producers(&b, "u") == ["n1"]
    });
    // Admin creates.
    assert_eq!(
        http_post(b.http_addr(), "/channel/create?topic=x&channel=y").status,
        200
    );
    wait_for(PROPAGATION, "x/y created on A", || {
        channels(&a, "x") == ["y"]
    });
    // Disconnect: gone from B.
    drop(n1);
    wait_for(PROPAGATION, "n1 gone from B", || node_count(&b) == 0);
    assert!(producers(&b, "t").is_empty());
}

#[test]
fn an_nsqd_connected_to_both_replicas_is_one_producer() {
    let etcd = EtcdCluster::start(1);
    let a = replica(&etcd, &[]);
    let b = replica(&etcd, &[]);
    let mut to_a = Nsqd::connect(&a, "n1", 4150);
    let mut to_b = Nsqd::connect(&b, "n1", 4150);
    to_a.register("t", Some("c"));
    to_b.register("t", Some("c"));
    let mut other = Nsqd::connect(&a, "n2", 4250);
    other.register("v", None);
    wait_for(PROPAGATION, "n2 on B", || producers(&b, "v") == ["n2"]);
    for r in [&a, &b] {
        assert_eq!(producers(r, "t"), ["n1"]);
        assert_eq!(node_count(r), 2, "n1 once, n2 once");
    }
    // n1 leaves A only: still there, once, on both.
    drop(to_a);
    std::thread::sleep(Duration::from_millis(300));
    for r in [&a, &b] {
        wait_for(PROPAGATION, "n1 still listed once", || {
            producers(r, "t") == ["n1"]
        });
    }
}

#[test]
fn a_restarted_replica_answers_for_the_whole_fleet_within_two_seconds() {
    let etcd = EtcdCluster::start(1);
    let a = replica(&etcd, &[]);
    let mut fleet: Vec<Nsqd> = (0..20u16)
        .map(|i| {
            let mut n = Nsqd::connect(&a, &format!("n{i:02}"), 5000 + 2 * i);
            for t in 0..10 {
                n.register(&format!("topic{t}"), Some("ch"));
            }
            n
        })
        .collect();
    let mut b = replica(&etcd, &[]);
    wait_for(PROPAGATION, "the fleet on B", || {
        producers(&b, "topic9").len() == 20
    });
    b.kill();
    let started = Instant::now();
    let b = Server::start_with([
        format!("--etcd-endpoints={}", etcd.endpoints_arg()),
        format!("--etcd-lease-ttl={LEASE_TTL}"),
    ]);
    let took = wait_for(
        Duration::from_secs(2),
        "the restarted B to know the fleet",
        || (0..10).all(|t| producers(&b, &format!("topic{t}")).len() == 20),
    );
    eprintln!(
        "restarted replica answered for 20 nsqd x 10 topics {:?} after start ({took:?} after listening)",
        started.elapsed()
    );
    fleet[0].register("late", None);
    wait_for(PROPAGATION, "a new registration on B", || {
        producers(&b, "late") == ["n00"]
    });
}

#[test]
fn a_killed_replica_loses_its_producers_when_its_lease_expires() {
    let etcd = EtcdCluster::start(1);
    let mut a = replica(&etcd, &[]);
    let b = replica(&etcd, &[]);
    let mut n1 = Nsqd::connect(&a, "n1", 4150);
    n1.register("t", None);
    wait_for(PROPAGATION, "n1 on B", || producers(&b, "t") == ["n1"]);
    a.kill();
    let killed = Instant::now();
    // Still there for a while (nsqd may be re-registering elsewhere)...
    assert_eq!(producers(&b, "t"), ["n1"]);
    // ...and gone after the lease.
    wait_for(
        Duration::from_secs(15),
        "n1 gone from B after A's lease",
        || producers(&b, "t").is_empty(),
    );
    let gone = killed.elapsed();
    eprintln!(
        "fault kill -9 of A: its producers gone from B {gone:?} after (lease TTL {LEASE_TTL})"
    );
    assert!(
        gone >= Duration::from_secs(2),
        "removed after {gone:?}, before the lease could expire"
    );
    // Its nsqd re-registers with B: back.
    let mut again = Nsqd::connect(&b, "n1", 4150);
    again.register("t", None);
    assert_eq!(producers(&b, "t"), ["n1"]);
}

#[test]
fn one_etcd_member_killed_changes_nothing() {
    let mut etcd = EtcdCluster::start(3);
    let a = replica(&etcd, &[]);
    let b = replica(&etcd, &[]);
    let mut n1 = Nsqd::connect(&a, "n1", 4150);
    n1.register("t", None);
    wait_for(PROPAGATION, "n1 on B", || producers(&b, "t") == ["n1"]);
    let in_use = |s: &Server| metric(s, "nsqlookupd_cluster_etcd_endpoints_in_use");
    assert_eq!((in_use(&a), in_use(&b)), (Some(3.0), Some(3.0)));
    let republishes = |s: &Server| metric(s, "nsqlookupd_cluster_republishes");
    let b_republishes = republishes(&b);
    let leader = etcd.leader();
    etcd.kill(leader);
    let mut n2 = Nsqd::connect(&b, "n2", 4250);
    assert!(n2.register("t", None) < Duration::from_millis(100));
    // The dead member is taken out of both clients' balancers (requests
    // sent its way would fail at once, again and again).
    wait_for(PROPAGATION, "the dead member out of use on A and B", || {
        (in_use(&a), in_use(&b)) == (Some(2.0), Some(2.0))
    });
    let took = wait_for(
        Duration::from_secs(15),
        "n2 on A with one member down",
        || producers(&a, "t") == ["n1", "n2"],
    );
    eprintln!("fault etcd leader killed: a registration on B visible on A {took:?} after its OK");
    // B's transaction in flight waited out etcd's request timeout (~6 s,
    // more than the 5 s lease): its lease was kept alive meanwhile.
    assert_eq!(republishes(&b), b_republishes, "B's lease expired");
    n1.unregister("t", None);
    wait_for(PROPAGATION, "n1's UNREGISTER on B", || {
        producers(&b, "t") == ["n2"]
    });
    etcd.restart(leader);
    wait_for(PROPAGATION, "the member back in use on A and B", || {
        (in_use(&a), in_use(&b)) == (Some(3.0), Some(3.0))
    });
}

#[test]
fn replicas_keep_serving_while_etcd_is_down_and_converge_when_it_returns() {
    let mut etcd = EtcdCluster::start(1);
    let a = replica(&etcd, &[]);
    let b = replica(&etcd, &[]);
    let mut n1 = Nsqd::connect(&a, "n1", 4150);
    n1.register("t", None);
    let mut n2 = Nsqd::connect(&b, "n2", 4250);
    n2.register("t", None);
    wait_for(PROPAGATION, "both on both", || {
        producers(&a, "t") == ["n1", "n2"] && producers(&b, "t") == ["n1", "n2"]
    });
    etcd.stop_all();
    // Served as last seen, and nsqd keep getting OK at once.
    for round in 0..10 {
        assert_eq!(producers(&a, "t"), ["n1", "n2"], "round {round}");
        assert_eq!(producers(&b, "t"), ["n1", "n2"], "round {round}");
        assert!(n1.ok("PING\n") < Duration::from_millis(100));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Changes during the outage: local at once, remote after.
    n1.register("during", None);
    n2.unregister("t", None);
    assert_eq!(producers(&a, "during"), ["n1"]);
    assert_eq!(producers(&b, "t"), ["n1"]);
    wait_for(PROPAGATION, "A's etcd gauge to drop", || {
        metric(&a, "nsqlookupd_cluster_etcd_connected") == Some(0.0)
    });
    etcd.restart_all();
    let took = wait_for(Duration::from_secs(20), "both replicas to converge", || {
        producers(&b, "during") == ["n1"] && producers(&a, "t") == ["n1"]
    });
    eprintln!(
        "fault all of etcd stopped: replicas converged {took:?} after etcd was healthy again"
    );
    assert_eq!(metric(&a, "nsqlookupd_cluster_etcd_connected"), Some(1.0));
}

#[test]
fn a_topic_created_deleted_and_created_again_and_two_replicas_racing() {
    let etcd = EtcdCluster::start(1);
    let a = replica(&etcd, &[]);
    let b = replica(&etcd, &[]);
    for round in 0..3 {
        assert_eq!(
            http_post(a.http_addr(), "/topic/create?topic=cycle").status,
            200
        );
        wait_for(PROPAGATION, "created on B", || {
            topics(&b).contains(&"cycle".into())
        });
        assert_eq!(
            http_post(b.http_addr(), "/topic/delete?topic=cycle").status,
            200
        );
        wait_for(PROPAGATION, "deleted on A", || {
            !topics(&a).contains(&"cycle".into())
        });
        assert!(!topics(&b).contains(&"cycle".into()), "round {round}");
    }
    // Two replicas' nsqd registering the same topic at the same time.
    let handles: Vec<_> = [(&a, "r1", 6000u16), (&b, "r2", 6100)]
        .into_iter()
        .map(|(server, name, port)| {
            let addr = server.tcp_addr();
            let name = name.to_owned();
            std::thread::spawn(move || {
                let mut n = Nsqd::connect_to(addr, &name, port);
                for i in 0..50 {
                    n.register("race", Some(&format!("c{i}")));
                }
                n
            })
        })
        .collect();
    let _nsqd: Vec<Nsqd> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for r in [&a, &b] {
        wait_for(PROPAGATION, "both racers with 50 channels", || {
            producers(r, "race") == ["r1", "r2"] && channels(r, "race").len() == 50
        });
    }
    assert_eq!(names(&["race"]), topics(&a));
}

/// A TCP proxy to one etcd member that the test can cut (every connection
/// closed, new ones refused) and restore: a replica partitioned from etcd
/// while the others still reach it.
struct Partition {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Partition {
    fn to(target: SocketAddr) -> Partition {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, o) = (Arc::clone(&cut), Arc::clone(&open));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let mut open = o.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Partition { addr, cut, open }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[test]
fn a_partitioned_replica_is_dropped_after_its_lease_then_resyncs_past_a_compaction() {
    let etcd = EtcdCluster::start(1);
    let a = replica(&etcd, &[]);
    let partition = Partition::to(etcd.client_addr(0));
    let b = Server::start_with([
        format!("--etcd-endpoints={}", partition.endpoint()),
        format!("--etcd-lease-ttl={LEASE_TTL}"),
    ]);
    wait_for(PROPAGATION, "B ready", || {
        http_get(b.http_addr(), "/ready").status == 200
    });
    let mut na = Nsqd::connect(&a, "na", 4150);
    na.register("t", None);
    let mut nb = Nsqd::connect(&b, "nb", 4250);
    nb.register("t", None);
    for r in [&a, &b] {
        wait_for(PROPAGATION, "both nsqd on both", || {
            producers(r, "t") == ["na", "nb"]
        });
    }
    partition.cut();
    let cut = Instant::now();
    // A drops B's nsqd once B's lease expires; B keeps serving as last seen.
    wait_for(
        Duration::from_secs(15),
        "nb gone from A after B's lease",
        || producers(&a, "t") == ["na"],
    );
    assert_eq!(producers(&b, "t"), ["na", "nb"]);
    assert!(nb.ok("PING\n") < Duration::from_millis(100));
    // Changes B misses, then their history compacted away.
    na.register("t2", None);
    let mut na2 = Nsqd::connect(&a, "na2", 4350);
    na2.register("t", None);
    drop(na);
    wait_for(PROPAGATION, "A's own changes", || {
        producers(&a, "t") == ["na2"]
    });
    etcd.compact(etcd.revision());
    let resyncs = metric(&b, "nsqlookupd_cluster_resyncs_total").unwrap();
    partition.restore();
    eprintln!(
        "fault B partitioned from etcd: B's nsqd gone from A {:?} after the cut",
        cut.elapsed()
    );
    let converged = Instant::now();
    while !(producers(&b, "t") == ["na2", "nb"] && producers(&a, "t") == ["na2", "nb"]) {
        assert!(
            converged.elapsed() < Duration::from_secs(20),
            "B to resync and A to see nb again: B has {:?}, A has {:?}; B's log:\n{}",
            producers(&b, "t"),
            producers(&a, "t"),
            b.logs()
                .iter()
                .filter(|l| l.contains("cluster"))
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(producers(&b, "t2").is_empty(), "na left while B was away");
    assert!(metric(&b, "nsqlookupd_cluster_resyncs_total").unwrap() > resyncs);
    // Counted once the old lease is revoked, just after the keys are out.
    wait_for(PROPAGATION, "B's republish under a new lease", || {
        metric(&b, "nsqlookupd_cluster_republishes_total").unwrap() >= 2.0
    });
}

#[test]
fn the_inactivity_rule_applies_on_every_replica() {
    let etcd = EtcdCluster::start(1);
    let a = replica(&etcd, &["--inactive-producer-timeout=2s"]);
    let b = replica(&etcd, &["--inactive-producer-timeout=2s"]);
    let mut n1 = Nsqd::connect(&a, "n1", 4150);
    n1.register("t", None);
    wait_for(PROPAGATION, "n1 on B", || producers(&b, "t") == ["n1"]);
    // No PING: hidden on A by its own rule, and on B too.
    wait_for(Duration::from_secs(10), "n1 hidden on B", || {
        producers(&b, "t").is_empty()
    });
    assert!(producers(&a, "t").is_empty());
    // A PING on A shows it again on both.
    n1.ok("PING\n");
    assert_eq!(producers(&a, "t"), ["n1"]);
    wait_for(PROPAGATION, "n1 shown again on B", || {
        producers(&b, "t") == ["n1"]
    });
}
