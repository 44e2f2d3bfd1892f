//! Throw-away certificates for the TLS tests, made at run time with the
//! `openssl` command: a CA, two server certificates for 127.0.0.1 and a
//! client certificate signed by it, and an unrelated CA with a client certificate
//! of its own (what a replica or etcd must refuse). ECDSA P-256 keys, valid
//! for two days from now.
//!
//! `openssl` is on every Debian machine that has `ca-certificates` (which
//! depends on it, and which anything fetching over https needs). When it
//! is missing anyway and the tests run as root with apt-get, it is
//! installed like etcd is (see [`super::etcd::apt_install`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::etcd::{TlsFiles, apt_install, find_in_path, is_executable};

/// The extensions of each kind of certificate, in the `-extensions`
/// sections of a config file of our own: nothing is taken from the
/// machine's openssl.cnf.
const CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = unused

[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

# etcd's server certificate is also the client certificate its JSON
# gateway dials the gRPC server with: it needs clientAuth as well.
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// A certificate and its private key (PEM files).
#[derive(Clone, Debug)]
pub struct CertKey {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificates of one TLS test, in a temp dir removed on drop.
pub struct Pki {
    dir: PathBuf,
    /// The CA that signs `server` and `client`.
    pub ca: PathBuf,
    /// etcd's certificate: 127.0.0.1 as an IP SAN, serverAuth and clientAuth.
    pub server: CertKey,
    /// Another certificate like `server` (CN `server-2`, its own key),
    /// signed by `ca`: what a certificate rotation swaps in.
    pub server2: CertKey,
    /// A client certificate (CN `client`) signed by `ca`.
    pub client: CertKey,
    /// A CA that signed neither.
    pub other_ca: PathBuf,
    /// A client certificate signed by `other_ca`.
    pub other_client: CertKey,
}

impl Pki {
    /// Makes every certificate. Panics with openssl's output if a step fails.
    pub fn generate() -> Pki {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "nsqlookupd-pki-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot create the pki dir {}: {e}", dir.display()));
        fs::write(dir.join("openssl.cnf"), CONFIG).expect("write openssl.cnf");
        let mut serial = 0;
        let mut leaf = |name: &str, ca: &str, kind: &str| {
            serial += 1;
            sign(&dir, name, ca, kind, serial)
        };
        let ca = self_signed_ca(&dir, "ca", "nsqlookupd test CA");
        let server = leaf("server", "ca", "server");
        let server2 = leaf("server-2", "ca", "server");
        let client = leaf("client", "ca", "client");
        let other_ca = self_signed_ca(&dir, "other-ca", "nsqlookupd other test CA");
        let other_client = leaf("other-client", "other-ca", "client");
        Pki {
            dir,
            ca,
            server,
            server2,
            client,
            other_ca,
            other_client,
        }
    }

    /// What a TLS etcd needs: its certificate, and `ca` to check clients'.
    pub fn etcd_files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.ca.clone(),
            cert: self.server.cert.clone(),
            key: self.server.key.clone(),
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `dir/NAME.pem` and `dir/NAME-key.pem`: a self-signed CA.
fn self_signed_ca(dir: &Path, name: &str, cn: &str) -> PathBuf {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-config",
            "openssl.cnf",
            "-extensions",
            "ca",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    assert!(cert.is_file() && key.is_file(), "openssl made no {name}");
    cert
}

/// A new key and a certificate of `kind` (a section of [`CONFIG`]) for it,
/// CN `name`, signed by the CA `ca` of `dir`.
fn sign(dir: &Path, name: &str, ca: &str, kind: &str, serial: u32) -> CertKey {
    let csr = format!("{name}.csr");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-config",
            "openssl.cnf",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}-key.pem"),
            "-set_serial",
            &serial.to_string(),
            "-days",
            "2",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            kind,
            "-out",
            &format!("{name}.pem"),
        ],
    );
    let out = CertKey {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    assert!(
        out.cert.is_file() && out.key.is_file(),
        "openssl made no {name}"
    );
    out
}

/// Runs `openssl ARGS` in `dir`; panics with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(openssl_binary())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl` on PATH, else /usr/bin/openssl, else Debian's package
/// installed (root and apt-get only). Panics saying how to get it.
fn openssl_binary() -> PathBuf {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| match find_openssl() {
            Some(path) => Ok(path),
            None => apt_install("openssl", find_openssl).map_err(|why| {
                format!(
                    "the TLS tests need the openssl command (Debian's openssl package): \
                     not on PATH, no /usr/bin/openssl: {why}"
                )
            }),
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn find_openssl() -> Option<PathBuf> {
    find_in_path("openssl").or_else(|| {
        let fallback = PathBuf::from("/usr/bin/openssl");
        is_executable(&fallback).then_some(fallback)
    })
}
