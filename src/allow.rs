//! Source-address allow-lists (`--tcp-allow`): which peers may connect.
//!
//! nsqd cannot speak TLS or send credentials to a lookupd, so for the
//! registration port the source address is the control that fits: a
//! connection from elsewhere is closed at accept, before a byte is read.
//! Owns the parsing and the matching only; the accept loop applies it.

use std::net::IpAddr;

use ipnet::IpNet;

/// A set of networks; empty means nothing is allowed (never built empty by
/// the flags: no flag, no list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowList {
    nets: Vec<IpNet>,
}

impl AllowList {
    /// `CIDR[,CIDR...]`, IPv4 and IPv6; a bare address is one host
    /// (`/32`, `/128`). Spaces around entries are ignored.
    pub fn parse(s: &str) -> Result<AllowList, String> {
        let mut nets = Vec::new();
        for entry in s.split(',').map(str::trim) {
            if entry.is_empty() {
                return Err("empty entry (expected CIDR[,CIDR...])".into());
            }
            let net = match entry.parse::<IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => match entry.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => return Err(format!("{entry:?} is not a CIDR or an IP address")),
                },
            };
            nets.push(net);
        }
        Ok(AllowList { nets })
    }

    /// Whether `ip` is in one of the networks. An IPv4 peer reaching an
    /// IPv6 socket (`::ffff:a.b.c.d`) is matched as the IPv4 address.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

impl std::fmt::Display for AllowList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, n) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ]
    }

    proptest! {
        /// No flag value panics the parser.
        #[test]
        fn any_text_parses_without_panic(s in "\\PC{0,64}") {
            let _ = AllowList::parse(&s);
        }

        /// A network of any prefix length round-trips through its text and
        /// contains exactly the addresses whose first `len` bits match.
        #[test]
        fn networks_match_by_prefix(net in any_ip(), len in 0u8..=128, probe in any_ip()) {
            let len = if net.is_ipv4() { len % 33 } else { len };
            let text = format!("{net}/{len}");
            let list = AllowList::parse(&text).unwrap();
            prop_assert_eq!(AllowList::parse(&list.to_string()).unwrap(), list.clone());
            let bits = |ip: IpAddr| -> (u128, u8) {
                match ip.to_canonical() {
                    IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
                    IpAddr::V6(v6) => (u128::from(v6), 128),
                }
            };
            let (n, width) = bits(net);
            let (p, probe_width) = bits(probe);
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            let expected = width == probe_width && (n & mask) == (p & mask);
            prop_assert_eq!(list.allows(probe), expected, "{} vs {}", text, probe);
            prop_assert!(list.allows(net));
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn matches_v4_v6_and_mapped_addresses() {
        let l = AllowList::parse("10.0.0.0/8, 192.168.1.7,fd00::/8").unwrap();
        assert!(l.allows(ip("10.1.2.3")));
        assert!(l.allows(ip("192.168.1.7")));
        assert!(!l.allows(ip("192.168.1.8")));
        assert!(l.allows(ip("fd12::1")));
        assert!(!l.allows(ip("fe80::1")));
        assert!(l.allows(ip("::ffff:10.9.9.9")), "IPv4-mapped");
        assert!(!l.allows(ip("127.0.0.1")));
        assert_eq!(l.to_string(), "10.0.0.0/8,192.168.1.7/32,fd00::/8");
    }

    #[test]
    fn host_bits_are_dropped_and_bad_entries_refused() {
        assert_eq!(
            AllowList::parse("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        for bad in [
            "",
            "10.0.0.0/8,",
            "10.0.0.0/33",
            "example.com",
            "1.2.3",
            "::/129",
        ] {
            assert!(AllowList::parse(bad).is_err(), "{bad:?}");
        }
    }
}
