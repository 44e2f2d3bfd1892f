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

    /// Bytes that may still be cached.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.used())
    }

    /// The budget's size.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
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
    /// Rendered for a gzip reader and served plain to it: the next gzip
    /// reader compresses it, and then it is kept compressed only.
    made_for_gzip: bool,
    /// Bytes of this rendering counted in the budget: given back when it
    /// is dropped, or as soon as its slot gives it up for a
    /// compressed-only copy (readers may still hold it a moment).
    accounted: AtomicUsize,
    budget: Arc<CacheBudget>,
}

impl Rendered {
    fn new(
        generation: u64,
        valid_until: Nanos,
        plain_len: usize,
        budget: &Arc<CacheBudget>,
    ) -> Self {
        Rendered {
            generation,
            valid_until,
            plain: OnceLock::new(),
            gzip: OnceLock::new(),
            compressing: Mutex::new(()),
            plain_len,
            made_for_gzip: false,
            accounted: AtomicUsize::new(0),
            budget: Arc::clone(budget),
        }
    }

    fn slot(&self, encoding: Encoding) -> &OnceLock<Bytes> {
        match encoding {
            Encoding::Identity => &self.plain,
            Encoding::Gzip => &self.gzip,
        }
    }

    /// The generation this answer was rendered at.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Until when this answer holds without a write.
    pub(super) fn valid_until(&self) -> Nanos {
        self.valid_until
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
    /// (if another reader kept one first, that one is served); gives the
    /// body back when there is no room.
    fn fill(self: &Arc<Self>, encoding: Encoding, body: Bytes) -> Result<SharedBody, Bytes> {
        if let Some(kept) = self.serve(encoding) {
            return Ok(kept);
        }
        let len = body.len();
        if !self.budget.try_take(len) {
            return Err(body);
        }
        match self.slot(encoding).set(body) {
            Ok(()) => {
                self.accounted.fetch_add(len, Ordering::AcqRel);
            }
            Err(_) => self.budget.give_back(len),
        }
        Ok(self
            .serve(encoding)
            .expect("set above or by another reader"))
    }

    /// Stops counting this rendering in the budget.
    fn release(&self) {
        self.budget
            .give_back(self.accounted.swap(0, Ordering::AcqRel));
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
        self.release();
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

impl SharedBody {
    /// Whether this body is one kept in the cache.
    pub fn is_cached(&self) -> bool {
        matches!(self.0, Shared::Cached(..))
    }
}

impl From<Bytes> for SharedBody {
    fn from(body: Bytes) -> Self {
        SharedBody(Shared::Own(body))
    }
}

/// A body just made, and what tags it: the generation read before the
/// data it was made from, when it was made, until when it holds, and the
/// length of the plain answer it encodes.
#[derive(Clone, Debug)]
pub(super) struct Fresh {
    pub generation: u64,
    pub now: Nanos,
    pub valid_until: Nanos,
    pub encoding: Encoding,
    pub body: Bytes,
    pub plain_len: usize,
    /// A plain body made for a gzip reader (see `Rendered::made_for_gzip`).
    pub for_gzip: bool,
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
        let plain_len = body.len();
        self.store_as(
            Fresh {
                generation,
                now,
                valid_until,
                encoding: Encoding::Identity,
                body,
                plain_len,
                for_gzip: false,
            },
            budget,
        );
    }

    /// Keeps a body just made, if the budget has room; hands out what it
    /// kept (or the body itself).
    ///
    /// The same answer already kept in another encoding, and still current
    /// when this one was made, gets this one added (its deadline is the
    /// earlier one; a PING moving a producer's deadline later does not
    /// change the answer). When the budget has no room for both, a
    /// compressed body takes the place of the plain one: it is a tenth of
    /// the size, and making the plain body again costs a fraction of
    /// rendering and compressing again.
    pub(super) fn store_as(&self, fresh: Fresh, budget: &Arc<CacheBudget>) -> SharedBody {
        let Fresh {
            generation,
            now,
            valid_until,
            encoding,
            body,
            plain_len,
            for_gzip,
        } = fresh;
        if let Some(r) = &*self.rendered.load()
            && r.generation == generation
            && now < r.valid_until
        {
            // A plain body only ever made for gzip readers gives way.
            if encoding == Encoding::Gzip && r.made_for_gzip && r.plain().is_some() {
                return self
                    .give_up_plain_of(r, Some(body.clone()))
                    .unwrap_or_else(|| body.into());
            }
            return match r.fill(encoding, body) {
                Ok(kept) => kept,
                Err(gz) if encoding == Encoding::Gzip && r.plain().is_some() => self
                    .give_up_plain_of(r, Some(gz.clone()))
                    .unwrap_or_else(|| gz.into()),
                Err(body) => body.into(),
            };
        }
        self.clear();
        let len = body.len();
        if !budget.try_take(len) {
            return SharedBody(Shared::Own(body));
        }
        let mut rendered = Rendered::new(generation, valid_until, plain_len, budget);
        rendered.made_for_gzip = for_gzip && encoding == Encoding::Identity;
        let rendered = Arc::new(rendered);
        rendered.accounted.store(len, Ordering::Release);
        let _ = rendered.slot(encoding).set(body);
        let served = SharedBody(Shared::Cached(Arc::clone(&rendered), encoding));
        self.rendered.store(Some(rendered));
        served
    }

    /// Gives up the plain body of the kept rendering, to make room for a
    /// compressed answer elsewhere: its compressed body, if any, stays.
    /// Returns the bytes given back to the budget.
    pub(super) fn give_up_plain(&self) -> usize {
        let guard = self.rendered.load();
        let Some(r) = &*guard else {
            return 0;
        };
        let Some(plain) = r.plain() else {
            return 0;
        };
        let freed = plain.len();
        self.give_up_plain_of(r, r.gzip.get().cloned());
        freed
    }

    /// Replaces `r`, if it is still the kept rendering, with a copy that
    /// holds only `gz` (or with nothing), and moves its room to the copy;
    /// the copy's body if it was kept.
    fn give_up_plain_of(&self, r: &Arc<Rendered>, gz: Option<Bytes>) -> Option<SharedBody> {
        let copy = gz.map(|gz| {
            let copy = Arc::new(Rendered::new(
                r.generation,
                r.valid_until,
                r.plain_len,
                &r.budget,
            ));
            let _ = copy.gzip.set(gz);
            copy
        });
        let before = self.rendered.compare_and_swap(Arc::as_ptr(r), copy.clone());
        if !before.as_ref().is_some_and(|b| Arc::ptr_eq(b, r)) {
            return None; // replaced meanwhile
        }
        r.release();
        let copy = copy?;
        let len = copy.gzip.get().map_or(0, Bytes::len);
        if copy.budget.try_take(len) {
            copy.accounted.store(len, Ordering::Release);
            copy.serve(Encoding::Gzip)
        } else {
            // Someone else took the room meanwhile: keep nothing.
            self.rendered.compare_and_swap(Arc::as_ptr(&copy), None);
            None
        }
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

    /// Keeps a body just made (see [`ViewSlot::store_as`]).
    pub(super) fn store_as(&self, fresh: Fresh, budget: &Arc<CacheBudget>) -> SharedBody {
        self.slot.store_as(fresh, budget)
    }

    /// Gives up the plain body kept (see [`ViewSlot::give_up_plain`]).
    pub(super) fn give_up_plain(&self) -> usize {
        self.slot.give_up_plain()
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

    fn fresh(generation: u64, encoding: Encoding, body: &'static [u8], plain_len: usize) -> Fresh {
        Fresh {
            generation,
            now: 0,
            valid_until: 100,
            encoding,
            body: Bytes::from_static(body),
            plain_len,
            for_gzip: false,
        }
    }

    /// With no room for both, the compressed body takes the plain one's
    /// place (and its room); with room, both stay.
    #[test]
    fn a_compressed_body_is_kept_before_a_plain_one() {
        let budget = Arc::new(CacheBudget::new(10));
        let slot = ViewSlot::default();
        let plain = slot.store_as(fresh(1, Encoding::Identity, b"12345678", 8), &budget);
        assert!(plain.is_cached());
        assert_eq!(budget.used(), 8);
        let gz = slot.store_as(fresh(1, Encoding::Gzip, b"abcd", 8), &budget);
        assert!(gz.is_cached(), "kept in the plain body's place");
        assert_eq!(&*gz, b"abcd");
        assert_eq!(budget.used(), 4, "the plain body's room was given back");
        assert!(slot.get_as(1, 50, Encoding::Identity).is_none());
        assert_eq!(&*slot.get_as(1, 50, Encoding::Gzip).unwrap(), b"abcd");
        assert_eq!(&*plain, b"12345678", "a reader holding it still reads it");
        drop(plain);
        assert_eq!(budget.used(), 4);
        // Plain again: no room beside the compressed body, served uncached.
        let again = slot.store_as(fresh(1, Encoding::Identity, b"12345678", 8), &budget);
        assert!(!again.is_cached());
        assert_eq!(&*slot.get_as(1, 50, Encoding::Gzip).unwrap(), b"abcd");
        // With room for both (a bigger budget), both stay.
        let budget = Arc::new(CacheBudget::new(100));
        let slot = ViewSlot::default();
        slot.store_as(fresh(1, Encoding::Identity, b"12345678", 8), &budget);
        slot.store_as(fresh(1, Encoding::Gzip, b"abcd", 8), &budget);
        assert!(slot.get_as(1, 50, Encoding::Identity).is_some());
        assert!(slot.get_as(1, 50, Encoding::Gzip).is_some());
        assert_eq!(budget.used(), 12);
        assert_eq!(slot.give_up_plain(), 8);
        assert_eq!(budget.used(), 4);
        assert!(slot.get_as(1, 50, Encoding::Identity).is_none());
        assert!(slot.get_as(1, 50, Encoding::Gzip).is_some());
        drop(slot);
        assert_eq!(budget.used(), 0, "everything given back");
    }

    #[test]
    fn giving_up_a_plain_only_body_frees_it() {
        let budget = Arc::new(CacheBudget::new(100));
        let slot = ViewSlot::default();
        slot.store_as(fresh(1, Encoding::Identity, b"12345678", 8), &budget);
        assert_eq!(slot.give_up_plain(), 8);
        assert_eq!(budget.used(), 0);
        assert!(slot.current(1, 50).is_none());
        assert_eq!(slot.give_up_plain(), 0, "nothing left to give up");
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
