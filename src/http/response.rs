//! The shapes of every HTTP answer, with the original's exact headers.

use bytes::{Buf, Bytes};
use http_body_util::Full;
use hyper::header::{
    ALLOW, CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, LOCATION, VARY,
    WWW_AUTHENTICATE,
};
use hyper::{Response, StatusCode};

use crate::access::Refusal;
use crate::json;
use crate::registry::{Encoding, SharedBody};

pub type Body = Full<Chunk>;

/// The bytes of one response body, as hyper writes them: a body the
/// registry may share with its cache (a `/lookup` answer served without
/// copying it or touching a second reference count), read from a cursor.
#[derive(Debug)]
pub struct Chunk {
    body: SharedBody,
    read: usize,
}

impl Buf for Chunk {
    fn remaining(&self) -> usize {
        self.body.len() - self.read
    }

    fn chunk(&self) -> &[u8] {
        &self.body[self.read..]
    }

    fn advance(&mut self, n: usize) {
        assert!(n <= self.remaining(), "advanced past the end of the body");
        self.read += n;
    }
}

const JSON: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");
const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");
const NSQ_V1: HeaderValue = HeaderValue::from_static("nsq; version=1.0");
/// A constant, so that no response parses the name again.
const X_NSQ_CONTENT_TYPE: HeaderName = HeaderName::from_static("x-nsq-content-type");

fn response(status: StatusCode, body: impl Into<SharedBody>) -> Response<Body> {
    let body = body.into();
    let mut r = Response::new(Full::new(Chunk { body, read: 0 }));
    *r.status_mut() = status;
    r
}

/// 200 with a JSON document.
pub fn json_ok(body: impl Into<SharedBody>) -> Response<Body> {
    let mut r = response(StatusCode::OK, body);
    r.headers_mut().insert(CONTENT_TYPE, JSON);
    r.headers_mut().insert(X_NSQ_CONTENT_TYPE, NSQ_V1);
    r
}

/// 200 with a JSON document in `encoding`: a gzip one says so, and that
/// the answer depends on `Accept-Encoding`; a plain one is exactly
/// [`json_ok`].
pub fn json_as(body: impl Into<SharedBody>, encoding: Encoding) -> Response<Body> {
    let mut r = json_ok(body);
    if encoding == Encoding::Gzip {
        mark_gzip(&mut r);
    }
    r
}

fn mark_gzip(r: &mut Response<Body>) {
    r.headers_mut().insert(CONTENT_ENCODING, GZIP);
    r.headers_mut().insert(VARY, ACCEPT_ENCODING_VALUE);
}

const GZIP: HeaderValue = HeaderValue::from_static("gzip");
const ACCEPT_ENCODING_VALUE: HeaderValue = HeaderValue::from_static("Accept-Encoding");

/// 200 with an empty body (successful admin POSTs).
pub fn empty_ok() -> Response<Body> {
    let mut r = response(StatusCode::OK, Bytes::new());
    r.headers_mut().insert(X_NSQ_CONTENT_TYPE, NSQ_V1);
    r
}

/// An error: `{"message":"TEXT"}` with both headers.
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    let mut body = String::with_capacity(16 + message.len());
    body.push_str("{\"message\":");
    json::push_str(&mut body, message);
    body.push('}');
    let mut r = response(status, Bytes::from(body));
    r.headers_mut().insert(CONTENT_TYPE, JSON);
    r.headers_mut().insert(X_NSQ_CONTENT_TYPE, NSQ_V1);
    r
}

/// A request refused by access control: the original's error shape, with
/// `WWW-Authenticate: Bearer` on a 401 (RFC 6750), which says what
/// credentials would do.
pub fn refused(refusal: Refusal) -> Response<Body> {
    let status = StatusCode::from_u16(refusal.status()).expect("valid status");
    let mut r = error(status, refusal.message());
    if status == StatusCode::UNAUTHORIZED {
        let challenge = match refusal {
            Refusal::BadCredentials => BEARER_INVALID,
            _ => BEARER,
        };
        r.headers_mut().insert(WWW_AUTHENTICATE, challenge);
    }
    r
}

const BEARER: HeaderValue = HeaderValue::from_static("Bearer realm=\"nsqlookupd\"");
const BEARER_INVALID: HeaderValue =
    HeaderValue::from_static("Bearer realm=\"nsqlookupd\", error=\"invalid_token\"");

/// 403 to a plain-HTTP request under `--tls-required`, byte for byte as
/// nsqd writes it (`nsqd/http.go`, spaces included): NSQ's HTTP client
/// reads `https_port` and retries the request over HTTPS on that port.
pub fn tls_required(https_port: u16) -> Response<Body> {
    let body = format!("{{\"message\": \"TLS_REQUIRED\", \"https_port\": {https_port}}}");
    let mut r = response(StatusCode::FORBIDDEN, Bytes::from(body));
    r.headers_mut().insert(CONTENT_TYPE, JSON);
    r.headers_mut().insert(X_NSQ_CONTENT_TYPE, NSQ_V1);
    r
}

/// `/metrics`: the OpenMetrics text exposition format.
pub fn metrics(body: SharedBody, encoding: Encoding) -> Response<Body> {
    let mut r = response(StatusCode::OK, body);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    if encoding == Encoding::Gzip {
        mark_gzip(&mut r);
    }
    r
}

/// `/ping`: plain text, no NSQ content type.
pub fn text_ok(text: &'static str) -> Response<Body> {
    let mut r = response(StatusCode::OK, Bytes::from_static(text.as_bytes()));
    r.headers_mut().insert(CONTENT_TYPE, TEXT);
    r
}

/// 405 with `Allow`.
pub fn method_not_allowed(allow: &str) -> Response<Body> {
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
    if let Ok(v) = HeaderValue::from_str(allow) {
        r.headers_mut().insert(ALLOW, v);
    }
    r
}

/// 200 to OPTIONS with `Allow` and nothing else.
pub fn options(allow: &str) -> Response<Body> {
    let mut r = response(StatusCode::OK, Bytes::new());
    if let Ok(v) = HeaderValue::from_str(allow) {
        r.headers_mut().insert(ALLOW, v);
    }
    r
}

/// Escapes text for an HTML attribute, as Go's `htmlEscape` does.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A redirect as Go's `http.Redirect` writes it: 301 (GET) or 307, with a
/// small HTML body for GET only.
pub fn redirect(location: &str, permanent: bool, with_body: bool) -> Response<Body> {
    let (status, text) = if permanent {
        (StatusCode::MOVED_PERMANENTLY, "Moved Permanently")
    } else {
        (StatusCode::TEMPORARY_REDIRECT, "Temporary Redirect")
    };
    let body = if with_body {
        Bytes::from(format!(
            "<a href=\"{}\">{text}</a>.\n\n",
            html_escape(location)
        ))
    } else {
        Bytes::new()
    };
    let mut r = response(status, body);
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    if with_body {
        r.headers_mut().insert(CONTENT_TYPE, HTML);
    }
    r
}

/// 400 for a request whose path cannot be decoded (Go's server answers
/// these itself, before routing).
pub fn bad_request() -> Response<Body> {
    let mut r = response(
        StatusCode::BAD_REQUEST,
        Bytes::from_static(b"400 Bad Request"),
    );
    r.headers_mut().insert(CONTENT_TYPE, TEXT);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_required_is_nsqds_body() {
        use http_body_util::BodyExt;
        let r = tls_required(4162);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let body = futures_body(r.into_body());
        assert_eq!(
            body,
            b"{\"message\": \"TLS_REQUIRED\", \"https_port\": 4162}"
        );

        fn futures_body(body: Body) -> Vec<u8> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(body.collect()).unwrap().to_bytes().to_vec()
        }
    }

    #[test]
    fn a_chunk_reads_its_body_from_a_cursor() {
        let mut c = Chunk {
            body: Bytes::from_static(b"{\"a\":1}").into(),
            read: 0,
        };
        assert_eq!(c.remaining(), 7);
        c.advance(2);
        assert_eq!(c.chunk(), b"a\":1}");
        assert_eq!(c.copy_to_bytes(5), Bytes::from_static(b"a\":1}"));
        assert!(!c.has_remaining());
    }
}
