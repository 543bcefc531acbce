//! doctor: find and (with `repair`) fix what a crash or reboot left behind. Idempotent.
//!
//! - roots stuck in `creating` are undone, roots stuck in `destroying` are finished (a worktree
//!   is re-checked for uncommitted work first, and left alone if it has any);
//! - `ready` roots whose mounts are gone are remounted, or discarded (and said so) when they
//!   were volatile and the kernel will not remount their upper directory;
//! - mounts under the store that no root owns are unmounted;
//! - root directories without a state file, key index entries naming no root, and leases of
//!   dead processes are removed.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;

use super::{RootRecord, State};
use crate::backend;
use crate::error::{Error, Result};
use crate::mount;
use crate::Store;

/// One thing doctor found.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// What: `stuck-creating`, `stuck-destroying`, `not-mounted`, `volatile-lost`,
    /// `stray-mount`, `orphan-directory`, `stale-key`, `dead-lease`.
    pub kind: &'static str,
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
#[derive(Debug, Serialize)]
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

        if let Ok(rd) = std::fs::read_dir(self.roots_dir()) {
            for ent in rd.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                let dir = ent.path();
                let rec = match self.load_root(&name) {
                    Ok(r) => r,
                    Err(_) => {
                        let res = repair.then(|| self.remove_orphan_dir(&dir));
                        note("orphan-directory", None, dir, "remove the directory (no readable state)".into(), res);
                        continue;
                    }
                };
                known_ids.insert(rec.id.clone());
                match rec.state {
                    State::Creating | State::Destroying => {
                        let kind = if rec.state == State::Creating { "stuck-creating" } else { "stuck-destroying" };
                        let verb = if rec.state == State::Creating { "undo the create" } else { "finish the destroy" };
                        let res = repair.then(|| self.finish_teardown(rec.clone()));
                        note(kind, Some(&rec.id), rec.cwd.clone(), verb.into(), res);
                    }
                    State::Ready => {
                        let b = backend::get(rec.backend);
                        let live = b.is_live(self, &rec)?;
                        let subs_live = rec.mounts.iter().all(|m| mount::is_mounted(&m.path).unwrap_or(false));
                        if live && subs_live {
                            owned.insert(rec.cwd.clone());
                            owned.extend(rec.mounts.iter().map(|m| m.path.clone()));
                            continue;
                        }
                        if !repair {
                            note("not-mounted", Some(&rec.id), rec.cwd.clone(), "remount".into(), None);
                            continue;
                        }
                        match self.revive_root(rec.clone()) {
                            Ok(()) => {
                                owned.insert(rec.cwd.clone());
                                owned.extend(rec.mounts.iter().map(|m| m.path.clone()));
                                note("not-mounted", Some(&rec.id), rec.cwd.clone(), "remounted".into(), Some(Ok(())));
                            }
                            Err(Error::Conflict(why)) => {
                                let res = self.finish_teardown(rec.clone());
                                note(
                                    "volatile-lost",
                                    Some(&rec.id),
                                    rec.cwd.clone(),
                                    format!("discarded the root: {why}"),
                                    Some(res),
                                );
                            }
                            Err(e) => {
                                note("not-mounted", Some(&rec.id), rec.cwd.clone(), "remount".into(), Some(Err(e)))
                            }
                        }
                    }
                }
            }
        }

        let shared_views = self.root().join("idmap");
        for m in mount::mounts_under(self.root())? {
            // Idmapped layer views are shared by all roots of an owner and made on demand.
            if owned.contains(&m.target) || m.target.starts_with(&shared_views) {
                continue;
            }
            // A mount still present under a root being repaired was handled above.
            if !repair {
                note("stray-mount", None, m.target.clone(), "unmount".into(), None);
                continue;
            }
            if !m.target.exists() && !mount::is_mounted(&m.target)? {
                continue;
            }
            let res = match mount::unmount(&m.target) {
                Ok(mount::Unmounted::Busy) => Err(Error::Conflict("busy".into())),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            note("stray-mount", None, m.target.clone(), "unmount".into(), Some(res));
        }

        if let Ok(rd) = std::fs::read_dir(self.keys_dir()) {
            for ent in rd.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                if name.ends_with(".lock") {
                    continue;
                }
                let target = std::fs::read_to_string(ent.path()).unwrap_or_default();
                if !known_ids.contains(target.trim()) && self.load_root(target.trim()).is_err() {
                    let res = repair.then(|| std::fs::remove_file(ent.path()).map_err(|e| Error::io(ent.path(), e)));
                    note("stale-key", None, ent.path(), "remove the key index entry".into(), res);
                }
            }
        }

        if repair {
            let n = crate::store::lock::sweep_dead_leases(self)?;
            if n > 0 {
                note("dead-lease", None, self.tmp_dir(), format!("removed {n} dead lease(s)"), Some(Ok(())));
            }
        }
        let ok = findings.iter().all(|f| f.repaired);
        Ok(DoctorReport { ok, repair, findings })
    }

    fn remove_orphan_dir(&self, dir: &std::path::Path) -> Result<()> {
        for m in mount::mounts_under(dir)? {
            if mount::unmount(&m.target)? == mount::Unmounted::Busy {
                return Err(Error::Conflict(format!("{} is busy", m.target.display())));
            }
        }
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))
    }

    /// Finish tearing a root down; a worktree with uncommitted work is left alone.
    fn finish_teardown(&self, mut rec: RootRecord) -> Result<()> {
        for m in rec.mounts.iter().rev() {
            let _ = mount::unmount(&m.path);
        }
        backend::get(rec.backend).check_destroy(self, &rec, false)?;
        self.teardown(&mut rec, false).map(|_| ())
    }

    fn revive_root(&self, mut rec: RootRecord) -> Result<()> {
        let b = backend::get(rec.backend);
        // Sub-mounts sit on top of the cwd: take them away before remounting the cwd.
        for m in rec.mounts.iter().rev() {
            let _ = mount::unmount(&m.path);
        }
        if !b.is_live(self, &rec)? {
            b.revive(self, &mut rec)?;
        }
        for m in &rec.mounts {
            if !rec.durable && m.work.join("work/incompat/volatile").exists() {
                return Err(Error::Conflict(format!("mount {} was volatile and cannot be remounted", m.subdir)));
            }
        }
        self.remount_subs(&rec)
    }
}
