//! Idmapped, read-only views of layers, so that a root owned by an ordinary user can modify
//! every file exactly as in a checkout it owns.
//!
//! Layers are owned by the store's user (root). overlayfs checks permissions against the lower
//! inode, so a layer file owned by root with mode 0644 could not be opened for writing by the
//! run's user, even though a write would only copy it up. An idmapped mount of the layer maps
//! the store's uid and gid to the owner's, so the run sees its own files; copy-up then creates
//! upper files owned by the owner too. Where the views live is the caller's business (the
//! overlay backend keeps one per owner and layer under `STORE/idmap/`).
//!
//! An idmapped mount needs a user namespace carrying the mapping, and a user namespace can only
//! be given its maps through a process living in it. `unshare(CLONE_NEWUSER)` is refused to a
//! multi-threaded process, so, as containerd does, a child is cloned straight into a new user
//! namespace. It runs no program (so nothing depends on PATH or on what is installed) and makes
//! only async-signal-safe calls: it blocks reading a pipe until the parent has written its maps
//! and opened `/proc/PID/ns/user`, after which the descriptor keeps the namespace alive and the
//! parent kills and reaps the child. The parent holds the pipe's write end, so a child whose
//! parent died sees end-of-file and exits rather than lingering.
//!
//! `open_tree` and `move_mount` go through rustix. Neither rustix nor nix wraps
//! `mount_setattr`, so that one call is a raw syscall on libc's `mount_attr`.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use rustix::fs::CWD;
use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};
use rustix::pipe::{pipe_with, PipeFlags};

use crate::error::{Error, IoContext, Result};
use crate::sys::lock::FileLock;
use crate::sys::Owner;

/// Stack of the namespace holder, which only ever calls `close` and `read`.
const HOLDER_STACK: usize = 64 * 1024;

/// Make `target` (an existing empty directory) an idmapped, read-only view of `src` in which
/// files owned by `from` appear owned by `to`, unless something is already mounted there.
/// `lock` serialises makers of views in the same directory; whoever removes a view there takes
/// it too.
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
    let holder = NsHolder::spawn()?;
    let proc = PathBuf::from(format!("/proc/{}", holder.pid));
    // Inside the namespace `from` is id `from`; outside it is `to`: an idmapped mount with
    // this namespace shows files owned by `from` as owned by `to`.
    std::fs::write(proc.join("uid_map"), format!("{} {} 1\n", from.uid, to.uid)).at(proc.join("uid_map"))?;
    std::fs::write(proc.join("gid_map"), format!("{} {} 1\n", from.gid, to.gid)).at(proc.join("gid_map"))?;
    let f = std::fs::File::open(proc.join("ns/user")).at(proc.join("ns/user"))?;
    Ok(OwnedFd::from(f))
}

/// A child process in a fresh user namespace, alive until dropped.
struct NsHolder {
    pid: Pid,
    /// Write end of the pipe the child blocks on; closing it (also when this process dies)
    /// lets the child exit.
    _release: OwnedFd,
}

impl NsHolder {
    fn spawn() -> Result<NsHolder> {
        let ns = "/proc/self/ns/user";
        let (wait_end, release) = pipe_with(PipeFlags::CLOEXEC).map_err(|e| Error::io(ns, e.into()))?;
        let release_fd = release.as_raw_fd();
        let wait_for_parent = Box::new(|| -> isize {
            // The child's inherited copy of the write end would keep its own read from ever
            // seeing end-of-file.
            let _ = nix::unistd::close(release_fd);
            let mut byte = [0u8; 1];
            while let Err(rustix::io::Errno::INTR) = rustix::io::read(&wait_end, &mut byte) {}
            0
        });
        let mut stack = vec![0u8; HOLDER_STACK];
        // SAFETY: without CLONE_VM the child runs on its own copy of this process's memory,
        // `stack` included, so the closure and the descriptors it borrows stay valid there. The
        // child may be a copy of one thread of a multi-threaded process, so it must make only
        // async-signal-safe calls: the closure (allocated before the clone) calls close(2) and
        // read(2) and returns, upon which libc's clone wrapper ends the child with _exit. Its
        // frames are a few hundred bytes, far below HOLDER_STACK. SIGCHLD as the exit signal
        // makes it an ordinary child for waitpid.
        let pid =
            unsafe { nix::sched::clone(wait_for_parent, &mut stack, CloneFlags::CLONE_NEWUSER, Some(libc::SIGCHLD)) }
                .map_err(|e| Error::io(ns, std::io::Error::other(format!("clone(CLONE_NEWUSER): {e}"))))?;
        Ok(NsHolder { pid, _release: release })
    }
}

impl Drop for NsHolder {
    fn drop(&mut self) {
        // Killed rather than only released: a holder cloned by another thread at the same
        // moment may hold a copy of our write end, and closing ours would then not wake the
        // child. The child is not yet reaped, so its pid cannot have been reused.
        let _ = kill(self.pid, Signal::SIGKILL);
        while let Err(nix::errno::Errno::EINTR) = waitpid(self.pid, None) {}
    }
}

/// Bind `src` at `target`, read-only and idmapped through `userns`.
fn idmapped_bind(src: &Path, target: &Path, userns: &OwnedFd) -> Result<()> {
    let tree = open_tree(CWD, src, OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC)
        .map_err(|e| Error::io(src, std::io::Error::other(format!("open_tree: {}", std::io::Error::from(e)))))?;
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP | libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr(2) reads `size` bytes of `attr`, which is a live libc::mount_attr
    // of exactly that size, and a NUL-terminated empty path; with AT_EMPTY_PATH it acts on the
    // detached tree `tree`, an open descriptor, as is `userns`. It writes to no memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc != 0 {
        return Err(Error::io(
            src,
            std::io::Error::other(format!("mount_setattr(idmap): {}", std::io::Error::last_os_error())),
        ));
    }
    move_mount(tree.as_fd(), "", CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| Error::io(target, std::io::Error::other(format!("move_mount: {}", std::io::Error::from(e)))))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn view_shows_files_as_the_owners_and_is_read_only() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: idmapped mounts need root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (src, target, lock) = (dir.path().join("src"), dir.path().join("view"), dir.path().join("lock"));
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("f"), b"x").unwrap();
        let (store, owner) = (Owner { uid: 0, gid: 0 }, Owner { uid: 65534, gid: 65533 });
        ensure_view(&src, &target, &lock, store, owner).unwrap();
        // Already mounted: left as it is, not stacked.
        ensure_view(&src, &target, &lock, store, owner).unwrap();
        let md = std::fs::metadata(target.join("f"));
        let write = std::fs::write(target.join("f"), b"y");
        let stacked = crate::sys::mount::mounts_under(&target).map(|m| m.len());
        while crate::sys::mount::unmount(&target).unwrap() == crate::sys::mount::Unmounted::Done {}
        let md = md.unwrap();
        assert_eq!((md.uid(), md.gid()), (owner.uid, owner.gid));
        assert_eq!(write.unwrap_err().raw_os_error(), Some(libc::EROFS));
        assert_eq!(stacked.unwrap(), 1);
        assert_eq!(std::fs::metadata(src.join("f")).unwrap().uid(), 0);
    }
}
