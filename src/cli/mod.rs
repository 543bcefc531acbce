//! Command-line interface. Every command returns a JSON value (printed alone on stdout with
//! `--json`) and a human rendering; errors map to documented exit codes (docs/cli.md).

mod demo;

use indicatif::HumanBytes;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use execroot::backend::BackendKind;
use execroot::error::{Error, Result};
use execroot::policy::Class;
use execroot::root::RootListEntry;
use execroot::store::ingest::{IngestOptions, Progress};
use execroot::store::refs::{RefInfo, RefList};
use execroot::store::snapshot::{SnapshotListEntry, SnapshotRemoved};
use execroot::Store;

/// Exit status when `verify` finds problems.
pub const EXIT_PROBLEMS: i32 = 3;

#[derive(Parser, Debug)]
#[command(name = "execroot", version, about = "Disposable copy-on-write execution roots backed by a snapshot store")]
struct Cli {
    /// Store directory [default: $EXECROOT_STORE, else /var/lib/execroot for root,
    /// else $XDG_DATA_HOME/execroot or ~/.local/share/execroot]
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,
    /// Print one JSON document on stdout and nothing else.
    #[arg(long, global = true)]
    json: bool,
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create, inspect, check out and remove snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Name snapshots.
    #[command(subcommand)]
    Ref(RefCmd),
    /// Create, inspect and destroy execution roots.
    #[command(subcommand)]
    Root(RootCmd),
    /// Find and (with --repair) fix what a crash or reboot left: stuck roots, lost mounts,
    /// stray mounts, leftover temporary files.
    Doctor {
        /// Fix what is found.
        #[arg(long)]
        repair: bool,
        /// Remove root ID whose state cannot be read, with everything in it (its upper
        /// directory included), after you have checked it. Nothing else is done.
        #[arg(long, value_name = "ID", conflicts_with = "repair")]
        discard_unreadable: Option<String>,
    },
    /// Remove what no ref, root or grace period keeps: snapshots, layers, objects.
    Gc {
        /// Keep snapshots younger than this (for example 30m, 2h, 0).
        #[arg(long, default_value = "1h", value_name = "DURATION")]
        grace: String,
        /// Report what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Keep at most N provision layers, the most recently used (those roots use are kept).
        #[arg(long, value_name = "N")]
        keep_provisions: Option<usize>,
        /// Forget provision layers unused for longer than this (those roots use are kept).
        #[arg(long, value_name = "DURATION")]
        provision_max_age: Option<String>,
    },
    /// List, show and remove provision layers (`root create --provision`).
    #[command(subcommand)]
    Provision(ProvisionCmd),
    /// Bytes and files in objects, layers and each root; shared and unique.
    Df,
    /// Re-hash every object and check every manifest and ref.
    Verify {
        /// Move corrupt objects and manifests to quarantine/ so a later ingest heals them.
        #[arg(long)]
        repair: bool,
    },
    /// Generate deterministic workload trees.
    #[command(subcommand)]
    Fixture(FixtureCmd),
    /// Run the store's main job on a built-in fixture and print the figures.
    Demo(demo::DemoArgs),
    /// Compare the backends per workload class against git worktrees; write the report.
    Bench(BenchArgs),
    /// Serve the store over HTTP/1.1 and JSON on a unix socket, to every local user that can
    /// open it, each acting on its own roots (docs/api.md).
    Serve {
        /// The socket [default: STORE/execroot.sock].
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// The socket's mode (octal): who may connect.
        #[arg(long, default_value = "0660", value_name = "MODE")]
        socket_mode: String,
        /// The socket's group (name or gid).
        #[arg(long, value_name = "GROUP")]
        socket_group: Option<String>,
    },
    /// Send a snapshot, with the snapshots below it, to an OCI registry (only what the
    /// repository lacks); TAG defaults to latest (docs/remote.md).
    Push {
        /// Snapshot id, unambiguous prefix or ref.
        snapshot: String,
        /// REGISTRY/REPO[:TAG].
        target: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Fetch a snapshot, with the snapshots below it, from an OCI registry (only what the
    /// store lacks, every object checked).
    Pull {
        /// REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:DIGEST.
        source: String,
        /// Point this ref at the pulled snapshot.
        #[arg(long, value_name = "REF")]
        name: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Look into OCI registry repositories.
    #[command(subcommand)]
    Remote(RemoteCmd),
    /// Run a command in a root, as the root's owner, inside the root; prints its output and
    /// exits with its status (with --json: one document, exit 0).
    Exec {
        /// Root id or key.
        root: String,
        /// Kill the command after this long (for example 30s, 5m) [default: 1h].
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
        /// Working directory, relative to the root's cwd (or absolute inside it).
        #[arg(long, value_name = "DIR")]
        cwd: Option<PathBuf>,
        /// The command and its arguments, after `--`.
        #[arg(required = true, last = true, value_name = "CMD")]
        command: Vec<String>,
    },
}

/// How to reach a registry (push, pull, remote ls).
#[derive(Args, Debug)]
struct RemoteArgs {
    /// Reach this registry (HOST or HOST:PORT) over plain HTTP; loopback always is (repeatable).
    #[arg(long, value_name = "HOST")]
    insecure: Vec<String>,
}

impl RemoteArgs {
    fn client(&self) -> execroot::remote::ClientOptions {
        execroot::remote::ClientOptions { insecure: self.insecure.clone() }
    }
}

#[derive(Subcommand, Debug)]
enum RemoteCmd {
    /// The repository's tags and the snapshots they name.
    Ls {
        /// REGISTRY/REPO.
        repo: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Fixtures of at most about 5,000 entries, 3 runs, 10 roots alive at once.
    #[arg(long)]
    quick: bool,
    /// Classes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "routine,preview,artifact,repo-edit", value_parser = parse_class)]
    classes: Vec<Class>,
    /// Your repository (its HEAD is the project base) instead of the fixture.
    #[arg(long, value_name = "PATH")]
    repo: Option<PathBuf>,
    /// Your dependency tree (such as node_modules) instead of the fixture.
    #[arg(long, value_name = "PATH")]
    deps: Option<PathBuf>,
    /// Command that makes dependencies available in a fresh worktree (preview), run with sh -c;
    /// also measured as `root create --class preview --provision CMD`.
    #[arg(long, value_name = "CMD")]
    provision: Option<String>,
    /// The provision's inputs, relative to the project (comma-separated or repeated) [default:
    /// the first of pnpm-lock.yaml, package-lock.json, yarn.lock, package.json found].
    #[arg(long, value_name = "PATHS", value_delimiter = ',', requires = "provision")]
    provision_inputs: Vec<String>,
    /// Measured runs per backend [default: 3 with --quick, else 5].
    #[arg(long)]
    runs: Option<usize>,
    /// Roots alive at once [default: 10 with --quick, else 50].
    #[arg(long)]
    concurrency: Option<usize>,
    /// Where the report and chart go.
    #[arg(long, default_value = "bench-results", value_name = "DIR")]
    out: PathBuf,
    /// Fixture shape (built-in name or file) instead of node-modules.
    #[arg(long)]
    shape: Option<String>,
}

#[derive(Subcommand, Debug)]
enum SnapshotCmd {
    /// Ingest a directory (or a tar archive with --tar) as a snapshot.
    Create(CreateArgs),
    /// List snapshots.
    List,
    /// Show a snapshot's summary (and entries with --entries).
    Show {
        /// Snapshot id, id prefix, or ref.
        snapshot: String,
        /// List every entry.
        #[arg(long)]
        entries: bool,
    },
    /// Remove a snapshot (objects are freed by gc). Refused while a ref names it.
    Rm {
        /// Snapshot id, id prefix, or ref.
        snapshot: String,
        /// Also remove the refs that name it.
        #[arg(long)]
        force: bool,
    },
    /// Write a snapshot to DEST as a plain writable tree.
    Checkout {
        /// Snapshot id, id prefix, or ref.
        snapshot: String,
        /// Destination: must not exist, or be an empty directory.
        dest: PathBuf,
    },
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// Directory to ingest.
    #[arg(required_unless_present = "tar", conflicts_with = "tar")]
    dir: Option<PathBuf>,
    /// Ingest a tar archive from FILE, or from stdin with `-`.
    #[arg(long, value_name = "FILE|-")]
    tar: Option<String>,
    /// Point this ref at the new snapshot.
    #[arg(long, value_name = "REF")]
    name: Option<String>,
    /// Record a label (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// Skip devices, FIFOs and sockets (reported as warnings) instead of refusing them.
    #[arg(long)]
    skip_special: bool,
    /// Share the ref (--name) with every caller of the service (docs/api.md).
    #[arg(long, requires = "name")]
    shared: bool,
}

#[derive(Subcommand, Debug)]
enum ProvisionCmd {
    /// List the provision layers, most recently used first.
    List,
    /// Show a provision layer and the roots that use it.
    Show {
        /// The provision key.
        key: String,
    },
    /// Forget a provision layer (refused while a root uses it); gc collects its snapshot.
    Rm {
        /// The provision key.
        key: String,
    },
}

#[derive(Subcommand, Debug)]
enum RootCmd {
    /// Create a root for a run (idempotent with --key).
    Create(Box<RootCreateArgs>),
    /// List roots.
    List,
    /// Show a root: state, backend, cwd, snapshots, what the run wrote, git status for worktrees.
    Show {
        /// Root id or key.
        root: String,
    },
    /// What the run changed against its base: added, modified, deleted.
    Diff {
        /// Root id or key.
        root: String,
    },
    /// Record what the run changed as a new snapshot on top of the root's snapshots.
    Commit {
        /// Root id or key.
        root: String,
        /// Point this ref at the new snapshot.
        #[arg(long, value_name = "REF")]
        name: Option<String>,
        /// Record a label (repeatable).
        #[arg(long, value_name = "KEY=VALUE")]
        label: Vec<String>,
    },
    /// Copy the root's files (or only what changed) to DEST or, with --tar -, to stdout.
    Export {
        /// Root id or key.
        root: String,
        /// Destination directory (absent or empty).
        #[arg(required_unless_present = "tar", conflicts_with = "tar")]
        dest: Option<PathBuf>,
        /// Write a tar stream; only `-` (stdout) is accepted.
        #[arg(long, value_name = "-")]
        tar: Option<String>,
        /// Only added and modified entries (and the directories leading to them).
        #[arg(long)]
        changed_only: bool,
    },
    /// Destroy a root. Refuses to lose uncommitted work unless --force.
    Destroy {
        /// Root id or key.
        root: String,
        /// Discard uncommitted changes and untracked files of a worktree.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args, Debug)]
struct RootCreateArgs {
    /// Workload class.
    #[arg(long, value_parser = parse_class, value_name = "routine|preview|artifact|repo-edit")]
    class: Class,
    /// Snapshot to present (repeatable; bottom first).
    #[arg(long, value_name = "ID|REF")]
    from: Vec<String>,
    /// Mount an overlay of a snapshot at SUBDIR inside the root (repeatable).
    #[arg(long, value_name = "SUBDIR=ID|REF")]
    mount: Vec<String>,
    /// Backend; auto picks by class (docs/roots.md).
    #[arg(long, default_value = "auto", value_name = "auto|overlay|copy|worktree")]
    backend: String,
    /// Idempotency key: the same key returns the same root.
    #[arg(long)]
    key: Option<String>,
    /// User owning what the run can touch (name or uid).
    #[arg(long)]
    owner: Option<String>,
    /// Overlay without `volatile`: the upper directory survives a crash, unmount syncs.
    #[arg(long)]
    durable: bool,
    /// Repository for the worktree backend.
    #[arg(long, value_name = "PATH")]
    repo: Option<PathBuf>,
    /// Base ref for the worktree backend.
    #[arg(long, value_name = "REF")]
    base_ref: Option<String>,
    /// Branch for the worktree backend (default: from the key).
    #[arg(long, value_name = "NAME")]
    branch: Option<String>,
    /// Record a label (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// Stack a dependency layer built once by `/bin/sh -c CMD` per key (docs/roots.md).
    #[arg(long, value_name = "CMD")]
    provision: Option<String>,
    /// Files the provision depends on, relative to the root (repeatable or comma-separated).
    #[arg(long, value_name = "PATHS", value_delimiter = ',', requires = "provision")]
    provision_inputs: Vec<String>,
    /// What else the key covers: base (the base's layers) or inputs.
    #[arg(long, default_value = "inputs", value_name = "base|inputs", requires = "provision")]
    provision_scope: String,
    /// A variable passed to the command, its value part of the key (repeatable).
    #[arg(long, value_name = "NAME", requires = "provision")]
    provision_env: Vec<String>,
    /// Kill the provision command after this long [default: 10m].
    #[arg(long, value_name = "DURATION", requires = "provision")]
    provision_timeout: Option<String>,
}

#[derive(Subcommand, Debug)]
enum RefCmd {
    /// Point NAME at a snapshot.
    Set {
        /// Ref name.
        name: String,
        /// Snapshot id, id prefix, or ref.
        snapshot: String,
        /// Share the ref with every caller of the service (docs/api.md).
        #[arg(long)]
        shared: bool,
    },
    /// Remove a ref.
    Rm {
        /// Ref name.
        name: String,
    },
    /// List refs.
    List,
}

#[derive(Subcommand, Debug)]
enum FixtureCmd {
    /// List built-in shapes.
    List,
    /// Generate SHAPE (a built-in name or a shape file) into DEST.
    Generate {
        /// Built-in shape name or path to a shape TOML file.
        shape: String,
        /// Destination: must not exist, or be empty.
        dest: PathBuf,
        /// Random seed: the same seed gives the same tree.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Multiply file and directory counts.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
    },
}

/// `--class`: the library's names for workload classes.
fn parse_class(s: &str) -> std::result::Result<Class, String> {
    Class::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| {
        let names: Vec<&str> = Class::ALL.iter().map(|c| c.as_str()).collect();
        format!("unknown class {s:?}: use {}", names.join(", "))
    })
}

/// `--backend`: `auto` (None) or one of the library's backends.
fn parse_backend(s: &str) -> Result<Option<BackendKind>> {
    if s == "auto" {
        return Ok(None);
    }
    BackendKind::ALL
        .into_iter()
        .find(|b| b.as_str() == s)
        .map(Some)
        .ok_or_else(|| Error::BadInput(format!("--backend {s:?}: use auto, overlay, copy, worktree or git-overlay")))
}

/// A command's result: the JSON document and the human rendering.
pub(crate) struct Output {
    json: Value,
    human: String,
    exit: i32,
}

impl Output {
    fn new(json: Value, human: impl Into<String>) -> Output {
        Output { json, human: human.into(), exit: 0 }
    }
}

/// Run the CLI with the process arguments; returns the exit status.
pub fn main() -> i32 {
    // git runs this as a root's fsmonitor hook on every status: before any parsing, logging
    // or store (docs/cli.md, "git-fsmonitor").
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "git-fsmonitor") {
        return match execroot::sys::gitfsmonitor::run_hook(&args[2..], &mut std::io::stdout().lock()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("execroot git-fsmonitor: {e}");
                1
            }
        };
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    init_logging(cli.verbose);
    let json = cli.json;
    match run(cli) {
        Ok(out) => {
            use std::io::Write;
            // A closed pipe (`| head`) is not an error worth a panic.
            let mut stdout = std::io::stdout().lock();
            let _ = if out.json.is_null() {
                Ok(()) // The command wrote its own output (a tar stream).
            } else if json {
                writeln!(stdout, "{}", serde_json::to_string_pretty(&out.json).expect("serializable"))
            } else if !out.human.is_empty() {
                // Paths and names in it come from trees, archives and git: never raw to a terminal.
                writeln!(stdout, "{}", execroot::pathenc::escape(out.human.trim_end().as_bytes(), false))
            } else {
                Ok(())
            };
            out.exit
        }
        Err(e) => {
            if json {
                let doc = json!({ "error": { "code": e.code(), "message": e.to_string() } });
                println!("{}", serde_json::to_string_pretty(&doc).expect("serializable"));
            }
            // JSON escapes control characters itself; the text form is escaped here, once for
            // every message (paths, archive member names, git's stderr).
            eprintln!("execroot: error: {}", execroot::pathenc::escape(e.to_string().as_bytes(), false));
            e.exit_code()
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn store_path(cli: &Cli) -> PathBuf {
    cli.store
        .clone()
        .or_else(|| std::env::var_os("EXECROOT_STORE").filter(|s| !s.is_empty()).map(PathBuf::from))
        .unwrap_or_else(Store::default_path)
}

fn run(cli: Cli) -> Result<Output> {
    let json = cli.json;
    let open = || Store::open(store_path(&cli));
    match &cli.cmd {
        Cmd::Snapshot(c) => snapshot_cmd(&open()?, c, json),
        Cmd::Ref(c) => ref_cmd(&open()?, c),
        Cmd::Verify { repair } => verify_cmd(&open()?, *repair),
        Cmd::Root(c) => root_cmd(&open()?, c, json),
        Cmd::Gc { grace, dry_run, keep_provisions, provision_max_age } => {
            let policy = execroot::root::provision::ProvisionPolicy {
                keep: *keep_provisions,
                max_age: provision_max_age.as_deref().map(|d| parse_duration("--provision-max-age", d)).transpose()?,
            };
            gc_cmd(&open()?, grace, *dry_run, policy)
        }
        Cmd::Provision(c) => provision_cmd(&open()?, c),
        Cmd::Df => df_cmd(&open()?),
        Cmd::Doctor { repair, discard_unreadable: Some(id) } if !*repair => {
            let r = open()?.discard_unreadable(id)?;
            let human: String =
                r.findings.iter().map(|f| format!("{} {}: {}", f.kind.as_str(), f.path.display(), f.action)).collect();
            Ok(Output::new(to_json(&r), human))
        }
        Cmd::Doctor { repair, .. } => doctor_cmd(&open()?, *repair),
        Cmd::Fixture(c) => fixture_cmd(c),
        Cmd::Demo(a) => demo::run(a, cli.store.as_deref(), json),
        Cmd::Bench(a) => bench_cmd(a, cli.store.clone(), json),
        Cmd::Serve { socket, socket_mode, socket_group } => {
            let opts = crate::service::ServeOptions {
                socket: socket.clone(),
                mode: crate::service::socket::parse_mode(socket_mode)?,
                group: socket_group.as_deref().map(crate::service::socket::parse_group).transpose()?,
            };
            crate::service::serve(open()?, opts)?;
            Ok(Output::new(Value::Null, ""))
        }
        Cmd::Push { snapshot, target, remote } => {
            let target = execroot::remote::Reference::parse(target)?;
            let r = execroot::remote::push::push(&open()?, snapshot, &target, &remote.client())?;
            let human = format!(
                "pushed {} to {} ({})\n{} objects: {} already there, {} sent in {} packs; {} blobs ({}) uploaded, {} requests",
                r.snapshot,
                r.reference,
                r.digest,
                r.objects,
                r.reused_objects,
                r.new_objects,
                r.packs,
                r.uploaded_blobs,
                HumanBytes(r.uploaded_bytes),
                r.requests
            );
            Ok(Output::new(to_json(&r), human))
        }
        Cmd::Pull { source, name, remote } => {
            let source = execroot::remote::Reference::parse(source)?;
            let opts = execroot::remote::PullOptions { name: name.clone(), client: remote.client() };
            let r = execroot::remote::pull::pull(&open()?, &source, &opts)?;
            let human = format!(
                "pulled {} from {}\n{} objects: {} already here, {} fetched ({}), {} requests",
                r.snapshot,
                r.reference,
                r.objects,
                r.present_objects,
                r.fetched_objects,
                HumanBytes(r.bytes_received),
                r.requests
            );
            Ok(Output::new(to_json(&r), human))
        }
        Cmd::Remote(RemoteCmd::Ls { repo, remote }) => {
            let repo = execroot::remote::Reference::parse(repo)?;
            let r = execroot::remote::list::list(&repo, &remote.client())?;
            let human: Vec<String> = r
                .tags
                .iter()
                .map(|t| match (&t.snapshot, &t.error) {
                    (Some(id), _) => format!("{:<24} {id}", t.tag),
                    (None, e) => format!("{:<24} - {}", t.tag, e.as_deref().unwrap_or("")),
                })
                .collect();
            Ok(Output::new(to_json(&r), human.join("\n")))
        }
        Cmd::Exec { root, timeout, cwd, command } => exec_cmd(&open()?, root, timeout.as_deref(), cwd, command, json),
    }
}

fn to_json(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).expect("serializable")
}

fn parse_labels(raw: &[String]) -> Result<BTreeMap<String, String>> {
    raw.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::BadInput(format!("label {kv:?} is not KEY=VALUE"))),
        })
        .collect()
}

/// A progress bar on stderr, drawn only on a terminal and never with `--json`: files stored
/// out of files found, and bytes stored out of bytes found (a tar stream has no totals).
pub(crate) struct Bar(Option<indicatif::ProgressBar>, std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64);

impl Bar {
    pub(crate) fn new(json: bool) -> Bar {
        let zero = || std::sync::atomic::AtomicU64::new(0);
        if json || !std::io::stderr().is_terminal() {
            return Bar(None, zero(), zero());
        }
        let pb = indicatif::ProgressBar::new(0);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} files  {msg}  [{elapsed_precise}]")
                .expect("valid template"),
        );
        Bar(Some(pb), zero(), zero())
    }
}

impl Progress for Bar {
    fn start(&self, files: u64, bytes: u64) {
        if let Some(pb) = &self.0 {
            pb.set_length(files);
            self.2.store(bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }
    fn advance(&self, bytes: u64) {
        if let Some(pb) = &self.0 {
            let done = self.1.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed) + bytes;
            let total = self.2.load(std::sync::atomic::Ordering::Relaxed);
            pb.inc(1);
            if total > 0 {
                pb.set_message(format!("{} of {}", HumanBytes(done), HumanBytes(total)));
            } else {
                pb.set_message(HumanBytes(done).to_string());
            }
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

fn ingest_cmd(store: &Store, a: &CreateArgs, json: bool) -> Result<Output> {
    let opts = IngestOptions {
        name: a.name.clone(),
        labels: parse_labels(&a.label)?,
        skip_special: a.skip_special,
        exclude: vec![],
    };
    let bar = Bar::new(json);
    let report = match (&a.tar, &a.dir) {
        (Some(t), _) if t == "-" => store.ingest_tar(std::io::stdin().lock(), "-", &opts, &bar)?,
        (Some(t), _) => {
            let f = std::fs::File::open(t).map_err(|e| Error::BadInput(format!("{t}: cannot open archive: {e}")))?;
            store.ingest_tar(std::io::BufReader::new(f), t, &opts, &bar)?
        }
        (None, Some(d)) => store.ingest_dir(d, &opts, &bar)?,
        (None, None) => return Err(Error::BadInput("give a DIR or --tar FILE".into())),
    };
    drop(bar);
    if let (true, Some(n)) = (a.shared, &report.name) {
        set_ref(store, n, &report.id, true)?;
    }
    let mut human = format!(
        "snapshot {}\n  {} entries: {} files, {} dirs, {} symlinks, {}\n  new objects {} ({}), reused {} ({}), {:.0} ms",
        report.id,
        report.entries,
        report.files,
        report.dirs,
        report.symlinks,
        HumanBytes(report.bytes),
        report.new_objects,
        HumanBytes(report.new_bytes),
        report.reused_objects,
        HumanBytes(report.reused_bytes),
        report.elapsed_ms
    );
    if let Some(n) = &report.name {
        human.push_str(&format!("\n  ref {n}"));
    }
    for w in &report.warnings {
        human.push_str(&format!("\n  warning: {w}"));
    }
    Ok(Output::new(to_json(&report), human))
}

fn snapshot_cmd(store: &Store, c: &SnapshotCmd, json: bool) -> Result<Output> {
    match c {
        SnapshotCmd::Create(a) => ingest_cmd(store, a, json),
        SnapshotCmd::List => {
            let list = store.snapshot_list()?;
            let mut human = String::new();
            for e in &list.snapshots {
                match e {
                    SnapshotListEntry::Snapshot(i) => human.push_str(&format!(
                        "{}  {:>7} entries  {:>10}  {}  {}\n",
                        &i.id.to_hex()[..16],
                        i.counts.entries,
                        HumanBytes(i.counts.bytes),
                        i.created,
                        i.refs.join(",")
                    )),
                    SnapshotListEntry::Damaged { id, error } => {
                        human.push_str(&format!("{}  DAMAGED {error}\n", &id.to_hex()[..16]))
                    }
                }
            }
            Ok(Output::new(to_json(&list), human))
        }
        SnapshotCmd::Show { snapshot, entries } => {
            let id = store.resolve(snapshot)?;
            let info = store.snapshot_info(&id, *entries)?;
            let mut human = format!(
                "snapshot {}\n  parents {}\n  refs {}\n  created {}  source {}\n  {} entries: {} files, {} dirs, {} symlinks, {} whiteouts, {}",
                info.id,
                info.parents.len(),
                info.refs.join(", "),
                info.created,
                info.source,
                info.counts.entries,
                info.counts.files,
                info.counts.dirs,
                info.counts.symlinks,
                info.counts.whiteouts,
                HumanBytes(info.counts.bytes)
            );
            for (k, v) in &info.labels {
                human.push_str(&format!("\n  label {k}={v}"));
            }
            if *entries {
                let m = store.load_manifest(&id)?;
                human.push('\n');
                for e in &m.entries {
                    let extra = match &e.node {
                        execroot::store::Node::File { size, hash } => format!("{size} {}", &hash.to_hex()[..16]),
                        execroot::store::Node::Symlink { target } => format!("-> {}", String::from_utf8_lossy(target)),
                        _ => String::new(),
                    };
                    human.push_str(&format!(
                        "{:<8} {:04o} {} {}\n",
                        e.node.kind_name(),
                        e.mode,
                        if e.path.is_empty() { ".".into() } else { String::from_utf8_lossy(&e.path).into_owned() },
                        extra
                    ));
                }
            }
            Ok(Output::new(to_json(&info), human))
        }
        SnapshotCmd::Rm { snapshot, force } => {
            let id = store.resolve(snapshot)?;
            let refs_removed = store.remove_snapshot(&id, *force)?;
            let r = SnapshotRemoved { removed: id, refs_removed };
            Ok(Output::new(to_json(&r), format!("removed snapshot {id}")))
        }
        SnapshotCmd::Checkout { snapshot, dest } => {
            let id = store.resolve(snapshot)?;
            let r = store.checkout(&id, dest)?;
            let human = format!(
                "checked out {} into {}: {} entries, {} ({} reflinked, {} copied), {:.0} ms",
                r.id,
                dest.display(),
                r.entries,
                HumanBytes(r.bytes),
                r.reflinked,
                r.copied,
                r.elapsed_ms
            );
            Ok(Output::new(to_json(&r), human))
        }
    }
}

fn ref_cmd(store: &Store, c: &RefCmd) -> Result<Output> {
    match c {
        RefCmd::Set { name, snapshot, shared } => {
            let id = store.resolve(snapshot)?;
            set_ref(store, name, &id, *shared)?;
            Ok(Output::new(to_json(&RefInfo { name: name.clone(), id: Some(id) }), format!("{name} -> {id}")))
        }
        RefCmd::Rm { name } => {
            let id = store.remove_ref(name)?;
            let human =
                format!("removed ref {name} (was {})", id.map(|h| h.to_hex()).unwrap_or_else(|| "unreadable".into()));
            Ok(Output::new(to_json(&RefInfo { name: name.clone(), id }), human))
        }
        RefCmd::List => {
            let refs = store.list_refs()?;
            let human: String = refs.iter().map(|(n, h)| format!("{n}  {h}\n")).collect();
            let list = RefList { refs: refs.into_iter().map(|(name, id)| RefInfo { name, id: Some(id) }).collect() };
            Ok(Output::new(to_json(&list), human))
        }
    }
}

/// Point a ref, recording the user who set it and whether it is shared (`--shared`).
fn set_ref(store: &Store, name: &str, id: &execroot::Hash, shared: bool) -> Result<()> {
    let meta = execroot::store::refs::RefMeta { uid: execroot::sys::Owner::current().uid, shared };
    store.set_ref_with(name, id, meta)
}

fn verify_cmd(store: &Store, repair: bool) -> Result<Output> {
    let r = store.verify(repair)?;
    let mut human = format!(
        "{}: {} objects ({}) re-hashed, {} snapshots, {} refs, {:.0} ms",
        if r.ok { "ok" } else { "PROBLEMS" },
        r.objects,
        HumanBytes(r.bytes),
        r.snapshots,
        r.refs,
        r.elapsed_ms
    );
    for p in &r.object_problems {
        human.push_str(&format!("\n  object {} {}: breaks {} snapshot(s)", p.object, p.problem, p.snapshots.len()));
        for s in &p.snapshots {
            human.push_str(&format!("\n    {s}"));
        }
        if p.moved_to.is_some() {
            human.push_str("\n    moved to quarantine");
        }
    }
    for p in &r.snapshot_problems {
        human.push_str(&format!("\n  snapshot {}: {}", p.id, p.error));
    }
    for p in &r.ref_problems {
        human.push_str(&format!("\n  ref {}: {}", p.name, p.error));
    }
    for p in &r.layer_problems {
        human.push_str(&format!("\n  layer {}: {}{}", p.id, p.error, if p.rebuilt { " (rebuilt)" } else { "" }));
    }
    let mut out = Output::new(to_json(&r), human);
    if !r.ok {
        out.exit = EXIT_PROBLEMS;
    }
    Ok(out)
}

fn root_cmd(store: &Store, c: &RootCmd, json: bool) -> Result<Output> {
    match c {
        RootCmd::Create(a) => {
            let req = execroot::root::CreateRequest {
                class: Some(a.class),
                from: a.from.clone(),
                mounts: a.mount.clone(),
                backend: parse_backend(&a.backend)?,
                key: a.key.clone(),
                owner: a.owner.clone(),
                durable: a.durable,
                repo: a.repo.clone(),
                base_ref: a.base_ref.clone(),
                branch: a.branch.clone(),
                labels: parse_labels(&a.label)?,
                provision: match &a.provision {
                    None => None,
                    Some(cmd) => Some(execroot::root::provision::ProvisionRequest {
                        command: cmd.clone(),
                        inputs: a.provision_inputs.clone(),
                        scope: execroot::root::provision::Scope::parse(&a.provision_scope)?,
                        env: a.provision_env.clone(),
                        timeout_secs: a
                            .provision_timeout
                            .as_deref()
                            .map(|t| parse_duration("--provision-timeout", t))
                            .transpose()?
                            .map(|d| d.as_secs().max(1)),
                    }),
                },
            };
            let r = store.create_root(&req)?;
            let mut human = format!(
                "{} root {} ({}, {}) at {}  [{:.1} ms]",
                if r.created { "created" } else { "existing" },
                r.id,
                r.class,
                r.backend,
                r.cwd.display(),
                r.timings_ms.get("total").copied().unwrap_or(0.0)
            );
            if let Some(p) = &r.provision {
                human.push_str(&format!(
                    "\n  provision {} ({}): snapshot {}",
                    &p.key[..16],
                    if p.hit { "hit" } else { "built" },
                    &p.snapshot.to_hex()[..12]
                ));
            }
            for w in &r.warnings {
                human.push_str(&format!("\n  warning: {w}"));
            }
            Ok(Output::new(to_json(&r), human))
        }
        RootCmd::List => {
            let list = store.list_roots()?;
            let human: String = list
                .roots
                .iter()
                .map(|e| match e {
                    RootListEntry::Root(r) => format!(
                        "{}  {:<10} {:<9} {:<8} {}  {}\n",
                        r.id,
                        r.state.as_str(),
                        r.class,
                        r.backend,
                        r.cwd.display(),
                        r.key.as_deref().unwrap_or("")
                    ),
                    RootListEntry::Unreadable(u) => format!("{}  UNREADABLE {}\n", u.id, u.error),
                })
                .collect();
            Ok(Output::new(to_json(&list), human))
        }
        RootCmd::Show { root } => {
            let v = store.show_root(root)?;
            let mut human = format!(
                "root {}  {}  {} ({})\n  cwd {}\n  mounted {}",
                v.id,
                v.state.as_str(),
                v.class,
                v.backend,
                v.cwd.display(),
                v.mounted.unwrap_or(false)
            );
            if let Some(k) = &v.key {
                human.push_str(&format!("\n  key {k}"));
            }
            for s in &v.snapshots {
                human.push_str(&format!("\n  snapshot {s}"));
            }
            for m in &v.mounts {
                human.push_str(&format!("\n  mount {} = {}", m.subdir, m.snapshot));
            }
            if let Some(u) = &v.usage {
                human.push_str(&format!("\n  written {} in {} inodes", HumanBytes(u.bytes), u.inodes));
            }
            if let (Some(b), Some(g)) = (&v.branch_name, &v.git) {
                human.push_str(&format!(
                    "\n  branch {b}: {} dirty, {} untracked, {} ahead, {} behind",
                    g.dirty_entry_count, g.untracked_entry_count, g.ahead_count, g.behind_count
                ));
            }
            Ok(Output::new(to_json(&v), human))
        }
        RootCmd::Diff { root } => {
            let d = store.diff_root(root)?;
            let mut human = String::new();
            for (sign, list) in [("+", &d.diff.added), ("M", &d.diff.modified), ("-", &d.diff.deleted)] {
                for c in list {
                    human.push_str(&format!("{sign} {} {}\n", c.kind.as_str(), String::from_utf8_lossy(&c.path.0)));
                }
            }
            if human.is_empty() {
                human.push_str("no changes");
            }
            Ok(Output::new(to_json(&d), human))
        }
        RootCmd::Commit { root, name, label } => {
            let c = store.commit_root(root, name.clone(), parse_labels(label)?)?;
            let human = format!(
                "snapshot {} ({} entries{}; {} new objects){}",
                c.report.id,
                c.report.entries,
                if c.flattened { ", flattened" } else { "" },
                c.report.new_objects,
                name.as_ref().map(|n| format!(", ref {n}")).unwrap_or_default()
            );
            Ok(Output::new(to_json(&c), human))
        }
        RootCmd::Export { root, dest, tar, changed_only } => {
            if let Some(t) = tar {
                if t != "-" {
                    return Err(Error::BadInput(
                        "--tar takes only - (stdout); give DEST to export to a directory".into(),
                    ));
                }
                if json {
                    return Err(Error::BadInput(
                        "--tar - writes the archive to stdout; it cannot be combined with --json".into(),
                    ));
                }
                let stdout = std::io::stdout();
                let mut lock = stdout.lock();
                store.export_root(root, None, *changed_only, &mut lock)?;
                return Ok(Output::new(Value::Null, ""));
            }
            let r = store.export_root(root, dest.as_deref(), *changed_only, &mut std::io::sink())?;
            let human = format!("exported {} entries ({} files, {})", r.entries, r.files, HumanBytes(r.bytes));
            Ok(Output::new(to_json(&r), human))
        }
        RootCmd::Destroy { root, force } => {
            let d = store.destroy_root(root, *force)?;
            let mut human =
                format!("{} {}", if d.cleaned { "destroyed" } else { "NOT destroyed:" }, d.cleaned_path.display());
            for w in &d.warnings {
                human.push_str(&format!("\n  warning: {w}"));
            }
            let mut out = Output::new(to_json(&d), human);
            if !d.cleaned {
                out.exit = 5;
            }
            Ok(out)
        }
    }
}

struct BenchBar(Option<indicatif::ProgressBar>);

impl crate::bench::BenchProgress for BenchBar {
    fn step(&self, msg: &str) {
        match &self.0 {
            Some(pb) => pb.set_message(msg.to_string()),
            None => tracing::info!("{msg}"),
        }
    }
}

fn bench_cmd(a: &BenchArgs, store: Option<PathBuf>, json: bool) -> Result<Output> {
    let opts = crate::bench::BenchOptions {
        quick: a.quick,
        classes: a.classes.clone(),
        repo: a.repo.clone(),
        deps: a.deps.clone(),
        provision: a.provision.clone(),
        provision_inputs: a.provision_inputs.clone(),
        runs: a.runs.unwrap_or(if a.quick { 3 } else { 5 }).max(1),
        concurrency: a.concurrency.unwrap_or(if a.quick { 10 } else { 50 }).max(1),
        store,
        shape: a.shape.clone(),
    };
    let bar = if json || !std::io::stderr().is_terminal() {
        BenchBar(None)
    } else {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        pb.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}").expect("valid template"),
        );
        BenchBar(Some(pb))
    };
    let report = crate::bench::run(&opts, &bar)?;
    if let Some(pb) = &bar.0 {
        pb.finish_and_clear();
    }
    let command: Vec<String> = std::env::args().collect();
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    let md = crate::bench::report::markdown(&report, &command.join(" "));
    let files = [
        ("report.md", md),
        ("chart.svg", crate::bench::report::svg(&report)),
        ("results.json", serde_json::to_string_pretty(&report).expect("serializable")),
    ];
    for (name, text) in files {
        let p = a.out.join(name);
        std::fs::write(&p, text).map_err(|e| Error::io(&p, e))?;
    }
    let human = format!(
        "{}
report: {}",
        crate::bench::report::table(&report),
        a.out.join("report.md").display()
    );
    Ok(Output::new(to_json(&report), human))
}

/// A duration flag: humantime (`30s`, `2h`) or `0`.
fn parse_duration(flag: &str, s: &str) -> Result<std::time::Duration> {
    if s.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| Error::BadInput(format!("{flag} {s:?}: {e}")))
}

fn exec_cmd(
    store: &Store,
    root: &str,
    timeout: Option<&str>,
    cwd: &Option<PathBuf>,
    command: &[String],
    json: bool,
) -> Result<Output> {
    let req = execroot::root::exec::ExecRequest {
        command: command[0].clone(),
        args: command[1..].to_vec(),
        cwd: cwd.clone(),
        timeout_ms: timeout.map(|t| parse_duration("--timeout", t)).transpose()?.map(|d| d.as_millis() as u64),
        ..Default::default()
    };
    let r = store.exec_root(root, &req)?;
    if json {
        return Ok(Output::new(to_json(&r), ""));
    }
    // The command's own output, unescaped: it is what the user asked to see, as a shell would.
    use std::io::Write;
    let _ = std::io::stdout().write_all(r.stdout.as_bytes());
    let _ = std::io::stderr().write_all(r.stderr.as_bytes());
    for (t, what) in [(r.stdout_truncated, "stdout"), (r.stderr_truncated, "stderr")] {
        if t {
            eprintln!("execroot: {what} truncated");
        }
    }
    let exit = if r.timed_out {
        eprintln!("execroot: timed out");
        124
    } else {
        r.exit_code.unwrap_or_else(|| 128 + r.signal.as_deref().map_or(0, signal_number))
    };
    let mut out = Output::new(Value::Null, "");
    out.exit = exit;
    Ok(out)
}

fn signal_number(name: &str) -> i32 {
    name.parse::<nix::sys::signal::Signal>().map_or(0, |s| s as i32)
}

fn gc_cmd(
    store: &Store,
    grace: &str,
    dry_run: bool,
    policy: execroot::root::provision::ProvisionPolicy,
) -> Result<Output> {
    let grace = parse_duration("--grace", grace)?;
    let r = store.gc_provisions(grace, dry_run, policy)?;
    let human = format!(
        "{}{} snapshot(s), {} layer(s), {} object(s), {} variant(s): {} {}; kept {} snapshot(s)",
        if dry_run { "would remove " } else { "removed " },
        r.removed_snapshots.len(),
        r.removed_layers,
        r.removed_objects,
        r.removed_variants,
        HumanBytes(r.freed_bytes),
        if dry_run { "to free" } else { "freed" },
        r.kept_snapshots
    );
    let human = if r.removed_provisions.is_empty() {
        human
    } else {
        format!(
            "{human}; {} {} provision layer(s)",
            if dry_run { "would forget" } else { "forgot" },
            r.removed_provisions.len()
        )
    };
    Ok(Output::new(to_json(&r), human))
}

fn provision_cmd(store: &Store, c: &ProvisionCmd) -> Result<Output> {
    let line = |p: &execroot::root::provision::ProvisionInfo| {
        format!(
            "{}  {}  {:>10}  last used {}  {}",
            p.key,
            &p.snapshot.to_hex()[..12],
            p.bytes.map(|b| HumanBytes(b).to_string()).unwrap_or_else(|| "?".into()),
            p.last_used_at,
            p.command
        )
    };
    match c {
        ProvisionCmd::List => {
            let l = store.list_provisions()?;
            let human: Vec<String> = l.provisions.iter().map(line).collect();
            Ok(Output::new(to_json(&l), human.join("\n")))
        }
        ProvisionCmd::Show { key } => {
            let p = store.show_provision(key)?;
            let human = format!(
                "{}\ninputs: {}\nroots: {}\nlog: {}",
                line(&p),
                p.inputs.join(", "),
                p.roots.clone().unwrap_or_default().join(", "),
                p.log.display()
            );
            Ok(Output::new(to_json(&p), human))
        }
        ProvisionCmd::Rm { key } => {
            let r = store.remove_provision(key)?;
            Ok(Output::new(
                to_json(&r),
                format!("removed provision layer {} (snapshot {} is left to gc)", r.key, r.snapshot),
            ))
        }
    }
}

fn df_cmd(store: &Store) -> Result<Output> {
    let r = store.df()?;
    let mut human = format!(
        "objects   {:>8} files {:>10}\nvariants  {:>8} files {:>10}\nlayers    {:>8}       {:>10} private\n",
        r.objects.files,
        HumanBytes(r.objects.bytes),
        r.variants.files,
        HumanBytes(r.variants.bytes),
        r.layers.len(),
        HumanBytes(r.layers.iter().map(|l| l.private.bytes).sum())
    );
    for root in &r.roots {
        human.push_str(&format!(
            "root {} {:<8} {:>8} inodes {:>10}\n",
            root.id,
            root.backend,
            root.unique.files,
            HumanBytes(root.unique.bytes)
        ));
    }
    human.push_str(&format!("shared {}  unique {}", HumanBytes(r.shared_bytes), HumanBytes(r.unique_bytes)));
    Ok(Output::new(to_json(&r), human))
}

fn doctor_cmd(store: &Store, repair: bool) -> Result<Output> {
    let r = store.doctor(repair)?;
    let mut human = format!("{}: {} finding(s)", if r.ok { "ok" } else { "PROBLEMS" }, r.findings.len());
    for f in &r.findings {
        human.push_str(&format!(
            "\n  {} {} {}: {}{}",
            f.kind.as_str(),
            f.root.as_deref().unwrap_or("-"),
            f.path.display(),
            f.action,
            if f.repaired { " (done)" } else { "" }
        ));
    }
    let mut out = Output::new(to_json(&r), human);
    if !r.ok {
        out.exit = EXIT_PROBLEMS;
    }
    Ok(out)
}

fn fixture_cmd(c: &FixtureCmd) -> Result<Output> {
    match c {
        FixtureCmd::List => {
            let mut list = Vec::new();
            let mut human = String::new();
            for n in crate::fixture::Shape::builtin_names() {
                let s = crate::fixture::Shape::load(n)?;
                human.push_str(&format!("{:<14} {}\n", s.name, s.description));
                list.push(to_json(&s));
            }
            Ok(Output::new(json!({ "shapes": list }), human))
        }
        FixtureCmd::Generate { shape, dest, seed, scale } => {
            if scale.is_nan() || *scale <= 0.0 {
                return Err(Error::BadInput("--scale must be positive".into()));
            }
            let r = crate::fixture::generate_named(shape, *scale, *seed, dest)?;
            let human = format!(
                "generated {} (seed {}) in {}: {} entries, {} files, {} dirs, {} symlinks, {}",
                r.shape,
                r.seed,
                dest.display(),
                r.entries,
                r.files,
                r.dirs,
                r.symlinks,
                HumanBytes(r.bytes)
            );
            Ok(Output::new(to_json(&r), human))
        }
    }
}

/// Shared by commands that work in a directory they create and remove afterwards.
pub(crate) fn scratch_dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix(prefix).tempdir().map_err(|e| Error::io(Path::new("/tmp"), e))
}
