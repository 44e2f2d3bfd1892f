//! A minimal HTTP/1.1 keep-alive client: one connection, one request at a
//! time, `GET` only, over plain TCP or TLS (rustls). Hand-written so the
//! load generator spends as little of its core as possible per request (no
//! header maps, no per-request allocation once warmed up: the request's
//! fixed part, `Host` and `Authorization` included, is rendered once per
//! [`Target`]). It understands `Content-Length`, `chunked` and
//! `Connection: close`, which covers this server and Go's net/http.
//!
//! With `--accept-gzip` the requests carry `Accept-Encoding: gzip`; an
//! answer that comes `Content-Encoding: gzip` is inflated into a buffer of
//! the connection's own by a decoder made once per connection (see
//! [`crate::gzip`]), so the caller sees the same body as from a plain
//! answer, and the size the body had on the wire besides. Without the
//! option the request bytes are the same as before it existed.
//!
//! The stream is an enum of the two kinds rather than a trait object: a
//! read or write is one well-predicted branch, and the plain path is the
//! same `TcpStream` calls as before TLS existed. A TLS connection does
//! its handshake when it is opened (within the request's time limit) and
//! then stays open across requests like a plain one.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::gzip::Gunzip;
use crate::stats::io_kind;
use crate::tls::{Endpoint, Secret, Tls, handshake_error_kind, rustls_error_kind};

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
    /// A `Content-Encoding: gzip` body that does not inflate (or whose
    /// CRC-32 or length is wrong).
    BadGzip,
    /// A `Content-Encoding` other than gzip (never asked for).
    UnknownEncoding,
}

impl HttpError {
    pub fn kind(self) -> &'static str {
        match self {
            HttpError::ConnectRefused => "connect_refused",
            HttpError::Connect(k) => k,
            HttpError::Io(k) => k,
            HttpError::Timeout => "timeout",
            HttpError::BadResponse => "bad_http",
            HttpError::BadGzip => "bad_gzip",
            HttpError::UnknownEncoding => "unknown_content_encoding",
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

/// One server to ask, and how: made once from an `--http-address` entry
/// and shared by every connection to it.
pub struct Target {
    /// The entry as given (`https://host:port` or `host:port`), for reports.
    pub address: String,
    /// `host:port`, connected to.
    connect: String,
    /// For `https://`: the configuration and the name the server's
    /// certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Whether requests carry `Authorization: Bearer`.
    secret_sent: bool,
    /// Whether requests carry `Accept-Encoding: gzip`.
    accept_gzip: bool,
    /// The request after its path: ` HTTP/1.1`, `Host`, the fixed headers
    /// (`Authorization` included) and the blank line.
    head_tail: Box<[u8]>,
}

impl Target {
    /// `endpoint`, asked with `secret` on every request, and for gzip
    /// answers with `accept_gzip`. An `https://` endpoint needs `tls`.
    pub fn new(
        endpoint: &Endpoint,
        tls: Option<&Tls>,
        secret: Option<&Secret>,
        accept_gzip: bool,
    ) -> Result<Arc<Target>, String> {
        let tls = match (endpoint.tls, tls) {
            (false, _) => None,
            (true, None) => {
                return Err(format!(
                    "{}: https needs a TLS configuration",
                    endpoint.given
                ));
            }
            (true, Some(t)) => {
                let name = ServerName::try_from(endpoint.host.clone()).map_err(|_| {
                    format!(
                        "{}: {:?} is not a valid TLS server name",
                        endpoint.given, endpoint.host
                    )
                })?;
                Some((TlsConnector::from(t.config.clone()), name))
            }
        };
        let mut tail = Vec::with_capacity(128);
        tail.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        tail.extend_from_slice(endpoint.authority.as_bytes());
        tail.extend_from_slice(b"\r\nUser-Agent: nsqlookupd-bench\r\nAccept: */*\r\n");
        if accept_gzip {
            tail.extend_from_slice(b"Accept-Encoding: gzip\r\n");
        }
        if let Some(s) = secret {
            tail.extend_from_slice(b"Authorization: Bearer ");
            tail.extend_from_slice(s.expose().as_bytes());
            tail.extend_from_slice(b"\r\n");
        }
        tail.extend_from_slice(b"\r\n");
        Ok(Arc::new(Target {
            address: endpoint.given.clone(),
            connect: endpoint.authority.clone(),
            tls,
            secret_sent: secret.is_some(),
            accept_gzip,
            head_tail: tail.into_boxed_slice(),
        }))
    }

    /// A plain `host:port`, no secret.
    #[cfg(test)]
    pub fn plain(addr: &str) -> Arc<Target> {
        Target::new(&Endpoint::plain(addr), None, None, false).expect("plain targets always build")
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    pub fn secret_sent(&self) -> bool {
        self.secret_sent
    }

    pub fn accepts_gzip(&self) -> bool {
        self.accept_gzip
    }
}

impl fmt::Debug for Target {
    /// The address and scheme only: the head holds the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("address", &self.address)
            .field("scheme", &self.scheme())
            .field("secret_sent", &self.secret_sent)
            .field("accept_gzip", &self.accept_gzip)
            .finish()
    }
}

/// An open connection: plain, or TLS over TCP (boxed: a rustls session is
/// about a kilobyte, and it is allocated once per connection, not per
/// request).
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Stream {
    /// Writes the whole request. TLS buffers records in the session, so
    /// it is flushed too; a plain socket has nothing to flush.
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(bytes).await,
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }
}

/// A keep-alive connection to one server.
pub struct HttpConn {
    target: Arc<Target>,
    stream: Option<Stream>,
    req: Vec<u8>,
    buf: Vec<u8>,
    chunked: Vec<u8>,
    /// The decoder of gzip answers, made with the first one.
    gunzip: Option<Gunzip>,
    /// The inflated body of the last gzip answer.
    inflated: Vec<u8>,
    /// Connections opened so far (1 + reconnects).
    pub connects: u64,
}

/// A response; the body borrows the connection's buffers.
pub struct Response<'a> {
    pub status: u16,
    /// The content: the body as received, or inflated from gzip (unless
    /// `still_compressed`).
    pub body: &'a [u8],
    /// The answer came `Content-Encoding: gzip`.
    pub gzip: bool,
    /// `body` is the gzip data as received (the caller asked not to
    /// inflate it).
    pub still_compressed: bool,
    /// Bytes of the body as received (compressed for a gzip answer, after
    /// removing any chunked framing).
    pub wire_len: usize,
    /// Bytes of the content: `body.len()` unless `still_compressed`, and
    /// then what the gzip trailer says.
    pub content_len: usize,
}

impl<'a> Response<'a> {
    fn plain(status: u16, body: &'a [u8]) -> Self {
        Response {
            status,
            body,
            gzip: false,
            still_compressed: false,
            wire_len: body.len(),
            content_len: body.len(),
        }
    }
}

impl HttpConn {
    pub fn new(target: Arc<Target>) -> Self {
        HttpConn {
            target,
            stream: None,
            req: Vec::with_capacity(256),
            buf: Vec::with_capacity(64 * 1024),
            chunked: Vec::new(),
            gunzip: None,
            inflated: Vec::new(),
            connects: 0,
        }
    }

    /// A connection to a plain `host:port` (no TLS, no secret).
    #[cfg(test)]
    pub fn plain(addr: &str) -> Self {
        HttpConn::new(Target::plain(addr))
    }

    /// Opens the connection now (`get` opens it when needed otherwise),
    /// TLS handshake included, within `limit`.
    pub async fn connect(&mut self, limit: Duration) -> Result<(), HttpError> {
        let target = self.target.clone();
        let opened = timeout(limit, async {
            let s = match TcpStream::connect(&target.connect).await {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(HttpError::ConnectRefused);
                }
                Err(e) => return Err(HttpError::Connect(io_kind(&e))),
                Ok(s) => s,
            };
            let _ = s.set_nodelay(true);
            match &target.tls {
                None => Ok(Stream::Plain(s)),
                Some((connector, name)) => connector
                    .connect(name.clone(), s)
                    .await
                    .map(|t| Stream::Tls(Box::new(t)))
                    .map_err(|e| HttpError::Connect(handshake_error_kind(&e))),
            }
        })
        .await;
        let s = match opened {
            Err(_) => return Err(HttpError::Timeout),
            Ok(r) => r?,
        };
        self.stream = Some(s);
        self.connects += 1;
        Ok(())
    }

    /// `GET path` with the whole exchange bounded by `limit`. A reused
    /// connection that the server had already closed is retried once on a
    /// fresh one, as every HTTP client does. A gzip answer is inflated.
    pub async fn get(&mut self, path: &str, limit: Duration) -> Result<Response<'_>, HttpError> {
        self.get_as(path, limit, true).await
    }

    /// [`HttpConn::get`], inflating a gzip answer only if `inflate`
    /// (otherwise its body is returned as received).
    pub async fn get_as(
        &mut self,
        path: &str,
        limit: Duration,
        inflate: bool,
    ) -> Result<Response<'_>, HttpError> {
        self.req.clear();
        self.req.extend_from_slice(b"GET ");
        self.req.extend_from_slice(path.as_bytes());
        self.req.extend_from_slice(&self.target.head_tail);
        let deadline = tokio::time::Instant::now() + limit;
        let r = match tokio::time::timeout_at(deadline, self.exchange(limit, true)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout),
        };
        let (status, coding, at) = match r {
            Ok(got) => got,
            Err(e) => {
                self.stream = None;
                return Err(e);
            }
        };
        let wire = match at {
            BodyAt::Buf(s, e) => &self.buf[s..e],
            BodyAt::Chunked => &self.chunked[..],
        };
        match coding {
            Coding::Identity => Ok(Response::plain(status, wire)),
            // A body-less gzip answer (a HEAD, a 204) has nothing to inflate.
            Coding::Gzip if wire.is_empty() => Ok(Response::plain(status, wire)),
            Coding::Gzip if inflate => {
                // The framing was right: the connection stays usable.
                self.gunzip
                    .get_or_insert_with(Gunzip::new)
                    .decode(wire, &mut self.inflated)
                    .map_err(|_| HttpError::BadGzip)?;
                Ok(Response {
                    status,
                    body: &self.inflated,
                    gzip: true,
                    still_compressed: false,
                    wire_len: wire.len(),
                    content_len: self.inflated.len(),
                })
            }
            Coding::Gzip => Ok(Response {
                status,
                body: wire,
                gzip: true,
                still_compressed: true,
                wire_len: wire.len(),
                content_len: gzip_trailer_len(wire),
            }),
            Coding::Other => Err(HttpError::UnknownEncoding),
        }
    }

    async fn exchange(
        &mut self,
        limit: Duration,
        may_retry: bool,
    ) -> Result<(u16, Coding, BodyAt), HttpError> {
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

    async fn exchange_once(&mut self) -> Result<(u16, Coding, BodyAt), HttpError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(HttpError::Io("reset"));
        };
        self.buf.clear();
        stream.send(&self.req).await.map_err(|e| io_error(&e))?;

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
            // No length: the body runs to the end of the connection (over
            // TLS, a peer that closes without close_notify ends it too).
            loop {
                match stream.read_buf(&mut self.buf).await {
                    Ok(0) => break,
                    Ok(_) if self.buf.len() > MAX_BODY => return Err(HttpError::BadResponse),
                    Ok(_) => {}
                    Err(e)
                        if e.kind() == io::ErrorKind::UnexpectedEof
                            && matches!(stream, Stream::Tls(_)) =>
                    {
                        break;
                    }
                    Err(e) => return Err(io_error(&e)),
                }
            }
            self.stream = None;
            BodyAt::Buf(head_end, self.buf.len())
        };
        if head.close {
            self.stream = None;
        }
        Ok((head.status, head.coding, at))
    }
}

async fn read_more(stream: &mut Stream, buf: &mut Vec<u8>) -> Result<(), HttpError> {
    if buf.capacity() - buf.len() < 16 * 1024 {
        buf.reserve(64 * 1024);
    }
    match stream.read_buf(buf).await {
        Ok(0) => Err(HttpError::Io("reset")),
        Ok(_) => Ok(()),
        Err(e) => Err(io_error(&e)),
    }
}

/// An error of an open connection, by kind; a TLS one (only ever made on
/// a TLS stream) is named as such.
fn io_error(e: &io::Error) -> HttpError {
    HttpError::Io(rustls_error_kind(e).unwrap_or_else(|| io_kind(e)))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The length of the content that the trailer of the gzip member `z`
/// states (mod 2^32), 0 if it has none.
fn gzip_trailer_len(z: &[u8]) -> usize {
    match z.len().checked_sub(4).map(|at| &z[at..]) {
        Some(&[a, b, c, d]) if z.len() >= 18 => u32::from_le_bytes([a, b, c, d]) as usize,
        _ => 0,
    }
}

/// A response's `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// None, or `identity`.
    Identity,
    /// `gzip` (or its alias `x-gzip`).
    Gzip,
    /// Anything else, or several codings.
    Other,
}

/// What the client needs from a response head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub close: bool,
    pub coding: Coding,
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
        coding: Coding::Identity,
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
        } else if name.eq_ignore_ascii_case("content-encoding") {
            h.coding = if value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("x-gzip")
            {
                Coding::Gzip
            } else if value.is_empty() || value.eq_ignore_ascii_case("identity") {
                Coding::Identity
            } else {
                Coding::Other
            };
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
                close: false,
                coding: Coding::Identity,
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
        let mut c = HttpConn::plain(&addr);
        let r = c.get("/x", Duration::from_secs(5)).await.unwrap();
        assert_eq!((r.status, r.body), (200, &b"hello world"[..]));

        let addr = serve_once(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno").await;
        let mut c = HttpConn::plain(&addr);
        let r = c.get("/x", Duration::from_secs(5)).await.unwrap();
        assert_eq!((r.status, r.body), (404, &b"no"[..]));
    }

    /// A keep-alive server answering the n-th request with `replies[n]`;
    /// returns its address and the request heads it got.
    async fn serve_replies(
        replies: Vec<Vec<u8>>,
    ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let h = heads.clone();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut replies = replies.into_iter();
            loop {
                while let Some(end) = find(&buf, b"\r\n\r\n") {
                    let head: Vec<u8> = buf.drain(..end + 4).collect();
                    h.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let Some(r) = replies.next() else { return };
                    if s.write_all(&r).await.is_err() {
                        return;
                    }
                }
                let mut chunk = [0u8; 1024];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
        (addr, heads)
    }

    fn gzip_reply(z: &[u8], chunk: Option<usize>) -> Vec<u8> {
        let mut r = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nVary: Accept-Encoding\r\n".to_vec();
        match chunk {
            None => {
                r.extend_from_slice(format!("Content-Length: {}\r\n\r\n", z.len()).as_bytes());
                r.extend_from_slice(z);
            }
            Some(n) => {
                r.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for c in z.chunks(n) {
                    r.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    r.extend_from_slice(c);
                    r.extend_from_slice(b"\r\n");
                }
                r.extend_from_slice(b"0\r\n\r\n");
            }
        }
        r
    }

    #[tokio::test]
    async fn inflates_gzip_answers_of_either_framing_on_one_connection() {
        let content: Vec<u8> = format!(
            "{{\"channels\":[],\"producers\":[{}]}}",
            (0..200)
                .map(|i| format!("{{\"broadcast_address\":\"node-{i:05}.bench\"}}"))
                .collect::<Vec<_>>()
                .join(",")
        )
        .into_bytes();
        let z = crate::gzip::compress(&content, 1);
        let mut corrupt = z.clone();
        let n = corrupt.len();
        corrupt[n - 6] ^= 0xff; // the CRC-32
        let plain = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            content.len()
        );
        let mut plain = plain.into_bytes();
        plain.extend_from_slice(&content);
        let (addr, heads) = serve_replies(vec![
            gzip_reply(&z, None),
            gzip_reply(&z, Some(100)),
            plain,
            gzip_reply(&z, Some(7)),
            gzip_reply(&corrupt, None),
            gzip_reply(&z, None),
            b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
        ])
        .await;
        let t = Target::new(&Endpoint::plain(&addr), None, None, true).unwrap();
        assert!(t.accepts_gzip());
        let mut c = HttpConn::new(t);
        let limit = Duration::from_secs(5);
        for framing in ["content-length", "chunked"] {
            let r = c.get("/lookup?topic=a", limit).await.unwrap();
            assert!(r.gzip && !r.still_compressed, "{framing}");
            assert_eq!((r.status, r.body), (200, &content[..]), "{framing}");
            assert_eq!((r.wire_len, r.content_len), (z.len(), content.len()));
        }
        // A plain answer to a gzip request is taken as it is.
        let r = c.get("/lookup?topic=b", limit).await.unwrap();
        assert!(!r.gzip && r.body == &content[..] && r.wire_len == content.len());
        // Not inflated when asked not to: the bytes as received, and the
        // size the trailer states.
        let r = c.get_as("/lookup?topic=c", limit, false).await.unwrap();
        assert!(r.gzip && r.still_compressed);
        assert_eq!((r.body, r.content_len), (&z[..], content.len()));
        // A corrupt body is an error of its own, and the connection, whose
        // framing was right, carries on.
        let e = c.get("/lookup?topic=d", limit).await.err();
        assert_eq!(e.map(HttpError::kind), Some("bad_gzip"));
        let r = c.get("/lookup?topic=e", limit).await.unwrap();
        assert_eq!(r.body, &content[..]);
        let e = c.get("/lookup?topic=f", limit).await.err();
        assert_eq!(e.map(HttpError::kind), Some("unknown_content_encoding"));
        assert_eq!(c.connects, 1);
        let heads = heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 7);
        assert!(
            heads
                .iter()
                .all(|h| h.contains("\r\nAccept-Encoding: gzip\r\n"))
        );
    }

    #[tokio::test]
    async fn without_the_option_no_accept_encoding_is_sent() {
        let (addr, heads) = serve_replies(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
        ])
        .await;
        let t = Target::plain(&addr);
        assert_eq!(
            &t.head_tail[..],
            &b" HTTP/1.1\r\nHost: "[..]
                .iter()
                .chain(addr.as_bytes())
                .chain(b"\r\nUser-Agent: nsqlookupd-bench\r\nAccept: */*\r\n\r\n")
                .copied()
                .collect::<Vec<u8>>()[..]
        );
        let mut c = HttpConn::new(t);
        let r = c.get("/x", Duration::from_secs(5)).await.unwrap();
        assert!(!r.gzip && r.body == b"{}");
        let h = heads.lock().unwrap()[0].to_ascii_lowercase();
        assert!(!h.contains("accept-encoding"), "{h}");
    }

    #[test]
    fn content_encoding_in_heads() {
        let coding = |v: &str| {
            parse_head(format!("HTTP/1.1 200 OK\r\nContent-Encoding: {v}\r\n\r\n").as_bytes())
                .unwrap()
                .coding
        };
        assert_eq!(coding("gzip"), Coding::Gzip);
        assert_eq!(coding(" GZIP "), Coding::Gzip);
        assert_eq!(coding("x-gzip"), Coding::Gzip);
        assert_eq!(coding("identity"), Coding::Identity);
        assert_eq!(coding("br"), Coding::Other);
        assert_eq!(coding("gzip, br"), Coding::Other);
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap().coding,
            Coding::Identity
        );
        assert_eq!(
            gzip_trailer_len(&crate::gzip::compress(&[b'x'; 5000], 1)),
            5000
        );
        assert_eq!(gzip_trailer_len(b"short"), 0);
    }

    #[tokio::test]
    async fn refused_is_reported() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let mut c = HttpConn::plain(&addr);
        let e = c.get("/", Duration::from_secs(5)).await.err();
        assert_eq!(e, Some(HttpError::ConnectRefused));
    }

    fn https(addr: std::net::SocketAddr) -> Endpoint {
        crate::tls::parse_endpoint(&format!("https://{addr}")).unwrap()
    }

    const BODY: &[u8] = br#"{"channels":[],"producers":[]}"#;

    #[test]
    fn the_request_head_is_rendered_once_with_host_and_secret() {
        let e = crate::tls::parse_endpoint("http://h.example:4161").unwrap();
        let secret = Secret::new("tok").unwrap();
        let t = Target::new(&e, None, Some(&secret), false).unwrap();
        assert_eq!(
            &t.head_tail[..],
            &b" HTTP/1.1\r\nHost: h.example:4161\r\nUser-Agent: nsqlookupd-bench\r\nAccept: */*\r\nAuthorization: Bearer tok\r\n\r\n"[..]
        );
        assert!(t.secret_sent() && t.scheme() == "http");
        assert!(!format!("{t:?}").contains("tok\""), "{t:?}");
        let t = Target::plain("127.0.0.1:1");
        assert!(!t.secret_sent());
        assert!(!String::from_utf8_lossy(&t.head_tail).contains("Authorization"));
        // https without a TLS configuration is a set-up error.
        let e = crate::tls::parse_endpoint("https://h:1").unwrap();
        assert!(Target::new(&e, None, None, false).is_err());
    }

    #[tokio::test]
    async fn keeps_a_verified_tls_connection_and_sends_the_bearer_secret() {
        let pki = crate::testtls::Pki::generate();
        let srv = crate::testtls::FixedServer::start(pki.server_config(false), BODY).await;
        let tls = crate::tls::client_config(Some(&pki.ca_file), None).unwrap();
        let secret = Secret::new("s3cret").unwrap();
        let t = Target::new(&https(srv.addr), Some(&tls), Some(&secret), false).unwrap();
        assert_eq!(t.scheme(), "https");
        let mut c = HttpConn::new(t);
        for i in 0..5 {
            let r = c
                .get(&format!("/lookup?topic=t{i}"), Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!((r.status, r.body), (200, BODY));
        }
        // One connection, one handshake, for every request.
        assert_eq!(c.connects, 1);
        assert_eq!(srv.sessions.load(std::sync::atomic::Ordering::Relaxed), 1);
        let heads = srv.heads();
        assert_eq!(heads.len(), 5);
        for (i, h) in heads.iter().enumerate() {
            assert!(
                h.starts_with(&format!("GET /lookup?topic=t{i} HTTP/1.1\r\n")),
                "{h}"
            );
            assert!(h.contains("\r\nAuthorization: Bearer s3cret"), "{h}");
            assert!(h.contains(&format!("\r\nHost: {}", srv.addr)), "{h}");
        }
    }

    #[tokio::test]
    async fn refuses_a_server_its_ca_did_not_sign() {
        let pki = crate::testtls::Pki::generate();
        let srv = crate::testtls::FixedServer::start(pki.server_config(false), BODY).await;
        let tls = crate::tls::client_config(Some(&pki.other_ca_file), None).unwrap();
        let mut c = HttpConn::new(Target::new(&https(srv.addr), Some(&tls), None, false).unwrap());
        let e = c.get("/lookup?topic=x", Duration::from_secs(5)).await.err();
        assert_eq!(e.map(HttpError::kind), Some("tls_bad_certificate"));
        // The name is checked too: a certificate the CA signed for
        // other.example does not do for 127.0.0.1.
        let misnamed = crate::testtls::FixedServer::start(pki.misnamed_server_config(), BODY).await;
        let tls = crate::tls::client_config(Some(&pki.ca_file), None).unwrap();
        let mut c =
            HttpConn::new(Target::new(&https(misnamed.addr), Some(&tls), None, false).unwrap());
        let e = c.get("/lookup?topic=x", Duration::from_secs(5)).await.err();
        assert_eq!(e.map(HttpError::kind), Some("tls_bad_certificate"));
        assert!(misnamed.heads().is_empty(), "no request went out");
        // While the right server is good under its DNS name too.
        let by_name =
            crate::tls::parse_endpoint(&format!("https://localhost:{}", srv.addr.port())).unwrap();
        let mut c = HttpConn::new(Target::new(&by_name, Some(&tls), None, false).unwrap());
        let r = c
            .get("/lookup?topic=x", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((r.status, r.body), (200, BODY));
        assert_eq!(srv.heads().len(), 1);
        // A plain client talking to the TLS port gets no valid answer.
        let mut c = HttpConn::plain(&srv.addr.to_string());
        assert!(c.get("/", Duration::from_secs(2)).await.is_err());
    }

    #[tokio::test]
    async fn presents_a_client_certificate_when_the_server_requires_one() {
        let pki = crate::testtls::Pki::generate();
        let srv = crate::testtls::FixedServer::start(pki.server_config(true), BODY).await;
        let with = crate::tls::client_config(
            Some(&pki.ca_file),
            Some((&pki.client_cert_file, &pki.client_key_file)),
        )
        .unwrap();
        let mut c = HttpConn::new(Target::new(&https(srv.addr), Some(&with), None, false).unwrap());
        let r = c
            .get("/lookup?topic=x", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((r.status, r.body), (200, BODY));
        // Without one, TLS 1.3 reports the refusal on the first read.
        let without = crate::tls::client_config(Some(&pki.ca_file), None).unwrap();
        let mut c =
            HttpConn::new(Target::new(&https(srv.addr), Some(&without), None, false).unwrap());
        let e = c.get("/lookup?topic=x", Duration::from_secs(5)).await.err();
        assert_eq!(e.map(HttpError::kind), Some("tls_alert"));
        assert_eq!(srv.heads().len(), 1);
    }
}
