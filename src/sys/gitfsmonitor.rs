//! git's fsmonitor for a worktree that is an overlay: the `FSMN` index extension a root's
//! index is written with, and the hook (protocol version 2) that answers git's question
//! "what changed since this token?" from the overlay's upper directory alone.
//!
//! Every change made through an overlay lands in its upper directory: a written file is
//! copied up, a deleted one leaves a whiteout, an entry added to or removed from a directory
//! changes that directory's ctime (copying it up first). So "what changed since time T" is
//! found in the upper: every entry whose ctime is at or after T. The token is T, read from
//! the coarse clock that file times come from (a change after the read is never stamped
//! earlier). The answer is, for an entry changed at or after T:
//!
//! - the top directory: `/` alone, git's "everything may have changed" (a file that existed
//!   only in the upper can be deleted there without a trace but its directory's ctime);
//! - any other directory `d`: `d/` (every index entry below it), and a name inside `d` and
//!   inside each directory below it in the merged view (`d/x` makes git look at `d` again in
//!   its untracked cache; `d/` alone would not, nor would it reach a tree moved in whole);
//! - anything else (a file, a symlink, a whiteout): its path.
//!
//! What the hook cannot read, a token it did not make, a protocol version but 2: `/`, or a
//! failure, which git also takes as "everything". docs/roots.md says what this relies on.

use std::io::Write;
use std::path::Path;

/// The prefix of every token the hook makes.
const TOKEN_PREFIX: &str = "execroot:";

/// The name reported inside a changed directory so that git's untracked cache looks at it
/// again (any name does; this one names what put it there).
const PROBE: &[u8] = b".execroot-fsmonitor";

/// Seconds for which a changed file is reported again after its ctime (see [`changes`]): a
/// write(2) that lasts longer while git stages the file mid-write stays unseen.
pub const FILE_LAG: i64 = 30;

/// The oldest git whose fsmonitor handles what the hook reports as this module says: a path
/// with a trailing `/` invalidates everything below it from 2.31, a path naming a directory
/// likewise from 2.37, when gitlinks also stopped being taken as valid.
pub const MIN_GIT: (u32, u32) = (2, 37);

/// A point in time as the hook's token holds it: seconds and nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instant(pub i64, pub i64);

impl Instant {
    /// Now, by the coarse realtime clock that stamps file times.
    pub fn now() -> std::io::Result<Instant> {
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME_COARSE).map_err(std::io::Error::from)?;
        Ok(Instant(t.tv_sec(), t.tv_nsec()))
    }

    /// The ctime of `st`.
    fn ctime(st: &rustix::fs::Stat) -> Instant {
        Instant(st.st_ctime, st.st_ctime_nsec as i64)
    }

    /// The token that names this instant.
    pub fn token(self) -> String {
        format!("{TOKEN_PREFIX}{}.{:09}", self.0, self.1)
    }

    /// The instant a token of [`Instant::token`] names.
    pub fn parse(token: &str) -> Option<Instant> {
        let (s, n) = token.strip_prefix(TOKEN_PREFIX)?.split_once('.')?;
        let (s, n) = (s.parse().ok()?, n.parse().ok()?);
        (0..1_000_000_000).contains(&n).then_some(Instant(s, n))
    }
}

/// The payload of the `FSMN` index extension (version 2) for an index whose every entry is
/// valid as of `token`: the version, the token and a NUL, the bitmap's size and an empty
/// EWAH bitmap (a set bit marks an entry that is not valid).
pub fn extension(token: &str) -> Vec<u8> {
    let mut bitmap = Vec::new();
    crate::sys::gituntracked::empty_bitmap(&mut bitmap);
    let mut out = Vec::with_capacity(8 + token.len() + 1 + bitmap.len());
    out.extend_from_slice(&2u32.to_be_bytes());
    out.extend_from_slice(token.as_bytes());
    out.push(0);
    out.extend_from_slice(&(bitmap.len() as u32).to_be_bytes());
    out.extend_from_slice(&bitmap);
    out
}

/// Wait until the coarse clock is past the ctime of `dir` and return that instant: the
/// token of a root's index, read after the create's last change to its upper directory
/// (else the first `git status` would be told that the top changed).
pub fn settled_token(dir: &Path) -> std::io::Result<Instant> {
    let changed = Instant::ctime(&rustix::fs::lstat(dir)?);
    loop {
        let now = Instant::now()?;
        if now > changed {
            return Ok(now);
        }
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
}

/// The `core.fsmonitor` value that runs the hook of `exe` for the upper directory `upper`:
/// a shell command (git runs a value with spaces or quotes through `sh -c`), each path
/// single-quoted.
pub fn hook_command(exe: &Path, upper: &Path) -> String {
    let q = |p: &Path| format!("'{}'", p.to_string_lossy().replace('\'', r"'\''"));
    format!("{} git-fsmonitor {}", q(exe), q(upper))
}

/// The program a root's hook runs: `$EXECROOT_HOOK_BIN` when set (a library caller that is
/// not the `execroot` program itself, such as a test, names it there), else the running
/// program when it is `execroot`.
pub fn hook_program() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("EXECROOT_HOOK_BIN").filter(|p| !p.is_empty()) {
        return Some(p.into());
    }
    let exe = std::env::current_exe().ok()?;
    (exe.file_name()? == "execroot").then_some(exe)
}

/// Every user can run `exe`: it and each directory above it are executable by others (a
/// root's owner who is not the store's runs the hook as itself).
pub fn anyone_can_run(exe: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let ok = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
    ok(exe) && exe.ancestors().skip(1).all(ok)
}

/// The answer to git's query (`version`, `token`) for the worktree `merged`, an overlay
/// whose upper directory is `upper`: the new token, NUL, and each path NUL-terminated.
/// An error means "everything" to git as well (it is turned into a failing exit).
pub fn answer(merged: &Path, upper: &Path, version: &str, token: &str) -> std::io::Result<Vec<u8>> {
    if version != "2" {
        return Err(std::io::Error::other(format!("fsmonitor hook protocol version {version} (only 2 is spoken)")));
    }
    let now = Instant::now()?;
    let mut out = now.token().into_bytes();
    out.push(0);
    let everything = |mut out: Vec<u8>| {
        out.extend_from_slice(b"/\0");
        out
    };
    // A token from the future: the clock was stepped back, and times say nothing.
    let Some(since) = Instant::parse(token).filter(|t| *t <= now) else { return Ok(everything(out)) };
    // The upper says what changed only while it is the upper of the overlay git is in (not
    // once unmounted, nor in a mount namespace without the root's mount).
    if !overlay_of(merged, upper) {
        return Ok(everything(out));
    }
    match changes(merged, upper, since, &mut out) {
        Ok(true) => Ok(out),
        Ok(false) => {
            out.truncate(now.token().len() + 1);
            Ok(everything(out))
        }
        // What cannot be read may have changed.
        Err(_) => {
            out.truncate(now.token().len() + 1);
            Ok(everything(out))
        }
    }
}

/// `merged` is the mount point of an overlay whose upper directory is `upper`.
fn overlay_of(merged: &Path, upper: &Path) -> bool {
    let Ok(mounts) = crate::sys::mount::mounts_under(merged) else { return false };
    mounts.iter().any(|m| {
        m.target == merged && m.fstype == "overlay" && m.option("upperdir").is_some_and(|u| Path::new(u) == upper)
    })
}

/// Append to `out` the paths changed at or after `since` ([module docs](self)); false when
/// the top directory changed (the answer is then "everything").
fn changes(merged: &Path, upper: &Path, since: Instant, out: &mut Vec<u8>) -> std::io::Result<bool> {
    use crate::sys::beneath::Tree;
    // Read beneath their handles, no symlink followed: a run may swap a directory for one
    // while the hook reads.
    let (merged, upper) = (Tree::open(merged)?, Tree::open(upper)?);
    if Instant::ctime(&upper.stat_dir(b"")?) >= since {
        return Ok(false);
    }
    // A file's ctime is stamped when a write starts, and one long write can go on after git
    // hashed what was there: files are reported for FILE_LAG after their last stamp.
    let file_since = Instant(since.0 - FILE_LAG, since.1);
    let mut changed_dirs: Vec<Vec<u8>> = Vec::new();
    // Each directory with whether one above it is reported already (everything below a
    // reported directory is reported with it).
    let mut stack: Vec<(Vec<u8>, bool)> = vec![(Vec::new(), false)];
    while let Some((dir, covered)) = stack.pop() {
        for (name, st) in upper.stat_entries(&dir)? {
            if dir.is_empty() && name == b".git" {
                continue;
            }
            let rel = join(&dir, &name);
            let ctime = Instant::ctime(&st);
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
                let new = !covered && ctime >= since;
                if new {
                    changed_dirs.push(rel.clone());
                }
                stack.push((rel, covered || new));
            } else if !covered && ctime >= file_since {
                push(out, &rel);
            }
        }
    }
    for d in &changed_dirs {
        let mut slash = d.clone();
        slash.push(b'/');
        push(out, &slash);
        // Each directory below it in the merged view, for the untracked cache.
        let mut walk = vec![d.clone()];
        while let Some(dir) = walk.pop() {
            push(out, &join(&dir, PROBE));
            for (name, st) in merged.stat_entries(&dir)? {
                if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory && name != b".git"
                {
                    walk.push(join(&dir, &name));
                }
            }
        }
    }
    Ok(true)
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    if !dir.is_empty() {
        p.extend_from_slice(dir);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn push(out: &mut Vec<u8>, path: &[u8]) {
    out.extend_from_slice(path);
    out.push(0);
}

/// Run the hook: `args` are what follows `git-fsmonitor` on its command line (the upper
/// directory, then git's version and token); the answer goes to `stdout`, in the worktree
/// git runs it in (the current directory).
pub fn run_hook(args: &[std::ffi::OsString], stdout: &mut impl Write) -> std::io::Result<()> {
    let [upper, version, token] = args else {
        return Err(std::io::Error::other("usage: execroot git-fsmonitor UPPER VERSION TOKEN"));
    };
    let merged = std::env::current_dir()?;
    let answer = answer(&merged, Path::new(upper), &version.to_string_lossy(), &token.to_string_lossy())?;
    stdout.write_all(&answer)?;
    stdout.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_others_are_refused() {
        let t = Instant(1_796_349_606, 5);
        assert_eq!(t.token(), "execroot:1796349606.000000005");
        assert_eq!(Instant::parse(&t.token()), Some(t));
        for bad in ["", "1796349606", "execroot:1.x", "execroot:1.1000000000", "watchman:c:1:2"] {
            assert_eq!(Instant::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn extension_is_version_token_and_an_empty_bitmap() {
        let e = extension("execroot:1.000000002");
        let mut want = 2u32.to_be_bytes().to_vec();
        want.extend_from_slice(b"execroot:1.000000002\0");
        want.extend_from_slice(&20u32.to_be_bytes());
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(e, want);
    }

    #[test]
    fn the_command_quotes_its_paths_for_the_shell() {
        assert_eq!(
            hook_command(Path::new("/usr/bin/exec root"), Path::new("/s/it's")),
            r"'/usr/bin/exec root' git-fsmonitor '/s/it'\''s'"
        );
    }

    /// Plain directories stand for the upper and the merged view here ([`changes`] reads
    /// ctimes, nothing of overlayfs); the hook on a real overlay, with git, is tested in
    /// tests/git_overlay.rs.
    #[test]
    fn the_answer_names_what_changed_since_the_token() {
        let d = tempfile::tempdir().unwrap();
        let (upper, merged) = (d.path().join("upper"), d.path().join("merged"));
        for p in ["a/b/c", "old"] {
            std::fs::create_dir_all(upper.join(p)).unwrap();
            std::fs::create_dir_all(merged.join(p)).unwrap();
        }
        std::fs::create_dir_all(merged.join("a/b/c/deep")).unwrap();
        std::fs::write(upper.join("old/f"), "f").unwrap();
        std::fs::write(upper.join(".git"), "gitdir: x").unwrap();
        let since = settled_token(&upper).unwrap();
        let paths_of = |since: Instant| {
            let mut out = Vec::new();
            let whole = changes(&merged, &upper, since, &mut out).unwrap();
            let paths: Vec<Vec<u8>> = out.split(|&b| b == 0).filter(|p| !p.is_empty()).map(<[u8]>::to_vec).collect();
            (whole, paths)
        };
        // Nothing but a file changed within FILE_LAG (and never the top's `.git`).
        assert_eq!(paths_of(since), (true, vec![b"old/f".to_vec()]));
        std::fs::write(upper.join("a/b/new"), "n").unwrap();
        let (whole, paths) = paths_of(since);
        assert!(whole);
        for want in [&b"old/f"[..], b"a/b/", b"a/b/.execroot-fsmonitor", b"a/b/c/.execroot-fsmonitor"] {
            assert!(paths.iter().any(|p| p == want), "{:?} not in {paths:?}", String::from_utf8_lossy(want));
        }
        assert!(paths.iter().any(|p| p == b"a/b/c/deep/.execroot-fsmonitor"), "the merged view's directories too");
        assert!(!paths.iter().any(|p| p == b"a/b/new"), "covered by a/b/");
        // A file older than FILE_LAG before the token is not named.
        let later = Instant(since.0 + FILE_LAG + 1, since.1);
        assert!(!paths_of(later).1.iter().any(|p| p == b"old/f"));
        // The top changed: everything.
        std::fs::write(upper.join("top"), "t").unwrap();
        assert!(!paths_of(since).0);
        // Not an overlay with that upper, a token it did not make or from the future, another
        // version, an unreadable upper: everything, or a failure.
        let everything = |a: Vec<u8>| a.ends_with(b"\0/\0");
        let now = Instant::now().unwrap();
        assert!(everything(answer(&merged, &upper, "2", &since.token()).unwrap()));
        assert!(everything(answer(&merged, &upper, "2", "1796349606").unwrap()));
        assert!(everything(answer(&merged, &upper, "2", &Instant(now.0 + 60, 0).token()).unwrap()));
        assert!(answer(&merged, &upper, "1", &since.token()).is_err());
        assert!(everything(answer(&merged, &d.path().join("nothing"), "2", &since.token()).unwrap()));
    }
}
