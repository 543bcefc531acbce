//! The overlay backend: shared read-only layers plus a private upper directory, mounted with
//! overlayfs. Creating a root costs a few mkdirs and one mount, whatever the size of the tree.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

use super::{tree_usage, Backend, Usage};
use crate::error::{Error, IoContext, Result};
use crate::policy::BackendKind;
use crate::root::RootRecord;
use crate::sys::mount::{self, OverlaySpec, Unmounted};
use crate::sys::Owner;
use crate::Store;

/// See the module documentation.
pub struct Overlay;

/// Build the overlay of `snapshots` (bottom first) for a root directory `dir`: materialize the
/// layers, make a private upper and work directory (random names) owned by `owner`, and mount
/// it at `target`. Used for a root's cwd and for its `--mount` sub-roots alike.
pub fn mount_stack(
    store: &Store,
    snapshots: &[crate::Hash],
    dir: &std::path::Path,
    target: &std::path::Path,
    owner: Owner,
    volatile: bool,
) -> Result<OverlaySpec> {
    let stack = store.layer_stack(snapshots)?;
    let lowers = lowers_for(store, &stack, owner)?;
    let tag: u64 = rand::random();
    let upper = dir.join(format!("upper-{tag:016x}"));
    let work = dir.join(format!("work-{tag:016x}"));
    // The merged root directory shows the upper's attributes: give it the top layer's mode.
    let top_mode = match stack.last() {
        Some(id) => std::fs::metadata(store.layer_dir(id)).at(store.layer_dir(id))?.permissions().mode() & 0o7777,
        None => 0o755,
    };
    std::fs::DirBuilder::new().mode(top_mode).create(&upper).at(&upper)?;
    std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(top_mode)).at(&upper)?;
    std::os::unix::fs::lchown(&upper, Some(owner.uid), Some(owner.gid)).at(&upper)?;
    std::fs::DirBuilder::new().mode(0o700).create(&work).at(&work)?;
    let spec = OverlaySpec { lowers, upper, work, volatile };
    spec.mount(target)?.keep();
    Ok(spec)
}

/// The owner a store's files belong to (the store directory's owner).
pub fn store_owner(store: &Store) -> Result<Owner> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(store.root()).at(store.root())?;
    Ok(Owner { uid: md.uid(), gid: md.gid() })
}

/// The lower directory to use for `layer` (a short layer path) in a root owned by `owner`: the
/// layer itself when the owner owns the store, else an idmapped view of it,
/// `STORE/idmap/<uid>-<gid>/<12 hex>`, shared by every root of that owner.
pub fn lower_for(store: &Store, layer: &std::path::Path, owner: Owner) -> Result<std::path::PathBuf> {
    let base = store_owner(store)?;
    if owner == base {
        return Ok(layer.to_path_buf());
    }
    let dir = store.idmap_dir().join(format!("{}-{}", owner.uid, owner.gid));
    std::fs::create_dir_all(&dir).at(&dir)?;
    let name = layer.file_name().ok_or_else(|| Error::Corrupt(format!("bad layer path {}", layer.display())))?;
    let target = dir.join(name);
    crate::sys::idmap::ensure_view(layer, &target, &dir.with_extension("lock"), base, owner)?;
    Ok(target)
}

/// The lower directories (top first) presenting `stack` (bottom first) to `owner`:
/// materialized layers, idmapped when the owner is not the store's owner.
pub fn lowers_for(store: &Store, stack: &[crate::Hash], owner: Owner) -> Result<Vec<std::path::PathBuf>> {
    let mut lowers = Vec::with_capacity(stack.len().max(1));
    for id in stack.iter().rev() {
        let layer = store.materialize(id)?;
        lowers.push(lower_for(store, &layer, owner)?);
    }
    if lowers.is_empty() {
        let empty = store.root().join("layers").join("empty");
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(&empty).at(&empty)?;
        lowers.push(lower_for(store, &empty, owner)?);
    }
    Ok(lowers)
}

impl Backend for Overlay {
    fn kind(&self) -> BackendKind {
        BackendKind::Overlay
    }

    fn create(&self, store: &Store, rec: &mut RootRecord) -> Result<()> {
        let dir = rec.dir(store);
        let merged = dir.join("merged");
        std::fs::create_dir(&merged).at(&merged)?;
        rec.cwd = merged.clone();
        let spec = mount_stack(store, &rec.layer_ids()?, &dir, &merged, rec.owner, !rec.durable)?;
        rec.upper = Some(spec.upper);
        rec.work = Some(spec.work);
        rec.lowers = spec.lowers;
        rec.cwd = merged;
        Ok(())
    }

    fn is_live(&self, _store: &Store, rec: &RootRecord) -> Result<bool> {
        mount::is_mounted(&rec.cwd)
    }

    fn revive(&self, store: &Store, rec: &mut RootRecord) -> Result<()> {
        let (Some(upper), Some(work)) = (rec.upper.clone(), rec.work.clone()) else {
            return Err(Error::Corrupt(format!("root {} has no upper directory recorded", rec.id)));
        };
        if !rec.durable && work.join("work/incompat/volatile").exists() {
            return Err(Error::VolatileLost(format!(
                "root {} was volatile and the system went down under it; the kernel will not remount its upper directory",
                rec.id
            )));
        }
        // Idmapped views of the layers do not survive a reboot either: make them again.
        let lowers = lowers_for(store, &store.layer_stack(&rec.layer_ids()?)?, rec.owner)?;
        let spec = OverlaySpec { lowers, upper, work, volatile: !rec.durable };
        spec.mount(&rec.cwd)?.keep();
        Ok(())
    }

    fn detach(&self, _store: &Store, rec: &RootRecord) -> Result<bool> {
        // The kernel knows whether anything uses the mount: EBUSY is the authoritative answer.
        Ok(mount::unmount(&rec.cwd)? != Unmounted::Busy)
    }

    fn check_destroy(&self, _store: &Store, _rec: &RootRecord, _force: bool) -> Result<Vec<String>> {
        Ok(vec![])
    }

    fn destroy(&self, _store: &Store, rec: &RootRecord) -> Result<Vec<String>> {
        match mount::unmount(&rec.cwd)? {
            Unmounted::Done | Unmounted::NotMounted => Ok(vec![]),
            Unmounted::Busy => Err(Error::Busy { path: rec.cwd.clone() }),
        }
    }

    fn diff(&self, store: &Store, rec: &RootRecord) -> Result<crate::change::Diff> {
        if !mount::is_mounted(&rec.cwd)? {
            return Err(Error::Conflict(format!("root {} is not mounted; run `execroot doctor --repair`", rec.id)));
        }
        let upper = rec.upper.clone().ok_or_else(|| Error::Corrupt(format!("root {} has no upper", rec.id)))?;
        let stack = store.layer_stack(&rec.layer_ids()?)?;
        let lower =
            crate::change::overlay::Lower { layers: stack.iter().rev().map(|id| store.layer_dir(id)).collect() };
        crate::change::overlay::diff(&upper, &rec.cwd, &lower, &rec.mount_subdirs())
    }

    fn usage(&self, _store: &Store, rec: &RootRecord) -> Result<Usage> {
        Ok(rec.upper.as_ref().map(|u| tree_usage(u)).unwrap_or_default())
    }
}
