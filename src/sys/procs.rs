//! Which processes use a directory (cwd, root, executable or an open file below it).

use std::path::Path;

use procfs::process::{FDTarget, Process};

/// Processes (as `pid (command)`) whose cwd, root, executable or open files lie under `dir`.
pub fn users_of(dir: &Path) -> Vec<String> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    // Processes come and go, and others' links are unreadable without privilege: whatever
    // cannot be read is skipped, as it shows nothing that uses `dir`.
    let Ok(procs) = procfs::process::all_processes() else { return out };
    for p in procs.flatten() {
        if p.pid() == me {
            continue;
        }
        if uses(&p, dir) {
            let comm = p.stat().map(|s| s.comm).unwrap_or_default();
            out.push(format!("{} ({comm})", p.pid()));
        }
    }
    out
}

/// Wait (at most `max`) while the only processes that use `dir` are git's: a commit made in a
/// worktree starts `git maintenance run --auto --detach` (git >= 2.47), which stays in it for a
/// moment after the commit returned, and a destroy right after the commit must not take that
/// for the user's work. Returns at once when nothing, or anything but git, uses `dir`.
pub fn wait_out_git(dir: &Path, max: std::time::Duration) {
    let until = std::time::Instant::now() + max;
    loop {
        let users = users_of(dir);
        if users.is_empty() || !users.iter().all(|u| u.ends_with(" (git)")) || std::time::Instant::now() >= until {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Kill (SIGKILL) every process that uses `dir`, again until none is left or `rounds` are
/// done (a dying process may have started others); returns the ones killed, as
/// [`users_of`] names them. Each is signalled through a pidfd opened before its use of `dir`
/// is checked again, so a pid reused in between is never hit. For trees that are execroot's
/// own scaffolding only (a dead provision build's temporary root), never a user's root.
pub fn kill_users_of(dir: &Path, rounds: usize) -> Vec<String> {
    use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
    let me = std::process::id() as i32;
    let mut killed = Vec::new();
    for _ in 0..rounds {
        let Ok(procs) = procfs::process::all_processes() else { break };
        let mut any = false;
        for p in procs.flatten() {
            if p.pid() == me {
                continue;
            }
            let Some(pid) = Pid::from_raw(p.pid()) else { continue };
            let Ok(fd) = pidfd_open(pid, PidfdFlags::empty()) else { continue };
            if uses(&p, dir) && pidfd_send_signal(&fd, Signal::KILL).is_ok() {
                let comm = p.stat().map(|s| s.comm).unwrap_or_default();
                killed.push(format!("{} ({comm})", p.pid()));
                any = true;
            }
        }
        if !any {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    killed
}

fn uses(p: &Process, dir: &Path) -> bool {
    let under = |t: procfs::ProcResult<std::path::PathBuf>| t.is_ok_and(|t| t.starts_with(dir));
    under(p.cwd())
        || under(p.root())
        || under(p.exe())
        || p.fd().is_ok_and(|fds| fds.flatten().any(|fd| matches!(fd.target, FDTarget::Path(t) if t.starts_with(dir))))
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_a_process_by_its_cwd() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep").arg("30").current_dir(dir.path()).spawn().unwrap();
        let users = super::users_of(dir.path());
        let _ = child.kill();
        let _ = child.wait();
        assert!(users.contains(&format!("{} (sleep)", child.id())), "{users:?}");
        assert!(super::users_of(dir.path()).is_empty());
    }

    #[test]
    fn kills_what_uses_a_directory_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let mut inside = std::process::Command::new("sleep").arg("30").current_dir(dir.path()).spawn().unwrap();
        let mut outside = std::process::Command::new("sleep").arg("30").current_dir(other.path()).spawn().unwrap();
        let killed = super::kill_users_of(dir.path(), 5);
        assert!(killed.contains(&format!("{} (sleep)", inside.id())), "{killed:?}");
        assert!(inside.wait().unwrap().code().is_none(), "killed by a signal");
        assert!(outside.try_wait().unwrap().is_none(), "a process elsewhere was hit");
        let _ = outside.kill();
        let _ = outside.wait();
    }
}
