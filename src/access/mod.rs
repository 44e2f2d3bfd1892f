//! Access control for the HTTP API: who may read and who may administer.
//!
//! Every endpoint is in one [`Class`]. A class with neither an allow-list
//! nor a credential setting is open, as in the original; one with either is
//! closed to everyone the settings do not let in:
//!
//! - *read* (`/lookup`, `/topics`, `/channels`, `/nodes`, `/info`,
//!   `/debug`): `--read-allow` CIDRs, or a consumer's Bearer secret that
//!   the auth server (`--auth-http-address`, nsqd's protocol) grants; such
//!   an identity sees only its topics ([`Verdict::Identity`]).
//! - *admin* (`POST /topic/*`, `/channel/*`): `--admin-allow` CIDRs, the
//!   Bearer token of `--admin-token-file`, or a verified client
//!   certificate whose common name is in `--admin-cn`. Admin rights
//!   include read rights: nsqadmin reads what it administers.
//! - *metrics* (`/metrics`): `--metrics-allow` CIDRs, or admin rights.
//! - *open* (`/ping`, `/ready`): always, for health checks.
//!
//! Owns the decision and its counters. Knows nothing of hyper or sockets:
//! the HTTP handlers hand it the connection's facts ([`Facts`]: the peer
//! address, TLS, a verified common name, the `Authorization` header) and
//! turn its [`Verdict`] into an answer. A request that needs no
//! credentials never waits on the auth server.

pub mod auth;
pub mod bearer;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::allow::AllowList;
use crate::stats::LogThrottle;
use auth::{AuthClient, AuthError, AuthOptions, AuthQuery, AuthStats, Grant};
use bearer::{Presented, same_secret};

/// Which rule an endpoint falls under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Open,
    Read,
    Admin,
    Metrics,
}

impl Class {
    /// The classes that can refuse, in the order of their metrics labels.
    pub const GUARDED: [Class; 3] = [Class::Read, Class::Admin, Class::Metrics];

    pub fn label(self) -> &'static str {
        match self {
            Class::Open => "open",
            Class::Read => "read",
            Class::Admin => "admin",
            Class::Metrics => "metrics",
        }
    }

    fn index(self) -> usize {
        match self {
            Class::Read | Class::Open => 0,
            Class::Admin => 1,
            Class::Metrics => 2,
        }
    }
}

/// The access settings, from the flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessOptions {
    /// `--read-allow`.
    pub read_allow: Option<AllowList>,
    /// `--admin-allow`.
    pub admin_allow: Option<AllowList>,
    /// `--metrics-allow`.
    pub metrics_allow: Option<AllowList>,
    /// The content of `--admin-token-file`.
    pub admin_token: Option<Secret>,
    /// `--admin-cn`: common names of verified client certificates that may
    /// administer.
    pub admin_cn: Vec<String>,
    /// `--auth-http-address` and the options of its client.
    pub auth: Option<AuthOptions>,
}

impl AccessOptions {
    /// Whether any class is closed (and the refusal metrics are shown).
    pub fn enabled(&self) -> bool {
        self.read_closed() || self.admin_closed() || self.metrics_allow.is_some()
    }

    fn read_closed(&self) -> bool {
        self.read_allow.is_some() || self.auth.is_some()
    }

    fn admin_closed(&self) -> bool {
        self.admin_allow.is_some() || self.admin_credentials()
    }

    /// Whether admin rights can be proven by credentials (a token or a
    /// certificate), not only by address: refusals then say 401, not 403.
    fn admin_credentials(&self) -> bool {
        self.admin_token.is_some() || !self.admin_cn.is_empty()
    }
}

/// A secret held by the server (the admin token): never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What the server knows of a request's sender.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub peer: IpAddr,
    /// The request came over HTTPS.
    pub tls: bool,
    /// A client certificate's common name, only if the server verified it.
    pub common_name: Option<&'a str>,
    pub authorization: Presented<'a>,
    /// The connection's last grant, if it keeps one.
    pub remembered: Option<&'a Remembered>,
}

/// The last grant of one keep-alive connection, with its secret: a
/// consumer sends the same secret on every lookup of its connection, and
/// the peer, TLS and common name cannot change within it, so the next
/// request with that secret is answered here, before the auth client's
/// cache (a SHA-256 of the key and a lock). Valid until the grant expires,
/// exactly as the cache entry; the secret is compared in constant time.
///
/// The connection keeps its own copy of the grant: every consumer with the
/// same secret shares one cached grant, and a lookup on each core touching
/// its reference count and its patterns' scratch space would make the
/// cores take that cache line from each other on every request.
#[derive(Default)]
pub struct Remembered(Mutex<Option<(Box<str>, Arc<Grant>)>>);

impl Remembered {
    /// The remembered grant, if `secret` is the one it was granted for and it
    /// has not expired at `now`.
    pub fn get(&self, secret: &str, now: Instant) -> Option<Arc<Grant>> {
        let last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match &*last {
            Some((s, grant)) if now < grant.expires() && same_secret(secret, s) => {
                Some(Arc::clone(grant))
            }
            _ => None,
        }
    }

    /// Remembers a copy of `grant` for `secret`; returns the copy.
    pub fn set(&self, secret: &str, grant: &Grant) -> Arc<Grant> {
        let own = Arc::new(grant.clone());
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((secret.into(), Arc::clone(&own)));
        own
    }
}

impl std::fmt::Debug for Remembered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Remembered(<redacted>)")
    }
}

/// The answer to "may this request go on?".
#[derive(Debug)]
pub enum Verdict {
    /// Everything the class covers.
    Full,
    /// A read by a consumer whose secret the auth server granted: only the
    /// topics of the grant (the handlers filter by it).
    Identity(Arc<Grant>),
    Refused(Refusal),
}

/// Why a request was refused: its status, message and metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Credentials would let it in, and it sent none: 401 `AUTH_REQUIRED`.
    NoCredentials,
    /// Its credentials are wrong (an unknown token or secret, or a
    /// malformed `Authorization` header): 401 `AUTH_FAILED`.
    BadCredentials,
    /// The identity is known but may not do this: 403 `FORBIDDEN`.
    Forbidden,
    /// The class takes no credentials and the peer is not on its
    /// allow-list: 403 `NOT_ALLOWED`.
    NotAllowed,
    /// The auth server could not be asked: 503 `AUTH_UNAVAILABLE`. Fails
    /// closed: a request that needs the auth server is never let through
    /// without its answer.
    AuthUnavailable,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::NoCredentials,
        Refusal::BadCredentials,
        Refusal::Forbidden,
        Refusal::NotAllowed,
        Refusal::AuthUnavailable,
    ];

    /// HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            Refusal::NoCredentials | Refusal::BadCredentials => 401,
            Refusal::Forbidden | Refusal::NotAllowed => 403,
            Refusal::AuthUnavailable => 503,
        }
    }

    /// The `message` of the JSON error body (the original's shape).
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NoCredentials => "AUTH_REQUIRED",
            Refusal::BadCredentials => "AUTH_FAILED",
            Refusal::Forbidden => "FORBIDDEN",
            Refusal::NotAllowed => "NOT_ALLOWED",
            Refusal::AuthUnavailable => "AUTH_UNAVAILABLE",
        }
    }

    /// The `reason` label of `nsqlookupd_http_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NoCredentials => "no_credentials",
            Refusal::BadCredentials => "bad_credentials",
            Refusal::Forbidden => "forbidden",
            Refusal::NotAllowed => "not_allowed",
            Refusal::AuthUnavailable => "auth_unavailable",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The access rules and their counters; one per server, shared.
#[derive(Debug)]
pub struct Access {
    options: AccessOptions,
    auth: Option<AuthClient>,
    /// Refusals by class and reason.
    refused: [[AtomicU64; Refusal::ALL.len()]; Class::GUARDED.len()],
    log: LogThrottle,
}

impl Access {
    /// Fails only if the auth client cannot be built (the options were
    /// checked at parse time, so only a CA file that changed since).
    pub fn new(options: AccessOptions) -> Result<Access, String> {
        let auth = options.auth.clone().map(AuthClient::new).transpose()?;
        Ok(Access {
            options,
            auth,
            refused: Default::default(),
            log: LogThrottle::new(Duration::from_secs(1)),
        })
    }

    /// The auth client's counters, when there is one.
    pub fn auth_stats(&self) -> Option<&AuthStats> {
        self.auth.as_ref().map(AuthClient::stats)
    }

    /// Whether any rule is set (standalone defaults: none).
    pub fn enabled(&self) -> bool {
        self.options.enabled()
    }

    /// Refusals so far of `class` for `reason`.
    pub fn refused(&self, class: Class, reason: Refusal) -> u64 {
        self.refused[class.index()][reason.index()].load(Ordering::Relaxed)
    }

    /// Decides on a request of `class` from a sender with these facts.
    pub async fn check(&self, class: Class, facts: &Facts<'_>) -> Verdict {
        let verdict = match class {
            Class::Open => Verdict::Full,
            Class::Read => self.read(facts).await,
            Class::Admin => self.admin(facts),
            Class::Metrics => self.metrics(facts),
        };
        if let Verdict::Refused(reason) = verdict {
            self.count(class, reason, facts.peer);
        }
        verdict
    }

    /// Counts (and logs, throttled) a refusal decided by the caller: a
    /// granted identity asking for a topic its grant does not cover.
    pub fn count(&self, class: Class, reason: Refusal, peer: IpAddr) {
        self.refused[class.index()][reason.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(n) = self.log.hit() {
            // Never the secret: only what kind of credentials came.
            warn!(
                peer = %peer,
                class = class.label(),
                reason = reason.label(),
                "HTTP: refused {n} request(s) (last: {} request from {peer}: {})",
                class.label(),
                reason.message()
            );
        }
    }

    /// Admin rights: the admin allow-list, a verified common name of
    /// `--admin-cn`, or the admin token.
    fn admin_rights(&self, facts: &Facts<'_>) -> bool {
        let o = &self.options;
        o.admin_allow.as_ref().is_some_and(|l| l.allows(facts.peer))
            || facts
                .common_name
                .is_some_and(|cn| o.admin_cn.iter().any(|a| a == cn))
            || match (&o.admin_token, facts.authorization) {
                (Some(token), Presented::Secret(s)) => same_secret(s, &token.0),
                _ => false,
            }
    }

    /// How to refuse a sender without rights in a class whose credentials
    /// are `takes_credentials`.
    fn refusal(takes_credentials: bool, facts: &Facts<'_>) -> Refusal {
        match facts.authorization {
            _ if !takes_credentials => Refusal::NotAllowed,
            Presented::Nothing => Refusal::NoCredentials,
            Presented::Secret(_) | Presented::Malformed => Refusal::BadCredentials,
        }
    }

    fn admin(&self, facts: &Facts<'_>) -> Verdict {
        let o = &self.options;
        if !o.admin_closed() || self.admin_rights(facts) {
            return Verdict::Full;
        }
        Verdict::Refused(Self::refusal(o.admin_credentials(), facts))
    }

    fn metrics(&self, facts: &Facts<'_>) -> Verdict {
        let o = &self.options;
        match &o.metrics_allow {
            None => Verdict::Full,
            Some(l) if l.allows(facts.peer) => Verdict::Full,
            Some(_) if self.admin_rights(facts) => Verdict::Full,
            Some(_) => Verdict::Refused(Self::refusal(o.admin_credentials(), facts)),
        }
    }

    /// The allow-list and admin rights first, so that they never wait on
    /// the auth server; then the consumer's secret, which the auth server
    /// must grant. An admin token is never sent to the auth server.
    async fn read(&self, facts: &Facts<'_>) -> Verdict {
        let o = &self.options;
        if !o.read_closed()
            || o.read_allow.as_ref().is_some_and(|l| l.allows(facts.peer))
            || self.admin_rights(facts)
        {
            return Verdict::Full;
        }
        let Some(auth) = &self.auth else {
            return Verdict::Refused(Self::refusal(o.admin_credentials(), facts));
        };
        let Presented::Secret(secret) = facts.authorization else {
            return Verdict::Refused(Self::refusal(true, facts));
        };
        if let Some(grant) = facts.remembered.and_then(|r| r.get(secret, Instant::now())) {
            auth.stats().cache_hits.fetch_add(1, Ordering::Relaxed);
            return Verdict::Identity(grant);
        }
        let query = AuthQuery {
            remote_ip: facts.peer,
            tls: facts.tls,
            secret,
            common_name: facts.common_name.unwrap_or(""),
        };
        match auth.authorize(&query).await {
            Ok(grant) => match facts.remembered {
                Some(r) => Verdict::Identity(r.set(secret, &grant)),
                None => Verdict::Identity(grant),
            },
            Err(AuthError::Denied) => Verdict::Refused(Refusal::BadCredentials),
            Err(AuthError::Unavailable) => Verdict::Refused(Refusal::AuthUnavailable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> Option<AllowList> {
        Some(AllowList::parse(s).unwrap())
    }

    fn facts<'a>(peer: &str, authorization: Presented<'a>, cn: Option<&'a str>) -> Facts<'a> {
        Facts {
            peer: peer.parse().unwrap(),
            tls: cn.is_some(),
            common_name: cn,
            authorization,
            remembered: None,
        }
    }

    fn check(access: &Access, class: Class, f: &Facts<'_>) -> Result<(), Refusal> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        match rt.block_on(access.check(class, f)) {
            Verdict::Full => Ok(()),
            Verdict::Identity(_) => panic!("no auth server here"),
            Verdict::Refused(r) => Err(r),
        }
    }

    #[test]
    fn no_setting_leaves_every_class_open() {
        let a = Access::new(AccessOptions::default()).unwrap();
        assert!(!a.enabled());
        let f = facts("203.0.113.9", Presented::Nothing, None);
        for class in [Class::Open, Class::Read, Class::Admin, Class::Metrics] {
            assert_eq!(check(&a, class, &f), Ok(()), "{class:?}");
        }
    }

    #[test]
    fn allow_lists_close_their_class_only() {
        let a = Access::new(AccessOptions {
            admin_allow: list("10.0.0.0/8"),
            ..Default::default()
        })
        .unwrap();
        let outside = facts("203.0.113.9", Presented::Nothing, None);
        let inside = facts("10.1.1.1", Presented::Nothing, None);
        assert_eq!(check(&a, Class::Admin, &outside), Err(Refusal::NotAllowed));
        assert_eq!(check(&a, Class::Admin, &inside), Ok(()));
        assert_eq!(check(&a, Class::Read, &outside), Ok(()), "read stays open");
        assert_eq!(check(&a, Class::Open, &outside), Ok(()));
        assert_eq!(a.refused(Class::Admin, Refusal::NotAllowed), 1);
        assert_eq!(a.refused(Class::Read, Refusal::NotAllowed), 0);
    }

    #[test]
    fn admin_token_and_common_names() {
        let a = Access::new(AccessOptions {
            admin_token: Some(Secret("s3cret-token-0123".into())),
            admin_cn: vec!["nsqadmin".into()],
            metrics_allow: list("127.0.0.1"),
            read_allow: list("10.0.0.0/8"),
            ..Default::default()
        })
        .unwrap();
        let peer = "203.0.113.9";
        let good = facts(peer, Presented::Secret("s3cret-token-0123"), None);
        let wrong = facts(peer, Presented::Secret("s3cret-token-0124"), None);
        let malformed = facts(peer, Presented::Malformed, None);
        let none = facts(peer, Presented::Nothing, None);
        let cert = facts(peer, Presented::Nothing, Some("nsqadmin"));
        let other_cert = facts(peer, Presented::Nothing, Some("mallory"));
        assert_eq!(check(&a, Class::Admin, &good), Ok(()));
        assert_eq!(check(&a, Class::Admin, &cert), Ok(()));
        assert_eq!(
            check(&a, Class::Admin, &wrong),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(
            check(&a, Class::Admin, &malformed),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(check(&a, Class::Admin, &none), Err(Refusal::NoCredentials));
        assert_eq!(
            check(&a, Class::Admin, &other_cert),
            Err(Refusal::NoCredentials)
        );
        // Admin rights include read and metrics.
        assert_eq!(check(&a, Class::Read, &good), Ok(()));
        assert_eq!(check(&a, Class::Metrics, &cert), Ok(()));
        assert_eq!(check(&a, Class::Read, &none), Err(Refusal::NoCredentials));
        assert_eq!(
            check(&a, Class::Metrics, &wrong),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(
            check(
                &a,
                Class::Metrics,
                &facts("127.0.0.1", Presented::Nothing, None)
            ),
            Ok(())
        );
    }

    #[test]
    fn a_connection_remembers_its_grant_until_it_expires() {
        let answer = br#"{"ttl":60,"identity":"i","authorizations":[{"topic":".*","channels":[".*"],"permissions":["subscribe"]}]}"#;
        let now = Instant::now();
        let grant = Arc::new(auth::parse_answer(answer, now).unwrap());
        let r = Remembered::default();
        assert!(r.get("s1", now).is_none());
        let own = r.set("s1", &grant);
        assert!(!Arc::ptr_eq(&own, &grant), "a copy of its own");
        assert!(Arc::ptr_eq(&r.get("s1", now).unwrap(), &own));
        assert!(r.get("s2", now).is_none(), "another secret");
        assert!(r.get("s1", grant.expires()).is_none(), "expired");
        assert!(!format!("{r:?}").contains("s1"));
    }

    #[test]
    fn secrets_never_shown() {
        let o = AccessOptions {
            admin_token: Some(Secret("hunter2-hunter2".into())),
            ..Default::default()
        };
        assert!(!format!("{o:?}").contains("hunter2"));
    }
}
