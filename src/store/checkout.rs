//! Checkout: write a snapshot out as a plain, writable tree, and the flattened view of a stack
//! of layers that it (and the copy backend) writes.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::pathenc::PathJson;
use crate::store::{Entry, Manifest, Node, Store};
use crate::sys::beneath::Tree;

/// What a checkout wrote.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutReport {
    /// The snapshot written.
    pub id: Hash,
    /// Destination directory.
    pub dest: PathJson,
    /// Entries written (root included).
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Bytes of regular files.
    pub bytes: u64,
    /// Files cloned with a reflink (shared extents, no data copied).
    pub reflinked: u64,
    /// Files copied byte for byte.
    pub copied: u64,
    /// Wall time.
    pub elapsed_ms: f64,
}

use crate::store::manifest::canonical_sort_key as sort_key;

/// Apply one layer's entries on top of `view` with overlay semantics.
fn apply_layer(view: &mut BTreeMap<Vec<u8>, Entry>, layer: Vec<Entry>) {
    for e in layer {
        let k = sort_key(&e.path);
        let keeps_children = matches!((&e.node, view.get(&k).map(|x| &x.node)), (Node::Dir, Some(old)) if old.is_dir());
        let drop_descendants = !keeps_children;
        if drop_descendants && !k.is_empty() {
            let mut lo = k.clone();
            lo.push(0);
            let mut hi = k.clone();
            hi.push(1);
            let doomed: Vec<Vec<u8>> = view.range(lo..hi).map(|(k, _)| k.clone()).collect();
            for d in doomed {
                view.remove(&d);
            }
        }
        match e.node {
            Node::Whiteout => {
                view.remove(&k);
            }
            Node::OpaqueDir => {
                view.insert(k, Entry { node: Node::Dir, ..e });
            }
            _ => {
                view.insert(k, e);
            }
        }
    }
}

impl Store {
    /// The complete tree a snapshot presents: for a snapshot with parents, the parents stacked
    /// bottom first with this snapshot's change applied on top. Validated like a base manifest.
    pub fn flatten(&self, id: &Hash) -> Result<Vec<Entry>> {
        let m = self.load_manifest(id)?;
        if m.parents.is_empty() {
            return Ok(m.entries);
        }
        let mut view = BTreeMap::new();
        for p in &m.parents {
            apply_layer(&mut view, self.flatten(p)?);
        }
        apply_layer(&mut view, m.entries);
        Ok(Manifest::new(vec![], view.into_values().collect())?.entries)
    }

    /// The tree a stack of snapshots presents (bottom first), as an overlay root of them shows
    /// it: their layers ([`Store::layer_stack`]) applied bottom first, so that a change layer's
    /// whiteouts delete from every layer below it, earlier snapshots of the stack included (a
    /// provision layer on its base, docs/format.md "Provision layers").
    pub fn flatten_stack(&self, ids: &[Hash]) -> Result<Vec<Entry>> {
        if let [one] = ids {
            return self.flatten(one);
        }
        let mut view = BTreeMap::new();
        for id in self.layer_stack(ids)? {
            apply_layer(&mut view, self.load_manifest(&id)?.entries);
        }
        if view.is_empty() {
            view.insert(Vec::new(), Entry { path: vec![], mode: 0o755, mtime_sec: 0, mtime_nsec: 0, node: Node::Dir });
        }
        Ok(Manifest::new(vec![], view.into_values().collect())?.entries)
    }

    /// Write validated `entries` (a flattened tree) to `dest`, which must be absent (its parent
    /// existing) or an empty directory, and not a symlink ([`Tree::fresh`]). Objects are checked
    /// present first; a `dest` this call created is removed on failure. Returns (reflinked,
    /// copied) file counts.
    pub fn write_entries(&self, entries: &[Entry], dest: &Path) -> Result<(u64, u64)> {
        for e in entries {
            if let Node::File { hash, .. } = &e.node {
                if !self.has_object(hash) {
                    return Err(Error::Corrupt(format!(
                        "object {hash} of {} is missing from the store; run `execroot verify`",
                        crate::store::manifest::show(&e.path)
                    )));
                }
            }
        }
        let (tree, created) = Tree::fresh(dest)?;
        let result = self.write_tree(entries, &tree);
        if result.is_err() && created {
            drop(tree);
            // std's remove_dir_all does not follow symlinks, whatever was swapped in.
            let _ = std::fs::remove_dir_all(dest);
        }
        result
    }

    /// Write snapshot `id` to `dest` (absent, or an empty directory) as ordinary files owned by
    /// the caller, restoring permission bits, symlinks and mtimes. Files are reflinked from
    /// their objects where the filesystem can, else copied; never hardlinked.
    pub fn checkout(&self, id: &Hash, dest: &Path) -> Result<CheckoutReport> {
        let started = Instant::now();
        let entries = self.flatten(id)?;
        let (reflinked, copied) = self.write_entries(&entries, dest)?;
        let (mut files, mut bytes) = (0, 0);
        for e in &entries {
            if let Node::File { size, .. } = e.node {
                files += 1;
                bytes += size;
            }
        }
        Ok(CheckoutReport {
            id: *id,
            dest: PathJson::from(dest),
            entries: entries.len() as u64,
            files,
            bytes,
            reflinked,
            copied,
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// Apply the layers of `ids` ([`Store::layer_stack`], bottom first) onto the existing tree
    /// `dest` as overlayfs would stack them on it: a whiteout removes the path with everything
    /// below it, a file or symlink replaces whatever is there, a directory merges with a
    /// directory and replaces anything else, an opaque directory replaces it whole. The top's
    /// own entry is left as it is. What is written is given to `owner` (files, dirs, symlinks)
    /// when that is not the caller. Every name is resolved beneath `dest`'s handle, never
    /// through a symlink: the tree may belong to another user (a worktree's, provision layers
    /// copied in). Returns (reflinked, copied) file counts.
    pub fn apply_onto(&self, ids: &[Hash], dest: &Path, owner: crate::sys::Owner) -> Result<(u64, u64)> {
        let tree = Tree::open(dest).at(dest)?;
        let chown = owner != crate::sys::Owner::current();
        let (mut reflinked, mut copied) = (0, 0);
        let mut dirs: Vec<Entry> = Vec::new();
        for id in self.layer_stack(ids)? {
            for e in self.load_manifest(&id)?.entries.into_iter().skip(1) {
                let at = tree.display(&e.path);
                let now = tree.lstat(&e.path).at(&at)?;
                let keep_dir = matches!(e.node, Node::Dir) && now.as_ref().is_some_and(|m| m.is_dir());
                if now.is_some() && !keep_dir {
                    tree.remove_all(&e.path).at(&at)?;
                }
                match &e.node {
                    Node::Whiteout => continue,
                    Node::Dir | Node::OpaqueDir => {
                        if !keep_dir {
                            tree.mkdir(&e.path, 0o700).at(&at)?;
                        }
                        dirs.push(e.clone());
                    }
                    Node::File { hash, size } => {
                        if self.write_file_entry(&tree, &e, hash, *size)? {
                            reflinked += 1;
                        } else {
                            copied += 1;
                        }
                    }
                    Node::Symlink { target } => {
                        tree.symlink(&e.path, target).at(&at)?;
                        tree.set_mtime(&e.path, e.mtime_sec, e.mtime_nsec).at(&at)?;
                    }
                }
                if chown {
                    tree.chown(&e.path, owner.uid, owner.gid).at(&at)?;
                }
            }
        }
        for e in dirs.iter().rev() {
            let at = tree.display(&e.path);
            tree.chmod_dir(&e.path, e.mode).at(&at)?;
            tree.set_mtime(&e.path, e.mtime_sec, e.mtime_nsec).at(&at)?;
        }
        Ok((reflinked, copied))
    }

    /// Write the file entry `e` (content `hash`, `size` bytes), which must not exist, into
    /// `tree` with its mode and mtime: reflinked from its object where the filesystem can, else
    /// copied (true when reflinked).
    fn write_file_entry(&self, tree: &Tree, e: &Entry, hash: &Hash, size: u64) -> Result<bool> {
        let at = tree.display(&e.path);
        let src_path = self.object_path(hash);
        let src = std::fs::File::open(&src_path).at(&src_path)?;
        let dst = tree.create_file(&e.path, 0o600).at(&at)?;
        // Any failure (other filesystem, no reflink support) falls back to a copy, of the data
        // extents only: a sparse object stays sparse.
        let reflinked = rustix::fs::ioctl_ficlone(&dst, &src).is_ok();
        if !reflinked {
            crate::sys::sparse::copy(&src, &dst, size).at(&at)?;
        }
        dst.set_permissions(std::fs::Permissions::from_mode(e.mode)).at(&at)?;
        crate::sys::beneath::set_times(&dst, e.mtime_sec, e.mtime_nsec).at(&at)?;
        Ok(reflinked)
    }

    /// Write `entries` into the empty directory `tree`. Every name is created beneath the
    /// tree's handle, never through a symlink, so a user who can write the destination cannot
    /// redirect the checkout by swapping a directory for a symlink while it runs.
    fn write_tree(&self, entries: &[Entry], tree: &Tree) -> Result<(u64, u64)> {
        let at = |e: &Entry| tree.display(&e.path);
        // Directories first, private until their contents are in place.
        for e in entries.iter().skip(1).filter(|e| e.node.is_dir()) {
            tree.mkdir(&e.path, 0o700).at(at(e))?;
        }
        crate::sys::failpoint::hit("checkout.dirs-made");
        let reflinked = AtomicU64::new(0);
        let copied = AtomicU64::new(0);
        entries.par_iter().filter(|e| !e.node.is_dir()).try_for_each(|e| -> Result<()> {
            match &e.node {
                Node::File { hash, size } => {
                    let n = if self.write_file_entry(tree, e, hash, *size)? { &reflinked } else { &copied };
                    n.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Node::Symlink { target } => {
                    tree.symlink(&e.path, target).at(at(e))?;
                    tree.set_mtime(&e.path, e.mtime_sec, e.mtime_nsec).at(at(e))
                }
                _ => Ok(()),
            }
        })?;
        // Directory modes and mtimes last, deepest first: writing inside a directory would
        // change its mtime, and a read-only directory could not be filled.
        for e in entries.iter().rev().filter(|e| e.node.is_dir()) {
            tree.chmod_dir(&e.path, e.mode).at(at(e))?;
            tree.set_mtime(&e.path, e.mtime_sec, e.mtime_nsec).at(at(e))?;
        }
        Ok((reflinked.into_inner(), copied.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(p: &str, node: Node) -> Entry {
        Entry { path: p.as_bytes().to_vec(), mode: 0o755, mtime_sec: 0, mtime_nsec: 0, node }
    }

    #[test]
    fn overlay_semantics() {
        let f = |b: &[u8]| Node::File { size: b.len() as u64, hash: Hash::of(b) };
        let mut view = BTreeMap::new();
        apply_layer(
            &mut view,
            vec![
                e("", Node::Dir),
                e("a", Node::Dir),
                e("a/x", f(b"1")),
                e("b", Node::Dir),
                e("b/y", f(b"2")),
                e("c", f(b"3")),
            ],
        );
        apply_layer(
            &mut view,
            vec![
                e("", Node::Dir),
                e("a", Node::OpaqueDir),
                e("a/z", f(b"4")),
                e("b", Node::Whiteout),
                e("c", Node::Dir),
            ],
        );
        let paths: Vec<String> = view.values().map(|e| String::from_utf8(e.path.clone()).unwrap()).collect();
        assert_eq!(paths, vec!["", "a", "a/z", "c"]);
        assert_eq!(view[&sort_key(b"a")].node, Node::Dir);
    }
}
