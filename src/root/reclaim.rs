//! The store's deleting operations with every root's snapshots pinned: gc and snapshot rm as
//! callers use them, and disk accounting with what each root has written.

use std::collections::HashMap;
use std::time::Duration;

use crate::error::Result;
use crate::hash::Hash;
use crate::root::provision::ProvisionPolicy;
use crate::store::df::{DfReport, RootSpace, Space};
use crate::store::gc::GcReport;
use crate::Store;

impl Store {
    /// Snapshots that roots use directly, with the root that uses each (`root ID`). Fails (`Corrupt`)
    /// when any root's state cannot be read: what it uses is then unknown.
    pub fn root_pins(&self) -> Result<Vec<(Hash, String)>> {
        let scan = self.scan_roots()?;
        scan.require_readable("deleting snapshots")?;
        let mut out = Vec::new();
        for r in scan.roots {
            for h in r.snapshots.iter().chain(r.mounts.iter().map(|m| &m.snapshot)) {
                out.push((*h, format!("root {}", r.id)));
            }
        }
        Ok(out)
    }

    /// gc (docs/capture.md): everything no ref, no root, no kept provision layer and no grace
    /// period keeps goes. Every provision layer is kept.
    pub fn gc(&self, grace: Duration, dry_run: bool) -> Result<GcReport> {
        self.gc_provisions(grace, dry_run, ProvisionPolicy::default())
    }

    /// [`Store::gc`], forgetting the provision layers `policy` does not keep first (under gc's
    /// exclusive lock), so that their snapshots are collected with the rest.
    pub fn gc_provisions(&self, grace: Duration, dry_run: bool, policy: ProvisionPolicy) -> Result<GcReport> {
        let mut dropped = Vec::new();
        let mut report = self.gc_with(grace, dry_run, || {
            let mut pins: Vec<Hash> = self.root_pins()?.into_iter().map(|(h, _)| h).collect();
            let (kept, gone) = self.provision_gc(policy, dry_run)?;
            pins.extend(kept);
            dropped = gone;
            Ok(pins)
        })?;
        report.removed_provisions = dropped;
        Ok(report)
    }

    /// `snapshot rm`: refused while a root or a provision layer uses the snapshot (see
    /// [`Store::remove_snapshot_with`]).
    pub fn remove_snapshot(&self, id: &Hash, force: bool) -> Result<Vec<String>> {
        self.remove_snapshot_with(id, force, || {
            let mut pins = self.root_pins()?;
            pins.extend(self.provision_pins()?);
            Ok(pins)
        })
    }

    /// `df`: the store's space, which layers roots use, and what each root has written.
    pub fn df(&self) -> Result<DfReport> {
        let records = self.scan_roots()?.roots;
        let mut users: HashMap<Hash, u64> = HashMap::new();
        // Accounting, not deletion: a root whose stack cannot be read counts for nothing.
        for r in &records {
            if let Ok(stack) = self.layer_stack(&r.snapshots) {
                for id in stack {
                    *users.entry(id).or_default() += 1;
                }
            }
        }
        let mut roots = Vec::new();
        for r in &records {
            let u = r.backend.usage(self, &r.spec(self)).unwrap_or_default();
            roots.push(RootSpace {
                id: r.id.clone(),
                backend: r.kind().to_string(),
                unique: Space { files: u.inodes, bytes: u.bytes },
            });
        }
        Ok(DfReport::new(self.store_space()?, &users, roots))
    }
}
