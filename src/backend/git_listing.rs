//! The listing of a commit's tree (every blob and every tree, as `git ls-tree -r -t` gives
//! them), which a git-overlay root's index is written from: listed by git, kept with the
//! commit's checkout snapshot, or derived from its parent's kept listing and the change
//! `git diff-tree` reports, and then checked against git's own tree ids.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha1::Digest;

use super::worktree::Ctx;
use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::sys::gitindex::{oid_hex, parse_ls_tree, parse_oid, TreeEntry, TREE_MODE};
use crate::Store;

/// What [`list`] lists: the commit's blobs (every entry that is not a tree) in path order,
/// and its trees, in `git ls-tree` order.
#[derive(Clone)]
pub(super) struct Listed {
    pub(super) blobs: Vec<TreeEntry>,
    pub(super) trees: Vec<TreeEntry>,
}

/// The blobs and trees of `commit` (`git ls-tree -r -t`).
pub(super) fn list(ctx: &Ctx, commit: &str) -> Result<Listed> {
    let out = ctx.check(&ctx.repo, &["ls-tree", "-r", "-t", "-z", "--full-tree", "--end-of-options", commit])?;
    let all = parse_ls_tree(&out).map_err(|e| Error::Corrupt(format!("git ls-tree {commit}: {e}")))?;
    let (trees, blobs) = all.into_iter().partition(|e| e.mode == TREE_MODE);
    Ok(Listed { blobs, trees })
}

/// One path `git diff-tree -r -t` reports between a commit's first parent and the commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Changed {
    /// Path relative to the top of the tree.
    pub(super) path: Vec<u8>,
    /// Its mode in the parent (0: absent there).
    pub(super) src_mode: u32,
    /// Its mode in the commit (0: deleted).
    pub(super) mode: u32,
    /// Its object in the commit (zeros when deleted).
    pub(super) oid: [u8; 20],
}

impl Changed {
    /// Deleted by the commit.
    pub(super) fn deleted(&self) -> bool {
        self.mode == 0
    }

    /// A tree, in the commit or (deleted) in the parent. A path that turns from a file into a
    /// directory is reported twice: a deleted blob and an added tree.
    pub(super) fn is_tree(&self) -> bool {
        self.mode == TREE_MODE || (self.deleted() && self.src_mode == TREE_MODE)
    }
}

/// The records of `git diff-tree -r -t --no-renames -z` (`:SRC_MODE SP DST_MODE SP SRC_OID
/// SP DST_OID SP STATUS NUL PATH NUL`); `None` when one is not such a record (a SHA-256 id, say).
pub(super) fn parse_diff_tree(out: &[u8]) -> Option<Vec<Changed>> {
    let mut fields = out.split(|&b| b == 0);
    let mut v = Vec::new();
    while let Some(meta) = fields.next() {
        if meta.is_empty() {
            break;
        }
        let path = fields.next()?;
        let meta = meta.strip_prefix(b":")?;
        let m: Vec<&[u8]> = meta.split(|&b| b == b' ').collect();
        let [src, dst, _, oid, status] = m[..] else { return None };
        let mode = |f: &[u8]| u32::from_str_radix(std::str::from_utf8(f).ok()?, 8).ok();
        let (src_mode, mode) = (mode(src)?, mode(dst)?);
        let deleted = status.first() == Some(&b'D');
        if deleted != (mode == 0) || path.is_empty() {
            return None;
        }
        v.push(Changed { path: path.to_vec(), src_mode, mode, oid: parse_oid(oid)? });
    }
    Some(v)
}

/// The listing of a commit whose tree is `top`, from its first parent's listing `parent` and
/// the change from parent to commit: `None` unless every tree the change touches (and the
/// top) hashes to the id git gives it, and every path sits in a tree of the listing. Trees the
/// change does not touch are the parent's, with all they hold.
pub(super) fn derive(parent: Listed, change: &[Changed], top: &[u8; 20]) -> Option<Listed> {
    let (mut tree_change, mut blob_change) = (HashSet::new(), HashSet::new());
    for c in change {
        if c.is_tree() { &mut tree_change } else { &mut blob_change }.insert(c.path.as_slice());
    }
    let kept = |set: &HashSet<&[u8]>, e: &TreeEntry| !set.contains(e.path.as_slice());
    let now = |c: &Changed| TreeEntry { path: c.path.clone(), mode: c.mode, oid: c.oid };
    let mut blobs: Vec<TreeEntry> = parent.blobs.into_iter().filter(|e| kept(&blob_change, e)).collect();
    blobs.extend(change.iter().filter(|c| !c.is_tree() && !c.deleted()).map(now));
    blobs.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    let mut trees: Vec<TreeEntry> = parent.trees.into_iter().filter(|e| kept(&tree_change, e)).collect();
    trees.extend(change.iter().filter(|c| c.is_tree() && !c.deleted()).map(now));
    // `git ls-tree` order: a tree sorts as its name and a slash.
    trees.sort_unstable_by(|a, b| a.path.iter().chain(b"/").cmp(b.path.iter().chain(b"/")));
    // The trees to check: the top and each one the change touches, with what they hold now.
    let mut expect: HashMap<&[u8], [u8; 20]> = HashMap::new();
    expect.insert(b"", *top);
    for c in change.iter().filter(|c| c.is_tree() && !c.deleted()) {
        expect.insert(&c.path, c.oid);
    }
    let dirs: HashSet<&[u8]> = trees.iter().map(|t| t.path.as_slice()).collect();
    let mut children: HashMap<&[u8], Vec<&TreeEntry>> = HashMap::new();
    for e in blobs.iter().chain(&trees) {
        let dir = e.path.iter().rposition(|&b| b == b'/').map_or(&e.path[..0], |i| &e.path[..i]);
        if !dir.is_empty() && !dirs.contains(dir) {
            return None;
        }
        if expect.contains_key(dir) {
            children.entry(dir).or_default().push(e);
        }
    }
    for (dir, oid) in &expect {
        if tree_oid(dir, children.get(dir).map_or(&[][..], Vec::as_slice)) != *oid {
            return None;
        }
    }
    Some(Listed { blobs, trees })
}

/// The id of the tree at `dir` whose entries are `entries` (full paths, directly below it):
/// git's tree object, `MODE SP NAME NUL ID` per entry in git's order (a tree's name sorts as
/// if it ended in a slash), hashed with its `tree LEN NUL` header.
fn tree_oid(dir: &[u8], entries: &[&TreeEntry]) -> [u8; 20] {
    let skip = if dir.is_empty() { 0 } else { dir.len() + 1 };
    let name = |e: &TreeEntry| e.path[skip..].to_vec();
    let mut named: Vec<(Vec<u8>, &TreeEntry)> = entries.iter().map(|e| (name(e), *e)).collect();
    let key = |n: &[u8], e: &TreeEntry| {
        let mut k = n.to_vec();
        if e.mode == TREE_MODE {
            k.push(b'/');
        }
        k
    };
    named.sort_by_cached_key(|(n, e)| key(n, e));
    let mut body = Vec::with_capacity(named.len() * 40);
    for (n, e) in &named {
        body.extend_from_slice(format!("{:o} ", e.mode).as_bytes());
        body.extend_from_slice(n);
        body.push(0);
        body.extend_from_slice(&e.oid);
    }
    let mut h = sha1::Sha1::new();
    h.update(format!("tree {}\0", body.len()));
    h.update(&body);
    h.finalize().into()
}

/// Where a checkout snapshot keeps the listing of its commit's tree (docs/format.md,
/// "Checkout cache"): `git ls-tree` of a tree takes tens of milliseconds at 25k entries, and
/// a tree's listing never changes.
pub(super) fn listing_path(store: &Store, snap: &Hash) -> PathBuf {
    store.snapshot_dir(snap).join("git-listing")
}

/// The first line of a kept listing.
const LISTING_MAGIC: &[u8] = b"execroot git listing v1\n";

/// The listing of `tree` kept in the file `path` ([`listing_path`]), if it is there, for that
/// tree, and intact (its BLAKE3 sum checks): what is not is ignored (and written again), since the
/// index's blob ids come from it.
pub(super) fn kept_listing(path: &Path, tree: &str) -> Option<Listed> {
    let all = parse_ls_tree(&kept_body(path, tree)?).ok()?;
    let (trees, blobs) = all.into_iter().partition(|e| e.mode == TREE_MODE);
    Some(Listed { blobs, trees })
}

/// The body of the kept listing of `tree` in the file `path` after its header, if the file is
/// there, for that tree, and intact (its BLAKE3 sum checks).
fn kept_body(path: &Path, tree: &str) -> Option<Vec<u8>> {
    let mut bytes = std::fs::read(path).ok()?;
    let body_len = bytes.len().checked_sub(32)?;
    let (body, sum) = bytes.split_at_checked(body_len)?;
    if Hash::of(body).0 != sum {
        tracing::warn!(path = %path.display(), "the kept git listing is damaged: listing again");
        return None;
    }
    let header = body.strip_prefix(LISTING_MAGIC)?.strip_prefix(tree.as_bytes())?.strip_prefix(b"\n")?;
    let start = body_len - header.len();
    bytes.truncate(body_len);
    bytes.drain(..start);
    Some(bytes)
}

/// A `.gitattributes` file's path: that name, at the top or below a directory.
pub(super) fn is_attributes(path: &[u8]) -> bool {
    path == b".gitattributes" || path.ends_with(b"/.gitattributes")
}

/// The `.gitattributes` files in the kept listing of `tree` (as [`kept_listing`] reads it),
/// found without parsing the other records: a checkout of a commit that changes none of them
/// needs these alone, long before the commit's own listing is derived.
pub(super) fn kept_attributes(path: &Path, tree: &str) -> Option<Vec<TreeEntry>> {
    const NAME: &[u8] = b".gitattributes\0";
    let body = kept_body(path, tree)?;
    let mut found = Vec::new();
    for at in memchr::memmem::find_iter(&body, NAME) {
        // The whole last component of a path: after the record's tab or a slash.
        if !matches!(at.checked_sub(1).map(|i| body[i]), Some(b'\t' | b'/')) {
            continue;
        }
        let start = memchr::memrchr(0, &body[..at]).map_or(0, |i| i + 1);
        let mut record = parse_ls_tree(&body[start..at + NAME.len()]).ok()?;
        // (A name holding a tab, `x\t.gitattributes`, is found above too.)
        found.extend(record.pop().filter(|e| e.mode != TREE_MODE && is_attributes(&e.path)));
    }
    Some(found)
}

/// Keep `listed`, the listing of `tree`, with snapshot `snap` (written aside, then renamed).
/// A cache: failing to keep it costs the next root a `git ls-tree`, nothing else.
pub(super) fn keep_listing(store: &Store, snap: &Hash, tree: &str, listed: &Listed) {
    let mut body = Vec::with_capacity(LISTING_MAGIC.len() + 41 + (listed.blobs.len() + listed.trees.len()) * 100);
    body.extend_from_slice(LISTING_MAGIC);
    body.extend_from_slice(tree.as_bytes());
    body.push(b'\n');
    for e in listed.trees.iter().chain(&listed.blobs) {
        let kind = if e.mode == TREE_MODE { "tree" } else { "blob" };
        body.extend_from_slice(format!("{:06o} {kind} {}\t", e.mode, oid_hex(&e.oid)).as_bytes());
        body.extend_from_slice(&e.path);
        body.push(0);
    }
    let sum = Hash::of(&body);
    body.extend_from_slice(&sum.0);
    let path = listing_path(store, snap);
    let tmp = path.with_file_name(format!(".git-listing-{:016x}", rand::random::<u64>()));
    let r = std::fs::write(&tmp, &body).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!(snapshot = %snap, "could not keep the git listing: {e}");
    }
}

/// Where a create's listing comes from, cheapest first.
pub(super) enum Source {
    /// Listed already (by the plan).
    Listed(Listed),
    /// Kept with the commit's cached checkout, in this file.
    Kept(PathBuf),
    /// Derived ([`derive`]) from the listing of the first parent's checkout (kept in
    /// `parent`, for tree `parent_tree`) and the change from it.
    Derived { parent: PathBuf, parent_tree: String, change: Arc<Vec<Changed>> },
    /// From `git ls-tree`.
    Git,
}

/// The blobs and trees of a commit's tree, read in a thread from the start of a create and
/// joined where first needed: by an incremental ingest (for the `.gitattributes` files), else
/// by the root's index. `None` inside for a repository whose objects are not SHA-1 (git's own
/// read-tree serves those).
pub(super) struct Listing {
    handle: Option<std::thread::JoinHandle<Result<(Listed, bool)>>>,
    tree: Option<Listed>,
    kept: bool,
}

impl Listing {
    /// The listing of `commit` (whose tree is `tree`) from `source`, read in a thread of its own
    /// so that it runs while the worktree is registered and mounted (it writes nothing, so it
    /// holds no lock of the root: see [`Ctx::git`]); `git ls-tree` when the source fails.
    /// Nothing for a repository whose objects are not SHA-1 (`sha1` false).
    pub(super) fn start(ctx: &Ctx, commit: &str, tree: &str, sha1: bool, source: Source) -> Listing {
        if let Source::Listed(l) = source {
            return Listing { handle: None, tree: Some(l), kept: false };
        }
        let (ctx, commit, tree) = (ctx.unheld(), commit.to_string(), tree.to_string());
        let handle = sha1.then(|| {
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let (got, kept) = match source {
                    Source::Kept(path) => (kept_listing(&path, &tree), true),
                    Source::Derived { parent, parent_tree, change } => {
                        let top = parse_oid(tree.as_bytes());
                        let derived =
                            kept_listing(&parent, &parent_tree).zip(top).and_then(|(l, top)| derive(l, &change, &top));
                        if derived.is_none() {
                            tracing::warn!(
                                commit,
                                "the listing derived from the parent's does not check: listing again"
                            );
                        }
                        (derived, false)
                    }
                    Source::Listed(_) | Source::Git => (None, false),
                };
                let got = match got {
                    Some(l) => (l, kept),
                    None => (list(&ctx, &commit)?, false),
                };
                tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, kept, "listing read");
                Ok(got)
            })
        });
        Listing { handle, tree: None, kept: false }
    }

    /// The listing, waiting for it if need be.
    pub(super) fn get(&mut self) -> Result<Option<&Listed>> {
        if let Some(h) = self.handle.take() {
            let (t, kept) =
                h.join().map_err(|_| Error::io(".", std::io::Error::other("the ls-tree thread panicked")))??;
            (self.tree, self.kept) = (Some(t), kept);
        }
        Ok(self.tree.as_ref())
    }

    /// The listing, taken, and whether it was read from a kept file.
    pub(super) fn take(mut self) -> Result<Option<(Listed, bool)>> {
        self.get()?;
        Ok(self.tree.map(|t| (t, self.kept)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kept listing reads back as it was written, and one that names another tree, is cut
    /// short or has a byte changed is not read at all.
    #[test]
    fn a_kept_listing_is_read_only_intact_and_for_its_tree() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path().join("store")).unwrap();
        let snap = store.empty_snapshot().unwrap();
        let e = |p: &str, mode: u32, b: u8| TreeEntry { path: p.as_bytes().to_vec(), mode, oid: [b; 20] };
        let listed = Listed {
            blobs: vec![e("a.txt", 0o100644, 1), e("dir/run", 0o100755, 2), e("dir/link", 0o120000, 3)],
            trees: vec![e("dir", TREE_MODE, 4)],
        };
        let tree = "ab".repeat(20);
        keep_listing(&store, &snap, &tree, &listed);
        let path = listing_path(&store, &snap);
        let back = kept_listing(&path, &tree).expect("read back");
        assert_eq!((back.blobs, back.trees), (listed.blobs.clone(), listed.trees.clone()));
        assert!(kept_listing(&path, &"cd".repeat(20)).is_none(), "read for another tree");
        let bytes = std::fs::read(&path).unwrap();
        for bad in [bytes[..bytes.len() - 1].to_vec(), {
            let mut b = bytes.clone();
            b[LISTING_MAGIC.len() + 45] ^= 1;
            b
        }] {
            std::fs::write(&path, bad).unwrap();
            assert!(kept_listing(&path, &tree).is_none(), "a damaged listing was read");
            assert!(kept_attributes(&path, &tree).is_none(), "a damaged listing was read");
        }
    }

    fn git(dir: &Path, args: &[&str]) -> Vec<u8> {
        let o = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@e"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    }

    fn ls_tree(dir: &Path, rev: &str) -> Listed {
        let all = parse_ls_tree(&git(dir, &["ls-tree", "-r", "-t", "-z", "--full-tree", rev])).unwrap();
        let (trees, blobs) = all.into_iter().partition(|e| e.mode == TREE_MODE);
        Listed { blobs, trees }
    }

    /// A listing derived from the parent's and `git diff-tree` is `git ls-tree`'s, entry for
    /// entry and in its order, across every kind of change; a change that is not the commit's
    /// (a record dropped, or the object of one not deleted altered) derives nothing.
    #[test]
    fn a_derived_listing_is_git_ls_tree_or_nothing() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        git(r, &["init", "-q", "-b", "main"]);
        let write = |p: &str, c: &str| {
            let p = r.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        };
        for p in [
            ".gitattributes",
            "a",
            "a-b",
            "a0",
            "dir/x",
            "dir/.gitattributes",
            "dir/sub/y",
            "dir/sub/deep/z",
            "gone/g/h",
            "f2d",
            "keep/k",
            "keep/not.gitattributes",
            "keep/tab\t.gitattributes",
            "d2f/q",
        ] {
            write(p, p);
        }
        git(r, &["add", "-A"]);
        git(r, &["commit", "-qm", "parent"]);
        // Modified, added in new directories, deleted (a whole nested directory too), a file
        // turned directory and a directory turned file, a symlink, an executable bit.
        write("dir/sub/y", "changed");
        write("dir/new/n1", "n1");
        write("new/top/t", "t");
        std::fs::remove_dir_all(r.join("gone")).unwrap();
        std::fs::remove_file(r.join("f2d")).unwrap();
        write("f2d/inside", "i");
        std::fs::remove_dir_all(r.join("d2f")).unwrap();
        write("d2f", "now a file");
        std::os::unix::fs::symlink("a", r.join("dir/link")).unwrap();
        std::fs::set_permissions(r.join("a0"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        git(r, &["add", "-A"]);
        git(r, &["commit", "-qm", "child"]);
        let out = git(r, &["diff-tree", "-r", "-t", "--no-renames", "-z", "HEAD^", "HEAD"]);
        let change = parse_diff_tree(&out).unwrap();
        let top =
            parse_oid(String::from_utf8(git(r, &["rev-parse", "HEAD^{tree}"])).unwrap().trim().as_bytes()).unwrap();
        let want = ls_tree(r, "HEAD");
        let got = derive(ls_tree(r, "HEAD^"), &change, &top).expect("derived");
        // The `.gitattributes` files of a kept listing, read alone, are the listing's.
        let store = Store::open(d.path().join("store")).unwrap();
        let snap = store.empty_snapshot().unwrap();
        let tree = String::from_utf8(git(r, &["rev-parse", "HEAD^{tree}"])).unwrap().trim().to_string();
        keep_listing(&store, &snap, &tree, &want);
        let attrs: Vec<TreeEntry> = want.blobs.iter().filter(|e| is_attributes(&e.path)).cloned().collect();
        let names: Vec<&[u8]> = attrs.iter().map(|e| &e.path[..]).collect();
        assert_eq!(names, [&b".gitattributes"[..], b"dir/.gitattributes"]);
        assert_eq!(kept_attributes(&listing_path(&store, &snap), &tree).unwrap(), attrs);
        assert_eq!(got.blobs, want.blobs);
        assert_eq!(got.trees, want.trees);
        for i in 0..change.len() {
            let mut less = change.clone();
            less.remove(i);
            assert!(derive(ls_tree(r, "HEAD^"), &less, &top).is_none(), "derived without {:?}", change[i]);
            if change[i].deleted() {
                continue;
            }
            let mut other = change.clone();
            other[i].oid[0] ^= 1;
            assert!(derive(ls_tree(r, "HEAD^"), &other, &top).is_none(), "derived with {:?} altered", other[i]);
        }
    }
}
