//! Garbage collection: everything no ref, no root and no grace period keeps goes.
//!
//! Kept: snapshots named by a ref, snapshots the caller pins (the root layer pins what every
//! root uses, in any state, `creating` included: its layers and its `--mount` snapshots),
//! snapshots younger than the grace period, and,
//! recursively, the parents of everything kept. Removed: every other snapshot, its layer (and
//! its idmapped views), objects no kept snapshot names, and variants no kept snapshot needs.
//!
//! gc needs no new data block before it has freed space (see [`Gone`]), so it runs on a full
//! disk.
//!
//! gc holds the store lock *exclusively* while it decides what goes and takes it away (renames
//! it into its [`Gone`] lease), and every writer (ingest, root create, commit) holds it shared
//! for its whole run. So an object an unfinished ingest has written or found present, or a root
//! being created, is never collected: gc waits for them, and they wait for gc's decision. Object
//! mtimes cannot serve for this (a reused object keeps its old mtime, and layers share its
//! inode), nor can leases (a lease proves liveness, not which objects an ingest has counted on).
//! The deleting itself, which for gigabytes takes long, happens after the lock is released: what
//! was taken has no name in `objects/`, `snapshots/`, `layers/` or `variants/` any more, so a
//! writer that starts then cannot find it (it writes a fresh object, builds a fresh layer), and
//! the deletion touches nothing it can see (docs/capture.md, "gc").

use std::collections::{BTreeSet, HashSet};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::store::lock::Gone;
use crate::store::{Node, Store, StoreLock};

/// Default grace period: snapshots younger than this are kept even when nothing names them, so
/// that a snapshot just ingested (and about to be named or used) is not collected under it.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// What gc removed (or, with `dryRun`, would remove).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    /// Nothing was deleted.
    pub dry_run: bool,
    /// Grace period used, in seconds.
    pub grace_secs: u64,
    /// Snapshots kept.
    pub kept_snapshots: u64,
    /// Snapshots removed.
    pub removed_snapshots: Vec<Hash>,
    /// Layer directories removed.
    pub removed_layers: u64,
    /// Objects removed.
    pub removed_objects: u64,
    /// Variant inodes removed.
    pub removed_variants: u64,
    /// Bytes freed (objects, variants and private layer copies).
    pub freed_bytes: u64,
    /// Provision layers forgotten by the gc policy (their keys), their snapshots collected
    /// like any other (the root layer fills this in).
    pub removed_provisions: Vec<String>,
    /// Wall time.
    pub elapsed_ms: f64,
}

impl Store {
    /// `ids` and all their ancestors. A snapshot that does not exist has no ancestors to keep;
    /// one whose manifest cannot be read fails the closure, since its parents are unknown.
    pub fn closure(&self, ids: impl IntoIterator<Item = Hash>) -> Result<BTreeSet<Hash>> {
        let mut keep = BTreeSet::new();
        let mut todo: Vec<Hash> = ids.into_iter().collect();
        while let Some(id) = todo.pop() {
            if keep.insert(id) {
                match self.parents_of(&id) {
                    Ok(parents) => todo.extend(parents),
                    Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(keep)
    }

    /// Run gc, keeping the snapshots `pins` names (with their ancestors) besides refs and young
    /// snapshots. `pins` is called under the store's exclusive lock, so that no writer (a root
    /// being created) can add a pin between the caller's reading of them and the sweep; an
    /// error from it stops gc before anything is deleted. (The root layer's `gc` passes every
    /// root's snapshots, in the spirit of composefs-rs's `gc(additional_roots)`.)
    pub fn gc_with(
        &self,
        grace: Duration,
        dry_run: bool,
        pins: impl FnOnce() -> Result<Vec<Hash>>,
    ) -> Result<GcReport> {
        let t0 = Instant::now();
        // Declared before the lock, so that on every way out the lock is released first and
        // only then is what was taken deleted.
        let mut gone = Gone::default();
        let lock = StoreLock::acquire(self, true)?;
        let locked = Instant::now();
        let mut report = GcReport { dry_run, grace_secs: grace.as_secs(), ..Default::default() };
        let now = SystemTime::now();
        let all = self.list_snapshots()?;
        let mut roots: Vec<Hash> = self.list_refs()?.into_iter().map(|(_, h)| h).collect();
        roots.extend(pins()?);
        for id in &all {
            let young = std::fs::metadata(self.snapshot_dir(id))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_none_or(|age| age < grace);
            if young {
                roots.push(*id);
            }
        }
        let keep = self.closure(roots)?;
        report.kept_snapshots = all.iter().filter(|id| keep.contains(id)).count() as u64;

        // Objects and (content, mode) variants the kept snapshots need.
        let mut objects: HashSet<Hash> = HashSet::new();
        let mut variants: HashSet<(Hash, u32)> = HashSet::new();
        for id in all.iter().filter(|id| keep.contains(id)) {
            let m = self.load_manifest(id)?;
            for e in &m.entries {
                if let Node::File { hash, .. } = e.node {
                    objects.insert(hash);
                    variants.insert((hash, e.mode));
                }
            }
        }

        // Sizes are read before anything is taken away: the report is the same, dry run or not.
        for id in all.iter().filter(|id| !keep.contains(id)) {
            report.removed_snapshots.push(*id);
            let layer = self.layer_dir(id);
            if layer.exists() {
                report.removed_layers += 1;
                report.freed_bytes += private_bytes(&layer);
            }
            if !dry_run {
                self.drop_layer(id, &mut gone)?;
                gone.take(self, &self.snapshot_dir(id))?;
            }
        }
        crate::sys::failpoint::hit("gc.snapshots-removed");
        for (h, path) in self.list_objects()? {
            if !objects.contains(&h) {
                report.removed_objects += 1;
                report.freed_bytes += std::fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
                if !dry_run {
                    gone.take(self, &path)?;
                    crate::sys::failpoint::hit("gc.object-removed");
                }
            }
        }
        let vdir = self.path().join("variants");
        if let Ok(modes) = std::fs::read_dir(&vdir) {
            for m in modes.flatten() {
                let Some(mode) = m.file_name().to_str().and_then(|s| u32::from_str_radix(s, 8).ok()) else { continue };
                for f in std::fs::read_dir(m.path()).at(m.path())? {
                    let f = f.at(m.path())?;
                    // A name that is not a content hash is not a variant: left alone.
                    let Some(h) = f.file_name().to_str().and_then(|n| Hash::from_hex(n).ok()) else { continue };
                    if !variants.contains(&(h, mode)) {
                        report.removed_variants += 1;
                        report.freed_bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
                        if !dry_run {
                            gone.take(self, &f.path())?;
                        }
                    }
                }
            }
        }
        drop(lock);
        let held_ms = locked.elapsed().as_secs_f64() * 1000.0;
        tracing::debug!(held_ms, taken = gone.taken(), "gc released the store lock");
        crate::sys::failpoint::hit("gc.unlocked");
        gone.delete()?;
        report.elapsed_ms = t0.elapsed().as_secs_f64() * 1000.0;
        tracing::debug!(held_ms, elapsed_ms = report.elapsed_ms, "gc done");
        Ok(report)
    }

    /// Remove layer `id`: unmount its idmapped views (a view is a mount of the layer directory:
    /// it must go before the directory is taken, or it would keep serving it, and keep its
    /// space), remove its short link, take its directory.
    fn drop_layer(&self, id: &Hash, gone: &mut Gone) -> Result<()> {
        let short = &id.to_hex()[..12];
        if let Ok(owners) = std::fs::read_dir(self.idmap_dir()) {
            for o in owners.flatten() {
                let view = o.path().join(short);
                if view.exists() {
                    let _ = crate::sys::mount::unmount(&view);
                    let _ = std::fs::remove_dir(&view);
                }
            }
        }
        let _ = std::fs::remove_file(self.layer_link(id));
        let dir = self.layer_dir(id);
        if dir.exists() {
            gone.take(self, &dir)?;
        }
        Ok(())
    }
}

/// Bytes of a layer's private files (hardlinks into objects cost nothing of their own).
fn private_bytes(dir: &std::path::Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file() && m.nlink() == 1)
        .map(|m| m.len())
        .sum()
}
