//! Backends: the ways a root's working directory can be made. One small trait, so that the
//! policy, the CLI and the service never branch on a backend's type (in the spirit of
//! containerd's Snapshotter).
//!
//! Lifecycle, as the root module drives it: `create` fills in the root's working directory
//! (`cwd`); while the root lives, `usage` and `status` inspect it and `is_live`/`revive` let
//! `doctor` bring it back after a reboot; `check_destroy` says whether tearing it down would
//! lose work a person would miss, and `destroy` tears it down. `destroy` is idempotent, because
//! a destroy killed half way is finished by `doctor`.

pub mod copy;
pub mod overlay;
pub mod worktree;

use serde::Serialize;

use crate::error::Result;
use crate::policy::BackendKind;
use crate::root::RootRecord;
use crate::Store;

/// What a run has written into its root.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Bytes of regular files written (for copy and worktree roots: the whole private tree).
    pub bytes: u64,
    /// Inodes written (files, directories, symlinks, whiteouts).
    pub inodes: u64,
}

/// The operations every backend provides.
pub trait Backend: Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// Make the root's working directory and set `rec.cwd` (and backend fields of `rec`).
    fn create(&self, store: &Store, rec: &mut RootRecord) -> Result<()>;
    /// True when the working directory is present and usable (mounted, for overlay).
    fn is_live(&self, store: &Store, rec: &RootRecord) -> Result<bool>;
    /// Bring back a root that is not live (after a reboot). May refuse, with the reason.
    fn revive(&self, store: &Store, rec: &mut RootRecord) -> Result<()>;
    /// Make the working directory unreachable so teardown can start (overlay: unmount), or
    /// report that processes still use it (`false`), leaving the root as it was.
    fn detach(&self, store: &Store, rec: &RootRecord) -> Result<bool>;
    /// Refuse (with a conflict naming what would be lost) unless destroying is safe or `force`;
    /// otherwise return warnings about what will be discarded.
    fn check_destroy(&self, store: &Store, rec: &RootRecord, force: bool) -> Result<Vec<String>>;
    /// Tear the working directory down; idempotent. Returns warnings.
    fn destroy(&self, store: &Store, rec: &RootRecord) -> Result<Vec<String>>;
    /// Bytes and inodes the run has written.
    fn usage(&self, store: &Store, rec: &RootRecord) -> Result<Usage>;
    /// What the run changed against its base (docs/capture.md).
    fn diff(&self, store: &Store, rec: &RootRecord) -> Result<crate::change::Diff>;
    /// Backend-specific status for `root show` (git's view for worktrees).
    fn status(&self, _store: &Store, _rec: &RootRecord) -> Result<Option<serde_json::Value>> {
        Ok(None)
    }
}

/// `detach` for backends without a mount: free unless a process is inside.
pub fn detach_unmounted(rec: &RootRecord) -> bool {
    crate::sys::procs::users_of(&rec.cwd).is_empty()
}

/// The backend implementing `kind`.
pub fn get(kind: BackendKind) -> &'static dyn Backend {
    match kind {
        BackendKind::Overlay => &overlay::Overlay,
        BackendKind::Copy => &copy::Copy,
        BackendKind::Worktree => &worktree::Worktree,
    }
}

/// Count bytes and inodes below `dir` (not following symlinks, not crossing mounts).
pub fn tree_usage(dir: &std::path::Path) -> Usage {
    let mut u = Usage::default();
    for e in walkdir::WalkDir::new(dir).min_depth(1).same_file_system(true).into_iter().flatten() {
        u.inodes += 1;
        if e.file_type().is_file() {
            u.bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    u
}

/// Give everything below `dir` (and `dir`) to `owner`, not following symlinks.
pub fn chown_tree(dir: &std::path::Path, owner: crate::sys::Owner) -> Result<()> {
    use crate::error::IoContext;
    for e in walkdir::WalkDir::new(dir).same_file_system(true) {
        let e = e.map_err(|e| crate::Error::BadInput(format!("{}: {e}", dir.display())))?;
        std::os::unix::fs::lchown(e.path(), Some(owner.uid), Some(owner.gid)).at(e.path())?;
    }
    Ok(())
}
