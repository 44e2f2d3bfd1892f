//! Other replicas' registrations, applied to this replica's registry.
//!
//! The [`Applier`] keeps what etcd says about every other replica's
//! producers (node keys and registration keys) and makes the registry show
//! each nsqd once: one producer of its own per identity (broadcast address
//! and ports), registered in the union of what every replica publishes for
//! that nsqd. An nsqd connected to this replica as well is already in the
//! registry through its TCP session, so the copy leaves out every topic
//! the local producer is in, and goes away once it has nothing left.
//! Which record's peer fields the copy shows is the same choice on every
//! replica (the smallest record id), so every replica answers alike.
//!
//! Sans I/O and synchronous: the watch task hands it parsed updates on a
//! blocking thread. It writes through the registry's unobserved API (so the
//! mirror does not publish them again) and one registry call at a time
//! (the writer lock is taken per key), so applying a whole fleet never
//! holds up this replica's own nsqd for longer than one key.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::debug;

use super::keys::{
    EventValue, Key, NodeValue, OriginValue, RecordId, RegValue, identity, unix_micros,
};
use super::mirror::Mirror;
use crate::registry::{ProducerHandle, Registry};
use crate::stats::ClusterStats;

/// One change of a key, as the watch (or a snapshot) reports it.
#[derive(Clone, Debug)]
pub enum Update {
    Put(Key, Vec<u8>),
    Delete(Key),
}

/// The copy of one remote nsqd in the registry.
#[derive(Debug)]
struct Copy {
    /// The record whose peer fields it shows.
    source: RecordId,
    handle: ProducerHandle,
    /// What the handle is registered in: topic -> channels.
    registered: HashMap<String, BTreeSet<String>>,
}

/// Which topics of an identity to look at again.
#[derive(Debug, Default)]
struct Scope {
    all: bool,
    topics: HashSet<String>,
}

/// The replica ids that are this replica's own (its current lease and the
/// ones before it): their keys are never applied.
pub type Own = Arc<Mutex<HashSet<String>>>;

#[derive(Debug)]
pub struct Applier {
    registry: Arc<Registry>,
    mirror: Arc<Mirror>,
    stats: Arc<ClusterStats>,
    own: Own,
    nodes: HashMap<RecordId, NodeValue>,
    regs: HashMap<RecordId, HashMap<String, BTreeSet<String>>>,
    /// Records with a node key, by identity.
    by_identity: HashMap<String, BTreeSet<RecordId>>,
    copies: HashMap<String, Copy>,
    dirty: HashMap<String, Scope>,
    /// Tombstones to set once the batch's registrations are applied (a
    /// tombstone hides producers that are in the topic when it is set).
    tombstones: Vec<(String, String)>,
}

impl Applier {
    pub fn new(
        registry: Arc<Registry>,
        mirror: Arc<Mirror>,
        stats: Arc<ClusterStats>,
        own: Own,
    ) -> Self {
        Applier {
            registry,
            mirror,
            stats,
            own,
            nodes: HashMap::new(),
            regs: HashMap::new(),
            by_identity: HashMap::new(),
            copies: HashMap::new(),
            dirty: HashMap::new(),
            tombstones: Vec::new(),
        }
    }

    fn is_own(&self, replica: &str) -> bool {
        self.own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(replica)
    }

    fn mark(&mut self, identity: &str, topic: Option<&str>) {
        let scope = self.dirty.entry(identity.to_owned()).or_default();
        match topic {
            Some(t) if !scope.all => {
                scope.topics.insert(t.to_owned());
            }
            Some(_) => {}
            None => scope.all = true,
        }
    }

    /// The identity a record belongs to, if its node key is known.
    fn identity_of(&self, record: &RecordId) -> Option<String> {
        self.nodes.get(record).map(|n| identity(&n.peer))
    }

    /// Applies watch updates (live changes: their publish time is observed
    /// as the watch lag), then reconciles what they touched.
    pub fn apply(&mut self, updates: Vec<Update>) {
        let now = unix_micros();
        for update in updates {
            if let Some(at) = self.update(update)
                && at > 0
            {
                let lag = u64::try_from(now.saturating_sub(at)).unwrap_or(0);
                self.stats.watch_lag.observe(Duration::from_micros(lag));
            }
        }
        self.reconcile();
    }

    /// Replaces everything known about other replicas with a snapshot (at
    /// start, and after a compacted watch or a lost connection), then
    /// reconciles every identity, old and new.
    pub fn resync(&mut self, snapshot: Vec<Update>) {
        let before: Vec<String> = self.copies.keys().cloned().collect();
        self.nodes.clear();
        self.regs.clear();
        self.by_identity.clear();
        for identity in before {
            self.mark(&identity, None);
        }
        for update in snapshot {
            // Past events are already in the state the snapshot shows.
            if !matches!(update, Update::Put(Key::Event, _)) {
                self.update(update);
            }
        }
        self.reconcile();
    }

    /// Identities whose local producers changed: look at them again.
    pub fn local_changed(&mut self) {
        let (identities, overflowed) = {
            let mut mirror = self.mirror.lock();
            let overflowed = std::mem::take(&mut mirror.identities_overflowed);
            (
                mirror.identities.drain().collect::<Vec<String>>(),
                overflowed,
            )
        };
        if overflowed {
            let every: Vec<String> = self
                .copies
                .keys()
                .chain(self.by_identity.keys())
                .cloned()
                .collect();
            for identity in every {
                self.mark(&identity, None);
            }
        }
        for identity in identities {
            if self.by_identity.contains_key(&identity) || self.copies.contains_key(&identity) {
                self.mark(&identity, None);
            }
        }
        self.reconcile();
    }

    /// Records one update; returns its publish time if it carried one.
    fn update(&mut self, update: Update) -> Option<i64> {
        match update {
            Update::Put(Key::Node(record), value) => {
                if self.is_own(&record.replica) {
                    return None;
                }
                let node: NodeValue = parse(&value)?;
                let at = node.at;
                let identity = identity(&node.peer);
                if let Some(old) = self.identity_of(&record)
                    && old != identity
                {
                    self.drop_record(&old, &record);
                }
                let fresh = self.nodes.insert(record.clone(), node).is_none();
                self.by_identity
                    .entry(identity.clone())
                    .or_default()
                    .insert(record.clone());
                if fresh {
                    self.mark(&identity, None);
                } else if let Some(copy) = self.copies.get(&identity) {
                    // A republished node key: the nsqd is alive (PINGs).
                    copy.handle.ping();
                }
                Some(at)
            }
            Update::Delete(Key::Node(record)) => {
                if let Some(identity) = self.identity_of(&record) {
                    self.nodes.remove(&record);
                    self.drop_record(&identity, &record);
                    self.mark(&identity, None);
                }
                None
            }
            Update::Put(Key::Reg { topic, record }, value) => {
                if self.is_own(&record.replica) {
                    return None;
                }
                let reg: RegValue = parse(&value)?;
                let at = reg.at;
                let channels = reg
                    .channels
                    .into_iter()
                    .filter(|c| crate::names::is_valid_name(c.as_bytes()))
                    .collect();
                self.regs
                    .entry(record.clone())
                    .or_default()
                    .insert(topic.clone(), channels);
                if let Some(identity) = self.identity_of(&record) {
                    self.mark(&identity, Some(&topic));
                }
                Some(at)
            }
            Update::Delete(Key::Reg { topic, record }) => {
                if let Some(topics) = self.regs.get_mut(&record) {
                    topics.remove(&topic);
                    if topics.is_empty() {
                        self.regs.remove(&record);
                    }
                }
                if let Some(identity) = self.identity_of(&record) {
                    self.mark(&identity, Some(&topic));
                }
                None
            }
            // A replica's own creates come back through the watch, possibly
            // after it deleted the same name again: never applied twice.
            Update::Put(Key::AdminTopic(topic), value) => {
                let origin: OriginValue = parse(&value)?;
                if !self.is_own(&origin.origin) {
                    self.registry.unobserved().create_topic(&topic);
                }
                None
            }
            Update::Put(Key::AdminChannel { topic, channel }, value) => {
                let origin: OriginValue = parse(&value)?;
                if !self.is_own(&origin.origin) {
                    self.registry.unobserved().create_channel(&topic, &channel);
                }
                None
            }
            Update::Put(Key::Tombstone { topic, node }, value) => {
                let origin: OriginValue = parse(&value)?;
                if !self.is_own(&origin.origin) {
                    self.tombstones.push((topic, node));
                }
                Some(origin.at)
            }
            Update::Put(Key::Event, value) => {
                let event: EventValue = parse(&value)?;
                if !self.is_own(&event.origin) {
                    self.delete(&event.topic, event.channel.as_deref());
                }
                Some(event.at)
            }
            // Deleted admin keys and expired tombstones and events change
            // nothing by themselves: deletes travel as events.
            Update::Delete(_) => None,
        }
    }

    fn drop_record(&mut self, identity: &str, record: &RecordId) {
        if let Some(records) = self.by_identity.get_mut(identity) {
            records.remove(record);
            if records.is_empty() {
                self.by_identity.remove(identity);
            }
        }
    }

    /// A `/topic/delete` or `/channel/delete` made on another replica.
    fn delete(&mut self, topic: &str, channel: Option<&str>) {
        match channel {
            None => self.registry.unobserved().delete_topic(topic),
            Some(c) => {
                self.registry.unobserved().delete_channel(topic, c);
            }
        }
        // The registry dropped every producer from the key(s): so do the
        // copies' books, and the records (the deleting replica removed the
        // registration keys of a topic; those of a channel are republished
        // without it by their owners).
        for copy in self.copies.values_mut() {
            match channel {
                None => {
                    copy.registered.remove(topic);
                }
                Some(c) => {
                    if let Some(cs) = copy.registered.get_mut(topic) {
                        cs.remove(c);
                    }
                }
            }
        }
        for topics in self.regs.values_mut() {
            match channel {
                None => {
                    topics.remove(topic);
                }
                Some(c) => {
                    if let Some(cs) = topics.get_mut(topic) {
                        cs.remove(c);
                    }
                }
            }
        }
    }

    /// Brings every dirty identity's copy in line with the records.
    fn reconcile(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for (identity, scope) in dirty {
            self.reconcile_one(&identity, scope);
        }
        for (topic, node) in std::mem::take(&mut self.tombstones) {
            self.registry.unobserved().tombstone(&topic, &node);
        }
        self.stats
            .remote_producers
            .store(self.copies.len() as u64, Relaxed);
    }

    fn reconcile_one(&mut self, identity: &str, scope: Scope) {
        let records: Vec<RecordId> = self
            .by_identity
            .get(identity)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default();
        let Some(source) = records.first().cloned() else {
            // No replica publishes this nsqd any more.
            if self.copies.remove(identity).is_some() {
                debug!(identity, "cluster: remote producer removed");
            }
            return;
        };
        // The topics to look at, and what the records want in each.
        let mut topics: BTreeSet<String> = BTreeSet::new();
        if scope.all {
            for r in &records {
                if let Some(ts) = self.regs.get(r) {
                    topics.extend(ts.keys().cloned());
                }
            }
            if let Some(copy) = self.copies.get(identity) {
                topics.extend(copy.registered.keys().cloned());
            }
        } else {
            topics.extend(scope.topics);
        }
        let (local_present, wanted) = {
            let mirror = self.mirror.lock();
            let local_present = mirror.has_identity(identity);
            let wanted: BTreeMap<String, Option<BTreeSet<String>>> = topics
                .into_iter()
                .map(|t| {
                    let want = if local_present && mirror.local_topic(identity, &t).is_some() {
                        None
                    } else {
                        let mut union: Option<BTreeSet<String>> = None;
                        for r in &records {
                            if let Some(cs) = self.regs.get(r).and_then(|ts| ts.get(&t)) {
                                union
                                    .get_or_insert_with(BTreeSet::new)
                                    .extend(cs.iter().cloned());
                            }
                        }
                        union
                    };
                    (t, want)
                })
                .collect();
            (local_present, wanted)
        };
        // The copy, made (or remade with the chosen record's peer fields).
        if self.copies.get(identity).is_none_or(|c| c.source != source) {
            if local_present
                && wanted.values().all(Option::is_none)
                && !self.copies.contains_key(identity)
            {
                return;
            }
            let peer = self.nodes[&source].peer.clone();
            let mut handle = self.registry.identify_unobserved(peer);
            let mut registered = HashMap::new();
            if let Some(old) = self.copies.remove(identity) {
                // Register the new copy before the old one goes: no gap.
                for (t, cs) in &old.registered {
                    register(&mut handle, t, cs, &self.stats);
                }
                registered = old.registered;
            }
            self.copies.insert(
                identity.to_owned(),
                Copy {
                    source,
                    handle,
                    registered,
                },
            );
        }
        let copy = self.copies.get_mut(identity).expect("made above");
        for (topic, want) in wanted {
            let have = copy.registered.get(&topic);
            match (have, want) {
                (None, None) => {}
                (Some(_), None) => {
                    copy.handle.unregister(&topic, None);
                    copy.registered.remove(&topic);
                    self.stats.applied.fetch_add(1, Relaxed);
                }
                (have, Some(want)) => {
                    let have = have.cloned();
                    if let Some(have) = &have {
                        for c in have.difference(&want) {
                            copy.handle.unregister(&topic, Some(c));
                            self.stats.applied.fetch_add(1, Relaxed);
                        }
                    }
                    let new: BTreeSet<String> = match &have {
                        Some(have) => want.difference(have).cloned().collect(),
                        None => want.clone(),
                    };
                    if have.is_none() || !new.is_empty() {
                        register(&mut copy.handle, &topic, &new, &self.stats);
                    }
                    copy.registered.insert(topic, want);
                }
            }
        }
        if local_present && copy.registered.is_empty() {
            // The local producer carries everything: one nsqd, shown once.
            self.copies.remove(identity);
        }
    }
}

/// Registers `handle` in `topic` and each of `channels` (the topic alone
/// when there are none).
fn register(
    handle: &mut ProducerHandle,
    topic: &str,
    channels: &BTreeSet<String>,
    stats: &ClusterStats,
) {
    if channels.is_empty() {
        handle.register(topic, None);
        stats.applied.fetch_add(1, Relaxed);
    }
    for c in channels {
        handle.register(topic, Some(c));
        stats.applied.fetch_add(1, Relaxed);
    }
}

fn parse<T: serde::de::DeserializeOwned>(value: &[u8]) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(e) => {
            debug!("cluster: ignoring a malformed value: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::keys::Layout;
    use crate::registry::{Observer, PeerInfo, RegistryOptions};

    struct Fixture {
        registry: Arc<Registry>,
        applier: Applier,
        layout: Layout,
    }

    fn fixture() -> Fixture {
        let mirror = Mirror::new(Duration::from_secs(60));
        let observer: Arc<dyn Observer> = Arc::clone(&mirror) as _;
        let registry = Arc::new(Registry::with_observer(
            RegistryOptions::default(),
            Some(observer),
        ));
        let own: Own = Arc::new(Mutex::new(HashSet::from(["self".to_owned()])));
        let applier = Applier::new(
            Arc::clone(&registry),
            mirror,
            Arc::new(ClusterStats::default()),
            own,
        );
        Fixture {
            registry,
            applier,
            layout: Layout::new("/p"),
        }
    }

    fn peer(remote_port: u16) -> PeerInfo {
        PeerInfo {
            remote_address: format!("10.0.0.1:{remote_port}"),
            hostname: "n1".into(),
            broadcast_address: "n1.example".into(),
            tcp_port: 4150,
            http_port: 4151,
            version: "1.3.0".into(),
            ..PeerInfo::default()
        }
    }

    fn key(f: &Fixture, k: String) -> Key {
        f.layout.parse(k.as_bytes()).expect("a key of the layout")
    }

    fn node_put(f: &Fixture, replica: &str, pid: u64, peer: &PeerInfo) -> Update {
        let value = serde_json::to_vec(&NodeValue::new(peer, 0)).unwrap();
        Update::Put(key(f, f.layout.node(replica, pid)), value)
    }

    fn reg_put(f: &Fixture, topic: &str, replica: &str, pid: u64, channels: &[&str]) -> Update {
        let value = serde_json::to_vec(&RegValue {
            channels: channels.iter().map(|c| c.to_string()).collect(),
            at: 0,
        })
        .unwrap();
        Update::Put(key(f, f.layout.reg(topic, replica, pid)), value)
    }

    fn lookup_addresses(r: &Registry, topic: &str) -> Vec<String> {
        let Some(body) = r.lookup_uncached(topic) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["producers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["remote_address"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn an_nsqd_on_two_replicas_is_one_producer_with_the_same_peer_fields() {
        let mut f = fixture();
        let updates = vec![
            node_put(&f, "b", 7, &peer(2000)),
            reg_put(&f, "t", "b", 7, &["c"]),
            node_put(&f, "a", 9, &peer(1000)),
            reg_put(&f, "t", "a", 9, &["c", "d"]),
        ];
        f.applier.apply(updates);
        // Replica "a" sorts first: its record's peer fields are shown.
        assert_eq!(lookup_addresses(&f.registry, "t"), ["10.0.0.1:1000"]);
        assert_eq!(f.registry.channels("t").len(), 2);
        assert_eq!(f.registry.producer_count(), 1);
        // "a" loses it: the copy shows "b"'s record, still once.
        f.applier.apply(vec![
            Update::Delete(key(&f, f.layout.reg("t", "a", 9))),
            Update::Delete(key(&f, f.layout.node("a", 9))),
        ]);
        assert_eq!(lookup_addresses(&f.registry, "t"), ["10.0.0.1:2000"]);
        assert_eq!(f.registry.producer_count(), 1);
        // "b" too: gone.
        f.applier.apply(vec![
            Update::Delete(key(&f, f.layout.reg("t", "b", 7))),
            Update::Delete(key(&f, f.layout.node("b", 7))),
        ]);
        assert!(lookup_addresses(&f.registry, "t").is_empty());
        assert_eq!(f.registry.producer_count(), 0);
    }

    #[test]
    fn a_local_producer_of_the_same_nsqd_replaces_the_copy_topic_by_topic() {
        let mut f = fixture();
        f.applier.apply(vec![
            node_put(&f, "b", 7, &peer(2000)),
            reg_put(&f, "t", "b", 7, &[]),
            reg_put(&f, "u", "b", 7, &[]),
        ]);
        let mut local = f.registry.identify(peer(3000));
        local.register("t", None);
        f.applier.local_changed();
        assert_eq!(lookup_addresses(&f.registry, "t"), ["10.0.0.1:3000"]);
        assert_eq!(lookup_addresses(&f.registry, "u"), ["10.0.0.1:2000"]);
        local.register("u", None);
        f.applier.local_changed();
        assert_eq!(lookup_addresses(&f.registry, "u"), ["10.0.0.1:3000"]);
        assert_eq!(f.registry.producer_count(), 1, "the copy is gone");
        drop(local);
        f.applier.local_changed();
        assert_eq!(lookup_addresses(&f.registry, "t"), ["10.0.0.1:2000"]);
        assert_eq!(lookup_addresses(&f.registry, "u"), ["10.0.0.1:2000"]);
    }

    #[test]
    fn own_keys_and_malformed_values_are_ignored() {
        let mut f = fixture();
        f.applier.apply(vec![
            node_put(&f, "self", 1, &peer(1)),
            reg_put(&f, "t", "self", 1, &[]),
            Update::Put(key(&f, f.layout.node("b", 2)), b"{not json".to_vec()),
            Update::Put(key(&f, f.layout.reg("t", "b", 2)), b"[]".to_vec()),
        ]);
        assert_eq!(f.registry.producer_count(), 0);
        assert!(lookup_addresses(&f.registry, "t").is_empty());
    }

    #[test]
    fn channel_changes_and_deletes_follow_the_records() {
        let mut f = fixture();
        f.applier.apply(vec![
            node_put(&f, "b", 7, &peer(2000)),
            reg_put(&f, "t", "b", 7, &["c", "d"]),
        ]);
        assert_eq!(f.registry.channels("t").len(), 2);
        f.applier
            .apply(vec![reg_put(&f, "t", "b", 7, &["d", "e#ephemeral"])]);
        let channels: Vec<String> = f
            .registry
            .channels("t")
            .iter()
            .map(|c| c.to_string())
            .collect();
        // "c" is not ephemeral: its key stays (as the original keeps it), without producers.
        assert_eq!(channels, ["c", "d", "e#ephemeral"]);
        f.applier.apply(vec![reg_put(&f, "t", "b", 7, &["d"])]);
        let channels: Vec<String> = f
            .registry
            .channels("t")
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            channels,
            ["c", "d"],
            "the ephemeral channel went with its last producer"
        );
        let event = serde_json::to_vec(&EventValue {
            origin: "b".into(),
            topic: "t".into(),
            channel: None,
            at: 0,
        })
        .unwrap();
        f.applier
            .apply(vec![Update::Put(key(&f, f.layout.event("b", 1)), event)]);
        assert!(f.registry.lookup_uncached("t").is_none(), "topic deleted");
        // The owner re-registers: back.
        f.applier.apply(vec![reg_put(&f, "t", "b", 7, &[])]);
        assert_eq!(lookup_addresses(&f.registry, "t"), ["10.0.0.1:2000"]);
    }

    #[test]
    fn own_creates_coming_back_do_not_undo_a_later_local_delete() {
        let mut f = fixture();
        let origin = |o: &str| {
            serde_json::to_vec(&OriginValue {
                origin: o.into(),
                at: 0,
            })
            .unwrap()
        };
        f.registry.create_channel("t", "c");
        f.registry.delete_channel("t", "c");
        let own = f.layout.admin_channel("t", "c");
        f.applier
            .apply(vec![Update::Put(key(&f, own), origin("self"))]);
        assert!(f.registry.channels("t").is_empty(), "the echo is ignored");
        let theirs = f.layout.admin_channel("t", "d");
        f.applier
            .apply(vec![Update::Put(key(&f, theirs), origin("b"))]);
        assert_eq!(
            f.registry.channels("t").len(),
            1,
            "another replica's create applies"
        );
    }

    #[test]
    fn a_tombstone_in_a_snapshot_hides_the_producer_it_comes_with() {
        let mut f = fixture();
        let tomb = serde_json::to_vec(&OriginValue {
            origin: "b".into(),
            at: 0,
        })
        .unwrap();
        // Keys in etcd's order: n/ and r/ sort before t/, but the
        // registrations are applied at the end of the batch.
        f.applier.resync(vec![
            node_put(&f, "b", 7, &peer(2000)),
            reg_put(&f, "t", "b", 7, &[]),
            Update::Put(key(&f, f.layout.tombstone("t", "n1.example:4151")), tomb),
        ]);
        assert!(lookup_addresses(&f.registry, "t").is_empty(), "tombstoned");
        assert_eq!(f.registry.producer_count(), 1);
    }

    #[test]
    fn a_resync_drops_what_the_snapshot_no_longer_has() {
        let mut f = fixture();
        f.applier.apply(vec![
            node_put(&f, "b", 7, &peer(2000)),
            reg_put(&f, "t", "b", 7, &[]),
        ]);
        let mut other = peer(2001);
        other.tcp_port = 5150;
        f.applier.resync(vec![
            node_put(&f, "c", 1, &other),
            reg_put(&f, "u", "c", 1, &[]),
        ]);
        assert!(lookup_addresses(&f.registry, "t").is_empty());
        assert_eq!(lookup_addresses(&f.registry, "u"), ["10.0.0.1:2001"]);
        assert_eq!(f.registry.producer_count(), 1);
    }
}
