//! A minimal JSON writer that escapes strings exactly as Go's
//! `encoding/json` does, so that every body this server writes is
//! byte-for-byte what the original would have written for the same data.
//!
//! Why not `serde_json` for output: it does not escape `<`, `>`, `&`,
//! U+2028 and U+2029 (Go does), and the hot answers (`/lookup`) are built
//! from pre-rendered fragments that are concatenated, not serialised.
//! `serde_json` is still used to *parse* (IDENTIFY bodies).

use std::fmt::Write as _;

/// Append `s` to `out` as a JSON string literal, quotes included.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            _ => None,
        };
        let needs_hex = escape.is_none()
            && ((c as u32) < 0x20 || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}'));
        if escape.is_none() && !needs_hex {
            continue;
        }
        out.push_str(&s[start..i]);
        match escape {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
        }
        start = i + c.len_utf8();
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
