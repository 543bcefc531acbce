//! Ingest: turn a directory tree or a tar stream into a snapshot.
//!
//! Directory ingest walks through directory handles (never following a symlink below the top),
//! then hashes and stores regular files in
//! parallel (rayon), streaming large files. Tar ingest reads the stream once, storing each file
//! as it passes. Both build a [`Manifest`], which validates the tree, and publish it with one
//! filesystem sync (see [`Store::publish_snapshot`]).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::store::lock::sweep_dead_leases;
use crate::store::manifest::{parent_of, path_problem, show, target_problem};
use crate::store::object::Stored;
use crate::store::snapshot::SnapshotMeta;
use crate::store::{Entry, Lease, Manifest, Node, Store, StoreLock};
use crate::sys::beneath::{Kind, Tree};

/// Receives ingest progress (the CLI draws a bar; the library default does nothing).
pub trait Progress: Sync {
    /// The walk found `files` regular files totalling `bytes`.
    fn start(&self, _files: u64, _bytes: u64) {}
    /// One more file of `bytes` bytes is stored.
    fn advance(&self, _bytes: u64) {}
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

/// What to ingest and how.
#[derive(Clone, Debug, Default)]
pub struct IngestOptions {
    /// Ref to point at the new snapshot.
    pub name: Option<String>,
    /// Labels recorded in the snapshot's meta.json.
    pub labels: BTreeMap<String, String>,
    /// Skip devices, FIFOs and sockets (listed as warnings) instead of refusing them.
    pub skip_special: bool,
    /// Relative paths (raw bytes) left out of a directory ingest, with everything below them.
    pub exclude: Vec<Vec<u8>>,
}

/// What an ingest did. JSON names are a contract (docs/cli.md).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestReport {
    /// The snapshot id.
    pub id: Hash,
    /// The ref set, if any.
    pub name: Option<String>,
    /// Entries in the manifest (root included).
    pub entries: u64,
    /// Regular files.
    pub files: u64,
    /// Directories (root included).
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Total bytes of regular files.
    pub bytes: u64,
    /// Objects this ingest added to the store.
    pub new_objects: u64,
    /// Bytes of those objects.
    pub new_bytes: u64,
    /// Files whose content was already stored (by earlier ingests or earlier in this one).
    pub reused_objects: u64,
    /// Bytes of those files.
    pub reused_bytes: u64,
    /// Whether the snapshot did not exist before.
    pub new_snapshot: bool,
    /// Wall time of the whole ingest.
    pub elapsed_ms: f64,
    /// Skipped special files and similar notices.
    pub warnings: Vec<String>,
}

#[derive(Default)]
struct Tally {
    new_objects: AtomicU64,
    new_bytes: AtomicU64,
    reused_objects: AtomicU64,
    reused_bytes: AtomicU64,
}

impl Tally {
    fn add(&self, stored: Stored, bytes: u64) {
        let (n, b) = match stored {
            Stored::New => (&self.new_objects, &self.new_bytes),
            Stored::Present => (&self.reused_objects, &self.reused_bytes),
        };
        n.fetch_add(1, Ordering::Relaxed);
        b.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// The state every ingest holds: the shared store lock (gc waits) and a lease for temp files.
struct Session<'a> {
    store: &'a Store,
    lease: Lease,
    _lock: StoreLock,
    started: Instant,
    tally: Tally,
    warnings: Vec<String>,
}

impl<'a> Session<'a> {
    fn begin(store: &'a Store, opts: &IngestOptions) -> Result<Session<'a>> {
        if let Some(n) = &opts.name {
            crate::store::refs::validate_name(n)?;
        }
        for k in opts.labels.keys() {
            if k.is_empty() {
                return Err(Error::BadInput("label key is empty".into()));
            }
        }
        let lock = StoreLock::acquire(store, false)?;
        sweep_dead_leases(store)?;
        Ok(Session {
            store,
            // New objects stay in the lease until the snapshot is published: a failed or
            // killed ingest leaves none behind.
            lease: Lease::staging(store)?,
            _lock: lock,
            started: Instant::now(),
            tally: Tally::default(),
            warnings: Vec::new(),
        })
    }

    fn ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    fn finish(self, entries: Vec<Entry>, source: String, opts: &IngestOptions) -> Result<IngestReport> {
        self.finish_with_parents(entries, vec![], source, opts)
    }

    fn finish_with_parents(
        self,
        entries: Vec<Entry>,
        parents: Vec<Hash>,
        source: String,
        opts: &IngestOptions,
    ) -> Result<IngestReport> {
        let m = Manifest::from_input(parents, entries)?;
        let meta = SnapshotMeta { created: String::new(), source, labels: opts.labels.clone() };
        tracing::info!(ms = self.ms(), "manifest built");
        crate::sys::failpoint::hit("ingest.objects-stored");
        let (id, new_snapshot) = self.store.publish_snapshot(&self.lease, &m, meta)?;
        crate::sys::failpoint::hit("ingest.published");
        tracing::info!(ms = self.ms(), "snapshot published");
        if let Some(n) = &opts.name {
            self.store.set_ref(n, &id)?;
        }
        let c = crate::store::snapshot::Counts::of(&m);
        let t = &self.tally;
        Ok(IngestReport {
            id,
            name: opts.name.clone(),
            entries: c.entries,
            files: c.files,
            dirs: c.dirs,
            symlinks: c.symlinks,
            bytes: c.bytes,
            new_objects: t.new_objects.load(Ordering::Relaxed),
            new_bytes: t.new_bytes.load(Ordering::Relaxed),
            reused_objects: t.reused_objects.load(Ordering::Relaxed),
            reused_bytes: t.reused_bytes.load(Ordering::Relaxed),
            new_snapshot,
            elapsed_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            warnings: self.warnings,
        })
    }
}

impl Store {
    /// Ingest the directory `dir`. The walk goes through directory handles beneath `dir`
    /// (`sys::beneath`): a directory swapped for a symlink while it runs is recorded as that
    /// symlink or fails the ingest, and nothing outside `dir` is ever read.
    pub fn ingest_dir(&self, dir: &Path, opts: &IngestOptions, progress: &dyn Progress) -> Result<IngestReport> {
        let tree = Tree::open(dir).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => Error::BadInput(format!("{}: no such directory", dir.display())),
            Some(libc::ENOTDIR) => Error::BadInput(format!("{}: not a directory", dir.display())),
            _ => Error::io(dir, e),
        })?;
        let mut session = Session::begin(self, opts)?;
        let mut entries: Vec<Entry> = Vec::new();
        // (index into entries, relative path, size at walk time)
        let mut files: Vec<(usize, Vec<u8>, u64)> = Vec::new();
        let mut total_bytes = 0u64;
        let excluded = |rel: &[u8], _: &crate::sys::beneath::Meta| {
            opts.exclude.iter().any(|x| crate::store::manifest::is_at_or_below(rel, x))
        };
        let mut refused: Option<Error> = None;
        let walked = tree.walk(&excluded, &mut |found| {
            let m = found.meta;
            let node = match m.kind {
                Kind::Dir => Node::Dir,
                Kind::File => {
                    files.push((entries.len(), found.rel.clone(), m.size));
                    total_bytes += m.size;
                    // Hash filled in after the parallel pass.
                    Node::File { size: m.size, hash: Hash([0; 32]) }
                }
                Kind::Symlink => Node::Symlink { target: found.target.unwrap_or_default() },
                other => {
                    let what = match other {
                        Kind::Fifo => "a FIFO",
                        Kind::Socket => "a socket",
                        Kind::Block => "a block device",
                        _ => "a character device",
                    };
                    let path = tree.display(&found.rel);
                    if opts.skip_special {
                        session.warnings.push(format!("{}: skipped {what}", path.display()));
                        return Ok(());
                    }
                    refused = Some(Error::BadInput(format!(
                        "{}: is {what}; execroot stores only directories, regular files and symlinks (use --skip-special to skip it)",
                        path.display()
                    )));
                    return Err(std::io::Error::other("refused"));
                }
            };
            entries.push(Entry { path: found.rel, mode: m.mode, mtime_sec: m.mtime_sec, mtime_nsec: m.mtime_nsec, node });
            Ok(())
        });
        if let Some(e) = refused {
            return Err(e);
        }
        walked?;
        crate::sys::failpoint::hit("ingest.walked");
        tracing::info!(entries = entries.len(), files = files.len(), ms = session.ms(), "walked");
        progress.start(files.len() as u64, total_bytes);
        let hashes: Vec<(usize, Hash)> = {
            let s = &session;
            files
                .par_iter()
                .map(|(idx, rel, size)| {
                    let path = tree.display(rel);
                    let f = tree.open_file(rel).at(&path)?;
                    let (h, stored) = s.store.put_file(&s.lease, f, &path, *size)?;
                    s.tally.add(stored, *size);
                    progress.advance(*size);
                    Ok((*idx, h))
                })
                .collect::<Result<_>>()?
        };
        tracing::info!(ms = session.ms(), "files stored");
        for (idx, h) in hashes {
            if let Node::File { hash, .. } = &mut entries[idx].node {
                *hash = h;
            }
        }
        session.finish(entries, format!("dir:{}", dir.display()), opts)
    }

    /// Ingest a tar archive read from `input` (`source` names it in meta.json and errors).
    pub fn ingest_tar(
        &self,
        input: impl Read,
        source: &str,
        opts: &IngestOptions,
        progress: &dyn Progress,
    ) -> Result<IngestReport> {
        let mut session = Session::begin(self, opts)?;
        let mut tree = TarTree::default();
        let mut archive = tar::Archive::new(input);
        let bad = |what: String| Error::BadInput(format!("{source}: {what}"));
        let src_path = PathBuf::from(source);
        for item in archive.entries().map_err(|e| Error::io(&src_path, e))? {
            let mut item = item.map_err(|e| bad(format!("unreadable archive: {e}")))?;
            let header = item.header();
            let et = header.entry_type();
            if matches!(et, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader) {
                continue;
            }
            let raw = item.path_bytes().into_owned();
            refuse_pax_sparse(&mut item).map_err(|why| bad(format!("entry {}: {why}", show(&raw))))?;
            let header = item.header();
            let path = normalize_tar_path(&raw).map_err(|why| bad(format!("entry {}: {why}", show(&raw))))?;
            if path.is_empty() && et != tar::EntryType::Directory {
                return Err(bad(format!("entry {}: the top of the tree is not a directory", show(&raw))));
            }
            let mode = header.mode().map_err(|e| bad(format!("entry {}: {e}", show(&raw))))? & 0o7777;
            let mtime = header.mtime().unwrap_or(0) as i64;
            let node = match et {
                tar::EntryType::Directory => Node::Dir,
                // The tar crate expands a GNU sparse member ('S') as it is read, holes as zeros.
                tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                    // Refuse before the content is stored, so a bad archive adds nothing.
                    tree.admit(&path, false).map_err(bad)?;
                    let (h, n, stored) = self.put_stream(&session.lease, &mut item)?;
                    session.tally.add(stored, n);
                    progress.advance(n);
                    Node::File { size: n, hash: h }
                }
                tar::EntryType::Symlink => {
                    let target = item
                        .link_name_bytes()
                        .ok_or_else(|| bad(format!("entry {}: symlink without target", show(&raw))))?;
                    if let Some(why) = target_problem(&target) {
                        return Err(bad(format!("entry {}: {why}", show(&raw))));
                    }
                    Node::Symlink { target: target.into_owned() }
                }
                tar::EntryType::Link => {
                    let target = item
                        .link_name_bytes()
                        .ok_or_else(|| bad(format!("entry {}: hardlink without target", show(&raw))))?;
                    let target = normalize_tar_path(&target)
                        .map_err(|why| bad(format!("entry {}: hardlink target: {why}", show(&raw))))?;
                    match tree.get(&target).map(|e| &e.node) {
                        Some(n @ Node::File { size, .. }) => {
                            session.tally.add(Stored::Present, *size);
                            n.clone()
                        }
                        _ => {
                            return Err(bad(format!(
                                "entry {}: hardlink to {}, which is not an earlier regular file",
                                show(&raw),
                                show(&target)
                            )))
                        }
                    }
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    if opts.skip_special {
                        session.warnings.push(format!("{source}: entry {}: skipped special file", show(&raw)));
                        continue;
                    }
                    return Err(bad(format!(
                        "entry {}: is a device or FIFO (use --skip-special to skip it)",
                        show(&raw)
                    )));
                }
                other => return Err(bad(format!("entry {}: unsupported entry type {other:?}", show(&raw)))),
            };
            tree.insert(Entry { path, mode, mtime_sec: mtime, mtime_nsec: 0, node }).map_err(bad)?;
        }
        session.finish(tree.into_entries(), format!("tar:{source}"), opts)
    }
}

/// One path of a staged change ([`Store::ingest_staged_change`]): a file or symlink whose
/// content was written apart from its path, in a flat staging directory (no directory to make
/// per path: on a slow filesystem each mkdir costs what a dozen small files do).
pub struct Staged {
    /// The path it takes in the tree.
    pub path: Vec<u8>,
    /// The staged file's name in the staging directory: the content of a file, or the target
    /// of a symlink.
    pub source: Vec<u8>,
    /// A symlink (whose target is the staged file's content), else a regular file.
    pub symlink: bool,
    /// The permission bits the path takes (a symlink's are ignored).
    pub mode: u32,
}

/// The entries of a change snapshot: `top` (the tree's root), every entry of `written`, a
/// whiteout at each path of `deleted` that is not below another deletion nor below something
/// that is no longer a directory (`is_dir` of its parent false), and each directory leading
/// to them, as `ancestor` makes it.
fn change_entries(
    top: Entry,
    written: impl IntoIterator<Item = Result<Entry>>,
    deleted: &[Vec<u8>],
    ancestor: &dyn Fn(&[u8]) -> Result<Entry>,
    is_dir: &dyn Fn(&[u8]) -> bool,
) -> Result<Vec<Entry>> {
    use std::collections::btree_map;
    let sort_key = crate::store::manifest::canonical_sort_key;
    let mut entries: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
    let mut with_ancestors = |e: Entry| -> Result<()> {
        let mut a = e.path.as_slice();
        while !a.is_empty() {
            a = parent_of(a);
            if let btree_map::Entry::Vacant(v) = entries.entry(sort_key(a)) {
                v.insert(ancestor(a)?);
            }
        }
        entries.insert(sort_key(&e.path), e);
        Ok(())
    };
    with_ancestors(top)?;
    for e in written {
        with_ancestors(e?)?;
    }
    let deleted_set: std::collections::HashSet<&[u8]> = deleted.iter().map(Vec::as_slice).collect();
    for rel in deleted {
        let parent = parent_of(rel);
        // Below a deleted directory, or under something that is no longer a directory: the
        // change at the parent already hides it.
        if deleted_set.contains(parent) || !is_dir(parent) {
            continue;
        }
        with_ancestors(Entry { path: rel.to_vec(), mode: 0, mtime_sec: 0, mtime_nsec: 0, node: Node::Whiteout })?;
    }
    Ok(entries.into_values().collect())
}

impl Store {
    /// Record a change to a tree as a snapshot on top of `parents`: every path of `written` as
    /// found in `cwd` (file contents stored as objects), a whiteout at each topmost path of
    /// `deleted`, and the directories leading to them. What changed is the caller's to find:
    /// the store knows nothing of diffs or roots.
    pub fn ingest_change(
        &self,
        cwd: &Path,
        written: &[Vec<u8>],
        deleted: &[Vec<u8>],
        parents: Vec<Hash>,
        opts: &IngestOptions,
    ) -> Result<IngestReport> {
        let tree = Tree::open(cwd).at(cwd)?;
        let session = Session::begin(self, opts)?;
        crate::sys::failpoint::hit("change.reading");
        // Every path is read beneath `cwd`'s handle: a run that swaps a directory for a symlink
        // while its change is recorded makes the commit fail or record the symlink, never read
        // what the symlink points at.
        let entry_at = |rel: &[u8]| -> Result<Entry> {
            let p = tree.display(rel);
            let md = tree.lstat(rel).at(&p)?.ok_or_else(|| {
                Error::Conflict(format!("{}: removed while its change was being recorded", p.display()))
            })?;
            let node = match md.kind {
                Kind::Dir => Node::Dir,
                Kind::Symlink => Node::Symlink { target: tree.read_link(rel).at(&p)? },
                Kind::File => {
                    let f = tree.open_file(rel).at(&p)?;
                    let (hash, stored) = self.put_file(&session.lease, f, &p, md.size)?;
                    session.tally.add(stored, md.size);
                    Node::File { size: md.size, hash }
                }
                _ => return Err(Error::BadInput(format!("{}: special files cannot be committed", p.display()))),
            };
            Ok(Entry { path: rel.to_vec(), mode: md.mode, mtime_sec: md.mtime_sec, mtime_nsec: md.mtime_nsec, node })
        };
        let is_dir = |rel: &[u8]| tree.lstat(rel).ok().flatten().is_some_and(|m| m.is_dir());
        let entries = change_entries(entry_at(b"")?, written.iter().map(|r| entry_at(r)), deleted, &entry_at, &is_dir)?;
        session.finish_with_parents(entries, parents, format!("root:{}", cwd.display()), opts)
    }

    /// [`Store::ingest_change`] of a change staged flat in `dir` ([`Staged`]): each path of
    /// `written` takes its staged file's content (a file's stored as an object) and the mode
    /// given; the root and every directory leading to a path is recorded as `dir_entry`
    /// (whose path is ignored) says, and a whiteout goes at each topmost path of `deleted`.
    pub fn ingest_staged_change(
        &self,
        dir: &Path,
        written: &[Staged],
        deleted: &[Vec<u8>],
        dir_entry: &Entry,
        parents: Vec<Hash>,
        opts: &IngestOptions,
    ) -> Result<IngestReport> {
        let tree = Tree::open(dir).at(dir)?;
        let session = Session::begin(self, opts)?;
        crate::sys::failpoint::hit("change.reading");
        let staged = |s: &Staged| -> Result<Entry> {
            let p = tree.display(&s.source);
            let md = tree.lstat(&s.source).at(&p)?.filter(|m| m.kind == Kind::File).ok_or_else(|| {
                Error::Conflict(format!("{}: the staged file is missing or not a regular file", p.display()))
            })?;
            let f = tree.open_file(&s.source).at(&p)?;
            let node = if s.symlink {
                let mut target = Vec::new();
                (&f).read_to_end(&mut target).at(&p)?;
                target_problem(&target)
                    .map_or(Ok(()), |why| Err(Error::BadInput(format!("{}: {why}", show(&s.path)))))?;
                Node::Symlink { target }
            } else {
                let (hash, stored) = self.put_file(&session.lease, f, &p, md.size)?;
                session.tally.add(stored, md.size);
                Node::File { size: md.size, hash }
            };
            let mode = if s.symlink { 0o777 } else { s.mode & 0o7777 };
            Ok(Entry { path: s.path.clone(), mode, mtime_sec: md.mtime_sec, mtime_nsec: md.mtime_nsec, node })
        };
        let ancestor = |rel: &[u8]| Ok(Entry { path: rel.to_vec(), node: Node::Dir, ..dir_entry.clone() });
        let files: std::collections::HashSet<&[u8]> = written.iter().map(|s| s.path.as_slice()).collect();
        let is_dir = |rel: &[u8]| !files.contains(rel);
        let entries = change_entries(ancestor(b"")?, written.iter().map(staged), deleted, &ancestor, &is_dir)?;
        session.finish_with_parents(entries, parents, format!("staged:{}", dir.display()), opts)
    }

    /// The empty snapshot: a root directory (mode 0755, mtime 0) and nothing else, without
    /// parents; the same id in every store. A change layer whose only parent it is records a
    /// change (whiteouts included: they need parents) that stacks on any base, as a provision
    /// layer does (docs/format.md, "Provision layers").
    pub fn empty_snapshot(&self) -> Result<Hash> {
        let opts = IngestOptions::default();
        let session = Session::begin(self, &opts)?;
        let top = Entry { path: Vec::new(), mode: 0o755, mtime_sec: 0, mtime_nsec: 0, node: Node::Dir };
        Ok(session.finish_with_parents(vec![top], vec![], "empty".into(), &opts)?.id)
    }
}

/// Turn a tar member name into a manifest path: strip `./` prefixes and a trailing `/`, then
/// apply the manifest path rules (so `..`, absolute and empty-component names are refused).
fn normalize_tar_path(raw: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut p = raw;
    while let Some(rest) = p.strip_prefix(b"./") {
        p = rest;
    }
    while let Some(rest) = p.strip_suffix(b"/") {
        p = rest;
    }
    if p.is_empty() || p == b"." {
        return Ok(Vec::new());
    }
    match path_problem(p) {
        Some(why) => Err(format!("invalid path: {why}")),
        None => Ok(p.to_vec()),
    }
}

/// Refuse a member of a pax-format sparse archive (GNU tar `--sparse --format=posix`, any of
/// its versions 0.0, 0.1 and 1.0): the tar crate does not expand those, so the member would be
/// stored as a file named `GNUSparseFile.NNNN/...` holding the raw sparse map and data. The
/// `GNU.sparse.*` keys of the member's pax header are what mark one.
fn refuse_pax_sparse<R: Read>(item: &mut tar::Entry<'_, R>) -> std::result::Result<(), String> {
    let Some(exts) = item.pax_extensions().map_err(|e| format!("unreadable pax header: {e}"))? else {
        return Ok(());
    };
    for ext in exts {
        let ext = ext.map_err(|e| format!("unreadable pax header: {e}"))?;
        if ext.key_bytes().starts_with(b"GNU.sparse.") {
            return Err("a pax-format sparse file (GNU.sparse.* keys), which execroot does not read; \
                 write the archive without --sparse, or in GNU format (tar --format=gnu --sparse)"
                .into());
        }
    }
    Ok(())
}

/// The tree a tar stream builds, with directories the archive leaves implicit.
#[derive(Default)]
struct TarTree {
    entries: Vec<Entry>,
    index: HashMap<Vec<u8>, usize>,
    /// Directories made up for a parent the archive did not list (an explicit entry may follow).
    implicit: std::collections::HashSet<Vec<u8>>,
}

impl TarTree {
    fn get(&self, path: &[u8]) -> Option<&Entry> {
        self.index.get(path).map(|&i| &self.entries[i])
    }

    /// Refuse a duplicate entry, or one below something that is not a directory (a symlink
    /// used as a parent). An explicit directory may replace one the tree made up.
    fn admit(&self, path: &[u8], is_dir: bool) -> std::result::Result<(), String> {
        if self.index.contains_key(path) && !(is_dir && self.implicit.contains(path)) {
            return Err(format!("duplicate entry {}", show(path)));
        }
        let mut p = path;
        while !p.is_empty() {
            p = parent_of(p);
            if let Some(e) = self.get(p) {
                if !e.node.is_dir() {
                    return Err(format!("entry {}: parent {} is a {}", show(path), show(p), e.node.kind_name()));
                }
                return Ok(());
            }
        }
        Ok(())
    }

    fn insert(&mut self, e: Entry) -> std::result::Result<(), String> {
        self.admit(&e.path, e.node == Node::Dir)?;
        if !e.path.is_empty() {
            let parent = parent_of(&e.path).to_vec();
            if !self.index.contains_key(&parent) {
                self.insert(Entry { path: parent.clone(), mode: 0o755, mtime_sec: 0, mtime_nsec: 0, node: Node::Dir })?;
                self.implicit.insert(parent);
            }
        }
        if let Some(&i) = self.index.get(&e.path) {
            // admit() allowed it: an explicit directory replacing an implicit one.
            self.implicit.remove(&e.path);
            self.entries[i] = e;
            return Ok(());
        }
        self.index.insert(e.path.clone(), self.entries.len());
        self.entries.push(e);
        Ok(())
    }

    fn into_entries(mut self) -> Vec<Entry> {
        if !self.index.contains_key(&Vec::new()) {
            self.entries.push(Entry { path: vec![], mode: 0o755, mtime_sec: 0, mtime_nsec: 0, node: Node::Dir });
        }
        self.entries
    }
}
