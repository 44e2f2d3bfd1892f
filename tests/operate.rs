//! What operators deploy and watch: `/metrics` (valid exposition format,
//! counters that move with traffic), JSON logs, and the systemd unit.

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
