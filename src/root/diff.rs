//! What a run changed against its base: added, modified (content or permission bits) and
//! deleted entries.
//!
//! For an overlay root only the upper directory is read, so the cost follows the size of the
//! change, not of the base: each path the upper directory touches is compared between the
//! merged view (the mounted root) and the lower view (the layers, honouring their whiteouts and
//! opaque directories). A whiteout is a deletion; an opaque or redirected (renamed) directory
//! hides the lower directory's children, which are deleted unless present again, and everything
//! the merged view shows below it is compared too, so a renamed lower directory is a deletion at
//! the old path and an addition of everything under the new one. A copied-up file whose content
//! and mode did not change is not modified. A copy root is compared with its flattened manifest.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::hash::hash_reader;
use crate::pathenc::PathJson;
use crate::store::layer::xattr_get;
use crate::store::manifest::cmp_paths;
use crate::store::{Entry, Node};

/// One changed path.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// Path relative to the root.
    pub path: PathJson,
    /// `dir`, `file` or `symlink` (for a deletion: what was there).
    pub kind: &'static str,
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
}

/// Accumulates changes keyed by canonical path so that each path is reported once.
#[derive(Default)]
pub(crate) struct Collector {
    pub(crate) added: BTreeMap<Vec<u8>, Change>,
    pub(crate) modified: BTreeMap<Vec<u8>, Change>,
    pub(crate) deleted: BTreeMap<Vec<u8>, Change>,
}

/// True when `rel` is `s` or below it.
pub(crate) fn under(rel: &[u8], s: &[u8]) -> bool {
    rel.starts_with(s) && (rel.len() == s.len() || rel[s.len()] == b'/')
}

pub(crate) fn key(p: &[u8]) -> Vec<u8> {
    p.iter().map(|&c| if c == b'/' { 0 } else { c }).collect()
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else {
        "file"
    }
}

fn change(path: &[u8], md: &std::fs::Metadata) -> Change {
    Change {
        path: PathJson(path.to_vec()),
        kind: kind_of(md.file_type()),
        size: md.is_file().then_some(md.len()),
        content: false,
        mode: false,
    }
}

impl Collector {
    pub(crate) fn finish(self) -> Diff {
        Diff {
            added: self.added.into_values().collect(),
            modified: self.modified.into_values().collect(),
            deleted: self.deleted.into_values().collect(),
        }
    }

    /// Compare one path present in `now` (or absent) with its base metadata (or absence).
    /// `same_content` decides equality of two regular files of equal size.
    fn compare(
        &mut self,
        path: &[u8],
        now: Option<&std::fs::Metadata>,
        base: Option<&std::fs::Metadata>,
        same_content: &dyn Fn() -> Result<bool>,
        symlink_same: &dyn Fn() -> bool,
    ) -> Result<()> {
        match (now, base) {
            (None, None) => {}
            (Some(n), None) => {
                self.added.insert(key(path), change(path, n));
            }
            (None, Some(b)) => {
                self.deleted.insert(key(path), change(path, b));
            }
            (Some(n), Some(b)) => {
                let (nk, bk) = (kind_of(n.file_type()), kind_of(b.file_type()));
                let mode = nk != "symlink" && (n.mode() & 0o7777) != (b.mode() & 0o7777);
                let content = if nk != bk {
                    true
                } else {
                    match nk {
                        "file" => n.len() != b.len() || !same_content()?,
                        "symlink" => !symlink_same(),
                        _ => false,
                    }
                };
                if mode || content {
                    let mut c = change(path, n);
                    c.mode = mode;
                    c.content = content;
                    self.modified.insert(key(path), c);
                }
            }
        }
        Ok(())
    }
}

fn join(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

fn child(rel: &[u8], name: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        name.to_vec()
    } else {
        [rel, b"/", name].concat()
    }
}

fn is_whiteout(md: &std::fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn same_file_content(a: &Path, b: &Path) -> Result<bool> {
    let ha = std::fs::File::open(a).and_then(hash_reader).at(a)?;
    let hb = std::fs::File::open(b).and_then(hash_reader).at(b)?;
    Ok(ha == hb)
}

/// The lower view of an overlay: its layer directories, top first.
pub(crate) struct Lower {
    pub(crate) layers: Vec<PathBuf>,
}

impl Lower {
    /// The lower entry at `rel`, honouring whiteouts and opaque directories of upper layers.
    pub(crate) fn lookup(&self, rel: &[u8]) -> Option<(PathBuf, std::fs::Metadata)> {
        for layer in &self.layers {
            let p = join(layer, rel);
            if let Ok(md) = std::fs::symlink_metadata(&p) {
                return if is_whiteout(&md) { None } else { Some((p, md)) };
            }
            // Absent here: an ancestor in this layer may hide the layers below.
            let mut anc: &[u8] = rel;
            let mut hidden = false;
            let mut chain = Vec::new();
            while let Some(i) = anc.iter().rposition(|&c| c == b'/') {
                anc = &anc[..i];
                chain.push(anc);
            }
            for a in chain.into_iter().rev() {
                match std::fs::symlink_metadata(join(layer, a)) {
                    Err(_) => break,
                    Ok(md) if !md.is_dir() => {
                        hidden = true;
                        break;
                    }
                    Ok(_) if xattr_get(&join(layer, a), "trusted.overlay.opaque").as_deref() == Some(b"y") => {
                        hidden = true;
                        break;
                    }
                    Ok(_) => {}
                }
            }
            if hidden {
                return None;
            }
        }
        None
    }

    /// Names of the lower directory `rel`'s children.
    pub(crate) fn children(&self, rel: &[u8]) -> Vec<Vec<u8>> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for layer in &self.layers {
            let p = join(layer, rel);
            let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
            if !md.is_dir() {
                break;
            }
            if let Ok(rd) = std::fs::read_dir(&p) {
                for e in rd.flatten() {
                    let name = e.file_name().as_bytes().to_vec();
                    if !seen.insert(name.clone()) {
                        continue;
                    }
                    let whiteout = e.metadata().map(|m| is_whiteout(&m)).unwrap_or(false);
                    if !whiteout {
                        out.push(name);
                    }
                }
            }
            if xattr_get(&p, "trusted.overlay.opaque").as_deref() == Some(b"y") {
                break;
            }
        }
        out
    }

    /// Report `rel` and everything below it in the lower view as deleted.
    fn delete_tree(&self, rel: &[u8], c: &mut Collector) {
        let Some((_, md)) = self.lookup(rel) else { return };
        c.deleted.insert(key(rel), change(rel, &md));
        if md.is_dir() {
            for name in self.children(rel) {
                self.delete_tree(&child(rel, &name), c);
            }
        }
    }
}

/// Diff of an overlay root: `upper` its upper directory, `merged` the mounted root, `lower` its
/// layers; paths under `skip` (the `--mount` subdirectories) are not part of it.
pub(crate) fn overlay_diff(upper: &Path, merged: &Path, lower: &Lower, skip: &[Vec<u8>]) -> Result<Diff> {
    let mut c = Collector::default();
    let mut todo: Vec<(Vec<u8>, bool)> = vec![(Vec::new(), false)];
    // (relative path, whether the whole merged subtree must be compared)
    while let Some((rel, deep)) = todo.pop() {
        if skip.iter().any(|s| under(&rel, s)) {
            continue;
        }
        let now = std::fs::symlink_metadata(join(merged, &rel)).ok();
        let base = lower.lookup(&rel);
        let (mp, lp) = (join(merged, &rel), base.as_ref().map(|(p, _)| p.clone()));
        c.compare(
            &rel,
            now.as_ref(),
            base.as_ref().map(|(_, m)| m),
            &|| same_file_content(&mp, lp.as_ref().expect("base exists")),
            &|| std::fs::read_link(&mp).ok() == lp.as_ref().and_then(|l| std::fs::read_link(l).ok()),
        )?;
        if now.is_none() {
            if base.is_some() {
                lower.delete_tree(&rel, &mut c);
            }
            continue;
        }
        let now = now.expect("checked");
        if !now.is_dir() {
            if base.as_ref().is_some_and(|(_, m)| m.is_dir()) {
                for name in lower.children(&rel) {
                    lower.delete_tree(&child(&rel, &name), &mut c);
                }
            }
            continue;
        }
        let up = join(upper, &rel);
        let up_md = std::fs::symlink_metadata(&up).ok();
        let hides_lower = up_md.as_ref().is_some_and(|m| m.is_dir())
            && (xattr_get(&up, "trusted.overlay.opaque").as_deref() == Some(b"y")
                || xattr_get(&up, "trusted.overlay.redirect").is_some());
        let new_dir = base.as_ref().is_none_or(|(_, m)| !m.is_dir());
        let deep = deep || hides_lower || new_dir;
        // Which children to visit: all merged children for a deep directory, else only those
        // the upper directory holds (whiteouts included).
        let names: Vec<Vec<u8>> = if deep {
            std::fs::read_dir(join(merged, &rel))
                .at(join(merged, &rel))?
                .flatten()
                .map(|e| e.file_name().as_bytes().to_vec())
                .collect()
        } else if up_md.as_ref().is_some_and(|m| m.is_dir()) {
            std::fs::read_dir(&up).at(&up)?.flatten().map(|e| e.file_name().as_bytes().to_vec()).collect()
        } else {
            Vec::new()
        };
        if hides_lower || (base.as_ref().is_some_and(|(_, m)| m.is_dir()) && deep) {
            for name in lower.children(&rel) {
                let p = child(&rel, &name);
                if std::fs::symlink_metadata(join(merged, &p)).is_err() {
                    lower.delete_tree(&p, &mut c);
                }
            }
        }
        for name in names {
            todo.push((child(&rel, &name), deep));
        }
    }
    Ok(c.finish())
}

/// Diff of a plain tree (a copy root) against the flattened manifest it was made from. Files
/// whose size and mtime match the manifest are taken as unchanged (as git's index does); others
/// are hashed.
pub(crate) fn tree_diff(cwd: &Path, base: &[Entry], skip: &[Vec<u8>]) -> Result<Diff> {
    let mut c = Collector::default();
    let by_path: BTreeMap<&[u8], &Entry> = base.iter().map(|e| (e.path.as_slice(), e)).collect();
    let mut seen = std::collections::HashSet::new();
    let walker = walkdir::WalkDir::new(cwd).into_iter().filter_entry(|e| {
        let rel = e.path().strip_prefix(cwd).map(|r| r.as_os_str().as_bytes().to_vec()).unwrap_or_default();
        !skip.iter().any(|s| under(&rel, s))
    });
    for item in walker {
        let item = item.map_err(|e| Error::BadInput(format!("{}: {e}", cwd.display())))?;
        let rel = item.path().strip_prefix(cwd).expect("under cwd").as_os_str().as_bytes().to_vec();
        let md = std::fs::symlink_metadata(item.path()).at(item.path())?;
        seen.insert(rel.clone());
        match by_path.get(rel.as_slice()) {
            None => {
                c.added.insert(key(&rel), change(&rel, &md));
            }
            Some(e) => {
                let (kind_same, mode, content) = match &e.node {
                    Node::File { size, hash } => {
                        let content = md.is_file()
                            && (md.len() != *size
                                || ((md.mtime(), md.mtime_nsec() as u32) != (e.mtime_sec, e.mtime_nsec)
                                    && std::fs::File::open(item.path()).and_then(hash_reader).at(item.path())?.0
                                        != *hash));
                        (md.is_file(), md.mode() & 0o7777 != e.mode, content)
                    }
                    Node::Symlink { target } => (
                        md.file_type().is_symlink(),
                        false,
                        std::fs::read_link(item.path())
                            .map(|t| t.as_os_str().as_bytes() != target.as_slice())
                            .unwrap_or(true),
                    ),
                    _ => (md.is_dir(), md.mode() & 0o7777 != e.mode, false),
                };
                if !kind_same || mode || content {
                    let mut ch = change(&rel, &md);
                    ch.mode = kind_same && mode;
                    ch.content = !kind_same || content;
                    c.modified.insert(key(&rel), ch);
                }
            }
        }
    }
    for e in base {
        if !seen.contains(&e.path) && !skip.iter().any(|s| under(&e.path, s)) {
            let (kind, size) = match &e.node {
                Node::File { size, .. } => ("file", Some(*size)),
                Node::Symlink { .. } => ("symlink", None),
                _ => ("dir", None),
            };
            c.deleted.insert(
                key(&e.path),
                Change { path: PathJson(e.path.clone()), kind, size, content: false, mode: false },
            );
        }
    }
    Ok(c.finish())
}

/// Sort raw paths in canonical order (for tests and callers comparing lists).
pub fn sort_paths(v: &mut [Vec<u8>]) {
    v.sort_by(|a, b| cmp_paths(a, b));
}
