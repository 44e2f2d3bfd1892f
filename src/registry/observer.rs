//! Reporting writes: what a writer changed, told to an [`Observer`].
//!
//! The registry itself does no I/O. A component that must follow its
//! writes (the cluster replicator publishes this replica's registrations
//! to etcd) installs an observer; the registry calls it synchronously after
//! each write, in the writer's thread and in the writer's order, so one
//! connection's changes arrive in the order its commands were applied.
//!
//! An observer must be quick and must never call back into the registry
//! (it is called right after a write, possibly under the writer lock): it
//! records what it needs and wakes its own task. Writes the observer makes
//! itself go through [`Registry::identify_unobserved`] and
//! [`Registry::unobserved`], which report nothing, so it never hears its
//! own echo as a change (admin writes of its own come back as
//! [`Observer::applied`]); the registry does not know why.
//!
//! With no observer (standalone) every report is one branch on `None`.

use std::sync::Arc;

use super::producer::Producer;

/// One write, as its writer made it.
#[derive(Clone, Copy, Debug)]
pub enum Change<'a> {
    /// IDENTIFY: a new producer.
    Identified(&'a Arc<Producer>),
    /// PING: the producer's last-update time was refreshed.
    Pinged(&'a Arc<Producer>),
    /// REGISTER that added the producer to the topic (and the channel).
    Registered {
        producer: &'a Arc<Producer>,
        topic: &'a str,
        channel: Option<&'a str>,
    },
    /// UNREGISTER of a channel, or of a topic and all its channels.
    Unregistered {
        producer: &'a Arc<Producer>,
        topic: &'a str,
        channel: Option<&'a str>,
    },
    /// The producer's connection closed: it left every key.
    Removed(&'a Arc<Producer>),
    /// `POST /topic/create`.
    TopicCreated(&'a str),
    /// `POST /channel/create`.
    ChannelCreated { topic: &'a str, channel: &'a str },
    /// `POST /topic/delete`: the topic key and its channel keys are gone,
    /// with every producer in them.
    TopicDeleted(&'a str),
    /// `POST /channel/delete`, whether or not the key existed.
    ChannelDeleted { topic: &'a str, channel: &'a str },
    /// `POST /topic/tombstone`.
    Tombstoned { topic: &'a str, node: &'a str },
}

/// Follows the registry's writes (see the module doc for the rules).
pub trait Observer: Send + Sync + std::fmt::Debug {
    /// A write made through the ordinary API.
    fn changed(&self, change: Change<'_>);

    /// A write made through the unobserved API (the observer's own), told
    /// under the same writer lock as it was made, so that the observer can
    /// keep state of its own in step with it. Producer changes of
    /// unobserved handles are not told at all.
    fn applied(&self, change: Change<'_>) {
        let _ = change;
    }
}
