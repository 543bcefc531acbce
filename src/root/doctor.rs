//! doctor: find and (with `repair`) fix what a crash or reboot left behind. Idempotent.
//!
//! - roots stuck in `creating` are undone, roots stuck in `destroying` are finished (a worktree
//!   is re-checked for uncommitted work first, and left alone if it has any);
//! - `ready` roots whose mounts are gone are remounted, or discarded (and said so) when they
//!   were volatile and the kernel will not remount their upper directory;
//! - mounts under the store that no root owns are unmounted;
//! - empty root directories (a create killed before its first state write), key index entries
//!   naming no root, leases of dead processes, and per-name lock files of earlier releases
//!   that nobody holds are removed;
//! - store entries whose modes or owner are wider than docs/format.md's table, and root
//!   directories not closed to all but their owner, are reported as `unsafe-mode` and fixed
//!   (chmod, chown, ACL): the migration of stores made before the table;
//! - a root whose state cannot be read (garbage, a torn write, a newer format version) is
//!   reported as `unreadable-state` and never unmounted or removed: only the explicit
//!   [`Store::discard_unreadable`] does that, after a human decision.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;

use super::{access, RootRecord, State};
use crate::backend::{rescue_ref, submount, Interrupted};
use crate::error::{Error, Result};
use crate::sys::mount;
use crate::Store;

/// What kind of thing doctor found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// A root left `creating`: the create is undone.
    StuckCreating,
    /// A root left `destroying`: the destroy is finished (a worktree is re-checked first).
    StuckDestroying,
    /// A `ready` root whose mounts are gone: remounted.
    NotMounted,
    /// A volatile root the kernel will not remount: discarded, and said so.
    VolatileLost,
    /// A root whose state cannot be read: kept untouched.
    UnreadableState,
    /// A mount under the store that no root owns: unmounted.
    StrayMount,
    /// An empty root directory: removed.
    OrphanDirectory,
    /// A key index entry naming no root: removed.
    StaleKey,
    /// Leases of dead processes: removed.
    DeadLease,
    /// Per-name lock files of an earlier release, which nobody holds: removed.
    OldLock,
    /// A store entry or root directory whose mode, owner or ACL is not docs/format.md's: fixed.
    UnsafeMode,
    /// The `ready` temporary root of a provision build that is no longer running: destroyed.
    DeadProvisionBuild,
    /// A git worktree root whose worktree its repository no longer lists (removed or pruned
    /// with git's own commands), or whose repository is gone: the files found nowhere else
    /// are kept as snapshot `rescued-<id>`, then the root is removed (its branch kept if it
    /// holds commits found nowhere else).
    WorktreeGone,
}

impl FindingKind {
    /// The name used in JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::StuckCreating => "stuck-creating",
            FindingKind::StuckDestroying => "stuck-destroying",
            FindingKind::NotMounted => "not-mounted",
            FindingKind::VolatileLost => "volatile-lost",
            FindingKind::UnreadableState => "unreadable-state",
            FindingKind::StrayMount => "stray-mount",
            FindingKind::OrphanDirectory => "orphan-directory",
            FindingKind::StaleKey => "stale-key",
            FindingKind::DeadLease => "dead-lease",
            FindingKind::OldLock => "old-lock",
            FindingKind::UnsafeMode => "unsafe-mode",
            FindingKind::DeadProvisionBuild => "dead-provision-build",
            FindingKind::WorktreeGone => "worktree-gone",
        }
    }
}

/// One thing doctor found.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// What kind of problem.
    pub kind: FindingKind,
    /// The root concerned, if any.
    pub root: Option<String>,
    /// The path concerned.
    pub path: PathBuf,
    /// What was done (or would be done without `--repair`).
    pub action: String,
    /// Whether it was fixed by this run.
    pub repaired: bool,
}

/// What doctor found and did.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DoctorReport {
    /// Nothing left to fix.
    pub ok: bool,
    /// Whether `--repair` was given.
    pub repair: bool,
    /// Everything found.
    pub findings: Vec<Finding>,
}

impl Store {
    /// Run doctor; with `repair`, fix what it finds.
    pub fn doctor(&self, repair: bool) -> Result<DoctorReport> {
        let mut findings = Vec::new();
        let mut owned: BTreeSet<PathBuf> = BTreeSet::new();
        let mut known_ids = BTreeSet::new();
        let mut note = |kind, root: Option<&str>, path: PathBuf, action: String, res: Option<Result<()>>| {
            let (repaired, action) = match res {
                None => (false, action),
                Some(Ok(())) => (true, action),
                Some(Err(e)) => (false, format!("{action} failed: {e}")),
            };
            findings.push(Finding { kind, root: root.map(str::to_string), path, action, repaired });
        };

        // A provision build killed while its temporary root was ready: the root is only
        // scaffolding (nothing was cached), so it goes rather than being remounted.
        for (rec, _lock) in self.dead_build_roots()? {
            let res = repair.then(|| match self.destroy_build_root(&rec) {
                Ok(d) if d.cleaned => Ok(()),
                Ok(d) => Err(Error::Conflict(d.warnings.join("; "))),
                Err(e) => Err(e),
            });
            let verb = if matches!(res, Some(Ok(()))) { "destroyed" } else { "destroy" };
            note(
                FindingKind::DeadProvisionBuild,
                Some(&rec.id),
                rec.cwd.clone(),
                format!("{verb} the temporary root of a provision build that is not running"),
                res,
            );
        }
        let scan = self.scan_roots()?;
        // Checked for their modes once the lifecycle repairs below are done.
        let readable: Vec<RootRecord> = scan.roots.clone();
        // A root whose state cannot be read is never unmounted or removed: its mounts and
        // directory are kept, whatever is below them (only --discard-unreadable may act).
        let mut protected: Vec<PathBuf> = Vec::new();
        for u in &scan.unreadable {
            let dir = self.roots_dir().join(&u.id);
            protected.push(dir.clone());
            known_ids.insert(u.id.clone());
            note(
                FindingKind::UnreadableState,
                Some(&u.id),
                dir,
                format!("kept untouched ({}); check it, then `execroot doctor --discard-unreadable {}`", u.error, u.id),
                None,
            );
        }
        for dir in &scan.empty {
            let res = repair.then(|| remove_empty_dir(dir));
            note(FindingKind::OrphanDirectory, None, dir.clone(), "remove the empty directory (no state)".into(), res);
        }
        for rec in scan.roots {
            known_ids.insert(rec.id.clone());
            match rec.state {
                State::Creating | State::Destroying => {
                    let kind = if rec.state == State::Creating {
                        FindingKind::StuckCreating
                    } else {
                        FindingKind::StuckDestroying
                    };
                    let res = repair.then(|| self.finish_teardown(rec.clone()));
                    if matches!(res, Some(Err(_))) {
                        // A refused teardown keeps the root as it is, its mounts too (a
                        // git-overlay worktree's files are seen only through its mount).
                        protected.push(rec.dir(self));
                    }
                    // Say what was done when it was done, what would be done otherwise.
                    let verb = match (rec.state == State::Creating, matches!(res, Some(Ok(())))) {
                        (true, true) => "undid the interrupted create",
                        (true, false) => "undo the interrupted create",
                        (false, true) => "finished the interrupted destroy",
                        (false, false) => "finish the interrupted destroy",
                    };
                    note(kind, Some(&rec.id), rec.cwd.clone(), verb.into(), res);
                }
                State::Ready => {
                    // Before liveness: a worktree git removed is not brought back, and its
                    // mount (if still there) is not a stray.
                    let why = match rec.backend.gone(self, &rec.spec(self)) {
                        Ok(w) => w,
                        Err(e) => {
                            protected.push(rec.dir(self));
                            let what = "tell whether git still knows the worktree".to_string();
                            note(FindingKind::WorktreeGone, Some(&rec.id), rec.cwd.clone(), what, Some(Err(e)));
                            continue;
                        }
                    };
                    if let Some(why) = why {
                        if !repair {
                            owned.insert(rec.cwd.clone());
                            owned.extend(submount::where_mounted(&rec.cwd, &rec.mounts)?.into_iter().flatten());
                            let what = format!(
                                "{why}: remove the root, keeping the files found nowhere else as snapshot {}",
                                rescue_ref(&rec.id)
                            );
                            note(FindingKind::WorktreeGone, Some(&rec.id), rec.cwd.clone(), what, None);
                            continue;
                        }
                        // A missing repository may only be absent for now (its filesystem
                        // not mounted yet when the service starts at boot): fail closed, keep
                        // the root and let a human destroy it.
                        if rec.backend.repository().is_some_and(|r| {
                            matches!(std::fs::symlink_metadata(r), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
                        }) {
                            owned.insert(rec.cwd.clone());
                            owned.extend(submount::where_mounted(&rec.cwd, &rec.mounts)?.into_iter().flatten());
                            protected.push(rec.dir(self));
                            let what = format!(
                                "{why}: kept, since a repository on a filesystem not mounted yet looks the same; \
                                 once it is gone for good, `execroot root export {id} DIR` keeps its files and \
                                 `execroot root destroy --force {id}` removes it",
                                id = rec.id
                            );
                            note(FindingKind::WorktreeGone, Some(&rec.id), rec.cwd.clone(), what, None);
                            continue;
                        }
                        let (action, res) = match self.discard_gone(rec.clone()) {
                            Ok(done) => (format!("{why}: {done}"), Ok(())),
                            Err(e) => {
                                protected.push(rec.dir(self));
                                (format!("{why}: remove the root"), Err(e))
                            }
                        };
                        note(FindingKind::WorktreeGone, Some(&rec.id), rec.cwd.clone(), action, Some(res));
                        continue;
                    }
                    let live = rec.backend.is_live(self, &rec.spec(self))?;
                    // Where each sub-mount is now (a run may have moved one by renaming a
                    // parent): found by its upper directory, not at its recorded path.
                    let at = submount::where_mounted(&rec.cwd, &rec.mounts)?;
                    if live && at.iter().all(Option::is_some) {
                        owned.insert(rec.cwd.clone());
                        owned.extend(at.into_iter().flatten());
                        continue;
                    }
                    if !repair {
                        note(FindingKind::NotMounted, Some(&rec.id), rec.cwd.clone(), "remount".into(), None);
                        continue;
                    }
                    match self.revive_root(rec.clone()) {
                        Ok(()) => {
                            owned.insert(rec.cwd.clone());
                            owned.extend(submount::where_mounted(&rec.cwd, &rec.mounts)?.into_iter().flatten());
                            note(
                                FindingKind::NotMounted,
                                Some(&rec.id),
                                rec.cwd.clone(),
                                "remounted".into(),
                                Some(Ok(())),
                            );
                        }
                        // Only a volatile upper the kernel refuses is discarded: any other
                        // failure (busy, git, I/O) leaves the root for the next run.
                        Err(Error::VolatileLost(why)) => {
                            let res = self.finish_teardown(rec.clone());
                            let verb = if res.is_ok() { "discarded" } else { "discard" };
                            note(
                                FindingKind::VolatileLost,
                                Some(&rec.id),
                                rec.cwd.clone(),
                                format!("{verb} the root ({why})"),
                                Some(res),
                            );
                        }
                        Err(e) => {
                            // What revive took away (sub-mounts) stays for a human to see.
                            protected.push(rec.dir(self));
                            note(
                                FindingKind::NotMounted,
                                Some(&rec.id),
                                rec.cwd.clone(),
                                "remount".into(),
                                Some(Err(e)),
                            )
                        }
                    }
                }
            }
        }

        let shared_views = self.idmap_dir();
        for m in mount::mounts_under(self.path())? {
            // Idmapped layer views are shared by all roots of an owner and made on demand.
            // The store itself may be a mount point (a filesystem of its own): not a stray.
            if m.target == self.path()
                || owned.contains(&m.target)
                || m.target.starts_with(&shared_views)
                || protected.iter().any(|p| m.target.starts_with(p))
                // A running service's roots mounted ahead (root::pool); a dead lease's go with it.
                || crate::store::lock::in_live_lease(self, &m.target)
            {
                continue;
            }
            // A mount still present under a root being repaired was handled above.
            if !repair {
                note(FindingKind::StrayMount, None, m.target.clone(), "unmount".into(), None);
                continue;
            }
            if !m.target.exists() && !mount::is_mounted(&m.target)? {
                continue;
            }
            let res = match mount::unmount(&m.target) {
                Ok(mount::Unmounted::Busy) => Err(Error::Busy { path: m.target.clone() }),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            note(FindingKind::StrayMount, None, m.target.clone(), "unmount".into(), Some(res));
        }

        // Idmapped views no root uses (a destroy killed after removing its root, or an
        // earlier release, which never unmounted them).
        if let Ok(rd) = std::fs::read_dir(&shared_views) {
            for ent in rd.flatten() {
                if !ent.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let dir = ent.path();
                if repair {
                    match self.release_unused_views(&dir, false) {
                        Ok(gone) => {
                            for v in gone {
                                let what = "unmounted the idmapped view no root uses".to_string();
                                note(FindingKind::StrayMount, None, v, what, Some(Ok(())));
                            }
                        }
                        Err(e) => note(
                            FindingKind::StrayMount,
                            None,
                            dir,
                            "release unused idmapped views".into(),
                            Some(Err(e)),
                        ),
                    }
                } else {
                    for v in self.release_unused_views(&dir, true)? {
                        note(FindingKind::StrayMount, None, v, "unmount the idmapped view no root uses".into(), None);
                    }
                }
            }
        }

        let keys = self.keys_dir();
        let rd = match std::fs::read_dir(&keys) {
            Ok(rd) => Some(rd),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&keys, e)),
        };
        for ent in rd.into_iter().flatten() {
            let ent = ent.map_err(|e| Error::io(&keys, e))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.ends_with(".lock") {
                continue;
            }
            // A key index entry is stale only when it names, readably, no root at all.
            let target = match std::fs::read_to_string(ent.path()) {
                Ok(t) => t.trim().to_string(),
                Err(e) => {
                    note(FindingKind::StaleKey, None, ent.path(), format!("kept: cannot read it: {e}"), None);
                    continue;
                }
            };
            if known_ids.contains(&target) {
                continue;
            }
            if let Err(Error::NotFound(_)) = self.load_root(&target) {
                let res = repair.then(|| std::fs::remove_file(ent.path()).map_err(|e| Error::io(ent.path(), e)));
                note(FindingKind::StaleKey, None, ent.path(), "remove the key index entry".into(), res);
            }
        }

        for e in self.unsafe_entries()? {
            let res = repair.then(|| self.fix_entry(&e));
            let action = format!("{}: {}", e.describe(), e.remedy());
            note(FindingKind::UnsafeMode, None, e.path.clone(), action, res);
        }
        for rec in &readable {
            let dir = rec.dir(self);
            if !dir.is_dir() {
                continue;
            }
            let reach = access::reachers(rec, &dir);
            if let Some(why) = access::root_dir_problem(self, &dir, &reach)? {
                let mut action = format!("{why}: close it to all but the store owner and the root's owner");
                let res = repair.then(|| {
                    // Where the filesystem has no ACLs, say what the group fallback exposes.
                    access::secure_root_dir(self, &dir, &reach).map(|w| {
                        if let Some(w) = w {
                            action = format!("{action} ({w})");
                        }
                    })
                });
                note(FindingKind::UnsafeMode, Some(&rec.id), dir, action, res);
            }
        }

        if repair {
            let n = crate::store::lock::sweep_dead_leases(self)?;
            if n > 0 {
                note(FindingKind::DeadLease, None, self.tmp_dir(), format!("removed {n} dead lease(s)"), Some(Ok(())));
            }
            let n = crate::store::lock::remove_old_lock_files(self)?;
            if n > 0 {
                let what = format!("removed {n} per-name lock file(s) of an earlier release");
                note(FindingKind::OldLock, None, self.path().to_path_buf(), what, Some(Ok(())));
            }
        }
        let ok = findings.iter().all(|f| f.repaired);
        Ok(DoctorReport { ok, repair, findings })
    }

    /// Finish tearing a root down (undoing a create, finishing a destroy, or discarding a lost
    /// volatile root); whatever the backend's re-check cannot account for (a worktree's files
    /// that are not git's) is kept and named in the error.
    fn finish_teardown(&self, mut rec: RootRecord) -> Result<()> {
        // A busy sub-mount is found again, and stops the teardown, below.
        let _ = submount::unmount_all(&rec.cwd, &rec.mounts, &mut submount::Taken::default());
        let spec = rec.spec(self);
        match rec.state {
            // A create, or the undo of one (`destroying` begun in `creating`): what is there
            // was never handed out.
            State::Creating => rec.backend.check_interrupted(self, &spec, Interrupted::Create)?,
            State::Destroying if rec.destroy_began_in == Some(State::Creating) => {
                rec.backend.check_interrupted(self, &spec, Interrupted::Create)?
            }
            // A destroy records `destroying` only once its check passed.
            State::Destroying => rec.backend.check_interrupted(self, &spec, Interrupted::Destroy)?,
            // A ready root (volatile, lost): the ordinary check.
            State::Ready => rec.backend.check_destroy(self, &spec, false)?,
        };
        self.teardown(&mut rec).map(|_| ())
    }

    /// Remove a root whose worktree is gone behind execroot's back: first keep what it holds
    /// that is found nowhere else as a snapshot (nothing is torn down if that fails), then tear
    /// it down as a destroy would. Says what was done.
    fn discard_gone(&self, mut rec: RootRecord) -> Result<String> {
        let spec = rec.spec(self);
        let rescued = rec.backend.rescue(self, &spec)?;
        let warnings = self.teardown(&mut rec)?;
        let mut done = match rescued {
            Some(r) => format!(
                "removed the root; kept {} file(s) found nowhere else as snapshot {} ({}): {}",
                r.paths.len(),
                r.name,
                r.snapshot,
                r.paths.iter().take(50).cloned().collect::<Vec<_>>().join(", ")
            ),
            None => "removed the root; it held nothing that is not committed".to_string(),
        };
        for w in warnings {
            done.push_str(&format!("; {w}"));
        }
        Ok(done)
    }

    /// Remove the directory of an unreadable root after a human has decided so: unmount what
    /// is mounted below it (refusing if busy), delete it, and free its key. A worktree's
    /// registration in its repository is left to `git worktree prune`.
    pub fn discard_unreadable(&self, id: &str) -> Result<DoctorReport> {
        let scan = self.scan_roots()?;
        let Some(u) = scan.unreadable.iter().find(|u| u.id == id) else {
            return match self.load_root(id) {
                Ok(_) => Err(Error::Conflict(format!(
                    "root {id} has a readable state; destroy it with `execroot root destroy {id}`"
                ))),
                Err(e) => Err(e),
            };
        };
        let dir = self.roots_dir().join(id);
        for m in mount::mounts_under(&dir)? {
            if mount::unmount(&m.target)? == mount::Unmounted::Busy {
                return Err(Error::Busy { path: m.target.clone() });
            }
        }
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let keys = self.keys_dir();
        if let Ok(rd) = std::fs::read_dir(&keys) {
            for ent in rd.flatten() {
                if std::fs::read_to_string(ent.path()).is_ok_and(|t| t.trim() == id) {
                    std::fs::remove_file(ent.path()).map_err(|e| Error::io(ent.path(), e))?;
                }
            }
        }
        let finding = Finding {
            kind: FindingKind::UnreadableState,
            root: Some(id.to_string()),
            path: dir,
            action: format!("discarded the root as asked ({}); its files are gone", u.error),
            repaired: true,
        };
        Ok(DoctorReport { ok: true, repair: false, findings: vec![finding] })
    }

    fn revive_root(&self, mut rec: RootRecord) -> Result<()> {
        let spec = rec.spec(self);
        // Sub-mounts sit on top of the cwd: take away those still mounted (cleanly, so they
        // may come back whatever their volatility) before remounting the cwd; those that went
        // down with the system come back at their recorded paths, if their upper survived.
        let mut taken = submount::Taken::default();
        submount::unmount_all(&rec.cwd, &rec.mounts, &mut taken)?;
        if !rec.backend.is_live(self, &spec)? {
            rec.backend.revive(self, &spec)?;
            // Revive may have made new idmapped views: record where the lowers are now.
            rec.save(self)?;
        }
        taken.put_back(rec.durable)?;
        submount::remount_lost(&rec.cwd, &rec.mounts, &taken, rec.durable)
    }
}

/// Remove an empty root directory (and a torn `.state.json.tmp` in it); anything else in it
/// makes the removal fail rather than delete files without a record.
fn remove_empty_dir(dir: &std::path::Path) -> Result<()> {
    let _ = std::fs::remove_file(dir.join(".state.json.tmp"));
    std::fs::remove_dir(dir).map_err(|e| Error::io(dir, e))
}
