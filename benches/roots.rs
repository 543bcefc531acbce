//! criterion benchmarks of execution roots (need root for overlay mounts; skipped otherwise):
//! overlay create and destroy in-process and through the CLI on the 25k-entry fixture with its
//! layer already materialized, create on a 100k-entry snapshot, and `git worktree add` of the
//! same 25k-entry tree measured in the same run.

/// The binary's workload generator, built in from its source (it is not part of the library).
#[allow(dead_code)]
#[path = "../src/fixture.rs"]
mod fixture;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use execroot::backend::BackendKind;
use execroot::policy::Class;
use execroot::root::CreateRequest;
use execroot::store::ingest::{IngestOptions, NoProgress};
use execroot::Store;

struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    tree: PathBuf,
}

fn setup(scale: f64, name: &str) -> Setup {
    let dir = tempfile::Builder::new().prefix("execroot-bench-").tempdir_in("/var/tmp").unwrap();
    let tree = dir.path().join("tree");
    fixture::generate_named("node-modules", scale, 1, &tree).unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let opts = IngestOptions { name: Some(name.into()), ..Default::default() };
    let id = store.ingest_dir(&tree, &opts, &NoProgress).unwrap().id;
    store.materialize(&id).unwrap();
    // Measure the steady state, not the writeback of the fixture just written.
    nix::unistd::sync();
    Setup { _dir: dir, store, tree }
}

fn request(from: &str) -> CreateRequest {
    CreateRequest {
        class: Some(Class::Routine),
        from: vec![from.into()],
        backend: Some(BackendKind::Overlay),
        ..Default::default()
    }
}

fn create_destroy(s: &Setup, from: &str, iters: u64) -> (Duration, Duration) {
    let (mut create, mut destroy) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..iters {
        let t = Instant::now();
        let r = s.store.create_root(&request(from)).unwrap();
        create += t.elapsed();
        let t = Instant::now();
        assert!(s.store.destroy_root(&r.id, false).unwrap().cleaned);
        destroy += t.elapsed();
    }
    (create, destroy)
}

fn roots(c: &mut Criterion) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: root benchmarks need root for overlay mounts");
        return;
    }
    let s25 = setup(1.0, "base");
    let mut g = c.benchmark_group("root-25k");
    g.bench_function("overlay create (in-process)", |b| b.iter_custom(|n| create_destroy(&s25, "base", n).0));
    g.bench_function("overlay destroy untouched (in-process)", |b| {
        b.iter_custom(|n| create_destroy(&s25, "base", n).1)
    });
    let bin = env!("CARGO_BIN_EXE_execroot");
    g.bench_function("overlay create (CLI)", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let t = Instant::now();
                let out = Command::new(bin)
                    .arg("--store")
                    .arg(s25.store.path())
                    .args(["--json", "root", "create", "--class", "routine", "--from", "base", "--backend", "overlay"])
                    .output()
                    .unwrap();
                total += t.elapsed();
                assert!(out.status.success());
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                s25.store.destroy_root(v["id"].as_str().unwrap(), false).unwrap();
            }
            total
        })
    });
    g.finish();

    let s100 = setup(4.0, "big");
    let mut g = c.benchmark_group("root-100k");
    g.bench_function("overlay create (in-process)", |b| b.iter_custom(|n| create_destroy(&s100, "big", n).0));
    g.finish();
    drop(s100);

    let repo = git_repo(&s25.tree);
    let mut g = c.benchmark_group("root-25k-baseline");
    g.sample_size(10);
    g.bench_function("git worktree add", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for i in 0..n {
                let wt = repo.parent().unwrap().join(format!("wt-{i}"));
                let t = Instant::now();
                git(&repo, &["worktree", "add", "-q", "-b", &format!("b{i}"), wt.to_str().unwrap(), "HEAD"]);
                total += t.elapsed();
                git(&repo, &["worktree", "remove", "--force", wt.to_str().unwrap()]);
                git(&repo, &["branch", "-q", "-D", &format!("b{i}")]);
            }
            total
        })
    });
    g.finish();
}

fn git(dir: &Path, args: &[&str]) {
    let st = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=b", "-c", "user.email=b@e"])
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "git {args:?}");
}

/// The fixture tree committed in a repository next to it.
fn git_repo(tree: &Path) -> PathBuf {
    git(tree, &["init", "-q", "-b", "main"]);
    git(tree, &["add", "-A"]);
    git(tree, &["commit", "-qm", "base"]);
    tree.to_path_buf()
}

criterion_group!(benches, roots);
criterion_main!(benches);
