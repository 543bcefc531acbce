//! Verify: re-hash every object, check every manifest and ref, and optionally move damaged
//! items aside so that a later ingest of the same content heals them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::hash::{hash_reader, Hash};
use crate::pathenc::PathJson;
use crate::store::lock::sweep_dead_leases;
use crate::store::{Node, Store, StoreLock};

/// A damaged or missing object and the snapshots that need it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectProblem {
    /// The object's name (its expected hash).
    pub object: String,
    /// What is wrong: `corrupt` (content does not match the name), `missing`, `unreadable`.
    pub problem: &'static str,
    /// Snapshots whose manifests name this object.
    pub snapshots: Vec<String>,
    /// Where `--repair` moved it, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<PathJson>,
}

/// A snapshot whose manifest cannot be trusted.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotProblem {
    /// The snapshot id (its directory name).
    pub id: String,
    /// Why it is rejected.
    pub error: String,
    /// Where `--repair` moved it, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<PathJson>,
}

/// A ref naming a snapshot that does not exist (or a ref file that is unreadable).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefProblem {
    /// The ref name.
    pub name: String,
    /// What is wrong.
    pub error: String,
}

/// Everything verify looked at and found.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// True when nothing is wrong (after repair, nothing is left that repair could not fix is
    /// not implied: `ok` describes what was found).
    pub ok: bool,
    /// Objects re-hashed.
    pub objects: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Snapshots checked.
    pub snapshots: u64,
    /// Refs checked.
    pub refs: u64,
    /// Corrupt, unreadable or missing objects.
    pub object_problems: Vec<ObjectProblem>,
    /// Manifests that fail to decode, validate, or match their id.
    pub snapshot_problems: Vec<SnapshotProblem>,
    /// Refs to snapshots that do not exist.
    pub ref_problems: Vec<RefProblem>,
    /// Dead temporary leases removed.
    pub tmp_removed: usize,
    /// Whether `--repair` was given.
    pub repaired: bool,
    /// Wall time.
    pub elapsed_ms: f64,
}

/// An object's name, path, and what re-hashing it gave.
type Rehashed = (Hash, PathBuf, std::io::Result<(Hash, u64)>);

impl Store {
    /// Check the whole store; with `repair`, move corrupt objects and manifests to
    /// `quarantine/`.
    pub fn verify(&self, repair: bool) -> Result<VerifyReport> {
        let started = Instant::now();
        let _lock = StoreLock::acquire(self, false)?;
        let mut report = VerifyReport { repaired: repair, ..VerifyReport::default() };
        report.tmp_removed = sweep_dead_leases(self)?;

        // Manifests first: they say which snapshots each object serves.
        let mut users: BTreeMap<Hash, BTreeSet<Hash>> = BTreeMap::new();
        let mut existing: BTreeSet<Hash> = BTreeSet::new();
        for id in self.list_snapshots()? {
            report.snapshots += 1;
            match self.load_manifest(&id) {
                Ok(m) => {
                    existing.insert(id);
                    for e in &m.entries {
                        if let Node::File { hash, .. } = e.node {
                            users.entry(hash).or_default().insert(id);
                        }
                    }
                }
                Err(e) => {
                    let moved_to =
                        if repair { Some(self.quarantine(&self.snapshot_dir(&id), &id.to_hex())?) } else { None };
                    report.snapshot_problems.push(SnapshotProblem { id: id.to_hex(), error: e.to_string(), moved_to });
                }
            }
        }

        let objects = self.list_objects()?;
        let checked: Vec<Rehashed> = objects
            .into_par_iter()
            .map(|(h, p)| {
                let r = std::fs::File::open(&p).and_then(hash_reader);
                (h, p, r)
            })
            .collect();
        let mut present = BTreeSet::new();
        for (h, path, r) in checked {
            present.insert(h);
            let problem = match r {
                Ok((actual, n)) => {
                    report.objects += 1;
                    report.bytes += n;
                    if actual == h {
                        continue;
                    }
                    "corrupt"
                }
                Err(_) => "unreadable",
            };
            let moved_to = if repair { Some(self.quarantine(&path, &h.to_hex())?) } else { None };
            report.object_problems.push(ObjectProblem {
                object: h.to_hex(),
                problem,
                snapshots: snapshot_names(users.get(&h)),
                moved_to,
            });
        }
        for (h, snaps) in &users {
            if !present.contains(h) {
                report.object_problems.push(ObjectProblem {
                    object: h.to_hex(),
                    problem: "missing",
                    snapshots: snapshot_names(Some(snaps)),
                    moved_to: None,
                });
            }
        }

        let dir = self.refs_dir();
        for ent in std::fs::read_dir(&dir).at(&dir)? {
            let name = ent.at(&dir)?.file_name().to_string_lossy().into_owned();
            report.refs += 1;
            match self.get_ref(&name) {
                Ok(Some(id)) if existing.contains(&id) => {}
                Ok(Some(id)) => report
                    .ref_problems
                    .push(RefProblem { name, error: format!("points at snapshot {id}, which is missing or damaged") }),
                Ok(None) => {}
                Err(e) => report.ref_problems.push(RefProblem { name, error: e.to_string() }),
            }
        }
        report.ok =
            report.object_problems.is_empty() && report.snapshot_problems.is_empty() && report.ref_problems.is_empty();
        report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(report)
    }

    /// Every object file with the hash its name claims.
    pub fn list_objects(&self) -> Result<Vec<(Hash, PathBuf)>> {
        let root = self.objects_dir();
        let mut out = Vec::new();
        for fan in std::fs::read_dir(&root).at(&root)? {
            let fan = fan.at(&root)?;
            let prefix = fan.file_name().to_string_lossy().into_owned();
            if prefix.len() != 2 || !fan.file_type().at(fan.path())?.is_dir() {
                continue;
            }
            for obj in std::fs::read_dir(fan.path()).at(fan.path())? {
                let obj = obj.at(fan.path())?;
                let name = format!("{prefix}{}", obj.file_name().to_string_lossy());
                if let Ok(h) = Hash::from_hex(&name) {
                    out.push((h, obj.path()));
                }
            }
        }
        Ok(out)
    }

    fn quarantine(&self, path: &Path, name: &str) -> Result<PathJson> {
        let dest = self.quarantine_dir().join(format!(
            "{name}.{}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
        ));
        std::fs::rename(path, &dest).map_err(|e| Error::io(path, e))?;
        Ok(PathJson::from(dest.as_path()))
    }
}

fn snapshot_names(s: Option<&BTreeSet<Hash>>) -> Vec<String> {
    s.map(|s| s.iter().map(Hash::to_hex).collect()).unwrap_or_default()
}
