#!/usr/bin/env python3
"""Push and pull through an OCI registry on loopback (issue 13).

    python3 benches/oci.py [--shape NAME] [--scale F] [--rounds N] [--out FILE]

Starts Debian's docker-registry (/usr/bin/docker-registry, distribution 2.8) on 127.0.0.1 with
a private data directory, and stops only that process (by its pid) at the end. Needs a built
execroot ($EXECROOT_BIN, else $CARGO_TARGET_DIR/release/execroot, else target/release/execroot).

Per round, on fresh stores and a fresh repository:
  push v1     the fixture (default node-modules: ~25k entries, ~270 MB) ingested and pushed;
  push v2     a second snapshot sharing 90% of its objects with v1 (every 10th file rewritten),
              pushed to the same repository: what it moves against v1's push;
  pull v1     into an empty store;
  pull v2     into the store that has v1: only the new objects;
  tar|zstd    the same tree as `tar -cf - . | zstd -3 -T0` and back with `zstd -d | tar -x`,
              the baseline a pull is compared with (same run, same disk).
Times are wall times around each CLI call (process start included); requests and bytes come
from the push and pull reports (every HTTP request and body byte).

Prints a markdown table and writes JSON (--out, default bench-results/oci.json).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REGISTRY = "/usr/bin/docker-registry"


def binary():
    if os.environ.get("EXECROOT_BIN"):
        return os.environ["EXECROOT_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    return os.path.join(target, "release", "execroot")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    def __init__(self, work):
        self.dir = os.path.join(work, "registry")
        os.makedirs(self.dir)
        self.port = free_port()
        cfg = os.path.join(self.dir, "config.yml")
        with open(cfg, "w") as f:
            f.write(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                f"    rootdirectory: {self.dir}/data\nhttp:\n  addr: 127.0.0.1:{self.port}\n"
            )
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen([REGISTRY, "serve", cfg], stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("registry did not start")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def addr(self):
        return f"127.0.0.1:{self.port}"


def run(exe, store, *args, env=None):
    t0 = time.perf_counter()
    out = subprocess.run([exe, "--store", store, "--json", *args], capture_output=True, env=env)
    ms = (time.perf_counter() - t0) * 1000
    if out.returncode != 0:
        raise SystemExit(f"execroot {' '.join(args)} failed: {out.stderr.decode()} {out.stdout.decode()}")
    return json.loads(out.stdout), ms


def sh(cmd):
    t0 = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True)
    return (time.perf_counter() - t0) * 1000


def change_tenth(src):
    files = []
    for d, _, names in os.walk(src):
        for n in names:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                files.append(p)
    files.sort()
    changed = 0
    for p in files[::10]:
        with open(p, "ab") as f:
            f.write(b"\nchanged by benches/oci.py\n")
        changed += 1
    return changed, len(files)


def one_round(exe, work, shape, scale, seed, docker_env):
    reg = Registry(work)
    try:
        src = os.path.join(work, "src")
        subprocess.run([exe, "fixture", "generate", shape, src, "--seed", str(seed), "--scale", str(scale)],
                       check=True, capture_output=True)
        a, b = os.path.join(work, "a"), os.path.join(work, "b")
        repo = f"{reg.addr()}/bench/tree"
        v1 = run(exe, a, "snapshot", "create", src)[0]
        p1, p1_ms = run(exe, a, "push", v1["id"], f"{repo}:v1", env=docker_env)
        l1, l1_ms = run(exe, b, "pull", f"{repo}:v1", env=docker_env)
        again, again_ms = run(exe, a, "push", v1["id"], f"{repo}:v1", env=docker_env)
        changed, files = change_tenth(src)
        v2 = run(exe, a, "snapshot", "create", src)[0]
        p2, p2_ms = run(exe, a, "push", v2["id"], f"{repo}:v2", env=docker_env)
        l2, l2_ms = run(exe, b, "pull", f"{repo}:v2", env=docker_env)
        # Baseline: the same (v2) tree through tar and zstd, and back.
        tz = os.path.join(work, "tree.tar.zst")
        tar_ms = sh(f"tar -C {src} -cf - . | zstd -q -3 -T0 -o {tz}")
        dest = os.path.join(work, "untar")
        os.makedirs(dest)
        untar_ms = sh(f"zstd -q -d -c {tz} | tar -C {dest} -xf -")
        tz_bytes = os.path.getsize(tz)
        verify = run(exe, b, "verify")[0]
        assert verify["ok"], verify
        return {
            "entries": v1["entries"], "bytes": v1["bytes"], "changedFiles": changed, "files": files,
            "sharedObjects": p2["reusedObjects"], "objectsV2": p2["objects"],
            "push1": {"ms": p1_ms, "requests": p1["requests"], "uploadedBytes": p1["uploadedBytes"],
                      "uploadedBlobs": p1["uploadedBlobs"], "packs": p1["packs"]},
            "pushAgain": {"ms": again_ms, "requests": again["requests"], "uploadedBytes": again["uploadedBytes"]},
            "push2": {"ms": p2_ms, "requests": p2["requests"], "uploadedBytes": p2["uploadedBytes"],
                      "uploadedBlobs": p2["uploadedBlobs"], "packs": p2["packs"]},
            "pull1": {"ms": l1_ms, "requests": l1["requests"], "bytesReceived": l1["bytesReceived"],
                      "wholePacks": l1["wholePacks"], "rangeRequests": l1["rangeRequests"]},
            "pull2": {"ms": l2_ms, "requests": l2["requests"], "bytesReceived": l2["bytesReceived"],
                      "wholePacks": l2["wholePacks"], "rangeRequests": l2["rangeRequests"]},
            "tarZstd": {"createMs": tar_ms, "extractMs": untar_ms, "bytes": tz_bytes},
        }
    finally:
        reg.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="node-modules")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="bench-results/oci.json")
    args = ap.parse_args()
    exe = binary()
    if not os.path.exists(exe):
        raise SystemExit(f"{exe} is missing: cargo build --release (or set EXECROOT_BIN)")
    if not os.path.exists(REGISTRY):
        raise SystemExit(f"{REGISTRY} is missing: apt-get install docker-registry")
    rounds = []
    top = tempfile.mkdtemp(prefix="execroot-oci-bench-", dir="/var/tmp")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        docker = os.path.join(top, "docker")
        os.makedirs(docker)
        env = dict(os.environ, DOCKER_CONFIG=docker)
        for i in range(args.rounds):
            work = os.path.join(top, f"round{i}")
            os.makedirs(work)
            rounds.append(one_round(exe, work, args.shape, args.scale, args.seed, env))
            shutil.rmtree(work)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    r = rounds[-1]
    mib = lambda b: f"{b / 1048576:.1f} MiB"
    print(f"shape {args.shape} x{args.scale}: {r['entries']} entries, {mib(r['bytes'])}; v2 rewrites "
          f"{r['changedFiles']} of {r['files']} files, shares {r['sharedObjects']} of {r['objectsV2']} objects\n")
    print("| step | wall ms | requests | bytes moved | blobs / packs |")
    print("|---|---:|---:|---:|---|")
    print(f"| push v1 | {r['push1']['ms']:.0f} | {r['push1']['requests']} | {mib(r['push1']['uploadedBytes'])} | "
          f"{r['push1']['uploadedBlobs']} blobs, {r['push1']['packs']} packs |")
    print(f"| push v1 again | {r['pushAgain']['ms']:.0f} | {r['pushAgain']['requests']} | "
          f"{mib(r['pushAgain']['uploadedBytes'])} | |")
    print(f"| push v2 (90% shared) | {r['push2']['ms']:.0f} | {r['push2']['requests']} | "
          f"{mib(r['push2']['uploadedBytes'])} ({100 * r['push2']['uploadedBytes'] / r['push1']['uploadedBytes']:.1f}% of v1) | "
          f"{r['push2']['uploadedBlobs']} blobs, {r['push2']['packs']} packs |")
    print(f"| pull v1 (empty store) | {r['pull1']['ms']:.0f} | {r['pull1']['requests']} | "
          f"{mib(r['pull1']['bytesReceived'])} | {r['pull1']['wholePacks']} whole packs, {r['pull1']['rangeRequests']} ranges |")
    print(f"| pull v2 (has v1) | {r['pull2']['ms']:.0f} | {r['pull2']['requests']} | "
          f"{mib(r['pull2']['bytesReceived'])} ({100 * r['pull2']['bytesReceived'] / r['pull1']['bytesReceived']:.1f}% of v1) | "
          f"{r['pull2']['wholePacks']} whole packs, {r['pull2']['rangeRequests']} ranges |")
    print(f"| tar \\| zstd -3 (v2 tree) | {r['tarZstd']['createMs']:.0f} | | {mib(r['tarZstd']['bytes'])} | |")
    print(f"| zstd -d \\| tar -x | {r['tarZstd']['extractMs']:.0f} | | | |")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"shape": args.shape, "scale": args.scale, "rounds": rounds}, f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
