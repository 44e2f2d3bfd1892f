//! The nsqd-facing TCP protocol (spec section 3).
//!
//! - [`codec`]: bytes → frames (magic, command lines, IDENTIFY bodies).
//! - [`identify`]: the IDENTIFY JSON body, decoded with Go's rules.
//! - [`session`]: one connection's protocol state, applied to the registry.
//! - [`driver`]: codec + session as one loop, bytes in and answers out, no
//!   I/O (the connection, the fuzz target and the property tests run it).
//! - [`connection`]: socket I/O for one connection.
//! - [`listener`]: the accept loop.
//! - [`janitor`]: cleans closed connections up off the async worker.

pub mod codec;
pub mod connection;
pub mod driver;
pub mod identify;
pub mod janitor;
pub mod listener;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::registry::Registry;
use crate::stats::Stats;

/// Limits of the TCP side; each is a flag (see `config`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpLimits {
    /// Longest accepted command line, in bytes (without the `\n`).
    pub max_command_size: usize,
    /// Largest accepted IDENTIFY body, in bytes.
    pub max_identify_body_size: usize,
    /// Most keys one connection may be registered in (`client` included).
    pub max_registrations_per_connection: usize,
    /// A connection that sends nothing for this long is closed and its
    /// producer removed; `None` never closes. nsqd PINGs every 15 s.
    pub idle_timeout: Option<Duration>,
    /// Most simultaneous connections; more are refused at accept.
    pub max_connections: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_command_size: 4096,
            max_identify_body_size: 64 * 1024,
            max_registrations_per_connection: 100_000,
            idle_timeout: Some(Duration::from_secs(60)),
            max_connections: 10_000,
        }
    }
}

/// What every connection shares.
#[derive(Debug)]
pub struct TcpContext {
    pub registry: Arc<Registry>,
    /// The IDENTIFY answer (this lookupd's ports, version, address, hostname).
    pub identify_response: Bytes,
    pub limits: TcpLimits,
    pub stats: Arc<Stats>,
    pub janitor: janitor::Janitor,
    /// `--tcp-allow`: only these peers may connect (None: everyone).
    pub allow: Option<crate::allow::AllowList>,
}
