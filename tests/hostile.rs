//! Hostile input and dead peers (issue 5, points 1 and 2), black box: the
//! real binary on real sockets (127.0.0.1, ephemeral ports), one server per
//! test.
//!
//! Every test asserts three things:
//!
//! (a) the offending client gets the documented error frame or is closed;
//! (b) a well-behaved nsqd connection (IDENTIFY + REGISTER before the attack,
//!     then PING round trips during and after it) and HTTP `GET /lookup`
//!     requests issued during and after the attack are each answered within
//!     [`SERVED_WITHIN`];
//! (c) the server's peak resident memory (`VmHWM` in `/proc/<pid>/status`,
//!     so a transient spike counts too) stays under the bound stated by the
//!     test.
//!
//! (b) and (c) are done by [`under_attack`]. Each test prints the peak RSS
//! and the worst latencies it observed
//! (`cargo test --test hostile -- --nocapture`). Where a limit is hit, the
//! tests also check that it is logged once per connection and counted
//! (`nsqlookupd_limit_hits_total` in `/metrics`).
//!
//! The attack traffic comes from the same machine as the probes; it runs at
//! a lowered scheduling priority so that the probes measure the server, not
//! the test's own CPU use (see [`lower_priority_of_this_thread`]).
//!
//! Tests marked `#[ignore = "server bug: ..."]` assert the correct behaviour
//! and fail today; run them with `cargo test --test hostile -- --ignored`.
//!
//! Run: `cargo test --test hostile`.

mod common;

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use socket2::{Domain, Socket, Type};

use common::{
    FrameError, HttpResponse, Server, http_get, http_request, identify_command, proc_status_bytes,
    producer_addresses, read_frame, read_http_response, tcp_connect,
};

const MIB: u64 = 1 << 20;

/// Every probe of the well-behaved clients must be answered within this.
const SERVED_WITHIN: Duration = Duration::from_millis(100);

/// The server's peak RSS bound during an attack, unless a test says
/// otherwise (it starts at ~10 MiB).
const RSS_BOUND: u64 = 64 * MIB;

/// How long a probe may take before it is reported as not answered at all
/// (rather than answered late).
const PROBE_GIVE_UP: Duration = Duration::from_secs(2);

/// How often the well-behaved nsqd PINGs (and /lookup is asked) during an
/// attack, unless a test says otherwise.
const PROBE_EVERY: Duration = Duration::from_millis(25);

/// Deadline for "the server answers / closes promptly".
const PROMPTLY: Duration = Duration::from_secs(2);

/// The well-behaved nsqd.
const GOOD_ADDR: &str = "good-nsqd.example";
const GOOD_TOPIC: &str = "good-topic";
const GOOD_CHANNEL: &str = "good-channel";

// ------------------------------------------------------------------ helpers

/// Bytes shown readably in assertion messages.
fn show(data: &[u8]) -> String {
    const MAX: usize = 200;
    let shown: String = data[..data.len().min(MAX)].escape_ascii().to_string();
    if data.len() > MAX {
        format!("\"{shown}\"... ({} bytes)", data.len())
    } else {
        format!("\"{shown}\"")
    }
}

/// An IDENTIFY body as nsqd sends it.
fn identify_json(addr: &str) -> Vec<u8> {
    format!(
        r#"{{"broadcast_address":"{addr}","hostname":"{addr}","tcp_port":4150,"http_port":4151,"version":"1.3.0"}}"#
    )
    .into_bytes()
}

/// What the client saw next on a lookup-protocol connection.
#[derive(Debug)]
enum Event {
    Frame(Vec<u8>),
    /// End of stream (FIN) or connection reset: the server closed it.
    Closed,
    /// The server closed in the middle of a frame.
    Truncated(String),
    Timeout,
    Error(String),
}

fn next_event(stream: &mut TcpStream, timeout: Duration) -> Event {
    match read_frame(stream, timeout) {
        Ok(frame) => Event::Frame(frame),
        Err(FrameError::ClosedInHeader { got: 0 }) => Event::Closed,
        Err(FrameError::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
            ) =>
        {
            Event::Closed
        }
        Err(FrameError::Timeout) => Event::Timeout,
        Err(e @ (FrameError::ClosedInHeader { .. } | FrameError::ClosedInData { .. })) => {
            Event::Truncated(e.to_string())
        }
        Err(e) => Event::Error(e.to_string()),
    }
}

/// The next frame must be `expected`.
#[track_caller]
fn expect_frame(stream: &mut TcpStream, expected: &[u8], what: &str) {
    match next_event(stream, PROMPTLY) {
        Event::Frame(f) if f == expected => {}
        other => panic!(
            "{what}: expected frame {}, got {}",
            show(expected),
            describe(&other)
        ),
    }
}

fn describe(event: &Event) -> String {
    match event {
        Event::Frame(f) => format!("frame {}", show(f)),
        Event::Closed => "the connection closed".to_owned(),
        Event::Truncated(e) => format!("a truncated frame ({e})"),
        Event::Timeout => "nothing (timed out)".to_owned(),
        Event::Error(e) => format!("an error ({e})"),
    }
}

/// The server must close the connection (without sending anything more)
/// within `within`; returns how long that took.
#[track_caller]
fn expect_closed(stream: &mut TcpStream, within: Duration, what: &str) -> Duration {
    let start = Instant::now();
    match next_event(stream, within) {
        Event::Closed => start.elapsed(),
        other => panic!(
            "{what}: expected the server to close the connection within {within:?}, got {}",
            describe(&other)
        ),
    }
}

/// The documented fatal error: this frame, then the connection closed.
#[track_caller]
fn expect_fatal(stream: &mut TcpStream, expected: &[u8], what: &str) {
    expect_frame(stream, expected, what);
    expect_closed(stream, PROMPTLY, &format!("{what} (after its error frame)"));
}

/// Writes what it can: a hostile client does not care whether the server
/// hung up in the middle.
fn send(stream: &mut TcpStream, data: &[u8]) {
    let _ = stream.write_all(data);
}

/// A connection that sent the magic and IDENTIFY as `addr`.
fn identified(server: &Server, addr: &str) -> TcpStream {
    let mut s = tcp_connect(server.tcp_addr(), true).expect("connect to the TCP port");
    s.write_all(&identify_command(&identify_json(addr)))
        .expect("send IDENTIFY");
    match next_event(&mut s, PROMPTLY) {
        Event::Frame(f) if f.starts_with(b"{") => s,
        other => panic!("IDENTIFY as {addr}: got {}", describe(&other)),
    }
}

/// `/lookup?topic=`: `None` on 404, the producers' broadcast addresses otherwise.
fn lookup_producers(server: &Server, topic: &str) -> Option<Vec<String>> {
    let r = http_get(server.http_addr(), &format!("/lookup?topic={topic}"));
    match r.status {
        404 => None,
        200 => Some(producer_addresses(&r.json())),
        s => panic!("/lookup?topic={topic}: HTTP {s} {}", r.text()),
    }
}

/// Broadcast addresses listed by `/nodes`.
fn nodes(server: &Server) -> Vec<String> {
    let r = http_get(server.http_addr(), "/nodes");
    assert_eq!(r.status, 200, "/nodes: {}", r.text());
    producer_addresses(&r.json())
}

fn topics(server: &Server) -> Vec<String> {
    let r = http_get(server.http_addr(), "/topics");
    assert_eq!(r.status, 200, "/topics: {}", r.text());
    r.json()["topics"]
        .as_array()
        .expect("topics array")
        .iter()
        .map(|t| t.as_str().expect("topic name").to_owned())
        .collect()
}

/// Polls `cond` until it holds or `within` passes; panics with `what` then.
#[track_caller]
fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what}: not true within {within:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// `/nodes` eventually lists only the well-behaved nsqd.
#[track_caller]
/// Every topic on `server` is one a good nsqd registered (`good-...`):
/// nothing the attack sent became one.
fn only_good_topics(server: &Server, what: &str) {
    let listed = topics(server);
    assert!(
        listed.iter().all(|t| t.starts_with("good-")),
        "{what}: {listed:?}"
    );
}

fn only_good_node_left(server: &Server) {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let last = nodes(server);
        if last == [GOOD_ADDR] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/nodes should list only {GOOD_ADDR} once the attackers are gone; lists {last:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until exactly `n` log lines contain `needle` (a limit hit is
/// logged once per connection, not once per byte or per command), and that
/// no more appear shortly after.
#[track_caller]
fn expect_log_lines(server: &Server, needle: &str, n: usize) {
    let count = || server.logs().iter().filter(|l| l.contains(needle)).count();
    eventually(
        PROMPTLY,
        &format!("{n} log lines containing {needle:?}"),
        || count() >= n,
    );
    assert_eq!(count(), n, "log lines containing {needle:?}");
}

/// `nsqlookupd_limit_hits_total{limit="<limit>"}` from `GET /metrics`.
fn limit_hits(server: &Server, limit: &str) -> u64 {
    let r = http_get(server.http_addr(), "/metrics");
    assert_eq!(r.status, 200, "/metrics");
    let series = format!("nsqlookupd_limit_hits_total{{limit=\"{limit}\"}} ");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// Each hit of `limit` is counted: the counter reaches exactly `n`.
#[track_caller]
fn expect_limit_hits(server: &Server, limit: &str, n: u64) {
    eventually(PROMPTLY, &format!("{n} hits of {limit} counted"), || {
        limit_hits(server, limit) >= n
    });
    assert_eq!(limit_hits(server, limit), n, "hits of {limit}");
}

/// A small deterministic PRNG (xorshift64*): fixed seeds, no extra crate.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Sets SO_LINGER to 0 so that dropping the socket sends RST (an abortive
/// close, as when a peer's process is killed mid-write).
fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER)");
}

// ------------------------------------------------- the well-behaved clients

/// The nsqd that behaves: connected, identified and registered before the
/// attack.
struct GoodNsqd {
    stream: TcpStream,
}

impl GoodNsqd {
    /// IDENTIFY + REGISTER, each answered within [`SERVED_WITHIN`].
    fn connect(server: &Server) -> GoodNsqd {
        let mut stream = tcp_connect(server.tcp_addr(), true).expect("connect the good nsqd");
        let started = Instant::now();
        stream
            .write_all(&identify_command(&identify_json(GOOD_ADDR)))
            .unwrap();
        match next_event(&mut stream, PROBE_GIVE_UP) {
            Event::Frame(f) if f.starts_with(b"{") => {}
            other => panic!("good nsqd IDENTIFY: {}", describe(&other)),
        }
        let took = started.elapsed();
        assert!(took < SERVED_WITHIN, "good nsqd IDENTIFY took {took:?}");
        let mut good = GoodNsqd { stream };
        good.register(GOOD_TOPIC, Some(GOOD_CHANNEL))
            .unwrap_or_else(|e| panic!("good nsqd REGISTER: {e}"));
        good
    }

    /// One command, answered `OK`; returns how long that took.
    fn roundtrip(&mut self, command: &str) -> Result<Duration, String> {
        let started = Instant::now();
        self.stream
            .write_all(command.as_bytes())
            .map_err(|e| format!("{command:?}: send failed: {e}"))?;
        match next_event(&mut self.stream, PROBE_GIVE_UP) {
            Event::Frame(f) if f == b"OK" => Ok(started.elapsed()),
            other => Err(format!("{command:?} answered with {}", describe(&other))),
        }
    }

    fn ping(&mut self) -> Result<Duration, String> {
        self.roundtrip("PING\n")
    }

    fn register(&mut self, topic: &str, channel: Option<&str>) -> Result<Duration, String> {
        match channel {
            Some(c) => self.roundtrip(&format!("REGISTER {topic} {c}\n")),
            None => self.roundtrip(&format!("REGISTER {topic}\n")),
        }
    }
}

/// One `GET /lookup?topic=good-topic` on a fresh connection; the good nsqd
/// must be listed. Returns how long the answer took.
fn lookup_probe(http: SocketAddr, topic: &str) -> Result<Duration, String> {
    let target = format!("/lookup?topic={topic}");
    let started = Instant::now();
    let r = http_request(http, "GET", &target, &[], None)
        .map_err(|e| format!("GET {target} failed: {e}"))?;
    let took = started.elapsed();
    if r.status != 200 {
        return Err(format!("GET {target}: HTTP {} {}", r.status, r.text()));
    }
    let listed = serde_json::from_slice::<Value>(&r.body)
        .ok()
        .map(|v| producer_addresses(&v))
        .unwrap_or_default();
    if !listed.iter().any(|a| a == GOOD_ADDR) {
        return Err(format!(
            "GET {target}: {GOOD_ADDR} not listed: {}",
            r.text()
        ));
    }
    Ok(took)
}

/// What the probes saw.
#[derive(Debug, Default)]
struct Probes {
    rounds: u32,
    worst_ping: Duration,
    worst_lookup: Duration,
    failures: Vec<String>,
}

impl Probes {
    fn record(&mut self, ping: Result<Duration, String>, lookup: Result<Duration, String>) {
        self.rounds += 1;
        match ping {
            Ok(d) => self.worst_ping = self.worst_ping.max(d),
            Err(e) => self.failures.push(format!("nsqd: {e}")),
        }
        match lookup {
            Ok(d) => self.worst_lookup = self.worst_lookup.max(d),
            Err(e) => self.failures.push(format!("http: {e}")),
        }
    }
}

/// Lowers the calling thread's scheduling priority to nice 10; threads it
/// spawns afterwards inherit it. The attack traffic is generated on the
/// same (small) machine as the probes: this keeps the attackers' own CPU
/// use from delaying the probe thread, so that the probes measure the
/// server, not the test's scheduling.
fn lower_priority_of_this_thread() {
    // SAFETY: plain syscalls on the calling thread; failure is harmless.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

/// Runs `attack` against `server` and checks that the well-behaved clients
/// are served throughout and that memory stays bounded:
///
/// - before the attack, `good` (an nsqd that connected, IDENTIFYed and
///   REGISTERed, see [`GoodNsqd::connect`]) is listed by `/lookup`;
/// - during the attack, a probe thread PINGs on that connection and GETs
///   `/lookup` on a fresh connection every `probe_every`;
/// - after it, the probe thread sends one more PING, REGISTERs a new topic
///   and looks it up;
/// - every one of those is answered within [`SERVED_WITHIN`], and the
///   server's peak RSS (`VmHWM`) stays under `rss_bound`.
///
/// The attack runs on the test's thread at a lowered priority (see
/// [`lower_priority_of_this_thread`]; that thread stays lowered for the rest
/// of the test, which only checks correctness from then on). Prints the
/// peak RSS and the worst latencies. Returns the attack's result.
/// Serialises the attack phases of the tests in this file.
static ATTACKS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn under_attack<R>(
    server: &Server,
    good: &mut GoodNsqd,
    label: &str,
    rss_bound: u64,
    probe_every: Duration,
    attack: impl FnOnce() -> R,
) -> R {
    // One attack at a time: tests run on parallel threads, and two attacks
    // sharing the machine's two cores would measure each other, not the
    // server's isolation.
    let _one_at_a_time = ATTACKS.lock().unwrap_or_else(|e| e.into_inner());
    let http = server.http_addr();
    lookup_probe(http, GOOD_TOPIC).unwrap_or_else(|e| panic!("[{label}] before the attack: {e}"));

    let mut result = None;
    let (during, after) = thread::scope(|scope| {
        // Dropped when the attack returns or panics: that stops the prober.
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let good = &mut *good;
        let after_topic = format!("good-after-{label}");
        let prober = scope.spawn(move || {
            let mut during = Probes::default();
            loop {
                during.record(good.ping(), lookup_probe(http, GOOD_TOPIC));
                match stop_rx.recv_timeout(probe_every) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
            let mut after = Probes::default();
            after.record(good.ping(), lookup_probe(http, GOOD_TOPIC));
            let register = good.register(&after_topic, None);
            after.record(register, lookup_probe(http, &after_topic));
            (during, after)
        });
        lower_priority_of_this_thread();
        result = Some(attack());
        drop(stop_tx);
        prober.join().expect("the prober thread")
    });

    let peak = proc_status_bytes(server.pid(), "VmHWM").expect("VmHWM of the server");
    let now = proc_status_bytes(server.pid(), "VmRSS").expect("VmRSS of the server");
    eprintln!(
        "[{label}] peak RSS (VmHWM) {:.1} MiB (bound {} MiB), RSS after {:.1} MiB; \
         {} probe rounds during the attack: worst PING {:?}, worst /lookup {:?}; \
         after: worst PING/REGISTER {:?}, worst /lookup {:?}",
        peak as f64 / MIB as f64,
        rss_bound / MIB,
        now as f64 / MIB as f64,
        during.rounds,
        during.worst_ping,
        during.worst_lookup,
        after.worst_ping,
        after.worst_lookup,
    );
    for (when, p) in [("during", &during), ("after", &after)] {
        assert!(
            p.failures.is_empty(),
            "[{label}] well-behaved clients not served {when} the attack: {:#?}",
            p.failures
        );
        assert!(
            p.worst_ping < SERVED_WITHIN && p.worst_lookup < SERVED_WITHIN,
            "[{label}] well-behaved clients served too slowly {when} the attack: \
             worst nsqd round trip {:?}, worst /lookup {:?} (limit {SERVED_WITHIN:?})",
            p.worst_ping,
            p.worst_lookup
        );
    }
    assert!(
        during.rounds >= 1,
        "[{label}] no probe ran during the attack"
    );
    assert!(
        peak < rss_bound,
        "[{label}] server peak RSS {:.1} MiB over the bound {} MiB",
        peak as f64 / MIB as f64,
        rss_bound / MIB
    );
    result.expect("the attack ran")
}

/// [`under_attack`] as most tests here run it: the server's peak RSS under
/// [`RSS_BOUND`], probes every [`PROBE_EVERY`].
fn attack<R>(server: &Server, good: &mut GoodNsqd, label: &str, attack: impl FnOnce() -> R) -> R {
    under_attack(server, good, label, RSS_BOUND, PROBE_EVERY, attack)
}

fn tcp_attacker(server: &Server) -> TcpStream {
    tcp_connect(server.tcp_addr(), true).expect("connect to the TCP port")
}

// ---------------------------------------------------------------- TCP tests

#[test]
fn tcp_bad_magic() {
    let server = Server::start();
    let mut good = GoodNsqd::connect(&server);
    attack(&server, &mut good, "tcp_bad_magic", || {
        let cases: [&[u8]; 7] = [
            b"  V2",
            b"  v1",
            b"V1  ",
            b"\0\0\0\0",
            b"\xff\xff\xff\xff",
            b"PING\nPING\n",
            b"GET /lookup?topic=good-topic HTTP/1.1\r\nHost: x\r\n\r\n",
        ];
        for magic in cases {
            let mut s = tcp_connect(server.tcp_addr(), false).unwrap();
            send(&mut s, magic);
            expect_fatal(&mut s, b"E_BAD_PROTOCOL", &format!("magic {}", show(magic)));
        }
        // The same, 200 times over, from connections opened at once.
        let mut conns: Vec<TcpStream> = (0..200)
            .map(|_| tcp_connect(server.tcp_addr(), false).unwrap())
            .collect();
        for s in &mut conns {
            send(s, b"HELO");
        }
        for s in &mut conns {
            expect_fatal(s, b"E_BAD_PROTOCOL", "magic HELO (x200)");
        }
    });
    assert!(
        server
            .wait_for_log(PROMPTLY, |l| l.contains("bad protocol magic 'HELO'"))
            .is_some(),
        "bad magic logged"
    );
}

/// Issue 5 point 2 as well: a silent peer is removed, a pinging one kept.
#[test]
fn tcp_magic_never_sent_and_silent_peers_closed_by_idle_timeout() {
    const IDLE: Duration = Duration::from_secs(1);
    // Closed no earlier than the timeout (with a little slack for timer
    // granularity) and no later than this after the last byte sent.
    const CLOSED_BY: Duration = Duration::from_secs(3);
    let server = Server::start_with(["--tcp-idle-timeout=1s"]);
    let mut good = GoodNsqd::connect(&server);
    let label = "tcp_idle_timeout";
    // The good nsqd PINGs every 300 ms: kept, although the idle timeout
    // passes several times over.
    let started = Instant::now();
    under_attack(
        &server,
        &mut good,
        label,
        RSS_BOUND,
        Duration::from_millis(300),
        || {
            // (1) connection opened, nothing written; (2) magic only;
            // (3) a registered nsqd that went silent (its host vanished).
            let mut no_magic = tcp_connect(server.tcp_addr(), false).unwrap();
            let t_no_magic = Instant::now();
            let mut magic_only = tcp_attacker(&server);
            let t_magic_only = Instant::now();
            let mut silent = identified(&server, "silent-nsqd.example");
            silent
                .write_all(b"REGISTER silent-topic silent-channel\n")
                .unwrap();
            expect_frame(&mut silent, b"OK", "silent nsqd REGISTER");
            let t_silent = Instant::now();
            assert_eq!(
                lookup_producers(&server, "silent-topic").as_deref(),
                Some(&["silent-nsqd.example".to_owned()][..])
            );

            for (conn, since, what) in [
                (
                    &mut no_magic,
                    t_no_magic,
                    "connection that never sent the magic",
                ),
                (
                    &mut magic_only,
                    t_magic_only,
                    "connection that sent only the magic",
                ),
                (&mut silent, t_silent, "registered nsqd gone silent"),
            ] {
                let remaining = CLOSED_BY.saturating_sub(since.elapsed());
                expect_closed(conn, remaining, what);
                let after = since.elapsed();
                assert!(
                    after >= IDLE - Duration::from_millis(50),
                    "{what}: closed after {after:?}, before the idle timeout {IDLE:?}"
                );
                eprintln!("[{label}] {what}: closed {after:?} after its last byte");
            }
            eventually(PROMPTLY, "silent producer removed from /lookup", || {
                lookup_producers(&server, "silent-topic") == Some(vec![])
            });
            only_good_node_left(&server);

            // Another silent one, opened now: by the time it is closed the good
            // nsqd has lived through more than two idle timeouts.
            let mut late = tcp_attacker(&server);
            let t_late = Instant::now();
            expect_closed(&mut late, CLOSED_BY, "second silent connection");
            assert!(t_late.elapsed() >= IDLE - Duration::from_millis(50));
        },
    );
    let lived = started.elapsed();
    assert!(
        lived > 2 * IDLE,
        "the good nsqd must outlive several idle timeouts (lived {lived:?})"
    );
    assert_eq!(nodes(&server), [GOOD_ADDR], "the pinging nsqd is kept");
    // One log line per idle connection closed.
    expect_log_lines(&server, "--tcp-idle-timeout", 4);
    expect_limit_hits(&server, "tcp_idle_timeout", 4);
}

#[test]
fn tcp_identify_negative_zero_and_huge_sizes() {
    let server = Server::start();
    let mut good = GoodNsqd::connect(&server);
    attack(&server, &mut good, "tcp_identify_sizes", || {
        let cases: [(i32, &str); 6] = [
            (-1, "E_BAD_BODY IDENTIFY invalid body size -1 (limit 65536)"),
            (
                i32::MIN,
                "E_BAD_BODY IDENTIFY invalid body size -2147483648 (limit 65536)",
            ),
            (
                i32::MAX,
                "E_BAD_BODY IDENTIFY invalid body size 2147483647 (limit 65536)",
            ),
            (
                65537,
                "E_BAD_BODY IDENTIFY invalid body size 65537 (limit 65536)",
            ),
            (0, "E_BAD_BODY IDENTIFY failed to decode JSON body"),
            (
                -65536,
                "E_BAD_BODY IDENTIFY invalid body size -65536 (limit 65536)",
            ),
        ];
        for (size, expected) in cases {
            // The whole attack in one write, as the 16 bytes that crash the
            // original.
            let mut s = tcp_connect(server.tcp_addr(), false).unwrap();
            let mut data = b"  V1IDENTIFY\n".to_vec();
            data.extend_from_slice(&size.to_be_bytes());
            send(&mut s, &data);
            expect_fatal(
                &mut s,
                expected.as_bytes(),
                &format!("IDENTIFY size {size}"),
            );
        }
        // Huge sizes from many connections at once: nothing is reserved.
        let mut conns: Vec<TcpStream> = (0..200).map(|_| tcp_attacker(&server)).collect();
        for s in &mut conns {
            let mut data = b"IDENTIFY\n".to_vec();
            data.extend_from_slice(&i32::MAX.to_be_bytes());
            data.extend_from_slice(&[b'{'; 1000]);
            send(s, &data);
        }
        for s in &mut conns {
            expect_fatal(
                s,
                b"E_BAD_BODY IDENTIFY invalid body size 2147483647 (limit 65536)",
                "IDENTIFY size 2^31-1 (x200)",
            );
        }
    });
    only_good_node_left(&server);
    // Logged once per connection.
    expect_log_lines(&server, "invalid body size", 5 + 200);
    expect_limit_hits(&server, "max_identify_body_size", 5 + 200);
}

#[test]
fn tcp_identify_body_never_completed() {
    const IDLE: Duration = Duration::from_secs(1);
    const HELD: usize = 300;
    let server = Server::start_with(["--tcp-idle-timeout=1s"]);
    let mut good = GoodNsqd::connect(&server);
    let label = "tcp_identify_body_never_completed";
    attack(&server, &mut good, label, || {
        // Client EOF inside the body.
        let mut s = tcp_attacker(&server);
        let mut data = b"IDENTIFY\n".to_vec();
        data.extend_from_slice(&100i32.to_be_bytes());
        data.extend_from_slice(br#"{"broadcast_address":"#);
        send(&mut s, &data);
        s.shutdown(Shutdown::Write).unwrap();
        expect_fatal(
            &mut s,
            b"E_BAD_BODY IDENTIFY failed to read body",
            "EOF in body",
        );

        // Client EOF inside the 4-byte size.
        let mut s = tcp_attacker(&server);
        send(&mut s, b"IDENTIFY\n\0\0");
        s.shutdown(Shutdown::Write).unwrap();
        expect_fatal(
            &mut s,
            b"E_BAD_BODY IDENTIFY failed to read body size",
            "EOF in body size",
        );

        // Bodies announced at the maximum size, never completed, held by
        // many connections: they stay until the idle timeout closes them.
        let mut conns: Vec<TcpStream> = (0..HELD).map(|_| tcp_attacker(&server)).collect();
        for s in &mut conns {
            let mut data = b"IDENTIFY\n".to_vec();
            data.extend_from_slice(&65536i32.to_be_bytes());
            data.extend_from_slice(&[b' '; 1000]);
            send(s, &data);
        }
        let sent = Instant::now();
        // The last one written to is still waited for, half an idle timeout
        // later.
        match next_event(&mut conns[HELD - 1], IDLE / 2) {
            Event::Timeout => {}
            other => panic!(
                "an incomplete body must be waited for (until the idle timeout), got {}",
                describe(&other)
            ),
        }
        let mut slowest = Duration::ZERO;
        for s in &mut conns {
            let remaining = Duration::from_secs(3).saturating_sub(sent.elapsed());
            expect_closed(s, remaining, "incomplete body, idle");
            slowest = sent.elapsed();
        }
        assert!(slowest >= IDLE - Duration::from_millis(50));
        eprintln!(
            "[{label}] {HELD} incomplete bodies all closed {slowest:?} after their last byte"
        );
    });
    // The held connections hit the idle timeout; the two that hung up did
    // not.
    expect_limit_hits(&server, "tcp_idle_timeout", HELD as u64);
}

#[test]
fn tcp_command_line_too_long() {
    const LIMIT: usize = 4096;
    const ERROR: &[u8] = b"E_INVALID command line longer than 4096 bytes";
    let server = Server::start();
    let mut good = GoodNsqd::connect(&server);
    attack(&server, &mut good, "tcp_command_line_too_long", || {
        // At the limit: accepted ("PING" and trailing spaces, trimmed).
        let mut s = tcp_attacker(&server);
        let mut line = b"PING".to_vec();
        line.resize(LIMIT, b' ');
        line.push(b'\n');
        send(&mut s, &line);
        expect_frame(&mut s, b"OK", "a 4096-byte line");

        // One byte over, without a newline: refused as soon as it is seen.
        let mut s = tcp_attacker(&server);
        send(&mut s, &vec![b'A'; LIMIT + 1]);
        expect_fatal(&mut s, ERROR, "4097 bytes, no newline");

        // With a newline.
        let mut s = tcp_attacker(&server);
        let mut line = b"REGISTER ".to_vec();
        line.resize(LIMIT + 1000, b'a');
        line.push(b'\n');
        send(&mut s, &line);
        expect_fatal(&mut s, ERROR, "5096 bytes with a newline");

        // 8 MiB without a newline, written from another thread: the server
        // does not buffer it.
        let mut s = tcp_attacker(&server);
        let mut writer = s.try_clone().unwrap();
        let flood = thread::spawn(move || {
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0usize;
            while sent < 8 << 20 {
                match writer.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(_) => break,
                }
            }
            sent
        });
        expect_fatal(&mut s, ERROR, "8 MiB, no newline");
        let sent = flood.join().unwrap();
        assert!(sent < 8 << 20, "the server kept reading an overlong line");

        // A registered producer that sends one: removed.
        let mut s = identified(&server, "overlong-nsqd.example");
        send(&mut s, b"REGISTER overlong-topic\n");
        expect_frame(&mut s, b"OK", "REGISTER");
        send(&mut s, &vec![b'B'; 10_000]);
        expect_fatal(&mut s, ERROR, "overlong line after REGISTER");
        eventually(PROMPTLY, "overlong producer removed", || {
            lookup_producers(&server, "overlong-topic") == Some(vec![])
        });
    });
    only_good_node_left(&server);
    // Four offending connections, one line each (the 8 MiB one included).
    expect_log_lines(&server, "command line longer than 4096 bytes", 4);
    expect_limit_hits(&server, "max_command_size", 4);
}

#[test]
fn tcp_random_junk_after_magic() {
    const CONNECTIONS: u64 = 300;
    let server = Server::start();
    let mut good = GoodNsqd::connect(&server);
    let label = "tcp_random_junk_after_magic";
    let (fatal, closed_quietly) = attack(&server, &mut good, label, || {
        let mut rng = Rng::new(0x5eed_0005);
        let (mut fatal, mut closed_quietly) = (0u32, 0u32);
        for n in 0..CONNECTIONS {
            // Random bytes with protocol tokens mixed in, so that the junk
            // also reaches IDENTIFY bodies and REGISTER parameters.
            let mut junk = Vec::new();
            let target = 1 + rng.below(8192) as usize;
            while junk.len() < target {
                match rng.below(10) {
                    0 => junk.extend_from_slice(b"PING\n"),
                    1 => {
                        junk.extend_from_slice(b"IDENTIFY\n");
                        junk.extend_from_slice(&(rng.below(300) as i32).to_be_bytes());
                    }
                    2 => junk.extend_from_slice(&identify_command(&identify_json("junk"))),
                    3 => junk.extend_from_slice(b"REGISTER "),
                    4 => junk.extend_from_slice(b"UNREGISTER "),
                    5 => junk.push(b'\n'),
                    _ => {
                        let len = rng.below(64) as usize + 1;
                        junk.extend_from_slice(&rng.bytes(len));
                    }
                }
            }
            let mut s = tcp_attacker(&server);
            send(&mut s, &junk);
            let _ = s.shutdown(Shutdown::Write);
            let deadline = Instant::now() + PROMPTLY;
            let mut frames = Vec::new();
            loop {
                let remaining = deadline.saturating_duration_since(Instant::now());
                match next_event(&mut s, remaining) {
                    Event::Frame(f) => frames.push(f),
                    Event::Closed => break,
                    other => panic!(
                        "junk connection {n}: {} after frames {:?}; junk was {}",
                        describe(&other),
                        frames.iter().map(|f| show(f)).collect::<Vec<_>>(),
                        show(&junk)
                    ),
                }
            }
            for (i, f) in frames.iter().enumerate() {
                let last = i + 1 == frames.len();
                let ok = f == b"OK" || f.starts_with(b"{") || (last && f.starts_with(b"E_"));
                assert!(
                    ok,
                    "junk connection {n}: unexpected frame {} (#{i} of {})",
                    show(f),
                    frames.len()
                );
            }
            if frames.last().is_some_and(|f| f.starts_with(b"E_")) {
                fatal += 1;
            } else {
                closed_quietly += 1;
            }
        }
        (fatal, closed_quietly)
    });
    eprintln!(
        "[{label}] {CONNECTIONS} junk connections: {fatal} ended by an error frame, \
         {closed_quietly} closed at their EOF"
    );
    only_good_node_left(&server);
}

#[test]
fn tcp_nul_and_non_utf8_names() {
    let server = Server::start();
    let mut good = GoodNsqd::connect(&server);
    attack(&server, &mut good, "tcp_nul_and_non_utf8_names", || {
        let cases: [(&[u8], &[u8]); 8] = [
            (
                b"REGISTER to\0pic\n",
                b"E_BAD_TOPIC REGISTER topic name 'to\0pic' is not valid",
            ),
            (
                b"REGISTER \0\n",
                b"E_BAD_TOPIC REGISTER topic name '\0' is not valid",
            ),
            (
                b"REGISTER \xff\xfe\n",
                b"E_BAD_TOPIC REGISTER topic name '\xff\xfe' is not valid",
            ),
            (
                b"REGISTER caf\xc3\x28 chan\n",
                b"E_BAD_TOPIC REGISTER topic name 'caf\xc3\x28' is not valid",
            ),
            (
                b"REGISTER t\xe2\x82\n",
                b"E_BAD_TOPIC REGISTER topic name 't\xe2\x82' is not valid",
            ),
            (
                b"REGISTER good-topic ch\0an\n",
                b"E_BAD_CHANNEL REGISTER channel name 'ch\0an' is not valid",
            ),
            (
                b"REGISTER good-topic \xc0\xaf\xff\n",
                b"E_BAD_CHANNEL REGISTER channel name '\xc0\xaf\xff' is not valid",
            ),
            (
                b"UNREGISTER \xf0\x9f\x98\n",
                b"E_BAD_TOPIC UNREGISTER topic name '\xf0\x9f\x98' is not valid",
            ),
        ];
        for (command, expected) in cases {
            let mut s = identified(&server, "names-nsqd.example");
            send(&mut s, command);
            expect_fatal(&mut s, expected, &format!("command {}", show(command)));
        }

        // In the IDENTIFY body: a raw NUL in a JSON string is not JSON
        // (Go's decoder refuses it too); an escaped NUL is (and must come
        // out of /nodes escaped). Raw invalid UTF-8: see
        // `tcp_identify_body_invalid_utf8_is_replaced_like_go`.
        let raw_nul =
            b"{\"broadcast_address\":\"a\0b\",\"tcp_port\":1,\"http_port\":2,\"version\":\"v\"}";
        let mut s = tcp_attacker(&server);
        send(&mut s, &identify_command(raw_nul));
        expect_fatal(
            &mut s,
            b"E_BAD_BODY IDENTIFY failed to decode JSON body",
            "IDENTIFY body with a raw NUL in a string",
        );
        let mut s = tcp_attacker(&server);
        let body = br#"{"broadcast_address":"nul\u0000nsqd","hostname":"h\u0000","tcp_port":1,"http_port":2,"version":"v"}"#;
        send(&mut s, &identify_command(body));
        match next_event(&mut s, PROMPTLY) {
            Event::Frame(f) if f.starts_with(b"{") => {}
            other => panic!("escaped NUL in IDENTIFY: {}", describe(&other)),
        }
        let r = http_get(server.http_addr(), "/nodes");
        assert_eq!(r.status, 200);
        let listed = producer_addresses(&r.json());
        assert!(
            listed.iter().any(|a| a == "nul\0nsqd"),
            "/nodes must list the escaped NUL address as JSON: {}",
            r.text()
        );
    });
    only_good_topics(&server, "no invalid name may become a topic");
}

/// Go's `encoding/json` (which the original decodes IDENTIFY with, and whose
/// rules `src/tcp/identify.rs` reproduces) does not fail on invalid UTF-8 in
/// a string: it replaces each bad byte with U+FFFD.
#[test]
fn tcp_identify_body_invalid_utf8_is_replaced_like_go() {
    let server = Server::start();
    let mut good = GoodNsqd::connect(&server);
    let label = "tcp_identify_body_invalid_utf8_is_replaced_like_go";
    attack(&server, &mut good, label, || {
        let body = b"{\"broadcast_address\":\"bad\xffutf8\",\"tcp_port\":1,\"http_port\":2,\"version\":\"v\"}";
        let mut s = tcp_attacker(&server);
        send(&mut s, &identify_command(body));
        match next_event(&mut s, PROMPTLY) {
            Event::Frame(f) if f.starts_with(b"{") => {}
            other => panic!(
                "IDENTIFY with invalid UTF-8 in broadcast_address: {}",
                describe(&other)
            ),
        }
        let listed = nodes(&server);
        assert!(
            listed.iter().any(|a| a == "bad\u{fffd}utf8"),
            "/nodes: {listed:?}"
        );
    });
}

#[test]
fn tcp_deep_and_big_json_default_limit() {
    let server = Server::start();
    let mut good = GoodNsqd::connect(&server);
    attack(
        &server,
        &mut good,
        "tcp_deep_and_big_json_default_limit",
        || {
            let deep_100k = vec![b'['; 100_000];
            let mut big = br#"{"broadcast_address":"big","tcp_port":1,"http_port":2,"version":"v","padding":""#.to_vec();
            big.resize((1 << 20) - 2, b'x');
            big.extend_from_slice(b"\"}");
            let deep_60k = vec![b'['; 60_000];
            let deep_objects = br#"{"a":"#.repeat(12_000);
            let cases: [(&[u8], String); 4] = [
                (
                    &deep_100k,
                    "E_BAD_BODY IDENTIFY invalid body size 100000 (limit 65536)".into(),
                ),
                (
                    &big,
                    format!(
                        "E_BAD_BODY IDENTIFY invalid body size {} (limit 65536)",
                        1 << 20
                    ),
                ),
                // Under the size limit: nesting is refused, the stack survives.
                (
                    &deep_60k,
                    "E_BAD_BODY IDENTIFY failed to decode JSON body".into(),
                ),
                (
                    &deep_objects,
                    "E_BAD_BODY IDENTIFY failed to decode JSON body".into(),
                ),
            ];
            for (body, expected) in &cases {
                let mut s = tcp_attacker(&server);
                let mut writer = s.try_clone().unwrap();
                let data = identify_command(body);
                let w = thread::spawn(move || send(&mut writer, &data));
                expect_fatal(
                    &mut s,
                    expected.as_bytes(),
                    &format!("IDENTIFY body {}", show(body)),
                );
                w.join().unwrap();
            }
        },
    );
    only_good_node_left(&server);
}

#[test]
fn tcp_deep_and_big_json_raised_limit() {
    const RSS_BOUND: u64 = 96 * MIB;
    const CONCURRENT: usize = 4;
    let server = Server::start_with(["--max-identify-body-size=2000000"]);
    let mut good = GoodNsqd::connect(&server);
    under_attack(
        &server,
        &mut good,
        "tcp_deep_and_big_json_raised_limit",
        RSS_BOUND,
        PROBE_EVERY,
        || {
            let decode_error: &[u8] = b"E_BAD_BODY IDENTIFY failed to decode JSON body";
            let deep = vec![b'['; 100_000];
            let mut balanced = vec![b'['; 100_000];
            balanced.extend_from_slice(&[b']'; 100_000]);
            let mut deep_field =
                br#"{"broadcast_address":"deep","tcp_port":1,"http_port":2,"version":"v","x":"#
                    .to_vec();
            // 10,000 levels: skipping an unknown field is not depth-limited
            // (it is iterative, so safe) but costs time linear in its size,
            // ~50 ms per 100,000 levels in a debug build.
            deep_field.extend_from_slice(&br#"{"a":["#.repeat(10_000));
            let huge_deep = vec![b'['; 1_999_999];
            for (body, what) in [
                (&deep, "100k ["),
                (&balanced, "100k [ then 100k ]"),
                (&deep_field, "deep unknown field"),
                (&huge_deep, "1,999,999 ["),
            ] {
                let mut s = tcp_attacker(&server);
                let mut writer = s.try_clone().unwrap();
                let data = identify_command(body);
                let w = thread::spawn(move || send(&mut writer, &data));
                expect_fatal(&mut s, decode_error, what);
                w.join().unwrap();
            }

            // A 1 MiB body that is a valid IDENTIFY (the padding is an unknown
            // field): accepted, from several connections at once.
            let mut big = br#"{"broadcast_address":"big-nsqd.example","tcp_port":1,"http_port":2,"version":"v","padding":""#.to_vec();
            big.resize((1 << 20) - 2, b'x');
            big.extend_from_slice(b"\"}");
            let data = identify_command(&big);
            let mut conns: Vec<TcpStream> =
                (0..CONCURRENT).map(|_| tcp_attacker(&server)).collect();
            let writers: Vec<_> = conns
                .iter()
                .map(|s| {
                    let mut w = s.try_clone().unwrap();
                    let data = data.clone();
                    thread::spawn(move || send(&mut w, &data))
                })
                .collect();
            for s in &mut conns {
                match next_event(s, PROMPTLY) {
                    Event::Frame(f) if f.starts_with(b"{") => {}
                    other => panic!("1 MiB valid IDENTIFY: {}", describe(&other)),
                }
            }
            for w in writers {
                w.join().unwrap();
            }
            let listed = nodes(&server);
            assert_eq!(
                listed.iter().filter(|a| *a == "big-nsqd.example").count(),
                CONCURRENT,
                "{listed:?}"
            );
        },
    );
    only_good_node_left(&server);
}

#[test]
fn tcp_registration_cap() {
    const CAP: usize = 1000;
    const ERROR: &[u8] =
        b"E_INVALID REGISTER registration limit reached (1000 keys per connection)";
    let server = Server::start_with(["--max-registrations-per-connection=1000"]);
    let mut good = GoodNsqd::connect(&server);
    attack(&server, &mut good, "tcp_registration_cap", || {
        // IDENTIFY puts the connection in one key (`client`), each REGISTER
        // of a new topic in one more: the 1000th topic is one too many.
        let mut s = identified(&server, "greedy-nsqd.example");
        let mut commands = Vec::new();
        for i in 0..CAP {
            commands.extend_from_slice(format!("REGISTER cap-{i}\n").as_bytes());
        }
        send(&mut s, &commands);
        for i in 0..CAP - 1 {
            expect_frame(&mut s, b"OK", &format!("REGISTER cap-{i}"));
        }
        expect_fatal(&mut s, ERROR, "REGISTER past the cap");

        // A flood far past the cap, pipelined: the same error, then closed.
        let mut s = identified(&server, "flood-nsqd.example");
        let mut writer = s.try_clone().unwrap();
        let w = thread::spawn(move || {
            let mut commands = Vec::new();
            for i in 0..50_000 {
                commands.extend_from_slice(format!("REGISTER flood-{i}\n").as_bytes());
            }
            send(&mut writer, &commands);
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut oks = 0;
        loop {
            match next_event(&mut s, deadline.saturating_duration_since(Instant::now())) {
                Event::Frame(f) if f == b"OK" => oks += 1,
                Event::Frame(f) if f == ERROR => break,
                other => panic!("flood past the cap, after {oks} OK: {}", describe(&other)),
            }
        }
        assert_eq!(oks, CAP - 1);
        expect_closed(&mut s, PROMPTLY, "flood past the cap");
        w.join().unwrap();
    });
    // The keys stay (topics are not ephemeral), the producers are gone.
    let listed = topics(&server);
    for i in 0..CAP - 1 {
        for prefix in ["cap", "flood"] {
            let t = format!("{prefix}-{i}");
            assert!(listed.contains(&t), "/topics lacks {t}");
        }
    }
    for t in ["cap-0", "cap-500", "cap-998", "flood-0", "flood-998"] {
        eventually(
            PROMPTLY,
            &format!("/lookup?topic={t} lists no producer once the capped connections closed"),
            || lookup_producers(&server, t) == Some(vec![]),
        );
    }
    eprintln!(
        "[tcp_registration_cap] /topics lists {} topics; cap-999 (the refused one) listed: {}",
        listed.len(),
        listed.contains(&"cap-999".to_owned())
    );
    only_good_node_left(&server);
    expect_limit_hits(&server, "max_registrations_per_connection", 2);
}

#[test]
fn tcp_connection_cap() {
    const CAP: usize = 200;
    const OPENED: usize = 400;
    let server = Server::start_with(["--max-tcp-connections=200"]);
    let mut good = GoodNsqd::connect(&server);
    let label = "tcp_connection_cap";
    attack(&server, &mut good, label, || {
        // The good nsqd holds one slot: 199 of the 400 are admitted (and
        // held idle), 201 refused.
        let admitted = CAP - 1;
        let mut conns: Vec<TcpStream> = (0..OPENED)
            .map(|_| tcp_connect(server.tcp_addr(), false).expect("connect"))
            .collect();
        let all_open = Instant::now();
        for (i, s) in conns.iter_mut().enumerate().skip(admitted) {
            expect_closed(s, PROMPTLY, &format!("connection {i} past the cap"));
        }
        let refused_within = all_open.elapsed();
        for (i, s) in conns.iter_mut().enumerate().take(admitted) {
            send(s, b"  V1PING\n");
            expect_frame(s, b"OK", &format!("admitted connection {i}"));
        }
        eprintln!(
            "[{label}] {} of {OPENED} refused, all seen closed {refused_within:?} after \
             the last connect",
            OPENED - admitted
        );
        // Slots come back when connections end.
        conns.truncate(admitted - 50);
        eventually(PROMPTLY, "a slot is free again", || {
            let mut s = tcp_attacker(&server);
            send(&mut s, b"PING\n");
            matches!(next_event(&mut s, PROMPTLY), Event::Frame(f) if f == b"OK")
        });
        for (i, s) in conns.iter_mut().enumerate() {
            send(s, b"PING\n");
            expect_frame(s, b"OK", &format!("admitted connection {i}, later"));
        }
    });
    let refusal_lines = || {
        server
            .logs()
            .iter()
            .filter(|l| l.contains("--max-tcp-connections=200 reached"))
            .count()
    };
    eventually(PROMPTLY, "refusals logged", || refusal_lines() >= 1);
    let refusal_lines = refusal_lines();
    assert!(
        (1..=5).contains(&refusal_lines),
        "refusals are logged, throttled: {refusal_lines} lines"
    );
    // Each refusal is counted (more may come from the retries that waited
    // for a free slot).
    let refused = limit_hits(&server, "max_tcp_connections");
    assert!(
        refused >= (OPENED - (CAP - 1)) as u64,
        "refusals counted: {refused}"
    );
    eprintln!("[tcp_connection_cap] {refused} refusals counted, {refusal_lines} log lines");
}

/// The issue's "10,000 connections opened at once", scaled to 1,000 opened
/// from 8 threads as fast as they go: every connection past the cap is seen
/// closed within [`STORM_PROMPTLY`] of its connect, the others are held.
#[test]
fn tcp_connection_storm_refused_promptly() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 125;
    const CAP: usize = 100;
    let server = Server::start_with(["--max-tcp-connections=100"]);
    let mut good = GoodNsqd::connect(&server);
    let label = "tcp_connection_storm_refused_promptly";
    let slowest_refusal = attack(&server, &mut good, label, || {
        let tcp = server.tcp_addr();
        // The openers hand each connection to a watcher that notices
        // when it is closed while the storm goes on.
        let (opened_tx, opened_rx) = mpsc::channel::<(TcpStream, Instant)>();
        let (connects, (held, mut refusals)) = thread::scope(|scope| {
            let watcher = scope.spawn(move || {
                let mut pending: Vec<(TcpStream, Instant)> = Vec::new();
                let mut refusals = Vec::new();
                let mut storm_over = false;
                let deadline = Instant::now() + Duration::from_secs(10);
                while !(storm_over && pending.len() < CAP) && Instant::now() < deadline {
                    loop {
                        match opened_rx.try_recv() {
                            Ok(c) => pending.push(c),
                            Err(mpsc::TryRecvError::Empty) => break,
                            Err(mpsc::TryRecvError::Disconnected) => {
                                storm_over = true;
                                break;
                            }
                        }
                    }
                    pending.retain_mut(|(s, connected)| {
                        let mut byte = [0u8; 1];
                        match s.read(&mut byte) {
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
                            Ok(0) | Err(_) => {
                                refusals.push(connected.elapsed());
                                false
                            }
                            Ok(_) => panic!("a storm connection received data"),
                        }
                    });
                    thread::sleep(Duration::from_millis(1));
                }
                (pending.len(), refusals)
            });
            let openers: Vec<_> = (0..THREADS)
                .map(|_| {
                    let opened_tx = opened_tx.clone();
                    scope.spawn(move || {
                        (0..PER_THREAD)
                            .map(|_| {
                                let started = Instant::now();
                                let s = tcp_connect(tcp, false).expect("connect");
                                s.set_nonblocking(true).unwrap();
                                let took = started.elapsed();
                                opened_tx.send((s, Instant::now())).unwrap();
                                took
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            drop(opened_tx);
            let connects: Vec<Duration> = openers
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect();
            (connects, watcher.join().unwrap())
        });
        let slowest_connect = connects.iter().max().copied().unwrap();
        let slow_connects = connects.iter().filter(|d| **d > STORM_PROMPTLY).count();
        // The good nsqd holds one slot.
        assert_eq!(held, CAP - 1, "connections held");
        refusals.sort();
        let late = refusals.iter().filter(|w| **w > STORM_PROMPTLY).count();
        eprintln!(
            "[{label}] {} connects: slowest {slowest_connect:?}, {slow_connects} slower \
                 than {STORM_PROMPTLY:?}; {} refused: median seen closed {:?} after its \
                 connect, slowest {:?}, {late} later than {:?}",
            connects.len(),
            refusals.len(),
            refusals[refusals.len() / 2],
            refusals[refusals.len() - 1],
            STORM_PROMPTLY
        );
        // Connect times are reported, not asserted: a few connects of the
        // storm may take 1 s (a dropped SYN retried), see
        // `tcp_listen_backlog_absorbs_a_connection_storm`.
        refusals[refusals.len() - 1]
    });
    assert!(
        slowest_refusal <= STORM_PROMPTLY,
        "connections past the cap must be refused promptly; the slowest took {slowest_refusal:?}"
    );
}

/// Sends SIGSTOP to the server; SIGCONT when dropped (even on a panic).
struct Stopped(u32);

impl Stopped {
    fn new(server: &Server) -> Stopped {
        // SAFETY: kill(2) on our own (unreaped) child.
        unsafe { libc::kill(server.pid() as libc::pid_t, libc::SIGSTOP) };
        Stopped(server.pid())
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGCONT) };
    }
}

/// How many of `n` connections to `addr`, started at once (non-blocking),
/// complete their handshake within `within`.
fn handshakes_completed(addr: SocketAddr, n: usize, within: Duration) -> (usize, Vec<Socket>) {
    let sockets: Vec<Socket> = (0..n)
        .map(|_| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            s.set_nonblocking(true).unwrap();
            match s.connect(&addr.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => panic!("connect: {e}"),
            }
            s
        })
        .collect();
    let completed = || sockets.iter().filter(|s| s.peer_addr().is_ok()).count();
    let deadline = Instant::now() + within;
    while completed() < n && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    (completed(), sockets)
}

/// A reconnect storm reaches the server while it is momentarily busy (here:
/// stopped with SIGSTOP): the kernel completes as many handshakes as the
/// listen backlog holds; the SYNs of the others are dropped and those
/// clients retry only after a second. Go's `net.Listen` (the original) uses
/// `net.core.somaxconn` as the backlog.
#[test]
fn tcp_listen_backlog_absorbs_a_connection_storm() {
    const STORM: usize = 1000;
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    let expected = STORM.min(somaxconn);
    let server = Server::start();
    let mut good = GoodNsqd::connect(&server);
    let label = "tcp_listen_backlog_absorbs_a_connection_storm";
    // Not `under_attack`: the server is stopped on purpose, so nothing is
    // served in the meantime. The good nsqd is checked after it resumes.
    let (completed, sockets) = {
        let _stopped = Stopped::new(&server);
        handshakes_completed(server.tcp_addr(), STORM, Duration::from_millis(300))
    };
    drop(sockets);
    eventually(PROMPTLY, "the good nsqd is served again", || {
        good.ping().is_ok_and(|d| d < SERVED_WITHIN)
    });
    lookup_probe(server.http_addr(), GOOD_TOPIC).expect("/lookup after the storm");
    let peak = proc_status_bytes(server.pid(), "VmHWM").expect("VmHWM");
    eprintln!(
        "[{label}] server stopped: {completed} of {STORM} handshakes completed \
         (somaxconn {somaxconn}); peak RSS (VmHWM) {:.1} MiB (bound {} MiB)",
        peak as f64 / MIB as f64,
        RSS_BOUND / MIB
    );
    assert!(peak < RSS_BOUND, "peak RSS");
    assert!(
        completed >= expected,
        "only {completed} of {STORM} simultaneous connects were queued while the server \
         was busy (expected at least {expected}: the backlog should be somaxconn)"
    );
}

/// "Promptly" in a connection storm.
const STORM_PROMPTLY: Duration = Duration::from_millis(500);

#[test]
fn tcp_connect_churn() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 500;
    let server = Server::start();
    let mut good = GoodNsqd::connect(&server);
    let label = "tcp_connect_churn";
    attack(&server, &mut good, label, || {
        let tcp = server.tcp_addr();
        thread::scope(|scope| {
            for t in 0..THREADS {
                scope.spawn(move || {
                    for i in 0..PER_THREAD {
                        let mut s = tcp_connect(tcp, true).expect("connect");
                        let mut data = identify_command(&identify_json(&format!("churn-{t}-{i}")));
                        data.extend_from_slice(b"REGISTER churn-topic churn-channel\n");
                        s.write_all(&data).unwrap();
                        match next_event(&mut s, PROMPTLY) {
                            Event::Frame(f) if f.starts_with(b"{") => {}
                            other => panic!("churn IDENTIFY: {}", describe(&other)),
                        }
                        // Every other one closes before reading its OK, and
                        // every fourth aborts (RST) in the middle of a body.
                        match i % 4 {
                            0 => expect_frame(&mut s, b"OK", "churn REGISTER"),
                            1 => {}
                            2 => {
                                expect_frame(&mut s, b"OK", "churn REGISTER");
                                send(&mut s, b"IDENTIFY\n\0\0\0\x10{\"br");
                            }
                            _ => {
                                set_linger_zero(&s);
                                send(&mut s, b"REGISTER churn-topic x\nIDENTIFY\n\0\0");
                            }
                        }
                    }
                });
            }
        });
        only_good_node_left(&server);
        // Removal from /nodes and from each topic is not one atomic step.
        eventually(PROMPTLY, "churn-topic lists no producer", || {
            lookup_producers(&server, "churn-topic") == Some(vec![])
        });
    });
    eprintln!("[{label}] {} connects", THREADS * PER_THREAD);
}

// --------------------------------------------------------------- HTTP tests

/// A raw HTTP connection to write requests on and read responses from.
struct HttpConn {
    reader: BufReader<TcpStream>,
}

impl HttpConn {
    fn open(addr: SocketAddr) -> HttpConn {
        let s = TcpStream::connect_timeout(&addr, PROMPTLY).expect("connect to the HTTP port");
        s.set_read_timeout(Some(PROMPTLY)).unwrap();
        s.set_write_timeout(Some(PROMPTLY)).unwrap();
        HttpConn {
            reader: BufReader::new(s),
        }
    }

    fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    fn send(&mut self, data: &[u8]) {
        let _ = self.stream().write_all(data);
    }

    fn response(&mut self) -> io::Result<HttpResponse> {
        read_http_response(&mut self.reader, false)
    }

    /// The server must close the connection (EOF or reset) within `within`,
    /// having sent nothing more.
    #[track_caller]
    fn expect_closed(&mut self, within: Duration, what: &str) {
        self.stream().set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 1024];
        let got = self.reader.read(&mut buf);
        match got {
            Ok(0) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) => {}
            Ok(n) => panic!("{what}: expected a close, got {}", show(&buf[..n])),
            Err(e) => panic!("{what}: expected a close within {within:?}, got {e}"),
        }
    }
}

fn json_message(r: &HttpResponse) -> String {
    serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| r.text())
}

/// Request heads over `limit` (the `--http-max-header-size` in effect) are
/// answered 431 (a request line over it: `long_uri_status`) promptly, not
/// after a timeout, and the connection is closed; heads just under it are
/// served. The oversized single header is `over` bytes longer than `limit`.
fn request_head_limits(
    label: &str,
    args: &[&str],
    limit: usize,
    long_uri_status: u16,
    over: usize,
) {
    let server = Server::start_with(args);
    let mut good = GoodNsqd::connect(&server);
    let observed = attack(&server, &mut good, label, || {
        let http = server.http_addr();
        let long_uri = format!("/lookup?topic={}", "a".repeat(limit + 1000));
        let big_header = format!("X-Junk: {}\r\n", "b".repeat(limit + over));
        let many_headers: String = (0..2000).map(|i| format!("X-H{i}: v\r\n")).collect();
        let cases: [(&str, String, u16); 4] = [
            (
                "request line over the limit",
                format!("GET {long_uri} HTTP/1.1\r\nHost: x\r\n\r\n"),
                long_uri_status,
            ),
            (
                "one header over the limit",
                format!("GET /ping HTTP/1.1\r\nHost: x\r\n{big_header}\r\n"),
                431,
            ),
            (
                "2,000 small headers",
                format!("GET /ping HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n"),
                431,
            ),
            (
                "a head over the limit that never ends",
                format!(
                    "GET /ping HTTP/1.1\r\nHost: x\r\n{}",
                    "X-A: b\r\n".repeat(limit / 8 + 1000)
                ),
                431,
            ),
        ];
        let mut observed = Vec::new();
        for (what, request, status) in cases {
            let mut c = HttpConn::open(http);
            let mut writer = c.stream().try_clone().unwrap();
            let w = thread::spawn(move || {
                let _ = writer.write_all(request.as_bytes());
            });
            let started = Instant::now();
            let r = c
                .response()
                .unwrap_or_else(|e| panic!("{what}: no response: {e}"));
            let took = started.elapsed();
            assert_eq!(r.status, status, "{what}: {}", r.text());
            c.expect_closed(PROMPTLY, what);
            w.join().unwrap();
            observed.push(format!("{what}: {} in {took:?}", r.status));
        }
        // Just under the limit: served.
        let uri = format!("/lookup?topic={}", "a".repeat(limit.min(65_535) - 1000));
        let r = http_get(http, &uri);
        assert_eq!(
            (r.status, json_message(&r)),
            (404, "TOPIC_NOT_FOUND".to_owned()),
            "a request line just under the limit"
        );
        let header = "c".repeat(limit - 1000);
        let r = http_request(http, "GET", "/ping", &[("X-Big", &header)], None).unwrap();
        assert_eq!(r.status, 200, "a header just under the limit");
        observed
    });
    eprintln!("[{label}] {observed:#?}");
}

#[test]
fn http_request_head_too_large_default_limit() {
    // 64 KiB, the whole head (request line included: a long URI is 431
    // too). The oversized header is 2.5 times the limit: see the next test
    // for one just over it.
    request_head_limits(
        "http_request_head_too_large_default_limit",
        &[],
        65536,
        431,
        100_000,
    );
}

#[test]
fn http_request_head_just_over_default_limit() {
    request_head_limits(
        "http_request_head_just_over_default_limit",
        &[],
        65536,
        431,
        1000,
    );
}

#[test]
fn http_request_head_too_large_lowered_limit() {
    request_head_limits(
        "http_request_head_too_large_lowered_limit",
        &["--http-max-header-size=16384"],
        16384,
        431,
        1000,
    );
}

#[test]
fn http_slowloris_header_timeout() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    const CLOSED_BY: Duration = Duration::from_secs(3);
    const SLOW_CLIENTS: usize = 20;
    let server = Server::start_with(["--http-header-timeout=1s"]);
    let mut good = GoodNsqd::connect(&server);
    let label = "http_slowloris_header_timeout";
    attack(&server, &mut good, label, || {
        let http = server.http_addr();
        let closed_after: Vec<(Duration, Option<u16>)> = thread::scope(|scope| {
            let slow: Vec<_> = (0..SLOW_CLIENTS)
                .map(|_| {
                    scope.spawn(move || {
                        // One byte every 100 ms, forever: a request head that
                        // never completes.
                        let head = b"GET /lookup?topic=good-topic HTTP/1.1\r\nHost: x\r\nX-Slow: "
                            .iter()
                            .chain(std::iter::repeat(&b'z'));
                        let mut c = HttpConn::open(http);
                        let started = Instant::now();
                        let mut buf = [0u8; 4096];
                        for &byte in head {
                            if c.stream().write_all(&[byte]).is_err() {
                                return (started.elapsed(), None);
                            }
                            // The read timeout paces the writes.
                            c.stream()
                                .set_read_timeout(Some(Duration::from_millis(100)))
                                .unwrap();
                            match c.reader.read(&mut buf) {
                                Ok(0) => return (started.elapsed(), None),
                                Ok(n) => {
                                    // A response (408?) before the close.
                                    let status = String::from_utf8_lossy(&buf[..n])
                                        .split(' ')
                                        .nth(1)
                                        .and_then(|s| s.parse().ok());
                                    let took = started.elapsed();
                                    c.expect_closed(PROMPTLY, "slowloris after its response");
                                    return (took, status);
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => return (started.elapsed(), None),
                            }
                            assert!(
                                started.elapsed() < CLOSED_BY,
                                "a slowloris client was not disconnected within {CLOSED_BY:?}"
                            );
                        }
                        unreachable!("the head is endless")
                    })
                })
                .collect();
            // An idle keep-alive connection is closed after the timeout too.
            let mut c = HttpConn::open(http);
            c.send(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n");
            let r = c.response().expect("a response before idling");
            assert_eq!(r.status, 200);
            let idle_since = Instant::now();
            c.expect_closed(CLOSED_BY, "idle keep-alive connection");
            let idle = idle_since.elapsed();
            assert!(
                idle >= TIMEOUT - Duration::from_millis(50),
                "closed after {idle:?}"
            );
            eprintln!("[{label}] idle keep-alive connection closed after {idle:?}");
            slow.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (after, status) in &closed_after {
            assert!(
                *after >= TIMEOUT - Duration::from_millis(50) && *after < CLOSED_BY,
                "slowloris closed after {after:?}"
            );
            assert!(
                matches!(status, None | Some(408)),
                "slowloris answered with {status:?}"
            );
        }
        // Each slow sender counted once; the idle keep-alive connection,
        // closed after the same time, is ordinary behaviour and is not.
        expect_limit_hits(&server, "http_header_timeout", SLOW_CLIENTS as u64);
        let slowest = closed_after.iter().map(|(d, _)| *d).max().unwrap();
        eprintln!(
            "[{label}] {SLOW_CLIENTS} slowloris clients disconnected within {slowest:?} \
             (responses: {:?})",
            closed_after.iter().map(|(_, s)| *s).collect::<Vec<_>>()
        );
    });
}

#[test]
fn http_many_idle_keepalive_connections() {
    const RSS_BOUND: u64 = 96 * MIB;
    const IDLE: usize = 2000;
    let server = Server::start();
    let mut good = GoodNsqd::connect(&server);
    let label = "http_many_idle_keepalive_connections";
    under_attack(&server, &mut good, label, RSS_BOUND, PROBE_EVERY, || {
        let http = server.http_addr();
        let mut conns: Vec<HttpConn> = thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(move || {
                        (0..IDLE / 4)
                            .map(|_| {
                                let mut c = HttpConn::open(http);
                                c.send(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n");
                                let r = c.response().expect("/ping on a keep-alive connection");
                                assert_eq!(r.status, 200);
                                c
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        assert_eq!(conns.len(), IDLE);
        // Held idle while the prober's lookups go on; a sample of the
        // idle connections is still served too.
        let mut worst = Duration::ZERO;
        for c in conns.iter_mut().step_by(50) {
            let started = Instant::now();
            c.send(b"GET /lookup?topic=good-topic HTTP/1.1\r\nHost: x\r\n\r\n");
            let r = c
                .response()
                .expect("/lookup on an idle keep-alive connection");
            worst = worst.max(started.elapsed());
            assert_eq!(producer_addresses(&r.json()), [GOOD_ADDR]);
        }
        eprintln!(
            "[{label}] {IDLE} idle keep-alive connections held; /lookup on 1 in 50 of \
                 them: worst {worst:?}"
        );
    });
}

#[test]
fn http_bad_percent_encoding_and_non_utf8_query() {
    let server = Server::start();
    let mut good = GoodNsqd::connect(&server);
    let label = "http_bad_percent_encoding_and_non_utf8_query";
    attack(&server, &mut good, label, || {
        let http = server.http_addr();
        let cases: [(&str, &str, u16, &str); 16] = [
            ("GET", "/lookup?topic=%ZZ", 400, "INVALID_REQUEST"),
            ("GET", "/lookup?topic=%", 400, "INVALID_REQUEST"),
            ("GET", "/lookup?topic=%F", 400, "INVALID_REQUEST"),
            (
                "GET",
                "/lookup?topic=good-topic&x=%G0",
                400,
                "INVALID_REQUEST",
            ),
            ("GET", "/lookup?topic=good-topic;x", 400, "INVALID_REQUEST"),
            ("GET", "/lookup?topic=%FF", 404, "TOPIC_NOT_FOUND"),
            ("GET", "/lookup?topic=%FF%FE%FD", 404, "TOPIC_NOT_FOUND"),
            ("GET", "/lookup?topic=caf%C3%28", 404, "TOPIC_NOT_FOUND"),
            ("GET", "/lookup?topic=%E2%82", 404, "TOPIC_NOT_FOUND"),
            ("GET", "/lookup?topic=a%00b", 404, "TOPIC_NOT_FOUND"),
            ("GET", "/lookup?%FF=good-topic", 400, "MISSING_ARG_TOPIC"),
            ("POST", "/topic/create?topic=%FF", 400, "INVALID_ARG_TOPIC"),
            ("POST", "/topic/create?topic=a%00", 400, "INVALID_ARG_TOPIC"),
            (
                "POST",
                "/channel/create?topic=good-topic&channel=%C0%AF",
                400,
                "INVALID_ARG_CHANNEL",
            ),
            ("POST", "/topic/tombstone?topic=%FF&node=%FF", 200, ""),
            ("GET", "/channels?topic=%FF", 200, ""),
        ];
        for (method, target, status, message) in cases {
            let r = http_request(http, method, target, &[], None)
                .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
            assert_eq!(r.status, status, "{method} {target}: {}", r.text());
            if !message.is_empty() {
                assert_eq!(json_message(&r), message, "{method} {target}");
            }
        }
        // A valid escape still decodes.
        let r = http_get(http, "/lookup?topic=good-%74opic");
        assert_eq!(producer_addresses(&r.json()), [GOOD_ADDR]);
        // An invalid escape in the path.
        let r = http_get(http, "/lookup%ZZ?topic=good-topic");
        assert_eq!(r.status, 400, "{}", r.text());

        // Raw (unescaped) bytes that are not allowed in a request target:
        // refused by the HTTP parser with 400, the connection closed.
        for raw in [
            &b"GET /lookup?topic=\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /lookup?topic=a\0b HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /lookup?topic=\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Bin: \0\x01\r\n\r\n",
            b"\xff\xfe\xfd\xfc\r\n\r\n",
        ] {
            let mut c = HttpConn::open(http);
            c.send(raw);
            match c.response() {
                Ok(r) => {
                    assert!(
                        matches!(r.status, 400 | 404),
                        "raw {}: HTTP {} {}",
                        show(raw),
                        r.status,
                        r.text()
                    );
                    eprintln!("[{label}] raw {}: HTTP {}", show(raw), r.status);
                }
                Err(e) => panic!("raw {}: no response ({e})", show(raw)),
            }
        }
    });
    only_good_topics(&server, "nothing invalid created");
}

#[test]
fn http_pipelined_requests() {
    const PINGS: usize = 1000;
    let server = Server::start();
    let mut good = GoodNsqd::connect(&server);
    attack(&server, &mut good, "http_pipelined_requests", || {
        let http = server.http_addr();
        let mut c = HttpConn::open(http);
        let mut batch = String::new();
        let head = "HTTP/1.1\r\nHost: x\r\n";
        for req in [
            format!("GET /ping {head}\r\n"),
            format!("GET /lookup?topic=good-topic {head}\r\n"),
            format!("GET /lookup?topic=missing {head}\r\n"),
            format!("POST /topic/create?topic=piped {head}Content-Length: 5\r\n\r\nhello"),
            format!("GET /topics {head}\r\n"),
            format!("GET /lookup?topic=%ZZ {head}\r\n"),
            format!("GET /info {head}\r\n"),
        ] {
            batch.push_str(&req);
        }
        for _ in 0..PINGS {
            batch.push_str(&format!("GET /ping {head}\r\n"));
        }
        batch.push_str(&format!("GET /nodes {head}Connection: close\r\n\r\n"));
        c.send(batch.as_bytes());

        let mut next = |what: &str| {
            c.response()
                .unwrap_or_else(|e| panic!("pipelined {what}: no response: {e}"))
        };
        let r = next("/ping");
        assert_eq!((r.status, r.text()), (200, "OK".into()));
        let r = next("/lookup good");
        assert_eq!(producer_addresses(&r.json()), [GOOD_ADDR]);
        let r = next("/lookup missing");
        assert_eq!(
            (r.status, json_message(&r)),
            (404, "TOPIC_NOT_FOUND".into())
        );
        let r = next("/topic/create");
        assert_eq!(r.status, 200);
        let r = next("/topics");
        // Answered in order: the topic created just before is listed.
        assert!(
            r.json()["topics"]
                .as_array()
                .unwrap()
                .contains(&Value::from("piped")),
            "{}",
            r.text()
        );
        let r = next("/lookup %ZZ");
        assert_eq!(
            (r.status, json_message(&r)),
            (400, "INVALID_REQUEST".into())
        );
        let r = next("/info");
        assert!(r.json()["version"].is_string());
        for i in 0..PINGS {
            let r = next(&format!("/ping #{i}"));
            assert_eq!((r.status, r.text()), (200, "OK".into()), "/ping #{i}");
        }
        let r = next("/nodes");
        assert_eq!(producer_addresses(&r.json()), [GOOD_ADDR]);
        c.expect_closed(PROMPTLY, "after Connection: close");
    });
}

/// `clients` connections pipeline `GET target` until their writes block
/// for 500 ms (the server stopped reading their requests) or 3 s have
/// passed, and never read a byte. Returns how much each wrote.
fn never_reading_clients(server: &Server, target: &str, clients: usize) -> Vec<usize> {
    let http = server.http_addr();
    let sockets: Vec<TcpStream> = (0..clients)
        .map(|_| TcpStream::connect(http).unwrap())
        .collect();
    let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").repeat(100);
    let written: Vec<usize> = thread::scope(|scope| {
        let writers: Vec<_> = sockets
            .iter()
            .map(|s| {
                let mut w = s.try_clone().unwrap();
                let request = request.as_bytes();
                scope.spawn(move || {
                    w.set_write_timeout(Some(Duration::from_millis(500)))
                        .unwrap();
                    let deadline = Instant::now() + Duration::from_secs(3);
                    let mut sent = 0;
                    while Instant::now() < deadline {
                        match w.write(request) {
                            Ok(n) => sent += n,
                            Err(_) => break,
                        }
                    }
                    sent
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    // Held a little longer, still never read, while the prober keeps
    // checking that other clients are served.
    thread::sleep(Duration::from_millis(300));
    drop(sockets);
    written
}

/// An nsqd registered in `count` topics (or, with `channels_of`, in one
/// topic with `count` channels), with 60-byte names: big answers.
fn big_registration(server: &Server, count: usize, channels_of: Option<&str>) -> TcpStream {
    let mut big = identified(server, "big-nsqd.example");
    let mut commands = Vec::new();
    for i in 0..count {
        let line = match channels_of {
            Some(topic) => format!("REGISTER {topic} {i:0>60}\n"),
            None => format!("REGISTER {i:0>60}\n"),
        };
        commands.extend_from_slice(line.as_bytes());
    }
    big.write_all(&commands).unwrap();
    for i in 0..count {
        expect_frame(&mut big, b"OK", &format!("big REGISTER #{i}"));
    }
    big
}

/// How many clients pipeline requests without ever reading.
const NEVER_READING_CLIENTS: usize = 8;

#[test]
fn http_client_that_never_reads_big_lookup() {
    let readers = NEVER_READING_CLIENTS;
    let server = Server::start();
    let mut good = GoodNsqd::connect(&server);
    let label = "http_client_that_never_reads_big_lookup";
    // /lookup?topic=big-topic lists 2,000 channels (its answer is kept
    // rendered by the server).
    let _big = big_registration(&server, 2000, Some("big-topic"));
    let size = http_get(server.http_addr(), "/lookup?topic=big-topic")
        .body
        .len();
    let written = attack(&server, &mut good, label, || {
        never_reading_clients(&server, "/lookup?topic=big-topic", readers)
    });
    eprintln!(
        "[{label}] the answer is {size} bytes; the {readers} non-readers wrote \
         {written:?} bytes of requests before the server stopped reading"
    );
}

#[test]
fn http_client_that_never_reads_big_nodes() {
    let readers = NEVER_READING_CLIENTS;
    let server = Server::start();
    let mut good = GoodNsqd::connect(&server);
    let label = "http_client_that_never_reads_big_nodes";
    // /nodes lists one producer in 2,000 topics (~140 KB, rendered per
    // request: the expensive answer).
    let _big = big_registration(&server, 2000, None);
    let size = http_get(server.http_addr(), "/nodes").body.len();
    let written = attack(&server, &mut good, label, || {
        never_reading_clients(&server, "/nodes", readers)
    });
    eprintln!(
        "[{label}] the answer is {size} bytes; the {readers} non-readers wrote \
         {written:?} bytes of requests before the server stopped reading"
    );
}

/// `--max-http-accept-rate`: a burst of new connections is taken from the
/// backlog at the rate (a tenth of a second's worth at once), every one of
/// them answered, none refused, and the pauses counted and logged.
#[test]
fn http_accept_rate_paces_a_connection_burst() {
    let server = Server::start_with(["--max-http-accept-rate=20"]);
    let http = server.http_addr();
    // 20/s: 2 at once, then one every 50 ms; 12 connections take at least
    // (12 - 2) x 50 ms = 500 ms to be accepted, however fast the machine.
    const N: usize = 12;
    let started = Instant::now();
    let mut conns: Vec<TcpStream> = (0..N)
        .map(|i| {
            let mut s = TcpStream::connect(http).unwrap_or_else(|e| panic!("connect {i}: {e}"));
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    for (i, s) in conns.iter_mut().enumerate() {
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)
            .unwrap_or_else(|e| panic!("answer {i}: {e}"));
        assert!(
            answer.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "connection {i} answered {}",
            show(&answer)
        );
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450),
        "{N} connections accepted in {took:?}: not paced at 20/s"
    );
    assert!(limit_hits(&server, "max_http_accept_rate") >= 1);
    assert_eq!(limit_hits(&server, "max_http_connections"), 0);
    expect_log_lines(&server, "faster than --max-http-accept-rate=20/s", 1);
}

/// Without the flag, nothing is paced and the series reads 0.
#[test]
fn http_accept_rate_off_by_default() {
    let server = Server::start();
    for _ in 0..30 {
        assert_eq!(http_get(server.http_addr(), "/ping").status, 200);
    }
    assert_eq!(limit_hits(&server, "max_http_accept_rate"), 0);
}
