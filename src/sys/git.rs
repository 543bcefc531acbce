//! Running git: as a given user, with a clean environment and a timeout, always.

use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use wait_timeout::ChildExt;

use crate::error::{Error, Result};
use crate::sys::Owner;

/// The output of a finished git command.
pub struct GitOutput {
    /// Exit status code (None if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: String,
}

impl GitOutput {
    /// True on exit status 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Run `git -C dir ARGS` as `owner` with `GIT_DIR`, `GIT_INDEX_FILE`, `GIT_WORK_TREE` and
/// friends cleared, killing it after `timeout`.
pub fn run(dir: &Path, owner: Owner, args: &[&str], timeout: Duration) -> Result<GitOutput> {
    run_holding(dir, owner, args, timeout, None)
}

/// [`run`], with `hold` (an open file carrying an flock) inherited by git and everything it
/// starts: should this process be killed, the lock stays held until the last of them exits,
/// so whoever takes it next knows no orphaned git is still writing.
pub fn run_holding(
    dir: &Path,
    owner: Owner,
    args: &[&str],
    timeout: Duration,
    hold: Option<BorrowedFd<'_>>,
) -> Result<GitOutput> {
    run_with_input(dir, owner, args, timeout, hold, None)
}

/// [`run_holding`], with `input` written to git's standard input (then closed) instead of
/// `/dev/null`: `git cat-file --batch` reads the objects it is asked for there.
pub fn run_with_input(
    dir: &Path,
    owner: Owner,
    args: &[&str],
    timeout: Duration,
    hold: Option<BorrowedFd<'_>>,
    input: Option<Vec<u8>>,
) -> Result<GitOutput> {
    run_git(dir, owner, args, timeout, hold, input, None)
}

/// [`run_with_input`] with `GIT_INDEX_FILE` set to `index` (an index of execroot's own, which
/// no worktree of the repository uses), the rest of the environment cleaned as ever.
pub fn run_with_index(
    dir: &Path,
    owner: Owner,
    args: &[&str],
    timeout: Duration,
    hold: Option<BorrowedFd<'_>>,
    index: &Path,
    input: Option<Vec<u8>>,
) -> Result<GitOutput> {
    run_git(dir, owner, args, timeout, hold, input, Some(index))
}

/// `git -C dir ARGS` for [`run_with_input`] and [`run_with_index`].
fn run_git(
    dir: &Path,
    owner: Owner,
    args: &[&str],
    timeout: Duration,
    hold: Option<BorrowedFd<'_>>,
    input: Option<Vec<u8>>,
    index: Option<&Path>,
) -> Result<GitOutput> {
    require_version()?;
    let mut cmd = clean_command("git");
    if let Some(i) = index {
        cmd.env("GIT_INDEX_FILE", i);
    }
    cmd.arg("-C").arg(dir).args(args);
    run_command(cmd, dir, owner, format!("git {}", args.join(" ")), timeout, hold, input)
}

/// Run the hook `program` with `args` in `dir` as git runs its hooks, with everything a git
/// command here gets: as `owner`, the clean environment of [`run`] (`GIT_DIR`,
/// `GIT_WORK_TREE` and friends cleared, as `git worktree add` clears them for
/// `post-checkout`), and killed after `timeout`.
pub fn run_hook(program: &Path, dir: &Path, owner: Owner, args: &[&str], timeout: Duration) -> Result<GitOutput> {
    let mut cmd = clean_command(program);
    cmd.current_dir(dir).args(args);
    run_command(cmd, dir, owner, format!("{} {}", program.display(), args.join(" ")), timeout, None, None)
}

/// A command for `program` with the environment every git command here gets: `GIT_DIR`,
/// `GIT_WORK_TREE` and friends cleared (as `git worktree add` clears them for its hooks), no
/// prompt, the C locale.
fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for v in [
        "GIT_DIR",
        "GIT_INDEX_FILE",
        "GIT_WORK_TREE",
        "GIT_COMMON_DIR",
        "GIT_OBJECT_DIRECTORY",
        "GIT_CEILING_DIRECTORIES",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("GIT_TERMINAL_PROMPT", "0").env("LC_ALL", "C");
    cmd
}

/// The common part of [`run_with_input`], [`run_with_index`] and [`run_hook`] (whose command
/// comes from [`clean_command`]): user, timeout, and `input` (if any) on standard input, else
/// `/dev/null`.
fn run_command(
    mut cmd: Command,
    dir: &Path,
    owner: Owner,
    what: String,
    timeout: Duration,
    hold: Option<BorrowedFd<'_>>,
    input: Option<Vec<u8>>,
) -> Result<GitOutput> {
    if let Some(fd) = hold.map(|f| f.as_raw_fd()) {
        // Only in the child, after fork: no other process this one starts inherits it.
        // SAFETY: fcntl is async-signal-safe and touches nothing but the child's fd table.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    if owner != Owner::current() {
        cmd.uid(owner.uid).gid(owner.gid);
        if let Ok(Some(u)) = nix::unistd::User::from_uid(owner.uid.into()) {
            cmd.env("HOME", u.dir);
        }
        // std drops root's supplementary groups itself when it switches uid.
    }
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = std::time::Instant::now();
    let mut child = cmd.spawn().map_err(|e| Error::io(dir, std::io::Error::other(format!("{what}: {e}"))))?;
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        // Written beside the readers: git may answer before it has read everything.
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&bytes);
        });
    }
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = match child.wait_timeout(timeout).map_err(|e| Error::io(dir, e))? {
        Some(s) => s,
        None => {
            // Reap it too, so no zombie is left and the reader threads see EOF.
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Timeout { what: format!("{what} in {}", dir.display()), secs: timeout.as_secs() });
        }
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).trim().to_string();
    // Each git run costs milliseconds: `-vv` shows where a create's time goes.
    tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, code = status.code(), "{what}");
    Ok(GitOutput { code: status.code(), stdout, stderr })
}

/// The oldest git execroot runs: 2.24 added `--end-of-options`, which every command uses
/// before user-given revisions so that no ref is read as an option.
pub const MIN_VERSION: (u32, u32) = (2, 24);

/// Fail as bad input (naming the version found) unless `git` is at least [`MIN_VERSION`];
/// asked once per process.
fn require_version() -> Result<()> {
    version().map(|_| ())
}

/// The `(major, minor)` version of the `git` execroot runs, asked once per process; bad input
/// (naming the version found) unless it is at least [`MIN_VERSION`].
pub fn version() -> Result<(u32, u32)> {
    static FOUND: std::sync::OnceLock<std::result::Result<(u32, u32), String>> = std::sync::OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let out = Command::new("git").arg("--version").env("LC_ALL", "C").output();
        let text = match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            Ok(o) => return Err(format!("`git --version` failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
            Err(e) => return Err(format!("cannot run git: {e}")),
        };
        match parse_version(&text) {
            Some(v) if v >= MIN_VERSION => Ok(v),
            Some((a, b)) => Err(format!(
                "git {a}.{b} is too old: execroot needs git >= {}.{} (for --end-of-options)",
                MIN_VERSION.0, MIN_VERSION.1
            )),
            None => Err(format!("cannot read git's version from {text:?}")),
        }
    });
    found.clone().map_err(Error::BadInput)
}

/// `(major, minor)` of `git version 2.47.3` (or `git version 2.39.2.windows.1`).
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.strip_prefix("git version ")?;
    let mut parts = v.split('.');
    Some((parts.next()?.trim().parse().ok()?, parts.next()?.trim().parse().ok()?))
}

impl GitOutput {
    /// Its stdout if it exited 0, else [`Error::Tool`] naming `git ARGS in DIR`.
    pub fn stdout_if_ok(self, dir: &Path, args: &[&str]) -> Result<Vec<u8>> {
        if !self.ok() {
            return Err(Error::Tool {
                what: format!("git {} in {}", args.join(" "), dir.display()),
                status: self.code,
                stderr: self.stderr,
            });
        }
        Ok(self.stdout)
    }
}

/// Like [`run`], failing with git's message unless it exits 0.
pub fn check(dir: &Path, owner: Owner, args: &[&str], timeout: Duration) -> Result<Vec<u8>> {
    run(dir, owner, args, timeout)?.stdout_if_ok(dir, args)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn output_and_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let o = run(dir.path(), Owner::current(), &["--version"], Duration::from_secs(60)).unwrap();
        assert!(o.ok() && o.stdout.starts_with(b"git version"), "{}", o.stderr);
        let started = Instant::now();
        let hang = ["-c", "alias.hang=!sleep 5", "hang"];
        match run(dir.path(), Owner::current(), &hang, Duration::from_millis(300)) {
            Err(Error::Timeout { what, .. }) => assert!(what.starts_with("git -c"), "{what}"),
            Err(e) => panic!("{e}"),
            Ok(o) => panic!("finished: {:?} {}", o.code, o.stderr),
        }
        // Well before the alias would have finished by itself.
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn versions_are_read_and_compared() {
        assert_eq!(parse_version("git version 2.47.3"), Some((2, 47)));
        assert_eq!(parse_version("git version 2.24.0.windows.1"), Some((2, 24)));
        assert_eq!(parse_version("git version 2.9.5"), Some((2, 9)));
        assert!(Some((2, 9)) < Some(MIN_VERSION));
        assert_eq!(parse_version("hub version 2"), None);
        // This machine's git is new enough.
        require_version().unwrap();
    }
}
