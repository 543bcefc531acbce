//! Writing a list of paths of a root out, to a directory or as a tar stream.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::commit::ExportReport;
use crate::error::{Error, IoContext, Result};

/// Write `paths` (relative, canonical order, parents first) of `cwd` to `dest`, or as tar to
/// `out` when `dest` is `None`.
pub(crate) fn write(
    cwd: &Path,
    paths: &[Vec<u8>],
    dest: Option<&Path>,
    out: &mut dyn std::io::Write,
) -> Result<ExportReport> {
    let mut r = ExportReport::default();
    match dest {
        Some(dest) => {
            if dest.exists() && std::fs::read_dir(dest).at(dest)?.next().is_some() {
                return Err(Error::Conflict(format!("{}: directory is not empty", dest.display())));
            }
            std::fs::create_dir_all(dest).at(dest)?;
            let mut dirs = Vec::new();
            for rel in paths {
                let src = cwd.join(OsStr::from_bytes(rel));
                let dst = dest.join(OsStr::from_bytes(rel));
                let md = std::fs::symlink_metadata(&src).at(&src)?;
                if md.is_dir() {
                    std::fs::create_dir(&dst).at(&dst)?;
                    dirs.push((dst, md));
                    r.entries += 1;
                    continue;
                }
                if md.file_type().is_symlink() {
                    std::os::unix::fs::symlink(std::fs::read_link(&src).at(&src)?, &dst).at(&dst)?;
                } else if md.is_file() {
                    std::fs::copy(&src, &dst).at(&dst)?;
                    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(md.mode() & 0o7777)).at(&dst)?;
                    r.files += 1;
                    r.bytes += md.len();
                } else {
                    continue;
                }
                crate::store::set_mtime(&dst, md.mtime(), md.mtime_nsec())?;
                r.entries += 1;
            }
            for (dst, md) in dirs.iter().rev() {
                std::fs::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777)).at(dst)?;
                crate::store::set_mtime(dst, md.mtime(), md.mtime_nsec())?;
            }
        }
        None => {
            let mut b = tar::Builder::new(out);
            b.follow_symlinks(false);
            b.mode(tar::HeaderMode::Complete);
            for rel in paths {
                let src = cwd.join(OsStr::from_bytes(rel));
                let md = std::fs::symlink_metadata(&src).at(&src)?;
                if !(md.is_dir() || md.is_file() || md.file_type().is_symlink()) {
                    continue;
                }
                b.append_path_with_name(&src, OsStr::from_bytes(rel)).map_err(|e| Error::io(&src, e))?;
                r.entries += 1;
                if md.is_file() {
                    r.files += 1;
                    r.bytes += md.len();
                }
            }
            b.finish().map_err(|e| Error::io("-", e))?;
        }
    }
    Ok(r)
}
