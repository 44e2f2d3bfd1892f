//! The nsqd-facing TCP protocol (spec section 3).
//!
//! - [`codec`]: bytes → frames (magic, command lines, IDENTIFY bodies).
//! - [`identify`]: the IDENTIFY JSON body, decoded with Go's rules.
//! - [`session`]: one connection's protocol state, applied to the registry.
//! - [`connection`]: socket I/O for one connection.
//! - [`listener`]: the accept loop.

pub mod codec;
pub mod connection;
pub mod identify;
pub mod listener;
pub mod session;

use std::sync::Arc;

use bytes::Bytes;

use crate::registry::Registry;

/// Input limits of the TCP protocol.
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    /// Longest accepted command line, in bytes (without the `\n`).
    pub max_command_size: usize,
    /// Largest accepted IDENTIFY body, in bytes.
    pub max_identify_body_size: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_command_size: 4096,
            max_identify_body_size: 64 * 1024,
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
}
