//! The `Authorization: Bearer <secret>` header (RFC 6750), as go-nsq sends
//! it with a consumer's `auth_secret`, and the comparison of a presented
//! secret with the admin token.
//!
//! Owns parsing only; never logs or formats a secret.

/// The longest secret accepted; a longer header is treated as malformed
/// (the request head is bounded anyway: `--http-max-header-size`).
pub const MAX_SECRET_LEN: usize = 4096;

/// What a request's `Authorization` header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    /// No `Authorization` header.
    Nothing,
    /// `Bearer <secret>`.
    Secret(&'a str),
    /// Something else: another scheme, no secret, bytes that are not
    /// visible ASCII, too long, or the header given twice.
    Malformed,
}

impl<'a> Presented<'a> {
    /// Reads the values of every `Authorization` header of a request.
    /// The scheme is case-insensitive (RFC 7235); the secret is what
    /// follows it and its spaces, up to trailing spaces; it may hold any
    /// visible ASCII character (go-nsq sends `auth_secret` as it is, not
    /// only RFC 6750's token characters).
    pub fn from_headers<I>(mut values: I) -> Presented<'a>
    where
        I: Iterator<Item = &'a [u8]>,
    {
        let Some(value) = values.next() else {
            return Presented::Nothing;
        };
        if values.next().is_some() {
            return Presented::Malformed;
        }
        Self::parse(value)
    }

    /// One header value.
    pub fn parse(value: &'a [u8]) -> Presented<'a> {
        const SCHEME: &[u8] = b"bearer";
        let value = trim(value);
        if value.len() <= SCHEME.len()
            || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME)
            || !matches!(value[SCHEME.len()], b' ' | b'\t')
        {
            return Presented::Malformed;
        }
        let secret = trim(&value[SCHEME.len()..]);
        if secret.is_empty()
            || secret.len() > MAX_SECRET_LEN
            || !secret.iter().all(|b| (0x21..=0x7e).contains(b))
        {
            return Presented::Malformed;
        }
        // Visible ASCII is UTF-8.
        std::str::from_utf8(secret).map_or(Presented::Malformed, Presented::Secret)
    }
}

/// A header value without the optional whitespace (spaces and tabs,
/// RFC 9110's OWS) around it; `http::encoding` uses it too.
pub(crate) fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Compares a presented secret with the admin token in time that depends
/// on their lengths only, not on where they first differ, so the token
/// cannot be guessed a byte at a time from response times.
pub fn same_secret(presented: &str, token: &str) -> bool {
    let (a, b) = (presented.as_bytes(), token.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bearer_secrets() {
        let p = |s: &'static str| Presented::parse(s.as_bytes());
        assert_eq!(p("Bearer abc"), Presented::Secret("abc"));
        assert_eq!(
            p("bearer  a.b-c~d+e/f=="),
            Presented::Secret("a.b-c~d+e/f==")
        );
        assert_eq!(p(" BEARER\tx!y#z "), Presented::Secret("x!y#z"));
        for bad in [
            "",
            "Bearer",
            "Bearer ",
            "Bearerabc",
            "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
            "Bearer a b",
            "Bearer a\u{e9}",
            "Token abc",
        ] {
            assert_eq!(p(bad), Presented::Malformed, "{bad:?}");
        }
        let long = format!("Bearer {}", "x".repeat(MAX_SECRET_LEN + 1));
        assert_eq!(Presented::parse(long.as_bytes()), Presented::Malformed);
    }

    #[test]
    fn header_count() {
        let none: [&[u8]; 0] = [];
        assert_eq!(
            Presented::from_headers(none.into_iter()),
            Presented::Nothing
        );
        let one: [&[u8]; 1] = [b"Bearer s"];
        assert_eq!(
            Presented::from_headers(one.into_iter()),
            Presented::Secret("s")
        );
        let two: [&[u8]; 2] = [b"Bearer s", b"Bearer t"];
        assert_eq!(
            Presented::from_headers(two.into_iter()),
            Presented::Malformed
        );
    }

    #[test]
    fn secret_comparison() {
        assert!(same_secret("token-1", "token-1"));
        assert!(!same_secret("token-2", "token-1"));
        assert!(!same_secret("token", "token-1"));
        assert!(!same_secret("", "x"));
    }

    proptest! {
        /// No header value panics the parser, and whatever it accepts as a
        /// secret is visible ASCII within the bound.
        #[test]
        fn any_bytes_parse_without_panic(value in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Presented::Secret(s) = Presented::parse(&value) {
                prop_assert!(!s.is_empty() && s.len() <= MAX_SECRET_LEN);
                prop_assert!(s.bytes().all(|b| (0x21..=0x7e).contains(&b)));
            }
        }

        /// Every secret of visible ASCII comes back as it was sent, with
        /// any case of the scheme and any spacing.
        #[test]
        fn secrets_round_trip(secret in "[!-~]{1,64}", scheme in "(?i:bearer)", spaces in "[ \t]{1,3}") {
            let header = format!("{scheme}{spaces}{secret}{spaces}");
            prop_assert_eq!(Presented::parse(header.as_bytes()), Presented::Secret(&secret));
        }
    }
}
