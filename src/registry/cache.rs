//! Rendered answers kept for the next reader: the `/lookup` answer of each
//! topic, and the whole-registry views `/topics` and `/nodes`.
//!
//! A lookup is the hot read: consumers poll it for every topic they read.
//! Each topic key keeps the fully rendered answer, so a lookup is a map
//! probe, two atomic loads and a reference-count increment, served as a
//! [`SharedBody`] that holds the cached rendering itself. The
//! whole-registry views cost milliseconds to render on a big registry and
//! are polled by every nsqadmin page, so they are kept too ([`ViewSlot`]),
//! tagged with the registry-wide change counter itself (any write changes
//! them), where a topic's cache holds the counter's value at the last
//! change to that topic.
//!
//! Freshness without locks: writers never render. After changing anything
//! the answer depends on (the topic's producers or tombstones, its channel
//! list, a producer coming back to life), a writer gives `generation` a
//! new value, one never used before (see `Registry::topic_changed`). A
//! reader serves the cached body only if it was rendered at the current
//! generation and before its `valid_until`, the next instant at which time
//! alone changes the answer (an included producer turning inactive, a
//! tombstone expiring). Otherwise the reader renders it from the current
//! snapshots and stores it for the next one. Because a reader reads the
//! generation *before* the data it renders from, a body stored by a reader
//! that raced with a writer is tagged with a stale generation and is never
//! served.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwapOption;
use bytes::Bytes;

use super::clock::Nanos;

/// The memory all cached bodies may use together (`--lookup-cache-size`).
/// A body that does not fit is still served, just rendered again at the
/// next request; writers drop a topic's body as soon as it is out of date,
/// so the budget holds the bodies of topics that are read more often than
/// they change. (A stale `/topics` or `/nodes` body stays until the next
/// request for it replaces it: writers only bump the registry's counter,
/// which is cheaper on every registration than freeing it.)
#[derive(Debug)]
pub struct CacheBudget {
    used: AtomicUsize,
    limit: usize,
}

impl CacheBudget {
    pub fn new(limit: usize) -> Self {
        CacheBudget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes of bodies currently cached.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }
}

/// The content codings an answer is kept in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    Identity,
    Gzip,
}

/// One answer, as it was at `generation`, in the encodings clients asked
/// for: each is made once, when first asked for, and lives as long as the
/// answer is current. A rendering starts with the encoding its first
/// reader wanted; a plain body that no client asks for is never kept
/// beside a compressed one.
#[derive(Debug)]
pub(super) struct Rendered {
    generation: u64,
    valid_until: Nanos,
    plain: OnceLock<Bytes>,
    gzip: OnceLock<Bytes>,
    /// Held while one reader compresses, so that the answer is compressed
    /// once; a reader that finds it held serves the plain body meanwhile.
    compressing: Mutex<()>,
    /// The plain body's length, kept or not (what a compressed one saves).
    plain_len: usize,
    budget: Arc<CacheBudget>,
}

impl Rendered {
    fn slot(&self, encoding: Encoding) -> &OnceLock<Bytes> {
        match encoding {
            Encoding::Identity => &self.plain,
            Encoding::Gzip => &self.gzip,
        }
    }

    /// This answer in `encoding`, if it was made.
    pub(super) fn serve(self: &Arc<Self>, encoding: Encoding) -> Option<SharedBody> {
        self.slot(encoding).get()?;
        Some(SharedBody(Shared::Cached(Arc::clone(self), encoding)))
    }

    /// The plain body, if kept.
    pub(super) fn plain(&self) -> Option<&Bytes> {
        self.plain.get()
    }

    /// Keeps `body` as this answer in `encoding` if the budget has room
    /// (and no other reader kept one first), and hands it out.
    pub(super) fn fill(self: &Arc<Self>, encoding: Encoding, body: Bytes) -> SharedBody {
        let slot = self.slot(encoding);
        if slot.get().is_none() && self.budget.try_take(body.len()) {
            let len = body.len();
            if slot.set(body.clone()).is_err() {
                self.budget.used.fetch_sub(len, Ordering::AcqRel);
            }
        }
        match self.serve(encoding) {
            Some(kept) => kept,
            None => SharedBody(Shared::Own(body)),
        }
    }

    /// Runs `compress` unless another reader is already compressing this
    /// answer (then `None`: serve the plain body this time).
    pub(super) fn compress_once(&self, compress: impl FnOnce() -> Bytes) -> Option<Bytes> {
        let _turn = self.compressing.try_lock().ok()?;
        match self.gzip.get() {
            Some(done) => Some(done.clone()),
            None => Some(compress()),
        }
    }
}

impl Drop for Rendered {
    fn drop(&mut self) {
        let len = self.plain.get().map_or(0, Bytes::len) + self.gzip.get().map_or(0, Bytes::len);
        self.budget.used.fetch_sub(len, Ordering::AcqRel);
    }
}

/// An answer body as the registry hands it out: either one of its cached
/// renderings, shared, or one rendered for this request alone.
///
/// Why not `Bytes` for both: cloning the `Bytes` of a cached body
/// increments a reference count kept in a separate allocation, one more
/// cache miss per lookup on a registry too big for the CPU's caches (a
/// medium fleet's lookups spent ~1 % of the server's time there). Sharing
/// the `Rendered` instead increments the count on the cache line the
/// validity check has just read.
#[derive(Clone, Debug)]
pub struct SharedBody(Shared);

#[derive(Clone, Debug)]
enum Shared {
    /// Only made for an encoding whose slot is set.
    Cached(Arc<Rendered>, Encoding),
    Own(Bytes),
}

impl Deref for SharedBody {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Shared::Cached(r, encoding) => r.slot(*encoding).get().map_or(&[], |b| &b[..]),
            Shared::Own(b) => b,
        }
    }
}

impl SharedBody {
    /// The length of the plain answer this body encodes, for a cached
    /// body; `None` for one rendered for a single request.
    pub fn plain_len(&self) -> Option<usize> {
        match &self.0 {
            Shared::Cached(r, _) => Some(r.plain_len),
            Shared::Own(_) => None,
        }
    }
}

impl From<Bytes> for SharedBody {
    fn from(body: Bytes) -> Self {
        SharedBody(Shared::Own(body))
    }
}

/// One cached body and the generation it was rendered at, with no
/// generation of its own: [`LookupCache`] pairs it with the topic's, the
/// whole-registry views with the registry's change counter.
#[derive(Debug, Default)]
pub(super) struct ViewSlot {
    rendered: ArcSwapOption<Rendered>,
}

impl ViewSlot {
    /// The body in `encoding`, if kept, rendered at `generation` and
    /// current at `now`.
    pub(super) fn get_as(
        &self,
        generation: u64,
        now: Nanos,
        encoding: Encoding,
    ) -> Option<SharedBody> {
        match &*self.rendered.load() {
            Some(r) if r.generation == generation && now < r.valid_until => r.serve(encoding),
            _ => None,
        }
    }

    /// The rendering made at `generation`, if current at `now`, whichever
    /// encodings it holds.
    pub(super) fn current(&self, generation: u64, now: Nanos) -> Option<Arc<Rendered>> {
        match &*self.rendered.load() {
            Some(r) if r.generation == generation && now < r.valid_until => Some(Arc::clone(r)),
            _ => None,
        }
    }

    /// Stores a plain body rendered from data read after `generation` was
    /// taken, if the budget has room for it (the previous body is freed
    /// first).
    pub(super) fn store(
        &self,
        generation: u64,
        now: Nanos,
        valid_until: Nanos,
        body: Bytes,
        budget: &Arc<CacheBudget>,
    ) {
        let len = body.len();
        self.store_as(
            generation,
            now,
            valid_until,
            Encoding::Identity,
            body,
            len,
            budget,
        );
    }

    /// The same, for a body in `encoding`, rendered at `now`; hands out
    /// what it stored.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn store_as(
        &self,
        generation: u64,
        now: Nanos,
        valid_until: Nanos,
        encoding: Encoding,
        body: Bytes,
        plain_len: usize,
        budget: &Arc<CacheBudget>,
    ) -> SharedBody {
        // The same answer already kept in another encoding, and still
        // current when this one was rendered: add this one (its deadline
        // is the earlier one; a PING moving a producer's deadline later
        // does not change the answer).
        if let Some(r) = &*self.rendered.load()
            && r.generation == generation
            && now < r.valid_until
        {
            return r.fill(encoding, body);
        }
        self.clear();
        if !budget.try_take(body.len()) {
            return SharedBody(Shared::Own(body));
        }
        let rendered = Arc::new(Rendered {
            generation,
            valid_until,
            plain: OnceLock::new(),
            gzip: OnceLock::new(),
            compressing: Mutex::new(()),
            plain_len,
            budget: Arc::clone(budget),
        });
        let _ = rendered.slot(encoding).set(body);
        let served = SharedBody(Shared::Cached(Arc::clone(&rendered), encoding));
        self.rendered.store(Some(rendered));
        served
    }

    /// Frees the cached body.
    pub(super) fn clear(&self) {
        self.rendered.store(None);
    }
}

/// The cache slot of one topic key.
#[derive(Debug)]
pub(super) struct LookupCache {
    generation: AtomicU64,
    slot: ViewSlot,
}

/// A generation read before rendering; proves which data a body reflects.
#[derive(Clone, Copy, Debug)]
pub struct Generation(pub(super) u64);

impl LookupCache {
    /// An empty cache whose generation starts at `generation`.
    pub(super) fn new(generation: u64) -> Self {
        LookupCache {
            generation: AtomicU64::new(generation),
            slot: ViewSlot::default(),
        }
    }

    /// Marks every body rendered so far as out of date, and frees the
    /// cached one. Call *after* the change, with a generation never used
    /// before (a fresh value of the registry's counter; a later call may
    /// store a smaller one, see `Registry::topic_changed`).
    pub(super) fn invalidate(&self, generation: u64) {
        self.generation.store(generation, Ordering::Release);
        self.slot.clear();
    }

    /// The cached body, if it is current at `now`; otherwise the generation
    /// to tag a fresh rendering with. Read the data only after this call.
    pub(super) fn get(&self, now: Nanos) -> Result<SharedBody, Generation> {
        self.get_as(now, Encoding::Identity)
    }

    /// The cached body in `encoding`, if kept and current at `now`;
    /// otherwise the generation to tag a fresh rendering with.
    pub(super) fn get_as(&self, now: Nanos, encoding: Encoding) -> Result<SharedBody, Generation> {
        let generation = self.generation.load(Ordering::Acquire);
        self.slot
            .get_as(generation, now, encoding)
            .ok_or(Generation(generation))
    }

    /// The current rendering (any encodings), or the generation to tag a
    /// fresh one with.
    pub(super) fn current(&self, now: Nanos) -> Result<Arc<Rendered>, Generation> {
        let generation = self.generation.load(Ordering::Acquire);
        self.slot
            .current(generation, now)
            .ok_or(Generation(generation))
    }

    /// Stores a body in `encoding` (of a plain one of `plain_len` bytes);
    /// hands out what it stored.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn store_as(
        &self,
        generation: Generation,
        now: Nanos,
        valid_until: Nanos,
        encoding: Encoding,
        body: Bytes,
        plain_len: usize,
        budget: &Arc<CacheBudget>,
    ) -> SharedBody {
        self.slot.store_as(
            generation.0,
            now,
            valid_until,
            encoding,
            body,
            plain_len,
            budget,
        )
    }

    /// Stores a body rendered from data read after `generation` was taken,
    /// if the budget has room for it.
    pub(super) fn store(
        &self,
        generation: Generation,
        now: Nanos,
        valid_until: Nanos,
        body: Bytes,
        budget: &Arc<CacheBudget>,
    ) {
        self.slot
            .store(generation.0, now, valid_until, body, budget);
    }

    /// Whether a current body is cached (tests and metrics).
    #[cfg(test)]
    pub(super) fn is_warm(&self, now: Nanos) -> bool {
        self.get(now).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_only_current_bodies() {
        let budget = Arc::new(CacheBudget::new(1 << 20));
        let c = LookupCache::new(0);
        let g = c.get(1).unwrap_err();
        c.store(g, 0, 100, Bytes::from_static(b"a"), &budget);
        assert_eq!(&*c.get(50).unwrap(), b"a");
        assert!(c.get(100).is_err(), "expired at valid_until");
        c.invalidate(1);
        assert!(c.get(50).is_err(), "invalidated");
    }

    #[test]
    fn a_body_rendered_before_a_write_is_never_served() {
        let budget = Arc::new(CacheBudget::new(1 << 20));
        let c = LookupCache::new(0);
        let g = c.get(1).unwrap_err(); // reader takes the generation...
        c.invalidate(1); // ...a writer changes the data...
        c.store(g, 0, 100, Bytes::from_static(b"stale"), &budget); // ...the reader stores late
        assert!(c.get(2).is_err());
    }

    #[test]
    fn the_budget_bounds_cached_bytes() {
        let budget = Arc::new(CacheBudget::new(10));
        let a = LookupCache::new(0);
        let b = LookupCache::new(0);
        a.store(
            a.get(1).unwrap_err(),
            0,
            100,
            Bytes::from_static(b"123456"),
            &budget,
        );
        assert_eq!(budget.used(), 6);
        b.store(
            b.get(1).unwrap_err(),
            0,
            100,
            Bytes::from_static(b"123456"),
            &budget,
        );
        assert!(b.get(2).is_err(), "over budget: not cached");
        assert_eq!(budget.used(), 6);
        a.invalidate(1);
        assert_eq!(budget.used(), 0, "an invalidated body is freed");
        b.store(
            b.get(1).unwrap_err(),
            0,
            100,
            Bytes::from_static(b"123456"),
            &budget,
        );
        assert_eq!(&*b.get(2).unwrap(), b"123456");
    }
}
