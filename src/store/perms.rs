//! Modes and ownership of the store's own entries (docs/format.md, "Modes and ownership").
//!
//! Nothing in a store is readable or writable by anyone but the store's owner (the uid that
//! created it, which owns `STORE/`). `STORE/` and `roots/` grant everybody search only, so each
//! root's owner can walk to its own root (whose directory the root layer opens to that owner
//! alone); every other top-level directory is `0700`, which closes everything below it
//! (objects, layer and variant inodes, idmapped views, records, locks) whatever the modes in
//! there are. Modes are set with an explicit chmod, never left to the umask.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::store::Store;
use crate::sys::Owner;

/// What a top-level entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A unix socket (the service's, made by `execroot serve`, never by the layout).
    Socket,
}

/// The mode of the store directory itself: search for everybody, nothing else.
pub const STORE_MODE: u32 = 0o711;

/// Every top-level entry execroot makes, with its kind and exact mode. Entries not listed
/// (`config.json` aside, which the administrator writes) are held to [`UNLISTED_DIR`] or
/// [`UNLISTED_FILE`].
pub const TABLE: &[(&str, Kind, u32)] = &[
    ("format", Kind::File, 0o644),
    ("lock", Kind::File, 0o600),
    ("config.json", Kind::File, 0o600),
    ("objects", Kind::Dir, 0o700),
    ("snapshots", Kind::Dir, 0o700),
    ("refs", Kind::Dir, 0o700),
    ("refmeta", Kind::Dir, 0o700),
    ("tmp", Kind::Dir, 0o700),
    ("quarantine", Kind::Dir, 0o700),
    ("layers", Kind::Dir, 0o700),
    ("l", Kind::Dir, 0o700),
    ("variants", Kind::Dir, 0o700),
    ("idmap", Kind::Dir, 0o700),
    ("keys", Kind::Dir, 0o700),
    ("locks", Kind::Dir, 0o700),
    ("provisions", Kind::Dir, 0o700),
    ("roots", Kind::Dir, 0o711),
    // Connecting needs write permission on the socket: the service's callers are its group
    // (`--socket-group`); who may do what once connected is the service's rules (docs/api.md).
    (SOCKET_NAME, Kind::Socket, 0o660),
];

/// The file name of the service's default socket, `STORE/execroot.sock`.
pub const SOCKET_NAME: &str = "execroot.sock";

/// The widest mode allowed for a top-level directory the table does not name.
pub const UNLISTED_DIR: u32 = 0o700;
/// The widest mode allowed for a top-level file the table does not name.
pub const UNLISTED_FILE: u32 = 0o600;

/// The table's mode for top-level entry `name`.
fn table_mode(name: &str) -> Option<(Kind, u32)> {
    TABLE.iter().find(|(n, _, _)| *n == name).map(|&(_, k, m)| (k, m))
}

/// A store entry whose mode or owner is not what the table says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsafeEntry {
    /// The entry.
    pub path: PathBuf,
    /// Its permission bits now.
    pub mode: u32,
    /// The permission bits it must have.
    pub want: u32,
    /// Its owner now.
    pub uid: u32,
    /// The store owner.
    pub want_uid: u32,
}

impl UnsafeEntry {
    /// What is wrong, for a finding.
    pub fn describe(&self) -> String {
        let mut what = Vec::new();
        if self.mode != self.want {
            what.push(format!("mode {:04o}, must be {:04o}", self.mode, self.want));
        }
        if self.uid != self.want_uid {
            what.push(format!("owned by uid {}, must be the store owner's (uid {})", self.uid, self.want_uid));
        }
        what.join("; ")
    }

    /// What [`Store::fix_entry`] does about it.
    pub fn remedy(&self) -> String {
        let mut what = Vec::new();
        if self.uid != self.want_uid {
            what.push(format!("chown to uid {}", self.want_uid));
        }
        what.push(format!("chmod {:04o}", self.want));
        what.join(", ")
    }
}

/// Create a new directory with exactly `mode` whatever the umask (mkdir, then chmod); an
/// existing one is an error.
pub fn new_dir(p: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new().mode(mode).create(p).at(p)?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).at(p)
}

/// [`new_dir`], but a directory that already exists is left as it is (`false`).
pub fn make_dir(p: &Path, mode: u32) -> Result<bool> {
    match new_dir(p, mode) {
        Ok(()) => Ok(true),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

impl Store {
    /// The store's owner: the owner of the store directory (its creator).
    pub fn owner(&self) -> Result<Owner> {
        let md = std::fs::metadata(self.path()).at(self.path())?;
        Ok(Owner { uid: md.uid(), gid: md.gid() })
    }

    /// Top-level directory `name` (a [`TABLE`] entry), created with the table's mode if it is
    /// missing (stores made before it existed get it on first use).
    pub fn top_dir(&self, name: &str) -> Result<PathBuf> {
        let p = self.path().join(name);
        if !p.is_dir() {
            let mode = table_mode(name).map_or(UNLISTED_DIR, |(_, m)| m);
            make_dir(&p, mode)?;
        }
        Ok(p)
    }

    /// Lay out a new store: the store directory and every table entry but the format file and
    /// config, with the table's modes and owned by the creating user, which makes it the store
    /// owner. Idempotent (concurrent first uses may both run it).
    pub(crate) fn create_layout(&self) -> Result<()> {
        let me = Owner::current();
        let dir = self.path();
        let md = std::fs::metadata(dir).at(dir)?;
        if (md.uid(), md.gid()) != (me.uid, me.gid) {
            std::os::unix::fs::lchown(dir, Some(me.uid), Some(me.gid)).at(dir)?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(STORE_MODE)).at(dir)?;
        for &(name, kind, mode) in TABLE {
            let p = dir.join(name);
            match kind {
                Kind::Dir => {
                    make_dir(&p, mode)?;
                }
                Kind::File if name == "lock" => {
                    std::fs::OpenOptions::new().create(true).append(true).mode(mode).open(&p).at(&p)?;
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).at(&p)?;
                }
                Kind::File | Kind::Socket => {}
            }
        }
        // All 256 fan-out directories exist up front so that writing an object never has to
        // create (or race to create) its directory. objects/ closes them: their mode is free.
        for i in 0..=255u8 {
            let p = self.objects_dir().join(format!("{i:02x}"));
            std::fs::create_dir_all(&p).at(&p)?;
        }
        Ok(())
    }

    /// The store directory and its top-level entries whose permission bits or owner differ from
    /// the table: wider bits anywhere, and `STORE/` and `roots/` also when narrower (owners
    /// could not reach their roots). Symlinks are not followed and not judged.
    pub fn unsafe_entries(&self) -> Result<Vec<UnsafeEntry>> {
        let owner = self.owner()?;
        let mut out = Vec::new();
        let mut judge = |path: PathBuf, md: &std::fs::Metadata, want: u32, exact: bool| {
            let mode = md.mode() & 0o7777;
            let bad_mode = if exact { mode != want } else { mode & !want != 0 };
            if bad_mode || md.uid() != owner.uid {
                let want = if exact { want } else { mode & want };
                out.push(UnsafeEntry { path, mode, want, uid: md.uid(), want_uid: owner.uid });
            }
        };
        let dir = self.path();
        judge(dir.to_path_buf(), &std::fs::symlink_metadata(dir).at(dir)?, STORE_MODE, true);
        for ent in std::fs::read_dir(dir).at(dir)? {
            let ent = ent.at(dir)?;
            let path = ent.path();
            let md = match std::fs::symlink_metadata(&path) {
                Ok(md) => md,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            if md.file_type().is_symlink() {
                continue;
            }
            let name = ent.file_name();
            let listed = name.to_str().and_then(table_mode);
            let (want, exact) = match listed {
                Some((_, m)) => (m, name == "roots"),
                None if md.is_dir() => (UNLISTED_DIR, false),
                None => (UNLISTED_FILE, false),
            };
            judge(path, &md, want, exact);
        }
        Ok(out)
    }

    /// Give `e` the table's mode and the store owner (owner first: chown may clear set-id
    /// bits, chmod then leaves exactly the table's bits).
    pub fn fix_entry(&self, e: &UnsafeEntry) -> Result<()> {
        let owner = self.owner()?;
        if e.uid != e.want_uid {
            std::os::unix::fs::lchown(&e.path, Some(owner.uid), Some(owner.gid)).at(&e.path)?;
        }
        std::fs::set_permissions(&e.path, std::fs::Permissions::from_mode(e.want)).at(&e.path)
    }
}
