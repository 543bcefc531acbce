//! Registry credentials, read the way container tools read them: `config.json` in
//! `$DOCKER_CONFIG` or `~/.docker/`, its `credHelpers` (per registry) and `credsStore` (for
//! all) run as `docker-credential-NAME get`, then its `auths` entries (`auth`: base64 of
//! `user:password`, or `username` and `password`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

use crate::error::{Error, IoContext, Result};

/// A user name and secret for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <secret>)", self.username)
    }
}

impl Credentials {
    /// The `Authorization` header value for HTTP basic auth.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Config {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Where the docker config file is.
pub fn config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The credentials configured for `registry` (`host[:port]`), if any. A config file that
/// exists but cannot be parsed, and a helper that fails for another reason than not knowing the
/// registry, are errors naming them.
pub fn lookup(registry: &str) -> Result<Option<Credentials>> {
    let Some(path) = config_path() else { return Ok(None) };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let cfg: Config = serde_json::from_slice(&bytes)
        .map_err(|e| Error::BadInput(format!("{}: not a docker config file: {e}", path.display())))?;
    if let Some(helper) = cfg.cred_helpers.get(registry) {
        return helper_get(helper, registry);
    }
    if let Some(store) = &cfg.creds_store {
        if let Some(c) = helper_get(store, registry)? {
            return Ok(Some(c));
        }
    }
    for (key, entry) in &cfg.auths {
        if normalize(key) != registry {
            continue;
        }
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Some(Credentials { username: u.clone(), password: p.clone() }));
        }
        if let Some(a) = &entry.auth {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    Error::BadInput(format!("{}: auths.{key}.auth is not base64 of user:password", path.display()))
                })?;
            let (u, p) = raw.split_once(':').ok_or_else(|| {
                Error::BadInput(format!("{}: auths.{key}.auth is not base64 of user:password", path.display()))
            })?;
            return Ok(Some(Credentials { username: u.into(), password: p.into() }));
        }
    }
    Ok(None)
}

/// `https://host:port/v1/` -> `host:port`: how docker's `auths` keys are matched.
fn normalize(key: &str) -> &str {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

#[derive(Deserialize)]
struct HelperOut {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Run `docker-credential-NAME get` with the registry on stdin (the credential helper
/// protocol); a helper that says it has no credentials gives `None`.
fn helper_get(name: &str, registry: &str) -> Result<Option<Credentials>> {
    let prog = format!("docker-credential-{name}");
    let mut child = Command::new(&prog)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::BadInput(format!("credential helper {prog} (docker config) cannot be run: {e}")))?;
    child.stdin.take().expect("piped").write_all(registry.as_bytes()).at(&prog)?;
    let out = child.wait_with_output().at(&prog)?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    if !out.status.success() {
        let msg = format!("{} {}", text(&out.stdout), text(&out.stderr));
        if msg.to_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(Error::Tool { what: format!("{prog} get"), status: out.status.code(), stderr: msg.trim().into() });
    }
    let h: HelperOut = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::BadInput(format!("{prog} get: unexpected output: {e}")))?;
    Ok(Some(Credentials { username: h.username, password: h.secret }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auths_keys_match_by_host() {
        assert_eq!(normalize("https://reg.example:5000/v1/"), "reg.example:5000");
        assert_eq!(normalize("reg.example"), "reg.example");
    }
}
