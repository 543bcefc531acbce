//! Export of a root to a directory with another user's permissions (the service's
//! `POST /v1/roots/{id}/export` with `dest`, for a caller other than root): the root is read as
//! [`Store::export_root`] reads it, into a tar stream, and a thread that has become the user
//! writes the stream out at `dest` under the same rule (absent with an existing parent, or an
//! empty directory; never a symlink). So a caller writes nowhere it could not write itself.
//!
//! What differs from an export as the store's owner: modification times are whole seconds,
//! and `dest` keeps its own mode (the root's top mode is not applied).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::root::export::ExportReport;
use crate::sys::beneath::{set_times, Tree};
use crate::sys::Owner;
use crate::Store;

impl Store {
    /// Export root `id_or_key` (or, with `changed_only`, what changed) to `dest` as `who` (with
    /// `groups`) would write it. A `dest` the user may not write is [`Error::Forbidden`].
    pub fn export_root_as(
        &self,
        who: Owner,
        groups: Vec<u32>,
        id_or_key: &str,
        dest: &Path,
        changed_only: bool,
    ) -> Result<ExportReport> {
        let (reader, mut writer) = std::os::unix::net::UnixStream::pair().map_err(|e| Error::io(dest, e))?;
        let to = dest.to_path_buf();
        let uid = who.uid;
        let unpack =
            crate::sys::creds::run_as(who, groups, move || unpack_into(reader, &to)).map_err(|e| Error::io(dest, e))?;
        let produced = self.export_root(id_or_key, None, changed_only, &mut writer);
        drop(writer);
        let written = match unpack.join() {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(Error::io(dest, e)),
            Err(_) => Err(Error::io(dest, std::io::Error::other("the writing thread panicked"))),
        };
        // The writer's failure first: it is why the stream broke, when it did.
        match written {
            Ok(()) => produced,
            Err(Error::Io { path, source }) if source.kind() == std::io::ErrorKind::PermissionDenied => {
                Err(Error::Forbidden(format!("{}: {source} (written as uid {uid})", path.display())))
            }
            Err(e) => Err(e),
        }
    }
}

/// Write the tar stream `input` (an export's: directories before what they hold, no `..`, no
/// links but symlinks) out at `dest`, through directory handles.
fn unpack_into(input: impl Read, dest: &Path) -> Result<()> {
    let (dst, created) = Tree::fresh(dest)?;
    let r = (|| -> Result<()> {
        let mut dirs = Vec::new();
        let mut archive = tar::Archive::new(input);
        for item in archive.entries().at(dest)? {
            let mut item = item.at(dest)?;
            let rel = item.path_bytes().into_owned();
            let to = dst.display(&rel);
            let h = item.header();
            let mode = h.mode().at(&to)? & 0o7777;
            let mtime = h.mtime().at(&to)? as i64;
            match h.entry_type() {
                tar::EntryType::Directory => {
                    dst.mkdir(&rel, 0o700).at(&to)?;
                    dirs.push((rel, mode, mtime));
                }
                tar::EntryType::Symlink => {
                    let target = item.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                    dst.symlink(&rel, &target).at(&to)?;
                    dst.set_mtime(&rel, mtime, 0).at(&to)?;
                }
                tar::EntryType::Regular => {
                    let mut w = dst.create_file(&rel, 0o600).at(&to)?;
                    std::io::copy(&mut item, &mut w).at(&to)?;
                    w.set_permissions(std::fs::Permissions::from_mode(mode)).at(&to)?;
                    set_times(&w, mtime, 0).at(&to)?;
                }
                other => return Err(Error::Corrupt(format!("{}: unexpected {other:?} in an export", to.display()))),
            }
        }
        for (rel, mode, mtime) in dirs.iter().rev() {
            let to = dst.display(rel);
            dst.chmod_dir(rel, *mode).at(&to)?;
            dst.set_mtime(rel, *mtime, 0).at(&to)?;
        }
        Ok(())
    })();
    if r.is_err() && created {
        drop(dst);
        let _ = std::fs::remove_dir_all(dest);
    }
    r
}
