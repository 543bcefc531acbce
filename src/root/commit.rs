//! `root commit` and `root export`: getting a run's output out of its root.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::backend;
use crate::error::{Error, Result};
use crate::policy::BackendKind;
use crate::store::ingest::{IngestOptions, IngestReport};
use crate::store::layer::MAX_STACK;
use crate::Store;

/// What `root commit` made.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Committed {
    /// The ingest figures of the new snapshot (its `id`, entries, objects...).
    #[serde(flatten)]
    pub report: IngestReport,
    /// Its parents, bottom first (empty when flattened).
    pub parents: Vec<String>,
    /// True when the chain would have passed the stack limit and the root's whole view was
    /// committed as one layer instead.
    pub flattened: bool,
}

impl Store {
    /// Commit what root `id_or_key` changed as a new snapshot whose parents are the root's
    /// layers; flatten into one snapshot when the chain would pass [`MAX_STACK`].
    pub fn commit_root(
        &self,
        id_or_key: &str,
        name: Option<String>,
        labels: BTreeMap<String, String>,
    ) -> Result<Committed> {
        let t0 = Instant::now();
        let rec = self.find_root(id_or_key)?;
        if rec.backend == BackendKind::Worktree {
            return Err(Error::BadInput(format!(
                "root {} is a git worktree: commit with git; `root commit` records overlay and copy roots",
                rec.id
            )));
        }
        let opts = IngestOptions { name, labels, skip_special: false, exclude: rec.mount_subdirs() };
        let parents = rec.layer_ids()?;
        let depth = self.layer_stack(&parents)?.len();
        let (mut report, parents, flattened) = if depth + 1 > MAX_STACK {
            (self.ingest_dir(&rec.cwd, &opts, &crate::store::ingest::NoProgress)?, vec![], true)
        } else {
            let diff = backend::get(rec.backend).diff(self, &rec)?;
            (self.ingest_change(&rec.cwd, &diff.written(), &diff.removed(), parents.clone(), &opts)?, parents, false)
        };
        report.elapsed_ms = t0.elapsed().as_secs_f64() * 1000.0;
        Ok(Committed { report, parents: parents.iter().map(|p| p.to_hex()).collect(), flattened })
    }

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
        let skip = rec.mount_subdirs();
        let mut paths: Vec<Vec<u8>> = Vec::new();
        if changed_only {
            let diff = backend::get(rec.backend).diff(self, &rec)?;
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
