//! Access control over HTTP, black-box: the real binary, real sockets.
//! Everything comes from 127.0.0.1, so "outside an allow-list" is a list
//! that leaves 127.0.0.0/8 out.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::auth::{AuthServer, Mode, grant};
use common::cluster::Nsqd;
use common::{
    HttpResponse, Server, http_get, http_request, identify_command, read_frame, tcp_connect,
};

const TOKEN: &str = "admin-token-0123456789abcdef";

/// A file holding `content`, mode 600, removed at the end of the process.
fn secret_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nsqlookupd-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(content.as_bytes()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

fn request(server: &Server, method: &str, target: &str, auth: Option<&str>) -> HttpResponse {
    let header = auth.map(|a| ("Authorization", a));
    http_request(server.http_addr(), method, target, header.as_slice(), None).expect("HTTP request")
}

fn assert_refused(r: &HttpResponse, status: u16, message: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({ "message": message }));
}

fn topics(server: &Server) -> Vec<String> {
    let v = http_get(server.http_addr(), "/topics").json();
    serde_json::from_value(v["topics"].clone()).unwrap()
}

/// The value of one series in `/metrics`.
fn metric(server: &Server, series: &str) -> f64 {
    common::cluster::metric(server, series).unwrap_or_else(|| panic!("no {series}"))
}

#[test]
fn admin_post_without_the_token_is_refused_and_changes_nothing() {
    let token = secret_file("admin-token", &format!("{TOKEN}\n"));
    let server = Server::start_with([format!("--admin-token-file={}", token.display())]);
    let bearer = format!("Bearer {TOKEN}");
    let r = request(&server, "POST", "/topic/create?topic=kept", Some(&bearer));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(topics(&server), ["kept"], "reads stay open");

    let r = request(&server, "POST", "/topic/delete?topic=kept", None);
    assert_refused(&r, 401, "AUTH_REQUIRED");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"nsqlookupd\"")
    );
    let forged = "Bearer admin-token-0123456789abcdeF";
    for (method, target, auth) in [
        ("POST", "/topic/delete?topic=kept", Some(forged)),
        ("POST", "/topic/tombstone?topic=kept&node=x:1", Some(forged)),
        (
            "POST",
            "/channel/create?topic=kept&channel=c",
            Some("Basic YTpi"),
        ),
        ("POST", "/topic/delete?topic=kept", Some(TOKEN)),
    ] {
        let r = request(&server, method, target, auth);
        assert_refused(&r, 401, "AUTH_FAILED");
    }
    assert_eq!(
        topics(&server),
        ["kept"],
        "refused requests changed nothing"
    );
    let channels = http_get(server.http_addr(), "/channels?topic=kept").json();
    assert_eq!(channels["channels"], serde_json::json!([]));

    // Counted by class and reason; neither secret is ever logged.
    let series = |reason: &str| {
        format!("nsqlookupd_http_refused_total{{class=\"admin\",reason=\"{reason}\"}}")
    };
    assert_eq!(metric(&server, &series("no_credentials")), 1.0);
    assert_eq!(metric(&server, &series("bad_credentials")), 4.0);
    assert!(
        server
            .wait_for_log(Duration::from_secs(2), |l| l.contains("refused")
                && l.contains("admin request"))
            .is_some(),
        "no refusal logged:\n{}",
        server.log_tail(10)
    );
    let logs = server.logs().join("\n");
    assert!(
        !logs.contains("0123456789abcde"),
        "a secret was logged:\n{logs}"
    );

    let r = request(&server, "POST", "/topic/delete?topic=kept", Some(&bearer));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(topics(&server).is_empty());
}

#[test]
fn allow_lists_close_each_class_to_other_peers() {
    // 127.0.0.1 is outside every list but the admin one.
    let server = Server::start_with([
        "--read-allow=10.0.0.0/8,fd00::/8",
        "--metrics-allow=192.168.0.0/16",
        "--admin-allow=127.0.0.0/8",
    ]);
    let outsider = Server::start_with(["--read-allow=10.0.0.0/8", "--metrics-allow=10.0.0.1"]);
    for target in [
        "/lookup?topic=t",
        "/topics",
        "/channels?topic=t",
        "/nodes",
        "/info",
        "/debug",
    ] {
        assert_refused(&request(&outsider, "GET", target, None), 403, "NOT_ALLOWED");
        // Admin rights include read rights.
        let r = request(&server, "GET", target, None);
        assert!(r.status == 200 || r.status == 404, "{target}: {}", r.text());
    }
    assert_refused(
        &request(&outsider, "GET", "/metrics", None),
        403,
        "NOT_ALLOWED",
    );
    assert_eq!(
        request(&outsider, "GET", "/ping", None).status,
        200,
        "/ping is always open"
    );
    // No admin setting on `outsider`: admin stays open, as today.
    let r = request(&outsider, "POST", "/topic/create?topic=t", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(request(&server, "GET", "/metrics", None).status, 200);
    // Routing answers (redirects, 404, 405) say nothing and stay as they were.
    assert_eq!(request(&outsider, "GET", "/nope", None).status, 404);
    assert_eq!(request(&outsider, "GET", "/topics/", None).status, 301);
}

#[test]
fn a_rogue_nsqd_from_outside_tcp_allow_never_appears_in_lookup() {
    let server = Server::start_with(["--tcp-allow=10.0.0.0/8"]);
    let mut rogue = tcp_connect(server.tcp_addr(), true).expect("connect");
    let body = br#"{"broadcast_address":"evil.example","hostname":"evil","tcp_port":4150,"http_port":4151,"version":"1.3.0"}"#;
    let _ = rogue.write_all(&identify_command(body));
    let _ = rogue.write_all(b"REGISTER payments\n");
    assert!(
        read_frame(&mut rogue, Duration::from_secs(2)).is_err(),
        "the rogue got an answer"
    );
    // Whatever it sent has been read by no one: nothing is registered.
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let r = http_get(server.http_addr(), "/lookup?topic=payments");
        assert_eq!(r.status, 404, "{}", r.text());
        assert!(topics(&server).is_empty());
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- auth server

/// A server asking `auth` about consumers' secrets, with two nsqd
/// registered: one carrying `orders` and `orders_eu` and `billing`, one
/// carrying `billing`.
fn with_auth(auth: &AuthServer, extra: &[&str]) -> (Server, Vec<Nsqd>) {
    let mut args = vec![format!("--auth-http-address={}", auth.address())];
    args.extend(extra.iter().map(|s| s.to_string()));
    let server = Server::start_with(args);
    let mut a = Nsqd::connect(&server, "nsqd-a", 4150);
    a.register("orders", Some("audit"));
    a.register("orders_eu", None);
    a.register("billing", None);
    let mut b = Nsqd::connect(&server, "nsqd-b", 5150);
    b.register("billing", None);
    (server, vec![a, b])
}

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

#[test]
fn a_granted_secret_reads_only_its_topics() {
    let auth = AuthServer::start();
    // Unanchored, as nsqd matches: `^orders` covers orders and orders_eu.
    auth.allow("consumer-1", 3600, "^orders");
    auth.set_answer(
        "publisher",
        grant(3600, "pub", &[("^billing$", &[".*"], &["publish"])]),
    );
    let (server, _nsqd) = with_auth(&auth, &[]);
    let me = bearer("consumer-1");
    let get = |target: &str, auth: &str| request(&server, "GET", target, Some(auth));

    let r = get("/lookup?topic=orders", &me);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        common::producer_addresses(&r.json()),
        ["nsqd-a"],
        "{}",
        r.text()
    );
    assert_eq!(
        get("/channels?topic=orders", &me).json()["channels"],
        serde_json::json!(["audit"])
    );
    // Another topic: refused, whether it exists or not.
    assert_refused(&get("/lookup?topic=billing", &me), 403, "FORBIDDEN");
    assert_refused(&get("/lookup?topic=nope", &me), 403, "FORBIDDEN");
    assert_refused(&get("/channels?topic=billing", &me), 403, "FORBIDDEN");
    assert_refused(&get("/debug", &me), 403, "FORBIDDEN");
    assert_eq!(get("/info", &me).status, 200);
    // The whole-registry views show only what the grant covers.
    let mut seen: Vec<String> =
        serde_json::from_value(get("/topics", &me).json()["topics"].clone()).unwrap();
    seen.sort();
    assert_eq!(seen, ["orders", "orders_eu"]);
    let nodes = get("/nodes", &me).json();
    let producers = nodes["producers"].as_array().unwrap();
    assert_eq!(producers.len(), 2, "every nsqd is listed: {nodes}");
    for p in producers {
        let topics = p["topics"].as_array().unwrap();
        assert_eq!(topics.len(), p["tombstones"].as_array().unwrap().len());
        assert!(
            topics
                .iter()
                .all(|t| t.as_str().unwrap().starts_with("orders")),
            "{nodes}"
        );
    }
    // A publish-only grant sees its topic but may not look it up.
    let publisher = bearer("publisher");
    assert_eq!(
        get("/topics", &publisher).json()["topics"],
        serde_json::json!(["billing"])
    );
    assert_refused(&get("/lookup?topic=billing", &publisher), 403, "FORBIDDEN");

    // One query per secret while its answer is fresh.
    assert_eq!(auth.requests_for("consumer-1"), 1);
    let q = auth.last_request().unwrap();
    assert_eq!(q.param("remote_ip"), Some("127.0.0.1"));
    assert_eq!(q.param("tls"), Some("false"));
    assert_eq!(q.param("common_name"), Some(""));

    let series = |reason: &str| {
        format!("nsqlookupd_http_refused_total{{class=\"read\",reason=\"{reason}\"}}")
    };
    // /metrics stays open (no --metrics-allow).
    assert_eq!(metric(&server, &series("forbidden")), 5.0);
    assert!(metric(&server, "nsqlookupd_auth_cache_hits_total") >= 8.0);
    assert_eq!(
        metric(&server, "nsqlookupd_auth_queries_total{outcome=\"ok\"}"),
        2.0
    );
    let logs = server.logs().join("\n");
    assert!(!logs.contains("consumer-1"), "a secret was logged:\n{logs}");
}

#[test]
fn missing_forged_and_revoked_secrets_are_refused() {
    let auth = AuthServer::start();
    auth.allow("short-lived", 1, ".*");
    let (server, _nsqd) = with_auth(&auth, &["--auth-denied-ttl=0"]);
    let lookup = |auth: Option<&str>| request(&server, "GET", "/lookup?topic=orders", auth);
    assert_refused(&lookup(None), 401, "AUTH_REQUIRED");
    let forged = lookup(Some("Bearer forged"));
    assert_refused(&forged, 401, "AUTH_FAILED");
    assert!(
        forged
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    assert_refused(&lookup(Some("Basic Zm9vOmJhcg==")), 401, "AUTH_FAILED");
    assert_eq!(auth.requests_for("forged"), 1);

    // Granted for 1 s, then revoked on the auth server: refused once the
    // cached answer is older than its ttl, and not before it is asked again.
    assert_eq!(lookup(Some("Bearer short-lived")).status, 200);
    let granted_at = Instant::now();
    auth.remove("short-lived");
    let deadline = granted_at + Duration::from_secs(5);
    let refused_at = loop {
        let r = lookup(Some("Bearer short-lived"));
        match r.status {
            200 => assert!(Instant::now() < deadline, "still granted after 5 s"),
            401 => break Instant::now(),
            _ => panic!("{}", r.text()),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        refused_at - granted_at >= Duration::from_millis(900),
        "refused before its ttl"
    );
    assert_eq!(
        auth.requests_for("short-lived"),
        2,
        "asked again only after the ttl"
    );
}

#[test]
fn an_unreachable_auth_server_fails_closed_without_stalling_others() {
    let auth = AuthServer::start();
    auth.allow("consumer-1", 3600, ".*");
    let token = secret_file("admin-token-auth", TOKEN);
    let token_flag = format!("--admin-token-file={}", token.display());
    let (server, _nsqd) = with_auth(&auth, &[&token_flag, "--http-client-request-timeout=1s"]);
    auth.set_mode(Mode::Hang);
    let started = Instant::now();
    let addr = server.http_addr();
    let waiting = std::thread::spawn(move || {
        let r = http_request(
            addr,
            "GET",
            "/lookup?topic=orders",
            &[("Authorization", "Bearer consumer-1")],
            None,
        )
        .unwrap();
        (r, started.elapsed())
    });
    assert!(
        auth.wait_for_requests(1, Duration::from_secs(5)),
        "auth server not asked"
    );
    // Meanwhile a request that needs no auth server (the admin token) is
    // answered at once, and /ping too.
    let t = Instant::now();
    let admin = bearer(TOKEN);
    assert_eq!(
        request(&server, "GET", "/lookup?topic=orders", Some(&admin)).status,
        200
    );
    assert_eq!(request(&server, "GET", "/ping", None).status, 200);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    let (r, took) = waiting.join().unwrap();
    assert_refused(&r, 503, "AUTH_UNAVAILABLE");
    assert!(took < Duration::from_secs(3), "took {took:?}");

    auth.set_mode(Mode::Close);
    assert_refused(
        &request(&server, "GET", "/topics", Some("Bearer consumer-1")),
        503,
        "AUTH_UNAVAILABLE",
    );
    // Back: granted again.
    auth.set_mode(Mode::Answer);
    assert_eq!(
        request(
            &server,
            "GET",
            "/lookup?topic=orders",
            Some("Bearer consumer-1")
        )
        .status,
        200
    );
}
