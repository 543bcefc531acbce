//! A root's record, `roots/<id>/state.json`: what the root layer knows about a root, in the
//! format documented in docs/roots.md, and the scan of `roots/` that sorts every directory into
//! a readable root, an unreadable one (kept, never taken for absent) or an empty leftover.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::copy::CopyState;
use crate::backend::overlay::OverlayState;
use crate::backend::submount::SubMount;
use crate::backend::worktree::WorktreeState;
use crate::backend::{BackendKind, BackendState, RootSpec};
use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::policy::Class;
use crate::sys::mount::OverlayDirs;
use crate::sys::Owner;
use crate::Store;

/// The `state.json` format this execroot writes and the newest it reads. Version 1 (a flat
/// record with every backend's fields) is read and upgraded when next written; a record of a
/// newer version is refused read-only: never rewritten, and nothing it pins is collected.
pub const STATE_VERSION: u32 = 2;

/// The name `state.json` takes when a destroy begins: a rename in the same directory, which
/// needs no new data block, so a destroy can record its intent on a full disk. A record under
/// this name is `destroying` whatever its `state` field says (docs/roots.md).
pub const DESTROYING_FILE: &str = "destroying.json";

/// The name a root's record has while its create is under way: written once, before anything
/// else of the root exists, with the content it will have when ready, and renamed to
/// `state.json` when the root is ready (a rename to a new name: no new inode, and no flush of
/// a replaced file's data). A record under this name is `creating` whatever its `state` field
/// says; `state.json`, then [`DESTROYING_FILE`], take precedence over it (docs/roots.md).
pub const CREATING_FILE: &str = "creating.json";

/// Lifecycle states (`state.json`'s `state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Being made; may be half made.
    Creating,
    /// Usable.
    Ready,
    /// Being torn down; may be half torn down.
    Destroying,
}

impl State {
    /// The name used in JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Creating => "creating",
            State::Ready => "ready",
            State::Destroying => "destroying",
        }
    }
}

/// A create request exactly as given (before refs are resolved): what `--key` compares.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRequest {
    /// Workload class.
    pub class: Option<Class>,
    /// `--from` values (snapshot ids or refs), bottom first.
    pub from: Vec<String>,
    /// `--mount SUBDIR=REF` values.
    pub mounts: Vec<String>,
    /// `--backend` (None: auto).
    pub backend: Option<BackendKind>,
    /// Idempotency key.
    pub key: Option<String>,
    /// `--owner`.
    pub owner: Option<String>,
    /// `--durable`.
    pub durable: bool,
    /// `--repo`.
    pub repo: Option<PathBuf>,
    /// `--base-ref`.
    pub base_ref: Option<String>,
    /// `--branch`.
    pub branch: Option<String>,
    /// `--label KEY=VALUE`.
    pub labels: BTreeMap<String, String>,
    /// `--provision*`: a dependency layer built once per key and stacked on `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision: Option<crate::root::provision::ProvisionRequest>,
}

/// Everything known about a root (`state.json`, version 2).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RootRecord {
    /// Format version of this record.
    pub version: u32,
    /// Root id (16 hex digits).
    pub id: String,
    /// Idempotency key.
    pub key: Option<String>,
    /// Workload class.
    pub class: Class,
    /// Lifecycle state.
    pub state: State,
    /// The directory the run uses.
    pub cwd: PathBuf,
    /// The snapshots the root presents, bottom first, as `--from` gave them.
    pub snapshots: Vec<Hash>,
    /// `--mount` overlays.
    pub mounts: Vec<SubMount>,
    /// Who owns what the run can touch.
    pub owner: Owner,
    /// Overlay without `volatile`.
    pub durable: bool,
    /// The backend's own state, tagged by `kind`.
    pub backend: BackendState,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Warnings from creation (fallbacks and the like).
    pub warnings: Vec<String>,
    /// The request as given.
    pub request: CreateRequest,
    /// The provision layer on top of `snapshots` (the last of them), if the request asked.
    #[serde(default)]
    pub provision: Option<crate::root::provision::ProvisionUse>,
    /// For a record read from [`DESTROYING_FILE`]: the `state` its field kept, the state the
    /// root had when the destroy began (`creating` for the undo of a create). Not written.
    #[serde(skip)]
    pub destroy_began_in: Option<State>,
}

impl RootRecord {
    /// The root's directory in the store.
    pub fn dir(&self, store: &Store) -> PathBuf {
        store.roots_dir().join(&self.id)
    }

    /// The backend serving the root.
    pub fn kind(&self) -> BackendKind {
        self.backend.kind()
    }

    /// The `--mount` subdirectories as raw relative paths (not part of diff, commit, export).
    pub fn mount_subdirs(&self) -> Vec<Vec<u8>> {
        self.mounts.iter().map(|m| m.subdir.as_bytes().to_vec()).collect()
    }

    /// Every lower directory the root's overlays use (its own, for an overlay root, and its
    /// `--mount` trees'): among them the idmapped views it needs.
    pub fn lowers(&self) -> impl Iterator<Item = &Path> {
        let own = match &self.backend {
            BackendState::Overlay(o) => &o.dirs.lowers[..],
            BackendState::GitOverlay(g) => &g.overlay.lowers[..],
            _ => &[],
        };
        own.iter().chain(self.mounts.iter().flat_map(|m| m.dirs.lowers.iter())).map(PathBuf::as_path)
    }

    /// The root as its backend sees it.
    pub fn spec(&self, store: &Store) -> RootSpec {
        RootSpec {
            id: self.id.clone(),
            dir: self.dir(store),
            cwd: self.cwd.clone(),
            snapshots: self.snapshots.clone(),
            owner: self.owner,
            durable: self.durable,
            key: self.key.clone(),
            mount_subdirs: self.mount_subdirs(),
        }
    }

    /// The `--mount` subdirectories to leave out of what the root captures (diff, commit,
    /// export): the recorded ones and, for a sub-mount the run moved by renaming a parent,
    /// where it is now (so a mount's files never enter a commit of the root).
    pub fn capture_skips(&self) -> Result<Vec<Vec<u8>>> {
        use std::os::unix::ffi::OsStrExt;
        let mut skips = self.mount_subdirs();
        for at in crate::backend::submount::where_mounted(&self.cwd, &self.mounts)?.into_iter().flatten() {
            if let Ok(rel) = at.strip_prefix(&self.cwd) {
                let rel = rel.as_os_str().as_bytes().to_vec();
                if !skips.contains(&rel) {
                    skips.push(rel);
                }
            }
        }
        Ok(skips)
    }

    /// [`RootRecord::spec`] for capturing the root: its skips are [`RootRecord::capture_skips`].
    pub fn capture_spec(&self, store: &Store) -> Result<RootSpec> {
        let mut spec = self.spec(store);
        spec.mount_subdirs = self.capture_skips()?;
        Ok(spec)
    }

    /// Replace `state.json` atomically. Not fsync-ed: a root does not outlive a reboot's worth
    /// of promises, and crash safety rests on this record plus doctor (docs/roots.md).
    pub(crate) fn save(&self, store: &Store) -> Result<()> {
        let dir = self.dir(store);
        let tmp = dir.join(".state.json.tmp");
        let mut json = serde_json::to_vec_pretty(self).expect("serializable");
        json.push(b'\n');
        std::fs::write(&tmp, json).at(&tmp)?;
        let dest = dir.join("state.json");
        std::fs::rename(&tmp, &dest).at(&dest)
    }

    /// The record as JSON, with `state` as given.
    fn render(&mut self, state: State) -> Vec<u8> {
        let was = std::mem::replace(&mut self.state, state);
        let mut json = serde_json::to_vec_pretty(self).expect("serializable");
        self.state = was;
        json.push(b'\n');
        json
    }

    /// The content of a create's intent record ([`CREATING_FILE`]): the record as it will be
    /// when ready.
    pub(crate) fn intent(&mut self) -> Vec<u8> {
        self.render(State::Ready)
    }

    /// Record a create's intent, the one write of a create that goes as planned: the record as
    /// it will be when ready, as [`CREATING_FILE`] (written beside and renamed, so that a create
    /// killed part way leaves a whole record or a torn `.state.json.tmp`, never a torn record).
    /// Returns what was written, for [`RootRecord::save_ready`].
    pub(crate) fn save_creating(&mut self, store: &Store) -> Result<Vec<u8>> {
        let dir = self.dir(store);
        let json = self.intent();
        let tmp = dir.join(".state.json.tmp");
        std::fs::write(&tmp, &json).at(&tmp)?;
        let dest = dir.join(CREATING_FILE);
        std::fs::rename(&tmp, &dest).at(&dest)?;
        Ok(json)
    }

    /// Record the root ready. When the record is what [`RootRecord::save_creating`] wrote
    /// (`intent`), that is one rename; when the create learned more on the way (sub-mounts, a
    /// warning, the snapshots a git-overlay checkout decided), `state.json` is written anew and
    /// the intent removed (left behind by a crash, it is ignored beside `state.json`).
    pub(crate) fn save_ready(&mut self, store: &Store, intent: &[u8]) -> Result<()> {
        let dir = self.dir(store);
        let creating = dir.join(CREATING_FILE);
        if self.render(State::Ready) == intent {
            let dest = dir.join("state.json");
            std::fs::rename(&creating, &dest).at(&dest)?;
            self.state = State::Ready;
            return Ok(());
        }
        let was = std::mem::replace(&mut self.state, State::Ready);
        if let Err(e) = self.save(store) {
            self.state = was;
            return Err(e);
        }
        match std::fs::remove_file(&creating) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&creating, e)),
        }
    }

    /// Record that a destroy has begun, needing no new data block (the disk may be full):
    /// `state.json` is renamed to [`DESTROYING_FILE`]. Idempotent. Returns whether this call
    /// made the change (so that a refused destroy can [`RootRecord::unmark_destroying`]). The
    /// undo of a create keeps its [`CREATING_FILE`]: a `creating` root is undone by doctor
    /// just as a `destroying` one is finished.
    pub(crate) fn mark_destroying(&mut self, store: &Store) -> Result<bool> {
        let dir = self.dir(store);
        let (from, to) = (dir.join("state.json"), dir.join(DESTROYING_FILE));
        let res = match std::fs::rename(&from, &to) {
            Ok(()) => Ok(true),
            // Already marked (by an interrupted destroy, or an older execroot's `destroying`
            // record that doctor is finishing), or a create's intent being undone.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && (self.state == State::Destroying
                        || to.exists()
                        || (self.state == State::Creating && dir.join(CREATING_FILE).exists())) =>
            {
                Ok(false)
            }
            Err(e) => Err(Error::io(&from, e)),
        };
        self.state = State::Destroying;
        res
    }

    /// Undo [`RootRecord::mark_destroying`] for a destroy that will not go on (the root is in
    /// use): the record gets its name, and the root its state, back.
    pub(crate) fn unmark_destroying(&mut self, store: &Store, was: State) -> Result<()> {
        let dir = self.dir(store);
        let (from, to) = (dir.join(DESTROYING_FILE), dir.join("state.json"));
        std::fs::rename(&from, &to).at(&from)?;
        self.state = was;
        Ok(())
    }

    /// Parse a `state.json` of any version this execroot reads.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<RootRecord> {
        let bad = |e: serde_json::Error| Error::Corrupt(format!("{}: {e}", path.display()));
        #[derive(Deserialize)]
        struct Probe {
            version: Option<u32>,
        }
        let version = serde_json::from_slice::<Probe>(bytes).map_err(bad)?.version.unwrap_or(1);
        match version {
            1 => {
                let v1 = serde_json::from_slice::<RecordV1>(bytes).map_err(bad)?;
                // Version 1 predates the git-overlay backend.
                if v1.backend == BackendKind::GitOverlay {
                    return Err(bad(serde::de::Error::custom("backend git-overlay in a version-1 record")));
                }
                Ok(v1.upgrade())
            }
            STATE_VERSION => serde_json::from_slice(bytes).map_err(bad),
            v => Err(Error::Corrupt(format!(
                "{}: state format version {v} is not one this execroot reads (1 to {STATE_VERSION}); left untouched",
                path.display()
            ))),
        }
    }
}

/// `state.json` version 1: one flat record with every backend's fields.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordV1 {
    id: String,
    key: Option<String>,
    class: Class,
    backend: BackendKind,
    state: State,
    cwd: PathBuf,
    layers: Vec<Hash>,
    mounts: Vec<SubMount>,
    owner: Owner,
    durable: bool,
    upper: Option<PathBuf>,
    work: Option<PathBuf>,
    #[serde(default)]
    lowers: Vec<PathBuf>,
    repo: Option<PathBuf>,
    branch_name: Option<String>,
    worktree_path: Option<PathBuf>,
    base_ref: Option<String>,
    #[serde(default)]
    created_branch: bool,
    created_at: String,
    labels: BTreeMap<String, String>,
    warnings: Vec<String>,
    request: CreateRequest,
}

impl RecordV1 {
    fn upgrade(self) -> RootRecord {
        // A version-1 create killed before its backend ran recorded no paths; the ones filled
        // in here are where that create would have put them, and nothing is there to remove.
        let dir = self.cwd.parent().map(Path::to_path_buf).unwrap_or_default();
        let backend = match self.backend {
            BackendKind::Overlay => BackendState::Overlay(OverlayState {
                dirs: OverlayDirs {
                    lowers: self.lowers,
                    upper: self.upper.unwrap_or_default(),
                    work: self.work.unwrap_or_default(),
                },
            }),
            BackendKind::Copy => BackendState::Copy(CopyState {}),
            BackendKind::Worktree | BackendKind::GitOverlay => BackendState::Worktree(WorktreeState {
                repo: self.repo.unwrap_or_default(),
                worktree_path: self.worktree_path.unwrap_or_else(|| dir.join("wt/worktree")),
                branch_name: self.branch_name.unwrap_or_default(),
                base_ref: self.base_ref.unwrap_or_else(|| "HEAD".into()),
                created_branch: self.created_branch,
            }),
        };
        RootRecord {
            version: STATE_VERSION,
            id: self.id,
            key: self.key,
            class: self.class,
            state: self.state,
            cwd: self.cwd,
            snapshots: self.layers,
            mounts: self.mounts,
            owner: self.owner,
            durable: self.durable,
            backend,
            created_at: self.created_at,
            labels: self.labels,
            warnings: self.warnings,
            request: self.request,
            provision: None,
            destroy_began_in: None,
        }
    }
}

/// A root directory whose `state.json` cannot be read or parsed (or is of a newer version): the
/// shape `snapshot list` uses for a damaged snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct UnreadableRoot {
    /// Root id (the directory's name).
    pub id: String,
    /// Why its state cannot be used.
    pub error: String,
}

/// Every directory under `roots/`, sorted into what it is.
#[derive(Clone, Debug, Default)]
pub struct RootScan {
    /// Roots with a readable state, by creation time.
    pub roots: Vec<RootRecord>,
    /// Roots whose state cannot be read: kept, pinned, reported.
    pub unreadable: Vec<UnreadableRoot>,
    /// Empty root directories (a create killed before its first state write).
    pub empty: Vec<PathBuf>,
}

impl RootScan {
    /// Fail (naming the files) when any root's state is unreadable: for operations that would
    /// otherwise delete what such a root uses.
    pub fn require_readable(&self, what: &str) -> Result<()> {
        if self.unreadable.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = self.unreadable.iter().map(|u| u.error.clone()).collect();
        Err(Error::Corrupt(format!(
            "{what} refused: the state of {} root(s) cannot be read, so what they use is unknown: {}; \
             `execroot doctor` lists them, `execroot doctor --discard-unreadable ID` removes one after you have checked it",
            list.len(),
            list.join("; ")
        )))
    }
}

/// True when `id` looks like a root id (16 lowercase hex digits).
pub(crate) fn validate_id(id: &str) -> bool {
    id.len() == 16 && crate::hash::is_lower_hex(id)
}

/// True when a root directory holds nothing but, at most, a torn `.state.json.tmp`.
/// Whether root directory `dir` holds nothing but a torn state write; `None` when the
/// directory itself is gone (a destroy finished between the listing and this look).
fn root_dir_is_empty(dir: &Path) -> Result<Option<bool>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for e in rd {
        if e.at(dir)?.file_name() != ".state.json.tmp" {
            return Ok(Some(false));
        }
    }
    Ok(Some(true))
}

impl Store {
    /// Directory of roots.
    pub fn roots_dir(&self) -> PathBuf {
        self.path().join("roots")
    }

    /// Read a root's state. `NotFound` only when there is no such root (or no `state.json`);
    /// a state file that cannot be read or parsed, or that is of a newer format version, is
    /// `Corrupt` naming the file: callers that delete must treat that as "keep", never as absent.
    pub fn load_root(&self, id: &str) -> Result<RootRecord> {
        if !validate_id(id) {
            return Err(Error::NotFound(format!("no root {id:?}")));
        }
        let dir = self.roots_dir().join(id);
        let read = |path: &Path| match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Corrupt(format!("{}: cannot read: {e}", path.display()))),
        };
        let path = dir.join("state.json");
        if let Some(bytes) = read(&path)? {
            return RootRecord::parse(&bytes, &path);
        }
        // A destroy under way renamed the record: the root is `destroying`.
        let path = dir.join(DESTROYING_FILE);
        if let Some(bytes) = read(&path)? {
            let mut rec = RootRecord::parse(&bytes, &path)?;
            rec.destroy_began_in = Some(rec.state);
            rec.state = State::Destroying;
            return Ok(rec);
        }
        // A create under way (or killed) has recorded its intent only.
        let path = dir.join(CREATING_FILE);
        match read(&path)? {
            Some(bytes) => {
                let mut rec = RootRecord::parse(&bytes, &path)?;
                rec.state = State::Creating;
                Ok(rec)
            }
            None => Err(Error::NotFound(format!("no root {id:?}"))),
        }
    }

    /// Every root directory, sorted: readable roots by creation time, roots whose state cannot
    /// be read (kept and reported, never skipped), and empty directories that a create killed
    /// before its first state write left behind.
    pub fn scan_roots(&self) -> Result<RootScan> {
        let dir = self.roots_dir();
        let mut scan = RootScan::default();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(scan),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        for e in rd {
            let e = e.at(&dir)?;
            // Only directories named like a root id are roots; anything else is not execroot's.
            let Some(name) = e.file_name().to_str().filter(|n| validate_id(n)).map(str::to_string) else { continue };
            match self.load_root(&name) {
                Ok(r) => scan.roots.push(r),
                Err(Error::NotFound(_)) => {
                    let empty = match root_dir_is_empty(&e.path())? {
                        // Destroyed since the listing: gone, not unreadable.
                        None => continue,
                        Some(empty) => empty,
                    };
                    if empty {
                        scan.empty.push(e.path());
                    } else {
                        let error = format!(
                            "{}: missing (and no {DESTROYING_FILE} or {CREATING_FILE}), but the directory holds files",
                            e.path().join("state.json").display()
                        );
                        scan.unreadable.push(UnreadableRoot { id: name, error });
                    }
                }
                Err(err) => scan.unreadable.push(UnreadableRoot { id: name, error: err.to_string() }),
            }
        }
        scan.roots.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        scan.unreadable.sort_by(|a, b| a.id.cmp(&b.id));
        scan.empty.sort();
        Ok(scan)
    }
}
