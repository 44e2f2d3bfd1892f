//! Cluster mode: several replicas behind one address, sharing state
//! through etcd (`--etcd-endpoints`).
//!
//! Owns the etcd client and nothing else: the registry stays free of I/O
//! and does not know where a producer came from. Three parts, one way each:
//! - [`mirror`]: the registry's observer. Follows this replica's own
//!   writes (its TCP sessions, its admin endpoints) and marks what is to
//!   be published.
//! - `publish`: keeps this replica's lease alive and writes the marked keys
//!   to etcd, batched in transactions, never on a TCP answer's path.
//! - `watch` + [`apply`]: loads a snapshot of the other replicas'
//!   keys at one revision, watches from the next, and applies what changes
//!   to the registry through its unobserved API, as producers of their own.
//!
//! Reads never touch etcd: `/lookup` and the other views are served from
//! the registry, which holds the whole fleet. When etcd is away, both
//! sides keep serving what they have and retry; see `keys` for the layout.

pub mod apply;
pub mod keys;
pub mod mirror;
