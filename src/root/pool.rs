//! Overlay root skeletons made ahead, for a long-running front end (`execroot serve`): the
//! directories an overlay root's create would make (its directory, mount point, upper and work
//! directories, and the file its record goes into), made by a background thread, so that a
//! create on the request path allocates no inode of its own before its mount.
//!
//! The skeletons live in a lease of the store's `tmp/` (`tmp/<lease>/<id>/`, docs/format.md,
//! "Root skeletons"), held for the life of the pool: nothing there is a root. A create claims
//! one by writing its record into it and renaming it to `roots/<id>` (one rename: the root
//! appears with its record, as a create without a skeleton leaves it after its first write), so
//! a create killed before the rename leaves only the lease, which is removed when the pool is
//! dropped or, after a crash, by the sweep of dead leases (`doctor`, ingest, verify).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::backend::overlay;
use crate::error::{Error, IoContext, Result};
use crate::store::lock::Lease;
use crate::Store;

use super::record::{RootRecord, CREATING_FILE};

/// How long the thread waits, once woken, before making skeletons.
const REFILL_DELAY: std::time::Duration = std::time::Duration::from_millis(2);

/// Skeletons made ahead, and the thread that makes them. Dropping it stops the thread and
/// removes the skeletons not claimed (with their lease).
pub struct RootPool {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    lease: Lease,
    want: usize,
    state: Mutex<Ready>,
    wake: Condvar,
}

#[derive(Default)]
struct Ready {
    ids: Vec<String>,
    stop: bool,
}

/// A skeleton taken from the pool for one create: claimed by [`Skeleton::claim`], or removed
/// with the lease if the create does not use it.
pub(crate) struct Skeleton {
    /// The id of the root it is made for.
    pub id: String,
    dir: PathBuf,
    claimed: bool,
}

impl RootPool {
    /// Start keeping `want` skeletons ready for overlay roots of `store`.
    pub fn start(store: &Store, want: usize) -> Result<RootPool> {
        let shared = Arc::new(Shared {
            lease: Lease::new(store)?,
            want,
            state: Mutex::new(Ready::default()),
            wake: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("execroot-pool".into())
            .spawn(move || s.run())
            .map_err(|e| Error::io(shared.lease.path(), e))?;
        Ok(RootPool { shared, thread: Some(thread) })
    }

    /// A ready skeleton, if there is one (the thread makes another).
    pub(crate) fn take(&self) -> Option<Skeleton> {
        let id = self.shared.state.lock().unwrap_or_else(PoisonError::into_inner).ids.pop();
        self.shared.wake.notify_one();
        id.map(|id| Skeleton { dir: self.shared.lease.path().join(&id), id, claimed: false })
    }

    /// How many skeletons are ready now.
    pub fn ready(&self) -> usize {
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner).ids.len()
    }
}

impl Shared {
    fn run(&self) {
        loop {
            {
                let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                while !st.stop && st.ids.len() >= self.want {
                    st = self.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
                }
                if st.stop {
                    return;
                }
            }
            // Let the create that took a skeleton finish first: on two cores and one journal,
            // making the next one alongside it slows the request that is waiting.
            std::thread::sleep(REFILL_DELAY);
            let id = format!("{:016x}", rand::random::<u64>());
            let dir = self.lease.path().join(&id);
            match overlay::make_skeleton(&dir, &id, CREATING_FILE) {
                Ok(()) => self.state.lock().unwrap_or_else(PoisonError::into_inner).ids.push(id),
                Err(e) => {
                    // Creates make their directories themselves meanwhile; try again later.
                    tracing::warn!("making a root skeleton: {e}");
                    let _ = std::fs::remove_dir_all(&dir);
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
        }
    }
}

impl Drop for RootPool {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Skeleton {
    /// Make the skeleton root `rec`'s directory `dest` (`roots/<id>`) with its record: the
    /// record's intent written into the skeleton's file (nobody sees it there, so no temporary
    /// name is needed), then the skeleton renamed into place. Returns what was written.
    pub(crate) fn claim(mut self, rec: &mut RootRecord, dest: &Path) -> Result<Vec<u8>> {
        let json = rec.intent();
        let file = self.dir.join(CREATING_FILE);
        // Written into the skeleton's empty file, not truncated: ext4 flushes a file truncated
        // and rewritten when it is closed (auto_da_alloc): one such close measured 2 ms.
        let mut f = std::fs::OpenOptions::new().write(true).open(&file).at(&file)?;
        std::io::Write::write_all(&mut f, &json).at(&file)?;
        drop(f);
        crate::sys::failpoint::hit("pool.claim.written");
        if !crate::store::rename_noreplace(&self.dir, dest)? {
            return Err(Error::Conflict(format!("{} exists", dest.display())));
        }
        self.claimed = true;
        Ok(json)
    }
}

impl Drop for Skeleton {
    /// One a create took but did not claim goes now rather than with the lease.
    fn drop(&mut self) {
        if !self.claimed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
