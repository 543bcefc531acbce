//! `execroot pull REGISTRY/REPO:TAG [--name REF]`.
//!
//! Fetches the registry manifest and the stack's snapshot manifests (those the store lacks),
//! then the indexes, then only the objects the store lacks: a whole pack when most of it is
//! needed (checked against its digest), else merged byte ranges of it. Every object is
//! decompressed into the pull's staging lease and checked against its blake3 there, so nothing
//! unverified ever enters the store; the snapshots are then published bottom first with the
//! store's usual rules ([`Store::publish_snapshot`]). A pull that fails on damaged data leaves
//! only its lease, removed on the way out; one that fails otherwise while fetching objects (a
//! dropped connection, a server error, a missing blob) moves the objects it verified into the
//! store first (named by their blake3, used by no snapshot yet, collected by gc if never used),
//! so that a rerun fetches only the rest.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::pathenc::show;
use crate::remote::index::Location;
use crate::remote::reference::Reference;
use crate::remote::registry::{ClientOptions, Registry};
use crate::remote::wire;
use crate::store::lock::sweep_dead_leases;
use crate::store::snapshot::SnapshotMeta;
use crate::store::{Lease, Manifest, Node, Store, StoreLock};

/// Merge two needed ranges of a pack when fewer than this many bytes lie between them.
const RANGE_GAP: u64 = 256 << 10;
/// Fetch the whole pack when at least this share of it (percent) is needed, or when it would
/// take more than [`MAX_RANGES`] ranged requests.
const WHOLE_PACK_PERCENT: u64 = 50;
/// Most ranged requests made into one pack.
const MAX_RANGES: usize = 8;
/// Packs fetched at once.
const FETCHERS: usize = 4;
/// Largest snapshot manifest accepted (its blob; and decompressed, all of a stack's together).
const MAX_SNAPSHOT_MANIFEST: u64 = 1 << 30;
/// Largest pack fetched whole (packs are 32 MiB at most unless one object is larger); and no
/// merged range grows past it. So a request holds at most this much, or one object's frame.
const MAX_HELD: u64 = 64 << 20;

/// An object to fetch: its blake3, size and place.
type Wanted = (Hash, u64, Location);

/// What to do with a pulled snapshot.
#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    /// Ref to point at the pulled snapshot.
    pub name: Option<String>,
    /// How to reach the registry.
    pub client: ClientOptions,
}

/// One snapshot of a pulled stack.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PulledSnapshot {
    /// The snapshot id.
    pub id: Hash,
    /// Whether the store did not have it before.
    pub new_snapshot: bool,
}

/// What a pull did. JSON names are a contract (docs/cli.md, "pull").
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PullReport {
    /// The snapshot pulled (the top of its stack).
    pub snapshot: Hash,
    /// `REGISTRY/REPO:TAG` (or `@DIGEST`) as given.
    pub reference: String,
    /// Its registry manifest's digest.
    pub digest: String,
    /// The ref set, if any.
    pub name: Option<String>,
    /// The stack, bottom first.
    pub snapshots: Vec<PulledSnapshot>,
    /// Distinct objects of the stack.
    pub objects: u64,
    /// Of those, objects the store already had.
    pub present_objects: u64,
    /// Objects fetched.
    pub fetched_objects: u64,
    /// Their size, uncompressed.
    pub fetched_object_bytes: u64,
    /// Packs fetched whole.
    pub whole_packs: u64,
    /// Ranged requests into packs.
    pub range_requests: u64,
    /// HTTP requests sent.
    pub requests: u64,
    /// Response body bytes received.
    pub bytes_received: u64,
    /// Wall time.
    pub elapsed_ms: f64,
}

/// Pull `source` into `store`.
pub fn pull(store: &Store, source: &Reference, opts: &PullOptions) -> Result<PullReport> {
    let started = Instant::now();
    if let Some(n) = &opts.name {
        crate::store::refs::validate_name(n)?;
    }
    if source.tag.is_none() && source.digest.is_none() {
        return Err(Error::BadInput(format!("pull {source}: name a tag (REGISTRY/REPO:TAG) or a digest")));
    }
    let reg = Registry::connect(source, &opts.client)?;
    let what = source.to_string();
    let (bytes, digest) = reg
        .get_manifest(source.reference())?
        .ok_or_else(|| Error::NotFound(format!("{what}: no such tag or manifest in {}", reg.name())))?;
    let p = wire::parse(&bytes, &what)?;

    let _lock = StoreLock::acquire(store, false)?;
    sweep_dead_leases(store)?;
    let lease = Lease::staging(store)?;

    // The stack's snapshot manifests, each checked against its id.
    let mut chain: Vec<(Hash, Manifest, bool, BTreeMap<String, String>)> = Vec::new();
    // All the stack's fetched manifests are held at once: they share one budget.
    let mut budget = MAX_SNAPSHOT_MANIFEST;
    for s in &p.snapshots {
        if chain.iter().any(|c| c.0 == s.id) {
            return Err(Error::Corrupt(format!("{what}: it carries snapshot {} twice", s.id)));
        }
        let mut labels: BTreeMap<String, String> = match s.desc.annotations.get(wire::ANN_LABELS) {
            Some(j) => serde_json::from_str(j)
                .map_err(|e| Error::Corrupt(format!("{what}: labels of snapshot {}: {e}", s.id)))?,
            None => BTreeMap::new(),
        };
        // The rule of `--label KEY=VALUE`: no label a local command could not have set.
        if let Some(k) = labels.keys().find(|k| k.is_empty() || k.contains('=')) {
            return Err(Error::Corrupt(format!(
                "{what}: snapshot {} has an invalid label key {}",
                s.id,
                show(k.as_bytes())
            )));
        }
        match store.load_manifest(&s.id) {
            Ok(m) => {
                // A registry adds labels to a snapshot the store has, but never changes one
                // the store already has: local metadata wins over a remote's.
                let local = store.snapshot_meta(&s.id)?.labels;
                labels.retain(|k, _| !local.contains_key(k));
                chain.push((s.id, m, false, labels));
                continue;
            }
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        if s.desc.size > MAX_SNAPSHOT_MANIFEST {
            return Err(Error::Corrupt(format!(
                "{what}: snapshot manifest {} claims {} bytes, over the {MAX_SNAPSHOT_MANIFEST} accepted",
                s.desc.digest, s.desc.size
            )));
        }
        let blob = reg.get_blob(&s.desc.digest, Some(s.desc.size))?;
        let mut raw = Vec::new();
        zstd::stream::read::Decoder::new(&blob[..]).and_then(|d| d.take(budget + 1).read_to_end(&mut raw)).map_err(
            |e| Error::Corrupt(format!("{what}: snapshot manifest {} does not decompress: {e}", s.desc.digest)),
        )?;
        if raw.len() as u64 > budget {
            return Err(Error::Corrupt(format!(
                "{what}: the stack's snapshot manifests decompress to more than {MAX_SNAPSHOT_MANIFEST} bytes"
            )));
        }
        budget -= raw.len() as u64;
        if Hash::of(&raw) != s.id {
            return Err(Error::Corrupt(format!(
                "{what}: snapshot manifest {} is not snapshot {}",
                s.desc.digest, s.id
            )));
        }
        let m = Manifest::decode(&raw).map_err(|e| Error::Corrupt(format!("{what}: snapshot {}: {e}", s.id)))?;
        for parent in &m.parents {
            let below = chain.iter().any(|c| c.0 == *parent) || store.snapshot_dir(parent).exists();
            if !below {
                return Err(Error::Corrupt(format!(
                    "{what}: snapshot {} stands on {parent}, which the manifest does not carry below it",
                    s.id
                )));
            }
        }
        chain.push((s.id, m, true, labels));
    }
    if p.parents != chain.last().map(|c| c.1.parents.clone()).unwrap_or_default() {
        return Err(Error::Corrupt(format!("{what}: its parents annotation does not match snapshot {}", p.id)));
    }
    // Only the snapshot's own stack is published: a layer that the top does not stand on
    // (directly or through another) would smuggle an unasked-for snapshot into the store.
    let mut below: BTreeSet<Hash> = BTreeSet::from([p.id]);
    for (id, m, _, _) in chain.iter().rev() {
        if below.contains(id) {
            below.extend(m.parents.iter().copied());
        }
    }
    if let Some((stray, ..)) = chain.iter().find(|c| !below.contains(&c.0)) {
        return Err(Error::Corrupt(format!(
            "{what}: it carries snapshot {stray}, which snapshot {} does not stand on",
            p.id
        )));
    }

    if let Some(c) = p.annotations.get(wire::ANN_CREATED) {
        if !wire::is_time(c) {
            return Err(Error::Corrupt(format!(
                "{what}: its {} annotation {} is not a time",
                wire::ANN_CREATED,
                show(c.as_bytes())
            )));
        }
    }

    // The objects the store lacks.
    let mut seen = BTreeSet::new();
    let mut need: Vec<(Hash, u64)> = Vec::new();
    let mut present = 0u64;
    for (_, m, _, _) in &chain {
        for e in &m.entries {
            if let Node::File { size, hash } = &e.node {
                if seen.insert(*hash) {
                    if store.has_object(hash) {
                        present += 1;
                    } else {
                        need.push((*hash, *size));
                    }
                }
            }
        }
    }
    let fetched_bytes: u64 = need.iter().map(|n| n.1).sum();
    let whole = AtomicU64::new(0);
    let ranges = AtomicU64::new(0);
    if !need.is_empty() {
        let packs: BTreeMap<&str, u64> = p.packs.iter().map(|d| (d.digest.as_str(), d.size)).collect();
        let mut at: HashMap<Hash, Location> = HashMap::new();
        // Their locations are held together: one budget for all of them (checked before any is
        // fetched), each index read once.
        let mut seen_index = BTreeSet::new();
        let distinct: Vec<&wire::Descriptor> =
            p.indexes.iter().filter(|d| seen_index.insert(d.digest.as_str())).collect();
        let total = distinct.iter().fold(0u64, |t, d| t.saturating_add(d.size));
        if total > crate::remote::MAX_INDEX {
            return Err(Error::Corrupt(format!(
                "{what}: its indexes claim {total} bytes together, over the {} accepted",
                crate::remote::MAX_INDEX
            )));
        }
        for d in distinct {
            let idx = crate::remote::fetch_index(&reg, d)?;
            for (h, loc) in idx.locations() {
                if packs.contains_key(loc.pack.as_str()) {
                    at.entry(h).or_insert(loc);
                }
            }
        }
        let mut by_pack: BTreeMap<String, Vec<Wanted>> = BTreeMap::new();
        for (h, size) in &need {
            let loc = at.remove(h).ok_or_else(|| {
                Error::Corrupt(format!("{what}: object {h} is in none of the manifest's indexes and packs"))
            })?;
            if loc.rlen != *size {
                return Err(Error::Corrupt(format!(
                    "{what}: the index gives object {h} {} bytes, the manifest {size}",
                    loc.rlen
                )));
            }
            // A frame is never much longer than its object (zstd's bound): a longer one would
            // only make the pull hold more than the object needs.
            if loc.clen > size.saturating_add(size / 128).saturating_add(1024) {
                return Err(Error::Corrupt(format!(
                    "{what}: the index gives object {h} ({size} bytes) a frame of {} bytes",
                    loc.clen
                )));
            }
            if loc.offset + loc.clen > packs[loc.pack.as_str()] {
                return Err(Error::Corrupt(format!("{what}: object {h} lies beyond the end of pack {}", loc.pack)));
            }
            by_pack.entry(loc.pack.clone()).or_default().push((*h, *size, loc));
        }
        tracing::info!(ms = started.elapsed().as_secs_f64() * 1000.0, packs = by_pack.len(), "indexes read");
        let work: Vec<(String, Vec<Wanted>)> = by_pack.into_iter().collect();
        // Fetching waits on the network as much as it decompresses and hashes: more requests in
        // flight than cores keeps both busy.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(FETCHERS.min(work.len()).max(1))
            .build()
            .map_err(|e| Error::io(store.tmp_dir(), std::io::Error::other(e.to_string())))?;
        let fetched = pool.install(|| {
            work.par_iter()
                .map(|(digest, objs)| {
                    fetch_pack(store, &lease, &reg, &what, digest, packs[digest.as_str()], objs, &whole, &ranges)
                })
                .collect::<Result<Vec<()>>>()
        });
        if let Err(e) = fetched {
            // Every staged object is named by the blake3 of its bytes, so it is sound store
            // content whatever went wrong; after a dropped connection, a server error or a
            // missing blob, keep what arrived so that a rerun does not fetch it again. After
            // damaged data, keep nothing from that registry.
            if !matches!(e, Error::Corrupt(_)) {
                let kept = lease.publish_staged(store)?;
                tracing::info!(kept, "objects kept for a rerun");
            }
            return Err(e);
        }
        tracing::info!(ms = started.elapsed().as_secs_f64() * 1000.0, "objects staged");
    }
    crate::sys::failpoint::hit("remote.pull.objects-staged");

    // Publish bottom first; every object is staged or present by now.
    let mut snapshots = Vec::new();
    let source_text = format!("oci:{}@{digest}", reg.name());
    for (id, m, _, labels) in &chain {
        let meta = SnapshotMeta {
            created: p.annotations.get(wire::ANN_CREATED).filter(|_| *id == p.id).cloned().unwrap_or_default(),
            source: source_text.clone(),
            labels: labels.clone(),
        };
        let (got, new) = store.publish_snapshot(&lease, m, meta)?;
        debug_assert_eq!(got, *id);
        snapshots.push(PulledSnapshot { id: *id, new_snapshot: new });
    }
    if let Some(n) = &opts.name {
        store.set_ref(n, &p.id)?;
    }
    Ok(PullReport {
        snapshot: p.id,
        reference: what,
        digest,
        name: opts.name.clone(),
        snapshots,
        objects: seen.len() as u64,
        present_objects: present,
        fetched_objects: need.len() as u64,
        fetched_object_bytes: fetched_bytes,
        whole_packs: whole.load(Ordering::Relaxed),
        range_requests: ranges.load(Ordering::Relaxed),
        requests: reg.counters.requests.load(Ordering::Relaxed),
        bytes_received: reg.counters.received.load(Ordering::Relaxed),
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// Fetch `objs` of pack `digest` (whole, or as merged ranges) into the staging lease.
#[allow(clippy::too_many_arguments)]
fn fetch_pack(
    store: &Store,
    lease: &Lease,
    reg: &Registry,
    what: &str,
    digest: &str,
    size: u64,
    objs: &[Wanted],
    whole: &AtomicU64,
    ranges: &AtomicU64,
) -> Result<()> {
    let mut objs: Vec<&Wanted> = objs.iter().collect();
    objs.sort_by_key(|o| o.2.offset);
    // Merged ranges: (start, end, objects in it).
    let mut spans: Vec<(u64, u64, Vec<&Wanted>)> = Vec::new();
    for o in objs {
        let (s, e) = (o.2.offset, o.2.offset + o.2.clen);
        match spans.last_mut() {
            Some(last) if s <= last.1.saturating_add(RANGE_GAP) && e.saturating_sub(last.0) <= MAX_HELD => {
                last.1 = last.1.max(e);
                last.2.push(o);
            }
            _ => spans.push((s, e, vec![o])),
        }
    }
    let needed: u64 = spans.iter().map(|s| s.1 - s.0).sum();
    let mostly = needed as u128 * 100 >= size as u128 * WHOLE_PACK_PERCENT as u128;
    if size <= MAX_HELD && (spans.len() > MAX_RANGES || mostly) {
        let blob = reg.get_blob(digest, Some(size))?;
        whole.fetch_add(1, Ordering::Relaxed);
        for (_, _, list) in &spans {
            for o in list {
                stage(store, lease, what, digest, &blob[o.2.offset as usize..(o.2.offset + o.2.clen) as usize], o)?;
            }
        }
        return Ok(());
    }
    for (s, e, list) in &spans {
        if e - s > MAX_HELD {
            // Spans grow past MAX_HELD only by one object's frame alone: stream it.
            let frame = reg.open_range(digest, *s, *e)?;
            ranges.fetch_add(1, Ordering::Relaxed);
            // A connection that fails in the middle is not damaged data: tell them apart, so
            // that what arrived before is kept for a rerun.
            let mut dropped = None;
            let staged = stage(store, lease, what, digest, ErrAt { inner: frame, failed: &mut dropped }, list[0]);
            if let Some(err) = dropped {
                return Err(Error::io(std::path::PathBuf::from(format!("GET {digest} bytes {s}..{e}")), err));
            }
            staged?;
            continue;
        }
        let bytes = reg.get_range(digest, *s, *e, size)?;
        ranges.fetch_add(1, Ordering::Relaxed);
        for o in list {
            let from = (o.2.offset - s) as usize;
            stage(store, lease, what, digest, &bytes[from..from + o.2.clen as usize], o)?;
        }
    }
    Ok(())
}

/// Decompress one frame into the staging lease; its content must be the object it is listed as.
fn stage(store: &Store, lease: &Lease, what: &str, pack: &str, frame: impl Read, o: &Wanted) -> Result<()> {
    let damaged = |why: String| Error::Corrupt(format!("{what}: object {} in pack {pack} {why}", o.0));
    let dec = zstd::stream::read::Decoder::new(frame).map_err(|e| damaged(format!("does not decompress: {e}")))?;
    let mut failed = None;
    let reader = ErrAt { inner: dec.take(o.1 + 1), failed: &mut failed };
    let result = store.put_stream(lease, reader);
    if let Some(e) = failed {
        return Err(damaged(format!("does not decompress: {e}")));
    }
    let (h, n, _) = result?;
    if h != o.0 || n != o.1 {
        return Err(damaged(format!("does not match its blake3 (got {n} bytes hashing to {h})")));
    }
    Ok(())
}

/// A reader that keeps its first error aside, so that a damaged frame is reported as damaged
/// remote data rather than an I/O error on the store.
struct ErrAt<'a, R> {
    inner: R,
    failed: &'a mut Option<std::io::Error>,
}

impl<R: Read> Read for ErrAt<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if self.failed.is_none() {
                *self.failed = Some(std::io::Error::new(e.kind(), e.to_string()));
            }
        })
    }
}
