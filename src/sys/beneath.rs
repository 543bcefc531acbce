//! Trees that someone else can change while execroot works in them, reached only through a
//! directory handle opened once at the top.
//!
//! An ingest source, a root's upper directory and merged view, and a checkout or export
//! destination can all be changed under execroot by a process inside a root or by another
//! user. Opening `top/a/b` by its full path follows `a` if it was just swapped for a symlink, so
//! every operation here resolves its relative path *beneath* the [`Tree`]'s handle with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: a symlink in any component, the last one
//! included, is never followed. A race can then only make an operation fail (`ELOOP`,
//! `ENOTDIR`, `ENOENT`) or see a symlink as a symlink. Names are acted on relative to a handle
//! of their parent (`fstatat`, `readlinkat`, `mkdirat`, `symlinkat`, `utimensat` with
//! `AT_SYMLINK_NOFOLLOW`), and permission bits are set through a handle of the file itself
//! (`fchmodat` would follow a symlink). Where `openat2` is missing (kernels before 5.6, or a
//! seccomp filter), the same rule is kept by an `O_NOFOLLOW` walk one component at a time.
//!
//! Relative paths are raw bytes without leading `/`, as in manifests; the empty path is the top.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};

/// What `lstat` says about an entry, in the few fields execroot uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The entry's type.
    pub kind: Kind,
    /// Permission bits (`mode & 07777`).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Device number of a device file (overlayfs whiteouts are character devices 0/0).
    pub rdev: u64,
    /// Device of the filesystem holding the entry.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// An entry's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A FIFO.
    Fifo,
    /// A socket.
    Socket,
    /// A block device.
    Block,
    /// A character device.
    Char,
}

impl Meta {
    fn of_stat(st: &rustix::fs::Stat) -> Meta {
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => Kind::Dir,
            FileType::RegularFile => Kind::File,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            FileType::BlockDevice => Kind::Block,
            _ => Kind::Char,
        };
        Meta {
            kind,
            mode: st.st_mode & 0o7777,
            size: st.st_size as u64,
            mtime_sec: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as u32,
            rdev: st.st_rdev,
            dev: st.st_dev,
            ino: st.st_ino,
            uid: st.st_uid,
            gid: st.st_gid,
        }
    }

    /// `fstat` of an open file.
    pub fn of_fd(fd: impl AsFd) -> io::Result<Meta> {
        Ok(Meta::of_stat(&rustix::fs::fstat(fd)?))
    }

    /// `lstat` of a path that is the store's own (never a tree someone else can change).
    pub fn of_path(p: &Path) -> io::Result<Meta> {
        Ok(Meta::of_stat(&rustix::fs::lstat(p)?))
    }

    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }

    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.kind == Kind::File
    }

    /// A symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.kind == Kind::Symlink
    }

    /// overlayfs's whiteout: a character device 0/0.
    pub fn is_whiteout(&self) -> bool {
        self.kind == Kind::Char && self.rdev == 0
    }
}

/// One entry a [`Tree::walk`] found.
#[derive(Clone, Debug)]
pub struct Found {
    /// Path relative to the top (empty for the top).
    pub rel: Vec<u8>,
    /// Its metadata, read relative to its parent's handle.
    pub meta: Meta,
    /// A symlink's target, read in the same directory handle.
    pub target: Option<Vec<u8>>,
}

/// A directory tree reached only through a handle of its top.
#[derive(Debug)]
pub struct Tree {
    fd: OwnedFd,
    top: PathBuf,
}

/// Set once `openat2` turned out not to exist here, so later calls go straight to the walk.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

const BENEATH: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS).union(ResolveFlags::NO_MAGICLINKS);

fn os(rel: &[u8]) -> &OsStr {
    OsStr::from_bytes(if rel.is_empty() { b"." } else { rel })
}

/// Split `a/b/c` into (`a/b`, `c`); the top's parent is itself, named `.`.
fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b"", if rel.is_empty() { b"." } else { rel }),
    }
}

fn not_found(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

impl Tree {
    /// Open the directory `top` (which may itself be reached through symlinks: it is the
    /// caller's own path; only what lies below it is protected).
    pub fn open(top: &Path) -> io::Result<Tree> {
        let fd = rustix::fs::open(top, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Tree { fd, top: top.to_path_buf() })
    }

    /// Make `dest` a fresh destination: create it (its parent must exist; missing parents are
    /// not made), or accept an existing empty directory that is not a symlink. Returns the tree
    /// and whether this call created it. One rule for `snapshot checkout` and `root export`.
    pub fn fresh(dest: &Path) -> crate::error::Result<(Tree, bool)> {
        use crate::error::Error;
        let created = match rustix::fs::mkdir(dest, Mode::from_raw_mode(0o700)) {
            Ok(()) => true,
            Err(rustix::io::Errno::EXIST) => false,
            Err(rustix::io::Errno::NOENT) => {
                return Err(Error::BadInput(format!(
                    "{}: the parent directory does not exist (it is not created)",
                    dest.display()
                )))
            }
            Err(e) => return Err(Error::io(dest, e.into())),
        };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::open(dest, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOTDIR) | Err(rustix::io::Errno::LOOP) => {
                return Err(Error::Conflict(format!(
                    "{}: exists and is not a directory (a symlink is not followed)",
                    dest.display()
                )))
            }
            Err(e) => return Err(Error::io(dest, e.into())),
        };
        let tree = Tree { fd, top: dest.to_path_buf() };
        if !created && !tree.names(b"").map_err(|e| Error::io(dest, e))?.is_empty() {
            return Err(Error::Conflict(format!("{}: directory is not empty", dest.display())));
        }
        Ok((tree, created))
    }

    /// The top's path, for messages.
    pub fn top(&self) -> &Path {
        &self.top
    }

    /// `top/rel`, for messages only: never open it.
    pub fn display(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.top.clone()
        } else {
            self.top.join(OsStr::from_bytes(rel))
        }
    }

    /// Open `rel` beneath the top without following any symlink on the way.
    fn resolve(&self, rel: &[u8], flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let flags = flags | OFlags::CLOEXEC;
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            match rustix::fs::openat2(&self.fd, os(rel), flags, mode, BENEATH) {
                Err(rustix::io::Errno::NOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
                // EAGAIN: a concurrent rename anywhere on the system; openat2 asks for a retry.
                Err(rustix::io::Errno::AGAIN) => return self.resolve(rel, flags, mode),
                r => return r.map_err(io::Error::from),
            }
        }
        // One component at a time, none of them followed.
        let (parent, name) = split(rel);
        let mut dir: Option<OwnedFd> = None;
        for comp in parent.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            let at = dir.as_ref().map(|d| d.as_fd()).unwrap_or(self.fd.as_fd());
            let next = rustix::fs::openat(
                at,
                OsStr::from_bytes(comp),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            dir = Some(next);
        }
        let at = dir.as_ref().map(|d| d.as_fd()).unwrap_or(self.fd.as_fd());
        Ok(rustix::fs::openat(at, OsStr::from_bytes(name), flags | OFlags::NOFOLLOW, mode)?)
    }

    /// An `O_PATH` handle of the directory holding `rel` (resolved beneath the top, no
    /// symlink followed), and `rel`'s last component, to act on by name relative to it.
    pub fn parent<'r>(&self, rel: &'r [u8]) -> io::Result<(OwnedFd, &'r [u8])> {
        let (parent, name) = split(rel);
        Ok((self.resolve(parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?, name))
    }

    /// The full stat data (ctime included) of the directory `rel` (empty: the top), resolved
    /// beneath the top with no symlink followed.
    pub fn stat_dir(&self, rel: &[u8]) -> io::Result<rustix::fs::Stat> {
        if rel.is_empty() {
            return Ok(rustix::fs::fstat(&self.fd)?);
        }
        Ok(rustix::fs::fstat(self.resolve(rel, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?)?)
    }

    /// `lstat` of `rel`; `None` when it (or a directory on the way) does not exist. A symlink
    /// on the way is an error (`ELOOP`), never absence: a diff must not skip what a race hid.
    pub fn lstat(&self, rel: &[u8]) -> io::Result<Option<Meta>> {
        let (dir, name) = match self.parent(rel) {
            Ok(p) => p,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Meta::of_stat(&st))),
            Err(e) => {
                let e = io::Error::from(e);
                if not_found(&e) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Open the regular file `rel` for reading. Opening never blocks (a FIFO swapped in is not
    /// waited on) and the caller checks with [`Meta::of_fd`] what it got.
    pub fn open_file(&self, rel: &[u8]) -> io::Result<File> {
        let fd =
            self.resolve(rel, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY, Mode::empty())?;
        let f = File::from(fd);
        let m = Meta::of_fd(&f)?;
        if !m.is_file() {
            return Err(io::Error::other("is no longer a regular file"));
        }
        // Back to blocking reads (regular files ignore O_NONBLOCK anyway, but be exact).
        rustix::fs::fcntl_setfl(&f, OFlags::RDONLY)?;
        Ok(f)
    }

    /// The directory `rel` as a tree of its own.
    pub fn open_dir(&self, rel: &[u8]) -> io::Result<Tree> {
        let fd = self.resolve(rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW, Mode::empty())?;
        Ok(Tree { fd, top: self.display(rel) })
    }

    /// The target of the symlink `rel`.
    pub fn read_link(&self, rel: &[u8]) -> io::Result<Vec<u8>> {
        let (dir, name) = self.parent(rel)?;
        Ok(rustix::fs::readlinkat(&dir, OsStr::from_bytes(name), Vec::new())?.into_bytes())
    }

    /// Names in the directory `rel` (without `.` and `..`).
    pub fn names(&self, rel: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let fd = if rel.is_empty() {
            None
        } else {
            Some(self.resolve(rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW, Mode::empty())?)
        };
        list(fd.as_ref().map(|f| f.as_fd()).unwrap_or(self.fd.as_fd()))
    }

    /// The entries of the directory `rel` (empty: the top) with their full `lstat` data
    /// (ctime included), each stat-ed relative to the directory's handle; an entry removed
    /// between the listing and its `lstat` is left out.
    pub fn stat_entries(&self, rel: &[u8]) -> io::Result<Vec<(Vec<u8>, rustix::fs::Stat)>> {
        let fd = if rel.is_empty() {
            None
        } else {
            Some(self.resolve(rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW, Mode::empty())?)
        };
        let dir = fd.as_ref().map(|f| f.as_fd()).unwrap_or(self.fd.as_fd());
        let mut out = Vec::new();
        for name in list(dir)? {
            match rustix::fs::statat(dir, OsStr::from_bytes(&name), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => out.push((name, st)),
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// The extended attribute `name` of the directory `rel`, if set.
    pub fn dir_xattr(&self, rel: &[u8], name: &str) -> io::Result<Option<Vec<u8>>> {
        use xattr::FileExt;
        let f = File::from(self.resolve(rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW, Mode::empty())?);
        f.get_xattr(name)
    }

    /// Create the directory `rel` (its parent must exist beneath the top).
    pub fn mkdir(&self, rel: &[u8], mode: u32) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        Ok(rustix::fs::mkdirat(&dir, OsStr::from_bytes(name), Mode::from_raw_mode(mode))?)
    }

    /// Create the regular file `rel`, which must not exist, for writing.
    pub fn create_file(&self, rel: &[u8], mode: u32) -> io::Result<File> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        Ok(File::from(self.resolve(rel, flags, Mode::from_raw_mode(mode))?))
    }

    /// Create the symlink `rel` pointing at `target`.
    pub fn symlink(&self, rel: &[u8], target: &[u8]) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        Ok(rustix::fs::symlinkat(OsStr::from_bytes(target), &dir, OsStr::from_bytes(name))?)
    }

    /// Remove `rel` (not the top), and everything below it when it is a directory, each name
    /// beneath the top and never through a symlink; absent, nothing happens.
    pub fn remove_all(&self, rel: &[u8]) -> io::Result<()> {
        let Some(m) = self.lstat(rel)? else { return Ok(()) };
        if m.is_dir() {
            for n in self.names(rel)? {
                self.remove_all(&[rel, b"/", &n].concat())?;
            }
        }
        let (dir, name) = self.parent(rel)?;
        let flags = if m.is_dir() { AtFlags::REMOVEDIR } else { AtFlags::empty() };
        Ok(rustix::fs::unlinkat(&dir, OsStr::from_bytes(name), flags)?)
    }

    /// Give `rel` itself (a symlink included) to `uid:gid`.
    pub fn chown(&self, rel: &[u8], uid: u32, gid: u32) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        let (u, g) = (rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid));
        Ok(rustix::fs::chownat(&dir, OsStr::from_bytes(name), Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// Set the permission bits of the directory `rel` through a handle of it.
    pub fn chmod_dir(&self, rel: &[u8], mode: u32) -> io::Result<()> {
        let fd = self.resolve(rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW, Mode::empty())?;
        Ok(rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?)
    }

    /// Set the modification (and access) time of `rel` itself, a symlink included.
    pub fn set_mtime(&self, rel: &[u8], sec: i64, nsec: u32) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        let t = Timespec { tv_sec: sec, tv_nsec: nsec as _ };
        let ts = Timestamps { last_access: t, last_modification: t };
        Ok(rustix::fs::utimensat(&dir, OsStr::from_bytes(name), &ts, AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// Every entry of the tree, parents before children, the top first. Each directory is
    /// opened beneath the top (never through a symlink) and its entries are `lstat`-ed relative
    /// to that handle; a directory that is not the one listed (swapped while walking) fails the
    /// walk. An entry that `skip` accepts (given its path and metadata) is not reported and
    /// nothing below it is visited. Only one directory handle is open at a time, so depth is no limit. An
    /// error names the path it happened at (an error of `f`: the entry it was given).
    pub fn walk(
        &self,
        skip: &dyn Fn(&[u8], &Meta) -> bool,
        f: &mut dyn FnMut(Found) -> io::Result<()>,
    ) -> Result<(), WalkError> {
        let at = |rel: &[u8]| {
            let path = self.display(rel);
            move |error: io::Error| WalkError { path, error }
        };
        let top = Meta::of_fd(&self.fd).map_err(at(b""))?;
        f(Found { rel: Vec::new(), meta: top, target: None }).map_err(at(b""))?;
        let mut todo: Vec<(Vec<u8>, Meta)> = vec![(Vec::new(), top)];
        while let Some((rel, seen)) = todo.pop() {
            let changed = || io::Error::other("changed while being read (a directory was replaced)");
            let owned;
            let dir = if rel.is_empty() {
                self.fd.as_fd()
            } else {
                // The worst moment for a swap: listed as a directory, not yet opened.
                crate::sys::failpoint::hit("walk.descend");
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW;
                owned = self
                    .resolve(&rel, flags, Mode::empty())
                    .map_err(|e| match e.raw_os_error() {
                        Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EXDEV) => changed(),
                        _ => e,
                    })
                    .map_err(at(&rel))?;
                owned.as_fd()
            };
            let now = Meta::of_fd(dir).map_err(at(&rel))?;
            if (now.dev, now.ino) != (seen.dev, seen.ino) {
                return Err(at(&rel)(changed()));
            }
            let mut names = list(dir).map_err(at(&rel))?;
            names.sort();
            for name in names {
                let child = if rel.is_empty() { name.clone() } else { [&rel[..], b"/", &name].concat() };
                let n = OsStr::from_bytes(&name);
                let meta = match rustix::fs::statat(dir, n, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => Meta::of_stat(&st),
                    // Removed since the listing: it is simply not there any more.
                    Err(rustix::io::Errno::NOENT) => continue,
                    Err(e) => return Err(at(&child)(e.into())),
                };
                if skip(&child, &meta) {
                    continue;
                }
                let target = match meta.kind {
                    Kind::Symlink => {
                        Some(rustix::fs::readlinkat(dir, n, Vec::new()).map_err(|e| at(&child)(e.into()))?.into_bytes())
                    }
                    _ => None,
                };
                if meta.is_dir() {
                    todo.push((child.clone(), meta));
                }
                f(Found { rel: child.clone(), meta, target }).map_err(at(&child))?;
            }
        }
        Ok(())
    }
}

/// A walk that failed, and where.
#[derive(Debug)]
pub struct WalkError {
    /// The path (top joined with the relative path) it failed at.
    pub path: PathBuf,
    /// What failed.
    pub error: io::Error,
}

impl From<WalkError> for crate::error::Error {
    fn from(w: WalkError) -> Self {
        crate::error::Error::io(w.path, w.error)
    }
}

/// Set the access and modification time of an open file.
pub fn set_times(f: &File, sec: i64, nsec: u32) -> io::Result<()> {
    let t = Timespec { tv_sec: sec, tv_nsec: nsec as _ };
    Ok(rustix::fs::futimens(f, &Timestamps { last_access: t, last_modification: t })?)
}

impl AsFd for Tree {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Names in an open directory, without `.` and `..`.
fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(name.to_vec());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_on_the_way_are_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"s").unwrap();
        let top = t.path().join("top");
        std::fs::create_dir(&top).unwrap();
        std::os::unix::fs::symlink(&outside, top.join("a")).unwrap();
        std::os::unix::fs::symlink("../outside", top.join("rel")).unwrap();
        let tree = Tree::open(&top).unwrap();
        assert!(tree.open_file(b"a/secret").is_err());
        assert!(tree.open_file(b"rel/secret").is_err());
        assert!(tree.lstat(b"a/secret").is_err());
        assert!(tree.lstat(b"a").unwrap().unwrap().is_symlink());
        assert!(tree.create_file(b"a/new", 0o600).is_err());
        assert!(tree.mkdir(b"a/new", 0o700).is_err());
        assert!(tree.names(b"a").is_err());
        assert!(!outside.join("new").exists());
        assert_eq!(tree.read_link(b"a").unwrap(), outside.as_os_str().as_bytes());
        let mut seen = Vec::new();
        tree.walk(&|_, _| false, &mut |f| {
            seen.push(f.rel);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![b"".to_vec(), b"a".to_vec(), b"rel".to_vec()]);
    }

    #[test]
    fn the_component_walk_keeps_the_same_rule() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("d/e")).unwrap();
        std::fs::write(t.path().join("d/e/f"), b"x").unwrap();
        std::os::unix::fs::symlink("e", t.path().join("d/l")).unwrap();
        let tree = Tree::open(t.path()).unwrap();
        NO_OPENAT2.store(true, Ordering::Relaxed);
        let ok = tree.open_file(b"d/e/f").is_ok();
        let via_link = tree.open_file(b"d/l/f").is_err();
        let link_itself = tree.open_file(b"d/l").is_err();
        NO_OPENAT2.store(false, Ordering::Relaxed);
        assert!(ok && via_link && link_itself);
    }
}
