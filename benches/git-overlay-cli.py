#!/usr/bin/env python3
"""git-overlay through the CLI: warm create, first `git status`, ready (both), and destroy of an
untouched root, on the 25,000-entry node-modules fixture committed to a fresh repository.

Usage: python3 benches/git-overlay-cli.py BIN [RUNS]   (as root; docs/benchmarks.md)"""
import json, os, subprocess, sys, tempfile, time, statistics, shutil
BIN = sys.argv[1]; N = int(sys.argv[2]) if len(sys.argv) > 2 else 9
w = tempfile.mkdtemp(prefix="gom-", dir="/var/tmp")
store = os.path.join(w, "store"); repo = os.path.join(w, "project")
def run(*a, **k):
    return subprocess.run(a, check=True, capture_output=True, **k)
run(BIN, "fixture", "generate", "node-modules", repo)
for c in (["init", "-q", "-b", "main"], ["add", "-A"], ["-c", "user.name=b", "-c", "user.email=b@x", "commit", "-q", "-m", "base"]):
    run("git", "-C", repo, *c)
ex = [BIN, "--store", store, "--json"]
def create(i):
    t = time.perf_counter()
    r = json.loads(run(*ex, "root", "create", "--class", "repo-edit", "--backend", "git-overlay", "--repo", repo, "--base-ref", "main", "--branch", f"b{i}").stdout)
    t1 = time.perf_counter()
    st = run("git", "-C", r["cwd"], "status", "--porcelain").stdout
    t2 = time.perf_counter()
    assert st == b"", st
    return r["id"], (t1 - t) * 1e3, (t2 - t) * 1e3, (t2 - t1) * 1e3
cold, _, _, _ = create(0)  # makes the checkout snapshot
run(*ex, "root", "destroy", cold)
ids, cr, ready, status, destroy = [], [], [], [], []
for i in range(1, N + 1):
    id_, c, r, s = create(i); cr.append(c); ready.append(r); status.append(s); ids.append(id_)
for id_ in ids:
    t = time.perf_counter(); run(*ex, "root", "destroy", id_); destroy.append((time.perf_counter() - t) * 1e3)
files = int(run("git", "-C", repo, "ls-files").stdout.count(b"\n"))
print(json.dumps({"files": files, "runs": N, "createP50": statistics.median(cr), "readyP50": statistics.median(ready),
                  "firstStatusP50": statistics.median(status), "destroyP50": statistics.median(destroy)}, indent=1))
run(*ex, "root", "list")
shutil.rmtree(w, ignore_errors=True)
