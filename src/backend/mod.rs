//! Backends: the ways a root's working directory can be made, behind one small trait in the
//! spirit of containerd's Snapshotter.
//!
//! Lifecycle, as the root layer drives it:
//!
//! 1. [`plan`]: the backend decides where the working directory (`cwd`) will be and what it
//!    will record (its own [`Backend::State`]), touching nothing. The root layer writes that
//!    into `state.json` (state `creating`) *before* anything exists, so that a create killed at
//!    any later point can be undone by doctor from the record alone.
//! 2. [`Backend::create`] makes the working directory. Mounts it makes are returned as guards:
//!    the root layer holds them until the root is recorded `ready` and drops them (unmounting)
//!    on every error path.
//! 3. While the root lives: [`Backend::usage`], [`Backend::diff`] and [`Backend::git_status`]
//!    inspect it; [`Backend::is_live`] and [`Backend::revive`] let doctor bring it back after a
//!    reboot.
//! 4. [`Backend::detach`] makes the working directory unreachable (or reports it busy),
//!    [`Backend::check_destroy`] says whether tearing it down would lose work a person would
//!    miss, and [`Backend::destroy`] tears it down; it is idempotent, because a destroy killed
//!    half way is finished by doctor.
//!
//! Backends never write the root's record: the root layer owns `state.json`. `--mount`
//! sub-mounts are the same for every backend and live in [`submount`].

pub mod copy;
mod git_listing;
pub mod git_overlay;
pub mod overlay;
pub mod submount;
pub mod worktree;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::change::Diff;
use crate::error::Result;
use crate::hash::Hash;
use crate::sys::beneath::{Meta, Tree};
use crate::sys::mount::MountGuard;
use crate::sys::Owner;
use crate::Store;

/// The backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// overlayfs mount of shared read-only layers plus a private upper directory.
    Overlay,
    /// A private checkout of the snapshots (reflinks where possible).
    Copy,
    /// A `git worktree` on its own branch.
    Worktree,
    /// A `git worktree` on its own branch whose working tree is an overlay of a snapshot of
    /// the base commit's checkout.
    GitOverlay,
}

impl BackendKind {
    /// Every backend, in the order the documentation lists them.
    pub const ALL: [BackendKind; 4] =
        [BackendKind::Overlay, BackendKind::Copy, BackendKind::Worktree, BackendKind::GitOverlay];

    /// The name used in JSON, on the command line and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Overlay => "overlay",
            BackendKind::Copy => "copy",
            BackendKind::Worktree => "worktree",
            BackendKind::GitOverlay => "git-overlay",
        }
    }

    /// The kind of workspace a root of this backend is, in the caller's vocabulary:
    /// `git_worktree` for both git backends, `local_fs` for overlay and copy.
    pub fn provider_type(self) -> &'static str {
        if self.is_git() {
            "git_worktree"
        } else {
            "local_fs"
        }
    }

    /// True for the backends that make git worktrees (they need `--repo` and `--base-ref`).
    pub fn is_git(self) -> bool {
        matches!(self, BackendKind::Worktree | BackendKind::GitOverlay)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a backend can do besides making and destroying roots, so that callers ask instead of
/// branching on the backend's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// `root commit` can record the root's change as a snapshot stacked on its snapshots (not
    /// for a worktree, whose changes are git's to commit).
    pub commit: bool,
}

/// The root a backend serves, as the root layer presents it: everything but the backend's own
/// state.
#[derive(Clone, Debug)]
pub struct RootSpec {
    /// Root id.
    pub id: String,
    /// The root's directory in the store (`roots/<id>`).
    pub dir: PathBuf,
    /// The working directory (set by [`plan`]).
    pub cwd: PathBuf,
    /// The snapshots the root presents, bottom first.
    pub snapshots: Vec<Hash>,
    /// Who owns what the run can touch.
    pub owner: Owner,
    /// Overlay without `volatile`.
    pub durable: bool,
    /// Idempotency key (a worktree's default branch name comes from it).
    pub key: Option<String>,
    /// `--mount` subdirectories (raw relative paths): not part of the root's own tree for diff,
    /// commit, export and git status.
    pub mount_subdirs: Vec<Vec<u8>>,
}

/// What the caller asked of the worktree backend.
#[derive(Clone, Debug, Default)]
pub struct WorktreeRequest {
    /// `--repo`.
    pub repo: Option<PathBuf>,
    /// `--base-ref`.
    pub base_ref: Option<String>,
    /// `--branch`.
    pub branch: Option<String>,
    /// Whether an owner was given (`--owner` or config): else a worktree belongs to the
    /// repository's owner.
    pub owner_given: bool,
}

/// A backend's plan for a root, recorded before anything is made.
#[derive(Debug)]
pub struct Plan<S> {
    /// Where the working directory will be.
    pub cwd: PathBuf,
    /// The owner, when the backend decides it (a worktree without `--owner`).
    pub owner: Option<Owner>,
    /// The backend's state to record.
    pub state: S,
    /// Notices for the caller (a fallback to another backend, and why).
    pub warnings: Vec<String>,
}

/// What a backend's create made.
#[derive(Debug, Default)]
pub struct Made {
    /// Mounts made, unmounted if dropped: held by the root layer until the root is ready.
    pub mounts: Vec<MountGuard>,
    /// Notices for the caller (a branch used as is, and the like).
    pub warnings: Vec<String>,
    /// The snapshots the root presents, when the backend decided them while creating (a
    /// git-overlay root's checkout of its base commit): the root layer records them.
    pub snapshots: Option<Vec<Hash>>,
}

/// What a run has written into its root.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Bytes of regular files written (for copy and worktree roots: the whole private tree).
    pub bytes: u64,
    /// Inodes written (files, directories, symlinks, whiteouts).
    pub inodes: u64,
}

/// Which operation a crash interrupted, as the root's record says: what doctor's re-check may
/// take for the backend's own doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupted {
    /// A create (`creating`, or `destroying` with its `state` field still `creating`: the undo
    /// of a create). Its working directory was never handed to anyone.
    Create,
    /// A destroy of a `ready` root, which records `destroying` only after its
    /// [`Backend::check_destroy`] passed.
    Destroy,
}

/// What doctor kept of a gone root (docs/roots.md, "Worktrees removed behind execroot").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rescued {
    /// The ref naming the snapshot that holds the files.
    pub name: String,
    /// The snapshot.
    pub snapshot: crate::Hash,
    /// The files kept, relative to the working directory.
    pub paths: Vec<String>,
}

/// The ref under which doctor keeps the files of gone root `id`.
pub fn rescue_ref(id: &str) -> String {
    format!("rescued-{id}")
}

/// The operations every backend provides, on its own state type.
pub trait Backend {
    /// What the backend records about a root (part of `state.json`).
    type State;
    /// Which backend this is.
    const KIND: BackendKind;
    /// What it can do besides create and destroy.
    const CAPABILITIES: Capabilities;
    /// Decide the working directory and the state to record; make nothing.
    fn plan(&self, store: &Store, root: &RootSpec, req: &WorktreeRequest) -> Result<Plan<Self::State>>;
    /// Make the working directory at `root.cwd`, completing `st`.
    fn create(&self, store: &Store, root: &RootSpec, st: &mut Self::State) -> Result<Made>;
    /// True when the working directory is present and usable (mounted, for overlay).
    fn is_live(&self, store: &Store, root: &RootSpec, st: &Self::State) -> Result<bool>;
    /// Bring back a root that is not live (after a reboot). May refuse, with the reason:
    /// [`crate::Error::VolatileLost`] when the root cannot come back at all.
    fn revive(&self, store: &Store, root: &RootSpec, st: &mut Self::State) -> Result<()>;
    /// Make the working directory unreachable so teardown can start (overlay: unmount), or
    /// report that processes still use it (`false`), leaving the root as it was.
    fn detach(&self, store: &Store, root: &RootSpec, st: &Self::State) -> Result<bool>;
    /// Refuse (with a conflict naming what would be lost) unless destroying is safe or `force`;
    /// otherwise return warnings about what will be discarded.
    fn check_destroy(&self, store: &Store, root: &RootSpec, st: &Self::State, force: bool) -> Result<Vec<String>>;
    /// The check doctor makes before it finishes an operation a crash interrupted: refuse (a
    /// conflict naming the paths, which are kept) when tearing down would lose anything but
    /// what the backend itself made or what the interrupted destroy had already checked.
    /// Never forced.
    fn check_interrupted(
        &self,
        store: &Store,
        root: &RootSpec,
        st: &Self::State,
        _what: Interrupted,
    ) -> Result<Vec<String>> {
        self.check_destroy(store, root, st, false)
    }
    /// Tear the working directory down; idempotent. Returns warnings.
    fn destroy(&self, store: &Store, root: &RootSpec, st: &Self::State) -> Result<Vec<String>>;
    /// Why the working directory is gone for good behind execroot's back, if it is: a git
    /// worktree its repository no longer lists (removed or pruned with git's own commands), or
    /// whose repository is gone. Doctor reports such a root as `worktree-gone`. Other
    /// backends: never.
    fn gone(&self, _store: &Store, _root: &RootSpec, _st: &Self::State) -> Result<Option<String>> {
        Ok(None)
    }
    /// Before doctor tears a gone root down: keep the files found nowhere else (not as
    /// committed on the root's branch, or all of them when the repository is gone) as the
    /// snapshot [`rescue_ref`] names. `None` when there is nothing to keep.
    fn rescue(&self, _store: &Store, _root: &RootSpec, _st: &Self::State) -> Result<Option<Rescued>> {
        Ok(None)
    }
    /// Bytes and inodes the run has written.
    fn usage(&self, store: &Store, root: &RootSpec, st: &Self::State) -> Result<Usage>;
    /// What the run changed against its base (docs/capture.md).
    fn diff(&self, store: &Store, root: &RootSpec, st: &Self::State) -> Result<Diff>;
    /// Git's view of the working directory, for backends that are git worktrees.
    fn git_status(&self, _store: &Store, _root: &RootSpec, _st: &Self::State) -> Result<Option<worktree::GitStatus>> {
        Ok(None)
    }
}

/// Each backend's state, tagged by kind: the `backend` object of `state.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BackendState {
    /// [`overlay::Overlay`]'s state.
    Overlay(overlay::OverlayState),
    /// [`copy::Copy`]'s state.
    Copy(copy::CopyState),
    /// [`worktree::Worktree`]'s state.
    Worktree(worktree::WorktreeState),
    /// [`git_overlay::GitOverlay`]'s state.
    GitOverlay(git_overlay::GitOverlayState),
}

/// Call `$body` with `$b` bound to the backend and `$s` to its state.
macro_rules! dispatch {
    ($state:expr, $b:ident, $s:ident => $body:expr) => {
        match $state {
            BackendState::Overlay($s) => {
                let $b = &overlay::Overlay;
                $body
            }
            BackendState::Copy($s) => {
                let $b = &copy::Copy;
                $body
            }
            BackendState::Worktree($s) => {
                let $b = &worktree::Worktree;
                $body
            }
            BackendState::GitOverlay($s) => {
                let $b = &git_overlay::GitOverlay;
                $body
            }
        }
    };
}

/// Plan a root on backend `kind` (step 1 of the lifecycle above).
pub fn plan(kind: BackendKind, store: &Store, root: &RootSpec, req: &WorktreeRequest) -> Result<Plan<BackendState>> {
    fn wrap<S>(p: Plan<S>, f: fn(S) -> BackendState) -> Plan<BackendState> {
        Plan { cwd: p.cwd, owner: p.owner, state: f(p.state), warnings: p.warnings }
    }
    Ok(match kind {
        BackendKind::Overlay => wrap(overlay::Overlay.plan(store, root, req)?, BackendState::Overlay),
        BackendKind::Copy => wrap(copy::Copy.plan(store, root, req)?, BackendState::Copy),
        BackendKind::Worktree => wrap(worktree::Worktree.plan(store, root, req)?, BackendState::Worktree),
        // A tree an overlay cannot reproduce is served by the plain worktree backend instead.
        BackendKind::GitOverlay => git_overlay::plan_or_fallback(store, root, req)?,
    })
}

impl BackendState {
    /// The repository of a git root (worktree, git-overlay); `None` for other roots.
    pub fn repository(&self) -> Option<&std::path::Path> {
        match self {
            BackendState::Worktree(s) => Some(&s.repo),
            BackendState::GitOverlay(s) => Some(&s.worktree.repo),
            BackendState::Overlay(_) | BackendState::Copy(_) => None,
        }
    }

    /// Which backend this state belongs to.
    pub fn kind(&self) -> BackendKind {
        fn k<B: Backend>(_: &B) -> BackendKind {
            B::KIND
        }
        dispatch!(self, b, _s => k(b))
    }

    /// What the backend can do.
    pub fn capabilities(&self) -> Capabilities {
        fn c<B: Backend>(_: &B) -> Capabilities {
            B::CAPABILITIES
        }
        dispatch!(self, b, _s => c(b))
    }

    /// [`Backend::create`].
    pub fn create(&mut self, store: &Store, root: &RootSpec) -> Result<Made> {
        dispatch!(self, b, s => b.create(store, root, s))
    }

    /// [`Backend::is_live`].
    pub fn is_live(&self, store: &Store, root: &RootSpec) -> Result<bool> {
        dispatch!(self, b, s => b.is_live(store, root, s))
    }

    /// [`Backend::revive`].
    pub fn revive(&mut self, store: &Store, root: &RootSpec) -> Result<()> {
        dispatch!(self, b, s => b.revive(store, root, s))
    }

    /// [`Backend::detach`].
    pub fn detach(&self, store: &Store, root: &RootSpec) -> Result<bool> {
        dispatch!(self, b, s => b.detach(store, root, s))
    }

    /// [`Backend::check_destroy`].
    pub fn check_destroy(&self, store: &Store, root: &RootSpec, force: bool) -> Result<Vec<String>> {
        dispatch!(self, b, s => b.check_destroy(store, root, s, force))
    }

    /// [`Backend::check_interrupted`].
    pub fn check_interrupted(&self, store: &Store, root: &RootSpec, what: Interrupted) -> Result<Vec<String>> {
        dispatch!(self, b, s => b.check_interrupted(store, root, s, what))
    }

    /// [`Backend::destroy`].
    pub fn destroy(&self, store: &Store, root: &RootSpec) -> Result<Vec<String>> {
        dispatch!(self, b, s => b.destroy(store, root, s))
    }

    /// [`Backend::gone`].
    pub fn gone(&self, store: &Store, root: &RootSpec) -> Result<Option<String>> {
        dispatch!(self, b, s => b.gone(store, root, s))
    }

    /// [`Backend::rescue`].
    pub fn rescue(&self, store: &Store, root: &RootSpec) -> Result<Option<Rescued>> {
        dispatch!(self, b, s => b.rescue(store, root, s))
    }

    /// [`Backend::usage`].
    pub fn usage(&self, store: &Store, root: &RootSpec) -> Result<Usage> {
        dispatch!(self, b, s => b.usage(store, root, s))
    }

    /// [`Backend::diff`].
    pub fn diff(&self, store: &Store, root: &RootSpec) -> Result<Diff> {
        dispatch!(self, b, s => b.diff(store, root, s))
    }

    /// [`Backend::git_status`].
    pub fn git_status(&self, store: &Store, root: &RootSpec) -> Result<Option<worktree::GitStatus>> {
        dispatch!(self, b, s => b.git_status(store, root, s))
    }
}

/// `detach` for backends without a mount: free unless a process is inside.
pub fn detach_unmounted(cwd: &Path) -> bool {
    crate::sys::procs::users_of(cwd).is_empty()
}

/// Count bytes and inodes below `dir` (not following symlinks, not crossing mounts). The tree
/// belongs to a run, so it is walked through handles (`sys::beneath`); what cannot be read is
/// not counted.
pub fn tree_usage(dir: &Path) -> Usage {
    let mut u = Usage::default();
    let Ok(tree) = Tree::open(dir) else { return u };
    let Ok(top) = Meta::of_fd(&tree) else { return u };
    let _ = tree.walk(&|_, m| m.dev != top.dev, &mut |f| {
        if !f.rel.is_empty() {
            u.inodes += 1;
            if f.meta.is_file() {
                u.bytes += f.meta.size;
            }
        }
        Ok(())
    });
    u
}

/// Give everything below `dir` (and `dir`) to `owner`, not following symlinks and not crossing
/// mounts. Deepest first, through handles beneath `dir`: no directory is the owner's (and so
/// changeable by it) before everything below it is done, and a swapped-in symlink is never
/// followed, so a run cannot make root chown a host path.
pub fn chown_tree(dir: &Path, owner: Owner) -> Result<()> {
    use crate::error::IoContext;
    let tree = Tree::open(dir).at(dir)?;
    let top = Meta::of_fd(&tree).at(dir)?;
    let mut all = Vec::new();
    tree.walk(&|_, m| m.dev != top.dev, &mut |f| {
        all.push(f.rel);
        Ok(())
    })?;
    for rel in all.iter().rev() {
        tree.chown(rel, owner.uid, owner.gid).at(tree.display(rel))?;
    }
    Ok(())
}
