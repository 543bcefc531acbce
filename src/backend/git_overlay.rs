//! The git-overlay backend: a real `git worktree` on its own branch (registered with the
//! repository, locked, every git command works) whose working tree is an overlay of a snapshot
//! of the base commit's checkout instead of a fresh checkout.
//!
//! The snapshot is what `git worktree add` itself checks out for that commit (made once by a
//! real checkout into a temporary worktree and ingested), cached under a ref named by the
//! commit's tree id and every setting that changes checked-out bytes, so a second root of the
//! same commit ingests nothing. A tree a snapshot cannot reproduce (submodules, smudge or
//! process filters, sparse checkout) is served by the plain worktree backend, with a warning
//! saying why. Destroy keeps every guarantee of the worktree backend; what changed is read
//! from the overlay's upper directory, so `git status` runs only on that.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::worktree::{self, Ctx, GitStatus, Worktree, WorktreeState};
use super::{overlay, WorktreeRequest};
use super::{tree_usage, Backend, BackendKind, BackendState, Capabilities, Interrupted, Made, Plan, RootSpec, Usage};
use crate::change::Diff;
use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::store::ingest::{IngestOptions, NoProgress};
use crate::sys::beneath::{Kind, Tree};
use crate::sys::failpoint::hit;
use crate::sys::mount::{self, OverlayDirs, Place, Unmounted};
use crate::Store;

/// See the module documentation.
pub struct GitOverlay;

/// What a git-overlay root records: the worktree's fields (as a worktree root records them)
/// and its overlay's directories.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitOverlayState {
    /// The worktree: repository, branch, path (the root's `cwd`), base ref.
    #[serde(flatten)]
    pub worktree: WorktreeState,
    /// The overlay mounted on the worktree's path.
    pub overlay: OverlayDirs,
}

/// The reason execroot gives `git worktree lock`, so that git's own `prune` and `remove`
/// leave the worktree alone.
pub fn lock_reason(id: &str) -> String {
    format!("execroot root {id}")
}

/// Prefix of the refs that cache commit checkouts (docs/format.md, "Checkout cache").
pub const CACHE_REF_PREFIX: &str = "git-checkout-";

/// The temporary worktree a snapshot of a checkout is made in, beside the root's worktree
/// (its parent belongs to the repository's owner, who runs git).
fn checkout_dir(st: &WorktreeState) -> PathBuf {
    st.worktree_path.with_file_name("checkout")
}

/// Plan a git-overlay root, or, when a snapshot cannot reproduce what `git worktree add`
/// would check out, a plain worktree root with a warning saying why.
pub fn plan_or_fallback(store: &Store, root: &RootSpec, req: &WorktreeRequest) -> Result<Plan<BackendState>> {
    let p = Worktree.plan(store, root, req)?;
    let ctx = Ctx::of(store, &p.state.repo)?;
    // An existing branch is used as is: its tip is what the worktree shows.
    let rev = if p.state.created_branch { p.state.base_ref.clone() } else { p.state.branch_name.clone() };
    let commit = commit_of(&ctx, &rev)?;
    if let Some(why) = unreproducible(&ctx, &commit)? {
        let mut warnings = p.warnings;
        warnings.push(format!("using the worktree backend: git-overlay cannot reproduce this checkout ({why})"));
        return Ok(Plan { cwd: p.cwd, owner: p.owner, state: BackendState::Worktree(p.state), warnings });
    }
    Ok(Plan {
        cwd: p.cwd,
        owner: p.owner,
        state: BackendState::GitOverlay(GitOverlayState { worktree: p.state, overlay: overlay::fresh_dirs(&root.dir) }),
        warnings: p.warnings,
    })
}

/// The commit id `rev` names.
fn commit_of(ctx: &Ctx, rev: &str) -> Result<String> {
    let spec = format!("{rev}^{{commit}}");
    let out = ctx.check(&ctx.repo, &["rev-parse", "--verify", "--end-of-options", &spec])?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// Why a snapshot cannot be what `git worktree add` checks out for `commit`, if it cannot:
/// sparse checkout, submodules (gitlinks), or a smudge or process filter configured for a path
/// of the tree (git LFS and the like run per checkout, and may fetch).
fn unreproducible(ctx: &Ctx, commit: &str) -> Result<Option<String>> {
    let repo = &ctx.repo;
    let sparse = ctx.git(repo, &["config", "--bool", "core.sparseCheckout"])?;
    if sparse.ok() && sparse.stdout.trim_ascii() == b"true" {
        return Ok(Some("the repository uses sparse checkout (core.sparseCheckout)".into()));
    }
    let out = ctx.check(repo, &["ls-tree", "-r", "-z", "--full-tree", "--end-of-options", commit])?;
    let mut paths = Vec::new();
    for rec in out.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let Some(tab) = rec.iter().position(|&b| b == b'\t') else { continue };
        let path = String::from_utf8_lossy(&rec[tab + 1..]).into_owned();
        if rec.starts_with(b"160000 ") {
            return Ok(Some(format!("the tree has a submodule at {path}")));
        }
        paths.push(path);
    }
    let filters = ctx.git(repo, &["config", "-z", "--name-only", "--get-regexp", r"^filter\..+\.(smudge|process)$"])?;
    let names: BTreeSet<String> = filters
        .stdout
        .split(|&b| b == 0)
        .filter_map(|k| std::str::from_utf8(k).ok())
        .filter_map(|k| k.strip_prefix("filter.")?.rsplit_once('.').map(|(n, _)| n.to_string()))
        .collect();
    if !filters.ok() || names.is_empty() {
        return Ok(None);
    }
    for chunk in paths.chunks(500) {
        let source = format!("--source={commit}");
        let mut args = vec!["check-attr", "-z", source.as_str(), "filter", "--"];
        args.extend(chunk.iter().map(String::as_str));
        let out = ctx.git(repo, &args)?;
        if !out.ok() {
            return Ok(Some(format!("cannot tell which paths use the smudge filters configured: {}", out.stderr)));
        }
        // "<path> NUL <attribute> NUL <value> NUL"
        let f: Vec<&[u8]> = out.stdout.split(|&b| b == 0).collect();
        for t in f.chunks(3).filter(|t| t.len() == 3) {
            let value = String::from_utf8_lossy(t[2]);
            if names.contains(value.as_ref()) {
                return Ok(Some(format!(
                    "{} uses the smudge filter {value} (filter.{value}.smudge or .process)",
                    String::from_utf8_lossy(t[0])
                )));
            }
        }
    }
    Ok(None)
}

/// The key of `tree`'s checkout: the repository owner's uid, its tree id and every setting that changes the bytes git
/// checks out for it (the `.gitattributes` files are part of the tree): `core.autocrlf`,
/// `core.eol`, `core.symlinks`, `core.checkRoundtripEncoding`, `core.attributesFile`, and the
/// contents of `$GIT_COMMON_DIR/info/attributes` and of the attributes file in effect.
fn checkout_key(ctx: &Ctx, tree: &str) -> Result<Hash> {
    let repo = &ctx.repo;
    // The checkout is made and read as the repository's owner, who could change it while it is
    // ingested: a snapshot is shared only between repositories of the same owner.
    let mut key = format!("execroot git checkout v1\nowner {}\ntree {tree}\n", ctx.git_owner.uid).into_bytes();
    let cfg = ctx.git(
        repo,
        &["config", "-z", "--get-regexp", r"^core\.(autocrlf|eol|symlinks|checkroundtripencoding|attributesfile)$"],
    )?;
    key.extend_from_slice(b"config\n");
    key.extend_from_slice(&cfg.stdout);
    let common = ctx.check(repo, &["rev-parse", "--path-format=absolute", "--git-common-dir"])?;
    let common = PathBuf::from(std::ffi::OsStr::from_bytes(common.trim_ascii_end()));
    let home = nix::unistd::User::from_uid(ctx.git_owner.uid.into()).ok().flatten().map(|u| u.dir);
    let global = match ctx.git(repo, &["config", "--path", "core.attributesFile"])? {
        o if o.ok() => Some(PathBuf::from(std::ffi::OsStr::from_bytes(o.stdout.trim_ascii_end()))),
        _ => home.map(|h| h.join(".config/git/attributes")),
    };
    for f in std::iter::once(common.join("info/attributes")).chain(global) {
        let content = match std::fs::read(&f) {
            Ok(c) => Hash::of(&c).to_hex(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "absent".into(),
            Err(e) => return Err(Error::io(&f, e)),
        };
        key.extend_from_slice(format!("\nattributes {} {content}\n", f.display()).as_bytes());
    }
    Ok(Hash::of(&key))
}

/// The snapshot of what `git worktree add` checks out for `commit` (whose tree is `tree`):
/// from the cache, else made by a real checkout into a temporary detached worktree (hooks
/// off), ingested and cached. True when it was ingested now.
fn snapshot_of(store: &Store, ctx: &Ctx, st: &WorktreeState, commit: &str, tree: &str) -> Result<(Hash, bool)> {
    let name = cache_ref(ctx, tree)?;
    if let Some(id) = store.get_ref(&name)? {
        if store.load_manifest(&id).is_ok() {
            return Ok((id, false));
        }
    }
    let tmp = checkout_dir(st);
    remove_checkout(ctx, &tmp)?;
    if let Some(id) = incremental(store, ctx, &tmp, commit, tree, &name)? {
        return Ok((id, true));
    }
    let tmp_s = tmp.to_string_lossy().into_owned();
    let r = (|| {
        ctx.check(
            &ctx.repo,
            &["-c", "core.hooksPath=/dev/null", "worktree", "add", "--detach", "--end-of-options", &tmp_s, commit],
        )?;
        hit("git-overlay.create.checked-out");
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("git.tree".to_string(), tree.to_string());
        labels.insert("git.repo".to_string(), ctx.repo.to_string_lossy().into_owned());
        let opts =
            IngestOptions { name: Some(name.clone()), labels, skip_special: false, exclude: vec![b".git".to_vec()] };
        // Read as the user who owns it (and could change it meanwhile): never more than that
        // user can read.
        if ctx.git_owner == crate::sys::Owner::current() {
            store.ingest_dir(&tmp, &opts, &NoProgress)
        } else {
            store.ingest_dir_as(ctx.git_owner, vec![ctx.git_owner.gid], &tmp, &opts)
        }
    })();
    remove_checkout(ctx, &tmp)?;
    Ok((r?.id, true))
}

/// The cache ref of `tree`'s checkout.
fn cache_ref(ctx: &Ctx, tree: &str) -> Result<String> {
    Ok(format!("{CACHE_REF_PREFIX}{}", &checkout_key(ctx, tree)?.to_hex()[..40]))
}

/// `commit`'s checkout as a change snapshot stacked on its first parent's cached checkout:
/// only the paths git says differ are checked out (into a temporary worktree whose index is
/// the commit's, so attributes come from the commit as in a full checkout) and ingested.
/// `None` (nothing made) when that cannot be exact or cheap: no parent, or its checkout not
/// cached, a deep stack, a changed `.gitattributes`, a path that turns from file into
/// directory or back, a repository owned by another user (whose tree is read with that
/// user's rights by the full ingest only).
fn incremental(store: &Store, ctx: &Ctx, tmp: &Path, commit: &str, tree: &str, name: &str) -> Result<Option<Hash>> {
    if ctx.git_owner != crate::sys::Owner::current() {
        return Ok(None);
    }
    let repo = &ctx.repo;
    let first = format!("{commit}^1");
    let parent = ctx.git(repo, &["rev-parse", "--verify", "--quiet", "--end-of-options", &first])?;
    if !parent.ok() {
        return Ok(None);
    }
    let parent = String::from_utf8_lossy(&parent.stdout).trim().to_string();
    let ptree = String::from_utf8_lossy(
        &ctx.check(repo, &["rev-parse", "--verify", "--end-of-options", &format!("{parent}^{{tree}}")])?,
    )
    .trim()
    .to_string();
    let Some(psnap) = store.get_ref(&cache_ref(ctx, &ptree)?)? else { return Ok(None) };
    if store.load_manifest(&psnap).is_err() || store.layer_stack(&[psnap])?.len() >= crate::store::layer::MAX_STACK / 2
    {
        return Ok(None);
    }
    // ":<src mode> <dst mode> <src id> <dst id> <status>" NUL "<path>" NUL, trees too (-t).
    let out = ctx.check(repo, &["diff-tree", "-r", "-t", "--no-renames", "-z", "--end-of-options", &parent, commit])?;
    let mut fields = out.split(|&b| b == 0);
    let (mut written, mut deleted) = (Vec::<Vec<u8>>::new(), Vec::<Vec<u8>>::new());
    while let (Some(meta), Some(path)) = (fields.next(), fields.next()) {
        let meta: Vec<&[u8]> = meta.split(|&b| b == b' ').collect();
        let (Some(dst), Some(status)) = (meta.get(1), meta.last()) else { break };
        if path == b".gitattributes" || path.ends_with(b"/.gitattributes") || *dst == b"160000" {
            return Ok(None);
        }
        match status.first() {
            Some(b'D') => deleted.push(path.to_vec()),
            // Directories come with the files checked out into them.
            _ if *dst == b"040000" => {}
            _ => written.push(path.to_vec()),
        }
    }
    let under = |p: &[u8], d: &[u8]| p == d || (p.starts_with(d) && p.get(d.len()) == Some(&b'/'));
    if deleted.iter().any(|d| written.iter().any(|w| under(w, d))) {
        return Ok(None);
    }
    // Only the topmost deletions: a whiteout hides everything below it.
    let top: Vec<Vec<u8>> =
        deleted.iter().filter(|d| !deleted.iter().any(|o| o != *d && under(d, o))).cloned().collect();
    // git takes paths as arguments here: a path that is not UTF-8 goes the full way.
    let Ok(paths) = written.iter().map(|p| String::from_utf8(p.clone())).collect::<std::result::Result<Vec<_>, _>>()
    else {
        return Ok(None);
    };
    let tmp_s = tmp.to_string_lossy().into_owned();
    let r = (|| -> Result<Hash> {
        ctx.check(
            repo,
            &[
                "-c",
                "core.hooksPath=/dev/null",
                "worktree",
                "add",
                "--no-checkout",
                "--detach",
                "--end-of-options",
                &tmp_s,
                commit,
            ],
        )?;
        ctx.check(tmp, &["read-tree", "--end-of-options", commit])?;
        for chunk in paths.chunks(500) {
            let mut args = vec!["checkout-index", "-f", "--"];
            args.extend(chunk.iter().map(String::as_str));
            ctx.check(tmp, &args)?;
        }
        // The change is recorded in directories that exist: those holding each deletion.
        for d in &top {
            if let Some(i) = d.iter().rposition(|&b| b == b'/') {
                let dir = tmp.join(std::ffi::OsStr::from_bytes(&d[..i]));
                std::fs::create_dir_all(&dir).at(&dir)?;
            }
        }
        hit("git-overlay.create.checked-out");
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("git.tree".to_string(), tree.to_string());
        labels.insert("git.repo".to_string(), repo.to_string_lossy().into_owned());
        let opts = IngestOptions { name: Some(name.to_string()), labels, skip_special: false, exclude: vec![] };
        Ok(store.ingest_change(tmp, &written, &top, vec![psnap], &opts)?.id)
    })();
    remove_checkout(ctx, tmp)?;
    r.map(Some)
}

/// Remove the temporary checkout worktree `tmp` and git's record of it, however far its making
/// or removal got (a killed `git worktree add` leaves its record locked `initializing`).
fn remove_checkout(ctx: &Ctx, tmp: &Path) -> Result<()> {
    let tmp_s = tmp.to_string_lossy().into_owned();
    let exists = std::fs::symlink_metadata(tmp).is_ok();
    let listed = worktree::listed(ctx, tmp)?;
    if !exists && listed.is_none() {
        return Ok(());
    }
    if let Some(Some(_)) = &listed {
        ctx.check(&ctx.repo, &["worktree", "unlock", "--end-of-options", &tmp_s])?;
    }
    if exists {
        match std::fs::remove_dir_all(tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(tmp, e)),
        }
    }
    ctx.check(&ctx.repo, &["worktree", "prune"])?;
    Ok(())
}

/// The paths (raw, relative) that the upper directory `upper` says a run touched: every entry
/// but directories (whiteouts, that is deletions, included), plus the directories that are
/// opaque or hold nothing; the worktree's own `.git` link and `--mount` trees left out.
fn upper_paths(upper: &Path, root: &RootSpec) -> Result<Vec<Vec<u8>>> {
    let tree = match Tree::open(upper) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::io(upper, e)),
    };
    let under_mount =
        |rel: &[u8]| root.mount_subdirs.iter().any(|m| rel == &m[..] || (rel.starts_with(m) && rel[m.len()] == b'/'));
    let mut all: Vec<(Vec<u8>, bool)> = Vec::new();
    tree.walk(&|rel, _| under_mount(rel), &mut |f| {
        if !f.rel.is_empty() && f.rel != b".git" && !under_mount(&f.rel) {
            all.push((f.rel, f.meta.kind == Kind::Dir));
        }
        Ok(())
    })?;
    let parents: BTreeSet<&[u8]> =
        all.iter().filter_map(|(r, _)| r.iter().rposition(|&b| b == b'/').map(|i| &r[..i])).collect();
    let mut out = Vec::new();
    for (rel, dir) in &all {
        let keep = !dir
            || !parents.contains(&rel[..])
            || crate::sys::xattr::is(&upper.join(std::ffi::OsStr::from_bytes(rel)), "trusted.overlay.opaque", b"y")?;
        if keep {
            out.push(rel.clone());
        }
    }
    Ok(out)
}

/// What a destroy would lose in a mounted root, judged by git on the paths the upper names
/// and on the index against HEAD (a staged change touches no file).
fn mounted_status(store: &Store, ctx: &Ctx, root: &RootSpec, st: &GitOverlayState) -> Result<GitStatus> {
    let wt = &st.worktree.worktree_path;
    let paths = upper_paths(&st.overlay.upper, root)?;
    let staged = ctx.git(wt, &["diff-index", "--cached", "--quiet", "HEAD", "--"])?;
    if !staged.ok() {
        // Rare: git status of everything tells the staged changes and the rest at once.
        return Ok(worktree::tally(worktree::status_of(store, ctx, root, wt, &["."])?));
    }
    let specs: Vec<String> =
        paths.iter().map(|p| format!(":(top,literal){}", String::from_utf8_lossy(p))).collect::<Vec<_>>();
    let mut entries = Vec::new();
    for chunk in specs.chunks(500) {
        let args: Vec<&str> = chunk.iter().map(String::as_str).collect();
        entries.extend(worktree::status_of(store, ctx, root, wt, &args)?);
    }
    Ok(worktree::tally(entries))
}

/// The paths that layers stacked above the checkout (`snapshots`, a provision layer) replace
/// or delete: every entry of their manifests but plain directories (which merge). A tracked
/// file at or below one of them is not the commit's checkout any more.
fn above_checkout(store: &Store, snapshots: &[Hash]) -> Result<BTreeSet<Vec<u8>>> {
    let mut out = BTreeSet::new();
    for id in store.layer_stack(snapshots)? {
        for e in store.load_manifest(&id)?.entries {
            if !e.path.is_empty() && e.node != crate::store::Node::Dir {
                out.insert(e.path);
            }
        }
    }
    Ok(out)
}

/// True when `path` or one of its ancestors is in `stale`.
fn is_stale(stale: &BTreeSet<Vec<u8>>, path: &[u8]) -> bool {
    if stale.is_empty() {
        return false;
    }
    let mut p = path;
    loop {
        if stale.contains(p) {
            return true;
        }
        match p.iter().rposition(|&b| b == b'/') {
            Some(i) => p = &p[..i],
            None => return false,
        }
    }
}

/// The cached snapshot of what `git worktree add` checks out for tree `tree` in `repo`, if
/// the checkout cache has it (docs/format.md, "Checkout cache"); `None` when a root of a
/// commit of that tree would make it. Used by provisioning, which builds on that checkout.
pub fn cached_checkout(store: &Store, repo: &Path, tree: &str) -> Result<Option<Hash>> {
    let ctx = Ctx::of(store, repo)?;
    match store.get_ref(&cache_ref(&ctx, tree)?)? {
        Some(id) if store.load_manifest(&id).is_ok() => Ok(Some(id)),
        _ => Ok(None),
    }
}

/// Write the index of worktree `wt` (whose files are `commit`'s checkout, as the overlay shows
/// them) from the commit's tree and lstat of each file, as the repository's owner; false (and
/// nothing written) when the repository's objects are not SHA-1. Entries at or below a path of
/// `stale` get no stat data, so that git compares their content. Never cached across roots:
/// the ctime of a shared layer inode changes whenever another layer links it.
fn write_index(ctx: &Ctx, wt: &Path, commit: &str, stale: &BTreeSet<Vec<u8>>) -> Result<bool> {
    use crate::sys::gitindex::{encode, parse_oid, IndexEntry};
    let format = ctx.git(&ctx.repo, &["rev-parse", "--show-object-format"])?;
    if !format.ok() || format.stdout.trim_ascii() != b"sha1" {
        return Ok(false);
    }
    let out = ctx.check(&ctx.repo, &["ls-tree", "-r", "-z", "--full-tree", "--end-of-options", commit])?;
    let mut entries = Vec::new();
    // "<mode> SP <type> SP <oid> TAB <path>"
    for rec in out.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let bad =
            || Error::Corrupt(format!("git ls-tree {commit}: unexpected line {:?}", String::from_utf8_lossy(rec)));
        let tab = rec.iter().position(|&b| b == b'\t').ok_or_else(bad)?;
        let mut meta = rec[..tab].split(|&b| b == b' ');
        let (Some(mode), Some(_), Some(oid)) = (meta.next(), meta.next(), meta.next()) else { return Err(bad()) };
        let mode = std::str::from_utf8(mode).ok().and_then(|m| u32::from_str_radix(m, 8).ok()).ok_or_else(bad)?;
        let oid = parse_oid(oid).ok_or_else(bad)?;
        let path = rec[tab + 1..].to_vec();
        if is_stale(stale, &path) {
            // No stat data (size 0), as `git read-tree` writes: git compares the content.
            let zero = (0, 0);
            entries.push(IndexEntry {
                path,
                mode,
                oid,
                ctime: zero,
                mtime: zero,
                dev: 0,
                ino: 0,
                uid: 0,
                gid: 0,
                size: 0,
            });
            continue;
        }
        let file = wt.join(std::ffi::OsStr::from_bytes(&path));
        let md = std::fs::symlink_metadata(&file).at(&file)?;
        entries.push(IndexEntry::new(path, mode, oid, &md));
    }
    let bytes = encode(entries);
    let dir = ctx.check(wt, &["rev-parse", "--path-format=absolute", "--git-dir"])?;
    let dir = PathBuf::from(std::ffi::OsStr::from_bytes(dir.trim_ascii_end()));
    let (index, tmp) = (dir.join("index"), dir.join("index.execroot.tmp"));
    // The admin directory is the repository owner's: written with its permissions, no more.
    let (i, t) = (index.clone(), tmp.clone());
    let done = crate::sys::creds::run_as(ctx.git_owner, vec![], move || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&t);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&t)?;
        f.write_all(&bytes)?;
        std::fs::rename(&t, &i)
    })
    .map_err(|e| Error::io(&tmp, e))?;
    done.join()
        .map_err(|_| Error::io(&tmp, std::io::Error::other("the index writer panicked")))?
        .and_then(|r| r)
        .map_err(|e| Error::io(&index, e))?;
    Ok(true)
}

/// Run the repository's `post-checkout` hook in worktree `wt` as `git worktree add` runs it
/// after a checkout (which `--no-checkout` skipped): if `$(git rev-parse --git-path
/// hooks/post-checkout)` (which follows `core.hooksPath`) is an executable file, with the
/// arguments `<null id> <commit> 1`, in the worktree, as the repository's owner, with the
/// clean environment and timeout of every git command. git makes the hook's exit status its
/// own; here the root is made all the same and a failure is a warning (docs/roots.md).
fn post_checkout(store: &Store, ctx: &Ctx, wt: &Path, commit: &str) -> Result<Vec<String>> {
    let out = ctx.check(wt, &["rev-parse", "--path-format=absolute", "--git-path", "hooks/post-checkout"])?;
    let hook = PathBuf::from(std::ffi::OsStr::from_bytes(out.trim_ascii_end()));
    match std::fs::metadata(&hook) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {}
        _ => return Ok(vec![]),
    }
    let null = "0".repeat(commit.len());
    let timeout = worktree::timeout(store);
    let res = crate::sys::git::run_hook(&hook, wt, ctx.git_owner, &[&null, commit, "1"], timeout);
    Ok(match res {
        Ok(o) if o.ok() => vec![],
        Ok(o) => vec![format!(
            "the post-checkout hook {} failed ({}): {}",
            hook.display(),
            o.code.map_or("killed by a signal".to_string(), |c| format!("exit status {c}")),
            o.stderr.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" / ")
        )],
        Err(e) => vec![format!("the post-checkout hook {} could not run: {e}", hook.display())],
    })
}

impl Backend for GitOverlay {
    type State = GitOverlayState;
    const KIND: BackendKind = BackendKind::GitOverlay;
    const CAPABILITIES: Capabilities = Capabilities { commit: false };

    fn plan(&self, store: &Store, root: &RootSpec, req: &WorktreeRequest) -> Result<Plan<GitOverlayState>> {
        let p = Worktree.plan(store, root, req)?;
        Ok(Plan {
            cwd: p.cwd,
            owner: p.owner,
            state: GitOverlayState { worktree: p.state, overlay: overlay::fresh_dirs(&root.dir) },
            warnings: p.warnings,
        })
    }

    fn create(&self, store: &Store, root: &RootSpec, st: &mut GitOverlayState) -> Result<Made> {
        let wst = &mut st.worktree;
        let ctx = Ctx::for_root(store, &wst.repo, root)?;
        let repo = wst.repo.clone();
        let branch = wst.branch_name.clone();
        let _lock = worktree::repo_lock(store, &repo)?;
        let parent = wst.worktree_path.parent().expect("planned below a parent").to_path_buf();
        std::fs::create_dir_all(&parent).at(&parent)?;
        std::os::unix::fs::lchown(&parent, Some(ctx.git_owner.uid), Some(ctx.git_owner.gid)).at(&parent)?;
        hit("git-overlay.create.dir-made");
        let mut made = Made::default();
        let existing = worktree::branch_exists(&ctx, &repo, &branch)?;
        let commit = commit_of(&ctx, if existing { &branch } else { &wst.base_ref })?;
        let tree = {
            let spec = format!("{commit}^{{tree}}");
            String::from_utf8_lossy(&ctx.check(&repo, &["rev-parse", "--verify", "--end-of-options", &spec])?)
                .trim()
                .to_string()
        };
        let (snap, _ingested) = snapshot_of(store, &ctx, wst, &commit, &tree)?;
        let path_s = wst.worktree_path.to_string_lossy().into_owned();
        if existing {
            wst.created_branch = false;
            ctx.check(&repo, &["worktree", "add", "--no-checkout", "--end-of-options", &path_s, &branch])?;
            made.warnings.push(format!("branch {branch} already existed; it is used as is and will be kept"));
        } else {
            wst.created_branch = true;
            ctx.check(
                &repo,
                &["worktree", "add", "--no-checkout", "-b", &branch, "--end-of-options", &path_s, &commit],
            )?;
        }
        hit("git-overlay.create.added");
        ctx.check(&repo, &["worktree", "lock", "--reason", &lock_reason(&root.id), "--end-of-options", &path_s])?;
        hit("git-overlay.create.locked");
        // The link to the worktree's admin directory, which the overlay is about to cover.
        let link_path = wst.worktree_path.join(".git");
        let link = std::fs::read(&link_path).at(&link_path)?;
        // The root's own snapshots (a provision layer) are stacked above the checkout.
        let stack: Vec<Hash> = std::iter::once(snap).chain(root.snapshots.iter().copied()).collect();
        // Durable always: a repo-edit root lives for days, across reboots.
        let guard = overlay::mount_snapshots(
            store,
            &stack,
            &mut st.overlay,
            Place::at(&st.worktree.worktree_path)?,
            root.owner,
            false,
        )?;
        let upper_link = st.overlay.upper.join(".git");
        std::fs::write(&upper_link, &link).at(&upper_link)?;
        std::fs::set_permissions(&upper_link, std::fs::Permissions::from_mode(0o644)).at(&upper_link)?;
        std::os::unix::fs::lchown(&upper_link, Some(root.owner.uid), Some(root.owner.gid)).at(&upper_link)?;
        hit("git-overlay.create.mounted");
        // The index, so that `git status` is clean: written from the commit's blob ids and
        // the merged view's stat data (no file is hashed); for a SHA-256 repository, git's
        // read-tree and one refresh (which hashes every file once).
        let wt = &st.worktree.worktree_path;
        let stale = above_checkout(store, &root.snapshots)?;
        if !write_index(&ctx, wt, &commit, &stale)? {
            ctx.check(wt, &["read-tree", "--end-of-options", &commit])?;
            ctx.check(wt, &["update-index", "-q", "--refresh"])?;
        }
        hit("git-overlay.create.indexed");
        made.warnings.extend(post_checkout(store, &ctx, wt, &commit)?);
        made.mounts.push(guard);
        made.snapshots = Some(stack);
        Ok(made)
    }

    fn is_live(&self, _store: &Store, root: &RootSpec, _st: &GitOverlayState) -> Result<bool> {
        mount::is_mounted(&root.cwd)
    }

    fn revive(&self, store: &Store, root: &RootSpec, st: &mut GitOverlayState) -> Result<()> {
        let mut dirs = st.overlay.clone();
        dirs.lowers = overlay::lowers_for(store, &store.layer_stack(&root.snapshots)?, root.owner)?;
        dirs.mount_again(Place::at(&root.cwd)?, false, false)?.keep();
        st.overlay = dirs;
        Ok(())
    }

    fn detach(&self, _store: &Store, root: &RootSpec, _st: &GitOverlayState) -> Result<bool> {
        // A root whose files git looked at has thousands of inodes for the kernel to evict:
        // that is left to go on while git removes the worktree.
        Ok(mount::unmount_no_wait(&root.cwd)? != Unmounted::Busy)
    }

    fn check_destroy(&self, store: &Store, root: &RootSpec, st: &GitOverlayState, force: bool) -> Result<Vec<String>> {
        // A create that did not finish (no snapshot recorded) never had a whole worktree: only
        // a repository that is gone counts then.
        let why = match root.snapshots.is_empty() {
            false => self.gone(store, root, st)?,
            true => worktree::repo_gone(store, &st.worktree.repo, false)?,
        };
        if let Some(why) = why {
            // Git cannot judge any more: the upper says what changed, the branch what is saved.
            return worktree::judge_gone(store, root, &st.worktree, &st.overlay.upper, true, &why, force);
        }
        if mount::is_mounted(&root.cwd)? {
            let ctx = Ctx::for_root(store, &st.worktree.repo, root)?;
            return worktree::judge(root, &mounted_status(store, &ctx, root, st)?, force);
        }
        // Not mounted (after a reboot, before doctor): git cannot see the tree, the upper
        // still says what changed.
        let paths: Vec<String> =
            upper_paths(&st.overlay.upper, root)?.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
        if paths.is_empty() {
            return Ok(vec![]);
        }
        if !force {
            return Err(Error::Conflict(format!(
                "root {} is not mounted and its upper directory holds {} changed path(s); `execroot doctor --repair` mounts it again so git can judge them, or use --force: {}",
                root.id,
                paths.len(),
                worktree::listing(&paths)
            )));
        }
        Ok(vec![format!("--force: discarded {} changed path(s): {}", paths.len(), worktree::listing(&paths))])
    }

    fn check_interrupted(
        &self,
        store: &Store,
        root: &RootSpec,
        st: &GitOverlayState,
        what: Interrupted,
    ) -> Result<Vec<String>> {
        if let Some(why) = worktree::repo_gone(store, &st.worktree.repo, false)? {
            return worktree::kept_when_repo_gone(store, root, &st.overlay.upper, true, &why);
        }
        let ctx = Ctx::for_root(store, &st.worktree.repo, root)?;
        // A git the killed execroot started may still run: judge once it is done.
        drop(ctx.hold()?);
        match what {
            // Never handed out: the upper holds nothing but the `.git` link execroot wrote,
            // unless someone else wrote there.
            Interrupted::Create => {
                let paths: Vec<String> = upper_paths(&st.overlay.upper, root)?
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
                if paths.is_empty() {
                    return Ok(vec![]);
                }
                Err(Error::Conflict(format!(
                    "root {} was never ready but its upper directory holds {} path(s) execroot did not write; they are kept: look, then `execroot root destroy {} --force`: {}",
                    root.id,
                    paths.len(),
                    root.id,
                    worktree::listing(&paths)
                )))
            }
            // The destroy's check passed before it recorded `destroying`; while still mounted
            // whatever was written since is judged again.
            Interrupted::Destroy if mount::is_mounted(&root.cwd)? => self.check_destroy(store, root, st, false),
            Interrupted::Destroy => Ok(vec![]),
        }
    }

    fn destroy(&self, store: &Store, root: &RootSpec, st: &GitOverlayState) -> Result<Vec<String>> {
        if mount::unmount(&root.cwd)? == Unmounted::Busy {
            return Err(Error::Busy { path: root.cwd.clone() });
        }
        hit("git-overlay.destroy.unmounted");
        let wst = &st.worktree;
        let mut own_lock = None;
        // A repository that is gone has nothing to be told (the worktree backend says so).
        if worktree::repo_gone(store, &wst.repo, false)?.is_none() {
            let ctx = Ctx::for_root(store, &wst.repo, root)?;
            let _lock = worktree::repo_lock(store, &ctx.repo)?;
            // A create that did not finish (no snapshot recorded) may have left its temporary
            // checkout, on disk or only in git's records; one that finished removed it.
            let checkout = checkout_dir(wst);
            if root.snapshots.is_empty() || std::fs::symlink_metadata(&checkout).is_ok() {
                remove_checkout(&ctx, &checkout)?;
            }
            // Only execroot's own lock is lifted; anyone else's stops the destroy (below). It
            // is read from git's admin directory, which the `.git` link in the upper names,
            // rather than with `git worktree list`: one git run less of the five or six a
            // destroy takes (each 5 to 100 ms on a loaded machine).
            let ours = lock_reason(&root.id);
            let lock = match worktree::admin_dir(&st.overlay.upper.join(".git"), &wst.worktree_path) {
                Some(admin) if admin.join("gitdir").is_file() => worktree::lock_in(&admin)?,
                _ => worktree::listed(&ctx, &wst.worktree_path)?.flatten(),
            };
            if lock.as_deref() == Some(ours.as_str()) {
                own_lock = Some(ours);
            }
        }
        hit("git-overlay.destroy.unlocked");
        // What is left is a worktree without files: the worktree backend's teardown (git's
        // record, removed with execroot's lock on, and the branch if it holds nothing unique).
        worktree::teardown(store, root, wst, own_lock.as_deref())
    }

    fn gone(&self, store: &Store, root: &RootSpec, st: &GitOverlayState) -> Result<Option<String>> {
        // The worktree's `.git` link lives in the upper, mounted or not.
        worktree::gone(store, root, &st.worktree, &st.overlay.upper.join(".git"))
    }

    fn rescue(&self, store: &Store, root: &RootSpec, st: &GitOverlayState) -> Result<Option<super::Rescued>> {
        worktree::rescue_gone(store, root, &st.worktree, &st.overlay.upper, true)
    }

    fn usage(&self, _store: &Store, _root: &RootSpec, st: &GitOverlayState) -> Result<Usage> {
        Ok(tree_usage(&st.overlay.upper))
    }

    fn diff(&self, store: &Store, root: &RootSpec, st: &GitOverlayState) -> Result<Diff> {
        Worktree.diff(store, root, &st.worktree)
    }

    fn git_status(&self, store: &Store, root: &RootSpec, st: &GitOverlayState) -> Result<Option<GitStatus>> {
        Worktree.git_status(store, root, &st.worktree)
    }
}
