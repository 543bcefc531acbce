//! Roots: active, disposable working directories, one per run.
//!
//! Each root is a directory `roots/<id>/` holding `state.json` and whatever its backend made.
//! `state.json` is replaced atomically at each step of the lifecycle
//! `creating -> ready -> destroying -> (removed)`, so after a crash `doctor` can always tell what
//! to finish or undo. A root in any state pins its snapshots. Create and destroy do not fsync:
//! a root does not outlive a reboot's worth of promises (docs/roots.md).

pub mod commit;
pub mod doctor;
pub mod export;
pub mod reclaim;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::{self, Usage};
use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::policy::{self, BackendKind, Class};
use crate::store::StoreLock;
use crate::sys::lock::FileLock;
use crate::sys::mount::{self, Unmounted};
use crate::sys::Owner;
use crate::Store;

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

/// A create request exactly as given (before refs are resolved): what `--key` compares.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRequest {
    /// Workload class.
    pub class: Option<Class>,
    /// `--from` values, bottom first.
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
}

/// A `--mount SUBDIR=REF` overlay inside a root.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubMount {
    /// Path inside the root, relative.
    pub subdir: String,
    /// Snapshot id mounted there.
    pub snapshot: String,
    /// Absolute mount point.
    pub path: PathBuf,
    /// Private upper directory.
    pub upper: PathBuf,
    /// Private work directory.
    pub work: PathBuf,
    /// Lower directories, top first.
    pub lowers: Vec<PathBuf>,
}

/// The `state.json` format this execroot writes and the newest it reads. A record of a newer
/// version is refused read-only: it is never rewritten, and nothing it pins is collected.
pub const STATE_VERSION: u32 = 1;

fn state_version_absent() -> u32 {
    1
}

/// Everything known about a root (`roots/<id>/state.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RootRecord {
    /// Format version of this record (absent in the oldest records, which are version 1).
    #[serde(default = "state_version_absent")]
    pub version: u32,
    /// Root id (16 hex digits).
    pub id: String,
    /// Idempotency key.
    pub key: Option<String>,
    /// Workload class.
    pub class: Class,
    /// Backend serving it.
    pub backend: BackendKind,
    /// Lifecycle state.
    pub state: State,
    /// The directory the run uses.
    pub cwd: PathBuf,
    /// Snapshot ids, bottom first, as `--from` gave them.
    pub layers: Vec<String>,
    /// `--mount` overlays.
    pub mounts: Vec<SubMount>,
    /// Who owns what the run can touch.
    pub owner: Owner,
    /// Overlay without `volatile`.
    pub durable: bool,
    /// Overlay upper directory.
    pub upper: Option<PathBuf>,
    /// Overlay work directory.
    pub work: Option<PathBuf>,
    /// Overlay lower directories, top first.
    #[serde(default)]
    pub lowers: Vec<PathBuf>,
    /// Worktree: repository.
    pub repo: Option<PathBuf>,
    /// Worktree: branch.
    pub branch_name: Option<String>,
    /// Worktree: path.
    pub worktree_path: Option<PathBuf>,
    /// Worktree: base ref.
    pub base_ref: Option<String>,
    /// Worktree: whether execroot created the branch (only then may it delete it).
    #[serde(default)]
    pub created_branch: bool,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Warnings from creation (fallbacks and the like).
    pub warnings: Vec<String>,
    /// The request as given.
    pub request: CreateRequest,
}

impl RootRecord {
    /// The root's directory in the store.
    pub fn dir(&self, store: &Store) -> PathBuf {
        store.roots_dir().join(&self.id)
    }

    /// The `--mount` subdirectories as raw relative paths (not part of diff, commit, export).
    pub fn mount_subdirs(&self) -> Vec<Vec<u8>> {
        self.mounts.iter().map(|m| m.subdir.as_bytes().to_vec()).collect()
    }

    /// Snapshot ids of `layers`.
    pub fn layer_ids(&self) -> Result<Vec<Hash>> {
        self.layers.iter().map(|s| Hash::from_hex(s)).collect()
    }

    /// Replace `state.json` atomically (no fsync: see the module documentation).
    pub(crate) fn save(&self, store: &Store) -> Result<()> {
        let dir = self.dir(store);
        let tmp = dir.join(".state.json.tmp");
        let mut json = serde_json::to_vec_pretty(self).expect("serializable");
        json.push(b'\n');
        std::fs::write(&tmp, json).at(&tmp)?;
        let dest = dir.join("state.json");
        std::fs::rename(&tmp, &dest).at(&dest)
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
    /// Roots with a readable state.
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

/// What `root create` reports (names follow Paperclip's `RealizedExecutionWorkspace`).
#[derive(Debug, Serialize)]
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
    /// The directory the run uses.
    pub cwd: PathBuf,
    /// Snapshot ids, bottom first.
    pub layers: Vec<String>,
    /// `--mount` overlays: `{ subdir, snapshot, path }`.
    pub mounts: Vec<serde_json::Value>,
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
    /// Milliseconds per phase (`total` always).
    pub timings_ms: BTreeMap<String, f64>,
}

impl Created {
    fn of(rec: &RootRecord, created: bool, timings_ms: BTreeMap<String, f64>) -> Created {
        Created {
            id: rec.id.clone(),
            key: rec.key.clone(),
            class: rec.class,
            backend: rec.backend,
            cwd: rec.cwd.clone(),
            layers: rec.layers.clone(),
            mounts: rec
                .mounts
                .iter()
                .map(|m| serde_json::json!({ "subdir": m.subdir, "snapshot": m.snapshot, "path": m.path }))
                .collect(),
            branch_name: rec.branch_name.clone(),
            worktree_path: rec.worktree_path.clone(),
            base_ref: rec.base_ref.clone(),
            created,
            warnings: rec.warnings.clone(),
            timings_ms,
        }
    }
}

/// What `root destroy` reports (Paperclip's cleanup result).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Destroyed {
    /// The directory that was (or was to be) removed.
    pub cleaned_path: PathBuf,
    /// Whether it is gone.
    pub cleaned: bool,
    /// Why not, or what was discarded.
    pub warnings: Vec<String>,
}

/// Validate a key: 1 to 200 bytes, no control characters.
pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 200 || key.chars().any(char::is_control) {
        return Err(Error::BadInput(format!("invalid key {key:?}: 1 to 200 characters, no control characters")));
    }
    Ok(())
}

fn validate_id(id: &str) -> bool {
    id.len() == 16 && crate::hash::is_lower_hex(id)
}

/// An exclusive lock serialising everything done under one key.
fn key_lock(store: &Store, key: &str) -> Result<FileLock> {
    FileLock::acquire(&store.keys_dir().join(format!("{}.lock", key_name(key))), true)
}

fn key_name(key: &str) -> String {
    Hash::of(key.as_bytes()).to_hex()[..32].to_string()
}

fn elapsed_ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

impl Store {
    /// Directory of roots.
    pub fn roots_dir(&self) -> PathBuf {
        self.root().join("roots")
    }

    /// Directory of key index files and key locks.
    pub fn keys_dir(&self) -> PathBuf {
        self.root().join("keys")
    }

    fn key_index(&self, key: &str) -> PathBuf {
        self.keys_dir().join(key_name(key))
    }

    /// Read a root's state. `NotFound` only when there is no such root (or no `state.json`);
    /// a state file that cannot be read or parsed, or that is of a newer format version, is
    /// `Corrupt` naming the file: callers that delete must treat that as "keep", never as absent.
    pub fn load_root(&self, id: &str) -> Result<RootRecord> {
        if !validate_id(id) {
            return Err(Error::NotFound(format!("no root {id:?}")));
        }
        let path = self.roots_dir().join(id).join("state.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("no root {id:?}")))
            }
            Err(e) => return Err(Error::Corrupt(format!("{}: cannot read: {e}", path.display()))),
        };
        #[derive(Deserialize)]
        struct Probe {
            #[serde(default = "state_version_absent")]
            version: u32,
        }
        let probe: Probe =
            serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))?;
        if probe.version > STATE_VERSION {
            return Err(Error::Corrupt(format!(
                "{}: state format version {} is newer than this execroot reads ({STATE_VERSION}); left untouched",
                path.display(),
                probe.version
            )));
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))
    }

    /// Find a root by exact id, then exact key. A root whose state cannot be read is an error
    /// (`Corrupt`), not "no such root".
    pub fn find_root(&self, id_or_key: &str) -> Result<RootRecord> {
        if validate_id(id_or_key) {
            match self.load_root(id_or_key) {
                Err(Error::NotFound(_)) => {}
                other => return other,
            }
        }
        if validate_key(id_or_key).is_ok() {
            let idx = self.key_index(id_or_key);
            match std::fs::read_to_string(&idx) {
                Ok(id) => match self.load_root(id.trim()) {
                    Ok(rec) if rec.key.as_deref() == Some(id_or_key) => return Ok(rec),
                    Ok(_) | Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&idx, e)),
            }
        }
        Err(Error::NotFound(format!("no root with id or key {id_or_key:?}")))
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
                    if root_dir_is_empty(&e.path())? {
                        scan.empty.push(e.path());
                    } else {
                        let error = format!(
                            "{}: missing, but the directory holds files",
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

    /// Create a root (or, with a key that exists, return it with `created: false`).
    pub fn create_root(&self, req: &CreateRequest) -> Result<Created> {
        let t0 = Instant::now();
        let class = req.class.ok_or_else(|| Error::BadInput("--class is required".into()))?;
        if let Some(k) = &req.key {
            validate_key(k)?;
        }
        std::fs::create_dir_all(self.roots_dir()).at(self.roots_dir())?;
        std::fs::create_dir_all(self.keys_dir()).at(self.keys_dir())?;
        let _key_lock = match &req.key {
            Some(k) => Some(key_lock(self, k)?),
            None => None,
        };
        if let Some(k) = &req.key {
            if let Ok(existing) = self.find_root(k) {
                if existing.request != *req {
                    return Err(Error::Conflict(format!(
                        "key {k:?} names root {} created with different parameters",
                        existing.id
                    )));
                }
                let mut timings = BTreeMap::new();
                timings.insert("total".into(), elapsed_ms(t0));
                return Ok(Created::of(&existing, false, timings));
            }
        }
        let _store_lock = StoreLock::acquire(self, false)?;
        let owner = match &req.owner {
            Some(o) => Owner::parse(o)?,
            None => self.config()?.owner.as_deref().map(Owner::parse).transpose()?.unwrap_or_else(Owner::current),
        };
        let layers: Vec<Hash> = req.from.iter().map(|s| self.resolve(s)).collect::<Result<_>>()?;
        let mounts: Vec<(String, Hash)> = req
            .mounts
            .iter()
            .map(|m| {
                let (sub, r) =
                    m.split_once('=').ok_or_else(|| Error::BadInput(format!("--mount {m:?} is not SUBDIR=ID|REF")))?;
                Ok((validate_subdir(sub)?, self.resolve(r)?))
            })
            .collect::<Result<_>>()?;
        let (kind, warnings) = policy::choose(class, req.backend, self.root())?;
        if kind == BackendKind::Worktree && (req.repo.is_none() || req.base_ref.is_none()) {
            return Err(Error::BadInput("the worktree backend needs --repo PATH and --base-ref REF".into()));
        }
        if kind != BackendKind::Worktree && req.repo.is_some() {
            return Err(Error::BadInput(format!("--repo is for the worktree backend, not {kind}")));
        }
        let mut timings = BTreeMap::new();
        timings.insert("resolve".into(), elapsed_ms(t0));

        let id = format!("{:016x}", rand::random::<u64>());
        let mut rec = RootRecord {
            version: STATE_VERSION,
            id: id.clone(),
            key: req.key.clone(),
            class,
            backend: kind,
            state: State::Creating,
            cwd: PathBuf::new(),
            layers: layers.iter().map(Hash::to_hex).collect(),
            mounts: vec![],
            owner,
            durable: req.durable,
            upper: None,
            work: None,
            lowers: vec![],
            repo: req.repo.clone(),
            branch_name: None,
            worktree_path: None,
            base_ref: req.base_ref.clone(),
            created_branch: false,
            created_at: crate::store::snapshot::now_rfc3339(),
            labels: req.labels.clone(),
            warnings,
            request: req.clone(),
        };
        let dir = rec.dir(self);
        std::fs::create_dir(&dir).at(&dir)?;
        // From here on the root is visible to doctor and pins its snapshots.
        rec.save(self)?;
        if let Some(k) = &req.key {
            let idx = self.key_index(k);
            std::fs::write(&idx, format!("{id}\n")).at(&idx)?;
        }
        let t1 = Instant::now();
        let result = (|| -> Result<()> {
            backend::get(kind).create(self, &mut rec)?;
            timings.insert("backend".into(), elapsed_ms(t1));
            let t2 = Instant::now();
            for (sub, snap) in &mounts {
                let m = self.mount_sub(&rec, sub, snap)?;
                rec.mounts.push(m);
            }
            if !mounts.is_empty() {
                timings.insert("mounts".into(), elapsed_ms(t2));
            }
            rec.state = State::Ready;
            rec.save(self)
        })();
        if let Err(e) = result {
            let _ = self.teardown(&mut rec, true);
            return Err(e);
        }
        timings.insert("total".into(), elapsed_ms(t0));
        tracing::info!(id = %rec.id, backend = %kind, ms = elapsed_ms(t0), "root created");
        Ok(Created::of(&rec, true, timings))
    }

    /// Mount an overlay of `snap` at SUBDIR inside the root.
    fn mount_sub(&self, rec: &RootRecord, sub: &str, snap: &Hash) -> Result<SubMount> {
        let target = prepare_subdir(&rec.cwd, sub, rec.owner)?;
        let dir = rec.dir(self).join(format!("m{}", rec.mounts.len()));
        std::fs::create_dir(&dir).at(&dir)?;
        let spec = backend::overlay::mount_stack(self, &[*snap], &dir, &target, rec.owner, !rec.durable)?;
        Ok(SubMount {
            subdir: sub.to_string(),
            snapshot: snap.to_hex(),
            path: target,
            upper: spec.upper,
            work: spec.work,
            lowers: spec.lowers,
        })
    }

    /// Destroy a root. Refuses (conflict) when it would lose work and not `force`; returns
    /// `cleaned: false` with the processes named when the root is still in use.
    pub fn destroy_root(&self, id_or_key: &str, force: bool) -> Result<Destroyed> {
        let found = self.find_root(id_or_key)?;
        let _key_lock = match &found.key {
            Some(k) => Some(key_lock(self, k)?),
            None => None,
        };
        // Re-read under the key lock: a concurrent destroy may have finished.
        let mut rec = self.load_root(&found.id)?;
        let cleaned_path = rec.cwd.clone();
        let busy = |rec: &RootRecord| Destroyed {
            cleaned_path: rec.cwd.clone(),
            cleaned: false,
            warnings: vec![format!(
                "root {} is in use by: {}; retry when they are done",
                rec.id,
                crate::sys::procs::users_of(&rec.cwd).join(", ")
            )],
        };
        // Sub-mounts go first: nothing inspects a tree with foreign mounts in it.
        match self.unmount_subs(&rec) {
            Ok(()) => {}
            Err(Error::Busy { .. }) => {
                self.remount_subs(&rec)?;
                return Ok(busy(&rec));
            }
            Err(e) => {
                // Put back what this call took away; report the first failure.
                let _ = self.remount_subs(&rec);
                return Err(e);
            }
        }
        let b = backend::get(rec.backend);
        let mut warnings = match b.check_destroy(self, &rec, force) {
            Ok(w) => w,
            Err(e) => {
                self.remount_subs(&rec)?;
                return Err(e);
            }
        };
        if !b.detach(self, &rec)? {
            self.remount_subs(&rec)?;
            return Ok(busy(&rec));
        }
        match self.teardown(&mut rec, force) {
            Ok(w) => warnings.extend(w),
            Err(e @ Error::Busy { .. }) => {
                warnings.push(e.to_string());
                return Ok(Destroyed { cleaned_path, cleaned: false, warnings });
            }
            Err(e) => return Err(e),
        }
        Ok(Destroyed { cleaned_path, cleaned: true, warnings })
    }

    fn unmount_subs(&self, rec: &RootRecord) -> Result<()> {
        for m in rec.mounts.iter().rev() {
            if mount::unmount(&m.path)? == Unmounted::Busy {
                return Err(Error::Busy { path: m.path.clone() });
            }
        }
        Ok(())
    }

    /// Mount again sub-mounts that this process unmounted cleanly (a refused destroy).
    fn remount_subs(&self, rec: &RootRecord) -> Result<()> {
        for m in &rec.mounts {
            if !mount::is_mounted(&m.path)? {
                // A volatile overlay leaves a marker that makes the kernel refuse a remount, as
                // it cannot know the unmount was clean. We do: the upper is intact, so the
                // marker may go (the kernel documentation allows exactly this case).
                let _ = std::fs::remove_dir_all(m.work.join("work/incompat/volatile"));
                let spec = crate::sys::mount::OverlaySpec {
                    lowers: m.lowers.clone(),
                    upper: m.upper.clone(),
                    work: m.work.clone(),
                    volatile: !rec.durable,
                };
                spec.mount(&m.path)?.keep();
            }
        }
        Ok(())
    }

    /// Mark destroying, take every mount away, let the backend tear down, remove the directory
    /// and the key. Idempotent: doctor runs it again on a root killed half way.
    pub(crate) fn teardown(&self, rec: &mut RootRecord, _force: bool) -> Result<Vec<String>> {
        if rec.state != State::Destroying {
            rec.state = State::Destroying;
            rec.save(self)?;
        }
        self.unmount_subs(rec)?;
        let warnings = backend::get(rec.backend).destroy(self, rec)?;
        let dir = rec.dir(self);
        // Never delete through a mount: whatever is still mounted below is taken away first,
        // and a mount that will not go stops the deletion.
        for m in mount::mounts_under(&dir)? {
            if mount::unmount(&m.target)? == Unmounted::Busy {
                return Err(Error::Busy { path: m.target.clone() });
            }
        }
        remove_root_dir(&dir)?;
        if let Some(k) = &rec.key {
            let idx = self.key_index(k);
            if std::fs::read_to_string(&idx).is_ok_and(|s| s.trim() == rec.id) {
                let _ = std::fs::remove_file(&idx);
            }
        }
        Ok(warnings)
    }

    /// `root show`: the record plus what the run has written and backend status.
    pub fn show_root(&self, id_or_key: &str) -> Result<serde_json::Value> {
        let rec = self.find_root(id_or_key)?;
        let b = backend::get(rec.backend);
        let usage: Usage = b.usage(self, &rec)?;
        let mut v = serde_json::to_value(&rec).expect("serializable");
        let o = v.as_object_mut().expect("object");
        o.remove("request");
        o.insert("mounted".into(), serde_json::json!(b.is_live(self, &rec)?));
        o.insert("usage".into(), serde_json::to_value(usage).expect("serializable"));
        if let Some(git) = b.status(self, &rec)? {
            o.insert("git".into(), git);
        }
        Ok(v)
    }
}

/// Remove a root's directory with its `state.json` last, so that a crash part way leaves either
/// a state file doctor acts on or an empty directory, never files without a record.
fn remove_root_dir(dir: &Path) -> Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for e in rd {
        let e = e.at(dir)?;
        if e.file_name() == "state.json" {
            continue;
        }
        let p = e.path();
        let res = if e.file_type().at(&p)?.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        match res {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(Error::io(&p, err)),
        }
    }
    let state = dir.join("state.json");
    match std::fs::remove_file(&state) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&state, e)),
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// True when a root directory holds nothing but, at most, a torn `.state.json.tmp`.
fn root_dir_is_empty(dir: &Path) -> Result<bool> {
    for e in std::fs::read_dir(dir).at(dir)? {
        if e.at(dir)?.file_name() != ".state.json.tmp" {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Check a `--mount` SUBDIR: relative, no `.`/`..`/empty components.
fn validate_subdir(sub: &str) -> Result<String> {
    let trimmed = sub.trim_end_matches('/');
    crate::store::manifest::validate_path(trimmed.as_bytes()).map_err(|_| {
        Error::BadInput(format!("--mount subdirectory {sub:?} must be a relative path inside the root"))
    })?;
    Ok(trimmed.to_string())
}

/// Resolve SUBDIR inside `cwd` without following symlinks, creating missing directories (owned
/// by `owner`). A symlink or non-directory on the way is refused, so the mount stays inside.
fn prepare_subdir(cwd: &Path, sub: &str, owner: Owner) -> Result<PathBuf> {
    let mut p = cwd.to_path_buf();
    for comp in sub.split('/') {
        p.push(comp);
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.file_type().is_symlink() => {
                return Err(Error::BadInput(format!(
                    "--mount {sub}: {} is a symlink; mounts must stay inside the root",
                    p.display()
                )))
            }
            Ok(md) if !md.is_dir() => {
                return Err(Error::BadInput(format!("--mount {sub}: {} is not a directory", p.display())))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&p).at(&p)?;
                std::os::unix::fs::lchown(&p, Some(owner.uid), Some(owner.gid)).at(&p)?;
            }
            Err(e) => return Err(Error::io(&p, e)),
        }
    }
    Ok(p)
}
