//! Mount syscalls and /proc/self/mountinfo, with mounts modelled as values that clean up.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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

    /// Mount at `target` (nosuid, nodev). Returns a guard that unmounts on drop unless kept.
    pub fn mount(&self, target: &Path, volatile: bool) -> Result<MountGuard> {
        let opts = self.options(volatile);
        if opts.len() > MAX_OPTIONS {
            return Err(Error::BadInput(format!(
                "overlay options for {} are {} bytes, over the kernel's {MAX_OPTIONS}; use a shorter --store path or fewer layers",
                target.display(),
                opts.len()
            )));
        }
        mount(Some("execroot"), target, Some("overlay"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(opts.as_str()))
            .map_err(|e| Error::io(target, std::io::Error::other(format!("mount overlay: {e} (options: {opts})"))))?;
        Ok(MountGuard { target: target.to_path_buf(), armed: true })
    }

    /// Mount again an overlay that was mounted before: the one place of the volatile rule. A
    /// volatile overlay leaves a marker in its work directory that makes the kernel refuse a
    /// remount, as it cannot know whether the upper survived. When this process unmounted it
    /// cleanly (`unmounted_cleanly`, a refused destroy putting mounts back) the upper is
    /// intact and the marker may go, as the kernel documentation allows; otherwise (a crash or
    /// reboot) the upper is lost: [`Error::VolatileLost`].
    pub fn mount_again(&self, target: &Path, volatile: bool, unmounted_cleanly: bool) -> Result<MountGuard> {
        let marker = self.work.join("work/incompat/volatile");
        if volatile && std::fs::symlink_metadata(&marker).is_ok() {
            if !unmounted_cleanly {
                return Err(Error::VolatileLost(format!(
                    "{} was volatile and is no longer mounted (the system went down, or it was unmounted outside execroot); the kernel will not mount its upper directory again",
                    target.display()
                )));
            }
            std::fs::remove_dir_all(&marker).map_err(|e| Error::io(&marker, e))?;
        }
        self.mount(target, volatile)
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
    target: PathBuf,
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
            let _ = umount2(&self.target, MntFlags::UMOUNT_NOFOLLOW);
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

/// Unmount `target` (never lazily: a busy mount is reported, not hidden).
pub fn unmount(target: &Path) -> Result<Unmounted> {
    match umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) => Ok(Unmounted::Done),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(Unmounted::NotMounted),
        Err(nix::errno::Errno::EBUSY) => Ok(Unmounted::Busy),
        Err(e) => Err(Error::io(target, e.into())),
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
}
