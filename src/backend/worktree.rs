//! The worktree backend: `git worktree add -b BRANCH PATH BASE-REF` for runs that need branch
//! semantics. Destroy never loses work: it refuses while there are uncommitted changes or
//! untracked files (unless forced), and keeps a branch that holds commits found nowhere else.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    chown_tree, tree_usage, Backend, BackendKind, Capabilities, Interrupted, Made, Plan, RootSpec, Usage,
    WorktreeRequest,
};
use crate::change::Diff;
use crate::error::{Error, IoContext, Result};
use crate::sys::beneath::{Kind, Meta, Tree};
use crate::sys::failpoint::hit;
use crate::sys::git;
use crate::sys::lock::FileLock;
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
pub(super) fn exclude_pathspecs(root: &RootSpec) -> Vec<String> {
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

pub(super) fn timeout(store: &Store) -> Duration {
    Duration::from_secs(store.config().ok().and_then(|c| c.git_timeout_secs).unwrap_or(120))
}

/// The repository's owner: git runs as this user, so no root-owned file lands in the repo.
pub(super) fn repo_owner(repo: &Path) -> Result<Owner> {
    let md = std::fs::metadata(repo).at(repo)?;
    Ok(Owner { uid: md.uid(), gid: md.gid() })
}

/// Serialises execroot's git commands on one repository.
pub(super) fn repo_lock(store: &Store, repo: &Path) -> Result<crate::sys::lock::FileLock> {
    let name = crate::Hash::of(repo.as_os_str().as_encoded_bytes()).to_hex();
    store.named_lock(&format!("repo-{}", &name[..32]))
}

pub(super) struct Ctx {
    pub(super) repo: PathBuf,
    pub(super) git_owner: Owner,
    timeout: Duration,
    /// The root's directory, when git runs for a root: see [`Ctx::git`].
    root_dir: Option<PathBuf>,
}

impl Ctx {
    pub(super) fn of(store: &Store, repo: &Path) -> Result<Ctx> {
        Ok(Ctx { git_owner: repo_owner(repo)?, repo: repo.to_path_buf(), timeout: timeout(store), root_dir: None })
    }

    /// For git run on behalf of `root`.
    pub(super) fn for_root(store: &Store, repo: &Path, root: &RootSpec) -> Result<Ctx> {
        Ok(Ctx { root_dir: Some(root.dir.clone()), ..Ctx::of(store, repo)? })
    }

    /// The same repository and owner, for git commands that write nothing (no root's lock is
    /// held for them: see [`Ctx::git`]).
    pub(super) fn unheld(&self) -> Ctx {
        Ctx { repo: self.repo.clone(), git_owner: self.git_owner, timeout: self.timeout, root_dir: None }
    }

    /// Wait (at most the git timeout) until no git started for the root runs any more, and
    /// lock the root's directory; see [`Ctx::git`].
    pub(super) fn hold(&self) -> Result<Option<FileLock>> {
        match &self.root_dir {
            Some(dir) => FileLock::on_dir_within(dir, self.timeout),
            None => Ok(None),
        }
    }

    /// git in `dir`, trusting the worktree even if its files belong to another user. For a
    /// root, git inherits a lock on the root's directory: a `git worktree add` or `remove`
    /// whose execroot was killed goes on writing until it ends, and whoever comes next (doctor,
    /// a destroy) waits for it instead of judging a tree that is still changing.
    pub(super) fn git(&self, dir: &Path, args: &[&str]) -> Result<git::GitOutput> {
        self.run(dir, args, |all, held| git::run_holding(dir, self.git_owner, all, self.timeout, held))
    }

    /// `run` with `args` behind `-c safe.directory=DIR` and the root's lock held ([`Ctx::git`]).
    fn run(
        &self,
        dir: &Path,
        args: &[&str],
        run: impl FnOnce(&[&str], Option<std::os::fd::BorrowedFd<'_>>) -> Result<git::GitOutput>,
    ) -> Result<git::GitOutput> {
        let safe = format!("safe.directory={}", dir.display());
        let mut all = vec!["-c", safe.as_str()];
        all.extend_from_slice(args);
        let held = self.hold()?;
        run(&all, held.as_ref().map(|l| l.as_fd()))
    }

    pub(super) fn check(&self, dir: &Path, args: &[&str]) -> Result<Vec<u8>> {
        self.git(dir, args)?.stdout_if_ok(dir, args)
    }

    /// [`Ctx::check`] in the worktree `wt`, with its git directory named
    /// ([`WorktreeGit`]).
    pub(super) fn check_in(&self, wt: &Path, args: &[&str]) -> Result<Vec<u8>> {
        WorktreeGit::of(self, wt)?.check(args)
    }

    /// [`Ctx::check`] with `GIT_INDEX_FILE` set to `index`, and `input` (if any) on git's
    /// standard input.
    pub(super) fn check_with_index(
        &self,
        dir: &Path,
        args: &[&str],
        index: &Path,
        input: Option<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        self.run(dir, args, |all, held| {
            git::run_with_index(dir, self.git_owner, all, self.timeout, held, index, input)
        })?
        .stdout_if_ok(dir, args)
    }

    /// [`Ctx::check`] with `input` on git's standard input.
    pub(super) fn check_input(&self, dir: &Path, args: &[&str], input: Vec<u8>) -> Result<Vec<u8>> {
        self.run(dir, args, |all, held| git::run_with_input(dir, self.git_owner, all, self.timeout, held, Some(input)))?
            .stdout_if_ok(dir, args)
    }
}

/// git run in a worktree of the repository with `--git-dir` and `--work-tree` named, never
/// found through the worktree's `.git` link: that file is the root owner's (in the worktree,
/// or in the upper of a git-overlay root), and a link to a repository of its owner's making
/// would have git, run as the repository's owner (root, say), take that repository's config
/// (an fsmonitor or pager command) and run it. The git directory is the one of
/// `$GIT_COMMON_DIR/worktrees` whose `gitdir` names `wt/.git`: written by git, in the
/// repository, read without running git.
pub(super) struct WorktreeGit<'c> {
    ctx: &'c Ctx,
    wt: PathBuf,
    git_dir: String,
    work_tree: String,
}

impl<'c> WorktreeGit<'c> {
    /// The worktree `wt` of the repository of `ctx`; an error when the repository has no
    /// record of it.
    pub(super) fn of(ctx: &'c Ctx, wt: &Path) -> Result<WorktreeGit<'c>> {
        let admin = registered_admin_dir(&ctx.repo, wt)?
            .ok_or_else(|| Error::Conflict(format!("{} is not a worktree of {}", wt.display(), ctx.repo.display())))?;
        Ok(WorktreeGit {
            ctx,
            wt: wt.to_path_buf(),
            git_dir: format!("--git-dir={}", admin.display()),
            work_tree: format!("--work-tree={}", wt.display()),
        })
    }

    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        [self.git_dir.as_str(), self.work_tree.as_str()].into_iter().chain(args.iter().copied()).collect()
    }

    /// [`Ctx::git`] in the worktree.
    pub(super) fn git(&self, args: &[&str]) -> Result<git::GitOutput> {
        self.ctx.git(&self.wt, &self.args(args))
    }

    /// [`Ctx::check`] in the worktree.
    pub(super) fn check(&self, args: &[&str]) -> Result<Vec<u8>> {
        self.ctx.check(&self.wt, &self.args(args))
    }
}

/// The administrative directory git keeps for the worktree `wt` of `repo`, read from the
/// repository alone (its `.git`, and `commondir` when `repo` is itself a linked worktree):
/// the directory of `worktrees/` whose `gitdir` names `wt/.git` (or its real path).
pub(super) fn registered_admin_dir(repo: &Path, wt: &Path) -> Result<Option<PathBuf>> {
    let dot = repo.join(".git");
    let md = std::fs::symlink_metadata(&dot).at(&dot)?;
    let own = if md.is_dir() {
        dot
    } else {
        let text = std::fs::read(&dot).at(&dot)?;
        let Some(p) = text.strip_prefix(b"gitdir: ") else { return Ok(None) };
        repo.join(std::ffi::OsStr::from_bytes(p.trim_ascii_end()))
    };
    let common = match std::fs::read(own.join("commondir")) {
        Ok(c) => own.join(std::ffi::OsStr::from_bytes(c.trim_ascii_end())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => own,
        Err(e) => return Err(Error::io(own.join("commondir"), e)),
    };
    admin_dir_in(&common, wt)
}

/// The directory of `$GIT_COMMON_DIR/worktrees` (`common` the common directory) whose
/// `gitdir` names `wt/.git` (or its real path; relative to that directory with
/// `worktree.useRelativePaths`), if any.
pub(super) fn admin_dir_in(common: &Path, wt: &Path) -> Result<Option<PathBuf>> {
    let dir = common.join("worktrees");
    let entries = match std::fs::read_dir(&dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let link = wt.join(".git");
    let real = wt.canonicalize().ok();
    for e in entries {
        let e = e.at(&dir)?;
        match std::fs::read(e.path().join("gitdir")) {
            Ok(g) => {
                // Relative to the admin directory with worktree.useRelativePaths.
                let g = e.path().join(std::ffi::OsStr::from_bytes(g.trim_ascii_end()));
                if g == link || (real.is_some() && g.parent().and_then(|p| p.canonicalize().ok()) == real) {
                    return Ok(Some(e.path()));
                }
            }
            Err(x) if x.kind() == std::io::ErrorKind::NotFound => {}
            Err(x) => return Err(Error::io(e.path().join("gitdir"), x)),
        }
    }
    Ok(None)
}

/// One entry of `git status --porcelain=v1`: its two-letter code and its path.
pub(super) struct StatusEntry {
    pub(super) code: [u8; 2],
    pub(super) path: String,
}

/// `git status` of the worktree, every entry (ignored ones too), `--mount` trees left out.
fn status_entries(store: &Store, ctx: &Ctx, root: &RootSpec, wt: &Path) -> Result<Vec<StatusEntry>> {
    status_of(store, ctx, root, wt, &["."])
}

/// `git status` of the worktree restricted to `pathspecs` (every entry, ignored ones too),
/// `--mount` trees left out.
pub(super) fn status_of(
    store: &Store,
    ctx: &Ctx,
    root: &RootSpec,
    wt: &Path,
    pathspecs: &[&str],
) -> Result<Vec<StatusEntry>> {
    // git status refreshes the index: it is one of execroot's git commands on this repository.
    let _lock = repo_lock(store, &ctx.repo)?;
    // --mount trees are not part of the worktree. They are excluded by pathspec rather than
    // unmounted, so that inspecting a live root never pulls a mount from under its run
    // (destroy unmounts them before its own check).
    let excludes = exclude_pathspecs(root);
    // Judged from the files themselves, never from an fsmonitor's answer (execroot's own or
    // the user's): what a destroy decides to discard must not hang on a hook's word.
    let mut args = vec![
        "-c",
        "core.fsmonitor=false",
        "status",
        "--porcelain=v1",
        "-z",
        "--untracked-files=all",
        "--ignored=matching",
        "--",
    ];
    args.extend_from_slice(pathspecs);
    args.extend(excludes.iter().map(String::as_str));
    let out = ctx.check_in(wt, &args)?;
    let mut entries = Vec::new();
    let mut fields = out.split(|&b| b == 0).filter(|f| !f.is_empty());
    while let Some(f) = fields.next() {
        if f.len() < 4 {
            continue;
        }
        let code = [f[0], f[1]];
        // A rename or copy carries its source path in the next field.
        if code[0] == b'R' || code[0] == b'C' {
            fields.next();
        }
        entries.push(StatusEntry { code, path: String::from_utf8_lossy(&f[3..]).into_owned() });
    }
    Ok(entries)
}

/// The counts and listed paths of `entries`.
pub(super) fn tally(entries: Vec<StatusEntry>) -> GitStatus {
    let mut st = GitStatus::default();
    for e in entries {
        match &e.code {
            b"??" => st.untracked_entry_count += 1,
            b"!!" => {
                st.ignored_entry_count += 1;
                continue;
            }
            _ => st.dirty_entry_count += 1,
        }
        if st.paths.len() < 50 {
            st.paths.push(e.path);
        }
    }
    st
}

fn status(store: &Store, ctx: &Ctx, root: &RootSpec, wst: &WorktreeState) -> Result<GitStatus> {
    let wt = &wst.worktree_path;
    let mut st = tally(status_entries(store, ctx, root, wt)?);
    {
        let g = WorktreeGit::of(ctx, wt)?;
        let base = &wst.base_ref;
        let range = format!("{base}...HEAD");
        if let Ok(out) = g.check(&["rev-list", "--left-right", "--count", "--end-of-options", &range]) {
            let text = String::from_utf8_lossy(&out);
            let mut it = text.split_whitespace().map(|n| n.parse::<u64>().unwrap_or(0));
            st.behind_count = it.next().unwrap_or(0);
            st.ahead_count = it.next().unwrap_or(0);
        }
        st.is_merged_into_base = g.git(&["merge-base", "--is-ancestor", "--end-of-options", "HEAD", base])?.ok();
    }
    Ok(st)
}

/// A file of a commit's tree as provisioning reads it ([`base_files`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseFile {
    /// A regular file (or symlink): the blob's bytes as git stores them.
    Blob(Vec<u8>),
    /// Something else at that path (a directory, a submodule): git's object type.
    Other(String),
    /// Nothing at that path.
    Missing,
}

/// What provisioning reads of a repository root's base: the tree of `rev` in `repo`, its
/// files at `paths`, and the repository's owner (a worktree's owner unless one is given). One
/// `git cat-file --batch` reads them all.
pub fn base_files(store: &Store, repo: &Path, rev: &str, paths: &[String]) -> Result<(String, Vec<BaseFile>, Owner)> {
    let repo = repo.canonicalize().map_err(|e| Error::BadInput(format!("--repo {}: {e}", repo.display())))?;
    let ctx = Ctx::of(store, &repo)?;
    let not_commit = || Error::BadInput(format!("--base-ref {rev:?} is not a commit in {}", repo.display()));
    if rev.is_empty() || rev.starts_with('-') || rev.contains(['\n', ':']) {
        return Err(not_commit());
    }
    if let Some(p) = paths.iter().find(|p| p.contains('\n')) {
        return Err(Error::BadInput(format!("provision input {p:?}: a repository root's input has no newline")));
    }
    // "<rev>^{commit}^{tree}" first (the commit's tree), then "<tree>:<path>" per input.
    let mut input = format!("{rev}^{{commit}}^{{tree}}\n");
    for p in paths {
        input.push_str(&format!("{rev}^{{commit}}:{p}\n"));
    }
    let out = ctx.check_input(&repo, &["cat-file", "--batch"], input.into_bytes())?;
    // Each answer: "<oid> <type> <size>\n<size bytes>\n", or "<name> missing\n" (or
    // "ambiguous").
    let mut rest: &[u8] = &out;
    let mut next = || -> Result<Option<(String, String, Vec<u8>)>> {
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| Error::Corrupt("git cat-file --batch: short answer".into()))?;
        let head = String::from_utf8_lossy(&rest[..nl]).into_owned();
        rest = &rest[nl + 1..];
        let f: Vec<&str> = head.split(' ').collect();
        let [oid, kind, size] = f[..] else { return Ok(None) };
        let size: usize = size.parse().map_err(|_| Error::Corrupt(format!("git cat-file --batch: {head:?}")))?;
        if rest.len() < size + 1 {
            return Err(Error::Corrupt("git cat-file --batch: short answer".into()));
        }
        let body = rest[..size].to_vec();
        rest = &rest[size + 1..];
        Ok(Some((oid.to_string(), kind.to_string(), body)))
    };
    let tree = match next()? {
        Some((oid, kind, _)) if kind == "tree" => oid,
        _ => return Err(not_commit()),
    };
    let mut files = Vec::new();
    for _ in paths {
        files.push(match next()? {
            Some((_, kind, body)) if kind == "blob" => BaseFile::Blob(body),
            Some((_, kind, _)) => BaseFile::Other(kind),
            None => BaseFile::Missing,
        });
    }
    Ok((tree, files, ctx.git_owner))
}

/// True when branch `name` exists in `repo`.
pub(super) fn branch_exists(ctx: &Ctx, repo: &Path, name: &str) -> Result<bool> {
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
pub(super) fn has_git_link(wt: &Path) -> Result<bool> {
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

/// At most this many paths name the files a refusal keeps.
const MAX_LISTED: usize = 50;

/// `paths`, at most [`MAX_LISTED`] of them, for a message.
pub(super) fn listing(paths: &[String]) -> String {
    let mut s = paths.iter().take(MAX_LISTED).cloned().collect::<Vec<_>>().join(", ");
    if paths.len() > MAX_LISTED {
        s.push_str(&format!(" and {} more", paths.len() - MAX_LISTED));
    }
    s
}

/// The files in the worktree that git cannot give back, judged without the worktree's own git
/// view (its index or admin directory may be half made or half removed): every entry but the
/// directories and the top `.git` link that is not, in type, content (`git hash-object`) and
/// executable bit, what branch `st.branch_name`'s commit holds at that path, which is what
/// `git worktree add` checks out. Without the branch every file counts. Ignored files count
/// too: nothing here can tell them. A path that is not UTF-8 counts (it cannot be hashed here).
fn foreign_files(ctx: &Ctx, st: &WorktreeState) -> Result<Vec<String>> {
    Ok(lossy(foreign_files_in(Some(ctx), &st.branch_name, &st.worktree_path, false)?))
}

/// Raw paths, for a message.
fn lossy(paths: Vec<Vec<u8>>) -> Vec<String> {
    paths.into_iter().map(|p| String::from_utf8_lossy(&p).into_owned()).collect()
}

/// [`foreign_files`] of the tree at `dir` (a worktree, or a git-overlay root's upper
/// directory, whose whiteouts, deletions, are left out with `whiteouts`). Without `ctx` (the
/// repository is gone) every file counts. SHA-1 blob ids are computed here, reading through
/// `dir`'s handle (git, as the repository's owner, may not be able to read an upper
/// directory); others by `git hash-object`.
pub(super) fn foreign_files_in(ctx: Option<&Ctx>, branch: &str, dir: &Path, whiteouts: bool) -> Result<Vec<Vec<u8>>> {
    let wt = dir;
    let mut expected: HashMap<Vec<u8>, (Vec<u8>, String)> = HashMap::new();
    if let Some(ctx) = ctx.filter(|c| branch_exists(c, &c.repo, branch).unwrap_or(false)) {
        let full = format!("refs/heads/{branch}");
        let out = ctx.check(&ctx.repo, &["ls-tree", "-r", "-z", "--full-tree", "--end-of-options", &full])?;
        // "<mode> SP <type> SP <oid> TAB <path>"
        for rec in out.split(|&b| b == 0) {
            let Some(tab) = rec.iter().position(|&b| b == b'\t') else { continue };
            let mut meta = rec[..tab].split(|&b| b == b' ');
            if let (Some(mode), Some(_), Some(oid)) = (meta.next(), meta.next(), meta.next()) {
                expected.insert(rec[tab + 1..].to_vec(), (mode.to_vec(), String::from_utf8_lossy(oid).into_owned()));
            }
        }
    }
    let tree = match Tree::open(wt) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::io(wt, e)),
    };
    let top = Meta::of_fd(&tree).at(wt)?;
    let mut foreign: Vec<Vec<u8>> = Vec::new();
    let mut files: Vec<(String, Vec<u8>, String)> = Vec::new();
    let mut links: Vec<(Vec<u8>, Vec<u8>, String)> = Vec::new();
    tree.walk(&|_, m| m.dev != top.dev, &mut |f| {
        if f.rel.is_empty() || f.meta.kind == Kind::Dir || (f.rel == b".git" && f.meta.kind == Kind::File) {
            return Ok(());
        }
        if whiteouts && f.meta.is_whiteout() {
            return Ok(());
        }
        let exec = f.meta.mode & 0o100 != 0;
        match (expected.get(&f.rel), f.meta.kind) {
            (Some((mode, oid)), Kind::File) if (mode == b"100644" && !exec) || (mode == b"100755" && exec) => {
                if oid.len() == 40 {
                    if blob_sha1(&tree, &f.rel)? != *oid {
                        foreign.push(f.rel);
                    }
                    return Ok(());
                }
                match std::str::from_utf8(&f.rel) {
                    Ok(rel) => files.push((wt.join(rel).to_string_lossy().into_owned(), f.rel.clone(), oid.clone())),
                    Err(_) => foreign.push(f.rel),
                }
            }
            (Some((mode, oid)), Kind::Symlink) if mode == b"120000" => {
                links.push((f.rel, f.target.unwrap_or_default(), oid.clone()))
            }
            _ => foreign.push(f.rel),
        }
        Ok(())
    })?;
    if let Some(ctx) = ctx {
        for chunk in files.chunks(200) {
            let mut args = vec!["hash-object", "--no-filters", "--"];
            args.extend(chunk.iter().map(|(abs, _, _)| abs.as_str()));
            let out = ctx.check(&ctx.repo, &args)?;
            let got: Vec<&[u8]> = out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
            for (i, (_, rel, oid)) in chunk.iter().enumerate() {
                if got.get(i).copied() != Some(oid.as_bytes()) {
                    foreign.push(rel.clone());
                }
            }
        }
        for (rel, target, oid) in links {
            if ctx.check(&ctx.repo, &["cat-file", "blob", &oid])? != target {
                foreign.push(rel);
            }
        }
    }
    foreign.sort();
    Ok(foreign)
}

/// The SHA-1 blob id git gives the file at `rel` (without filters), read through `tree`.
fn blob_sha1(tree: &Tree, rel: &[u8]) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = tree.open_file(rel)?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    Ok(crate::sys::gitindex::oid_hex(&crate::sys::gitindex::blob_oid(&data)))
}

/// Why repository `repo` is gone, if it is: its path is not there (deleted or moved) or,
/// with `probe`, git does not take it for a repository any more.
pub(super) fn repo_gone(store: &Store, repo: &Path, probe: bool) -> Result<Option<String>> {
    match std::fs::symlink_metadata(repo) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Some(format!("the repository {} is gone (deleted or moved)", repo.display())))
        }
        Err(e) => return Err(Error::io(repo, e)),
    }
    if probe {
        let out = Ctx::of(store, repo)?.git(repo, &["rev-parse", "--git-dir"])?;
        if !out.ok() {
            return Ok(Some(format!("{} is not a git repository any more: {}", repo.display(), out.stderr)));
        }
    }
    Ok(None)
}

/// Why worktree `st` is gone behind execroot's back, if it is (see [`super::Backend::gone`]).
/// `link` is where its `.git` link lives (a git-overlay root keeps it in its upper directory).
/// Judged without git while the admin directory the link names is there, which is the usual
/// case; otherwise by the repository itself (`git worktree list`).
pub(super) fn gone(store: &Store, root: &RootSpec, st: &WorktreeState, link: &Path) -> Result<Option<String>> {
    if admin_dir(link, &st.worktree_path).is_some_and(|d| d.join("gitdir").is_file()) {
        return Ok(None);
    }
    if let Some(why) = repo_gone(store, &st.repo, true)? {
        return Ok(Some(why));
    }
    let ctx = Ctx::for_root(store, &st.repo, root)?;
    Ok(match listed(&ctx, &st.worktree_path)? {
        Some(_) => None,
        None => Some(format!(
            "{} no longer lists worktree {} (removed or pruned with git's own commands)",
            st.repo.display(),
            st.worktree_path.display()
        )),
    })
}

/// The admin directory (`$GIT_COMMON_DIR/worktrees/<name>`) that the `.git` link file at
/// `link` names, relative paths taken from worktree `wt`; `None` when the link is not a
/// readable file of git's form.
pub(super) fn admin_dir(link: &Path, wt: &Path) -> Option<PathBuf> {
    if !std::fs::symlink_metadata(link).ok()?.is_file() {
        return None;
    }
    let text = std::fs::read(link).ok()?;
    let dir = Path::new(std::ffi::OsStr::from_bytes(text.strip_prefix(b"gitdir: ")?.trim_ascii_end()));
    Some(wt.join(dir))
}

/// The lock of the worktree whose admin directory is `admin`, as `git worktree list` reads it
/// (gitrepository-layout(5): the file `locked` holds the reason): `Some("")` for a lock without
/// a reason, `None` when not locked.
pub(super) fn lock_in(admin: &Path) -> Result<Option<String>> {
    let f = admin.join("locked");
    match std::fs::read(&f) {
        Ok(r) => Ok(Some(String::from_utf8_lossy(r.trim_ascii_end()).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&f, e)),
    }
}

/// What destroying gone worktree `st` (its files read in `dir`) would lose: refused unless
/// `force`, naming the files and the way to keep them; the warnings otherwise.
pub(super) fn judge_gone(
    store: &Store,
    root: &RootSpec,
    st: &WorktreeState,
    dir: &Path,
    whiteouts: bool,
    why: &str,
    force: bool,
) -> Result<Vec<String>> {
    let lost = lossy(unsaved_when_gone(store, root, st, dir, whiteouts)?);
    let mut warnings = vec![format!("the worktree is gone: {why}")];
    if lost.is_empty() {
        return Ok(warnings);
    }
    // A doctor run killed (or stopped by a busy mount) after keeping them.
    let kept = super::rescue_ref(&root.id);
    if let Some(id) = store.get_ref(&kept)? {
        warnings.push(format!("{} file(s) not as committed were kept as snapshot {kept} ({id})", lost.len()));
        return Ok(warnings);
    }
    if !force {
        return Err(Error::Conflict(format!(
            "root {}: {why}; {} file(s) in it are not as committed on branch {}: `execroot root export {} DIR` copies them out, `execroot doctor --repair` keeps them as snapshot {} and removes the root (unless the repository is missing), or use --force to discard them: {}",
            root.id,
            lost.len(),
            st.branch_name,
            root.id,
            super::rescue_ref(&root.id),
            listing(&lost)
        )));
    }
    warnings.push(format!("--force: discarded {} file(s) not as committed: {}", lost.len(), listing(&lost)));
    Ok(warnings)
}

/// The check of an interrupted operation on a root whose repository is gone: every file in
/// `dir` (whiteouts left out with `whiteouts`, and the `.git` link) counts as unsaved work
/// and is kept, named in the refusal.
pub(super) fn kept_when_repo_gone(
    store: &Store,
    root: &RootSpec,
    dir: &Path,
    whiteouts: bool,
    why: &str,
) -> Result<Vec<String>> {
    // A git the killed execroot started may still run: judge once it is done.
    drop(FileLock::on_dir_within(&root.dir, timeout(store))?);
    let keep = lossy(foreign_files_in(None, "", dir, whiteouts)?);
    if keep.is_empty() {
        return Ok(vec![format!("{why}: git was not asked anything")]);
    }
    Err(Error::Conflict(format!(
        "root {}: {why}; {} file(s) in {} cannot be judged and are kept: look, then `execroot root destroy {} --force`: {}",
        root.id,
        keep.len(),
        dir.display(),
        root.id,
        listing(&keep)
    )))
}

/// Remove the worktree directory `wt`, if there, and its parent when it is execroot's own
/// (`wt/` in the root's directory, or the root's directory under `worktree_dir`).
fn remove_worktree_dir(root: &RootSpec, wt: &Path) -> Result<()> {
    match std::fs::remove_dir_all(wt) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(wt, e)),
    }
    if let Some(parent) = wt.parent().filter(|p| p.file_name().is_some_and(|n| n == "wt" || n == root.id.as_str())) {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(())
}

/// The files of gone worktree `st`, read in `dir`, that are found nowhere else: not as
/// committed on its branch, or every file when the repository is gone.
fn unsaved_when_gone(store: &Store, root: &RootSpec, st: &WorktreeState, dir: &Path, wh: bool) -> Result<Vec<Vec<u8>>> {
    let ctx = match repo_gone(store, &st.repo, true)? {
        Some(_) => None,
        None => Some(Ctx::for_root(store, &st.repo, root)?),
    };
    foreign_files_in(ctx.as_ref(), &st.branch_name, dir, wh)
}

/// Keep the files of gone worktree `st` that are found nowhere else (read in `dir`) as the
/// snapshot [`super::rescue_ref`] names, its ref set for the root's owner.
pub(super) fn rescue_gone(
    store: &Store,
    root: &RootSpec,
    st: &WorktreeState,
    dir: &Path,
    whiteouts: bool,
) -> Result<Option<super::Rescued>> {
    let paths = unsaved_when_gone(store, root, st, dir, whiteouts)?;
    if paths.is_empty() {
        return Ok(None);
    }
    let name = super::rescue_ref(&root.id);
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("rescued.root".to_string(), root.id.clone());
    labels.insert("git.repo".to_string(), st.repo.to_string_lossy().into_owned());
    labels.insert("git.branch".to_string(), st.branch_name.clone());
    let opts = crate::store::ingest::IngestOptions { name: Some(name.clone()), labels, ..Default::default() };
    let id = store.ingest_change(dir, &paths, &[], vec![], &opts)?.id;
    store.set_ref_with(&name, &id, crate::store::refs::RefMeta { uid: root.owner.uid, shared: false })?;
    Ok(Some(super::Rescued { name, snapshot: id, paths: lossy(paths) }))
}

/// Every path the layers of `snapshots` hold (what a create copies onto the checkout).
fn layer_paths(store: &Store, snapshots: &[crate::Hash]) -> Result<std::collections::HashSet<Vec<u8>>> {
    let mut out = std::collections::HashSet::new();
    for id in store.layer_stack(snapshots)? {
        out.extend(store.load_manifest(&id)?.entries.into_iter().map(|e| e.path));
    }
    Ok(out)
}

/// `git status` of a worktree whose removal was interrupted, as it was before the removal
/// began as far as git can tell: a `.git` link removed first is put back from git's record
/// (`git worktree repair`), and `.gitignore` files already removed are checked out again from
/// the index, so that what they ignore still counts as ignored. `None` when git has no usable
/// record of the worktree any more.
fn removal_view(store: &Store, ctx: &Ctx, root: &RootSpec, wt: &Path) -> Result<Option<Vec<StatusEntry>>> {
    let wt_s = wt.to_string_lossy();
    if !has_git_link(wt)? {
        // It reports the link it rewrote as an error: success shows as the link being back.
        ctx.git(&ctx.repo, &["worktree", "repair", "--end-of-options", &wt_s])?;
        if !has_git_link(wt)? {
            return Ok(None);
        }
    }
    let Ok(entries) = status_entries(store, ctx, root, wt) else { return Ok(None) };
    let ignores: Vec<&str> = entries
        .iter()
        .filter(|e| &e.code == b" D" && (e.path == ".gitignore" || e.path.ends_with("/.gitignore")))
        .map(|e| e.path.as_str())
        .collect();
    if ignores.is_empty() {
        return Ok(Some(entries));
    }
    let mut args = vec!["checkout-index", "--"];
    args.extend(ignores);
    ctx.check_in(wt, &args)?;
    Ok(status_entries(store, ctx, root, wt).ok())
}

/// Whether git lists worktree `wt` (`Some`), and its lock reason if it is locked (`Some("")`
/// for a lock without one). A repository git cannot list counts as not listing it.
pub(super) fn listed(ctx: &Ctx, wt: &Path) -> Result<Option<Option<String>>> {
    let out = ctx.git(&ctx.repo, &["worktree", "list", "--porcelain", "-z"])?;
    if !out.ok() {
        return Ok(None);
    }
    // git records the real path; the store may have been named through a symlink.
    let real = wt.parent().and_then(|p| p.canonicalize().ok()).zip(wt.file_name()).map(|(p, n)| p.join(n));
    let ours = |p: &[u8]| {
        let p = Path::new(std::ffi::OsStr::from_bytes(p));
        p == wt || real.as_deref() == Some(p)
    };
    for rec in out.stdout.split(|&b| b == 0).collect::<Vec<_>>().split(|f| f.is_empty()) {
        let Some(path) = rec.first().and_then(|f| f.strip_prefix(b"worktree ")) else { continue };
        if !ours(path) {
            continue;
        }
        let lock = rec.iter().find_map(|f| {
            if *f == b"locked" {
                Some(String::new())
            } else {
                f.strip_prefix(b"locked ").map(|r| String::from_utf8_lossy(r).into_owned())
            }
        });
        return Ok(Some(lock));
    }
    Ok(None)
}

/// Refuse to lose `gs`'s uncommitted and untracked entries unless `force`; the warnings of
/// what a destroy discards.
pub(super) fn judge(root: &RootSpec, gs: &GitStatus, force: bool) -> Result<Vec<String>> {
    let lose = gs.dirty_entry_count + gs.untracked_entry_count;
    let mut warnings = Vec::new();
    if lose > 0 && !force {
        return Err(Error::Conflict(format!(
            "worktree {} has {} uncommitted change(s) and {} untracked file(s); commit them or use --force: {}",
            root.cwd.display(),
            gs.dirty_entry_count,
            gs.untracked_entry_count,
            gs.paths.join(", ")
        )));
    }
    if lose > 0 {
        warnings.push(format!("--force: discarded {lose} uncommitted or untracked entries: {}", gs.paths.join(", ")));
    }
    if gs.ignored_entry_count > 0 {
        warnings.push(format!("discarded {} ignored entries", gs.ignored_entry_count));
    }
    Ok(warnings)
}

/// The lock `git worktree add` writes first and removes last: one still there was left by an
/// add that was killed.
pub(super) const ADD_LOCK: &str = "initializing";

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
            warnings: vec![],
        })
    }

    fn create(&self, store: &Store, root: &RootSpec, st: &mut WorktreeState) -> Result<Made> {
        let ctx = Ctx::for_root(store, &st.repo, root)?;
        let repo = &st.repo;
        let branch = st.branch_name.clone();
        let _lock = repo_lock(store, repo)?;
        let parent = st.worktree_path.parent().expect("planned below a parent").to_path_buf();
        std::fs::create_dir_all(&parent).at(&parent)?;
        std::os::unix::fs::lchown(&parent, Some(ctx.git_owner.uid), Some(ctx.git_owner.gid)).at(&parent)?;
        hit("worktree.create.dir-made");
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
        hit("worktree.create.added");
        // The root's snapshots (a provision layer) cannot be stacked under a worktree: they are
        // copied onto its checkout.
        if !root.snapshots.is_empty() {
            store.apply_onto(&root.snapshots, &st.worktree_path, root.owner)?;
            hit("worktree.create.copied-in");
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
        if !has_entries(wt)? {
            return Ok(vec![]);
        }
        if let Some(why) = self.gone(store, root, st)? {
            return judge_gone(store, root, st, wt, false, &why, force);
        }
        let ctx = Ctx::for_root(store, &st.repo, root)?;
        let gs = match has_git_link(wt)? {
            true => status(store, &ctx, root, st).ok(),
            false => None,
        };
        let Some(gs) = gs else {
            // No git view of the worktree (a create or destroy killed inside git): the files
            // that are the branch's, as committed, are git's; the rest may be unsaved work.
            let foreign = foreign_files(&ctx, st)?;
            if foreign.is_empty() {
                return Ok(vec![]);
            }
            if !force {
                return Err(Error::Conflict(format!(
                    "worktree {} is not one git can read any more, and {} file(s) in it are not as committed on branch {}, so execroot cannot tell whether they are unsaved work; look, then use --force: {}",
                    wt.display(),
                    foreign.len(),
                    st.branch_name,
                    listing(&foreign)
                )));
            }
            return Ok(vec![format!(
                "--force: discarded {} file(s) not as committed on branch {}: {}",
                foreign.len(),
                st.branch_name,
                listing(&foreign)
            )]);
        };
        judge(root, &gs, force)
    }

    fn check_interrupted(
        &self,
        store: &Store,
        root: &RootSpec,
        st: &WorktreeState,
        what: Interrupted,
    ) -> Result<Vec<String>> {
        let wt = &st.worktree_path;
        if let Some(why) = repo_gone(store, &st.repo, false)? {
            return kept_when_repo_gone(store, root, wt, false, &why);
        }
        let ctx = Ctx::for_root(store, &st.repo, root)?;
        // A git the killed execroot started may still be checking out or removing files:
        // judge the tree only once it is done.
        drop(ctx.hold()?);
        if !has_entries(wt)? {
            return Ok(vec![]);
        }
        let keep = match what {
            // Never handed out: what git checked out may go (however far it got, whatever
            // its index says), and what execroot copied onto it (the root's snapshots: a
            // provision layer); anything else stays.
            Interrupted::Create => {
                let copied = layer_paths(store, &root.snapshots)?;
                foreign_files(&ctx, st)?.into_iter().filter(|p| !copied.contains(p.as_bytes())).collect()
            }
            // The destroy's check passed before it recorded `destroying`: files it had removed
            // since (unstaged deletions) and ignored files may go; a change or an untracked
            // file is work done after the check, and stays.
            Interrupted::Destroy => match removal_view(store, &ctx, root, wt)? {
                Some(entries) => {
                    entries.into_iter().filter(|e| !matches!(&e.code, b"!!" | b" D")).map(|e| e.path).collect()
                }
                // git's record of the worktree is gone too: judged by content.
                None => foreign_files(&ctx, st)?,
            },
        };
        if keep.is_empty() {
            return Ok(vec![]);
        }
        Err(Error::Conflict(format!(
            "worktree {} holds {} file(s) that are not as committed on branch {} (unsaved work, or files git did not write); they are kept: look, then `execroot root destroy {} --force`: {}",
            wt.display(),
            keep.len(),
            st.branch_name,
            root.id,
            listing(&keep)
        )))
    }

    fn destroy(&self, store: &Store, root: &RootSpec, st: &WorktreeState) -> Result<Vec<String>> {
        teardown(store, root, st, None)
    }

    fn diff(&self, store: &Store, root: &RootSpec, st: &WorktreeState) -> Result<Diff> {
        use crate::change::{Change, EntryKind};
        use crate::pathenc::PathJson;
        let ctx = Ctx::for_root(store, &st.repo, root)?;
        let wt = st.worktree_path.clone();
        let base = st.base_ref.clone();
        let _lock = repo_lock(store, &ctx.repo)?;
        let excludes = exclude_pathspecs(root);
        let mut args =
            vec!["diff", "--no-renames", "--name-status", "-z", "--end-of-options", base.as_str(), "--", "."];
        args.extend(excludes.iter().map(String::as_str));
        let g = WorktreeGit::of(&ctx, &wt)?;
        let tracked = g.check(&args)?;
        let mut args = vec!["ls-files", "--others", "--exclude-standard", "-z", "--", "."];
        args.extend(excludes.iter().map(String::as_str));
        let untracked = g.check(&args)?;
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

    fn gone(&self, store: &Store, root: &RootSpec, st: &WorktreeState) -> Result<Option<String>> {
        gone(store, root, st, &st.worktree_path.join(".git"))
    }

    fn rescue(&self, store: &Store, root: &RootSpec, st: &WorktreeState) -> Result<Option<super::Rescued>> {
        rescue_gone(store, root, st, &st.worktree_path, false)
    }

    fn git_status(&self, store: &Store, root: &RootSpec, st: &WorktreeState) -> Result<Option<GitStatus>> {
        // No git view without the repository (doctor reports the root as `worktree-gone`).
        if !has_git_link(&st.worktree_path)? || repo_gone(store, &st.repo, false)?.is_some() {
            return Ok(None);
        }
        Ok(Some(status(store, &Ctx::for_root(store, &st.repo, root)?, root, st)?))
    }
}

/// Worktree `st`'s teardown ([`Backend::destroy`]): git's record, the directory, the branch if
/// execroot made it and it holds nothing found elsewhere. A worktree locked with `own_lock`
/// (a git-overlay root's) is removed locked (`git worktree remove --force --force`, one git
/// run instead of unlock and remove); any other lock stops it.
pub(super) fn teardown(
    store: &Store,
    root: &RootSpec,
    st: &WorktreeState,
    own_lock: Option<&str>,
) -> Result<Vec<String>> {
    let wt = &st.worktree_path;
    let wt_s = wt.to_string_lossy().into_owned();
    if let Some(why) = repo_gone(store, &st.repo, false)? {
        // Nothing to tell git: only the files (judged before) go.
        remove_worktree_dir(root, wt)?;
        return Ok(vec![format!(
            "{why}: git was not run; branch {}, wherever the repository is now, is untouched",
            st.branch_name
        )]);
    }
    let ctx = Ctx::for_root(store, &st.repo, root)?;
    let _lock = repo_lock(store, &ctx.repo)?;
    let mut warnings = Vec::new();
    let made_worktree = match std::fs::symlink_metadata(wt) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::io(wt, e)),
    };
    // `git worktree remove` does it all when git's view of the worktree is whole. It is
    // not after a kill inside `git worktree add` or `remove`: then the directory goes below
    // and prune drops git's record, once any lock the killed add left is taken off.
    let whole = made_worktree && has_git_link(wt)? && {
        let mut args = vec!["worktree", "remove", "--force"];
        if own_lock.is_some() {
            args.push("--force");
        }
        args.extend(["--end-of-options", &wt_s]);
        ctx.git(&ctx.repo, &args)?.ok()
    };
    let mut record = None;
    if !whole {
        record = listed(&ctx, wt)?;
        match &record {
            Some(Some(reason)) if reason == ADD_LOCK || Some(reason.as_str()) == own_lock => {
                ctx.check(&ctx.repo, &["worktree", "unlock", "--end-of-options", &wt_s])?;
            }
            Some(Some(reason)) => {
                return Err(Error::Conflict(format!(
                    "worktree {} is locked ({reason}); `git worktree unlock` it, then destroy the root again",
                    wt.display()
                )))
            }
            _ => {}
        }
    }
    hit("worktree.destroy.git-removed");
    if made_worktree {
        match std::fs::remove_dir_all(wt) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(wt, e)),
        }
    }
    // After a whole `git worktree remove` git has nothing left to prune.
    if (made_worktree && !whole) || record.is_some() {
        ctx.check(&ctx.repo, &["worktree", "prune"])?;
    }
    if record.is_some() && listed(&ctx, wt)?.is_some() {
        return Err(Error::Conflict(format!(
            "git still lists worktree {} after `git worktree prune`; see `git worktree list` in {}",
            wt.display(),
            ctx.repo.display()
        )));
    }
    hit("worktree.destroy.pruned");
    remove_worktree_dir(root, wt)?;
    let branch = &st.branch_name;
    let full = format!("refs/heads/{branch}");
    if !st.created_branch {
        if branch_exists(&ctx, &ctx.repo, branch)? {
            warnings.push(format!("branch {branch} kept: execroot did not create it"));
        }
        return Ok(warnings);
    }
    // --exclude patterns for --branches are branch names, not full refs. (No
    // --end-of-options here: `--not` and `--branches` are options; `full` starts with refs/.)
    let exclude = format!("--exclude={branch}");
    let args = ["rev-list", "--count", &full, "--not", &exclude, "--branches", "--remotes", "--tags"];
    let out = ctx.git(&ctx.repo, &args)?;
    // A create killed or failed before git made the branch (the repository may not even be
    // one): nothing to keep or delete. Asked only then, so a destroy runs one git less.
    if !out.ok() && !branch_exists(&ctx, &ctx.repo, branch)? {
        return Ok(warnings);
    }
    let unique = out.stdout_if_ok(&ctx.repo, &args)?;
    let n: u64 = String::from_utf8_lossy(&unique).trim().parse().unwrap_or(1);
    if n == 0 {
        // It may be checked out elsewhere now (after a worktree removed behind execroot's
        // back): then it stays, and the destroy still ends.
        let out = ctx.git(&ctx.repo, &["branch", "-D", "--end-of-options", branch])?;
        if !out.ok() {
            warnings.push(format!("branch {branch} kept: git branch -D failed: {}", out.stderr));
        }
    } else {
        warnings.push(format!("branch {branch} kept: it holds {n} commit(s) found on no other branch or tag"));
    }
    Ok(warnings)
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
