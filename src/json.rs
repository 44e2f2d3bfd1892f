//! A minimal JSON writer that escapes strings exactly as Go's
//! `encoding/json` does, so that every body this server writes is
//! byte-for-byte what the original would have written for the same data.
//!
//! Why not `serde_json` for output: it does not escape `<`, `>`, `&`,
//! U+2028 and U+2029 (Go does), and the hot answers (`/lookup`) are built
//! from pre-rendered fragments that are concatenated, not serialised.
//! `serde_json` is still used to *parse* (IDENTIFY bodies).

use std::fmt::Write as _;

/// Bytes that may start something to escape: control characters, `"`,
/// `\`, `<`, `>`, `&`, and 0xE2, the first byte of U+2028 and U+2029.
const SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[b'<' as usize] = true;
    t[b'>' as usize] = true;
    t[b'&' as usize] = true;
    t[0xE2] = true;
    t
};

/// Append `s` to `out` as a JSON string literal, quotes included.
///
/// Scans bytes, not chars, and copies the runs between escapes whole: the
/// names in `/nodes` (five million at `large`) almost never need one, and
/// a char-by-char loop spent most of that answer's rendering time.
pub fn push_str(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push('"');
    let mut start = 0;
    let mut i = 0;
    while let Some(off) = bytes[i..].iter().position(|&b| SPECIAL[b as usize]) {
        let at = i + off;
        i = at + 1;
        let escape = match bytes[at] {
            0xE2 => match (bytes.get(at + 1), bytes.get(at + 2)) {
                (Some(0x80), Some(0xA8)) => "\\u2028",
                (Some(0x80), Some(0xA9)) => "\\u2029",
                _ => continue, // another character starting with 0xE2
            },
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0C => "\\f",
            other => {
                out.push_str(&s[start..at]);
                let _ = write!(out, "\\u{:04x}", other);
                start = at + 1;
                continue;
            }
        };
        out.push_str(&s[start..at]);
        out.push_str(escape);
        // U+2028/U+2029 are three bytes; every other escape one.
        start = if bytes[at] == 0xE2 { at + 3 } else { at + 1 };
        i = start;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Append `"key":` to `out`. Keys are compile-time constants that need no escaping.
pub fn push_key(out: &mut String, key: &str) {
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
}

/// Append an integer.
pub fn push_int(out: &mut String, n: i64) {
    let _ = write!(out, "{n}");
}

/// Append a JSON array of strings.
pub fn push_str_array<'a>(out: &mut String, items: impl IntoIterator<Item = &'a str>) {
    out.push('[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, item);
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(s: &str) -> String {
        let mut out = String::new();
        push_str(&mut out, s);
        out
    }

    #[test]
    fn plain_strings_are_copied() {
        assert_eq!(quoted("node-a.example"), "\"node-a.example\"");
        assert_eq!(quoted(""), "\"\"");
        assert_eq!(quoted("caf\u{e9}"), "\"caf\u{e9}\"");
    }

    #[test]
    fn escapes_like_go() {
        assert_eq!(quoted("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quoted("\n\r\t"), r#""\n\r\t""#);
        assert_eq!(quoted("\u{1}\u{1f}"), r#""\u0001\u001f""#);
        assert_eq!(quoted("<a&b>"), r#""\u003ca\u0026b\u003e""#);
        assert_eq!(quoted("\u{2028}\u{2029}"), r#""\u2028\u2029""#);
    }

    #[test]
    fn output_parses_back() {
        let s = "x<\u{0}>\"\\\u{2028}é\u{10000}";
        let parsed: String = serde_json::from_str(&quoted(s)).unwrap();
        assert_eq!(parsed, s);
    }

    /// The char-by-char writer this one replaced, as the reference.
    fn reference(s: &str) -> String {
        let mut out = String::from('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20
                    || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') =>
                {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    proptest::proptest! {
        #[test]
        fn escapes_as_the_char_by_char_writer(s in "(\\PC|[\\x00-\\x1f\"\\\\<>&\u{2028}\u{2029}\u{2027}\u{20ac}\u{e000}])*") {
            proptest::prop_assert_eq!(quoted(&s), reference(&s));
        }
    }

    #[test]
    fn arrays() {
        let mut out = String::new();
        push_str_array(&mut out, ["a", "b#c"]);
        assert_eq!(out, r#"["a","b#c"]"#);
        let mut out = String::new();
        push_str_array(&mut out, std::iter::empty());
        assert_eq!(out, "[]");
    }
}
