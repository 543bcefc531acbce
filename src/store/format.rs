//! The store's format file: what a reader must understand before touching anything else.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::store::Store;

/// The only on-disk format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The only hash algorithm of format 1.
pub const HASH_ALGORITHM: &str = "blake3";
/// Feature flags this build understands; a store naming any other is refused.
pub const KNOWN_FEATURES: &[&str] = &[];

/// Contents of `STORE/format`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Format {
    /// On-disk format version.
    pub format_version: u32,
    /// Hash algorithm naming objects and snapshots.
    pub hash: String,
    /// Optional features in use; unknown ones make the store unreadable by this build.
    #[serde(default)]
    pub features: Vec<String>,
}

impl Format {
    /// Refuse a store this build would misread.
    pub fn check(&self) -> Result<()> {
        if self.format_version != FORMAT_VERSION {
            return Err(Error::Corrupt(format!(
                "store format version {} is not supported (this execroot reads version {FORMAT_VERSION})",
                self.format_version
            )));
        }
        if self.hash != HASH_ALGORITHM {
            return Err(Error::Corrupt(format!("store hash algorithm {:?} is not supported", self.hash)));
        }
        if let Some(f) = self.features.iter().find(|f| !KNOWN_FEATURES.contains(&f.as_str())) {
            return Err(Error::Corrupt(format!("store uses unknown feature {f:?}")));
        }
        Ok(())
    }
}

/// Read `root/format`, `None` when the store is new.
pub fn read(root: &Path) -> Result<Option<Format>> {
    let path = root.join("format");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("{}: unreadable store format file: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Write the format file of a new store; a concurrent creator's file wins and is checked.
pub fn write_new(store: &Store) -> Result<()> {
    let f = Format { format_version: FORMAT_VERSION, hash: HASH_ALGORITHM.into(), features: vec![] };
    let mut json = serde_json::to_vec_pretty(&f).expect("serializable");
    json.push(b'\n');
    let tmp = store.tmp_dir().join(format!(".format-{}", std::process::id()));
    std::fs::write(&tmp, &json).at(&tmp)?;
    // Readable by all (it holds no secret, and says what the directory is), whatever the umask.
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644)).at(&tmp)?;
    let dest = store.path().join("format");
    if !crate::store::rename_noreplace(&tmp, &dest)? {
        let _ = std::fs::remove_file(&tmp);
        if let Some(existing) = read(store.path())? {
            existing.check()?;
        }
    }
    Ok(())
}
