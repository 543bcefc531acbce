//! `root export`: a root's files (or what changed), to a directory or as a tar stream.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::sys::beneath::{set_times, Kind, Meta, Tree};
use crate::Store;
use serde::Serialize;

/// What an export wrote.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportReport {
    /// Entries written.
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Bytes of regular files.
    pub bytes: u64,
}

impl Store {
    /// Copy the root's files (or, with `changed_only`, the added and modified ones with the
    /// directories leading to them) to `dest` (absent or empty) or, when `dest` is `None`, as
    /// a tar stream to `out`. `--mount` trees are left out.
    pub fn export_root(
        &self,
        id_or_key: &str,
        dest: Option<&Path>,
        changed_only: bool,
        out: &mut dyn std::io::Write,
    ) -> Result<ExportReport> {
        let rec = self.find_root(id_or_key)?;
        let spec = rec.capture_spec(self)?;
        let skip = spec.mount_subdirs.clone();
        let mut paths: Vec<Vec<u8>> = Vec::new();
        if changed_only {
            let diff = rec.backend.diff(self, &spec)?;
            let mut set = std::collections::BTreeSet::new();
            for c in diff.added.iter().chain(&diff.modified) {
                let mut a = c.path.0.as_slice();
                set.insert(a.to_vec());
                while let Some(i) = a.iter().rposition(|&b| b == b'/') {
                    a = &a[..i];
                    set.insert(a.to_vec());
                }
            }
            paths.extend(set);
        } else {
            let tree = Tree::open(&rec.cwd).at(&rec.cwd)?;
            let skipped = |rel: &[u8], _: &Meta| {
                skip.iter().any(|s| crate::store::manifest::is_at_or_below(rel, s))
                    || rel.rsplit(|&b| b == b'/').next() == Some(b".git".as_slice())
            };
            tree.walk(&skipped, &mut |found| {
                if !found.rel.is_empty() {
                    paths.push(found.rel);
                }
                Ok(())
            })?;
        }
        paths.sort_by(|a, b| crate::store::manifest::cmp_paths(a, b));
        crate::root::export::write(&rec.cwd, &paths, dest, out)
    }
}

/// Write `paths` (relative, canonical order, parents first) of `cwd` to `dest`, or as tar to
/// `out` when `dest` is `None`. Both sides are reached through directory handles
/// (`sys::beneath`): a run that swaps a directory of its root for a symlink makes the export fail
/// or export the symlink, and `dest` follows the checkout rule (absent with an existing parent,
/// or an empty directory; never a symlink), so nothing outside either tree is read or written.
pub(crate) fn write(
    cwd: &Path,
    paths: &[Vec<u8>],
    dest: Option<&Path>,
    out: &mut dyn std::io::Write,
) -> Result<ExportReport> {
    let src = Tree::open(cwd).at(cwd)?;
    crate::sys::failpoint::hit("export.listed");
    match dest {
        Some(dest) => {
            let (dst, created) = Tree::fresh(dest)?;
            let r = write_dir(&src, paths, &dst);
            if r.is_err() && created {
                drop(dst);
                let _ = std::fs::remove_dir_all(dest);
            }
            r
        }
        None => write_tar(&src, paths, out),
    }
}

fn write_dir(src: &Tree, paths: &[Vec<u8>], dst: &Tree) -> Result<ExportReport> {
    let mut r = ExportReport::default();
    let mut dirs = Vec::new();
    for rel in paths {
        let from = src.display(rel);
        let to = dst.display(rel);
        let Some(md) = src.lstat(rel).at(&from)? else { continue };
        match md.kind {
            Kind::Dir => {
                dst.mkdir(rel, 0o700).at(&to)?;
                crate::sys::failpoint::hit("export.dir-made");
                dirs.push((rel, md));
            }
            Kind::Symlink => {
                dst.symlink(rel, &src.read_link(rel).at(&from)?).at(&to)?;
                dst.set_mtime(rel, md.mtime_sec, md.mtime_nsec).at(&to)?;
            }
            Kind::File => {
                let f = src.open_file(rel).at(&from)?;
                let now = Meta::of_fd(&f).at(&from)?;
                let w = dst.create_file(rel, 0o600).at(&to)?;
                crate::sys::sparse::copy(&f, &w, now.size).at(&to)?;
                w.set_permissions(std::fs::Permissions::from_mode(now.mode)).at(&to)?;
                set_times(&w, now.mtime_sec, now.mtime_nsec).at(&to)?;
                r.files += 1;
                r.bytes += now.size;
            }
            _ => continue,
        }
        r.entries += 1;
    }
    // The top presents the root's own top, as a checkout's does.
    let top = src.lstat(b"").at(src.top())?.expect("the top exists");
    for (rel, md) in dirs.iter().rev().chain([(&Vec::new(), top)].iter()) {
        let to = dst.display(rel);
        dst.chmod_dir(rel, md.mode).at(&to)?;
        dst.set_mtime(rel, md.mtime_sec, md.mtime_nsec).at(&to)?;
    }
    Ok(r)
}

fn write_tar(src: &Tree, paths: &[Vec<u8>], out: &mut dyn std::io::Write) -> Result<ExportReport> {
    let mut r = ExportReport::default();
    let mut b = tar::Builder::new(out);
    let tar_err = |p: &Path, e: std::io::Error| Error::io(p, e);
    for rel in paths {
        let from = src.display(rel);
        let name = Path::new(OsStr::from_bytes(rel));
        let Some(md) = src.lstat(rel).at(&from)? else { continue };
        let mut h = tar::Header::new_gnu();
        h.set_uid(md.uid as u64);
        h.set_gid(md.gid as u64);
        h.set_mode(md.mode);
        h.set_mtime(md.mtime_sec.max(0) as u64);
        match md.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, name, std::io::empty()).map_err(|e| tar_err(&from, e))?;
            }
            Kind::Symlink => {
                let target = src.read_link(rel).at(&from)?;
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, name, OsStr::from_bytes(&target)).map_err(|e| tar_err(&from, e))?;
            }
            Kind::File => {
                let f = src.open_file(rel).at(&from)?;
                let now = Meta::of_fd(&f).at(&from)?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(now.size);
                h.set_mode(now.mode);
                // Exactly the size the header declares, or an error: a file that shrinks or grows
                // while it is read must not make a stream whose entries no longer line up.
                let body = Exact { inner: f, left: now.size };
                b.append_data(&mut h, name, body).map_err(|e| tar_err(&from, e))?;
                r.files += 1;
                r.bytes += now.size;
            }
            _ => continue,
        }
        r.entries += 1;
    }
    b.finish().map_err(|e| Error::io("-", e))?;
    Ok(r)
}

/// A reader yielding exactly `left` bytes of `inner`, failing if it ends early.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: std::io::Read> std::io::Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file shrank while being exported"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
