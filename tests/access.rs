//! Access control over HTTP, black-box: the real binary, real sockets.
//! Everything comes from 127.0.0.1, so "outside an allow-list" is a list
//! that leaves 127.0.0.0/8 out.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
    let header;
    let headers: &[(&str, &str)] = match auth {
        Some(a) => {
            header = [("Authorization", a)];
            &header
        }
        None => &[],
    };
    http_request(server.http_addr(), method, target, headers, None).expect("HTTP request")
}

fn assert_refused(r: &HttpResponse, status: u16, message: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({ "message": message }));
}

fn topics(server: &Server) -> Vec<String> {
    let v = http_get(server.http_addr(), "/topics").json();
    serde_json::from_value(v["topics"].clone()).unwrap()
}

/// The value of one series in `/metrics` (0 if absent).
fn metric(server: &Server, series: &str, auth: Option<&str>) -> f64 {
    let r = request(server, "GET", "/metrics", auth);
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
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
    assert_eq!(metric(&server, &series("no_credentials"), None), 1.0);
    assert_eq!(metric(&server, &series("bad_credentials"), None), 4.0);
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
