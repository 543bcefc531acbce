//! Content objects: write once, atomically, never clobber.
//!
//! An object is written to a temporary file inside the writer's [`Lease`], hashed from exactly
//! the bytes written, made read-only, then renamed to `objects/ab/cdef...` with
//! `RENAME_NOREPLACE`. If the name already exists (an earlier or concurrent writer), the object
//! counts as present and the temporary file is dropped with the lease. No per-object fsync: a
//! finished ingest syncs the filesystem once (see docs/format.md, "Durability").

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::hash::{hash_reader, Hash, STREAM_BUF};
use crate::store::{rename_noreplace, Lease, Store};

/// Permission bits of every object: nobody writes through an object.
pub const OBJECT_MODE: u32 = 0o444;

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

    /// Publish a finished temporary file as object `h`.
    fn publish_object(&self, tmp: &Path, h: &Hash) -> Result<Stored> {
        if rename_noreplace(tmp, &self.object_path(h))? {
            Ok(Stored::New)
        } else {
            let _ = std::fs::remove_file(tmp);
            Ok(Stored::Present)
        }
    }

    /// Store `bytes` whose hash the caller computed from these very bytes.
    pub fn put_bytes(&self, lease: &Lease, h: &Hash, bytes: &[u8]) -> Result<Stored> {
        if self.has_object(h) {
            return Ok(Stored::Present);
        }
        let tmp = lease.temp_path();
        let mut f = create_temp(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        drop(f);
        self.publish_object(&tmp, h)
    }

    /// Store everything `r` yields, hashing exactly the bytes written (one pass: for streams
    /// that cannot be read twice, such as a tar entry).
    pub fn put_stream(&self, lease: &Lease, mut r: impl Read) -> Result<(Hash, u64, Stored)> {
        let tmp = lease.temp_path();
        let mut f = create_temp(&tmp)?;
        let (h, n) = copy_hashing(&mut r, &mut f, &tmp)?;
        drop(f);
        Ok((h, n, self.publish_object(&tmp, &h)?))
    }

    /// Store the regular file at `path`, which the walk saw with `expected` bytes. Fails, naming
    /// the path, if the file is not that size when read or changes while it is read.
    pub fn put_file(&self, lease: &Lease, path: &Path, expected: u64) -> Result<(Hash, Stored)> {
        let mut f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).at(path)?;
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
            if self.has_object(&h) {
                (h, Stored::Present)
            } else {
                // Second pass (from the page cache) writes the object; its hash must match the
                // first pass, so the object is exactly the bytes it is named after.
                f.rewind().at(path)?;
                let tmp = lease.temp_path();
                let mut out = create_temp(&tmp)?;
                let (h2, n2) = copy_hashing(&mut f, &mut out, &tmp)?;
                if h2 != h || n2 != n {
                    return Err(changed(path, "changed while being read"));
                }
                drop(out);
                (h, self.publish_object(&tmp, &h)?)
            }
        };
        let after = f.metadata().at(path)?;
        if after.len() != before.len() || after.mtime() != before.mtime() || after.mtime_nsec() != before.mtime_nsec() {
            return Err(changed(path, "changed while being read"));
        }
        Ok(result)
    }
}

fn changed(path: &Path, what: &str) -> Error {
    Error::BadInput(format!("{}: {what}; ingest aborted", path.display()))
}

fn create_temp(tmp: &Path) -> Result<File> {
    std::fs::OpenOptions::new().write(true).create_new(true).mode(OBJECT_MODE).open(tmp).at(tmp)
}

fn copy_hashing(r: &mut impl Read, w: &mut File, wpath: &Path) -> Result<(Hash, u64)> {
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
    Ok((Hash(*hasher.finalize().as_bytes()), total))
}
