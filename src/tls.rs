//! TLS for the HTTP API (`--tls-cert`, `--tls-key`, ...): this module owns
//! the rustls server configuration (the PEM files, the client-certificate
//! policy, the minimum version, ALPN `http/1.1`), its reload on SIGHUP, and
//! the handshake of one accepted connection, with its counters
//! (`stats::TlsStats`) and its throttled log line.
//!
//! It may not touch HTTP (hyper, routes, handlers: `http::run_tls` serves
//! the stream a handshake returns, through the same code as plain HTTP),
//! the registry, or flag parsing (`config::tls` hands it checked options
//! and calls [`check`] at start to name a bad file's flag).
//!
//! Reload: the configuration is kept in an [`ArcSwap`]; every handshake
//! takes the one current when it starts, so a reload (`Tls::reload`, on
//! SIGHUP) changes the certificate, key and CA of new connections only and
//! leaves open ones alone. A reload that fails (a file missing, a key that
//! no longer matches) is logged and counted, and the previous
//! configuration stays.
//!
//! Client certificates, by `--tls-client-auth-policy`:
//! - empty, no `--tls-root-ca-file`: none asked for;
//! - empty, with `--tls-root-ca-file`: asked for, optional, verified
//!   against the CA when sent (a certificate from elsewhere is refused);
//! - `require`: one must be sent; it is not verified (Go's
//!   `tls.RequireAnyClientCert`: the handshake signature is still checked,
//!   so the client holds the certificate's key);
//! - `require-verify`: one must be sent and chain to `--tls-root-ca-file`.
//!
//! A connection's certificate common name is reported only when this
//! module verified the certificate.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, error, info, warn};

use crate::config::{ClientAuth, MinVersion, TlsOptions};
use crate::stats::{LogThrottle, TLS_HANDSHAKE_FAILURES, TlsStats};

/// Which of the files a [`LoadError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFile {
    Cert,
    Key,
    RootCa,
}

impl TlsFile {
    fn flag(self) -> &'static str {
        match self {
            TlsFile::Cert => "--tls-cert",
            TlsFile::Key => "--tls-key",
            TlsFile::RootCa => "--tls-root-ca-file",
        }
    }
}

/// A file that cannot be used, and why.
#[derive(Debug)]
pub struct LoadError {
    pub file: TlsFile,
    pub path: PathBuf,
    pub why: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={}: {}",
            self.file.flag(),
            self.path.display(),
            self.why
        )
    }
}

impl std::error::Error for LoadError {}

fn load_error(file: TlsFile, path: &Path, why: impl Into<String>) -> LoadError {
    LoadError {
        file,
        path: path.to_owned(),
        why: why.into(),
    }
}

/// A configuration built from the files, with what the logs and metrics
/// tell of its certificate.
struct Loaded {
    config: Arc<ServerConfig>,
    /// The leaf certificate's subject common name, for the logs.
    common_name: Option<String>,
    /// Its not-after, Unix seconds.
    not_after: i64,
}

fn read(file: TlsFile, path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| load_error(file, path, format!("cannot read the file: {e}")))
}

/// Every CERTIFICATE block of a PEM file; at least one.
fn certificates(file: TlsFile, path: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let bytes = read(file, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| load_error(file, path, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(load_error(
            file,
            path,
            "no certificate in the file (PEM with a CERTIFICATE block expected)",
        ));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, LoadError> {
    let bytes = read(TlsFile::Key, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let why = match e {
            pem::Error::NoItemsFound => "no private key in the file (PEM with a PRIVATE KEY, \
                RSA PRIVATE KEY or EC PRIVATE KEY block expected)"
                .to_owned(),
            e => format!("not PEM: {e}"),
        };
        load_error(TlsFile::Key, path, why)
    })
}

/// The subject's common name, as Go reads it (`Subject.CommonName`: the
/// last CN attribute that is a string); `None` without one, or if the
/// certificate does not parse.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    cert.subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .last()
        .map(str::to_owned)
}

/// Accepts any client certificate without verifying it (`require`), as Go's
/// `tls.RequireAnyClientCert` does; the handshake signature is checked, so
/// the client must hold the certificate's private key.
#[derive(Debug)]
struct AnyClientCert {
    algorithms: WebPkiSupportedAlgorithms,
    /// The CA subjects hinted to clients (those of `--tls-root-ca-file`,
    /// if any, as Go sends `ClientCAs`).
    hints: Vec<DistinguishedName>,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Whether the policy has client certificates verified (so that their
/// common name means something).
fn verifies_client_certs(options: &TlsOptions) -> bool {
    match options.client_auth {
        ClientAuth::RequireVerify => true,
        ClientAuth::None => options.root_ca_file.is_some(),
        ClientAuth::Require => false,
    }
}

/// Reads the files and builds the configuration.
fn load(options: &TlsOptions) -> Result<Loaded, LoadError> {
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
    let cert_path = &options.cert_file;
    let chain = certificates(TlsFile::Cert, cert_path)?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).map_err(|e| {
        load_error(
            TlsFile::Cert,
            cert_path,
            format!("the first certificate does not parse: {e}"),
        )
    })?;
    let not_after = leaf.validity().not_after.timestamp();
    let common_name = common_name(&chain[0]);
    let key = private_key(&options.key_file)?;

    let roots = match &options.root_ca_file {
        Some(path) => {
            let mut store = RootCertStore::empty();
            for cert in certificates(TlsFile::RootCa, path)? {
                store.add(cert).map_err(|e| {
                    load_error(
                        TlsFile::RootCa,
                        path,
                        format!("not a usable CA certificate: {e}"),
                    )
                })?;
            }
            Some((Arc::new(store), path))
        }
        None => None,
    };
    let webpki = |roots: Arc<RootCertStore>, path: &Path, optional: bool| {
        let builder = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider));
        let builder = if optional {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        builder
            .build()
            .map_err(|e| load_error(TlsFile::RootCa, path, format!("unusable CA: {e}")))
    };
    let verifier: Arc<dyn ClientCertVerifier> = match (options.client_auth, roots) {
        (ClientAuth::None, None) => WebPkiClientVerifier::no_client_auth(),
        (ClientAuth::None, Some((roots, path))) => webpki(roots, path, true)?,
        (ClientAuth::RequireVerify, Some((roots, path))) => webpki(roots, path, false)?,
        (ClientAuth::RequireVerify, None) => {
            // `config::tls` refuses this; kept an error, never a silent downgrade.
            return Err(load_error(
                TlsFile::RootCa,
                Path::new(""),
                "--tls-client-auth-policy=require-verify needs --tls-root-ca-file",
            ));
        }
        (ClientAuth::Require, roots) => Arc::new(AnyClientCert {
            algorithms: provider.signature_verification_algorithms,
            hints: roots.map(|(r, _)| r.subjects()).unwrap_or_default(),
        }),
    };
    let versions: &[&'static rustls::SupportedProtocolVersion] = match options.min_version {
        MinVersion::Tls13 => &[&rustls::version::TLS13],
        // TLS 1.0 and 1.1 are not in rustls: the floor is 1.2 (config::tls warns).
        MinVersion::Tls10 | MinVersion::Tls11 | MinVersion::Tls12 => {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        }
    };
    let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| load_error(TlsFile::Cert, cert_path, format!("TLS setup failed: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            let why = match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "the key does not match the certificate of --tls-cert={}",
                    cert_path.display()
                ),
                e => format!("unusable private key: {e}"),
            };
            load_error(TlsFile::Key, &options.key_file, why)
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        common_name,
        not_after,
    })
}

/// Loads the files once, as the server would: for the checks at start.
pub fn check(options: &TlsOptions) -> Result<(), LoadError> {
    load(options).map(|_| ())
}

/// A Unix time as `2026-12-02T08:41:53Z`.
fn utc(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// Why a handshake failed (metric label: [`Failure::reason`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Not complete within `--http-header-timeout`; `partial`: some bytes
    /// came (a slow sender, counted as the header timeout is on plain
    /// HTTP), else none at all.
    Timeout { partial: bool },
    /// The peer closed or reset the connection.
    Closed,
    /// A certificate was required and none was sent.
    NoClientCertificate,
    /// The client's certificate was refused (another CA, expired, ...).
    BadClientCertificate,
    /// The client sent an alert (it does not trust our certificate, say).
    Alert,
    /// Anything else the TLS layer refused (not TLS, no common version or
    /// cipher suite, no `http/1.1` among the client's ALPN protocols, ...).
    Protocol,
}

impl Failure {
    fn index(self) -> usize {
        match self {
            Failure::Timeout { .. } => 0,
            Failure::Closed => 1,
            Failure::NoClientCertificate => 2,
            Failure::BadClientCertificate => 3,
            Failure::Alert => 4,
            Failure::Protocol => 5,
        }
    }

    /// The metric label.
    pub fn reason(self) -> &'static str {
        TLS_HANDSHAKE_FAILURES[self.index()]
    }

    fn of(e: &io::Error) -> Failure {
        match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::NoCertificatesPresented) => Failure::NoClientCertificate,
            Some(rustls::Error::InvalidCertificate(_)) => Failure::BadClientCertificate,
            Some(rustls::Error::AlertReceived(_)) => Failure::Alert,
            Some(_) => Failure::Protocol,
            None => Failure::Closed,
        }
    }
}

/// A socket that remembers whether any byte was read from it, so that a
/// handshake cut off by the timeout tells a silent client from a slow one.
#[derive(Debug)]
pub struct Sniffed<S> {
    inner: S,
    read_any: bool,
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if !self.read_any && buf.filled().len() > before {
            self.read_any = true;
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connection after its handshake.
pub struct Established {
    pub stream: TlsStream<Sniffed<TcpStream>>,
    /// The common name of the client's certificate, when one was sent and
    /// verified against `--tls-root-ca-file`.
    pub common_name: Option<String>,
}

/// The HTTPS listener's TLS side: the current configuration and what is
/// needed to build the next one.
pub struct Tls {
    options: TlsOptions,
    current: ArcSwap<ServerConfig>,
    verifies: bool,
    stats: Arc<TlsStats>,
    failures: LogThrottle,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the files (see [`check`]) and turns the TLS metrics on.
    pub fn new(options: TlsOptions, stats: Arc<TlsStats>) -> Result<Tls, LoadError> {
        let loaded = load(&options)?;
        info!(
            "TLS: certificate {} (CN {:?}), not after {}",
            options.cert_file.display(),
            loaded.common_name.as_deref().unwrap_or(""),
            utc(loaded.not_after)
        );
        stats.not_after.store(loaded.not_after, Relaxed);
        stats.enabled.store(true, Relaxed);
        Ok(Tls {
            verifies: verifies_client_certs(&options),
            options,
            current: ArcSwap::new(loaded.config),
            stats,
            failures: LogThrottle::new(Duration::from_secs(1)),
        })
    }

    /// Whether `--tls-required` is set.
    pub fn required(&self) -> bool {
        self.options.required
    }

    /// Reads the certificate, key and CA again (SIGHUP) for the
    /// connections that start from now on; on failure, keeps the current
    /// configuration. Returns whether it reloaded.
    pub fn reload(&self) -> bool {
        match load(&self.options) {
            Ok(loaded) => {
                self.current.store(loaded.config);
                self.stats.not_after.store(loaded.not_after, Relaxed);
                self.stats.reloads_ok.fetch_add(1, Relaxed);
                info!(
                    "TLS: reloaded certificate {} (CN {:?}), not after {}",
                    self.options.cert_file.display(),
                    loaded.common_name.as_deref().unwrap_or(""),
                    utc(loaded.not_after)
                );
                true
            }
            Err(e) => {
                self.stats.reloads_failed.fetch_add(1, Relaxed);
                error!("TLS: reload failed, keeping the previous certificate - {e}");
                false
            }
        }
    }

    /// The TLS handshake of an accepted connection, cut off after
    /// `timeout`. Failures are counted and logged (at most once a second,
    /// with their count).
    pub async fn handshake(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Result<Established, Failure> {
        let acceptor = TlsAcceptor::from(self.current.load_full());
        let mut accept = acceptor.accept(Sniffed {
            inner: stream,
            read_any: false,
        });
        let (failure, detail) = match tokio::time::timeout(timeout, &mut accept).await {
            Ok(Ok(stream)) => {
                self.stats.handshakes.fetch_add(1, Relaxed);
                let session = stream.get_ref().1;
                let common_name = match session.peer_certificates() {
                    Some([leaf, ..]) if self.verifies => common_name(leaf),
                    _ => None,
                };
                debug!(peer = %peer, "HTTPS: {peer}: {:?} handshake done, client certificate CN {:?}",
                    session.protocol_version(), common_name);
                return Ok(Established {
                    stream,
                    common_name,
                });
            }
            Ok(Err(e)) => (Failure::of(&e), e.to_string()),
            Err(_) => {
                let partial = accept.get_ref().is_some_and(|s| s.read_any);
                let detail = if partial {
                    format!("handshake not complete in {timeout:?} (--http-header-timeout)")
                } else {
                    format!("nothing sent in {timeout:?} (--http-header-timeout)")
                };
                (Failure::Timeout { partial }, detail)
            }
        };
        self.stats.handshake_failures[failure.index()].fetch_add(1, Relaxed);
        if let Some(n) = self.failures.hit() {
            warn!(peer = %peer, reason = failure.reason(),
                "HTTPS: {n} TLS handshake(s) failed (last from {peer}: {detail})");
        }
        Err(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reasons_are_the_metric_labels() {
        for (f, reason) in [
            (Failure::Timeout { partial: true }, "timeout"),
            (Failure::Timeout { partial: false }, "timeout"),
            (Failure::Closed, "closed"),
            (Failure::NoClientCertificate, "no_client_certificate"),
            (Failure::BadClientCertificate, "bad_client_certificate"),
            (Failure::Alert, "alert"),
            (Failure::Protocol, "protocol"),
        ] {
            assert_eq!(f.reason(), reason);
        }
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(Failure::of(&eof), Failure::Closed);
        let tls = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::NoCertificatesPresented,
        );
        assert_eq!(Failure::of(&tls), Failure::NoClientCertificate);
        let tls = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(Failure::of(&tls), Failure::BadClientCertificate);
    }

    #[test]
    fn a_missing_file_names_its_flag() {
        let options = TlsOptions {
            https_address: "127.0.0.1:0".into(),
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            root_ca_file: None,
            client_auth: ClientAuth::None,
            min_version: MinVersion::Tls12,
            required: false,
        };
        let e = check(&options).unwrap_err();
        assert_eq!(e.file, TlsFile::Cert);
        assert!(
            e.to_string()
                .starts_with("--tls-cert=/nonexistent/cert.pem: cannot read"),
            "{e}"
        );
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_796_197_313), "2026-12-02T07:41:53Z");
    }
}
