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
}
