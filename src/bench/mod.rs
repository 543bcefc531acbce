//! `execroot bench`: the Phase 3 workload-class comparison and its go/no-go verdicts.
//!
//! For each workload class a base is set up (seeded fixtures, or the user's repository and
//! dependency tree), then every way of giving a run its directory is measured side by side in
//! the same run: execroot's overlay and copy backends, the git-worktree baseline (for previews:
//! with the dependencies provisioned or copied, and with them mounted), and a hardlink farm
//! (`cp -al`). Every backend must pass the correctness checks before its numbers count.

pub mod measure;
pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::Serialize;

use execroot::backend::BackendKind;
use execroot::error::{Error, IoContext, Result};
use execroot::policy::Class;
use execroot::root::CreateRequest;
use execroot::store::ingest::{IngestOptions, NoProgress};
use execroot::Store;
use measure::{disk_added, inode_set, Disk, Stats};

/// What `execroot bench` was asked to do.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Small fixtures, few runs.
    pub quick: bool,
    /// Classes to measure.
    pub classes: Vec<Class>,
    /// The user's repository (a git work tree) instead of the fixture project.
    pub repo: Option<PathBuf>,
    /// The user's dependency tree (such as node_modules) instead of the fixture one.
    pub deps: Option<PathBuf>,
    /// Command that provisions dependencies in a fresh worktree (preview), run with `sh -c`;
    /// also measured as `root create --class preview --provision CMD` (a provision layer).
    pub provision: Option<String>,
    /// The provision's inputs, relative to the project (default: the first of
    /// `pnpm-lock.yaml`, `package-lock.json`, `yarn.lock`, `package.json` found in it).
    pub provision_inputs: Vec<String>,
    /// Measured runs per backend.
    pub runs: usize,
    /// Roots alive at once.
    pub concurrency: usize,
    /// Store to use (else a temporary one, removed afterwards).
    pub store: Option<PathBuf>,
    /// Fixture shape (default: node-modules, scaled to 2,500 entries with `quick`).
    pub shape: Option<String>,
}

/// Machine and versions the numbers come from.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Cores available.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// Filesystem of the store.
    pub filesystem: String,
    /// Whether the bench ran as root (overlay needs it).
    pub root: bool,
    /// When.
    pub date: String,
    /// execroot version.
    pub execroot: String,
    /// git version.
    pub git: String,
    /// ostree version, when installed.
    pub ostree: Option<String>,
}

/// N roots alive at once.
#[derive(Clone, Copy, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Concurrent {
    /// Roots.
    pub n: usize,
    /// Total time to create them all, back to back.
    pub total_ms: f64,
    /// Disk they add together.
    pub bytes: u64,
    /// Measured at a smaller n and scaled linearly to `n`.
    pub extrapolated: bool,
}

/// One backend's figures for one class.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendResult {
    /// overlay, copy, worktree, worktree+provision, worktree+mount, hardlink-farm.
    pub backend: String,
    /// Whether it could run here for this class.
    pub available: bool,
    /// Why not, or why it failed correctness.
    pub reason: Option<String>,
    /// Passed every correctness check.
    pub correct: bool,
    /// Create latency.
    pub create_ms: Stats,
    /// Time until the run can start (dependencies present).
    pub ready_ms: Stats,
    /// Median of the class's representative run step (null where it does not apply).
    pub run_ms: Option<f64>,
    /// Destroy latency.
    pub destroy_ms: Stats,
    /// Bytes one root adds to the disk (median).
    pub bytes_per_root: u64,
    /// Inodes one root adds to the disk (median).
    pub inodes_per_root: u64,
    /// N roots alive at once.
    pub concurrent: Concurrent,
    /// One-time costs this backend needs before its first root (ingest, layer materialization).
    pub one_time_ms: f64,
    /// Runs after which it is ahead of the worktree baseline, one-time costs included.
    pub break_even_runs: Option<u64>,
    /// Git figures of the git ways (worktree, git-overlay) in repo-edit.
    pub git: Option<GitFigures>,
    /// Figures of the provision path (overlay+provision).
    pub provision: Option<ProvisionFigures>,
}

/// What a git way's roots cost beyond the common columns.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GitFigures {
    /// The first `git status` in a new root (part of its time-to-ready).
    pub first_status_ms: Stats,
    /// Size of the worktree's index file (median).
    pub index_bytes: u64,
    /// Disk per root besides the index (median).
    pub bytes_besides_index: u64,
    /// Time-to-ready of the first root of the base commit (its checkout ingested then).
    pub cold_ready_ms: Option<f64>,
    /// Time-to-ready at a new commit that changes 100 files of the base, whose checkout is
    /// cached (each run a different commit).
    pub new_commit_ready_ms: Option<Stats>,
    /// Files each new commit changes.
    pub new_commit_files: usize,
    /// Destroy of a root nobody changed (the runs' own roots hold a commit when destroyed).
    pub destroy_untouched_ms: Stats,
    /// The same roots with execroot's fsmonitor (`extensions.worktreeConfig` on, which the
    /// bench turns on in its own fixture repository only, and off again); `None` for the
    /// user's repository (whose roots get it in every run if it is on there).
    pub fsmonitor: Option<FsmonitorFigures>,
}

/// git-overlay roots with execroot's fsmonitor (docs/roots.md, "fsmonitor").
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FsmonitorFigures {
    /// Warm time-to-ready (create and a first clean `git status`).
    pub ready_ms: Stats,
    /// That first `git status`.
    pub first_status_ms: Stats,
    /// Time-to-ready at a new commit, as [`GitFigures::new_commit_ready_ms`].
    pub new_commit_ready_ms: Stats,
}

/// The provision path of previews: `root create --class preview --provision CMD`.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionFigures {
    /// The command.
    pub command: String,
    /// Its inputs.
    pub inputs: Vec<String>,
    /// The first create (the layer built: root, command, commit), once.
    pub miss_ms: f64,
    /// Whether that first create was a miss (false: the store already had the layer).
    pub first_was_miss: bool,
    /// Every measured create was a hit.
    pub all_hits: bool,
}

/// The verdict for one class.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// Snapshot-backed roots benefit this class.
    pub benefits: bool,
    /// Why, with the numbers.
    pub reason: String,
}

/// One class.
#[derive(Clone, Debug, Serialize)]
pub struct ClassResult {
    /// The class.
    pub class: Class,
    /// The verdict.
    pub verdict: Verdict,
    /// Every backend measured.
    pub backends: Vec<BackendResult>,
}

/// One-time costs, and ostree's for the same work when it is installed.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OneTime {
    /// Entries of the project base.
    pub project_entries: u64,
    /// Entries of the dependency tree.
    pub deps_entries: u64,
    /// `snapshot create` of the project.
    pub ingest_ms: f64,
    /// `snapshot create` of the dependencies.
    pub deps_ingest_ms: f64,
    /// Materializing the project's layer.
    pub materialize_ms: f64,
    /// Materializing the dependencies' layer.
    pub deps_materialize_ms: f64,
    /// `ostree commit` of the project into a fresh bare repository.
    pub ostree_commit_ms: Option<f64>,
    /// `ostree checkout -H` of that commit.
    pub ostree_checkout_hardlink_ms: Option<f64>,
    /// Why ostree figures are missing.
    pub note: Option<String>,
}

/// The whole result (`--json`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchReport {
    /// Machine and versions.
    pub machine: Machine,
    /// `--quick`.
    pub quick: bool,
    /// Runs per backend.
    pub runs: usize,
    /// One-time costs.
    pub one_time: OneTime,
    /// Thresholds of the verdicts.
    pub thresholds: Thresholds,
    /// Per class.
    pub classes: Vec<ClassResult>,
}

/// When a class benefits: time-to-ready and disk per root both this many times better than the
/// worktree baseline, every correctness check passed, and no need for branch semantics.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Thresholds {
    /// Minimum time-to-ready ratio (baseline / candidate).
    pub ready_ratio: f64,
    /// Minimum disk-per-root ratio (baseline / candidate).
    pub disk_ratio: f64,
}

/// Receives progress messages.
pub trait BenchProgress {
    /// A new step.
    fn step(&self, msg: &str);
}

/// The ways of making a run's directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    Overlay,
    Copy,
    Worktree,
    WorktreeProvision,
    WorktreeMount,
    HardlinkFarm,
    GitOverlay,
    OverlayProvision,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Overlay => "overlay",
            Way::Copy => "copy",
            Way::Worktree => "worktree",
            Way::WorktreeProvision => "worktree+provision",
            Way::WorktreeMount => "worktree+mount",
            Way::HardlinkFarm => "hardlink-farm",
            Way::GitOverlay => "git-overlay",
            Way::OverlayProvision => "overlay+provision",
        }
    }
    /// Writes every file of the base per root (worktrees check the project out even when the
    /// dependencies are mounted): measured at a smaller n when many roots are alive.
    fn copies(self) -> bool {
        !matches!(self, Way::Overlay | Way::GitOverlay | Way::OverlayProvision)
    }

    /// A git worktree, whose first `git status` is part of its time-to-ready in repo-edit.
    fn is_git(self) -> bool {
        matches!(self, Way::Worktree | Way::GitOverlay)
    }
}

/// A base: what every way of one class starts from.
struct Base {
    /// Snapshot of the project (ref name).
    project: String,
    /// Snapshot of the dependencies (ref name), for previews.
    deps: Option<String>,
    /// Git repository of the project (worktree baseline).
    repo: PathBuf,
    /// A plain directory with the project (and node_modules for previews): the hardlink
    /// farm's source and the reference for correctness checks.
    tree: PathBuf,
    /// The dependency tree as a directory (copied by worktree+provision without --provision).
    deps_dir: Option<PathBuf>,
}

/// A made root.
struct Made {
    root_id: Option<String>,
    cwd: PathBuf,
    disk_paths: Vec<PathBuf>,
    create_ms: f64,
    ready_ms: f64,
    /// The first `git status` (git ways), in ms.
    status_ms: Option<f64>,
    /// The worktree's index file.
    index: Option<PathBuf>,
    /// Whether the provision layer was a hit (overlay+provision).
    provision_hit: Option<bool>,
}

struct Ctx<'a> {
    store: &'a Store,
    work: PathBuf,
    opts: &'a BenchOptions,
    counter: std::cell::Cell<u64>,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn sh(cmd: &str, dir: &Path) -> Result<()> {
    let st = Command::new("sh").arg("-c").arg(cmd).current_dir(dir).status().map_err(|e| Error::io(dir, e))?;
    if !st.success() {
        return Err(Error::BadInput(format!("`{cmd}` failed in {}", dir.display())));
    }
    Ok(())
}

/// git as the current user (the bench's own repositories), through the crate's runner: clean
/// environment, timeout.
fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let mut all = vec!["-c", "user.name=execroot-bench", "-c", "user.email=bench@execroot", "-c", "safe.directory=*"];
    all.extend_from_slice(args);
    let out =
        execroot::sys::git::check(dir, execroot::sys::Owner::current(), &all, std::time::Duration::from_secs(600))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

impl Ctx<'_> {
    fn fresh(&self, what: &str) -> PathBuf {
        let n = self.counter.get();
        self.counter.set(n + 1);
        self.work.join(format!("{what}-{n}"))
    }

    fn branch(&self) -> String {
        let n = self.counter.get();
        self.counter.set(n + 1);
        format!("execroot-bench-{}-{n}", std::process::id())
    }

    fn create(&self, way: Way, class: Class, base: &Base) -> Result<Made> {
        self.create_at(way, class, base, "HEAD")
    }

    /// [`Ctx::create`], a git way's branch made at `rev`.
    fn create_at(&self, way: Way, class: Class, base: &Base, rev: &str) -> Result<Made> {
        let t = Instant::now();
        let req = |backend: BackendKind, mounts: Vec<String>| {
            let git = matches!(backend, BackendKind::Worktree | BackendKind::GitOverlay);
            CreateRequest {
                class: Some(if git { Class::RepoEdit } else { class }),
                from: if git { vec![] } else { vec![base.project.clone()] },
                mounts,
                backend: Some(backend),
                repo: git.then(|| base.repo.clone()),
                base_ref: git.then(|| rev.to_string()),
                branch: git.then(|| self.branch()),
                ..Default::default()
            }
        };
        let deps_mount = || base.deps.as_ref().map(|d| vec![format!("node_modules={d}")]).unwrap_or_default();
        let root = |r: execroot::root::Created| -> Made {
            let dir = self.store.roots_dir().join(&r.id);
            Made {
                root_id: Some(r.id),
                cwd: r.cwd,
                disk_paths: vec![dir],
                create_ms: 0.0,
                ready_ms: 0.0,
                status_ms: None,
                index: None,
                provision_hit: r.provision.map(|p| p.hit),
            }
        };
        let mut made = match way {
            Way::Overlay => root(self.store.create_root(&req(BackendKind::Overlay, deps_mount()))?),
            Way::Copy => root(self.store.create_root(&req(BackendKind::Copy, vec![]))?),
            Way::Worktree | Way::WorktreeProvision => {
                root(self.store.create_root(&req(BackendKind::Worktree, vec![]))?)
            }
            Way::WorktreeMount => root(self.store.create_root(&req(BackendKind::Worktree, deps_mount()))?),
            Way::GitOverlay => root(self.store.create_root(&req(BackendKind::GitOverlay, vec![]))?),
            Way::OverlayProvision => {
                let cmd = self.opts.provision.clone().expect("measured only with --provision");
                let inputs = provision_inputs(self.opts, &base.tree)?;
                let r = CreateRequest {
                    provision: Some(execroot::root::provision::ProvisionRequest {
                        command: cmd,
                        inputs,
                        ..Default::default()
                    }),
                    ..req(BackendKind::Overlay, vec![])
                };
                root(self.store.create_root(&r)?)
            }
            Way::HardlinkFarm => {
                let dest = self.fresh("farm");
                let st = Command::new("cp")
                    .arg("-al")
                    .arg(&base.tree)
                    .arg(&dest)
                    .status()
                    .map_err(|e| Error::io(&dest, e))?;
                if !st.success() {
                    return Err(Error::BadInput(format!("cp -al into {} failed", dest.display())));
                }
                Made {
                    root_id: None,
                    cwd: dest.clone(),
                    disk_paths: vec![dest],
                    create_ms: 0.0,
                    ready_ms: 0.0,
                    status_ms: None,
                    index: None,
                    provision_hit: None,
                }
            }
        };
        made.create_ms = ms(t);
        if matches!(way, Way::Worktree | Way::WorktreeProvision | Way::WorktreeMount | Way::GitOverlay) {
            // The worktree's administrative directory in the repository is part of its cost.
            if let Ok(gitfile) = std::fs::read_to_string(made.cwd.join(".git")) {
                if let Some(admin) = gitfile.trim().strip_prefix("gitdir: ") {
                    made.disk_paths.push(PathBuf::from(admin));
                    made.index = Some(PathBuf::from(admin).join("index"));
                }
            }
        }
        if way.is_git() {
            // Ready means `git status` clean and usable.
            let t = Instant::now();
            let out = git(&made.cwd, &["status", "--porcelain"])?;
            made.status_ms = Some(ms(t));
            if !out.trim().is_empty() {
                let _ = self.destroy(&made);
                return Err(Error::Conflict(format!(
                    "{}: git status is not clean in a new root: {}",
                    way.name(),
                    out.lines().take(5).collect::<Vec<_>>().join("; ")
                )));
            }
        }
        // Dependencies that the backend did not bring.
        if base.deps.is_some() {
            match way {
                Way::Copy => {
                    let d = self.store.resolve(base.deps.as_deref().expect("deps"))?;
                    self.store.checkout(&d, &made.cwd.join("node_modules"))?;
                }
                Way::WorktreeProvision => match &self.opts.provision {
                    Some(cmd) => sh(cmd, &made.cwd)?,
                    None => {
                        let src = base.deps_dir.as_ref().expect("deps dir");
                        let st = Command::new("cp")
                            .arg("-a")
                            .arg(src)
                            .arg(made.cwd.join("node_modules"))
                            .status()
                            .map_err(|e| Error::io(src, e))?;
                        if !st.success() {
                            return Err(Error::BadInput("copying the dependencies failed".into()));
                        }
                    }
                },
                _ => {}
            }
        }
        made.ready_ms = ms(t);
        Ok(made)
    }

    fn destroy(&self, made: &Made) -> Result<f64> {
        let t = Instant::now();
        match &made.root_id {
            Some(id) => {
                let d = self.store.destroy_root(id, true)?;
                if !d.cleaned {
                    return Err(Error::Conflict(format!("bench root {id} could not be destroyed: {:?}", d.warnings)));
                }
            }
            None => std::fs::remove_dir_all(&made.cwd).at(&made.cwd)?,
        }
        Ok(ms(t))
    }
}

/// Files of `dir` (relative), sorted, at most `n`, skipping `.git`.
fn sample_files(dir: &Path, n: usize) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git")
        .flatten()
        .filter(|e| e.file_type().is_file() && e.metadata().map(|m| m.len() > 0).unwrap_or(false))
        .map(|e| e.path().strip_prefix(dir).expect("under dir").to_path_buf())
        .take(n)
        .collect();
    v.sort();
    v
}

/// The correctness checks: a root sees the base; a write in one root is invisible in another
/// root and in the base. Returns the first failure.
fn check(ctx: &Ctx, way: Way, class: Class, base: &Base) -> Result<Option<String>> {
    if way == Way::GitOverlay {
        if let Some(f) = git_check(ctx, base)? {
            return Ok(Some(f));
        }
    }
    let a = ctx.create(way, class, base)?;
    let b = ctx.create(way, class, base)?;
    let result = (|| -> Result<Option<String>> {
        let sample = sample_files(&base.tree, 20);
        for rel in &sample {
            let want = std::fs::read(base.tree.join(rel)).at(base.tree.join(rel))?;
            if std::fs::read(a.cwd.join(rel)).ok().as_deref() != Some(&want[..]) {
                return Ok(Some(format!("the root does not see the base: {} differs", rel.display())));
            }
        }
        let Some(victim) = sample.first() else { return Ok(Some("the base has no files".into())) };
        let original = std::fs::read(base.tree.join(victim)).at(base.tree.join(victim))?;
        // Write in place, as editors and build tools do (no new inode).
        {
            use std::io::Write;
            let p = a.cwd.join(victim);
            let mut f = std::fs::OpenOptions::new().write(true).open(&p).at(&p)?;
            f.write_all(b"EXECROOT-BENCH-WRITE").at(&p)?;
        }
        let seen_in_b = std::fs::read(b.cwd.join(victim)).ok() != Some(original.clone());
        let seen_in_base = std::fs::read(base.tree.join(victim)).ok() != Some(original.clone());
        if seen_in_base {
            // Undo the damage to the base so that the other backends start from it intact.
            std::fs::write(base.tree.join(victim), &original).at(base.tree.join(victim))?;
        }
        Ok(match (seen_in_b, seen_in_base) {
            (false, false) => None,
            _ => Some(format!(
                "a write in one root {}: roots share inodes with the base",
                match (seen_in_b, seen_in_base) {
                    (true, true) => "changed the base and another root",
                    (true, false) => "changed another root",
                    _ => "changed the base",
                }
            )),
        })
    })();
    ctx.destroy(&a)?;
    ctx.destroy(&b)?;
    result
}

/// git run by the bench with `env` set and `input` on stdin; its stdout.
fn git_with(dir: &Path, args: &[&str], env: &[(&str, &Path)], input: &[u8]) -> Result<String> {
    use std::io::Write;
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(dir).args(["-c", "user.name=execroot-bench", "-c", "user.email=bench@execroot"]).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(dir, e))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().map_err(|e| Error::io(dir, e))?;
    let _ = feeder.join();
    if !out.status.success() {
        return Err(Error::BadInput(format!(
            "git {} failed in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Files each new commit of the git-overlay measurement changes (issue 11's figure).
const NEW_COMMIT_FILES: usize = 100;

/// A new commit whose parent is the repository's HEAD and which appends a line to `files`
/// regular files of it (a different set for each `n`); made with git plumbing in a temporary
/// index, so that neither HEAD, the index nor the work tree of the repository changes.
fn child_commit(ctx: &Ctx, repo: &Path, n: usize, files: usize) -> Result<String> {
    let index = ctx.fresh("index");
    let env = [("GIT_INDEX_FILE", index.as_path())];
    git_with(repo, &["read-tree", "HEAD"], &env, b"")?;
    let listing = git_with(repo, &["ls-files", "-s", "-z"], &env, b"")?;
    // "<mode> <oid> <stage>\t<path>"
    let blobs: Vec<(&str, &str)> = listing
        .split('\0')
        .filter_map(|r| {
            let (meta, path) = r.split_once('\t')?;
            let mode = meta.split(' ').next()?;
            matches!(mode, "100644" | "100755").then_some((mode, path))
        })
        .collect();
    if blobs.is_empty() {
        return Err(Error::BadInput("the project has no regular files to change".into()));
    }
    let step = (blobs.len() / files).max(1);
    let chosen: Vec<(&str, &str)> = blobs.iter().skip(n % step).step_by(step).take(files).copied().collect();
    let dir = ctx.fresh("changed");
    std::fs::create_dir_all(&dir).at(&dir)?;
    let mut paths = Vec::new();
    for (i, (_, path)) in chosen.iter().enumerate() {
        let mut content = git_with(repo, &["cat-file", "blob", &format!("HEAD:{path}")], &[], b"")?.into_bytes();
        content.extend_from_slice(format!("\n// execroot bench change {n}\n").as_bytes());
        let f = dir.join(i.to_string());
        std::fs::write(&f, content).at(&f)?;
        paths.push(f.to_string_lossy().into_owned());
    }
    let mut args = vec!["hash-object", "-w", "--no-filters", "--"];
    args.extend(paths.iter().map(String::as_str));
    let ids = git_with(repo, &args, &env, b"")?;
    let mut info = String::new();
    for ((mode, path), id) in chosen.iter().zip(ids.lines()) {
        info.push_str(&format!("{mode} {id}\t{path}\0"));
    }
    git_with(repo, &["update-index", "-z", "--index-info"], &env, info.as_bytes())?;
    let tree = git_with(repo, &["write-tree"], &env, b"")?;
    let commit = git_with(
        repo,
        &["commit-tree", "-p", "HEAD", "-m", &format!("execroot bench: {files} files changed ({n})"), tree.trim()],
        &env,
        b"",
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&index);
    Ok(commit.trim().to_string())
}

/// The first difference between two trees (every entry but a top `.git`: type, executable
/// bit, symlink target, content), if any.
fn tree_difference(a: &Path, b: &Path) -> Result<Option<String>> {
    use std::os::unix::fs::PermissionsExt;
    let list = |d: &Path| -> Vec<(PathBuf, std::fs::Metadata)> {
        walkdir::WalkDir::new(d)
            .min_depth(1)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| !(e.depth() == 1 && e.file_name() == ".git"))
            .flatten()
            .filter_map(|e| {
                let m = e.path().symlink_metadata().ok()?;
                Some((e.path().strip_prefix(d).ok()?.to_path_buf(), m))
            })
            .collect()
    };
    let (la, lb) = (list(a), list(b));
    if la.len() != lb.len() {
        return Ok(Some(format!("{} entries against {} in a real checkout", la.len(), lb.len())));
    }
    for ((pa, ma), (pb, mb)) in la.iter().zip(&lb) {
        if pa != pb {
            return Ok(Some(format!("{} where a real checkout has {}", pa.display(), pb.display())));
        }
        let (ta, tb) = (ma.file_type(), mb.file_type());
        let exec = |m: &std::fs::Metadata| m.permissions().mode() & 0o100 != 0;
        let same = if ta.is_dir() && tb.is_dir() {
            true
        } else if ta.is_symlink() && tb.is_symlink() {
            std::fs::read_link(a.join(pa)).ok() == std::fs::read_link(b.join(pb)).ok()
        } else if ta.is_file() && tb.is_file() {
            exec(ma) == exec(mb)
                && ma.len() == mb.len()
                && std::fs::read(a.join(pa)).at(a.join(pa))? == std::fs::read(b.join(pb)).at(b.join(pb))?
        } else {
            false
        };
        if !same {
            return Ok(Some(format!("{} differs from a real checkout", pa.display())));
        }
    }
    Ok(None)
}

/// The repo-edit checks of a git-overlay root (issue 11): its branch exists and points at the
/// base, `git status` is clean at start (checked by every create), the tree equals a real
/// checkout (`git worktree add`), destroy refuses uncommitted work, and a change then commit
/// in the root lands on the branch in the main repository.
fn git_check(ctx: &Ctx, base: &Base) -> Result<Option<String>> {
    let repo = &base.repo;
    let m = ctx.create(Way::GitOverlay, Class::RepoEdit, base)?;
    let result = (|| -> Result<Option<String>> {
        let branch = git(&m.cwd, &["symbolic-ref", "--short", "HEAD"])?.trim().to_string();
        let head = git(repo, &["rev-parse", "HEAD"])?;
        match git(repo, &["rev-parse", "--verify", &format!("refs/heads/{branch}")]) {
            Ok(tip) if tip == head => {}
            Ok(tip) => {
                return Ok(Some(format!("branch {branch} points at {} not at the base {}", tip.trim(), head.trim())))
            }
            Err(_) => return Ok(Some(format!("branch {branch} does not exist in the repository"))),
        }
        let real = ctx.fresh("real-checkout");
        git(repo, &["worktree", "add", "--detach", &real.to_string_lossy(), "HEAD"])?;
        let diff = tree_difference(&m.cwd, &real);
        git(repo, &["worktree", "remove", "--force", &real.to_string_lossy()])?;
        if let Some(d) = diff? {
            return Ok(Some(d));
        }
        let file = "execroot-bench-new-file.txt";
        std::fs::write(m.cwd.join(file), "bench\n").at(m.cwd.join(file))?;
        let id = m.root_id.as_deref().expect("a root");
        match ctx.store.destroy_root(id, false) {
            Err(Error::Conflict(_)) => {}
            Err(e) => return Ok(Some(format!("destroy with uncommitted work failed oddly: {e}"))),
            Ok(_) => return Ok(Some("destroy did not refuse uncommitted work".into())),
        }
        if !m.cwd.join(file).exists() {
            return Ok(Some("a refused destroy removed the uncommitted file".into()));
        }
        git(&m.cwd, &["add", "-A"])?;
        git(&m.cwd, &["commit", "-q", "-m", "bench: a change in a git-overlay root"])?;
        let ours = git(&m.cwd, &["rev-parse", "HEAD"])?;
        if git(repo, &["rev-parse", &format!("refs/heads/{branch}")])? != ours {
            return Ok(Some("the commit made in the root is not on its branch in the repository".into()));
        }
        if git(repo, &["show", &format!("refs/heads/{branch}:{file}")])? != "bench\n" {
            return Ok(Some("the committed file is not in the repository".into()));
        }
        Ok(None)
    })();
    ctx.destroy(&m)?;
    result
}

/// The provision's inputs: as given, else the first lockfile or manifest found in `tree`.
fn provision_inputs(opts: &BenchOptions, tree: &Path) -> Result<Vec<String>> {
    if !opts.provision_inputs.is_empty() {
        return Ok(opts.provision_inputs.clone());
    }
    ["pnpm-lock.yaml", "package-lock.json", "yarn.lock", "package.json"]
        .iter()
        .find(|f| tree.join(f).is_file())
        .map(|f| vec![f.to_string()])
        .ok_or_else(|| {
            Error::BadInput(
                "--provision needs --provision-inputs: the project has no pnpm-lock.yaml, package-lock.json, yarn.lock or package.json".into(),
            )
        })
}

/// The representative run step of `class` in `cwd`, or None where it does not apply.
fn run_step(class: Class, way: Way, cwd: &Path, quick: bool, base: &Base) -> Result<Option<f64>> {
    let t = Instant::now();
    match class {
        Class::Routine => {
            let cfg = sample_files(&base.tree, 1);
            if let Some(c) = cfg.first() {
                std::fs::read(cwd.join(c)).at(cwd.join(c))?;
            }
            std::fs::write(cwd.join("routine-result.json"), vec![b'x'; 1024]).at(cwd)?;
        }
        Class::Preview => {
            for e in walkdir::WalkDir::new(cwd).into_iter().filter_entry(|e| e.file_name() != ".git").flatten() {
                if e.file_type().is_file() {
                    std::fs::read(e.path()).at(e.path())?;
                }
            }
        }
        Class::Artifact => {
            let total: usize = if quick { 8 << 20 } else { 64 << 20 };
            let out = cwd.join("artifact-out");
            std::fs::create_dir_all(&out).at(&out)?;
            let chunk = vec![7u8; total / 16];
            for i in 0..16 {
                std::fs::write(out.join(format!("part-{i}.bin")), &chunk).at(&out)?;
            }
        }
        Class::RepoEdit => {
            if !matches!(way, Way::Worktree | Way::GitOverlay) {
                return Ok(None);
            }
            for rel in sample_files(cwd, 10) {
                use std::io::Write;
                let p = cwd.join(rel);
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&p)
                    .and_then(|mut f| f.write_all(b"\n// edit\n"))
                    .at(&p)?;
            }
            git(cwd, &["add", "-A"])?;
            git(cwd, &["commit", "-q", "-m", "bench edit"])?;
        }
    }
    Ok(Some(ms(t)))
}

fn median_u64(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}

/// Measure one way on one base for the given classes (which share the base).
fn measure(
    ctx: &Ctx,
    way: Way,
    classes: &[Class],
    base: &Base,
    progress: &dyn BenchProgress,
) -> Result<BTreeMap<String, BackendResult>> {
    let class0 = classes[0];
    // What the ways before left to the disk (unlinked worktrees: writeback, and on a
    // filesystem mounted with `discard` the discards of every freed block) is theirs: it
    // slowed the next way's directory creation up to tenfold.
    ctx.store.sync()?;
    // The first root of a way that builds something once (a commit's checkout, a provision
    // layer): timed apart, before the correctness checks make more.
    let mut cold_ready = None;
    let mut first_hit = None;
    if matches!(way, Way::GitOverlay | Way::OverlayProvision) {
        progress.step(&format!("{}: first root (one-time work)", way.name()));
        let m = ctx.create(way, class0, base)?;
        cold_ready = Some(m.ready_ms);
        first_hit = m.provision_hit;
        ctx.destroy(&m)?;
    }
    progress.step(&format!("{}: correctness", way.name()));
    let failure = check(ctx, way, class0, base)?;
    let shared = if way == Way::HardlinkFarm { inode_set(&base.tree) } else { Default::default() };
    let (mut create, mut ready, mut destroy) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bytes, mut inodes) = (Vec::new(), Vec::new());
    let (mut status, mut index_bytes, mut hits) = (Vec::new(), Vec::new(), Vec::new());
    let mut runs: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for i in 0..ctx.opts.runs {
        progress.step(&format!("{}: run {}/{}", way.name(), i + 1, ctx.opts.runs));
        let m = ctx.create(way, class0, base)?;
        create.push(m.create_ms);
        ready.push(m.ready_ms);
        status.extend(m.status_ms);
        index_bytes.extend(m.index.as_ref().and_then(|p| std::fs::metadata(p).ok()).map(|md| md.len()));
        hits.extend(m.provision_hit);
        let paths: Vec<&Path> = m.disk_paths.iter().map(PathBuf::as_path).collect();
        let Disk { bytes: b, inodes: n } = disk_added(&paths, &shared);
        bytes.push(b);
        inodes.push(n);
        for c in classes {
            if let Some(t) = run_step(*c, way, &m.cwd, ctx.opts.quick, base)? {
                runs.entry(c.to_string()).or_default().push(t);
            }
        }
        destroy.push(ctx.destroy(&m)?);
    }
    // Many roots alive at once; copying ways at a smaller n, scaled linearly.
    let n_target = ctx.opts.concurrency;
    let n = if way.copies() { n_target.min(if ctx.opts.quick { 3 } else { 4 }) } else { n_target };
    progress.step(&format!("{}: {n} roots alive at once", way.name()));
    let t = Instant::now();
    let mut alive = Vec::new();
    for _ in 0..n {
        alive.push(ctx.create(way, class0, base)?);
    }
    let total_ms = ms(t);
    let mut total_bytes = 0;
    for m in &alive {
        let paths: Vec<&Path> = m.disk_paths.iter().map(PathBuf::as_path).collect();
        total_bytes += disk_added(&paths, &shared).bytes;
    }
    // Destroying a root nobody touched (the runs' roots hold a commit by then).
    let mut untouched_destroy = Vec::new();
    for m in &alive {
        untouched_destroy.push(ctx.destroy(m)?);
    }
    // At a new commit whose parent's checkout is cached: each run a different commit.
    let mut new_commit = Vec::new();
    if way == Way::GitOverlay {
        for i in 0..ctx.opts.runs {
            progress.step(&format!("{}: new commit {}/{}", way.name(), i + 1, ctx.opts.runs));
            let rev = child_commit(ctx, &base.repo, i, NEW_COMMIT_FILES)?;
            let m = ctx.create_at(way, class0, base, &rev)?;
            new_commit.push(m.ready_ms);
            ctx.destroy(&m)?;
        }
    }
    let fsmonitor = match way == Way::GitOverlay && ctx.opts.repo.is_none() {
        true => Some(with_fsmonitor(ctx, class0, base, progress)?),
        false => None,
    };
    let scale = n_target as f64 / n.max(1) as f64;
    let concurrent = Concurrent {
        n: n_target,
        total_ms: total_ms * scale,
        bytes: (total_bytes as f64 * scale) as u64,
        extrapolated: n != n_target,
    };
    let index = median_u64(&mut index_bytes.clone());
    let per_root = median_u64(&mut bytes.clone());
    let mut out = BTreeMap::new();
    for c in classes {
        let repo_edit = *c == Class::RepoEdit;
        // A worktree is usable once made; its first `git status` counts towards time-to-ready
        // only where git is the point (repo-edit), as it does for git-overlay everywhere.
        let ready_c: Vec<f64> = if way == Way::Worktree && !repo_edit && status.len() == ready.len() {
            ready.iter().zip(&status).map(|(r, s)| r - s).collect()
        } else {
            ready.clone()
        };
        let git_figures = (way.is_git() && repo_edit).then(|| GitFigures {
            first_status_ms: Stats::of(&status),
            index_bytes: index,
            bytes_besides_index: per_root.saturating_sub(index),
            cold_ready_ms: cold_ready,
            new_commit_ready_ms: (!new_commit.is_empty()).then(|| Stats::of(&new_commit)),
            new_commit_files: if new_commit.is_empty() { 0 } else { NEW_COMMIT_FILES },
            destroy_untouched_ms: Stats::of(&untouched_destroy),
            fsmonitor: fsmonitor.clone(),
        });
        let provision = (way == Way::OverlayProvision).then(|| ProvisionFigures {
            command: ctx.opts.provision.clone().unwrap_or_default(),
            inputs: provision_inputs(ctx.opts, &base.tree).unwrap_or_default(),
            miss_ms: cold_ready.unwrap_or_default(),
            first_was_miss: first_hit == Some(false),
            all_hits: !hits.is_empty() && hits.iter().all(|h| *h),
        });
        out.insert(
            c.to_string(),
            BackendResult {
                backend: way.name().into(),
                available: true,
                reason: failure.clone(),
                correct: failure.is_none(),
                create_ms: Stats::of(&create),
                ready_ms: Stats::of(&ready_c),
                run_ms: runs.get(&c.to_string()).map(|v| Stats::of(v).p50),
                destroy_ms: Stats::of(&destroy),
                bytes_per_root: per_root,
                inodes_per_root: median_u64(&mut inodes.clone()),
                concurrent,
                one_time_ms: 0.0,
                break_even_runs: None,
                git: git_figures,
                provision,
            },
        );
    }
    Ok(out)
}

/// git-overlay roots of the bench's own fixture repository with `extensions.worktreeConfig`
/// turned on for the while (and off again, whatever happens): warm, then at new commits
/// (others than the default runs'). Each root's index must carry the fsmonitor's extension.
fn with_fsmonitor(ctx: &Ctx, class: Class, base: &Base, progress: &dyn BenchProgress) -> Result<FsmonitorFigures> {
    let way = Way::GitOverlay;
    ctx.store.sync()?;
    git(&base.repo, &["config", "extensions.worktreeConfig", "true"])?;
    let r = (|| -> Result<FsmonitorFigures> {
        let one = |rev: &str| -> Result<(f64, f64)> {
            let m = ctx.create_at(way, class, base, rev)?;
            let has = m
                .index
                .as_ref()
                .and_then(|p| std::fs::read(p).ok())
                .is_some_and(|b| b.windows(4).any(|w| w == b"FSMN"));
            ctx.destroy(&m)?;
            if !has {
                return Err(Error::Conflict(
                    "git-overlay: a root of a repository with extensions.worktreeConfig has no fsmonitor".into(),
                ));
            }
            Ok((m.ready_ms, m.status_ms.unwrap_or_default()))
        };
        let (mut ready, mut status, mut new_commit) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..ctx.opts.runs {
            progress.step(&format!("{}: with fsmonitor, run {}/{}", way.name(), i + 1, ctx.opts.runs));
            let (r, s) = one("HEAD")?;
            ready.push(r);
            status.push(s);
        }
        for i in 0..ctx.opts.runs {
            progress.step(&format!("{}: with fsmonitor, new commit {}/{}", way.name(), i + 1, ctx.opts.runs));
            let rev = child_commit(ctx, &base.repo, ctx.opts.runs + i, NEW_COMMIT_FILES)?;
            new_commit.push(one(&rev)?.0);
        }
        Ok(FsmonitorFigures {
            ready_ms: Stats::of(&ready),
            first_status_ms: Stats::of(&status),
            new_commit_ready_ms: Stats::of(&new_commit),
        })
    })();
    git(&base.repo, &["config", "--unset", "extensions.worktreeConfig"])?;
    r
}

fn unavailable(way: Way, reason: String) -> BackendResult {
    BackendResult { backend: way.name().into(), available: false, reason: Some(reason), ..Default::default() }
}

fn machine(store: &Store) -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let fs = match nix::sys::statfs::statfs(store.path()).map(|s| s.filesystem_type()) {
        Ok(t) if t == nix::sys::statfs::EXT4_SUPER_MAGIC => "ext4".into(),
        Ok(t) if t == nix::sys::statfs::XFS_SUPER_MAGIC => "xfs".into(),
        Ok(t) if t == nix::sys::statfs::BTRFS_SUPER_MAGIC => "btrfs".into(),
        Ok(t) if t == nix::sys::statfs::TMPFS_MAGIC => "tmpfs".into(),
        Ok(t) if t == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC => "overlay".into(),
        Ok(t) => format!("0x{:x}", t.0),
        Err(_) => "unknown".into(),
    };
    let version = |cmd: &str| {
        Command::new(cmd).arg("--version").output().ok().filter(|o| o.status.success()).map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| !l.trim().is_empty() && !l.trim().ends_with(':'))
                .unwrap_or("")
                .trim()
                .to_string()
        })
    };
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        kernel: nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        filesystem: fs,
        root: nix::unistd::geteuid().is_root(),
        date: execroot::store::snapshot::now_rfc3339(),
        execroot: env!("CARGO_PKG_VERSION").into(),
        git: version("git").unwrap_or_default(),
        ostree: version("ostree").map(|v| v.trim_start_matches("Version:").trim().trim_matches('\'').to_string()),
    }
}

/// Set up the bases: returns (project base, preview base).
fn setup(ctx: &Ctx, one: &mut OneTime, progress: &dyn BenchProgress) -> Result<(Base, Base)> {
    let store = ctx.store;
    let shape = ctx.opts.shape.clone().unwrap_or_else(|| "node-modules".into());
    // --quick: 2,500 project entries, so that a preview (project + dependencies) stays at about
    // 5,000 entries and the whole run under two minutes on a 2-core machine.
    let scale = if ctx.opts.quick && ctx.opts.shape.is_none() { 0.1 } else { 1.0 };
    // The project: the user's repository, or a seeded fixture committed to a fresh one.
    let repo = match &ctx.opts.repo {
        Some(r) => r.canonicalize().map_err(|e| Error::BadInput(format!("--repo {}: {e}", r.display())))?,
        None => {
            progress.step("generating the project fixture");
            let r = ctx.work.join("project");
            crate::fixture::generate_named(&shape, scale, 1, &r)?;
            git(&r, &["init", "-q", "-b", "main"])?;
            git(&r, &["add", "-A"])?;
            git(&r, &["commit", "-q", "-m", "base"])?;
            // Packed, as a clone is: 28,000 loose objects made every tree read of the git
            // ways (ls-tree, diff-tree, checkout) a file open and an inflate per object.
            git(&r, &["repack", "-adq"])?;
            r
        }
    };
    let deps_dir = match &ctx.opts.deps {
        Some(d) => d.canonicalize().map_err(|e| Error::BadInput(format!("--deps {}: {e}", d.display())))?,
        None => {
            progress.step("generating the dependency fixture");
            let d = ctx.work.join("deps");
            crate::fixture::generate_named(&shape, scale, 2, &d)?;
            d
        }
    };
    progress.step("ingesting the project");
    let opts =
        |name: &str| IngestOptions { name: Some(name.into()), exclude: vec![b".git".to_vec()], ..Default::default() };
    // The committed tree, exactly what a worktree of HEAD shows (no untracked or ignored files):
    // `git archive HEAD | execroot snapshot create --tar -`.
    let t = Instant::now();
    let archive = execroot::sys::git::check(
        &repo,
        execroot::sys::Owner::current(),
        &["-c", "safe.directory=*", "archive", "HEAD"],
        std::time::Duration::from_secs(600),
    )?;
    let r = store.ingest_tar(&archive[..], "git archive HEAD", &opts("bench-project"), &NoProgress)?;
    one.ingest_ms = ms(t);
    one.project_entries = r.entries;
    progress.step("ingesting the dependencies");
    let t = Instant::now();
    let d = store.ingest_dir(&deps_dir, &opts("bench-deps"), &NoProgress)?;
    one.deps_ingest_ms = ms(t);
    one.deps_entries = d.entries;
    if policy_overlay_ok(store) {
        progress.step("materializing layers");
        let t = Instant::now();
        store.materialize(&r.id)?;
        one.materialize_ms = ms(t);
        let t = Instant::now();
        store.materialize(&d.id)?;
        one.deps_materialize_ms = ms(t);
    }
    // Reference trees: the project as a run sees it, and with its dependencies.
    progress.step("preparing reference trees");
    let tree = ctx.work.join("tree");
    store.checkout(&r.id, &tree)?;
    let ptree = ctx.work.join("preview-tree");
    store.checkout(&r.id, &ptree)?;
    store.checkout(&d.id, &ptree.join("node_modules"))?;
    ostree_compare(ctx, &tree, one, progress);
    let project = Base { project: "bench-project".into(), deps: None, repo: repo.clone(), tree, deps_dir: None };
    let preview = Base {
        project: "bench-project".into(),
        deps: Some("bench-deps".into()),
        repo,
        tree: ptree,
        deps_dir: Some(deps_dir),
    };
    Ok((project, preview))
}

fn policy_overlay_ok(store: &Store) -> bool {
    execroot::policy::unavailable(BackendKind::Overlay, store.path()).is_none()
}

fn ostree_compare(ctx: &Ctx, tree: &Path, one: &mut OneTime, progress: &dyn BenchProgress) {
    if Command::new("ostree").arg("--version").output().is_err() {
        one.note = Some("ostree is not installed: no comparison with ostree commit / checkout -H".into());
        return;
    }
    progress.step("ostree commit and checkout -H of the same tree");
    let repo = ctx.work.join("ostree-repo");
    let run = |args: &[&str]| {
        Command::new("ostree")
            .arg(format!("--repo={}", repo.display()))
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !run(&["init", "--mode=bare"]) {
        one.note = Some("ostree init failed".into());
        return;
    }
    let t = Instant::now();
    let tree_arg = format!("--tree=dir={}", tree.display());
    let ok = run(&["commit", "--branch=bench", &tree_arg]);
    if !ok {
        one.note = Some("ostree commit failed".into());
        return;
    }
    one.ostree_commit_ms = Some(ms(t));
    let dest = ctx.work.join("ostree-checkout");
    let t = Instant::now();
    if run(&["checkout", "-H", "bench", &dest.to_string_lossy()]) {
        one.ostree_checkout_hardlink_ms = Some(ms(t));
    }
}

/// The baseline of a class: the worktree way it is compared against.
fn baseline(class: Class) -> &'static str {
    if class == Class::Preview {
        "worktree+provision"
    } else {
        "worktree"
    }
}

/// Fill in one-time costs, break-even and the verdict of one class.
fn conclude(class: Class, mut rows: Vec<BackendResult>, one: &OneTime, th: Thresholds) -> ClassResult {
    let preview = class == Class::Preview;
    for r in rows.iter_mut() {
        r.one_time_ms = match r.backend.as_str() {
            "overlay" => {
                one.ingest_ms
                    + one.materialize_ms
                    + if preview { one.deps_ingest_ms + one.deps_materialize_ms } else { 0.0 }
            }
            "copy" => one.ingest_ms + if preview { one.deps_ingest_ms } else { 0.0 },
            "worktree+mount" => one.deps_ingest_ms + one.deps_materialize_ms,
            // What the first root of the commit costs beyond a warm one (its checkout ingested).
            "git-overlay" => {
                r.git.as_ref().and_then(|g| g.cold_ready_ms).map_or(0.0, |c| (c - r.ready_ms.p50).max(0.0))
            }
            // The project's snapshot, and the layer the first create built.
            "overlay+provision" => {
                one.ingest_ms
                    + one.materialize_ms
                    + r.provision.as_ref().map_or(0.0, |p| (p.miss_ms - r.ready_ms.p50).max(0.0))
            }
            _ => 0.0,
        };
    }
    let base = rows.iter().find(|r| r.backend == baseline(class) && r.available).cloned();
    if let Some(b) = &base {
        for r in rows.iter_mut().filter(|r| r.available) {
            let saving = (b.ready_ms.p50 + b.destroy_ms.p50) - (r.ready_ms.p50 + r.destroy_ms.p50);
            r.break_even_runs = (saving > 0.0).then(|| (r.one_time_ms / saving).ceil().max(1.0) as u64);
        }
    }
    let ratio = |r: &BackendResult, b: &BackendResult| {
        (b.ready_ms.p50 / r.ready_ms.p50.max(1e-3), b.bytes_per_root as f64 / (r.bytes_per_root.max(1)) as f64)
    };
    let verdict = match (&base, class) {
        (Some(b), Class::RepoEdit) => match rows.iter().find(|r| r.backend == "git-overlay") {
            Some(r) if r.available && r.correct => repo_edit_verdict(r, b, th),
            Some(r) => Verdict {
                benefits: false,
                reason: format!(
                    "git-overlay {}: stays on plain git worktrees",
                    match (r.available, r.reason.as_deref()) {
                        (true, why) => format!("failed correctness ({})", why.unwrap_or("")),
                        (false, why) => why.unwrap_or("unavailable").to_string(),
                    }
                ),
            },
            None => {
                Verdict { benefits: false, reason: "git-overlay not measured: stays on plain git worktrees".into() }
            }
        },
        (None, Class::RepoEdit) => {
            Verdict { benefits: false, reason: "the worktree baseline could not be measured".into() }
        }
        (None, _) => Verdict { benefits: false, reason: "the worktree baseline could not be measured".into() },
        (Some(b), _) => {
            let describe = |name: &str| -> (bool, String) {
                match rows.iter().find(|r| r.backend == name) {
                    Some(r) if r.available && r.correct => {
                        let (rr, dr) = ratio(r, b);
                        let ok = rr >= th.ready_ratio && dr >= th.disk_ratio;
                        let x = |v: f64| if v < 10.0 { format!("{v:.1}x") } else { format!("{v:.0}x") };
                        (
                            ok,
                            format!(
                                "{name}: time-to-ready {} better, disk per root {} smaller than {} ({})",
                                x(rr),
                                x(dr),
                                b.backend,
                                if ok { "above threshold" } else { "below threshold" }
                            ),
                        )
                    }
                    Some(r) if r.available => {
                        (false, format!("{name}: failed correctness ({})", r.reason.clone().unwrap_or_default()))
                    }
                    Some(r) => (false, format!("{name}: {}", r.reason.clone().unwrap_or_else(|| "unavailable".into()))),
                    None => (false, format!("{name}: not measured")),
                }
            };
            let (overlay_ok, overlay) = describe("overlay");
            let (copy_ok, copy) = describe("copy");
            // With a provision command, previews also take the provision path.
            let provisioned =
                rows.iter().any(|r| r.backend == "overlay+provision").then(|| describe("overlay+provision"));
            let benefits = overlay_ok || copy_ok || provisioned.as_ref().is_some_and(|p| p.0);
            let overlay = match &provisioned {
                Some((_, p)) => format!("{overlay}; {p}"),
                None => overlay,
            };
            Verdict {
                benefits,
                reason: format!(
                    "{overlay}; {copy}. {}",
                    match (overlay_ok, copy_ok) {
                        (true, true) => "Benefits with or without root.",
                        (true, false) => "Benefits where overlay can mount (root); without root the copy backend does not clear the threshold.",
                        (false, true) => "Benefits through the copy backend.",
                        (false, false) => "Below threshold: stays on worktrees.",
                    }
                ),
            }
        }
    };
    ClassResult { class, verdict, backends: rows }
}

/// The repo-edit verdict from the git-overlay row `r` against the worktree baseline `b`: the
/// class's ratios and issue 11's targets, each said met or not.
fn repo_edit_verdict(r: &BackendResult, b: &BackendResult, th: Thresholds) -> Verdict {
    let rr = b.ready_ms.p50 / r.ready_ms.p50.max(1e-3);
    let dr = b.bytes_per_root as f64 / r.bytes_per_root.max(1) as f64;
    let ok = rr >= th.ready_ratio && dr >= th.disk_ratio;
    let x = |v: f64| if v < 10.0 { format!("{v:.1}x") } else { format!("{v:.0}x") };
    let t = |v: f64| if v >= 10_000.0 { format!("{:.1} s", v / 1000.0) } else { format!("{v:.0} ms") };
    let met = |m: bool| if m { "met" } else { "**not met**" };
    let g = r.git.clone().unwrap_or_default();
    let mut targets = vec![format!(
        "warm time-to-ready p50 {} (target ≤ 100 ms: {})",
        t(r.ready_ms.p50),
        met(r.ready_ms.p50 <= 100.0)
    )];
    if let Some(n) = g.new_commit_ready_ms {
        targets.push(format!(
            "at a new commit changing {} files {} (≤ 300 ms: {})",
            g.new_commit_files,
            t(n.p50),
            met(n.p50 <= 300.0)
        ));
    }
    targets.push(format!(
        "disk per untouched root besides the index {} (≤ 1 MiB: {}; the index {})",
        indicatif::HumanBytes(g.bytes_besides_index),
        met(g.bytes_besides_index <= 1 << 20),
        indicatif::HumanBytes(g.index_bytes)
    ));
    if let Some(wg) = &b.git {
        let f = g.first_status_ms.p50 / wg.first_status_ms.p50.max(1e-3);
        targets.push(format!(
            "first git status {} against {} in a real checkout ({:.1}x; ≤ 2x: {})",
            t(g.first_status_ms.p50),
            t(wg.first_status_ms.p50),
            f,
            met(f <= 2.0)
        ));
    }
    targets.push(format!(
        "destroy of an untouched root p50 {} (≤ 50 ms: {})",
        t(g.destroy_untouched_ms.p50),
        met(g.destroy_untouched_ms.p50 <= 50.0)
    ));
    if let Some(f) = &g.fsmonitor {
        targets.push(format!(
            "with execroot's fsmonitor (the repository's extensions.worktreeConfig on): warm time-to-ready p50 {} (≤ 100 ms: {}), first git status {}, at a new commit {} (≤ 300 ms: {})",
            t(f.ready_ms.p50),
            met(f.ready_ms.p50 <= 100.0),
            t(f.first_status_ms.p50),
            t(f.new_commit_ready_ms.p50),
            met(f.new_commit_ready_ms.p50 <= 300.0)
        ));
    }
    Verdict {
        benefits: ok,
        reason: format!(
            "git-overlay (a real git worktree on its own branch, its files an overlay of the commit's cached checkout): time-to-ready {} against {} ({} better), disk per root {} against {} ({} smaller) than worktree ({}). Issue 11's targets: {}.",
            t(r.ready_ms.p50),
            t(b.ready_ms.p50),
            x(rr),
            indicatif::HumanBytes(r.bytes_per_root),
            indicatif::HumanBytes(b.bytes_per_root),
            x(dr),
            if ok { "above threshold: repo-edit uses git-overlay where overlay can mount, plain worktrees elsewhere" } else { "below threshold" },
            targets.join("; ")
        ),
    }
}

/// Run the benchmark.
pub fn run(opts: &BenchOptions, progress: &dyn BenchProgress) -> Result<BenchReport> {
    let tmp = tempfile::Builder::new()
        .prefix("execroot-bench-")
        .tempdir_in("/var/tmp")
        .or_else(|_| tempfile::tempdir())
        .map_err(|e| Error::io("/var/tmp", e))?;
    let store = Store::open(opts.store.clone().unwrap_or_else(|| tmp.path().join("store")))?;
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).at(&work)?;
    let ctx = Ctx { store: &store, work, opts, counter: std::cell::Cell::new(0) };
    let mut one = OneTime::default();
    let (project, preview) = setup(&ctx, &mut one, progress)?;
    let th = Thresholds { ready_ratio: 5.0, disk_ratio: 5.0 };
    let overlay_why = execroot::policy::unavailable(BackendKind::Overlay, store.path());

    let project_classes: Vec<Class> = opts.classes.iter().copied().filter(|c| *c != Class::Preview).collect();
    let mut per_class: BTreeMap<String, Vec<BackendResult>> = BTreeMap::new();
    let mut push = |rows: BTreeMap<String, BackendResult>| {
        for (c, r) in rows {
            per_class.entry(c).or_default().push(r);
        }
    };
    if !project_classes.is_empty() {
        let snapshot_classes: Vec<Class> = project_classes.iter().copied().filter(|c| *c != Class::RepoEdit).collect();
        for way in [Way::Overlay, Way::Copy] {
            if let (Way::Overlay, Some(why)) = (way, &overlay_why) {
                for c in &snapshot_classes {
                    push(BTreeMap::from([(c.to_string(), unavailable(way, format!("unavailable: {why}")))]));
                }
                continue;
            }
            if !snapshot_classes.is_empty() {
                push(measure(&ctx, way, &snapshot_classes, &project, progress)?);
            }
        }
        if project_classes.contains(&Class::RepoEdit) {
            for way in [Way::Overlay, Way::Copy] {
                push(BTreeMap::from([(
                    Class::RepoEdit.to_string(),
                    unavailable(way, "does not give branch semantics: repo-edit runs need a git worktree".into()),
                )]));
            }
        }
        push(measure(&ctx, Way::Worktree, &project_classes, &project, progress)?);
        if project_classes.contains(&Class::RepoEdit) {
            // After the worktree baseline, so that it does not measure a repository that
            // holds this way's branches and worktrees.
            match &overlay_why {
                Some(why) => push(BTreeMap::from([(
                    Class::RepoEdit.to_string(),
                    unavailable(Way::GitOverlay, format!("unavailable: {why}")),
                )])),
                None => push(measure(&ctx, Way::GitOverlay, &[Class::RepoEdit], &project, progress)?),
            }
        }
        push(measure(&ctx, Way::HardlinkFarm, &project_classes, &project, progress)?);
    }
    if opts.classes.contains(&Class::Preview) {
        let ways = [Way::Overlay, Way::Copy, Way::WorktreeProvision, Way::WorktreeMount, Way::HardlinkFarm];
        for way in ways {
            let needs_mount = matches!(way, Way::Overlay | Way::WorktreeMount);
            if let (true, Some(why)) = (needs_mount, &overlay_why) {
                push(BTreeMap::from([(Class::Preview.to_string(), unavailable(way, format!("unavailable: {why}")))]));
                continue;
            }
            push(measure(&ctx, way, &[Class::Preview], &preview, progress)?);
        }
        // The provision path: the dependencies built once by the command into a layer that
        // every later root of the same inputs stacks (issue 12).
        if opts.provision.is_some() {
            let way = Way::OverlayProvision;
            match &overlay_why {
                Some(why) => push(BTreeMap::from([(
                    Class::Preview.to_string(),
                    unavailable(way, format!("unavailable: {why}")),
                )])),
                None => {
                    let own = Base {
                        project: preview.project.clone(),
                        deps: None,
                        repo: preview.repo.clone(),
                        tree: project.tree.clone(),
                        deps_dir: None,
                    };
                    push(measure(&ctx, way, &[Class::Preview], &own, progress)?);
                }
            }
        }
    }
    let classes = opts
        .classes
        .iter()
        .map(|c| conclude(*c, per_class.remove(&c.to_string()).unwrap_or_default(), &one, th))
        .collect();
    let report = BenchReport {
        machine: machine(&store),
        quick: opts.quick,
        runs: opts.runs,
        one_time: one,
        thresholds: th,
        classes,
    };
    // Worktree branches the bench made live in the user's repository: remove them.
    if opts.repo.is_some() {
        if let Ok(list) = git(&project.repo, &["branch", "--list", "execroot-bench-*", "--format=%(refname:short)"]) {
            for b in list.lines() {
                let _ = git(&project.repo, &["branch", "-q", "-D", b]);
            }
        }
    }
    drop(ctx);
    Ok(report)
}
