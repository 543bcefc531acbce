//! Locks and leases, as values that release themselves when dropped.
//!
//! - [`StoreLock`]: an flock on `STORE/lock`, shared by every operation that writes objects or
//!   snapshots, exclusive for a sweep that deletes them (gc), so a sweep never deletes an object
//!   an unfinished ingest has written or counted as present.
//! - [`Lease`]: a private directory under `STORE/tmp/` holding an operation's temporary files.
//!   The directory is flock-ed for as long as the operation lives; a lease whose lock can be
//!   taken belongs to a dead process and is removed by [`sweep_dead_leases`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};
use rand::Rng;

use crate::error::{Error, IoContext, Result};
use crate::store::Store;
pub use crate::sys::lock::FileLock;

/// A held flock on the store lock file.
#[derive(Debug)]
pub struct StoreLock {
    _lock: FileLock,
}

impl StoreLock {
    /// Take the store lock shared (writers) or exclusive (sweeps), waiting for it.
    pub fn acquire(store: &Store, exclusive: bool) -> Result<StoreLock> {
        Ok(StoreLock { _lock: FileLock::acquire(&store.path().join("lock"), exclusive)? })
    }
}

impl Store {
    /// Take the exclusive lock `STORE/locks/<name>` (a repository's git commands, a layer's
    /// first materialization).
    pub fn named_lock(&self, name: &str) -> Result<FileLock> {
        let dir = self.top_dir("locks")?;
        FileLock::acquire(&dir.join(name), true)
    }
}

/// A live operation's scratch directory; removed on drop.
#[derive(Debug)]
pub struct Lease {
    dir: PathBuf,
    _lock: Flock<File>,
    counter: AtomicU64,
}

impl Lease {
    /// Create and lock a new lease directory under the store's `tmp/`.
    pub fn new(store: &Store) -> Result<Lease> {
        loop {
            let name = format!("{}-{:016x}", std::process::id(), rand::thread_rng().gen::<u64>());
            let dir = store.tmp_dir().join(name);
            std::fs::create_dir(&dir).at(&dir)?;
            // Until we hold the flock, a concurrent sweep may take this brand-new directory
            // for a dead lease and remove it: then start again under a fresh name.
            let file = match File::open(&dir) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&dir, e)),
            };
            let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => continue,
                Err((_, e)) => return Err(Error::io(&dir, e.into())),
            };
            if dir.exists() {
                return Ok(Lease { dir, _lock: lock, counter: AtomicU64::new(0) });
            }
        }
    }

    /// The lease directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Remove `dir` so that no reader ever sees it half deleted: rename it into the lease first
    /// (atomic), then delete it there. A crash in between leaves it in a dead lease, swept later.
    pub fn discard(&self, dir: &Path) -> Result<()> {
        let doomed = self.temp_path();
        std::fs::rename(dir, &doomed).at(dir)?;
        std::fs::remove_dir_all(&doomed).at(&doomed)
    }

    /// A fresh, unused path inside the lease.
    pub fn temp_path(&self) -> PathBuf {
        self.dir.join(self.counter.fetch_add(1, Ordering::Relaxed).to_string())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(path = %self.dir.display(), "could not remove lease: {e}");
        }
    }
}

/// Remove leases (and stray files) under `tmp/` whose owner is gone. Returns how many.
pub fn sweep_dead_leases(store: &Store) -> Result<usize> {
    let tmp = store.tmp_dir();
    let mut removed = 0;
    for ent in std::fs::read_dir(&tmp).at(&tmp)? {
        let ent = ent.at(&tmp)?;
        let path = ent.path();
        let is_dir = ent.file_type().at(&path)?.is_dir();
        if !is_dir {
            // Only the format file's creation writes loose files here, for an instant; anything
            // older than a minute is debris.
            let old = ent
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 60);
            if old && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
            continue;
        }
        let Ok(file) = File::open(&path) else { continue };
        if let Ok(_dead) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
    }
    Ok(removed)
}
