//! Black-box test harness: starts the real `nsqlookupd` binary on ephemeral
//! ports and offers tiny blocking TCP/HTTP clients to talk to it.
//!
//! [`etcd`] starts real etcd clusters for the cluster-mode tests, and
//! [`cluster`] has their replicas, played nsqd and polling helpers.
//! [`auth`] is a real auth server (nsqd's auth protocol) for the access
//! control tests.
//!
//! Used by several integration-test crates, each of which uses only part of
//! it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub mod auth;
pub mod cluster;
pub mod etcd;
pub mod pki;

/// How long the server gets to report both listening addresses.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(10);
/// How long the server gets to exit after SIGTERM before it is SIGKILLed.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);
/// Connect/read/write timeout of the HTTP helper.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

const TCP_MARKER: &str = "TCP: listening on ";
const HTTP_MARKER: &str = "HTTP: listening on ";
const HTTPS_MARKER: &str = "HTTPS: listening on ";

/// Which listeners [`Server::start_listening`] waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listeners {
    /// TCP and plain HTTP (the default).
    Plain,
    /// TCP, plain HTTP and HTTPS.
    Both,
    /// TCP and HTTPS (`--http-address=""`).
    HttpsOnly,
}

/// A running `nsqlookupd` child process. Dropping it stops the process.
pub struct Server {
    child: Child,
    pid: u32,
    tcp: SocketAddr,
    http: SocketAddr,
    https: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    /// One message per output reader thread when it reaches end of stream.
    readers_done: mpsc::Receiver<()>,
    readers: usize,
    status: Option<ExitStatus>,
}

impl Server {
    /// Starts the server with `--tcp-address=127.0.0.1:0 --http-address=127.0.0.1:0`.
    pub fn start() -> Server {
        Server::start_with(std::iter::empty::<&str>())
    }

    /// Starts the server with the ephemeral-port addresses plus `extra` arguments
    /// and waits (at most [`STARTUP_DEADLINE`]) until it has logged both
    /// listening addresses. Panics with the log tail otherwise.
    pub fn start_with<I, S>(extra: I) -> Server
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut args: Vec<OsString> = vec![
            "--tcp-address=127.0.0.1:0".into(),
            "--http-address=127.0.0.1:0".into(),
        ];
        args.extend(extra.into_iter().map(|a| a.as_ref().to_owned()));
        Server::start_args(args)
    }

    /// Starts the server with exactly `args` (no implicit listen addresses:
    /// the caller sets them, with a command-line flag or in a config file,
    /// to 127.0.0.1 addresses) and waits (at most [`STARTUP_DEADLINE`]) until
    /// it has logged both listening addresses. Panics with the log tail
    /// otherwise.
    pub fn start_args<I, S>(args: I) -> Server
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Server::start_listening(args, Listeners::Plain)
    }

    /// Like [`Server::start_args`], waiting for the log lines of
    /// `listeners`. With [`Listeners::HttpsOnly`], [`Server::http_addr`]
    /// is 0.0.0.0:0.
    pub fn start_listening<I, S>(args: I, listeners: Listeners) -> Server
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (mut server, line_rx, argv) = Server::spawn(args);
        let deadline = Instant::now() + STARTUP_DEADLINE;
        let want_http = listeners != Listeners::HttpsOnly;
        let want_https = listeners != Listeners::Plain;
        let (mut tcp, mut http, mut https) = (None, None, None);
        while tcp.is_none() || (want_http && http.is_none()) || (want_https && https.is_none()) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let problem = match line_rx.recv_timeout(remaining) {
                Ok(line) => {
                    tcp = tcp.or_else(|| parse_listen_line(&line, TCP_MARKER));
                    http = http.or_else(|| parse_listen_line(&line, HTTP_MARKER));
                    https = https.or_else(|| parse_listen_line(&line, HTTPS_MARKER));
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {
                    format!("did not report its listening addresses within {STARTUP_DEADLINE:?}")
                }
                Err(RecvTimeoutError::Disconnected) => "closed its output".to_string(),
            };
            let status = server.stop();
            panic!(
                "server {argv} {problem} (tcp: {tcp:?}, http: {http:?}, https: {https:?}, {status})\n\
                 --- server log (tail) ---\n{}",
                server.log_tail(30)
            );
        }
        server.tcp = tcp.unwrap();
        if let Some(http) = http {
            server.http = http;
        }
        server.https = https;
        server
    }

    /// Starts the server on two 127.0.0.1 ports picked here (free a moment
    /// before, see [`free_local_addr`]) plus `extra` arguments, and waits (at
    /// most [`STARTUP_DEADLINE`]) until `GET /ping` answers 200 while the
    /// process still runs. Needs no log line, so it works at any
    /// `--log-level`. Retries with other ports if one was taken meanwhile.
    /// `extra` must not set the listen addresses.
    pub fn start_on_free_ports<I, S>(extra: I) -> Server
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let extra: Vec<OsString> = extra.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (tcp, http) = (free_local_addr(), free_local_addr());
            if tcp == http {
                continue;
            }
            let mut args: Vec<OsString> = vec![
                format!("--tcp-address={tcp}").into(),
                format!("--http-address={http}").into(),
            ];
            args.extend(extra.iter().cloned());
            let (mut server, _lines, argv) = Server::spawn(args);
            server.tcp = tcp;
            server.http = http;
            let deadline = Instant::now() + STARTUP_DEADLINE;
            loop {
                if let Some(status) = server.try_exit_status() {
                    server.drain_readers();
                    let log = server.log_tail(30);
                    // Another process took one of the ports between the pick
                    // and the bind: try again with fresh ones.
                    if attempt < 5 && log.contains("failed") && log.contains("in use") {
                        break;
                    }
                    panic!(
                        "server {argv} exited ({status}) before answering /ping\n--- server log (tail) ---\n{log}"
                    );
                }
                let ping = http_request(http, "GET", "/ping", &[], None);
                // Only our own process counts: a port taken by someone else
                // makes it exit, which the next check notices.
                if ping.is_ok_and(|r| r.status == 200) && server.try_exit_status().is_none() {
                    return server;
                }
                if Instant::now() >= deadline {
                    let status = server.stop();
                    panic!(
                        "server {argv} did not answer GET /ping within {STARTUP_DEADLINE:?} ({status})\n\
                         --- server log (tail) ---\n{}",
                        server.log_tail(30)
                    );
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Spawns the binary with `args`, collecting its output; returns the
    /// server (addresses still unknown), the channel of its output lines and
    /// the command line for messages.
    fn spawn<I, S>(args: I) -> (Server, mpsc::Receiver<String>, String)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (mut child, argv) = spawn_binary(args);
        let pid = child.id();

        let logs = Arc::new(Mutex::new(Vec::new()));
        let (line_tx, line_rx) = mpsc::channel::<String>();
        let (done_tx, readers_done) = mpsc::channel::<()>();
        // The server logs on stderr; stdout is collected too so that nothing
        // it prints is lost (and the pipe never fills up).
        let stderr = child.stderr.take().expect("stderr is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        spawn_reader(stderr, logs.clone(), line_tx.clone(), done_tx.clone());
        spawn_reader(stdout, logs.clone(), line_tx, done_tx);

        let server = Server {
            child,
            pid,
            tcp: SocketAddr::from(([0, 0, 0, 0], 0)),
            http: SocketAddr::from(([0, 0, 0, 0], 0)),
            https: None,
            logs,
            readers_done,
            readers: 2,
            status: None,
        };
        (server, line_rx, argv)
    }

    /// The address the TCP (lookup protocol) listener is bound to.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp
    }

    /// The address the HTTP listener is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The address the HTTPS listener is bound to (servers started with
    /// [`Server::start_listening`] and HTTPS).
    pub fn https_addr(&self) -> SocketAddr {
        self.https.expect("the server was started with HTTPS")
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A snapshot of every output line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The last `n` output lines joined with newlines.
    pub fn log_tail(&self, n: usize) -> String {
        let logs = self.logs.lock().unwrap();
        logs[logs.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until some output line satisfies `pred`; returns it, or `None`
    /// after `timeout`.
    pub fn wait_for_log(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.logs.lock().unwrap().iter().find(|l| pred(l)) {
                return Some(line.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// `None` while the process runs, its exit status once it has exited.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait on the server");
        }
        self.status
    }

    /// Sends SIGTERM, waits up to [`SHUTDOWN_DEADLINE`], then SIGKILLs; reaps
    /// the child and waits briefly for its output to be collected.
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_within(SHUTDOWN_DEADLINE)
    }

    /// Alias of [`Server::stop`].
    pub fn kill(&mut self) -> ExitStatus {
        self.stop()
    }

    /// Like [`Server::stop`] with a custom SIGTERM grace period.
    pub fn stop_within(&mut self, grace: Duration) -> ExitStatus {
        if let Some(status) = self.try_exit_status() {
            self.drain_readers();
            return status;
        }
        // SAFETY: plain kill(2) on our own child's pid; the child is not yet
        // reaped (try_wait above returned None), so the pid cannot be reused.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        let status = loop {
            if let Some(status) = self.try_exit_status() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let status = self.child.wait().expect("wait for the killed server");
                self.status = Some(status);
                break status;
            }
            thread::sleep(Duration::from_millis(5));
        };
        self.drain_readers();
        status
    }

    fn drain_readers(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.readers > 0 {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.readers_done.recv_timeout(remaining) {
                Ok(()) => self.readers -= 1,
                Err(_) => break,
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_reader(
    stream: impl Read + Send + 'static,
    logs: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Sender<String>,
    done: mpsc::Sender<()>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    logs.lock().unwrap().push(line.clone());
                    // Nobody listens after startup; that is fine.
                    let _ = lines.send(line);
                }
            }
        }
        let _ = done.send(());
    });
}

/// Parses `... INFO: TCP: listening on 127.0.0.1:41234` (for `marker` =
/// `"TCP: listening on "`).
fn parse_listen_line(line: &str, marker: &str) -> Option<SocketAddr> {
    let idx = line.find(marker)?;
    // "HTTP: listening on" must not be taken for "TCP: listening on" and
    // vice versa: the marker starts a word.
    if idx > 0 && line.as_bytes()[idx - 1].is_ascii_alphanumeric() {
        return None;
    }
    // The address ends at white space, or at the closing quote of a JSON
    // log line (`--log-format=json`).
    line[idx + marker.len()..]
        .split(|c: char| c.is_whitespace() || c == '"')
        .next()?
        .parse()
        .ok()
}

/// A 127.0.0.1 address whose port was free a moment ago: bound to port 0,
/// read back, released. Another process may take it before it is used.
pub fn free_local_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
}

/// What a run of the binary that ended by itself left behind.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Starts the binary with `args`, stdin closed and both outputs piped;
/// returns the child and its command line (for messages).
fn spawn_binary<I, S>(args: I) -> (Child, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nsqlookupd"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let argv = format!("{cmd:?}");
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {argv}: {e}"));
    (child, argv)
}

/// The `broadcast_address` of each producer of a `/lookup` answer.
pub fn producer_addresses(v: &serde_json::Value) -> Vec<String> {
    v["producers"]
        .as_array()
        .unwrap_or_else(|| panic!("no producers array in {v}"))
        .iter()
        .map(|p| {
            p["broadcast_address"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Runs the binary with `args` and waits until it exits by itself; if it is
/// still running after `deadline`, kills it and panics with its output.
pub fn run_to_exit<I, S>(args: I, deadline: Duration) -> Exit
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let (mut child, argv) = spawn_binary(args);
    let collect = |stream: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut stream = stream;
            let mut buf = Vec::new();
            let _ = stream.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = collect(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = collect(Box::new(child.stderr.take().expect("stderr is piped")));
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(5));
    };
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    match status {
        Some(status) => Exit {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{argv} still running after {deadline:?}; killed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        ),
    }
}

// ------------------------------------------------------------------ TCP

/// Why reading from a TCP connection did not produce what was wanted.
#[derive(Debug)]
pub enum ReadError {
    /// The deadline passed.
    Timeout,
    /// End of stream after `got` bytes of the `wanted` ones.
    Closed { got: usize, wanted: usize },
    /// Any other socket error (connection reset included).
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Timeout => write!(f, "timed out"),
            ReadError::Closed { got, wanted } => {
                write!(f, "connection closed after {got} of {wanted} bytes")
            }
            ReadError::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads exactly `n` bytes before `deadline`.
pub fn read_exact_by(
    stream: &mut TcpStream,
    n: usize,
    deadline: Instant,
) -> Result<Vec<u8>, ReadError> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ReadError::Timeout);
        }
        stream
            .set_read_timeout(Some(remaining))
            .map_err(ReadError::Io)?;
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err(ReadError::Closed { got, wanted: n }),
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(ReadError::Timeout),
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(buf)
}

/// Why no frame could be read.
#[derive(Debug)]
pub enum FrameError {
    Timeout,
    /// End of stream before or inside the 4-byte length header.
    ClosedInHeader {
        got: usize,
    },
    /// End of stream inside the frame data.
    ClosedInData {
        got: usize,
        len: usize,
    },
    /// The length header, read as a signed 32-bit integer, is negative.
    NegativeLength(i32),
    Io(io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Timeout => write!(f, "timed out waiting for a frame"),
            FrameError::ClosedInHeader { got: 0 } => write!(f, "connection closed by server"),
            FrameError::ClosedInHeader { got } => {
                write!(f, "connection closed by server after {got} header bytes")
            }
            FrameError::ClosedInData { got, len } => {
                write!(f, "connection closed mid-frame ({got} of {len} bytes)")
            }
            FrameError::NegativeLength(n) => write!(f, "negative frame length {n}"),
            FrameError::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

/// Reads one lookup-protocol response frame (4-byte big-endian length, then
/// that many bytes) within `timeout`.
pub fn read_frame(stream: &mut TcpStream, timeout: Duration) -> Result<Vec<u8>, FrameError> {
    let deadline = Instant::now() + timeout;
    let header = read_exact_by(stream, 4, deadline).map_err(|e| match e {
        ReadError::Timeout => FrameError::Timeout,
        ReadError::Closed { got, .. } => FrameError::ClosedInHeader { got },
        ReadError::Io(e) => FrameError::Io(e),
    })?;
    let len = i32::from_be_bytes(header.try_into().unwrap());
    if len < 0 {
        return Err(FrameError::NegativeLength(len));
    }
    let len = len as usize;
    read_exact_by(stream, len, deadline).map_err(|e| match e {
        ReadError::Timeout => FrameError::Timeout,
        ReadError::Closed { got, .. } => FrameError::ClosedInData { got, len },
        ReadError::Io(e) => FrameError::Io(e),
    })
}

/// Connects to the lookup TCP port (TCP_NODELAY, 5 s read/write timeouts),
/// optionally sending the `"  V1"` magic.
pub fn tcp_connect(addr: SocketAddr, magic: bool) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    if magic {
        stream.write_all(b"  V1")?;
    }
    Ok(stream)
}

/// `IDENTIFY\n` + 4-byte big-endian length + body.
pub fn identify_command(body: &[u8]) -> Vec<u8> {
    let mut out = b"IDENTIFY\n".to_vec();
    out.extend_from_slice(&(body.len() as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Sends `data` and returns the next frame (panics on any failure).
pub fn tcp_roundtrip(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).expect("send to the server");
    read_frame(stream, Duration::from_secs(2)).unwrap_or_else(|e| {
        panic!(
            "no response frame to {:?}: {e}",
            String::from_utf8_lossy(data)
        )
    })
}

/// Half-closes the client side.
pub fn shutdown_write(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
}

// ------------------------------------------------------------------ HTTP

/// Response headers: a case-insensitive multimap keeping the received order.
#[derive(Debug, Clone, Default)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (case-insensitive), in order.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Lower-cased names mapped to their first value.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        for (k, v) in &self.0 {
            map.entry(k.to_ascii_lowercase())
                .or_insert_with(|| v.clone());
        }
        map
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON (panics if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`). The
/// request target is sent verbatim. POST/PUT/PATCH (and any request with a
/// body) carry `Content-Length`. The body is read using `Content-Length`,
/// chunked transfer coding, or until EOF; HEAD, 1xx, 204 and 304 responses
/// have no body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;

    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if body.is_some() || matches!(method, "POST" | "PUT" | "PATCH") {
        req.push_str(&format!(
            "Content-Length: {}\r\n",
            body.map_or(0, <[u8]>::len)
        ));
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&bytes)?;

    let mut reader = BufReader::new(stream);
    read_http_response(&mut reader, method == "HEAD")
}

/// Reads one HTTP/1.1 response from `reader` (skipping interim `100
/// Continue` responses). The body is read using `Content-Length`, chunked
/// transfer coding, or until EOF; `head` (a response to HEAD), 1xx, 204 and
/// 304 responses have no body. Usable on a keep-alive connection as long as
/// the server frames its responses.
pub fn read_http_response(reader: &mut impl BufRead, head: bool) -> io::Result<HttpResponse> {
    let (status, reason, headers) = loop {
        let (status, reason) = read_status_line(reader)?;
        let headers = read_headers(reader)?;
        // Like Python's http.client: skip interim "100 Continue" responses.
        if status != 100 {
            break (status, reason, headers);
        }
    };
    let no_body = head || (100..200).contains(&status) || status == 204 || status == 304;
    let body = if no_body {
        Vec::new()
    } else if headers
        .get("Transfer-Encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        read_chunked(reader)?
    } else if let Some(len) = headers.get("Content-Length") {
        let len: usize = len
            .trim()
            .parse()
            .map_err(|_| bad_data(format!("bad Content-Length {len:?}")))?;
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        body
    } else {
        let mut body = Vec::new();
        reader.read_to_end(&mut body)?;
        body
    };
    Ok(HttpResponse {
        status,
        reason,
        headers,
        body,
    })
}

/// `http_request` that panics on I/O errors.
pub fn http(addr: SocketAddr, method: &str, target: &str) -> HttpResponse {
    http_request(addr, method, target, &[], None)
        .unwrap_or_else(|e| panic!("HTTP {method} {target} failed: {e}"))
}

pub fn http_get(addr: SocketAddr, target: &str) -> HttpResponse {
    http(addr, "GET", target)
}

pub fn http_post(addr: SocketAddr, target: &str) -> HttpResponse {
    http(addr, "POST", target)
}

fn bad_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut buf = Vec::new();
    if reader.read_until(b'\n', &mut buf)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a complete response",
        ));
    }
    let line = String::from_utf8_lossy(&buf);
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn read_status_line(reader: &mut impl BufRead) -> io::Result<(u16, String)> {
    let line = read_line(reader)?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/") {
        return Err(bad_data(format!("bad status line {line:?}")));
    }
    let status = status
        .parse()
        .map_err(|_| bad_data(format!("bad status line {line:?}")))?;
    Ok((status, parts.next().unwrap_or_default().to_string()))
}

fn read_headers(reader: &mut impl BufRead) -> io::Result<Headers> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            return Ok(Headers(headers));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad_data(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| bad_data(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailers up to the empty line.
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(bad_data(format!(
                "chunk of size {size:#x} not followed by CRLF but by {:?}",
                String::from_utf8_lossy(&crlf)
            )));
        }
    }
}

// ------------------------------------------------------------------ process

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, ...) in bytes;
/// `None` if the process is gone or the field is missing.
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kib * 1024)
    })
}
