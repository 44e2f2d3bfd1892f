//! Harness for the tokio-nsq interop test (same roles as
//! `../python/harness.py`): the server on 127.0.0.1:0 ports, a fake nsqd
//! listener, an nsqd-style TCP registration, a recording relay in front of
//! the server's HTTP port, and the consumer under test. The test itself is
//! at the bottom of this file; the access-control ones (auth server,
//! allow-lists, HTTPS) are in `access.rs`.

pub mod access;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_nsq::{
    NSQChannel, NSQConsumer, NSQConsumerConfig, NSQConsumerConfigSources, NSQConsumerLookupConfig,
    NSQTopic,
};

pub const HOST: &str = "127.0.0.1";

pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

/// `NSQLOOKUPD_BIN`, else the main package's debug build. (This crate is
/// built with its own CARGO_TARGET_DIR, so that variable says nothing about
/// where the server is.)
/// `NSQLOOKUPD_EXTRA_ARGS` (space separated), given to every server before
/// the test's own flags: run.sh replays the suite with
/// `--http-compression-min-size=1`, so that every answer goes compressed
/// to the clients that accept gzip.
fn extra_server_args() -> Vec<String> {
    std::env::var("NSQLOOKUPD_EXTRA_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn server_binary() -> PathBuf {
    match std::env::var_os("NSQLOOKUPD_BIN") {
        Some(path) => PathBuf::from(path),
        None => root().join("target/debug/nsqlookupd"),
    }
}

/// The nsqlookupd under test; killed on drop.
pub struct Lookupd {
    child: Child,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    /// With `--tls-cert` among the flags: the HTTPS listener.
    pub https: Option<SocketAddr>,
}

impl Lookupd {
    pub fn start() -> Lookupd {
        Lookupd::start_with(&[])
    }

    /// With `extra_args` after the loopback listen addresses.
    pub fn start_with(extra_args: &[String]) -> Lookupd {
        let want_https = extra_args.iter().any(|a| a.starts_with("--tls-cert="));
        let mut child = Command::new(server_binary())
            .arg(format!("--tcp-address={HOST}:0"))
            .arg(format!("--http-address={HOST}:0"))
            .args(extra_server_args())
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server_binary().display()));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads stderr for the whole life of the process (never a full pipe).
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                for (kind, marker) in [
                    ("TCP", "INFO: TCP: listening on "),
                    ("HTTP", "INFO: HTTP: listening on "),
                    ("HTTPS", "INFO: HTTPS: listening on "),
                ] {
                    if let Some(at) = line.find(marker) {
                        let addr = line[at + marker.len()..].trim().to_string();
                        let _ = tx.send((kind, addr));
                    }
                }
            }
        });
        let (mut tcp, mut http, mut https) = (None, None, None);
        while tcp.is_none() || http.is_none() || (want_https && https.is_none()) {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(("TCP", addr)) => tcp = Some(addr.parse().unwrap()),
                Ok(("HTTPS", addr)) => https = Some(addr.parse().unwrap()),
                Ok((_, addr)) => http = Some(addr.parse().unwrap()),
                Err(_) => {
                    let _ = child.kill();
                    panic!("nsqlookupd did not log its listening addresses");
                }
            }
        }
        Lookupd {
            child,
            tcp: tcp.unwrap(),
            http: http.unwrap(),
            https,
        }
    }
}

impl Drop for Lookupd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A listener standing in for an nsqd: sends the first 4 bytes of every
/// connection to the returned channel and closes the connection.
pub async fn fake_nsqd() -> (u16, mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind((HOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut magic = Vec::new();
                let mut first4 = (&mut sock).take(4);
                let read = first4.read_to_end(&mut magic);
                let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
                let _ = tx.send(magic);
            });
        }
    });
    (port, rx)
}

/// The first 4 bytes a client sent the fake nsqd of [`fake_nsqd`], within
/// `deadline`.
pub async fn first_magic(
    magics: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    deadline: Duration,
) -> Vec<u8> {
    tokio::time::timeout(deadline, magics.recv())
        .await
        .expect("tokio-nsq did not reach the fake nsqd in time")
        .unwrap()
}

/// One nsqd's TCP connection to the server.
pub struct Registration {
    sock: TcpStream,
}

impl Registration {
    pub async fn connect(lookupd: &Lookupd, tcp_port: u16, http_port: u16) -> Registration {
        let mut sock = TcpStream::connect(lookupd.tcp).await.unwrap();
        sock.write_all(b"  V1").await.unwrap();
        let body = serde_json::json!({
            "broadcast_address": HOST,
            "tcp_port": tcp_port,
            "http_port": http_port,
            "version": "1.3.0",
            "hostname": "fake-nsqd",
        })
        .to_string();
        let mut msg = b"IDENTIFY\n".to_vec();
        msg.extend_from_slice(&(body.len() as i32).to_be_bytes());
        msg.extend_from_slice(body.as_bytes());
        sock.write_all(&msg).await.unwrap();
        let mut reg = Registration { sock };
        let identify: serde_json::Value = serde_json::from_slice(&reg.frame().await).unwrap();
        assert_eq!(identify["tcp_port"], lookupd.tcp.port());
        reg
    }

    async fn frame(&mut self) -> Vec<u8> {
        let read = async {
            let size = self.sock.read_i32().await.unwrap();
            let mut data = vec![0; size as usize];
            self.sock.read_exact(&mut data).await.unwrap();
            data
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("nsqlookupd response")
    }

    pub async fn command(&mut self, line: &str) -> String {
        self.sock
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        String::from_utf8(self.frame().await).unwrap()
    }

    /// `REGISTER topic channel`, answered `OK`.
    pub async fn register(&mut self, topic: &str, channel: &str) {
        assert_eq!(
            self.command(&format!("REGISTER {topic} {channel}")).await,
            "OK"
        );
    }
}

/// A tokio-nsq consumer of `topic`/`channel` that looks its producers up
/// at `address` every 200 ms. tokio-nsq builds its lookup URL as address +
/// "/lookup?topic=", so the address is a URL without a trailing slash.
pub fn consumer(topic: &str, channel: &str, address: String) -> NSQConsumer {
    NSQConsumerConfig::new(
        NSQTopic::new(topic).unwrap(),
        NSQChannel::new(channel).unwrap(),
    )
    .set_max_in_flight(1)
    .set_sources(NSQConsumerConfigSources::Lookup(
        NSQConsumerLookupConfig::new()
            .set_poll_interval(Duration::from_millis(200))
            .set_addresses(HashSet::from([address])),
    ))
    .build()
}

/// What one client connection sent through the relay.
type Record = Arc<Mutex<Vec<u8>>>;

/// A byte-for-byte relay to `upstream` that keeps what clients send.
pub struct RecordingProxy {
    pub addr: SocketAddr,
    sent: Arc<Mutex<Vec<Record>>>,
}

impl RecordingProxy {
    pub async fn start(upstream: SocketAddr) -> RecordingProxy {
        let listener = TcpListener::bind((HOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent: Arc<Mutex<Vec<Record>>> = Arc::default();
        let streams = sent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let record: Record = Arc::default();
                streams.lock().unwrap().push(record.clone());
                let (mut client_rd, mut client_wr) = client.into_split();
                let (mut server_rd, mut server_wr) = server.into_split();
                tokio::spawn(async move {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = client_rd.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                        if server_wr.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = server_wr.shutdown().await;
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_rd, &mut client_wr).await;
                    let _ = client_wr.shutdown().await;
                });
            }
        });
        RecordingProxy { addr, sent }
    }

    /// Every request head seen so far (the lookups are GETs with no body).
    pub fn request_heads(&self) -> Vec<String> {
        let mut out = Vec::new();
        for record in self.sent.lock().unwrap().iter() {
            let text = String::from_utf8_lossy(&record.lock().unwrap()).into_owned();
            out.extend(
                text.split("\r\n\r\n")
                    .filter(|head| !head.is_empty())
                    .map(str::to_string),
            );
        }
        out
    }
}

/// Keeps the request head a client sent, for run.sh's summary.
pub fn record_headers(client: &str, head: &str) {
    let dir = std::env::var_os("INTEROP_HEADERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/interop/headers"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut lines = head.split("\r\n");
    let mut text = format!("{}\n", lines.next().unwrap_or(""));
    for header in lines {
        text.push_str(&format!("  {header}\n"));
    }
    std::fs::write(dir.join(format!("{client}.txt")), text).unwrap();
}

/// `GET /lookup?topic=T` with hyper 0.14 and the Accept header tokio-nsq
/// sends (its own lookup function is private): status and JSON body.
pub async fn lookup(http: SocketAddr, topic: &str) -> (u16, serde_json::Value) {
    let request = hyper::Request::builder()
        .method(hyper::Method::GET)
        .uri(format!("http://{http}/lookup?topic={topic}"))
        .header("Accept", "application/vnd.nsq; version=1.0")
        .body(hyper::Body::empty())
        .unwrap();
    let response = hyper::Client::new().request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = hyper::body::to_bytes(response.into_body()).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str = "interop_tokio_nsq";
    const CHANNEL: &str = "interop_ch";
    const DEADLINE: Duration = Duration::from_secs(15);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consumer_discovers_producer_then_loses_it() {
        let lookupd = Lookupd::start();
        let (fake_port, mut magics) = fake_nsqd().await;
        let proxy = RecordingProxy::start(lookupd.http).await;
        let mut reg = Registration::connect(&lookupd, fake_port, 4151).await;
        reg.register(TOPIC, CHANNEL).await;

        // Through the recording relay, so the request head is kept.
        let consumer = consumer(TOPIC, CHANNEL, format!("http://{}", proxy.addr));

        assert_eq!(first_magic(&mut magics, DEADLINE).await, b"  V2");

        let heads: Vec<String> = proxy
            .request_heads()
            .into_iter()
            .filter(|h| h.contains("/lookup"))
            .collect();
        assert!(!heads.is_empty(), "no /lookup went through the relay");
        assert!(
            heads[0].starts_with(&format!("GET /lookup?topic={TOPIC} HTTP/1.1\r\n")),
            "{}",
            heads[0]
        );
        record_headers("tokio-nsq", &heads[0]);
        drop(consumer);

        let (status, body) = lookup(lookupd.http, TOPIC).await;
        assert_eq!(status, 200);
        let ports: Vec<_> = body["producers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["broadcast_address"].clone(), p["tcp_port"].clone()))
            .collect();
        assert_eq!(ports, vec![(HOST.into(), fake_port.into())]);

        // The producer goes away: the next lookup no longer returns it.
        assert_eq!(reg.command(&format!("UNREGISTER {TOPIC}")).await, "OK");
        drop(reg);
        let (status, body) = lookup(lookupd.http, TOPIC).await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            serde_json::json!({"channels": [CHANNEL], "producers": []})
        );
    }
}
