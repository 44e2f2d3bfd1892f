//! A minimal HTTP/1.1 keep-alive client: one connection, one request at a
//! time, `GET` only, over plain TCP or TLS (rustls). Hand-written so the
//! load generator spends as little of its core as possible per request (no
//! header maps, no per-request allocation once warmed up: the request's
//! fixed part, `Host` and `Authorization` included, is rendered once per
//! [`Target`]). It understands `Content-Length`, `chunked` and
//! `Connection: close`, which covers this server and Go's net/http.
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
    /// The request after its path: ` HTTP/1.1`, `Host`, the fixed headers
    /// (`Authorization` included) and the blank line.
    head_tail: Box<[u8]>,
}

impl Target {
    /// `endpoint`, asked with `secret` on every request. An `https://`
    /// endpoint needs `tls`.
    pub fn new(
        endpoint: &Endpoint,
        tls: Option<&Tls>,
        secret: Option<&Secret>,
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
            head_tail: tail.into_boxed_slice(),
        }))
    }

    /// A plain `host:port`, no secret.
    #[cfg(test)]
    pub fn plain(addr: &str) -> Arc<Target> {
        Target::new(&Endpoint::plain(addr), None, None).expect("plain targets always build")
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    pub fn secret_sent(&self) -> bool {
        self.secret_sent
    }
}

impl fmt::Debug for Target {
    /// The address and scheme only: the head holds the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("address", &self.address)
            .field("scheme", &self.scheme())
            .field("secret_sent", &self.secret_sent)
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
    /// Connections opened so far (1 + reconnects).
    pub connects: u64,
}

/// A response; the body borrows the connection's buffer.
pub struct Response<'a> {
    pub status: u16,
    pub body: &'a [u8],
}

impl HttpConn {
    pub fn new(target: Arc<Target>) -> Self {
        HttpConn {
            target,
            stream: None,
            req: Vec::with_capacity(256),
            buf: Vec::with_capacity(64 * 1024),
            chunked: Vec::new(),
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
    /// fresh one, as every HTTP client does.
    pub async fn get(&mut self, path: &str, limit: Duration) -> Result<Response<'_>, HttpError> {
        self.req.clear();
        self.req.extend_from_slice(b"GET ");
        self.req.extend_from_slice(path.as_bytes());
        self.req.extend_from_slice(&self.target.head_tail);
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
        Ok((head.status, at))
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
        let mut c = HttpConn::plain(&addr);
        let r = c.get("/x", Duration::from_secs(5)).await.unwrap();
        assert_eq!((r.status, r.body), (200, &b"hello world"[..]));

        let addr = serve_once(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno").await;
        let mut c = HttpConn::plain(&addr);
        let r = c.get("/x", Duration::from_secs(5)).await.unwrap();
        assert_eq!((r.status, r.body), (404, &b"no"[..]));
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
        let t = Target::new(&e, None, Some(&secret)).unwrap();
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
        assert!(Target::new(&e, None, None).is_err());
    }

    #[tokio::test]
    async fn keeps_a_verified_tls_connection_and_sends_the_bearer_secret() {
        let pki = crate::testtls::Pki::generate();
        let srv = crate::testtls::FixedServer::start(pki.server_config(false), BODY).await;
        let tls = crate::tls::client_config(Some(&pki.ca_file), None).unwrap();
        let secret = Secret::new("s3cret").unwrap();
        let t = Target::new(&https(srv.addr), Some(&tls), Some(&secret)).unwrap();
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
        let mut c = HttpConn::new(Target::new(&https(srv.addr), Some(&tls), None).unwrap());
        let e = c.get("/lookup?topic=x", Duration::from_secs(5)).await.err();
        assert_eq!(e.map(HttpError::kind), Some("tls_bad_certificate"));
        // The name is checked too: a certificate the CA signed for
        // other.example does not do for 127.0.0.1.
        let misnamed = crate::testtls::FixedServer::start(pki.misnamed_server_config(), BODY).await;
        let tls = crate::tls::client_config(Some(&pki.ca_file), None).unwrap();
        let mut c = HttpConn::new(Target::new(&https(misnamed.addr), Some(&tls), None).unwrap());
        let e = c.get("/lookup?topic=x", Duration::from_secs(5)).await.err();
        assert_eq!(e.map(HttpError::kind), Some("tls_bad_certificate"));
        assert!(misnamed.heads().is_empty(), "no request went out");
        // While the right server is good under its DNS name too.
        let by_name =
            crate::tls::parse_endpoint(&format!("https://localhost:{}", srv.addr.port())).unwrap();
        let mut c = HttpConn::new(Target::new(&by_name, Some(&tls), None).unwrap());
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
        let mut c = HttpConn::new(Target::new(&https(srv.addr), Some(&with), None).unwrap());
        let r = c
            .get("/lookup?topic=x", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((r.status, r.body), (200, BODY));
        // Without one, TLS 1.3 reports the refusal on the first read.
        let without = crate::tls::client_config(Some(&pki.ca_file), None).unwrap();
        let mut c = HttpConn::new(Target::new(&https(srv.addr), Some(&without), None).unwrap());
        let e = c.get("/lookup?topic=x", Duration::from_secs(5)).await.err();
        assert_eq!(e.map(HttpError::kind), Some("tls_alert"));
        assert_eq!(srv.heads().len(), 1);
    }
}
