//! Test fixtures for the bench's TLS client: throw-away certificates made
//! in-process with rcgen (a CA, a server certificate for 127.0.0.1 and
//! `localhost`, a client certificate, and an unrelated CA), written as PEM
//! files the way an operator would pass them; a tiny tokio-rustls HTTP
//! server answering every request with a fixed body and recording the
//! request heads it got; and a TLS-terminating proxy in front of a plain
//! server (this project's nsqlookupd does not speak TLS itself).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nsqlookupd-bench-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The certificates of one test, as PEM files and as DER for the servers.
pub struct Pki {
    pub dir: TempDir,
    /// The CA that signed the server and client certificates.
    pub ca_file: PathBuf,
    /// A CA that signed nothing here: a client trusting it must refuse
    /// the server.
    pub other_ca_file: PathBuf,
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivatePkcs8KeyDer<'static>,
    /// Signed by the CA, but for `other.example` only.
    misnamed_chain: Vec<CertificateDer<'static>>,
    misnamed_key: PrivatePkcs8KeyDer<'static>,
}

fn ca(cn: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = p.self_signed(&key).expect("self-signed CA");
    (cert, Issuer::new(p, key))
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    cn: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("leaf key");
    let mut p = CertificateParams::new(
        names
            .iter()
            .filter(|n| n.parse::<std::net::IpAddr>().is_err())
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
    )
    .expect("leaf params");
    for n in names {
        if let Ok(ip) = n.parse() {
            p.subject_alt_names.push(SanType::IpAddress(ip));
        }
    }
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![usage];
    let cert = p.signed_by(&key, issuer).expect("signed leaf");
    (cert, key)
}

impl Pki {
    pub fn generate() -> Pki {
        let dir = TempDir::new("pki");
        let (ca_cert, ca_issuer) = ca("nsqlookupd-bench test CA");
        let (other_ca, _) = ca("nsqlookupd-bench other CA");
        let (server, server_key) = leaf(
            &ca_issuer,
            "lookupd",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (misnamed, misnamed_key) = leaf(
            &ca_issuer,
            "other",
            &["other.example"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client, client_key) = leaf(
            &ca_issuer,
            "bench",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write a PEM file");
            path
        };
        Pki {
            ca_file: write("ca.pem", ca_cert.pem()),
            other_ca_file: write("other-ca.pem", other_ca.pem()),
            client_cert_file: write("client.pem", client.pem()),
            client_key_file: write("client-key.pem", client_key.serialize_pem()),
            ca_der: ca_cert.der().clone(),
            server_chain: vec![server.der().clone()],
            server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()),
            misnamed_chain: vec![misnamed.der().clone()],
            misnamed_key: PrivatePkcs8KeyDer::from(misnamed_key.serialize_der()),
            dir,
        }
    }

    /// The server's rustls configuration; with `require_client_cert`,
    /// only clients with a certificate signed by the CA get in.
    pub fn server_config(&self, require_client_cert: bool) -> Arc<ServerConfig> {
        self.config_with(&self.server_chain, &self.server_key, require_client_cert)
    }

    /// A server whose certificate the CA signed for another name.
    pub fn misnamed_server_config(&self) -> Arc<ServerConfig> {
        self.config_with(&self.misnamed_chain, &self.misnamed_key, false)
    }

    fn config_with(
        &self,
        chain: &[CertificateDer<'static>],
        key: &PrivatePkcs8KeyDer<'static>,
        require_client_cert: bool,
    ) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = if require_client_cert {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca_der.clone()).expect("CA in the store");
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(chain.to_vec(), PrivateKeyDer::Pkcs8(key.clone_key()))
            .expect("server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// A TLS HTTP/1.1 server answering every request with `200` and a fixed
/// JSON body, keeping connections alive; it records every request head.
pub struct FixedServer {
    pub addr: SocketAddr,
    /// The request heads received, in order (up to the blank line).
    pub heads: Arc<Mutex<Vec<String>>>,
    /// TLS handshakes completed.
    pub sessions: Arc<AtomicU64>,
    /// TCP connections accepted (handshakes that failed included).
    pub accepted: Arc<AtomicU64>,
}

impl FixedServer {
    pub async fn start(config: Arc<ServerConfig>, body: &'static [u8]) -> FixedServer {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("local addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let sessions = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let acceptor = TlsAcceptor::from(config);
        let (h, s, a) = (heads.clone(), sessions.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                a.fetch_add(1, Ordering::Relaxed);
                let (acceptor, h, s) = (acceptor.clone(), h.clone(), s.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    s.fetch_add(1, Ordering::Relaxed);
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head: Vec<u8> = buf.drain(..end + 4).collect();
                            h.lock()
                                .unwrap()
                                .push(String::from_utf8_lossy(&head[..end]).into_owned());
                            let reply = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                                body.len()
                            );
                            let mut out = reply.into_bytes();
                            out.extend_from_slice(body);
                            if tls.write_all(&out).await.is_err() || tls.flush().await.is_err() {
                                return;
                            }
                        }
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        FixedServer {
            addr,
            heads,
            sessions,
            accepted,
        }
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// Terminates TLS on a port of its own and forwards the bytes to the plain
/// HTTP server at `upstream`. Returns its address and a count of the TLS
/// sessions it carried.
pub async fn tls_proxy(
    config: Arc<ServerConfig>,
    upstream: SocketAddr,
) -> (SocketAddr, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("local addr");
    let acceptor = TlsAcceptor::from(config);
    let sessions = Arc::new(AtomicU64::new(0));
    let s = sessions.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let (acceptor, s) = (acceptor.clone(), s.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                s.fetch_add(1, Ordering::Relaxed);
                let Ok(mut up) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (addr, sessions)
}
