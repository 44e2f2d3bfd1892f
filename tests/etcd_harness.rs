//! The etcd harness (`common::etcd`) against a real etcd: the smoke test
//! that etcd is installed and runs here, and proof that what the cluster
//! tests rely on (key helpers, quorum with a member down, restarts keeping
//! the data, TLS clusters, auth) behaves as documented.

mod common;

use common::etcd::{EtcdCluster, b64_decode, b64_encode};
use common::http_get;
use common::pki::Pki;

#[test]
fn base64_round_trips() {
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(b64_encode(plain.as_bytes()), encoded);
        assert_eq!(b64_decode(encoded).unwrap(), plain.as_bytes());
    }
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(b64_decode(&b64_encode(&all)).unwrap(), all);
    assert_eq!(b64_decode("Zm9v!"), None);
    assert_eq!(b64_decode("Zm9vY"), None);
}

#[test]
fn single_member_put_get_delete_round_trip() {
    let etcd = EtcdCluster::start(1);
    let endpoint = etcd.endpoints()[0].clone();
    assert_eq!(endpoint, format!("http://{}", etcd.client_addr(0)));
    assert_eq!(etcd.endpoints_arg(), endpoint);
    assert!(etcd.client_addr(0).ip().is_loopback());
    assert_eq!(
        http_get(etcd.client_addr(0), "/health").json()["health"],
        "true"
    );

    assert_eq!(etcd.get_prefix("/nsq/"), vec![]);
    etcd.put("/nsq/b", "2");
    etcd.put("/nsq/a", "1 with spaces, ünïcode");
    etcd.put("/nsq0", "just past the prefix");
    etcd.put("/other/a", "x");
    assert_eq!(
        etcd.get_prefix("/nsq/"),
        vec![
            ("/nsq/a".to_string(), "1 with spaces, ünïcode".to_string()),
            ("/nsq/b".to_string(), "2".to_string()),
        ]
    );
    assert_eq!(etcd.get("/nsq/b").as_deref(), Some("2"));
    assert_eq!(etcd.get("/nsq/missing"), None);
    // An empty value is a value.
    etcd.put("/nsq/empty", "");
    assert_eq!(etcd.get("/nsq/empty").as_deref(), Some(""));

    assert_eq!(etcd.delete_prefix("/nsq/"), 3);
    assert_eq!(etcd.get_prefix("/nsq/"), vec![]);
    assert_eq!(etcd.delete_prefix("/nsq/"), 0);
    // Only the prefix went.
    assert_eq!(etcd.get_prefix("").len(), 2);
}

#[test]
fn revision_grows_with_writes_and_compaction_keeps_it() {
    let etcd = EtcdCluster::start(1);
    let start = etcd.revision();
    assert!(start >= 1, "revision {start}");
    let first = etcd.put("/k", "1");
    assert_eq!(first, start + 1);
    assert_eq!(etcd.revision(), first);
    let second = etcd.put("/k", "2");
    assert_eq!(second, first + 1);
    // Reads do not move it.
    etcd.get_prefix("/");
    assert_eq!(etcd.revision(), second);
    etcd.delete_prefix("/k");
    assert_eq!(etcd.revision(), second + 1);

    etcd.compact(second);
    assert_eq!(etcd.revision(), second + 1);
    let compacted = std::panic::catch_unwind(|| etcd.compact(first));
    assert!(
        compacted.is_err(),
        "compacting an old revision again must fail"
    );
}

#[test]
fn three_members_keep_quorum_with_one_down_and_rejoin() {
    let mut etcd = EtcdCluster::start(3);
    assert_eq!(etcd.endpoints().len(), 3);
    assert_eq!(etcd.endpoints_arg().split(',').count(), 3);
    etcd.put("/q/before", "1");

    // The leader is the interesting one to lose: the others must elect a
    // new one before writes succeed again.
    let leader = etcd.leader();
    etcd.kill(leader);
    assert!(!etcd.is_running(leader));
    assert_eq!(etcd.running().len(), 2);
    etcd.put("/q/during", "2");
    assert_ne!(etcd.leader(), leader);
    assert_eq!(etcd.get_prefix("/q/").len(), 2);
    etcd.wait_healthy(common::etcd::ETCD_STARTUP_DEADLINE);

    etcd.restart(leader);
    assert_eq!(etcd.running().len(), 3);
    // The rejoined member caught up: ask it alone.
    let alone = common::http_request(
        etcd.client_addr(leader),
        "POST",
        "/v3/kv/range",
        &[],
        Some(format!(r#"{{"key":"{}"}}"#, b64_encode(b"/q/during")).as_bytes()),
    )
    .unwrap()
    .json();
    assert_eq!(alone["kvs"][0]["value"], b64_encode(b"2"));
}

#[test]
fn stop_all_then_restart_all_keeps_data() {
    let mut etcd = EtcdCluster::start(3);
    let endpoints = etcd.endpoints();
    etcd.put("/keep/a", "1");
    let revision = etcd.put("/keep/b", "2");

    etcd.stop_all();
    assert_eq!(etcd.running(), Vec::<usize>::new());
    etcd.restart_all();

    assert_eq!(etcd.endpoints(), endpoints);
    assert_eq!(
        etcd.get_prefix("/keep/"),
        vec![
            ("/keep/a".to_string(), "1".to_string()),
            ("/keep/b".to_string(), "2".to_string()),
        ]
    );
    assert_eq!(etcd.revision(), revision);
    etcd.put("/keep/c", "3");
}

#[test]
fn single_member_stop_and_restart_keeps_data() {
    let mut etcd = EtcdCluster::start(1);
    etcd.put("/one", "1");
    etcd.stop(0);
    assert!(!etcd.is_running(0));
    etcd.restart(0);
    assert_eq!(etcd.get("/one").as_deref(), Some("1"));
}

#[test]
fn a_tls_cluster_speaks_only_tls_to_clients_and_plain_http_to_the_harness() {
    let pki = Pki::generate();
    let etcd = EtcdCluster::start_tls(1, &pki.etcd_files());
    let client = etcd.client_addr(0);
    assert_eq!(etcd.endpoints_arg(), format!("https://{client}"));
    // Plain HTTP on the client URL gets no answer (etcd closes it).
    if let Ok(r) = common::http_request(client, "GET", "/health", &[], None) {
        panic!(
            "plain HTTP on the TLS port: HTTP {}: {}",
            r.status,
            r.text()
        );
    }
    // The harness's own listener is another port, and works.
    let plain = etcd.plain_client_addr(0).expect("a plain listener");
    assert_ne!(plain, client);
    assert_eq!(http_get(plain, "/health").json()["health"], "true");
    etcd.put("/tls/a", "1");
    assert_eq!(etcd.get("/tls/a").as_deref(), Some("1"));
}

#[test]
fn with_auth_enabled_the_harness_uses_a_root_token_and_takes_a_new_one_when_refused() {
    let mut etcd = EtcdCluster::builder(1).arg("--auth-token-ttl=1").start();
    etcd.add_user("reader", "reader-pw");
    etcd.add_role("reader");
    etcd.grant_prefix("reader", "/r/");
    etcd.grant_role("reader", "reader");
    etcd.enable_auth("root-pw");
    // Without a token, etcd refuses.
    let body = format!(r#"{{"key":"{}"}}"#, b64_encode(b"/r/a"));
    let r = common::http_request(
        etcd.plain_client_addr(0).unwrap_or(etcd.client_addr(0)),
        "POST",
        "/v3/kv/range",
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
    )
    .unwrap();
    assert_ne!(r.status, 200, "{}", r.text());
    // The harness gets a token, and a new one after a restart killed it.
    etcd.put("/r/a", "1");
    assert_eq!(etcd.get("/r/a").as_deref(), Some("1"));
    etcd.restart_all();
    assert_eq!(etcd.get("/r/a").as_deref(), Some("1"));
    // Other users' tokens, and wrong passwords.
    let token = etcd.authenticate("reader", "reader-pw").unwrap();
    assert!(etcd.token_valid(&token));
    assert!(etcd.authenticate("reader", "wrong").is_err());
    assert!(!etcd.token_valid("not-a-token"));
}
