//! Access-control options (`--read-allow`, `--admin-allow`,
//! `--metrics-allow`, `--admin-token-file`, `--admin-cn`): parsed and
//! checked here, the admin token read from its file at start, so that a
//! server whose access rules cannot work exits 2 at once instead of
//! running open. The rules themselves are `crate::access`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ConfigError;
use crate::access::auth::{AuthClient, AuthMethod, AuthOptions};
use crate::access::{AccessOptions, Secret};
use crate::allow::AllowList;

/// A shorter admin token is refused: it could be guessed.
pub(super) const MIN_TOKEN_LEN: usize = 16;

/// What the flags and the file gave.
pub(super) struct Given {
    pub read_allow: Option<AllowList>,
    pub admin_allow: Option<AllowList>,
    pub metrics_allow: Option<AllowList>,
    pub admin_token_file: Option<PathBuf>,
    pub admin_cn: Option<CommonNames>,
    /// Each `--auth-http-address` value (comma-separated lists allowed).
    pub auth_addresses: Vec<String>,
    pub auth_method: AuthMethod,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub cache_size: usize,
    pub denied_ttl: Duration,
    pub max_inflight: usize,
}

pub(super) fn parse_method(s: &str) -> Result<AuthMethod, String> {
    match s.to_ascii_lowercase().as_str() {
        "get" => Ok(AuthMethod::Get),
        "post" => Ok(AuthMethod::Post),
        _ => Err(format!("invalid method {s:?} (get, post)")),
    }
}

/// `--admin-cn=CN[,CN...]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommonNames(pub Vec<String>);

pub(super) fn parse_common_names(s: &str) -> Result<CommonNames, String> {
    let mut names = Vec::new();
    for name in s.split(',').map(str::trim) {
        if name.is_empty() {
            return Err("empty entry (expected CN[,CN...])".into());
        }
        names.push(name.to_owned());
    }
    Ok(CommonNames(names))
}

pub(super) fn resolve(
    given: Given,
    warnings: &mut Vec<String>,
) -> Result<AccessOptions, ConfigError> {
    let admin_token = match given.admin_token_file.filter(|p| !p.as_os_str().is_empty()) {
        Some(path) => Some(read_token(&path, warnings)?),
        None => None,
    };
    // As nsqd's string-array flags: repeated, and each value a comma-separated list.
    let addresses: Vec<String> = given
        .auth_addresses
        .iter()
        .flat_map(|a| a.split(','))
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    let auth = if addresses.is_empty() {
        None
    } else {
        let options = AuthOptions {
            addresses,
            method: given.auth_method,
            connect_timeout: given.connect_timeout,
            request_timeout: given.request_timeout,
            cache_size: given.cache_size,
            denied_ttl: given.denied_ttl,
            max_inflight: given.max_inflight,
            tls_root_ca_file: None,
        };
        // Built once here to check every address and the CA file, so that a
        // server whose auth cannot work exits 2 instead of refusing every
        // consumer.
        AuthClient::new(options.clone())
            .map_err(|e| ConfigError(format!("invalid value for flag --auth-http-address: {e}")))?;
        Some(options)
    };
    Ok(AccessOptions {
        auth,
        read_allow: given.read_allow,
        admin_allow: given.admin_allow,
        metrics_allow: given.metrics_allow,
        admin_token,
        admin_cn: given.admin_cn.unwrap_or_default().0,
    })
}

/// The token: the file's content without surrounding whitespace (an
/// editor's trailing newline); printable ASCII, at least
/// [`MIN_TOKEN_LEN`] bytes. Never echoed in an error.
fn read_token(path: &Path, warnings: &mut Vec<String>) -> Result<Secret, ConfigError> {
    let fail = |why: String| {
        ConfigError(format!(
            "invalid value {:?} for flag --admin-token-file: {why}",
            path.display().to_string()
        ))
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN {
        return Err(fail(format!(
            "the token must be at least {MIN_TOKEN_LEN} characters"
        )));
    }
    if !token.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(fail(
            "the token must be printable ASCII without spaces (it is sent as `Authorization: Bearer <token>`)".into(),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            warnings.push(format!(
                "--admin-token-file {}: readable by other users (mode {:o}); chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            ));
        }
    }
    Ok(Secret(token.to_owned()))
}
