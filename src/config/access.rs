//! Access-control options (`--read-allow`, `--admin-allow`,
//! `--metrics-allow`, `--admin-token-file`, `--admin-cn`): parsed and
//! checked here, the admin token read from its file at start, so that a
//! server whose access rules cannot work exits 2 at once instead of
//! running open. The rules themselves are `crate::access`.

use std::path::{Path, PathBuf};

use super::ConfigError;
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
    Ok(AccessOptions {
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
