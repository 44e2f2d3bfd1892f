//! Producers: one identified `nsqd` connection each.
//!
//! A [`Producer`] is created at IDENTIFY and is immutable afterwards except
//! for its last-update time, an atomic that PING refreshes without touching
//! any registration. Every registration refers to a producer by its
//! [`ProducerId`] (8 bytes) instead of a copy of its peer info, so that a
//! key's producer set is a flat array that is cheap to copy on write.

use std::sync::atomic::{AtomicU64, Ordering};

use super::clock::Nanos;
use crate::json;

/// Identifies a producer for the life of the process; never reused.
pub type ProducerId = u64;

/// Hashes a [`ProducerId`] with one multiplication (Fibonacci hashing),
/// which spreads consecutive ids over the high bits that the map's shards
/// and probe tags use. The ids are the registry's own counter, never
/// client input, so the keyed, flooding-resistant default (SipHash) buys
/// nothing here, and it cost a render of a 250-producer `/lookup` answer
/// one lookup of it per producer.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The hasher of maps keyed by [`ProducerId`].
pub type IdHashing = std::hash::BuildHasherDefault<IdHasher>;

/// What an nsqd said about itself in IDENTIFY, plus the address it connected from.
///
/// Serialisable under the field names `/lookup` uses (the cluster module
/// stores it in etcd as JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PeerInfo {
    /// The connection's peer address (`ip:port`); also the producer's id in
    /// the original, and shown as `id` by `/debug`.
    pub remote_address: String,
    pub hostname: String,
    pub broadcast_address: String,
    pub tcp_port: i64,
    pub http_port: i64,
    pub version: String,
    pub topology_zone: String,
    pub topology_region: String,
}

impl PeerInfo {
    /// Appends the peer's fields in the original's order, without braces:
    /// `"remote_address":..,"hostname":..,...,"topology_region":..`.
    pub fn write_json_fields(&self, out: &mut String) {
        json::push_key(out, "remote_address");
        json::push_str(out, &self.remote_address);
        out.push(',');
        json::push_key(out, "hostname");
        json::push_str(out, &self.hostname);
        out.push(',');
        json::push_key(out, "broadcast_address");
        json::push_str(out, &self.broadcast_address);
        out.push(',');
        json::push_key(out, "tcp_port");
        json::push_int(out, self.tcp_port);
        out.push(',');
        json::push_key(out, "http_port");
        json::push_int(out, self.http_port);
        out.push(',');
        json::push_key(out, "version");
        json::push_str(out, &self.version);
        out.push(',');
        json::push_key(out, "topology_zone");
        json::push_str(out, &self.topology_zone);
        out.push(',');
        json::push_key(out, "topology_region");
        json::push_str(out, &self.topology_region);
    }

    /// `broadcast_address:http_port`, the form `/topic/tombstone?node=` names a producer by.
    pub fn node_address(&self) -> String {
        format!("{}:{}", self.broadcast_address, self.http_port)
    }
}

/// An identified connection.
#[derive(Debug)]
pub struct Producer {
    pub id: ProducerId,
    pub peer: PeerInfo,
    last_update: AtomicU64,
    /// The peer object of `/lookup`, rendered once at IDENTIFY.
    lookup_json: Box<str>,
}

impl Producer {
    pub fn new(id: ProducerId, peer: PeerInfo, now: Nanos) -> Self {
        let mut lookup_json = String::with_capacity(256);
        lookup_json.push('{');
        peer.write_json_fields(&mut lookup_json);
        lookup_json.push('}');
        Producer {
            id,
            peer,
            last_update: AtomicU64::new(now),
            lookup_json: lookup_json.into_boxed_str(),
        }
    }

    /// The last IDENTIFY or PING.
    pub fn last_update(&self) -> Nanos {
        self.last_update.load(Ordering::Acquire)
    }

    /// Records a PING; returns the previous last-update time.
    pub(super) fn touch(&self, now: Nanos) -> Nanos {
        self.last_update.swap(now, Ordering::AcqRel)
    }

    /// Active: heard from within `timeout` (the original's `FilterByActive`).
    pub fn is_active(&self, now: Nanos, timeout: Nanos) -> bool {
        now.saturating_sub(self.last_update()) <= timeout
    }

    /// The JSON object `/lookup` lists this producer as.
    pub fn lookup_json(&self) -> &str {
        &self.lookup_json
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn consecutive_ids_spread_over_the_high_bits() {
        let hashing = IdHashing::default();
        // The top 7 bits are hashbrown's probe tags; DashMap picks a shard
        // from the bits just below them.
        let tags: HashSet<u64> = (1..=1000u64).map(|id| hashing.hash_one(id) >> 57).collect();
        let shards: HashSet<u64> = (1..=64u64)
            .map(|id| (hashing.hash_one(id) << 7) >> 61)
            .collect();
        assert!(tags.len() >= 100, "only {} tags", tags.len());
        assert_eq!(shards.len(), 8, "64 ids must reach all 8 shards");
    }

    #[test]
    fn lookup_json_has_the_original_field_order() {
        let p = Producer::new(
            1,
            PeerInfo {
                remote_address: "127.0.0.1:5000".into(),
                hostname: "h<1>".into(),
                broadcast_address: "b".into(),
                tcp_port: 4150,
                http_port: 4151,
                version: "1.3.0".into(),
                topology_zone: "z".into(),
                topology_region: String::new(),
            },
            1,
        );
        assert_eq!(
            p.lookup_json(),
            r#"{"remote_address":"127.0.0.1:5000","hostname":"h\u003c1\u003e","broadcast_address":"b","tcp_port":4150,"http_port":4151,"version":"1.3.0","topology_zone":"z","topology_region":""}"#
        );
        assert_eq!(p.peer.node_address(), "b:4151");
    }
}
