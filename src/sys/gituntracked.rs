//! The untracked cache extension (`UNTR`) of a git index, written for a working tree that is
//! known to hold exactly a commit's files: every directory is recorded as scanned, holding no
//! untracked file, with its stat data. git (with `core.untrackedCache` unset, its default
//! "keep") then checks each directory's stat data instead of reading it, which takes the
//! `readdir` of every directory out of a fresh root's first `git status`.
//!
//! Format (git's `Documentation/gitformat-index.adoc`, "Untracked cache"; `dir.c`,
//! `write_untracked_extension`): the ident (varint length, then `Location <work tree>,
//! system <uname -s>` and a NUL); the stat data of `$GIT_COMMON_DIR/info/exclude` and of
//! `core.excludesFile`; the 32-bit `dir_flags`; the ids of those two files; the per-directory
//! exclude file name (`.gitignore`) and a NUL; the number of directory blocks (varint), then
//! each block depth first (untracked count, subdirectory count, name, NUL), subdirectories in
//! byte order of their names; three EWAH bitmaps (valid, check-only, has an exclude id); the
//! stat data of each valid directory; the exclude ids; a NUL.
//!
//! Why this cannot hide a file: what it claims (no untracked file in any directory) is true
//! of the checkout it is written for, and git re-reads any directory whose stat data changed,
//! which every name added to or removed from it does. Whatever git computes differently (an
//! exclude file's id, the flags, the ident) makes git drop that part of the cache and scan.

use std::path::Path;

use crate::sys::gitindex::StatData;

/// Stat data as the untracked cache writes it: the index entry's fields without the mode.
fn put_stat(st: &StatData, out: &mut Vec<u8>) {
    for v in [st.ctime.0, st.ctime.1, st.mtime.0, st.mtime.1, st.dev, st.ino, st.uid, st.gid, st.size] {
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// A repository-wide exclude file (`info/exclude`, `core.excludesFile`) as git records it:
/// zeros for a file that does not exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExcludeFile {
    /// Its stat data.
    pub stat: StatData,
    /// The id git computes for it: the empty blob's for an empty file, else the blob id of its
    /// bytes with a newline appended (git appends one before parsing, and hashes that).
    pub oid: [u8; 20],
}

impl ExcludeFile {
    /// `path` read as git reads it (following symlinks); a file that is not there (or cannot
    /// be read: git skips it as well) is zeros.
    pub fn read(path: &Path) -> ExcludeFile {
        let Ok(st) = rustix::fs::stat(path) else { return ExcludeFile::default() };
        let Ok(mut bytes) = std::fs::read(path) else { return ExcludeFile::default() };
        if !bytes.is_empty() {
            bytes.push(b'\n');
        }
        ExcludeFile { stat: StatData::of(&st), oid: crate::sys::gitindex::blob_oid(&bytes) }
    }
}

/// `dir_flags` for `status.showUntrackedFiles` unset or `normal`: what `git status` asks for
/// (`DIR_SHOW_OTHER_DIRECTORIES | DIR_HIDE_EMPTY_DIRECTORIES`); `all` asks for 0.
pub const NORMAL_FLAGS: u32 = (1 << 1) | (1 << 2);

/// What the cache applies to as a whole.
#[derive(Clone, Debug)]
pub struct Header {
    /// The work tree as git names it (its real path): git uses the cache only there.
    pub work_tree: Vec<u8>,
    /// `uname -s`.
    pub system: Vec<u8>,
    /// See [`NORMAL_FLAGS`].
    pub dir_flags: u32,
    /// `$GIT_COMMON_DIR/info/exclude`.
    pub info_exclude: ExcludeFile,
    /// `core.excludesFile` (by default `$XDG_CONFIG_HOME/git/ignore`).
    pub excludes_file: ExcludeFile,
}

/// One directory of the checkout: `path` relative to the top (empty for the top), its stat
/// data in the working tree, and the blob id of its `.gitignore` if it has one.
#[derive(Clone, Debug)]
pub struct Dir {
    /// Relative path, `/`-separated.
    pub path: Vec<u8>,
    /// Stat data of the directory itself.
    pub stat: StatData,
    /// The id of `path/.gitignore` (a regular file), if any.
    pub exclude: Option<[u8; 20]>,
}

impl Header {
    /// The header for work tree `work_tree` (named by its real path, as git names it) of the
    /// repository whose common directory is `common_dir`, with `excludes_file` the
    /// `core.excludesFile` git will read (`None`: none).
    pub fn new(
        work_tree: &Path,
        common_dir: &Path,
        excludes_file: Option<&Path>,
        dir_flags: u32,
    ) -> std::io::Result<Header> {
        use std::os::unix::ffi::OsStrExt;
        let work_tree = std::fs::canonicalize(work_tree)?.as_os_str().as_bytes().to_vec();
        // SAFETY: uname fills the struct it is given; sysname is NUL-terminated.
        let system = unsafe {
            let mut u: libc::utsname = std::mem::zeroed();
            if libc::uname(&mut u) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::ffi::CStr::from_ptr(u.sysname.as_ptr()).to_bytes().to_vec()
        };
        Ok(Header {
            work_tree,
            system,
            dir_flags,
            info_exclude: ExcludeFile::read(&common_dir.join("info/exclude")),
            excludes_file: excludes_file.map(ExcludeFile::read).unwrap_or_default(),
        })
    }
}

/// The directories of a checkout at `top` of a commit whose trees and blobs `git ls-tree -r
/// -t` listed: the top and each tree, with its stat data in the working tree (from `known`,
/// what [`crate::sys::gitindex::stat_entries_and_dirs`] saw on its way, else resolved beneath
/// `top` with no symlink followed) and the id of its `.gitignore` when that is a regular file
/// (git does not follow a symlinked one). Every tree is listed: a directory missing from the
/// cache under a valid parent would never be scanned, so none may be left out.
pub fn dirs_of(
    top: &Path,
    trees: &[crate::sys::gitindex::TreeEntry],
    blobs: &[crate::sys::gitindex::TreeEntry],
    known: &crate::sys::gitindex::DirStats,
) -> std::io::Result<Vec<Dir>> {
    let mut tree = None;
    let mut ignores: std::collections::HashMap<&[u8], [u8; 20]> = std::collections::HashMap::new();
    for b in blobs.iter().filter(|b| b.mode == 0o100644 || b.mode == 0o100755) {
        match b.path.strip_suffix(b".gitignore") {
            Some([]) => ignores.insert(&[], b.oid),
            Some(dir) if dir.ends_with(b"/") => ignores.insert(&dir[..dir.len() - 1], b.oid),
            _ => None,
        };
    }
    let paths = std::iter::once(&[][..]).chain(trees.iter().map(|t| &t.path[..]));
    paths
        .map(|p| {
            let st = match known.get(p) {
                Some(st) => *st,
                None => {
                    let tree = match &mut tree {
                        Some(t) => t,
                        None => tree.insert(crate::sys::beneath::Tree::open(top)?),
                    };
                    tree.stat_dir(p)
                        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", tree.display(p).display())))?
                }
            };
            Ok(Dir { path: p.to_vec(), stat: StatData::of(&st), exclude: ignores.get(p).copied() })
        })
        .collect()
}

/// The extension's payload for `dirs` (the top and every directory below it, in any order),
/// each holding no untracked file; `None` when they are not one tree (a directory whose parent
/// is not listed, or no top). A directory whose mtime is not before `settled` (seconds since
/// the epoch, read before its stat data were) is written unscanned, and git reads it: a name
/// added in the same second would leave its mtime's second, all git compares, unchanged, and a
/// later rewrite of the index by git would no longer mark it racy.
pub fn extension(h: &Header, mut dirs: Vec<Dir>, settled: i64) -> Option<Vec<u8>> {
    // Depth first with each directory's subdirectories in byte order of their names is the
    // order of the full paths sorted with '/' counting as lower than any other byte.
    let key = |p: &[u8]| p.iter().map(|&b| if b == b'/' { 0 } else { b }).collect::<Vec<u8>>();
    dirs.sort_by_cached_key(|d| key(&d.path));
    if dirs.first().map(|d| !d.path.is_empty()).unwrap_or(true) {
        return None;
    }
    if dirs.windows(2).any(|w| w[0].path == w[1].path) {
        return None;
    }
    let known: std::collections::HashSet<&[u8]> = dirs.iter().map(|d| &d.path[..]).collect();
    let parent = |p: &[u8]| -> Option<Vec<u8>> {
        if p.is_empty() {
            return None;
        }
        Some(p.iter().rposition(|&b| b == b'/').map(|i| p[..i].to_vec()).unwrap_or_default())
    };
    let mut subdirs: std::collections::HashMap<Vec<u8>, u64> = std::collections::HashMap::new();
    for d in &dirs[1..] {
        let p = parent(&d.path)?;
        if !known.contains(&p[..]) {
            return None;
        }
        *subdirs.entry(p).or_default() += 1;
    }
    let mut out = Vec::new();
    let mut ident = b"Location ".to_vec();
    ident.extend_from_slice(&h.work_tree);
    ident.extend_from_slice(b", system ");
    ident.extend_from_slice(&h.system);
    ident.push(0);
    varint(ident.len() as u64, &mut out);
    out.extend_from_slice(&ident);
    put_stat(&h.info_exclude.stat, &mut out);
    put_stat(&h.excludes_file.stat, &mut out);
    out.extend_from_slice(&h.dir_flags.to_be_bytes());
    out.extend_from_slice(&h.info_exclude.oid);
    out.extend_from_slice(&h.excludes_file.oid);
    out.extend_from_slice(b".gitignore\0");
    varint(dirs.len() as u64, &mut out);
    let scanned = |d: &Dir| i64::from(d.stat.mtime.0) < settled;
    let (mut valid, check_only, mut has_exclude) = (Ewah::new(), Ewah::new(), Ewah::new());
    for (i, d) in dirs.iter().enumerate() {
        varint(0, &mut out);
        varint(subdirs.get(&d.path).copied().unwrap_or(0), &mut out);
        let name = d.path.iter().rposition(|&b| b == b'/').map(|i| &d.path[i + 1..]).unwrap_or(&d.path[..]);
        out.extend_from_slice(name);
        out.push(0);
        if scanned(d) {
            valid.set(i);
        }
        if d.exclude.is_some() {
            has_exclude.set(i);
        }
    }
    valid.serialize(&mut out);
    check_only.serialize(&mut out);
    has_exclude.serialize(&mut out);
    for d in dirs.iter().filter(|d| scanned(d)) {
        put_stat(&d.stat, &mut out);
    }
    for oid in dirs.iter().filter_map(|d| d.exclude) {
        out.extend_from_slice(&oid);
    }
    out.push(0);
    Some(out)
}

/// git's variable-width integer (`varint.c`): seven bits a byte, most significant first, each
/// continuation byte's value one less than written.
fn varint(mut value: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 16];
    let mut pos = buf.len() - 1;
    buf[pos] = (value & 127) as u8;
    loop {
        value >>= 7;
        if value == 0 {
            break;
        }
        value -= 1;
        pos -= 1;
        buf[pos] = 128 | (value & 127) as u8;
    }
    out.extend_from_slice(&buf[pos..]);
}

/// An EWAH bitmap without a bit, serialized as git serializes one (for the `FSMN` extension
/// of [`crate::sys::gitfsmonitor`]).
pub(crate) fn empty_bitmap(out: &mut Vec<u8>) {
    Ewah::new().serialize(out);
}

/// An EWAH bitmap built as git's `ewah_set` builds one (bits set in increasing order), so that
/// the serialized bytes are git's. Words are 64 bits; a run-length word ("RLW") holds the run
/// bit (bit 0), the run length in words (bits 1 to 32) and the number of literal words that
/// follow it (bits 33 to 63).
struct Ewah {
    buffer: Vec<u64>,
    rlw: usize,
    bit_size: usize,
}

const RUNNING_BITS: u32 = 32;
const LARGEST_RUNNING: u64 = (1 << RUNNING_BITS) - 1;
const LARGEST_LITERAL: u64 = (1 << (64 - 1 - RUNNING_BITS)) - 1;

impl Ewah {
    fn new() -> Ewah {
        Ewah { buffer: vec![0], rlw: 0, bit_size: 0 }
    }

    fn run_bit(&self) -> bool {
        self.buffer[self.rlw] & 1 == 1
    }

    fn set_run_bit(&mut self, b: bool) {
        let w = &mut self.buffer[self.rlw];
        *w = if b { *w | 1 } else { *w & !1 };
    }

    fn running_len(&self) -> u64 {
        (self.buffer[self.rlw] >> 1) & LARGEST_RUNNING
    }

    fn set_running_len(&mut self, l: u64) {
        let w = &mut self.buffer[self.rlw];
        *w = (*w & !(LARGEST_RUNNING << 1)) | (l << 1);
    }

    fn literal_words(&self) -> u64 {
        self.buffer[self.rlw] >> (1 + RUNNING_BITS)
    }

    fn set_literal_words(&mut self, l: u64) {
        let low = (1u64 << (RUNNING_BITS + 1)) - 1;
        let w = &mut self.buffer[self.rlw];
        *w = (*w & low) | (l << (RUNNING_BITS + 1));
    }

    fn push_rlw(&mut self) {
        self.buffer.push(0);
        self.rlw = self.buffer.len() - 1;
    }

    /// `add_empty_words` for `v` = 0 (the only runs `set` makes between bits are of zeros).
    fn add_empty_zero_words(&mut self, mut number: u64) {
        if self.run_bit() && self.running_len() + self.literal_words() == 0 {
            self.set_run_bit(false);
        } else if self.literal_words() != 0 || self.run_bit() {
            self.push_rlw();
        }
        let run = self.running_len();
        let add = number.min(LARGEST_RUNNING - run);
        self.set_running_len(run + add);
        number -= add;
        while number >= LARGEST_RUNNING {
            self.push_rlw();
            self.set_running_len(LARGEST_RUNNING);
            number -= LARGEST_RUNNING;
        }
        if number > 0 {
            self.push_rlw();
            self.set_running_len(number);
        }
    }

    fn add_literal(&mut self, word: u64) {
        let n = self.literal_words();
        if n >= LARGEST_LITERAL {
            self.push_rlw();
            self.set_literal_words(1);
        } else {
            self.set_literal_words(n + 1);
        }
        self.buffer.push(word);
    }

    /// `add_empty_word` for `v` = 1: a literal word that filled up becomes part of a run.
    fn add_full_word(&mut self) {
        let (no_literal, run) = (self.literal_words() == 0, self.running_len());
        if no_literal && run == 0 {
            self.set_run_bit(true);
        }
        if no_literal && self.run_bit() && run < LARGEST_RUNNING {
            self.set_running_len(run + 1);
        } else {
            self.push_rlw();
            self.set_run_bit(true);
            self.set_running_len(1);
        }
    }

    /// Set bit `i`, which must be above every bit set so far.
    fn set(&mut self, i: usize) {
        debug_assert!(i >= self.bit_size);
        let dist = (i + 1).div_ceil(64) - self.bit_size.div_ceil(64);
        self.bit_size = i + 1;
        let bit = 1u64 << (i % 64);
        if dist > 0 {
            if dist > 1 {
                self.add_empty_zero_words(dist as u64 - 1);
            }
            self.add_literal(bit);
            return;
        }
        if self.literal_words() == 0 {
            // (Unreachable from bits set in order: kept as git has it.)
            let run = self.running_len();
            self.set_running_len(run.saturating_sub(1));
            self.add_literal(bit);
            return;
        }
        let last = self.buffer.len() - 1;
        self.buffer[last] |= bit;
        if self.buffer[last] == u64::MAX {
            self.buffer.pop();
            let n = self.literal_words();
            self.set_literal_words(n - 1);
            self.add_full_word();
        }
    }

    /// `ewah_serialize_strbuf`: bit count, word count, the words, the last RLW's position; all
    /// big-endian.
    fn serialize(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.bit_size as u32).to_be_bytes());
        out.extend_from_slice(&(self.buffer.len() as u32).to_be_bytes());
        for w in &self.buffer {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out.extend_from_slice(&(self.rlw as u32).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::gitindex::tests::{extension as ext_of, git};
    use crate::sys::gitindex::{parse_ls_tree, TREE_MODE};

    /// The extension written here for a checkout is byte for byte the one `git status` writes
    /// there with `core.untrackedCache=true` (where each `.gitignore` is in a directory with
    /// subdirectories: git records the id of a leaf directory's only once it has tested a
    /// pattern there, execroot always): nested directories, names that sort differently
    /// as paths and as names (`a`, `a-b`, `a0`), a name with a space and one that is not ASCII,
    /// `.gitignore` files (one empty, one a symlink, which git does not read), an
    /// `info/exclude` and a `core.excludesFile`.
    #[test]
    fn untracked_cache_is_gits_own() {
        let d = tempfile::tempdir().unwrap();
        let r = &d.path().join("wt");
        let home = d.path().join("home");
        std::fs::create_dir_all(home.join(".config/git")).unwrap();
        std::fs::write(home.join(".config/git/ignore"), "*.tmp").unwrap();
        for f in ["a/b/f", "a/g", "a-b/h", "a0/i", "z/y/j", "t", "sp ace/k", "ünï/l", "a/.gitignore", "z/.gitignore"]
        {
            std::fs::create_dir_all(r.join(f).parent().unwrap()).unwrap();
            std::fs::write(r.join(f), if f.ends_with(".gitignore") && f.starts_with('z') { "" } else { f }).unwrap();
        }
        std::os::unix::fs::symlink("../a/.gitignore", r.join("a0/.gitignore")).unwrap();
        git(r, &["init", "-q"]);
        std::fs::write(r.join(".git/info/exclude"), "# mine\nign\n").unwrap();
        git(r, &["add", "-A"]);
        git(r, &["commit", "-qm", "x"]);
        let o = std::process::Command::new("git")
            .arg("-C")
            .arg(r)
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .args(["-c", "core.untrackedCache=true", "-c", "safe.directory=*", "status", "--porcelain"])
            .output()
            .unwrap();
        assert!(o.status.success() && o.stdout.is_empty(), "{o:?}");
        let theirs = ext_of(&std::fs::read(r.join(".git/index")).unwrap(), b"UNTR").expect("git wrote an UNTR");
        let all = parse_ls_tree(git(r, &["ls-tree", "-r", "-t", "-z", "--full-tree", "HEAD"]).as_bytes()).unwrap();
        let (trees, blobs): (Vec<_>, Vec<_>) = all.into_iter().partition(|e| e.mode == TREE_MODE);
        let header = Header::new(r, &r.join(".git"), Some(&home.join(".config/git/ignore")), NORMAL_FLAGS).unwrap();
        let ours = extension(&header, dirs_of(r, &trees, &blobs, &Default::default()).unwrap(), i64::MAX).unwrap();
        assert_eq!(ours, theirs);
        // The same from the directories the index's lstat pass went through, whether it saw
        // all of them or (entries left out, as stale ones are) only some.
        let (_, seen) = crate::sys::gitindex::stat_entries_and_dirs(r, &blobs).unwrap();
        assert_eq!(seen.len(), trees.len() + 1);
        assert_eq!(extension(&header, dirs_of(r, &trees, &blobs, &seen).unwrap(), i64::MAX).unwrap(), theirs);
        let some: Vec<_> = blobs.iter().filter(|b| !b.path.starts_with(b"z/")).cloned().collect();
        let (_, seen) = crate::sys::gitindex::stat_entries_and_dirs(r, &some).unwrap();
        assert!(seen.len() < trees.len() + 1);
        assert_eq!(extension(&header, dirs_of(r, &trees, &blobs, &seen).unwrap(), i64::MAX).unwrap(), theirs);
        // Not one tree: no extension.
        let orphan = vec![Dir { path: b"x/y".to_vec(), stat: StatData::default(), exclude: None }];
        assert!(extension(&header, orphan, i64::MAX).is_none());
        // Directories whose mtime is not before the pass's start go in unscanned (no valid bit,
        // no stat data), and git, reading them again, finds what was added since.
        let racy = extension(&header, dirs_of(r, &trees, &blobs, &Default::default()).unwrap(), 0).unwrap();
        assert_eq!(theirs.len() - racy.len(), (trees.len() + 1) * 36 + 16 - 8, "stat data or valid bits left in");
        let entries = crate::sys::gitindex::stat_entries(r, &blobs).unwrap();
        std::fs::write(r.join(".git/index"), crate::sys::gitindex::encode(entries, None, &[(b"UNTR", &racy)])).unwrap();
        std::fs::write(r.join("new"), "n").unwrap();
        std::fs::write(r.join("a/b/new"), "n").unwrap();
        let o = std::process::Command::new("git")
            .arg("-C")
            .arg(r)
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .args(["-c", "safe.directory=*", "status", "--porcelain"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "?? a/b/new\n?? new\n", "{o:?}");
        assert!(o.stderr.is_empty(), "{o:?}");
    }

    fn ewah(bits: impl IntoIterator<Item = usize>) -> Vec<u8> {
        let mut e = Ewah::new();
        for b in bits {
            e.set(b);
        }
        let mut out = Vec::new();
        e.serialize(&mut out);
        out
    }

    fn words(bit_size: u32, ws: &[u64], rlw: u32) -> Vec<u8> {
        let mut out = bit_size.to_be_bytes().to_vec();
        out.extend_from_slice(&(ws.len() as u32).to_be_bytes());
        for w in ws {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out.extend_from_slice(&rlw.to_be_bytes());
        out
    }

    /// Bitmaps as git writes them (checked against `UNTR` extensions git wrote): empty, a few
    /// low bits, a word that fills up and becomes a run, and bits far apart.
    #[test]
    fn ewah_bytes_are_gits() {
        assert_eq!(ewah([]), words(0, &[0], 0));
        assert_eq!(ewah(0..7), words(7, &[1 << 33, 0x7f], 0));
        assert_eq!(ewah([1, 5]), words(6, &[1 << 33, 0x22], 0));
        // 64 ones fold into a run of one word of ones; the 65th bit is a literal after it.
        assert_eq!(ewah(0..65), words(65, &[(1 << 33) | (1 << 1) | 1, 1], 0));
        // A bit in word 3 after one in word 0: a run of two zero words, then a literal.
        assert_eq!(ewah([0, 200]), words(201, &[1 << 33, 1, (1 << 33) | (2 << 1), 1 << 8], 2));
    }

    #[test]
    fn varints_are_gits() {
        let enc = |v| {
            let mut o = Vec::new();
            varint(v, &mut o);
            o
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(127), [127]);
        assert_eq!(enc(128), [0x80, 0]);
        assert_eq!(enc(300), [0x81, 0x2c]);
        assert_eq!(enc(16511), [0xff, 0x7f]);
        assert_eq!(enc(16512), [0x80, 0x80, 0]);
    }
}
