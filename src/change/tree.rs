//! The diff of a plain tree (a copy root) against the flattened manifest it was made from. Files
//! whose size and mtime match the manifest are taken as unchanged (as git's index does); others
//! are hashed.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::{Change, Collector, Diff, EntryKind};
use crate::error::{Error, IoContext, Result};
use crate::hash::hash_reader;
use crate::pathenc::PathJson;
use crate::store::manifest::is_at_or_below;
use crate::store::{Entry, Node};
use crate::sys::beneath::Tree;

/// Diff `cwd` against `base` (flattened entries); paths at or below `skip` are left out. The
/// tree is walked and read through handles beneath `cwd` (`sys::beneath`), so a run that swaps
/// a directory for a symlink makes the diff fail or see the symlink, never what it points at.
pub fn diff(cwd: &Path, base: &[Entry], skip: &[Vec<u8>]) -> Result<Diff> {
    let tree = Tree::open(cwd).at(cwd)?;
    let mut c = Collector::default();
    let by_path: BTreeMap<&[u8], &Entry> = base.iter().map(|e| (e.path.as_slice(), e)).collect();
    let mut seen = HashSet::new();
    let skipped = |rel: &[u8], _: &crate::sys::beneath::Meta| skip.iter().any(|s| is_at_or_below(rel, s));
    let mut failed: Option<Error> = None;
    let walked = tree.walk(&skipped, &mut |found| {
        let rel = found.rel;
        let md = found.meta;
        seen.insert(rel.clone());
        let Some(e) = by_path.get(rel.as_slice()) else {
            c.added(Change::at(&rel, &md));
            return Ok(());
        };
        let (kind_same, mode, content) = match &e.node {
            Node::File { size, hash } => {
                let content = md.is_file()
                    && (md.size != *size
                        || ((md.mtime_sec, md.mtime_nsec) != (e.mtime_sec, e.mtime_nsec) && {
                            let h = tree.open_file(&rel).and_then(hash_reader);
                            match h {
                                Ok(h) => h.0 != *hash,
                                Err(err) => {
                                    failed = Some(Error::io(tree.display(&rel), err));
                                    return Err(std::io::Error::other("unreadable"));
                                }
                            }
                        }));
                (md.is_file(), md.mode != e.mode, content)
            }
            Node::Symlink { target } => {
                let is_link = md.is_symlink();
                (is_link, false, !is_link || found.target.as_deref() != Some(target.as_slice()))
            }
            _ => (md.is_dir(), md.mode != e.mode, false),
        };
        if !kind_same || mode || content {
            let mut ch = Change::at(&rel, &md);
            ch.mode = kind_same && mode;
            ch.content = !kind_same || content;
            c.modified(ch);
        }
        Ok(())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    walked?;
    for e in base {
        if !seen.contains(&e.path) && !skip.iter().any(|s| is_at_or_below(&e.path, s)) {
            let (kind, size) = match &e.node {
                Node::File { size, .. } => (EntryKind::File, Some(*size)),
                Node::Symlink { .. } => (EntryKind::Symlink, None),
                _ => (EntryKind::Dir, None),
            };
            c.deleted(Change { path: PathJson(e.path.clone()), kind, size, content: false, mode: false });
        }
    }
    Ok(c.finish())
}
