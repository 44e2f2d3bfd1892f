//! What operators deploy and watch: `/metrics` (valid exposition format,
//! counters that move with traffic), JSON logs, the systemd unit and the
//! Kubernetes manifests.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use common::{Server, http_get, identify_command, read_frame, tcp_connect, tcp_roundtrip};

/// One sample line: metric name with its labels (as written) → value.
type Samples = HashMap<String, f64>;

/// Parses the OpenMetrics text format strictly enough to catch a broken
/// exposition: every family is declared with `# TYPE` before its samples,
/// sample names belong to a declared family, values are numbers, labels are
/// `key="value"` pairs, and the text ends with `# EOF`.
fn parse_exposition(text: &str) -> Result<Samples, String> {
    let mut families: HashMap<String, String> = HashMap::new();
    let mut samples = Samples::new();
    let lines: Vec<&str> = text.lines().collect();
    if lines.last() != Some(&"# EOF") {
        return Err("does not end with # EOF".into());
    }
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, value) = (parts.next(), parts.next(), parts.next());
            match (kind, name, value) {
                (Some("TYPE"), Some(name), Some(t)) => {
                    if !["counter", "gauge", "histogram", "info"].contains(&t) {
                        return Err(format!("unknown type {t} in {line:?}"));
                    }
                    families.insert(name.to_owned(), t.to_owned());
                }
                (Some("HELP"), Some(_), _) | (Some("UNIT"), Some(_), _) => {}
                _ => return Err(format!("bad comment line {line:?}")),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("no value in {line:?}"))?;
        let value: f64 = value
            .parse()
            .map_err(|_| format!("bad value in {line:?}"))?;
        let name = series.split('{').next().unwrap_or(series);
        let labels = &series[name.len()..];
        if !labels.is_empty() {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .ok_or_else(|| format!("bad labels in {line:?}"))?;
            for pair in inner.split("\",") {
                let (k, _) = pair
                    .split_once("=\"")
                    .ok_or_else(|| format!("bad label {pair:?} in {line:?}"))?;
                if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("bad label name {k:?}"));
                }
            }
        }
        let family = ["_total", "_bucket", "_sum", "_count", "_info"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|f| families.contains_key(*f))
            })
            .unwrap_or(name);
        if !families.contains_key(family) {
            return Err(format!("sample {name} of an undeclared family"));
        }
        if !name.starts_with("nsqlookupd_") {
            return Err(format!("{name} lacks the nsqlookupd_ prefix"));
        }
        samples.insert(series.to_owned(), value);
    }
    Ok(samples)
}

fn metrics(server: &Server) -> Samples {
    let r = http_get(server.http_addr(), "/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/openmetrics-text"),
        "{:?}",
        r.header("content-type")
    );
    parse_exposition(&r.text()).unwrap_or_else(|e| panic!("invalid exposition: {e}\n{}", r.text()))
}

fn value(samples: &Samples, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no sample {series}; have {:?}", samples.keys()))
}

#[test]
fn parser_rejects_broken_expositions() {
    assert!(parse_exposition("# TYPE nsqlookupd_x counter\nnsqlookupd_x_total 1\n# EOF").is_ok());
    assert!(parse_exposition("# TYPE nsqlookupd_x counter\nnsqlookupd_x_total 1\n").is_err());
    assert!(parse_exposition("nsqlookupd_y 1\n# EOF").is_err());
    assert!(parse_exposition("# TYPE nsqlookupd_x gauge\nnsqlookupd_x one\n# EOF").is_err());
    assert!(parse_exposition("# TYPE nsqlookupd_x gauge\nnsqlookupd_x{a=b} 1\n# EOF").is_err());
}

#[test]
fn metrics_move_with_a_scripted_session() {
    let server = Server::start();
    let before = metrics(&server);
    assert_eq!(value(&before, "nsqlookupd_producers"), 0.0);
    let build = before
        .iter()
        .find(|(k, _)| k.starts_with("nsqlookupd_build_info{version=\"1.3.0\""))
        .expect("build info");
    assert_eq!(*build.1, 1.0);
    assert!(value(&before, "nsqlookupd_process_start_time_seconds") > 1.7e9);

    // An nsqd: identify, register a topic with a channel, ping.
    let mut nsqd = tcp_connect(server.tcp_addr(), true).unwrap();
    let body = br#"{"broadcast_address":"node-a","hostname":"a","tcp_port":4150,"http_port":4151,"version":"1.3.0"}"#;
    tcp_roundtrip(&mut nsqd, &identify_command(body));
    assert_eq!(tcp_roundtrip(&mut nsqd, b"REGISTER t1 c1\n"), b"OK");
    assert_eq!(tcp_roundtrip(&mut nsqd, b"PING\n"), b"OK");
    // A broken client: one fatal error.
    let mut bad = tcp_connect(server.tcp_addr(), true).unwrap();
    bad.write_all(b"FOO\n").unwrap();
    assert_eq!(
        read_frame(&mut bad, Duration::from_secs(2)).unwrap(),
        b"E_INVALID invalid command FOO"
    );
    // Consumers: a hit (twice: the second is served from the cache) and a miss.
    assert_eq!(http_get(server.http_addr(), "/lookup?topic=t1").status, 200);
    assert_eq!(http_get(server.http_addr(), "/lookup?topic=t1").status, 200);
    assert_eq!(
        http_get(server.http_addr(), "/lookup?topic=nope").status,
        404
    );

    let after = metrics(&server);
    let expect = [
        ("nsqlookupd_producers", 1.0),
        ("nsqlookupd_topics", 1.0),
        ("nsqlookupd_channels", 1.0),
        ("nsqlookupd_registrations", 3.0),
        ("nsqlookupd_lookup_snapshot_rebuilds_total", 1.0),
        (
            "nsqlookupd_tcp_commands_total{command=\"IDENTIFY\",result=\"ok\"}",
            1.0,
        ),
        (
            "nsqlookupd_tcp_commands_total{command=\"REGISTER\",result=\"ok\"}",
            1.0,
        ),
        (
            "nsqlookupd_tcp_commands_total{command=\"PING\",result=\"ok\"}",
            1.0,
        ),
        (
            "nsqlookupd_tcp_commands_total{command=\"other\",result=\"error\"}",
            1.0,
        ),
        ("nsqlookupd_tcp_errors_total{code=\"E_INVALID\"}", 1.0),
        ("nsqlookupd_tcp_errors_total{code=\"E_BAD_TOPIC\"}", 0.0),
        (
            "nsqlookupd_http_requests_total{route=\"/lookup\",status=\"200\"}",
            2.0,
        ),
        (
            "nsqlookupd_http_requests_total{route=\"/lookup\",status=\"404\"}",
            1.0,
        ),
        (
            "nsqlookupd_http_request_duration_seconds_count{route=\"/lookup\"}",
            3.0,
        ),
        (
            "nsqlookupd_http_request_duration_seconds_bucket{le=\"+Inf\",route=\"/lookup\"}",
            3.0,
        ),
        (
            "nsqlookupd_limit_hits_total{limit=\"max_command_size\"}",
            0.0,
        ),
    ];
    for (series, v) in expect {
        assert_eq!(value(&after, series), v, "{series}");
    }
    assert!(value(&after, "nsqlookupd_tcp_connections_accepted_total") >= 2.0);
    assert!(value(&after, "nsqlookupd_process_resident_memory_bytes") > 1e6);

    // The connection's registrations go when it closes.
    drop(nsqd);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = metrics(&server);
        if value(&m, "nsqlookupd_registrations") == 0.0 && value(&m, "nsqlookupd_producers") == 0.0
        {
            assert_eq!(
                value(&m, "nsqlookupd_topics"),
                1.0,
                "keys outlive producers"
            );
            break;
        }
        assert!(Instant::now() < deadline, "registrations never went to 0");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut server = Server::start_with(["--log-format=json"]);
    let mut nsqd = tcp_connect(server.tcp_addr(), true).unwrap();
    let body = br#"{"broadcast_address":"node-a","hostname":"a","tcp_port":4150,"http_port":4151,"version":"1.3.0"}"#;
    tcp_roundtrip(&mut nsqd, &identify_command(body));
    let line = server
        .wait_for_log(Duration::from_secs(5), |l| {
            l.contains("IDENTIFY Address:node-a")
        })
        .expect("IDENTIFY logged");
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON object per line");
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["command"], "IDENTIFY");
    assert_eq!(v["peer"], nsqd.local_addr().unwrap().to_string());
    assert!(v["timestamp"].as_str().unwrap().contains('T'));
    drop(nsqd);
    server.stop();
    for line in server.logs() {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(v["message"].is_string(), "{line}");
    }
}

/// `systemd-analyze verify` accepts the unit without a single warning
/// (where the tool exists; it is skipped elsewhere).
#[test]
fn systemd_unit_verifies() {
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("systemd-analyze not installed: skipped");
        return;
    };
    assert!(out.status.success());
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/nsqlookupd.service"
    ))
    .unwrap();
    for directive in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "DynamicUser=yes",
        "Restart=on-failure",
    ] {
        assert!(unit.contains(directive), "unit lacks {directive}");
    }
    let dir = std::env::temp_dir().join(format!("nsqlookupd-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("nsqlookupd.service");
    let unit = unit.replace(
        "/usr/local/bin/nsqlookupd",
        env!("CARGO_BIN_EXE_nsqlookupd"),
    );
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze warnings:\n{stderr}"
    );
}

/// `contrib/kubernetes/`, where the manifests live.
const K8S_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/kubernetes");

fn k8s_manifest(name: &str) -> String {
    let path = format!("{K8S_DIR}/{name}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `args:` list of the container named `container` in a manifest: its
/// items, and the commented-out items (`# - ...`, optional variants).
///
/// Not a YAML parser: it reads the one format the manifests keep to (block
/// style, one `- value` per line, plain scalars), and panics on anything
/// else inside the list, so that a reformatted manifest fails here rather
/// than being half read.
fn container_args(yaml: &str, container: &str) -> (Vec<String>, Vec<String>) {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let lines: Vec<&str> = yaml.lines().collect();
    let header = format!("- name: {container}");
    let starts: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].trim() == header)
        .collect();
    assert_eq!(starts.len(), 1, "one `{header}` line expected");
    // The keys of the container's mapping, one level below its `- `.
    let key_indent = indent(lines[starts[0]]) + 2;
    let mut at = starts[0] + 1;
    loop {
        let line = lines
            .get(at)
            .unwrap_or_else(|| panic!("container {container} has no args:"));
        let t = line.trim();
        if !t.is_empty() && !t.starts_with('#') {
            assert!(
                indent(line) >= key_indent,
                "container {container} has no args:"
            );
            if indent(line) == key_indent && t == "args:" {
                break;
            }
        }
        at += 1;
    }
    // A plain scalar that YAML reads as written: the flag, verbatim.
    let plain = |item: &str| {
        assert!(
            item.starts_with("--")
                && !item.contains(": ")
                && !item.contains(" #")
                && !item.ends_with(':')
                && !item.contains(['"', '\'', '\t']),
            "args of {container}: {item:?} is not a plain `--flag=value` item"
        );
        item.to_owned()
    };
    let (mut items, mut commented) = (Vec::new(), Vec::new());
    for line in &lines[at + 1..] {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if indent(line) < key_indent {
            break;
        }
        if let Some(item) = t.strip_prefix("- ") {
            items.push(plain(item));
        } else if let Some(item) = t.strip_prefix("# - ") {
            commented.push(plain(item));
        } else if indent(line) == key_indent && !t.starts_with('#') {
            break; // the container's next key
        } else if !t.starts_with('#') {
            panic!("args of {container}: unexpected line {line:?}");
        }
    }
    (items, commented)
}

/// `--flag` of `--flag=value`.
fn flag_name(arg: &str) -> &str {
    arg.split('=').next().unwrap()
}

/// Every `--word` in `text` (flags, in args and comments alike; not `---`).
fn flag_tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    for i in 0..bytes.len().saturating_sub(2) {
        if bytes[i] == b'-'
            && bytes[i + 1] == b'-'
            && bytes[i + 2].is_ascii_lowercase()
            && (i == 0 || bytes[i - 1] != b'-')
        {
            let len = text[i + 2..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
                .unwrap_or(text.len() - i - 2);
            out.push(text[i..i + 2 + len].trim_end_matches('-').to_owned());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The manifest's args made to run here: the listen addresses on ephemeral
/// 127.0.0.1 ports, `$(POD_IP)` 127.0.0.1, etcd an unreachable local port
/// (with `scheme`), and each mounted file (under /etc/nsqlookupd/) a file
/// in `scratch`. Everything else as written.
fn runnable_args(args: &[String], scratch: &std::path::Path, scheme: &str) -> Vec<String> {
    args.iter()
        .map(|arg| {
            let Some((flag, value)) = arg.split_once('=') else {
                return arg.clone();
            };
            let value = match flag {
                "--tcp-address" | "--http-address" => "127.0.0.1:0".to_owned(),
                "--etcd-endpoints" => format!("{scheme}://{}", common::free_local_addr()),
                _ => match value.strip_prefix("/etc/nsqlookupd/") {
                    Some(rest) => {
                        let path = scratch.join(rest);
                        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                        std::fs::write(&path, "not-a-secret\n").unwrap();
                        path.display().to_string()
                    }
                    None => value.replace("$(POD_IP)", "127.0.0.1"),
                },
            };
            assert!(!value.contains("$("), "{arg}: unknown variable");
            format!("{flag}={value}")
        })
        .collect()
}

/// The binary accepts every flag of the Kubernetes manifest's nsqlookupd
/// container: `--help` lists each flag named anywhere in the manifest; the
/// args verbatim fail only on the mounted Secret file missing here (every
/// value parsed); and made to run here (local addresses, temp files, an
/// unreachable etcd), with and without the commented TLS variant, the
/// server listens, answers the probes (`/ping` 200, `/ready` 503 while etcd
/// is away) and exits 0 on SIGTERM within the pod's grace period.
#[test]
fn kubernetes_manifest_flags_are_accepted() {
    let manifest = k8s_manifest("nsqlookupd.yaml");
    let (args, tls) = container_args(&manifest, "nsqlookupd");
    assert_eq!(
        args.iter().map(|a| flag_name(a)).collect::<Vec<_>>(),
        [
            "--tcp-address",
            "--http-address",
            "--broadcast-address",
            "--etcd-endpoints",
            "--etcd-prefix",
            "--etcd-lease-ttl",
            "--etcd-username",
            "--etcd-password-file",
            "--lookup-cache-size",
            "--log-format",
        ],
        "the args extracted from nsqlookupd.yaml"
    );
    assert_eq!(
        tls.iter().map(|a| flag_name(a)).collect::<Vec<_>>(),
        ["--etcd-cacert", "--etcd-cert", "--etcd-key"],
        "the commented TLS variant in nsqlookupd.yaml"
    );
    // What the args rely on elsewhere in the manifest.
    for needed in [
        "--tcp-address=0.0.0.0:4160",
        "--http-address=0.0.0.0:4161",
        "--broadcast-address=$(POD_IP)",
    ] {
        assert!(args.iter().any(|a| a == needed), "args lack {needed}");
    }
    for needed in [
        "fieldPath: status.podIP",
        "containerPort: 4160",
        "containerPort: 4161",
        "path: /ready",
        "path: /ping",
    ] {
        assert!(
            manifest.contains(needed),
            "nsqlookupd.yaml lacks {needed:?}"
        );
    }
    for arg in args.iter().chain(&tls) {
        if let Some(path) = arg.split_once("=/etc/").map(|(_, p)| format!("/etc/{p}")) {
            let dir = &path[..path.rfind('/').unwrap()];
            assert!(
                manifest.contains(&format!("mountPath: {dir}\n")),
                "{arg}: no volume mounted at {dir}"
            );
        }
    }

    let help = common::run_to_exit(["--help"], Duration::from_secs(10));
    assert!(help.status.success(), "{help:?}");
    for flag in flag_tokens(&manifest) {
        assert!(
            help.stdout.lines().any(|l| l
                .trim_start()
                .strip_prefix(flag.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '[', '=']))),
            "--help does not list {flag} (named in nsqlookupd.yaml)"
        );
    }

    // Verbatim: every value parses (clap checks them all before the files
    // are read); the one complaint is the Secret file, absent here.
    let secret = args
        .iter()
        .find_map(|a| a.strip_prefix("--etcd-password-file="))
        .unwrap();
    if std::path::Path::new(secret).exists() {
        eprintln!("{secret} exists here: verbatim run skipped");
    } else {
        let exit = common::run_to_exit(&args, Duration::from_secs(10));
        assert_eq!(exit.status.code(), Some(2), "{exit:?}");
        assert!(
            exit.stderr.contains(&format!(
                "invalid value {secret:?} for flag --etcd-password-file: cannot read the file"
            )),
            "{exit:?}"
        );
    }

    let grace: u64 = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds: "))
        .expect("terminationGracePeriodSeconds")
        .parse()
        .unwrap();
    let scratch = std::env::temp_dir().join(format!("nsqlookupd-k8s-{}", std::process::id()));
    let tls_args: Vec<String> = args.iter().chain(&tls).cloned().collect();
    for (run, scheme) in [(&args, "http"), (&tls_args, "https")] {
        let mut server = Server::start_args(runnable_args(run, &scratch, scheme));
        assert_eq!(http_get(server.http_addr(), "/ping").status, 200);
        assert_eq!(http_get(server.http_addr(), "/ready").status, 503);
        let started = Instant::now();
        let status = server.stop_within(Duration::from_secs(grace));
        assert!(
            status.success(),
            "{status} after SIGTERM ({:?}) with {run:?}\n{}",
            started.elapsed(),
            server.log_tail(20)
        );
    }
    std::fs::remove_dir_all(&scratch).unwrap();
}

/// nsqd-example.yaml points nsqd (one address), nsqadmin and consumers at
/// the Services that nsqlookupd.yaml defines, by name, namespace and port.
#[test]
fn kubernetes_nsqd_example_points_at_the_services() {
    let lookupd = k8s_manifest("nsqlookupd.yaml");
    let example = k8s_manifest("nsqd-example.yaml");
    // `name.namespace.svc:port` of the Service `name` in nsqlookupd.yaml.
    let service = |name: &str| {
        let doc = lookupd
            .split("\n---\n")
            .find(|d| {
                d.lines().any(|l| l == "kind: Service")
                    && d.lines().any(|l| l == format!("  name: {name}"))
            })
            .unwrap_or_else(|| panic!("no Service {name} in nsqlookupd.yaml"));
        let field = |key: &str| {
            doc.lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .unwrap_or_else(|| panic!("Service {name} has no {key}"))
                .to_owned()
        };
        format!("{name}.{}.svc:{}", field("namespace: "), field("port: "))
    };
    let (tcp, http) = (service("nsqlookupd-tcp"), service("nsqlookupd-http"));
    assert_eq!(tcp, "nsqlookupd-tcp.nsq.svc:4160");
    assert_eq!(http, "nsqlookupd-http.nsq.svc:4161");

    let (nsqd, _) = container_args(&example, "nsqd");
    let lookupd_tcp: Vec<&String> = nsqd
        .iter()
        .filter(|a| flag_name(a) == "--lookupd-tcp-address")
        .collect();
    assert_eq!(
        lookupd_tcp,
        [&format!("--lookupd-tcp-address={tcp}")],
        "nsqd gets exactly one lookupd address, the Service"
    );
    assert!(nsqd.contains(&"--broadcast-address=$(POD_IP)".to_owned()));
    assert!(example.contains("fieldPath: status.podIP"));

    let (nsqadmin, _) = container_args(&example, "nsqadmin");
    assert!(
        nsqadmin.contains(&format!("--lookupd-http-address={http}")),
        "{nsqadmin:?}"
    );
    assert!(
        example.contains(&format!("--lookupd-http-address={http}")),
        "consumers' example"
    );
}

/// `--tcp-allow`: a peer outside the list is closed at accept, before a
/// byte is read, and counted; one inside it registers as usual.
#[test]
fn tcp_allow_closes_connections_from_elsewhere_at_accept() {
    let server = Server::start_with(["--tcp-allow=10.0.0.0/8,fd00::/8"]);
    for _ in 0..3 {
        let mut stream = tcp_connect(server.tcp_addr(), true).expect("connect");
        // Whatever it sends, it gets no answer: the connection is closed.
        let _ = stream.write_all(&identify_command(br#"{"broadcast_address":"fake"}"#));
        match read_frame(&mut stream, Duration::from_secs(2)) {
            Err(_) => {}
            Ok(frame) => panic!("a peer outside --tcp-allow got an answer: {frame:?}"),
        }
    }
    let refused = "nsqlookupd_connections_refused_total{listener=\"tcp\",reason=\"not_allowed\"}";
    let deadline = Instant::now() + Duration::from_secs(5);
    while value(&metrics(&server), refused) < 3.0 {
        assert!(Instant::now() < deadline, "3 refusals not counted");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        value(
            &metrics(&server),
            "nsqlookupd_tcp_connections_accepted_total"
        ),
        0.0
    );
    assert!(
        server
            .wait_for_log(Duration::from_secs(2), |l| l
                .contains("outside --tcp-allow")
                && l.contains("127.0.0.1"))
            .is_some(),
        "no refusal logged:\n{}",
        server.log_tail(10)
    );
    // The HTTP side is not affected.
    assert_eq!(http_get(server.http_addr(), "/ping").status, 200);

    let allowed = Server::start_with(["--tcp-allow=127.0.0.0/8,::1"]);
    let mut stream = tcp_connect(allowed.tcp_addr(), true).expect("connect");
    let body =
        br#"{"broadcast_address":"a","hostname":"a","tcp_port":1,"http_port":2,"version":"1.3.0"}"#;
    let answer = tcp_roundtrip(&mut stream, &identify_command(body));
    assert!(
        answer.starts_with(b"{"),
        "IDENTIFY from an allowed peer: {answer:?}"
    );
    let samples = metrics(&allowed);
    assert_eq!(value(&samples, refused), 0.0);
}
