//! Topic and channel name validation, shared by the TCP protocol and the
//! HTTP admin endpoints. Knows nothing else.
//!
//! The rule is NSQ's: 1 to 64 bytes matching `^[.a-zA-Z0-9_-]+(#ephemeral)?$`.
//! It is written out by hand instead of with a regex crate: it is one loop,
//! and it runs on every REGISTER.

/// The suffix that marks a topic or channel as ephemeral.
pub const EPHEMERAL_SUFFIX: &str = "#ephemeral";

/// Longest valid topic or channel name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Whether `name` is a valid topic or channel name (the rule is the same for both).
pub fn is_valid_name(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    let base = name
        .strip_suffix(EPHEMERAL_SUFFIX.as_bytes())
        .unwrap_or(name);
    !base.is_empty()
        && base
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether a (valid) name is ephemeral: removed when its last producer unregisters it.
pub fn is_ephemeral(name: &str) -> bool {
    name.ends_with(EPHEMERAL_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in [
            "t",
            "T9",
            "t.1_x-Y",
            "t.1_x-Y#ephemeral",
            "c-2.z_#ephemeral",
            &"x".repeat(64),
            &format!("{}#ephemeral", "x".repeat(54)),
        ] {
            assert!(is_valid_name(ok.as_bytes()), "{ok:?} should be valid");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "#ephemeral",
            "bad!",
            "bad:chan",
            "c%h",
            "a b",
            "chan#ephemeralx",
            "a#ephemeral#ephemeral",
            "t\n",
            "caf\u{e9}",
            &"x".repeat(65),
            &format!("{}#ephemeral", "x".repeat(55)),
        ] {
            assert!(!is_valid_name(bad.as_bytes()), "{bad:?} should be invalid");
        }
        assert!(!is_valid_name(b"\0"));
        assert!(!is_valid_name(b"\xff"));
    }

    #[test]
    fn ephemeral_suffix() {
        assert!(is_ephemeral("t#ephemeral"));
        assert!(!is_ephemeral("t"));
    }
}
