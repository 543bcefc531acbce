#!/usr/bin/env python3
"""Side-by-side comparison of two execroot builds on one machine, in one run.

Usage: benches/compare-revs.py OLD_BIN NEW_BIN [ROUNDS]   (as root; needs overlayfs)

Each build gets its own store and work directory under one temporary directory. Every round
runs each operation once with each build, alternating which goes first, so that the machine's
noise (this is written for shared 2-core VMs) lands on both. Operations are timed from
process spawn to exit (wall time, the caller's view); `root create` also reports the time the
process measured itself (`timingsMs.total`). Prints one table of medians and new/old ratios,
in the form docs/benchmarks.md quotes.

Operations, on the built-in `node-modules` fixture (25,000 entries, seed 1):
  ingest (fresh store), re-ingest (unchanged tree), overlay root create and destroy,
  copy root create (a full checkout) and destroy, root diff and root commit of a root in
  which 100 files were rewritten, root export of that root to a fresh directory, and
  gc --dry-run.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def run(bin_, store, *args, json_out=True):
    cmd = [bin_, "--store", store] + (["--json"] if json_out else []) + list(args)
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True)
    dt = (time.perf_counter() - t) * 1000
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.decode()}")
    out = json.loads(p.stdout) if json_out and p.stdout.strip() else None
    return dt, out


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    bins = {"old": os.path.abspath(sys.argv[1]), "new": os.path.abspath(sys.argv[2])}
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    base = tempfile.mkdtemp(prefix="execroot-compare-", dir="/var/tmp")
    try:
        src = os.path.join(base, "src")
        subprocess.run([bins["new"], "fixture", "generate", "node-modules", src, "--seed", "1"],
                       check=True, capture_output=True)
        subprocess.run(["sync"], check=True)
        t = {k: {} for k in bins}

        def rec(k, name, ms):
            t[k].setdefault(name, []).append(ms)

        stores = {k: os.path.join(base, f"store-{k}") for k in bins}
        # Setup: the base snapshot in each store, its layer materialized by a first root.
        for k, b in bins.items():
            run(b, stores[k], "snapshot", "create", src, "--name", "base")
            _, r = run(b, stores[k], "root", "create", "--class", "routine", "--from", "base")
            run(b, stores[k], "root", "destroy", r["id"])
        subprocess.run(["sync"], check=True)

        order = list(bins)
        for i in range(rounds):
            order.reverse()
            for k in order:
                b, s = bins[k], stores[k]
                # Ingest into a fresh store, then again unchanged (fewer rounds: seconds each).
                if i < max(3, rounds // 4):
                    fresh = os.path.join(base, f"fresh-{k}")
                    shutil.rmtree(fresh, ignore_errors=True)
                    subprocess.run(["sync"], check=True)
                    rec(k, "snapshot create (fresh store, 25k)", run(b, fresh, "snapshot", "create", src)[0])
                    rec(k, "snapshot create (unchanged tree)", run(b, fresh, "snapshot", "create", src)[0])
                    shutil.rmtree(fresh, ignore_errors=True)
                    # A copy root writes the whole tree: a full checkout.
                    dt, r = run(b, s, "root", "create", "--class", "routine", "--from", "base",
                                "--backend", "copy")
                    rec(k, "root create, copy (checkout of 25k)", dt)
                    rec(k, "root destroy, copy", run(b, s, "root", "destroy", r["id"])[0])
                dt, r = run(b, s, "root", "create", "--class", "routine", "--from", "base")
                rec(k, "root create, overlay (wall)", dt)
                rec(k, "root create, overlay (timingsMs.total)", r["timingsMs"]["total"])
                # 100 files rewritten in the root.
                cwd = r["cwd"]
                n = 0
                for dirpath, _dirs, files in os.walk(cwd):
                    for f in files:
                        p = os.path.join(dirpath, f)
                        if os.path.islink(p):
                            continue
                        with open(p, "a") as fh:
                            fh.write(f"changed {i}\n")
                        n += 1
                        if n == 100:
                            break
                    if n == 100:
                        break
                rec(k, "root diff, 100 files changed", run(b, s, "root", "diff", r["id"])[0])
                rec(k, "root commit, 100 files changed", run(b, s, "root", "commit", r["id"])[0])
                dest = os.path.join(base, f"export-{k}")
                rec(k, "root export (25k) to a new directory",
                    run(b, s, "root", "export", r["id"], dest)[0])
                shutil.rmtree(dest)
                rec(k, "root destroy, overlay (100 files changed)",
                    run(b, s, "root", "destroy", r["id"], "--force")[0])
                rec(k, "gc --dry-run", run(b, s, "gc", "--dry-run")[0])

        print(f"rounds: {rounds} (ingest and copy: {max(3, rounds // 4)})")
        print("| operation (through the CLI) | old | new | new / old |")
        print("|---|---|---|---|")
        for name in t["old"]:
            o, n = statistics.median(t["old"][name]), statistics.median(t["new"][name])
            print(f"| {name} | {o:.2f} ms | {n:.2f} ms | {n / o:.2f} |")
    finally:
        for m in sorted(
            (line.split()[4] for line in open("/proc/self/mountinfo") if base in line.split()[4]),
            key=len, reverse=True,
        ):
            subprocess.run(["umount", "-l", m])
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
