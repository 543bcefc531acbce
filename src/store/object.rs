//! Content objects: write once, atomically, never clobber.
//!
//! An object is written to an unnamed temporary file (`O_TMPFILE`) in `objects/`, or where the
//! filesystem lacks that, a named one inside the writer's [`Lease`]; it is hashed from exactly
//! the bytes written, given mode 0644 and mtime 0, then linked to `objects/ab/cdef...` with `linkat(2)`
//! (or renamed with `RENAME_NOREPLACE`), both of which refuse to replace an existing name. If
//! the name already exists (an earlier or concurrent writer), the object counts as present and
//! the temporary is dropped. No per-object fsync: a
//! finished ingest syncs the filesystem once (see docs/format.md, "Durability").

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::hash::{hash_reader, Hash, STREAM_BUF};
use crate::store::{rename_noreplace, Lease, Store};

/// Permission bits of every object. Layers hardlink objects for entries with exactly these bits
/// (by far the most common mode), so an object presents the inode such an entry needs; entries
/// with other modes get a per-(content, mode) copy (see `store::layer`). Objects are never
/// written after they are named.
pub const OBJECT_MODE: u32 = 0o644;

/// Files up to this size are read once into memory, hashed, and written from the same buffer.
const SMALL_FILE: u64 = 1 << 20;

/// Whether an object was added by this call or was already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// This call wrote the object.
    New,
    /// The object existed (or a concurrent writer published it first).
    Present,
}

impl Store {
    /// True when the object `h` exists.
    pub fn has_object(&self, h: &Hash) -> bool {
        std::fs::symlink_metadata(self.object_path(h)).is_ok()
    }

    /// Store `bytes` whose hash the caller computed from these very bytes.
    pub fn put_bytes(&self, lease: &Lease, h: &Hash, bytes: &[u8]) -> Result<Stored> {
        if self.has_object(h) || lease.has_staged(h) {
            return Ok(Stored::Present);
        }
        let mut t = TempObject::new(self, lease)?;
        t.file.write_all(bytes).at(&t.path)?;
        t.publish(self, lease, h)
    }

    /// Store everything `r` yields, hashing exactly the bytes written (one pass: for streams
    /// that cannot be read twice, such as a tar entry).
    pub fn put_stream(&self, lease: &Lease, mut r: impl Read) -> Result<(Hash, u64, Stored)> {
        let mut t = TempObject::new(self, lease)?;
        let (h, n) = copy_hashing(&mut r, &mut t.file, &t.path)?;
        Ok((h, n, t.publish(self, lease, &h)?))
    }

    /// Store the open regular file `f` (found at `path`, named in errors), which the walk saw
    /// with `expected` bytes. The caller opened it (beneath its tree's handle: see
    /// `sys::beneath`). Fails, naming the path, if the file is not that size when read or
    /// changes while it is read.
    pub fn put_file(&self, lease: &Lease, mut f: File, path: &Path, expected: u64) -> Result<(Hash, Stored)> {
        let before = f.metadata().at(path)?;
        if !before.is_file() {
            return Err(changed(path, "is no longer a regular file"));
        }
        if before.len() != expected {
            return Err(changed(path, "changed size"));
        }
        let result = if expected <= SMALL_FILE {
            let mut buf = Vec::with_capacity(expected as usize + 1);
            f.read_to_end(&mut buf).at(path)?;
            if buf.len() as u64 != expected {
                return Err(changed(path, "changed size while being read"));
            }
            let h = Hash::of(&buf);
            (h, self.put_bytes(lease, &h, &buf)?)
        } else {
            let (h, n) = hash_reader(&mut f).at(path)?;
            if n != expected {
                return Err(changed(path, "changed size while being read"));
            }
            if self.has_object(&h) || lease.has_staged(&h) {
                (h, Stored::Present)
            } else {
                // Second pass (from the page cache) writes the object; its hash must match the
                // first pass, so the object is exactly the bytes it is named after.
                f.rewind().at(path)?;
                let mut t = TempObject::new(self, lease)?;
                let (h2, n2) = copy_hashing(&mut f, &mut t.file, &t.path)?;
                if h2 != h || n2 != n {
                    return Err(changed(path, "changed while being read"));
                }
                (h, t.publish(self, lease, &h)?)
            }
        };
        let after = f.metadata().at(path)?;
        if after.len() != before.len() || after.mtime() != before.mtime() || after.mtime_nsec() != before.mtime_nsec() {
            return Err(changed(path, "changed while being read"));
        }
        Ok(result)
    }
}

/// An object being written. Preferably an unnamed `O_TMPFILE` inode in `objects/` that is
/// linked into place when complete, so that a crash leaves nothing behind at all; where the
/// filesystem lacks `O_TMPFILE`, a named file in the writer's lease.
struct TempObject {
    file: File,
    /// The lease path of a named temporary, or `objects/` for an unnamed one (for errors).
    path: PathBuf,
    named: bool,
}

impl TempObject {
    fn new(store: &Store, lease: &Lease) -> Result<TempObject> {
        let dir = store.objects_dir();
        match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_TMPFILE).mode(OBJECT_MODE).open(&dir) {
            Ok(file) => Ok(TempObject { file, path: dir, named: false }),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)) => {
                let path = lease.temp_path();
                let file =
                    std::fs::OpenOptions::new().write(true).create_new(true).mode(OBJECT_MODE).open(&path).at(&path)?;
                Ok(TempObject { file, path, named: true })
            }
            Err(e) => Err(Error::io(&dir, e)),
        }
    }

    /// Give the finished content its name, never replacing an existing object: in the
    /// store, or in a staging lease until its snapshot is published (see `Lease::staging`).
    fn publish(self, store: &Store, lease: &Lease, h: &Hash) -> Result<Stored> {
        let dest = lease.staged_path(h).unwrap_or_else(|| store.object_path(h));
        // Fixed mode (whatever the umask) and the normalized mtime every layer presents.
        fchmod_and_normalize(&self.file, &self.path)?;
        if self.named {
            drop(self.file);
            return if rename_noreplace(&self.path, &dest)? {
                Ok(Stored::New)
            } else {
                let _ = std::fs::remove_file(&self.path);
                Ok(Stored::Present)
            };
        }
        // linkat(2) through /proc names an O_TMPFILE inode without CAP_DAC_READ_SEARCH, and
        // like link(2) it fails rather than replace an existing name.
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()));
        match nix::unistd::linkat(None, &proc_path, None, &dest, nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW) {
            Ok(()) => Ok(Stored::New),
            Err(nix::errno::Errno::EEXIST) => Ok(Stored::Present),
            Err(e) => Err(Error::io(&dest, e.into())),
        }
    }
}

/// Set `OBJECT_MODE` and the normalized mtime (the epoch) on an open file.
pub(crate) fn fchmod_and_normalize(f: &File, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(OBJECT_MODE)).at(path)?;
    let t = nix::sys::time::TimeSpec::new(0, 0);
    nix::sys::stat::futimens(f.as_raw_fd(), &t, &t).at(path)
}

fn changed(path: &Path, what: &str) -> Error {
    Error::BadInput(format!("{}: {what}; ingest aborted", path.display()))
}

/// Copy `r` into the new object file `w`, hashing the bytes written; zero blocks become holes
/// (`sys::sparse`), so a sparse source costs only its data.
fn copy_hashing(r: &mut impl Read, w: &mut File, wpath: &Path) -> Result<(Hash, u64)> {
    let mut w = crate::sys::sparse::SparseWriter::new(w);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; STREAM_BUF];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(wpath, e)),
        };
        hasher.update(&buf[..n]);
        w.write_all(&buf[..n]).at(wpath)?;
        total += n as u64;
    }
    w.finish().at(wpath)?;
    Ok((Hash(*hasher.finalize().as_bytes()), total))
}
