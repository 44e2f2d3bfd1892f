//! A minimal HTTP/1.1 keep-alive client: one connection, one request at a
//! time, `GET` only. Hand-written so the load generator spends as little of
//! its core as possible per request (no header maps, no per-request
//! allocation once warmed up). It understands `Content-Length`, `chunked`
//! and `Connection: close`, which covers this server and Go's net/http.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::stats::io_kind;

/// Larger response heads or bodies are refused rather than buffered.
const MAX_BODY: usize = 256 << 20;
const MAX_HEAD: usize = 64 << 10;

/// A failed request, by kind (the names are the error kinds reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    ConnectRefused,
    Connect(&'static str),
    Io(&'static str),
    Timeout,
    /// The response could not be parsed as HTTP/1.1.
    BadResponse,
}

impl HttpError {
    pub fn kind(self) -> &'static str {
        match self {
            HttpError::ConnectRefused => "connect_refused",
            HttpError::Connect(k) => k,
            HttpError::Io(k) => k,
            HttpError::Timeout => "timeout",
            HttpError::BadResponse => "bad_http",
        }
    }
}

/// Where the body lies in the connection's buffers.
enum BodyAt {
    /// `buf[start..end]`
    Buf(usize, usize),
    /// The de-chunked copy.
    Chunked,
}

/// A keep-alive connection to one server.
pub struct HttpConn {
    addr: String,
    stream: Option<TcpStream>,
    req: Vec<u8>,
    buf: Vec<u8>,
    chunked: Vec<u8>,
    /// Connections opened so far (1 + reconnects).
    pub connects: u64,
}

/// A response; the body borrows the connection's buffer.
pub struct Response<'a> {
    pub status: u16,
    pub body: &'a [u8],
}

impl HttpConn {
    pub fn new(addr: &str) -> Self {
        HttpConn {
            addr: addr.to_string(),
            stream: None,
            req: Vec::with_capacity(256),
            buf: Vec::with_capacity(64 * 1024),
            chunked: Vec::new(),
            connects: 0,
        }
    }

    /// Opens the connection now (`get` opens it when needed otherwise).
    pub async fn connect(&mut self, limit: Duration) -> Result<(), HttpError> {
        let s = match timeout(limit, TcpStream::connect(&self.addr)).await {
            Err(_) => return Err(HttpError::Timeout),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(HttpError::ConnectRefused);
            }
            Ok(Err(e)) => return Err(HttpError::Connect(io_kind(&e))),
            Ok(Ok(s)) => s,
        };
        let _ = s.set_nodelay(true);
        self.stream = Some(s);
        self.connects += 1;
        Ok(())
    }

    /// `GET path` with the whole exchange bounded by `limit`. A reused
    /// connection that the server had already closed is retried once on a
    /// fresh one, as every HTTP client does.
    pub async fn get(&mut self, path: &str, limit: Duration) -> Result<Response<'_>, HttpError> {
        self.req.clear();
        self.req.extend_from_slice(b"GET ");
        self.req.extend_from_slice(path.as_bytes());
        self.req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.req.extend_from_slice(self.addr.as_bytes());
        self.req
            .extend_from_slice(b"\r\nUser-Agent: nsqlookupd-bench\r\nAccept: */*\r\n\r\n");
        let deadline = tokio::time::Instant::now() + limit;
        let r = match tokio::time::timeout_at(deadline, self.exchange(limit, true)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout),
        };
        match r {
            Ok((status, at)) => {
                let body = match at {
                    BodyAt::Buf(s, e) => &self.buf[s..e],
                    BodyAt::Chunked => &self.chunked[..],
                };
                Ok(Response { status, body })
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    async fn exchange(
        &mut self,
        limit: Duration,
        may_retry: bool,
    ) -> Result<(u16, BodyAt), HttpError> {
        let reused = self.stream.is_some();
        if !reused {
            self.connect(limit).await?;
        }
        match self.exchange_once().await {
            Err(HttpError::Io(_)) if reused && may_retry && self.buf.is_empty() => {
                self.stream = None;
                Box::pin(self.exchange(limit, false)).await
            }
            r => r,
        }
    }

    async fn exchange_once(&mut self) -> Result<(u16, BodyAt), HttpError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(HttpError::Io("reset"));
        };
        self.buf.clear();
        stream
            .write_all(&self.req)
            .await
            .map_err(|e| HttpError::Io(io_kind(&e)))?;

        // Status line and headers.
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(HttpError::BadResponse);
            }
            read_more(stream, &mut self.buf).await?;
        };
        let head = parse_head(&self.buf[..head_end]).ok_or(HttpError::BadResponse)?;

        let at = if head.chunked {
            self.chunked.clear();
            let mut pos = head_end;
            loop {
                // Chunk size line.
                let line_end = loop {
                    if let Some(p) = find(&self.buf[pos..], b"\r\n") {
                        break pos + p;
                    }
                    read_more(stream, &mut self.buf).await?;
                };
                let size_text = std::str::from_utf8(&self.buf[pos..line_end])
                    .map_err(|_| HttpError::BadResponse)?;
                let size_text = size_text.split(';').next().unwrap_or("").trim();
                let size =
                    usize::from_str_radix(size_text, 16).map_err(|_| HttpError::BadResponse)?;
                if self.chunked.len() + size > MAX_BODY {
                    return Err(HttpError::BadResponse);
                }
                let data = line_end + 2;
                while self.buf.len() < data + size + 2 {
                    read_more(stream, &mut self.buf).await?;
                }
                if size == 0 {
                    // No trailers expected; accept the final CRLF.
                    break;
                }
                self.chunked.extend_from_slice(&self.buf[data..data + size]);
                pos = data + size + 2;
            }
            BodyAt::Chunked
        } else if let Some(len) = head.content_length {
            if len > MAX_BODY {
                return Err(HttpError::BadResponse);
            }
            self.buf
                .reserve((head_end + len).saturating_sub(self.buf.len()));
            while self.buf.len() < head_end + len {
                read_more(stream, &mut self.buf).await?;
            }
            BodyAt::Buf(head_end, head_end + len)
        } else {
            // No length: the body runs to the end of the connection.
            loop {
                match stream.read_buf(&mut self.buf).await {
                    Ok(0) => break,
                    Ok(_) if self.buf.len() > MAX_BODY => return Err(HttpError::BadResponse),
                    Ok(_) => {}
                    Err(e) => return Err(HttpError::Io(io_kind(&e))),
                }
            }
            self.stream = None;
            BodyAt::Buf(head_end, self.buf.len())
        };
        if head.close {
            self.stream = None;
        }
        Ok((head.status, at))
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), HttpError> {
    if buf.capacity() - buf.len() < 16 * 1024 {
        buf.reserve(64 * 1024);
    }
    match stream.read_buf(buf).await {
        Ok(0) => Err(HttpError::Io("reset")),
        Ok(_) => Ok(()),
        Err(e) => Err(HttpError::Io(io_kind(&e))),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What the client needs from a response head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub close: bool,
}

/// Parses `HTTP/1.x NNN ...\r\n` + headers (the text up to the blank line).
pub fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let mut h = Head {
        status,
        content_length: None,
        chunked: false,
        close: version == "HTTP/1.0",
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            h.content_length = Some(value.parse().ok()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            h.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                h.close = true;
            } else if v.contains("keep-alive") {
                h.close = false;
            }
        }
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX: y\r\n\r\n").unwrap();
        assert_eq!(
            h,
            Head {
                status: 200,
                content_length: Some(12),
                chunked: false,
                close: false
            }
        );
        let h = parse_head(
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
        assert!(h.chunked && h.close && h.status == 404);
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_none());
        assert!(parse_head(b"HTTP/1.1 abc\r\n\r\n").is_none());
    }

    /// A one-shot server giving canned bytes, to exercise body framing.
    async fn serve_once(reply: &'static [u8]) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b).await;
            let _ = s.write_all(reply).await;
        });
        addr
    }

    #[tokio::test]
    async fn reads_chunked_and_length_bodies() {
        let addr = serve_once(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").await;
        let mut c = HttpConn::new(&addr);
        let r = c.get("/x", Duration::from_secs(5)).await.unwrap();
        assert_eq!((r.status, r.body), (200, &b"hello world"[..]));

        let addr = serve_once(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno").await;
        let mut c = HttpConn::new(&addr);
        let r = c.get("/x", Duration::from_secs(5)).await.unwrap();
        assert_eq!((r.status, r.body), (404, &b"no"[..]));
    }

    #[tokio::test]
    async fn refused_is_reported() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let mut c = HttpConn::new(&addr);
        let e = c.get("/", Duration::from_secs(5)).await.err();
        assert_eq!(e, Some(HttpError::ConnectRefused));
    }
}
