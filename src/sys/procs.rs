//! Which processes use a directory (cwd, root, executable or an open file below it).

use std::path::Path;

/// Processes (as `pid (command)`) whose cwd, root, executable or open files lie under `dir`.
pub fn users_of(dir: &Path) -> Vec<String> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return out };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let base = p.path();
        let uses =
            ["cwd", "root", "exe"].iter().any(|l| std::fs::read_link(base.join(l)).is_ok_and(|t| t.starts_with(dir)))
                || std::fs::read_dir(base.join("fd"))
                    .map(|fds| fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(dir))))
                    .unwrap_or(false);
        if uses {
            let comm = std::fs::read_to_string(base.join("comm")).unwrap_or_default();
            out.push(format!("{pid} ({})", comm.trim()));
        }
    }
    out
}
