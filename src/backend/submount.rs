//! `--mount SUBDIR=SNAPSHOT`: an overlay of a snapshot mounted inside a root, the same for every
//! backend (a `node_modules` a worktree would otherwise reinstall). Its own upper and work
//! directories live under `roots/<id>/m<N>/`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::overlay::{fresh_dirs, mount_snapshots};
use super::RootSpec;
use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::sys::mount::{self, MountGuard, OverlayDirs, Unmounted};
use crate::sys::Owner;
use crate::Store;

/// One `--mount` overlay inside a root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubMount {
    /// Path inside the root, relative.
    pub subdir: String,
    /// Snapshot mounted there.
    pub snapshot: Hash,
    /// Absolute mount point.
    pub path: PathBuf,
    /// Its overlay's directories (`upper`, `work`, `lowers`).
    #[serde(flatten)]
    pub dirs: OverlayDirs,
}

/// Check a `--mount` SUBDIR: relative, no `.`/`..`/empty components; returns it without a
/// trailing `/`.
pub fn validate_subdir(sub: &str) -> Result<String> {
    let trimmed = sub.trim_end_matches('/');
    crate::store::manifest::validate_path(trimmed.as_bytes()).map_err(|_| {
        Error::BadInput(format!("--mount subdirectory {sub:?} must be a relative path inside the root"))
    })?;
    Ok(trimmed.to_string())
}

/// Mount `snapshot` at `sub` inside the root (the `index`-th sub-mount). The mount point is
/// resolved without following symlinks, creating missing directories for the owner.
pub fn mount(
    store: &Store,
    root: &RootSpec,
    index: usize,
    sub: &str,
    snapshot: Hash,
) -> Result<(SubMount, MountGuard)> {
    let path = prepare_subdir(&root.cwd, sub, root.owner)?;
    let dir = root.dir.join(format!("m{index}"));
    std::fs::create_dir(&dir).at(&dir)?;
    let mut dirs = fresh_dirs(&dir);
    let guard = mount_snapshots(store, &[snapshot], &mut dirs, &path, root.owner, !root.durable)?;
    Ok((SubMount { subdir: sub.to_string(), snapshot, path, dirs }, guard))
}

/// Unmount every sub-mount, last first; stops at the first that is busy ([`Error::Busy`]).
pub fn unmount_all(mounts: &[SubMount]) -> Result<()> {
    for m in mounts.iter().rev() {
        if mount::unmount(&m.path)? == Unmounted::Busy {
            return Err(Error::Busy { path: m.path.clone() });
        }
    }
    Ok(())
}

/// Mount again the sub-mounts that are not mounted. `unmounted_cleanly`: this process took
/// them away itself (a refused destroy); otherwise (after a reboot) a lost volatile upper is
/// [`Error::VolatileLost`].
pub fn remount_all(mounts: &[SubMount], durable: bool, unmounted_cleanly: bool) -> Result<()> {
    for m in mounts {
        if !mount::is_mounted(&m.path)? {
            m.dirs.mount_again(&m.path, !durable, unmounted_cleanly)?.keep();
        }
    }
    Ok(())
}

/// Resolve SUBDIR inside `cwd` without following symlinks, creating missing directories (owned
/// by `owner`). A symlink or non-directory on the way is refused, so the mount stays inside.
fn prepare_subdir(cwd: &Path, sub: &str, owner: Owner) -> Result<PathBuf> {
    let mut p = cwd.to_path_buf();
    for comp in sub.split('/') {
        p.push(comp);
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.file_type().is_symlink() => {
                return Err(Error::BadInput(format!(
                    "--mount {sub}: {} is a symlink; mounts must stay inside the root",
                    p.display()
                )))
            }
            Ok(md) if !md.is_dir() => {
                return Err(Error::BadInput(format!("--mount {sub}: {} is not a directory", p.display())))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&p).at(&p)?;
                std::os::unix::fs::lchown(&p, Some(owner.uid), Some(owner.gid)).at(&p)?;
            }
            Err(e) => return Err(Error::io(&p, e)),
        }
    }
    Ok(p)
}
