//! criterion benchmarks of capture and reclaim (need root for overlay mounts): diff and commit
//! of a root that changed 100 files, on a 1k-entry and a 100k-entry base; gc of a store with 100
//! snapshots and about 100k objects.

/// The binary's workload generator, built in from its source (it is not part of the library).
#[allow(dead_code)]
#[path = "../src/fixture.rs"]
mod fixture;

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use execroot::backend::BackendKind;
use execroot::policy::Class;
use execroot::root::CreateRequest;
use execroot::store::ingest::{IngestOptions, NoProgress};
use execroot::Store;

fn store_with(scale: f64, dir: &std::path::Path) -> (Store, String) {
    let tree = dir.join("tree");
    fixture::generate_named("node-modules", scale, 1, &tree).unwrap();
    let store = Store::open(dir.join("store")).unwrap();
    let opts = IngestOptions { name: Some("base".into()), ..Default::default() };
    let id = store.ingest_dir(&tree, &opts, &NoProgress).unwrap().id;
    (store, id.to_hex())
}

/// A root of `base` in which 100 files were rewritten.
fn changed_root(store: &Store) -> (String, PathBuf) {
    let req = CreateRequest {
        class: Some(Class::Artifact),
        from: vec!["base".into()],
        backend: Some(BackendKind::Overlay),
        ..Default::default()
    };
    let r = store.create_root(&req).unwrap();
    let files: Vec<PathBuf> = walkdir::WalkDir::new(&r.cwd)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .take(100)
        .map(|e| e.into_path())
        .collect();
    for (i, f) in files.iter().enumerate() {
        std::fs::write(f, format!("changed {i}")).unwrap();
    }
    (r.id, r.cwd)
}

fn diff_commit(c: &mut Criterion) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: capture benchmarks need root for overlay mounts");
        return;
    }
    for (label, scale) in [("1k", 0.04), ("100k", 4.0)] {
        let dir = tempfile::Builder::new().prefix("execroot-bench-").tempdir_in("/var/tmp").unwrap();
        let (store, _) = store_with(scale, dir.path());
        let (id, _) = changed_root(&store);
        nix::unistd::sync();
        let mut g = c.benchmark_group(format!("capture-{label}-base-100-changed"));
        g.bench_function("root diff", |b| {
            b.iter(|| {
                let d = store.diff_root(&id).unwrap();
                assert_eq!(d.diff.modified.len(), 100);
            })
        });
        g.bench_function("root commit", |b| b.iter(|| store.commit_root(&id, None, Default::default()).unwrap()));
        g.finish();
        store.destroy_root(&id, false).unwrap();
    }
}

fn gc(c: &mut Criterion) {
    let dir = tempfile::Builder::new().prefix("execroot-bench-").tempdir_in("/var/tmp").unwrap();
    // ~87k files (~80k unique objects) in one snapshot, plus 99 snapshots of ~300 files with
    // unique content each: 100 snapshots, about 100k objects.
    let (store, _) = store_with(4.0, dir.path());
    for i in 0..99u64 {
        let t = dir.path().join(format!("s{i}"));
        fixture::generate_named("small", 1.0, 1000 + i, &t).unwrap();
        let opts = IngestOptions { name: Some(format!("s{i}")), ..Default::default() };
        store.ingest_dir(&t, &opts, &NoProgress).unwrap();
        std::fs::remove_dir_all(&t).unwrap();
    }
    let objects = store.list_objects().unwrap().len();
    eprintln!("gc bench store: {} snapshots, {objects} objects", store.list_snapshots().unwrap().len());
    nix::unistd::sync();
    let mut g = c.benchmark_group("gc-100-snapshots-100k-objects");
    g.sample_size(10);
    g.bench_function("gc (everything referenced)", |b| {
        b.iter(|| {
            let r = store.gc(std::time::Duration::ZERO, false).unwrap();
            assert_eq!(r.removed_objects, 0);
        })
    });
    g.finish();
}

criterion_group!(benches, diff_commit, gc);
criterion_main!(benches);
