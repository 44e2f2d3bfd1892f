//! Go's `time.ParseDuration` syntax: `300s`, `5m`, `1h30m`, `250ms`, `1.5s`,
//! `-0` and `0` (alone, without a unit). Units: `ns`, `us`/`µs`/`μs`, `ms`,
//! `s`, `m`, `h`. Negative durations parse in Go but mean nothing for a
//! timeout, so they are refused here.

use std::time::Duration;

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Parses a Go duration.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {s:?}");
    let mut rest = s;
    let negative = if let Some(r) = rest.strip_prefix('-') {
        rest = r;
        true
    } else {
        rest = rest.strip_prefix('+').unwrap_or(rest);
        false
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("missing unit in duration {s:?}"));
        }
        let scale =
            unit_nanos(unit).ok_or_else(|| format!("unknown unit {unit:?} in duration {s:?}"))?;
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        let mut value = int.checked_mul(scale).ok_or_else(invalid)?;
        if !frac_part.is_empty() {
            // Go keeps the precision it can; 30 digits is already beyond ns.
            let digits = &frac_part[..frac_part.len().min(30)];
            let frac: u128 = digits.parse().map_err(|_| invalid())?;
            value += frac * scale / 10u128.pow(digits.len() as u32);
        }
        total = total.checked_add(value).ok_or_else(invalid)?;
        rest = after;
    }
    if total > i64::MAX as u128 {
        return Err(invalid());
    }
    if negative && total > 0 {
        return Err(format!("negative duration {s:?}"));
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Formats a duration as Go prints it (`5m0s`, `1h30m0s`, `250ms`, `1.5s`).
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, scale) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("\u{b5}s", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", trim_fraction(nanos, scale));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = nanos / 60_000_000_000 % 60;
    let seconds = nanos % 60_000_000_000;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&trim_fraction(seconds, 1_000_000_000));
    out.push('s');
    out
}

fn trim_fraction(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let frac = value % scale;
    if frac == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let frac = format!("{frac:0width$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn go_syntax() {
        assert_eq!(parse_go_duration("300s").unwrap(), ms(300_000));
        assert_eq!(parse_go_duration("5m").unwrap(), ms(300_000));
        assert_eq!(parse_go_duration("1h30m").unwrap(), ms(5_400_000));
        assert_eq!(parse_go_duration("250ms").unwrap(), ms(250));
        assert_eq!(parse_go_duration("1.5s").unwrap(), ms(1500));
        assert_eq!(parse_go_duration(".5s").unwrap(), ms(500));
        assert_eq!(parse_go_duration("1.s").unwrap(), ms(1000));
        assert_eq!(parse_go_duration("1200ms").unwrap(), ms(1200));
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_go_duration("+2s").unwrap(), ms(2000));
        assert_eq!(
            parse_go_duration("1h1m1s1ms1us1ns").unwrap(),
            Duration::new(3661, 1_001_001)
        );
        assert_eq!(
            parse_go_duration("3\u{b5}s").unwrap(),
            Duration::from_micros(3)
        );
        assert_eq!(parse_go_duration("-0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "s",
            "300",
            "1x",
            "1.5",
            ".s",
            "1 s",
            "abc",
            "-1s",
            "9999999999h",
            "1s2",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(ms(300_000)), "5m0s");
        assert_eq!(format_go_duration(ms(45_000)), "45s");
        assert_eq!(format_go_duration(ms(5_400_000)), "1h30m0s");
        assert_eq!(format_go_duration(ms(1500)), "1.5s");
        assert_eq!(format_go_duration(ms(250)), "250ms");
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
    }
}
