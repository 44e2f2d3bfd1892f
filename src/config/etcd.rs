//! Cluster mode options (`--etcd-*`): how this replica reaches etcd. Only the
//! options live here; nothing connects to etcd at parse time. Every value is
//! checked even in standalone mode (a bad value is an error either way); the
//! checks across flags (cert without key, ...) and the reading of the
//! password and TLS files happen here too, so that a replica that cannot
//! reach etcd for a reason known at start exits 2 at once.

use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, format_go_duration, parse_go_duration};

/// `--etcd-prefix`'s default.
pub(super) const DEFAULT_PREFIX: &str = "/nsqlookupd";
/// `--etcd-lease-ttl`'s default.
pub(super) const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);
/// `--etcd-max-txn-ops`'s default: etcd's own `--max-txn-ops` default.
pub(super) const DEFAULT_MAX_TXN_OPS: usize = 128;
const MIN_LEASE_TTL: Duration = Duration::from_secs(5);
/// etcd's `MaxLeaseTTL` (seconds).
const MAX_LEASE_TTL_SECS: u64 = 9_000_000_000;

/// Cluster mode: how to reach etcd. `Options::etcd` is `None` in standalone mode (no --etcd-endpoints).
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Client URLs, e.g. `http://127.0.0.1:2379` (scheme http or https, host and port required).
    pub endpoints: Vec<String>,
    /// Key prefix, normalised: starts with '/', no trailing '/' (default "/nsqlookupd").
    pub prefix: String,
    /// TTL of this replica's etcd lease (default 60s, at least 5s, whole seconds; etcd leases are in seconds).
    pub lease_ttl: Duration,
    /// Most operations in one etcd transaction (default 128 = etcd's own default --max-txn-ops; at least 1).
    pub max_txn_ops: usize,
    pub username: Option<String>,
    /// Read from --etcd-password-file at start (trailing newline stripped); never taken from the command line.
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl EtcdOptions {
    /// Whether to speak TLS to etcd: some endpoint is https, or a CA is
    /// given. (All endpoints then are https, or all http with a CA: mixing
    /// the two schemes is refused at parse time.)
    pub fn uses_tls(&self) -> bool {
        self.ca_file.is_some() || self.endpoints.iter().any(|e| e.starts_with("https://"))
    }
}

/// Like the derived one, with the password left out.
impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("lease_ttl", &self.lease_ttl)
            .field("max_txn_ops", &self.max_txn_ops)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish()
    }
}

/// The value of `--etcd-endpoints` (a newtype, so that clap takes the list
/// as one value); empty = standalone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Endpoints(pub(super) Vec<String>);

/// `URL[,URL...]`, each `http://host:port` or `https://host:port`; blanks
/// around the commas are ignored, an empty (or blank) list is standalone.
pub(super) fn parse_endpoints(s: &str) -> Result<Endpoints, String> {
    if s.trim().is_empty() {
        return Ok(Endpoints::default());
    }
    let mut out: Vec<String> = Vec::new();
    for item in s.split(',') {
        let url = parse_endpoint(item.trim())?;
        if out.contains(&url) {
            return Err(format!("endpoint {url:?} given twice"));
        }
        out.push(url);
    }
    let https = out.iter().filter(|u| u.starts_with("https://")).count();
    if https != 0 && https != out.len() {
        return Err("mixes http:// and https:// endpoints".into());
    }
    Ok(Endpoints(out))
}

/// One endpoint, returned as `scheme://host:port` (scheme lowercased, a
/// trailing `/` dropped).
fn parse_endpoint(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty endpoint".into());
    }
    let bad = |why: &str| format!("endpoint {s:?}: {why}");
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| bad("no scheme (http:// or https://)"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(bad("scheme must be http or https"));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(bad("only scheme://host:port (no path, query or user)"));
    }
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (ip, after) = inner
            .split_once(']')
            .ok_or_else(|| bad("unclosed '[' in IPv6 address"))?;
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("invalid IPv6 address"));
        }
        let port = after.strip_prefix(':').ok_or_else(|| bad("no port"))?;
        (format!("[{ip}]"), port)
    } else {
        let (host, port) = authority.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        if host.contains(':') {
            return Err(bad("an IPv6 address needs brackets: [addr]:port"));
        }
        (host.to_owned(), port)
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if !host.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(bad("invalid host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => {}
        _ => return Err(bad("port must be 1 to 65535")),
    }
    Ok(format!("{scheme}://{host}:{port}"))
}

/// `--etcd-prefix`: printable ASCII without spaces; returned with one
/// leading `/` and no trailing `/`.
pub(super) fn parse_prefix(s: &str) -> Result<String, String> {
    if let Some(c) = s.chars().find(|c| !matches!(c, '!'..='~')) {
        return Err(format!(
            "{c:?} not allowed (printable ASCII without spaces)"
        ));
    }
    let inner = s.trim_matches('/');
    if inner.is_empty() {
        return Err("empty prefix (besides '/')".into());
    }
    Ok(format!("/{inner}"))
}

/// `--etcd-lease-ttl`: a Go duration, whole seconds, 5s to etcd's maximum.
pub(super) fn parse_lease_ttl(s: &str) -> Result<Duration, String> {
    let ttl = parse_go_duration(s)?;
    if ttl < MIN_LEASE_TTL {
        return Err(format!(
            "must be at least {}",
            format_go_duration(MIN_LEASE_TTL)
        ));
    }
    if ttl.subsec_nanos() != 0 {
        return Err("must be whole seconds (etcd leases are in seconds)".into());
    }
    if ttl.as_secs() > MAX_LEASE_TTL_SECS {
        return Err(format!(
            "must be at most {} (etcd's limit)",
            format_go_duration(Duration::from_secs(MAX_LEASE_TTL_SECS))
        ));
    }
    Ok(ttl)
}

/// `--etcd-max-txn-ops`: at least 1.
pub(super) fn parse_max_txn_ops(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("invalid number {s:?}")),
    }
}

/// Where a setting was given, to name it in an error the way the rest of
/// the configuration does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// The command line (or nowhere: the default).
    Flag,
    /// The config file.
    File,
}

impl Source {
    /// `--etcd-cert` or `etcd_cert`.
    pub(super) fn bare(self, id: &str) -> String {
        match self {
            Source::Flag => format!("--{}", id.replace('_', "-")),
            Source::File => id.to_owned(),
        }
    }

    /// `flag --etcd-cert` or `config option etcd_cert`.
    pub(super) fn label(self, id: &str) -> String {
        match self {
            Source::Flag => format!("flag {}", self.bare(id)),
            Source::File => format!("config option {id}"),
        }
    }
}

/// The `--etcd-*` settings, each value already checked by its parser; an
/// empty string or path counts as not given.
#[derive(Debug)]
pub(super) struct Given {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub lease_ttl: Duration,
    pub max_txn_ops: usize,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The checks across the settings, and the files read at start. `None` in
/// standalone mode, with a warning naming the settings that then have no
/// effect.
pub(super) fn resolve(
    given: Given,
    source: impl Fn(&str) -> Source,
    warnings: &mut Vec<String>,
) -> Result<Option<EtcdOptions>, ConfigError> {
    let Given {
        endpoints,
        prefix,
        lease_ttl,
        max_txn_ops,
        username,
        password_file,
        cacert,
        cert,
        key,
    } = given;
    let username = username.filter(|u| !u.is_empty());
    let nonempty = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
    let (password_file, cacert, cert, key) = (
        nonempty(password_file),
        nonempty(cacert),
        nonempty(cert),
        nonempty(key),
    );

    let needs = |present: &str, missing: &str| {
        let s = source(present);
        ConfigError(format!("{} needs {}", s.label(present), s.bare(missing)))
    };
    for (a, a_set, b, b_set) in [
        ("etcd_cert", cert.is_some(), "etcd_key", key.is_some()),
        (
            "etcd_username",
            username.is_some(),
            "etcd_password_file",
            password_file.is_some(),
        ),
    ] {
        match (a_set, b_set) {
            (true, false) => return Err(needs(a, b)),
            (false, true) => return Err(needs(b, a)),
            _ => {}
        }
    }

    let unreadable = |id: &str, path: &PathBuf, why: String| {
        ConfigError(format!(
            "invalid value {:?} for {}: {why}",
            path.display().to_string(),
            source(id).label(id)
        ))
    };
    for (id, path) in [
        ("etcd_cacert", &cacert),
        ("etcd_cert", &cert),
        ("etcd_key", &key),
    ] {
        if let Some(path) = path {
            std::fs::read(path)
                .map_err(|e| unreadable(id, path, format!("cannot read the file: {e}")))?;
        }
    }
    let password = match &password_file {
        Some(path) => {
            let id = "etcd_password_file";
            let text = std::fs::read_to_string(path)
                .map_err(|e| unreadable(id, path, format!("cannot read the file: {e}")))?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            if text.is_empty() {
                return Err(unreadable(id, path, "the file holds no password".into()));
            }
            Some(text.to_owned())
        }
        None => None,
    };

    if endpoints.is_empty() {
        let set = [
            ("etcd_prefix", prefix != DEFAULT_PREFIX),
            ("etcd_lease_ttl", lease_ttl != DEFAULT_LEASE_TTL),
            ("etcd_max_txn_ops", max_txn_ops != DEFAULT_MAX_TXN_OPS),
            ("etcd_username", username.is_some()),
            ("etcd_password_file", password_file.is_some()),
            ("etcd_cacert", cacert.is_some()),
            ("etcd_cert", cert.is_some()),
            ("etcd_key", key.is_some()),
        ];
        let ignored: Vec<String> = set
            .iter()
            .filter(|(_, set)| *set)
            .map(|(id, _)| source(id).bare(id))
            .collect();
        if !ignored.is_empty() {
            warnings.push(format!(
                "no etcd endpoints (standalone mode): {} ignored",
                ignored.join(", ")
            ));
        }
        return Ok(None);
    }

    let options = EtcdOptions {
        endpoints,
        prefix,
        lease_ttl,
        max_txn_ops,
        username,
        password,
        ca_file: cacert,
        cert_file: cert,
        key_file: key,
    };
    if options.cert_file.is_some() && !options.uses_tls() {
        let s = source("etcd_cert");
        return Err(ConfigError(format!(
            "{} needs https:// endpoints or {}",
            s.label("etcd_cert"),
            s.bare("etcd_cacert")
        )));
    }
    Ok(Some(options))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(s: &str) -> Vec<String> {
        parse_endpoints(s).unwrap().0
    }

    #[test]
    fn endpoints_parse_and_normalise() {
        assert_eq!(endpoints(""), Vec::<String>::new());
        assert_eq!(endpoints("  "), Vec::<String>::new());
        assert_eq!(
            endpoints("http://127.0.0.1:2379"),
            ["http://127.0.0.1:2379"]
        );
        assert_eq!(
            endpoints("HTTP://etcd-1.internal:2379/, http://etcd_2:2379 ,http://[::1]:23790"),
            [
                "http://etcd-1.internal:2379",
                "http://etcd_2:2379",
                "http://[::1]:23790"
            ]
        );
        assert_eq!(
            endpoints("https://a:1,https://b:2"),
            ["https://a:1", "https://b:2"]
        );
    }

    #[test]
    fn bad_endpoints_say_why() {
        for (s, why) in [
            ("127.0.0.1:2379", "no scheme"),
            ("ftp://a:1", "http or https"),
            ("http://a", "no port"),
            ("http://a:", "port must be"),
            ("http://a:0", "port must be"),
            ("http://a:65536", "port must be"),
            ("http://a:+1", "port must be"),
            ("http://:2379", "no host"),
            ("http://a b:1", "invalid host"),
            ("http://a:1/v3", "no path"),
            ("http://u:p@a:1", "no path, query or user"),
            ("http://::1:2379", "brackets"),
            ("http://[::1:2379", "unclosed"),
            ("http://[zz]:1", "IPv6"),
            ("http://[::1]2379", "no port"),
            ("http://a:1,,http://b:2", "empty endpoint"),
            ("http://a:1,", "empty endpoint"),
            ("http://a:1,http://a:1/", "given twice"),
            ("http://a:1,https://b:2", "mixes"),
        ] {
            let e = parse_endpoints(s).unwrap_err();
            assert!(e.contains(why), "{s:?}: {e}");
        }
    }

    #[test]
    fn prefix_normalised() {
        for (s, want) in [
            ("/nsqlookupd", "/nsqlookupd"),
            ("nsqlookupd", "/nsqlookupd"),
            ("/a/b/", "/a/b"),
            ("//x//", "/x"),
            ("a-b_c.d/e", "/a-b_c.d/e"),
        ] {
            assert_eq!(parse_prefix(s).unwrap(), want, "{s:?}");
        }
        for s in ["", "/", "///", "/a b", "/a\tb", "/caf\u{e9}", "/a\n"] {
            assert!(parse_prefix(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn lease_ttl_bounds() {
        assert_eq!(parse_lease_ttl("5s").unwrap(), MIN_LEASE_TTL);
        assert_eq!(parse_lease_ttl("1m0s").unwrap(), DEFAULT_LEASE_TTL);
        assert_eq!(parse_lease_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_lease_ttl("4s").unwrap_err().contains("at least 5s"));
        assert!(parse_lease_ttl("0").unwrap_err().contains("at least 5s"));
        assert!(
            parse_lease_ttl("5.5s")
                .unwrap_err()
                .contains("whole seconds")
        );
        assert!(
            parse_lease_ttl("60001ms")
                .unwrap_err()
                .contains("whole seconds")
        );
        assert!(
            parse_lease_ttl("2500001h")
                .unwrap_err()
                .contains("2500000h0m0s")
        );
        assert!(parse_lease_ttl("60").is_err());
    }

    #[test]
    fn max_txn_ops_at_least_one() {
        assert_eq!(parse_max_txn_ops("1").unwrap(), 1);
        assert_eq!(parse_max_txn_ops("128").unwrap(), DEFAULT_MAX_TXN_OPS);
        assert!(parse_max_txn_ops("0").unwrap_err().contains("at least 1"));
        assert!(parse_max_txn_ops("-1").is_err());
        assert!(parse_max_txn_ops("many").is_err());
    }

    #[test]
    fn uses_tls_and_debug_hides_the_password() {
        let mut o = EtcdOptions {
            endpoints: vec!["http://a:1".into()],
            prefix: DEFAULT_PREFIX.into(),
            lease_ttl: DEFAULT_LEASE_TTL,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            username: Some("u".into()),
            password: Some("s3cret".into()),
            ca_file: None,
            cert_file: None,
            key_file: None,
        };
        assert!(!o.uses_tls());
        o.ca_file = Some("/ca.pem".into());
        assert!(o.uses_tls());
        o.ca_file = None;
        o.endpoints = vec!["https://a:1".into()];
        assert!(o.uses_tls());
        let debug = format!("{o:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains("<redacted>"),
            "{debug}"
        );
    }
}
