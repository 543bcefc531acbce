//! The copy backend: a private checkout of the root's layers (reflinks where the filesystem can).
//! Works without root and on any filesystem; costs a full copy per root.

use super::{chown_tree, tree_usage, Backend, Usage};
use crate::error::{Error, Result};
use crate::policy::BackendKind;
use crate::root::RootRecord;
use crate::Store;

/// See the module documentation.
pub struct Copy;

impl Backend for Copy {
    fn kind(&self) -> BackendKind {
        BackendKind::Copy
    }

    fn create(&self, store: &Store, rec: &mut RootRecord) -> Result<()> {
        let cwd = rec.dir(store).join("tree");
        let entries = store.flatten_stack(&rec.layer_ids()?)?;
        store.write_entries(&entries, &cwd)?;
        if rec.owner != crate::sys::Owner::current() {
            chown_tree(&cwd, rec.owner)?;
        }
        rec.cwd = cwd;
        Ok(())
    }

    fn is_live(&self, _store: &Store, rec: &RootRecord) -> Result<bool> {
        Ok(rec.cwd.is_dir())
    }

    fn revive(&self, _store: &Store, rec: &mut RootRecord) -> Result<()> {
        if rec.cwd.is_dir() {
            Ok(())
        } else {
            Err(Error::NotFound(format!("{} is gone; the copy cannot be revived", rec.cwd.display())))
        }
    }

    fn detach(&self, _store: &Store, rec: &RootRecord) -> Result<bool> {
        Ok(super::detach_unmounted(rec))
    }

    fn check_destroy(&self, _store: &Store, _rec: &RootRecord, _force: bool) -> Result<Vec<String>> {
        Ok(vec![])
    }

    fn destroy(&self, _store: &Store, _rec: &RootRecord) -> Result<Vec<String>> {
        // The root directory (and the copy in it) is removed by the lifecycle code.
        Ok(vec![])
    }

    fn diff(&self, store: &Store, rec: &RootRecord) -> Result<crate::change::Diff> {
        let base = store.flatten_stack(&rec.layer_ids()?)?;
        crate::change::tree::diff(&rec.cwd, &base, &rec.mount_subdirs())
    }

    fn usage(&self, _store: &Store, rec: &RootRecord) -> Result<Usage> {
        Ok(tree_usage(&rec.cwd))
    }
}
