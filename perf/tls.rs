//! What the HTTP client needs besides an address: the scheme of each
//! `--http-address` entry (`host:port`, `http://host:port`,
//! `https://host:port`), the TLS client configuration (rustls with the
//! `ring` provider, the server verified against `--http-ca-file` or the
//! system's CAs, an optional client certificate), and the Bearer secret.
//! Everything here runs once at start-up; the per-request path is in
//! [`crate::httpc`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::httpc::Target;

/// One `--http-address` entry, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// As given (trimmed), for reports.
    pub given: String,
    /// `https://`: a TLS connection.
    pub tls: bool,
    /// `host:port` (an IPv6 host in brackets): what is connected to, and
    /// the `Host` header.
    pub authority: String,
    /// The host without brackets: the TLS server name (SNI and the name
    /// the certificate must carry; an IP address is checked as one).
    pub host: String,
}

impl Endpoint {
    /// A plain `host:port` known to be well formed (the ceiling server's).
    pub fn plain(authority: &str) -> Endpoint {
        Endpoint {
            given: authority.to_string(),
            tls: false,
            authority: authority.to_string(),
            host: split_host(authority).unwrap_or_default().to_string(),
        }
    }
}

/// The host part of `host:port` or `[v6]:port`, if the port is a number.
fn split_host(authority: &str) -> Option<&str> {
    let (host, port) = authority.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        None if host.contains(':') => return None, // v6 without brackets
        None => host,
    };
    (!host.is_empty()).then_some(host)
}

/// Parses `host:port`, `http://host:port` or `https://host:port` (a
/// trailing `/` is allowed; a path is not: the bench picks the paths).
pub fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let given = text.trim();
    let bad = |why: &str| format!("bad HTTP address {given:?}: {why}");
    let (tls, rest) = if let Some(r) = given.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = given.strip_prefix("http://") {
        (false, r)
    } else if given.contains("://") {
        return Err(bad("the scheme must be http:// or https://"));
    } else {
        (false, given)
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(bad("use host:port, http://host:port or https://host:port"));
    }
    if authority.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(bad("no spaces"));
    }
    let host = split_host(authority).ok_or_else(|| bad("use host:port (a port is required)"))?;
    if tls && ServerName::try_from(host).is_err() {
        return Err(bad("the host is neither a DNS name nor an IP address"));
    }
    Ok(Endpoint {
        given: given.to_string(),
        tls,
        authority: authority.to_string(),
        host: host.to_string(),
    })
}

/// A list of entries (from `a,b` or a repeated option): at least one.
pub fn endpoint_list(list: &[String]) -> Result<Vec<Endpoint>, String> {
    if list.is_empty() {
        return Err("an address list must name at least one address".into());
    }
    list.iter().map(|a| parse_endpoint(a)).collect()
}

/// The Bearer secret; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Checks that the secret fits in a header value: printable ASCII, no
    /// CR or LF (nothing could be smuggled into the request), not empty.
    pub fn new(text: &str) -> Result<Secret, String> {
        if text.is_empty() {
            return Err("the auth secret is empty".into());
        }
        if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err("the auth secret must be printable ASCII (no control characters)".into());
        }
        Ok(Secret(text.into()))
    }

    /// The secret in a file, without the whitespace around it (the
    /// trailing newline of `echo secret > file`).
    pub fn from_file(path: &Path) -> Result<Secret, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading the auth secret file {}: {e}", path.display()))?;
        Secret::new(text.trim())
            .map_err(|e| format!("the auth secret file {}: {e}", path.display()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Which CAs the server's certificate is verified against.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Roots {
    /// `--http-ca-file`.
    CaFile(String),
    /// The system's CAs (rustls-native-certs), this many.
    System(usize),
}

impl fmt::Display for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Roots::CaFile(p) => write!(f, "CA file {p}"),
            Roots::System(n) => write!(f, "the system's {n} CAs"),
        }
    }
}

/// A rustls client configuration and how it verifies servers.
#[derive(Clone, Debug)]
pub struct Tls {
    pub config: Arc<ClientConfig>,
    pub roots: Roots,
    pub client_cert: bool,
}

/// Reads every certificate of a PEM file.
fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading the {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the {what} {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// Builds the TLS client configuration: the server is verified against
/// `ca_file` (PEM, every certificate in it trusted) or, without one, the
/// system's CAs; `client` is a certificate chain and its key (PEM) for
/// servers that require one. The `ring` provider, and rustls's safe
/// default protocol versions for the features this build has: TLS 1.3
/// (1.2 too if rustls's `tls12` feature is ever enabled; nothing here
/// enables it).
pub fn client_config(
    ca_file: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<Tls, String> {
    let mut store = RootCertStore::empty();
    let roots = match ca_file {
        Some(path) => {
            for cert in read_certs(path, "CA file")? {
                store
                    .add(cert)
                    .map_err(|e| format!("the CA file {}: {e}", path.display()))?;
            }
            Roots::CaFile(path.display().to_string())
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _unparsable) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no system CA certificate could be loaded{}; give --http-ca-file",
                    found
                        .errors
                        .first()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ));
            }
            Roots::System(added)
        }
    };
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?
            .with_root_certificates(store);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_certs(cert, "client certificate file")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("reading the client key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the client certificate and key: {e}"))?
        }
    };
    // The client speaks HTTP/1.1 only; a server that offers h2 must not pick it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        config: Arc::new(config),
        roots,
        client_cert: client.is_some(),
    })
}

/// What every connection of a run shares: the TLS configuration (when
/// an address is `https://`), the secret, and whether requests ask for
/// gzip answers. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct HttpClient {
    pub tls: Option<Tls>,
    pub secret: Option<Secret>,
    /// Requests carry `Accept-Encoding: gzip` (`--accept-gzip`).
    pub accept_gzip: bool,
}

impl HttpClient {
    /// The target for one endpoint.
    pub fn target(&self, e: &Endpoint) -> Result<Arc<Target>, String> {
        Target::new(e, self.tls.as_ref(), self.secret.as_ref(), self.accept_gzip)
    }

    pub fn targets(&self, list: &[Endpoint]) -> Result<Vec<Arc<Target>>, String> {
        list.iter().map(|e| self.target(e)).collect()
    }

    /// What the reports say about how the server was asked.
    pub fn report(&self, targets: &[Arc<Target>]) -> HttpClientReport {
        let tls = targets.iter().any(|t| t.scheme() == "https");
        HttpClientReport {
            scheme: schemes_text(targets),
            verified_against: self
                .tls
                .as_ref()
                .filter(|_| tls)
                .map(|t| t.roots.to_string()),
            client_certificate: tls && self.tls.as_ref().is_some_and(|t| t.client_cert),
            auth_secret_sent: targets.iter().any(|t| t.secret_sent()),
            accept_gzip: targets.iter().any(|t| t.accepts_gzip()),
        }
    }
}

/// `http`, `https`, or `http+https` for a list that mixes them.
pub fn schemes_text(targets: &[Arc<Target>]) -> String {
    let tls = targets.iter().filter(|t| t.scheme() == "https").count();
    match (tls, targets.len() - tls) {
        (0, _) => "http".into(),
        (_, 0) => "https".into(),
        _ => "http+https".into(),
    }
}

/// How the HTTP side was asked (in the JSON, and one line of the table).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HttpClientReport {
    /// `http`, `https` or `http+https`.
    pub scheme: String,
    /// For https: the CAs the server's certificate was verified against.
    pub verified_against: Option<String>,
    /// For https: whether a client certificate was offered.
    pub client_certificate: bool,
    /// Whether every request carried `Authorization: Bearer` (the secret
    /// itself is never written anywhere).
    pub auth_secret_sent: bool,
    /// Whether requests carried `Accept-Encoding: gzip`.
    pub accept_gzip: bool,
}

impl fmt::Display for HttpClientReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.scheme)?;
        if let Some(v) = &self.verified_against {
            write!(f, " (server verified against {v}")?;
            if self.client_certificate {
                write!(f, ", client certificate sent")?;
            }
            write!(f, ")")?;
        }
        if self.auth_secret_sent {
            write!(f, ", Bearer secret sent")?;
        } else {
            write!(f, ", no secret sent")?;
        }
        if self.accept_gzip {
            write!(f, ", Accept-Encoding: gzip")?;
        }
        Ok(())
    }
}

/// The error kind (the `errors` tallies) of an I/O error that rustls
/// raised: the server's certificate refused, the server refusing us (an
/// alert, e.g. for a missing or wrong client certificate: in TLS 1.3 it
/// arrives on the first read after the handshake), or anything else.
/// None when it is not a TLS error.
pub fn rustls_error_kind(e: &std::io::Error) -> Option<&'static str> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(_) => Some("tls_bad_certificate"),
        rustls::Error::AlertReceived(_) => Some("tls_alert"),
        _ => Some("tls_error"),
    }
}

/// The error kind of a failed TLS handshake.
pub fn handshake_error_kind(e: &std::io::Error) -> &'static str {
    rustls_error_kind(e).unwrap_or(match e.kind() {
        std::io::ErrorKind::TimedOut => "timeout",
        // The server hung up on the ClientHello: not a TLS port, or one
        // that refuses us before saying why.
        _ => "tls_handshake_failed",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_with_and_without_scheme() {
        let e = parse_endpoint("127.0.0.1:4161").unwrap();
        assert_eq!(
            (e.tls, e.authority.as_str(), e.host.as_str()),
            (false, "127.0.0.1:4161", "127.0.0.1")
        );
        let e = parse_endpoint(" http://a.example:80/ ").unwrap();
        assert_eq!(
            (e.tls, e.authority.as_str(), e.given.as_str()),
            (false, "a.example:80", "http://a.example:80/")
        );
        let e = parse_endpoint("https://lookupd.example:4162").unwrap();
        assert_eq!(
            (e.tls, e.authority.as_str(), e.host.as_str()),
            (true, "lookupd.example:4162", "lookupd.example")
        );
        let e = parse_endpoint("https://[::1]:4162").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.host.as_str()),
            ("[::1]:4162", "::1")
        );
        // An IP address is checked as one (rustls ServerName::IpAddress).
        let host = parse_endpoint("https://127.0.0.1:1").unwrap().host;
        assert!(matches!(
            ServerName::try_from(host.as_str()),
            Ok(ServerName::IpAddress(_))
        ));
        for bad in [
            "",
            "localhost",
            "https://localhost",
            "https://:4161",
            "https://h:port",
            "https://h:70000",
            "https://h:1/lookup",
            "https://user@h:1",
            "ftp://h:1",
            "tcp://h:1",
            "h :1",
            "::1:4161",
            "https://[::1:4161",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(endpoint_list(&[]).is_err());
        assert_eq!(
            endpoint_list(&["a:1".into(), "https://b:2".into()])
                .unwrap()
                .iter()
                .map(|e| e.tls)
                .collect::<Vec<_>>(),
            [false, true]
        );
        assert_eq!(Endpoint::plain("127.0.0.1:9").host, "127.0.0.1");
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        let s = Secret::new("s3cr3t-token_1.2~+/=").unwrap();
        assert_eq!(s.expose(), "s3cr3t-token_1.2~+/=");
        assert!(!format!("{s:?}").contains("s3cr3t"));
        assert!(Secret::new("").is_err());
        assert!(Secret::new("a\r\nX-Evil: 1").is_err());
        assert!(Secret::new("caf\u{e9}").is_err());
        let dir = crate::testtls::TempDir::new("secret");
        let path = dir.path().join("secret");
        std::fs::write(&path, "  from-a-file\n").unwrap();
        assert_eq!(Secret::from_file(&path).unwrap().expose(), "from-a-file");
        std::fs::write(&path, "\n").unwrap();
        assert!(Secret::from_file(&path).is_err());
        assert!(Secret::from_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn client_configs_from_pem_files() {
        let pki = crate::testtls::Pki::generate();
        let t = client_config(Some(&pki.ca_file), None).unwrap();
        assert_eq!(t.roots, Roots::CaFile(pki.ca_file.display().to_string()));
        assert!(!t.client_cert);
        assert_eq!(t.config.alpn_protocols, [b"http/1.1".to_vec()]);
        let t = client_config(
            Some(&pki.ca_file),
            Some((&pki.client_cert_file, &pki.client_key_file)),
        )
        .unwrap();
        assert!(t.client_cert);
        // A key file is not a CA file; a missing file says which.
        let e = client_config(Some(&pki.client_key_file), None).unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let e = client_config(Some(&pki.dir.path().join("nope.pem")), None).unwrap_err();
        assert!(e.contains("nope.pem"), "{e}");
        // A certificate is not a key.
        let e = client_config(
            Some(&pki.ca_file),
            Some((&pki.client_cert_file, &pki.client_cert_file)),
        )
        .unwrap_err();
        assert!(e.contains("client key"), "{e}");
    }
}
