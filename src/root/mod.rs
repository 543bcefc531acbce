//! Roots: active, disposable working directories, one per run; the layer above backends.
//!
//! Each root is a directory `roots/<id>/` holding `state.json` (its [`record`]) and whatever its
//! backend made. The record is replaced atomically at each step of the lifecycle
//! `creating -> ready -> destroying -> (removed)`, so after a crash `doctor` can always tell what
//! to finish or undo: crash safety rests on that record plus doctor, not on syncs (create and
//! destroy do not fsync; a root does not outlive a reboot's worth of promises, docs/roots.md).
//! A root in any state pins its snapshots.
//!
//! - [`record`]: `state.json` and the scan of `roots/`;
//! - [`access`]: who may reach a root's directory (its owner alone), and the check that it can;
//! - [`view`]: the JSON answers (root view, create and destroy results);
//! - [`doctor`], [`commit`], [`export`], [`reclaim`] (gc, snapshot rm, df with roots pinned).

pub mod access;
pub mod caller;
pub mod commit;
pub mod doctor;
pub mod exec;
pub mod export;
pub mod export_as;
pub mod pool;
pub mod provision;
pub mod reclaim;
pub mod record;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::backend::{self, submount, RootSpec, WorktreeRequest};
use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::policy;
use crate::store::StoreLock;
use crate::sys::lock::FileLock;
use crate::sys::mount::{self, Unmounted};
use crate::sys::Owner;
use crate::Store;

pub use record::{CreateRequest, RootRecord, RootScan, State, UnreadableRoot, STATE_VERSION};
pub use view::{Created, Destroyed, MountView, RootDiff, RootList, RootListEntry, RootView};

/// Validate a key: 1 to 200 bytes, no control characters.
pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 200 || key.chars().any(char::is_control) {
        return Err(Error::BadInput(format!("invalid key {key:?}: 1 to 200 characters, no control characters")));
    }
    Ok(())
}

/// An exclusive lock serialising everything done under one key (one of a fixed set of lock
/// files, see [`Store::named_lock`]).
fn key_lock(store: &Store, key: &str) -> Result<FileLock> {
    store.named_lock(&format!("key-{}", key_file_name(key)))
}

/// The file name of a key's index entry (a hash: keys are free text).
fn key_file_name(key: &str) -> String {
    Hash::of(key.as_bytes()).to_hex()[..32].to_string()
}

pub(crate) fn elapsed_ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

impl Store {
    /// Directory of key index files.
    pub fn keys_dir(&self) -> PathBuf {
        self.path().join("keys")
    }

    fn key_index(&self, key: &str) -> PathBuf {
        self.keys_dir().join(key_file_name(key))
    }

    /// Find a root by exact id, then exact key. A root whose state cannot be read is an error
    /// (`Corrupt`), not "no such root".
    pub fn find_root(&self, id_or_key: &str) -> Result<RootRecord> {
        if record::validate_id(id_or_key) {
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

    /// `root list`: every root, readable or not, by creation time (unreadable ones last).
    pub fn list_roots(&self) -> Result<RootList> {
        let scan = self.scan_roots()?;
        let mut roots: Vec<RootListEntry> =
            scan.roots.iter().map(|r| RootListEntry::Root(Box::new(RootView::of(r)))).collect();
        roots.extend(scan.unreadable.into_iter().map(RootListEntry::Unreadable));
        Ok(RootList { roots })
    }

    /// `root show`: the root's view plus whether it is live, what the run has written and, for
    /// a worktree, git's view.
    pub fn show_root(&self, id_or_key: &str) -> Result<RootView> {
        let rec = self.find_root(id_or_key)?;
        let spec = rec.spec(self);
        let mut v = RootView::of(&rec);
        v.mounted = Some(rec.backend.is_live(self, &spec)?);
        v.usage = Some(rec.backend.usage(self, &spec)?);
        v.git = rec.backend.git_status(self, &spec)?;
        Ok(v)
    }

    /// `root diff`: what the run changed against its base (docs/capture.md).
    pub fn diff_root(&self, id_or_key: &str) -> Result<RootDiff> {
        let rec = self.find_root(id_or_key)?;
        let diff = rec.backend.diff(self, &rec.capture_spec(self)?)?;
        Ok(RootDiff { root: rec.id, diff })
    }

    /// Create a root (or, with a key that exists, return it with `created: false`).
    pub fn create_root(&self, req: &CreateRequest) -> Result<Created> {
        self.create_root_checked(req, &|_| true, None)
    }

    /// [`Store::create_root`], where a key that names a root `visible` refuses does not find it:
    /// it is a conflict naming no root (the key is another user's, [`caller`]).
    pub(crate) fn create_root_checked(
        &self,
        req: &CreateRequest,
        visible: &dyn Fn(&RootRecord) -> bool,
        pool: Option<&pool::RootPool>,
    ) -> Result<Created> {
        let t0 = Instant::now();
        let class = req.class.ok_or_else(|| Error::BadInput("--class is required".into()))?;
        if let Some(k) = &req.key {
            validate_key(k)?;
        }
        self.top_dir("roots")?;
        self.top_dir("keys")?;
        let _key_lock = match &req.key {
            Some(k) => Some(key_lock(self, k)?),
            None => None,
        };
        if let Some(k) = &req.key {
            match self.find_root(k) {
                Ok(existing) => {
                    if !visible(&existing) {
                        return Err(Error::Conflict(format!("key {k:?} is in use by another user's root")));
                    }
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
                Err(Error::NotFound(_)) => {}
                // The key names a root whose state cannot be read: never take it for free.
                Err(e) => return Err(e),
            }
        }
        // Before the store lock: a build makes a root, runs a command and commits.
        let mut timings = BTreeMap::new();
        let provision = self.provision_for_create(req, &mut timings)?;
        let _store_lock = StoreLock::acquire(self, false)?;
        let config = self.config()?;
        let owner_given = req.owner.is_some() || config.owner.is_some();
        let owner = match &req.owner {
            Some(o) => Owner::parse(o)?,
            None => config.owner.as_deref().map(Owner::parse).transpose()?.unwrap_or_else(Owner::current),
        };
        let mut snapshots: Vec<Hash> = req.from.iter().map(|s| self.resolve(s)).collect::<Result<_>>()?;
        if let Some(p) = &provision {
            // Under the shared store lock no gc runs: present now, the layer stays.
            if !self.snapshot_dir(&p.snapshot).join("manifest").exists() {
                return Err(Error::Conflict(format!("provision layer {} was removed by a gc meanwhile; retry", p.key)));
            }
            snapshots.push(p.snapshot);
        }
        let mounts: Vec<(String, Hash)> = req
            .mounts
            .iter()
            .map(|m| {
                let (sub, r) =
                    m.split_once('=').ok_or_else(|| Error::BadInput(format!("--mount {m:?} is not SUBDIR=ID|REF")))?;
                Ok((submount::validate_subdir(sub)?, self.resolve(r)?))
            })
            .collect::<Result<_>>()?;
        let (kind, warnings) = policy::choose(class, req.backend, self.path())?;
        if kind.is_git() && (req.repo.is_none() || req.base_ref.is_none()) {
            return Err(Error::BadInput(format!("the {kind} backend needs --repo PATH and --base-ref REF")));
        }
        if !kind.is_git() && req.repo.is_some() {
            return Err(Error::BadInput(format!("--repo is for the worktree backend, not {kind}")));
        }
        // A repository root's base is its commit; its backend presents the snapshots it is
        // given (a provision layer) above that.
        if kind.is_git() && !req.from.is_empty() {
            return Err(Error::BadInput(format!(
                "--from is for overlay and copy roots, not {kind} (its base is --base-ref)"
            )));
        }
        timings.insert("resolve".into(), elapsed_ms(t0));

        // An overlay root made ahead, if a pool keeps some: its id is the root's.
        // Mounted already when one was mounted ahead exactly as this create would mount it.
        let key = pool::MountKey { snapshots: snapshots.clone(), owner, volatile: !req.durable };
        let mut skeleton = pool.filter(|_| kind == backend::BackendKind::Overlay).and_then(|p| p.take(&key));
        let id = skeleton.as_ref().map_or_else(|| format!("{:016x}", rand::random::<u64>()), |s| s.id.clone());
        let mut spec = RootSpec {
            id: id.clone(),
            dir: self.roots_dir().join(&id),
            cwd: PathBuf::new(),
            snapshots: snapshots.clone(),
            owner,
            durable: req.durable,
            key: req.key.clone(),
            mount_subdirs: mounts.iter().map(|(s, _)| s.as_bytes().to_vec()).collect(),
        };
        let wreq = WorktreeRequest {
            repo: req.repo.clone(),
            base_ref: req.base_ref.clone(),
            branch: req.branch.clone(),
            owner_given,
        };
        let plan = backend::plan(kind, self, &spec, &wreq)?;
        // A git-overlay root lives for days (a branch under review): durable, --mount trees too.
        if matches!(plan.state, backend::BackendState::GitOverlay(_)) {
            spec.durable = true;
        }
        spec.cwd = plan.cwd.clone();
        // The copy and worktree backends write the provision layer into the root's own tree (a
        // copy of it per root, still built once); overlay and git-overlay stack it.
        let copied_in = matches!(plan.state.kind(), backend::BackendKind::Copy | backend::BackendKind::Worktree);
        spec.owner = plan.owner.unwrap_or(owner);
        let mut rec = RootRecord {
            version: STATE_VERSION,
            id: id.clone(),
            key: req.key.clone(),
            class,
            state: State::Creating,
            cwd: plan.cwd,
            snapshots,
            mounts: vec![],
            owner: spec.owner,
            durable: spec.durable,
            backend: plan.state,
            created_at: crate::store::snapshot::now_rfc3339(),
            labels: req.labels.clone(),
            warnings: warnings.into_iter().chain(plan.warnings).collect(),
            request: req.clone(),
            provision: provision.map(|p| provision::ProvisionUse { copied_in, ..p }),
            destroy_began_in: None,
        };
        // Every user who must reach the working directory can, or the root is refused before
        // anything exists: a root its owner cannot enter is no root.
        let reach = access::reachers(&rec, &spec.dir);
        let cwd_parent = rec.cwd.parent().unwrap_or(&rec.cwd);
        for who in &reach {
            access::check_reachable(cwd_parent, *who)?;
        }
        // From here on the root is visible to doctor, pins its snapshots, and records where
        // everything will be: a create killed at any later point is undone from this alone.
        // Its directory is the store owner's, 0700, until opened to the owner below.
        let mut premounted = None;
        let intent = match skeleton.as_mut().map(|s| s.claim(&mut rec, &spec.dir)) {
            Some(Ok(json)) => {
                premounted = skeleton.as_mut().and_then(|s| s.mounted.take());
                json
            }
            claim => {
                if let Some(Err(e)) = claim {
                    tracing::warn!(id = %id, "root skeleton not claimed, making the root's directory: {e}");
                }
                // Unmounted, then removed, before its directory is made anew.
                drop(skeleton.take());
                crate::store::perms::new_dir(&spec.dir, 0o700)?;
                rec.save_creating(self)?
            }
        };
        crate::sys::failpoint::hit("root.create.recorded");
        if let Some(k) = &req.key {
            let idx = self.key_index(k);
            std::fs::write(&idx, format!("{id}\n")).at(&idx)?;
        }
        let t1 = Instant::now();
        let result = (|| -> Result<()> {
            rec.warnings.extend(access::secure_root_dir(self, &spec.dir, &reach)?);
            // Mounts are held until the root is recorded ready: dropped on any error below.
            let made = match premounted.take() {
                // The plan's lower directories are the ones mounted: the mount is the root's.
                Some((lowers, guard)) if matches!(&rec.backend, backend::BackendState::Overlay(o) if o.dirs.lowers == lowers) => {
                    backend::Made { mounts: vec![guard], ..backend::Made::default() }
                }
                other => {
                    if other.is_some() {
                        drop(other);
                        // Mounted once (volatile, it would refuse a second mount): made anew.
                        if let backend::BackendState::Overlay(o) = &rec.backend {
                            std::fs::remove_dir_all(&o.dirs.work).at(&o.dirs.work)?;
                        }
                    }
                    rec.backend.create(self, &spec)?
                }
            };
            let mut guards = made.mounts;
            rec.warnings.extend(made.warnings);
            if let Some(s) = made.snapshots {
                rec.snapshots = s;
            }
            timings.insert("backend".into(), elapsed_ms(t1));
            crate::sys::failpoint::hit("root.create.backend-made");
            let t2 = Instant::now();
            for (i, (sub, snap)) in mounts.iter().enumerate() {
                let (m, guard) = submount::mount(self, &spec, i, sub, *snap)?;
                rec.mounts.push(m);
                guards.push(guard);
            }
            if !mounts.is_empty() {
                timings.insert("mounts".into(), elapsed_ms(t2));
            }
            crate::sys::failpoint::hit("root.create.mounts-made");
            rec.save_ready(self, &intent)?;
            guards.into_iter().for_each(mount::MountGuard::keep);
            Ok(())
        })();
        if let Err(e) = result {
            let _ = self.teardown(&mut rec);
            return Err(e);
        }
        timings.insert("total".into(), elapsed_ms(t0));
        tracing::info!(id = %rec.id, backend = %kind, ms = elapsed_ms(t0), "root created");
        Ok(Created::of(&rec, true, timings))
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
        let spec = rec.spec(self);
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
        // Sub-mounts go first: nothing inspects a tree with foreign mounts in it. Whatever
        // this call takes away it puts back if the destroy does not go on.
        let mut taken = submount::Taken::default();
        match submount::unmount_all(&rec.cwd, &rec.mounts, &mut taken) {
            Ok(()) => {}
            Err(Error::Busy { .. }) => {
                taken.put_back(rec.durable)?;
                return Ok(busy(&rec));
            }
            Err(e) => {
                // Report the first failure.
                let _ = taken.put_back(rec.durable);
                return Err(e);
            }
        }
        let mut warnings = match rec.backend.check_destroy(self, &spec, force) {
            Ok(w) => w,
            Err(e) => {
                taken.put_back(rec.durable)?;
                return Err(e);
            }
        };
        // The intent is recorded before anything is unmounted (a rename: no new data block,
        // so a full disk cannot stop it), so that a destroy killed from here on is finished by
        // doctor rather than taken for a volatile root the system lost.
        let was = rec.state;
        let marked = rec.mark_destroying(self)?;
        crate::sys::failpoint::hit("root.destroy.recorded");
        let mut detached = rec.backend.detach(self, &spec);
        // A commit made in a worktree leaves git's detached maintenance in it for a moment:
        // waited out (only when the root turned out to be busy, so that a destroy of an idle
        // root never scans every process), then judged again (a git that was still running,
        // say a `stash pop`, may have written work the first judgement did not see), then
        // tried once more.
        if matches!(detached, Ok(false)) && rec.backend.repository().is_some() {
            crate::sys::procs::wait_out_git(&rec.cwd, std::time::Duration::from_secs(2));
            detached = match rec.backend.check_destroy(self, &spec, force) {
                Ok(w) => {
                    warnings = w;
                    rec.backend.detach(self, &spec)
                }
                Err(e) => Err(e),
            };
        }
        let detached = match detached {
            Ok(d) => d,
            Err(e) => {
                // Nothing was taken down for good: the root stays as it was.
                if marked {
                    rec.unmark_destroying(self, was)?;
                }
                let _ = taken.put_back(rec.durable);
                return Err(e);
            }
        };
        if !detached {
            if marked {
                rec.unmark_destroying(self, was)?;
            }
            taken.put_back(rec.durable)?;
            return Ok(busy(&rec));
        }
        match self.teardown(&mut rec) {
            Ok(w) => warnings.extend(w),
            Err(e @ Error::Busy { .. }) => {
                warnings.push(e.to_string());
                return Ok(Destroyed { cleaned_path, cleaned: false, warnings });
            }
            Err(e) => return Err(e),
        }
        Ok(Destroyed { cleaned_path, cleaned: true, warnings })
    }

    /// Mark destroying, take every mount away, let the backend tear down, remove the directory
    /// and the key. Idempotent: doctor runs it again on a root killed half way. No step needs a
    /// new data block before space is freed (the mark is a rename), so it works on a full disk.
    pub(crate) fn teardown(&self, rec: &mut RootRecord) -> Result<Vec<String>> {
        if rec.mark_destroying(self)? {
            crate::sys::failpoint::hit("root.destroy.recorded");
        }
        // Sub-mounts wherever the run moved them (see submount::unmount_all).
        submount::unmount_all(&rec.cwd, &rec.mounts, &mut submount::Taken::default())?;
        // Never delete through a mount: whatever is still mounted below the root's directory
        // (or its cwd, for a worktree kept elsewhere) goes first, deepest first, recorded or
        // not (a create killed after mounting a --mount tree but before recording it leaves
        // one on the cwd), and a mount that will not go stops the teardown. One read of
        // mountinfo: it is the costliest step of a destroy.
        let dir = rec.dir(self);
        let mut below = mount::mounts_under(&dir)?;
        if !rec.cwd.as_os_str().is_empty() && !rec.cwd.starts_with(&dir) {
            below.extend(mount::mounts_under(&rec.cwd)?);
        }
        for m in below {
            if mount::unmount(&m.target)? == Unmounted::Busy {
                return Err(Error::Busy { path: m.target.clone() });
            }
        }
        let warnings = rec.backend.destroy(self, &rec.spec(self))?;
        crate::sys::failpoint::hit("root.destroy.backend-done");
        remove_root_dir(&dir)?;
        if let Some(k) = &rec.key {
            let idx = self.key_index(k);
            if std::fs::read_to_string(&idx).is_ok_and(|s| s.trim() == rec.id) {
                let _ = std::fs::remove_file(&idx);
            }
        }
        let mut warnings = warnings;
        // The root is gone: idmapped views that no other root uses go too. The root is
        // destroyed whatever happens here; what is left doctor releases later.
        let views = self.idmap_dir();
        let owner_dirs: BTreeSet<PathBuf> =
            rec.lowers().filter(|l| l.starts_with(&views)).filter_map(|l| l.parent().map(Path::to_path_buf)).collect();
        for d in owner_dirs {
            if let Err(e) = self.release_unused_views(&d, false) {
                warnings.push(format!("idmapped views in {} kept: {e}", d.display()));
            }
        }
        Ok(warnings)
    }

    /// Unmount and remove the idmapped views in `owner_dir` (`idmap/<uid>-<gid>`) that no
    /// root's record lists among its lowers; with `dry_run`, only say which. Under that owner's
    /// views lock, which every maker of a view takes ([`crate::sys::idmap::ensure_view`]), and
    /// keeping every view while a root of that owner is `creating` (its lowers are recorded
    /// only once it is mounted) or any root's state cannot be read (fail closed): so a create
    /// never loses a view between making it and mounting its overlay. A view that is busy is
    /// kept. Needs no new data block. Returns the views released (or that would be).
    pub(crate) fn release_unused_views(&self, owner_dir: &Path, dry_run: bool) -> Result<Vec<PathBuf>> {
        let _lock = FileLock::acquire(&owner_dir.with_extension("lock"), true)?;
        let scan = self.scan_roots()?;
        let views = self.idmap_dir();
        let in_flight = scan
            .roots
            .iter()
            .any(|r| r.state == State::Creating && views.join(format!("{}-{}", r.owner.uid, r.owner.gid)) == owner_dir);
        if in_flight || !scan.unreadable.is_empty() {
            return Ok(vec![]);
        }
        let used: BTreeSet<&Path> = scan.roots.iter().flat_map(RootRecord::lowers).collect();
        let rd = match std::fs::read_dir(owner_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(Error::io(owner_dir, e)),
        };
        let mounted: BTreeSet<PathBuf> = mount::mounts_under(owner_dir)?.into_iter().map(|m| m.target).collect();
        let mut released = Vec::new();
        for ent in rd {
            let view = ent.at(owner_dir)?.path();
            if used.contains(view.as_path()) {
                continue;
            }
            if dry_run {
                released.push(view);
                continue;
            }
            if mounted.contains(&view) && mount::unmount(&view)? == Unmounted::Busy {
                continue;
            }
            match std::fs::remove_dir(&view) {
                Ok(()) => released.push(view),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&view, e)),
            }
        }
        Ok(released)
    }
}

/// Remove a root's directory with its record (`state.json`, [`record::DESTROYING_FILE`] or [`record::CREATING_FILE`]) last,
/// so that a crash part way leaves either a record doctor acts on or an empty directory, never
/// files without a record.
fn remove_root_dir(dir: &Path) -> Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for e in rd {
        let e = e.at(dir)?;
        if e.file_name() == "state.json"
            || e.file_name() == record::DESTROYING_FILE
            || e.file_name() == record::CREATING_FILE
        {
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
    crate::sys::failpoint::hit("root.destroy.files-removed");
    for name in ["state.json", record::DESTROYING_FILE, record::CREATING_FILE] {
        let state = dir.join(name);
        match std::fs::remove_file(&state) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&state, e)),
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}
