//! What a run changed against its base: added, modified (content or permission bits) and
//! deleted entries. This layer sits above the store (it reads layers and manifests) and below
//! roots and backends (each backend says which of these its roots are diffed with).
//!
//! - [`overlay`]: an overlay root, from its upper directory (cost follows the change).
//! - [`tree`]: a plain tree (a copy root) against the flattened manifest it was made from.

pub mod overlay;
pub mod tree;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Result;
use crate::pathenc::PathJson;
use crate::store::manifest::{canonical_sort_key, cmp_paths};
use crate::sys::beneath::{Kind, Meta};

/// What kind of entry a changed path is (for a deletion: what was there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file (or anything that is neither a directory nor a symlink).
    File,
    /// A symbolic link.
    Symlink,
}

impl EntryKind {
    /// The kind of a file type as `lstat` reports it.
    pub fn of(ft: std::fs::FileType) -> EntryKind {
        if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            EntryKind::Symlink
        } else {
            EntryKind::File
        }
    }

    /// The kind of an entry [`Meta`] describes.
    pub fn of_meta(m: &Meta) -> EntryKind {
        match m.kind {
            Kind::Dir => EntryKind::Dir,
            Kind::Symlink => EntryKind::Symlink,
            _ => EntryKind::File,
        }
    }

    /// The name used in JSON and human output.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Dir => "dir",
            EntryKind::File => "file",
            EntryKind::Symlink => "symlink",
        }
    }
}

/// One changed path.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// Path relative to the root.
    pub path: PathJson,
    /// What is there now (for a deletion: what was there).
    pub kind: EntryKind,
    /// File size (the new size; for a deletion, the old one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// For a modification: the content (or symlink target, or kind) changed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub content: bool,
    /// For a modification: the permission bits changed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mode: bool,
}

impl Change {
    /// A change at `path` described by its metadata (content and mode flags unset).
    pub fn at(path: &[u8], md: &Meta) -> Change {
        Change {
            path: PathJson(path.to_vec()),
            kind: EntryKind::of_meta(md),
            size: md.is_file().then_some(md.size),
            content: false,
            mode: false,
        }
    }
}

/// A root's change, each list in canonical path order.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diff {
    /// Paths that exist now and did not in the base.
    pub added: Vec<Change>,
    /// Paths whose content, kind or permission bits changed.
    pub modified: Vec<Change>,
    /// Paths of the base that no longer exist.
    pub deleted: Vec<Change>,
}

impl Diff {
    /// Raw paths of one list.
    pub fn paths(list: &[Change]) -> Vec<Vec<u8>> {
        list.iter().map(|c| c.path.0.clone()).collect()
    }

    /// Paths whose current entry a commit records (added and modified), in canonical order.
    pub fn written(&self) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = self.added.iter().chain(&self.modified).map(|c| c.path.0.clone()).collect();
        sort_paths(&mut v);
        v
    }

    /// Paths a commit records as deleted.
    pub fn removed(&self) -> Vec<Vec<u8>> {
        Self::paths(&self.deleted)
    }
}

/// Accumulates changes keyed by canonical path so that each path is reported once.
#[derive(Default)]
pub struct Collector {
    added: BTreeMap<Vec<u8>, Change>,
    modified: BTreeMap<Vec<u8>, Change>,
    deleted: BTreeMap<Vec<u8>, Change>,
}

impl Collector {
    /// Record an addition.
    pub fn added(&mut self, c: Change) {
        self.added.insert(canonical_sort_key(&c.path.0), c);
    }

    /// Record a modification.
    pub fn modified(&mut self, c: Change) {
        self.modified.insert(canonical_sort_key(&c.path.0), c);
    }

    /// Record a deletion.
    pub fn deleted(&mut self, c: Change) {
        self.deleted.insert(canonical_sort_key(&c.path.0), c);
    }

    /// The diff, each list in canonical order.
    pub fn finish(self) -> Diff {
        Diff {
            added: self.added.into_values().collect(),
            modified: self.modified.into_values().collect(),
            deleted: self.deleted.into_values().collect(),
        }
    }

    /// Compare one path present in `now` (or absent) with its base metadata (or absence).
    /// `same_content` decides equality of two regular files of equal size; `same_target` of two
    /// symlinks.
    fn compare(
        &mut self,
        path: &[u8],
        now: Option<&Meta>,
        base: Option<&Meta>,
        same_content: &dyn Fn() -> Result<bool>,
        same_target: &dyn Fn() -> Result<bool>,
    ) -> Result<()> {
        match (now, base) {
            (None, None) => {}
            (Some(n), None) => self.added(Change::at(path, n)),
            (None, Some(b)) => self.deleted(Change::at(path, b)),
            (Some(n), Some(b)) => {
                let (nk, bk) = (EntryKind::of_meta(n), EntryKind::of_meta(b));
                // A change of kind is a content change; permission bits are compared only
                // between entries of one kind (as the tree diff does).
                let mode = nk == bk && nk != EntryKind::Symlink && n.mode != b.mode;
                let content = if nk != bk {
                    true
                } else {
                    match nk {
                        EntryKind::File => n.size != b.size || !same_content()?,
                        EntryKind::Symlink => !same_target()?,
                        EntryKind::Dir => false,
                    }
                };
                if mode || content {
                    let mut c = Change::at(path, n);
                    c.mode = mode;
                    c.content = content;
                    self.modified(c);
                }
            }
        }
        Ok(())
    }
}

/// Sort raw paths in canonical order (for tests and callers comparing lists).
pub fn sort_paths(v: &mut [Vec<u8>]) {
    v.sort_by(|a, b| cmp_paths(a, b));
}
