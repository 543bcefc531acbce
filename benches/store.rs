//! criterion micro-benchmarks of the store's in-process paths: manifest encode/decode/load,
//! hashing, and ingest of the small fixture (fresh store, and unchanged re-ingest).

/// The binary's workload generator, built in from its source (it is not part of the library).
#[allow(dead_code)]
#[path = "../src/fixture.rs"]
mod fixture;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use execroot::store::ingest::{IngestOptions, NoProgress};
use execroot::store::{Entry, Lease, Manifest, Node};
use execroot::{Hash, Store};

/// A node_modules-like manifest of `n` entries without touching the disk.
fn synthetic_manifest(n: usize) -> Manifest {
    let mut entries = vec![Entry { path: vec![], mode: 0o755, mtime_sec: 0, mtime_nsec: 0, node: Node::Dir }];
    let dirs = n / 10;
    for d in 0..dirs {
        entries.push(Entry {
            path: format!("pkg-{d}").into_bytes(),
            mode: 0o755,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 0,
            node: Node::Dir,
        });
    }
    for f in 0..n - dirs - 1 {
        let path = format!("pkg-{}/file-{f}.js", f % dirs).into_bytes();
        entries.push(Entry {
            path,
            mode: 0o644,
            mtime_sec: 1_700_000_000 + f as i64,
            mtime_nsec: 0,
            node: Node::File { size: 4096, hash: Hash::of(&f.to_le_bytes()) },
        });
    }
    Manifest::new(vec![], entries).unwrap()
}

fn manifest(c: &mut Criterion) {
    let m = synthetic_manifest(25_000);
    let bytes = m.encode();
    let mut g = c.benchmark_group("manifest-25k");
    g.throughput(Throughput::Elements(25_000));
    g.bench_function("encode", |b| b.iter(|| m.encode()));
    g.bench_function("decode+validate", |b| b.iter(|| Manifest::decode(&bytes).unwrap()));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let lease = Lease::new(&store).unwrap();
    let (id, _) = store.publish_snapshot(&lease, &m, Default::default()).unwrap();
    g.bench_function("load (read+hash+decode)", |b| b.iter(|| store.load_manifest(&id).unwrap()));
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let buf = vec![7u8; 1 << 20];
    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("blake3 1MiB", |b| b.iter(|| Hash::of(&buf)));
    g.finish();
}

fn ingest(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fixture::generate_named("small", 1.0, 1, &src).unwrap();
    let mut g = c.benchmark_group("ingest-small");
    g.sample_size(20);
    g.bench_function("fresh store", |b| {
        b.iter_batched(
            || {
                let d = tempfile::tempdir().unwrap();
                let s = Store::open(d.path().join("s")).unwrap();
                (d, s)
            },
            |(_d, s)| s.ingest_dir(&src, &IngestOptions::default(), &NoProgress).unwrap(),
            BatchSize::PerIteration,
        )
    });
    let store = Store::open(dir.path().join("store")).unwrap();
    store.ingest_dir(&src, &IngestOptions::default(), &NoProgress).unwrap();
    g.bench_function("unchanged re-ingest", |b| {
        b.iter(|| store.ingest_dir(&src, &IngestOptions::default(), &NoProgress).unwrap())
    });
    g.finish();
}

criterion_group!(benches, manifest, hashing, ingest);
criterion_main!(benches);
