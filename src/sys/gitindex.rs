//! Writing a git index (version 2, SHA-1 repositories) from blob ids and stat data, so that a
//! working tree whose contents are known to be a commit's checkout gets a clean `git status`
//! without git re-hashing every file.
//!
//! Format (git's `Documentation/gitformat-index.txt`): `DIRC`, version 2, the entry count;
//! entries sorted by path bytes, each 62 bytes of stat data, mode, id and flags, then the path
//! and 1 to 8 NULs padding the entry to a multiple of 8; then, when the commit's trees are
//! known, the cache-tree extension (`TREE`); the SHA-1 of all that.
//!
//! The cache-tree is what lets git compare the index with `HEAD` without reading a tree object
//! (a fresh root's first `git status` otherwise reads every tree of the commit), and what
//! `git commit` reuses for every directory it did not touch. git trusts it blindly, so it is
//! written only from the commit's own tree ids, for an index that holds exactly that commit's
//! blobs, and not at all when the listing is not a whole tree.

use sha1::Digest;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags};

/// Stat data as git records it (`ce_stat_data`: each field's low 32 bits), in an index entry
/// and in the untracked cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatData {
    /// ctime seconds, nanoseconds.
    pub ctime: (u32, u32),
    /// mtime seconds, nanoseconds.
    pub mtime: (u32, u32),
    /// Device.
    pub dev: u32,
    /// Inode number.
    pub ino: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (of the file in the working tree, after any conversion).
    pub size: u32,
}

impl StatData {
    /// The stat data of `st`.
    pub fn of(st: &rustix::fs::Stat) -> StatData {
        StatData {
            ctime: (st.st_ctime as u32, st.st_ctime_nsec as u32),
            mtime: (st.st_mtime as u32, st.st_mtime_nsec as u32),
            dev: st.st_dev as u32,
            ino: st.st_ino as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u32,
        }
    }
}

/// One entry of a git index (version 2, stage 0).
#[derive(Clone, Debug)]
pub struct IndexEntry {
    /// Path relative to the top of the working tree (raw bytes, `/`-separated).
    pub path: Vec<u8>,
    /// Git's mode: `0o100644`, `0o100755` or `0o120000`.
    pub mode: u32,
    /// The blob id (SHA-1).
    pub oid: [u8; 20],
    /// The file's stat data in the working tree; all zero for none (git then compares the
    /// content).
    pub stat: StatData,
}

impl IndexEntry {
    /// An entry for `path` with blob `oid` and git mode `mode`, its stat data from `st` (the
    /// lstat of the file in the working tree).
    pub fn new(path: Vec<u8>, mode: u32, oid: [u8; 20], st: &rustix::fs::Stat) -> IndexEntry {
        IndexEntry { path, mode, oid, stat: StatData::of(st) }
    }

    /// An entry for a tree's blob without stat data: git takes the file as changed until it
    /// looks (for an index that only serves `git checkout-index`).
    pub fn unstat(e: &TreeEntry) -> IndexEntry {
        IndexEntry { path: e.path.clone(), mode: e.mode, oid: e.oid, stat: StatData::default() }
    }
}

/// One blob of a tree, as `git ls-tree -r` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// Path relative to the top of the tree.
    pub path: Vec<u8>,
    /// Git's mode: `0o100644`, `0o100755`, `0o120000` (or `0o160000` for a gitlink).
    pub mode: u32,
    /// The object id (SHA-1).
    pub oid: [u8; 20],
}

/// The entries of `git ls-tree -r -z --full-tree` output (`<mode> SP <type> SP <oid> TAB
/// <path> NUL`), in its order; `Err` names the first record that is not such a line.
pub fn parse_ls_tree(out: &[u8]) -> std::result::Result<Vec<TreeEntry>, String> {
    // Read at every warm create (a kept listing, 25k records): memchr for each separator, no
    // allocation but each path's.
    let mut entries = Vec::with_capacity(out.len() / 80);
    let mut start = 0;
    while start < out.len() {
        let end = memchr::memchr(0, &out[start..]).map_or(out.len(), |i| start + i);
        let rec = &out[start..end];
        start = end + 1;
        if rec.is_empty() {
            continue;
        }
        let bad = || format!("unexpected line {:?}", String::from_utf8_lossy(rec));
        let tab = memchr::memchr(b'\t', rec).ok_or_else(bad)?;
        let meta = &rec[..tab];
        let digits = &meta[..memchr::memchr(b' ', meta).ok_or_else(bad)?];
        if digits.is_empty() || digits.len() > 7 || !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
            return Err(bad());
        }
        let mode = digits.iter().fold(0, |m, &d| m * 8 + u32::from(d - b'0'));
        // "<mode> SP <type> SP <oid>": the id is what follows the last space.
        let oid = &meta[memchr::memrchr(b' ', meta).ok_or_else(bad)? + 1..];
        entries.push(TreeEntry { path: rec[tab + 1..].to_vec(), mode, oid: parse_oid(oid).ok_or_else(bad)? });
    }
    Ok(entries)
}

/// Index entries for `tree` (in `git ls-tree -r` order, that is each directory's entries
/// together), their stat data from `lstat` of each path beneath the directory `top`.
///
/// This is the cost of a root's index (tens of thousands of files through an overlay), so:
/// each name is looked up relative to a handle of its directory (opened once, `O_NOFOLLOW`
/// at every step, so no symlink in the tree is followed), not by its full path, and the
/// entries are split between a few threads. An entry that cannot be stat-ed is an error
/// naming its path.
pub fn stat_entries(top: &Path, tree: &[TreeEntry]) -> std::io::Result<Vec<IndexEntry>> {
    Ok(stat_entries_and_dirs(top, tree)?.0)
}

/// [`stat_entries`], and the stat data of every directory it went through on the way (`top`
/// as the empty path): the handle it opens for each one is all it takes, where a second walk
/// to each directory would cost as much again as the files' lookups through an overlay.
pub fn stat_entries_and_dirs(top: &Path, tree: &[TreeEntry]) -> std::io::Result<(Vec<IndexEntry>, DirStats)> {
    stat_entries_in_layers(top, &[top], tree)
}

/// [`stat_entries_and_dirs`] of the overlay mounted at `top`, read from its lower directories
/// `layers` (top first, as `lowerdir=` lists them) instead of through it: each entry from the
/// first layer that has it, each directory likewise, the top directory from `top` itself.
///
/// An overlay whose layers are all on one filesystem shows a lower file's or directory's own
/// stat data but for the device number (which git does not compare), and its first lookup of
/// each name costs far more than a lookup in the layer, whose dentries every root shares. The
/// layers must hold exactly what the overlay shows at these paths (nothing above them: an
/// upper that changed a path would be missed).
pub fn stat_entries_in_layers<P: AsRef<Path>>(
    top: &Path,
    layers: &[P],
    tree: &[TreeEntry],
) -> std::io::Result<(Vec<IndexEntry>, DirStats)> {
    let Some((bottom, above)) = layers.split_last() else { return stat_entries_and_dirs(top, tree) };
    // The layers above the bottom one (a commit's change over its parent's checkout: a few
    // paths) are walked whole, topmost first, rather than asked for every entry; the bottom
    // one is asked for the rest.
    let mut over = DirStats::new();
    for layer in above {
        let t = crate::sys::beneath::Tree::open(layer.as_ref())?;
        let mut todo = vec![Vec::new()];
        while let Some(dir) = todo.pop() {
            for (name, st) in t.stat_entries(&dir)? {
                let rel = if dir.is_empty() { name } else { [&dir[..], b"/", &name].concat() };
                if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
                    todo.push(rel.clone());
                }
                over.entry(rel).or_insert(st);
            }
        }
    }
    let pending: Vec<usize> = (0..tree.len()).filter(|&k| !over.contains_key(&tree[k].path)).collect();
    let (got, seen) = stat_pass(bottom.as_ref(), tree, &pending)?;
    let mut found: Vec<Option<IndexEntry>> = vec![None; tree.len()];
    for (k, e) in pending.into_iter().zip(got) {
        found[k] = Some(e);
    }
    for (k, e) in tree.iter().enumerate() {
        if let Some(st) = over.get(&e.path) {
            found[k] = Some(IndexEntry::new(e.path.clone(), e.mode, e.oid, st));
        }
    }
    // A directory in several layers shows the topmost one's data.
    let mut dirs: DirStats = over
        .into_iter()
        .filter(|(_, st)| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory)
        .collect();
    for (d, st) in seen {
        dirs.entry(d).or_insert(st);
    }
    let top_fd = rustix::fs::open(top, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    dirs.insert(Vec::new(), rustix::fs::fstat(&top_fd)?);
    // Every entry was found: the bottom layer's pass fails on any other.
    Ok((found.into_iter().flatten().collect(), dirs))
}

/// lstat of the entries `which` of `tree` beneath `top`, split between a few threads; an
/// entry absent there is an error naming it.
fn stat_pass(top: &Path, tree: &[TreeEntry], which: &[usize]) -> std::io::Result<(Vec<IndexEntry>, DirStats)> {
    let top_fd = rustix::fs::open(top, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 4);
    let per = which.len().div_ceil(threads).max(1);
    let parts: Vec<std::io::Result<(Vec<IndexEntry>, DirStats)>> = std::thread::scope(|s| {
        let handles: Vec<_> =
            which.chunks(per).map(|chunk| s.spawn(|| stat_chunk(top, top_fd.as_fd(), tree, chunk))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("lstat thread panicked"))))
            .collect()
    });
    let mut out = Vec::with_capacity(which.len());
    let mut dirs = DirStats::new();
    for p in parts {
        let (entries, seen) = p?;
        out.extend(entries);
        // A directory split between two runs was opened by both; either's data will do.
        for (d, st) in seen {
            dirs.entry(d).or_insert(st);
        }
    }
    Ok((out, dirs))
}

/// The stat data of directories by path relative to the top (the top's is empty).
pub type DirStats = std::collections::HashMap<Vec<u8>, rustix::fs::Stat>;

/// [`stat_pass`] of one run of entries, keeping the handles of the directories on the way
/// to the current one (a stack: the entries come directory by directory, depth first).
fn stat_chunk(
    top: &Path,
    top_fd: BorrowedFd<'_>,
    tree: &[TreeEntry],
    which: &[usize],
) -> std::io::Result<(Vec<IndexEntry>, DirStats)> {
    let mut stack: Vec<(Vec<u8>, OwnedFd)> = Vec::new();
    let mut out = Vec::with_capacity(which.len());
    let mut dirs = DirStats::new();
    let err = |rel: &[u8], e: rustix::io::Errno| {
        std::io::Error::new(
            std::io::Error::from(e).kind(),
            format!("{}: {e}", top.join(OsStr::from_bytes(rel)).display()),
        )
    };
    let below = |p: &[u8], d: &[u8]| p == d || (p.starts_with(d) && p.get(d.len()) == Some(&b'/'));
    for &k in which {
        let e = &tree[k];
        let (dir, name) = match e.path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&e.path[..i], &e.path[i + 1..]),
            None => (&e.path[..0], &e.path[..]),
        };
        // Keep the handles of the directories that hold this one; open the rest below them.
        while let Some((d, _)) = stack.last() {
            if below(dir, d) {
                break;
            }
            stack.pop();
        }
        let mut have = stack.last().map(|(d, _)| d.len()).unwrap_or(0);
        while have < dir.len() {
            let start = if stack.is_empty() { 0 } else { have + 1 };
            let end = dir[start..].iter().position(|&b| b == b'/').map(|i| start + i).unwrap_or(dir.len());
            let at = stack.last().map(|(_, f)| f.as_fd()).unwrap_or(top_fd);
            let fd = rustix::fs::openat(
                at,
                OsStr::from_bytes(&dir[start..end]),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|x| err(&dir[..end], x))?;
            dirs.insert(dir[..end].to_vec(), rustix::fs::fstat(&fd).map_err(|x| err(&dir[..end], x))?);
            stack.push((dir[..end].to_vec(), fd));
            have = end;
        }
        let at = stack.last().map(|(_, f)| f.as_fd()).unwrap_or(top_fd);
        let st =
            rustix::fs::statat(at, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW).map_err(|x| err(&e.path, x))?;
        out.push(IndexEntry::new(e.path.clone(), e.mode, e.oid, &st));
    }
    Ok((out, dirs))
}

/// Git's mode of a tree in `git ls-tree` output.
pub const TREE_MODE: u32 = 0o40000;

/// The trees of the commit whose blobs an index holds exactly: its top tree's id and every
/// subtree, as `git ls-tree -r -t` lists them (entries of mode [`TREE_MODE`]).
#[derive(Clone, Copy, Debug)]
pub struct Trees<'a> {
    /// The commit's tree.
    pub top: [u8; 20],
    /// Every tree below it.
    pub subtrees: &'a [TreeEntry],
}

/// The cache-tree extension's payload for the sorted `entries`, which must be exactly the
/// blobs of the trees `trees`; `None` when they cannot be (a subtree without a parent listed,
/// or one that covers no entry: git would not write such a tree, so the listing is not what
/// it seems and git is left to compute the cache-tree itself).
///
/// Each tree, top first then depth first: its name relative to its parent (the top's is
/// empty), NUL, the number of index entries below it in ASCII decimal, a space, the number of
/// its subtrees, LF, its 20-byte id. Subtrees in git's own order (shorter names first, then by
/// bytes), so that the bytes are those `git read-tree` writes.
fn cache_tree(entries: &[IndexEntry], trees: Trees<'_>) -> Option<Vec<u8>> {
    use std::collections::HashMap;
    let mut children: HashMap<&[u8], Vec<&TreeEntry>> = HashMap::new();
    let known: std::collections::HashSet<&[u8]> = trees.subtrees.iter().map(|t| &t.path[..]).collect();
    for t in trees.subtrees {
        let parent = match t.path.iter().rposition(|&b| b == b'/') {
            Some(i) => &t.path[..i],
            None => &t.path[..0],
        };
        if !parent.is_empty() && !known.contains(parent) {
            return None;
        }
        children.entry(parent).or_default().push(t);
    }
    // The entries below directory `dir`: a contiguous run of the sorted paths (those that start
    // with `dir/`; `dir-x` sorts before them, `dir0` after).
    let below = |dir: &[u8]| {
        let prefix = [dir, b"/"].concat();
        let start = entries.partition_point(|e| e.path < prefix);
        entries[start..].partition_point(|e| e.path.starts_with(&prefix))
    };
    let mut out = Vec::new();
    // (path, name, id), depth first with an explicit stack: trees nest as deep as paths do.
    let mut stack: Vec<(&[u8], &[u8], [u8; 20])> = vec![(&[], &[], trees.top)];
    while let Some((path, name, oid)) = stack.pop() {
        let count = if path.is_empty() { entries.len() } else { below(path) };
        if count == 0 {
            return None;
        }
        let mut subs = children.get(path).cloned().unwrap_or_default();
        subs.sort_by(|a, b| {
            let (x, y) = (base(&a.path), base(&b.path));
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        });
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(format!("{count} {}\n", subs.len()).as_bytes());
        out.extend_from_slice(&oid);
        // Pushed in reverse: popped in order.
        for t in subs.iter().rev() {
            stack.push((&t.path, base(&t.path), t.oid));
        }
    }
    Some(out)
}

/// The last component of `path`.
fn base(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// The index file's bytes for `entries` (sorted here; stage 0 only, no duplicates expected),
/// with a cache-tree extension when `trees` are the trees whose blobs `entries` are, then
/// `extensions` in order (signature and payload: the untracked cache of
/// [`crate::sys::gituntracked`], the fsmonitor's of [`crate::sys::gitfsmonitor`]).
pub fn encode(mut entries: Vec<IndexEntry>, trees: Option<Trees<'_>>, extensions: &[(&[u8; 4], &[u8])]) -> Vec<u8> {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = Vec::with_capacity(12 + entries.len() * 96 + 20);
    out.extend_from_slice(b"DIRC");
    out.extend_from_slice(&2u32.to_be_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for e in &entries {
        let start = out.len();
        let st = &e.stat;
        for v in [st.ctime.0, st.ctime.1, st.mtime.0, st.mtime.1, st.dev, st.ino, e.mode, st.uid, st.gid, st.size] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&e.oid);
        // Flags: no assume-valid, no extended flags, stage 0, the name's length (0xFFF: longer).
        let flags = e.path.len().min(0xFFF) as u16;
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&e.path);
        let len = out.len() - start;
        let padded = (len + 8) & !7;
        out.resize(start + padded, 0);
    }
    if let Some(ext) = trees.and_then(|t| cache_tree(&entries, t)) {
        out.extend_from_slice(b"TREE");
        out.extend_from_slice(&(ext.len() as u32).to_be_bytes());
        out.extend_from_slice(&ext);
    }
    for (sig, ext) in extensions {
        out.extend_from_slice(&sig[..]);
        out.extend_from_slice(&(ext.len() as u32).to_be_bytes());
        out.extend_from_slice(ext);
    }
    // SHA-1 with the CPU's SHA extensions where it has them: an index is megabytes.
    let sum: [u8; 20] = sha1::Sha1::digest(&out).into();
    out.extend_from_slice(&sum);
    out
}

/// The SHA-1 id git gives a blob holding `data` (`git hash-object`, no filters).
pub fn blob_oid(data: &[u8]) -> [u8; 20] {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", data.len()));
    h.update(data);
    h.finalize().into()
}

/// The 40 lowercase hex digits of object id `oid`, as git prints it.
pub fn oid_hex(oid: &[u8; 20]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(40);
    for b in oid {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// A hexadecimal SHA-1 object id as bytes; `None` unless it is 40 hex digits.
pub fn parse_oid(hex: &[u8]) -> Option<[u8; 20]> {
    if hex.len() != 40 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut oid = [0u8; 20];
    for (o, pair) in oid.iter_mut().zip(hex.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(oid)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    pub(crate) fn git(dir: &std::path::Path, args: &[&str]) -> String {
        let o = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@e", "-c", "safe.directory=*"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// An index written here for a checked-out tree is one git reads as up to date, without
    /// refreshing (`git diff-files` compares stat data only).
    #[test]
    fn git_reads_it_as_clean() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::write(r.join("a/b/c.txt"), "c\n").unwrap();
        std::fs::write(r.join("a.b"), "dot\n").unwrap();
        // A long path (the flags hold lengths up to 0xFFF; PATH_MAX keeps a test below it).
        let deep: std::path::PathBuf = (0..12).map(|i| format!("{i}{}", "d".repeat(240))).collect();
        std::fs::create_dir_all(r.join(&deep)).unwrap();
        std::fs::write(r.join(&deep).join("f"), "long path\n").unwrap();
        std::fs::write(r.join("x.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(r.join("x.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("a/b/c.txt", r.join("link")).unwrap();
        git(r, &["init", "-q"]);
        git(r, &["add", "-A"]);
        git(r, &["commit", "-qm", "x"]);
        let tree = git(r, &["ls-tree", "-r", "-z", "--full-tree", "HEAD"]);
        std::fs::remove_file(r.join(".git/index")).unwrap();
        let tree = parse_ls_tree(tree.as_bytes()).unwrap();
        assert_eq!(tree.len(), 5);
        let entries = stat_entries(r, &tree).unwrap();
        std::fs::write(r.join(".git/index"), encode(entries, None, &[])).unwrap();
        assert_eq!(git(r, &["diff-files", "--name-only"]), "", "stat data not as git would record it");
        assert_eq!(git(r, &["diff-index", "--cached", "--name-only", "HEAD"]), "");
        assert_eq!(git(r, &["status", "--porcelain"]), "");
    }

    /// The extension named `sig` of the index file `bytes`, if it has one.
    pub(crate) fn extension(bytes: &[u8], sig: &[u8]) -> Option<Vec<u8>> {
        let n = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
        let mut at = 12;
        for _ in 0..n {
            let name_len = bytes[at + 62..].iter().position(|&b| b == 0).unwrap();
            at += (62 + name_len + 8) & !7;
        }
        while at + 8 <= bytes.len() - 20 {
            let size = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            if &bytes[at..at + 4] == sig {
                return Some(bytes[at + 8..at + 8 + size].to_vec());
            }
            at += 8 + size;
        }
        None
    }

    /// The cache-tree written here is byte for byte the one `git read-tree` writes for the same
    /// commit (nested trees, names of different lengths, a sibling `a-b` that sorts between
    /// `a` and `a/`), `git write-tree` reproduces the commit's tree from it, and a commit made
    /// on top of it after a change has the tree a fresh index would give.
    #[test]
    fn cache_tree_is_gits_own() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for f in ["a/b/c.txt", "a/bb/d", "a/z", "a-b", "a0/e", "zz/y/x/w", "top"] {
            std::fs::create_dir_all(r.join(f).parent().unwrap()).unwrap();
            std::fs::write(r.join(f), f).unwrap();
        }
        git(r, &["init", "-q"]);
        git(r, &["add", "-A"]);
        git(r, &["commit", "-qm", "x"]);
        let out = Command::new("git")
            .arg("-C")
            .arg(r)
            .env("GIT_INDEX_FILE", r.join(".git/index.git"))
            .args(["read-tree", "HEAD"])
            .status()
            .unwrap();
        assert!(out.success());
        let theirs = extension(&std::fs::read(r.join(".git/index.git")).unwrap(), b"TREE").expect("git wrote a TREE");
        let all = parse_ls_tree(git(r, &["ls-tree", "-r", "-t", "-z", "--full-tree", "HEAD"]).as_bytes()).unwrap();
        let (trees, blobs): (Vec<TreeEntry>, Vec<TreeEntry>) = all.into_iter().partition(|e| e.mode == TREE_MODE);
        let top = parse_oid(git(r, &["rev-parse", "HEAD^{tree}"]).trim().as_bytes()).unwrap();
        let entries = stat_entries(r, &blobs).unwrap();
        let bytes = encode(entries, Some(Trees { top, subtrees: &trees }), &[]);
        assert_eq!(extension(&bytes, b"TREE").expect("a TREE written"), theirs);
        std::fs::write(r.join(".git/index"), &bytes).unwrap();
        assert_eq!(git(r, &["status", "--porcelain"]), "");
        assert_eq!(git(r, &["write-tree"]).trim(), git(r, &["rev-parse", "HEAD^{tree}"]).trim());
        std::fs::write(r.join("a/bb/d"), "changed").unwrap();
        git(r, &["commit", "-qam", "y"]);
        let committed = git(r, &["rev-parse", "HEAD^{tree}"]);
        std::fs::remove_file(r.join(".git/index")).unwrap();
        git(r, &["add", "-A"]);
        assert_eq!(git(r, &["write-tree"]), committed);
        // A listing that is not a whole tree (a subtree without its parent) gets no TREE.
        let partial: Vec<TreeEntry> = trees.iter().filter(|t| t.path != b"zz").cloned().collect();
        let entries: Vec<IndexEntry> = blobs.iter().map(IndexEntry::unstat).collect();
        assert!(extension(&encode(entries.clone(), Some(Trees { top, subtrees: &trees }), &[]), b"TREE").is_some());
        assert!(extension(&encode(entries, Some(Trees { top, subtrees: &partial }), &[]), b"TREE").is_none());
    }

    /// What cannot be stat-ed beneath the top is an error naming it, and a directory swapped
    /// for a symlink is not followed.
    #[test]
    fn stat_entries_never_follows_a_symlinked_directory() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("wt");
        std::fs::create_dir_all(r.join("a")).unwrap();
        std::fs::write(r.join("a/f"), "f").unwrap();
        std::fs::create_dir_all(d.path().join("elsewhere")).unwrap();
        std::fs::write(d.path().join("elsewhere/f"), "other").unwrap();
        let entry = |p: &str| TreeEntry { path: p.as_bytes().to_vec(), mode: 0o100644, oid: [0; 20] };
        let got = stat_entries(&r, &[entry("a/f")]).unwrap();
        assert_eq!(got[0].stat.size, 1);
        let missing = stat_entries(&r, &[entry("a/f"), entry("a/g")]).unwrap_err();
        assert!(missing.to_string().contains("a/g"), "{missing}");
        std::fs::remove_dir_all(r.join("a")).unwrap();
        std::os::unix::fs::symlink(d.path().join("elsewhere"), r.join("a")).unwrap();
        assert!(stat_entries(&r, &[entry("a/f")]).is_err(), "followed a symlinked directory");
    }
    /// Read from layers, each entry and directory comes from the topmost layer that has it
    /// (as an overlay of them shows it), the top directory from the merged top itself, and
    /// an entry no layer has is an error naming it.
    #[test]
    fn stat_entries_in_layers_takes_the_topmost_layers_data() {
        let d = tempfile::tempdir().unwrap();
        let (merged, upper, lower) = (d.path().join("merged"), d.path().join("upper"), d.path().join("lower"));
        for (dir, files) in [(&lower, &["a/f", "a/g", "b/c/h", "t"][..]), (&upper, &["a/f", "n/x"][..])] {
            for f in files {
                let p = dir.join(f);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, dir.file_name().unwrap().as_encoded_bytes()).unwrap();
            }
        }
        std::fs::create_dir_all(&merged).unwrap();
        let entry = |p: &str| TreeEntry { path: p.as_bytes().to_vec(), mode: 0o100644, oid: [0; 20] };
        let tree: Vec<TreeEntry> = ["a/f", "a/g", "b/c/h", "n/x", "t"].iter().map(|p| entry(p)).collect();
        let (got, dirs) = stat_entries_in_layers(&merged, &[&upper, &lower], &tree).unwrap();
        let ino = |p: &Path| std::fs::symlink_metadata(p).unwrap().ino() as u32;
        let paths: Vec<&[u8]> = got.iter().map(|e| &e.path[..]).collect();
        assert_eq!(paths, [&b"a/f"[..], b"a/g", b"b/c/h", b"n/x", b"t"]);
        assert_eq!(got[0].stat.ino, ino(&upper.join("a/f")));
        assert_eq!(got[0].stat.size, 5, "upper's a/f");
        assert_eq!(got[1].stat.ino, ino(&lower.join("a/g")));
        assert_eq!(got[2].stat.ino, ino(&lower.join("b/c/h")));
        assert_eq!(got[3].stat.ino, ino(&upper.join("n/x")));
        assert_eq!(dirs[&b"a"[..]].st_ino, std::fs::metadata(upper.join("a")).unwrap().ino());
        assert_eq!(dirs[&b"b/c"[..]].st_ino, std::fs::metadata(lower.join("b/c")).unwrap().ino());
        assert_eq!(dirs[&b""[..]].st_ino, std::fs::metadata(&merged).unwrap().ino());
        let err = stat_entries_in_layers(&merged, &[&upper, &lower], &[entry("a/f"), entry("z/q")]).unwrap_err();
        assert!(err.to_string().contains("lower/z"), "{err}");
    }
}
