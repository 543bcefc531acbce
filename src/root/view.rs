//! The JSON the library answers with about roots: stable view types that the CLI prints (with
//! `--json`) and the service will serve, whatever the layout of `state.json` behind them. Field
//! names follow Paperclip's `RealizedExecutionWorkspace` and cleanup result (docs/cli.md).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::provision::ProvisionUse;
use super::record::{RootRecord, State};
use crate::backend::worktree::GitStatus;
use crate::backend::{BackendKind, BackendState, Usage};
use crate::hash::Hash;
use crate::policy::Class;
use crate::sys::Owner;

/// A `--mount` overlay as `root create` reports it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MountView {
    /// Path inside the root, relative.
    pub subdir: String,
    /// Snapshot mounted there.
    pub snapshot: Hash,
    /// Absolute mount point.
    pub path: PathBuf,
}

/// A `--mount` overlay as `root list` and `root show` report it: with its directories.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MountDetail {
    /// Path inside the root, relative.
    pub subdir: String,
    /// Snapshot mounted there.
    pub snapshot: Hash,
    /// Absolute mount point.
    pub path: PathBuf,
    /// Private upper directory.
    pub upper: PathBuf,
    /// Private work directory.
    pub work: PathBuf,
    /// Lower directories, top first.
    pub lowers: Vec<PathBuf>,
}

/// What `root list` reports per root and `root show` reports (with `mounted`, `usage` and, for
/// worktrees, `git`): the documented, flat view of a root whatever its backend.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RootView {
    /// Root id.
    pub id: String,
    /// Idempotency key.
    pub key: Option<String>,
    /// Workload class.
    pub class: Class,
    /// Backend serving it.
    pub backend: BackendKind,
    /// The kind of workspace, in the caller's vocabulary ([`BackendKind::provider_type`]).
    pub provider_type: &'static str,
    /// Lifecycle state.
    pub state: State,
    /// The directory the run uses.
    pub cwd: PathBuf,
    /// The snapshots the root presents, bottom first.
    pub snapshots: Vec<Hash>,
    /// The same as `snapshots`: the name of earlier releases, kept for one release.
    pub layers: Vec<Hash>,
    /// `--mount` overlays.
    pub mounts: Vec<MountDetail>,
    /// Who owns what the run can touch.
    pub owner: Owner,
    /// Overlay without `volatile`.
    pub durable: bool,
    /// Overlay: upper directory.
    pub upper: Option<PathBuf>,
    /// Overlay: work directory.
    pub work: Option<PathBuf>,
    /// Overlay: lower directories, top first.
    pub lowers: Vec<PathBuf>,
    /// Worktree: repository.
    pub repo: Option<PathBuf>,
    /// Worktree: branch.
    pub branch_name: Option<String>,
    /// Worktree: path.
    pub worktree_path: Option<PathBuf>,
    /// Worktree: base ref.
    pub base_ref: Option<String>,
    /// Worktree: whether execroot created the branch.
    pub created_branch: bool,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Warnings from creation.
    pub warnings: Vec<String>,
    /// The provision layer stacked on top (null without `--provision`).
    pub provision: Option<ProvisionUse>,
    /// `root show`: the working directory is live (mounted, for overlay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mounted: Option<bool>,
    /// `root show`: what the run has written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// `root show` of a worktree: git's view of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git: Option<GitStatus>,
}

impl RootView {
    /// The view of a record (without the `root show` extras).
    pub fn of(rec: &RootRecord) -> RootView {
        let mut v = RootView {
            id: rec.id.clone(),
            key: rec.key.clone(),
            class: rec.class,
            backend: rec.kind(),
            provider_type: rec.kind().provider_type(),
            state: rec.state,
            cwd: rec.cwd.clone(),
            snapshots: rec.snapshots.clone(),
            layers: rec.snapshots.clone(),
            mounts: rec
                .mounts
                .iter()
                .map(|m| MountDetail {
                    subdir: m.subdir.clone(),
                    snapshot: m.snapshot,
                    path: m.path.clone(),
                    upper: m.dirs.upper.clone(),
                    work: m.dirs.work.clone(),
                    lowers: m.dirs.lowers.clone(),
                })
                .collect(),
            owner: rec.owner,
            durable: rec.durable,
            upper: None,
            work: None,
            lowers: vec![],
            repo: None,
            branch_name: None,
            worktree_path: None,
            base_ref: None,
            created_branch: false,
            created_at: rec.created_at.clone(),
            labels: rec.labels.clone(),
            warnings: rec.warnings.clone(),
            provision: rec.provision.clone(),
            mounted: None,
            usage: None,
            git: None,
        };
        match &rec.backend {
            BackendState::Overlay(o) => {
                v.upper = Some(o.dirs.upper.clone());
                v.work = Some(o.dirs.work.clone());
                v.lowers = o.dirs.lowers.clone();
            }
            BackendState::Copy(_) => {}
            BackendState::Worktree(w) => {
                v.repo = Some(w.repo.clone());
                v.branch_name = Some(w.branch_name.clone());
                v.worktree_path = Some(w.worktree_path.clone());
                v.base_ref = Some(w.base_ref.clone());
                v.created_branch = w.created_branch;
            }
            BackendState::GitOverlay(g) => {
                let w = &g.worktree;
                v.upper = Some(g.overlay.upper.clone());
                v.work = Some(g.overlay.work.clone());
                v.lowers = g.overlay.lowers.clone();
                v.repo = Some(w.repo.clone());
                v.branch_name = Some(w.branch_name.clone());
                v.worktree_path = Some(w.worktree_path.clone());
                v.base_ref = Some(w.base_ref.clone());
                v.created_branch = w.created_branch;
            }
        }
        v
    }
}

/// One entry of `root list`: a root, or one whose state cannot be read (`{ "id", "error" }`).
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum RootListEntry {
    /// A readable root.
    Root(Box<RootView>),
    /// A root whose state cannot be read.
    Unreadable(super::record::UnreadableRoot),
}

/// `root list`.
#[derive(Clone, Debug, Serialize)]
pub struct RootList {
    /// Every root.
    pub roots: Vec<RootListEntry>,
}

/// What `root create` reports (names follow Paperclip's `RealizedExecutionWorkspace`).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    /// Root id.
    pub id: String,
    /// Idempotency key.
    pub key: Option<String>,
    /// Workload class.
    pub class: Class,
    /// Backend.
    pub backend: BackendKind,
    /// The kind of workspace, in the caller's vocabulary ([`BackendKind::provider_type`]).
    pub provider_type: &'static str,
    /// The directory the run uses.
    pub cwd: PathBuf,
    /// The snapshots the root presents, bottom first.
    pub snapshots: Vec<Hash>,
    /// The same as `snapshots`: the name of earlier releases, kept for one release.
    pub layers: Vec<Hash>,
    /// `--mount` overlays.
    pub mounts: Vec<MountView>,
    /// Worktree branch.
    pub branch_name: Option<String>,
    /// Worktree path.
    pub worktree_path: Option<PathBuf>,
    /// Worktree base ref.
    pub base_ref: Option<String>,
    /// True when this call made the root; false when `--key` found it.
    pub created: bool,
    /// Warnings.
    pub warnings: Vec<String>,
    /// The provision layer stacked on top (null without `--provision`).
    pub provision: Option<ProvisionUse>,
    /// Milliseconds per phase (`total` always).
    pub timings_ms: BTreeMap<String, f64>,
}

impl Created {
    pub(crate) fn of(rec: &RootRecord, created: bool, timings_ms: BTreeMap<String, f64>) -> Created {
        let v = RootView::of(rec);
        Created {
            id: v.id,
            key: v.key,
            class: v.class,
            backend: v.backend,
            provider_type: v.provider_type,
            cwd: v.cwd,
            snapshots: v.snapshots,
            layers: v.layers,
            mounts: rec
                .mounts
                .iter()
                .map(|m| MountView { subdir: m.subdir.clone(), snapshot: m.snapshot, path: m.path.clone() })
                .collect(),
            branch_name: v.branch_name,
            worktree_path: v.worktree_path,
            base_ref: v.base_ref,
            created,
            warnings: v.warnings,
            provision: v.provision,
            timings_ms,
        }
    }
}

/// What `root destroy` reports (Paperclip's cleanup result).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Destroyed {
    /// The directory that was (or was to be) removed.
    pub cleaned_path: PathBuf,
    /// Whether it is gone.
    pub cleaned: bool,
    /// Why not, or what was discarded.
    pub warnings: Vec<String>,
}

/// What `root diff` reports: the change, with the root's id.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RootDiff {
    /// Root id.
    pub root: String,
    /// The change.
    #[serde(flatten)]
    pub diff: crate::change::Diff,
}
