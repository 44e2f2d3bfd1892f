//! The ceiling: a minimal HTTP/1.1 server that answers every request with
//! the same fixed body, as cheaply as tokio allows. Loading it with the
//! same consumers gives the most lookups per second this machine can carry
//! over HTTP at that answer size, a yardstick for the real server's figure.
//!
//! It runs as a child process of the bench (`nsqlookupd-bench
//! serve-ceiling`), optionally under `taskset`, so it can be pinned to the
//! same core as the server under test and measured the same way.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The full bytes of the one response: headers like this server's (same
/// names, a date of the same length), and a JSON-looking body of exactly
/// `body_size` bytes.
pub fn response_bytes(body_size: usize) -> Vec<u8> {
    let body: Vec<u8> = if body_size >= 10 {
        let mut b = b"{\"pad\":\"".to_vec();
        b.resize(body_size - 2, b'x');
        b.extend_from_slice(b"\"}");
        b
    } else {
        vec![b'x'; body_size]
    };
    let mut r = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json; charset=utf-8\r\n\
         x-nsq-content-type: nsq; version=1.0\r\ncontent-length: {}\r\n\
         date: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(&body);
    r
}

/// Number of complete request heads in `buf` and the offset just
/// past the last one. Requests are assumed to carry no body (GET).
pub fn count_requests(buf: &[u8]) -> (usize, usize) {
    let mut n = 0;
    let mut end = 0;
    let mut i = 0;
    while i + 4 <= buf.len() {
        if &buf[i..i + 4] == b"\r\n\r\n" {
            n += 1;
            end = i + 4;
            i += 4;
        } else {
            i += 1;
        }
    }
    (n, end)
}

/// Serves `listener` forever.
pub async fn serve(listener: TcpListener, response: Arc<Vec<u8>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, response.clone()));
    }
}

async fn connection(mut stream: TcpStream, response: Arc<Vec<u8>>) {
    let mut buf = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(response.len());
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (n, end) = count_requests(&buf);
        if n == 0 {
            if buf.len() > 64 * 1024 {
                return; // not HTTP
            }
            continue;
        }
        out.clear();
        for _ in 0..n {
            out.extend_from_slice(&response);
        }
        buf.drain(..end);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// The ceiling server running as a child process.
pub struct CeilingProcess {
    child: Child,
    pub addr: String,
    pub pid: u32,
}

impl CeilingProcess {
    /// Starts `serve-ceiling` (under `taskset -c CPUS` if given) and waits
    /// for the address it listens on.
    pub fn spawn(body_size: usize, cpus: Option<&str>) -> Result<CeilingProcess, String> {
        let exe = std::env::current_exe().map_err(|e| format!("locating the bench binary: {e}"))?;
        let mut cmd = match cpus {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.arg("-c").arg(c).arg(&exe);
                cmd
            }
            None => Command::new(&exe),
        };
        cmd.args(["serve-ceiling", "--listen", "127.0.0.1:0", "--body-size"])
            .arg(body_size.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting the ceiling server: {e}"))?;
        let pid = child.id();
        let line = child
            .stdout
            .take()
            .map(|o| {
                let mut l = String::new();
                let _ = BufReader::new(o).read_line(&mut l);
                l
            })
            .unwrap_or_default();
        match line.trim().strip_prefix("listening on ") {
            Some(addr) => Ok(CeilingProcess {
                child,
                addr: addr.to_string(),
                pid,
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("the ceiling server did not start (said {line:?})"))
            }
        }
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_requested_size() {
        for size in [0, 5, 10, 2048] {
            let r = response_bytes(size);
            let head_end = r.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            assert_eq!(r.len() - head_end, size);
            let head = crate::httpc::parse_head(&r[..head_end]).unwrap();
            assert_eq!(head.content_length, Some(size));
        }
        let r = response_bytes(100);
        let body = &r[r.len() - 100..];
        assert!(serde_json::from_slice::<serde_json::Value>(body).is_ok());
    }

    #[test]
    fn counts_pipelined_requests() {
        assert_eq!(
            count_requests(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nGET /"),
            (2, 36)
        );
        assert_eq!(count_requests(b"GET / HTTP/1.1\r\n"), (0, 0));
    }

    #[tokio::test]
    async fn serves_keep_alive() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(serve(l, Arc::new(response_bytes(300))));
        let mut c = crate::httpc::HttpConn::plain(&addr);
        for _ in 0..3 {
            let r = c
                .get("/lookup?topic=x", std::time::Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!((r.status, r.body.len()), (200, 300));
        }
        assert_eq!(c.connects, 1);
    }
}
