//! TLS options of the HTTP API (`--https-address`, `--tls-*`), with nsqd's
//! flag names and meanings. Only the options live here: `crate::tls` builds
//! the rustls configuration from them. The checks across flags (a
//! certificate without its key, `--tls-required` without HTTPS, ...) and a
//! first load of the PEM files happen here, so that a bad file exits 2 at
//! start naming its flag, as `etcd.rs` does for its files.
//!
//! HTTPS is on when `--tls-cert` and `--tls-key` are set and
//! `--https-address` is not empty; with none of these flags set nothing
//! changes (no third listener).

use std::path::PathBuf;

use clap::ArgMatches;
use clap::parser::ValueSource;

use super::etcd::Source;
use super::{ConfigError, file_value, parse_bool, parse_path};

/// `--https-address`'s default (nsqd's HTTPS port is 4152; the lookupd's
/// HTTP port + 1 likewise).
pub(super) const DEFAULT_HTTPS_ADDRESS: &str = "0.0.0.0:4162";

/// `--tls-client-auth-policy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// Empty: no client certificate asked for; with `--tls-root-ca-file`,
    /// one is asked for and verified if the client sends it.
    #[default]
    None,
    /// `require`: a certificate must be sent; it is not verified (Go's
    /// `tls.RequireAnyClientCert`).
    Require,
    /// `require-verify`: a certificate must be sent and chain to
    /// `--tls-root-ca-file` (Go's `tls.RequireAndVerifyClientCert`).
    RequireVerify,
}

/// `--tls-min-version`, as nsqd spells it. rustls implements TLS 1.2 and
/// 1.3 only: `tls1.0` and `tls1.1` are accepted (a config written for nsqd
/// keeps working) with a warning at start, and mean TLS 1.2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MinVersion {
    Tls10,
    Tls11,
    #[default]
    Tls12,
    Tls13,
}

impl MinVersion {
    /// What the flag says (`tls1.2`).
    pub fn name(self) -> &'static str {
        match self {
            MinVersion::Tls10 => "tls1.0",
            MinVersion::Tls11 => "tls1.1",
            MinVersion::Tls12 => "tls1.2",
            MinVersion::Tls13 => "tls1.3",
        }
    }
}

/// HTTPS on the HTTP API. `Options::tls` is `None` without it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    /// Where the HTTPS listener binds (not empty).
    pub https_address: String,
    /// PEM: the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM: the CAs that client certificates are verified against.
    pub root_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
    pub min_version: MinVersion,
    /// `--tls-required`: the plain listener answers everything but `/ping`
    /// and `/ready` with 403 `TLS_REQUIRED` and the HTTPS port.
    pub required: bool,
}

/// `--tls-client-auth-policy`: `require`, `require-verify` or empty.
fn parse_client_auth(s: &str) -> Result<ClientAuth, String> {
    match s {
        "" => Ok(ClientAuth::None),
        "require" => Ok(ClientAuth::Require),
        "require-verify" => Ok(ClientAuth::RequireVerify),
        _ => Err(format!(
            "unknown policy {s:?} (require, require-verify, or empty)"
        )),
    }
}

/// `--tls-min-version`: nsqd's names, any case; empty is the default.
fn parse_min_version(s: &str) -> Result<MinVersion, String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "" => MinVersion::default(),
        "tls1.0" => MinVersion::Tls10,
        "tls1.1" => MinVersion::Tls11,
        "tls1.2" => MinVersion::Tls12,
        "tls1.3" => MinVersion::Tls13,
        _ => {
            return Err(format!(
                "unknown version {s:?} (tls1.0, tls1.1, tls1.2, tls1.3)"
            ));
        }
    })
}

/// The flags, flattened into the command line (`config::Cli`).
#[derive(clap::Args, Debug)]
pub(super) struct TlsArgs {
    /// <addr>:<port> to listen on for HTTPS clients, bound only when a certificate and key are given; empty = off
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_HTTPS_ADDRESS, help_heading = "TLS")]
    https_address: String,

    /// path to certificate file (PEM, leaf first) of the HTTPS listener; re-read on SIGHUP [default: none, no HTTPS]
    #[arg(long, value_name = "FILE", value_parser = parse_path, help_heading = "TLS")]
    tls_cert: Option<PathBuf>,

    /// path to private key file (PEM) of --tls-cert; re-read on SIGHUP [default: none]
    #[arg(long, value_name = "FILE", value_parser = parse_path, help_heading = "TLS")]
    tls_key: Option<PathBuf>,

    /// path to certificate authority file (PEM) to verify client certificates with; re-read on SIGHUP [default: none]
    #[arg(long, value_name = "FILE", value_parser = parse_path, help_heading = "TLS")]
    tls_root_ca_file: Option<PathBuf>,

    /// client certificate auth policy: 'require' (sent, not verified) or 'require-verify' (sent and verified against --tls-root-ca-file) [default: none asked; verified if sent when --tls-root-ca-file is set]
    #[arg(long, value_name = "POLICY", default_value = "", value_parser = parse_client_auth,
        hide_default_value = true, help_heading = "TLS")]
    tls_client_auth_policy: ClientAuth,

    /// minimum TLS version: 'tls1.2' or 'tls1.3' ('tls1.0' and 'tls1.1' mean tls1.2: TLS 1.0 and 1.1 are not offered)
    #[arg(long, value_name = "VERSION", default_value = "tls1.2", value_parser = parse_min_version,
        help_heading = "TLS")]
    tls_min_version: MinVersion,

    /// answer plain HTTP requests (but /ping and /ready) with 403 TLS_REQUIRED and the HTTPS port, which NSQ's HTTP client follows
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
        default_value = "false", default_missing_value = "true", value_parser = parse_bool,
        help_heading = "TLS")]
    tls_required: bool,
}

/// The TLS settings from the flags and the config file, the checks across
/// them, and a first load of the files. `None`: no HTTPS.
pub(super) fn resolve(
    args: TlsArgs,
    matches: &ArgMatches,
    file: Option<&toml::Table>,
    http_address: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<TlsOptions>, ConfigError> {
    let from_flag = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let source = |id: &str| match file {
        Some(table) if !from_flag(id) && table.contains_key(id) => Source::File,
        _ => Source::Flag,
    };
    // The command line wins over the file, the file over the default.
    fn pick<T>(
        id: &str,
        cli: T,
        parse: impl Fn(&str) -> Result<T, String>,
        file: Option<&toml::Table>,
        from_flag: &dyn Fn(&str) -> bool,
    ) -> Result<T, ConfigError> {
        match file {
            Some(table) if !from_flag(id) => Ok(file_value(table, id, parse)?.unwrap_or(cli)),
            _ => Ok(cli),
        }
    }
    let path = |s: &str| parse_path(s).map(Some);
    let nonempty = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
    let https_address = pick(
        "https_address",
        args.https_address,
        |s| Ok(s.to_owned()),
        file,
        &from_flag,
    )?;
    let cert = nonempty(pick("tls_cert", args.tls_cert, path, file, &from_flag)?);
    let key = nonempty(pick("tls_key", args.tls_key, path, file, &from_flag)?);
    let root_ca = nonempty(pick(
        "tls_root_ca_file",
        args.tls_root_ca_file,
        path,
        file,
        &from_flag,
    )?);
    let client_auth = pick(
        "tls_client_auth_policy",
        args.tls_client_auth_policy,
        parse_client_auth,
        file,
        &from_flag,
    )?;
    let min_version = pick(
        "tls_min_version",
        args.tls_min_version,
        parse_min_version,
        file,
        &from_flag,
    )?;
    let required = pick(
        "tls_required",
        args.tls_required,
        parse_bool,
        file,
        &from_flag,
    )?;

    let needs = |present: &str, missing: &str| {
        let s = source(present);
        ConfigError(format!("{} needs {}", s.label(present), s.bare(missing)))
    };
    let (cert, key) = match (cert, key) {
        (Some(cert), Some(key)) => (Some(cert), Some(key)),
        (Some(_), None) => return Err(needs("tls_cert", "tls_key")),
        (None, Some(_)) => return Err(needs("tls_key", "tls_cert")),
        (None, None) => (None, None),
    };
    let https_on = cert.is_some() && !https_address.is_empty();
    if !https_on {
        let why = if cert.is_some() {
            format!(
                "{} is empty (HTTPS off)",
                source("https_address").bare("https_address")
            )
        } else {
            "no --tls-cert and --tls-key (HTTPS off)".to_owned()
        };
        // These promise something that plain HTTP cannot keep.
        for (id, set) in [
            ("tls_required", required),
            ("tls_client_auth_policy", client_auth != ClientAuth::None),
        ] {
            if set {
                return Err(ConfigError(format!(
                    "{} needs HTTPS: {why}",
                    source(id).label(id)
                )));
            }
        }
        if http_address.is_empty() {
            return Err(ConfigError(format!(
                "{} is empty (plain HTTP off), which needs HTTPS on: {why}",
                source("http_address").label("http_address")
            )));
        }
        let ignored: Vec<String> = [
            (
                "https_address",
                https_address != DEFAULT_HTTPS_ADDRESS && cert.is_none(),
            ),
            ("tls_cert", cert.is_some()),
            ("tls_key", key.is_some()),
            ("tls_root_ca_file", root_ca.is_some()),
            ("tls_min_version", min_version != MinVersion::default()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(id, _)| source(id).bare(id))
        .collect();
        if !ignored.is_empty() {
            warnings.push(format!("{why}: {} ignored", ignored.join(", ")));
        }
        return Ok(None);
    }

    if client_auth == ClientAuth::RequireVerify && root_ca.is_none() {
        let s = source("tls_client_auth_policy");
        return Err(ConfigError(format!(
            "{}=require-verify needs {}",
            s.label("tls_client_auth_policy"),
            s.bare("tls_root_ca_file")
        )));
    }
    let options = TlsOptions {
        https_address,
        cert_file: cert.expect("HTTPS on"),
        key_file: key.expect("HTTPS on"),
        root_ca_file: root_ca,
        client_auth,
        min_version,
        required,
    };
    if let Err(e) = crate::tls::check(&options) {
        let id = match e.file {
            crate::tls::TlsFile::Cert => "tls_cert",
            crate::tls::TlsFile::Key => "tls_key",
            crate::tls::TlsFile::RootCa => "tls_root_ca_file",
        };
        return Err(ConfigError(format!(
            "invalid value {:?} for {}: {}",
            e.path.display().to_string(),
            source(id).label(id),
            e.why
        )));
    }
    if matches!(min_version, MinVersion::Tls10 | MinVersion::Tls11) {
        warnings.push(format!(
            "{}={}: TLS 1.0 and 1.1 are not offered (rustls implements TLS 1.2 and 1.3 only); \
             the minimum is TLS 1.2",
            source("tls_min_version").bare("tls_min_version"),
            min_version.name()
        ));
    }
    Ok(Some(options))
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::{Parsed, parse_args};

    fn run(args: &[&str]) -> Result<(Option<TlsOptions>, String, Vec<String>), String> {
        let mut argv = vec!["nsqlookupd"];
        argv.extend_from_slice(args);
        match parse_args(argv).map_err(|e| e.0)? {
            Parsed::Run { options, warnings } => Ok((options.tls, options.http_address, warnings)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_tls_flag_no_https() {
        let (tls, http, warnings) = run(&[]).unwrap();
        assert_eq!((tls, http.as_str()), (None, "0.0.0.0:4161"));
        assert!(warnings.is_empty(), "{warnings:?}");
        // At their defaults, set explicitly: still nothing, and no warning.
        let (tls, _, warnings) = run(&[
            "--https-address=0.0.0.0:4162",
            "--tls-min-version=tls1.2",
            "--tls-client-auth-policy=",
            "--tls-required=false",
            "--tls-cert=",
            "--tls-key=",
        ])
        .unwrap();
        assert_eq!(tls, None);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn settings_without_https_are_errors_or_warnings() {
        for (args, want) in [
            (
                &["--tls-cert=/c.pem"][..],
                "flag --tls-cert needs --tls-key",
            ),
            (&["--tls-key=/k.pem"], "flag --tls-key needs --tls-cert"),
            (
                &["--tls-required"],
                "flag --tls-required needs HTTPS: no --tls-cert",
            ),
            (
                &["--tls-client-auth-policy=require"],
                "flag --tls-client-auth-policy needs HTTPS",
            ),
            (
                &["--http-address="],
                "flag --http-address is empty (plain HTTP off), which needs HTTPS on",
            ),
            (
                &[
                    "--tls-cert=/c.pem",
                    "--tls-key=/k.pem",
                    "--https-address=",
                    "--tls-required",
                ],
                "flag --tls-required needs HTTPS: --https-address is empty (HTTPS off)",
            ),
            (
                &["--tls-cert=/nonexistent/c.pem", "--tls-key=/k.pem"],
                "invalid value \"/nonexistent/c.pem\" for flag --tls-cert: cannot read the file",
            ),
            (
                &[
                    "--tls-cert=/c.pem",
                    "--tls-key=/k.pem",
                    "--tls-client-auth-policy=require-verify",
                ],
                "flag --tls-client-auth-policy=require-verify needs --tls-root-ca-file",
            ),
        ] {
            let e = run(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e:?}");
            assert!(!e.contains('\n'), "{e:?}");
        }
        let (tls, _, warnings) = run(&[
            "--tls-root-ca-file=/ca.pem",
            "--tls-min-version=tls1.3",
            "--https-address=127.0.0.1:1",
        ])
        .unwrap();
        assert_eq!(tls, None);
        assert_eq!(
            warnings,
            [
                "no --tls-cert and --tls-key (HTTPS off): --https-address, --tls-root-ca-file, \
              --tls-min-version ignored"
            ]
        );
        // Certificates with HTTPS off: not read, ignored with a warning.
        let (tls, _, warnings) =
            run(&["--tls-cert=/c.pem", "--tls-key=/k.pem", "--https-address="]).unwrap();
        assert_eq!(tls, None);
        assert_eq!(
            warnings,
            ["--https-address is empty (HTTPS off): --tls-cert, --tls-key ignored"]
        );
        // `--tls-required` is a Go boolean: it takes no separate value.
        let e = run(&["-tls-required", "true"]).unwrap_err();
        assert!(e.contains("unexpected argument \"true\""), "{e}");
    }

    #[test]
    fn policies_and_versions_parse_as_nsqd_spells_them() {
        assert_eq!(parse_client_auth("").unwrap(), ClientAuth::None);
        assert_eq!(parse_client_auth("require").unwrap(), ClientAuth::Require);
        assert_eq!(
            parse_client_auth("require-verify").unwrap(),
            ClientAuth::RequireVerify
        );
        assert!(
            parse_client_auth("verify")
                .unwrap_err()
                .contains("require-verify")
        );
        assert_eq!(parse_min_version("").unwrap(), MinVersion::Tls12);
        assert_eq!(parse_min_version("TLS1.0").unwrap(), MinVersion::Tls10);
        assert_eq!(parse_min_version("tls1.1").unwrap(), MinVersion::Tls11);
        assert_eq!(parse_min_version("tls1.3").unwrap(), MinVersion::Tls13);
        assert!(parse_min_version("ssl3.0").is_err(), "nsqd refuses it too");
        for v in [
            MinVersion::Tls10,
            MinVersion::Tls11,
            MinVersion::Tls12,
            MinVersion::Tls13,
        ] {
            assert_eq!(parse_min_version(v.name()).unwrap(), v);
        }
    }
}
