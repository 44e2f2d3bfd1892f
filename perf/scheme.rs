//! The sharing scheme: which simulated nsqd carries which topic.
//!
//! The tool must know, without asking the server, exactly which producers a
//! `/lookup` answer has to contain, so the assignment is a pure function of
//! the workload shape:
//!
//! * the N nodes' topic slots are laid end to end on a ring of the U topics:
//!   slot `s = i*T + k` (node `i`, its `k`-th topic, `k < T`) is topic
//!   `s mod U`;
//! * so node `i` carries topics `(i*T + k) mod U` for `k < T` (all distinct
//!   because `T <= U`), and every topic carries the same channels
//!   `c0 .. c{C-1}`;
//! * topic `t` is carried by the nodes `(t + m*U) / T` for every `m >= 0`
//!   with `t + m*U < N*T`: each topic has `floor(N*T/U)` or `ceil(N*T/U)`
//!   producers, and when `N*T < U` only topics `0 .. N*T` exist.
//!
//! Consecutive slots make the answer computable in O(producers) per topic in
//! both directions, with no table, which matters at the large preset
//! (5 million topic slots).

use serde::Serialize;

/// The version string every simulated nsqd announces in IDENTIFY.
pub const NSQD_VERSION: &str = "1.3.0";

/// The shape of the simulated fleet and the names it uses.
#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    /// N: simulated nsqd nodes (one TCP connection each).
    pub nodes: usize,
    /// T: topics registered by each node.
    pub topics_per_node: usize,
    /// U: size of the topic universe the nodes' topics are taken from.
    pub topic_universe: usize,
    /// C: channels registered under each topic.
    pub channels: usize,
    /// Prefix of every topic name (`PREFIX.t00042`).
    pub topic_prefix: String,
}

/// What one simulated nsqd says about itself in IDENTIFY.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeIdentity {
    pub broadcast_address: String,
    pub hostname: String,
    pub tcp_port: u16,
    pub http_port: u16,
    pub version: &'static str,
}

impl Workload {
    /// Rejects shapes the scheme cannot express or the server must refuse
    /// (names longer than 64 characters, invalid characters).
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes == 0 || self.topics_per_node == 0 || self.topic_universe == 0 {
            return Err("nodes, topics per node and topic universe must be at least 1".into());
        }
        if self.topics_per_node > self.topic_universe {
            return Err(format!(
                "topics per node ({}) cannot exceed the topic universe ({})",
                self.topics_per_node, self.topic_universe
            ));
        }
        if self.nodes > 99_999 {
            return Err("at most 99,999 nodes".into());
        }
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        };
        let longest = self.topic_name(self.topic_universe - 1);
        if !valid(&longest) {
            return Err(format!("topic name {longest:?} is not a valid NSQ name"));
        }
        Ok(())
    }

    /// Digits used for topic numbers: at least 5, so names sort naturally.
    fn topic_digits(&self) -> usize {
        (self.topic_universe.saturating_sub(1))
            .to_string()
            .len()
            .max(5)
    }

    /// The name of topic number `t`.
    pub fn topic_name(&self, t: usize) -> String {
        format!(
            "{}.t{:0width$}",
            self.topic_prefix,
            t,
            width = self.topic_digits()
        )
    }

    /// Parses a topic name of this workload back to its number.
    pub fn topic_index(&self, name: &str) -> Option<usize> {
        let digits = name.strip_prefix(&self.topic_prefix)?.strip_prefix(".t")?;
        if digits.len() != self.topic_digits() {
            return None;
        }
        let t: usize = digits.parse().ok()?;
        (t < self.topic_universe).then_some(t)
    }

    /// The name of channel number `c` (the same under every topic).
    pub fn channel_name(c: usize) -> String {
        format!("c{c}")
    }

    /// The channel names every registered topic must list.
    pub fn channel_names(&self) -> Vec<String> {
        (0..self.channels).map(Self::channel_name).collect()
    }

    /// Total topic slots, N*T.
    pub fn slots(&self) -> usize {
        self.nodes * self.topics_per_node
    }

    /// Topic number of node `node`'s `k`-th topic.
    pub fn topic_of(&self, node: usize, k: usize) -> usize {
        (node * self.topics_per_node + k) % self.topic_universe
    }

    /// Which of node `node`'s topic slots (`k < T`) is topic `topic`, if
    /// the node carries it.
    pub fn slot_of(&self, node: usize, topic: usize) -> Option<usize> {
        let u = self.topic_universe;
        let first = (node * self.topics_per_node) % u;
        let k = (topic % u + u - first) % u;
        (k < self.topics_per_node && topic < u).then_some(k)
    }

    /// The topics node `node` registers, in registration order.
    pub fn topics_of(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.topics_per_node).map(move |k| self.topic_of(node, k))
    }

    /// The nodes that register topic `topic` (ascending, no repeats).
    pub fn producers_of(&self, topic: usize) -> impl Iterator<Item = usize> + '_ {
        let slots = self.slots();
        (0..)
            .map(move |m| topic + m * self.topic_universe)
            .take_while(move |&s| s < slots)
            .map(move |s| s / self.topics_per_node)
    }

    /// Number of topics that have at least one producer: they are exactly
    /// topics `0 .. covered_topics()`.
    pub fn covered_topics(&self) -> usize {
        self.slots().min(self.topic_universe)
    }

    /// REGISTER commands one node sends: one per topic plus one per channel.
    pub fn registrations_per_node(&self) -> usize {
        self.topics_per_node * (1 + self.channels)
    }

    /// Total REGISTER commands for the whole fleet.
    pub fn total_registrations(&self) -> u64 {
        (self.nodes * self.registrations_per_node()) as u64
    }

    /// The identity of node `node`. Ports are distinct per node as well,
    /// though the address alone already tells nodes apart.
    pub fn identity(node: usize) -> NodeIdentity {
        let tcp_port = 10_000 + 2 * (node % 25_000) as u16;
        NodeIdentity {
            broadcast_address: format!("node-{node:05}.bench"),
            hostname: format!("node-{node:05}"),
            tcp_port,
            http_port: tcp_port + 1,
            version: NSQD_VERSION,
        }
    }

    /// Node number from a broadcast address, if it is one of ours.
    pub fn node_of_address(addr: &str) -> Option<usize> {
        let digits = addr.strip_prefix("node-")?.strip_suffix(".bench")?;
        if digits.len() != 5 {
            return None;
        }
        digits.parse().ok()
    }

    /// The IDENTIFY JSON body of node `node`.
    pub fn identify_body(node: usize) -> Vec<u8> {
        let id = Self::identity(node);
        serde_json::to_vec(&serde_json::json!({
            "broadcast_address": id.broadcast_address,
            "hostname": id.hostname,
            "tcp_port": id.tcp_port,
            "http_port": id.http_port,
            "version": id.version,
        }))
        .unwrap_or_default()
    }

    /// The size in bytes of the `/lookup` answer a conforming server gives
    /// for topic `topic` (using a typical `127.0.0.1:NNNNN` remote address).
    /// Used as the ceiling server's default body size.
    pub fn lookup_answer_size(&self, topic: usize) -> usize {
        let producers: Vec<serde_json::Value> = self
            .producers_of(topic)
            .map(|n| {
                let id = Self::identity(n);
                serde_json::json!({
                    "remote_address": "127.0.0.1:54321",
                    "hostname": id.hostname,
                    "broadcast_address": id.broadcast_address,
                    "tcp_port": id.tcp_port,
                    "http_port": id.http_port,
                    "version": id.version,
                    "topology_zone": "",
                    "topology_region": "",
                })
            })
            .collect();
        let doc = serde_json::json!({"channels": self.channel_names(), "producers": producers});
        serde_json::to_vec(&doc).map(|v| v.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn w(nodes: usize, t: usize, u: usize) -> Workload {
        Workload {
            nodes,
            topics_per_node: t,
            topic_universe: u,
            channels: 2,
            topic_prefix: "bench".into(),
        }
    }

    /// producers_of must be the exact inverse of topics_of.
    fn brute_force_matches(wl: &Workload) {
        let mut by_topic: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); wl.topic_universe];
        for n in 0..wl.nodes {
            let topics: Vec<usize> = wl.topics_of(n).collect();
            let distinct: BTreeSet<usize> = topics.iter().copied().collect();
            assert_eq!(distinct.len(), topics.len(), "node {n} has repeated topics");
            for (k, &t) in topics.iter().enumerate() {
                assert_eq!(wl.slot_of(n, t), Some(k), "node {n} topic {t}");
            }
            for t in 0..wl.topic_universe {
                assert_eq!(wl.slot_of(n, t).is_some(), distinct.contains(&t));
            }
            for t in topics {
                by_topic[t].insert(n);
            }
        }
        for (t, expected) in by_topic.iter().enumerate() {
            let got: Vec<usize> = wl.producers_of(t).collect();
            let got_set: BTreeSet<usize> = got.iter().copied().collect();
            assert_eq!(got.len(), got_set.len(), "topic {t} lists a node twice");
            assert_eq!(&got_set, expected, "topic {t}");
            assert_eq!(
                !expected.is_empty(),
                t < wl.covered_topics(),
                "topic {t} coverage"
            );
        }
    }

    #[test]
    fn producers_are_the_inverse_of_topics() {
        for (n, t, u) in [
            (10, 10, 20),
            (7, 3, 10),
            (3, 5, 100),
            (13, 7, 7),
            (5, 4, 6),
            (1, 1, 1),
        ] {
            brute_force_matches(&w(n, t, u));
        }
    }

    #[test]
    fn producers_are_spread_evenly() {
        let wl = w(100, 1_000, 10_000);
        for t in 0..wl.topic_universe {
            assert_eq!(wl.producers_of(t).count(), 10);
        }
        let wl = w(7, 3, 10); // 21 slots over 10 topics: 2 or 3 each
        let counts: Vec<usize> = (0..10).map(|t| wl.producers_of(t).count()).collect();
        assert!(counts.iter().all(|&c| c == 2 || c == 3), "{counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), 21);
    }

    #[test]
    fn names_round_trip() {
        let wl = w(10, 10, 20);
        assert_eq!(wl.topic_name(7), "bench.t00007");
        assert_eq!(wl.topic_index("bench.t00007"), Some(7));
        assert_eq!(wl.topic_index("bench.t00020"), None);
        assert_eq!(wl.topic_index("other.t00007"), None);
        assert_eq!(Workload::node_of_address("node-00042.bench"), Some(42));
        assert_eq!(Workload::node_of_address("node-42.bench"), None);
        assert_eq!(Workload::identity(42).broadcast_address, "node-00042.bench");
        assert!(wl.validate().is_ok());
        assert!(w(1, 5, 4).validate().is_err());
    }

    #[test]
    fn identify_body_has_the_required_fields() {
        let v: serde_json::Value = serde_json::from_slice(&Workload::identify_body(3)).unwrap();
        assert_eq!(v["broadcast_address"], "node-00003.bench");
        assert_eq!(v["tcp_port"], 10_006);
        assert_eq!(v["http_port"], 10_007);
        assert_eq!(v["version"], "1.3.0");
    }
}
