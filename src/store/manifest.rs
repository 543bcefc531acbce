//! Manifests: the canonical, hashable description of one snapshot.
//!
//! A manifest lists every entry of a tree (the root directory first, as the empty path) in
//! *canonical order*: paths compared component by component, bytewise, which is bytewise order
//! with `/` ranked below every other byte. That order puts each directory immediately before its
//! descendants, so a reader can check the tree shape in one pass, and it makes the encoding
//! independent of the walk order: the snapshot id is the blake3 of the encoding.
//!
//! The encoding (docs/format.md is the reference) is little-endian and fixed-width:
//! `MAGIC`, `u32` parent count, parent ids (32 bytes each), `u64` entry count, then per entry
//! `u8 kind`, `u32 mode`, `i64 mtime seconds`, `u32 mtime nanoseconds`, `u32 path length`, path
//! bytes, and for files `u64 size` + 32-byte content hash, for symlinks `u32 length` + target.
//!
//! Decoding validates everything a hostile or damaged manifest could use to make a checkout write
//! outside its destination: absolute paths, `.`/`..` or empty components, NUL bytes, duplicate or
//! unordered entries, and any entry whose parent is not a directory entry of the same manifest
//! (which covers "a symlink used as a parent directory").

use std::cmp::Ordering;

use crate::error::{Error, Result};
use crate::hash::Hash;
pub use crate::pathenc::show;
use crate::pathenc::PathJson;
use serde::Serialize;

/// First bytes of every encoded manifest; the last byte is the encoding version.
pub const MAGIC: &[u8; 8] = b"EXRMANI\x01";
/// Longest accepted path and symlink target, in bytes: Linux PATH_MAX (4096) counts the
/// terminating NUL, so `symlink(2)` refuses a target of 4096 bytes and `openat2(2)` a relative
/// path of 4096 bytes. Every path is resolved beneath a tree's top in one call, so a path the
/// kernel cannot take in one call could never be checked out.
pub const MAX_PATH: usize = 4095;
/// Longest accepted path component, in bytes (Linux NAME_MAX).
pub const MAX_NAME: usize = 255;

/// What an entry is, with the data that kind carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file whose content is the object `hash`.
    File {
        /// Content length in bytes.
        size: u64,
        /// blake3 of the content; the object's name in the store.
        hash: Hash,
    },
    /// A symbolic link; the target is stored as data and never followed.
    Symlink {
        /// Raw target bytes.
        target: Vec<u8>,
    },
    /// A deletion of the same path in the lower layers (change layers only).
    Whiteout,
    /// A directory whose lower-layer contents are hidden (change layers only).
    OpaqueDir,
}

impl Node {
    /// Wire tag of this kind.
    pub fn tag(&self) -> u8 {
        match self {
            Node::Dir => 0,
            Node::File { .. } => 1,
            Node::Symlink { .. } => 2,
            Node::Whiteout => 3,
            Node::OpaqueDir => 4,
        }
    }

    /// Name used in JSON and human output.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Node::Dir => "dir",
            Node::File { .. } => "file",
            Node::Symlink { .. } => "symlink",
            Node::Whiteout => "whiteout",
            Node::OpaqueDir => "opaque",
        }
    }

    /// True for kinds that may contain entries.
    pub fn is_dir(&self) -> bool {
        matches!(self, Node::Dir | Node::OpaqueDir)
    }
}

/// One entry of a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the tree root as raw bytes; empty for the root itself.
    pub path: Vec<u8>,
    /// Permission bits (`0o7777` at most); ownership is not recorded in format v1.
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds part (below 1e9).
    pub mtime_nsec: u32,
    /// Kind and kind-specific data.
    pub node: Node,
}

/// The canonical order of manifest paths: component-wise bytewise comparison.
pub fn cmp_paths(a: &[u8], b: &[u8]) -> Ordering {
    // Components never contain NUL, so ranking '/' as 0 makes bytewise order component order.
    let rank = |c: u8| if c == b'/' { 0 } else { c };
    a.iter().map(|&c| rank(c)).cmp(b.iter().map(|&c| rank(c)))
}

/// A byte string whose plain bytewise order is the canonical path order ([`cmp_paths`]), for
/// ordered maps keyed by path.
pub fn canonical_sort_key(p: &[u8]) -> Vec<u8> {
    p.iter().map(|&c| if c == b'/' { 0 } else { c }).collect()
}

/// True when `path` is `top` or below it (component-wise; `top` non-empty).
pub fn is_at_or_below(path: &[u8], top: &[u8]) -> bool {
    path == top || is_ancestor(top, path)
}

/// The parent of a non-root path (`""` for top-level entries).
pub fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&c| c == b'/') {
        Some(i) => &path[..i],
        None => &[],
    }
}

/// True when `anc` is a strict ancestor of `path` (the root is everyone's ancestor).
pub fn is_ancestor(anc: &[u8], path: &[u8]) -> bool {
    if anc.is_empty() {
        return !path.is_empty();
    }
    path.len() > anc.len() && path.starts_with(anc) && path[anc.len()] == b'/'
}

/// Check one non-root relative path: no leading or trailing `/`, no empty, `.` or `..`
/// components, no NUL, within [`MAX_PATH`] and [`MAX_NAME`]. Newlines and invalid UTF-8 are fine.
pub fn validate_path(path: &[u8]) -> Result<()> {
    match path_problem(path) {
        Some(why) => Err(Error::Corrupt(format!("invalid entry path {}: {why}", show(path)))),
        None => Ok(()),
    }
}

/// Why `path` breaks the rules of [`validate_path`], or `None`.
pub fn path_problem(path: &[u8]) -> Option<&'static str> {
    if path.is_empty() {
        return Some("empty");
    }
    if path.len() > MAX_PATH {
        return Some("longer than 4095 bytes (the kernel's PATH_MAX, its NUL included, is 4096)");
    }
    if path.contains(&0) {
        return Some("contains a NUL byte");
    }
    if path[0] == b'/' {
        return Some("absolute");
    }
    for comp in path.split(|&c| c == b'/') {
        match comp {
            b"" => return Some("empty component"),
            b"." | b".." => return Some("'.' or '..' component"),
            c if c.len() > MAX_NAME => return Some("component longer than 255 bytes (the kernel's NAME_MAX)"),
            _ => {}
        }
    }
    None
}

/// Why a symlink target is one that `symlink(2)` refuses (empty, a NUL byte, over
/// [`MAX_PATH`]), or `None`. The target is otherwise data: never followed, never resolved.
pub fn target_problem(target: &[u8]) -> Option<&'static str> {
    if target.is_empty() {
        Some("empty symlink target")
    } else if target.len() > MAX_PATH {
        Some("symlink target longer than 4095 bytes (the kernel's PATH_MAX, its NUL included, is 4096)")
    } else if target.contains(&0) {
        Some("symlink target contains a NUL byte")
    } else {
        None
    }
}

/// A snapshot's content: parent snapshots (bottom first) and entries in canonical order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Snapshots this one is a change on top of, bottom first; empty for an ingested tree.
    pub parents: Vec<Hash>,
    /// Entries in canonical order, root first.
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// Build a manifest from entries in any order: sorts them canonically and validates.
    pub fn new(parents: Vec<Hash>, mut entries: Vec<Entry>) -> Result<Manifest> {
        entries.sort_unstable_by(|a, b| cmp_paths(&a.path, &b.path));
        let m = Manifest { parents, entries };
        m.validate()?;
        Ok(m)
    }

    /// Like [`Manifest::new`] for entries that came from an input (a tree, an archive, a
    /// change): a rule they break makes the input unacceptable ([`Error::BadInput`], exit 2),
    /// not the store damaged.
    pub fn from_input(parents: Vec<Hash>, entries: Vec<Entry>) -> Result<Manifest> {
        Manifest::new(parents, entries).map_err(|e| match e {
            Error::Corrupt(why) => Error::BadInput(why),
            e => e,
        })
    }

    /// Check every rule of the format (see the module documentation).
    pub fn validate(&self) -> Result<()> {
        let is_change = !self.parents.is_empty();
        let first = self.entries.first().ok_or_else(|| Error::Corrupt("manifest has no root entry".into()))?;
        if !first.path.is_empty() || !first.node.is_dir() {
            return Err(Error::Corrupt("manifest does not start with the root directory".into()));
        }
        // Stack of the entries on the path from the root to the previous entry.
        let mut stack: Vec<&Entry> = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            if e.mode & !0o7777 != 0 {
                return Err(Error::Corrupt(format!(
                    "entry {}: mode {:o} has non-permission bits",
                    show(&e.path),
                    e.mode
                )));
            }
            if e.mtime_nsec >= 1_000_000_000 {
                return Err(Error::Corrupt(format!("entry {}: mtime nanoseconds out of range", show(&e.path))));
            }
            if !is_change && matches!(e.node, Node::Whiteout | Node::OpaqueDir) {
                return Err(Error::Corrupt(format!(
                    "entry {}: {} in a snapshot without parents",
                    show(&e.path),
                    e.node.kind_name()
                )));
            }
            if let Node::Symlink { target } = &e.node {
                if let Some(why) = target_problem(target) {
                    return Err(Error::Corrupt(format!("entry {}: {why}", show(&e.path))));
                }
            }
            if i == 0 {
                stack.push(e);
                continue;
            }
            validate_path(&e.path)?;
            let prev = &self.entries[i - 1];
            if cmp_paths(&prev.path, &e.path) != Ordering::Less {
                return Err(Error::Corrupt(format!(
                    "entries out of order or duplicated: {} then {}",
                    show(&prev.path),
                    show(&e.path)
                )));
            }
            while let Some(top) = stack.last() {
                if is_ancestor(&top.path, &e.path) {
                    break;
                }
                stack.pop();
            }
            let top = stack.last().expect("root is an ancestor of every entry");
            if !top.node.is_dir() {
                return Err(Error::Corrupt(format!(
                    "entry {}: parent {} is a {}, not a directory",
                    show(&e.path),
                    show(&top.path),
                    top.node.kind_name()
                )));
            }
            if top.path != parent_of(&e.path) {
                return Err(Error::Corrupt(format!("entry {}: parent directory has no entry", show(&e.path))));
            }
            stack.push(e);
        }
        Ok(())
    }

    /// The canonical byte encoding (the snapshot id is its blake3).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.entries.len() * 96);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.parents.len() as u32).to_le_bytes());
        for p in &self.parents {
            out.extend_from_slice(&p.0);
        }
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for e in &self.entries {
            out.push(e.node.tag());
            out.extend_from_slice(&e.mode.to_le_bytes());
            out.extend_from_slice(&e.mtime_sec.to_le_bytes());
            out.extend_from_slice(&e.mtime_nsec.to_le_bytes());
            out.extend_from_slice(&(e.path.len() as u32).to_le_bytes());
            out.extend_from_slice(&e.path);
            match &e.node {
                Node::File { size, hash } => {
                    out.extend_from_slice(&size.to_le_bytes());
                    out.extend_from_slice(&hash.0);
                }
                Node::Symlink { target } => {
                    out.extend_from_slice(&(target.len() as u32).to_le_bytes());
                    out.extend_from_slice(target);
                }
                Node::Dir | Node::Whiteout | Node::OpaqueDir => {}
            }
        }
        out
    }

    /// The snapshot id of this manifest.
    pub fn id(&self) -> Hash {
        Hash::of(&self.encode())
    }

    /// Decode and validate an encoding; rejects trailing bytes and anything [`validate`] rejects.
    ///
    /// [`validate`]: Manifest::validate
    pub fn decode(bytes: &[u8]) -> Result<Manifest> {
        let mut r = Reader { buf: bytes, pos: 0 };
        if r.take(8)? != MAGIC {
            return Err(Error::Corrupt("not an execroot manifest (bad magic or version)".into()));
        }
        let nparents = r.u32()? as usize;
        if nparents > r.remaining() / 32 {
            return Err(Error::Corrupt("manifest parent count exceeds its size".into()));
        }
        let mut parents = Vec::with_capacity(nparents);
        for _ in 0..nparents {
            parents.push(Hash(r.take(32)?.try_into().expect("32 bytes")));
        }
        let count = r.u64()?;
        // The smallest entry is 21 bytes, so a count beyond that is a lie; never trust it for
        // an allocation.
        if count > (r.remaining() / 21) as u64 {
            return Err(Error::Corrupt("manifest entry count exceeds its size".into()));
        }
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let tag = r.u8()?;
            let mode = r.u32()?;
            let mtime_sec = r.i64()?;
            let mtime_nsec = r.u32()?;
            let plen = r.u32()? as usize;
            if plen > MAX_PATH {
                return Err(Error::Corrupt("manifest entry path too long".into()));
            }
            let path = r.take(plen)?.to_vec();
            let node = match tag {
                0 => Node::Dir,
                1 => {
                    let size = r.u64()?;
                    Node::File { size, hash: Hash(r.take(32)?.try_into().expect("32 bytes")) }
                }
                2 => {
                    let tlen = r.u32()? as usize;
                    if tlen > MAX_PATH {
                        return Err(Error::Corrupt(format!("entry {}: symlink target too long", show(&path))));
                    }
                    Node::Symlink { target: r.take(tlen)?.to_vec() }
                }
                3 => Node::Whiteout,
                4 => Node::OpaqueDir,
                t => return Err(Error::Corrupt(format!("entry {}: unknown kind {t}", show(&path)))),
            };
            entries.push(Entry { path, mode, mtime_sec, mtime_nsec, node });
        }
        if r.remaining() != 0 {
            return Err(Error::Corrupt("trailing bytes after manifest entries".into()));
        }
        let m = Manifest { parents, entries };
        m.validate()?;
        Ok(m)
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::Corrupt("manifest is truncated".into()));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

/// JSON view of one manifest entry (`snapshot show --entries`).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryJson {
    /// Path (see docs/cli.md for the non-UTF-8 encoding).
    pub path: PathJson,
    /// dir, file, symlink, whiteout or opaque.
    pub kind: &'static str,
    /// Permission bits as 4 octal digits.
    pub mode: String,
    /// File size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Content hash of a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Symlink target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<PathJson>,
    /// Modification time as seconds.nanoseconds since the epoch.
    pub mtime: String,
}

impl From<&Entry> for EntryJson {
    fn from(e: &Entry) -> Self {
        let (size, hash, target) = match &e.node {
            Node::File { size, hash } => (Some(*size), Some(hash.to_hex()), None),
            Node::Symlink { target } => (None, None, Some(PathJson(target.clone()))),
            _ => (None, None, None),
        };
        EntryJson {
            path: PathJson(e.path.clone()),
            kind: e.node.kind_name(),
            mode: format!("{:04o}", e.mode),
            size,
            hash,
            target,
            mtime: format!("{}.{:09}", e.mtime_sec, e.mtime_nsec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(p: &str) -> Entry {
        Entry { path: p.as_bytes().to_vec(), mode: 0o755, mtime_sec: 1, mtime_nsec: 0, node: Node::Dir }
    }
    fn file(p: &str) -> Entry {
        Entry {
            path: p.as_bytes().to_vec(),
            mode: 0o644,
            mtime_sec: 1,
            mtime_nsec: 0,
            node: Node::File { size: 1, hash: Hash::of(b"x") },
        }
    }

    #[test]
    fn canonical_order_groups_descendants() {
        let mut v = vec!["a-c", "a/b", "a", "", "a/b/c", "ab"];
        v.sort_by(|a, b| cmp_paths(a.as_bytes(), b.as_bytes()));
        assert_eq!(v, vec!["", "a", "a/b", "a/b/c", "a-c", "ab"]);
    }

    #[test]
    fn walk_order_does_not_change_id() {
        let a = Manifest::new(vec![], vec![dir(""), dir("a"), file("a/x"), file("b")]).unwrap();
        let b = Manifest::new(vec![], vec![file("b"), file("a/x"), dir("a"), dir("")]).unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(Manifest::decode(&a.encode()).unwrap(), a);
    }

    #[test]
    fn rejects_missing_parent_and_file_parent() {
        assert!(Manifest::new(vec![], vec![dir(""), file("a/x")]).is_err());
        let err = Manifest::new(vec![], vec![dir(""), file("a"), file("a/x")]).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn rejects_duplicates() {
        assert!(Manifest::new(vec![], vec![dir(""), file("a"), file("a")]).is_err());
    }
}
