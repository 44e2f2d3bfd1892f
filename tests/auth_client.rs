//! The auth client (`nsqlookupd::access::auth`) against a real auth server
//! (`common::auth`) on 127.0.0.1: what it sends, what it caches and for how
//! long, one query for concurrent callers, its bounds, and auth servers
//! that refuse, fail, hang or are not there. Every wait is a condition
//! polled with a deadline.

mod common;

use std::net::{IpAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::auth::{AuthServer, Mode, grant};
use common::pki::Pki;
use nsqlookupd::access::auth::{AuthClient, AuthError, AuthMethod, AuthOptions, AuthQuery};

/// Longest wait for anything that should happen.
const DEADLINE: Duration = Duration::from_secs(10);

fn options(addresses: &[String]) -> AuthOptions {
    AuthOptions {
        addresses: addresses.to_vec(),
        ..AuthOptions::default()
    }
}

fn client(addresses: &[String]) -> AuthClient {
    AuthClient::new(options(addresses)).expect("auth client")
}

fn query(secret: &str) -> AuthQuery<'_> {
    AuthQuery {
        remote_ip: "10.0.0.7".parse().unwrap(),
        tls: false,
        secret,
        common_name: "",
    }
}

fn stat(
    c: &AuthClient,
    f: fn(&nsqlookupd::access::auth::AuthStats) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    f(c.stats()).load(Ordering::Relaxed)
}

/// Polls `cond` (every 5 ms) until it holds; panics with `what` at the deadline.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An address where nothing listens (bound, then closed).
fn dead_address() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr.to_string()
}

#[tokio::test]
async fn get_sends_what_nsqd_sends_and_a_grant_comes_back() {
    let auth = AuthServer::start();
    auth.allow("s3cret", 60, "^orders$");
    let c = client(&[auth.address()]);
    let q = AuthQuery {
        remote_ip: "::ffff:192.0.2.5".parse().unwrap(),
        tls: true,
        secret: "s3cret",
        common_name: "client one",
    };
    let g = c.authorize(&q).await.expect("granted");
    assert_eq!(g.identity, "user-s3cret");
    assert_eq!(g.identity_url, "https://auth.test/user-s3cret");
    assert!(g.may_subscribe("orders"));
    assert!(!g.may_subscribe("billing"));
    let r = auth.last_request().unwrap();
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/auth");
    assert_eq!(
        r.query.as_deref(),
        Some("common_name=client+one&remote_ip=192.0.2.5&secret=s3cret&tls=true")
    );
    assert_eq!(
        r.accept.as_deref(),
        Some("application/vnd.nsq; version=1.0")
    );
    assert_eq!(
        r.param("remote_ip"),
        Some("192.0.2.5"),
        "IPv4-mapped sent as IPv4"
    );
    assert_eq!(stat(&c, |s| &s.queries_ok), 1);
}

#[tokio::test]
async fn post_sends_json_url_values_to_a_url_address_as_given() {
    let auth = AuthServer::start();
    auth.allow("p&ss word", 60, ".*");
    let c = AuthClient::new(AuthOptions {
        method: AuthMethod::Post,
        ..options(&[auth.url("/v1/check")])
    })
    .unwrap();
    c.authorize(&query("p&ss word")).await.expect("granted");
    let r = auth.last_request().unwrap();
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.path, "/v1/check",
        "a URL address keeps its path, no /auth"
    );
    assert_eq!(r.query, None);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        r.body,
        r#"{"common_name":[""],"remote_ip":["10.0.0.7"],"secret":["p&ss word"],"tls":["false"]}"#
    );
    assert_eq!(r.secret(), Some("p&ss word"));

    // A URL without a path is queried at `/`, as nsqd does.
    let c = client(&[auth.url("")]);
    c.authorize(&query("p&ss word")).await.expect("granted");
    assert_eq!(auth.last_request().unwrap().path, "/");
}

#[tokio::test]
async fn a_grant_is_cached_for_its_ttl_then_asked_again() {
    let auth = AuthServer::start();
    auth.allow("s", 1, ".*");
    let c = client(&[auth.address()]);
    let first = Instant::now();
    c.authorize(&query("s")).await.unwrap();
    c.authorize(&query("s")).await.unwrap();
    assert_eq!(
        auth.requests(),
        1,
        "the second call is answered by the cache"
    );
    assert_eq!(stat(&c, |s| &s.cache_hits), 1);
    assert_eq!(stat(&c, |s| &s.cache_entries), 1);
    // Asked again once the ttl (1 s) has passed, not before.
    let deadline = Instant::now() + DEADLINE;
    while auth.requests() < 2 {
        assert!(Instant::now() < deadline, "never asked again");
        c.authorize(&query("s")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        first.elapsed() >= Duration::from_secs(1),
        "asked again after {:?}, within the ttl",
        first.elapsed()
    );
}

#[tokio::test]
async fn the_key_is_secret_ip_tls_and_common_name() {
    let auth = AuthServer::start();
    auth.allow("s", 60, ".*");
    let c = client(&[auth.address()]);
    let base = query("s");
    let other_ip: IpAddr = "10.0.0.8".parse().unwrap();
    let variants = [
        base,
        AuthQuery {
            remote_ip: other_ip,
            ..base
        },
        AuthQuery { tls: true, ..base },
        AuthQuery {
            common_name: "cn",
            ..base
        },
    ];
    for q in &variants {
        c.authorize(q).await.unwrap();
    }
    assert_eq!(auth.requests(), 4, "each combination is asked");
    for q in &variants {
        c.authorize(q).await.unwrap();
    }
    assert_eq!(auth.requests(), 4, "and then cached");
}

#[tokio::test]
async fn concurrent_calls_with_one_key_share_one_query() {
    const N: u64 = 20;
    let auth = AuthServer::start();
    auth.allow("s", 60, ".*");
    auth.hold();
    let c = Arc::new(client(&[auth.address()]));
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.authorize(&query("s")).await.map(|g| g.identity.clone()) })
        })
        .collect();
    eventually("every call waiting on the query", || {
        stat(&c, |s| &s.cache_misses) == N && auth.requests() == 1
    })
    .await;
    assert_eq!(stat(&c, |s| &s.shared_queries), N - 1);
    assert_eq!(stat(&c, |s| &s.inflight), 1);
    auth.release();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "user-s");
    }
    assert_eq!(auth.requests(), 1);
    assert_eq!(stat(&c, |s| &s.queries_ok), 1);
    assert_eq!(stat(&c, |s| &s.inflight), 0);
}

#[tokio::test]
async fn a_caller_that_gives_up_cancels_nothing_for_the_others() {
    let auth = AuthServer::start();
    auth.allow("s", 60, ".*");
    auth.hold();
    let c = Arc::new(client(&[auth.address()]));
    let first = {
        let c = c.clone();
        tokio::spawn(async move { c.authorize(&query("s")).await.is_ok() })
    };
    eventually("the query sent", || auth.requests() == 1).await;
    let second = {
        let c = c.clone();
        tokio::spawn(async move { c.authorize(&query("s")).await.is_ok() })
    };
    eventually("the second call waiting", || {
        stat(&c, |s| &s.shared_queries) == 1
    })
    .await;
    first.abort();
    assert!(first.await.is_err(), "aborted");
    auth.release();
    assert!(second.await.unwrap(), "the query went on");
    assert_eq!(auth.requests(), 1);
    c.authorize(&query("s")).await.unwrap();
    assert_eq!(auth.requests(), 1, "its answer was cached");
}

#[tokio::test]
async fn the_cache_holds_at_most_cache_size_answers() {
    let auth = AuthServer::start();
    let secrets: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
    for s in &secrets {
        auth.allow(s, 60, ".*");
    }
    let c = AuthClient::new(AuthOptions {
        cache_size: 5,
        ..options(&[auth.address()])
    })
    .unwrap();
    for s in &secrets {
        c.authorize(&query(s)).await.unwrap();
        assert!(stat(&c, |s| &s.cache_entries) <= 5);
    }
    assert_eq!(stat(&c, |s| &s.cache_entries), 5);
    assert_eq!(auth.requests(), 20);
    // The newest five are cached, the oldest were dropped.
    for s in &secrets[15..] {
        c.authorize(&query(s)).await.unwrap();
    }
    assert_eq!(auth.requests(), 20);
    c.authorize(&query("s0")).await.unwrap();
    assert_eq!(auth.requests(), 21);
}

#[tokio::test]
async fn a_refusal_is_remembered_for_denied_ttl() {
    let auth = AuthServer::start();
    let c = AuthClient::new(AuthOptions {
        denied_ttl: Duration::from_millis(300),
        ..options(&[auth.address()])
    })
    .unwrap();
    let first = Instant::now();
    assert_eq!(
        c.authorize(&query("forged")).await.unwrap_err(),
        AuthError::Denied
    );
    assert_eq!(
        c.authorize(&query("forged")).await.unwrap_err(),
        AuthError::Denied
    );
    assert_eq!(auth.requests(), 1, "the refusal was cached");
    assert_eq!(stat(&c, |s| &s.queries_denied), 1);
    // Once it expires the auth server is asked again: now it grants.
    auth.allow("forged", 60, ".*");
    let deadline = Instant::now() + DEADLINE;
    loop {
        match c.authorize(&query("forged")).await {
            Ok(_) => break,
            Err(e) => assert_eq!(e, AuthError::Denied),
        }
        assert!(Instant::now() < deadline, "the refusal never expired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(first.elapsed() >= Duration::from_millis(300));
    assert_eq!(auth.requests(), 2);

    // denied_ttl zero: every call asks.
    let c = AuthClient::new(AuthOptions {
        denied_ttl: Duration::ZERO,
        ..options(&[auth.address()])
    })
    .unwrap();
    for _ in 0..3 {
        assert_eq!(
            c.authorize(&query("other")).await.unwrap_err(),
            AuthError::Denied
        );
    }
    assert_eq!(auth.requests_for("other"), 3);
}

#[tokio::test]
async fn invalid_answers_and_other_statuses_are_refusals() {
    let auth = AuthServer::start();
    let huge = format!(
        r#"{{"ttl": 60, "identity": "{}"}}"#,
        "x".repeat(1024 * 1024)
    );
    let cases: [(&str, u16, String); 6] = [
        (
            "status-500",
            500,
            grant(60, "x", &[(".*", &[".*"], &["subscribe"])]),
        ),
        ("status-401", 401, String::new()),
        ("not-json", 200, "<html>".into()),
        (
            "ttl-0",
            200,
            grant(0, "x", &[(".*", &[".*"], &["subscribe"])]),
        ),
        (
            "bad-pattern",
            200,
            grant(60, "x", &[("(", &[".*"], &["subscribe"])]),
        ),
        ("too-big", 200, huge),
    ];
    for (secret, status, body) in &cases {
        auth.set_reply(secret, *status, body.clone());
    }
    let c = client(&[auth.address()]);
    for (secret, _, _) in &cases {
        assert_eq!(
            c.authorize(&query(secret)).await.unwrap_err(),
            AuthError::Denied,
            "{secret}"
        );
    }
    assert_eq!(stat(&c, |s| &s.queries_denied), cases.len() as u64);
    assert_eq!(stat(&c, |s| &s.server_failures), 0);
}

#[tokio::test]
async fn nothing_listening_is_unavailable_and_never_cached() {
    let c = client(&[dead_address()]);
    for _ in 0..2 {
        assert_eq!(
            c.authorize(&query("s")).await.unwrap_err(),
            AuthError::Unavailable
        );
    }
    assert_eq!(stat(&c, |s| &s.queries_unavailable), 2, "asked each time");
    assert_eq!(stat(&c, |s| &s.cache_entries), 0);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_within_request_timeout() {
    let auth = AuthServer::start();
    auth.allow("s", 60, ".*");
    auth.set_mode(Mode::Hang);
    let timeout = Duration::from_millis(300);
    let c = AuthClient::new(AuthOptions {
        request_timeout: timeout,
        ..options(&[auth.address()])
    })
    .unwrap();
    let start = Instant::now();
    assert_eq!(
        c.authorize(&query("s")).await.unwrap_err(),
        AuthError::Unavailable
    );
    let took = start.elapsed();
    assert!(took >= timeout, "gave up after {took:?}");
    assert!(took < timeout + Duration::from_secs(2), "took {took:?}");
    assert_eq!(auth.requests(), 1);
    // Not cached: once the server answers again, so does the client.
    auth.set_mode(Mode::Answer);
    c.authorize(&query("s")).await.expect("granted");
}

#[tokio::test]
async fn a_connection_closed_unanswered_is_unavailable() {
    let auth = AuthServer::start();
    auth.allow("s", 60, ".*");
    auth.set_mode(Mode::Close);
    let c = client(&[auth.address()]);
    assert_eq!(
        c.authorize(&query("s")).await.unwrap_err(),
        AuthError::Unavailable
    );
    assert!(auth.requests() >= 1);
    auth.set_mode(Mode::Answer);
    c.authorize(&query("s")).await.expect("granted");
}

#[tokio::test]
async fn with_one_address_dead_every_query_is_answered_by_the_other() {
    let auth = AuthServer::start();
    let c = client(&[dead_address(), auth.address()]);
    for i in 0..20 {
        let secret = format!("s{i}");
        auth.allow(&secret, 60, ".*");
        c.authorize(&query(&secret)).await.expect("granted");
    }
    assert_eq!(auth.requests(), 20);
    assert_eq!(stat(&c, |s| &s.queries_ok), 20);
    // The dead one is picked first about half the time.
    assert!(stat(&c, |s| &s.server_failures) <= 20);
}

#[tokio::test]
async fn a_refusal_makes_it_try_the_next_server_as_nsqd() {
    let broken = AuthServer::start();
    broken.set_mode(Mode::Status(500));
    let good = AuthServer::start();
    let c = AuthClient::new(AuthOptions {
        denied_ttl: Duration::ZERO,
        ..options(&[broken.address(), good.address()])
    })
    .unwrap();
    for i in 0..10 {
        let secret = format!("s{i}");
        good.allow(&secret, 60, ".*");
        c.authorize(&query(&secret))
            .await
            .expect("granted by the good one");
    }
    assert_eq!(good.requests(), 10);
    // Refused by both: each was asked once, and the answer is a refusal.
    assert_eq!(
        c.authorize(&query("nobody")).await.unwrap_err(),
        AuthError::Denied
    );
    assert_eq!(good.requests_for("nobody"), 1);
    assert_eq!(broken.requests_for("nobody"), 1);
}

#[tokio::test]
async fn beyond_max_inflight_a_call_is_unavailable_at_once() {
    let auth = AuthServer::start();
    for s in ["a", "b", "c"] {
        auth.allow(s, 60, ".*");
    }
    auth.hold();
    let c = Arc::new(
        AuthClient::new(AuthOptions {
            max_inflight: 2,
            ..options(&[auth.address()])
        })
        .unwrap(),
    );
    let tasks: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|s| {
            let c = c.clone();
            tokio::spawn(async move { c.authorize(&query(s)).await.is_ok() })
        })
        .collect();
    eventually("two queries under way", || auth.requests() == 2).await;
    let start = Instant::now();
    assert_eq!(
        c.authorize(&query("c")).await.unwrap_err(),
        AuthError::Unavailable
    );
    assert!(start.elapsed() < Duration::from_secs(1), "not queued");
    assert_eq!(stat(&c, |s| &s.overloaded), 1);
    auth.release();
    for t in tasks {
        assert!(t.await.unwrap());
    }
    c.authorize(&query("c")).await.expect("room again");
}

#[tokio::test]
async fn an_https_auth_server_is_checked_against_the_ca_file() {
    let pki = Pki::generate();
    let auth = AuthServer::start_tls(&pki.server.cert, &pki.server.key);
    auth.allow("s", 60, ".*");
    let trusted = AuthClient::new(AuthOptions {
        tls_root_ca_file: Some(pki.ca.clone()),
        ..options(&[auth.url("/auth")])
    })
    .unwrap();
    trusted
        .authorize(&query("s"))
        .await
        .expect("granted over https");
    assert_eq!(auth.requests(), 1);

    let other_ca = AuthClient::new(AuthOptions {
        tls_root_ca_file: Some(pki.other_ca.clone()),
        ..options(&[auth.url("/auth")])
    })
    .unwrap();
    assert_eq!(
        other_ca.authorize(&query("s")).await.unwrap_err(),
        AuthError::Unavailable,
        "a server the CA did not sign is never asked"
    );
    assert_eq!(auth.requests(), 1);
}

/// Collects what the client logs, at debug level, on this thread (the
/// tests' runtime runs the query tasks on it too).
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_secret_is_never_logged() {
    const SECRET: &str = "hunter2-do-not-log";
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let refusing = AuthServer::start();
    refusing.set_reply(SECRET, 200, r#"{"ttl": 0, "identity": "x"}"#);
    let hanging = AuthServer::start();
    hanging.set_mode(Mode::Hang);
    let dead = dead_address();
    for method in [AuthMethod::Get, AuthMethod::Post] {
        let c = AuthClient::new(AuthOptions {
            method,
            denied_ttl: Duration::ZERO,
            request_timeout: Duration::from_millis(200),
            ..options(&[refusing.address(), hanging.address(), dead.clone()])
        })
        .unwrap();
        // Three times, so that each server is first at least once in all
        // likelihood; the warnings are rate-limited, the refusals not.
        for _ in 0..3 {
            assert_eq!(
                c.authorize(&query(SECRET)).await.unwrap_err(),
                AuthError::Denied
            );
        }
    }
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains(&refusing.address()),
        "the refusal is logged: {logs}"
    );
    assert!(logs.contains("invalid TTL"), "{logs}");
    assert!(
        !logs.contains("hunter2"),
        "the secret leaked into the logs: {logs}"
    );
}
