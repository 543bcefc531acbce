//! The diff of an overlay root, read from its upper directory: the cost follows the size of the
//! change, not of the base.
//!
//! Each path the upper directory touches is compared between the merged view (the mounted root)
//! and the lower view (the layers, honouring their whiteouts and opaque directories). A
//! whiteout is a deletion; an opaque or redirected (renamed) directory hides the lower
//! directory's children, which are deleted unless present again, and everything the merged view
//! shows below it is compared too, so a renamed lower directory is a deletion at the old path and
//! an addition of everything under the new one. A copied-up file whose content and mode did not
//! change is not modified.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{Change, Collector, Diff};
use crate::error::{Error, IoContext, Result};
use crate::hash::hash_reader;
use crate::store::manifest::is_at_or_below;
use crate::sys::beneath::{Meta, Tree};
use crate::sys::xattr;

/// overlayfs marks a directory that hides the lower directories below it with this attribute.
pub const OPAQUE: &str = "trusted.overlay.opaque";
/// overlayfs records where a renamed (redirected) directory came from in this attribute.
pub const REDIRECT: &str = "trusted.overlay.redirect";

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

/// `lstat` of a layer path (the store's own), with absence (`ENOENT`, or `ENOTDIR` for a path
/// below a non-directory) as `None` and every other failure an error: a diff that skipped what
/// it cannot read would make a commit silently lose it.
fn lstat(p: &Path) -> Result<Option<Meta>> {
    match Meta::of_path(p) {
        Ok(md) => Ok(Some(md)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
        Err(e) => Err(Error::io(p, e)),
    }
}

/// `lstat` beneath a tree someone else can change (the merged view, the upper directory).
fn lstat_in(t: &Tree, rel: &[u8]) -> Result<Option<Meta>> {
    t.lstat(rel).at(t.display(rel))
}

fn names_in(t: &Tree, rel: &[u8]) -> Result<Vec<Vec<u8>>> {
    t.names(rel).at(t.display(rel))
}

fn same_file_content(merged: &Tree, rel: &[u8], lower: &Path) -> Result<bool> {
    let p = merged.display(rel);
    let ha = merged.open_file(rel).and_then(hash_reader).at(&p)?;
    let hb = std::fs::File::open(lower).and_then(hash_reader).at(lower)?;
    Ok(ha == hb)
}

/// The lower view of an overlay: its layer directories, top first.
pub struct Lower {
    /// Layer directories, top first (overlayfs order).
    pub layers: Vec<PathBuf>,
}

impl Lower {
    /// The lower entry at `rel`, honouring whiteouts and opaque directories of upper layers.
    pub fn lookup(&self, rel: &[u8]) -> Result<Option<(PathBuf, Meta)>> {
        for layer in &self.layers {
            let p = join(layer, rel);
            if let Some(md) = lstat(&p)? {
                return Ok(if md.is_whiteout() { None } else { Some((p, md)) });
            }
            // Absent here: an ancestor in this layer may hide the layers below.
            let mut chain = Vec::new();
            let mut anc: &[u8] = rel;
            while let Some(i) = anc.iter().rposition(|&c| c == b'/') {
                anc = &anc[..i];
                chain.push(anc);
            }
            for a in chain.into_iter().rev() {
                let ap = join(layer, a);
                match lstat(&ap)? {
                    None => break,
                    Some(md) if !md.is_dir() => return Ok(None),
                    Some(_) if xattr::is(&ap, OPAQUE, b"y")? => return Ok(None),
                    Some(_) => {}
                }
            }
        }
        Ok(None)
    }

    /// Names of the lower directory `rel`'s children.
    pub fn children(&self, rel: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for layer in &self.layers {
            let p = join(layer, rel);
            let Some(md) = lstat(&p)? else { continue };
            if !md.is_dir() {
                break;
            }
            for e in std::fs::read_dir(&p).at(&p)? {
                let e = e.at(&p)?;
                let name = e.file_name().as_bytes().to_vec();
                if !seen.insert(name.clone()) {
                    continue;
                }
                let md = Meta::of_path(&e.path()).at(e.path())?;
                if !md.is_whiteout() {
                    out.push(name);
                }
            }
            if xattr::is(&p, OPAQUE, b"y")? {
                break;
            }
        }
        Ok(out)
    }

    /// Report `rel` and everything below it in the lower view as deleted.
    fn delete_tree(&self, rel: &[u8], c: &mut Collector) -> Result<()> {
        let Some((_, md)) = self.lookup(rel)? else { return Ok(()) };
        c.deleted(Change::at(rel, &md));
        if md.is_dir() {
            for name in self.children(rel)? {
                self.delete_tree(&child(rel, &name), c)?;
            }
        }
        Ok(())
    }
}

/// Diff of an overlay root: `upper` its upper directory, `merged` the mounted root, `lower` its
/// layers; paths at or below `skip` (the `--mount` subdirectories) are not part of it. The upper
/// directory and the merged view are read through handles opened once here (`sys::beneath`):
/// a run that swaps a directory for a symlink while it is diffed makes the diff fail or see the
/// symlink, never what it points at.
pub fn diff(upper: &Path, merged: &Path, lower: &Lower, skip: &[Vec<u8>]) -> Result<Diff> {
    let upper = Tree::open(upper).at(upper)?;
    let merged = Tree::open(merged).at(merged)?;
    let mut c = Collector::default();
    // (relative path, whether the whole merged subtree must be compared)
    let mut todo: Vec<(Vec<u8>, bool)> = vec![(Vec::new(), false)];
    while let Some((rel, deep)) = todo.pop() {
        if skip.iter().any(|s| is_at_or_below(&rel, s)) {
            continue;
        }
        let now = lstat_in(&merged, &rel)?;
        let base = lower.lookup(&rel)?;
        let lp = base.as_ref().map(|(p, _)| p.clone());
        c.compare(
            &rel,
            now.as_ref(),
            base.as_ref().map(|(_, m)| m),
            &|| same_file_content(&merged, &rel, lp.as_ref().expect("base exists")),
            &|| {
                let l = lp.as_ref().expect("base exists");
                let now = merged.read_link(&rel).at(merged.display(&rel))?;
                Ok(now.as_slice() == std::fs::read_link(l).at(l)?.as_os_str().as_bytes())
            },
        )?;
        // The worst moment for a swap: seen as a directory, not yet listed.
        crate::sys::failpoint::hit("diff.compared");
        let Some(now) = now else {
            if base.is_some() {
                lower.delete_tree(&rel, &mut c)?;
            }
            continue;
        };
        let base_is_dir = base.as_ref().is_some_and(|(_, m)| m.is_dir());
        if !now.is_dir() {
            if base_is_dir {
                for name in lower.children(&rel)? {
                    lower.delete_tree(&child(&rel, &name), &mut c)?;
                }
            }
            continue;
        }
        let up_is_dir = lstat_in(&upper, &rel)?.is_some_and(|m| m.is_dir());
        let up_attr = |name: &str| upper.dir_xattr(&rel, name).at(upper.display(&rel));
        let hides_lower = up_is_dir && (up_attr(OPAQUE)?.as_deref() == Some(b"y") || up_attr(REDIRECT)?.is_some());
        let deep = deep || hides_lower || !base_is_dir;
        // Which children to visit: all merged children for a deep directory, else only those
        // the upper directory holds (whiteouts included).
        let visit = if deep {
            names_in(&merged, &rel)?
        } else if up_is_dir {
            names_in(&upper, &rel)?
        } else {
            Vec::new()
        };
        if hides_lower || (base_is_dir && deep) {
            for name in lower.children(&rel)? {
                let p = child(&rel, &name);
                if lstat_in(&merged, &p)?.is_none() {
                    lower.delete_tree(&p, &mut c)?;
                }
            }
        }
        for name in visit {
            todo.push((child(&rel, &name), deep));
        }
    }
    // Deletions found through the lower view (a removed or renamed ancestor) reach below the
    // skipped subdirectories too: they are not part of the root's own tree either.
    let mut d = c.finish();
    for list in [&mut d.added, &mut d.modified, &mut d.deleted] {
        list.retain(|ch| !skip.iter().any(|s| is_at_or_below(&ch.path.0, s)));
    }
    Ok(d)
}
