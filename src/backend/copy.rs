//! The copy backend: a private checkout of the root's snapshots (reflinks where the filesystem
//! can). Works without root and on any filesystem; costs a full copy per root.

use serde::{Deserialize, Serialize};

use super::{chown_tree, tree_usage, Backend, BackendKind, Capabilities, Made, Plan, RootSpec, Usage, WorktreeRequest};
use crate::change::Diff;
use crate::error::{Error, Result};
use crate::sys::Owner;
use crate::Store;

/// See the module documentation.
pub struct Copy;

/// A copy root records nothing of its own: its tree is its `cwd`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyState {}

impl Backend for Copy {
    type State = CopyState;
    const KIND: BackendKind = BackendKind::Copy;
    const CAPABILITIES: Capabilities = Capabilities { commit: true };

    fn plan(&self, _store: &Store, root: &RootSpec, _req: &WorktreeRequest) -> Result<Plan<CopyState>> {
        Ok(Plan { cwd: root.dir.join("tree"), owner: None, state: CopyState {}, warnings: vec![] })
    }

    fn create(&self, store: &Store, root: &RootSpec, _st: &mut CopyState) -> Result<Made> {
        let entries = store.flatten_stack(&root.snapshots)?;
        store.write_entries(&entries, &root.cwd)?;
        if root.owner != Owner::current() {
            chown_tree(&root.cwd, root.owner)?;
        }
        Ok(Made::default())
    }

    fn is_live(&self, _store: &Store, root: &RootSpec, _st: &CopyState) -> Result<bool> {
        Ok(root.cwd.is_dir())
    }

    fn revive(&self, _store: &Store, root: &RootSpec, _st: &mut CopyState) -> Result<()> {
        if root.cwd.is_dir() {
            Ok(())
        } else {
            Err(Error::NotFound(format!("{} is gone; the copy cannot be revived", root.cwd.display())))
        }
    }

    fn detach(&self, _store: &Store, root: &RootSpec, _st: &CopyState) -> Result<bool> {
        Ok(super::detach_unmounted(&root.cwd))
    }

    fn check_destroy(&self, _: &Store, _: &RootSpec, _: &CopyState, _force: bool) -> Result<Vec<String>> {
        Ok(vec![])
    }

    fn destroy(&self, _store: &Store, _root: &RootSpec, _st: &CopyState) -> Result<Vec<String>> {
        // The root directory (and the copy in it) is removed by the root layer.
        Ok(vec![])
    }

    fn usage(&self, _store: &Store, root: &RootSpec, _st: &CopyState) -> Result<Usage> {
        Ok(tree_usage(&root.cwd))
    }

    fn diff(&self, store: &Store, root: &RootSpec, _st: &CopyState) -> Result<Diff> {
        let base = store.flatten_stack(&root.snapshots)?;
        crate::change::tree::diff(&root.cwd, &base, &root.mount_subdirs)
    }
}
