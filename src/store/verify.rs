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
    pub object: Hash,
    /// What is wrong: `corrupt` (content does not match the name), `missing`, `unreadable`.
    pub problem: &'static str,
    /// Snapshots whose manifests name this object.
    pub snapshots: Vec<Hash>,
    /// Where `--repair` moved it, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<PathJson>,
}

/// A snapshot whose manifest cannot be trusted.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotProblem {
    /// The snapshot id (its directory name).
    pub id: Hash,
    /// Why it is rejected.
    pub error: String,
    /// Where `--repair` moved it, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<PathJson>,
}

/// A materialized layer whose files no longer match its snapshot.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerProblem {
    /// Snapshot id of the layer.
    pub id: Hash,
    /// The first mismatch found.
    pub error: String,
    /// Whether `--repair` rebuilt it (the damaged directory goes to quarantine/).
    pub rebuilt: bool,
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
    /// Materialized layers checked.
    pub layers: u64,
    /// Layers that no longer present their snapshot.
    pub layer_problems: Vec<LayerProblem>,
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
                    report.snapshot_problems.push(SnapshotProblem { id, error: e.to_string(), moved_to });
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
                object: h,
                problem,
                snapshots: snapshot_names(users.get(&h)),
                moved_to,
            });
        }
        for (h, snaps) in &users {
            if !present.contains(h) {
                report.object_problems.push(ObjectProblem {
                    object: *h,
                    problem: "missing",
                    snapshots: snapshot_names(Some(snaps)),
                    moved_to: None,
                });
            }
        }

        // Layers last: a layer is only as good as the objects it links, checked above.
        for id in &existing {
            if !self.layer_dir(id).exists() {
                continue;
            }
            report.layers += 1;
            if let Some(error) = self.check_layer(id) {
                let mut rebuilt = false;
                if repair {
                    let dir = self.layer_dir(id);
                    self.quarantine(&dir, &format!("layer-{}", id.to_hex()))?;
                    rebuilt = self.materialize(id).is_ok();
                }
                report.layer_problems.push(LayerProblem { id: *id, error, rebuilt });
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
        report.ok = report.object_problems.is_empty()
            && report.snapshot_problems.is_empty()
            && report.ref_problems.is_empty()
            && report.layer_problems.is_empty();
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

    /// The first way layer `id` differs from its manifest, if any: a missing or extra entry,
    /// a wrong kind, mode or symlink target, or a file that is neither the expected shared
    /// inode nor a private copy with the right content.
    fn check_layer(&self, id: &Hash) -> Option<String> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = self.load_manifest(id).ok()?;
        let dir = self.layer_dir(id);
        let present = walkdir::WalkDir::new(&dir).into_iter().count();
        if present != m.entries.len() {
            return Some(format!("{present} entries on disk, {} in the manifest", m.entries.len()));
        }
        for e in &m.entries {
            let p = if e.path.is_empty() { dir.clone() } else { dir.join(std::ffi::OsStr::from_bytes(&e.path)) };
            let show = crate::store::manifest::show(&e.path);
            let Ok(md) = std::fs::symlink_metadata(&p) else { return Some(format!("{show} is missing")) };
            let ok = match &e.node {
                Node::Dir | Node::OpaqueDir => md.is_dir() && md.mode() & 0o7777 == e.mode,
                Node::Whiteout => md.file_type().is_char_device() && md.rdev() == 0,
                Node::Symlink { target } => std::fs::read_link(&p).is_ok_and(|t| t.as_os_str().as_bytes() == target),
                Node::File { hash, .. } => {
                    md.is_file() && md.mode() & 0o7777 == e.mode && {
                        // The object itself was re-hashed above; anything else (a variant, a
                        // private copy) is hashed here.
                        let object = self.object_path(hash);
                        let is_object =
                            std::fs::metadata(&object).is_ok_and(|s| (s.dev(), s.ino()) == (md.dev(), md.ino()));
                        is_object || std::fs::File::open(&p).and_then(hash_reader).is_ok_and(|(h, _)| h == *hash)
                    }
                }
            };
            if !ok {
                return Some(format!("{show} does not match the manifest"));
            }
        }
        None
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

fn snapshot_names(s: Option<&BTreeSet<Hash>>) -> Vec<Hash> {
    s.map(|s| s.iter().copied().collect()).unwrap_or_default()
}
