//! Locks and leases, as values that release themselves when dropped.
//!
//! - [`StoreLock`]: an flock on `STORE/lock`, shared by every operation that writes objects or
//!   snapshots, exclusive while a sweep (gc, `snapshot rm`) decides what to delete and takes it
//!   away, so a sweep never deletes an object an unfinished ingest has written or counted as
//!   present.
//! - [`Lease`]: a private directory under `STORE/tmp/` holding an operation's temporary files.
//!   The directory is flock-ed for as long as the operation lives; a lease whose lock can be
//!   taken belongs to a dead process and is removed by [`sweep_dead_leases`].
//! - [`Gone`]: a sweep's lease holding what it took away under the exclusive lock, deleted after
//!   the lock is released.

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

/// How many lock files each kind of named lock shares out among its names.
pub const LOCK_STRIPES: usize = 256;

impl Store {
    /// Take the exclusive lock for `name`, `<kind>-<rest>` (`key-…`, `repo-…`, `layer-…`): one
    /// of a fixed set of lock files, `STORE/locks/<kind>-<xx>` where `xx` is the first byte of
    /// the blake3 of `name` in hex, so lock files never accumulate and are never removed (an
    /// unlinked lock file is one a waiter and a newcomer can both hold). Two names may share
    /// a file, which only serialises them; each kind has its own files, so holding one kind's
    /// lock while taking another's cannot wait on itself. No caller holds two of one kind.
    pub fn named_lock(&self, name: &str) -> Result<FileLock> {
        let dir = self.top_dir("locks")?;
        FileLock::acquire(&dir.join(stripe_of(name)), true)
    }

    /// [`Store::named_lock`] without waiting: `None` while somebody holds it (or a name sharing
    /// its file).
    pub fn try_named_lock(&self, name: &str) -> Result<Option<FileLock>> {
        let dir = self.top_dir("locks")?;
        FileLock::try_acquire(&dir.join(stripe_of(name)))
    }
}

/// The lock file name for lock `name` (see [`Store::named_lock`]).
fn stripe_of(name: &str) -> String {
    let kind = name.split_once('-').map_or(name, |(k, _)| k);
    let stripe = crate::hash::Hash::of(name.as_bytes()).0[0] as usize % LOCK_STRIPES;
    format!("{kind}-{stripe:02x}")
}

/// Remove the per-name lock files earlier releases made (`keys/<32 hex>.lock`,
/// `locks/<kind>-<32 hex>`), which this release never opens. Each is removed only while this
/// call holds its flock, taken without waiting: a lock file nobody holds has nobody waiting on
/// it. (Only an older execroot still running against the store could open one afterwards:
/// doctor --repair is the place for this, after an upgrade.) Returns how many were removed.
pub fn remove_old_lock_files(store: &Store) -> Result<usize> {
    let is_old = |dir: &str, name: &str| -> bool {
        let stem = match dir {
            "keys" => name.strip_suffix(".lock"),
            _ => name.split_once('-').map(|(_, rest)| rest),
        };
        stem.is_some_and(|s| s.len() == 32 && crate::hash::is_lower_hex(s))
    };
    let mut removed = 0;
    for d in ["keys", "locks"] {
        let dir = store.path().join(d);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&dir, e)),
        };
        for ent in rd {
            let ent = ent.at(&dir)?;
            let Some(name) = ent.file_name().to_str().map(str::to_string) else { continue };
            if !is_old(d, &name) {
                continue;
            }
            let path = ent.path();
            let Ok(file) = File::open(&path) else { continue };
            if let Ok(_held) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&path, e)),
                }
            }
        }
    }
    Ok(removed)
}

/// Unmount everything mounted below `dir`, deepest first; false when one is busy.
fn unmount_below(dir: &Path) -> Result<bool> {
    use crate::sys::mount;
    for m in mount::mounts_under(dir)? {
        if mount::unmount(&m.target)? == mount::Unmounted::Busy {
            return Ok(false);
        }
    }
    Ok(true)
}

/// True when `path`, a directory of `tmp/` or anything below one, is in a lease that its
/// process still holds (a live operation's, or a running service's root pool).
pub fn in_live_lease(store: &Store, path: &Path) -> bool {
    let tmp = store.tmp_dir();
    let Some(first) = path.strip_prefix(&tmp).ok().and_then(|r| r.components().next()) else { return false };
    let Ok(file) = File::open(tmp.join(first)) else { return false };
    Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err()
}

/// A live operation's scratch directory; removed on drop.
#[derive(Debug)]
pub struct Lease {
    dir: PathBuf,
    _lock: Flock<File>,
    counter: AtomicU64,
    /// `objects/` inside the lease, for a staging lease.
    staged: Option<PathBuf>,
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
                return Ok(Lease { dir, _lock: lock, counter: AtomicU64::new(0), staged: None });
            }
        }
    }

    /// A lease that keeps the objects written through it (`put_*`) in its own `objects/`
    /// until [`Lease::publish_staged`], which [`Store::publish_snapshot`] calls before making a
    /// manifest visible. An ingest that fails or is killed thus takes its new objects with it
    /// (its lease is removed on drop, or swept once dead), and no other ingest can have found
    /// them present and counted on them (docs/format.md, "Failed ingests").
    pub fn staging(store: &Store) -> Result<Lease> {
        let mut lease = Lease::new(store)?;
        let staged = lease.dir.join("objects");
        std::fs::create_dir(&staged).at(&staged)?;
        lease.staged = Some(staged);
        Ok(lease)
    }

    /// Where object `h` is staged in a staging lease (None for a plain lease: objects go
    /// straight to the store).
    pub(crate) fn staged_path(&self, h: &crate::hash::Hash) -> Option<PathBuf> {
        self.staged.as_ref().map(|d| d.join(h.to_hex()))
    }

    /// True when this (staging) lease already holds object `h`.
    pub(crate) fn has_staged(&self, h: &crate::hash::Hash) -> bool {
        self.staged_path(h).is_some_and(|p| std::fs::symlink_metadata(p).is_ok())
    }

    /// Move every staged object into the store, never replacing one that is there (a
    /// concurrent ingest may have published the same content first: ours is then dropped).
    /// Returns how many were moved.
    pub fn publish_staged(&self, store: &Store) -> Result<u64> {
        let Some(staged) = &self.staged else { return Ok(0) };
        let mut moved = 0;
        for ent in std::fs::read_dir(staged).at(staged)? {
            let ent = ent.at(staged)?;
            let path = ent.path();
            let h = ent
                .file_name()
                .to_str()
                .and_then(|n| crate::hash::Hash::from_hex(n).ok())
                .ok_or_else(|| Error::Corrupt(format!("{}: not a staged object", path.display())))?;
            if crate::store::rename_noreplace(&path, &store.object_path(&h))? {
                moved += 1;
            } else {
                std::fs::remove_file(&path).at(&path)?;
            }
        }
        Ok(moved)
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

    /// Remove the lease now, with everything in it, saying whether that worked (drop only
    /// warns). It stays locked until removed.
    pub fn remove(self) -> Result<()> {
        // Drop then finds it gone and says nothing; after a failure it tries once more.
        std::fs::remove_dir_all(&self.dir).at(&self.dir)
    }

    /// A fresh, unused path inside the lease.
    pub fn temp_path(&self) -> PathBuf {
        self.dir.join(self.counter.fetch_add(1, Ordering::Relaxed).to_string())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %self.dir.display(), "could not remove lease: {e}"),
        }
    }
}

/// What a deleting operation (gc, `snapshot rm`) takes away under the store's exclusive lock,
/// to delete it only after releasing the lock (docs/capture.md, "gc"), so that writers wait for
/// the decision and the renames, never for the deletion of gigabytes.
///
/// [`Gone::take`] makes a snapshot directory, layer directory, object or variant unreachable at
/// once by renaming it into one lease of this operation (`tmp/<pid>-<random>/`, flock-ed like any
/// lease, so no sweep takes it while the operation lives, and every sweep removes it once the
/// operation is dead). A rename within the store's filesystem moves a name, not data: nothing
/// can find the thing under its old name any more, and a writer that comes after the lock makes
/// a fresh one under that name. [`Gone::delete`] (or drop) deletes the lease with all it holds.
///
/// A full disk: the lease directory, or one more entry in it, needs a new block. Where that
/// fails (`ENOSPC`, `EDQUOT`), the thing is deleted in place, under the caller's lock, as before
/// this split (a directory by [`discard_dir`], a file by `unlink`); each such deletion frees
/// space, and the next `take` tries the lease again. So gc and `snapshot rm` still need no block
/// before they have freed some (docs/roots.md, "Full disks").
#[derive(Debug, Default)]
pub struct Gone {
    lease: Option<Lease>,
    taken: u64,
}

impl Gone {
    /// Make `path` (a file or a directory inside the store) unreachable now.
    pub fn take(&mut self, store: &Store, path: &Path) -> Result<()> {
        if self.lease.is_none() {
            match Lease::new(store) {
                Ok(lease) => self.lease = Some(lease),
                Err(e) if no_space(&e) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(lease) = &self.lease {
            match std::fs::rename(path, lease.temp_path()) {
                Ok(()) => {
                    self.taken += 1;
                    return Ok(());
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        if std::fs::symlink_metadata(path).at(path)?.is_dir() {
            discard_dir(store, path)
        } else {
            std::fs::remove_file(path).at(path)
        }
    }

    /// How many things [`Gone::take`] moved into the lease (rather than deleting in place).
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// Delete everything taken. Call it after releasing the store lock: nothing in the lease is
    /// reachable from the store, so no lock is needed to delete it.
    pub fn delete(self) -> Result<()> {
        match self.lease {
            Some(lease) => lease.remove(),
            None => Ok(()),
        }
    }
}

/// An out-of-space error (`ENOSPC`, or the owner's quota: `EDQUOT`).
fn no_space(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
}

/// Remove `dir` (a snapshot or layer directory) so that no reader ever sees it half deleted,
/// needing no new data block: rename it into `tmp/` (atomic; a directory entry, not a block,
/// in practice), then delete it there. [`Gone::take`]'s way on a disk too full for a lease.
/// Unlocked, it is a dead lease to every sweep, so a crash in between, or a concurrent sweep
/// deleting it first, leaves nothing behind.
fn discard_dir(store: &Store, dir: &Path) -> Result<()> {
    let doomed = store.tmp_dir().join(format!("{}-{:016x}-gone", std::process::id(), rand::thread_rng().gen::<u64>()));
    std::fs::rename(dir, &doomed).at(dir)?;
    match std::fs::remove_dir_all(&doomed) {
        Ok(()) => Ok(()),
        // A concurrent sweep took it for a dead lease and got there first.
        Err(_) if std::fs::symlink_metadata(&doomed).is_err() => Ok(()),
        Err(e) => Err(Error::io(&doomed, e)),
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
            // A service's pool mounts roots ahead in its lease (root::pool): their overlays are
            // unmounted first, never deleted through. One still in use keeps its lease.
            match unmount_below(&path) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(lease = %path.display(), "a dead lease holds a busy mount; kept");
                    continue;
                }
                // One lease that cannot be unmounted keeps only itself, not the others.
                Err(e) => {
                    tracing::warn!(lease = %path.display(), "a dead lease's mounts could not be undone, kept: {e}");
                    continue;
                }
            }
            match std::fs::remove_dir_all(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
    }
    Ok(removed)
}
