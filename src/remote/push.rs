//! `execroot push SNAPSHOT REGISTRY/REPO[:TAG]`.
//!
//! Order of writes, so that an interrupted push leaves nothing a pull would take as complete
//! and a rerun sends nothing twice: packs (each HEADed first; packs are deterministic, so a
//! rerun makes the same ones and finds those that arrived), then this push's index, the empty
//! config and the stack's snapshot manifests (each HEADed first), then the registry manifests
//! of the stack bottom first (parents by digest), the tag's last.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::remote::index::{Index, Location};
use crate::remote::reference::{Reference, DEFAULT_TAG};
use crate::remote::registry::{ClientOptions, Registry};
use crate::remote::wire::{self, Descriptor, ImageManifest};
use crate::remote::{pack, Known};
use crate::store::{Manifest, Node, Store, StoreLock};

/// One snapshot of a pushed stack and the registry manifest it got.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushedSnapshot {
    /// The snapshot id.
    pub id: Hash,
    /// Its registry manifest's digest.
    pub digest: String,
}

/// What a push did. JSON names are a contract (docs/cli.md, "push").
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
    /// The snapshot pushed.
    pub snapshot: Hash,
    /// `REGISTRY/REPO:TAG` written.
    pub reference: String,
    /// The tag's registry manifest digest.
    pub digest: String,
    /// The stack, bottom first, the pushed snapshot last.
    pub snapshots: Vec<PushedSnapshot>,
    /// Distinct objects of the stack.
    pub objects: u64,
    /// Of those, objects the repository already had (found in its indexes).
    pub reused_objects: u64,
    /// Objects packed and sent by this push (or found already sent by an interrupted one).
    pub new_objects: u64,
    /// Their size, uncompressed.
    pub new_object_bytes: u64,
    /// Packs this push made.
    pub packs: u64,
    /// Blobs uploaded (packs, index, snapshot manifests, config).
    pub uploaded_blobs: u64,
    /// Bytes of those blobs.
    pub uploaded_bytes: u64,
    /// Blobs a HEAD found already there (not sent again).
    pub present_blobs: u64,
    /// Registry manifests written (an unchanged one is not written again).
    pub manifests_written: u64,
    /// HTTP requests sent.
    pub requests: u64,
    /// Request body bytes sent, manifests included.
    pub bytes_sent: u64,
    /// Response body bytes received (tag manifests and indexes read to learn what is there).
    pub bytes_received: u64,
    /// Tags whose manifests were skipped while learning (not execroot snapshots): `TAG: why`.
    pub warnings: Vec<String>,
    /// Wall time.
    pub elapsed_ms: f64,
}

/// Push snapshot `spec` (id, prefix or ref) with its parents to `target`.
pub fn push(store: &Store, spec: &str, target: &Reference, opts: &ClientOptions) -> Result<PushReport> {
    let started = Instant::now();
    if target.digest.is_some() {
        return Err(Error::BadInput(format!("push to {target}: name a tag, not a digest")));
    }
    let tag = target.tag.clone().unwrap_or_else(|| DEFAULT_TAG.to_string());
    // gc waits while objects are read.
    let _lock = StoreLock::acquire(store, false)?;
    let id = store.resolve(spec)?;
    let chain = stack(store, &id)?;
    let reg = Registry::connect(target, opts)?;
    let mut known = Known::learn(&reg)?;

    // Every object of the stack, in stack order (bottom first, canonical order within).
    let mut seen = BTreeSet::new();
    let mut all: Vec<(Hash, u64)> = Vec::new();
    for (_, m) in &chain {
        for e in &m.entries {
            if let Node::File { size, hash } = &e.node {
                if seen.insert(*hash) {
                    all.push((*hash, *size));
                }
            }
        }
    }
    let missing: Vec<(Hash, u64)> = all.iter().filter(|(h, _)| !known.objects.contains_key(h)).copied().collect();
    let mut r = PushReport {
        snapshot: id,
        reference: format!("{}:{tag}", target.repo_name()),
        digest: String::new(),
        snapshots: Vec::new(),
        objects: all.len() as u64,
        reused_objects: (all.len() - missing.len()) as u64,
        new_objects: missing.len() as u64,
        new_object_bytes: missing.iter().map(|m| m.1).sum(),
        packs: 0,
        uploaded_blobs: 0,
        uploaded_bytes: 0,
        present_blobs: 0,
        manifests_written: 0,
        requests: 0,
        bytes_sent: 0,
        bytes_received: 0,
        warnings: known.skipped.iter().map(|(t, why)| format!("{t}: {why}")).collect(),
        elapsed_ms: 0.0,
    };
    let put = |r: &mut PushReport, digest: &str, bytes: &[u8]| -> Result<()> {
        if reg.has_blob(digest)? {
            r.present_blobs += 1;
        } else {
            reg.upload_blob(digest, bytes)?;
            r.uploaded_blobs += 1;
            r.uploaded_bytes += bytes.len() as u64;
        }
        Ok(())
    };

    // Packs, then the index of this push's packs.
    let mut new_packs: Vec<(String, Vec<pack::Packed>)> = Vec::new();
    pack::build(store, &missing, |p| {
        put(&mut r, &p.digest, &p.bytes)?;
        crate::sys::failpoint::hit("remote.push.pack-sent");
        known.blobs.insert(p.digest.clone(), Descriptor::of(wire::PACK_MEDIA_TYPE, &p.bytes));
        new_packs.push((p.digest, p.objects));
        Ok(())
    })?;
    r.packs = new_packs.len() as u64;
    if !new_packs.is_empty() {
        let idx = Index::of(&new_packs);
        let bytes = idx.encode();
        let d = Descriptor::of(wire::INDEX_MEDIA_TYPE, &bytes);
        put(&mut r, &d.digest, &bytes)?;
        for (h, loc) in idx.locations() {
            known.objects.insert(h, (d.digest.clone(), loc));
        }
        known.blobs.insert(d.digest.clone(), d);
    }
    crate::sys::failpoint::hit("remote.push.index-sent");

    // The empty config and the stack's snapshot manifests.
    put(&mut r, &wire::empty_config().digest, wire::EMPTY_CONTENT)?;
    let mut layers: HashMap<Hash, Descriptor> = HashMap::new();
    for (sid, m) in &chain {
        let bytes =
            zstd::bulk::compress(&m.encode(), pack::LEVEL).map_err(|e| Error::io(store.snapshot_dir(sid), e))?;
        let mut d = Descriptor::of(wire::SNAPSHOT_MEDIA_TYPE, &bytes);
        d.annotations.insert(wire::ANN_SNAPSHOT.into(), sid.to_hex());
        let labels = store.snapshot_meta(sid)?.labels;
        if !labels.is_empty() {
            d.annotations.insert(wire::ANN_LABELS.into(), serde_json::to_string(&labels).expect("serializable"));
        }
        put(&mut r, &d.digest, &bytes)?;
        layers.insert(*sid, d);
    }

    // Registry manifests, bottom first; each lists everything its own stack uses.
    let mut digests: HashMap<Hash, String> = HashMap::new();
    for (n, (sid, m)) in chain.iter().enumerate() {
        let members = closure_in(&chain, sid);
        let mut used: BTreeSet<&str> = BTreeSet::new();
        for (_, mm) in chain.iter().filter(|(c, _)| members.contains(c)) {
            for e in &mm.entries {
                if let Node::File { hash, .. } = &e.node {
                    let (index, loc): &(String, Location) = known.objects.get(hash).expect("every object is placed");
                    used.insert(index);
                    used.insert(&loc.pack);
                }
            }
        }
        let mut all_layers: Vec<Descriptor> =
            chain.iter().filter(|(c, _)| members.contains(c)).map(|(c, _)| layers[c].clone()).collect();
        // Indexes first, then packs, each by digest.
        let (idx, packs): (Vec<&str>, Vec<&str>) =
            used.iter().partition(|d| known.blobs[**d].media_type == wire::INDEX_MEDIA_TYPE);
        all_layers.extend(idx.iter().chain(packs.iter()).map(|d| known.blobs[*d].clone()));
        let mut ann = BTreeMap::new();
        ann.insert(wire::ANN_SNAPSHOT.to_string(), sid.to_hex());
        if !m.parents.is_empty() {
            let list: Vec<String> = m.parents.iter().map(|p| p.to_hex()).collect();
            ann.insert(wire::ANN_PARENTS.to_string(), list.join(","));
            let pm: Vec<String> = m.parents.iter().filter_map(|p| digests.get(p).cloned()).collect();
            ann.insert(wire::ANN_PARENT_MANIFESTS.to_string(), pm.join(","));
        }
        let created = store.snapshot_meta(sid)?.created;
        if !created.is_empty() {
            ann.insert(wire::ANN_CREATED.to_string(), created);
        }
        let om = ImageManifest {
            schema_version: 2,
            media_type: Some(wire::MANIFEST_MEDIA_TYPE.into()),
            artifact_type: Some(wire::ARTIFACT_TYPE.into()),
            config: wire::empty_config(),
            layers: all_layers,
            annotations: ann,
        };
        let bytes = om.encode()?;
        let digest = wire::sha256_digest(&bytes);
        let top = n + 1 == chain.len();
        let reference = if top { tag.clone() } else { digest.clone() };
        if reg.head_manifest(&reference)?.as_deref() != Some(digest.as_str()) {
            reg.put_manifest(&reference, &bytes)?;
            r.manifests_written += 1;
        }
        digests.insert(*sid, digest.clone());
        r.snapshots.push(PushedSnapshot { id: *sid, digest });
    }
    r.digest = digests[&id].clone();
    r.requests = reg.counters.requests.load(Ordering::Relaxed);
    r.bytes_sent = reg.counters.sent.load(Ordering::Relaxed);
    r.bytes_received = reg.counters.received.load(Ordering::Relaxed);
    r.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(r)
}

/// Snapshot `id` and every snapshot below it, each once, parents before children.
pub(crate) fn stack(store: &Store, id: &Hash) -> Result<Vec<(Hash, Manifest)>> {
    fn visit(store: &Store, id: &Hash, out: &mut Vec<(Hash, Manifest)>, on_path: &mut BTreeSet<Hash>) -> Result<()> {
        if out.iter().any(|(h, _)| h == id) {
            return Ok(());
        }
        if !on_path.insert(*id) {
            return Err(Error::Corrupt(format!("snapshot {id} is its own ancestor")));
        }
        let m = store.load_manifest(id)?;
        for p in &m.parents {
            visit(store, p, out, on_path)?;
        }
        on_path.remove(id);
        out.push((*id, m));
        Ok(())
    }
    let mut out = Vec::new();
    visit(store, id, &mut out, &mut BTreeSet::new())?;
    Ok(out)
}

/// The members of `chain` that `id` stands on, itself included.
pub(crate) fn closure_in(chain: &[(Hash, Manifest)], id: &Hash) -> BTreeSet<Hash> {
    let by_id: HashMap<&Hash, &Manifest> = chain.iter().map(|(h, m)| (h, m)).collect();
    let mut out = BTreeSet::new();
    let mut todo = vec![*id];
    while let Some(h) = todo.pop() {
        if out.insert(h) {
            if let Some(m) = by_id.get(&h) {
                todo.extend(m.parents.iter().copied());
            }
        }
    }
    out
}
