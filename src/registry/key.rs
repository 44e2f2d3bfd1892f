//! Registration keys: `(category, key, subkey)`, the unit the original
//! `registration_db` is keyed by.
//!
//! The map is keyed by an owned [`Registration`] but probed with a borrowed
//! [`RegistrationRef`] (through the `dyn KeyView` borrow below), so a
//! `/lookup` finds its topic without allocating a key.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// What a registration is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// The one shared key every identified producer joins.
    Client,
    /// `topic:<topic>:`
    Topic,
    /// `channel:<topic>:<channel>`
    Channel,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Client => "client",
            Category::Topic => "topic",
            Category::Channel => "channel",
        }
    }
}

/// An owned registration key.
#[derive(Clone, Debug)]
pub struct Registration {
    pub category: Category,
    pub key: Arc<str>,
    pub subkey: Arc<str>,
}

/// A borrowed registration key, for probing the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegistrationRef<'a> {
    pub category: Category,
    pub key: &'a str,
    pub subkey: &'a str,
}

impl<'a> RegistrationRef<'a> {
    pub fn client() -> Self {
        RegistrationRef {
            category: Category::Client,
            key: "",
            subkey: "",
        }
    }

    pub fn topic(topic: &'a str) -> Self {
        RegistrationRef {
            category: Category::Topic,
            key: topic,
            subkey: "",
        }
    }

    pub fn channel(topic: &'a str, channel: &'a str) -> Self {
        RegistrationRef {
            category: Category::Channel,
            key: topic,
            subkey: channel,
        }
    }

    pub fn to_owned(self) -> Registration {
        Registration {
            category: self.category,
            key: Arc::from(self.key),
            subkey: Arc::from(self.subkey),
        }
    }
}

impl fmt::Display for RegistrationRef<'_> {
    /// `category:key:subkey`, the form `/debug` uses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.category.as_str(), self.key, self.subkey)
    }
}

/// Anything that can be seen as a [`RegistrationRef`]; the borrow target of
/// [`Registration`] in hash maps.
pub trait KeyView {
    fn view(&self) -> RegistrationRef<'_>;
}

impl KeyView for Registration {
    fn view(&self) -> RegistrationRef<'_> {
        RegistrationRef {
            category: self.category,
            key: &self.key,
            subkey: &self.subkey,
        }
    }
}

impl KeyView for RegistrationRef<'_> {
    fn view(&self) -> RegistrationRef<'_> {
        *self
    }
}

impl Registration {
    pub fn view(&self) -> RegistrationRef<'_> {
        KeyView::view(self)
    }
}

impl Hash for dyn KeyView + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.view().hash(state)
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.view() == other.view()
    }
}

impl Eq for dyn KeyView + '_ {}

impl Hash for Registration {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.view().hash(state)
    }
}

impl PartialEq for Registration {
    fn eq(&self, other: &Self) -> bool {
        self.view() == other.view()
    }
}

impl Eq for Registration {}

impl<'a> Borrow<dyn KeyView + 'a> for Registration {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

impl fmt::Display for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.view().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn borrowed_probe_finds_owned_key() {
        let mut map = HashMap::new();
        map.insert(RegistrationRef::channel("t", "c").to_owned(), 1);
        map.insert(RegistrationRef::topic("t").to_owned(), 2);
        let probe = RegistrationRef::channel("t", "c");
        assert_eq!(map.get(&probe as &dyn KeyView), Some(&1));
        let probe = RegistrationRef::topic("t");
        assert_eq!(map.get(&probe as &dyn KeyView), Some(&2));
        let probe = RegistrationRef::topic("c");
        assert_eq!(map.get(&probe as &dyn KeyView), None);
    }

    #[test]
    fn display_is_debug_key_form() {
        assert_eq!(RegistrationRef::client().to_string(), "client::");
        assert_eq!(
            RegistrationRef::channel("t", "c").to_string(),
            "channel:t:c"
        );
    }
}
