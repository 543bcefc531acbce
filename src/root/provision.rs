//! Provision layers (`root create --provision CMD --provision-inputs PATHS`): a dependency tree
//! built once per set of inputs and stacked on every later root of the same inputs.
//!
//! The key ([`provision_key`], docs/format.md "Provision keys") names what the command's output
//! depends on. On a miss, under the key's lock (never the store lock while the command runs),
//! a temporary root of the base is made (for a repository root: a plain root of its base
//! commit's checkout snapshot), the command runs in it as the root's owner with a clean
//! environment and a timeout, what it added, changed or deleted is committed as a change layer
//! on the empty snapshot (so that it stacks on any base of the same inputs, its deletions as
//! whiteouts: docs/format.md "Provision layers"), and the record
//! `STORE/provisions/<key>/record.json` is published by rename: it is the only mark of a
//! finished layer, so a build killed at any point leaves nothing a later create takes for one
//! (its temporary root is destroyed by the next build of the key, or by `doctor --repair`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::backend::worktree::BaseFile;
use crate::backend::BackendKind;
use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::root::exec::ExecRequest;
use crate::root::{elapsed_ms, CreateRequest, RootRecord};
use crate::store::ingest::IngestOptions;
use crate::store::manifest::{cmp_paths, path_problem};
use crate::store::Node;
use crate::sys::Owner;
use crate::Store;

/// The command's timeout when the request gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Lines of the log a failed build's error ends with.
pub const LOG_TAIL_LINES: usize = 20;

/// The label a build's temporary root carries: the key it builds.
pub const BUILD_LABEL: &str = "execroot.provision-build";

/// The version of `record.json`.
pub const RECORD_VERSION: u32 = 1;

/// First bytes of the key's canonical encoding (its last byte is the encoding's version).
pub const KEY_MAGIC: &[u8; 8] = b"EXRPROV\x01";

/// What the key covers besides the inputs, the command, the listed variables and the owner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Also the base's layers: a layer is reused only on exactly the same base.
    Base,
    /// Only the inputs: a layer is reused on any base whose inputs are the same.
    #[default]
    Inputs,
}

impl Scope {
    /// The name used in flags and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Base => "base",
            Scope::Inputs => "inputs",
        }
    }

    /// Parse `base` or `inputs`.
    pub fn parse(s: &str) -> Result<Scope> {
        match s {
            "base" => Ok(Scope::Base),
            "inputs" => Ok(Scope::Inputs),
            _ => Err(Error::BadInput(format!("--provision-scope {s:?}: must be base or inputs"))),
        }
    }
}

/// The `provision` of a create request (`--provision*` flags, the service's `provision` object).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProvisionRequest {
    /// Run as `/bin/sh -c COMMAND` in the root's directory.
    pub command: String,
    /// Files the command's output depends on, relative to the root (at least one).
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Whether the base's layers are part of the key.
    #[serde(default)]
    pub scope: Scope,
    /// Names of variables passed to the command, their values part of the key (taken from the
    /// environment of the process that creates the root).
    #[serde(default)]
    pub env: Vec<String>,
    /// Kill the command after this many seconds (default [`DEFAULT_TIMEOUT`]).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// The provision layer a root got (its JSON's `provision`, recorded in `state.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionUse {
    /// The provision key (64 hex digits).
    pub key: String,
    /// The layer's snapshot, the top of the root's `snapshots`.
    pub snapshot: Hash,
    /// True when the layer existed and no command ran.
    pub hit: bool,
    /// Seconds since the layer was built.
    pub age_secs: u64,
    /// The build's log.
    pub log: PathBuf,
    /// True when the layer was copied into the root's tree (the copy backend) rather than
    /// stacked under it as an overlay layer.
    #[serde(default)]
    pub copied_in: bool,
}

/// `STORE/provisions/<key>/record.json`: a finished layer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionRecord {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// The key.
    pub key: String,
    /// The layer's snapshot.
    pub snapshot: Hash,
    /// The command.
    pub command: String,
    /// The inputs with their content hashes as the key took them.
    pub inputs: BTreeMap<String, Hash>,
    /// The scope.
    pub scope: Scope,
    /// Names of the variables in the key.
    pub env: Vec<String>,
    /// Who the command ran as (part of the key).
    pub owner: Owner,
    /// When the layer was built (RFC 3339).
    pub created_at: String,
}

/// One entry of `provision list`, and `provision show`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionInfo {
    /// The key.
    pub key: String,
    /// The layer's snapshot.
    pub snapshot: Hash,
    /// The input paths.
    pub inputs: Vec<String>,
    /// The command.
    pub command: String,
    /// Bytes of the files the layer holds (its manifest's sizes); null when it cannot be read.
    pub bytes: Option<u64>,
    /// When it was built (RFC 3339).
    pub created_at: String,
    /// When a create last used it (RFC 3339).
    pub last_used_at: String,
    /// The build's log.
    pub log: PathBuf,
    /// The roots that use it (`provision show` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roots: Option<Vec<String>>,
    /// `last_used_at` to the nanosecond, for ordering.
    #[serde(skip)]
    pub last_used: SystemTime,
}

/// `provision list`.
#[derive(Clone, Debug, Serialize)]
pub struct ProvisionList {
    /// Every finished provision layer, most recently used first.
    pub provisions: Vec<ProvisionInfo>,
}

/// `provision rm`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionRemoved {
    /// The key removed.
    pub key: String,
    /// Its snapshot, left to gc.
    pub snapshot: Hash,
}

/// gc's policy for provision layers: without either limit every layer is kept. A layer a root
/// uses is always kept.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProvisionPolicy {
    /// Keep at most this many, the most recently used.
    pub keep: Option<usize>,
    /// Drop those not used for longer than this.
    pub max_age: Option<Duration>,
}

impl ProvisionPolicy {
    /// Whether the policy removes anything at all.
    pub fn is_keep_all(&self) -> bool {
        self.keep.is_none() && self.max_age.is_none()
    }
}

/// An input path as the key takes it: relative, `./` prefixes dropped, valid in a manifest.
fn normalize_input(raw: &str) -> Result<String> {
    let mut p = raw.trim_end_matches('/');
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    if p.is_empty() || p.starts_with('/') {
        return Err(Error::BadInput(format!("--provision-inputs {raw:?}: a path relative to the root")));
    }
    if let Some(why) = path_problem(p.as_bytes()) {
        return Err(Error::BadInput(format!("--provision-inputs {raw:?}: {why}")));
    }
    Ok(p.to_string())
}

/// The values of `names` in this process's environment (absent: `None`).
fn env_values(names: &[String]) -> Result<BTreeMap<String, Option<String>>> {
    let mut out = BTreeMap::new();
    for n in names {
        if n.is_empty() || n.contains('=') || n.contains('\0') {
            return Err(Error::BadInput(format!("--provision-env {n:?}: not a variable name")));
        }
        out.insert(n.clone(), std::env::var(n).ok());
    }
    Ok(out)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// The provision key: blake3 of the canonical encoding (docs/format.md, "Provision keys"):
/// [`KEY_MAGIC`]; the scope (`u8`, 0 inputs, 1 base); the command; the owner's uid and gid
/// (`u32` each: the command runs with that user's rights and home, so layers are never shared
/// between users); the inputs sorted bytewise, each its path and the blake3 of its content in
/// the base; the base's layers (bottom first) for scope `base`; the listed variables sorted by
/// name, each its name, a presence byte and its value. Strings are a `u32` length and bytes;
/// lists a `u32` count; all little-endian.
pub fn provision_key(
    command: &str,
    scope: Scope,
    owner: Owner,
    inputs: &BTreeMap<String, Hash>,
    base_layers: &[Hash],
    env: &BTreeMap<String, Option<String>>,
) -> Hash {
    let mut out = Vec::new();
    out.extend_from_slice(KEY_MAGIC);
    out.push(match scope {
        Scope::Inputs => 0,
        Scope::Base => 1,
    });
    put_bytes(&mut out, command.as_bytes());
    out.extend_from_slice(&owner.uid.to_le_bytes());
    out.extend_from_slice(&owner.gid.to_le_bytes());
    out.extend_from_slice(&(inputs.len() as u32).to_le_bytes());
    for (p, h) in inputs {
        put_bytes(&mut out, p.as_bytes());
        out.extend_from_slice(&h.0);
    }
    if scope == Scope::Base {
        out.extend_from_slice(&(base_layers.len() as u32).to_le_bytes());
        for l in base_layers {
            out.extend_from_slice(&l.0);
        }
    }
    out.extend_from_slice(&(env.len() as u32).to_le_bytes());
    for (n, v) in env {
        put_bytes(&mut out, n.as_bytes());
        match v {
            Some(v) => {
                out.push(1);
                put_bytes(&mut out, v.as_bytes());
            }
            None => out.push(0),
        }
    }
    Hash::of(&out)
}

/// What a key with scope `base` takes for a repository root's base: its commit's tree id.
fn git_tree_layer(tree: &str) -> Hash {
    Hash::of(format!("execroot provision git tree {tree}").as_bytes())
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Write `bytes` to `dest` by a synced temporary file and a rename: a reader sees the whole
/// file or none.
fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = dest.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).at(&tmp)?;
    f.write_all(bytes).at(&tmp)?;
    f.sync_all().at(&tmp)?;
    std::fs::rename(&tmp, dest).at(dest)
}

impl Store {
    /// Directory of provision records.
    pub fn provisions_dir(&self) -> PathBuf {
        self.path().join("provisions")
    }

    fn provision_dir(&self, key: &str) -> PathBuf {
        self.provisions_dir().join(key)
    }

    /// The finished layer of `key`, if there is one. A record whose snapshot is gone (removed
    /// by hand with `snapshot rm --force`) is no layer: the next create builds it again.
    pub fn load_provision(&self, key: &str) -> Result<Option<ProvisionRecord>> {
        if key.len() != 64 || !crate::hash::is_lower_hex(key) {
            return Err(Error::BadInput(format!("provision key {key:?}: 64 lowercase hex digits")));
        }
        let path = self.provision_dir(key).join("record.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let rec: ProvisionRecord =
            serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))?;
        if rec.version != RECORD_VERSION || rec.key != key {
            return Err(Error::Corrupt(format!(
                "{}: version {} key {} is not a record this execroot reads for this key",
                path.display(),
                rec.version,
                rec.key
            )));
        }
        Ok(Some(rec))
    }

    /// The provision layer for a create (`None` without `req.provision`): found, or built once
    /// under the key's lock. Called before the create takes the store lock: the build makes a
    /// root, runs a command and commits, each of which takes that lock itself. Adds the step's
    /// times to the create's `timingsMs` (`provision`, and on a build its parts: docs/cli.md).
    pub(crate) fn provision_for_create(
        &self,
        req: &CreateRequest,
        timings: &mut BTreeMap<String, f64>,
    ) -> Result<Option<ProvisionUse>> {
        let Some(p) = &req.provision else { return Ok(None) };
        let t0 = Instant::now();
        let found = self.find_or_build_provision(req, p, timings);
        timings.insert("provision".into(), elapsed_ms(t0));
        found.map(Some)
    }

    fn find_or_build_provision(
        &self,
        req: &CreateRequest,
        p: &ProvisionRequest,
        timings: &mut BTreeMap<String, f64>,
    ) -> Result<ProvisionUse> {
        if p.command.trim().is_empty() {
            return Err(Error::BadInput("--provision: the command must not be empty".into()));
        }
        if p.inputs.is_empty() {
            return Err(Error::BadInput("--provision needs --provision-inputs PATHS (the files it depends on)".into()));
        }
        let config = self.config()?;
        let owner = match &req.owner {
            Some(o) => Owner::parse(o)?,
            None => config.owner.as_deref().map(Owner::parse).transpose()?.unwrap_or_else(Owner::current),
        };
        let paths: Vec<String> = p.inputs.iter().map(|raw| normalize_input(raw)).collect::<Result<_>>()?;
        let mut inputs = BTreeMap::new();
        let (owner, layers, tree) = if let Some(repo) = &req.repo {
            // A repository's root: the inputs as the base commit holds them, and (scope base)
            // its tree. A worktree belongs to the repository's owner unless one is given.
            let rev = req.base_ref.as_deref().ok_or_else(|| Error::BadInput("--repo needs --base-ref REF".into()))?;
            let (tree, files, repo_owner) = crate::backend::worktree::base_files(self, repo, rev, &paths)?;
            for (path, f) in paths.iter().zip(files) {
                let hash = match f {
                    BaseFile::Blob(bytes) => Hash::of(&bytes),
                    BaseFile::Other(kind) => {
                        return Err(Error::BadInput(format!(
                            "provision input {path:?} is a {kind} in {rev}, not a file"
                        )))
                    }
                    BaseFile::Missing => {
                        return Err(Error::BadInput(format!("provision input {path:?} is not in {rev}")))
                    }
                };
                inputs.insert(path.clone(), hash);
            }
            let owner = if req.owner.is_some() || config.owner.is_some() { owner } else { repo_owner };
            (owner, vec![git_tree_layer(&tree)], Some(tree))
        } else {
            let from: Vec<Hash> = req.from.iter().map(|s| self.resolve(s)).collect::<Result<_>>()?;
            let base = self.flatten_stack(&from)?;
            for path in &paths {
                let found = base.binary_search_by(|e| cmp_paths(&e.path, path.as_bytes()));
                let hash = match found.map(|i| &base[i].node) {
                    Ok(Node::File { hash, .. }) => *hash,
                    Ok(other) => {
                        return Err(Error::BadInput(format!(
                            "provision input {path:?} is a {} in the base, not a file",
                            other.kind_name()
                        )))
                    }
                    Err(_) => {
                        return Err(Error::BadInput(format!(
                            "provision input {path:?} is not in the base ({})",
                            if req.from.is_empty() { "no --from".to_string() } else { req.from.join(", ") }
                        )))
                    }
                };
                inputs.insert(path.clone(), hash);
            }
            (owner, self.layer_stack(&from)?, None)
        };
        let env = env_values(&p.env)?;
        let layers = if p.scope == Scope::Base { layers } else { vec![] };
        let key = provision_key(&p.command, p.scope, owner, &inputs, &layers, &env).to_hex();
        self.top_dir("provisions")?;
        if let Some(u) = self.provision_hit(&key)? {
            return Ok(u);
        }
        // One build per key: the others wait here, then find the layer.
        let _lock = self.named_lock(&format!("prov-{key}"))?;
        if let Some(u) = self.provision_hit(&key)? {
            return Ok(u);
        }
        let rec = ProvisionRecord {
            version: RECORD_VERSION,
            key: key.clone(),
            snapshot: Hash([0; 32]),
            command: p.command.clone(),
            inputs,
            scope: p.scope,
            env: env.keys().cloned().collect(),
            owner,
            created_at: String::new(),
        };
        let snapshot = self.build_provision(req, p, rec, tree.as_deref(), &env, timings)?;
        Ok(ProvisionUse {
            key: key.clone(),
            snapshot,
            hit: false,
            age_secs: 0,
            log: self.provision_log(&key),
            copied_in: false,
        })
    }

    /// The log of `key`'s build.
    pub fn provision_log(&self, key: &str) -> PathBuf {
        self.provision_dir(key).join("log")
    }

    /// `key`'s layer as a hit (its use recorded), or `None`.
    fn provision_hit(&self, key: &str) -> Result<Option<ProvisionUse>> {
        let Some(rec) = self.load_provision(key)? else { return Ok(None) };
        if !self.snapshot_dir(&rec.snapshot).join("manifest").exists() {
            return Ok(None);
        }
        // lastUsedAt is the mtime of `used`: a hit writes no data block.
        let used = self.provision_dir(key).join("used");
        let now = SystemTime::now();
        let t = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        crate::store::set_mtime(&used, t.as_secs() as i64, t.subsec_nanos() as i64)?;
        let built = humantime::parse_rfc3339(&rec.created_at).unwrap_or(now);
        Ok(Some(ProvisionUse {
            key: key.to_string(),
            snapshot: rec.snapshot,
            hit: true,
            age_secs: now.duration_since(built).unwrap_or_default().as_secs(),
            log: self.provision_log(key),
            copied_in: false,
        }))
    }

    /// Destroy the temporary root of a build that is not running (its key's lock is free or
    /// held by the caller), killing first whatever its command left running in it: a command
    /// dies with a killed execroot, but its own children (a package manager's workers) do not.
    /// The root is execroot's scaffolding, never a run's, so nothing of a user's is killed.
    pub(crate) fn destroy_build_root(&self, rec: &RootRecord) -> Result<crate::root::Destroyed> {
        let killed = crate::sys::procs::kill_users_of(&rec.cwd, 20);
        if !killed.is_empty() {
            tracing::warn!(root = %rec.id, ?killed, "killed what a dead provision build left running");
        }
        self.destroy_root(&rec.id, true)
    }

    /// Destroy the temporary roots earlier builds of `key` left (the caller holds the key's
    /// lock, so no live build owns them). Returns what could not be destroyed.
    fn sweep_build_roots(&self, key: &str) -> Result<Vec<String>> {
        let mut left = Vec::new();
        for r in self.scan_roots()?.roots {
            let Some(k) = r.labels.get(BUILD_LABEL) else { continue };
            if key != k {
                continue;
            }
            match self.destroy_build_root(&r) {
                Ok(d) if d.cleaned => {}
                Ok(d) => left.push(format!("temporary root {} of provision {k}: {}", r.id, d.warnings.join("; "))),
                Err(e) => left.push(format!("temporary root {} of provision {k}: {e}", r.id)),
            }
        }
        Ok(left)
    }

    /// Build `rec.key`'s layer as `rec.owner` (the caller holds the key's lock) and publish its
    /// record; `tree` is a repository root's base tree, whose checkout the build runs on.
    fn build_provision(
        &self,
        req: &CreateRequest,
        p: &ProvisionRequest,
        mut rec: ProvisionRecord,
        tree: Option<&str>,
        env: &BTreeMap<String, Option<String>>,
        timings: &mut BTreeMap<String, f64>,
    ) -> Result<Hash> {
        let key = rec.key.clone();
        let t0 = Instant::now();
        self.sweep_build_roots(&key)?;
        let dir = self.provision_dir(&key);
        crate::store::perms::make_dir(&dir, 0o700)?;
        // A record whose snapshot went is replaced below; until then it is no layer.
        let _ = std::fs::remove_file(dir.join("record.json"));
        let labels = BTreeMap::from([(BUILD_LABEL.to_string(), key.clone())]);
        let tmp_req = match (&req.repo, tree) {
            // A plain root of the base commit's checkout (no worktree: the command gets no
            // `.git` to change the repository through), as the root's owner.
            (Some(repo), Some(tree)) => CreateRequest {
                class: Some(crate::policy::Class::Preview),
                from: vec![self.checkout_for_build(req, repo, tree, &labels)?.to_hex()],
                owner: Some(rec.owner.uid.to_string()),
                labels,
                ..Default::default()
            },
            _ => CreateRequest {
                class: req.class,
                from: req.from.clone(),
                backend: req.backend,
                owner: req.owner.clone(),
                labels,
                ..Default::default()
            },
        };
        let tmp = self.create_root(&tmp_req)?;
        timings.insert("provisionRoot".into(), elapsed_ms(t0));
        let result = self.run_and_commit(&tmp.id, p, &key, env, timings);
        // The temporary root goes whatever happened; a failure to remove it is the next
        // build's (or doctor's) to finish, and does not hide the build's own outcome.
        let t1 = Instant::now();
        let destroyed = self.destroy_root(&tmp.id, true);
        timings.insert("provisionDestroy".into(), elapsed_ms(t1));
        let snapshot = result?;
        if let Err(e) = destroyed {
            tracing::warn!(root = %tmp.id, "temporary provision root kept: {e}");
        }
        rec.snapshot = snapshot;
        rec.created_at = crate::store::snapshot::now_rfc3339();
        let used = dir.join("used");
        std::fs::File::create(&used).at(&used)?;
        let mut json = serde_json::to_vec_pretty(&rec).expect("serializable");
        json.push(b'\n');
        write_atomic(&dir.join("record.json"), &json)?;
        crate::sys::failpoint::hit("provision.recorded");
        Ok(snapshot)
    }

    /// Run the command in temporary root `id`, write its log, and commit what it added,
    /// changed or deleted as a change layer on the empty snapshot.
    fn run_and_commit(
        &self,
        id: &str,
        p: &ProvisionRequest,
        key: &str,
        env: &BTreeMap<String, Option<String>>,
        timings: &mut BTreeMap<String, f64>,
    ) -> Result<Hash> {
        let t0 = Instant::now();
        let timeout = p.timeout_secs.map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT);
        let exec = ExecRequest {
            command: "/bin/sh".into(),
            args: vec!["-c".into(), p.command.clone()],
            env: env.iter().filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v))).collect(),
            timeout_ms: Some(timeout.as_millis() as u64),
            ..Default::default()
        };
        crate::sys::failpoint::hit("provision.running");
        let r = self.exec_root(id, &exec)?;
        timings.insert("provisionCommand".into(), elapsed_ms(t0));
        let t1 = Instant::now();
        let log = self.provision_log(key);
        let mut text = String::new();
        text.push_str(&r.stdout);
        if r.stdout_truncated {
            text.push_str("\n[stdout truncated]\n");
        }
        if !r.stderr.is_empty() {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str("--- stderr ---\n");
            text.push_str(&r.stderr);
        }
        if r.stderr_truncated {
            text.push_str("\n[stderr truncated]\n");
        }
        write_atomic(&log, text.as_bytes())?;
        crate::sys::failpoint::hit("provision.command-done");
        let what = format!("provision command {:?}", p.command);
        if r.timed_out {
            return Err(Error::Timeout { what: format!("{what} (log {})", log.display()), secs: timeout.as_secs() });
        }
        if r.exit_code != Some(0) {
            let how = match &r.signal {
                Some(sig) => format!("killed by {sig}; "),
                None => String::new(),
            };
            return Err(Error::Tool {
                what,
                status: r.exit_code,
                stderr: format!(
                    "{how}nothing cached; last lines of the log:\n{}\nlog: {}",
                    tail(&text, LOG_TAIL_LINES),
                    log.display()
                ),
            });
        }
        let root = self.find_root(id)?;
        let spec = root.capture_spec(self)?;
        let diff = root.backend.diff(self, &spec)?;
        let opts = IngestOptions {
            name: None,
            labels: BTreeMap::from([("execroot.provision".to_string(), key.to_string())]),
            skip_special: false,
            exclude: spec.mount_subdirs.clone(),
        };
        // A change layer on the empty snapshot: it holds the command's deletions as whiteouts
        // (which need parents) and still stacks on any base of the same inputs.
        let empty = self.empty_snapshot()?;
        let report = self.ingest_change(&root.cwd, &diff.written(), &diff.removed(), vec![empty], &opts)?;
        timings.insert("provisionCommit".into(), elapsed_ms(t1));
        crate::sys::failpoint::hit("provision.committed");
        Ok(report.id)
    }

    /// The snapshot of the checkout of `tree` (a repository root's base commit's, whose inputs
    /// the key took) that its build runs on: the git-overlay backend's cached one
    /// (docs/format.md, "Checkout cache"), else made by a git-overlay root of the base ref,
    /// destroyed at once (it carries the build's label, so a kill leaves it to the next build
    /// or doctor like the build's own root).
    fn checkout_for_build(
        &self,
        req: &CreateRequest,
        repo: &Path,
        tree: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Hash> {
        use crate::backend::git_overlay::cached_checkout;
        let rev = req.base_ref.as_deref().unwrap_or_default();
        if let Some(id) = cached_checkout(self, repo, rev, tree)? {
            return Ok(id);
        }
        let made = self.create_root(&CreateRequest {
            class: Some(crate::policy::Class::RepoEdit),
            backend: Some(BackendKind::GitOverlay),
            repo: Some(repo.to_path_buf()),
            base_ref: req.base_ref.clone(),
            owner: req.owner.clone(),
            labels: labels.clone(),
            ..Default::default()
        })?;
        if let Err(e) = self.destroy_root(&made.id, true) {
            tracing::warn!(root = %made.id, "temporary root of a provision build kept: {e}");
        }
        if made.backend != BackendKind::GitOverlay {
            return Err(Error::BadInput(format!(
                "--provision on a root of {}: its checkout of {rev} cannot be made a snapshot to build on ({})",
                repo.display(),
                made.warnings.join("; ")
            )));
        }
        // The ref may have moved since the key read the inputs: never build on another tree.
        cached_checkout(self, repo, rev, tree)?.ok_or_else(|| {
            Error::Conflict(format!("--base-ref {rev} of {} moved while the build began; retry", repo.display()))
        })
    }

    /// Every finished provision layer (`provision list`), most recently used first. A record
    /// that cannot be read fails the listing (it is never taken for absent).
    pub fn list_provisions(&self) -> Result<ProvisionList> {
        let dir = self.provisions_dir();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ProvisionList { provisions: vec![] }),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let name = e.at(&dir)?.file_name();
            let Some(key) = name.to_str().filter(|k| k.len() == 64 && crate::hash::is_lower_hex(k)) else { continue };
            if let Some(rec) = self.load_provision(key)? {
                out.push(self.provision_info(&rec)?);
            }
        }
        out.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.key.cmp(&b.key)));
        Ok(ProvisionList { provisions: out })
    }

    fn provision_info(&self, rec: &ProvisionRecord) -> Result<ProvisionInfo> {
        let used = self.provision_dir(&rec.key).join("used");
        let last = std::fs::metadata(&used).and_then(|m| m.modified()).at(&used)?;
        let bytes = self.load_manifest(&rec.snapshot).ok().map(|m| {
            m.entries
                .iter()
                .map(|e| match e.node {
                    Node::File { size, .. } => size,
                    _ => 0,
                })
                .sum()
        });
        Ok(ProvisionInfo {
            key: rec.key.clone(),
            snapshot: rec.snapshot,
            inputs: rec.inputs.keys().cloned().collect(),
            command: rec.command.clone(),
            bytes,
            created_at: rec.created_at.clone(),
            last_used_at: rfc3339(last),
            log: self.provision_log(&rec.key),
            roots: None,
            last_used: last,
        })
    }

    fn provision_record(&self, key: &str) -> Result<ProvisionRecord> {
        self.load_provision(key)?.ok_or_else(|| Error::NotFound(format!("no provision layer {key}")))
    }

    /// Roots (ids) whose `provision` is `key`. Fails closed while any root's state cannot be read.
    fn provision_users(&self, key: &str) -> Result<Vec<String>> {
        let scan = self.scan_roots()?;
        scan.require_readable("removing a provision layer")?;
        Ok(scan
            .roots
            .into_iter()
            .filter(|r| r.provision.as_ref().is_some_and(|p| p.key == key))
            .map(|r| r.id)
            .collect())
    }

    /// `provision show KEY`: the layer with the roots that use it.
    pub fn show_provision(&self, key: &str) -> Result<ProvisionInfo> {
        let rec = self.provision_record(key)?;
        let mut info = self.provision_info(&rec)?;
        let scan = self.scan_roots()?;
        info.roots = Some(
            scan.roots
                .into_iter()
                .filter(|r| r.provision.as_ref().is_some_and(|p| p.key == key))
                .map(|r| r.id)
                .collect(),
        );
        Ok(info)
    }

    /// `provision rm KEY`: forget the layer (its snapshot is left to gc). Refused (conflict)
    /// while a root uses it. Under the key's lock, so that no build of it is under way.
    pub fn remove_provision(&self, key: &str) -> Result<ProvisionRemoved> {
        let rec = self.provision_record(key)?;
        let _lock = self.named_lock(&format!("prov-{key}"))?;
        let users = self.provision_users(key)?;
        if !users.is_empty() {
            return Err(Error::Conflict(format!("provision layer {key} is used by root(s) {}", users.join(", "))));
        }
        let dir = self.provision_dir(key);
        // The record goes first: from then on there is no layer, whatever else remains.
        std::fs::remove_file(dir.join("record.json")).at(dir.join("record.json"))?;
        std::fs::remove_dir_all(&dir).at(&dir)?;
        Ok(ProvisionRemoved { key: key.to_string(), snapshot: rec.snapshot })
    }

    /// Decide which provision layers gc keeps (`policy`), forgetting the others unless
    /// `dry_run`. Returns the snapshots to pin and the keys dropped. Called under gc's exclusive
    /// lock: no create finds a layer between this and the sweep. A layer a root uses is kept.
    pub(crate) fn provision_gc(&self, policy: ProvisionPolicy, dry_run: bool) -> Result<(Vec<Hash>, Vec<String>)> {
        let list = self.list_provisions()?.provisions;
        let scan = self.scan_roots()?;
        scan.require_readable("deleting provision layers")?;
        let used: std::collections::BTreeSet<&str> =
            scan.roots.iter().filter_map(|r| r.provision.as_ref().map(|p| p.key.as_str())).collect();
        let now = SystemTime::now();
        let (mut pins, mut dropped) = (Vec::new(), Vec::new());
        for (i, info) in list.iter().enumerate() {
            let last = info.last_used;
            let too_many = policy.keep.is_some_and(|n| i >= n);
            let too_old = policy.max_age.is_some_and(|a| now.duration_since(last).unwrap_or_default() > a);
            if used.contains(info.key.as_str()) || !(too_many || too_old) {
                pins.push(info.snapshot);
                continue;
            }
            if !dry_run {
                let dir = self.provision_dir(&info.key);
                std::fs::remove_file(dir.join("record.json")).at(dir.join("record.json"))?;
                std::fs::remove_dir_all(&dir).at(&dir)?;
            }
            dropped.push(info.key.clone());
        }
        Ok((pins, dropped))
    }

    /// Every provision layer's snapshot with its name (`provision KEY`): pins for `snapshot rm`.
    pub(crate) fn provision_pins(&self) -> Result<Vec<(Hash, String)>> {
        Ok(self
            .list_provisions()?
            .provisions
            .into_iter()
            .map(|p| (p.snapshot, format!("provision {}", p.key)))
            .collect())
    }

    /// doctor: the `ready` temporary roots of builds no longer running (their key's lock is
    /// free; it is held in the answer until they are destroyed). A build killed before its
    /// root was ready leaves a `creating` root, which doctor undoes like any other.
    pub(crate) fn dead_build_roots(&self) -> Result<Vec<(RootRecord, Option<crate::sys::lock::FileLock>)>> {
        let mut out = Vec::new();
        let mut locks: BTreeMap<String, Option<crate::sys::lock::FileLock>> = BTreeMap::new();
        for r in self.scan_roots()?.roots {
            if r.state != crate::root::State::Ready {
                continue;
            }
            let Some(key) = r.labels.get(BUILD_LABEL).cloned() else { continue };
            if !locks.contains_key(&key) {
                let l = self.try_named_lock(&format!("prov-{key}"))?;
                locks.insert(key.clone(), l);
            }
            if locks.get(&key).is_some_and(Option::is_some) {
                out.push((r, None));
            }
        }
        // Each lock travels with the first root of its key.
        for (r, l) in out.iter_mut() {
            if let Some(held) = locks.get_mut(&r.labels[BUILD_LABEL]) {
                *l = held.take();
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_with_each_part() {
        let o = Owner { uid: 1, gid: 1 };
        let inputs = BTreeMap::from([("package.json".to_string(), Hash::of(b"a"))]);
        let env = BTreeMap::new();
        let k = provision_key("i", Scope::Inputs, o, &inputs, &[], &env);
        assert_eq!(
            k,
            provision_key("i", Scope::Inputs, o, &inputs, &[Hash::of(b"x")], &env),
            "inputs scope ignores layers"
        );
        assert_ne!(k, provision_key("j", Scope::Inputs, o, &inputs, &[], &env));
        assert_ne!(k, provision_key("i", Scope::Base, o, &inputs, &[], &env));
        assert_ne!(k, provision_key("i", Scope::Inputs, Owner { uid: 2, gid: 1 }, &inputs, &[], &env));
        let other = BTreeMap::from([("package.json".to_string(), Hash::of(b"b"))]);
        assert_ne!(k, provision_key("i", Scope::Inputs, o, &other, &[], &env));
        let unset = BTreeMap::from([("X".to_string(), None)]);
        let empty = BTreeMap::from([("X".to_string(), Some(String::new()))]);
        assert_ne!(
            provision_key("i", Scope::Inputs, o, &inputs, &[], &unset),
            provision_key("i", Scope::Inputs, o, &inputs, &[], &empty)
        );
    }

    #[test]
    fn inputs_are_normalized_and_checked() {
        assert_eq!(normalize_input("./package.json").unwrap(), "package.json");
        assert_eq!(normalize_input("web/pnpm-lock.yaml").unwrap(), "web/pnpm-lock.yaml");
        assert!(normalize_input("/etc/passwd").is_err());
        assert!(normalize_input("../x").is_err());
        assert!(normalize_input("").is_err());
    }
}
