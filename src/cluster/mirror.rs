//! This replica's own registrations, as the observer of the registry's
//! writes, and what of them is still to be published.
//!
//! [`Mirror`] is the registry's [`Observer`]: each write of a TCP session
//! or an admin endpoint updates the mirror's copy of the local producers
//! (peer, topics, channels) and marks the keys it touched dirty. The
//! publisher later writes each dirty key's *current* value (or deletes it),
//! so memory is bounded by the state itself, not by the number of changes:
//! however long etcd is away, a flapping nsqd costs its keys once. If the
//! dirty set still grows past its bound (connections come and go with new
//! ids during a long outage), it is dropped and the publisher republishes
//! everything under a fresh lease instead.
//!
//! Called under the registry's writer lock: nothing here may call the
//! registry, and every method is a few map operations.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::keys::identity;
use crate::registry::{Change, Observer, PeerInfo, ProducerId};

/// A local producer's state.
#[derive(Debug)]
pub struct Local {
    pub peer: PeerInfo,
    pub identity: String,
    /// Topic -> channels.
    pub topics: BTreeMap<String, BTreeSet<String>>,
    /// When its node key was last marked for publishing (PINGs refresh it
    /// at most every [`Mirror::refresh`]).
    last_marked: Instant,
}

/// A key to publish: its current value is computed when it is published.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dirty {
    Node(ProducerId),
    Reg(ProducerId, String),
}

/// An admin write to publish, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminOp {
    CreateTopic(String),
    CreateChannel(String, String),
    DeleteTopic(String),
    DeleteChannel(String, String),
    Tombstone(String, String),
}

#[derive(Debug, Default)]
pub struct State {
    pub producers: HashMap<ProducerId, Local>,
    /// (local producer, topic) pairs: with `producers`, the number of keys
    /// this replica publishes.
    pub pairs: usize,
    /// Local producer ids by identity (several connections of one nsqd).
    pub by_identity: HashMap<String, BTreeSet<ProducerId>>,
    pub dirty: HashSet<Dirty>,
    pub admin: VecDeque<AdminOp>,
    /// The dirty set outgrew its bound: republish everything.
    pub overflowed: bool,
    /// Identities whose local producers changed, for the applier (a local
    /// producer hides the remote copy of the same nsqd).
    pub identities: HashSet<String>,
    /// `identities` outgrew its bound (and was emptied): the applier looks
    /// at every identity again.
    pub identities_overflowed: bool,
    /// Admin ops dropped because the queue was full.
    pub admin_dropped: u64,
}

impl State {
    /// Local producers' channels of `topic` for `identity`: `None` when no
    /// local producer of that identity is in the topic.
    pub fn local_topic(&self, identity: &str, topic: &str) -> Option<BTreeSet<String>> {
        let mut out: Option<BTreeSet<String>> = None;
        for id in self.by_identity.get(identity)? {
            if let Some(channels) = self.producers.get(id).and_then(|p| p.topics.get(topic)) {
                out.get_or_insert_with(BTreeSet::new)
                    .extend(channels.iter().cloned());
            }
        }
        out
    }

    pub fn has_identity(&self, identity: &str) -> bool {
        self.by_identity.contains_key(identity)
    }

    /// Every key of every local producer, for a full republish.
    pub fn everything(&self) -> Vec<Dirty> {
        let mut out = Vec::new();
        for (&id, p) in &self.producers {
            out.push(Dirty::Node(id));
            out.extend(p.topics.keys().map(|t| Dirty::Reg(id, t.clone())));
        }
        out
    }

    /// Drops `topic` (or one channel of it) from every local producer, as
    /// a `/topic/delete` (`/channel/delete`) does to the registry.
    /// Returns the keys that changed.
    fn forget(&mut self, topic: &str, channel: Option<&str>) -> Vec<Dirty> {
        let mut touched = Vec::new();
        for (&id, p) in self.producers.iter_mut() {
            let hit = match channel {
                None => p.topics.remove(topic).is_some(),
                Some(c) => p.topics.get_mut(topic).is_some_and(|cs| cs.remove(c)),
            };
            if hit {
                if channel.is_none() {
                    self.pairs -= 1;
                }
                touched.push(Dirty::Reg(id, topic.to_owned()));
                self.identities.insert(p.identity.clone());
            }
        }
        touched
    }
}

/// The observer; shared by the registry, the publisher and the applier.
#[derive(Debug)]
pub struct Mirror {
    state: Mutex<State>,
    /// Wakes the publisher.
    pub publish: Notify,
    /// Wakes the applier (local identities changed).
    pub local_changed: Notify,
    /// How often a PING re-publishes a node key (its `at`), so that other
    /// replicas see the producer as active.
    refresh: Duration,
    /// Bound of the dirty set beyond the state's own size.
    dirty_slack: usize,
    /// Bound of the admin queue.
    admin_limit: usize,
}

impl Mirror {
    pub fn new(refresh: Duration) -> Arc<Self> {
        Arc::new(Mirror {
            state: Mutex::default(),
            publish: Notify::new(),
            local_changed: Notify::new(),
            refresh,
            dirty_slack: 100_000,
            admin_limit: 100_000,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark(&self, state: &mut State, dirty: Dirty) {
        if state.overflowed {
            // Everything is republished anyway.
            return;
        }
        state.dirty.insert(dirty);
        // Dirty keys of live state are at most one per published key; the
        // rest are deletes of keys that went away.
        let published = state.producers.len() + state.pairs;
        if state.dirty.len() > self.dirty_slack + 2 * published {
            // More dirty keys than the state could explain: forget them all
            // (and their memory) and republish the state under a new lease
            // when etcd is back.
            state.overflowed = true;
            state.dirty = HashSet::new();
        }
    }

    fn admin(&self, state: &mut State, op: AdminOp) {
        if state.admin.len() >= self.admin_limit {
            state.admin.pop_front();
            state.admin_dropped += 1;
        }
        state.admin.push_back(op);
    }

    fn apply(&self, change: Change<'_>, observed: bool) {
        let mut state = self.lock();
        let s = &mut *state;
        match change {
            Change::Identified(p) if observed => {
                let identity = identity(&p.peer);
                s.by_identity
                    .entry(identity.clone())
                    .or_default()
                    .insert(p.id);
                s.identities.insert(identity.clone());
                s.producers.insert(
                    p.id,
                    Local {
                        peer: p.peer.clone(),
                        identity,
                        topics: BTreeMap::new(),
                        last_marked: Instant::now(),
                    },
                );
                self.mark(s, Dirty::Node(p.id));
            }
            Change::Pinged(p) if observed => {
                let Some(local) = s.producers.get_mut(&p.id) else {
                    return;
                };
                if local.last_marked.elapsed() < self.refresh {
                    return;
                }
                local.last_marked = Instant::now();
                self.mark(s, Dirty::Node(p.id));
            }
            Change::Registered {
                producer,
                topic,
                channel,
            } if observed => {
                let Some(local) = s.producers.get_mut(&producer.id) else {
                    return;
                };
                let channels = match local.topics.entry(topic.to_owned()) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        s.pairs += 1;
                        e.insert(BTreeSet::new())
                    }
                };
                if let Some(c) = channel {
                    channels.insert(c.to_owned());
                }
                s.identities.insert(local.identity.clone());
                self.mark(s, Dirty::Reg(producer.id, topic.to_owned()));
            }
            Change::Unregistered {
                producer,
                topic,
                channel,
            } if observed => {
                let Some(local) = s.producers.get_mut(&producer.id) else {
                    return;
                };
                let touched = match channel {
                    Some(c) => local.topics.get_mut(topic).is_some_and(|cs| cs.remove(c)),
                    None => local.topics.remove(topic).is_some(),
                };
                if touched && channel.is_none() {
                    s.pairs -= 1;
                }
                if touched {
                    s.identities.insert(local.identity.clone());
                    self.mark(s, Dirty::Reg(producer.id, topic.to_owned()));
                }
            }
            Change::Removed(p) if observed => {
                let Some(local) = s.producers.remove(&p.id) else {
                    return;
                };
                if let Some(ids) = s.by_identity.get_mut(&local.identity) {
                    ids.remove(&p.id);
                    if ids.is_empty() {
                        s.by_identity.remove(&local.identity);
                    }
                }
                s.identities.insert(local.identity);
                s.pairs -= local.topics.len();
                for topic in local.topics.into_keys() {
                    self.mark(s, Dirty::Reg(p.id, topic));
                }
                self.mark(s, Dirty::Node(p.id));
            }
            Change::TopicCreated(topic) if observed => {
                self.admin(s, AdminOp::CreateTopic(topic.to_owned()));
            }
            Change::ChannelCreated { topic, channel } if observed => {
                self.admin(
                    s,
                    AdminOp::CreateChannel(topic.to_owned(), channel.to_owned()),
                );
            }
            Change::TopicDeleted(topic) => {
                for d in s.forget(topic, None) {
                    self.mark(s, d);
                }
                if observed {
                    self.admin(s, AdminOp::DeleteTopic(topic.to_owned()));
                }
            }
            Change::ChannelDeleted { topic, channel } => {
                for d in s.forget(topic, Some(channel)) {
                    self.mark(s, d);
                }
                if observed {
                    self.admin(
                        s,
                        AdminOp::DeleteChannel(topic.to_owned(), channel.to_owned()),
                    );
                }
            }
            Change::Tombstoned { topic, node } if observed => {
                self.admin(s, AdminOp::Tombstone(topic.to_owned(), node.to_owned()));
            }
            _ => return,
        }
        if s.identities.len() > self.dirty_slack {
            s.identities.clear();
            s.identities_overflowed = true;
        }
        let wake_applier = !s.identities.is_empty() || s.identities_overflowed;
        drop(state);
        self.publish.notify_one();
        if wake_applier {
            self.local_changed.notify_one();
        }
    }
}

impl Observer for Mirror {
    fn changed(&self, change: Change<'_>) {
        self.apply(change, true);
    }

    fn applied(&self, change: Change<'_>) {
        self.apply(change, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Registry, RegistryOptions};

    fn peer(port: i64) -> PeerInfo {
        PeerInfo {
            remote_address: format!("127.0.0.1:{}", 50_000 + port),
            broadcast_address: "h".into(),
            tcp_port: port,
            http_port: port + 1,
            ..PeerInfo::default()
        }
    }

    fn registry(mirror: &Arc<Mirror>) -> Arc<Registry> {
        let observer: Arc<dyn Observer> = Arc::clone(mirror) as _;
        Arc::new(Registry::with_observer(
            RegistryOptions::default(),
            Some(observer),
        ))
    }

    #[test]
    fn follows_a_producer_through_its_life() {
        let mirror = Mirror::new(Duration::from_secs(60));
        let r = registry(&mirror);
        let mut a = r.identify(peer(4150));
        let id = a.producer().id;
        a.register("t", Some("c"));
        a.register("t", Some("d"));
        a.register("u", None);
        {
            let s = mirror.lock();
            let local = &s.producers[&id];
            assert_eq!(local.topics.len(), 2);
            assert_eq!(local.topics["t"].len(), 2);
            assert!(s.dirty.contains(&Dirty::Reg(id, "t".into())));
            assert!(s.dirty.contains(&Dirty::Node(id)));
            assert_eq!(
                s.local_topic("h:4150:4151", "t").unwrap().len(),
                2,
                "channels by identity"
            );
        }
        a.unregister("t", Some("c"));
        assert_eq!(mirror.lock().producers[&id].topics["t"].len(), 1);
        a.unregister("t", None);
        assert!(!mirror.lock().producers[&id].topics.contains_key("t"));
        assert_eq!(mirror.lock().pairs, 1, "only u is left");
        drop(a);
        let s = mirror.lock();
        assert_eq!(s.pairs, 0);
        assert!(s.producers.is_empty());
        assert!(!s.has_identity("h:4150:4151"));
        assert!(s.dirty.contains(&Dirty::Reg(id, "u".into())));
    }

    #[test]
    fn admin_writes_are_queued_in_order_and_deletes_forget_local_topics() {
        let mirror = Mirror::new(Duration::from_secs(60));
        let r = registry(&mirror);
        let mut a = r.identify(peer(4150));
        a.register("t", Some("c"));
        r.create_topic("x");
        r.create_channel("x", "y");
        r.tombstone("t", "h:4151");
        r.delete_channel("t", "c");
        assert!(mirror.lock().producers[&a.producer().id].topics["t"].is_empty());
        r.delete_topic("t");
        let s = mirror.lock();
        assert!(s.producers[&a.producer().id].topics.is_empty());
        let ops: Vec<&AdminOp> = s.admin.iter().collect();
        assert_eq!(
            ops,
            [
                &AdminOp::CreateTopic("x".into()),
                &AdminOp::CreateChannel("x".into(), "y".into()),
                &AdminOp::Tombstone("t".into(), "h:4151".into()),
                &AdminOp::DeleteChannel("t".into(), "c".into()),
                &AdminOp::DeleteTopic("t".into()),
            ]
        );
    }

    #[test]
    fn unobserved_writes_are_not_published_but_deletes_still_apply() {
        let mirror = Mirror::new(Duration::from_secs(60));
        let r = registry(&mirror);
        let mut a = r.identify(peer(4150));
        a.register("t", None);
        let mut remote = r.identify_unobserved(peer(9000));
        remote.register("t", Some("c"));
        r.unobserved().create_topic("z");
        r.unobserved().delete_topic("t");
        let s = mirror.lock();
        assert_eq!(s.producers.len(), 1, "the unobserved producer is not local");
        assert!(
            s.admin.is_empty(),
            "its own admin writes are not republished"
        );
        assert!(
            s.producers[&a.producer().id].topics.is_empty(),
            "a delete applied from elsewhere removes the local producer's topic too"
        );
    }

    #[test]
    fn the_dirty_set_is_bounded() {
        let mirror = Arc::new(Mirror {
            dirty_slack: 10,
            ..Arc::into_inner(Mirror::new(Duration::from_secs(60))).unwrap()
        });
        let r = registry(&mirror);
        for i in 0..20 {
            let mut a = r.identify(peer(i));
            a.register("t", None);
        }
        let s = mirror.lock();
        assert!(s.overflowed);
        assert!(s.dirty.is_empty());
    }

    #[test]
    fn pings_mark_the_node_key_at_most_once_per_refresh() {
        let mirror = Mirror::new(Duration::from_secs(3600));
        let r = registry(&mirror);
        let a = r.identify(peer(4150));
        mirror.lock().dirty.clear();
        a.ping();
        assert!(mirror.lock().dirty.is_empty());
        mirror
            .lock()
            .producers
            .get_mut(&a.producer().id)
            .unwrap()
            .last_marked = Instant::now() - Duration::from_secs(7200);
        a.ping();
        assert!(mirror.lock().dirty.contains(&Dirty::Node(a.producer().id)));
    }
}
