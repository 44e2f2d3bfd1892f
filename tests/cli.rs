//! Black-box tests of the command line, the config file, logging, start-up
//! failures and shutdown, run against the real `nsqlookupd` binary on
//! 127.0.0.1 ephemeral ports.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::{
    Exit, Server, http_get, http_post, identify_command, producer_addresses, run_to_exit,
    tcp_connect, tcp_roundtrip,
};
use serde_json::Value;

/// How long a run that must end by itself (bad flags, `--help`, a port in
/// use) may take before it counts as hanging.
const EXIT_DEADLINE: Duration = Duration::from_secs(10);
/// Slack on top of a registry timing before a poll gives up.
const TIMING_SLACK: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------ helpers

/// Listen addresses on 127.0.0.1, so that a run that wrongly starts the
/// server never binds a public interface.
const LOCAL_TCP: &str = "--tcp-address=127.0.0.1:0";
const LOCAL_HTTP: &str = "--http-address=127.0.0.1:0";

/// A temporary directory unique to one test, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("nsqlookupd-cli-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config_flag(path: &Path) -> String {
    format!("--config={}", path.display())
}

/// Asserts a usage error: status 2, nothing on stdout, exactly one non-empty
/// line on stderr, containing every one of `needles`.
fn assert_usage_error(args: &[&str], exit: &Exit, needles: &[&str]) {
    let context = format!("args {args:?} -> {exit:?}");
    assert_eq!(exit.status.code(), Some(2), "exit status; {context}");
    assert_eq!(exit.stdout, "", "stdout must be empty; {context}");
    let lines: Vec<&str> = exit.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr; {context}");
    assert!(!lines[0].trim().is_empty(), "empty error line; {context}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "error line lacks {needle:?}; {context}"
        );
    }
}

fn identify_body(broadcast_address: &str) -> Vec<u8> {
    format!(
        r#"{{"broadcast_address":"{broadcast_address}","hostname":"cli-test-host","tcp_port":4150,"http_port":4151,"version":"1.3.0"}}"#
    )
    .into_bytes()
}

/// A TCP client that has IDENTIFYed as `broadcast_address` (tcp 4150, http
/// 4151) and REGISTERed `topic`; returns the stream and the IDENTIFY answer.
fn registered_producer(
    server: &Server,
    broadcast_address: &str,
    topic: &str,
) -> (TcpStream, Value) {
    let mut stream = tcp_connect(server.tcp_addr(), true).expect("connect to the TCP port");
    let answer = tcp_roundtrip(
        &mut stream,
        &identify_command(&identify_body(broadcast_address)),
    );
    let answer: Value = serde_json::from_slice(&answer).unwrap_or_else(|e| {
        panic!(
            "IDENTIFY answer is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&answer)
        )
    });
    let ok = tcp_roundtrip(&mut stream, format!("REGISTER {topic}\n").as_bytes());
    assert_eq!(ok, b"OK", "REGISTER {topic}");
    (stream, answer)
}

fn ping(stream: &mut TcpStream) {
    assert_eq!(tcp_roundtrip(stream, b"PING\n"), b"OK", "PING");
}

/// The broadcast addresses `/lookup?topic=` lists right now.
fn lookup_producers(server: &Server, topic: &str) -> Vec<String> {
    let r = http_get(server.http_addr(), &format!("/lookup?topic={topic}"));
    assert_eq!(r.status, 200, "GET /lookup?topic={topic}: {}", r.text());
    producer_addresses(&r.json())
}

/// Polls `/lookup?topic=` until `want(producers)` holds, calling `tick`
/// between polls; returns the time it took from `since`. Panics after
/// `deadline` (measured from `since`).
fn poll_lookup(
    server: &Server,
    topic: &str,
    since: Instant,
    deadline: Duration,
    what: &str,
    want: impl Fn(&[String]) -> bool,
    mut tick: impl FnMut(),
) -> Duration {
    loop {
        let producers = lookup_producers(server, topic);
        if want(&producers) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < deadline,
            "{what}: not seen within {deadline:?}; /lookup producers now {producers:?}\n--- server log (tail) ---\n{}",
            server.log_tail(20)
        );
        tick();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Proves the tombstone lifetime in force is `lifetime`: a producer of
/// `topic` (registered by `stream`, broadcast address `node_host`, HTTP port
/// 4151) tombstoned through `POST /topic/tombstone` vanishes from `/lookup`
/// at once and comes back once, and only once, `lifetime` has passed.
/// PINGs over `stream` keep the producer active meanwhile.
fn assert_tombstone_lifetime(
    server: &Server,
    stream: &mut TcpStream,
    node_host: &str,
    topic: &str,
    lifetime: Duration,
) {
    let listed = |p: &[String]| p.iter().any(|a| a == node_host);
    assert!(
        listed(&lookup_producers(server, topic)),
        "the registered producer is not listed before the tombstone"
    );
    let tombstoned = Instant::now();
    let r = http_post(
        server.http_addr(),
        &format!("/topic/tombstone?topic={topic}&node={node_host}:4151"),
    );
    assert_eq!(r.status, 200, "POST /topic/tombstone: {}", r.text());
    let hidden = lookup_producers(server, topic);
    assert!(
        !listed(&hidden) || tombstoned.elapsed() >= lifetime,
        "a tombstoned producer is still listed by /lookup: {hidden:?}"
    );
    let back = poll_lookup(
        server,
        topic,
        tombstoned,
        lifetime + TIMING_SLACK,
        "the tombstoned producer listed again",
        listed,
        || ping(stream),
    );
    // The server tombstoned it after `tombstoned`, on the same monotonic
    // clock: it cannot be listed again earlier than `lifetime` after that.
    assert!(
        back >= lifetime,
        "the tombstone expired after {back:?}, before its lifetime {lifetime:?}"
    );
}

/// `[prefix]YYYY/MM/DD hh:mm:ss.micros LEVEL: ` at the start of `line`,
/// checked by hand (field by field, with plausible ranges).
fn has_log_header(line: &str, prefix: &str, level: &str) -> bool {
    let Some(rest) = line.strip_prefix(prefix) else {
        return false;
    };
    let b = rest.as_bytes();
    // "2026/11/24 20:28:25.386586" is 26 bytes.
    const SHAPE: &[u8] = b"dddd/dd/dd dd:dd:dd.dddddd";
    if b.len() < SHAPE.len() {
        return false;
    }
    let shape_ok = SHAPE.iter().zip(b).all(|(&s, &c)| match s {
        b'd' => c.is_ascii_digit(),
        other => c == other,
    });
    if !shape_ok {
        return false;
    }
    let num = |from: usize, len: usize| rest[from..from + len].parse::<u32>().unwrap();
    let (month, day, hour, minute, second) =
        (num(5, 2), num(8, 2), num(11, 2), num(14, 2), num(17, 2));
    let plausible = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second < 61;
    plausible && rest[SHAPE.len()..].starts_with(&format!(" {level}: "))
}

fn exited_successfully(status: ExitStatus) -> bool {
    status.code() == Some(0)
}

// ------------------------------------------------------------------ 1. version, help

#[test]
fn version_prints_one_line_and_exits_0() {
    for flag in ["--version", "-version"] {
        let exit = run_to_exit([flag], EXIT_DEADLINE);
        assert!(exited_successfully(exit.status), "{flag}: {exit:?}");
        let lines: Vec<&str> = exit.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{flag}: one line on stdout: {exit:?}");
        assert!(
            lines[0].starts_with("nsqlookupd v1.3.0 ("),
            "{flag}: version line {:?}",
            lines[0]
        );
        assert_eq!(exit.stderr, "", "{flag}: nothing on stderr");
    }
}

/// `--version` names the exact commit the binary was built from (when
/// built in a git checkout) and says `-dirty` when the tree differed, and
/// `/metrics`' build info says the same.
#[test]
fn version_names_the_commit_and_whether_the_tree_was_dirty() {
    let exit = run_to_exit(["--version"], EXIT_DEADLINE);
    let line = exit.stdout.trim();
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let Some(head) = head else {
        assert!(line.contains("commit unknown"), "{line}");
        return;
    };
    assert_eq!(head.len(), 40);
    let clean = format!("commit {head}, ");
    let dirty = format!("commit {head}-dirty, ");
    assert!(
        line.contains(&clean) || line.contains(&dirty),
        "{line} (HEAD {head})"
    );
    let server = Server::start();
    let metrics = common::http_get(server.http_addr(), "/metrics").text();
    let info = metrics
        .lines()
        .find(|l| l.starts_with("nsqlookupd_build_info{"))
        .expect("build info");
    assert!(info.contains(&format!("git_commit=\"{head}\"")), "{info}");
    let flag = if line.contains(&dirty) {
        "true"
    } else {
        "false"
    };
    assert!(
        info.contains(&format!("git_dirty=\"{flag}\"")),
        "{info} vs {line}"
    );
}

#[test]
fn help_lists_every_flag_with_its_default_and_the_groups() {
    let exit = run_to_exit(["--help"], EXIT_DEADLINE);
    assert!(exited_successfully(exit.status), "--help: {exit:?}");
    let help = &exit.stdout;
    for group in [
        "Listeners",
        "Registry timings",
        "Limits",
        "Logging",
        "Cluster (etcd)",
        "TLS",
    ] {
        assert!(
            help.lines().any(|l| l.trim_end() == format!("{group}:")),
            "--help lacks the group heading {group:?}:\n{help}"
        );
    }
    // Each flag's entry runs from its name to the next line that starts
    // another flag; whitespace is normalized so that wrapping does not matter.
    let entry = |flag: &str| -> String {
        let lines: Vec<&str> = help.lines().collect();
        let start = lines
            .iter()
            .position(|l| {
                l.trim_start()
                    .split([' ', ',', '['])
                    .any(|word| word == flag)
            })
            .unwrap_or_else(|| panic!("--help does not list {flag}:\n{help}"));
        let mut text = lines[start].to_owned();
        for l in &lines[start + 1..] {
            let t = l.trim_start();
            if t.is_empty() || t.starts_with('-') || !l.starts_with(' ') {
                break;
            }
            text.push(' ');
            text.push_str(t);
        }
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let with_defaults = [
        ("--tcp-address", "0.0.0.0:4160"),
        ("--http-address", "0.0.0.0:4161"),
        ("--broadcast-address", "the OS hostname"),
        ("--inactive-producer-timeout", "5m0s"),
        ("--tombstone-lifetime", "45s"),
        ("--max-command-size", "4096"),
        ("--max-identify-body-size", "65536"),
        ("--log-level", "info"),
        ("--log-prefix", "\"[nsqlookupd] \""),
        ("--verbose", "false"),
        ("--etcd-endpoints", "none, standalone"),
        ("--etcd-prefix", "/nsqlookupd"),
        ("--etcd-lease-ttl", "1m0s"),
        ("--etcd-max-txn-ops", "128"),
        ("--etcd-username", "none"),
        ("--etcd-password-file", "none"),
        ("--etcd-cacert", "none"),
        ("--etcd-cert", "none"),
        ("--etcd-key", "none"),
        ("--https-address", "0.0.0.0:4162"),
        ("--tls-cert", "none, no HTTPS"),
        ("--tls-key", "none"),
        ("--tls-root-ca-file", "none"),
        (
            "--tls-client-auth-policy",
            "none asked; verified if sent when --tls-root-ca-file is set",
        ),
        ("--tls-min-version", "tls1.2"),
        ("--tls-required", "false"),
    ];
    for (flag, default) in with_defaults {
        let text = entry(flag);
        assert!(
            text.contains(&format!("[default: {default}]")),
            "--help entry of {flag} lacks [default: {default}]: {text:?}"
        );
    }
    // Flags without a default value.
    let no_default = ["--config", "--version", "--help"];
    for flag in no_default {
        entry(flag);
    }
    // Any other flag listed (flags added later included) shows its default.
    let listed: Vec<&str> = help
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("--") || l.starts_with("-h, "))
        .filter_map(|l| l.split([' ', ',', '[']).find(|w| w.starts_with("--")))
        .collect();
    assert!(
        listed.len() >= with_defaults.len() + no_default.len(),
        "{listed:?}"
    );
    for flag in listed {
        if !no_default.contains(&flag) {
            let text = entry(flag);
            assert!(
                text.contains("[default: "),
                "--help entry of {flag} shows no default: {text:?}"
            );
        }
    }
}

// ------------------------------------------------------------------ 2. usage errors

#[test]
fn bad_command_lines_exit_2_with_one_line_naming_the_flag() {
    let cases: &[(&[&str], &[&str])] = &[
        (&[LOCAL_TCP, LOCAL_HTTP, "--bogus"], &["bogus"]),
        (&[LOCAL_TCP, LOCAL_HTTP, "-bogus"], &["bogus"]),
        (
            &[LOCAL_TCP, LOCAL_HTTP, "--tombstone-lifetime=abc"],
            &["tombstone-lifetime", "abc"],
        ),
        (
            &[LOCAL_TCP, LOCAL_HTTP, "--inactive-producer-timeout", "5"],
            &["inactive-producer-timeout", "5"],
        ),
        (
            &[LOCAL_TCP, LOCAL_HTTP, "--log-level=loud"],
            &["log-level", "loud"],
        ),
        (
            &[LOCAL_TCP, LOCAL_HTTP, "--max-command-size=0"],
            &["max-command-size"],
        ),
        (
            &[LOCAL_TCP, LOCAL_HTTP, "--max-registrations=0"],
            &["max-registrations"],
        ),
        (
            &[LOCAL_TCP, LOCAL_HTTP, "--max-registrations=lots"],
            &["max-registrations", "lots"],
        ),
        (&[LOCAL_TCP, LOCAL_HTTP, "--max-keys=-1"], &["max-keys"]),
        (&[LOCAL_HTTP, "--tcp-address"], &["tcp-address"]),
        (
            &[LOCAL_TCP, LOCAL_HTTP, "--tcp-allow=10.0.0.0/33"],
            &["tcp-allow", "10.0.0.0/33"],
        ),
        (
            &[LOCAL_TCP, LOCAL_HTTP, "--tcp-allow=10.0.0.0/8,nsqd.example"],
            &["tcp-allow", "nsqd.example"],
        ),
        (
            &[LOCAL_TCP, LOCAL_HTTP, "stray-argument"],
            &["stray-argument"],
        ),
    ];
    for (args, needles) in cases {
        let exit = run_to_exit(*args, EXIT_DEADLINE);
        assert_usage_error(args, &exit, needles);
    }
}

/// Every `--etcd-*` flag with a bad value, and each check across them: exit
/// 2 with one line naming the flag. All of these fail at parse time, before
/// anything would connect to etcd.
#[test]
fn bad_etcd_flags_exit_2_with_one_line_naming_the_flag() {
    let dir = TempDir::new("etcd-flags");
    let pem = dir.file("client.pem", "not checked at parse time\n");
    let password = dir.file("password", "s3cret\n");
    let empty = dir.file("empty-password", "\n");
    let missing = dir.0.join("missing.pem");
    let (pem, password, empty, missing) = (
        pem.display().to_string(),
        password.display().to_string(),
        empty.display().to_string(),
        missing.display().to_string(),
    );
    let endpoint = "--etcd-endpoints=http://127.0.0.1:2379".to_owned();
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            vec!["--etcd-endpoints=127.0.0.1:2379".into()],
            vec!["--etcd-endpoints", "127.0.0.1:2379"],
        ),
        (
            vec!["--etcd-endpoints=ftp://etcd:2379".into()],
            vec!["--etcd-endpoints", "ftp://etcd:2379"],
        ),
        (
            vec!["--etcd-endpoints=http://etcd".into()],
            vec!["--etcd-endpoints", "port"],
        ),
        (
            vec!["--etcd-endpoints=http://a:2379,https://b:2379".into()],
            vec!["--etcd-endpoints", "mixes"],
        ),
        (vec!["--etcd-endpoints".into()], vec!["--etcd-endpoints"]),
        (vec!["--etcd-prefix=/".into()], vec!["--etcd-prefix"]),
        (vec!["--etcd-prefix=/a b".into()], vec!["--etcd-prefix"]),
        (
            vec!["--etcd-lease-ttl=soon".into()],
            vec!["--etcd-lease-ttl", "soon"],
        ),
        (
            vec!["--etcd-lease-ttl=4s".into()],
            vec!["--etcd-lease-ttl", "5s"],
        ),
        (
            vec!["--etcd-lease-ttl=10500ms".into()],
            vec!["--etcd-lease-ttl", "seconds"],
        ),
        (
            vec!["--etcd-max-txn-ops=0".into()],
            vec!["--etcd-max-txn-ops"],
        ),
        (
            vec!["--etcd-max-txn-ops=many".into()],
            vec!["--etcd-max-txn-ops", "many"],
        ),
        (
            vec![endpoint.clone(), "--etcd-username=nsq".into()],
            vec!["--etcd-username", "--etcd-password-file"],
        ),
        (
            vec![endpoint.clone(), format!("--etcd-password-file={password}")],
            vec!["--etcd-password-file", "--etcd-username"],
        ),
        (
            vec![
                endpoint.clone(),
                "--etcd-username=nsq".into(),
                format!("--etcd-password-file={missing}"),
            ],
            vec!["--etcd-password-file", &missing],
        ),
        (
            vec![
                endpoint.clone(),
                "--etcd-username=nsq".into(),
                format!("--etcd-password-file={empty}"),
            ],
            vec!["--etcd-password-file"],
        ),
        (
            vec![endpoint.clone(), format!("--etcd-cacert={missing}")],
            vec!["--etcd-cacert", &missing],
        ),
        (
            vec![endpoint.clone(), format!("--etcd-cert={pem}")],
            vec!["--etcd-cert", "--etcd-key"],
        ),
        (
            vec![endpoint.clone(), format!("--etcd-key={pem}")],
            vec!["--etcd-key", "--etcd-cert"],
        ),
        (
            vec![
                endpoint.clone(),
                format!("--etcd-cert={missing}"),
                format!("--etcd-key={pem}"),
            ],
            vec!["--etcd-cert", &missing],
        ),
        (
            vec![
                endpoint.clone(),
                format!("--etcd-cert={pem}"),
                format!("--etcd-key={missing}"),
            ],
            vec!["--etcd-key", &missing],
        ),
        // A client certificate needs TLS: https endpoints or a CA.
        (
            vec![
                endpoint.clone(),
                format!("--etcd-cert={pem}"),
                format!("--etcd-key={pem}"),
            ],
            vec!["--etcd-cert", "https"],
        ),
    ];
    for (flags, needles) in &cases {
        let mut args = vec![LOCAL_TCP, LOCAL_HTTP];
        args.extend(flags.iter().map(String::as_str));
        let exit = run_to_exit(&args, EXIT_DEADLINE);
        assert_usage_error(&args, &exit, needles);
    }
}

/// The access flags: bad CIDRs, common names and token files exit 2 with
/// one line naming the flag, and never echo the token.
#[test]
fn bad_access_flags_exit_2_with_one_line_naming_the_flag() {
    let dir = TempDir::new("access-flags");
    let short = dir.file("short", "0123456789\n").display().to_string();
    let spaced = dir
        .file("spaced", "0123456789 abcdefghij\n")
        .display()
        .to_string();
    let missing = dir.0.join("missing").display().to_string();
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            "--read-allow=10.0.0.0/33".into(),
            vec!["read-allow", "10.0.0.0/33"],
        ),
        ("--admin-allow=lan".into(), vec!["admin-allow", "lan"]),
        ("--metrics-allow=".into(), vec!["metrics-allow"]),
        ("--admin-cn=a,,b".into(), vec!["admin-cn"]),
        (
            format!("--admin-token-file={missing}"),
            vec!["--admin-token-file", &missing],
        ),
        (
            format!("--admin-token-file={short}"),
            vec!["--admin-token-file", "16"],
        ),
        (
            format!("--admin-token-file={spaced}"),
            vec!["--admin-token-file", "printable"],
        ),
    ];
    for (flag, needles) in &cases {
        let args = [LOCAL_TCP, LOCAL_HTTP, flag.as_str()];
        let exit = run_to_exit(args, EXIT_DEADLINE);
        assert_usage_error(&args, &exit, needles);
        assert!(
            !exit.stderr.contains("0123456789"),
            "token echoed: {}",
            exit.stderr
        );
    }
}

// ------------------------------------------------------------------ 3. Go flag syntax

#[test]
fn go_flag_syntax_starts_the_server_and_the_tombstone_lifetime_applies() {
    let server = Server::start_args([
        "-tcp-address=127.0.0.1:0",
        "--http-address",
        "127.0.0.1:0",
        "-tombstone-lifetime",
        "1s",
    ]);
    // The defaults are 0.0.0.0:4160 and 0.0.0.0:4161: both flags were read.
    assert_eq!(server.tcp_addr().ip().to_string(), "127.0.0.1");
    assert_eq!(server.http_addr().ip().to_string(), "127.0.0.1");
    assert_eq!(http_get(server.http_addr(), "/ping").status, 200);
    let (mut stream, _) = registered_producer(&server, "go-syntax.test", "go_syntax");
    assert_tombstone_lifetime(
        &server,
        &mut stream,
        "go-syntax.test",
        "go_syntax",
        Duration::from_secs(1),
    );
}

// ------------------------------------------------------------------ 4. config file

#[test]
fn config_file_values_apply_and_the_command_line_wins() {
    let dir = TempDir::new("precedence");
    let inactive = Duration::from_secs(2);
    let path = dir.file(
        "nsqlookupd.toml",
        "tcp_address = \"127.0.0.1:0\"\n\
         inactive_producer_timeout = \"2s\"\n\
         tombstone_lifetime = \"1s\"\n\
         log_prefix = \"[from-file] \"\n\
         broadcast_address = \"file-broadcast.test\"\n",
    );
    let server = Server::start_args([
        config_flag(&path).as_str(),
        LOCAL_HTTP,
        "--log-prefix=[from-cli] ",
    ]);

    // tcp_address from the file (the default is 0.0.0.0:4160).
    assert_eq!(server.tcp_addr().ip().to_string(), "127.0.0.1");
    assert_ne!(server.tcp_addr().port(), 4160);

    // log_prefix: the command line wins over the file.
    let logs = server.logs();
    assert!(!logs.is_empty());
    for line in &logs {
        assert!(
            line.starts_with("[from-cli] "),
            "log line without the command-line prefix: {line:?}\n{logs:#?}"
        );
    }

    // broadcast_address from the file, in the IDENTIFY answer.
    let (mut stream, answer) = registered_producer(&server, "producer.test", "from_file");
    assert_eq!(
        answer["broadcast_address"], "file-broadcast.test",
        "IDENTIFY answer {answer}"
    );
    assert_eq!(answer["tcp_port"], server.tcp_addr().port());
    assert_eq!(answer["http_port"], server.http_addr().port());

    // tombstone_lifetime from the file (the default is 45s).
    assert_tombstone_lifetime(
        &server,
        &mut stream,
        "producer.test",
        "from_file",
        Duration::from_secs(1),
    );

    // inactive_producer_timeout from the file (the default is 5m): without
    // PINGs the producer drops out of /lookup, and not before the timeout.
    let last_ping = Instant::now();
    ping(&mut stream);
    let gone = poll_lookup(
        &server,
        "from_file",
        last_ping,
        inactive + TIMING_SLACK,
        "the silent producer hidden as inactive",
        |p| !p.iter().any(|a| a == "producer.test"),
        || {},
    );
    assert!(
        gone >= inactive,
        "the producer was hidden {gone:?} after its last PING, before the {inactive:?} timeout"
    );
}

#[test]
fn config_file_with_a_bad_value_exits_2_naming_the_key() {
    let dir = TempDir::new("bad-value");
    for (contents, key) in [
        ("tombstone_lifetime = \"forever\"\n", "tombstone_lifetime"),
        ("log_level = \"loud\"\n", "log_level"),
        ("max_command_size = 0\n", "max_command_size"),
        ("etcd_endpoints = \"localhost:2379\"\n", "etcd_endpoints"),
        ("etcd_endpoints = [\"http://a:1\", 2]\n", "etcd_endpoints"),
        ("etcd_prefix = \"/\"\n", "etcd_prefix"),
        ("etcd_lease_ttl = \"1s\"\n", "etcd_lease_ttl"),
        ("etcd_max_txn_ops = 0\n", "etcd_max_txn_ops"),
        ("etcd_username = \"nsq\"\n", "etcd_username"),
        (
            "etcd_endpoints = \"http://a:1\"\netcd_cacert = \"/nonexistent/ca.pem\"\n",
            "etcd_cacert",
        ),
    ] {
        let path = dir.file("bad.toml", contents);
        let flag = config_flag(&path);
        let args = [flag.as_str(), LOCAL_TCP, LOCAL_HTTP];
        let exit = run_to_exit(args, EXIT_DEADLINE);
        assert_usage_error(&args, &exit, &[key]);
    }
}

/// `etcd_endpoints` in the config file, as a comma-separated string and as
/// an array of strings. Seen through errors raised at parse time only, so
/// that no run here reaches for an etcd: mixed schemes prove the list is
/// split; the check that a client certificate has TLS, made only in cluster
/// mode, proves a valid list is taken.
#[test]
fn config_file_etcd_keys_take_a_string_or_an_array() {
    let dir = TempDir::new("etcd-keys");
    let pem = dir.file("client.pem", "pem\n").display().to_string();
    let pem_keys = format!("etcd_cert = {pem:?}\netcd_key = {pem:?}\n");
    for (endpoints, needles) in [
        (
            "\"http://a:2379,https://b:2379\"",
            &["etcd_endpoints", "mixes"][..],
        ),
        (
            "[\"http://a:2379\", \"https://b:2379\"]",
            &["etcd_endpoints", "mixes"],
        ),
        (
            "\"http://127.0.0.1:2379, http://127.0.0.2:2379\"",
            &["etcd_cert", "https", "etcd_cacert"],
        ),
        (
            "[\"http://127.0.0.1:2379\", \"http://127.0.0.2:2379\"]",
            &["etcd_cert", "https", "etcd_cacert"],
        ),
    ] {
        let path = dir.file(
            "etcd.toml",
            &format!(
                "etcd_endpoints = {endpoints}\n\
                 etcd_prefix = \"cluster-a/\"\n\
                 etcd_lease_ttl = \"30s\"\n\
                 etcd_max_txn_ops = 64\n\
                 {pem_keys}"
            ),
        );
        let flag = config_flag(&path);
        let args = [flag.as_str(), LOCAL_TCP, LOCAL_HTTP];
        let exit = run_to_exit(args, EXIT_DEADLINE);
        assert_usage_error(&args, &exit, needles);
    }
    // The command line wins over the file: its http endpoint replaces the
    // file's https one, which leaves the file's client certificate without
    // TLS.
    let path = dir.file(
        "etcd.toml",
        &format!("etcd_endpoints = [\"https://a:2379\"]\n{pem_keys}"),
    );
    let flag = config_flag(&path);
    let args = [
        flag.as_str(),
        LOCAL_TCP,
        LOCAL_HTTP,
        "--etcd-endpoints=http://a:2379",
    ];
    let exit = run_to_exit(args, EXIT_DEADLINE);
    assert_usage_error(&args, &exit, &["etcd_cert", "https"]);
}

#[test]
fn missing_config_file_exits_non_zero_with_a_clear_message() {
    let dir = TempDir::new("missing");
    let path = dir.0.join("does-not-exist.toml");
    let flag = config_flag(&path);
    let exit = run_to_exit([flag.as_str(), LOCAL_TCP, LOCAL_HTTP], EXIT_DEADLINE);
    assert!(
        !exit.status.success(),
        "a missing config file must not start the server: {exit:?}"
    );
    assert_eq!(exit.stdout, "", "{exit:?}");
    let message = exit.stderr.trim();
    assert!(
        message.contains(&path.display().to_string()) && message.contains("config"),
        "the message must name the config file: {message:?}"
    );
    assert_eq!(exit.stderr.lines().count(), 1, "one line: {exit:?}");
}

#[test]
fn unknown_config_key_is_a_warning_and_the_server_starts() {
    let dir = TempDir::new("unknown-key");
    let path = dir.file(
        "nsqlookupd.toml",
        "no_such_option = 1\nlog_level = \"info\"\n",
    );
    let server = Server::start_with([config_flag(&path)]);
    let warning = server.wait_for_log(Duration::from_secs(5), |l| l.contains("no_such_option"));
    let warning = warning.unwrap_or_else(|| {
        panic!(
            "no log line names the unknown key:\n{}",
            server.log_tail(20)
        )
    });
    assert!(
        has_log_header(&warning, "[nsqlookupd] ", "WARNING"),
        "the unknown key is not logged as a warning: {warning:?}"
    );
    assert_eq!(http_get(server.http_addr(), "/ping").status, 200);
}

// ------------------------------------------------------------------ 5. shutdown

/// An idle HTTP/1.1 keep-alive connection that has had one answer.
fn idle_keep_alive(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET /ping HTTP/1.1\r\nHost: {addr}\r\nConnection: keep-alive\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "status line {status:?}");
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
            assert!(
                !(name.eq_ignore_ascii_case("connection") && value.trim() == "close"),
                "the server refused keep-alive"
            );
        }
    }
    let length = length.expect("GET /ping answer without Content-Length");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    assert_eq!(body, b"OK");
    assert!(
        reader.buffer().is_empty(),
        "unexpected bytes after the answer"
    );
    stream
}

/// Expects end of stream (and no bytes) within `within`.
fn sees_eof(stream: &mut TcpStream, within: Duration) -> Result<(), String> {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!(
            "unexpected {:?}",
            String::from_utf8_lossy(&buf[..n])
        )),
        Err(e) => Err(format!("no EOF: {e}")),
    }
}

fn shuts_down_on(signal: libc::c_int, name: &str) {
    let mut server = Server::start();
    let (mut producer, _) = registered_producer(&server, "shutdown.test", "shutdown");
    assert_eq!(lookup_producers(&server, "shutdown"), ["shutdown.test"]);
    let mut keep_alive = idle_keep_alive(server.http_addr());

    let signalled = Instant::now();
    // SAFETY: kill(2) on our own child, which has not been reaped (the
    // harness reaps it only in try_exit_status/stop), so the pid is its own.
    let rc = unsafe { libc::kill(server.pid() as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({name})");
    let status = loop {
        if let Some(status) = server.try_exit_status() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "still running 1 s after {name}\n--- server log (tail) ---\n{}",
            server.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        exited_successfully(status),
        "exit status after {name}: {status}\n--- server log (tail) ---\n{}",
        server.log_tail(20)
    );
    sees_eof(&mut producer, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("the registered TCP client after {name}: {e}"));
    sees_eof(&mut keep_alive, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("the idle keep-alive HTTP client after {name}: {e}"));
}

#[test]
fn sigterm_exits_0_within_a_second_with_open_connections() {
    shuts_down_on(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigint_exits_0_within_a_second_with_open_connections() {
    shuts_down_on(libc::SIGINT, "SIGINT");
}

// ------------------------------------------------------------------ 6. port in use

fn port_in_use_fails(flag: &str, other_flag: &str) {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = taken.local_addr().unwrap().to_string();
    let args = [
        format!("{flag}={addr}"),
        format!("{other_flag}=127.0.0.1:0"),
    ];
    let started = Instant::now();
    let exit = run_to_exit(&args, EXIT_DEADLINE);
    let took = started.elapsed();
    // README: "reported as `FATAL: listen (ADDR) failed - ...` with exit status 1".
    assert_eq!(
        exit.status.code(),
        Some(1),
        "{flag}={addr} in use must fail: {exit:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} to give up on {addr}"
    );
    assert!(
        exit.stderr
            .lines()
            .any(|l| l.contains(&addr) && l.contains("failed")),
        "stderr must name {addr} and say \"failed\": {:?}",
        exit.stderr
    );
    drop(taken);
}

#[test]
fn tcp_address_in_use_exits_non_zero() {
    port_in_use_fails("--tcp-address", "--http-address");
}

#[test]
fn http_address_in_use_exits_non_zero() {
    port_in_use_fails("--http-address", "--tcp-address");
}

// ------------------------------------------------------------------ 7. log format, level

#[test]
fn log_lines_have_the_original_format() {
    let server = Server::start();
    let logs = server.logs();
    let tcp = format!("TCP: listening on {}", server.tcp_addr());
    let http = format!("HTTP: listening on {}", server.http_addr());
    // start() returns once both "listening on" lines are in: every line up
    // to them is a start-up line.
    let info = |l: &str| has_log_header(l, "[nsqlookupd] ", "INFO");
    let message = |l: &str| l.split_once(": ").map(|(_, m)| m.to_owned());
    let position = |what: &str, pred: &dyn Fn(&str) -> bool| {
        logs.iter()
            .position(|l| info(l) && pred(l))
            .unwrap_or_else(|| panic!("no INFO line {what} in the original's format:\n{logs:#?}"))
    };
    let version = position("with the version", &|l| {
        message(l).is_some_and(|m| m.starts_with("nsqlookupd v1.3.0 ("))
    });
    let tcp_at = position("for the TCP listener", &|l| {
        l.ends_with(&format!(" INFO: {tcp}"))
    });
    let http_at = position("for the HTTP listener", &|l| {
        l.ends_with(&format!(" INFO: {http}"))
    });
    assert!(
        version < tcp_at && version < http_at,
        "the version line must come before the listeners:\n{logs:#?}"
    );
    for line in &logs[..=tcp_at.max(http_at)] {
        assert!(
            info(line) || has_log_header(line, "[nsqlookupd] ", "WARNING"),
            "a start-up line not in the original's format: {line:?}"
        );
    }
}

#[test]
fn log_header_check_rejects_what_it_must() {
    let good = "[nsqlookupd] 2026/11/24 20:28:25.386586 INFO: TCP: listening on 0.0.0.0:4160";
    assert!(has_log_header(good, "[nsqlookupd] ", "INFO"));
    for bad in [
        "nsqlookupd 2026/11/24 20:28:25.386586 INFO: x",
        "[nsqlookupd] 2026-11-24 20:28:25.386586 INFO: x",
        "[nsqlookupd] 2026/11/24 20:28:25.3865 INFO: x",
        "[nsqlookupd] 2026/11/24 20:28:25 INFO: x",
        "[nsqlookupd] 2026/13/24 20:28:25.386586 INFO: x",
        "[nsqlookupd] 2026/11/24 20:28:25.386586 WARNING: x",
        "[nsqlookupd] 2026/11/24 20:28:25.386586 INFO:x",
    ] {
        assert!(!has_log_header(bad, "[nsqlookupd] ", "INFO"), "{bad:?}");
    }
}

#[test]
fn log_level_warn_hides_info_but_not_warnings() {
    let dir = TempDir::new("warn-level");
    let path = dir.file("nsqlookupd.toml", "unknown_for_the_warning = true\n");
    let mut server =
        Server::start_on_free_ports(["--log-level=warn".to_owned(), config_flag(&path)]);
    // Traffic that logs at INFO at the default level: a producer IDENTIFYs
    // and the tombstone endpoint is hit.
    let (_stream, _) = registered_producer(&server, "warn-level.test", "warn_level");
    let r = http_post(
        server.http_addr(),
        "/topic/tombstone?topic=warn_level&node=warn-level.test:4151",
    );
    assert_eq!(r.status, 200);
    assert_eq!(http_get(server.http_addr(), "/ping").status, 200);
    let status = server.stop();
    assert!(exited_successfully(status), "exit status {status}");
    let logs = server.logs();
    assert!(
        logs.iter().all(|l| !l.contains(" INFO: ")),
        "INFO lines at --log-level=warn:\n{logs:#?}"
    );
    assert!(
        logs.iter()
            .any(|l| has_log_header(l, "[nsqlookupd] ", "WARNING")
                && l.contains("unknown_for_the_warning")),
        "the WARNING line is missing at --log-level=warn:\n{logs:#?}"
    );
}
