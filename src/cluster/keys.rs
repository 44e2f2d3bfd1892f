//! The key layout in etcd, and the JSON values stored under it.
//!
//! Everything lives under the cluster's prefix `P` (`--etcd-prefix`), so
//! several clusters can share one etcd. `R` is a replica's id (its lease's
//! id in hex: a replica that must start over with a new lease is a new
//! replica as far as the keys go) and `N` the producer's id on that replica.
//!
//! | key | value | lease |
//! |-----|-------|-------|
//! | `P/n/R/N` | [`NodeValue`]: the producer's peer fields | the replica's |
//! | `P/r/TOPIC/R/N` | [`RegValue`]: its channels in that topic | the replica's |
//! | `P/k/TOPIC`, `P/k/TOPIC/CHANNEL` | [`OriginValue`]: created by `/topic/create`, `/channel/create` | none |
//! | `P/t/TOPIC/NODE` | [`OriginValue`]: a `/topic/tombstone` | the tombstone lifetime |
//! | `P/e/R/SEQ` | [`EventValue`]: a `/topic/delete` or `/channel/delete` | a minute |
//! | `P/health` | never written: read by the endpoint probe | |
//!
//! One key per (producer, topic) with the channels inside the value keeps
//! the key count at producers x topics; keys by replica let a replica's
//! lease take all of its registrations with it when it dies. Topic and
//! channel names never contain `/` (`names.rs`); a tombstone's node
//! (`host:port`, client input) is escaped.

use serde::{Deserialize, Serialize};

use crate::registry::{PeerInfo, ProducerId};

/// A producer as the cluster knows it: which replica holds its
/// connection, and its id there.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    pub replica: String,
    pub producer: ProducerId,
}

/// The value of `P/n/R/N`: the peer fields, as `/lookup` names them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeValue {
    #[serde(flatten)]
    pub peer: PeerInfo,
    /// When it was published (Unix microseconds), for the watch-lag metric.
    #[serde(default)]
    pub at: i64,
}

impl NodeValue {
    pub fn new(peer: &PeerInfo, at: i64) -> Self {
        NodeValue {
            peer: peer.clone(),
            at,
        }
    }
}

/// The value of `P/r/TOPIC/R/N`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegValue {
    pub channels: Vec<String>,
    #[serde(default)]
    pub at: i64,
}

/// The value of a tombstone or admin key: who set it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginValue {
    pub origin: String,
    #[serde(default)]
    pub at: i64,
}

/// The value of an event key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventValue {
    pub origin: String,
    pub topic: String,
    /// Set for a channel delete; absent for a topic delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default)]
    pub at: i64,
}

/// Who an nsqd is, whichever replica it is connected to (possibly
/// several): `broadcast_address:tcp_port:http_port`, what consumers
/// connect to.
pub fn identity(peer: &PeerInfo) -> String {
    format!(
        "{}:{}:{}",
        peer.broadcast_address, peer.tcp_port, peer.http_port
    )
}

/// A replica id from its lease id.
pub fn replica_id(lease: i64) -> String {
    format!("{lease:016x}")
}

fn escape(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

fn unescape(s: &str) -> String {
    s.replace("%2F", "/").replace("%25", "%")
}

/// Builds and parses the keys of one cluster prefix.
#[derive(Clone, Debug)]
pub struct Layout {
    prefix: String,
}

/// A key of the layout, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Node(RecordId),
    Reg { topic: String, record: RecordId },
    AdminTopic(String),
    AdminChannel { topic: String, channel: String },
    Tombstone { topic: String, node: String },
    Event,
}

impl Layout {
    /// `prefix` without a trailing `/`.
    pub fn new(prefix: &str) -> Self {
        Layout {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    /// Every key of the cluster starts with this.
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    pub fn node(&self, replica: &str, producer: ProducerId) -> String {
        format!("{}/n/{replica}/{producer}", self.prefix)
    }

    pub fn reg(&self, topic: &str, replica: &str, producer: ProducerId) -> String {
        format!("{}/r/{topic}/{replica}/{producer}", self.prefix)
    }

    /// Every registration key of `topic` (a prefix).
    pub fn regs_of_topic(&self, topic: &str) -> String {
        format!("{}/r/{topic}/", self.prefix)
    }

    pub fn admin_topic(&self, topic: &str) -> String {
        format!("{}/k/{topic}", self.prefix)
    }

    pub fn admin_channel(&self, topic: &str, channel: &str) -> String {
        format!("{}/k/{topic}/{channel}", self.prefix)
    }

    /// Every admin channel key of `topic` (a prefix).
    pub fn admin_channels_of_topic(&self, topic: &str) -> String {
        format!("{}/k/{topic}/", self.prefix)
    }

    pub fn tombstone(&self, topic: &str, node: &str) -> String {
        format!("{}/t/{topic}/{}", self.prefix, escape(node))
    }

    pub fn event(&self, replica: &str, seq: u64) -> String {
        format!("{}/e/{replica}/{seq:016}", self.prefix)
    }

    /// The key the endpoint probe reads (`endpoints`): never written, so
    /// the answer is empty and cheap, and reading it needs no permission
    /// beyond the prefix's.
    pub fn health(&self) -> String {
        format!("{}/health", self.prefix)
    }

    /// Parses a key of this layout; `None` for anything else (a key some
    /// other writer put under the prefix is ignored, never a crash).
    pub fn parse(&self, key: &[u8]) -> Option<Key> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let (kind, rest) = rest.split_once('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let record = |replica: &str, producer: &str| {
            Some(RecordId {
                replica: replica.to_owned(),
                producer: producer.parse().ok()?,
            })
        };
        match (kind, parts.as_slice()) {
            ("n", [replica, producer]) => Some(Key::Node(record(replica, producer)?)),
            ("r", [topic, replica, producer]) => Some(Key::Reg {
                topic: (*topic).to_owned(),
                record: record(replica, producer)?,
            }),
            ("k", [topic]) => Some(Key::AdminTopic((*topic).to_owned())),
            ("k", [topic, channel]) => Some(Key::AdminChannel {
                topic: (*topic).to_owned(),
                channel: (*channel).to_owned(),
            }),
            ("t", [topic, node]) => Some(Key::Tombstone {
                topic: (*topic).to_owned(),
                node: unescape(node),
            }),
            ("e", [_, _]) => Some(Key::Event),
            _ => None,
        }
        .filter(|k| match k {
            Key::Reg { topic, .. } | Key::AdminTopic(topic) | Key::Tombstone { topic, .. } => {
                crate::names::is_valid_name(topic.as_bytes())
            }
            Key::AdminChannel { topic, channel } => {
                crate::names::is_valid_name(topic.as_bytes())
                    && crate::names::is_valid_name(channel.as_bytes())
            }
            _ => true,
        })
    }
}

/// Now, in Unix microseconds.
pub fn unix_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses_back() {
        let l = Layout::new("/nsqlookupd/");
        let rec = RecordId {
            replica: replica_id(0x1234),
            producer: 7,
        };
        assert_eq!(l.node(&rec.replica, 7), "/nsqlookupd/n/0000000000001234/7");
        assert_eq!(
            l.parse(l.node(&rec.replica, 7).as_bytes()),
            Some(Key::Node(rec.clone()))
        );
        assert_eq!(
            l.parse(l.reg("t#ephemeral", &rec.replica, 7).as_bytes()),
            Some(Key::Reg {
                topic: "t#ephemeral".into(),
                record: rec.clone()
            })
        );
        assert_eq!(
            l.parse(l.admin_topic("t").as_bytes()),
            Some(Key::AdminTopic("t".into()))
        );
        assert_eq!(
            l.parse(l.admin_channel("t", "c").as_bytes()),
            Some(Key::AdminChannel {
                topic: "t".into(),
                channel: "c".into()
            })
        );
        let node = "a/b%c:4151";
        assert_eq!(
            l.parse(l.tombstone("t", node).as_bytes()),
            Some(Key::Tombstone {
                topic: "t".into(),
                node: node.into()
            })
        );
        assert_eq!(
            l.parse(l.event(&rec.replica, 3).as_bytes()),
            Some(Key::Event)
        );
        assert!(
            l.admin_channel("t", "c")
                .starts_with(&l.admin_channels_of_topic("t"))
        );
        assert!(l.reg("t", "r", 1).starts_with(&l.regs_of_topic("t")));
        assert!(!l.reg("tt", "r", 1).starts_with(&l.regs_of_topic("t")));
    }

    #[test]
    fn foreign_and_malformed_keys_are_ignored() {
        let l = Layout::new("/p");
        for key in [
            "/q/n/r/1",
            "/p/n/r/x",
            "/p/n/r",
            "/p/r/bad topic/r/1",
            "/p/x/y",
            "/p",
            "/pn/r/1",
        ] {
            assert_eq!(l.parse(key.as_bytes()), None, "{key}");
        }
        assert_eq!(l.parse(&[0xff, 0xfe]), None);
    }
}
