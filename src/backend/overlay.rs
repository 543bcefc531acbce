//! The overlay backend: shared read-only layers plus a private upper directory, mounted with
//! overlayfs. Creating a root costs a few mkdirs and one mount, whatever the size of the tree.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{tree_usage, Backend, BackendKind, Capabilities, Made, Plan, RootSpec, Usage, WorktreeRequest};
use crate::change::Diff;
use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::sys::mount::{self, MountGuard, OverlayDirs, Place, Unmounted};
use crate::sys::Owner;
use crate::Store;

/// See the module documentation.
pub struct Overlay;

/// What an overlay root records: its overlay's directories (`upper`, `work`, `lowers`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayState {
    /// The overlay's directories.
    #[serde(flatten)]
    pub dirs: OverlayDirs,
}

/// Fresh upper and work directory names under `dir` (random, so that no two overlays ever
/// share them); lowers are filled in when mounting.
pub fn fresh_dirs(dir: &Path) -> OverlayDirs {
    let tag: u64 = rand::random();
    OverlayDirs {
        lowers: vec![],
        upper: dir.join(format!("upper-{tag:016x}")),
        work: dir.join(format!("work-{tag:016x}")),
    }
}

/// The upper and work directories of a root's own overlay: named after the root's id (unique,
/// and distinct from the random names of its `--mount` trees' overlays), so that a skeleton
/// made ahead ([`make_skeleton`]) has the directories the plan expects.
pub fn root_dirs(dir: &Path, id: &str) -> OverlayDirs {
    OverlayDirs { lowers: vec![], upper: dir.join(format!("upper-{id}")), work: dir.join(format!("work-{id}")) }
}

/// Make the empty directories of overlay root `id` in `dir` ahead of its create, which finds
/// them there and makes nothing but its mount: `dir` itself (0700), the mount point, the upper
/// (the store owner's; the create gives it its owner and mode) and the work directory. The
/// `file` named is made empty too, for the create to write its record into.
pub fn make_skeleton(dir: &Path, id: &str, file: &str) -> Result<()> {
    use crate::store::perms::new_dir;
    new_dir(dir, 0o700)?;
    new_dir(&dir.join("merged"), 0o700)?;
    let d = root_dirs(dir, id);
    new_dir(&d.upper, 0o755)?;
    new_dir(&d.work, 0o700)?;
    let f = dir.join(file);
    std::fs::File::create(&f).at(&f)?;
    Ok(())
}

/// Mount an overlay of `snapshots` (bottom first) at `target`: materialize the layers, make
/// `dirs`' upper (owned by `owner`) and work directories, record the lowers in `dirs`, mount.
/// Used for a root's cwd and for its `--mount` trees alike.
pub fn mount_snapshots(
    store: &Store,
    snapshots: &[Hash],
    dirs: &mut OverlayDirs,
    target: Place,
    owner: Owner,
    volatile: bool,
) -> Result<MountGuard> {
    prepare_snapshots(store, snapshots, dirs, owner)?;
    dirs.mount(target, volatile)
}

/// The first half of [`mount_snapshots`]: everything but the mount (the layers materialized,
/// the upper and work directories made), for a caller that puts something in the upper
/// first.
pub fn prepare_snapshots(store: &Store, snapshots: &[Hash], dirs: &mut OverlayDirs, owner: Owner) -> Result<()> {
    let stack = store.layer_stack(snapshots)?;
    dirs.lowers = lowers_for(store, &stack, owner)?;
    // The merged root directory shows the upper's attributes: give it the top layer's mode.
    let top_mode = match stack.last() {
        Some(id) => std::fs::metadata(store.layer_dir(id)).at(store.layer_dir(id))?.permissions().mode() & 0o7777,
        None => 0o755,
    };
    // Either directory may be a skeleton's ([`make_skeleton`]): empty, made by the store owner
    // in a directory no one else can write, so found present it is taken as made here.
    let upper = &dirs.upper;
    match std::fs::DirBuilder::new().mode(top_mode).create(upper) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(Error::io(upper, e)),
        _ => {}
    }
    std::fs::set_permissions(upper, std::fs::Permissions::from_mode(top_mode)).at(upper)?;
    std::os::unix::fs::lchown(upper, Some(owner.uid), Some(owner.gid)).at(upper)?;
    // The work directory is the kernel's (and root's) alone: the owner never writes in it.
    crate::store::perms::make_dir(&dirs.work, 0o700)?;
    Ok(())
}

/// The lower directory to use for `layer` (a short layer path) in a root owned by `owner`: the
/// layer itself when the owner owns the store, else an idmapped view of it,
/// `STORE/idmap/<uid>-<gid>/<12 hex>`, shared by every root of that owner.
pub fn lower_for(store: &Store, layer: &Path, owner: Owner) -> Result<PathBuf> {
    let base = store.owner()?;
    if owner == base {
        return Ok(layer.to_path_buf());
    }
    let dir = store.top_dir("idmap")?.join(format!("{}-{}", owner.uid, owner.gid));
    std::fs::create_dir_all(&dir).at(&dir)?;
    let name = layer.file_name().ok_or_else(|| Error::Corrupt(format!("bad layer path {}", layer.display())))?;
    let target = dir.join(name);
    crate::sys::idmap::ensure_view(layer, &target, &dir.with_extension("lock"), base, owner)?;
    Ok(target)
}

/// Where [`lowers_for`] will put the lower directories of `snapshots` for `owner`, making
/// nothing: a plan records them, so that the record a create writes before anything exists is
/// already the one it will have when ready (one write, [`crate::root::RootRecord`]).
pub fn planned_lowers(store: &Store, snapshots: &[Hash], owner: Owner) -> Result<Vec<PathBuf>> {
    let stack = store.layer_stack(snapshots)?;
    let mut layers: Vec<PathBuf> = stack.iter().rev().map(|id| store.layer_link(id)).collect();
    if layers.is_empty() {
        layers.push(store.path().join("layers").join("empty"));
    }
    if owner == store.owner()? {
        return Ok(layers);
    }
    let dir = store.idmap_dir().join(format!("{}-{}", owner.uid, owner.gid));
    Ok(layers.iter().filter_map(|l| l.file_name().map(|n| dir.join(n))).collect())
}

/// The lower directories (top first) presenting `stack` (bottom first) to `owner`:
/// materialized layers, idmapped when the owner is not the store's owner.
pub fn lowers_for(store: &Store, stack: &[Hash], owner: Owner) -> Result<Vec<PathBuf>> {
    let mut lowers = Vec::with_capacity(stack.len().max(1));
    for id in stack.iter().rev() {
        let layer = store.materialize(id)?;
        lowers.push(lower_for(store, &layer, owner)?);
    }
    if lowers.is_empty() {
        let empty = store.top_dir("layers")?.join("empty");
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(&empty).at(&empty)?;
        lowers.push(lower_for(store, &empty, owner)?);
    }
    Ok(lowers)
}

impl Backend for Overlay {
    type State = OverlayState;
    const KIND: BackendKind = BackendKind::Overlay;
    const CAPABILITIES: Capabilities = Capabilities { commit: true };

    fn plan(&self, store: &Store, root: &RootSpec, _req: &WorktreeRequest) -> Result<Plan<OverlayState>> {
        let mut dirs = root_dirs(&root.dir, &root.id);
        dirs.lowers = planned_lowers(store, &root.snapshots, root.owner)?;
        Ok(Plan { cwd: root.dir.join("merged"), owner: None, state: OverlayState { dirs }, warnings: vec![] })
    }

    fn create(&self, store: &Store, root: &RootSpec, st: &mut OverlayState) -> Result<Made> {
        // The mount point: covered by the overlay's root while mounted, closed when not (a
        // skeleton's is there already).
        crate::store::perms::make_dir(&root.cwd, 0o700)?;
        let guard =
            mount_snapshots(store, &root.snapshots, &mut st.dirs, Place::at(&root.cwd)?, root.owner, !root.durable)?;
        Ok(Made { mounts: vec![guard], ..Made::default() })
    }

    fn is_live(&self, _store: &Store, root: &RootSpec, _st: &OverlayState) -> Result<bool> {
        mount::is_mounted(&root.cwd)
    }

    fn revive(&self, store: &Store, root: &RootSpec, st: &mut OverlayState) -> Result<()> {
        // Idmapped views of the layers do not survive a reboot either: make them again.
        let mut dirs = st.dirs.clone();
        dirs.lowers = lowers_for(store, &store.layer_stack(&root.snapshots)?, root.owner)?;
        dirs.mount_again(Place::at(&root.cwd)?, !root.durable, false)?.keep();
        st.dirs = dirs;
        Ok(())
    }

    fn detach(&self, _store: &Store, root: &RootSpec, _st: &OverlayState) -> Result<bool> {
        // The kernel knows whether anything uses the mount: EBUSY is the authoritative answer.
        Ok(mount::unmount(&root.cwd)? != Unmounted::Busy)
    }

    fn check_destroy(&self, _: &Store, _: &RootSpec, _: &OverlayState, _force: bool) -> Result<Vec<String>> {
        Ok(vec![])
    }

    fn destroy(&self, _store: &Store, root: &RootSpec, _st: &OverlayState) -> Result<Vec<String>> {
        match mount::unmount(&root.cwd)? {
            Unmounted::Done | Unmounted::NotMounted => Ok(vec![]),
            Unmounted::Busy => Err(Error::Busy { path: root.cwd.clone() }),
        }
    }

    fn usage(&self, _store: &Store, _root: &RootSpec, st: &OverlayState) -> Result<Usage> {
        Ok(tree_usage(&st.dirs.upper))
    }

    fn diff(&self, store: &Store, root: &RootSpec, st: &OverlayState) -> Result<Diff> {
        if !mount::is_mounted(&root.cwd)? {
            return Err(Error::Conflict(format!("root {} is not mounted; run `execroot doctor --repair`", root.id)));
        }
        let stack = store.layer_stack(&root.snapshots)?;
        let lower =
            crate::change::overlay::Lower { layers: stack.iter().rev().map(|id| store.layer_dir(id)).collect() };
        crate::change::overlay::diff(&st.dirs.upper, &root.cwd, &lower, &root.mount_subdirs)
    }
}
