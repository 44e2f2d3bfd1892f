//! The immutable producer set of one registration key.
//!
//! Writers never modify a [`ProducerSet`]: they build the next one and
//! publish it with an `ArcSwap` store, so readers load a consistent set
//! without a lock. A set is a sorted flat array of 16-byte [`Member`]s:
//! copying it on write is one `memcpy`, membership is a binary search, and
//! it holds no pointers a reader would have to chase.

use super::clock::Nanos;
use super::producer::ProducerId;

/// One producer in one key, with that pair's tombstone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub producer: ProducerId,
    /// When `/topic/tombstone` last hit this (key, producer) pair; 0 = never.
    pub tombstoned_at: Nanos,
}

impl Member {
    pub fn new(producer: ProducerId) -> Self {
        Member {
            producer,
            tombstoned_at: 0,
        }
    }

    /// Ever tombstoned (what `/debug` reports as `tombstoned`).
    pub fn was_tombstoned(&self) -> bool {
        self.tombstoned_at != 0
    }

    /// Tombstoned within the last `lifetime` (what hides it from `/lookup`).
    pub fn is_tombstoned(&self, now: Nanos, lifetime: Nanos) -> bool {
        self.was_tombstoned() && now.saturating_sub(self.tombstoned_at) < lifetime
    }
}

/// The producers of one key, sorted by producer id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerSet {
    members: Box<[Member]>,
}

impl ProducerSet {
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn get(&self, producer: ProducerId) -> Option<&Member> {
        self.position(producer).ok().map(|i| &self.members[i])
    }

    fn position(&self, producer: ProducerId) -> Result<usize, usize> {
        self.members.binary_search_by_key(&producer, |m| m.producer)
    }

    /// The set plus `producer`, or `None` when it is already in (its
    /// tombstone is then kept, as the original keeps the existing entry).
    pub fn with(&self, producer: ProducerId) -> Option<ProducerSet> {
        let at = self.position(producer).err()?;
        let mut members = Vec::with_capacity(self.members.len() + 1);
        members.extend_from_slice(&self.members[..at]);
        members.push(Member::new(producer));
        members.extend_from_slice(&self.members[at..]);
        Some(ProducerSet {
            members: members.into_boxed_slice(),
        })
    }

    /// The set minus `producer`, or `None` when it is not in.
    pub fn without(&self, producer: ProducerId) -> Option<ProducerSet> {
        let at = self.position(producer).ok()?;
        let mut members = Vec::with_capacity(self.members.len() - 1);
        members.extend_from_slice(&self.members[..at]);
        members.extend_from_slice(&self.members[at + 1..]);
        Some(ProducerSet {
            members: members.into_boxed_slice(),
        })
    }

    /// The set with every member in `producers` tombstoned at `now`, or
    /// `None` when none of them is in.
    pub fn with_tombstones(&self, producers: &[ProducerId], now: Nanos) -> Option<ProducerSet> {
        let mut members = self.members.to_vec();
        let mut changed = false;
        for m in members.iter_mut() {
            if producers.contains(&m.producer) {
                m.tombstoned_at = now;
                changed = true;
            }
        }
        changed.then(|| ProducerSet {
            members: members.into_boxed_slice(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_and_without_keep_order_and_tombstones() {
        let s = ProducerSet::default();
        let s = s.with(5).unwrap().with(1).unwrap().with(3).unwrap();
        let ids: Vec<_> = s.members().iter().map(|m| m.producer).collect();
        assert_eq!(ids, [1, 3, 5]);
        assert!(s.with(3).is_none(), "adding twice changes nothing");

        let s = s.with_tombstones(&[3], 42).unwrap();
        assert_eq!(s.get(3).unwrap().tombstoned_at, 42);
        assert!(s.with(3).is_none(), "re-adding keeps the tombstone");
        assert_eq!(s.get(3).unwrap().tombstoned_at, 42);

        let s = s.without(3).unwrap();
        assert!(s.get(3).is_none());
        assert!(s.without(3).is_none());
        let s = s.with(3).unwrap();
        assert_eq!(s.get(3).unwrap().tombstoned_at, 0, "remove + add clears it");
        assert!(s.with_tombstones(&[9], 1).is_none());
    }

    #[test]
    fn tombstone_lifetime() {
        let m = Member {
            producer: 1,
            tombstoned_at: 100,
        };
        assert!(m.is_tombstoned(100, 10));
        assert!(m.is_tombstoned(109, 10));
        assert!(!m.is_tombstoned(110, 10));
        assert!(m.was_tombstoned());
        assert!(!Member::new(1).is_tombstoned(5, 10));
    }
}
