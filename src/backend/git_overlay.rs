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

use std::collections::{BTreeSet, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::git_listing::{self, keep_listing, listing_path, Changed, Listed, Listing, Source};
use super::worktree::{self, Ctx, GitStatus, Worktree, WorktreeState};
use super::{overlay, WorktreeRequest};
use super::{tree_usage, Backend, BackendKind, BackendState, Capabilities, Interrupted, Made, Plan, RootSpec, Usage};
use crate::change::Diff;
use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::store::ingest::{IngestOptions, NoProgress, Staged};
use crate::sys::beneath::{Kind, Tree};
use crate::sys::failpoint::hit;
use crate::sys::gitindex::{TreeEntry, Trees};
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
    /// What the plan read of the repository, for the create that follows in the same process
    /// (never recorded).
    #[serde(skip)]
    pub planned: Planned,
}

/// What [`plan_or_fallback`] read of the repository (the revision's facts, and the tree's
/// listing when it had to list it), handed to the create that follows it in the same process
/// so that it does not run the same git commands again a few milliseconds later. A state read
/// back from disk has none, and its create reads everything anew.
#[derive(Clone, Default)]
pub struct Planned(Option<std::sync::Arc<PlanRead>>);

/// See [`Planned`].
#[derive(Clone)]
struct PlanRead {
    facts: Facts,
    listing: Option<Listed>,
    change: Option<ParentChange>,
}

/// A commit's change from its first parent, whose checkout is cached: what a checkout of the
/// commit is made from ([`incremental`]), and its listing ([`git_listing::derive`]).
#[derive(Clone)]
struct ParentChange {
    /// The parent's cached checkout.
    snap: Hash,
    /// The parent's tree.
    tree: String,
    /// `git diff-tree -r -t` from the parent to the commit.
    records: std::sync::Arc<Vec<Changed>>,
}

impl PartialEq for Planned {
    /// A cache: it never makes two states differ.
    fn eq(&self, _: &Planned) -> bool {
        true
    }
}

impl Eq for Planned {}

impl std::fmt::Debug for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Planned(read)" } else { "Planned(none)" })
    }
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
    let facts = Facts::of(&ctx, &rev)?;
    let (why, listing, change) = unreproducible(store, &ctx, &facts)?;
    if let Some(why) = why {
        let mut warnings = p.warnings;
        warnings.push(format!("using the worktree backend: git-overlay cannot reproduce this checkout ({why})"));
        return Ok(Plan { cwd: p.cwd, owner: p.owner, state: BackendState::Worktree(p.state), warnings });
    }
    Ok(Plan {
        cwd: p.cwd,
        owner: p.owner,
        state: BackendState::GitOverlay(GitOverlayState {
            // An existing branch is read again under the repository's lock by the create.
            planned: Planned(p.state.created_branch.then(|| std::sync::Arc::new(PlanRead { facts, listing, change }))),
            worktree: p.state,
            overlay: overlay::fresh_dirs(&root.dir),
        }),
        warnings: p.warnings,
    })
}

/// What a create needs to know of a revision and of the repository's settings, read with
/// one `git rev-parse` and one `git config` (each git process costs milliseconds, and a warm
/// create is meant to take few of them).
#[derive(Clone)]
struct Facts {
    /// The commit the revision names.
    commit: String,
    /// Its tree.
    tree: String,
    /// `$GIT_COMMON_DIR`, absolute.
    common_dir: PathBuf,
    /// The repository's objects are SHA-1 (the index execroot writes is for those only).
    sha1: bool,
    /// The records of `git config -z --get-regexp` for [`CONFIG_READ`], in git's order.
    config: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// Every setting a create reads: those that change the checked-out bytes (part of the cache
/// key), sparse checkout, and smudge or process filters (which a snapshot cannot reproduce).
/// Also what decides whether and how the root's index gets an untracked cache and an fsmonitor
/// ([`untracked_header`], [`fsmonitor_hook`]).
const CONFIG_READ: &str = r"^(core\.(sparsecheckout|autocrlf|eol|symlinks|checkroundtripencoding|attributesfile|hookspath|untrackedcache|excludesfile|fsmonitor)|attr\.tree|status\.showuntrackedfiles|extensions\.worktreeconfig|filter\..+\.(smudge|process))$";

/// The settings of [`CONFIG_READ`] that are part of the checkout's key.
const KEY_SETTINGS: [&str; 5] =
    ["core.autocrlf", "core.eol", "core.symlinks", "core.checkroundtripencoding", "core.attributesfile"];

impl Facts {
    fn of(ctx: &Ctx, rev: &str) -> Result<Facts> {
        let repo = &ctx.repo;
        let (c, t) = (format!("{rev}^{{commit}}"), format!("{rev}^{{tree}}"));
        let args = [
            "rev-parse",
            "--path-format=absolute",
            "--git-common-dir",
            "--show-object-format",
            "--end-of-options",
            &c,
            &t,
        ];
        let out = ctx.check(repo, &args)?;
        // Without --verify (which takes one revision) rev-parse echoes the options it does not
        // know itself (`--end-of-options`; an older git's `--path-format=absolute`): the rest
        // are, in order, the common directory, the object format, the commit and the tree.
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').filter(|l| !l.is_empty() && !l.starts_with(b"--")).collect();
        let bad =
            || Error::Corrupt(format!("git rev-parse {rev}: unexpected output {:?}", String::from_utf8_lossy(&out)));
        if lines.len() < 3 {
            return Err(bad());
        }
        let hex = |l: &[u8]| {
            (l.len() >= 40 && l.iter().all(u8::is_ascii_hexdigit)).then(|| String::from_utf8_lossy(l).into_owned())
        };
        let commit = hex(lines[lines.len() - 2]).ok_or_else(bad)?;
        let tree = hex(lines[lines.len() - 1]).ok_or_else(bad)?;
        // Relative from a git without --path-format: relative to the repository.
        let common_dir = repo.join(std::ffi::OsStr::from_bytes(lines[0]));
        // A git too old to know --show-object-format knows SHA-1 only; say no all the same
        // (git's own read-tree then makes the index).
        let sha1 = lines.len() >= 4 && lines[1] == b"sha1";
        // Exit status 1: none of them is set.
        let cfg = ctx.git(repo, &["config", "-z", "--get-regexp", CONFIG_READ])?;
        if !cfg.ok() && cfg.code != Some(1) {
            return Err(Error::Tool {
                what: format!("git config --get-regexp in {}", repo.display()),
                status: cfg.code,
                stderr: cfg.stderr,
            });
        }
        // "<name> LF <value> NUL", or "<name> NUL" for a name without a value (true).
        let config = cfg
            .stdout
            .split(|&b| b == 0)
            .filter(|r| !r.is_empty())
            .map(|r| match r.iter().position(|&b| b == b'\n') {
                Some(i) => (r[..i].to_vec(), Some(r[i + 1..].to_vec())),
                None => (r.to_vec(), None),
            })
            .collect();
        Ok(Facts { commit, tree, common_dir, sha1, config })
    }

    /// The last value of setting `name` (lower case), if set; `Some(None)`: set without a value.
    fn get(&self, name: &str) -> Option<Option<&[u8]>> {
        self.config.iter().rev().find(|(k, _)| k == name.as_bytes()).map(|(_, v)| v.as_deref())
    }

    /// The names of the smudge or process filters configured.
    fn filters(&self) -> BTreeSet<String> {
        self.config
            .iter()
            .filter_map(|(k, _)| std::str::from_utf8(k).ok())
            .filter_map(|k| k.strip_prefix("filter.")?.rsplit_once('.').map(|(n, _)| n.to_string()))
            .collect()
    }

    /// `core.sparseCheckout` is true.
    fn sparse(&self) -> bool {
        self.is_true("core.sparsecheckout")
    }

    /// Setting `name` (lower case) is true, read as git reads a boolean.
    fn is_true(&self, name: &str) -> bool {
        match self.get(name) {
            None => false,
            Some(None) => true,
            Some(Some(v)) => {
                let v = String::from_utf8_lossy(v).trim().to_ascii_lowercase();
                matches!(v.as_str(), "true" | "yes" | "on") || v.parse::<i64>().is_ok_and(|n| n != 0)
            }
        }
    }
}

/// Why a snapshot cannot be what `git worktree add` checks out for the commit of `facts`, if
/// it cannot: sparse checkout, submodules (gitlinks), or a smudge or process filter configured
/// for a path of the tree (git LFS and the like run per checkout, and may fetch). A tree whose
/// checkout is cached has no gitlink (none is ever cached), so with no filter configured a
/// warm create lists nothing, and one whose first parent's checkout is cached needs only the
/// change from it (gitlinks in the tree are those the change adds). What was read to tell
/// (the tree's listing, or that change) goes with the answer: the create needs it too.
type Reproducible = (Option<String>, Option<Listed>, Option<ParentChange>);

fn unreproducible(store: &Store, ctx: &Ctx, facts: &Facts) -> Result<Reproducible> {
    let repo = &ctx.repo;
    if facts.sparse() {
        return Ok((Some("the repository uses sparse checkout (core.sparseCheckout)".into()), None, None));
    }
    // A checkout's snapshot is its tree's; attributes from another tree (git 2.46's
    // `attr.tree`, which names a revision that moves) would make it a product of two.
    if facts.get("attr.tree").is_some() {
        return Ok((Some("attr.tree is set: attributes come from another tree than the commit's".into()), None, None));
    }
    let names = facts.filters();
    let submodule = |path: &[u8]| format!("the tree has a submodule at {}", String::from_utf8_lossy(path));
    if names.is_empty() {
        if cached(store, &cache_ref(ctx, facts, &facts.tree)?)?.is_some() {
            return Ok((None, None, None));
        }
        if let Some(change) = parent_change(store, ctx, facts)? {
            if let Some(g) = change.records.iter().find(|c| c.mode == 0o160000) {
                return Ok((Some(submodule(&g.path)), None, None));
            }
            return Ok((None, None, Some(change)));
        }
    }
    let commit = &facts.commit;
    let listed = git_listing::list(ctx, commit)?;
    if let Some(g) = listed.blobs.iter().find(|e| e.mode == 0o160000) {
        return Ok((Some(submodule(&g.path)), None, None));
    }
    if names.is_empty() {
        return Ok((None, facts.sha1.then_some(listed), None));
    }
    let paths: Vec<String> = listed.blobs.iter().map(|e| String::from_utf8_lossy(&e.path).into_owned()).collect();
    for chunk in paths.chunks(500) {
        let source = format!("--source={commit}");
        let mut args = vec!["check-attr", "-z", source.as_str(), "filter", "--"];
        args.extend(chunk.iter().map(String::as_str));
        let out = ctx.git(repo, &args)?;
        if !out.ok() {
            return Ok((
                Some(format!("cannot tell which paths use the smudge filters configured: {}", out.stderr)),
                None,
                None,
            ));
        }
        // "<path> NUL <attribute> NUL <value> NUL"
        let f: Vec<&[u8]> = out.stdout.split(|&b| b == 0).collect();
        for t in f.chunks(3).filter(|t| t.len() == 3) {
            let value = String::from_utf8_lossy(t[2]);
            if names.contains(value.as_ref()) {
                return Ok((
                    Some(format!(
                        "{} uses the smudge filter {value} (filter.{value}.smudge or .process)",
                        String::from_utf8_lossy(t[0])
                    )),
                    None,
                    None,
                ));
            }
        }
    }
    Ok((None, facts.sha1.then_some(listed), None))
}

/// The change from the first parent of the commit of `facts` to it, when the parent's
/// checkout is cached (with the settings of `facts`), its stack is not deep, and the
/// repository's objects are SHA-1; `None` otherwise (no parent, say).
fn parent_change(store: &Store, ctx: &Ctx, facts: &Facts) -> Result<Option<ParentChange>> {
    if !facts.sha1 {
        return Ok(None);
    }
    let (repo, commit) = (&ctx.repo, facts.commit.as_str());
    // The first parent and its tree, at once; no parent fails.
    let (first, first_tree) = (format!("{commit}^1"), format!("{commit}^1^{{tree}}"));
    let out = ctx.git(repo, &["rev-parse", "--end-of-options", &first, &first_tree])?;
    if !out.ok() {
        return Ok(None);
    }
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.len() >= 40 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
        .collect();
    let [parent, ptree] = &lines[..] else { return Ok(None) };
    let Some(snap) = cached(store, &cache_ref(ctx, facts, ptree)?)? else { return Ok(None) };
    if store.layer_stack(&[snap])?.len() >= crate::store::layer::MAX_STACK / 2 {
        return Ok(None);
    }
    let out = ctx.check(repo, &["diff-tree", "-r", "-t", "--no-renames", "-z", "--end-of-options", parent, commit])?;
    let Some(records) = git_listing::parse_diff_tree(&out) else { return Ok(None) };
    Ok(Some(ParentChange { snap, tree: ptree.clone(), records: std::sync::Arc::new(records) }))
}

/// The key of `tree`'s checkout: the repository owner's uid, its tree id and every setting that changes the bytes git
/// checks out for it (the `.gitattributes` files are part of the tree): `core.autocrlf`,
/// `core.eol`, `core.symlinks`, `core.checkRoundtripEncoding`, `core.attributesFile`, and the
/// contents of `$GIT_COMMON_DIR/info/attributes` and of the attributes file in effect.
fn checkout_key(ctx: &Ctx, facts: &Facts, tree: &str) -> Result<Hash> {
    let repo = &ctx.repo;
    // The checkout is made and read as the repository's owner, who could change it while it is
    // ingested: a snapshot is shared only between repositories of the same owner.
    let mut key = format!("execroot git checkout v1\nowner {}\ntree {tree}\n", ctx.git_owner.uid).into_bytes();
    key.extend_from_slice(b"config\n");
    // Byte for byte what `git config -z --get-regexp` of these settings alone prints.
    for (k, v) in facts.config.iter().filter(|(k, _)| KEY_SETTINGS.iter().any(|n| n.as_bytes() == &k[..])) {
        key.extend_from_slice(k);
        if let Some(v) = v {
            key.push(b'\n');
            key.extend_from_slice(v);
        }
        key.push(0);
    }
    let home = || nix::unistd::User::from_uid(ctx.git_owner.uid.into()).ok().flatten().map(|u| u.dir);
    // Only a set core.attributesFile needs git to expand it (`~/`, `%(prefix)/`).
    let global = match facts.get("core.attributesfile") {
        None => home().map(|h| h.join(".config/git/attributes")),
        Some(_) => match ctx.git(repo, &["config", "--path", "core.attributesFile"])? {
            o if o.ok() => Some(PathBuf::from(std::ffi::OsStr::from_bytes(o.stdout.trim_ascii_end()))),
            _ => home().map(|h| h.join(".config/git/attributes")),
        },
    };
    for f in std::iter::once(facts.common_dir.join("info/attributes")).chain(global) {
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
/// from the cache (whose ref is `name`, [`cache_ref`]), else made by a real checkout into a temporary detached worktree (hooks
/// off), ingested and cached. True when it was ingested now.
fn snapshot_of(
    store: &Store,
    ctx: &Ctx,
    st: &WorktreeState,
    facts: &Facts,
    name: &str,
    making: &mut Making,
) -> Result<(Hash, bool)> {
    let (commit, tree) = (facts.commit.as_str(), facts.tree.as_str());
    let name = name.to_string();
    if let Some(id) = cached(store, &name)? {
        return Ok((id, false));
    }
    let tmp = checkout_dir(st);
    remove_checkout(ctx, &tmp, Some(&facts.common_dir))?;
    if let Some(id) = incremental(store, ctx, &tmp, facts, &name, making)? {
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
    remove_checkout(ctx, &tmp, Some(&facts.common_dir))?;
    Ok((r?.id, true))
}

/// The cache ref of `tree`'s checkout (with the settings of `facts`).
fn cache_ref(ctx: &Ctx, facts: &Facts, tree: &str) -> Result<String> {
    Ok(format!("{CACHE_REF_PREFIX}{}", &checkout_key(ctx, facts, tree)?.to_hex()[..40]))
}

/// The snapshot cache ref `name` names, if its snapshot is there: its manifest's header is
/// read, not the whole manifest (a warm create must not decode tens of thousands of entries;
/// a layer is only ever built from a fully validated manifest).
fn cached(store: &Store, name: &str) -> Result<Option<Hash>> {
    Ok(store.get_ref(name)?.filter(|id| store.parents_of(id).is_ok()))
}

/// `commit`'s checkout as a change snapshot stacked on its first parent's cached checkout:
/// only the paths git says differ are checked out (`git checkout-index --temp` with the
/// repository's git directory, into a temporary directory git knows nothing of, from an index
/// of execroot's holding those paths and the commit's `.gitattributes`, so attributes come
/// from the commit as in a full checkout) and ingested with the modes git gives them.
/// `None` (nothing made) when that cannot be exact or cheap: no parent, or its checkout not
/// cached, a deep stack, a changed `.gitattributes`, a path that turns from file into
/// directory or back, a submodule, a repository owned by another user (whose tree is read
/// with that user's rights by the full ingest only).
fn incremental(
    store: &Store,
    ctx: &Ctx,
    tmp: &Path,
    facts: &Facts,
    name: &str,
    making: &mut Making,
) -> Result<Option<Hash>> {
    if ctx.git_owner != crate::sys::Owner::current() {
        return Ok(None);
    }
    let (repo, commit, tree) = (&ctx.repo, facts.commit.as_str(), facts.tree.as_str());
    let change = match making.change.take() {
        Some(c) => c,
        None => match parent_change(store, ctx, facts)? {
            Some(c) => c,
            None => return Ok(None),
        },
    };
    let psnap = change.snap;
    let (mut written, mut deleted) = (Vec::<Vec<u8>>::new(), Vec::<Vec<u8>>::new());
    // The blobs to check out, for the temporary checkout's index.
    let mut blobs = Vec::<TreeEntry>::new();
    for c in change.records.iter() {
        let path = c.path.as_slice();
        if git_listing::is_attributes(path) || c.mode == 0o160000 {
            return Ok(None);
        }
        if c.deleted() {
            deleted.push(c.path.clone());
        } else if !c.is_tree() {
            // Directories come with the files checked out into them.
            blobs.push(TreeEntry { path: c.path.clone(), mode: c.mode, oid: c.oid });
            written.push(c.path.clone());
        }
    }
    let under = |p: &[u8], d: &[u8]| p == d || (p.starts_with(d) && p.get(d.len()) == Some(&b'/'));
    if deleted.iter().any(|d| written.iter().any(|w| under(w, d))) {
        return Ok(None);
    }
    // Only the topmost deletions: a whiteout hides everything below it.
    let top: Vec<Vec<u8>> =
        deleted.iter().filter(|d| !deleted.iter().any(|o| o != *d && under(d, o))).cloned().collect();
    // Checked out with the repository's own git directory and an index of execroot's, into a
    // directory git knows nothing of: no worktree to register, and none to prune after.
    let index = tmp.with_file_name("checkout.index");
    let git_dir = format!("--git-dir={}", facts.common_dir.display());
    let work_tree = format!("--work-tree={}", tmp.display());
    let globals = [git_dir.as_str(), work_tree.as_str(), "-c", "core.fsmonitor=false"];
    let r = (|| -> Result<Hash> {
        std::fs::create_dir(tmp).at(tmp)?;
        // checkout-index converts as a full checkout would when the index holds the paths to
        // check out and every `.gitattributes` of the commit (none changed, see above): such
        // an index is written here, far cheaper than `git read-tree` of the whole tree. (Git's
        // `--attr-source=COMMIT`, which would spare the listing, reads trees per path: 70 ms
        // for 100 paths against 15.) A SHA-256 repository gets git's read-tree.
        // Those of the commit are the parent's: read from its kept listing at once, while the
        // commit's listing is derived from the rest of it.
        let kept = facts.sha1.then(|| git_listing::kept_attributes(&listing_path(store, &psnap), &change.tree));
        let attrs = match kept.flatten() {
            Some(a) => Some(a),
            None => making
                .listing
                .get()?
                .map(|all| all.blobs.iter().filter(|e| git_listing::is_attributes(&e.path)).cloned().collect()),
        };
        match attrs {
            Some(attrs) => {
                let entries = blobs.iter().chain(&attrs).map(crate::sys::gitindex::IndexEntry::unstat).collect();
                std::fs::write(&index, crate::sys::gitindex::encode(entries, None, &[])).at(&index)?;
            }
            None => {
                let args: Vec<&str> =
                    globals.iter().copied().chain(["read-tree", "--end-of-options", commit]).collect();
                ctx.check_with_index(repo, &args, &index, None)?;
            }
        }
        // Into temporary files side by side (`--temp`), converted as in a checkout, symlinks
        // as files holding their target: a path's directories are never made (hundreds of
        // mkdirs for a hundred deep paths, the slowest part of this on ext4). The paths go
        // on standard input, NUL-terminated, as they are (UTF-8 or not); git answers
        // "TEMP TAB PATH NUL".
        let mut input = Vec::new();
        for p in &written {
            input.extend_from_slice(p);
            input.push(0);
        }
        let args: Vec<&str> =
            globals.iter().copied().chain(["checkout-index", "--temp", "-z", "-f", "--stdin"]).collect();
        let out = ctx.check_with_index(repo, &args, &index, Some(input))?;
        let temp: HashMap<&[u8], &[u8]> = out
            .split(|&b| b == 0)
            .filter_map(|r| r.iter().position(|&b| b == b'\t').map(|i| (&r[i + 1..], &r[..i])))
            .collect();
        let umask = umask();
        let staged = blobs
            .iter()
            .map(|b| {
                let source = temp.get(b.path.as_slice()).ok_or_else(|| {
                    Error::Corrupt(format!(
                        "git checkout-index --temp wrote nothing for {}",
                        String::from_utf8_lossy(&b.path)
                    ))
                })?;
                // As git creates what it checks out: 0666 or 0777, less the umask.
                let mode = if b.mode == 0o100755 { 0o777 } else { 0o666 } & !umask;
                Ok(Staged { path: b.path.clone(), source: source.to_vec(), symlink: b.mode == 0o120000, mode })
            })
            .collect::<Result<Vec<_>>>()?;
        hit("git-overlay.create.checked-out");
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("git.tree".to_string(), tree.to_string());
        labels.insert("git.repo".to_string(), repo.to_string_lossy().into_owned());
        let opts = IngestOptions { name: Some(name.to_string()), labels, skip_special: false, exclude: vec![] };
        // Directories as git makes them: 0777 less the umask, stamped now.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let dir = crate::store::Entry {
            path: vec![],
            mode: 0o777 & !umask,
            mtime_sec: now.as_secs() as i64,
            mtime_nsec: now.subsec_nanos(),
            node: crate::store::Node::Dir,
        };
        Ok(store.ingest_staged_change(tmp, &staged, &top, &dir, vec![psnap], &opts)?.id)
    })();
    let _ = std::fs::remove_file(&index);
    match r {
        Ok(id) => {
            making.pending = discard_checkout(ctx, tmp, &facts.common_dir)?;
            Ok(Some(id))
        }
        Err(e) => {
            remove_checkout(ctx, tmp, Some(&facts.common_dir))?;
            Err(e)
        }
    }
}

/// This process's umask, which git (run from here) applies to what it checks out; read from
/// `/proc` (setting it to read it would race with other threads), else the usual 022.
fn umask() -> u32 {
    procfs::process::Process::myself().ok().and_then(|p| p.status().ok()).and_then(|s| s.umask).unwrap_or(0o022)
}

/// What a create carries while it makes the commit's checkout: the tree's listing (under way),
/// the change from the first parent when the plan read it, and the removal of a temporary
/// checkout (dropped last: the root is made meanwhile).
struct Making {
    listing: Listing,
    change: Option<ParentChange>,
    pending: Option<Pending>,
}

/// The removal of a temporary checkout's files, under way in a thread of its own (unlinking
/// is slow on some filesystems, and the root can be made meanwhile); dropping it waits for
/// the removal. A failure leaves a directory that the next [`remove_checkout`] removes.
struct Pending(Option<std::thread::JoinHandle<std::io::Result<()>>>);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

/// Where a temporary checkout goes to be removed (beside it, in the same filesystem).
fn trash_dir(tmp: &Path) -> PathBuf {
    tmp.with_file_name("checkout.old")
}

/// [`remove_checkout`], except that the files are renamed aside and removed in a thread:
/// git's record is gone when this returns, the files once the [`Pending`] is finished.
fn discard_checkout(ctx: &Ctx, tmp: &Path, common: &Path) -> Result<Option<Pending>> {
    let trash = trash_dir(tmp);
    remove_trash(&trash)?;
    match std::fs::rename(tmp, &trash) {
        Ok(()) => {}
        // Removed the slow way, then.
        Err(_) => {
            remove_checkout(ctx, tmp, Some(common))?;
            return Ok(None);
        }
    }
    forget_checkout(ctx, tmp, Some(common))?;
    Ok(Some(Pending(Some(std::thread::spawn(move || std::fs::remove_dir_all(&trash))))))
}

/// Remove what a [`discard_checkout`] interrupted by a crash left.
fn remove_trash(trash: &Path) -> Result<()> {
    match std::fs::remove_dir_all(trash) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(trash, e)),
    }
}

/// Remove the temporary checkout worktree `tmp` and git's record of it, however far its making
/// or removal got (a killed `git worktree add` leaves its record locked `initializing`).
fn remove_checkout(ctx: &Ctx, tmp: &Path, common: Option<&Path>) -> Result<()> {
    remove_trash(&trash_dir(tmp))?;
    let index = tmp.with_file_name("checkout.index");
    match std::fs::remove_file(&index) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&index, e)),
        _ => {}
    }
    forget_checkout(ctx, tmp, common)
}

/// Whether git may have a record of a worktree at `tmp`: a directory of
/// `$GIT_COMMON_DIR/worktrees` (`common` given) whose `gitdir` names `tmp/.git`; true when
/// that cannot be read (`git worktree list` decides then) or `common` is not given.
fn maybe_registered(tmp: &Path, common: Option<&Path>) -> bool {
    common.is_none_or(|c| worktree::admin_dir_in(c, tmp).map_or(true, |d| d.is_some()))
}

/// Git's record of the temporary checkout `tmp`, and its files if they are still there (not
/// those a [`discard_checkout`] moved aside).
fn forget_checkout(ctx: &Ctx, tmp: &Path, common: Option<&Path>) -> Result<()> {
    let tmp_s = tmp.to_string_lossy().into_owned();
    let exists = std::fs::symlink_metadata(tmp).is_ok();
    if !maybe_registered(tmp, common) {
        return match std::fs::remove_dir_all(tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(tmp, e)),
            _ => Ok(()),
        };
    }
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
    let staged = worktree::WorktreeGit::of(ctx, wt)?.git(&[
        "-c",
        "core.fsmonitor=false",
        "diff-index",
        "--cached",
        "--quiet",
        "HEAD",
        "--",
    ])?;
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

/// The cached snapshot of what `git worktree add` checks out for revision `rev` in `repo`,
/// whose tree must be `tree`, if the checkout cache has it (docs/format.md, "Checkout cache",
/// with the repository's settings as they are now); `None` when a root of `rev` would make it.
/// `Conflict` when `rev` names another tree now (it moved). Used by provisioning, which
/// builds on that checkout.
pub fn cached_checkout(store: &Store, repo: &Path, rev: &str, tree: &str) -> Result<Option<Hash>> {
    let ctx = Ctx::of(store, repo)?;
    let facts = Facts::of(&ctx, rev)?;
    if facts.tree != tree {
        return Err(Error::Conflict(format!(
            "--base-ref {rev} of {} moved while the build began (tree {} now, {tree} read); retry",
            repo.display(),
            facts.tree
        )));
    }
    cached(store, &cache_ref(&ctx, &facts, tree)?)
}

/// The administrative directory of the worktree at `wt`, from its `.git` link (`link`, which
/// git just wrote), else as git says.
fn admin_dir(ctx: &Ctx, wt: &Path, link: &[u8]) -> Result<PathBuf> {
    if let Some(p) = link.strip_prefix(b"gitdir: ") {
        let p = Path::new(std::ffi::OsStr::from_bytes(p.trim_ascii_end()));
        // A relative link (worktree.useRelativePaths) is relative to the worktree.
        return Ok(wt.join(p));
    }
    let dir = ctx.check(wt, &["rev-parse", "--path-format=absolute", "--git-dir"])?;
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(dir.trim_ascii_end())))
}

/// What a root's index gets besides its entries and cache-tree.
struct Extras {
    /// The untracked cache's header, when it gets one ([`untracked_header`]).
    untracked: Option<crate::sys::gituntracked::Header>,
    /// execroot's fsmonitor, when the root gets it ([`fsmonitor_hook`]).
    fsmonitor: Option<Fsmonitor>,
}

/// execroot's fsmonitor for a root: the hook's command and the token its index is written
/// with (every entry valid as of then).
struct Fsmonitor {
    cmd: String,
    since: crate::sys::gitfsmonitor::Instant,
}

impl Fsmonitor {
    /// The worktree's `config.worktree`: the hook, in protocol version 2 only (git would
    /// otherwise retry a failed call in version 1, whose empty answer means "nothing").
    fn config(&self) -> String {
        let quoted = self.cmd.replace('\\', "\\\\").replace('"', "\\\"");
        format!("[core]\n\tfsmonitor = \"{quoted}\"\n\tfsmonitorHookVersion = 2\n")
    }
}

/// The `core.fsmonitor` command for a root of the repository of `facts`, or `None` when the
/// root gets no fsmonitor: unless the repository reads each worktree's own config
/// (`extensions.worktreeConfig`, which only the user turns on), when `core.fsmonitor` is set
/// anywhere (the user's choice stands), with a git older than
/// [`crate::sys::gitfsmonitor::MIN_GIT`], when layers are stacked above the checkout or trees
/// mounted into it (changes there are in other uppers), or when no execroot program is found
/// that the root's owner can run (docs/roots.md, "fsmonitor").
fn fsmonitor_hook(facts: &Facts, root: &RootSpec, upper: &Path) -> Option<String> {
    if !facts.is_true("extensions.worktreeconfig")
        || facts.get("core.fsmonitor").is_some()
        || !root.snapshots.is_empty()
        || !root.mount_subdirs.is_empty()
        || crate::sys::git::version().ok()? < crate::sys::gitfsmonitor::MIN_GIT
    {
        return None;
    }
    let exe = crate::sys::gitfsmonitor::hook_program()?;
    if root.owner != crate::sys::Owner::current() && !crate::sys::gitfsmonitor::anyone_can_run(&exe) {
        return None;
    }
    let cmd = crate::sys::gitfsmonitor::hook_command(&exe, upper);
    (!cmd.contains('\n')).then_some(cmd)
}

/// Where a root's index takes its stat data from.
enum StatFrom<'a> {
    /// The checkout's own layers (top first): nothing is stacked above them but the upper,
    /// which holds the `.git` link alone, so their files are what the overlay shows.
    Layers(&'a [PathBuf]),
    /// The overlay, except for the entries at or below a path of the set: a layer stacked
    /// above the checkout replaced or deleted them.
    Overlay(BTreeSet<Vec<u8>>),
}

/// Write the index of worktree `wt` (whose files are the checkout of the commit whose tree is
/// `top`, as the overlay shows them, and whose blobs and trees `tree` lists) into its
/// administrative directory `dir`, from the tree's blob ids and the stat data of each file
/// (`from`), with the commit's trees as its cache-tree, as the repository's owner. Stale
/// entries ([`StatFrom::Overlay`]) get no stat data (size 0, as `git read-tree` writes them),
/// so that git compares their content. Never cached across roots: the ctime of a shared
/// layer inode changes whenever another layer links it.
fn write_index(
    ctx: &Ctx,
    wt: &Path,
    dir: &Path,
    top: &str,
    tree: &Listed,
    from: &StatFrom,
    extras: Extras,
) -> Result<()> {
    use crate::sys::gitindex::IndexEntry;
    let none = BTreeSet::new();
    let (stale, lowers) = match from {
        StatFrom::Layers(l) => (&none, Some(*l)),
        StatFrom::Overlay(stale) => (stale, None),
    };
    let (old, fresh): (Vec<TreeEntry>, Vec<TreeEntry>) = match stale.is_empty() {
        true => (Vec::new(), Vec::new()),
        false => tree.blobs.iter().cloned().partition(|e| is_stale(stale, &e.path)),
    };
    let fresh = if stale.is_empty() { &tree.blobs[..] } else { &fresh[..] };
    // The directories' stat data come with the files', after the `.git` link went into the
    // upper (which changed the top's) and before any other write. A directory changed in the
    // second the pass starts in may change again unseen within it (git compares whole
    // seconds), so it goes in unscanned; that second is read from the coarse clock file
    // times come from, which never stamps a later change earlier.
    let started = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME_COARSE)
        .map(|t| t.tv_sec())
        .map_err(|e| Error::io(wt, e.into()))?;
    let (mut entries, dirs) = stat_of(wt, lowers, fresh).map_err(|e| Error::io(wt, e))?;
    tracing::trace!(step = "git-overlay.index.stat-read", "reached");
    let untracked = match extras.untracked {
        Some(h) => {
            let dirs =
                crate::sys::gituntracked::dirs_of(wt, &tree.trees, &tree.blobs, &dirs).map_err(|e| Error::io(wt, e))?;
            crate::sys::gituntracked::extension(&h, dirs, started)
        }
        None => None,
    };
    // A stale entry keeps the commit's blob id: the index is still exactly the commit's tree,
    // so its cache-tree holds.
    entries.extend(old.iter().map(IndexEntry::unstat));
    let top = crate::sys::gitindex::parse_oid(top.as_bytes())
        .ok_or_else(|| Error::Corrupt(format!("git rev-parse: {top:?} is not a SHA-1 tree id")))?;
    tracing::trace!(step = "git-overlay.index.untracked-read", "reached");
    let fsmn = extras.fsmonitor.as_ref().map(|f| crate::sys::gitfsmonitor::extension(&f.since.token()));
    let mut exts: Vec<(&[u8; 4], &[u8])> = Vec::new();
    exts.extend(untracked.as_deref().map(|u| (b"UNTR", u)));
    exts.extend(fsmn.as_deref().map(|f| (b"FSMN", f)));
    let bytes = crate::sys::gitindex::encode(entries, Some(Trees { top, subtrees: &tree.trees }), &exts);
    // The worktree's own config names the hook; git reads it with extensions.worktreeConfig.
    let config = extras.fsmonitor.map(|f| f.config());
    tracing::trace!(step = "git-overlay.index.encoded", "reached");
    let (index, tmp) = (dir.join("index"), dir.join("index.execroot.tmp"));
    // The admin directory is the repository owner's: written with its permissions, no more.
    let (i, t) = (index.clone(), tmp.clone());
    let config_path = dir.join("config.worktree");
    let done = crate::sys::creds::run_as(ctx.git_owner, vec![], move || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(c) = config {
            // `git worktree add` copies the main worktree's own config here (with
            // extensions.worktreeConfig on): added to, last, so that these values win.
            let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", config_path.display()));
            let mut f =
                std::fs::OpenOptions::new().append(true).create(true).mode(0o644).open(&config_path).map_err(named)?;
            f.write_all(format!("\n{c}").as_bytes()).map_err(named)?;
        }
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
    Ok(())
}

/// The stat data of `tree`'s entries in the worktree `wt` and of the directories on their
/// way: from the layers `lowers` (top first) when given (the checkout's own layers, nothing
/// stacked above them), where a lookup costs a fraction of the overlay's first one; through
/// the overlay otherwise, or when one entry shows that the overlay reports other data than
/// its layer (a filesystem or option under which it maps inode numbers).
fn stat_of(
    wt: &Path,
    lowers: Option<&[PathBuf]>,
    tree: &[TreeEntry],
) -> std::io::Result<(Vec<crate::sys::gitindex::IndexEntry>, crate::sys::gitindex::DirStats)> {
    use crate::sys::gitindex::{stat_entries_and_dirs, stat_entries_in_layers, StatData};
    let Some(lowers) = lowers.filter(|l| !l.is_empty()) else { return stat_entries_and_dirs(wt, tree) };
    let (entries, dirs) = stat_entries_in_layers(wt, lowers, tree)?;
    let agrees = match entries.first() {
        None => true,
        Some(e) => {
            let seen = rustix::fs::lstat(wt.join(std::ffi::OsStr::from_bytes(&e.path)))?;
            // git compares no device number (without USE_STDEV, which no build sets).
            StatData { dev: e.stat.dev, ..StatData::of(&seen) } == e.stat
        }
    };
    if agrees {
        Ok((entries, dirs))
    } else {
        tracing::debug!(wt = %wt.display(), "the overlay reports other stat data than its layer: lstat through it");
        stat_entries_and_dirs(wt, tree)
    }
}

/// The untracked cache header for a root's index, or `None` when the root gets none: when
/// layers are stacked above the checkout or trees mounted into it (it then holds files that
/// are not the commit's), or when the repository's settings turn the cache off
/// (`core.untrackedCache` false) or status away from the default scan
/// (`status.showUntrackedFiles` other than `normal` or `all`). git keeps and uses an
/// untracked cache it finds while `core.untrackedCache` is unset (docs/roots.md).
fn untracked_header(facts: &Facts, root: &RootSpec, wt: &Path) -> Option<crate::sys::gituntracked::Header> {
    use crate::sys::gituntracked::{Header, NORMAL_FLAGS};
    if !root.snapshots.is_empty() || !root.mount_subdirs.is_empty() {
        return None;
    }
    let lower = |v: Option<&[u8]>| v.map(|v| String::from_utf8_lossy(v).to_ascii_lowercase());
    // An fsmonitor makes git trust the cache's valid bits without the directories' stat data,
    // from its first question on ("nothing changed since now"): whatever the root got between
    // its create and that question would never be seen.
    match facts.get("core.fsmonitor") {
        None => {}
        Some(v) if matches!(lower(v).as_deref(), Some("false" | "no" | "off" | "0" | "")) => {}
        Some(_) => return None,
    }
    match facts.get("core.untrackedcache") {
        None | Some(None) => {}
        Some(v) if matches!(lower(v).as_deref(), Some("keep" | "true" | "yes" | "on" | "1")) => {}
        Some(_) => return None,
    }
    let flags = match facts.get("status.showuntrackedfiles") {
        None => NORMAL_FLAGS,
        Some(v) => match lower(v).as_deref() {
            None | Some("normal" | "true" | "yes" | "on" | "1") => NORMAL_FLAGS,
            Some("all") => 0,
            Some(_) => return None,
        },
    };
    // The excludes file git will read for the root's owner; a guess that is wrong costs one
    // full scan (git then drops the cache), never a hidden file.
    let home = nix::unistd::User::from_uid(root.owner.uid.into()).ok().flatten().map(|u| u.dir);
    let excludes = match facts.get("core.excludesfile") {
        Some(Some(v)) => {
            let v = std::ffi::OsStr::from_bytes(v);
            match v.as_bytes().strip_prefix(b"~/") {
                Some(rest) => home.as_ref().map(|h| h.join(std::ffi::OsStr::from_bytes(rest))),
                None if v.as_bytes().starts_with(b"~") => None,
                None => Some(wt.join(v)),
            }
        }
        _ => {
            let xdg = std::env::var_os("XDG_CONFIG_HOME")
                .filter(|x| !x.is_empty() && root.owner == crate::sys::Owner::current())
                .map(PathBuf::from);
            xdg.or_else(|| home.map(|h| h.join(".config"))).map(|c| c.join("git/ignore"))
        }
    };
    Header::new(wt, &facts.common_dir, excludes.as_deref(), flags).ok()
}

/// Run the repository's `post-checkout` hook in worktree `wt` as `git worktree add` runs it
/// after a checkout (which `--no-checkout` skipped): if `$(git rev-parse --git-path
/// hooks/post-checkout)` (which follows `core.hooksPath`) is an executable file, with the
/// arguments `<null id> <commit> 1`, in the worktree, as the repository's owner, with the
/// clean environment and timeout of every git command. git makes the hook's exit status its
/// own; here the root is made all the same and a failure is a warning (docs/roots.md).
fn post_checkout(store: &Store, ctx: &Ctx, facts: &Facts, wt: &Path, commit: &str) -> Result<Vec<String>> {
    // Without core.hooksPath, the hooks of every worktree are the common directory's (what
    // rev-parse --git-path says then); with it, git expands the setting.
    let hook = match facts.get("core.hookspath") {
        None => facts.common_dir.join("hooks/post-checkout"),
        Some(_) => {
            let out = ctx.check(wt, &["rev-parse", "--path-format=absolute", "--git-path", "hooks/post-checkout"])?;
            PathBuf::from(std::ffi::OsStr::from_bytes(out.trim_ascii_end()))
        }
    };
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
            state: GitOverlayState {
                worktree: p.state,
                overlay: overlay::fresh_dirs(&root.dir),
                planned: Planned::default(),
            },
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
        // The plan's reading when it had the branch to make (a branch made meanwhile fails
        // `git worktree add -b` below), else read now.
        let planned = st.planned.0.take().map(|p| std::sync::Arc::try_unwrap(p).unwrap_or_else(|p| (*p).clone()));
        let wst = &mut st.worktree;
        let (existing, facts, listed, change) = match planned {
            Some(p) => (false, p.facts, p.listing, p.change),
            None => {
                let existing = worktree::branch_exists(&ctx, &repo, &branch)?;
                (existing, Facts::of(&ctx, if existing { &branch } else { &wst.base_ref })?, None, None)
            }
        };
        let commit = facts.commit.clone();
        let name = cache_ref(&ctx, &facts, &facts.tree)?;
        // The blob ids: kept with a cached checkout, else derived from the parent's, else
        // listed, while the snapshot is found and the worktree registered.
        let source = match (listed, cached(store, &name)?, &change) {
            (Some(l), _, _) => Source::Listed(l),
            (None, Some(snap), _) => Source::Kept(listing_path(store, &snap)),
            (None, None, Some(c)) => Source::Derived {
                parent: listing_path(store, &c.snap),
                parent_tree: c.tree.clone(),
                change: c.records.clone(),
            },
            (None, None, None) => Source::Git,
        };
        let listing = Listing::start(&ctx, &facts.commit, &facts.tree, facts.sha1, source);
        let mut making = Making { listing, change, pending: None };
        let (snap, _ingested) = snapshot_of(store, &ctx, wst, &facts, &name, &mut making)?;
        // Dropped last: a temporary checkout is removed while the root is made.
        let Making { listing, pending: _pending, .. } = making;
        let path_s = wst.worktree_path.to_string_lossy().into_owned();
        // Registered locked at once where git can (`--reason` with `--lock`: git 2.36), so
        // that git's prune never sees it unlocked; else locked right after.
        let reason = lock_reason(&root.id);
        let lock_too = crate::sys::git::version()? >= (2, 36);
        let mut args = vec!["worktree", "add", "--no-checkout"];
        if lock_too {
            args.extend(["--lock", "--reason", &reason]);
        }
        if existing {
            wst.created_branch = false;
            args.extend(["--end-of-options", &path_s, &branch]);
            made.warnings.push(format!("branch {branch} already existed; it is used as is and will be kept"));
        } else {
            wst.created_branch = true;
            args.extend(["-b", &branch, "--end-of-options", &path_s, &commit]);
        }
        ctx.check(&repo, &args)?;
        hit("git-overlay.create.added");
        if !lock_too {
            ctx.check(&repo, &["worktree", "lock", "--reason", &reason, "--end-of-options", &path_s])?;
        }
        hit("git-overlay.create.locked");
        // The link to the worktree's admin directory, which the overlay is about to cover.
        let link_path = wst.worktree_path.join(".git");
        let link = std::fs::read(&link_path).at(&link_path)?;
        // The root's own snapshots (a provision layer) are stacked above the checkout.
        let stack: Vec<Hash> = std::iter::once(snap).chain(root.snapshots.iter().copied()).collect();
        overlay::prepare_snapshots(store, &stack, &mut st.overlay, root.owner)?;
        // The link goes into the upper before the mount: once mounted, every change to the
        // upper is the run's, and the fsmonitor's token marks where those begin.
        let upper_link = st.overlay.upper.join(".git");
        std::fs::write(&upper_link, &link).at(&upper_link)?;
        std::fs::set_permissions(&upper_link, std::fs::Permissions::from_mode(0o644)).at(&upper_link)?;
        std::os::unix::fs::lchown(&upper_link, Some(root.owner.uid), Some(root.owner.gid)).at(&upper_link)?;
        let wt = &st.worktree.worktree_path;
        // The hook compares ctimes with a clock read to the nanosecond: an upper filesystem
        // that keeps whole seconds (ext4 with 128-byte inodes, ext3) would hide a change made
        // in the token's second. The link just written tells: its nanoseconds are 0 there
        // (elsewhere only when its stamp falls on a whole second, which costs the fsmonitor
        // alone).
        let fine_times = std::fs::symlink_metadata(&upper_link).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ctime_nsec() != 0
        });
        let fsmonitor = match fsmonitor_hook(&facts, root, &st.overlay.upper).filter(|_| fine_times) {
            Some(cmd) => {
                // overlayfs (6.6 and later) stores a uuid on the upper's top at the first
                // mount, which changes its ctime after the token: one given ahead is kept.
                let uuid: [u8; 16] = rand::random();
                crate::sys::xattr::set(&st.overlay.upper, "trusted.overlay.uuid", &uuid)?;
                let since = crate::sys::gitfsmonitor::settled_token(&st.overlay.upper).at(&st.overlay.upper)?;
                Some(Fsmonitor { cmd, since })
            }
            None => None,
        };
        // Durable always: a repo-edit root lives for days, across reboots.
        let guard = st.overlay.mount(Place::at(wt)?, false)?;
        hit("git-overlay.create.mounted");
        // The index, so that `git status` is clean: written from the commit's blob ids and
        // the merged view's stat data (no file is hashed); for a SHA-256 repository (the
        // index written here is SHA-1's), git's read-tree and one refresh (which hashes every
        // file once).
        let from = match root.snapshots.is_empty() {
            true => StatFrom::Layers(&st.overlay.lowers),
            false => StatFrom::Overlay(above_checkout(store, &root.snapshots)?),
        };
        match listing.take()? {
            Some((tree, kept)) => {
                tracing::trace!(step = "git-overlay.index.listed", "reached");
                let tree = std::sync::Arc::new(tree);
                // Kept for the next roots while this one's index is made (megabytes written).
                let keeping = (!kept).then(|| {
                    let (store, snap, id, tree) = (store.clone(), snap, facts.tree.clone(), tree.clone());
                    std::thread::spawn(move || keep_listing(&store, &snap, &id, &tree))
                });
                let extras = Extras { untracked: untracked_header(&facts, root, wt), fsmonitor };
                let dir = admin_dir(&ctx, wt, &link)?;
                let written = write_index(&ctx, wt, &dir, &facts.tree, &tree, &from, extras);
                if let Some(h) = keeping {
                    let _ = h.join();
                }
                written?;
            }
            None => {
                ctx.check(wt, &["read-tree", "--end-of-options", &commit])?;
                ctx.check(wt, &["update-index", "-q", "--refresh"])?;
            }
        }
        hit("git-overlay.create.indexed");
        made.warnings.extend(post_checkout(store, &ctx, &facts, wt, &commit)?);
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
                remove_checkout(&ctx, &checkout, None)?;
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
