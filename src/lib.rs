//! `nsqlookupd`: NSQ's discovery daemon, wire-compatible with the Go
//! original (NSQ 1.3), built to front large nsqd fleets.
//!
//! Map of the crate:
//! - [`registry`]: the registration database (who carries which topic and
//!   channel) and its rendered answers, plain and gzip-compressed; shared
//!   state, no I/O.
//! - [`tcp`]: the nsqd-facing protocol: [`tcp::codec`] frames bytes into
//!   commands, [`tcp::session`] applies one connection's commands to the
//!   registry, [`tcp::listener`] accepts connections.
//! - [`http`]: the consumer and admin API on hyper, over plain HTTP and
//!   HTTPS; handlers only read registry snapshots (or call its admin
//!   writes); [`http::encoding`] negotiates gzip answers.
//! - [`tls`]: HTTPS's rustls configuration (`--tls-*`), its reload on
//!   SIGHUP and the handshake; knows nothing of HTTP.
//! - [`cluster`]: cluster mode (`--etcd-endpoints`): publishes this
//!   replica's registrations to etcd and applies the other replicas' to the
//!   registry through its public API; the registry knows nothing of it.
//! - [`config`]: flags, the TOML config file and Go durations.
//! - [`server`]: binds the listeners, runs them, shuts them down;
//!   [`accept`]: their shared accept loop with its connection cap, the
//!   HTTP accept pace (`--max-http-accept-rate`) and [`allow`]'s
//!   source-address allow-list (`--tcp-allow`).
//! - [`logging`]: log lines in the original's format.
//! - [`stats`]: connection and limit counters (atomics, never locked).
//! - [`metrics`]: `GET /metrics`, reading those counters at scrape time.
//! - [`names`], [`json`]: topic/channel name rules and Go-compatible JSON output.
//! - [`access`]: access control over HTTP; [`access::auth`] is the client
//!   of an nsqd-style auth server (`--auth-http-address`).

pub mod accept;
pub mod access;
pub mod allow;
pub mod cluster;
pub mod config;
pub mod http;
pub mod json;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod registry;
pub mod server;
pub mod stats;
pub mod tcp;
pub mod tls;

/// The NSQ release whose protocol this server speaks; reported by `/info`,
/// IDENTIFY and `--version` (clients compare against it).
pub const NSQ_VERSION: &str = "1.3.0";
