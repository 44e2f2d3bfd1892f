//! The registration database: which nsqd carries which topic and channel.
//!
//! Owns all shared state and knows nothing about sockets, HTTP or JSON
//! requests; the TCP session drives it through a [`ProducerHandle`], the
//! HTTP handlers through the read methods and the admin writes below.
//!
//! Layout:
//! - `registrations`: a `DashMap` keyed by `(category, key, subkey)` (the
//!   original's model). Each [`KeyEntry`] holds an `ArcSwap` of an immutable
//!   [`ProducerSet`]: readers load it without waiting, writers publish a new
//!   one (copy on write).
//! - `topics`: the topic keys' entries again, by name alone, each with its
//!   cached `/lookup` answer: the map every lookup probes (see the field).
//! - `channels_by_topic`: the channel names of each topic, so `/lookup`,
//!   `/channels`, `UNREGISTER topic` and `/topic/delete` touch one topic's
//!   channels instead of scanning every key as the original does.
//! - `producers`: peer info by [`ProducerId`]; sets hold ids, not copies.
//! - Each producer's own keys live in its [`ProducerHandle`] (owned by its
//!   connection), so cleaning up a closed connection touches only its keys.
//! - Rendered answers (`cache`): each topic's `/lookup` body, and the
//!   `/topics` and `/nodes` bodies, tagged with `changes`, a counter every
//!   writer bumps, so that an answer is rendered once per change, not once
//!   per request; each kept plain, gzip-compressed (`gzip`: for clients that
//!   accept it), or both, as readers ask.
//!
//! - Global caps on what a fleet may make it hold (`caps.rs`:
//!   `--max-registrations`, `--max-keys`), checked by the capped writes.
//!
//! - An optional [`Observer`] hears of every write (see `observer.rs`):
//!   the cluster replicator follows this replica's own writes through it.
//!
//! Writers (registrations, admin endpoints) serialise on one `std` mutex.
//! Why one lock: each protocol operation of the original is a compound
//! read-modify-write across several keys ("remove the producer, and the key
//! too if it was the last one and the name is ephemeral"); a single writer
//! lock makes every such operation atomic exactly as the original's
//! `RWMutex` did, it is held for microseconds (never across an `.await`,
//! hence `std` and not `tokio`'s mutex), and readers never take it, which
//! is the part of the original's design that hurt. Cleaning up a closed
//! connection takes it once per key, so a large producer going away does
//! not stall other writers.

mod cache;
mod caps;
mod clock;
mod gzip;
mod key;
mod observer;
mod producer;
mod snapshot;
mod views;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use compact_str::CompactString;
use dashmap::DashMap;
use tracing::{debug, info, warn};

pub use clock::{Clock, Nanos, duration_nanos};
pub use key::{Category, KeyView, Registration, RegistrationRef};
pub use observer::{Change, Observer};
use producer::IdHashing;
pub use producer::{PeerInfo, Producer, ProducerId};
pub use snapshot::{Member, ProducerSet};
pub use views::{DebugEntry, DebugProducer, GO_ZERO_TIME_UNIX_NANOS, NodeView, Nodes};

use cache::{CacheBudget, Fresh, LookupCache, ViewSlot};
pub use cache::{Encoding, Generation, SharedBody};
pub use caps::{CapHit, Caps, DEFAULT_MAX_KEYS, DEFAULT_MAX_REGISTRATIONS};
pub use gzip::Compression;

/// The registry's timing rules (spec section 2).
#[derive(Clone, Copy, Debug)]
pub struct RegistryOptions {
    /// A producer not heard from (IDENTIFY/PING) for longer is hidden from
    /// `/lookup` and `/nodes`.
    pub inactive_producer_timeout: Duration,
    /// How long `/topic/tombstone` hides a producer from a topic's `/lookup`.
    pub tombstone_lifetime: Duration,
    /// Bytes all cached `/lookup` answers may use together.
    pub lookup_cache_size: usize,
    /// How answers are compressed for gzip clients.
    pub compression: Compression,
    /// What REGISTER and the admin creates may add (see `caps.rs`).
    pub caps: Caps,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            inactive_producer_timeout: Duration::from_secs(300),
            tombstone_lifetime: Duration::from_secs(45),
            lookup_cache_size: 1 << 30,
            compression: Compression::default(),
            caps: Caps::default(),
        }
    }
}

/// One registration key and its current producers.
#[derive(Debug)]
pub struct KeyEntry {
    registration: Registration,
    producers: ArcSwap<ProducerSet>,
    /// Set when the key is removed from the map (an admin delete or the
    /// ephemeral rule); handles may still hold it, but it no longer counts.
    removed: AtomicBool,
}

impl KeyEntry {
    fn new(registration: Registration) -> Self {
        KeyEntry {
            registration,
            producers: ArcSwap::from_pointee(ProducerSet::default()),
            removed: AtomicBool::new(false),
        }
    }

    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    /// The current producer set (a lock-free load).
    pub fn producers(&self) -> Arc<ProducerSet> {
        self.producers.load_full()
    }
}

/// A topic key as `/lookup` finds it: its entry and its cached answer.
#[derive(Debug)]
struct TopicLookup {
    entry: Arc<KeyEntry>,
    cache: LookupCache,
}

/// Running totals, kept by the writers so that reporting them costs
/// nothing (no scan of the registry at scrape time).
#[derive(Debug, Default)]
pub struct Counts {
    /// Topic keys.
    pub topics: AtomicU64,
    /// Channel keys.
    pub channels: AtomicU64,
    /// (key, producer) pairs, all categories.
    pub registrations: AtomicU64,
    /// `/lookup` answers rendered (cache misses).
    pub lookup_renders: AtomicU64,
    /// `/topics` and `/nodes` answers rendered (cache misses).
    pub view_renders: AtomicU64,
    /// Cached answers (`/lookup`, `/topics`, `/nodes`) gzip-compressed.
    pub gzip_renders: AtomicU64,
}

impl Counts {
    fn key_gauge(&self, category: Category) -> Option<&AtomicU64> {
        match category {
            Category::Topic => Some(&self.topics),
            Category::Channel => Some(&self.channels),
            Category::Client => None,
        }
    }
}

/// The registration database. Share it as `Arc<Registry>`.
#[derive(Debug)]
pub struct Registry {
    registrations: DashMap<Registration, Arc<KeyEntry>>,
    /// The topic keys of `registrations` again, by name, each with its
    /// cached `/lookup` answer. Every `/lookup` probes this map and, when
    /// the answer is current, touches nothing else but the answer: names of
    /// up to 24 bytes sit in the bucket itself (no string fetched from
    /// elsewhere to compare), next to the cache's generation and body
    /// pointer (no entry fetched either), and the map holds topics only, a
    /// fifth of the keys of a fleet with four channels a topic, so more of
    /// it stays in the CPU's cache. On such a registry (10,000 topics) the
    /// chain of cache misses through `registrations` was a third of the
    /// server's user time per lookup. Kept in step with `registrations` by
    /// `ensure_key` and `remove_key`, under the writer lock.
    topics: DashMap<CompactString, TopicLookup>,
    channels_by_topic: DashMap<Arc<str>, Arc<[Arc<str>]>>,
    producers: DashMap<ProducerId, Arc<Producer>, IdHashing>,
    write_lock: Mutex<()>,
    next_producer_id: AtomicU64,
    counts: Counts,
    lookup_budget: Arc<CacheBudget>,
    compression: Compression,
    /// Bumped after every change a whole-registry view can show.
    changes: AtomicU64,
    /// The cached `/topics` and `/nodes` bodies, by [`WholeView`].
    views: [ViewSlot; 2],
    clock: Clock,
    inactive_timeout: Nanos,
    tombstone_lifetime: Nanos,
    /// Told of every write (see [`Registry::report`]).
    observer: Option<Arc<dyn Observer>>,
    /// `--max-registrations`, `--max-keys` (see `caps.rs`).
    caps: Caps,
    /// The process is exiting (see [`Registry::close`]).
    closing: AtomicBool,
}

impl Registry {
    pub fn new(options: RegistryOptions) -> Self {
        Registry::with_observer(options, None)
    }

    /// A registry whose writes are reported to `observer`.
    pub fn with_observer(options: RegistryOptions, observer: Option<Arc<dyn Observer>>) -> Self {
        Registry {
            registrations: DashMap::new(),
            topics: DashMap::new(),
            channels_by_topic: DashMap::new(),
            producers: DashMap::default(),
            write_lock: Mutex::new(()),
            next_producer_id: AtomicU64::new(1),
            counts: Counts::default(),
            lookup_budget: Arc::new(CacheBudget::new(options.lookup_cache_size)),
            compression: options.compression,
            changes: AtomicU64::new(0),
            views: Default::default(),
            clock: Clock::new(),
            inactive_timeout: duration_nanos(options.inactive_producer_timeout),
            tombstone_lifetime: duration_nanos(options.tombstone_lifetime),
            observer,
            caps: options.caps,
            closing: AtomicBool::new(false),
        }
    }

    /// Reports `change` to the observer, if there is one: as
    /// [`Observer::changed`] when `observed`, else as [`Observer::applied`].
    fn report(&self, observed: bool, change: Change<'_>) {
        if let Some(observer) = &self.observer {
            if observed {
                observer.changed(change);
            } else {
                observer.applied(change);
            }
        }
    }

    /// The admin writes for the observer's own use: reported to
    /// [`Observer::applied`], not [`Observer::changed`].
    pub fn unobserved(&self) -> Unobserved<'_> {
        Unobserved(self)
    }

    /// How long a tombstone hides a producer (`--tombstone-lifetime`).
    pub fn tombstone_lifetime(&self) -> Duration {
        Duration::from_nanos(self.tombstone_lifetime)
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Running totals (for metrics).
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Bytes of `/lookup` answers currently cached.
    pub fn lookup_cache_bytes(&self) -> usize {
        self.lookup_budget.used()
    }

    /// Takes the writer lock. A panic while holding it cannot leave a
    /// half-applied change visible (every change is a single store), so a
    /// poisoned lock is simply taken over.
    fn lock(&self) -> MutexGuard<'_, ()> {
        self.write_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the whole-registry views out of date, and returns the new
    /// value of the counter. Call *after* the change (see `cache.rs` for
    /// why the order matters).
    fn changed(&self) -> u64 {
        self.changes.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// After a change to what `topic`'s `/lookup` shows: its answer and the
    /// whole-registry views are out of date.
    ///
    /// A topic's cache takes its generations from the registry-wide
    /// counter, a fresh value each time (here and at creation), not from a
    /// counter of its own: no value is ever stored twice, in any topic, so
    /// a reader that rendered from a topic key since deleted and created
    /// again (a reader finds the cache by name, again, to store) cannot
    /// pass its answer off as current for the new key.
    fn topic_changed(&self, topic: &str) {
        let generation = self.changed();
        if let Some(t) = self.topics.get(topic) {
            t.cache.invalidate(generation);
        }
    }

    /// After a change to `entry`'s producers (or its removal).
    fn entry_changed(&self, entry: &KeyEntry) {
        match entry.registration.category {
            Category::Topic => self.topic_changed(&entry.registration.key),
            _ => {
                self.changed();
            }
        }
    }

    /// The process is exiting: producers dropped from now on are not
    /// taken out of their keys. Nobody reads the registry any more, and
    /// taking a fleet's registrations out one by one held shutdown for
    /// seconds (2.4 s for the medium fleet: every TCP session dropped on
    /// the async thread at once, each removing its 5,000 registrations).
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// How answers are compressed.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// `view` in the encoding a client wants (gzip when it is worth it),
    /// from the cache only: `Err` when it must be made off the reactor with
    /// [`Registry::make_view`].
    pub fn cached_view_as(
        &self,
        view: WholeView,
        want: Encoding,
    ) -> Result<(SharedBody, Encoding), Generation> {
        let generation = self.changes.load(Ordering::Acquire);
        let Some(r) = self.views[view as usize].current(generation, self.clock.now()) else {
            return Err(Generation(generation));
        };
        if want == Encoding::Gzip {
            if let Some(gz) = r.serve(Encoding::Gzip) {
                return Ok((gz, Encoding::Gzip));
            }
            if r.plain()
                .is_some_and(|p| self.compression.worth_it(p.len()))
            {
                return Err(Generation(generation)); // to compress, off the reactor
            }
        }
        match r.serve(Encoding::Identity) {
            Some(plain) => Ok((plain, Encoding::Identity)),
            None => Err(Generation(generation)),
        }
    }

    /// Makes `view` in the encoding wanted (blocking: call it off the
    /// reactor): completes the current rendering with the missing encoding,
    /// or renders it with `render` (the body and until when it is true)
    /// and keeps it. A compressed view that finds the cache full takes the
    /// room of plain lookup bodies (see [`Registry::make_room`]).
    pub fn make_view(
        &self,
        view: WholeView,
        want: Encoding,
        generation: Generation,
        render: impl FnOnce(&Registry) -> (Bytes, Nanos),
    ) -> (SharedBody, Encoding) {
        let slot = &self.views[view as usize];
        let now = self.clock.now();
        let current = slot.current(generation.0, now).ok_or(generation);
        self.complete(
            current,
            want,
            false,
            now,
            || {
                self.counts.view_renders.fetch_add(1, Ordering::Relaxed);
                render(self)
            },
            |fresh| {
                let compressed = fresh.encoding == Encoding::Gzip;
                let kept = slot.store_as(fresh.clone(), &self.lookup_budget);
                if compressed && !kept.is_cached() && self.make_room(fresh.body.len()) {
                    slot.store_as(fresh, &self.lookup_budget)
                } else {
                    kept
                }
            },
        )
    }

    /// Gives up plain `/lookup` bodies (their compressed ones stay) until
    /// the cache has room for `n` bytes; whether it has. Walks the topics:
    /// for a compressed whole view only, made off the reactor, whose
    /// rendering costs far more than the lookups it displaces.
    fn make_room(&self, n: usize) -> bool {
        let budget = &self.lookup_budget;
        if n > budget.limit() {
            return false;
        }
        for t in self.topics.iter() {
            if budget.room() >= n {
                break;
            }
            t.cache.give_up_plain();
        }
        budget.room() >= n
    }

    /// The shared step of cached answers in an encoding: from `current`
    /// (the answer's current rendering, or the generation to tag a new one
    /// with), serve `want` if it is there; else add it (compress the plain
    /// body once, or render the plain one again); with no current
    /// rendering, render with `render` (the body and until when it holds).
    /// `keep` keeps what was made (see `ViewSlot::store_as`). With `defer`,
    /// an answer is compressed when a gzip reader asks for it a second
    /// time (lookups); otherwise at the first (whole views, too costly to
    /// send plain).
    fn complete(
        &self,
        current: Result<Arc<cache::Rendered>, Generation>,
        want: Encoding,
        defer: bool,
        now: Nanos,
        render: impl FnOnce() -> (Bytes, Nanos),
        keep: impl Fn(Fresh) -> SharedBody,
    ) -> (SharedBody, Encoding) {
        let c = self.compression;
        let generation = match &current {
            Ok(r) => r.generation(),
            Err(g) => g.0,
        };
        let fresh = |valid_until, encoding, body, plain_len| Fresh {
            generation,
            now,
            valid_until,
            encoding,
            body,
            plain_len,
            for_gzip: false,
        };
        if let Ok(r) = current {
            if let Some(body) = r.serve(want) {
                return (body, want);
            }
            return match (want, r.plain()) {
                (Encoding::Gzip, Some(plain)) if !c.worth_it(plain.len()) => (
                    r.serve(Encoding::Identity).expect("kept"),
                    Encoding::Identity,
                ),
                (Encoding::Gzip, Some(plain)) => {
                    let plain = plain.clone();
                    match r.compress_once(|| c.gzip(&plain)) {
                        Some(gz) => {
                            self.counts.gzip_renders.fetch_add(1, Ordering::Relaxed);
                            let gz = fresh(r.valid_until(), Encoding::Gzip, gz, plain.len());
                            (keep(gz), Encoding::Gzip)
                        }
                        // Another reader is compressing it: plain this time.
                        None => (
                            r.serve(Encoding::Identity).expect("kept"),
                            Encoding::Identity,
                        ),
                    }
                }
                // Only the compressed body is kept: render the plain one.
                _ => {
                    let (body, _) = render();
                    let len = body.len();
                    let plain = fresh(r.valid_until(), Encoding::Identity, body, len);
                    (keep(plain), Encoding::Identity)
                }
            };
        }
        let (body, valid_until) = render();
        let len = body.len();
        if want == Encoding::Gzip && c.worth_it(len) && defer {
            // The first gzip reader since the change gets it plain; the
            // next one compresses it. An answer that changes before it is
            // read again (a topic of a node that reconnects, under churn)
            // is then never compressed for nothing.
            let plain = Fresh {
                for_gzip: true,
                ..fresh(valid_until, Encoding::Identity, body.clone(), len)
            };
            let kept = keep(plain);
            if kept.is_cached() {
                return (kept, Encoding::Identity);
            }
            // No room to remember it plain: compressed now, and kept in a
            // tenth of the room if that is there.
        }
        if want == Encoding::Gzip && c.worth_it(len) {
            self.counts.gzip_renders.fetch_add(1, Ordering::Relaxed);
            let gz = fresh(valid_until, Encoding::Gzip, c.gzip(&body), len);
            (keep(gz), Encoding::Gzip)
        } else {
            (
                keep(fresh(valid_until, Encoding::Identity, body, len)),
                Encoding::Identity,
            )
        }
    }

    fn entry(&self, r: RegistrationRef<'_>) -> Option<Arc<KeyEntry>> {
        self.registrations
            .get(&r as &dyn KeyView)
            .map(|e| Arc::clone(e.value()))
    }

    /// The entry of the topic key `topic` (through `topics`).
    fn topic_entry(&self, topic: &str) -> Option<Arc<KeyEntry>> {
        self.topics.get(topic).map(|t| Arc::clone(&t.entry))
    }

    // ---- single-key steps; callers hold the writer lock ----

    /// The entry of `r`, created (with no producers) if missing.
    fn ensure_key(&self, r: RegistrationRef<'_>) -> Arc<KeyEntry> {
        if let Some(e) = self.entry(r) {
            return e;
        }
        let registration = r.to_owned();
        let entry = Arc::new(KeyEntry::new(registration.clone()));
        self.registrations
            .insert(registration.clone(), Arc::clone(&entry));
        if let Some(gauge) = self.counts.key_gauge(r.category) {
            gauge.fetch_add(1, Ordering::Relaxed);
        }
        match r.category {
            Category::Topic => {
                let cache = LookupCache::new(self.changed());
                let entry = Arc::clone(&entry);
                self.topics
                    .insert(CompactString::from(r.key), TopicLookup { entry, cache });
            }
            Category::Channel => self.index_channel(&registration.key, &registration.subkey, true),
            Category::Client => {}
        }
        self.changed();
        entry
    }

    /// Removes the key `r` (and its producers); true if it existed.
    fn remove_key(&self, r: RegistrationRef<'_>) -> bool {
        let Some((registration, entry)) = self.registrations.remove(&r as &dyn KeyView) else {
            return false;
        };
        match registration.category {
            Category::Topic => {
                self.topics.remove(&*registration.key);
            }
            Category::Channel => self.index_channel(&registration.key, &registration.subkey, false),
            Category::Client => {}
        }
        if let Some(gauge) = self.counts.key_gauge(registration.category) {
            gauge.fetch_sub(1, Ordering::Relaxed);
        }
        entry.removed.store(true, Ordering::Relaxed);
        let members = entry.producers.load().len() as u64;
        self.counts
            .registrations
            .fetch_sub(members, Ordering::Relaxed);
        self.entry_changed(&entry);
        true
    }

    /// Adds or removes `channel` in the channel list of `topic`.
    fn index_channel(&self, topic: &Arc<str>, channel: &Arc<str>, present: bool) {
        let current = self.channels(topic);
        let mut next: Vec<Arc<str>> = current.to_vec();
        match (next.binary_search(channel), present) {
            (Err(at), true) => next.insert(at, Arc::clone(channel)),
            (Ok(at), false) => {
                next.remove(at);
            }
            _ => return,
        }
        if next.is_empty() {
            self.channels_by_topic.remove(&**topic);
        } else {
            self.channels_by_topic
                .insert(Arc::clone(topic), next.into());
        }
        self.topic_changed(topic);
    }

    /// Adds `producer` to `entry`; false if it was already there.
    fn add_member(&self, entry: &KeyEntry, producer: ProducerId) -> bool {
        match entry.producers.load().with(producer) {
            Some(next) => {
                entry.producers.store(Arc::new(next));
                self.entry_changed(entry);
                self.counts.registrations.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Removes `producer` from `entry`: (was it there, how many are left).
    fn remove_member(&self, entry: &KeyEntry, producer: ProducerId) -> (bool, usize) {
        let current = entry.producers.load();
        match current.without(producer) {
            Some(next) => {
                let left = next.len();
                entry.producers.store(Arc::new(next));
                self.entry_changed(entry);
                if !entry.removed.load(Ordering::Relaxed) {
                    self.counts.registrations.fetch_sub(1, Ordering::Relaxed);
                }
                (true, left)
            }
            None => (false, current.len()),
        }
    }

    // ---- producers (driven by TCP sessions) ----

    /// Registers an identified connection under the `client` key and
    /// returns the handle its session drives the registry with.
    pub fn identify(self: &Arc<Self>, peer: PeerInfo) -> ProducerHandle {
        self.identify_as(peer, true)
    }

    /// [`Registry::identify`] for the observer's own producers (copies of
    /// producers held elsewhere): nothing done through the handle is
    /// reported.
    pub fn identify_unobserved(self: &Arc<Self>, peer: PeerInfo) -> ProducerHandle {
        self.identify_as(peer, false)
    }

    fn identify_as(self: &Arc<Self>, peer: PeerInfo, observed: bool) -> ProducerHandle {
        let _w = self.lock();
        let id = self.next_producer_id.fetch_add(1, Ordering::Relaxed);
        let producer = Arc::new(Producer::new(id, peer, self.clock.now()));
        self.producers.insert(id, Arc::clone(&producer));
        let client = self.ensure_key(RegistrationRef::client());
        if self.add_member(&client, id) {
            debug!(
                peer = %producer.peer.remote_address,
                "DB: client({}) REGISTER category:client key: subkey:",
                producer.peer.remote_address
            );
        }
        if observed {
            self.report(true, Change::Identified(&producer));
        }
        let mut keys = KeyList::default();
        keys.joined(client, id);
        ProducerHandle {
            registry: Arc::clone(self),
            producer,
            keys,
            observed,
        }
    }

    // ---- admin writes (HTTP) ----

    /// `POST /topic/create`: makes sure the topic key exists.
    pub fn create_topic(&self, topic: &str) {
        self.admin_create_topic(topic, true);
    }

    /// `POST /topic/delete`: removes the topic key and all its channel keys.
    pub fn delete_topic(&self, topic: &str) {
        self.admin_delete_topic(topic, true);
    }

    /// `POST /channel/create`: makes sure the channel key and its topic key exist.
    pub fn create_channel(&self, topic: &str, channel: &str) {
        self.admin_create_channel(topic, channel, true);
    }

    /// `POST /channel/delete`: removes the channel key; false if there was none.
    pub fn delete_channel(&self, topic: &str, channel: &str) -> bool {
        self.admin_delete_channel(topic, channel, true)
    }

    /// `POST /topic/tombstone`: tombstones, for `topic` only, every producer
    /// whose `broadcast_address:http_port` is `node`. Returns how many.
    pub fn tombstone(&self, topic: &str, node: &str) -> usize {
        self.admin_tombstone(topic, node, true)
    }

    // Each admin write reports under the writer lock, so that an observer
    // keeping its own state sees it in the same order as the registrations
    // around it.

    fn admin_create_topic(&self, topic: &str, observed: bool) {
        let _w = self.lock();
        self.ensure_key(RegistrationRef::topic(topic));
        self.report(observed, Change::TopicCreated(topic));
    }

    fn admin_delete_topic(&self, topic: &str, observed: bool) {
        let _w = self.lock();
        for channel in self.channels(topic).iter() {
            self.remove_key(RegistrationRef::channel(topic, channel));
        }
        self.remove_key(RegistrationRef::topic(topic));
        self.report(observed, Change::TopicDeleted(topic));
    }

    fn admin_create_channel(&self, topic: &str, channel: &str, observed: bool) {
        let _w = self.lock();
        self.ensure_key(RegistrationRef::channel(topic, channel));
        self.ensure_key(RegistrationRef::topic(topic));
        self.report(observed, Change::ChannelCreated { topic, channel });
    }

    fn admin_delete_channel(&self, topic: &str, channel: &str, observed: bool) -> bool {
        let _w = self.lock();
        let existed = self.remove_key(RegistrationRef::channel(topic, channel));
        self.report(observed, Change::ChannelDeleted { topic, channel });
        existed
    }

    fn admin_tombstone(&self, topic: &str, node: &str, observed: bool) -> usize {
        let _w = self.lock();
        let mut hit = Vec::new();
        if let Some(entry) = self.topic_entry(topic) {
            let current = entry.producers.load();
            hit.extend(current.members().iter().map(|m| m.producer).filter(|id| {
                self.producers
                    .get(id)
                    .is_some_and(|p| p.peer.node_address() == node)
            }));
            if let Some(next) = current.with_tombstones(&hit, self.clock.now()) {
                entry.producers.store(Arc::new(next));
                self.entry_changed(&entry);
            }
        }
        self.report(observed, Change::Tombstoned { topic, node });
        hit.len()
    }
}

/// The admin writes of [`Registry`] for its observer's own use: reported
/// to [`Observer::applied`], not [`Observer::changed`].
#[derive(Clone, Copy, Debug)]
pub struct Unobserved<'a>(&'a Registry);

impl Unobserved<'_> {
    pub fn create_topic(self, topic: &str) {
        self.0.admin_create_topic(topic, false);
    }

    pub fn delete_topic(self, topic: &str) {
        self.0.admin_delete_topic(topic, false);
    }

    pub fn create_channel(self, topic: &str, channel: &str) {
        self.0.admin_create_channel(topic, channel, false);
    }

    pub fn delete_channel(self, topic: &str, channel: &str) -> bool {
        self.0.admin_delete_channel(topic, channel, false)
    }

    pub fn tombstone(self, topic: &str, node: &str) -> usize {
        self.0.admin_tombstone(topic, node, false)
    }
}

/// The keys a producer joined.
///
/// A plain vector of entry pointers, 8 bytes a key, because a fleet node
/// may be in 50,000 keys and there is one list per node. Joining appends;
/// leaving only counts (no search). When the vector grows past twice the
/// number of keys the producer is really in, it is compacted: entries the
/// producer has left, entries an admin deleted, and duplicates (left, then
/// joined again) are dropped. Cleaning up a closed connection removes the
/// producer from every listed entry; a stale one is a no-op there.
#[derive(Debug, Default)]
struct KeyList {
    entries: Vec<Arc<KeyEntry>>,
    /// Keys the producer is in (exact after a compaction; between two, it
    /// may still count keys an admin deleted).
    live: usize,
}

impl KeyList {
    fn joined(&mut self, entry: Arc<KeyEntry>, producer: ProducerId) {
        self.entries.push(entry);
        self.live += 1;
        if self.entries.len() > 2 * self.live + 32 {
            self.compact(producer);
        }
    }

    fn left(&mut self) {
        self.live = self.live.saturating_sub(1);
    }

    fn compact(&mut self, producer: ProducerId) {
        self.entries.retain(|e| {
            !e.removed.load(Ordering::Relaxed) && e.producers.load().get(producer).is_some()
        });
        self.entries
            .sort_unstable_by_key(|e| Arc::as_ptr(e) as usize);
        self.entries.dedup_by(|a, b| Arc::ptr_eq(a, b));
        self.live = self.entries.len();
    }
}

/// The whole-registry views that are cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WholeView {
    Topics = 0,
    Nodes = 1,
}

/// What REGISTER changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegisterOutcome {
    pub channel_added: bool,
    pub topic_added: bool,
}

/// An identified connection's view of the registry.
///
/// Owned by the connection's session; dropping it (for any reason: EOF,
/// fatal error, shutdown, a panic) removes the producer from every key it
/// is in, which is the protocol's rule for a closed connection.
#[derive(Debug)]
pub struct ProducerHandle {
    registry: Arc<Registry>,
    producer: Arc<Producer>,
    /// Every key this producer joined (and may still be in).
    keys: KeyList,
    /// Whether its changes are reported to the registry's observer.
    observed: bool,
}

impl ProducerHandle {
    pub fn producer(&self) -> &Arc<Producer> {
        &self.producer
    }

    /// Number of keys this producer is registered in (the `client` key
    /// included; keys an admin deleted may count until the list is next
    /// compacted).
    pub fn registration_count(&self) -> usize {
        self.keys.live
    }

    fn addr(&self) -> &str {
        &self.producer.peer.remote_address
    }

    /// Tells the observer of this producer's change, if it is observed.
    fn report(&self, change: Change<'_>) {
        if self.observed {
            self.registry.report(true, change);
        }
    }

    /// PING: refreshes the last-update time; returns the time since the previous one.
    pub fn ping(&self) -> Duration {
        let registry = &self.registry;
        let now = registry.clock.now();
        let previous = self.producer.touch(now);
        let silent = now.saturating_sub(previous);
        if silent > registry.inactive_timeout {
            // It was hidden as inactive; the cached lookups that left it out
            // are wrong from now on.
            for key in &self.keys.entries {
                if key.registration.category == Category::Topic {
                    registry.topic_changed(&key.registration.key);
                }
            }
            registry.changed();
        }
        self.report(Change::Pinged(&self.producer));
        Duration::from_nanos(silent)
    }

    /// REGISTER topic [channel]. Names must already be valid.
    pub fn register(&mut self, topic: &str, channel: Option<&str>) -> RegisterOutcome {
        let registry = Arc::clone(&self.registry);
        let _w = registry.lock();
        self.register_locked(topic, channel)
    }

    /// [`ProducerHandle::register`] with the writer lock held.
    fn register_locked(&mut self, topic: &str, channel: Option<&str>) -> RegisterOutcome {
        let registry = Arc::clone(&self.registry);
        let id = self.producer.id;
        let mut outcome = RegisterOutcome::default();
        if let Some(channel) = channel {
            let entry = registry.ensure_key(RegistrationRef::channel(topic, channel));
            outcome.channel_added = registry.add_member(&entry, id);
            if outcome.channel_added {
                debug!(peer = %self.addr(), topic, channel,
                    "DB: client({}) REGISTER category:channel key:{topic} subkey:{channel}", self.addr());
                self.keys.joined(entry, id);
            }
        }
        let entry = registry.ensure_key(RegistrationRef::topic(topic));
        outcome.topic_added = registry.add_member(&entry, id);
        if outcome.topic_added {
            debug!(peer = %self.addr(), topic,
                "DB: client({}) REGISTER category:topic key:{topic} subkey:", self.addr());
            self.keys.joined(entry, id);
        }
        if outcome.topic_added || outcome.channel_added {
            let producer = &self.producer;
            self.report(Change::Registered {
                producer,
                topic,
                channel,
            });
        }
        outcome
    }

    /// Removes this producer from one key; returns how many producers are left.
    fn leave(&mut self, r: RegistrationRef<'_>) -> (bool, usize) {
        let Some(entry) = self.registry.entry(r) else {
            return (false, 0);
        };
        let (removed, left) = self.registry.remove_member(&entry, self.producer.id);
        if removed {
            self.keys.left();
        }
        (removed, left)
    }

    /// UNREGISTER topic [channel]. Names must already be valid.
    pub fn unregister(&mut self, topic: &str, channel: Option<&str>) {
        let registry = Arc::clone(&self.registry);
        let _w = registry.lock();
        match channel {
            Some(channel) => {
                let (removed, left) = self.leave(RegistrationRef::channel(topic, channel));
                if removed {
                    debug!(peer = %self.addr(), topic, channel,
                        "DB: client({}) UNREGISTER category:channel key:{topic} subkey:{channel}", self.addr());
                }
                if left == 0 && crate::names::is_ephemeral(channel) {
                    registry.remove_key(RegistrationRef::channel(topic, channel));
                }
            }
            None => {
                // Leaving a topic leaves its channels too; nsqd normally
                // unregisters them first, so anything found here is unusual.
                for channel in registry.channels(topic).iter() {
                    let (removed, _) = self.leave(RegistrationRef::channel(topic, channel));
                    if removed {
                        warn!(peer = %self.addr(), topic, channel = &**channel,
                            "client({}) unexpected UNREGISTER category:channel key:{topic} subkey:{channel}", self.addr());
                    }
                }
                let (removed, left) = self.leave(RegistrationRef::topic(topic));
                if removed {
                    debug!(peer = %self.addr(), topic,
                        "DB: client({}) UNREGISTER category:topic key:{topic} subkey:", self.addr());
                }
                if left == 0 && crate::names::is_ephemeral(topic) {
                    registry.remove_key(RegistrationRef::topic(topic));
                }
            }
        }
        let producer = &self.producer;
        self.report(Change::Unregistered {
            producer,
            topic,
            channel,
        });
    }
}

impl Drop for ProducerHandle {
    fn drop(&mut self) {
        let registry = &self.registry;
        if registry.closing.load(Ordering::Acquire) {
            return; // the process is exiting (see `Registry::close`)
        }
        let id = self.producer.id;
        let count = self.keys.live;
        for entry in self.keys.entries.drain(..) {
            let _w = registry.lock();
            if registry.remove_member(&entry, id).0 {
                let r = entry.registration.view();
                debug!(peer = %self.producer.peer.remote_address,
                    "DB: client({}) UNREGISTER category:{} key:{} subkey:{}",
                    self.producer.peer.remote_address, r.category.as_str(), r.key, r.subkey);
            }
        }
        registry.producers.remove(&id);
        registry.changed();
        self.report(Change::Removed(&self.producer));
        info!(peer = %self.producer.peer.remote_address, registrations = count,
            "DB: client({}) removed from {count} registrations", self.producer.peer.remote_address);
    }
}

#[cfg(test)]
mod tests;
