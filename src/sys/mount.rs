//! Mount syscalls and /proc/self/mountinfo, with mounts modelled as values that clean up.
//!
//! A mount point can lie inside a tree a root's run can change (a `--mount` SUBDIR in its
//! merged view, a sub-mount found in mountinfo), and `mount(2)` and `umount2(2)` given a path
//! follow every symlink on the way but the last, so a run that swaps a directory for a symlink
//! between a check and the call could make execroot mount on, or unmount, a host path. So no
//! path reaches those calls: a mount point is a [`Place`], a handle of the directory holding it
//! (resolved with [`Tree::parent`], never through a symlink) and its name. An overlay is
//! mounted on an `O_PATH` handle of the directory itself, opened `O_NOFOLLOW` from that
//! handle (`mount(2)` on `/proc/self/fd/N`), and checked afterwards to cover that name; an
//! unmount names the mount point as `/proc/self/fd/PARENT/NAME` with `UMOUNT_NOFOLLOW` (not a
//! handle of the mount itself: an open handle would keep it busy).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use rustix::fs::{AtFlags, Mode, OFlags, StatxAttributes, StatxFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sys::beneath::Tree;

/// Longest overlay option string the kernel accepts (one page).
pub const MAX_OPTIONS: usize = 4095;

/// The directories of one overlayfs mount: what a root (or a `--mount` tree) records, and all
/// that is needed to mount it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayDirs {
    /// Lower directories, top first (overlayfs order).
    pub lowers: Vec<PathBuf>,
    /// The private upper directory.
    pub upper: PathBuf,
    /// The private work directory (same filesystem as `upper`).
    pub work: PathBuf,
}

impl OverlayDirs {
    /// The option string, every option explicit (docs/roots.md justifies each); `volatile`
    /// skips all syncs of the upper filesystem.
    pub fn options(&self, volatile: bool) -> String {
        let lowers: Vec<String> = self.lowers.iter().map(|p| escape(p)).collect();
        let mut o = format!(
            "lowerdir={},upperdir={},workdir={},index=off,redirect_dir=on,metacopy=off,xino=off",
            lowers.join(":"),
            escape(&self.upper),
            escape(&self.work)
        );
        if volatile {
            o.push_str(",volatile");
        }
        o
    }

    /// Mount at `at` (nosuid, nodev), then check that the overlay covers `at`'s name in its
    /// directory: a rename racing the mount could have moved the directory it was mounted on,
    /// and then the overlay is taken away again and the mount fails. Returns a guard that
    /// unmounts on drop unless kept.
    pub fn mount(&self, at: Place, volatile: bool) -> Result<MountGuard> {
        let opts = self.options(volatile);
        if opts.len() > MAX_OPTIONS {
            return Err(Error::BadInput(format!(
                "overlay options for {} are {} bytes, over the kernel's {MAX_OPTIONS}; use a shorter --store path or fewer layers",
                at.path.display(),
                opts.len()
            )));
        }
        let dir = at.open_dir()?;
        let before = MountId::of(&dir).map_err(|e| Error::io(&at.path, e))?;
        // The worst moment for a swap: the mount point opened, not yet mounted on.
        crate::sys::failpoint::hit("mount.target-opened");
        mount(
            Some("execroot"),
            &fd_path(&dir),
            Some("overlay"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .map_err(|e| Error::io(&at.path, std::io::Error::other(format!("mount overlay: {e} (options: {opts})"))))?;
        drop(dir);
        if let Err(e) = at.covered(before) {
            // It is on the directory the handle named, wherever that went: found by its upper.
            let upper = self.upper.to_str();
            for m in mounts_under(Path::new("/"))?.into_iter().filter(|m| m.option("upperdir") == upper) {
                let _ = unmount(&m.target);
            }
            return Err(e);
        }
        Ok(MountGuard { at, armed: true })
    }

    /// Mount again an overlay that was mounted before: the one place of the volatile rule. A
    /// volatile overlay leaves a marker in its work directory that makes the kernel refuse a
    /// remount, as it cannot know whether the upper survived. When this process unmounted it
    /// cleanly (`unmounted_cleanly`, a refused destroy putting mounts back) the upper is
    /// intact and the marker may go, as the kernel documentation allows; otherwise (a crash or
    /// reboot) the upper is lost: [`Error::VolatileLost`].
    pub fn mount_again(&self, at: Place, volatile: bool, unmounted_cleanly: bool) -> Result<MountGuard> {
        let marker = self.work.join("work/incompat/volatile");
        if volatile && std::fs::symlink_metadata(&marker).is_ok() {
            if !unmounted_cleanly {
                return Err(Error::VolatileLost(format!(
                    "{} was volatile and is no longer mounted (the system went down, or it was unmounted outside execroot); the kernel will not mount its upper directory again",
                    at.path.display()
                )));
            }
            std::fs::remove_dir_all(&marker).map_err(|e| Error::io(&marker, e))?;
        }
        self.mount(at, volatile)
    }
}

/// A mount point: a handle of the directory holding it, reached without following any
/// symlink, and its name there (see the module documentation). The name itself is opened
/// `O_NOFOLLOW` when mounting and never followed when unmounting.
#[derive(Debug)]
pub struct Place {
    parent: OwnedFd,
    name: OsString,
    path: PathBuf,
}

impl Place {
    /// `rel` (at least one component) beneath `tree`, no symlink on the way followed.
    pub fn beneath(tree: &Tree, rel: &[u8]) -> Result<Place> {
        let path = tree.display(rel);
        Place::resolve(tree, rel).map_err(|e| resolve_error(&path, e))
    }

    /// The absolute path `path`, resolved from `/` without following any symlink. For mount
    /// points the kernel or the store names: mountinfo shows paths without symlinks, and the
    /// store's path is canonical, so a symlink on the way is a race and the resolution fails.
    pub fn at(path: &Path) -> Result<Place> {
        Place::resolve_at(path).map_err(|e| resolve_error(path, e))
    }

    fn resolve_at(path: &Path) -> io::Result<Place> {
        let rel = path.strip_prefix("/").map_err(|_| io::Error::other("not an absolute path"))?;
        Place::resolve(&Tree::open(Path::new("/"))?, rel.as_os_str().as_bytes())
    }

    fn resolve(tree: &Tree, rel: &[u8]) -> io::Result<Place> {
        let (parent, name) = tree.parent(rel)?;
        if name.is_empty() || name == b"." || name == b".." {
            return Err(io::Error::other("not a mount point below the top"));
        }
        Ok(Place { parent, name: OsStr::from_bytes(name).to_os_string(), path: tree.display(rel) })
    }

    /// The path, for messages (never opened).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An `O_PATH` handle of the directory itself: what is mounted on (or, once mounted, the
    /// mount's root, which must not be held while unmounting).
    fn open_dir(&self) -> Result<OwnedFd> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        rustix::fs::openat(&self.parent, self.name.as_os_str(), flags, Mode::empty()).map_err(|e| {
            // O_PATH opens a symlink itself, which O_DIRECTORY then refuses: say which it was.
            let link = rustix::fs::statat(&self.parent, self.name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink);
            match e {
                rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP if link => Error::Conflict(format!(
                    "{}: is a symlink; a mount point is never reached through a symlink",
                    self.path.display()
                )),
                rustix::io::Errno::NOTDIR => Error::Conflict(format!("{}: is not a directory", self.path.display())),
                e => resolve_error(&self.path, e.into()),
            }
        })
    }

    /// Check that a mount now covers the name, where the directory was on mount `before`: a
    /// new mount's root, of an overlay. Otherwise the directory was renamed away (and something
    /// else put in its place) while it was being mounted on.
    fn covered(&self, before: MountId) -> Result<()> {
        let changed = || {
            Error::Conflict(format!(
                "{}: changed while being mounted on (renamed or replaced); nothing is mounted there",
                self.path.display()
            ))
        };
        let dir = self.open_dir().map_err(|_| changed())?;
        let now = MountId::of(&dir).map_err(|e| Error::io(&self.path, e))?;
        if now.same(&before) || now.root == Some(false) || !is_overlay(&dir) {
            return Err(changed());
        }
        Ok(())
    }

    /// `/proc/self/fd/PARENT/NAME`: the kernel follows the handle, then looks up the name.
    fn proc_path(&self) -> PathBuf {
        fd_path(&self.parent).join(&self.name)
    }
}

/// Which mount a handle is on: its mount id where statx reports one (Linux 5.8), else only
/// its device (a new overlay always has a device of its own); and whether it is a mount's root,
/// where statx can tell.
#[derive(Clone, Copy, Debug)]
struct MountId {
    id: Option<u64>,
    dev: (u32, u32),
    root: Option<bool>,
}

impl MountId {
    fn of(fd: &OwnedFd) -> io::Result<MountId> {
        let st = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID | StatxFlags::BASIC_STATS)?;
        let id = (st.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id);
        let root = st
            .stx_attributes_mask
            .contains(StatxAttributes::MOUNT_ROOT)
            .then(|| st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT));
        Ok(MountId { id, dev: (st.stx_dev_major, st.stx_dev_minor), root })
    }

    fn same(&self, o: &MountId) -> bool {
        match (self.id, o.id) {
            (Some(a), Some(b)) => a == b,
            _ => self.dev == o.dev,
        }
    }
}

/// True when `fd` is on an overlayfs.
// `f_type`'s type differs between targets: the casts are needed on some.
#[allow(clippy::unnecessary_cast)]
fn is_overlay(fd: &OwnedFd) -> bool {
    rustix::fs::fstatfs(fd).is_ok_and(|s| s.f_type as i64 == libc::OVERLAYFS_SUPER_MAGIC as i64)
}

/// The magic link naming an open file (the kernel follows it to the file itself).
fn fd_path(fd: &impl AsFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// A mount point that could not be reached: a symlink or a non-directory on the way is named as
/// such (a race, or a tree made to redirect the mount).
fn resolve_error(path: &Path, e: io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::EXDEV) => Error::Conflict(format!(
            "{}: a symlink on the way; a mount point is never reached through a symlink",
            path.display()
        )),
        Some(libc::ENOTDIR) => Error::Conflict(format!("{}: a component is not a directory", path.display())),
        _ => Error::io(path, e),
    }
}

/// Overlay's lowerdir syntax uses `:` and `,` as separators; escape them.
fn escape(p: &Path) -> String {
    let s = p.to_string_lossy();
    s.replace('\\', "\\\\").replace(':', "\\:").replace(',', "\\,")
}

/// A mount that is unmounted when dropped, unless [`MountGuard::keep`] was called.
#[derive(Debug)]
pub struct MountGuard {
    at: Place,
    armed: bool,
}

impl MountGuard {
    /// Keep the mount: it now belongs to the root's state, not to this scope.
    pub fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = umount2(&self.at.proc_path(), MntFlags::UMOUNT_NOFOLLOW);
        }
    }
}

/// What an unmount found.
#[derive(Debug, PartialEq, Eq)]
pub enum Unmounted {
    /// It was mounted and is not any more.
    Done,
    /// Nothing was mounted there.
    NotMounted,
    /// Something (a process's cwd or open file) still uses it.
    Busy,
}

/// Unmount `target`, an absolute path as mountinfo or the store names it, reached as a
/// [`Place::at`] (no symlink followed; never lazily: a busy mount is reported, not hidden).
pub fn unmount(target: &Path) -> Result<Unmounted> {
    let at = match Place::resolve_at(target) {
        Ok(at) => at,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Unmounted::NotMounted),
        Err(e) => return Err(resolve_error(target, e)),
    };
    match umount2(&at.proc_path(), MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) => Ok(Unmounted::Done),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(Unmounted::NotMounted),
        Err(nix::errno::Errno::EBUSY) => Ok(Unmounted::Busy),
        Err(e) => Err(Error::io(target, e.into())),
    }
}

/// [`unmount`], returning as soon as the mount has left the mount table: the kernel's teardown
/// of the filesystem, which evicts every inode it cached (some microseconds each: 60-100 ms for
/// an overlay whose 22k files were looked at, as git does) before `umount2` returns, goes on in
/// a child process forked for it. Not a thread: a process waits at its exit for its threads'
/// system calls, so a CLI's destroy would still pay for the teardown (and so would a caller
/// reading its output to the end). The child keeps no descriptor but the mount point's parent
/// (so it holds none of the caller's pipes or locks) and is reaped by a thread, or by init once
/// a short-lived caller has exited. Never lazy either: a busy mount is reported, as by
/// [`unmount`].
pub fn unmount_no_wait(target: &Path) -> Result<Unmounted> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    if !is_mounted(target)? {
        return Ok(Unmounted::NotMounted);
    }
    let at = match Place::resolve_at(target) {
        Ok(at) => at,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Unmounted::NotMounted),
        Err(e) => return Err(resolve_error(target, e)),
    };
    let path = std::ffi::CString::new(at.proc_path().into_os_string().into_vec())
        .map_err(|_| Error::io(target, io::Error::other("a NUL in the mount point's path")))?;
    let keep = at.parent.as_raw_fd() as libc::c_uint;
    // For a kernel without close_range (before 5.9, or refused by a seccomp filter): every
    // descriptor below the limit is closed one by one.
    let limit = {
        let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes only the struct it is given.
        match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } {
            0 => rl.rlim_cur.min(1 << 20) as libc::c_int,
            _ => 1024,
        }
    };
    // SAFETY: the child calls only async-signal-safe functions (raw system calls and _exit) and
    // touches no memory but `path`, made before the fork.
    let pid = match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => unsafe {
            let below =
                keep == 0 || libc::syscall(libc::SYS_close_range, 0 as libc::c_uint, keep - 1, 0 as libc::c_uint) == 0;
            let above = libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0 as libc::c_uint) == 0;
            if !(below && above) {
                for fd in (0..limit).filter(|&fd| fd != keep as libc::c_int) {
                    libc::close(fd);
                }
            }
            let code = match libc::umount2(path.as_ptr(), libc::UMOUNT_NOFOLLOW) {
                0 => 0,
                _ => *libc::__errno_location() & 0xff,
            };
            libc::_exit(code)
        },
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
        Err(e) => return Err(Error::io(target, io::Error::other(format!("fork for the unmount: {e}")))),
    };
    // The child is reaped whatever happens from here, by a thread when it may still be
    // tearing the filesystem down (or here, waiting, when no thread can be started).
    let reap_later = move || {
        if std::thread::Builder::new()
            .name("unmount-reaper".into())
            .spawn(move || {
                let _ = waitpid(pid, None);
            })
            .is_err()
        {
            let _ = waitpid(pid, None);
        }
    };
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, 0)) => return Ok(Unmounted::Done),
            Ok(WaitStatus::Exited(_, code)) => {
                return match nix::errno::Errno::from_raw(code) {
                    nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT => Ok(Unmounted::NotMounted),
                    nix::errno::Errno::EBUSY => Ok(Unmounted::Busy),
                    e => Err(Error::io(target, e.into())),
                }
            }
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {}
            Ok(other) => {
                return Err(Error::io(target, io::Error::other(format!("the unmounting process ended: {other:?}"))))
            }
            Err(e) => {
                reap_later();
                return Err(Error::io(target, e.into()));
            }
        }
        // The table loses the mount before the kernel tears its filesystem down.
        match is_mounted(target) {
            Ok(true) => {}
            Ok(false) => {
                reap_later();
                return Ok(Unmounted::Done);
            }
            Err(e) => {
                reap_later();
                return Err(e);
            }
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone)]
pub struct MountInfo {
    /// Mount point.
    pub target: PathBuf,
    /// Filesystem type.
    pub fstype: String,
    /// Superblock options (for overlay: lowerdir, upperdir, ...), comma-separated as the kernel
    /// shows them, but sorted by name: procfs hands them over as a map.
    pub options: String,
}

impl MountInfo {
    /// The value of superblock option `name` (`upperdir` of an overlay), if present.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options.split(',').find_map(|o| o.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
    }
}

/// Mounts whose mount point is `prefix` or below it, deepest first (the unmount order).
pub fn mounts_under(prefix: &Path) -> Result<Vec<MountInfo>> {
    use procfs::FromBufRead;
    // Read in one go and parsed by procfs's parser: opening it through procfs's Process costs
    // three more syscalls and a read of the kernel version on every call, and destroy reads it.
    const PATH: &str = "/proc/self/mountinfo";
    let text = std::fs::read(PATH).map_err(|e| Error::io(PATH, e))?;
    let table = procfs::process::MountInfos::from_buf_read(&text[..]).map_err(|e| Error::io(PATH, proc_error(e)))?;
    let mut out = Vec::new();
    for m in table {
        // procfs splits the fields but leaves the kernel's octal escapes in the mount point.
        let target = PathBuf::from(unescape(m.mount_point.as_os_str()));
        if target.starts_with(prefix) {
            let mut options: Vec<String> = m
                .super_options
                .into_iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k,
                })
                .collect();
            options.sort();
            out.push(MountInfo { target, fstype: m.fs_type, options: options.join(",") });
        }
    }
    out.sort_by_key(|m| std::cmp::Reverse(m.target.components().count()));
    Ok(out)
}

/// Keep the OS error's kind where there is one, so callers can still tell what failed.
fn proc_error(e: procfs::ProcError) -> std::io::Error {
    match e {
        procfs::ProcError::Io(e, _) => e,
        procfs::ProcError::PermissionDenied(_) => std::io::Error::new(std::io::ErrorKind::PermissionDenied, e),
        procfs::ProcError::NotFound(_) => std::io::Error::new(std::io::ErrorKind::NotFound, e),
        e => std::io::Error::other(e),
    }
}

/// True when something is mounted exactly at `path`.
pub fn is_mounted(path: &Path) -> Result<bool> {
    Ok(mounts_under(path)?.iter().any(|m| m.target == path))
}

/// mountinfo escapes space, tab, newline and backslash as three octal digits (a byte, so the
/// first is at most 3).
fn unescape(s: &OsStr) -> OsString {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && (b'0'..=b'3').contains(&b[i + 1])
            && b[i + 2..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_decodes_only_byte_escapes() {
        assert_eq!(unescape(OsStr::new(r"a\040b\011c\012d\134e")), OsStr::new("a b\tc\nd\\e"));
        // Not escapes the kernel writes: kept as they are.
        assert_eq!(unescape(OsStr::new(r"\400\08x\04")), OsStr::new(r"\400\08x\04"));
    }

    #[test]
    fn finds_a_mount_point_with_a_space() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a b\\c");
        std::fs::create_dir(&target).unwrap();
        mount(Some("execroot-test"), &target, Some("tmpfs"), MsFlags::empty(), Some("size=1m")).unwrap();
        let found = mounts_under(dir.path());
        let mounted = is_mounted(&target);
        umount2(&target, MntFlags::UMOUNT_NOFOLLOW).unwrap();
        let found = found.unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].target, target);
        assert_eq!(found[0].fstype, "tmpfs");
        assert!(found[0].options.split(',').any(|o| o == "size=1024k"), "{}", found[0].options);
        assert!(mounted.unwrap());
        assert!(!is_mounted(&target).unwrap());
    }

    /// The forked unmount reports a busy mount and leaves it mounted, unmounts an idle one (gone
    /// from the table when it returns), and says when nothing was mounted.
    #[test]
    fn unmount_no_wait_reports_busy_done_and_not_mounted() {
        if !nix::unistd::geteuid().is_root() {
            assert!(std::env::var_os("EXECROOT_REQUIRE_MOUNT").is_none(), "EXECROOT_REQUIRE_MOUNT=1 but not root");
            eprintln!("skipped: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("m");
        std::fs::create_dir(&target).unwrap();
        mount(Some("execroot-test"), &target, Some("tmpfs"), MsFlags::empty(), Some("size=1m")).unwrap();
        let open = std::fs::File::create(target.join("f")).unwrap();
        assert_eq!(unmount_no_wait(&target).unwrap(), Unmounted::Busy);
        assert!(is_mounted(&target).unwrap());
        drop(open);
        assert_eq!(unmount_no_wait(&target).unwrap(), Unmounted::Done);
        assert!(!is_mounted(&target).unwrap());
        assert!(!target.join("f").exists());
        assert_eq!(unmount_no_wait(&target).unwrap(), Unmounted::NotMounted);
    }
}
