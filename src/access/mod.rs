//! Access control: who may read and administer over HTTP.

pub mod auth;
