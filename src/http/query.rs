//! Query-string parameters, parsed with the rules of Go's `url.ParseQuery`
//! (what the original uses), so the same request gets the same answer:
//!
//! - pairs are separated by `&`; a pair containing `;` is an error;
//! - `%XX` must be two hex digits, `+` is a space; anything malformed is an
//!   error for the whole query (the original then answers 400);
//! - a repeated parameter: the first value counts.
//!
//! Values are bytes (a `%FF` escape is not UTF-8); nothing is allocated
//! unless a value is actually escaped or there are more than two pairs
//! (every endpoint takes one or two; this runs on every `/lookup`).

use std::borrow::Cow;

use smallvec::SmallVec;

/// The query string could not be parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidQuery;

/// One decoded `key=value` pair.
type Pair<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// Parsed parameters of one request.
#[derive(Debug, Default)]
pub struct Params<'a> {
    pairs: SmallVec<[Pair<'a>; 2]>,
}

impl<'a> Params<'a> {
    /// One pass over the bytes: split at `&` and at the first `=` of each
    /// pair, and note whether a pair needs unescaping at all. Go fails the
    /// whole query for a pair holding a `;` (so: a `;` anywhere, since an
    /// empty pair holds nothing) and for a bad escape in any pair.
    pub fn parse(query: &'a str) -> Result<Params<'a>, InvalidQuery> {
        let bytes = query.as_bytes();
        let mut pairs = SmallVec::new();
        let mut start = 0; // of the current pair
        let mut equals = None; // its first '='
        let mut escaped = false; // it holds a '%' or a '+'
        for i in 0..=bytes.len() {
            match bytes.get(i) {
                None | Some(b'&') => {
                    if i > start {
                        // '&' and '=' are ASCII, so these are char boundaries.
                        let (key, value) = match equals {
                            Some(e) => (&query[start..e], &query[e + 1..i]),
                            None => (&query[start..i], ""),
                        };
                        pairs.push(if escaped {
                            (unescape(key)?, unescape(value)?)
                        } else {
                            (
                                Cow::Borrowed(key.as_bytes()),
                                Cow::Borrowed(value.as_bytes()),
                            )
                        });
                    }
                    start = i + 1;
                    equals = None;
                    escaped = false;
                }
                Some(b'=') if equals.is_none() => equals = Some(i),
                Some(b'%' | b'+') => escaped = true,
                Some(b';') => return Err(InvalidQuery),
                Some(_) => {}
            }
        }
        Ok(Params { pairs })
    }

    /// The first value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| &k[..] == name.as_bytes())
            .map(|(_, v)| &v[..])
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Go's `QueryUnescape`: `%XX` escapes, and `+` is a space.
pub fn unescape(s: &str) -> Result<Cow<'_, [u8]>, InvalidQuery> {
    unescape_with(s, true)
}

/// Go's `PathUnescape`: `%XX` escapes; `+` is itself.
pub fn unescape_path(s: &str) -> Result<Cow<'_, [u8]>, InvalidQuery> {
    unescape_with(s, false)
}

fn unescape_with(s: &str, plus_is_space: bool) -> Result<Cow<'_, [u8]>, InvalidQuery> {
    let bytes = s.as_bytes();
    if !bytes
        .iter()
        .any(|&b| b == b'%' || (plus_is_space && b == b'+'))
    {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex);
                let lo = bytes.get(i + 2).copied().and_then(hex);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(InvalidQuery),
                }
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(Cow::Owned(out))
}

/// Go's `url.ParseQuery` and `url.QueryUnescape`, written the way Go
/// writes them (split at `&`, cut at `=`, unescape each half) and apart
/// from the one-pass parser above: the oracle of this file's tests and of
/// the `http_query` fuzz target (built with `--cfg fuzzing`).
#[cfg(any(test, fuzzing))]
pub mod go_reference {
    /// `url.QueryUnescape`: `None` where Go returns an error.
    pub fn unescape(s: &str) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut bytes = s.bytes();
        while let Some(b) = bytes.next() {
            match b {
                b'%' => {
                    let hi = (bytes.next()? as char).to_digit(16)?;
                    let lo = (bytes.next()? as char).to_digit(16)?;
                    out.push(u8::try_from(hi * 16 + lo).ok()?);
                }
                b'+' => out.push(b' '),
                b => out.push(b),
            }
        }
        Some(out)
    }

    /// `url.ParseQuery`: the pairs in order, `None` where Go returns an error.
    pub fn parse_query(query: &str) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut pairs = Vec::new();
        let mut ok = true;
        for pair in query.split('&') {
            if pair.contains(';') {
                ok = false;
                continue;
            }
            if pair.is_empty() {
                continue;
            }
            let (k, v) = match pair.find('=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, ""),
            };
            match (unescape(k), unescape(v)) {
                (Some(k), Some(v)) => pairs.push((k, v)),
                _ => ok = false,
            }
        }
        ok.then_some(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(q: &str, name: &str) -> Option<Vec<u8>> {
        Params::parse(q).unwrap().get(name).map(|v| v.to_vec())
    }

    #[test]
    fn decodes_like_go() {
        assert_eq!(get("topic=my%2Etopic", "topic").unwrap(), b"my.topic");
        assert_eq!(get("topic=a+b", "topic").unwrap(), b"a b");
        assert_eq!(get("topic=%ff", "topic").unwrap(), b"\xff");
        assert_eq!(get("top%69c=x", "topic").unwrap(), b"x");
        assert_eq!(get("topic=", "topic").unwrap(), b"");
        assert_eq!(get("topic", "topic").unwrap(), b"");
        assert_eq!(get("other=1", "topic"), None);
        assert_eq!(get("", "topic"), None);
        assert_eq!(get("&&topic=x&", "topic").unwrap(), b"x");
    }

    proptest::proptest! {
        #[test]
        fn one_pass_parse_agrees_with_go_s_algorithm(query in "[a=&;%+0-9fFgé]{0,24}") {
            let ours = Params::parse(&query).ok().map(|p| {
                p.pairs.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect::<Vec<_>>()
            });
            proptest::prop_assert_eq!(ours, go_reference::parse_query(&query));
        }
    }

    #[test]
    fn paths_keep_plus() {
        assert_eq!(&unescape_path("/a+b%2Fc").unwrap()[..], b"/a+b/c");
        assert!(unescape_path("/%zz").is_err());
    }

    #[test]
    fn first_value_wins() {
        assert_eq!(get("topic=first&topic=second", "topic").unwrap(), b"first");
    }

    #[test]
    fn malformed_queries_are_errors() {
        for q in [
            "topic=%zz",
            "topic=a;b",
            "topic=x%",
            "topic=%4",
            "a=1&b=%g0",
            "%=1",
            ";",
            "topic=x&;",
            "a=%zz&topic=x",
        ] {
            assert_eq!(Params::parse(q).unwrap_err(), InvalidQuery, "{q}");
        }
    }
}
