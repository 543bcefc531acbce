//! Optional store-wide settings (`STORE/config.json`), edited by the administrator.

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::store::Store;

/// Contents of `STORE/config.json`; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Default owner of roots (user name or uid) when `--owner` is not given.
    pub owner: Option<String>,
    /// Where worktrees are created instead of `roots/<id>/worktree` (`<worktreeDir>/<id>`).
    pub worktree_dir: Option<PathBuf>,
    /// Timeout of each git command, in seconds (default 120).
    pub git_timeout_secs: Option<u64>,
}

impl Store {
    /// Read `config.json` (defaults when absent).
    pub fn config(&self) -> Result<Config> {
        let path = self.path().join("config.json");
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::BadInput(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }
}
