//! The diff of a plain tree (a copy root) against the flattened manifest it was made from. Files
//! whose size and mtime match the manifest are taken as unchanged (as git's index does); others
//! are hashed.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{Change, Collector, Diff, EntryKind};
use crate::error::{Error, IoContext, Result};
use crate::hash::hash_reader;
use crate::pathenc::PathJson;
use crate::store::manifest::is_at_or_below;
use crate::store::{Entry, Node};

/// Diff `cwd` against `base` (flattened entries); paths at or below `skip` are left out.
pub fn diff(cwd: &Path, base: &[Entry], skip: &[Vec<u8>]) -> Result<Diff> {
    let mut c = Collector::default();
    let by_path: BTreeMap<&[u8], &Entry> = base.iter().map(|e| (e.path.as_slice(), e)).collect();
    let mut seen = HashSet::new();
    let rel_of = |p: &Path| p.strip_prefix(cwd).map(|r| r.as_os_str().as_bytes().to_vec()).unwrap_or_default();
    let walker = walkdir::WalkDir::new(cwd)
        .into_iter()
        .filter_entry(|e| !skip.iter().any(|s| is_at_or_below(&rel_of(e.path()), s)));
    for item in walker {
        let item = item.map_err(|e| Error::BadInput(format!("{}: {e}", cwd.display())))?;
        let rel = rel_of(item.path());
        let md = std::fs::symlink_metadata(item.path()).at(item.path())?;
        seen.insert(rel.clone());
        let Some(e) = by_path.get(rel.as_slice()) else {
            c.added(Change::at(&rel, &md));
            continue;
        };
        let (kind_same, mode, content) = match &e.node {
            Node::File { size, hash } => {
                let content = md.is_file()
                    && (md.len() != *size
                        || ((md.mtime(), md.mtime_nsec() as u32) != (e.mtime_sec, e.mtime_nsec)
                            && std::fs::File::open(item.path()).and_then(hash_reader).at(item.path())?.0 != *hash));
                (md.is_file(), md.mode() & 0o7777 != e.mode, content)
            }
            Node::Symlink { target } => {
                let is_link = md.file_type().is_symlink();
                let differs = !is_link
                    || std::fs::read_link(item.path()).at(item.path())?.as_os_str().as_bytes() != target.as_slice();
                (is_link, false, differs)
            }
            _ => (md.is_dir(), md.mode() & 0o7777 != e.mode, false),
        };
        if !kind_same || mode || content {
            let mut ch = Change::at(&rel, &md);
            ch.mode = kind_same && mode;
            ch.content = !kind_same || content;
            c.modified(ch);
        }
    }
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
