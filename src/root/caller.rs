//! Who asks, and what they may do: the authorization rules of the service (docs/api.md,
//! "Who may do what"), kept here so that every front end that serves other users applies the
//! same ones. A caller is identified by the kernel (the service reads `SO_PEERCRED` of the
//! connection), never by what a request says.
//!
//! A *privileged* caller (uid 0, or the store's owner) may do everything the CLI may. Any
//! other caller owns the roots it creates (its uid, whatever `owner` says: another owner is
//! refused) and sees and acts only on its own roots: another user's root is "not found", so
//! that its existence is not revealed. What needs the rules of refs (who set a ref, shared
//! refs) or the caller's own file permissions is refused to it ([`Error::Forbidden`]) until
//! the store records them: using snapshots (`from`, `mounts`), naming a ref, ingest and export
//! of paths, `gc`, `doctor` and `df`.

use std::os::unix::fs::MetadataExt;

use crate::error::{Error, Result};
use crate::root::{CreateRequest, Created, RootList, RootListEntry, RootRecord};
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

    /// [`Store::create_root`] for `caller`. A non-privileged caller's root is its own (`owner`
    /// absent or naming its uid, which is then recorded), is made from no snapshot (snapshot
    /// use needs ref ownership, not recorded yet), and a worktree root's repository must be the
    /// caller's own (git runs as the repository's owner). A key held by another user's root is
    /// a conflict that names no root.
    pub fn create_root_for(&self, caller: &Caller, req: &CreateRequest) -> Result<Created> {
        if caller.privileged(self)? {
            return self.create_root(req);
        }
        let mut req = req.clone();
        if let Some(o) = &req.owner {
            let owner = crate::sys::Owner::parse(o)?;
            if owner.uid != caller.uid {
                return Err(Error::Forbidden(format!(
                    "owner {o:?}: a caller's roots are its own (uid {})",
                    caller.uid
                )));
            }
        }
        req.owner = Some(caller.uid.to_string());
        if !req.from.is_empty() || !req.mounts.is_empty() {
            return Err(Error::Forbidden(
                "from, mounts: snapshots are root's and the store owner's until refs record who set them".into(),
            ));
        }
        if let Some(repo) = &req.repo {
            // Read as the service (root), but only to refuse: git never runs for a caller in a
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
        self.create_root_checked(&req, &|rec: &RootRecord| rec.owner.uid == uid)
    }
}

impl Store {
    /// [`Store::commit_root`] for `caller`: its own roots; naming a ref is privileged (refs do
    /// not record who set them yet).
    pub fn commit_root_for(
        &self,
        caller: &Caller,
        id_or_key: &str,
        name: Option<String>,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<crate::root::commit::Committed> {
        let rec = self.find_root_for(caller, id_or_key)?;
        if name.is_some() {
            caller.require_privileged(self, "name (setting a ref)")?;
        }
        self.commit_root(&rec.id, name, labels)
    }

    /// [`Store::export_root`] for `caller`: its own roots; an export to a directory is
    /// privileged (it would write as the service, not with the caller's permissions), a tar
    /// stream is not.
    pub fn export_root_for(
        &self,
        caller: &Caller,
        id_or_key: &str,
        dest: Option<&std::path::Path>,
        changed_only: bool,
        out: &mut dyn std::io::Write,
    ) -> Result<crate::root::export::ExportReport> {
        let rec = self.find_root_for(caller, id_or_key)?;
        if dest.is_some() {
            caller.require_privileged(self, "dest (export to a directory)")?;
        }
        self.export_root(&rec.id, dest, changed_only, out)
    }
}
