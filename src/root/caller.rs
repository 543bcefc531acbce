//! Who asks, and what they may do: the authorization rules of the service (docs/api.md,
//! "Who may do what"), kept here so that every front end that serves other users applies the
//! same ones. A caller is identified by the kernel (the service reads `SO_PEERCRED` of the
//! connection), never by what a request says.
//!
//! A *privileged* caller (uid 0, or the store's owner) may do everything the CLI may. Any
//! other caller:
//! - owns the roots it creates (its uid; another `owner` is refused) and sees and acts only on
//!   its own roots: another user's root is "not found", so that its existence is not revealed;
//! - uses (creates roots from, lists, shows) only the snapshots reachable from its own refs and
//!   from shared refs (store/refs.rs, [`RefMeta`]); others are "not found";
//! - sets only refs that are free or its own, never shared ones;
//! - reads and writes the paths it names with its own permissions: ingest of a directory and
//!   export to one run on a thread that has become the caller (store/ingest_as.rs,
//!   root/export_as.rs), and a worktree root's repository must be its own (git runs as the
//!   repository's owner);
//! - may not remove snapshots, run gc, doctor or df (store-wide).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::root::commit::Committed;
use crate::root::export::ExportReport;
use crate::root::{CreateRequest, Created, RootList, RootListEntry, RootRecord};
use crate::store::ingest::{IngestOptions, IngestReport, NoProgress};
use crate::store::refs::RefMeta;
use crate::store::snapshot::{SnapshotInfo, SnapshotList, SnapshotListEntry};
use crate::sys::Owner;
use crate::Store;

/// A caller as the kernel names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl Caller {
    /// Whether the caller may do everything the store's owner may: it is root or the owner.
    pub fn privileged(&self, store: &Store) -> Result<bool> {
        Ok(self.uid == 0 || self.uid == store.owner()?.uid)
    }

    /// Refuse a non-privileged caller, saying what it may not do and why.
    pub fn require_privileged(&self, store: &Store, what: &str) -> Result<()> {
        if self.privileged(store)? {
            return Ok(());
        }
        Err(Error::Forbidden(format!("{what}: only root or the store's owner may (uid {} asked)", self.uid)))
    }

    /// Whether the caller may see and act on `rec`.
    pub fn may_use(&self, store: &Store, rec: &RootRecord) -> Result<bool> {
        Ok(rec.owner.uid == self.uid || self.privileged(store)?)
    }

    /// The caller as an owner of files, with the groups its passwd entry gives.
    fn owner(&self) -> (Owner, Vec<u32>) {
        let o = Owner { uid: self.uid, gid: self.gid };
        (o, o.groups())
    }
}

fn not_found(spec: &str) -> Error {
    Error::NotFound(format!("no snapshot or ref named {spec:?}"))
}

impl Store {
    /// [`Store::find_root`] for `caller`: another user's root is not found.
    pub fn find_root_for(&self, caller: &Caller, id_or_key: &str) -> Result<RootRecord> {
        let rec = self.find_root(id_or_key)?;
        if caller.may_use(self, &rec)? {
            return Ok(rec);
        }
        Err(Error::NotFound(format!("no root with id or key {id_or_key:?}")))
    }

    /// [`Store::list_roots`] for `caller`: its own roots; a privileged caller's list is the
    /// whole list (unreadable roots included, which only it can act on).
    pub fn list_roots_for(&self, caller: &Caller) -> Result<RootList> {
        let mut list = self.list_roots()?;
        if !caller.privileged(self)? {
            list.roots.retain(|e| matches!(e, RootListEntry::Root(v) if v.owner.uid == caller.uid));
        }
        Ok(list)
    }

    /// The snapshots `caller` may use: `None` for all (privileged), else those reachable from
    /// its own refs and from shared refs.
    pub fn usable_snapshots(&self, caller: &Caller) -> Result<Option<BTreeSet<Hash>>> {
        if caller.privileged(self)? {
            return Ok(None);
        }
        let mut tops = Vec::new();
        for (name, id) in self.list_refs()? {
            let m = self.ref_meta(&name)?;
            if m.shared || m.uid == caller.uid {
                tops.push(id);
            }
        }
        Ok(Some(self.closure(tops)?))
    }

    /// [`Store::resolve`] for `caller`: a ref, full id or id prefix among the snapshots it may
    /// use; any other is not found (and an ambiguous prefix lists only those).
    pub fn resolve_for(&self, caller: &Caller, spec: &str) -> Result<Hash> {
        let Some(usable) = self.usable_snapshots(caller)? else { return self.resolve(spec) };
        if let Ok(h) = Hash::from_hex(spec) {
            return if usable.contains(&h) { Ok(h) } else { Err(not_found(spec)) };
        }
        if crate::store::refs::validate_name(spec).is_ok() {
            if let Some(h) = self.get_ref(spec)? {
                return if usable.contains(&h) { Ok(h) } else { Err(not_found(spec)) };
            }
        }
        let matches: Vec<&Hash> = usable.iter().filter(|h| spec.len() >= 4 && h.to_hex().starts_with(spec)).collect();
        match matches[..] {
            [h] => Ok(*h),
            [] => Err(not_found(spec)),
            _ => Err(Error::BadInput(format!("snapshot prefix {spec:?} is ambiguous"))),
        }
    }

    /// `snapshot list` for `caller`: the snapshots it may use.
    pub fn snapshot_list_for(&self, caller: &Caller) -> Result<SnapshotList> {
        let mut list = self.snapshot_list()?;
        if let Some(usable) = self.usable_snapshots(caller)? {
            list.snapshots.retain(|e| match e {
                SnapshotListEntry::Snapshot(i) => usable.contains(&i.id),
                SnapshotListEntry::Damaged { .. } => false,
            });
        }
        Ok(list)
    }

    /// `snapshot show` for `caller`.
    pub fn snapshot_info_for(&self, caller: &Caller, spec: &str, entries: bool) -> Result<SnapshotInfo> {
        let id = self.resolve_for(caller, spec)?;
        self.snapshot_info(&id, entries)
    }

    /// Point ref `name` at `id` for `caller`, recording who set it. A non-privileged caller
    /// sets only a free ref or its own, never a shared one. Under the ref's lock, so that two
    /// callers cannot both take a free name.
    pub fn set_ref_for(&self, caller: &Caller, name: &str, id: &Hash, shared: bool) -> Result<()> {
        crate::store::refs::validate_name(name)?;
        let _lock = self.named_lock(&format!("ref-{name}"))?;
        if !caller.privileged(self)? {
            if shared {
                caller.require_privileged(self, "shared (a shared ref)")?;
            }
            if self.get_ref(name)?.is_some() && self.ref_meta(name)?.uid != caller.uid {
                return Err(Error::Conflict(format!("ref {name:?} is another user's")));
            }
        }
        self.set_ref_with(name, id, RefMeta { uid: caller.uid, shared })
    }

    /// Ingest directory `dir` for `caller` (as the caller reads it, unless privileged) and set
    /// `opts.name` (shared when `shared`) for it.
    pub fn ingest_dir_for(
        &self,
        caller: &Caller,
        dir: &Path,
        opts: &IngestOptions,
        shared: bool,
    ) -> Result<IngestReport> {
        self.ingest_for(caller, opts, shared, |store, opts| {
            if caller.privileged(store)? {
                store.ingest_dir(dir, opts, &NoProgress)
            } else {
                let (who, groups) = caller.owner();
                store.ingest_dir_as(who, groups, dir, opts)
            }
        })
    }

    /// Ingest the tar archive `input` for `caller` and set `opts.name` (shared when `shared`).
    pub fn ingest_tar_for(
        &self,
        caller: &Caller,
        input: impl std::io::Read,
        source: &str,
        opts: &IngestOptions,
        shared: bool,
    ) -> Result<IngestReport> {
        self.ingest_for(caller, opts, shared, |store, opts| store.ingest_tar(input, source, opts, &NoProgress))
    }

    /// The ref rules around an ingest: checked before (so nothing is ingested for a name the
    /// caller may not set), set after, by [`Store::set_ref_for`].
    fn ingest_for(
        &self,
        caller: &Caller,
        opts: &IngestOptions,
        shared: bool,
        ingest: impl FnOnce(&Store, &IngestOptions) -> Result<IngestReport>,
    ) -> Result<IngestReport> {
        let name = opts.name.clone();
        if let Some(n) = &name {
            self.check_ref_free_for(caller, n, shared)?;
        } else if shared {
            return Err(Error::BadInput("shared: needs a name".into()));
        }
        let mut report = ingest(self, &IngestOptions { name: None, ..opts.clone() })?;
        if let Some(n) = name {
            self.set_ref_for(caller, &n, &report.id, shared)?;
            report.name = Some(n);
        }
        Ok(report)
    }

    fn check_ref_free_for(&self, caller: &Caller, name: &str, shared: bool) -> Result<()> {
        crate::store::refs::validate_name(name)?;
        if caller.privileged(self)? {
            return Ok(());
        }
        if shared {
            caller.require_privileged(self, "shared (a shared ref)")?;
        }
        if self.get_ref(name)?.is_some() && self.ref_meta(name)?.uid != caller.uid {
            return Err(Error::Conflict(format!("ref {name:?} is another user's")));
        }
        Ok(())
    }

    /// [`Store::create_root`] for `caller`. A non-privileged caller's root is its own (`owner`
    /// absent or naming its uid, which is then recorded), made from snapshots it may use, and a
    /// worktree root's repository must be the caller's own (git runs as the repository's
    /// owner). A key held by another user's root is a conflict that names no root.
    pub fn create_root_for(&self, caller: &Caller, req: &CreateRequest) -> Result<Created> {
        self.create_root_for_in(caller, req, None)
    }

    /// [`Store::create_root_for`], an overlay root taking its directories from `pool` when it
    /// has some ready ([`crate::root::pool`]).
    pub fn create_root_for_in(
        &self,
        caller: &Caller,
        req: &CreateRequest,
        pool: Option<&crate::root::pool::RootPool>,
    ) -> Result<Created> {
        if caller.privileged(self)? {
            return self.create_root_checked(req, &|_| true, pool);
        }
        let mut req = req.clone();
        if let Some(o) = &req.owner {
            let owner = Owner::parse(o)?;
            if owner.uid != caller.uid {
                return Err(Error::Forbidden(format!(
                    "owner {o:?}: a caller's roots are its own (uid {})",
                    caller.uid
                )));
            }
        }
        req.owner = Some(caller.uid.to_string());
        if req.provision.as_ref().is_some_and(|p| !p.env.is_empty()) {
            // The values would be the service's own environment's.
            return Err(Error::Forbidden(
                "provision.env: only a privileged caller may pass the service's variables".into(),
            ));
        }
        for spec in &req.from {
            self.resolve_for(caller, spec)?;
        }
        for m in &req.mounts {
            if let Some((_, spec)) = m.split_once('=') {
                self.resolve_for(caller, spec)?;
            }
        }
        if let Some(repo) = &req.repo {
            // Read as the service, but only to refuse: git never runs for a caller in a
            // repository it does not own.
            let owned = std::fs::metadata(repo).map(|m| m.uid() == caller.uid).unwrap_or(false);
            if !owned {
                return Err(Error::Forbidden(format!(
                    "repo {}: not a repository of uid {} (git runs as the repository's owner)",
                    repo.display(),
                    caller.uid
                )));
            }
        }
        let uid = caller.uid;
        self.create_root_checked(&req, &|rec: &RootRecord| rec.owner.uid == uid, pool)
    }

    /// [`Store::commit_root`] for `caller`: its own roots; `name` under the rules of
    /// [`Store::set_ref_for`].
    pub fn commit_root_for(
        &self,
        caller: &Caller,
        id_or_key: &str,
        name: Option<String>,
        labels: BTreeMap<String, String>,
    ) -> Result<Committed> {
        let rec = self.find_root_for(caller, id_or_key)?;
        if let Some(n) = &name {
            self.check_ref_free_for(caller, n, false)?;
        }
        let mut c = self.commit_root(&rec.id, None, labels)?;
        if let Some(n) = name {
            self.set_ref_for(caller, &n, &c.report.id, false)?;
            c.report.name = Some(n);
        }
        Ok(c)
    }

    /// [`Store::export_root`] for `caller`: its own roots; to a directory, written with the
    /// caller's permissions unless privileged; as a tar stream to `out` when `dest` is `None`.
    pub fn export_root_for(
        &self,
        caller: &Caller,
        id_or_key: &str,
        dest: Option<&Path>,
        changed_only: bool,
        out: &mut dyn std::io::Write,
    ) -> Result<ExportReport> {
        let rec = self.find_root_for(caller, id_or_key)?;
        match dest {
            Some(d) if !caller.privileged(self)? => {
                let (who, groups) = caller.owner();
                self.export_root_as(who, groups, &rec.id, d, changed_only)
            }
            _ => self.export_root(&rec.id, dest, changed_only, out),
        }
    }
}
