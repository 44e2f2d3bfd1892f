//! tokio-nsq 0.14.0 against a server with access control and HTTPS.
//!
//! Its lookup (`src/consumer.rs`, `lookup`) is a `hyper::Client::new()`
//! GET with one header, `Accept`: no secret, no TLS (hyper's plain
//! `HttpConnector` refuses `https://` URLs before connecting), no client
//! certificate; its `set_credentials` goes to nsqd, in the AUTH command. So
//! it reads from inside `--read-allow` and is refused by an auth server it
//! cannot answer. It does not look at the status of the answer either: a
//! refusal's body fails to parse as a lookup answer, which it logs (through
//! the `log` facade: [`capture_logs`]) and retries at the next poll.

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::root;

fn interop_dir() -> PathBuf {
    root().join("tests/interop")
}

/// `../auth_server.py` (an nsqd-style auth server) on 127.0.0.1:0; stopped
/// on drop.
pub struct AuthServer {
    child: Child,
    stdin: Option<ChildStdin>,
    /// `127.0.0.1:PORT`.
    pub address: String,
    requests: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl AuthServer {
    /// `grants`: secret → answer (an object for a 200, a number for that
    /// status), as `auth_server.py` takes them.
    pub fn start(grants: &serde_json::Value) -> AuthServer {
        let python = std::env::var_os("INTEROP_PYTHON").unwrap_or_else(|| "python3".into());
        let mut child = Command::new(&python)
            .arg(interop_dir().join("auth_server.py"))
            .arg(grants.to_string())
            .stdin(Stdio::piped()) // it stops when this closes
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start auth_server.py with {python:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let requests: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let log = requests.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("LISTENING ") {
                    let _ = tx.send(addr.to_string());
                } else if let Some(json) = line.strip_prefix("AUTH ") {
                    log.lock()
                        .unwrap()
                        .push(serde_json::from_str(json).unwrap());
                }
            }
        });
        let Ok(address) = rx.recv_timeout(Duration::from_secs(10)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("auth_server.py did not start");
        };
        AuthServer {
            child,
            stdin,
            address,
            requests,
        }
    }

    /// Every query answered so far: `{"method", "path", "params", "status"}`.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An auth server answer granting `subscribe` on topics matching `pattern`.
pub fn subscribe_grant(pattern: &str) -> serde_json::Value {
    serde_json::json!({
        "ttl": 60,
        "identity": "interop",
        "identity_url": "https://example.invalid/interop",
        "authorizations": [
            {"topic": pattern, "channels": [".*"], "permissions": ["subscribe"]}
        ],
    })
}

/// The certificates of `../pki.sh`.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// run.sh makes them in `$INTEROP_PKI_DIR`; made here
/// (target/interop/pki) when run alone.
pub fn pki() -> Pki {
    let dir = std::env::var_os("INTEROP_PKI_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/interop/pki"));
    if !dir.join("other-client.pem").exists() {
        let status = Command::new("bash")
            .arg(interop_dir().join("pki.sh"))
            .arg(&dir)
            .status()
            .expect("run pki.sh");
        assert!(status.success(), "pki.sh failed");
    }
    Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
    }
}

/// Server flags: HTTPS on 127.0.0.1:0 with the test server certificate.
pub fn tls_args(pki: &Pki) -> Vec<String> {
    vec![
        format!("--https-address={}:0", crate::HOST),
        format!("--tls-cert={}", pki.server_cert.display()),
        format!("--tls-key={}", pki.server_key.display()),
    ]
}

/// GET over plain HTTP with hyper 0.14: status and body.
pub async fn get(url: &str) -> (u16, String) {
    let uri: hyper::Uri = url.parse().unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), hyper::Client::new().get(uri))
        .await
        .unwrap_or_else(|_| panic!("GET {url}: no answer in time"))
        .unwrap();
    let status = response.status().as_u16();
    let body = hyper::body::to_bytes(response.into_body()).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The server's `/metrics`, as `{"name{labels}": value}`.
pub async fn metrics(http: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = get(&format!("http://{http}/metrics")).await;
    assert_eq!(status, 200, "/metrics: {body}");
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// `nsqlookupd_http_refused_total{class="read",reason=reason}`.
pub async fn refused(http: SocketAddr, reason: &str) -> f64 {
    let key = format!("nsqlookupd_http_refused_total{{class=\"read\",reason=\"{reason}\"}}");
    metrics(http).await.get(&key).copied().unwrap_or(0.0)
}

/// Polls `cond` until it is true; panics saying `what` after `deadline`.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while !cond().await {
        assert!(Instant::now() < end, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The records logged at warning level or above, by any thread of this
/// test binary, since [`capture_logs`] was first called.
fn logs() -> &'static Mutex<Vec<String>> {
    static LOGS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    LOGS.get_or_init(Mutex::default)
}

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let line = format!("{} {}: {}", record.level(), record.target(), record.args());
            logs().lock().unwrap().push(line);
        }
    }

    fn flush(&self) {}
}

/// Installs the capturing logger (once per process).
pub fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        static CAPTURE: Capture = Capture;
        log::set_logger(&CAPTURE).expect("no other logger");
        log::set_max_level(log::LevelFilter::Warn);
    });
}

/// How many captured records contain `needle`.
pub fn logged(needle: &str) -> usize {
    logs()
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fake_nsqd, first_magic, Lookupd, Registration};
    use tokio::sync::mpsc;
    use tokio_nsq::NSQConsumer;

    const TOPIC: &str = "interop_tokio_nsq_access";
    const CHANNEL: &str = "interop_ch";
    const DEADLINE: Duration = Duration::from_secs(15);

    /// What an access test needs: an auth server, the server with `args`
    /// (in which "{auth}" is the auth server's address), a fake nsqd
    /// registered for TOPIC.
    struct Scene {
        auth: AuthServer,
        lookupd: Lookupd,
        magics: mpsc::UnboundedReceiver<Vec<u8>>,
        _reg: Registration,
    }

    async fn scene<S: AsRef<str>>(args: &[S]) -> Scene {
        let auth = AuthServer::start(&serde_json::json!({"granted": subscribe_grant(".*")}));
        let args: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().replace("{auth}", &auth.address))
            .collect();
        let lookupd = Lookupd::start_with(&args);
        let (fake_port, magics) = fake_nsqd().await;
        let mut reg = Registration::connect(&lookupd, fake_port, 4151).await;
        reg.register(TOPIC, CHANNEL).await;
        Scene {
            auth,
            lookupd,
            magics,
            _reg: reg,
        }
    }

    /// What tokio-nsq logs when the answer to its lookup at `url` is the
    /// refusal this GET gets (status `status`): serde's complaint names the
    /// body's length, which tells this test's refusals from the others'.
    async fn unparsable(url: &str, status: u16) -> String {
        let (got, body) = get(url).await;
        assert_eq!(got, status, "{body}");
        format!(
            "lookup_supervisor unknown error missing field `producers` at line 1 column {}",
            body.len()
        )
    }

    fn consumer(address: String) -> NSQConsumer {
        crate::consumer(TOPIC, CHANNEL, address)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consumer_inside_read_allow_discovers() {
        let mut s = scene(&["--read-allow=127.0.0.0/8", "--auth-http-address={auth}"]).await;
        let consumer = consumer(format!("http://{}", s.lookupd.http));
        assert_eq!(first_magic(&mut s.magics, DEADLINE).await, b"  V2");
        drop(consumer);
        // The allow-list lets it in: the auth server is never asked.
        assert!(s.auth.requests().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consumer_without_secret_is_refused() {
        capture_logs();
        // An auth server, and an allow-list (TEST-NET-1) that does not
        // cover 127.0.0.1: tokio-nsq has no secret to send.
        let mut s = scene(&["--read-allow=192.0.2.0/24", "--auth-http-address={auth}"]).await;
        let http = s.lookupd.http;
        let complaint = unparsable(&format!("http://{http}/lookup?topic={TOPIC}"), 401).await;
        let consumer = consumer(format!("http://{http}"));
        // Two 401s counted by the server, and tokio-nsq's complaints that
        // the answer (`{"message":"AUTH_REQUIRED"}`) is no lookup answer.
        wait_until(DEADLINE, "two refused tokio-nsq lookups", || {
            let complaint = complaint.clone();
            async move { refused(http, "no_credentials").await >= 3.0 && logged(&complaint) >= 2 }
        })
        .await;
        drop(consumer);
        assert!(
            s.magics.try_recv().is_err(),
            "tokio-nsq connected to the producer"
        );
        assert!(s.auth.requests().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consumer_cannot_use_https() {
        capture_logs();
        let mut s = scene(&tls_args(&pki())).await;
        let https = s.lookupd.https.expect("the HTTPS listener");
        let consumer = consumer(format!("https://{https}"));
        // hyper's HttpConnector (hyper 0.14 src/client/connect/http.rs)
        // turns the URL down before connecting.
        wait_until(DEADLINE, "two failed tokio-nsq lookups", || async {
            logged("invalid URL, scheme is not http") >= 2
        })
        .await;
        drop(consumer);
        assert!(
            s.magics.try_recv().is_err(),
            "tokio-nsq connected to the producer"
        );
        let m = metrics(s.lookupd.http).await;
        assert_eq!(m["nsqlookupd_https_connections_accepted_total"], 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consumer_does_not_follow_tls_required() {
        capture_logs();
        // The plain port answers 403 TLS_REQUIRED with the HTTPS port; NSQ's
        // Go HTTP client follows that, tokio-nsq does not.
        let mut tls = tls_args(&pki());
        tls.push("--tls-required".into());
        let mut s = scene(&tls).await;
        let http = s.lookupd.http;
        let complaint = unparsable(&format!("http://{http}/lookup?topic={TOPIC}"), 403).await;
        let consumer = consumer(format!("http://{http}"));
        wait_until(DEADLINE, "two refused tokio-nsq lookups", || {
            let complaint = complaint.clone();
            async move { logged(&complaint) >= 2 }
        })
        .await;
        drop(consumer);
        assert!(
            s.magics.try_recv().is_err(),
            "tokio-nsq connected to the producer"
        );
    }
}
