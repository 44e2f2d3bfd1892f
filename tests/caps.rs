//! The registry's global caps (`--max-registrations`, `--max-keys`) on the
//! real binary over real TCP and HTTP: a REGISTER past the cap gets the
//! non-fatal `E_REGISTRATION_LIMIT` and the connection goes on, everything
//! registered keeps being served, UNREGISTER frees room, and refusals are
//! counted in `/metrics`.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Server, http_get, http_post, identify_command, tcp_connect, tcp_roundtrip};

/// An nsqd that identified as `name` (its `client` pair counts: 1).
fn nsqd(server: &Server, name: &str) -> TcpStream {
    let mut s = tcp_connect(server.tcp_addr(), true).expect("connect");
    let body = format!(
        r#"{{"broadcast_address":"{name}","hostname":"{name}","tcp_port":4150,"http_port":4151,"version":"1.3.0"}}"#
    );
    let answer = tcp_roundtrip(&mut s, &identify_command(body.as_bytes()));
    assert_eq!(answer.first(), Some(&b'{'), "IDENTIFY answer");
    s
}

fn command(s: &mut TcpStream, line: &str) -> String {
    String::from_utf8(tcp_roundtrip(s, format!("{line}\n").as_bytes())).unwrap()
}

/// The broadcast addresses `/lookup?topic=` lists (None: 404).
fn lookup(server: &Server, topic: &str) -> Option<Vec<String>> {
    let r = http_get(server.http_addr(), &format!("/lookup?topic={topic}"));
    if r.status == 404 {
        return None;
    }
    assert_eq!(r.status, 200, "/lookup?topic={topic}");
    let mut v: Vec<String> = r.json()["producers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["broadcast_address"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    Some(v)
}

/// One sample of `/metrics`, named with its labels as written.
fn metric(server: &Server, series: &str) -> f64 {
    let text = http_get(server.http_addr(), "/metrics").text();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

const FULL: &str = "E_REGISTRATION_LIMIT REGISTER registry full (6 registrations)";

#[test]
fn register_past_the_registration_cap_is_refused_and_the_connection_goes_on() {
    let server = Server::start_with(["--max-registrations=6"]);
    let mut a = nsqd(&server, "node-a"); // 1
    assert_eq!(command(&mut a, "REGISTER t1 c1"), "OK"); // 3
    let mut b = nsqd(&server, "node-b"); // 4
    assert_eq!(command(&mut b, "REGISTER t1 c1"), "OK"); // 6: full
    assert_eq!(command(&mut b, "REGISTER t2"), FULL);
    assert_eq!(command(&mut a, "REGISTER t2 c2"), FULL);
    // Not fatal: the connections stay, PING and re-REGISTER of what is
    // held answer OK, and everything held is still served.
    assert_eq!(command(&mut a, "PING"), "OK");
    assert_eq!(command(&mut b, "REGISTER t1 c1"), "OK", "idempotent");
    assert_eq!(
        lookup(&server, "t1"),
        Some(vec!["node-a".into(), "node-b".into()])
    );
    assert_eq!(
        lookup(&server, "t2"),
        None,
        "a refused REGISTER makes no key"
    );
    assert_eq!(metric(&server, "nsqlookupd_registrations"), 6.0);
    assert_eq!(metric(&server, "nsqlookupd_registrations_limit"), 6.0);
    // UNREGISTER frees room; the next REGISTER gets it.
    assert_eq!(command(&mut a, "UNREGISTER t1 c1"), "OK"); // 5
    assert_eq!(command(&mut a, "REGISTER t2"), "OK"); // 6
    assert_eq!(lookup(&server, "t2"), Some(vec!["node-a".into()]));
    assert_eq!(command(&mut b, "REGISTER t3"), FULL);
    // A closed connection frees its pairs too.
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&server, "nsqlookupd_registrations") != 3.0 {
        assert!(Instant::now() < deadline, "node-b's pairs not freed in 5 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(command(&mut a, "REGISTER t3 c3"), "OK");
    // Counted: three refusals, by limit and by error code.
    let refused = r#"nsqlookupd_registrations_refused_total{reason="max_registrations"}"#;
    assert_eq!(metric(&server, refused), 3.0);
    let hits = r#"nsqlookupd_limit_hits_total{limit="max_registrations"}"#;
    assert_eq!(metric(&server, hits), 3.0);
    let errors = r#"nsqlookupd_tcp_errors_total{code="E_REGISTRATION_LIMIT"}"#;
    assert_eq!(metric(&server, errors), 3.0);
    // Logged, at most once a second with a count: the first refusal at once.
    assert!(
        server
            .wait_for_log(Duration::from_secs(5), |l| l.contains(
                "refused 1 write(s) to the registry: --max-registrations=6 reached"
            ))
            .is_some(),
        "{}",
        server.log_tail(20)
    );
}

#[test]
fn keys_cap_bounds_register_and_the_admin_creates() {
    let server = Server::start_with(["--max-keys=3"]);
    let mut a = nsqd(&server, "node-a");
    assert_eq!(command(&mut a, "REGISTER t1 c1"), "OK"); // 2 keys
    assert_eq!(
        http_post(server.http_addr(), "/topic/create?topic=x").status,
        200
    ); // 3
    assert_eq!(
        http_post(server.http_addr(), "/topic/create?topic=x").status,
        200,
        "an existing key is free"
    );
    let refused = http_post(server.http_addr(), "/topic/create?topic=y");
    assert_eq!(refused.status, 507);
    assert_eq!(refused.json()["message"], "KEY_LIMIT");
    let refused = http_post(server.http_addr(), "/channel/create?topic=t1&channel=c2");
    assert_eq!(refused.status, 507);
    assert_eq!(
        command(&mut a, "REGISTER z"),
        "E_REGISTRATION_LIMIT REGISTER registry full (3 topic and channel keys)"
    );
    assert_eq!(
        command(&mut a, "REGISTER x"),
        "OK",
        "joining a key needs no key room"
    );
    assert_eq!(lookup(&server, "x"), Some(vec!["node-a".into()]));
    // Deleting a key frees room.
    assert_eq!(
        http_post(server.http_addr(), "/topic/delete?topic=x").status,
        200
    );
    assert_eq!(command(&mut a, "REGISTER z"), "OK");
    let refused = r#"nsqlookupd_registrations_refused_total{reason="max_keys"}"#;
    assert_eq!(metric(&server, refused), 3.0);
}
