//! Decoding an IDENTIFY body the way Go's `encoding/json` decodes it into
//! the original's `PeerInfo`.
//!
//! Go's rules that matter here, all reproduced: the body must be a JSON
//! object or `null`; a known field with the wrong type (`"tcp_port":"4150"`,
//! `4150.0`) fails the whole decode; `null` leaves a field at its zero
//! value; unknown fields are ignored; field names match case-insensitively;
//! a repeated field takes its last value. `remote_address` is decoded (so
//! its type is checked) and then ignored: the server uses the real peer.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The fields an nsqd announces about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentifyBody {
    pub hostname: String,
    pub broadcast_address: String,
    pub tcp_port: i64,
    pub http_port: i64,
    pub version: String,
    pub topology_zone: String,
    pub topology_region: String,
}

/// Why an IDENTIFY body was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum IdentifyError {
    /// Not JSON, or a field of the wrong type.
    Decode,
    /// `broadcast_address`, `tcp_port`, `http_port` or `version` missing, empty or zero.
    MissingFields,
}

impl IdentifyBody {
    pub fn parse(body: &[u8]) -> Result<IdentifyBody, IdentifyError> {
        // Go's decoder replaces bytes that are not UTF-8 with U+FFFD (in a
        // string they are then kept that way; anywhere else they are a
        // syntax error either way), which is what a lossy conversion does.
        let text = String::from_utf8_lossy(body);
        let parsed: IdentifyBody =
            serde_json::from_str(&text).map_err(|_| IdentifyError::Decode)?;
        if parsed.broadcast_address.is_empty()
            || parsed.tcp_port == 0
            || parsed.http_port == 0
            || parsed.version.is_empty()
        {
            return Err(IdentifyError::MissingFields);
        }
        Ok(parsed)
    }
}

enum Field {
    RemoteAddress,
    Hostname,
    BroadcastAddress,
    TcpPort,
    HttpPort,
    Version,
    TopologyZone,
    TopologyRegion,
}

fn field(name: &str) -> Option<Field> {
    type MakeField = fn() -> Field;
    const FIELDS: [(&str, MakeField); 8] = [
        ("remote_address", || Field::RemoteAddress),
        ("hostname", || Field::Hostname),
        ("broadcast_address", || Field::BroadcastAddress),
        ("tcp_port", || Field::TcpPort),
        ("http_port", || Field::HttpPort),
        ("version", || Field::Version),
        ("topology_zone", || Field::TopologyZone),
        ("topology_region", || Field::TopologyRegion),
    ];
    FIELDS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, f)| f())
}

impl<'de> Deserialize<'de> for IdentifyBody {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BodyVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = IdentifyBody;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_unit<E: de::Error>(self) -> Result<IdentifyBody, E> {
        Ok(IdentifyBody::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IdentifyBody, A::Error> {
        let mut body = IdentifyBody::default();
        while let Some(key) = map.next_key::<String>()? {
            let target = match field(&key) {
                None => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                Some(Field::TcpPort) => {
                    if let Some(n) = map.next_value::<Option<i64>>()? {
                        body.tcp_port = n;
                    }
                    continue;
                }
                Some(Field::HttpPort) => {
                    if let Some(n) = map.next_value::<Option<i64>>()? {
                        body.http_port = n;
                    }
                    continue;
                }
                Some(Field::RemoteAddress) => {
                    map.next_value::<Option<String>>()?;
                    continue;
                }
                Some(Field::Hostname) => &mut body.hostname,
                Some(Field::BroadcastAddress) => &mut body.broadcast_address,
                Some(Field::Version) => &mut body.version,
                Some(Field::TopologyZone) => &mut body.topology_zone,
                Some(Field::TopologyRegion) => &mut body.topology_region,
            };
            if let Some(s) = map.next_value::<Option<String>>()? {
                *target = s;
            }
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{"broadcast_address":"b","hostname":"h","tcp_port":4150,"http_port":4151,"version":"1.3.0"}"#;

    #[test]
    fn full_body() {
        let b = IdentifyBody::parse(FULL.as_bytes()).unwrap();
        assert_eq!(b.broadcast_address, "b");
        assert_eq!(b.hostname, "h");
        assert_eq!((b.tcp_port, b.http_port), (4150, 4151));
        assert_eq!(b.version, "1.3.0");
        assert_eq!(b.topology_zone, "");
    }

    #[test]
    fn decode_errors() {
        for body in [
            "{not json",
            "",
            "[1,2,3]",
            "\"s\"",
            "5",
            r#"{"tcp_port":"4150"}"#,
            r#"{"tcp_port":4150.0}"#,
            r#"{"tcp_port":1e3}"#,
            r#"{"tcp_port":9223372036854775808}"#,
            r#"{"hostname":5}"#,
            r#"{"remote_address":5}"#,
            r#"{"version":"1"} x"#,
        ] {
            assert_eq!(
                IdentifyBody::parse(body.as_bytes()),
                Err(IdentifyError::Decode),
                "{body}"
            );
        }
    }

    #[test]
    fn missing_fields() {
        for body in [
            "{}",
            "null",
            r#"{"broadcast_address":"b","tcp_port":4150,"http_port":4151}"#,
            r#"{"broadcast_address":"","tcp_port":4150,"http_port":4151,"version":"1"}"#,
            r#"{"broadcast_address":"b","tcp_port":0,"http_port":4151,"version":"1"}"#,
            r#"{"broadcast_address":"b","tcp_port":null,"http_port":4151,"version":"1"}"#,
        ] {
            assert_eq!(
                IdentifyBody::parse(body.as_bytes()),
                Err(IdentifyError::MissingFields),
                "{body}"
            );
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced_as_go_does() {
        let b = IdentifyBody::parse(
            b"{\"broadcast_address\":\"b\xff\",\"tcp_port\":1,\"http_port\":2,\"version\":\"v\"}",
        )
        .unwrap();
        assert_eq!(b.broadcast_address, "b\u{fffd}");
        assert_eq!(
            IdentifyBody::parse(b"{\xff\"broadcast_address\":\"b\"}"),
            Err(IdentifyError::Decode)
        );
    }

    #[test]
    fn go_decoding_quirks() {
        let b = IdentifyBody::parse(
            br#"{"Broadcast_Address":"B","TCP_PORT":1,"tcp_port":2,"http_port":-3,"version":"v",
                "remote_address":"1.2.3.4:5","unknown":[1,{"a":null}],"hostname":null,"topology_zone":"z"}"#,
        )
        .unwrap();
        assert_eq!(b.broadcast_address, "B");
        assert_eq!(b.tcp_port, 2, "last value wins");
        assert_eq!(b.http_port, -3, "any non-zero int is accepted");
        assert_eq!(b.hostname, "");
        assert_eq!(b.topology_zone, "z");
    }
}
