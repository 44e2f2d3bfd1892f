//! Black-box tests of HTTPS (`--tls-cert`, `--tls-key`, ...): real TLS
//! handshakes from a rustls client against the real binary on 127.0.0.1
//! ephemeral ports, with throw-away certificates made by `common::pki`.

mod common;

use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pki::{CertKey, Pki};
use common::{
    Exit, HTTP_TIMEOUT, HttpResponse, Listeners, Server, http_get, http_post, http_request,
    identify_command, read_http_response, run_to_exit, tcp_connect, tcp_roundtrip,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned, SupportedProtocolVersion,
};

/// How long a condition may take to become true.
const DEADLINE: Duration = Duration::from_secs(10);
/// How long a run that must fail at start may take.
const EXIT_DEADLINE: Duration = Duration::from_secs(10);

const LOCAL_TCP: &str = "--tcp-address=127.0.0.1:0";
const LOCAL_HTTP: &str = "--http-address=127.0.0.1:0";
const LOCAL_HTTPS: &str = "--https-address=127.0.0.1:0";

// ------------------------------------------------------------------ helpers

fn flag(name: &str, path: &Path) -> String {
    format!("--{name}={}", path.display())
}

/// The server with plain HTTP and HTTPS (`pki.server`'s certificate) plus
/// `extra`.
fn tls_server(pki: &Pki, extra: &[String]) -> Server {
    tls_server_with(&pki.server, extra)
}

fn tls_server_with(cert: &CertKey, extra: &[String]) -> Server {
    let mut args: Vec<String> = vec![
        LOCAL_TCP.into(),
        LOCAL_HTTP.into(),
        LOCAL_HTTPS.into(),
        flag("tls-cert", &cert.cert),
        flag("tls-key", &cert.key),
    ];
    args.extend_from_slice(extra);
    Server::start_listening(args, Listeners::Both)
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A client trusting `ca`, presenting `cert` if given, offering `http/1.1`.
fn client(ca: &Path, cert: Option<&CertKey>) -> Arc<ClientConfig> {
    client_with(ca, cert, rustls::DEFAULT_VERSIONS, &[b"http/1.1"])
}

fn client_with(
    ca: &Path,
    cert: Option<&CertKey>,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca) {
        roots.add(c).expect("a CA certificate");
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .expect("protocol versions")
            .with_root_certificates(roots);
    let mut config = match cert {
        Some(ck) => builder
            .with_client_auth_cert(
                certs(&ck.cert),
                PrivateKeyDer::from_pem_file(&ck.key).expect("a private key"),
            )
            .expect("a client certificate"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Connects and completes the handshake as far as the client sees it (with
/// TLS 1.3 the server refuses a client certificate after that: the first
/// read then fails).
fn tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<TlsStream> {
    let sock = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    sock.set_read_timeout(Some(HTTP_TIMEOUT))?;
    sock.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let name = ServerName::try_from("127.0.0.1").expect("an IP address");
    let conn = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
    let mut stream = StreamOwned::new(conn, sock);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// One request on a keep-alive connection, and its answer.
fn request(stream: &mut TlsStream, method: &str, target: &str) -> io::Result<HttpResponse> {
    request_with(stream, method, target, "")
}

/// The same with extra header lines (each ending in `\r\n`).
fn request_with(
    stream: &mut TlsStream,
    method: &str,
    target: &str,
    headers: &str,
) -> io::Result<HttpResponse> {
    let length = if method == "POST" {
        "Content-Length: 0\r\n"
    } else {
        ""
    };
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}{length}\r\n"
    )?;
    stream.flush()?;
    read_http_response(&mut BufReader::new(stream), method == "HEAD")
}

/// One request on a fresh HTTPS connection.
fn https(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    method: &str,
    target: &str,
) -> io::Result<HttpResponse> {
    let mut stream = tls_connect(addr, config)?;
    request(&mut stream, method, target)
}

/// `GET /ping` on a fresh HTTPS connection from a client trusting
/// `pki.ca` and presenting `cert`, if any.
fn ping(server: &Server, pki: &Pki, cert: Option<&CertKey>) -> io::Result<HttpResponse> {
    https(server.https_addr(), &client(&pki.ca, cert), "GET", "/ping")
}

/// Expects the handshake of [`ping`] with `cert` to fail, and the server to
/// count it as its first failure for `reason`.
fn ping_refused(server: &Server, pki: &Pki, cert: Option<&CertKey>, reason: &str) {
    let r = ping(server, pki, cert);
    assert!(r.is_err(), "{reason}: {r:?}");
    wait_for_sample(server, &failures(reason), 1.0);
}

/// The leaf certificate the server showed on `stream`.
fn server_certificate(stream: &TlsStream) -> CertificateDer<'static> {
    stream
        .conn
        .peer_certificates()
        .expect("a server certificate")[0]
        .clone()
}

/// The headers of an answer, without `Date` (which changes every second).
fn headers_but_date(r: &HttpResponse) -> Vec<(String, String)> {
    r.headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("date"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect()
}

/// The value of the sample `series` (name and labels, as written) in
/// `/metrics` text.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let value = l.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// `/metrics` over plain HTTP.
fn metrics(server: &Server) -> String {
    let r = http_get(server.http_addr(), "/metrics");
    assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
    r.text()
}

/// Polls `/metrics` until `series` has `want`; panics with the text after
/// [`DEADLINE`].
fn wait_for_sample(server: &Server, series: &str, want: f64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = metrics(server);
        if sample(&text, series) == Some(want) {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "{series} is {:?}, not {want}, after {DEADLINE:?}:\n{text}",
                sample(&text, series)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn failures(reason: &str) -> String {
    format!("nsqlookupd_tls_handshake_failures_total{{reason=\"{reason}\"}}")
}

/// Waits for a log line containing `needle`; panics with the log tail.
fn log_line(server: &Server, needle: &str) -> String {
    server
        .wait_for_log(DEADLINE, |l| l.contains(needle))
        .unwrap_or_else(|| {
            panic!(
                "no log line with {needle:?} in {DEADLINE:?}:\n{}",
                server.log_tail(30)
            )
        })
}

/// A played nsqd that has IDENTIFYed as `address` and REGISTERed `topic`.
fn registered_producer(server: &Server, address: &str, topic: &str) -> (TcpStream, Vec<u8>) {
    let mut stream = tcp_connect(server.tcp_addr(), true).expect("connect to the TCP port");
    let body = format!(
        r#"{{"broadcast_address":"{address}","hostname":"tls-test","tcp_port":4150,"http_port":4151,"version":"1.3.0"}}"#
    );
    let answer = tcp_roundtrip(&mut stream, &identify_command(body.as_bytes()));
    let ok = tcp_roundtrip(&mut stream, format!("REGISTER {topic}\n").as_bytes());
    assert_eq!(ok, b"OK", "REGISTER {topic}");
    (stream, answer)
}

/// Expects the server to close `stream` (end of stream or reset, no bytes)
/// within `within`; returns when it did.
fn closed_within(stream: &mut TcpStream, within: Duration) -> Instant {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => Instant::now(),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Instant::now(),
        Ok(n) => panic!("unexpected {n} bytes instead of a close"),
        Err(e) => panic!("not closed within {within:?}: {e}"),
    }
}

/// A directory for one test's files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("nsqlookupd-tls-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Replaces `to` with a copy of `from`, atomically (write, then rename).
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).expect("copy");
    std::fs::rename(&tmp, to).expect("rename");
}

fn send_signal(server: &Server, signal: libc::c_int) {
    // SAFETY: kill(2) on our own running child.
    let rc = unsafe { libc::kill(server.pid() as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({}, {signal})", server.pid());
}

fn not_after(cert: &CertificateDer<'_>) -> i64 {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).expect("a certificate");
    cert.validity().not_after.timestamp()
}

// ------------------------------------------------------------------ the API over HTTPS

#[test]
fn https_answers_the_same_bytes_as_http() {
    let pki = Pki::generate();
    let server = tls_server(&pki, &[]);
    let (_nsqd, _) = registered_producer(&server, "nsqd-1.example", "orders");
    let config = client(&pki.ca, None);
    let mut stream = tls_connect(server.https_addr(), &config).expect("handshake");
    assert_eq!(
        stream.conn.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "ALPN http/1.1"
    );
    assert_eq!(server_certificate(&stream), certs(&pki.server.cert)[0]);
    for (method, target) in [
        ("GET", "/lookup?topic=orders"),
        ("GET", "/lookup?topic=missing"),
        ("GET", "/lookup"),
        ("GET", "/topics"),
        ("GET", "/channels?topic=orders"),
        ("GET", "/nodes"),
        ("GET", "/info"),
        ("GET", "/ping"),
        ("GET", "/no/such/path"),
        ("GET", "/topic/create?topic=x"),
        ("POST", "/lookup?topic=orders"),
    ] {
        // The same keep-alive connection for every request.
        let over_tls = request(&mut stream, method, target)
            .unwrap_or_else(|e| panic!("{method} {target} over HTTPS: {e}"));
        let plain = http_request(server.http_addr(), method, target, &[], None)
            .unwrap_or_else(|e| panic!("{method} {target} over HTTP: {e}"));
        assert_eq!(over_tls.status, plain.status, "{method} {target}");
        assert_eq!(over_tls.reason, plain.reason, "{method} {target}");
        assert_eq!(over_tls.body, plain.body, "{method} {target}");
        // The plain request says `Connection: close`, which the answer echoes.
        let plain_headers: Vec<_> = headers_but_date(&plain)
            .into_iter()
            .filter(|(k, _)| k != "connection")
            .collect();
        assert_eq!(
            headers_but_date(&over_tls),
            plain_headers,
            "{method} {target}"
        );
    }
    // An admin write over HTTPS is one.
    let r = request(&mut stream, "POST", "/topic/create?topic=created_over_tls").unwrap();
    assert_eq!(r.status, 200);
    assert!(
        http_get(server.http_addr(), "/topics")
            .text()
            .contains("created_over_tls")
    );

    let text = metrics(&server);
    assert_eq!(
        sample(&text, "nsqlookupd_tls_handshakes_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "nsqlookupd_https_connections"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "nsqlookupd_https_connections_accepted_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "nsqlookupd_tls_certificate_not_after_seconds"),
        Some(not_after(&certs(&pki.server.cert)[0]) as f64)
    );
    for reason in [
        "timeout",
        "closed",
        "no_client_certificate",
        "bad_client_certificate",
        "alert",
        "protocol",
    ] {
        assert_eq!(
            sample(&text, &failures(reason)),
            Some(0.0),
            "{reason}: {text}"
        );
    }
    for result in ["ok", "failed"] {
        let series = format!("nsqlookupd_tls_certificate_reloads_total{{result=\"{result}\"}}");
        assert_eq!(sample(&text, &series), Some(0.0), "{text}");
    }
}

#[test]
fn without_tls_nothing_changes() {
    let server = Server::start();
    assert!(
        !server
            .logs()
            .iter()
            .any(|l| l.contains("HTTPS") || l.contains("TLS")),
        "{}",
        server.log_tail(20)
    );
    let text = metrics(&server);
    assert!(
        !text.contains("nsqlookupd_tls_") && !text.contains("nsqlookupd_https_"),
        "{text}"
    );
}

// ------------------------------------------------------------------ client certificates

#[test]
fn require_verify_accepts_only_certificates_from_the_ca() {
    let pki = Pki::generate();
    let server = tls_server(
        &pki,
        &[
            flag("tls-root-ca-file", &pki.ca),
            "--tls-client-auth-policy=require-verify".into(),
            "--log-level=debug".into(),
        ],
    );
    ping_refused(&server, &pki, None, "no_client_certificate");
    ping_refused(
        &server,
        &pki,
        Some(&pki.other_client),
        "bad_client_certificate",
    );

    let good = ping(&server, &pki, Some(&pki.client)).expect("a certificate of the CA");
    assert_eq!((good.status, good.text().as_str()), (200, "OK"));
    // The connection carries the verified common name.
    log_line(&server, "client certificate CN Some(\"client\")");
    // Throttled: the first failure was logged at once.
    log_line(&server, "TLS handshake(s) failed (last from 127.0.0.1:");
}

#[test]
fn a_root_ca_alone_verifies_a_certificate_only_if_one_is_sent() {
    let pki = Pki::generate();
    let server = tls_server(
        &pki,
        &[
            flag("tls-root-ca-file", &pki.ca),
            "--log-level=debug".into(),
        ],
    );
    let anonymous = ping(&server, &pki, None).expect("no certificate");
    assert_eq!(anonymous.status, 200);
    log_line(&server, "client certificate CN None");
    let good = ping(&server, &pki, Some(&pki.client)).expect("a certificate of the CA");
    assert_eq!(good.status, 200);
    log_line(&server, "client certificate CN Some(\"client\")");
    ping_refused(
        &server,
        &pki,
        Some(&pki.other_client),
        "bad_client_certificate",
    );
}

#[test]
fn require_wants_a_certificate_and_does_not_verify_it() {
    let pki = Pki::generate();
    let server = tls_server(
        &pki,
        &[
            "--tls-client-auth-policy=require".into(),
            "--log-level=debug".into(),
        ],
    );
    ping_refused(&server, &pki, None, "no_client_certificate");
    let unverified = ping(&server, &pki, Some(&pki.other_client)).expect("any certificate");
    assert_eq!(unverified.status, 200);
    // Not verified: no common name for access control to trust.
    log_line(&server, "client certificate CN None");
}

// ------------------------------------------------------------------ versions and ALPN

#[test]
fn tls_min_version_and_alpn() {
    let pki = Pki::generate();
    let tls12_only = client_with(&pki.ca, None, &[&rustls::version::TLS12], &[b"http/1.1"]);
    let tls13_only = client_with(&pki.ca, None, &[&rustls::version::TLS13], &[b"http/1.1"]);

    // The default, tls1.2: both.
    let server = tls_server(&pki, &[]);
    for config in [&tls12_only, &tls13_only] {
        let r = https(server.https_addr(), config, "GET", "/ping").expect("TLS 1.2 and 1.3");
        assert_eq!(r.status, 200);
    }
    // A client that speaks h2 only: no common protocol.
    let h2 = client_with(&pki.ca, None, rustls::DEFAULT_VERSIONS, &[b"h2"]);
    assert!(https(server.https_addr(), &h2, "GET", "/ping").is_err());
    wait_for_sample(&server, &failures("protocol"), 1.0);
    // No ALPN at all is fine.
    let no_alpn = client_with(&pki.ca, None, rustls::DEFAULT_VERSIONS, &[]);
    assert_eq!(
        https(server.https_addr(), &no_alpn, "GET", "/ping")
            .unwrap()
            .status,
        200
    );
    drop(server);

    let server = tls_server(&pki, &["--tls-min-version=tls1.3".into()]);
    assert!(https(server.https_addr(), &tls12_only, "GET", "/ping").is_err());
    assert_eq!(
        https(server.https_addr(), &tls13_only, "GET", "/ping")
            .unwrap()
            .status,
        200
    );
    drop(server);

    // nsqd's tls1.0 (its default) is accepted and means TLS 1.2, said at start.
    let server = tls_server(&pki, &["--tls-min-version=tls1.0".into()]);
    let warning = log_line(&server, "--tls-min-version=tls1.0");
    assert!(
        warning.contains("WARNING") && warning.contains("the minimum is TLS 1.2"),
        "{warning}"
    );
    assert_eq!(
        https(server.https_addr(), &tls12_only, "GET", "/ping")
            .unwrap()
            .status,
        200
    );
}

// ------------------------------------------------------------------ --tls-required

#[test]
fn tls_required_sends_plain_http_to_the_https_port_but_ping() {
    let pki = Pki::generate();
    let server = tls_server(&pki, &["--tls-required".into()]);
    let port = server.https_addr().port();
    let want = format!("{{\"message\": \"TLS_REQUIRED\", \"https_port\": {port}}}");
    for (method, target) in [
        ("GET", "/lookup?topic=orders"),
        ("GET", "/info"),
        ("GET", "/metrics"),
        ("GET", "/no/such/path"),
        ("POST", "/topic/create?topic=not_over_plain_http"),
        ("GET", "/ping/"),
    ] {
        let r = http_request(server.http_addr(), method, target, &[], None).unwrap();
        assert_eq!(r.status, 403, "{method} {target}");
        assert_eq!(r.text(), want, "{method} {target}: nsqd's bytes");
        assert_eq!(
            r.header("Content-Type"),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(r.header("X-NSQ-Content-Type"), Some("nsq; version=1.0"));
    }
    // Health probes stay on plain HTTP.
    let ping = http_get(server.http_addr(), "/ping");
    assert_eq!((ping.status, ping.text().as_str()), (200, "OK"));
    assert_eq!(
        http_get(server.http_addr(), "/ready").status,
        404,
        "standalone: no /ready"
    );

    // What NSQ's HTTP client does with the 403: the same request, https,
    // same host, the port from the body.
    let redirect = http_post(server.http_addr(), "/topic/create?topic=created_over_tls");
    let body: serde_json::Value = redirect.json();
    let https_port = body["https_port"].as_u64().expect("https_port") as u16;
    let addr = SocketAddr::new(server.http_addr().ip(), https_port);
    let config = client(&pki.ca, None);
    let r = https(
        addr,
        &config,
        "POST",
        "/topic/create?topic=created_over_tls",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let topics = https(addr, &config, "GET", "/topics").unwrap();
    assert_eq!(topics.text(), "{\"topics\":[\"created_over_tls\"]}");
    let scrape = https(addr, &config, "GET", "/metrics").unwrap();
    assert_eq!(scrape.status, 200, "HTTPS serves everything");
}

#[test]
fn plain_http_can_be_turned_off() {
    let pki = Pki::generate();
    let server = Server::start_listening(
        [
            LOCAL_TCP.to_owned(),
            "--http-address=".into(),
            LOCAL_HTTPS.into(),
            flag("tls-cert", &pki.server.cert),
            flag("tls-key", &pki.server.key),
        ],
        Listeners::HttpsOnly,
    );
    assert!(
        !server.logs().iter().any(|l| l.contains("HTTP: listening")),
        "{}",
        server.log_tail(20)
    );
    let r = https(server.https_addr(), &client(&pki.ca, None), "GET", "/ping").unwrap();
    assert_eq!(r.status, 200);
    // IDENTIFY gives nsqd the HTTPS port then (there is no other).
    let (_nsqd, answer) = registered_producer(&server, "nsqd-1.example", "t");
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["http_port"], u64::from(server.https_addr().port()));
}

// ------------------------------------------------------------------ reload

#[test]
fn sighup_swaps_the_certificate_for_new_connections_and_keeps_open_ones() {
    let pki = Pki::generate();
    let dir = TempDir::new("reload");
    let live = CertKey {
        cert: dir.path("cert.pem"),
        key: dir.path("key.pem"),
    };
    replace(&pki.server.cert, &live.cert);
    replace(&pki.server.key, &live.key);
    let mut server = tls_server_with(&live, &[]);
    let config = client(&pki.ca, None);
    let first = certs(&pki.server.cert)[0].clone();
    let second = certs(&pki.server2.cert)[0].clone();

    let mut open = tls_connect(server.https_addr(), &config).unwrap();
    assert_eq!(request(&mut open, "GET", "/ping").unwrap().status, 200);
    assert_eq!(server_certificate(&open), first);

    replace(&pki.server2.key, &live.key);
    replace(&pki.server2.cert, &live.cert);
    send_signal(&server, libc::SIGHUP);
    log_line(&server, "TLS: reloaded certificate");
    wait_for_sample(
        &server,
        "nsqlookupd_tls_certificate_reloads_total{result=\"ok\"}",
        1.0,
    );
    assert_eq!(
        sample(
            &metrics(&server),
            "nsqlookupd_tls_certificate_not_after_seconds"
        ),
        Some(not_after(&second) as f64)
    );

    let mut fresh = tls_connect(server.https_addr(), &config).unwrap();
    assert_eq!(
        server_certificate(&fresh),
        second,
        "a new connection gets the new certificate"
    );
    assert_eq!(request(&mut fresh, "GET", "/info").unwrap().status, 200);
    // The connection opened before the reload keeps working.
    assert_eq!(request(&mut open, "GET", "/info").unwrap().status, 200);
    assert_eq!(request(&mut open, "GET", "/ping").unwrap().text(), "OK");

    // A reload that fails keeps the certificate in use.
    std::fs::write(&live.key, b"not a key\n").unwrap();
    send_signal(&server, libc::SIGHUP);
    let line = log_line(
        &server,
        "TLS: reload failed, keeping the previous certificate",
    );
    assert!(
        line.contains("--tls-key=") && line.contains("no private key"),
        "{line}"
    );
    wait_for_sample(
        &server,
        "nsqlookupd_tls_certificate_reloads_total{result=\"failed\"}",
        1.0,
    );
    let after = tls_connect(server.https_addr(), &config).unwrap();
    assert_eq!(server_certificate(&after), second);
    // A key that does not match the certificate fails too.
    replace(&pki.server.key, &live.key);
    send_signal(&server, libc::SIGHUP);
    wait_for_sample(
        &server,
        "nsqlookupd_tls_certificate_reloads_total{result=\"failed\"}",
        2.0,
    );
    let mut after = tls_connect(server.https_addr(), &config).unwrap();
    assert_eq!(server_certificate(&after), second);
    assert_eq!(request(&mut after, "GET", "/ping").unwrap().status, 200);
    assert_eq!(server.try_exit_status(), None, "still running");
}

// ------------------------------------------------------------------ limits

#[test]
fn a_silent_or_slow_handshake_is_cut_off_after_the_header_timeout() {
    let pki = Pki::generate();
    let timeout = Duration::from_secs(1);
    let server = tls_server(&pki, &["--http-header-timeout=1s".into()]);
    let addr = server.https_addr();

    // Half of a real ClientHello.
    let mut hello = Vec::new();
    let mut conn = ClientConnection::new(
        client(&pki.ca, None),
        ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    conn.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 100, "a ClientHello of {} bytes", hello.len());

    let start = Instant::now();
    let mut silent = TcpStream::connect(addr).unwrap();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(&hello[..hello.len() / 2]).unwrap();
    // Closed after the timeout (checked to 1.5 times it, plus slack), not before.
    for stream in [&mut silent, &mut slow] {
        let closed = closed_within(stream, Duration::from_secs(5));
        let after = closed - start;
        assert!(after >= timeout, "closed after {after:?}");
        assert!(after < Duration::from_secs(4), "closed after {after:?}");
    }
    wait_for_sample(&server, &failures("timeout"), 2.0);
    // As on plain HTTP: a slow sender is a header-timeout hit, a silent
    // connection is not.
    wait_for_sample(
        &server,
        "nsqlookupd_limit_hits_total{limit=\"http_header_timeout\"}",
        1.0,
    );
    // A good client is not affected.
    let r = https(addr, &client(&pki.ca, None), "GET", "/ping").unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn the_connection_cap_is_one_pool_for_http_and_https() {
    let pki = Pki::generate();
    let server = tls_server(&pki, &["--max-http-connections=2".into()]);
    let config = client(&pki.ca, None);
    // One plain and one TLS keep-alive connection fill the pool.
    let mut plain = TcpStream::connect(server.http_addr()).unwrap();
    plain.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    write!(plain, "GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let r = read_http_response(&mut BufReader::new(&mut plain), false).unwrap();
    assert_eq!(r.status, 200);
    let mut held = tls_connect(server.https_addr(), &config).unwrap();
    assert_eq!(request(&mut held, "GET", "/ping").unwrap().status, 200);

    // Either listener refuses the next one at accept.
    let refused =
        tls_connect(server.https_addr(), &config).and_then(|mut s| request(&mut s, "GET", "/ping"));
    assert!(refused.is_err(), "a third connection (HTTPS): {refused:?}");
    let refused = http_request(server.http_addr(), "GET", "/ping", &[], None);
    assert!(refused.is_err(), "a third connection (HTTP): {refused:?}");
    let log = log_line(&server, "--max-http-connections=2 reached");
    assert!(
        log.contains("HTTPS: refused") || log.contains("HTTP: refused"),
        "{log}"
    );

    // Freeing the TLS slot lets a plain connection in.
    drop(held);
    let deadline = Instant::now() + DEADLINE;
    let text = loop {
        match http_request(server.http_addr(), "GET", "/metrics", &[], None) {
            Ok(r) if r.status == 200 => break r.text(),
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            other => panic!("no slot freed: {other:?}"),
        }
    };
    let refusals = sample(
        &text,
        "nsqlookupd_connections_refused_total{listener=\"http\",reason=\"max_connections\"}",
    )
    .unwrap();
    assert!(refusals >= 2.0, "{text}");
    assert!(
        server.logs().iter().any(|l| l.contains("HTTPS: refused")),
        "{}",
        server.log_tail(20)
    );
}

// ------------------------------------------------------------------ bad files and flags

/// Status 2, nothing on stdout, one line on stderr holding every needle.
fn assert_usage_error(args: &[String], exit: &Exit, needles: &[&str]) {
    let context = format!("args {args:?} -> {exit:?}");
    assert_eq!(exit.status.code(), Some(2), "exit status; {context}");
    assert_eq!(exit.stdout, "", "stdout; {context}");
    let lines: Vec<&str> = exit.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr; {context}");
    for needle in needles {
        assert!(lines[0].contains(needle), "lacks {needle:?}; {context}");
    }
}

#[test]
fn bad_tls_files_and_flags_exit_2_naming_the_flag() {
    let pki = Pki::generate();
    let dir = TempDir::new("bad-files");
    let garbage = dir.file("garbage.pem", b"hello, not a certificate\n");
    let bad_base64 = dir.file(
        "bad-base64.pem",
        b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    let missing = dir.path("missing.pem");
    let (cert, key) = (&pki.server.cert, &pki.server.key);
    let base = |extra: &[String]| -> Vec<String> {
        let mut args = vec![LOCAL_TCP.to_owned(), LOCAL_HTTP.into(), LOCAL_HTTPS.into()];
        args.extend_from_slice(extra);
        args
    };
    let pair = |c: &Path, k: &Path| vec![flag("tls-cert", c), flag("tls-key", k)];
    let with = |mut v: Vec<String>, more: &[String]| {
        v.extend_from_slice(more);
        v
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            pair(&missing, key),
            vec!["flag --tls-cert", "cannot read the file"],
        ),
        (
            pair(cert, &missing),
            vec!["flag --tls-key", "cannot read the file"],
        ),
        (
            pair(dir.0.as_path(), key),
            vec!["flag --tls-cert", "cannot read the file"],
        ),
        (
            pair(&garbage, key),
            vec!["flag --tls-cert", "no certificate in the file"],
        ),
        (pair(&bad_base64, key), vec!["flag --tls-cert", "not PEM"]),
        (
            pair(cert, cert),
            vec!["flag --tls-key", "no private key in the file"],
        ),
        (
            pair(cert, &garbage),
            vec!["flag --tls-key", "no private key in the file"],
        ),
        (
            pair(cert, &pki.client.key),
            vec!["flag --tls-key", "does not match the certificate"],
        ),
        (
            with(pair(cert, key), &[flag("tls-root-ca-file", &missing)]),
            vec!["flag --tls-root-ca-file", "cannot read the file"],
        ),
        (
            with(pair(cert, key), &[flag("tls-root-ca-file", key)]),
            vec!["flag --tls-root-ca-file", "no certificate in the file"],
        ),
        (
            vec![flag("tls-cert", cert)],
            vec!["flag --tls-cert needs --tls-key"],
        ),
        (
            vec![flag("tls-key", key)],
            vec!["flag --tls-key needs --tls-cert"],
        ),
        (
            with(
                pair(cert, key),
                &["--tls-client-auth-policy=require-verify".into()],
            ),
            vec!["flag --tls-client-auth-policy=require-verify needs --tls-root-ca-file"],
        ),
        (
            with(pair(cert, key), &["--tls-client-auth-policy=verify".into()]),
            vec!["--tls-client-auth-policy", "verify"],
        ),
        (
            with(pair(cert, key), &["--tls-min-version=ssl3.0".into()]),
            vec!["--tls-min-version", "ssl3.0"],
        ),
        (
            vec!["--tls-required".into()],
            vec!["flag --tls-required needs HTTPS"],
        ),
        (
            vec!["--tls-client-auth-policy=require".into()],
            vec!["flag --tls-client-auth-policy needs HTTPS"],
        ),
        (
            with(
                pair(cert, key),
                &["--https-address=".into(), "--tls-required".into()],
            ),
            vec![
                "flag --tls-required needs HTTPS",
                "--https-address is empty",
            ],
        ),
        (
            vec!["--http-address=".into()],
            vec!["flag --http-address is empty", "needs HTTPS"],
        ),
        (
            vec!["--tls-required=maybe".into()],
            vec!["--tls-required", "maybe"],
        ),
    ];
    for (extra, needles) in cases {
        let args = base(&extra);
        let exit = run_to_exit(&args, EXIT_DEADLINE);
        assert_usage_error(&args, &exit, &needles);
    }

    // The same checks in the config file name its key.
    let config = dir.file(
        "bad.toml",
        format!(
            "tcp_address = \"127.0.0.1:0\"\nhttp_address = \"127.0.0.1:0\"\nhttps_address = \"127.0.0.1:0\"\n\
             tls_cert = {:?}\ntls_key = {:?}\n",
            cert.display().to_string(),
            garbage.display().to_string()
        )
        .as_bytes(),
    );
    let args = vec![flag("config", &config)];
    let exit = run_to_exit(&args, EXIT_DEADLINE);
    assert_usage_error(&args, &exit, &["config option tls_key", "no private key"]);
}

#[test]
fn tls_options_from_the_config_file() {
    let pki = Pki::generate();
    let dir = TempDir::new("config");
    let config = dir.file(
        "tls.toml",
        format!(
            "tcp_address = \"127.0.0.1:0\"\nhttp_address = \"127.0.0.1:0\"\nhttps_address = \"127.0.0.1:0\"\n\
             tls_cert = {:?}\ntls_key = {:?}\ntls_root_ca_file = {:?}\n\
             tls_client_auth_policy = \"require-verify\"\ntls_min_version = \"tls1.3\"\ntls_required = true\n",
            pki.server.cert.display().to_string(),
            pki.server.key.display().to_string(),
            pki.ca.display().to_string()
        )
        .as_bytes(),
    );
    let server = Server::start_listening([flag("config", &config)], Listeners::Both);
    assert_eq!(
        http_get(server.http_addr(), "/info").status,
        403,
        "tls_required"
    );
    let addr = server.https_addr();
    assert!(
        https(addr, &client(&pki.ca, None), "GET", "/info").is_err(),
        "require-verify"
    );
    let tls12 = client_with(
        &pki.ca,
        Some(&pki.client),
        &[&rustls::version::TLS12],
        &[b"http/1.1"],
    );
    assert!(https(addr, &tls12, "GET", "/info").is_err(), "tls1.3");
    let good = https(addr, &client(&pki.ca, Some(&pki.client)), "GET", "/info").unwrap();
    assert_eq!(good.status, 200);
}

// ------------------------------------------------------------------ with access control

/// `--admin-cn`: a client certificate verified against the root CA and
/// named there administers (how nsqadmin, which sends no token, gets admin
/// rights); another verified certificate does not, and plain HTTP cannot.
/// Under `require-verify` the certificate's common name reaches the auth
/// server with `tls=true`, as nsqd sends it.
#[test]
fn a_verified_certificate_named_in_admin_cn_administers_and_its_cn_reaches_the_auth_server() {
    let pki = Pki::generate();
    let auth = common::auth::AuthServer::start();
    auth.allow("consumer-1", 3600, ".*");
    let server = tls_server(
        &pki,
        &[
            flag("tls-root-ca-file", &pki.ca),
            "--tls-client-auth-policy=require-verify".into(),
            "--admin-cn=client".into(),
            format!("--auth-http-address={}", auth.address()),
        ],
    );
    let https_addr = server.https_addr();
    let admin = client(&pki.ca, Some(&pki.client));
    let r = https(https_addr, &admin, "POST", "/topic/create?topic=made").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = https(https_addr, &admin, "GET", "/topics").unwrap();
    assert_eq!(
        r.json()["topics"],
        serde_json::json!(["made"]),
        "admins read"
    );

    // Verified, but not named in --admin-cn: no admin rights, no read
    // rights without a secret; with a granted secret it reads, and the
    // auth server is told its common name.
    let other = client(&pki.ca, Some(&pki.server2));
    let mut stream = tls_connect(https_addr, &other).unwrap();
    let r = request(&mut stream, "POST", "/topic/delete?topic=made").unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["message"], "AUTH_REQUIRED");
    let r = request(&mut stream, "GET", "/topics").unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    let secret = "Authorization: Bearer consumer-1\r\n";
    let r = request_with(&mut stream, "GET", "/topics", secret).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let q = auth.last_request().expect("the auth server was asked");
    assert_eq!(q.param("common_name"), Some("server-2"));
    assert_eq!(q.param("tls"), Some("true"));
    // The same secret on the same connection: remembered, not asked again.
    for _ in 0..3 {
        let r = request_with(&mut stream, "GET", "/lookup?topic=made", secret).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(auth.requests_for("consumer-1"), 1);

    // Plain HTTP carries no certificate: refused.
    let r = http_post(server.http_addr(), "/topic/delete?topic=made");
    assert_eq!(r.status, 401, "{}", r.text());
    let r = https(https_addr, &admin, "GET", "/topics").unwrap();
    assert_eq!(
        r.json()["topics"],
        serde_json::json!(["made"]),
        "nothing deleted"
    );
}
