//! `execroot demo`: the store's main job on a built-in fixture, end to end, with its figures:
//! generate a tree, ingest it, ingest it again unchanged, verify the store, check the snapshot
//! out and compare the checkout with the source; then create and destroy one overlay root (when
//! this machine can mount) and one copy root of the snapshot.

use indicatif::HumanBytes;
use std::path::Path;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use super::{scratch_dir, to_json, Bar, Output};
use execroot::error::{Error, Result};
use execroot::store::ingest::{IngestOptions, NoProgress};
use execroot::Store;

/// Arguments of `execroot demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Built-in shape name or shape file.
    #[arg(long, default_value = "node-modules")]
    shape: String,
    /// Multiply the shape's file and directory counts.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub(super) fn run(a: &DemoArgs, store: Option<&Path>, json: bool) -> Result<Output> {
    let work = scratch_dir("execroot-demo-")?;
    let store_dir = store.map(Path::to_path_buf).unwrap_or_else(|| work.path().join("store"));
    let store = Store::open(&store_dir)?;
    let src = work.path().join("tree");
    let say = |s: &str| {
        if !json {
            eprintln!("{s}");
        }
    };

    say(&format!("generating fixture {} (scale {}, seed {}) ...", a.shape, a.scale, a.seed));
    let t = Instant::now();
    let gen = crate::fixture::generate_named(&a.shape, a.scale, a.seed, &src)?;
    let gen_ms = t.elapsed().as_secs_f64() * 1000.0;

    say("ingesting ...");
    let first = store.ingest_dir(&src, &IngestOptions::default(), &Bar::new(json))?;
    say("ingesting again, unchanged ...");
    let again = store.ingest_dir(&src, &IngestOptions::default(), &NoProgress)?;
    if again.id != first.id {
        return Err(Error::Corrupt("re-ingesting an unchanged tree gave a different snapshot id".into()));
    }
    say("verifying ...");
    let verify = store.verify(false)?;
    say("checking out ...");
    let out = work.path().join("checkout");
    let id = first.id;
    let checkout = store.checkout(&id, &out)?;
    let diffs = crate::fixture::compare_trees(&src, &out, true)?;

    say("creating and destroying roots ...");
    let mut roots = Vec::new();
    for backend in [execroot::backend::BackendKind::Overlay, execroot::backend::BackendKind::Copy] {
        let req = execroot::root::CreateRequest {
            class: Some(execroot::policy::Class::Routine),
            from: vec![first.id.to_hex()],
            backend: Some(backend),
            ..Default::default()
        };
        match store.create_root(&req) {
            Ok(created) => {
                let t = Instant::now();
                let d = store.destroy_root(&created.id, false)?;
                roots.push(DemoRoot::Made {
                    backend,
                    create_ms: created.timings_ms.get("total").copied().unwrap_or(0.0),
                    destroy_ms: t.elapsed().as_secs_f64() * 1000.0,
                    cleaned: d.cleaned,
                });
            }
            Err(e) => roots.push(DemoRoot::Unavailable { backend, unavailable: e.to_string() }),
        }
    }
    let equal = diffs.is_empty();
    let human = format!(
        "fixture    {} entries, {} in {:.0} ms\n\
         ingest     {:.0} ms  ({} new objects, {})  snapshot {}\n\
         re-ingest  {:.0} ms  ({:.0}% of the first)\n\
         verify     {:.0} ms  {}\n\
         checkout   {:.0} ms  ({} reflinked, {} copied)\n\
         round trip {}\n{}",
        gen.entries,
        HumanBytes(gen.bytes),
        gen_ms,
        first.elapsed_ms,
        first.new_objects,
        HumanBytes(first.new_bytes),
        &first.id.to_hex()[..16],
        again.elapsed_ms,
        100.0 * again.elapsed_ms / first.elapsed_ms.max(f64::MIN_POSITIVE),
        verify.elapsed_ms,
        if verify.ok { "ok" } else { "PROBLEMS" },
        checkout.elapsed_ms,
        checkout.reflinked,
        checkout.copied,
        if equal { "equal".to_string() } else { format!("DIFFERS: {}", diffs.join("; ")) },
        roots
            .iter()
            .map(|r| match r {
                DemoRoot::Unavailable { backend, unavailable } => {
                    format!("{:<10} root: unavailable ({unavailable})", backend.as_str())
                }
                DemoRoot::Made { backend, create_ms, destroy_ms, .. } => {
                    format!("{:<10} root: create {create_ms:.1} ms, destroy {destroy_ms:.1} ms", backend.as_str())
                }
            })
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let doc = json!({
        "shape": gen.shape,
        "seed": a.seed,
        "generate": { "report": to_json(&gen), "elapsedMs": gen_ms },
        "ingest": to_json(&first),
        "reingest": to_json(&again),
        "verify": to_json(&verify),
        "checkout": to_json(&checkout),
        "roundTripEqual": equal,
        "roots": to_json(&roots),
        "differences": diffs,
    });
    let mut o = Output::new(doc, human);
    if !equal || !verify.ok {
        o.exit = super::EXIT_PROBLEMS;
    }
    Ok(o)
}

/// One root the demo made and destroyed, or why the backend was unavailable.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum DemoRoot {
    Made {
        backend: execroot::backend::BackendKind,
        #[serde(rename = "createMs")]
        create_ms: f64,
        #[serde(rename = "destroyMs")]
        destroy_ms: f64,
        cleaned: bool,
    },
    Unavailable {
        backend: execroot::backend::BackendKind,
        unavailable: String,
    },
}
