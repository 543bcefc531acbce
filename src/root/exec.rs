//! `root exec` (the CLI's `execroot exec`, the service's `POST /v1/roots/{id}/exec`): run one
//! command in a root, as the root's owner, with its working directory inside the root, its
//! output captured (up to [`MAX_OUTPUT`] bytes a stream) and a timeout.
//!
//! The names of the request and result are the caller's SDK's (Paperclip's `environmentExecute`:
//! `exitCode`, `signal`, `timedOut`, `stdout`, `stderr`), so a plugin passes them through.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wait_timeout::ChildExt;

use crate::error::{Error, Result};
use crate::root::State;
use crate::sys::Owner;
use crate::Store;

/// Bytes of stdout (and, separately, of stderr) kept; the rest is read and dropped, and the
/// result says so (`stdoutTruncated`, `stderrTruncated`).
pub const MAX_OUTPUT: usize = 1 << 20;

/// The timeout when the request gives none: every command execroot runs has one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// The `PATH` a command gets unless the request's `env` sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to run (the body of `POST /v1/roots/{id}/exec`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecRequest {
    /// The program: a name looked up in `PATH`, or a path.
    pub command: String,
    /// Its arguments (no shell is involved).
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables added to the command's environment, which otherwise holds only `PATH`
    /// ([`DEFAULT_PATH`]), `HOME`, `USER` and `LOGNAME` of the owner.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// What the command reads on stdin (nothing, an empty stream, when absent).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Working directory: relative to the root's `cwd`, or absolute below it; no `..`.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Kill the command (and its process group) after this many milliseconds
    /// (default [`DEFAULT_TIMEOUT`]).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// How the command ended (the answer of `POST /v1/roots/{id}/exec`, `execroot exec --json`).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecResult {
    /// Exit status; null when a signal ended it.
    pub exit_code: Option<i32>,
    /// The signal that ended it (`SIGKILL`), if one did.
    pub signal: Option<String>,
    /// The timeout passed and execroot killed it.
    pub timed_out: bool,
    /// Standard output, as UTF-8 (invalid sequences replaced), at most [`MAX_OUTPUT`] bytes.
    pub stdout: String,
    /// Standard error, likewise.
    pub stderr: String,
    /// Standard output went past [`MAX_OUTPUT`] bytes; the rest was dropped.
    pub stdout_truncated: bool,
    /// Standard error went past [`MAX_OUTPUT`] bytes; the rest was dropped.
    pub stderr_truncated: bool,
}

/// The working directory for `req_cwd` in a root whose directory is `root_cwd`: never outside it
/// by `..` or an absolute path elsewhere. Symlinks inside are followed, but only by the command
/// itself, as the owner (see [`Store::exec_root`]), so they reach nothing the owner could not.
pub fn resolve_cwd(root_cwd: &Path, req_cwd: Option<&Path>) -> Result<PathBuf> {
    let Some(c) = req_cwd else { return Ok(root_cwd.to_path_buf()) };
    if c.components().any(|p| p == Component::ParentDir) {
        return Err(Error::BadInput(format!("cwd {}: must not contain '..'", c.display())));
    }
    if c.is_absolute() {
        if !c.starts_with(root_cwd) {
            return Err(Error::BadInput(format!(
                "cwd {}: must be inside the root ({})",
                c.display(),
                root_cwd.display()
            )));
        }
        return Ok(c.to_path_buf());
    }
    Ok(root_cwd.join(c))
}

/// A stream read to its end on a thread of its own, keeping the first [`MAX_OUTPUT`] bytes.
struct Capture {
    buf: Arc<Mutex<(Vec<u8>, bool)>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Capture {
    fn start(mut r: impl Read + Send + 'static) -> Capture {
        let buf = Arc::new(Mutex::new((Vec::new(), false)));
        let (tx, done) = std::sync::mpsc::channel();
        let b = buf.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 65536];
            loop {
                match r.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut g = b.lock().expect("not poisoned");
                        let room = MAX_OUTPUT - g.0.len().min(MAX_OUTPUT);
                        g.0.extend_from_slice(&chunk[..n.min(room)]);
                        if n > room {
                            g.1 = true;
                        }
                    }
                }
            }
            let _ = tx.send(());
        });
        Capture { buf, done }
    }

    /// What was read, once the stream ends or, when a process outside the killed group still
    /// holds it open, after a short grace (what was read by then).
    fn finish(self) -> (String, bool) {
        let _ = self.done.recv_timeout(Duration::from_secs(2));
        let g = self.buf.lock().expect("not poisoned");
        (String::from_utf8_lossy(&g.0).into_owned(), g.1)
    }
}

impl Store {
    /// Run `req` in root `id_or_key` (which must be `ready`): as the root's owner (its uid, gid
    /// and supplementary groups, switched to before the working directory is entered, so that
    /// the path is walked with the owner's rights), in a process group of its own which a
    /// timeout kills with SIGKILL, with a clean environment. The command is killed (SIGKILL)
    /// if the calling process dies before it ends.
    pub fn exec_root(&self, id_or_key: &str, req: &ExecRequest) -> Result<ExecResult> {
        let rec = self.find_root(id_or_key)?;
        if rec.state != State::Ready {
            return Err(Error::Conflict(format!("root {} is {}, not ready", rec.id, rec.state.as_str())));
        }
        if req.command.is_empty() {
            return Err(Error::BadInput("command: must not be empty".into()));
        }
        let cwd = resolve_cwd(&rec.cwd, req.cwd.as_deref())?;
        let timeout = req.timeout_ms.map(Duration::from_millis).unwrap_or(DEFAULT_TIMEOUT);
        let owner = rec.owner;
        let mut cmd = Command::new(&req.command);
        cmd.args(&req.args).env_clear().env("PATH", DEFAULT_PATH);
        let user = nix::unistd::User::from_uid(owner.uid.into()).ok().flatten();
        cmd.env("HOME", user.as_ref().map_or_else(|| cwd.clone(), |u| u.dir.clone()));
        if let Some(u) = &user {
            cmd.env("USER", &u.name).env("LOGNAME", &u.name);
        }
        cmd.envs(&req.env);
        cmd.process_group(0);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let switch = owner != Owner::current();
        let groups: Vec<libc::gid_t> = if switch { owner.groups() } else { vec![] };
        let cwd_c = std::ffi::CString::new(cwd.as_os_str().as_bytes())
            .map_err(|_| Error::BadInput(format!("cwd {}: contains a NUL byte", cwd.display())))?;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the forked child before exec and makes only
        // async-signal-safe system calls on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if switch
                    && (libc::setgroups(groups.len() as _, groups.as_ptr()) != 0
                        || libc::setgid(owner.gid) != 0
                        || libc::setuid(owner.uid) != 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                // The command dies with the thread that waits for it (which lives until the
                // command ends): a service or CLI killed by SIGKILL takes its command along
                // rather than leaving it to run past its timeout, keeping its root in use. Set
                // after the switch of credentials, which clears it; a parent already gone
                // before it was set is seen by getppid.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                if libc::chdir(cwd_c.as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::BadInput(format!("command {:?}: not found (or cwd {} missing)", req.command, cwd.display()))
            }
            std::io::ErrorKind::PermissionDenied => Error::BadInput(format!(
                "command {:?} in {}: permission denied for uid {}",
                req.command,
                cwd.display(),
                owner.uid
            )),
            _ => Error::io(&cwd, e),
        })?;
        let pgid = child.id() as i32;
        let out = Capture::start(child.stdout.take().expect("piped"));
        let err = Capture::start(child.stderr.take().expect("piped"));
        let mut stdin = child.stdin.take().expect("piped");
        let input = req.stdin.clone().unwrap_or_default().into_bytes();
        // A command that does not read its input must not block the writer forever.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let (status, timed_out) = match child.wait_timeout(timeout).map_err(|e| Error::io(&cwd, e))? {
            Some(s) => (s, false),
            None => {
                // SAFETY: a plain kill(2) of the command's own process group.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                (child.wait().map_err(|e| Error::io(&cwd, e))?, true)
            }
        };
        let (stdout, stdout_truncated) = out.finish();
        let (stderr, stderr_truncated) = err.finish();
        let signal = status
            .signal()
            .map(|s| nix::sys::signal::Signal::try_from(s).map(|s| s.as_str().to_string()).unwrap_or(s.to_string()));
        Ok(ExecResult {
            exit_code: status.code(),
            signal,
            timed_out,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
        })
    }
}
