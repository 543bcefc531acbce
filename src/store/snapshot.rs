//! Snapshots: publishing, reading, resolving names, listing and removing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::hash::{is_lower_hex, Hash};
use crate::store::{fsync_dir, rename_noreplace, Lease, Manifest, Node, Store};

/// Shortest id prefix accepted when resolving a snapshot.
pub const MIN_PREFIX: usize = 4;

/// Descriptive data about a snapshot that is not part of its identity (`meta.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotMeta {
    /// When the snapshot was first published (RFC 3339, UTC).
    pub created: String,
    /// Where it came from (`dir:PATH` or `tar:FILE`, `tar:-` for stdin).
    #[serde(default)]
    pub source: String,
    /// User labels; a later ingest of the same tree adds to them.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Entry counts of a manifest.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// All entries, the root included.
    pub entries: u64,
    /// Regular files.
    pub files: u64,
    /// Directories (opaque directories included), the root included.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Whiteouts.
    pub whiteouts: u64,
    /// Sum of regular file sizes.
    pub bytes: u64,
}

impl Counts {
    /// Count the entries of `m`.
    pub fn of(m: &Manifest) -> Counts {
        let mut c = Counts { entries: m.entries.len() as u64, ..Counts::default() };
        for e in &m.entries {
            match &e.node {
                Node::Dir | Node::OpaqueDir => c.dirs += 1,
                Node::File { size, .. } => {
                    c.files += 1;
                    c.bytes += size;
                }
                Node::Symlink { .. } => c.symlinks += 1,
                Node::Whiteout => c.whiteouts += 1,
            }
        }
        c
    }
}

/// What `snapshot show` reports about a snapshot (and `snapshot list` about each).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotInfo {
    /// The snapshot id.
    pub id: Hash,
    /// Its parents, bottom first (a change snapshot has some).
    pub parents: Vec<Hash>,
    /// Refs naming it.
    pub refs: Vec<String>,
    /// When it was first published.
    pub created: String,
    /// Where it came from.
    pub source: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Entry counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// With `--entries`: every entry in canonical order.
    #[serde(rename = "entryList", skip_serializing_if = "Option::is_none")]
    pub entry_list: Option<Vec<crate::store::manifest::EntryJson>>,
}

/// One entry of `snapshot list`: a snapshot, or one whose manifest cannot be read.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum SnapshotListEntry {
    /// A readable snapshot.
    Snapshot(Box<SnapshotInfo>),
    /// A damaged one: `{ "id", "error" }`.
    Damaged {
        /// The snapshot id.
        id: Hash,
        /// Why it cannot be read.
        error: String,
    },
}

/// `snapshot list`.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotList {
    /// Every snapshot, by id.
    pub snapshots: Vec<SnapshotListEntry>,
}

/// What `snapshot rm` removed.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRemoved {
    /// The snapshot id.
    pub removed: Hash,
    /// Refs removed with it (`--force`).
    pub refs_removed: Vec<String>,
}

/// Current time in RFC 3339 (seconds, UTC).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl Store {
    /// Publish a manifest whose objects are all stored. Returns its id and whether it is new.
    /// Syncs the filesystem once before the manifest becomes visible, so a durable manifest
    /// never names objects that are not durable.
    pub fn publish_snapshot(&self, lease: &Lease, m: &Manifest, mut meta: SnapshotMeta) -> Result<(Hash, bool)> {
        // The objects of a staging lease enter the store first (before the sync below).
        lease.publish_staged(self)?;
        crate::sys::failpoint::hit("snapshot.publish.objects-moved");
        let bytes = m.encode();
        let id = Hash::of(&bytes);
        let dest = self.snapshot_dir(&id);
        if dest.exists() {
            self.merge_labels(&id, &meta.labels)?;
            return Ok((id, false));
        }
        let staging = lease.temp_path();
        std::fs::create_dir(&staging).at(&staging)?;
        std::fs::write(staging.join("manifest"), &bytes).at(staging.join("manifest"))?;
        if meta.created.is_empty() {
            meta.created = now_rfc3339();
        }
        write_meta(&staging, &meta)?;
        let t = std::time::Instant::now();
        crate::sys::failpoint::hit("snapshot.publish.staged");
        self.sync()?;
        tracing::info!(ms = t.elapsed().as_secs_f64() * 1000.0, "store synced");
        let new = rename_noreplace(&staging, &dest)?;
        crate::sys::failpoint::hit("snapshot.publish.renamed");
        if new {
            fsync_dir(&self.snapshots_dir())?;
        } else {
            self.merge_labels(&id, &meta.labels)?;
        }
        Ok((id, new))
    }

    fn merge_labels(&self, id: &Hash, labels: &BTreeMap<String, String>) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let mut meta = self.snapshot_meta(id)?;
        meta.labels.extend(labels.clone());
        let lease = Lease::new(self)?;
        let staging = lease.temp_path();
        std::fs::create_dir(&staging).at(&staging)?;
        write_meta(&staging, &meta)?;
        let dest = self.snapshot_dir(id).join("meta.json");
        std::fs::rename(staging.join("meta.json"), &dest).at(&dest)
    }

    /// Read and fully validate the manifest of snapshot `id` (its hash must equal `id`).
    pub fn load_manifest(&self, id: &Hash) -> Result<Manifest> {
        let path = self.snapshot_dir(id).join("manifest");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("snapshot {id} does not exist")))
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        if Hash::of(&bytes) != *id {
            return Err(Error::Corrupt(format!("{}: manifest does not match its id", path.display())));
        }
        Manifest::decode(&bytes).map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))
    }

    /// Read `meta.json` of snapshot `id` (defaults when missing or unreadable).
    pub fn snapshot_meta(&self, id: &Hash) -> Result<SnapshotMeta> {
        let path = self.snapshot_dir(id).join("meta.json");
        match std::fs::read(&path) {
            Ok(b) => Ok(serde_json::from_slice(&b).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SnapshotMeta::default()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Ids of all snapshots, sorted.
    pub fn list_snapshots(&self) -> Result<Vec<Hash>> {
        let dir = self.snapshots_dir();
        let mut out = Vec::new();
        for ent in std::fs::read_dir(&dir).at(&dir)? {
            let ent = ent.at(&dir)?;
            if let Some(h) = ent.file_name().to_str().and_then(|s| Hash::from_hex(s).ok()) {
                out.push(h);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Resolve what a user typed: a full id, a ref name, or an unambiguous id prefix
    /// (at least 4 hex digits), in that order.
    pub fn resolve(&self, spec: &str) -> Result<Hash> {
        if let Ok(h) = Hash::from_hex(spec) {
            if self.snapshot_dir(&h).exists() {
                return Ok(h);
            }
            return Err(Error::NotFound(format!("snapshot {spec} does not exist")));
        }
        if crate::store::refs::validate_name(spec).is_ok() {
            if let Some(h) = self.get_ref(spec)? {
                return Ok(h);
            }
        }
        if spec.len() >= MIN_PREFIX && is_lower_hex(spec) {
            let matches: Vec<Hash> =
                self.list_snapshots()?.into_iter().filter(|h| h.to_hex().starts_with(spec)).collect();
            match matches.len() {
                1 => return Ok(matches[0]),
                0 => {}
                _ => {
                    let names: Vec<String> = matches.iter().map(|h| h.to_hex()[..16].to_string()).collect();
                    return Err(Error::BadInput(format!(
                        "snapshot prefix {spec:?} is ambiguous: {}",
                        names.join(", ")
                    )));
                }
            }
        }
        Err(Error::NotFound(format!("no snapshot or ref named {spec:?}")))
    }

    /// `snapshot show`: the summary of `id`, with every entry when `entries`.
    pub fn snapshot_info(&self, id: &Hash, entries: bool) -> Result<SnapshotInfo> {
        let m = self.load_manifest(id)?;
        let meta = self.snapshot_meta(id)?;
        Ok(SnapshotInfo {
            id: *id,
            parents: m.parents.clone(),
            refs: self.refs_to(id)?,
            created: meta.created,
            source: meta.source,
            labels: meta.labels,
            counts: Counts::of(&m),
            entry_list: entries.then(|| m.entries.iter().map(crate::store::manifest::EntryJson::from).collect()),
        })
    }

    /// `snapshot list`: every snapshot's summary, a damaged one as `{ id, error }`.
    pub fn snapshot_list(&self) -> Result<SnapshotList> {
        let mut snapshots = Vec::new();
        for id in self.list_snapshots()? {
            snapshots.push(match self.snapshot_info(&id, false) {
                Ok(info) => SnapshotListEntry::Snapshot(Box::new(info)),
                Err(e) => SnapshotListEntry::Damaged { id, error: e.to_string() },
            });
        }
        Ok(SnapshotList { snapshots })
    }

    /// Refs pointing at `id`.
    pub fn refs_to(&self, id: &Hash) -> Result<Vec<String>> {
        Ok(self.list_refs()?.into_iter().filter(|(_, h)| h == id).map(|(n, _)| n).collect())
    }

    /// Remove snapshot `id`. Refused while a pin (the caller's: `(snapshot, user)` pairs, the
    /// root layer passes every root's snapshots) uses it directly or as an ancestor, and while
    /// refs point at it unless `force`, which removes those refs too. Objects stay until gc.
    /// Decides under the exclusive store lock, like gc, so no root can start using the snapshot
    /// meanwhile; `pins` is read under it. Like gc, it only renames the directory away under
    /// the lock and deletes it after (see [`crate::store::lock::Gone`]). Returns the refs removed.
    pub fn remove_snapshot_with(
        &self,
        id: &Hash,
        force: bool,
        pins: impl FnOnce() -> Result<Vec<(Hash, String)>>,
    ) -> Result<Vec<String>> {
        let mut gone = crate::store::lock::Gone::default();
        let lock = crate::store::StoreLock::acquire(self, true)?;
        // A live root is never broken, --force or not.
        for (pin, user) in pins()? {
            if self.closure([pin])?.contains(id) {
                return Err(Error::Conflict(format!("snapshot {id} is used by {user}; destroy it first")));
            }
        }
        let refs = self.refs_to(id)?;
        if !refs.is_empty() && !force {
            return Err(Error::Conflict(format!(
                "snapshot {id} is named by ref(s) {}; remove them first or use --force",
                refs.join(", ")
            )));
        }
        for r in &refs {
            self.remove_ref(r)?;
        }
        crate::sys::failpoint::hit("snapshot.rm.refs-removed");
        // Block-free, like gc: `snapshot rm` is a way to free a full disk.
        gone.take(self, &self.snapshot_dir(id))?;
        drop(lock);
        gone.delete()?;
        Ok(refs)
    }
}

fn write_meta(dir: &std::path::Path, meta: &SnapshotMeta) -> Result<()> {
    let path = dir.join("meta.json");
    let mut json = serde_json::to_vec_pretty(meta).expect("serializable");
    json.push(b'\n');
    std::fs::write(&path, json).at(&path)
}
