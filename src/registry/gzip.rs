//! Compressed renderings: how an answer is gzip-compressed for the clients
//! that accept it, and which answers are worth it.
//!
//! Owns the compression settings and the call into flate2; the cache
//! (`cache.rs`) keeps the results beside the plain bodies, the HTTP side
//! negotiates (`http::encoding`).

use std::io::Write;

use bytes::Bytes;
use flate2::write::GzEncoder;

/// How answers are compressed (`--http-compression`, `--http-gzip-level`,
/// `--http-compression-min-size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compression {
    /// gzip level 1..=9; `None` turns compression off (every answer plain).
    pub gzip_level: Option<u32>,
    /// Answers shorter than this stay plain even for gzip clients.
    pub min_size: usize,
}

/// `--http-gzip-level`'s default, chosen by measurement (perf/README.md,
/// "Compressed answers"): level 1 shrinks a `/lookup` answer about tenfold
/// already, and higher levels cost several times the CPU for a few percent
/// fewer bytes.
pub const DEFAULT_LEVEL: u32 = 1;

/// `--http-compression-min-size`'s default. A gzip member costs 18 bytes
/// of header and trailer, and an answer below about a kilobyte goes out in
/// one TCP segment either way: compressing it saves the client nothing it
/// would notice and costs the server a compression per change. A one- or
/// two-producer `/lookup` answer (~250-500 bytes) stays plain; from about
/// four producers on, it is compressed.
pub const DEFAULT_MIN_SIZE: usize = 1024;

impl Default for Compression {
    fn default() -> Self {
        Compression {
            gzip_level: Some(DEFAULT_LEVEL),
            min_size: DEFAULT_MIN_SIZE,
        }
    }
}

impl Compression {
    /// Whether a plain body of `len` bytes is sent compressed to a client
    /// that accepts gzip.
    pub fn worth_it(&self, len: usize) -> bool {
        self.gzip_level.is_some() && len >= self.min_size
    }

    /// `body` as one gzip member (RFC 1952). Writing into a `Vec` cannot
    /// fail.
    pub fn gzip(&self, body: &[u8]) -> Bytes {
        let level = self.gzip_level.unwrap_or(DEFAULT_LEVEL);
        let mut out = GzEncoder::new(
            Vec::with_capacity(body.len() / 8 + 64),
            flate2::Compression::new(level),
        );
        out.write_all(body).expect("writing into a Vec");
        Bytes::from(out.finish().expect("writing into a Vec"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn round_trips_and_shrinks_json() {
        let c = Compression::default();
        let body: String = (0..200)
            .map(|i| format!("{{\"hostname\":\"nsqd-{i:05}.example\",\"tcp_port\":4150}},"))
            .collect();
        let gz = c.gzip(body.as_bytes());
        assert!(gz.len() * 4 < body.len(), "{} -> {}", body.len(), gz.len());
        let mut back = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, body);
        assert!(c.worth_it(1024) && !c.worth_it(1023));
        assert!(
            !Compression {
                gzip_level: None,
                min_size: 0
            }
            .worth_it(1 << 20)
        );
    }
}
