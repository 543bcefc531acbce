#!/usr/bin/env python3
"""Provisioning with a real package manager on a real project (issue 12).

    python3 benches/provision.py [--quick] [--pm npm|pnpm] [--pnpm PATH] [--creates N] [--rounds N]
                                 [--cache DIR] [--out FILE]

The project is fixtures/npm-project (package.json with package-lock.json and pnpm-lock.yaml,
the same resolution: six pinned, well-known packages, 82 in the lockfile), committed in a git
repository and ingested as a snapshot (`git archive HEAD | execroot snapshot create --tar -`).
With --pm npm (the default) every install is `npm ci --offline` from a warm npm cache (`--cache
DIR`, default ~/.cache/execroot-bench/npm-cache); with --pm pnpm it is `pnpm install --offline
--frozen-lockfile` from a warm pnpm store (`--cache DIR`, default
~/.cache/execroot-bench/pnpm-store; pnpm from --pnpm, else PATH). Either is kept between runs:
if it cannot serve the lockfile offline it is warmed once online before anything is measured;
when that fails too (no network) the run is skipped with a note, as it is when the package
manager is not installed. pnpm links packages from its store with hardlinks where it can: in
the worktree (same filesystem as its store) it does, in a provision build (an overlay mount, a
filesystem of its own) it cannot and copies; the JSON says which it did (`linkedFromStore`).
Needs root (overlay mounts) and a built execroot ($EXECROOT_BIN, else
$CARGO_TARGET_DIR/release/execroot, else target/release/execroot).

Each round (rounds interleaved; which side goes first alternates) measures on a fresh store:
  miss      the first `root create --class preview --from proj --provision CMD
            --provision-inputs package.json,package-lock.json`, which builds the layer, with its
            parts from timingsMs (provisionRoot, provisionCommand, provisionCommit,
            provisionDestroy, then the root's own backend);
  hit       creates of the same (each followed by a plain create without --provision, the
            floor), each destroyed after, with the root's disk use (`root show` usage and du of
            the root's directory, its overlay mount excluded);
  worktree  `git worktree add -b BRANCH PATH HEAD` + the same install in it, the size of
            node_modules, and `git worktree remove --force`;
  repo hit  `root create --class repo-edit --repo REPO --base-ref main --provision ...` (a
            git-overlay root of the same commit, the layer stacked over its checkout: a hit on
            the same key), `git status` clean checked, and its destroy; before it, the store's
            first git-overlay create of the commit (which makes the checkout snapshot), after
            it the same create without --provision (the floor).
Wall times are around the CLI call (process spawn included). Everything lives in a temporary
directory under /var/tmp that is removed at the end, on failure and on SIGINT/SIGTERM: roots are
destroyed with execroot first, and nothing is removed while a mount below it remains.

Prints markdown tables and writes JSON (--out, default bench-results/provision.json). --quick (1
round, 2 hits) is what tests/provision_bench.rs runs; it needs no network once the cache is warm.
"""

import argparse
import datetime
import json
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(REPO, "fixtures", "npm-project")
# The PATH execroot gives a provision command (docs/roots.md "Provisioning").
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INPUTS = {"npm": "package.json,package-lock.json", "pnpm": "package.json,pnpm-lock.yaml"}
MIB = 1024 * 1024


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 round, 2 hits (the test's mode)")
    ap.add_argument("--creates", type=int, help="hit creates in all (default 21; quick 2)")
    ap.add_argument("--rounds", type=int, help="rounds, each a miss and a worktree install (default 3; quick 1)")
    ap.add_argument("--pm", choices=["npm", "pnpm"], default="npm", help="the package manager (default npm)")
    ap.add_argument("--pnpm", help="the pnpm binary (default: pnpm on PATH)")
    ap.add_argument("--cache", help="the npm cache or pnpm store (default ~/.cache/execroot-bench/npm-cache "
                    "or pnpm-store)")
    ap.add_argument("--out", help="JSON output (default bench-results/provision.json)")
    ap.add_argument("--bin", help="the execroot binary")
    a = ap.parse_args()
    a.rounds = a.rounds or (1 if a.quick else 3)
    a.creates = a.creates or (2 if a.quick else 21)
    default_cache = "npm-cache" if a.pm == "npm" else "pnpm-store"
    a.cache = os.path.abspath(a.cache or os.path.expanduser(f"~/.cache/execroot-bench/{default_cache}"))
    a.out = os.path.abspath(a.out or os.path.join(REPO, "bench-results", "provision.json"))
    return a


def find_bin(given):
    cands = [given, os.environ.get("EXECROOT_BIN")]
    if os.environ.get("CARGO_TARGET_DIR"):
        cands.append(os.path.join(os.environ["CARGO_TARGET_DIR"], "release", "execroot"))
    cands.append(os.path.join(REPO, "target", "release", "execroot"))
    for c in cands:
        if c and os.access(c, os.X_OK):
            return os.path.abspath(c)
    sys.exit("no execroot binary: run `cargo build --release` or set EXECROOT_BIN")


def ms_since(t):
    return (time.perf_counter() - t) * 1000.0


def run(cmd, **kw):
    """Run cmd (a list) in a process group of its own; fail loudly with its output on a non-zero
    exit. Interrupted (SIGINT, SIGTERM), the whole group is killed, so that no install goes on
    writing into the directory the cleanup removes."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)
    try:
        out, err = p.communicate()
    except BaseException:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        raise
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}:\n{out}{err}")
    return out


def timed(cmd, **kw):
    t = time.perf_counter()
    out = run(cmd, **kw)
    return ms_since(t), out


def du(path, apparent=False):
    """Bytes under path on its own filesystem (-x: an overlay mounted inside is not counted)."""
    args = ["du", "-sx", "--block-size=1"] + (["--apparent-size"] if apparent else []) + [path]
    return int(run(args).split()[0])


def stats(xs):
    xs = sorted(xs)
    if not xs:
        return None
    p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
    return {"n": len(xs), "p50": statistics.median(xs), "p90": p90, "min": xs[0], "max": xs[-1]}


def machine():
    """Who else was running: the load average and the busiest processes."""
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    # top's second sample is the CPU use of the last half second (ps gives lifetime averages).
    p = subprocess.run(["top", "-bn2", "-d0.5", "-w", "200", "-o", "%CPU"], capture_output=True, text=True)
    busiest, samples, header = [], 0, False
    for line in p.stdout.splitlines():
        if line.startswith("top -"):
            samples, header = samples + 1, False
        elif samples == 2 and line.lstrip().startswith("PID"):
            header = True
        elif samples == 2 and header and line.strip():
            f = line.split(None, 11)
            if len(f) == 12 and float(f[8]) > 0 and len(busiest) < 6:
                busiest.append(f"{f[11]} {f[8]}%")
    return {"loadavg": [float(x) for x in load], "busiest": busiest}


def mounts_under(path):
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == path or mp.startswith(path + "/"):
                found.append(mp)
    return found


class Bench:
    def __init__(self, args, exe, npm):
        self.a = args
        self.exe = exe
        self.npm = npm
        self.tmp = tempfile.mkdtemp(prefix="execroot-provbench-", dir="/var/tmp")
        self.stores = []
        home = pwd.getpwuid(os.getuid()).pw_dir
        path = CLEAN_PATH
        node_dir = os.path.dirname(shutil.which("node") or "/usr/bin/node")
        if node_dir not in CLEAN_PATH.split(":"):
            path = node_dir + ":" + path
        # The worktree install gets the environment the provision command gets.
        self.env = {"PATH": path, "HOME": home}
        # Where the registry is reached through a proxy or with a CA of the machine's own (Node
        # reads no system CA store by itself), the installs need to know it too.
        for k in ("NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY", "https_proxy",
                  "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
            if k in os.environ:
                self.env[k] = os.environ[k]
        pm_cmd = os.path.basename(self.npm) if os.path.dirname(self.npm) in path.split(":") else self.npm
        prefix = "" if path == CLEAN_PATH else f"PATH={path} "
        if args.pm == "npm":
            self.install = (
                f"{prefix}{pm_cmd} ci --offline --cache {self.a.cache} --no-audit --no-fund "
                "--no-update-notifier --logs-max=0 --loglevel=error"
            )
            self.online = self.install.replace(" --offline ", " --prefer-offline --fetch-retries=1 "
                                               "--fetch-retry-mintimeout=1000 --fetch-retry-maxtimeout=3000 ")
        else:
            self.install = (f"{prefix}{pm_cmd} install --offline --frozen-lockfile --store-dir {self.a.cache} "
                            "--reporter=silent --config.update-notifier=false")
            self.online = self.install.replace(" --offline ", " --prefer-offline --config.fetch-retries=1 ")
        self.inputs = INPUTS[args.pm]

    # execroot on one store
    def ex(self, store, *args):
        return run([self.exe, "--store", store, *args])

    def ex_json(self, store, *args):
        t = time.perf_counter()
        out = run([self.exe, "--store", store, "--json", *args])
        return ms_since(t), json.loads(out)

    def cleanup(self):
        """Destroy every root with execroot, then remove the directory unless a mount remains."""
        problems = []
        for s in self.stores:
            if not os.path.isdir(s):
                continue
            # A create or build killed with this script (SIGINT, SIGTERM) may leave a root
            # half made or a build's temporary root: doctor finishes or undoes those first.
            subprocess.run([self.exe, "--store", s, "--json", "doctor", "--repair"], capture_output=True)
            try:
                roots = json.loads(run([self.exe, "--store", s, "--json", "root", "list"]))["roots"]
                for r in roots:
                    try:
                        self.destroy_waiting(s, r["id"])
                    except Exception as e:  # noqa: BLE001 - reported, the others still go
                        problems.append(f"destroy {r['id']}: {e}")
            except Exception as e:  # noqa: BLE001
                problems.append(f"root list in {s}: {e}")
        left = mounts_under(self.tmp)
        if left:
            problems.append(f"mounts left, {self.tmp} kept: {left}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return {"mounts": left, "problems": problems, "dirLeft": os.path.exists(self.tmp)}

    def destroy_waiting(self, store, rid, wait_secs=120):
        """`root destroy --force`, retried while the root is in use: an execroot killed inside a
        provision build leaves the command's children (npm) running in the root until they end."""
        deadline = time.monotonic() + wait_secs
        while True:
            p = subprocess.run([self.exe, "--store", store, "--json", "root", "destroy", rid, "--force"],
                               capture_output=True, text=True)
            if p.returncode == 0:
                return
            if "in use by" not in p.stdout + p.stderr or time.monotonic() > deadline:
                raise RuntimeError(f"root destroy {rid} exited {p.returncode}: {p.stdout}{p.stderr}")
            time.sleep(0.5)

    def warm_cache(self):
        """Make sure the cache serves the lockfile offline; warm it online once if not."""
        d = os.path.join(self.tmp, "warm")
        shutil.copytree(FIXTURE, d)
        os.makedirs(self.a.cache, exist_ok=True)
        t = time.perf_counter()
        try:
            run(["/bin/sh", "-c", self.install], cwd=d, env=self.env)
            shutil.rmtree(d)
            return {"state": "warm", "offlineInstallMs": ms_since(t)}
        except RuntimeError:
            shutil.rmtree(os.path.join(d, "node_modules"), ignore_errors=True)
        # Few, short retries: offline, the skip should come in seconds, not minutes.
        t = time.perf_counter()
        try:
            run(["/bin/sh", "-c", self.online], cwd=d, env=self.env)
        except RuntimeError as e:
            return {"state": "cold", "error": str(e)[-2000:]}
        finally:
            shutil.rmtree(d)
        return {"state": "warmed online", "onlineInstallMs": ms_since(t)}

    def project(self):
        """The fixture as a git repository with one commit, and its tar (the snapshot's source)."""
        repo = os.path.join(self.tmp, "repo")
        shutil.copytree(FIXTURE, repo)
        git_env = dict(self.env, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid",
                       GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid",
                       GIT_AUTHOR_DATE="2026-01-01T00:00:00Z", GIT_COMMITTER_DATE="2026-01-01T00:00:00Z")
        for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "project"]):
            run(cmd, cwd=repo, env=git_env)
        tar = os.path.join(self.tmp, "project.tar")
        run(["git", "archive", "-o", tar, "HEAD"], cwd=repo)
        return repo, tar

    def new_store(self, i, tar):
        s = os.path.join(self.tmp, f"store-{i}")
        self.stores.append(s)
        self.ex(s, "--json", "snapshot", "create", "--tar", tar, "--name", "proj")
        return s

    def create_args(self, provision):
        args = ["root", "create", "--class", "preview", "--from", "proj"]
        if provision:
            args += ["--provision", self.install, "--provision-inputs", self.inputs]
        return args

    def miss(self, store):
        before = du(store)
        wall, r = self.ex_json(store, *self.create_args(True))
        assert r["provision"] and r["provision"]["hit"] is False, r["provision"]
        assert os.path.isfile(os.path.join(r["cwd"], "node_modules", "express", "package.json"))
        dwall, _ = self.ex_json(store, "root", "destroy", r["id"])
        info = json.loads(self.ex(store, "--json", "provision", "list"))["provisions"]
        layer = json.loads(self.ex(store, "--json", "snapshot", "show", r["provision"]["snapshot"]))
        # What the layer costs the store once: its objects, manifest and materialized layer.
        return {"wallMs": wall, "timingsMs": r["timingsMs"], "destroyMs": dwall,
                "layerBytes": info[0]["bytes"], "storeGrowthBytes": du(store) - before, "key": r["provision"]["key"],
                "layerEntries": layer.get("entries")}

    def repo_hit(self, store, repo):
        """A git-overlay root of the project's commit, provisioned: the same key, so a hit."""
        args = ["root", "create", "--class", "repo-edit", "--backend", "git-overlay", "--repo", repo,
                "--base-ref", "main", "--provision", self.install, "--provision-inputs", self.inputs]
        # The store's first git-overlay root of the commit makes its checkout snapshot: that
        # one-time cost is measured apart, by a plain create first.
        fwall, f = self.ex_json(store, *args[:10])
        self.ex_json(store, "root", "destroy", f["id"])
        wall, r = self.ex_json(store, *args)
        assert r["provision"]["hit"] is True and r["backend"] == "git-overlay", r
        assert os.path.isfile(os.path.join(r["cwd"], "node_modules", "express", "package.json"))
        status = run(["git", "-c", f"safe.directory={r['cwd']}", "status", "--porcelain"], cwd=r["cwd"])
        assert status == "", status
        shown = json.loads(self.ex(store, "--json", "root", "show", r["id"]))
        dwall, _ = self.ex_json(store, "root", "destroy", r["id"])
        # The floor: the same git-overlay create without --provision.
        pwall, p = self.ex_json(store, *args[:10])
        self.ex_json(store, "root", "destroy", p["id"])
        return {"wallMs": wall, "timingsMs": r["timingsMs"], "usageBytes": shown["usage"]["bytes"],
                "gitClean": True, "destroyMs": dwall, "plainWallMs": pwall, "firstPlainWallMs": fwall}

    def hit(self, store, check):
        wall, r = self.ex_json(store, *self.create_args(True))
        assert r["provision"] and r["provision"]["hit"] is True, r["provision"]
        cwd = r["cwd"]
        assert os.path.isfile(os.path.join(cwd, "node_modules", "express", "package.json")), cwd
        shown = json.loads(self.ex(store, "--json", "root", "show", r["id"]))
        root_dir = os.path.join(store, "roots", r["id"])
        out = {"wallMs": wall, "timingsMs": r["timingsMs"], "usageBytes": shown["usage"]["bytes"],
               "rootDirBytes": du(root_dir)}
        if check:
            # The root is ready: the project runs with every dependency (not timed).
            node = shutil.which("node") or "node"
            res = json.loads(self.ex(store, "--json", "exec", r["id"], "--", node, "index.js"))
            out["runs"] = res["exitCode"] == 0 and res["stdout"].startswith("ok express")
            assert out["runs"], res
            out["rootDirBytesAfterRun"] = du(root_dir)
        out["destroyMs"], _ = self.ex_json(store, "root", "destroy", r["id"])
        pwall, p = self.ex_json(store, *self.create_args(False))
        out["plainWallMs"], out["plainTotalMs"] = pwall, p["timingsMs"]["total"]
        self.ex_json(store, "root", "destroy", p["id"])
        return out

    def worktree(self, repo, i):
        wt = os.path.join(self.tmp, f"wt-{i}")
        branch = f"bench-{i}"
        add, _ = timed(["git", "worktree", "add", "-q", "-b", branch, wt, "HEAD"], cwd=repo)
        install, _ = timed(["/bin/sh", "-c", self.install], cwd=wt, env=self.env)
        assert os.path.isfile(os.path.join(wt, "node_modules", "express", "package.json"))
        nm = os.path.join(wt, "node_modules")
        sizes = {"nodeModulesBytes": du(nm), "nodeModulesApparentBytes": du(nm, apparent=True),
                 "nodeModulesEntries": sum(len(d) + len(f) for _, d, f in os.walk(nm)),
                 "linkedFromStore": linked(nm)}
        remove, _ = timed(["git", "worktree", "remove", "--force", wt], cwd=repo)
        run(["git", "branch", "-q", "-D", branch], cwd=repo)
        return {"addMs": add, "installMs": install, "removeMs": remove, "readyMs": add + install, **sizes}

    def drop_store(self, store):
        """A round's store, once every root in it is destroyed (checked): removed to save disk."""
        roots = json.loads(self.ex(store, "--json", "root", "list"))["roots"]
        assert not roots, f"roots left in {store}: {roots}"
        if not mounts_under(store):
            shutil.rmtree(store)

    def measure(self):
        repo, tar = self.project()
        rounds = []
        per_round = [self.a.creates // self.a.rounds + (1 if i < self.a.creates % self.a.rounds else 0)
                     for i in range(self.a.rounds)]
        for i in range(self.a.rounds):
            rnd = {}
            if i % 2 == 1:
                rnd["worktree"] = self.worktree(repo, i)
            store = self.new_store(i, tar)
            rnd["miss"] = self.miss(store)
            rnd["hits"] = [self.hit(store, check=(j == 0)) for j in range(per_round[i])]
            rnd["repoHit"] = self.repo_hit(store, repo)
            if i % 2 == 0:
                rnd["worktree"] = self.worktree(repo, i)
            self.drop_store(store)
            rounds.append(rnd)
            print(f"round {i + 1}/{self.a.rounds}: miss {rnd['miss']['wallMs']:.0f} ms, "
                  f"hit p50 {statistics.median(h['wallMs'] for h in rnd['hits']):.1f} ms, "
                  f"worktree+install {rnd['worktree']['readyMs']:.0f} ms", file=sys.stderr)
        return rounds


def linked(nm):
    """Whether the install hardlinked express's package.json from the package manager's store."""
    p = os.path.realpath(os.path.join(nm, "express", "package.json"))
    return os.stat(p).st_nlink > 1


def summarize(rounds):
    hits = [h for r in rounds for h in r["hits"]]
    misses = [r["miss"] for r in rounds]
    wts = [r["worktree"] for r in rounds]
    s = lambda xs: stats(list(xs))  # noqa: E731
    parts = ["provisionRoot", "provisionCommand", "provisionCommit", "provisionDestroy", "backend"]
    summary = {
        "hit": {
            "wallMs": s(h["wallMs"] for h in hits),
            "totalMs": s(h["timingsMs"]["total"] for h in hits),
            "provisionMs": s(h["timingsMs"]["provision"] for h in hits),
            "destroyMs": s(h["destroyMs"] for h in hits),
            "plainWallMs": s(h["plainWallMs"] for h in hits),
            "plainTotalMs": s(h["plainTotalMs"] for h in hits),
            "usageBytes": s(h["usageBytes"] for h in hits),
            "rootDirBytes": s(h["rootDirBytes"] for h in hits),
            "rootDirBytesAfterRun": s(h["rootDirBytesAfterRun"] for h in hits if "rootDirBytesAfterRun" in h),
            "allRan": all(h.get("runs", True) for h in hits),
        },
        "miss": {
            "wallMs": s(m["wallMs"] for m in misses),
            "totalMs": s(m["timingsMs"]["total"] for m in misses),
            "parts": {k: s(m["timingsMs"].get(k, 0.0) for m in misses) for k in parts},
            "layerBytes": misses[0]["layerBytes"],
            "storeGrowthBytes": s(m["storeGrowthBytes"] for m in misses),
        },
        "repoHit": {
            "wallMs": s(r["repoHit"]["wallMs"] for r in rounds),
            "totalMs": s(r["repoHit"]["timingsMs"]["total"] for r in rounds),
            "usageBytes": s(r["repoHit"]["usageBytes"] for r in rounds),
            "destroyMs": s(r["repoHit"]["destroyMs"] for r in rounds),
            "plainWallMs": s(r["repoHit"]["plainWallMs"] for r in rounds),
            "firstPlainWallMs": s(r["repoHit"]["firstPlainWallMs"] for r in rounds),
        },
        "worktree": {k: s(w[k] for w in wts) for k in ("addMs", "installMs", "removeMs", "readyMs")},
        "nodeModules": {k: wts[0][k] for k in ("nodeModulesBytes", "nodeModulesApparentBytes", "nodeModulesEntries",
                                               "linkedFromStore")},
    }
    hit_p50 = summary["hit"]["wallMs"]["p50"]
    ready = summary["worktree"]["readyMs"]["p50"]
    install = summary["worktree"]["installMs"]["p50"]
    miss = summary["miss"]["wallMs"]["p50"]
    disk = summary["hit"]["rootDirBytes"]["max"]
    summary["ratios"] = {"worktreeReadyOverHit": ready / hit_p50, "missOverInstall": miss / install}
    summary["goals"] = [
        {"goal": "hit p50 <= 20 ms (wall, CLI)", "value": hit_p50, "met": hit_p50 <= 20.0},
        {"goal": "hit >= 100x faster than git worktree add + install", "value": ready / hit_p50,
         "met": ready / hit_p50 >= 100.0},
        {"goal": "miss <= 3x the plain install in a worktree", "value": miss / install, "met": miss / install <= 3.0},
        {"goal": "disk per root on a hit <= 1 MiB", "value": disk, "met": disk <= MIB},
    ]
    return summary


def table(res):
    s = res["summary"]
    pm = res.get("pm", "npm")
    install_name = "`npm ci --offline`" if pm == "npm" else "`pnpm install --offline --frozen-lockfile`"
    h, m, w, nm = s["hit"], s["miss"], s["worktree"], s["nodeModules"]
    f = lambda x: f"{x:,.1f} ms" if x < 100 else f"{x:,.0f} ms"  # noqa: E731
    kib = lambda b: f"{b / 1024:,.0f} KiB" if b < MIB else f"{b / MIB:,.1f} MiB"  # noqa: E731
    lines = [
        f"| {res['project']} ({nm['nodeModulesEntries']:,} entries in node_modules) | p50 | min / max |",
        "|---|---|---|",
        f"| hit: `root create --provision` (wall, CLI; n={h['wallMs']['n']}) | {f(h['wallMs']['p50'])} "
        f"| {f(h['wallMs']['min'])} / {f(h['wallMs']['max'])} |",
        f"| hit: in-process create (`timingsMs.total`) | {f(h['totalMs']['p50'])} | "
        f"{f(h['totalMs']['min'])} / {f(h['totalMs']['max'])} |",
        f"| hit: of which the provision lookup (`timingsMs.provision`) | {f(h['provisionMs']['p50'])} | "
        f"{f(h['provisionMs']['min'])} / {f(h['provisionMs']['max'])} |",
        f"| the same create without `--provision` (wall, CLI) | {f(h['plainWallMs']['p50'])} | "
        f"{f(h['plainWallMs']['min'])} / {f(h['plainWallMs']['max'])} |",
        f"| hit: `root destroy` (wall, CLI) | {f(h['destroyMs']['p50'])} | "
        f"{f(h['destroyMs']['min'])} / {f(h['destroyMs']['max'])} |",
        f"| `git worktree add -b` (n={w['addMs']['n']}) | {f(w['addMs']['p50'])} | "
        f"{f(w['addMs']['min'])} / {f(w['addMs']['max'])} |",
        f"| {install_name} in the worktree | {f(w['installMs']['p50'])} | "
        f"{f(w['installMs']['min'])} / {f(w['installMs']['max'])} |",
        f"| worktree ready (add + install) | {f(w['readyMs']['p50'])} | "
        f"{f(w['readyMs']['min'])} / {f(w['readyMs']['max'])} |",
        f"| `git worktree remove --force` | {f(w['removeMs']['p50'])} | "
        f"{f(w['removeMs']['min'])} / {f(w['removeMs']['max'])} |",
        f"| repo hit: `root create --class repo-edit --backend git-overlay --provision` (wall; "
        f"n={s['repoHit']['wallMs']['n']}) | {f(s['repoHit']['wallMs']['p50'])} | "
        f"{f(s['repoHit']['wallMs']['min'])} / {f(s['repoHit']['wallMs']['max'])} |",
        f"| the same git-overlay create without `--provision` | {f(s['repoHit']['plainWallMs']['p50'])} | "
        f"{f(s['repoHit']['plainWallMs']['min'])} / {f(s['repoHit']['plainWallMs']['max'])} |",
        f"| the store's first git-overlay create of the commit (makes its checkout snapshot; not in the "
        f"two above) | {f(s['repoHit']['firstPlainWallMs']['p50'])} | "
        f"{f(s['repoHit']['firstPlainWallMs']['min'])} / {f(s['repoHit']['firstPlainWallMs']['max'])} |",
        f"| miss: the first `root create --provision` on a fresh store (wall; n={m['wallMs']['n']}) | "
        f"{f(m['wallMs']['p50'])} | {f(m['wallMs']['min'])} / {f(m['wallMs']['max'])} |",
    ]
    names = {"provisionRoot": "temporary root of the base", "provisionCommand": f"the command ({install_name} in the root)",
             "provisionCommit": "commit of what it wrote (the layer)", "provisionDestroy": "destroy of the temporary root",
             "backend": "the root itself (materializes the new layer)"}
    for k, label in names.items():
        p = m["parts"][k]
        lines.append(f"| miss, part: {label} | {f(p['p50'])} | {f(p['min'])} / {f(p['max'])} |")
    lines += [
        "",
        "| disk | |",
        "|---|---|",
        f"| per root on a hit: the root's directory (du, max of {h['rootDirBytes']['n']}) | {kib(h['rootDirBytes']['max'])} |",
        f"| per root on a hit: its upper dir (`root show` usage.bytes, max) | {kib(h['usageBytes']['max'])} |",
    ]
    if h["rootDirBytesAfterRun"]:
        lines.append(f"| the root's directory after `node index.js` ran in it (max) | {kib(h['rootDirBytesAfterRun']['max'])} |")
    lines += [
        f"| the provision layer, once per store (`provision list` bytes) | {kib(m['layerBytes'])} |",
        f"| the store's growth from the miss, once per store (du; objects, manifest, materialized layer) | "
        f"{kib(m['storeGrowthBytes']['max'])} |",
        f"| node_modules of the plain install (du; apparent size) | {kib(nm['nodeModulesBytes'])} "
        f"({kib(nm['nodeModulesApparentBytes'])}) |",
        f"| the worktree install hardlinked from the {pm} store | {'yes' if nm['linkedFromStore'] else 'no'} |",
        "",
        "| goal | value | met |",
        "|---|---|---|",
    ]
    for g in s["goals"]:
        v = g["value"]
        shown = f"{v:,.1f} ms" if "ms" in g["goal"] and "faster" not in g["goal"] else (
            kib(v) if "disk" in g["goal"] else f"{v:,.2f}x")
        lines.append(f"| {g['goal']} | {shown} | {'yes' if g['met'] else 'no'} |")
    return "\n".join(lines)


def write(out, doc):
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def main():
    a = parse_args()
    doc = {"quick": a.quick, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "project": "fixtures/npm-project", "cache": a.cache, "pm": a.pm}
    git = shutil.which("git")
    if git:
        doc["commit"] = subprocess.run([git, "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                       text=True).stdout.strip()
    npm = shutil.which("npm") if a.pm == "npm" else (a.pnpm or shutil.which("pnpm"))
    if npm and a.pm == "pnpm":
        npm = os.path.abspath(npm)
    if not npm:
        why = f"{a.pm} is not installed"
        doc["skipped"] = why
        write(a.out, doc)
        print(f"skipped: {why}")
        return 0
    if not git:
        sys.exit("benches/provision.py needs git (the worktree side)")
    if os.geteuid() != 0:
        sys.exit("benches/provision.py needs root (overlay mounts)")
    exe = find_bin(a.bin)
    doc["execroot"] = exe
    doc[a.pm] = run([npm, "--version"]).strip()
    doc["node"] = run([shutil.which("node") or "node", "--version"]).strip()
    b = Bench(a, exe, npm)
    doc["command"] = b.install
    doc["tmp"] = b.tmp

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    status = 0
    try:
        doc["cacheWarm"] = b.warm_cache()
        if doc["cacheWarm"]["state"] == "cold":
            doc["skipped"] = (f"the {a.pm} cache {a.cache} cannot serve the lockfile offline and warming it online "
                              "failed (no network?)")
            print(f"skipped: {doc['skipped']}\n{doc['cacheWarm']['error']}")
        else:
            doc["machineBefore"] = machine()
            rounds = b.measure()
            doc["machineAfter"] = machine()
            doc["rounds"] = rounds
            doc["summary"] = summarize(rounds)
    except BaseException as e:  # noqa: BLE001 - cleaned up below, then reported
        doc["error"] = f"{type(e).__name__}: {e}"
        status = 1
    finally:
        # A second signal must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        doc["leftovers"] = b.cleanup()
    if doc["leftovers"]["problems"]:
        status = 1
    write(a.out, doc)
    if "summary" in doc:
        print(table(doc))
    if status:
        print(f"error: {doc.get('error')}; leftovers: {doc['leftovers']}", file=sys.stderr)
    print(f"JSON: {a.out}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
