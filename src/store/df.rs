//! Disk accounting: what objects, layers and roots cost, shared and unique.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use serde::Serialize;

use crate::error::Result;
use crate::hash::Hash;
use crate::store::Store;

/// Bytes and files of one part of the store.
#[derive(Debug, Default, Serialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub struct Space {
    /// Regular files (or inodes, for a root's writes).
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
}

/// One materialized layer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerSpace {
    /// Snapshot id.
    pub id: String,
    /// Entries (directory entries: what a layer really costs).
    pub entries: u64,
    /// Files that are private copies (hardlink limit reached), with their bytes.
    pub private: Space,
    /// Roots using this layer now.
    pub roots: u64,
}

/// One root's own writes.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RootSpace {
    /// Root id.
    pub id: String,
    /// Backend (`overlay`, `copy`, `worktree`).
    pub backend: String,
    /// What the run wrote (overlay: its upper; copy and worktree: the whole tree).
    pub unique: Space,
}

/// `execroot df`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DfReport {
    /// Content objects: shared by every snapshot, layer and root that uses them.
    pub objects: Space,
    /// Per-(content, mode) variant inodes for layers: shared.
    pub variants: Space,
    /// Materialized layers.
    pub layers: Vec<LayerSpace>,
    /// Roots.
    pub roots: Vec<RootSpace>,
    /// objects + variants + private layer copies: paid once, shared by all roots.
    pub shared_bytes: u64,
    /// Sum of the roots' own writes.
    pub unique_bytes: u64,
}

/// The store's own space: objects, variants and materialized layers (`roots` left at 0).
#[derive(Debug)]
pub struct StoreSpace {
    /// Content objects.
    pub objects: Space,
    /// Variant inodes.
    pub variants: Space,
    /// Materialized layers, by id.
    pub layers: Vec<LayerSpace>,
}

impl DfReport {
    /// Put the report together: the store's space, how many roots use each layer (by snapshot
    /// id), and each root's own writes.
    pub fn new(space: StoreSpace, layer_users: &HashMap<Hash, u64>, roots: Vec<RootSpace>) -> DfReport {
        let StoreSpace { objects, variants, mut layers } = space;
        for l in &mut layers {
            l.roots = Hash::from_hex(&l.id).ok().and_then(|h| layer_users.get(&h)).copied().unwrap_or(0);
        }
        let shared_bytes = objects.bytes + variants.bytes + layers.iter().map(|l| l.private.bytes).sum::<u64>();
        let unique_bytes = roots.iter().map(|r| r.unique.bytes).sum();
        DfReport { objects, variants, layers, roots, shared_bytes, unique_bytes }
    }
}

impl Store {
    /// Measure the store's own parts (what roots write is measured by the root layer).
    pub fn store_space(&self) -> Result<StoreSpace> {
        let mut objects = Space::default();
        for (_, p) in self.list_objects()? {
            objects.files += 1;
            objects.bytes += std::fs::symlink_metadata(&p).map(|m| m.len()).unwrap_or(0);
        }
        let mut variants = Space::default();
        for e in walkdir::WalkDir::new(self.path().join("variants")).into_iter().flatten() {
            if e.file_type().is_file() {
                variants.files += 1;
                variants.bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        let mut layers = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.path().join("layers")) {
            for l in rd.flatten() {
                let id = l.file_name().to_string_lossy().into_owned();
                let mut ls = LayerSpace { roots: 0, id, entries: 0, private: Space::default() };
                for e in walkdir::WalkDir::new(l.path()).min_depth(1).into_iter().flatten() {
                    ls.entries += 1;
                    if let Ok(m) = e.metadata() {
                        if m.is_file() && m.nlink() == 1 {
                            ls.private.files += 1;
                            ls.private.bytes += m.len();
                        }
                    }
                }
                layers.push(ls);
            }
        }
        layers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(StoreSpace { objects, variants, layers })
    }
}
