//! The worktree backend: `git worktree add -b BRANCH PATH BASE-REF` for runs that need branch
//! semantics. Destroy never loses work: it refuses while there are uncommitted changes or
//! untracked files (unless forced), and keeps a branch that holds commits found nowhere else.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::{chown_tree, tree_usage, Backend, Usage};
use crate::error::{Error, IoContext, Result};
use crate::policy::BackendKind;
use crate::root::RootRecord;
use crate::sys::git;
use crate::sys::Owner;
use crate::Store;

/// See the module documentation.
pub struct Worktree;

/// Longest branch name execroot derives from a key.
pub const MAX_BRANCH: usize = 120;

/// Git's view of a worktree: the fields the caller checks before closing a workspace.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GitStatus {
    /// Tracked files with changes (staged or not).
    pub dirty_entry_count: u64,
    /// Untracked files that are not ignored.
    pub untracked_entry_count: u64,
    /// Ignored files (disposable).
    pub ignored_entry_count: u64,
    /// Commits on HEAD not on the base.
    pub ahead_count: u64,
    /// Commits on the base not on HEAD.
    pub behind_count: u64,
    /// HEAD is an ancestor of the base.
    pub is_merged_into_base: bool,
    /// Paths of dirty and untracked entries (at most 50).
    pub paths: Vec<String>,
}

/// A branch name from a key: `[A-Za-z0-9._/-]`, other runs of characters become `-`, at most
/// 120 characters, no leading `-`, `.` or `/`, no `..`, not ending in `.lock` or `/`.
pub fn sanitize_branch(key: &str) -> String {
    let mut s = String::new();
    for c in key.chars() {
        let ok = c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-');
        if ok {
            s.push(c);
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    while s.contains("..") {
        s = s.replace("..", ".");
    }
    while s.contains("//") {
        s = s.replace("//", "/");
    }
    let mut s: String = s.trim_start_matches(['-', '.', '/']).chars().take(MAX_BRANCH).collect();
    while s.ends_with(['/', '.', '-']) || s.ends_with(".lock") {
        s = s.trim_end_matches(['/', '.', '-']).trim_end_matches(".lock").to_string();
    }
    if s.is_empty() {
        s = "execroot".into();
    }
    s
}

fn timeout(store: &Store) -> Duration {
    Duration::from_secs(store.config().ok().and_then(|c| c.git_timeout_secs).unwrap_or(120))
}

/// The repository's owner: git runs as this user, so no root-owned file lands in the repo.
fn repo_owner(repo: &Path) -> Result<Owner> {
    let md = std::fs::metadata(repo).at(repo)?;
    Ok(Owner { uid: md.uid(), gid: md.gid() })
}

/// Serialises execroot's git commands on one repository.
fn repo_lock(store: &Store, repo: &Path) -> Result<crate::sys::lock::FileLock> {
    let name = crate::Hash::of(repo.as_os_str().as_encoded_bytes()).to_hex();
    store.named_lock(&format!("repo-{}", &name[..32]))
}

struct Ctx {
    repo: PathBuf,
    git_owner: Owner,
    timeout: Duration,
}

impl Ctx {
    fn of(store: &Store, rec: &RootRecord) -> Result<Ctx> {
        let repo = rec.repo.clone().ok_or_else(|| Error::Corrupt(format!("root {} has no repository", rec.id)))?;
        Ok(Ctx { git_owner: repo_owner(&repo)?, repo, timeout: timeout(store) })
    }

    /// git in `dir`, trusting the worktree even if its files belong to another user.
    fn git(&self, dir: &Path, args: &[&str]) -> Result<git::GitOutput> {
        let safe = format!("safe.directory={}", dir.display());
        let mut all = vec!["-c", safe.as_str()];
        all.extend_from_slice(args);
        git::run(dir, self.git_owner, &all, self.timeout)
    }

    fn check(&self, dir: &Path, args: &[&str]) -> Result<Vec<u8>> {
        let o = self.git(dir, args)?;
        if !o.ok() {
            return Err(Error::Tool { what: format!("git {} in {}", args.join(" "), dir.display()), status: o.code, stderr: o.stderr });
        }
        Ok(o.stdout)
    }
}

fn status(store: &Store, ctx: &Ctx, rec: &RootRecord) -> Result<GitStatus> {
    let wt = rec.worktree_path.as_ref().ok_or_else(|| Error::Corrupt("no worktree path".into()))?;
    // git status refreshes the index: it is one of execroot's git commands on this repository.
    let _lock = repo_lock(store, &ctx.repo)?;
    // --mount trees are not part of the worktree. They are excluded by pathspec rather than
    // unmounted, so that inspecting a live root never pulls a mount from under its run
    // (destroy unmounts them before its own check).
    let excludes: Vec<String> = rec.mounts.iter().map(|m| format!(":(exclude,top){}", m.subdir)).collect();
    let mut args = vec!["status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored=matching", "--", "."];
    args.extend(excludes.iter().map(String::as_str));
    let out = ctx.check(wt, &args)?;
    let mut st = GitStatus::default();
    let mut fields = out.split(|&b| b == 0).filter(|f| !f.is_empty());
    while let Some(f) = fields.next() {
        if f.len() < 4 {
            continue;
        }
        let (code, path) = (&f[..2], String::from_utf8_lossy(&f[3..]).into_owned());
        match code {
            b"??" => st.untracked_entry_count += 1,
            b"!!" => {
                st.ignored_entry_count += 1;
                continue;
            }
            _ => {
                st.dirty_entry_count += 1;
                // A rename or copy carries its source path in the next field.
                if code[0] == b'R' || code[0] == b'C' {
                    fields.next();
                }
            }
        }
        if st.paths.len() < 50 {
            st.paths.push(path);
        }
    }
    if let Some(base) = &rec.base_ref {
        let range = format!("{base}...HEAD");
        if let Ok(out) = ctx.check(wt, &["rev-list", "--left-right", "--count", &range]) {
            let text = String::from_utf8_lossy(&out);
            let mut it = text.split_whitespace().map(|n| n.parse::<u64>().unwrap_or(0));
            st.behind_count = it.next().unwrap_or(0);
            st.ahead_count = it.next().unwrap_or(0);
        }
        st.is_merged_into_base = ctx.git(wt, &["merge-base", "--is-ancestor", "HEAD", base])?.ok();
    }
    Ok(st)
}

/// True when `wt/.git` exists; an error (other than absence) is an error, never "absent".
fn has_git_link(wt: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(wt.join(".git")) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(wt.join(".git"), e)),
    }
}

/// True when `dir` exists and holds anything.
fn has_entries(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => Ok(rd.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(dir, e)),
    }
}

impl Backend for Worktree {
    fn kind(&self) -> BackendKind {
        BackendKind::Worktree
    }

    fn create(&self, store: &Store, rec: &mut RootRecord) -> Result<()> {
        let repo = rec.repo.clone().ok_or_else(|| Error::BadInput("--repo is required".into()))?;
        let repo = repo.canonicalize().map_err(|e| Error::BadInput(format!("--repo {}: {e}", repo.display())))?;
        rec.repo = Some(repo.clone());
        let ctx = Ctx::of(store, rec)?;
        let base = rec.base_ref.clone().ok_or_else(|| Error::BadInput("--base-ref is required".into()))?;
        let branch = match (&rec.request.branch, &rec.key) {
            (Some(b), _) => b.clone(),
            (None, Some(k)) => sanitize_branch(k),
            (None, None) => format!("execroot/{}", rec.id),
        };
        let _lock = repo_lock(store, &repo)?;
        let probe = ctx.git(&repo, &["rev-parse", "--git-dir"])?;
        if !probe.ok() {
            return Err(Error::BadInput(format!(
                "--repo {} is not a git repository: {}",
                repo.display(),
                probe.stderr
            )));
        }
        if !ctx.git(&repo, &["check-ref-format", "--branch", &branch])?.ok() {
            return Err(Error::BadInput(format!("invalid branch name {branch:?}")));
        }
        // git runs as the repository's owner, who must be able to create and remove the
        // worktree directory: it lives in a directory of its own that the owner owns (never in
        // the root's directory, whose state file the owner must not be able to replace).
        let parent = match store.config()?.worktree_dir {
            Some(d) => d.join(&rec.id),
            None => rec.dir(store).join("wt"),
        };
        std::fs::create_dir_all(&parent).at(&parent)?;
        std::os::unix::fs::lchown(&parent, Some(ctx.git_owner.uid), Some(ctx.git_owner.gid)).at(&parent)?;
        let path = parent.join("worktree");
        // Recorded before git runs, so that doctor can finish or undo a killed create.
        rec.branch_name = Some(branch.clone());
        rec.worktree_path = Some(path.clone());
        rec.cwd = path.clone();
        rec.save(store)?;
        let path_s = path.to_string_lossy().into_owned();
        let exists = ctx.git(&repo, &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}")])?.ok();
        if exists {
            ctx.check(&repo, &["worktree", "add", &path_s, &branch])?;
            rec.warnings.push(format!("branch {branch} already existed; it is used as is and will be kept"));
        } else {
            ctx.check(&repo, &["worktree", "add", "-b", &branch, &path_s, &base])?;
            rec.created_branch = true;
        }
        if rec.request.owner.is_none() && store.config()?.owner.is_none() {
            // A worktree belongs to whoever owns the repository unless told otherwise.
            rec.owner = ctx.git_owner;
        }
        if rec.owner != ctx.git_owner {
            chown_tree(&path, rec.owner)?;
        }
        Ok(())
    }

    fn is_live(&self, _store: &Store, rec: &RootRecord) -> Result<bool> {
        has_git_link(&rec.cwd)
    }

    fn revive(&self, _store: &Store, rec: &mut RootRecord) -> Result<()> {
        if has_git_link(&rec.cwd)? {
            Ok(())
        } else {
            Err(Error::NotFound(format!("worktree {} is gone", rec.cwd.display())))
        }
    }

    fn detach(&self, _store: &Store, rec: &RootRecord) -> Result<bool> {
        Ok(super::detach_unmounted(rec))
    }

    fn check_destroy(&self, store: &Store, rec: &RootRecord, force: bool) -> Result<Vec<String>> {
        let Some(wt) = &rec.worktree_path else { return Ok(vec![]) };
        if !has_git_link(wt)? {
            // No git worktree there (a create killed before git ran, or one already removed).
            // Files without git's record cannot be checked for unsaved work: kept unless forced.
            if has_entries(wt)? && !force {
                return Err(Error::Conflict(format!(
                    "{} holds files but no .git, so execroot cannot tell whether they are unsaved work; look, then use --force",
                    wt.display()
                )));
            }
            return Ok(vec![]);
        }
        let ctx = Ctx::of(store, rec)?;
        let st = status(store, &ctx, rec)?;
        let lose = st.dirty_entry_count + st.untracked_entry_count;
        let mut warnings = Vec::new();
        if lose > 0 && !force {
            return Err(Error::Conflict(format!(
                "worktree {} has {} uncommitted change(s) and {} untracked file(s); commit them or use --force: {}",
                rec.cwd.display(),
                st.dirty_entry_count,
                st.untracked_entry_count,
                st.paths.join(", ")
            )));
        }
        if lose > 0 {
            warnings
                .push(format!("--force: discarded {lose} uncommitted or untracked entries: {}", st.paths.join(", ")));
        }
        if st.ignored_entry_count > 0 {
            warnings.push(format!("discarded {} ignored entries", st.ignored_entry_count));
        }
        Ok(warnings)
    }

    fn destroy(&self, store: &Store, rec: &RootRecord) -> Result<Vec<String>> {
        if rec.worktree_path.is_none() {
            // Killed or failed before git was asked for anything: nothing to undo in the repo.
            return Ok(vec![]);
        }
        let ctx = Ctx::of(store, rec)?;
        let _lock = repo_lock(store, &ctx.repo)?;
        let mut warnings = Vec::new();
        if let Some(wt) = &rec.worktree_path {
            if has_git_link(wt)? {
                ctx.check(&ctx.repo, &["worktree", "remove", "--force", &wt.to_string_lossy()])?;
            }
            match std::fs::remove_dir_all(wt) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(wt, e)),
            }
            if let Some(parent) =
                wt.parent().filter(|p| p.file_name().is_some_and(|n| n == "wt" || n == rec.id.as_str()))
            {
                let _ = std::fs::remove_dir(parent);
            }
        }
        ctx.check(&ctx.repo, &["worktree", "prune"])?;
        if let (Some(branch), true) = (&rec.branch_name, rec.created_branch) {
            let full = format!("refs/heads/{branch}");
            if ctx.git(&ctx.repo, &["rev-parse", "--verify", "--quiet", &full])?.ok() {
                // --exclude patterns for --branches are branch names, not full refs.
                let exclude = format!("--exclude={branch}");
                let unique = ctx.check(
                    &ctx.repo,
                    &["rev-list", "--count", &full, "--not", &exclude, "--branches", "--remotes", "--tags"],
                )?;
                let n: u64 = String::from_utf8_lossy(&unique).trim().parse().unwrap_or(1);
                if n == 0 {
                    ctx.check(&ctx.repo, &["branch", "-D", branch])?;
                } else {
                    warnings
                        .push(format!("branch {branch} kept: it holds {n} commit(s) found on no other branch or tag"));
                }
            }
        } else if let Some(branch) = &rec.branch_name {
            warnings.push(format!("branch {branch} kept: execroot did not create it"));
        }
        Ok(warnings)
    }

    fn diff(&self, store: &Store, rec: &RootRecord) -> Result<crate::change::Diff> {
        use crate::change::{Change, Diff, EntryKind};
        use crate::pathenc::PathJson;
        let ctx = Ctx::of(store, rec)?;
        let wt = rec.worktree_path.clone().ok_or_else(|| Error::Corrupt("no worktree path".into()))?;
        let base = rec.base_ref.clone().unwrap_or_else(|| "HEAD".into());
        let _lock = repo_lock(store, &ctx.repo)?;
        let excludes: Vec<String> = rec.mounts.iter().map(|m| format!(":(exclude,top){}", m.subdir)).collect();
        let mut args = vec!["diff", "--no-renames", "--name-status", "-z", base.as_str(), "--", "."];
        args.extend(excludes.iter().map(String::as_str));
        let tracked = ctx.check(&wt, &args)?;
        let mut args = vec!["ls-files", "--others", "--exclude-standard", "-z", "--", "."];
        args.extend(excludes.iter().map(String::as_str));
        let untracked = ctx.check(&wt, &args)?;
        let describe = |path: &[u8]| {
            let md = std::fs::symlink_metadata(wt.join(std::ffi::OsStr::from_bytes(path))).ok();
            let kind = md.as_ref().map(|m| EntryKind::of(m.file_type())).unwrap_or(EntryKind::File);
            Change {
                path: PathJson(path.to_vec()),
                kind,
                size: md.filter(|m| m.is_file()).map(|m| m.len()),
                content: false,
                mode: false,
            }
        };
        let mut d = Diff::default();
        let mut fields = tracked.split(|&b| b == 0).filter(|f| !f.is_empty());
        while let (Some(status), Some(path)) = (fields.next(), fields.next()) {
            let mut c = describe(path);
            match status.first() {
                Some(b'A') => d.added.push(c),
                Some(b'D') => d.deleted.push(c),
                _ => {
                    c.content = true;
                    d.modified.push(c);
                }
            }
        }
        d.added.extend(untracked.split(|&b| b == 0).filter(|f| !f.is_empty()).map(describe));
        for list in [&mut d.added, &mut d.modified, &mut d.deleted] {
            list.sort_by(|a, b| crate::store::manifest::cmp_paths(&a.path.0, &b.path.0));
        }
        Ok(d)
    }

    fn usage(&self, _store: &Store, rec: &RootRecord) -> Result<Usage> {
        Ok(tree_usage(&rec.cwd))
    }

    fn status(&self, store: &Store, rec: &RootRecord) -> Result<Option<serde_json::Value>> {
        if !rec.worktree_path.as_ref().is_some_and(|w| w.join(".git").exists()) {
            return Ok(None);
        }
        let st = status(store, &Ctx::of(store, rec)?, rec)?;
        Ok(Some(serde_json::to_value(st).expect("serializable")))
    }
}

#[cfg(test)]
mod tests {
    use super::sanitize_branch;

    #[test]
    fn branch_names_from_keys() {
        assert_eq!(sanitize_branch("PAP-12 fix the thing!"), "PAP-12-fix-the-thing");
        assert_eq!(sanitize_branch("..//weird..lock"), "weird");
        assert_eq!(sanitize_branch("???"), "execroot");
        assert!(sanitize_branch(&"x".repeat(300)).len() <= 120);
    }
}
