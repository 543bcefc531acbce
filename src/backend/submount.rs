//! `--mount SUBDIR=SNAPSHOT`: an overlay of a snapshot mounted inside a root, the same for every
//! backend (a `node_modules` a worktree would otherwise reinstall). Its own upper and work
//! directories live under `roots/<id>/m<N>/`.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::overlay::{fresh_dirs, mount_snapshots};
use super::RootSpec;
use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::sys::beneath::Tree;
use crate::sys::mount::{self, MountGuard, OverlayDirs, Place, Unmounted};
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

/// Mount `snapshot` at `sub` inside the root (the `index`-th sub-mount). The root's working
/// directory is opened once and the mount point is reached from it without following any
/// symlink (missing directories are made for the owner), and mounted on through a handle
/// ([`Place`]): a run that swaps a component for a symlink makes the mount fail, never land
/// outside.
pub fn mount(
    store: &Store,
    root: &RootSpec,
    index: usize,
    sub: &str,
    snapshot: Hash,
) -> Result<(SubMount, MountGuard)> {
    let tree = working_tree(&root.cwd)?;
    prepare_subdir(&tree, sub, root.owner)?;
    let dir = root.dir.join(format!("m{index}"));
    // Root's: it holds the owner's upper but also the kernel's work directory.
    crate::store::perms::new_dir(&dir, 0o700)?;
    let mut dirs = fresh_dirs(&dir);
    let at = place_of(&tree, sub)?;
    let path = root.cwd.join(sub);
    let guard = mount_snapshots(store, &[snapshot], &mut dirs, at, root.owner, !root.durable)?;
    Ok((SubMount { subdir: sub.to_string(), snapshot, path, dirs }, guard))
}

/// The root's working directory as a tree: its parent is the store's (or, for a worktree, a
/// directory of the repository's owner, who could replace the last component), so the last
/// component is not followed either.
fn working_tree(cwd: &Path) -> Result<Tree> {
    let (Some(parent), Some(name)) = (cwd.parent(), cwd.file_name()) else {
        return Err(Error::Corrupt(format!("{}: not a root's working directory", cwd.display())));
    };
    let top = Tree::open(parent).at(parent)?;
    top.open_dir(name.as_bytes()).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => Error::Conflict(format!(
            "{}: is not a directory (a symlink is not followed); sub-mounts are not mounted",
            cwd.display()
        )),
        _ => Error::io(cwd, e),
    })
}

/// The mount point of SUBDIR `sub` beneath the working directory `tree`.
fn place_of(tree: &Tree, sub: &str) -> Result<Place> {
    // The worst moment for a swap: SUBDIR checked (and made), not yet opened.
    crate::sys::failpoint::hit("submount.resolving");
    Place::beneath(tree, sub.as_bytes()).map_err(|e| match e {
        Error::Conflict(why) => Error::Conflict(format!("--mount {sub}: {why}; mounts must stay inside the root")),
        e => e,
    })
}

/// Sub-mounts this process took away, with where each was mounted, to put back if the
/// operation that took them (a destroy refused as busy, a revive) does not go on.
#[derive(Debug, Default)]
pub struct Taken {
    mounts: Vec<(PathBuf, OverlayDirs)>,
}

impl Taken {
    /// Mount again, where it was, each sub-mount taken away (cleanly, so a volatile one may
    /// come back: see [`OverlayDirs::mount_again`]).
    pub fn put_back(&self, durable: bool) -> Result<()> {
        for (target, dirs) in &self.mounts {
            if !mount::is_mounted(target)? {
                // Where mountinfo showed it: a path without symlinks, none followed now.
                dirs.mount_again(Place::at(target)?, !durable, true)?.keep();
            }
        }
        Ok(())
    }

    /// True when the sub-mount with these directories was taken away by this process.
    pub fn contains(&self, dirs: &OverlayDirs) -> bool {
        self.mounts.iter().any(|(_, d)| d.upper == dirs.upper)
    }
}

/// Unmount everything mounted below `cwd` (not `cwd` itself), deepest first, recording in
/// `taken` each of the root's sub-mounts with where it really was: a run may have moved a
/// mount point by renaming a parent, and a create killed before recording a sub-mount leaves
/// one the record does not name, so the mounts are found in mountinfo (a sub-mount by its
/// upper directory), not at their recorded paths. Stops at the first busy one
/// ([`Error::Busy`]); what was taken until then is in `taken`.
pub fn unmount_all(cwd: &Path, mounts: &[SubMount], taken: &mut Taken) -> Result<()> {
    // Without sub-mounts there is nothing to find (and mountinfo is costly to read); the
    // teardown's own sweep catches one a killed create mounted without recording it.
    if mounts.is_empty() || cwd.as_os_str().is_empty() {
        return Ok(());
    }
    for m in mount::mounts_under(cwd)? {
        if m.target == cwd {
            continue;
        }
        let ours = mounts.iter().find(|s| m.option("upperdir") == s.dirs.upper.to_str());
        // The worst moment for a swap: found in mountinfo, not yet unmounted.
        crate::sys::failpoint::hit("submount.unmounting");
        if mount::unmount(&m.target)? == Unmounted::Busy {
            return Err(Error::Busy { path: m.target.clone() });
        }
        if let Some(s) = ours {
            taken.mounts.push((m.target.clone(), s.dirs.clone()));
        }
    }
    Ok(())
}

/// Where each of `mounts` is mounted now below `cwd` (found by its upper directory), or `None`.
pub fn where_mounted(cwd: &Path, mounts: &[SubMount]) -> Result<Vec<Option<PathBuf>>> {
    if mounts.is_empty() || cwd.as_os_str().is_empty() {
        return Ok(vec![None; mounts.len()]);
    }
    let found = mount::mounts_under(cwd)?;
    Ok(mounts
        .iter()
        .map(|s| found.iter().find(|m| m.option("upperdir") == s.dirs.upper.to_str()).map(|m| m.target.clone()))
        .collect())
}

/// Mount again, at their recorded SUBDIRs in the working directory `cwd`, the root's
/// sub-mounts that are not mounted and were not taken away by this process (after a reboot: a
/// lost volatile upper is [`Error::VolatileLost`]). The mount points are reached as at create,
/// never through a symlink; a missing one is not made.
pub fn remount_lost(cwd: &Path, mounts: &[SubMount], taken: &Taken, durable: bool) -> Result<()> {
    let mut tree = None;
    for m in mounts {
        if !taken.contains(&m.dirs) && !mount::is_mounted(&m.path)? {
            let tree = match &mut tree {
                Some(t) => t,
                None => tree.insert(working_tree(cwd)?),
            };
            m.dirs.mount_again(place_of(tree, &m.subdir)?, !durable, false)?.keep();
        }
    }
    Ok(())
}

/// Check SUBDIR beneath the working directory, creating missing directories (owned by
/// `owner`). A symlink or non-directory on the way is refused. This is for the message only: a
/// swap after the check is caught when the mount point is opened ([`Place::beneath`]).
fn prepare_subdir(tree: &Tree, sub: &str, owner: Owner) -> Result<()> {
    let mut rel: Vec<u8> = Vec::new();
    for comp in sub.split('/') {
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(comp.as_bytes());
        let p = tree.display(&rel);
        match tree.lstat(&rel).at(&p)? {
            Some(md) if md.is_symlink() => {
                return Err(Error::BadInput(format!(
                    "--mount {sub}: {} is a symlink; mounts must stay inside the root",
                    p.display()
                )))
            }
            Some(md) if !md.is_dir() => {
                return Err(Error::BadInput(format!("--mount {sub}: {} is not a directory", p.display())))
            }
            Some(_) => {}
            None => {
                tree.mkdir(&rel, 0o777).at(&p)?;
                tree.chown(&rel, owner.uid, owner.gid).at(&p)?;
            }
        }
    }
    Ok(())
}
