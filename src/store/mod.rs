//! The content-addressed snapshot store.
//!
//! ```text
//! STORE/
//!   format              JSON: format version, hash algorithm, feature flags (written once)
//!   lock                flock target: shared by writers, exclusive for a sweep (gc)
//!   objects/ab/cdef...  one read-only file per unique content, named by its blake3
//!   snapshots/<id>/     manifest (canonical encoding, blake3 = id) and meta.json (labels, time)
//!   refs/<name>         a snapshot id and a newline
//!   tmp/<lease>/        private scratch of one running operation, flock-ed while alive
//!   quarantine/         corrupt objects and manifests moved aside by `verify --repair`
//! ```
//!
//! Modes: `STORE/` and `roots/` are 0711, every other directory 0700, `lock` 0600, `format`
//! 0644, all owned by the store's creator ([`perms`], docs/format.md).
//!
//! Every change is made by writing into a lease directory under `tmp/` and renaming the result
//! into place without clobbering, so a process killed at any point leaves either the complete
//! item or nothing but a dead lease, which the next ingest or verify removes.

pub mod checkout;
pub mod config;
pub mod df;
pub mod format;
pub mod gc;
pub mod ingest;
pub mod ingest_as;
pub mod layer;
pub mod lock;
pub mod manifest;
pub mod object;
pub mod perms;
pub mod refs;
pub mod snapshot;
pub mod verify;

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;

pub use lock::{Lease, StoreLock};
pub use manifest::{Entry, Manifest, Node};

/// An opened store. Cheap to clone; holds only its path.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store used when neither `--store` nor `EXECROOT_STORE` is given: `/var/lib/execroot`
    /// for root, `$XDG_DATA_HOME/execroot` or `~/.local/share/execroot` for other users.
    pub fn default_path() -> PathBuf {
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/var/lib/execroot");
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("execroot");
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
        home.join(".local/share/execroot")
    }

    /// Open the store at `root`, creating it (and its format file) on first use, with the modes
    /// of [`perms`] (an existing directory without a format file is initialised so, and becomes
    /// the creating user's). A store whose format file names an unknown version or feature is
    /// refused.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref();
        std::fs::create_dir_all(root).at(root)?;
        let root = root.canonicalize().at(root)?;
        let store = Store { dir: root };
        match format::read(&store.dir)? {
            Some(f) => f.check()?,
            None => {
                store.create_layout()?;
                format::write_new(&store)?;
            }
        }
        Ok(store)
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Directory of content objects.
    pub fn objects_dir(&self) -> PathBuf {
        self.dir.join("objects")
    }

    /// Where the object with content hash `h` lives.
    pub fn object_path(&self, h: &Hash) -> PathBuf {
        let hex = h.to_hex();
        self.dir.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    /// Directory holding one subdirectory per snapshot.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }

    /// Directory of snapshot `id`.
    pub fn snapshot_dir(&self, id: &Hash) -> PathBuf {
        self.snapshots_dir().join(id.to_hex())
    }

    /// Directory of refs.
    pub fn refs_dir(&self) -> PathBuf {
        self.dir.join("refs")
    }

    /// Directory of operation leases.
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Directory of idmapped layer views (mount points), one subdirectory per owner.
    pub fn idmap_dir(&self) -> PathBuf {
        self.dir.join("idmap")
    }

    /// Directory where `verify --repair` moves damaged items.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.dir.join("quarantine")
    }

    /// Flush everything written to the store's filesystem: the one sync of a finished ingest.
    pub fn sync(&self) -> Result<()> {
        let dir = std::fs::File::open(&self.dir).at(&self.dir)?;
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)).at(&self.dir)
    }
}

/// Set a path's mtime (and atime) without following a symlink.
pub fn set_mtime(p: &Path, sec: i64, nsec: i64) -> Result<()> {
    let t = nix::sys::time::TimeSpec::new(sec, nsec);
    nix::sys::stat::utimensat(None, p, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink).at(p)
}

/// Make a directory entry durable after a rename into `dir`.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).at(dir)
}

/// Rename `from` to `to` unless `to` exists. Returns `false` when it already existed.
pub fn rename_noreplace(from: &Path, to: &Path) -> Result<bool> {
    use nix::fcntl::{renameat2, RenameFlags};
    match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::EEXIST) | Err(nix::errno::Errno::ENOTEMPTY) => Ok(false),
        Err(e) => Err(Error::io(to, e.into())),
    }
}
