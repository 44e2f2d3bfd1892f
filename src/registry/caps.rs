//! The registry's global caps (`--max-registrations`, `--max-keys`): how
//! much a fleet may make this process hold, so that a fleet larger than
//! planned gets refusals instead of getting the process killed for memory.
//!
//! Owns the check and the capped writes: [`ProducerHandle::try_register`]
//! (REGISTER over TCP) and [`Registry::try_create_topic`] /
//! [`Registry::try_create_channel`] (the admin creates). Each checks under
//! the writer lock, so the caps are exact, and a refused write changes
//! nothing. What is counted is what the gauges show: (key, producer) pairs
//! (`counts.registrations`, every category, other replicas' producers
//! included) and topic + channel keys (`counts.topics + counts.channels`,
//! with or without producers). The uncapped writes (`register`,
//! `create_*`) stay for cluster mode's applier, which mirrors what other
//! replicas already hold and must never refuse it, and for tests.
//!
//! Why two caps: memory grows with both. A membership costs about 27 bytes
//! (its `Member` in the key's producer set and its slot in the producer's
//! key list); a key about 350 (the map entries, the names, the producer
//! set and the cached answer's slot), and keys outlive their producers
//! (UNREGISTER leaves a non-ephemeral key behind, `/topic/create` makes
//! keys with none), so a cap on memberships alone
//! leaves a fleet of unique names, or a register/unregister loop over new
//! names, unbounded. Measured figures: README, "Limits".

use std::sync::atomic::Ordering;

use super::{Change, ProducerHandle, RegisterOutcome, RegistrationRef, Registry};

/// Default `--max-registrations`: 50 million (key, producer) pairs, twice
/// the `large` preset (25 million); about 1.3 GiB of registry at the
/// measured 27 bytes each.
pub const DEFAULT_MAX_REGISTRATIONS: u64 = 50_000_000;

/// Default `--max-keys`: 2 million topic and channel keys, twenty times the
/// `large` preset (100,000); about 0.65 GiB at the measured 350 bytes each
/// (names of about 12 bytes; longer names cost more).
pub const DEFAULT_MAX_KEYS: u64 = 2_000_000;

/// The caps (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Most (key, producer) pairs held, all categories.
    pub max_registrations: u64,
    /// Most topic and channel keys held.
    pub max_keys: u64,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            max_registrations: DEFAULT_MAX_REGISTRATIONS,
            max_keys: DEFAULT_MAX_KEYS,
        }
    }
}

/// Which cap refused a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapHit {
    /// `--max-registrations`.
    Registrations(u64),
    /// `--max-keys`.
    Keys(u64),
}

impl Registry {
    /// The caps in force.
    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Topic and channel keys held.
    fn keys_held(&self) -> u64 {
        self.counts.topics.load(Ordering::Relaxed) + self.counts.channels.load(Ordering::Relaxed)
    }

    /// Whether `new_keys` more keys fit. Caller holds the writer lock.
    fn key_room(&self, new_keys: u64) -> Result<(), CapHit> {
        let max = self.caps.max_keys;
        if new_keys > 0 && self.keys_held() + new_keys > max {
            return Err(CapHit::Keys(max));
        }
        Ok(())
    }

    /// Keys of `keys` that do not exist yet. Caller holds the writer lock.
    fn missing(&self, keys: &[RegistrationRef<'_>]) -> u64 {
        keys.iter().filter(|r| self.entry(**r).is_none()).count() as u64
    }

    /// `POST /topic/create` within `--max-keys`.
    pub fn try_create_topic(&self, topic: &str) -> Result<(), CapHit> {
        let _w = self.lock();
        self.key_room(self.missing(&[RegistrationRef::topic(topic)]))?;
        self.ensure_key(RegistrationRef::topic(topic));
        self.report(true, Change::TopicCreated(topic));
        Ok(())
    }

    /// `POST /channel/create` within `--max-keys`.
    pub fn try_create_channel(&self, topic: &str, channel: &str) -> Result<(), CapHit> {
        let _w = self.lock();
        let keys = [
            RegistrationRef::channel(topic, channel),
            RegistrationRef::topic(topic),
        ];
        self.key_room(self.missing(&keys))?;
        self.ensure_key(keys[0]);
        self.ensure_key(keys[1]);
        self.report(true, Change::ChannelCreated { topic, channel });
        Ok(())
    }
}

impl ProducerHandle {
    /// REGISTER topic [channel] within the caps: all of it or, refused,
    /// nothing. A REGISTER of what the producer already holds adds nothing
    /// and always succeeds (nsqd re-registers everything on reconnection).
    pub fn try_register(
        &mut self,
        topic: &str,
        channel: Option<&str>,
    ) -> Result<RegisterOutcome, CapHit> {
        let registry = std::sync::Arc::clone(&self.registry);
        let _w = registry.lock();
        let id = self.producer.id;
        let mut new_keys = 0;
        let mut new_members = 0;
        let channel_key = channel.map(|c| RegistrationRef::channel(topic, c));
        for r in channel_key
            .into_iter()
            .chain([RegistrationRef::topic(topic)])
        {
            match registry.entry(r) {
                None => {
                    new_keys += 1;
                    new_members += 1;
                }
                Some(e) if e.producers.load().get(id).is_none() => new_members += 1,
                Some(_) => {}
            }
        }
        if new_members == 0 {
            return Ok(self.register_locked(topic, channel));
        }
        let max = registry.caps.max_registrations;
        if registry.counts.registrations.load(Ordering::Relaxed) + new_members > max {
            return Err(CapHit::Registrations(max));
        }
        registry.key_room(new_keys)?;
        Ok(self.register_locked(topic, channel))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::registry::RegistryOptions;
    use crate::registry::tests::peer;

    fn registry(max_registrations: u64, max_keys: u64) -> Arc<Registry> {
        Arc::new(Registry::new(RegistryOptions {
            caps: Caps {
                max_registrations,
                max_keys,
            },
            ..RegistryOptions::default()
        }))
    }

    fn held(r: &Registry) -> u64 {
        r.counts().registrations.load(Ordering::Relaxed)
    }

    fn producers(r: &Registry, topic: &str) -> usize {
        r.topic_entry(topic).map_or(0, |e| e.producers().len())
    }

    #[test]
    fn register_is_refused_whole_at_the_cap_and_nothing_changes() {
        // client + topic + channel = 3 for the first producer.
        let r = registry(4, 100);
        let mut a = r.identify(peer(1));
        assert!(a.try_register("t", Some("c")).is_ok());
        assert_eq!(held(&r), 3);
        // Two new pairs needed, one left: refused, and nothing is added.
        assert_eq!(
            a.try_register("u", Some("c")),
            Err(CapHit::Registrations(4))
        );
        assert_eq!(held(&r), 3);
        assert!(r.topic_entry("u").is_none(), "no key made for a refusal");
        // One new pair fits.
        assert!(a.try_register("u", None).is_ok());
        assert_eq!(held(&r), 4);
        // Everything held keeps answering, and IDENTIFY is never refused.
        let b = r.identify(peer(2));
        assert_eq!(held(&r), 5, "IDENTIFY's client pair goes over the cap");
        assert_eq!(producers(&r, "t"), 1);
        assert!(r.lookup("t").is_some());
        drop(b);
    }

    #[test]
    fn reregister_of_what_is_held_is_ok_at_the_cap() {
        let r = registry(3, 100);
        let mut a = r.identify(peer(1));
        assert!(a.try_register("t", Some("c")).is_ok());
        assert_eq!(
            a.try_register("t", Some("c")),
            Ok(RegisterOutcome::default()),
            "idempotent, not counted twice"
        );
        assert_eq!(a.try_register("t", None), Ok(RegisterOutcome::default()));
        assert_eq!(held(&r), 3);
        assert!(a.try_register("t", Some("d")).is_err());
    }

    #[test]
    fn unregister_and_disconnect_free_room() {
        let r = registry(4, 100);
        let mut a = r.identify(peer(1));
        a.try_register("t", Some("c")).unwrap();
        let mut b = r.identify(peer(2));
        assert_eq!(held(&r), 4);
        assert!(b.try_register("t", None).is_err());
        a.unregister("t", Some("c"));
        assert!(
            b.try_register("t", None).is_ok(),
            "the freed pair is reused"
        );
        assert!(b.try_register("u", None).is_err());
        drop(a); // client + topic leave
        assert!(b.try_register("u", None).is_ok());
        assert_eq!(producers(&r, "u"), 1);
    }

    #[test]
    fn keys_are_capped_whoever_makes_them() {
        let r = registry(1_000, 3);
        let mut a = r.identify(peer(1));
        a.try_register("t", Some("c")).unwrap(); // 2 keys
        assert_eq!(r.try_create_topic("t"), Ok(()), "an existing key is free");
        assert_eq!(r.try_create_channel("t", "c"), Ok(()));
        assert_eq!(r.try_create_topic("x"), Ok(())); // 3 keys
        assert_eq!(r.try_create_topic("y"), Err(CapHit::Keys(3)));
        assert_eq!(r.try_create_channel("t", "d"), Err(CapHit::Keys(3)));
        assert!(r.topic_entry("y").is_none());
        // Joining an existing key needs no key room.
        assert!(a.try_register("x", None).is_ok());
        assert_eq!(a.try_register("z", None), Err(CapHit::Keys(3)));
        // A key left behind by UNREGISTER still counts; deleting it frees it.
        a.unregister("x", None);
        assert_eq!(a.try_register("z", None), Err(CapHit::Keys(3)));
        r.delete_topic("x");
        assert!(a.try_register("z", None).is_ok());
        // The uncapped writes (cluster mode's applier) are never refused.
        r.unobserved().create_topic("remote");
        assert_eq!(r.keys_held(), 4);
    }
}
