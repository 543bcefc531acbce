//! Acting with another user's permissions inside this process: a thread of its own that has
//! become that user (uid, gid and supplementary groups) before it touches a path, so that the
//! kernel checks every access as it would that user's. Used where a privileged process (the
//! service, as root) reads or writes a path a caller named: what the caller could not read or
//! write itself, the thread cannot either.
//!
//! The thread switches with the raw system calls, which change only the calling thread's
//! credentials (glibc's wrappers would switch every thread of the process), and never switches
//! back: it ends with the work.

use crate::sys::Owner;

/// Run `f` on a new thread as `who` with `groups`; the thread's result, or why it could not
/// become that user.
pub fn run_as<T: Send + 'static>(
    who: Owner,
    groups: Vec<u32>,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<std::io::Result<T>>> {
    std::thread::Builder::new().name(format!("as-uid-{}", who.uid)).spawn(move || {
        become_user(who, &groups)?;
        Ok(f())
    })
}

/// Switch the calling thread (only) to `who` with `groups`, for good.
fn become_user(who: Owner, groups: &[u32]) -> std::io::Result<()> {
    let check = |r: libc::c_long| if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
    // SAFETY: plain system calls on values owned by this frame.
    unsafe {
        check(libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()))?;
        check(libc::syscall(libc::SYS_setresgid, who.gid, who.gid, who.gid))?;
        check(libc::syscall(libc::SYS_setresuid, who.uid, who.uid, who.uid))?;
    }
    Ok(())
}
