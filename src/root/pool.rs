//! Overlay roots made ahead, for a long-running front end (`execroot serve`): the directories
//! an overlay root's create would make (its directory, mount point, upper and work
//! directories, and the file its record goes into), made by a background thread, so that a
//! create on the request path allocates no inode of its own before its mount; and, for the
//! snapshots the last creates used, the overlay itself, mounted ahead, so that such a create
//! makes no mount either.
//!
//! The skeletons live in a lease of the store's `tmp/` (`tmp/<lease>/<id>/`, docs/format.md,
//! "Root skeletons"), held for the life of the pool: nothing there is a root. A create claims
//! one by writing its record into it and renaming it to `roots/<id>` (one rename: the root
//! appears with its record, as a create without a skeleton leaves it after its first write;
//! an overlay mounted on the skeleton's mount point moves with it), so a create killed before
//! the rename leaves only the lease, which is removed, its mounts first, when the pool is
//! dropped or, after a crash, by the sweep of dead leases (`doctor`, ingest, verify).
//!
//! A mounted skeleton is taken only by a create whose own mount would be the same one: the
//! same snapshots, owner and volatility, and lower directories that are still the ones it was
//! mounted on (a gc may have removed a layer since, and a later create materialized it anew).
//! Only roots of the store's owner are mounted ahead: another owner's lowers are idmapped
//! views, which a destroy or doctor releases when no root's record names them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::backend::overlay;
use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::store::lock::Lease;
use crate::sys::mount::{MountGuard, Place};
use crate::sys::Owner;
use crate::Store;

use super::record::{RootRecord, CREATING_FILE};

/// How long the thread waits, once woken, before making skeletons.
const REFILL_DELAY: std::time::Duration = std::time::Duration::from_millis(2);

/// How many skeletons are kept mounted for the snapshots of the last create (each is one
/// overlay mount, and holds its layers' directories open until used or dropped).
const MOUNTED: usize = 4;

/// Skeletons made ahead, and the thread that makes them. Dropping it stops the thread and
/// removes the skeletons not claimed (with their lease), unmounting the mounted ones first.
pub struct RootPool {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    store: Store,
    /// The store's owner: only roots of this owner are mounted ahead.
    base: Owner,
    lease: Lease,
    want: usize,
    state: Mutex<Ready>,
    wake: Condvar,
}

#[derive(Default)]
struct Ready {
    ids: Vec<String>,
    mounted: Vec<Mounted>,
    /// What the last overlay create mounted: the skeletons mounted ahead are for it.
    last: Option<MountKey>,
    stop: bool,
}

/// What makes two overlay mounts of a root the same: its snapshots (bottom first, before the
/// layer stack is expanded), its owner (the upper's owner, and idmapped lowers for another
/// owner than the store's) and whether it is volatile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MountKey {
    /// The snapshots the create resolved, bottom first.
    pub snapshots: Vec<Hash>,
    /// The root's owner.
    pub owner: Owner,
    /// Mounted `volatile` (a root that is not durable).
    pub volatile: bool,
}

/// A skeleton with its overlay mounted on its mount point.
struct Mounted {
    id: String,
    key: MountKey,
    /// The lower directories, top first, as mounted.
    lowers: Vec<PathBuf>,
    /// Who each lower directory was when mounted: `(dev, ino, birth time)`.
    seen: Vec<(u64, u64, Option<std::time::SystemTime>)>,
    guard: MountGuard,
}

/// A skeleton taken from the pool for one create: claimed by [`Skeleton::claim`], or removed
/// with the lease if the create does not use it.
pub(crate) struct Skeleton {
    /// The id of the root it is made for.
    pub id: String,
    dir: PathBuf,
    claimed: bool,
    /// Its overlay, when mounted ahead: the lower directories (top first) and the mount.
    pub mounted: Option<(Vec<PathBuf>, MountGuard)>,
}

impl RootPool {
    /// Start keeping `want` skeletons ready for overlay roots of `store`.
    pub fn start(store: &Store, want: usize) -> Result<RootPool> {
        let shared = Arc::new(Shared {
            store: store.clone(),
            base: store.owner()?,
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
        Ok(RootPool { shared, thread: Mutex::new(Some(thread)) })
    }

    /// A ready skeleton for a create whose overlay would be mounted as `key` says, if there is
    /// one: mounted already when one was mounted ahead for `key` and its lower directories are
    /// still those (the thread makes another). Call it under the store's shared lock, so that
    /// no gc removes a layer between this check and the root's record.
    pub(crate) fn take(&self, key: &MountKey) -> Option<Skeleton> {
        let (plain, mounted) = {
            let mut st = self.shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            // Another owner's lowers are idmapped views, which destroys and doctor release
            // when no root's record names them: a mount ahead would be one they cannot see.
            if key.owner != self.shared.base {
                let id = st.ids.pop();
                drop(st);
                self.shared.wake.notify_one();
                return id.map(|id| Skeleton {
                    dir: self.shared.lease.path().join(&id),
                    id,
                    claimed: false,
                    mounted: None,
                });
            }
            if st.last.as_ref() != Some(key) {
                // Another shape: the mounted ones are the thread's to replace.
                st.last = Some(key.clone());
            }
            match st.mounted.iter().rposition(|m| m.key == *key) {
                Some(i) => (None, Some(st.mounted.swap_remove(i))),
                None => (st.ids.pop(), None),
            }
        };
        self.shared.wake.notify_one();
        let dir = |id: &str| self.shared.lease.path().join(id);
        if let Some(m) = mounted {
            let mut sk = Skeleton { dir: dir(&m.id), id: m.id.clone(), claimed: false, mounted: None };
            if m.still_current() {
                sk.mounted = Some((m.lowers, m.guard));
                return Some(sk);
            }
            // Unmounted, then removed (a volatile overlay's work directory is never mounted
            // again): this create makes its own directories.
            tracing::debug!(id = %sk.id, "a root mounted ahead lost a layer; mounting afresh");
            drop(m.guard);
            drop(sk);
            return None;
        }
        plain.map(|id| Skeleton { dir: dir(&id), id, claimed: false, mounted: None })
    }

    /// How many skeletons are ready now (mounted or not).
    pub fn ready(&self) -> usize {
        let st = self.shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.ids.len() + st.mounted.len()
    }

    /// How many skeletons are mounted ahead now.
    pub fn mounted(&self) -> usize {
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner).mounted.len()
    }
}

/// Remove skeleton `dir` whose mount ahead was just dropped, unless something is still mounted
/// below it (a guard's unmount found it busy): then it is kept, never deleted through, for the
/// sweep of dead leases once the pool is gone.
fn remove_unmounted(dir: &Path) {
    let clear = crate::sys::mount::mounts_under(dir).map(|m| m.is_empty()).unwrap_or(false);
    if clear {
        let _ = std::fs::remove_dir_all(dir);
    } else {
        tracing::warn!(dir = %dir.display(), "a root mounted ahead is still mounted (busy?); its skeleton is kept");
    }
}

/// Who the directory at `p` is: `(dev, ino, birth time)`, so that one removed and made again
/// at the same path (an inode number can be reused) is told apart.
fn identity(p: &Path) -> std::io::Result<(u64, u64, Option<std::time::SystemTime>)> {
    let m = std::fs::metadata(p)?;
    Ok((m.dev(), m.ino(), m.created().ok()))
}

impl Mounted {
    /// The lower directories are still those mounted on.
    fn still_current(&self) -> bool {
        self.lowers.iter().zip(&self.seen).all(|(p, seen)| identity(p).is_ok_and(|now| now == *seen))
    }
}

/// What the thread does next.
enum Work {
    Make,
    Mount(MountKey),
    Unmount(Mounted),
}

impl Shared {
    fn run(&self) {
        loop {
            let work = {
                let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    if st.stop {
                        return;
                    }
                    let last = st.last.clone();
                    if let Some(i) = st.mounted.iter().position(|m| Some(&m.key) != last.as_ref()) {
                        break Work::Unmount(st.mounted.swap_remove(i));
                    }
                    if st.ids.len() + st.mounted.len() < self.want {
                        break Work::Make;
                    }
                    match last {
                        Some(k) if st.mounted.len() < MOUNTED && !st.ids.is_empty() => break Work::Mount(k),
                        _ => st = self.wake.wait(st).unwrap_or_else(PoisonError::into_inner),
                    }
                }
            };
            // Let the create that took a skeleton finish first: on two cores and one journal,
            // making the next one alongside it slows the request that is waiting.
            std::thread::sleep(REFILL_DELAY);
            match work {
                Work::Make => self.make(),
                Work::Mount(key) => self.mount(key),
                Work::Unmount(m) => {
                    // Never a plain skeleton again: a volatile overlay's work directory is not
                    // mounted twice. Another is made in its place.
                    drop(m.guard);
                    remove_unmounted(&self.lease.path().join(&m.id));
                }
            }
        }
    }

    fn make(&self) {
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

    /// Mount a plain skeleton as a create of `key` would, with the same directories and options
    /// (the backend's own [`overlay::mount_snapshots`]).
    fn mount(&self, key: MountKey) {
        let Some(id) = self.state.lock().unwrap_or_else(PoisonError::into_inner).ids.pop() else { return };
        let dir = self.lease.path().join(&id);
        let made = (|| -> Result<Mounted> {
            let mut dirs = overlay::root_dirs(&dir, &id);
            let place = Place::at(&dir.join("merged"))?;
            let guard =
                overlay::mount_snapshots(&self.store, &key.snapshots, &mut dirs, place, key.owner, key.volatile)?;
            let seen = dirs.lowers.iter().map(|p| identity(p).at(p)).collect::<Result<_>>()?;
            Ok(Mounted { id: id.clone(), key: key.clone(), lowers: dirs.lowers, seen, guard })
        })();
        match made {
            Ok(m) => self.state.lock().unwrap_or_else(PoisonError::into_inner).mounted.push(m),
            Err(e) => {
                // A snapshot removed meanwhile, say: creates of it mount for themselves. This
                // skeleton may hold a half-made upper: it goes, and another is made.
                tracing::debug!("mounting a root ahead: {e}");
                let _ = std::fs::remove_dir_all(&dir);
                let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if st.last.as_ref() == Some(&key) {
                    st.last = None;
                }
            }
        }
    }
}

impl RootPool {
    /// Stop the thread, unmount what was mounted ahead and remove the skeletons not taken
    /// (the lease goes when the pool is dropped). For a front end that stops while something
    /// may still hold the pool (a tokio task shut down in the background): called on drop too.
    pub fn close(&self) {
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = t.join();
        }
        let (ids, mounted) = {
            let mut st = self.shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            (std::mem::take(&mut st.ids), std::mem::take(&mut st.mounted))
        };
        for m in mounted {
            // Unmounted before its directory is removed: never deleted through.
            drop(m.guard);
            remove_unmounted(&self.shared.lease.path().join(&m.id));
        }
        for id in ids {
            let _ = std::fs::remove_dir_all(self.shared.lease.path().join(&id));
        }
    }
}

impl Drop for RootPool {
    fn drop(&mut self) {
        self.close();
    }
}

impl Skeleton {
    /// Make the skeleton root `rec`'s directory `dest` (`roots/<id>`) with its record: the
    /// record's intent written into the skeleton's file (nobody sees it there, so no temporary
    /// name is needed), then the skeleton renamed into place. Returns what was written.
    pub(crate) fn claim(&mut self, rec: &mut RootRecord, dest: &Path) -> Result<Vec<u8>> {
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
    /// One a create took but did not claim goes now rather than with the lease (its mount
    /// first).
    fn drop(&mut self) {
        let was_mounted = self.mounted.take().is_some();
        if !self.claimed {
            if was_mounted {
                remove_unmounted(&self.dir);
            } else {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }
}
