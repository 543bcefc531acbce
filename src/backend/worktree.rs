//! The worktree backend: `git worktree add -b BRANCH PATH BASE-REF` for runs that need branch
//! semantics. Destroy never loses work: it refuses while there are uncommitted changes or
//! untracked files (unless forced), and keeps a branch that holds commits found nowhere else.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{chown_tree, tree_usage, Backend, BackendKind, Capabilities, Made, Plan, RootSpec, Usage, WorktreeRequest};
use crate::change::Diff;
use crate::error::{Error, IoContext, Result};
use crate::sys::git;
use crate::sys::Owner;
use crate::Store;

/// See the module documentation.
pub struct Worktree;

/// What a worktree root records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorktreeState {
    /// The repository (canonical path).
    pub repo: PathBuf,
    /// The worktree's branch.
    pub branch_name: String,
    /// The worktree (the root's `cwd`).
    pub worktree_path: PathBuf,
    /// The base ref it was made from.
    pub base_ref: String,
    /// Whether execroot created the branch (only then may it delete it).
    #[serde(default)]
    pub created_branch: bool,
}

/// `--mount` trees are not part of the worktree: pathspecs that leave them out.
fn exclude_pathspecs(root: &RootSpec) -> Vec<String> {
    root.mount_subdirs.iter().map(|m| format!(":(exclude,top){}", String::from_utf8_lossy(m))).collect()
}

/// Longest branch name execroot derives from a key.
pub const MAX_BRANCH: usize = 120;

/// Git's view of a worktree: the fields the caller checks before closing a workspace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
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
    fn of(store: &Store, repo: &Path) -> Result<Ctx> {
        Ok(Ctx { git_owner: repo_owner(repo)?, repo: repo.to_path_buf(), timeout: timeout(store) })
    }

    /// git in `dir`, trusting the worktree even if its files belong to another user.
    fn git(&self, dir: &Path, args: &[&str]) -> Result<git::GitOutput> {
        let safe = format!("safe.directory={}", dir.display());
        let mut all = vec!["-c", safe.as_str()];
        all.extend_from_slice(args);
        git::run(dir, self.git_owner, &all, self.timeout)
    }

    fn check(&self, dir: &Path, args: &[&str]) -> Result<Vec<u8>> {
        self.git(dir, args)?.stdout_if_ok(dir, args)
    }
}

fn status(store: &Store, ctx: &Ctx, root: &RootSpec, wst: &WorktreeState) -> Result<GitStatus> {
    let wt = &wst.worktree_path;
    // git status refreshes the index: it is one of execroot's git commands on this repository.
    let _lock = repo_lock(store, &ctx.repo)?;
    // --mount trees are not part of the worktree. They are excluded by pathspec rather than
    // unmounted, so that inspecting a live root never pulls a mount from under its run
    // (destroy unmounts them before its own check).
    let excludes = exclude_pathspecs(root);
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
    {
        let base = &wst.base_ref;
        let range = format!("{base}...HEAD");
        if let Ok(out) = ctx.check(wt, &["rev-list", "--left-right", "--count", "--end-of-options", &range]) {
            let text = String::from_utf8_lossy(&out);
            let mut it = text.split_whitespace().map(|n| n.parse::<u64>().unwrap_or(0));
            st.behind_count = it.next().unwrap_or(0);
            st.ahead_count = it.next().unwrap_or(0);
        }
        st.is_merged_into_base = ctx.git(wt, &["merge-base", "--is-ancestor", "--end-of-options", "HEAD", base])?.ok();
    }
    Ok(st)
}

/// True when branch `name` exists in `repo`.
fn branch_exists(ctx: &Ctx, repo: &Path, name: &str) -> Result<bool> {
    Ok(ctx.git(repo, &["rev-parse", "--verify", "--quiet", "--end-of-options", &format!("refs/heads/{name}")])?.ok())
}

/// Refuse, as bad input, a repository that is not one, a `--base-ref` that is not a commit
/// and a `--branch` that is not a valid branch name, before anything is recorded or made.
/// Neither may start with `-`: git would read it as an option (`--base-ref=--output=FILE`
/// made `git diff` write FILE). Every git command below also puts `--end-of-options` before
/// them, for roots recorded before this check.
fn validate_refs(ctx: &Ctx, repo: &Path, base: &str, branch: &str) -> Result<()> {
    let probe = ctx.git(repo, &["rev-parse", "--git-dir"])?;
    if !probe.ok() {
        return Err(Error::BadInput(format!("--repo {} is not a git repository: {}", repo.display(), probe.stderr)));
    }
    if base.starts_with('-') {
        return Err(Error::BadInput(format!("--base-ref {base:?}: a ref cannot start with '-'")));
    }
    let commit = format!("{base}^{{commit}}");
    if base.is_empty() || !ctx.git(repo, &["rev-parse", "--verify", "--quiet", "--end-of-options", &commit])?.ok() {
        return Err(Error::BadInput(format!("--base-ref {base:?} is not a commit in {}", repo.display())));
    }
    // `--branch` also expands `@{-N}` and prints the result: only a name that is its own
    // expansion is a branch name.
    let out = ctx.git(repo, &["check-ref-format", "--branch", branch])?;
    if branch.starts_with('-') || !out.ok() || out.stdout.trim_ascii_end() != branch.as_bytes() {
        return Err(Error::BadInput(format!("--branch {branch:?} is not a valid branch name")));
    }
    Ok(())
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
    type State = WorktreeState;
    const KIND: BackendKind = BackendKind::Worktree;
    const CAPABILITIES: Capabilities = Capabilities { commit: false };

    fn plan(&self, store: &Store, root: &RootSpec, req: &WorktreeRequest) -> Result<Plan<WorktreeState>> {
        let repo = req.repo.clone().ok_or_else(|| Error::BadInput("--repo is required".into()))?;
        let repo = repo.canonicalize().map_err(|e| Error::BadInput(format!("--repo {}: {e}", repo.display())))?;
        let base_ref = req.base_ref.clone().ok_or_else(|| Error::BadInput("--base-ref is required".into()))?;
        let branch_name = match (&req.branch, &root.key) {
            (Some(b), _) => b.clone(),
            (None, Some(k)) => sanitize_branch(k),
            (None, None) => format!("execroot/{}", root.id),
        };
        // git runs as the repository's owner, who must be able to create and remove the
        // worktree directory: it lives in a directory of its own that the owner owns (never in
        // the root's directory, whose state file the owner must not be able to replace).
        let parent = match store.config()?.worktree_dir {
            Some(d) => d.join(&root.id),
            None => root.dir.join("wt"),
        };
        let worktree_path = parent.join("worktree");
        // A worktree belongs to whoever owns the repository unless told otherwise.
        let owner = if req.owner_given { None } else { Some(repo_owner(&repo)?) };
        // Whether execroot will create the branch is recorded before git runs, so that a create
        // killed right after `git worktree add -b` is undone with its branch. (Reading a ref
        // changes nothing.)
        let ctx = Ctx::of(store, &repo)?;
        validate_refs(&ctx, &repo, &base_ref, &branch_name)?;
        let created_branch = !branch_exists(&ctx, &repo, &branch_name)?;
        Ok(Plan {
            cwd: worktree_path.clone(),
            owner,
            state: WorktreeState { repo, branch_name, worktree_path, base_ref, created_branch },
        })
    }

    fn create(&self, store: &Store, root: &RootSpec, st: &mut WorktreeState) -> Result<Made> {
        let ctx = Ctx::of(store, &st.repo)?;
        let repo = &st.repo;
        let branch = st.branch_name.clone();
        let _lock = repo_lock(store, repo)?;
        let parent = st.worktree_path.parent().expect("planned below a parent").to_path_buf();
        std::fs::create_dir_all(&parent).at(&parent)?;
        std::os::unix::fs::lchown(&parent, Some(ctx.git_owner.uid), Some(ctx.git_owner.gid)).at(&parent)?;
        let path_s = st.worktree_path.to_string_lossy().into_owned();
        let mut made = Made::default();
        if branch_exists(&ctx, repo, &branch)? {
            // Someone else's branch (or one made since the plan): never ours to delete.
            st.created_branch = false;
            ctx.check(repo, &["worktree", "add", "--end-of-options", &path_s, &branch])?;
            made.warnings.push(format!("branch {branch} already existed; it is used as is and will be kept"));
        } else {
            st.created_branch = true;
            ctx.check(repo, &["worktree", "add", "-b", &branch, "--end-of-options", &path_s, &st.base_ref])?;
        }
        if root.owner != ctx.git_owner {
            chown_tree(&st.worktree_path, root.owner)?;
        }
        Ok(made)
    }

    fn is_live(&self, _store: &Store, root: &RootSpec, _st: &WorktreeState) -> Result<bool> {
        has_git_link(&root.cwd)
    }

    fn revive(&self, _store: &Store, root: &RootSpec, _st: &mut WorktreeState) -> Result<()> {
        if has_git_link(&root.cwd)? {
            Ok(())
        } else {
            Err(Error::NotFound(format!("worktree {} is gone", root.cwd.display())))
        }
    }

    fn detach(&self, _store: &Store, root: &RootSpec, _st: &WorktreeState) -> Result<bool> {
        Ok(super::detach_unmounted(&root.cwd))
    }

    fn check_destroy(&self, store: &Store, root: &RootSpec, st: &WorktreeState, force: bool) -> Result<Vec<String>> {
        let wt = &st.worktree_path;
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
        let ctx = Ctx::of(store, &st.repo)?;
        let st = status(store, &ctx, root, st)?;
        let lose = st.dirty_entry_count + st.untracked_entry_count;
        let mut warnings = Vec::new();
        if lose > 0 && !force {
            return Err(Error::Conflict(format!(
                "worktree {} has {} uncommitted change(s) and {} untracked file(s); commit them or use --force: {}",
                root.cwd.display(),
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

    fn destroy(&self, store: &Store, root: &RootSpec, st: &WorktreeState) -> Result<Vec<String>> {
        let wt = &st.worktree_path;
        let ctx = Ctx::of(store, &st.repo)?;
        let _lock = repo_lock(store, &ctx.repo)?;
        let mut warnings = Vec::new();
        let made_worktree = match std::fs::symlink_metadata(wt) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io(wt, e)),
        };
        if made_worktree {
            if has_git_link(wt)? {
                ctx.check(&ctx.repo, &["worktree", "remove", "--force", "--end-of-options", &wt.to_string_lossy()])?;
            }
            match std::fs::remove_dir_all(wt) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(wt, e)),
            }
            ctx.check(&ctx.repo, &["worktree", "prune"])?;
        }
        if let Some(parent) = wt.parent().filter(|p| p.file_name().is_some_and(|n| n == "wt" || n == root.id.as_str()))
        {
            let _ = std::fs::remove_dir(parent);
        }
        let branch = &st.branch_name;
        let full = format!("refs/heads/{branch}");
        // A create killed or failed before git made the branch (the repository may not even be
        // one): nothing to keep or delete.
        if !branch_exists(&ctx, &ctx.repo, branch)? {
            return Ok(warnings);
        }
        if !st.created_branch {
            warnings.push(format!("branch {branch} kept: execroot did not create it"));
            return Ok(warnings);
        }
        // --exclude patterns for --branches are branch names, not full refs. (No
        // --end-of-options here: `--not` and `--branches` are options; `full` starts with refs/.)
        let exclude = format!("--exclude={branch}");
        let unique = ctx.check(
            &ctx.repo,
            &["rev-list", "--count", &full, "--not", &exclude, "--branches", "--remotes", "--tags"],
        )?;
        let n: u64 = String::from_utf8_lossy(&unique).trim().parse().unwrap_or(1);
        if n == 0 {
            ctx.check(&ctx.repo, &["branch", "-D", "--end-of-options", branch])?;
        } else {
            warnings.push(format!("branch {branch} kept: it holds {n} commit(s) found on no other branch or tag"));
        }
        Ok(warnings)
    }

    fn diff(&self, store: &Store, root: &RootSpec, st: &WorktreeState) -> Result<Diff> {
        use crate::change::{Change, EntryKind};
        use crate::pathenc::PathJson;
        let ctx = Ctx::of(store, &st.repo)?;
        let wt = st.worktree_path.clone();
        let base = st.base_ref.clone();
        let _lock = repo_lock(store, &ctx.repo)?;
        let excludes = exclude_pathspecs(root);
        let mut args =
            vec!["diff", "--no-renames", "--name-status", "-z", "--end-of-options", base.as_str(), "--", "."];
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

    fn usage(&self, _store: &Store, root: &RootSpec, _st: &WorktreeState) -> Result<Usage> {
        Ok(tree_usage(&root.cwd))
    }

    fn git_status(&self, store: &Store, root: &RootSpec, st: &WorktreeState) -> Result<Option<GitStatus>> {
        if !has_git_link(&st.worktree_path)? {
            return Ok(None);
        }
        Ok(Some(status(store, &Ctx::of(store, &st.repo)?, root, st)?))
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
