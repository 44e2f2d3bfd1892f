//! Read-side views of the registry, for the HTTP handlers.
//!
//! Everything here only loads snapshots: no writer lock is taken, and a
//! concurrent registration never makes a reader wait.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::key::{Category, Registration, RegistrationRef};
use super::producer::{IdHashing, Producer};
use super::{Encoding, KeyEntry, Nanos, Registry, SharedBody};
use crate::json;

/// What `/nodes` shows: every active identified producer with the topics
/// it is in, and until when that holds without a write.
#[derive(Debug)]
pub struct Nodes {
    pub nodes: Vec<NodeView>,
    /// Every topic name, in order; a node's topics are indexes into it.
    /// (One list of names that renderers escape once and copy per node: at
    /// `large` the five million names read one by one from wherever each
    /// topic key lives took most of a render in cache and TLB misses.)
    pub topics: Vec<Arc<str>>,
    /// The next time a listed producer turns inactive or a listed
    /// tombstone expires.
    pub valid_until: Nanos,
}

impl Nodes {
    /// The names of `node`'s topics, in order, each with "is it tombstoned
    /// now".
    pub fn topics_of<'a>(
        &'a self,
        node: &'a NodeView,
    ) -> impl Iterator<Item = (&'a str, bool)> + 'a {
        node.topics
            .iter()
            .map(|&(t, tombstoned)| (&*self.topics[t as usize], tombstoned))
    }
}

/// A producer as `/nodes` lists it.
#[derive(Debug)]
pub struct NodeView {
    pub producer: Arc<Producer>,
    /// The topics it is registered for (indexes into [`Nodes::topics`], in
    /// name order), each with "is it tombstoned now".
    pub topics: Vec<(u32, bool)>,
}

/// One key with producers, as `/debug` lists it.
#[derive(Debug)]
pub struct DebugEntry {
    pub registration: Registration,
    pub producers: Vec<DebugProducer>,
}

/// One (key, producer) pair as `/debug` lists it; times are Unix nanoseconds.
#[derive(Debug)]
pub struct DebugProducer {
    pub producer: Arc<Producer>,
    pub last_update: i64,
    pub tombstoned: bool,
    /// Go's zero time (`-6795364578871345152`) when never tombstoned.
    pub tombstoned_at: i64,
}

/// `time.Time{}.UnixNano()` in Go: what the original prints for "never".
pub const GO_ZERO_TIME_UNIX_NANOS: i64 = -6_795_364_578_871_345_152;

impl Registry {
    /// The `/lookup` answer for `topic`, or `None` when the topic key does
    /// not exist. Served from the topic's cache when current.
    pub fn lookup(&self, topic: &str) -> Option<SharedBody> {
        let now = self.clock.now();
        // Take the generation first, then read the data (see `cache.rs`).
        let (entry, generation) = {
            let t = self.topics.get(topic)?;
            match t.cache.get(now) {
                Ok(body) => return Some(body),
                Err(generation) => (Arc::clone(&t.entry), generation),
            }
        };
        let (body, valid_until) = self.render_lookup(topic, &entry, now);
        self.counts
            .lookup_renders
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.topics.get(topic) {
            t.cache.store(
                generation,
                now,
                valid_until,
                body.clone(),
                &self.lookup_budget,
            );
        }
        Some(body.into())
    }

    /// The `/lookup` answer in the encoding a client wants: gzip-compressed
    /// when it accepts gzip and the answer is worth compressing (each
    /// answer compressed once per change, when a gzip client asks for it a
    /// second time: the first gets it plain),
    /// plain otherwise; with the encoding it is in.
    pub fn lookup_as(&self, topic: &str, want: Encoding) -> Option<(SharedBody, Encoding)> {
        if want == Encoding::Identity || self.compression.gzip_level.is_none() {
            return self.lookup(topic).map(|b| (b, Encoding::Identity));
        }
        let now = self.clock.now();
        let (entry, current) = {
            let t = self.topics.get(topic)?;
            // The hit first, as `lookup` does: one load, one reference.
            if let Ok(gz) = t.cache.get_as(now, Encoding::Gzip) {
                return Some((gz, Encoding::Gzip));
            }
            // A small answer (most at `small`) stays plain for everyone:
            // the plain hit, as cheap as a plain reader's.
            if let Ok(plain) = t.cache.get(now)
                && !self.compression.worth_it(plain.len())
            {
                return Some((plain, Encoding::Identity));
            }
            (Arc::clone(&t.entry), t.cache.current(now))
        };
        Some(self.complete(
            current,
            want,
            true,
            now,
            || {
                self.counts.lookup_renders.fetch_add(1, Ordering::Relaxed);
                self.render_lookup(topic, &entry, now)
            },
            |fresh| match self.topics.get(topic) {
                Some(t) => t.cache.store_as(fresh, &self.lookup_budget),
                None => fresh.body.into(),
            },
        ))
    }

    /// The `/lookup` answer rendered from the current snapshots, bypassing
    /// the cache (what a lookup costs right after a change; benchmarks).
    pub fn lookup_uncached(&self, topic: &str) -> Option<Bytes> {
        let entry = self.topic_entry(topic)?;
        Some(self.render_lookup(topic, &entry, self.clock.now()).0)
    }

    /// Renders `{"channels":[..],"producers":[..]}` from the current
    /// snapshots, with the instant until which it stays true.
    fn render_lookup(&self, topic: &str, entry: &KeyEntry, now: u64) -> (Bytes, u64) {
        let channels = self.channels(topic);
        let set = entry.producers.load();
        let mut out = String::with_capacity(40 + channels.len() * 24 + set.len() * 224);
        out.push_str("{\"channels\":");
        json::push_str_array(&mut out, channels.iter().map(|c| &**c));
        out.push_str(",\"producers\":[");
        let mut valid_until = u64::MAX;
        let mut first = true;
        for member in set.members() {
            let Some(producer) = self.producers.get(&member.producer) else {
                continue; // its connection is being cleaned up
            };
            if member.is_tombstoned(now, self.tombstone_lifetime) {
                valid_until = valid_until.min(member.tombstoned_at + self.tombstone_lifetime);
                continue;
            }
            let last_update = producer.last_update();
            if now.saturating_sub(last_update) > self.inactive_timeout {
                continue; // a PING brings it back and invalidates this body
            }
            valid_until = valid_until.min(
                last_update
                    .saturating_add(self.inactive_timeout)
                    .saturating_add(1),
            );
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(producer.lookup_json());
        }
        out.push_str("]}");
        (Bytes::from(out), valid_until)
    }

    /// The channel names of `topic` (empty when it has none).
    pub fn channels(&self, topic: &str) -> Arc<[Arc<str>]> {
        self.channels_by_topic
            .get(topic)
            .map(|c| Arc::clone(c.value()))
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }

    /// Every topic key, with or without producers.
    pub fn topics(&self) -> Vec<Arc<str>> {
        let mut topics: Vec<Arc<str>> = self
            .topics
            .iter()
            .map(|t| Arc::clone(&t.entry.registration.key))
            .collect();
        topics.sort_unstable();
        topics
    }

    fn entries_of(&self, category: Category) -> Vec<Arc<KeyEntry>> {
        self.registrations
            .iter()
            .filter(|e| e.key().category == category)
            .map(|e| Arc::clone(e.value()))
            .collect()
    }

    /// `/nodes`: every active identified producer (tombstoned ones
    /// included) with the topics it is in, and until when that holds.
    pub fn nodes(&self) -> Nodes {
        let now = self.clock.now();
        let Some(client) = self.entry(RegistrationRef::client()) else {
            return Nodes {
                nodes: Vec::new(),
                topics: Vec::new(),
                valid_until: Nanos::MAX,
            };
        };
        let mut valid_until = Nanos::MAX;
        let mut nodes: Vec<NodeView> = client
            .producers
            .load()
            .members()
            .iter()
            .filter_map(|m| {
                self.producers
                    .get(&m.producer)
                    .map(|p| Arc::clone(p.value()))
            })
            .filter(|p| p.is_active(now, self.inactive_timeout))
            .map(|producer| {
                // `is_active` holds while `now - last_update <= timeout`.
                valid_until = valid_until.min(
                    producer
                        .last_update()
                        .saturating_add(self.inactive_timeout)
                        .saturating_add(1),
                );
                NodeView {
                    producer,
                    topics: Vec::new(),
                }
            })
            .collect();
        let index: HashMap<u64, usize, IdHashing> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.producer.id, i))
            .collect();
        // Topics in name order, so that each node's list comes out sorted
        // (one sort of the topics instead of one per node: at `large`, 500
        // sorts of 10,000 names took most of a /nodes render).
        let mut entries = self.entries_of(Category::Topic);
        entries.sort_unstable_by(|a, b| a.registration.key.cmp(&b.registration.key));
        for (t, entry) in entries.iter().enumerate() {
            for member in entry.producers.load().members() {
                if let Some(&i) = index.get(&member.producer) {
                    let tombstoned = member.is_tombstoned(now, self.tombstone_lifetime);
                    if tombstoned {
                        valid_until = valid_until
                            .min(member.tombstoned_at.saturating_add(self.tombstone_lifetime));
                    }
                    nodes[i].topics.push((t as u32, tombstoned));
                }
            }
        }
        Nodes {
            nodes,
            topics: entries
                .iter()
                .map(|e| Arc::clone(&e.registration.key))
                .collect(),
            valid_until,
        }
    }

    /// `/debug`: every key that has producers, with each pair's raw state.
    pub fn debug(&self) -> Vec<DebugEntry> {
        let mut entries: Vec<DebugEntry> = Vec::new();
        for category in [Category::Channel, Category::Client, Category::Topic] {
            for entry in self.entries_of(category) {
                let producers: Vec<DebugProducer> = entry
                    .producers
                    .load()
                    .members()
                    .iter()
                    .filter_map(|m| {
                        let producer = Arc::clone(self.producers.get(&m.producer)?.value());
                        Some(DebugProducer {
                            last_update: self.clock.to_unix_nanos(producer.last_update()),
                            tombstoned: m.was_tombstoned(),
                            tombstoned_at: if m.was_tombstoned() {
                                self.clock.to_unix_nanos(m.tombstoned_at)
                            } else {
                                GO_ZERO_TIME_UNIX_NANOS
                            },
                            producer,
                        })
                    })
                    .collect();
                if !producers.is_empty() {
                    entries.push(DebugEntry {
                        registration: entry.registration.clone(),
                        producers,
                    });
                }
            }
        }
        entries.sort_by_key(|e| e.registration.to_string());
        entries
    }

    /// Number of identified producers (connections past IDENTIFY).
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// Number of registration keys, all categories.
    pub fn key_count(&self) -> usize {
        self.registrations.len()
    }
}
