//! `root commit`: what a run changed, recorded as a snapshot on the root's snapshots.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::hash::Hash;
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
    pub parents: Vec<Hash>,
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
        if !rec.backend.capabilities().commit {
            return Err(Error::BadInput(format!(
                "root {} is a {}: commit with git; `root commit` records overlay and copy roots",
                rec.id,
                if rec.kind().is_git() { "git worktree" } else { rec.kind().as_str() }
            )));
        }
        let spec = rec.capture_spec(self)?;
        let opts = IngestOptions { name, labels, skip_special: false, exclude: spec.mount_subdirs.clone() };
        let parents = rec.snapshots.clone();
        let depth = self.layer_stack(&parents)?.len();
        let (mut report, parents, flattened) = if depth + 1 > MAX_STACK {
            (self.ingest_dir(&rec.cwd, &opts, &crate::store::ingest::NoProgress)?, vec![], true)
        } else {
            let diff = rec.backend.diff(self, &spec)?;
            (self.ingest_change(&rec.cwd, &diff.written(), &diff.removed(), parents.clone(), &opts)?, parents, false)
        };
        report.elapsed_ms = t0.elapsed().as_secs_f64() * 1000.0;
        Ok(Committed { report, parents, flattened })
    }
}
