//! A tiny real run of the service benchmark (benches/service.mjs --quick), so that it cannot
//! rot: every phase runs against a real `execroot serve` of this build, the JSON has every
//! figure, nothing failed and nothing is left behind. No timing is asserted.
//!
//! Needs root (overlay mounts) and Node >= 24.11 (the plugin SDK); the skip/fail rule is that of
//! tests/node_clients.rs (tests/common/node.rs: required when `CI=true`).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::node::{node_at_least, path_with, plugin_dependencies, PLUGIN_NODE};

#[test]
fn the_service_benchmark_runs_every_phase_and_cleans_up() {
    if !common::can_mount() {
        return;
    }
    let Some(node) = node_at_least(PLUGIN_NODE, "the service benchmark (plugin SDK)") else { return };
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    plugin_dependencies(&node, &repo.join("clients/paperclip-plugin"));
    let tmp = tempfile::tempdir().unwrap();
    let out_file = tmp.path().join("service.json");
    let out = Command::new(&node)
        .arg(repo.join("benches/service.mjs"))
        .args(["--quick", "--iterations", "6", "--cli-every", "3", "--clients", "4", "--pairs", "2", "--out"])
        .arg(&out_file)
        .current_dir(&repo)
        .env("EXECROOT_BIN", assert_cmd::cargo::cargo_bin("execroot"))
        .env("PATH", path_with(&node))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "benches/service.mjs --quick failed:\n{text}");

    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(v["quick"], true);
    let p50 = |x: &serde_json::Value| x["p50"].as_f64().unwrap_or_else(|| panic!("no p50 in {x}"));
    let s = &v["small"];
    assert!(s["entries"].as_u64().unwrap() > 100);
    assert_eq!(s["create"]["n"], 6);
    assert_eq!(s["cli"]["create"]["n"], 2);
    for k in ["create", "inProcessCreate", "destroy", "health"] {
        assert!(p50(&s[k]) > 0.0, "{k}: {}", s[k]);
    }
    // The in-process time is part of the wall time the client saw.
    assert!(p50(&s["overheadPerCall"]) > 0.0);
    let c = &v["concurrent"];
    assert_eq!((c["clients"].as_u64(), c["pairs"].as_u64(), c["errors"].as_u64()), (Some(4), Some(8), Some(0)), "{c}");
    assert!(c["pairsPerSecond"].as_f64().unwrap() > 0.0);
    let l = &v["lifecycle"];
    assert_eq!(l["rounds"], 1);
    assert!(l["gitFiles"].as_u64().unwrap() > 0);
    for k in ["acquire", "realize", "execute", "release", "total"] {
        assert!(l["plugin"][k].as_f64().unwrap() > 0.0, "plugin {k}: {l}");
    }
    for k in ["add", "remove", "total"] {
        assert!(l["git"][k].as_f64().unwrap() > 0.0, "git {k}: {l}");
    }
    assert!(l["ratio"].as_f64().unwrap() > 0.0 && l["pairedRatio"].as_f64().unwrap() > 0.0);
    assert_eq!(v["goals"].as_array().unwrap().len(), 2);
    // Nothing left: no root in the store at the end, no mount, no directory.
    assert_eq!(v["rootsLeft"], 0);
    assert_eq!(v["mountsLeft"].as_array().unwrap().len(), 0, "{}", v["mountsLeft"]);
    assert_eq!(v["leaks"]["mounts"].as_array().unwrap().len(), 0, "{}", v["leaks"]);
    assert_eq!(v["leaks"]["dirLeft"], false);
    assert!(text.contains("| whole lifecycle |"), "{text}");
}
