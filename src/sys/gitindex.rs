//! Writing a git index (version 2, SHA-1 repositories) from blob ids and stat data, so that a
//! working tree whose contents are known to be a commit's checkout gets a clean `git status`
//! without git re-hashing every file.
//!
//! Format (git's `Documentation/gitformat-index.txt`): `DIRC`, version 2, the entry count;
//! entries sorted by path bytes, each 62 bytes of stat data, mode, id and flags, then the path
//! and 1 to 8 NULs padding the entry to a multiple of 8; no extensions; the SHA-1 of all that.

use std::os::unix::fs::MetadataExt;

/// One stage-0 entry.
#[derive(Clone, Debug)]
pub struct IndexEntry {
    /// Path relative to the top of the working tree (raw bytes, `/`-separated).
    pub path: Vec<u8>,
    /// Git's mode: `0o100644`, `0o100755` or `0o120000`.
    pub mode: u32,
    /// The blob id (SHA-1).
    pub oid: [u8; 20],
    /// ctime seconds, nanoseconds.
    pub ctime: (u32, u32),
    /// mtime seconds, nanoseconds.
    pub mtime: (u32, u32),
    /// Device, inode, uid, gid and size, as git records them (truncated to 32 bits).
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

impl IndexEntry {
    /// An entry for `path` with blob `oid` and git mode `mode`, its stat data from `md` (the
    /// lstat of the file in the working tree).
    pub fn new(path: Vec<u8>, mode: u32, oid: [u8; 20], md: &std::fs::Metadata) -> IndexEntry {
        // git keeps the low 32 bits of each (`ce_stat_data` is 32-bit on disk).
        IndexEntry {
            path,
            mode,
            oid,
            ctime: (md.ctime() as u32, md.ctime_nsec() as u32),
            mtime: (md.mtime() as u32, md.mtime_nsec() as u32),
            dev: md.dev() as u32,
            ino: md.ino() as u32,
            uid: md.uid(),
            gid: md.gid(),
            size: md.size() as u32,
        }
    }
}

/// The index file's bytes for `entries` (sorted here; stage 0 only, no duplicates expected).
pub fn encode(mut entries: Vec<IndexEntry>) -> Vec<u8> {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = Vec::with_capacity(12 + entries.len() * 96 + 20);
    out.extend_from_slice(b"DIRC");
    out.extend_from_slice(&2u32.to_be_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for e in &entries {
        let start = out.len();
        for v in [e.ctime.0, e.ctime.1, e.mtime.0, e.mtime.1, e.dev, e.ino, e.mode, e.uid, e.gid, e.size] {
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
    let sum = sha1_smol::Sha1::from(&out).digest().bytes();
    out.extend_from_slice(&sum);
    out
}

/// A hexadecimal SHA-1 object id as bytes; `None` unless it is 40 hex digits.
pub fn parse_oid(hex: &[u8]) -> Option<[u8; 20]> {
    if hex.len() != 40 {
        return None;
    }
    let mut oid = [0u8; 20];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        oid[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(oid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &std::path::Path, args: &[&str]) -> String {
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
        let mut entries = Vec::new();
        for rec in tree.split('\0').filter(|s| !s.is_empty()) {
            let (meta, path) = rec.split_once('\t').unwrap();
            let mut m = meta.split(' ');
            let mode = u32::from_str_radix(m.next().unwrap(), 8).unwrap();
            let oid = parse_oid(m.nth(1).unwrap().as_bytes()).unwrap();
            let md = std::fs::symlink_metadata(r.join(path)).unwrap();
            entries.push(IndexEntry::new(path.as_bytes().to_vec(), mode, oid, &md));
        }
        std::fs::write(r.join(".git/index"), encode(entries)).unwrap();
        assert_eq!(git(r, &["diff-files", "--name-only"]), "", "stat data not as git would record it");
        assert_eq!(git(r, &["diff-index", "--cached", "--name-only", "HEAD"]), "");
        assert_eq!(git(r, &["status", "--porcelain"]), "");
    }
}
