//! Idmapped, read-only views of layers, so that a root owned by an ordinary user can modify
//! every file exactly as in a checkout it owns.
//!
//! Layers are owned by the store's user (root). overlayfs checks permissions against the lower
//! inode, so a layer file owned by root with mode 0644 could not be opened for writing by the
//! run's user, even though a write would only copy it up. An idmapped mount of the layer maps
//! the store's uid and gid to the owner's, so the run sees its own files; copy-up then creates
//! upper files owned by the owner too. Where the views live is the caller's business (the
//! overlay backend keeps one per owner and layer under `STORE/idmap/`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, IoContext, Result};
use crate::sys::lock::FileLock;
use crate::sys::Owner;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_EMPTY_PATH: libc::c_uint = 0x1000;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Make `target` (an existing empty directory) an idmapped, read-only view of `src` in which
/// files owned by `from` appear owned by `to`, unless something is already mounted there.
/// `lock` serialises makers of views in the same directory.
pub fn ensure_view(src: &Path, target: &Path, lock: &Path, from: Owner, to: Owner) -> Result<()> {
    let _lock = FileLock::acquire(lock, true)?;
    if crate::sys::mount::is_mounted(target)? {
        return Ok(());
    }
    std::fs::create_dir_all(target).at(target)?;
    let userns = userns_mapping(from, to)?;
    idmapped_bind(src, target, &userns)
}

/// A user namespace mapping `from` (the store's ids) to `to` (the owner's).
fn userns_mapping(from: Owner, to: Owner) -> Result<OwnedFd> {
    let mut cmd = Command::new("sleep");
    cmd.arg("60").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: unshare is async-signal-safe; the child only execs afterwards.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| Error::io("/proc/self/ns/user", e))?;
    let result = (|| {
        let proc = PathBuf::from(format!("/proc/{}", child.id()));
        // Inside the namespace `from` is id `from`; outside it is `to`: an idmapped mount with
        // this namespace shows files owned by `from` as owned by `to`.
        std::fs::write(proc.join("uid_map"), format!("{} {} 1\n", from.uid, to.uid)).at(proc.join("uid_map"))?;
        std::fs::write(proc.join("gid_map"), format!("{} {} 1\n", from.gid, to.gid)).at(proc.join("gid_map"))?;
        let f = std::fs::File::open(proc.join("ns/user")).at(proc.join("ns/user"))?;
        Ok(OwnedFd::from(f))
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn cstr(p: &Path) -> Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::BadInput(format!("NUL in {}", p.display())))
}

/// Bind `src` at `target`, read-only and idmapped through `userns`.
fn idmapped_bind(src: &Path, target: &Path, userns: &OwnedFd) -> Result<()> {
    let csrc = cstr(src)?;
    let ctarget = cstr(target)?;
    let empty = std::ffi::CString::new("").expect("empty");
    // SAFETY: raw syscalls with valid NUL-terminated paths; the returned fd is owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            csrc.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(Error::io(src, std::io::Error::other(format!("open_tree: {}", std::io::Error::last_os_error()))));
    }
    // SAFETY: open_tree returned a fresh descriptor.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: attr is a valid mount_attr of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(Error::io(
            src,
            std::io::Error::other(format!("mount_setattr(idmap): {}", std::io::Error::last_os_error())),
        ));
    }
    // SAFETY: valid descriptors and paths.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            ctarget.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(Error::io(
            target,
            std::io::Error::other(format!("move_mount: {}", std::io::Error::last_os_error())),
        ));
    }
    Ok(())
}
