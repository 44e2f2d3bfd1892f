//! Correctness of the answers while under load.
//!
//! The bench knows what its fleet registered, so for a `/lookup?topic=T`
//! answer it knows the producers that may appear (the nodes that carry T:
//! nothing else ever registered T) and the ones that must appear (those that
//! were fully registered from before the request until after the answer,
//! see [`crate::fleet::NodeStates`]). While nodes reconnect the expected set
//! is in flux, so the rule is "subset of the carriers, superset of the
//! stably registered". A node listed twice is only allowed if it reconnected
//! at some point (the server may not yet have noticed its old connection
//! close). Channels must be exactly `c0 .. c{C-1}`: channel keys outlive
//! their producers, so once the fleet has registered they never change.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::scheme::Workload;

/// The fields of a `/lookup` answer that are checked.
#[derive(Deserialize)]
pub struct LookupAnswer {
    pub channels: Vec<String>,
    pub producers: Vec<Peer>,
}

/// A producer in a `/lookup` or `/nodes` answer.
#[derive(Deserialize)]
pub struct Peer {
    pub broadcast_address: String,
    pub tcp_port: u16,
    #[serde(default)]
    pub http_port: u16,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub version: String,
}

/// What is known about one carrier of the topic when the answer arrived.
#[derive(Clone, Copy, Debug)]
pub struct Carrier {
    pub node: usize,
    /// Registered from before the request until after the answer.
    pub must_appear: bool,
    /// Reconnected at some point, so two listings are tolerated.
    pub may_repeat: bool,
    /// Its `UNREGISTER` of the topic was answered OK before the request
    /// and it had not registered it again when the answer arrived, in the
    /// same session (the soak's UNREGISTER share): it must not be listed.
    pub must_not_appear: bool,
}

/// Checks one `/lookup` answer body for `topic`; returns the problems found
/// (empty when correct). At most a few are listed, to keep reports short.
pub fn check_lookup(w: &Workload, topic: usize, body: &[u8], carriers: &[Carrier]) -> Vec<String> {
    let answer: LookupAnswer = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(e) => {
            return vec![format!(
                "lookup {}: unparseable answer: {e}",
                w.topic_name(topic)
            )];
        }
    };
    let mut problems = Vec::new();
    let name = w.topic_name(topic);

    let got_channels: BTreeSet<&str> = answer.channels.iter().map(String::as_str).collect();
    let want_channels: Vec<String> = w.channel_names();
    let want_channels: BTreeSet<&str> = want_channels.iter().map(String::as_str).collect();
    if got_channels != want_channels || answer.channels.len() != want_channels.len() {
        problems.push(format!(
            "lookup {name}: channels {:?}, expected {:?}",
            answer.channels, want_channels
        ));
    }

    let mut seen = vec![0u32; carriers.len()];
    for p in &answer.producers {
        let id = Workload::node_of_address(&p.broadcast_address);
        let slot = id.and_then(|n| carriers.iter().position(|c| c.node == n));
        let Some(slot) = slot else {
            problems.push(format!(
                "lookup {name}: unexpected producer {}:{}",
                p.broadcast_address, p.tcp_port
            ));
            continue;
        };
        let want = Workload::identity(carriers[slot].node);
        if p.tcp_port != want.tcp_port
            || p.http_port != want.http_port
            || p.hostname != want.hostname
            || p.version != want.version
        {
            problems.push(format!(
                "lookup {name}: producer {} has tcp_port {} http_port {} hostname {:?} version {:?}, expected {} {} {:?} {:?}",
                p.broadcast_address,
                p.tcp_port,
                p.http_port,
                p.hostname,
                p.version,
                want.tcp_port,
                want.http_port,
                want.hostname,
                want.version
            ));
        }
        seen[slot] += 1;
    }
    for (c, &n) in carriers.iter().zip(&seen) {
        let addr = Workload::identity(c.node).broadcast_address;
        if n == 0 && c.must_appear {
            problems.push(format!("lookup {name}: registered producer {addr} missing"));
        }
        if n > 1 && !c.may_repeat {
            problems.push(format!("lookup {name}: producer {addr} listed {n} times"));
        }
        if n > 0 && c.must_not_appear {
            problems.push(format!(
                "lookup {name}: producer {addr} listed after its UNREGISTER was answered OK"
            ));
        }
    }
    problems.truncate(5);
    problems
}

/// `/channels?topic=T` must list exactly the workload's channels.
pub fn check_channels(w: &Workload, topic: usize, body: &[u8]) -> Vec<String> {
    #[derive(Deserialize)]
    struct Answer {
        channels: Vec<String>,
    }
    let name = w.topic_name(topic);
    match serde_json::from_slice::<Answer>(body) {
        Err(e) => vec![format!("channels {name}: unparseable answer: {e}")],
        Ok(a) => {
            let got: BTreeSet<String> = a.channels.iter().cloned().collect();
            let want: BTreeSet<String> = w.channel_names().into_iter().collect();
            if got == want && a.channels.len() == want.len() {
                Vec::new()
            } else {
                vec![format!(
                    "channels {name}: {:?}, expected {:?}",
                    a.channels, want
                )]
            }
        }
    }
}

/// `/topics` must include every topic the fleet registered (other topics,
/// from other clients, are allowed).
pub fn check_topics(w: &Workload, body: &[u8]) -> Vec<String> {
    #[derive(Deserialize)]
    struct Answer {
        topics: Vec<String>,
    }
    match serde_json::from_slice::<Answer>(body) {
        Err(e) => vec![format!("topics: unparseable answer: {e}")],
        Ok(a) => {
            let mut have = vec![false; w.covered_topics()];
            for t in &a.topics {
                if let Some(i) = w.topic_index(t).filter(|&i| i < have.len()) {
                    have[i] = true;
                }
            }
            match have.iter().position(|h| !h) {
                None => Vec::new(),
                Some(i) => vec![format!(
                    "topics: registered topic {} missing",
                    w.topic_name(i)
                )],
            }
        }
    }
}

/// `/nodes` must list every node in `must_appear` (the ones registered
/// throughout the request), each with all of its topics.
pub fn check_nodes(w: &Workload, body: &[u8], must_appear: &[usize]) -> Vec<String> {
    #[derive(Deserialize)]
    struct Node {
        broadcast_address: String,
        #[serde(default)]
        topics: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Answer {
        producers: Vec<Node>,
    }
    let a = match serde_json::from_slice::<Answer>(body) {
        Err(e) => return vec![format!("nodes: unparseable answer: {e}")],
        Ok(a) => a,
    };
    let mut problems = Vec::new();
    for &n in must_appear {
        let addr = Workload::identity(n).broadcast_address;
        let listed: Vec<&Node> = a
            .producers
            .iter()
            .filter(|p| p.broadcast_address == addr)
            .collect();
        let Some(first) = listed.first() else {
            problems.push(format!("nodes: registered node {addr} missing"));
            continue;
        };
        let got: BTreeSet<&str> = listed
            .iter()
            .flat_map(|p| p.topics.iter().map(String::as_str))
            .collect();
        let want: Vec<String> = w.topics_of(n).map(|t| w.topic_name(t)).collect();
        if let Some(m) = want.iter().find(|t| !got.contains(t.as_str())) {
            problems.push(format!(
                "nodes: {} lacks topic {m} ({} topics listed)",
                first.broadcast_address,
                got.len()
            ));
        }
        if problems.len() >= 5 {
            break;
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wl() -> Workload {
        Workload {
            nodes: 10,
            topics_per_node: 10,
            topic_universe: 20,
            channels: 2,
            topic_prefix: "bench".into(),
        }
    }

    fn peer(node: usize) -> serde_json::Value {
        let id = Workload::identity(node);
        serde_json::json!({
            "remote_address": "127.0.0.1:1", "hostname": id.hostname,
            "broadcast_address": id.broadcast_address, "tcp_port": id.tcp_port,
            "http_port": id.http_port, "version": id.version,
            "topology_zone": "", "topology_region": ""
        })
    }

    fn body(channels: &[&str], nodes: &[usize]) -> Vec<u8> {
        let producers: Vec<_> = nodes.iter().map(|&n| peer(n)).collect();
        serde_json::to_vec(&serde_json::json!({"channels": channels, "producers": producers}))
            .unwrap()
    }

    fn stable(w: &Workload, topic: usize) -> Vec<Carrier> {
        w.producers_of(topic)
            .map(|node| Carrier {
                node,
                must_appear: true,
                may_repeat: false,
                must_not_appear: false,
            })
            .collect()
    }

    #[test]
    fn exact_answer_passes() {
        let w = wl();
        let carriers = stable(&w, 3); // nodes 0, 2, 4, 6, 8
        let nodes: Vec<usize> = carriers.iter().rev().map(|c| c.node).collect();
        assert!(check_lookup(&w, 3, &body(&["c1", "c0"], &nodes), &carriers).is_empty());
    }

    #[test]
    fn missing_extra_and_duplicate_producers_fail() {
        let w = wl();
        let carriers = stable(&w, 3);
        let p = check_lookup(&w, 3, &body(&["c0", "c1"], &[0, 2, 4, 6]), &carriers);
        assert!(p[0].contains("node-00008.bench missing"), "{p:?}");
        let p = check_lookup(&w, 3, &body(&["c0", "c1"], &[0, 1, 2, 4, 6, 8]), &carriers);
        assert!(
            p[0].contains("unexpected producer node-00001.bench"),
            "{p:?}"
        );
        let p = check_lookup(&w, 3, &body(&["c0", "c1"], &[0, 2, 2, 4, 6, 8]), &carriers);
        assert!(p[0].contains("listed 2 times"), "{p:?}");
        let p = check_lookup(&w, 3, &body(&["c0"], &[0, 2, 4, 6, 8]), &carriers);
        assert!(p[0].contains("channels"), "{p:?}");
        assert!(!check_lookup(&w, 3, b"{", &carriers).is_empty());
    }

    #[test]
    fn nodes_in_flux_may_be_absent_or_repeated() {
        let w = wl();
        let mut carriers = stable(&w, 3);
        carriers[4].must_appear = false; // node 8 reconnecting
        carriers[1].may_repeat = true; // node 2 reconnected
        assert!(check_lookup(&w, 3, &body(&["c0", "c1"], &[0, 2, 2, 4, 6]), &carriers).is_empty());
        // ...but a node that never carried the topic is still wrong.
        assert!(!check_lookup(&w, 3, &body(&["c0", "c1"], &[0, 2, 4, 6, 9]), &carriers).is_empty());
        // A node whose UNREGISTER was answered may not be listed.
        let mut carriers = stable(&w, 3);
        carriers[2].must_appear = false;
        carriers[2].must_not_appear = true; // node 4
        assert!(check_lookup(&w, 3, &body(&["c0", "c1"], &[0, 2, 6, 8]), &carriers).is_empty());
        let p = check_lookup(&w, 3, &body(&["c0", "c1"], &[0, 2, 4, 6, 8]), &carriers);
        assert!(
            p[0].contains("node-00004.bench listed after its UNREGISTER"),
            "{p:?}"
        );
    }

    #[test]
    fn wrong_identity_fails() {
        let w = wl();
        let carriers = stable(&w, 3);
        let mut v: serde_json::Value =
            serde_json::from_slice(&body(&["c0", "c1"], &[0, 2, 4, 6, 8])).unwrap();
        v["producers"][0]["tcp_port"] = 1.into();
        let p = check_lookup(&w, 3, &serde_json::to_vec(&v).unwrap(), &carriers);
        assert!(p[0].contains("tcp_port 1"), "{p:?}");
    }

    #[test]
    fn other_endpoints() {
        let w = wl();
        assert!(check_channels(&w, 0, br#"{"channels":["c0","c1"]}"#).is_empty());
        assert!(!check_channels(&w, 0, br#"{"channels":["c0"]}"#).is_empty());
        let all: Vec<String> = (0..20)
            .map(|t| w.topic_name(t))
            .chain(["x".into()])
            .collect();
        let b = serde_json::to_vec(&serde_json::json!({ "topics": all })).unwrap();
        assert!(check_topics(&w, &b).is_empty());
        assert!(!check_topics(&w, br#"{"topics":["bench.t00000"]}"#).is_empty());
        let topics: Vec<String> = w.topics_of(1).map(|t| w.topic_name(t)).collect();
        let b = serde_json::to_vec(&serde_json::json!({"producers": [
            {"broadcast_address": "node-00001.bench", "topics": topics}
        ]}))
        .unwrap();
        assert!(check_nodes(&w, &b, &[1]).is_empty());
        assert!(!check_nodes(&w, &b, &[1, 2]).is_empty());
    }
}
