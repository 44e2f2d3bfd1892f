//! `Accept-Encoding` (RFC 9110, section 12.5.3): whether a request allows
//! a gzip answer.
//!
//! Owns the negotiation only; the registry keeps the compressed renderings
//! and the handlers choose which to send.
//!
//! - `gzip` (or its alias `x-gzip`) is acceptable with a q-value above 0;
//!   `*` stands for every coding the header does not name.
//! - Clients that ask for gzip by default (Go's HTTP client, pynsq's
//!   tornado, nsqjs's node-fetch) send `gzip` with no q-value, so the
//!   preference of a compressed answer is what they already expect.
//!   Identity is preferred only when the header ranks it strictly above
//!   gzip (`gzip;q=0.5, identity`).
//! - A header that cannot be parsed, or names no acceptable gzip, gets the
//!   plain answer: exactly today's bytes. Identity is never refused
//!   (`identity;q=0` with no acceptable gzip still gets a plain answer
//!   rather than a 406, which no NSQ client would understand).

use crate::access::bearer::trim;
pub use crate::registry::Encoding;

/// The most header values and entries read: a longer header is a client
/// bug or an attack; the rest of it is ignored.
const MAX_ENTRIES: usize = 64;

/// The encoding to answer with, given every `Accept-Encoding` value of a
/// request (several header lines are one comma-separated list).
pub fn negotiate<'a>(values: impl Iterator<Item = &'a [u8]>) -> Encoding {
    let mut gzip: Option<u16> = None;
    let mut identity: Option<u16> = None;
    let mut any: Option<u16> = None;
    for entry in values
        .flat_map(|v| v.split(|&b| b == b','))
        .take(MAX_ENTRIES)
    {
        let mut parts = entry.split(|&b| b == b';');
        let coding = trim(parts.next().unwrap_or_default());
        if coding.is_empty() {
            continue;
        }
        let mut q = 1000;
        for param in parts {
            let param = trim(param);
            if let Some(value) = param
                .strip_prefix(b"q=")
                .or_else(|| param.strip_prefix(b"Q="))
            {
                match qvalue(trim(value)) {
                    Some(v) => q = v,
                    None => return Encoding::Identity,
                }
            }
        }
        let slot = if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip")
        {
            &mut gzip
        } else if coding.eq_ignore_ascii_case(b"identity") {
            &mut identity
        } else if coding == b"*" {
            &mut any
        } else {
            continue;
        };
        // A coding named twice: the higher weight (lenient, and the most
        // that the header could mean).
        *slot = Some(slot.map_or(q, |old| old.max(q)));
    }
    match gzip.or(any) {
        Some(g) if g > 0 => match identity.or(any) {
            Some(i) if i > g => Encoding::Identity,
            _ => Encoding::Gzip,
        },
        _ => Encoding::Identity,
    }
}

/// RFC 9110's `qvalue` in thousandths: `0`, `0.5`, `1`, `1.000`; `None` if malformed.
fn qvalue(s: &[u8]) -> Option<u16> {
    match s {
        [b'0'] => Some(0),
        [b'1'] => Some(1000),
        [b'0', b'.', rest @ ..] if rest.len() <= 3 && rest.iter().all(u8::is_ascii_digit) => {
            let mut v = 0u16;
            for i in 0..3 {
                v = v * 10 + rest.get(i).map_or(0, |d| u16::from(d - b'0'));
            }
            Some(v)
        }
        [b'1', b'.', rest @ ..] if rest.len() <= 3 && rest.iter().all(|&d| d == b'0') => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(headers: &[&str]) -> Encoding {
        negotiate(headers.iter().map(|h| h.as_bytes()))
    }

    #[test]
    fn what_real_clients_send() {
        assert_eq!(n(&["gzip"]), Encoding::Gzip, "Go's net/http, pynsq");
        assert_eq!(n(&["gzip,deflate"]), Encoding::Gzip, "nsqjs");
        assert_eq!(n(&["identity"]), Encoding::Identity, "gnsq");
        assert_eq!(n(&[]), Encoding::Identity, "tokio-nsq: no header");
        assert_eq!(n(&["gzip, deflate, br, zstd"]), Encoding::Gzip, "browsers");
    }

    #[test]
    fn q_values_and_wildcards() {
        assert_eq!(n(&["gzip;q=0"]), Encoding::Identity);
        assert_eq!(n(&["gzip; q=0.000"]), Encoding::Identity);
        assert_eq!(n(&["gzip;q=0.001"]), Encoding::Gzip);
        assert_eq!(
            n(&["gzip;q=0.5, identity"]),
            Encoding::Identity,
            "identity ranked higher"
        );
        assert_eq!(n(&["gzip;q=0.5, identity;q=0.4"]), Encoding::Gzip);
        assert_eq!(n(&["gzip;q=0.5"]), Encoding::Gzip, "identity unranked");
        assert_eq!(n(&["*"]), Encoding::Gzip);
        assert_eq!(n(&["*;q=0"]), Encoding::Identity);
        assert_eq!(n(&["*, gzip;q=0"]), Encoding::Identity, "named beats *");
        assert_eq!(n(&["identity;q=0, gzip"]), Encoding::Gzip);
        assert_eq!(n(&["identity;q=0"]), Encoding::Identity, "never a 406");
        assert_eq!(n(&["deflate, br"]), Encoding::Identity);
        assert_eq!(n(&["GZIP;Q=1.0"]), Encoding::Gzip);
        assert_eq!(n(&["x-gzip"]), Encoding::Gzip);
        assert_eq!(n(&["br", "gzip"]), Encoding::Gzip, "two header lines");
        assert_eq!(n(&["gzip;q=2"]), Encoding::Identity, "malformed: plain");
        assert_eq!(
            n(&["gzip;q=0.5000"]),
            Encoding::Identity,
            "malformed: plain"
        );
        assert_eq!(n(&["gzip;q="]), Encoding::Identity, "malformed: plain");
        assert_eq!(n(&[" , ,gzip"]), Encoding::Gzip);
    }

    #[test]
    fn q_value_grammar() {
        for (s, v) in [
            ("0", 0),
            ("1", 1000),
            ("0.5", 500),
            ("0.25", 250),
            ("0.125", 125),
            ("1.000", 1000),
            ("0.", 0),
        ] {
            assert_eq!(qvalue(s.as_bytes()), Some(v), "{s}");
        }
        for s in ["", "2", "1.5", "0.1234", "-1", "0,5", ".5"] {
            assert_eq!(qvalue(s.as_bytes()), None, "{s}");
        }
    }

    proptest! {
        /// No header panics, and a header that does not mention gzip or `*`
        /// never gets a gzip answer.
        #[test]
        fn any_header_is_safe(value in proptest::collection::vec(any::<u8>(), 0..120)) {
            let e = negotiate(std::iter::once(&value[..]));
            let lower = value.to_ascii_lowercase();
            let mentions = lower.windows(4).any(|w| w == b"gzip") || value.contains(&b'*');
            prop_assert!(e == Encoding::Identity || mentions);
        }
    }
}
