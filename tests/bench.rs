//! A tiny real run of `execroot bench`: its measurements, correctness marks, verdicts and files.

mod common;

use common::*;

#[test]
fn a_tiny_bench_run_measures_marks_and_reports() {
    let env = Env::new();
    let out = env.path("results");
    let v = env.ok(&[
        "bench",
        "--quick",
        "--shape",
        "small",
        "--runs",
        "2",
        "--concurrency",
        "3",
        "--classes",
        "routine,preview,repo-edit",
        // The provision path of previews: a deterministic command, an input of the fixture.
        "--provision",
        "mkdir -p node_modules && cp re-255.md node_modules/dep.md",
        "--provision-inputs",
        "re-255.md",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(v["quick"], true);
    assert!(v["machine"]["cores"].as_u64().unwrap() >= 1);
    let classes = v["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 3);
    let row = |class: &str, backend: &str| -> serde_json::Value {
        classes.iter().find(|c| c["class"] == class).unwrap()["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["backend"] == backend)
            .unwrap_or_else(|| panic!("no {backend} row for {class}"))
            .clone()
    };
    // The hardlink farm shares inodes with the base: it fails correctness by design.
    let farm = row("routine", "hardlink-farm");
    assert_eq!(farm["correct"], false);
    assert!(farm["reason"].as_str().unwrap().contains("share inodes"), "{farm}");
    let wt = row("routine", "worktree");
    assert_eq!(wt["correct"], true);
    assert!(wt["bytesPerRoot"].as_u64().unwrap() > 0 && wt["inodesPerRoot"].as_u64().unwrap() > 300);
    for key in ["createMs", "readyMs", "destroyMs"] {
        assert!(
            wt[key]["p50"].as_f64().unwrap() > 0.0
                && wt[key]["p95"].as_f64().unwrap() >= wt[key]["p50"].as_f64().unwrap()
        );
    }
    assert_eq!(wt["concurrent"]["n"], 3);
    // Preview's baseline provisions the dependencies: ready comes after create.
    let prov = row("preview", "worktree+provision");
    assert!(prov["readyMs"]["p50"].as_f64().unwrap() > prov["createMs"]["p50"].as_f64().unwrap());
    if is_root() {
        let ov = row("routine", "overlay");
        assert_eq!(ov["correct"], true, "{ov}");
        assert!(ov["bytesPerRoot"].as_u64().unwrap() < wt["bytesPerRoot"].as_u64().unwrap());
        assert!(ov["oneTimeMs"].as_f64().unwrap() > 0.0);
    } else {
        assert!(row("routine", "overlay")["reason"].as_str().unwrap().starts_with("unavailable: "));
    }
    let repo_edit = classes.iter().find(|c| c["class"] == "repo-edit").unwrap();
    assert_eq!(row("repo-edit", "overlay")["available"], false);
    // The git ways: ready is `git status` clean; their own figures.
    let wt_git = &row("repo-edit", "worktree")["git"];
    assert!(wt_git["firstStatusMs"]["p50"].as_f64().unwrap() > 0.0, "{wt_git}");
    assert!(wt_git["indexBytes"].as_u64().unwrap() > 0);
    assert!(row("routine", "worktree")["git"].is_null());
    let go = row("repo-edit", "git-overlay");
    let pv = row("preview", "overlay+provision");
    if can_mount() {
        // Every repo-edit check passed: branch at the base, status clean, the tree a real
        // checkout's, destroy refusing uncommitted work, a commit landing on the branch.
        assert_eq!(go["correct"], true, "{go}");
        let g = &go["git"];
        assert!(g["newCommitReadyMs"]["p50"].as_f64().unwrap() > 0.0, "{g}");
        assert_eq!(g["newCommitFiles"], 100);
        assert!(g["coldReadyMs"].as_f64().unwrap() > 0.0);
        assert!(g["bytesBesidesIndex"].as_u64().unwrap() < wt_git["bytesBesidesIndex"].as_u64().unwrap());
        assert!(repo_edit["verdict"]["reason"].as_str().unwrap().contains("Issue 11's targets"));
        // The same roots with the fixture repository's extensions.worktreeConfig on: each
        // index carried the fsmonitor's extension (else the bench fails).
        let f = &g["fsmonitor"];
        assert!(f["readyMs"]["p50"].as_f64().unwrap() > 0.0, "{g}");
        assert!(f["newCommitReadyMs"]["p50"].as_f64().unwrap() > 0.0, "{g}");
        assert!(repo_edit["verdict"]["reason"].as_str().unwrap().contains("with execroot's fsmonitor"));
        // One miss, then hits.
        assert_eq!(pv["correct"], true, "{pv}");
        assert_eq!(pv["provision"]["firstWasMiss"], true, "{pv}");
        assert_eq!(pv["provision"]["allHits"], true, "{pv}");
    } else {
        assert!(go["reason"].as_str().unwrap().starts_with("unavailable: "), "{go}");
        assert_eq!(repo_edit["verdict"]["benefits"], false);
        assert!(pv["reason"].as_str().unwrap().starts_with("unavailable: "), "{pv}");
    }
    for f in ["report.md", "chart.svg", "results.json"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("Go/no-go") && md.contains("hardlink-farm"));
    assert!(std::fs::read_to_string(out.join("chart.svg")).unwrap().starts_with("<svg"));
}
