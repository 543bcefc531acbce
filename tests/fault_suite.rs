//! The standing fault suite (issue 9, section 5): at least 200 `kill -9` faults per run (env
//! `EXECROOT_SUITE_FAULTS`), at named failpoints and after random delays, across every store- and
//! root-changing operation. After each fault `doctor --repair` and `verify` run, then the
//! invariants are checked and counted:
//!
//! - corrupt: `doctor --repair` cannot repair, or `verify` reports a problem;
//! - lost: a snapshot a ref named before the operation (that the operation did not remove or
//!   move) is gone or differs, or a root the operation did not destroy is gone, or a file it held
//!   (written before the fault) is gone or changed;
//! - leaked: after doctor, a mount under the store that no root owns, a lease left in `tmp/`, a
//!   root directory without a root, a root not `ready`, a staged file in `snapshots/` or `refs/`,
//!   or a second `doctor` still finding something.
//!
//! The line `fault suite: seed=S faults=N corrupt=0 lost=0 leaked=0` is printed on stdout and
//! stderr; every count but `faults` must be 0. The run is driven by a seeded RNG (env
//! `EXECROOT_SUITE_SEED`, printed) so a failure replays. Root operations need mounts and follow
//! the `needs_root` rule (`EXECROOT_REQUIRE_MOUNT=1` makes them mandatory); without them only the
//! store operations run.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use execroot::{Hash, Store};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

/// Every store- and root-changing operation the suite kills.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    IngestDir,
    IngestTar,
    SnapshotRm,
    RefSet,
    RefRm,
    CreateOverlay,
    CreateCopy,
    CreateWorktree,
    CreateGitOverlay,
    Commit,
    DestroyOverlay,
    DestroyCopy,
    DestroyWorktree,
    DestroyGitOverlay,
    Gc,
    DoctorRepair,
    VerifyRepair,
}

const STORE_OPS: &[Op] =
    &[Op::IngestDir, Op::IngestTar, Op::SnapshotRm, Op::RefSet, Op::RefRm, Op::Gc, Op::VerifyRepair];
const ROOT_OPS: &[Op] = &[
    Op::CreateOverlay,
    Op::CreateCopy,
    Op::CreateWorktree,
    Op::CreateGitOverlay,
    Op::Commit,
    Op::DestroyOverlay,
    Op::DestroyCopy,
    Op::DestroyWorktree,
    Op::DestroyGitOverlay,
    Op::DoctorRepair,
];

const INGEST_POINTS: &[&str] = &[
    "ingest.objects-stored",
    "snapshot.publish.staged",
    "snapshot.publish.renamed",
    "ingest.published",
    "ref.set.staged",
];
const DESTROY_POINTS: &[&str] = &["root.destroy.recorded", "root.destroy.backend-done", "root.destroy.files-removed"];
/// A worktree's destroy also passes its backend's points: after git removed the worktree (or
/// failed to), and after prune, before the branch is judged.
const WT_DESTROY_POINTS: &[&str] = &[
    "root.destroy.recorded",
    "worktree.destroy.git-removed",
    "worktree.destroy.pruned",
    "root.destroy.backend-done",
    "root.destroy.files-removed",
];

/// A git-overlay destroy: its own points between the unmount and the worktree backend's.
const GO_DESTROY_POINTS: &[&str] = &[
    "root.destroy.recorded",
    "git-overlay.destroy.unmounted",
    "git-overlay.destroy.unlocked",
    "worktree.destroy.git-removed",
    "worktree.destroy.pruned",
    "root.destroy.backend-done",
    "root.destroy.files-removed",
];

impl Op {
    /// The named failpoints this operation passes, as prepared by [`Suite::prepare`].
    fn failpoints(self) -> &'static [&'static str] {
        match self {
            Op::IngestDir | Op::IngestTar | Op::Commit => INGEST_POINTS,
            Op::SnapshotRm => &["snapshot.rm.refs-removed"],
            Op::RefSet => &["ref.set.staged"],
            Op::RefRm => &[],
            // The first use of a fresh snapshot builds its layer (an overlay only).
            Op::CreateOverlay => {
                &["layer.built", "root.create.recorded", "root.create.backend-made", "root.create.mounts-made"]
            }
            Op::CreateCopy => &["root.create.recorded", "root.create.backend-made", "root.create.mounts-made"],
            Op::CreateWorktree => &[
                "root.create.recorded",
                "worktree.create.dir-made",
                "worktree.create.added",
                "root.create.backend-made",
            ],
            // The commit's checkout is cached by the first round: `.checked-out` is not passed.
            Op::CreateGitOverlay => &[
                "root.create.recorded",
                "git-overlay.create.dir-made",
                "git-overlay.create.added",
                "git-overlay.create.locked",
                "git-overlay.create.mounted",
                "git-overlay.create.indexed",
                "root.create.backend-made",
                "root.create.mounts-made",
            ],
            Op::DestroyOverlay | Op::DestroyCopy => DESTROY_POINTS,
            Op::DestroyWorktree => WT_DESTROY_POINTS,
            Op::DestroyGitOverlay => GO_DESTROY_POINTS,
            Op::Gc => &["gc.snapshots-removed", "gc.object-removed", "gc.unlocked"],
            // doctor --repair undoes a killed create through destroy.
            Op::DoctorRepair => DESTROY_POINTS,
            Op::VerifyRepair => &[],
        }
    }
}

/// What one prepared operation is allowed to change: refs it sets or removes, roots it
/// destroys (by id). Everything else must come through the fault unchanged.
#[derive(Default)]
struct Touches {
    refs: Vec<String>,
    roots: Vec<String>,
}

#[derive(Default)]
struct Counts {
    faults: u64,
    /// Of the faults, those at a named failpoint (the rest are kills after a random delay).
    named: u64,
    finished: u64,
    corrupt: u64,
    lost: u64,
    leaked: u64,
    by_op: BTreeMap<String, u64>,
    problems: Vec<String>,
}

struct Suite {
    env: Env,
    rng: ChaCha8Rng,
    src: PathBuf,
    tarball: PathBuf,
    repo: Option<PathBuf>,
    /// Keys of the roots that live through the whole run, each holding a canary file.
    standing: Vec<String>,
    /// Typical wall time of each operation, measured unfaulted; random delays stay below it.
    typical_ms: BTreeMap<Op, u64>,
    round: u64,
    counts: Counts,
    /// Roots already counted as broken: reported once, then left out of later checks so that
    /// one fault is not counted again in every later round.
    broken: std::collections::BTreeSet<String>,
}

const CANARY: &str = "canary.txt";

impl Suite {
    fn new(seed: u64, mounts: bool) -> Suite {
        let env = Env::new();
        let src = env.path("src");
        fixture::generate_named("small", 0.3, 5, &src).unwrap();
        let deps = env.path("deps");
        fixture::generate_named("small", 0.1, 6, &deps).unwrap();
        env.ok(&["snapshot", "create", src.to_str().unwrap(), "--name", "base"]);
        env.ok(&["snapshot", "create", deps.to_str().unwrap(), "--name", "deps"]);
        let tarball = env.path("src.tar");
        let mut s = Suite {
            rng: ChaCha8Rng::seed_from_u64(seed),
            src,
            tarball,
            repo: None,
            standing: Vec::new(),
            typical_ms: BTreeMap::new(),
            round: 0,
            counts: Counts::default(),
            broken: Default::default(),
            env,
        };
        if mounts {
            s.repo = Some(s.env.repo());
            for (key, extra) in [
                (
                    "keep-ov",
                    vec!["--class", "routine", "--backend", "overlay", "--from", "base", "--mount", "deps=deps"],
                ),
                ("keep-cp", vec!["--class", "routine", "--backend", "copy", "--from", "base"]),
                ("keep-art", vec!["--class", "artifact", "--from", "base"]),
            ] {
                let mut args = extra;
                args.extend(["--key", key]);
                let r = s.env.root(&args);
                std::fs::write(cwd(&r).join(CANARY), format!("{key}\n")).unwrap();
                s.standing.push(key.to_string());
            }
            let repo = s.repo.clone().unwrap();
            for (backend, key) in [("worktree", "keep-wt"), ("git-overlay", "keep-go")] {
                let r = s.env.repo_root(backend, repo.to_str().unwrap(), &["--key", key]);
                std::fs::write(cwd(&r).join(CANARY), format!("{key}\n")).unwrap();
                s.standing.push(key.into());
            }
        }
        s
    }

    fn store(&self) -> Store {
        Store::open(self.env.store()).unwrap()
    }

    /// A tree no earlier round produced, so ingests store new objects and snapshots.
    fn fresh_tree(&mut self, name: &str) -> PathBuf {
        let dir = self.env.path(&format!("t-{name}-{}", self.round));
        std::fs::create_dir(&dir).unwrap();
        for i in 0..8 {
            std::fs::write(dir.join(format!("f{i}")), format!("{name} {} {i} {}\n", self.round, self.rng.gen::<u64>()))
                .unwrap();
        }
        dir
    }

    fn create_root(&mut self, backend: &str) -> Value {
        let key = format!("r-{}", self.round);
        match backend {
            "worktree" | "git-overlay" => {
                let repo = self.repo.clone().unwrap();
                self.env.repo_root(backend, repo.to_str().unwrap(), &["--key", &key])
            }
            b => self.env.root(&[
                "--class",
                "routine",
                "--backend",
                b,
                "--from",
                "base",
                "--mount",
                "deps=deps",
                "--key",
                &key,
            ]),
        }
    }

    /// Make the store ready for `op` (unfaulted steps) and return its command line and what it
    /// may change.
    fn prepare(&mut self, op: Op) -> (Vec<String>, Touches) {
        let r = self.round;
        let mut t = Touches::default();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let args = match op {
            Op::IngestDir => {
                std::fs::write(self.src.join("round"), format!("{r}")).unwrap();
                t.refs.push("ing".into());
                s(&["snapshot", "create", self.src.to_str().unwrap(), "--name", "ing"])
            }
            Op::IngestTar => {
                let tree = self.fresh_tree("tar");
                let st = std::process::Command::new("tar")
                    .arg("-cf")
                    .arg(&self.tarball)
                    .arg("-C")
                    .arg(&tree)
                    .arg(".")
                    .status()
                    .unwrap();
                assert!(st.success());
                t.refs.push("tar".into());
                s(&["snapshot", "create", "--tar", self.tarball.to_str().unwrap(), "--name", "tar"])
            }
            Op::SnapshotRm => {
                let tree = self.fresh_tree("victim");
                self.env.ok(&["snapshot", "create", tree.to_str().unwrap(), "--name", "victim"]);
                self.env.ok(&["ref", "set", "victim2", "victim"]);
                t.refs.extend(["victim".to_string(), "victim2".to_string()]);
                s(&["snapshot", "rm", "victim", "--force"])
            }
            Op::RefSet => {
                t.refs.push("alias".into());
                let target = if r % 2 == 0 { "base" } else { "deps" };
                s(&["ref", "set", "alias", target])
            }
            Op::RefRm => {
                self.env.ok(&["ref", "set", "gone", "base"]);
                t.refs.push("gone".into());
                s(&["ref", "rm", "gone"])
            }
            Op::CreateOverlay | Op::CreateCopy => {
                // An overlay gets a fresh snapshot, so that the create builds its layer.
                if op == Op::CreateOverlay {
                    let tree = self.fresh_tree("layer");
                    self.env.ok(&["snapshot", "create", tree.to_str().unwrap(), "--name", "fresh"]);
                }
                let from = if op == Op::CreateOverlay { "fresh" } else { "base" };
                let b = if op == Op::CreateOverlay { "overlay" } else { "copy" };
                let key = format!("c-{r}");
                s(&[
                    "root",
                    "create",
                    "--class",
                    "routine",
                    "--backend",
                    b,
                    "--from",
                    from,
                    "--mount",
                    "deps=deps",
                    "--key",
                    &key,
                ])
            }
            Op::CreateWorktree | Op::CreateGitOverlay => {
                let repo = self.repo.clone().unwrap();
                let key = format!("w-{r}");
                let b = if op == Op::CreateWorktree { "worktree" } else { "git-overlay" };
                s(&[
                    "root",
                    "create",
                    "--class",
                    "repo-edit",
                    "--backend",
                    b,
                    "--repo",
                    repo.to_str().unwrap(),
                    "--base-ref",
                    "main",
                    "--key",
                    &key,
                ])
            }
            Op::Commit => {
                let root = self.env.ok(&["root", "show", "keep-art"]);
                std::fs::write(cwd(&root).join("report.txt"), format!("round {r}\n")).unwrap();
                t.refs.push("out".into());
                s(&["root", "commit", "keep-art", "--name", "out"])
            }
            Op::DestroyOverlay | Op::DestroyCopy | Op::DestroyWorktree | Op::DestroyGitOverlay => {
                let b = match op {
                    Op::DestroyOverlay => "overlay",
                    Op::DestroyCopy => "copy",
                    Op::DestroyGitOverlay => "git-overlay",
                    _ => "worktree",
                };
                let root = self.create_root(b);
                let dir = cwd(&root);
                if b == "worktree" || b == "git-overlay" {
                    // Committed work survives any destroy (its branch is kept); untracked
                    // work would make destroy refuse.
                    std::fs::write(dir.join("work.txt"), "work").unwrap();
                    git(&dir, &["add", "work.txt"]);
                    git(&dir, &["commit", "-qm", "work"]);
                } else {
                    std::fs::write(dir.join("written"), "x").unwrap();
                }
                let id = root["id"].as_str().unwrap().to_string();
                t.roots.push(id.clone());
                s(&["root", "destroy", &id])
            }
            Op::Gc => {
                // Garbage: a snapshot no ref keeps, and its objects.
                let tree = self.fresh_tree("junk");
                self.env.ingest(&tree);
                s(&["gc", "--grace", "0"])
            }
            Op::DoctorRepair => {
                // Something for doctor to repair: a create killed half way.
                let points = ["root.create.recorded", "root.create.backend-made", "root.create.mounts-made"];
                let point = points[self.rng.gen_range(0..points.len())];
                let key = format!("d-{r}");
                let out = self
                    .env
                    .spawnable(&[
                        "root",
                        "create",
                        "--class",
                        "routine",
                        "--backend",
                        "copy",
                        "--from",
                        "base",
                        "--mount",
                        "deps=deps",
                        "--key",
                        &key,
                    ])
                    .env("EXECROOT_FAILPOINT", point)
                    .output()
                    .unwrap();
                assert_eq!(out.status.signal(), Some(9), "create did not reach {point}: {}", describe(&out));
                s(&["doctor", "--repair"])
            }
            Op::VerifyRepair => {
                // Something for verify to sweep: an ingest killed before publishing (a dead
                // lease holding objects no snapshot names).
                let tree = self.fresh_tree("swept");
                let out = self
                    .env
                    .spawnable(&["snapshot", "create", tree.to_str().unwrap()])
                    .env("EXECROOT_FAILPOINT", "ingest.objects-stored")
                    .output()
                    .unwrap();
                assert_eq!(out.status.signal(), Some(9), "ingest did not reach its failpoint: {}", describe(&out));
                s(&["verify", "--repair"])
            }
        };
        (args, t)
    }

    /// Refs with their manifests, and standing roots with their canaries, before an operation.
    fn observe(&self) -> (BTreeMap<String, (Hash, execroot::store::Manifest)>, BTreeMap<String, String>) {
        let store = self.store();
        let mut refs = BTreeMap::new();
        for (name, id) in store.list_refs().unwrap() {
            refs.insert(name, (id, store.load_manifest(&id).unwrap()));
        }
        let mut roots = BTreeMap::new();
        for key in &self.standing {
            let r = self.env.ok(&["root", "show", key]);
            roots.insert(key.clone(), std::fs::read_to_string(cwd(&r).join(CANARY)).unwrap());
        }
        (refs, roots)
    }

    fn problem(&mut self, kind: &str, what: String) {
        match kind {
            "corrupt" => self.counts.corrupt += 1,
            "lost" => self.counts.lost += 1,
            _ => self.counts.leaked += 1,
        }
        let line = format!("round {} ({kind}): {what}", self.round);
        eprintln!("fault suite: {line}");
        self.counts.problems.push(line);
    }

    /// One round: prepare `op`, run it with a fault, recover, check, clean up.
    fn round(&mut self, op: Op) {
        self.round += 1;
        let (args, touches) = self.prepare(op);
        let (refs_before, roots_before) = self.observe();
        let points = op.failpoints();
        let named = !points.is_empty() && self.rng.gen_bool(0.5);
        let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let mut cmd = self.env.spawnable(&argv);
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
        let how;
        let status = if named {
            let point = points[self.rng.gen_range(0..points.len())];
            how = format!("failpoint {point}");
            let out = cmd.env("EXECROOT_FAILPOINT", point).output().unwrap();
            // gc and doctor reach some points only when there is work of that kind.
            if out.status.signal() != Some(9) && !matches!(op, Op::Gc | Op::DoctorRepair) {
                panic!("round {}: {op:?} did not reach {point}: {}", self.round, describe(&out));
            }
            out.status
        } else {
            let typical = *self.typical_ms.get(&op).unwrap_or(&20);
            let delay = self.rng.gen_range(0..=typical + typical / 2);
            how = format!("kill after {delay} ms");
            let mut child = cmd.spawn().unwrap();
            std::thread::sleep(Duration::from_millis(delay));
            let _ = child.kill();
            child.wait().unwrap()
        };
        if status.signal() == Some(9) {
            self.counts.faults += 1;
            self.counts.named += named as u64;
            *self.counts.by_op.entry(format!("{op:?}")).or_default() += 1;
        } else {
            self.counts.finished += 1;
        }
        let ctx = format!("{op:?} {args:?} {how}");
        self.recover_and_check(&ctx, &touches, &refs_before, &roots_before);
        self.clean_up();
    }

    fn recover_and_check(
        &mut self,
        ctx: &str,
        touches: &Touches,
        refs_before: &BTreeMap<String, (Hash, execroot::store::Manifest)>,
        roots_before: &BTreeMap<String, String>,
    ) {
        let env = &self.env;
        let d = env.cmd(&["doctor", "--repair"]).output().unwrap();
        let v = env.cmd(&["verify"]).output().unwrap();
        let again = env.cmd(&["doctor"]).output().unwrap();
        if !d.status.success() && self.new_findings(&d, true) {
            self.problem("corrupt", format!("{ctx}: doctor --repair did not repair: {}", describe(&d)));
        }
        if !v.status.success() || parse(&v)["ok"] != true {
            self.problem("corrupt", format!("{ctx}: verify: {}", describe(&v)));
        }
        if self.new_findings(&again, false) {
            self.problem("leaked", format!("{ctx}: a second doctor still finds: {}", describe(&again)));
        }

        // Lost: refs and their snapshots, standing roots and their files.
        let store = self.store();
        for (name, (id, manifest)) in refs_before {
            if touches.refs.contains(name) {
                continue;
            }
            match store.get_ref(name) {
                Ok(Some(now)) if now == *id => {}
                other => self.problem("lost", format!("{ctx}: ref {name} named {id}, now {other:?}")),
            }
            match store.load_manifest(id) {
                Ok(m) if m == *manifest => {}
                Ok(_) => self.problem("lost", format!("{ctx}: snapshot {id} of ref {name} differs")),
                Err(e) => self.problem("lost", format!("{ctx}: snapshot {id} of ref {name}: {e}")),
            }
        }
        for (key, canary) in roots_before {
            let out = self.env.cmd(&["root", "show", key]).output().unwrap();
            if !out.status.success() {
                self.problem("lost", format!("{ctx}: standing root {key} is gone: {}", describe(&out)));
                continue;
            }
            let path = cwd(&parse(&out)).join(CANARY);
            match std::fs::read_to_string(&path) {
                Ok(s) if s == *canary => {}
                other => self.problem("lost", format!("{ctx}: root {key}: {} now {other:?}", path.display())),
            }
        }
        let list = self.env.ok(&["root", "list"]);
        let roots = list["roots"].as_array().unwrap().clone();
        for id in &touches.roots {
            // A destroy that was killed is finished by doctor, or the root is still whole.
            if let Some(r) = roots.iter().find(|r| r["id"] == id.as_str()) {
                if r["state"] != "ready" && !self.broken.contains(id) {
                    self.problem("leaked", format!("{ctx}: root {id} left {}", r["state"]));
                }
            }
        }

        // Leaked: mounts, root directories, leases, staged files.
        let mut owned: Vec<PathBuf> = Vec::new();
        for r in &roots {
            let id = r["id"].as_str().unwrap_or_default().to_string();
            if r["state"] != "ready" && !self.broken.contains(&id) {
                self.problem("leaked", format!("{ctx}: root {id} is {}", r["state"]));
                self.broken.insert(id);
            }
            owned.push(PathBuf::from(r["cwd"].as_str().unwrap_or_default()));
            for m in r["mounts"].as_array().into_iter().flatten() {
                owned.push(PathBuf::from(m["path"].as_str().unwrap_or_default()));
            }
        }
        let store_dir = self.env.store();
        for m in mounts_below(&store_dir) {
            if !owned.contains(&m) && !self.broken.iter().any(|b| m.starts_with(store_dir.join("roots").join(b))) {
                self.problem("leaked", format!("{ctx}: mount {} has no root", m.display()));
            }
        }
        let ids: Vec<&str> = roots.iter().filter_map(|r| r["id"].as_str()).collect();
        for name in names(&store_dir.join("roots")) {
            if self.broken.contains(&name) {
                continue;
            }
            if !ids.contains(&name.as_str()) {
                self.problem("leaked", format!("{ctx}: roots/{name} belongs to no root"));
            } else if !store_dir.join("roots").join(&name).join("state.json").exists() {
                self.problem("leaked", format!("{ctx}: roots/{name} has no state.json"));
            }
        }
        for name in names(&store_dir.join("tmp")) {
            self.problem("leaked", format!("{ctx}: lease tmp/{name} left"));
        }
        for name in names(&store_dir.join("snapshots")) {
            if Hash::from_hex(&name).is_err() {
                self.problem("leaked", format!("{ctx}: snapshots/{name} is not a snapshot"));
            }
        }
        let refs: Vec<String> = store.list_refs().unwrap().into_iter().map(|(n, _)| n).collect();
        for name in names(&store_dir.join("refs")) {
            if !refs.contains(&name) {
                self.problem("leaked", format!("{ctx}: refs/{name} is not a ref"));
            }
        }
    }

    /// Whether a doctor document lists a finding left unrepaired (`repair`) or any finding,
    /// about something other than an already counted broken root. Records the roots named.
    fn new_findings(&mut self, out: &std::process::Output, repair: bool) -> bool {
        let doc: Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(_) => return true,
        };
        let mut new = false;
        for f in doc["findings"].as_array().into_iter().flatten() {
            if repair && f["repaired"] == true {
                continue;
            }
            let root = f["root"].as_str().unwrap_or_default().to_string();
            if root.is_empty() || !self.broken.contains(&root) {
                new = true;
            }
        }
        new || (!out.status.success() && doc["findings"].as_array().is_none_or(|f| f.is_empty()))
    }

    /// Destroy every root but the standing ones, so that rounds do not pile roots up.
    fn clean_up(&mut self) {
        let list = self.env.ok(&["root", "list"]);
        for r in list["roots"].as_array().unwrap() {
            let key = r["key"].as_str().unwrap_or_default();
            if self.standing.iter().any(|k| k == key) {
                continue;
            }
            let id = r["id"].as_str().unwrap().to_string();
            if self.broken.contains(&id) {
                continue;
            }
            let out = self.env.cmd(&["root", "destroy", &id, "--force"]).output().unwrap();
            if !out.status.success() {
                self.problem("leaked", format!("round cleanup: destroy {id}: {}", describe(&out)));
                self.broken.insert(id);
            }
        }
    }

    /// Run every operation once without a fault, timing it, so that random delays land inside.
    fn calibrate(&mut self, ops: &[Op]) {
        for &op in ops {
            self.round += 1;
            let (args, _) = self.prepare(op);
            let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            let t = Instant::now();
            let out = self.env.cmd(&argv).output().unwrap();
            let ms = t.elapsed().as_millis() as u64;
            assert!(out.status.success(), "calibration {op:?}: {}", describe(&out));
            self.typical_ms.insert(op, ms.max(2));
            self.clean_up();
        }
    }
}

/// Entry names in `dir` (none if it does not exist).
fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")))
}

#[test]
fn kill_minus_nine_anywhere_loses_corrupts_and_leaks_nothing() {
    let target = env_u64("EXECROOT_SUITE_FAULTS").unwrap_or(200);
    let seed = env_u64("EXECROOT_SUITE_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("fault suite: seed={seed} (replay with EXECROOT_SUITE_SEED={seed})");
    let mounts = can_mount();
    let mut ops: Vec<Op> = STORE_OPS.to_vec();
    if mounts {
        ops.extend_from_slice(ROOT_OPS);
    }
    let started = Instant::now();
    let mut suite = Suite::new(seed, mounts);
    suite.calibrate(&ops);
    // Cycle through the operations so that each gets its share; the RNG picks the fault.
    let mut i = 0;
    while suite.counts.faults < target {
        let op = ops[i % ops.len()];
        i += 1;
        suite.round(op);
        assert!(i < (target as usize) * 4, "too few rounds end in a fault: {} of {i}", suite.counts.faults);
    }
    let c = &suite.counts;
    let line = format!(
        "fault suite: seed={seed} faults={} corrupt={} lost={} leaked={} (named={} random={} rounds={i} finished-before-kill={} {:.1}s) per op: {:?}",
        c.faults,
        c.corrupt,
        c.lost,
        c.leaked,
        c.named,
        c.faults - c.named,
        c.finished,
        started.elapsed().as_secs_f64(),
        c.by_op
    );
    println!("{line}");
    eprintln!("{line}");
    assert!(
        c.corrupt == 0 && c.lost == 0 && c.leaked == 0,
        "{line}\nreplay with EXECROOT_SUITE_SEED={seed}\n{}",
        c.problems.join("\n")
    );
}
