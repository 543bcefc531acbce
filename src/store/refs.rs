//! Refs: human names for snapshots, one small file each under `refs/`.

use std::io::Write;

use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::store::{fsync_dir, Lease, Store};

/// A ref and the snapshot it names (`ref set`, `ref list`; for `ref rm`, the snapshot it named,
/// null for a damaged ref file).
#[derive(Clone, Debug, serde::Serialize)]
pub struct RefInfo {
    /// Ref name.
    pub name: String,
    /// Snapshot id.
    pub id: Option<Hash>,
}

/// `ref list`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RefList {
    /// Every ref, by name.
    pub refs: Vec<RefInfo>,
}

/// Who set a ref, and whether its owner shared it (`refmeta/<name>`, docs/format.md "Refs").
/// A ref without this record was set by the store owner and is not shared: refs set by the
/// store's owner without `--shared` write none, so stores that never serve other users look as
/// they always did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefMeta {
    /// The uid that set the ref.
    pub uid: u32,
    /// Set with `--shared` (by a privileged user): every caller of the service may use it.
    pub shared: bool,
}

/// Longest accepted ref name, in bytes.
pub const MAX_REF_NAME: usize = 200;

/// Check a ref name: 1 to 200 bytes of UTF-8, no `/`, no control characters or whitespace, not
/// starting with `.` (so `.`, `..` and hidden names are out) and not containing `..`.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::BadInput(format!("invalid ref name {name:?}: {why}")));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_REF_NAME {
        return bad("longer than 200 bytes");
    }
    if name.contains('/') {
        return bad("contains '/'");
    }
    if name.contains("..") {
        return bad("contains '..'");
    }
    if name.starts_with('.') {
        return bad("starts with '.'");
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("contains a control or whitespace character");
    }
    Ok(())
}

impl Store {
    /// The snapshot a ref points at, if the ref exists.
    pub fn get_ref(&self, name: &str) -> Result<Option<Hash>> {
        validate_name(name)?;
        let path = self.refs_dir().join(name);
        match std::fs::read_to_string(&path) {
            Ok(s) => Hash::from_hex(s.trim_end())
                .map(Some)
                .map_err(|_| Error::Corrupt(format!("{}: ref file does not hold a snapshot id", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Who set ref `name` (the store owner's, unshared, when nothing is recorded).
    pub fn ref_meta(&self, name: &str) -> Result<RefMeta> {
        validate_name(name)?;
        let path = self.path().join("refmeta").join(name);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Corrupt(format!("{}: not a ref record: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RefMeta { uid: self.owner()?.uid, shared: false }),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Point `name` at snapshot `id` (which must exist), atomically replacing any old value; the
    /// ref is recorded as set by the store owner, unshared.
    pub fn set_ref(&self, name: &str, id: &Hash) -> Result<()> {
        self.set_ref_with(name, id, RefMeta { uid: self.owner()?.uid, shared: false })
    }

    /// [`Store::set_ref`], recording who set the ref (`meta`). The record is taken away first
    /// (a ref without one is the store owner's alone), then the ref is pointed, then the new
    /// record written: a crash at any step leaves the ref usable by no caller that could not
    /// use it before and after (it fails closed, to the store owner's alone).
    pub fn set_ref_with(&self, name: &str, id: &Hash, meta: RefMeta) -> Result<()> {
        validate_name(name)?;
        if !self.snapshot_dir(id).exists() {
            return Err(Error::NotFound(format!("snapshot {id} does not exist")));
        }
        let plain = meta == RefMeta { uid: self.owner()?.uid, shared: false };
        let meta_path = self.top_dir("refmeta")?.join(name);
        match std::fs::remove_file(&meta_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&meta_path, e)),
        }
        let lease = Lease::new(self)?;
        let tmp = lease.temp_path();
        let mut f = std::fs::File::create(&tmp).at(&tmp)?;
        writeln!(f, "{id}").at(&tmp)?;
        drop(f);
        let dest = self.refs_dir().join(name);
        crate::sys::failpoint::hit("ref.set.staged");
        std::fs::rename(&tmp, &dest).at(&dest)?;
        if !plain {
            std::fs::write(&tmp, serde_json::to_vec(&meta).expect("serializable")).at(&tmp)?;
            std::fs::rename(&tmp, &meta_path).at(&meta_path)?;
        }
        // A ref is what a user relies on to find their snapshot again: make it durable.
        fsync_dir(&self.refs_dir())?;
        if !plain {
            fsync_dir(&self.path().join("refmeta"))?;
        }
        Ok(())
    }

    /// Remove a ref; returns the snapshot it pointed at (`None` for a damaged ref file, which
    /// naming it explicitly removes all the same).
    pub fn remove_ref(&self, name: &str) -> Result<Option<Hash>> {
        let id = match self.get_ref(name) {
            Ok(Some(id)) => Some(id),
            Ok(None) => return Err(Error::NotFound(format!("no ref named {name:?}"))),
            Err(Error::Corrupt(_)) => None,
            Err(e) => return Err(e),
        };
        let path = self.refs_dir().join(name);
        std::fs::remove_file(&path).at(&path)?;
        let meta = self.path().join("refmeta").join(name);
        match std::fs::remove_file(&meta) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&meta, e)),
        }
        Ok(id)
    }

    /// All refs, sorted by name. A ref file that cannot be read or does not hold a snapshot id
    /// is an error naming it (gc and `snapshot rm` must never take it for absent); files whose
    /// names are not ref names are not refs and are ignored.
    pub fn list_refs(&self) -> Result<Vec<(String, Hash)>> {
        let dir = self.refs_dir();
        let mut out = Vec::new();
        for ent in std::fs::read_dir(&dir).at(&dir)? {
            let ent = ent.at(&dir)?;
            let Ok(name) = ent.file_name().into_string() else { continue };
            if validate_name(&name).is_err() {
                continue;
            }
            if let Some(id) = self.get_ref(&name)? {
                out.push((name, id));
            }
        }
        out.sort();
        Ok(out)
    }
}
