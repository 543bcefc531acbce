//! `root export`: a root's files (or what changed), to a directory or as a tar stream.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
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
        use std::os::unix::ffi::OsStrExt;
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
            let walker = walkdir::WalkDir::new(&rec.cwd).min_depth(1).into_iter().filter_entry(|e| {
                let rel =
                    e.path().strip_prefix(&rec.cwd).map(|r| r.as_os_str().as_bytes().to_vec()).unwrap_or_default();
                !skip.iter().any(|s| crate::store::manifest::is_at_or_below(&rel, s)) && e.file_name() != ".git"
            });
            for e in walker {
                let e = e.map_err(|e| Error::BadInput(format!("{}: {e}", rec.cwd.display())))?;
                paths.push(e.path().strip_prefix(&rec.cwd).expect("under cwd").as_os_str().as_bytes().to_vec());
            }
        }
        paths.sort_by(|a, b| crate::store::manifest::cmp_paths(a, b));
        crate::root::export::write(&rec.cwd, &paths, dest, out)
    }
}

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
