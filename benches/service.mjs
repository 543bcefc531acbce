#!/usr/bin/env node
// The service benchmark (issue 10), in one run on one temporary store:
//   1. root create and destroy through `execroot serve` on the `small` shape (overlay roots,
//      create and destroy alternating), the in-process time of each create (the answer's
//      `timingsMs.total`), so the service's overhead per call, a health round trip (the HTTP
//      floor) and, interleaved, the same create and destroy through the CLI (process spawn);
//   2. sustained create+destroy pairs per second with N concurrent clients;
//   3. the whole plugin lifecycle through the caller's SDK harness (acquire, realize, execute
//      `true`, release) on the 25k-entry `node-modules` project as a snapshot, against the
//      caller's git_worktree strategy (`git worktree add -b B PATH HEAD`, `true` in it,
//      `git worktree remove --force PATH`) on a repository of the same tree, interleaved.
// Prints a markdown table on stdout (progress on stderr) and writes the figures as JSON.
//
//   node benches/service.mjs [--quick] [--out FILE] [--iterations N] [--cli-every K]
//     [--clients N] [--pairs N] [--rounds N] [--scale F] [--baseline BIN] [--baseline-client FILE]
//
// --baseline BIN: phase 1 also runs on a second service of another build (an earlier commit's
// binary), on its own store and fixture, in alternating blocks of 50 pairs, so that the two are
// measured side by side under the same load. --baseline-client FILE: the baseline is called
// through that Node client module (an earlier commit's clients/node/index.js) instead of this
// one, so that a change of the client is measured side by side too.
//
// Needs root (overlay mounts), Node >= 24.11 (the SDK) and the plugin's dependencies (`npm ci`
// in clients/paperclip-plugin). The binary is $EXECROOT_BIN, else the release build. Everything
// it makes (service, store, fixtures, repository, worktrees) is under one temporary directory
// that it removes, on failure and on SIGINT/SIGTERM too; it then checks that no mount is left.

import { execFile, execFileSync, spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { startServe, BIN } from "../clients/node/test/serve.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

const { values: opt } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    out: { type: "string" },
    iterations: { type: "string" },
    "cli-every": { type: "string" },
    clients: { type: "string" },
    pairs: { type: "string" },
    rounds: { type: "string" },
    scale: { type: "string" },
    baseline: { type: "string" },
    "baseline-client": { type: "string" },
  },
});
const num = (v, d) => {
  if (v === undefined) return d;
  const n = Number(v);
  if (!(n > 0)) throw new Error(`bad number ${v}`);
  return n;
};
// --quick: every phase runs, on tiny counts and a 1% project, to check that it works.
const P = {
  quick: opt.quick,
  iterations: num(opt.iterations, opt.quick ? 20 : 1000),
  cliEvery: num(opt["cli-every"], 5),
  clients: num(opt.clients, opt.quick ? 10 : 50),
  pairsPerClient: num(opt.pairs, opt.quick ? 2 : 40),
  rounds: num(opt.rounds, opt.quick ? 1 : 5),
  scale: num(opt.scale, opt.quick ? 0.01 : 1),
};
const outFile = path.resolve(opt.out || path.join(repoRoot, "bench-results", "service.json"));

const log = (...a) => console.error("[service bench]", ...a);

/** Nearest-rank percentile of `xs` (ms). */
function pct(xs, p) {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}
const stats = (xs) => ({ n: xs.length, p50: r3(pct(xs, 50)), p99: r3(pct(xs, 99)), max: r3(pct(xs, 100)) });
const r3 = (x) => (x === null ? null : Math.round(x * 1000) / 1000);
const timed = async (f) => {
  const t = performance.now();
  const v = await f();
  return [performance.now() - t, v];
};
// Child processes run asynchronously, so that a signal is handled (and everything cleaned up)
// while one runs: a blocked event loop would run no handler until the child is done. A cleanup
// first kills the children still running.
const children = new Set();
function run(cmd, args, options = {}) {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { encoding: "utf8", maxBuffer: 1 << 30, ...options }, (err, stdout, stderr) => {
      children.delete(child);
      err ? reject(new Error(`${cmd} ${args.join(" ")}: ${err.message}${stderr ? `\n${stderr}` : ""}`)) : resolve(stdout);
    });
    children.add(child);
  });
}
/** `execroot --store STORE --json ARGS...` of the benchmark's store, parsed. */
const cliJson = async (...args) => JSON.parse(await run(BIN, ["--store", svc.store, "--json", ...args]));
const sync = () => run("sync", []);

function commitOf() {
  try {
    const id = execFileSync("git", ["-C", repoRoot, "rev-parse", "--short=12", "HEAD"], { encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["-C", repoRoot, "status", "--porcelain", "--untracked-files=no"], { encoding: "utf8" }).trim();
    return dirty ? `${id}+dirty` : id;
  } catch {
    return null;
  }
}

/** Mounts whose mount point is under `dir` (what a run must not leave). */
function mountsUnder(dir) {
  return fs
    .readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4])
    .filter((m) => m && (m === dir || m.startsWith(dir + "/")));
}

let svc = null;
/** The --baseline service: { bin, dir, store, socket, child, client }. */
let base = null;
let cleaning = null;
/**
 * Stop the service, destroy what is left and remove the directory; returns the leaks found.
 * Every caller (the end of the run, a failure, a signal) awaits the same cleanup.
 */
function cleanup() {
  cleaning ??= svc ? stopAndRemove(svc) : Promise.resolve({ mounts: [], dirLeft: false });
  return cleaning;
}
async function stopAndRemove(svc) {
  const dir = svc.dir;
  await Promise.all(
    [...children].map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => (c.once("exit", r), c.kill("SIGKILL"))) : null)),
  );
  if (base) {
    await new Promise((r) => (base.child.exitCode !== null ? r() : (base.child.once("exit", r), base.child.kill("SIGTERM"))));
    for (const m of mountsUnder(base.dir).reverse()) spawnSync("umount", ["-l", m]);
    fs.rmSync(base.dir, { recursive: true, force: true });
  }
  await svc.stop();
  const mounts = mountsUnder(dir);
  // A leak is reported, and still removed so that the machine is left as it was.
  for (const m of mounts.reverse()) spawnSync("umount", ["-l", m]);
  if (mounts.length) fs.rmSync(dir, { recursive: true, force: true });
  return { mounts, dirLeft: fs.existsSync(dir) };
}
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    log(`${sig}: cleaning up`);
    cleanup().finally(() => process.exit(130));
  });
}

/** The --baseline service: another build's `execroot serve` on its own store, answering. */
async function startBaseline(bin, ExecrootClient) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "execroot-baseline-"));
  const b = { bin, dir, store: path.join(dir, "store"), socket: path.join(dir, "execroot.sock") };
  b.child = spawn(bin, ["--store", b.store, "serve", "--socket", b.socket], { stdio: "ignore" });
  b.client = new ExecrootClient({ socketPath: b.socket, timeoutMs: 120_000 });
  for (const t = Date.now(); ; ) {
    if (b.child.exitCode !== null) throw new Error(`baseline ${bin} serve exited (${b.child.exitCode})`);
    try {
      await b.client.health();
      return b;
    } catch (e) {
      if (Date.now() - t > 30_000) throw new Error(`baseline ${bin} serve did not answer: ${e.message}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** Phase 1's fixture and warm-up on one service (`cli`: its CLI, JSON parsed). */
async function smallSetup(client, cli, dir, spec) {
  const tree = path.join(dir, "small");
  const gen = await cli("fixture", "generate", "small", tree);
  await cli("snapshot", "create", tree, "--name", "small");
  // The first root materializes the layer (once per snapshot); then warm the paths.
  const [oneTime] = await timed(async () => {
    const r = await client.realize(spec);
    await client.cleanup(r.id);
  });
  for (let i = 0; i < 10; i++) await client.cleanup((await client.realize(spec)).id);
  return { gen, oneTime };
}

/** `n` create, destroy and health round trips on `client`, recorded in `s`. */
async function smallPairs(client, spec, s, n) {
  for (let i = 0; i < n; i++) {
    const [tc, r] = await timed(() => client.realize(spec));
    if (r.root.backend !== "overlay" || !r.created) throw new Error(`not a new overlay root: ${JSON.stringify(r.root)}`);
    s.create.push(tc);
    s.inProcess.push(r.root.timingsMs.total);
    s.overhead.push(tc - r.root.timingsMs.total);
    const [td, d] = await timed(() => client.cleanup(r.id));
    if (!d.cleaned) throw new Error(`destroy refused: ${d.warnings.join("; ")}`);
    s.destroy.push(td);
    s.health.push((await timed(() => client.health()))[0]);
  }
}

/** Phase 1: sequential create/destroy on the small shape, with the CLI interleaved. */
async function small(client) {
  const spec = { class: "routine", from: ["small"], backend: "overlay" };
  const { gen, oneTime } = await smallSetup(client, cliJson, svc.dir, spec);
  const b = base && { create: [], inProcess: [], overhead: [], destroy: [], health: [] };
  if (base) {
    const baseCli = async (...args) => JSON.parse(await run(base.bin, ["--store", base.store, "--json", ...args]));
    await smallSetup(base.client, baseCli, base.dir, spec);
  }
  await sync();
  const s = { create: [], inProcess: [], overhead: [], destroy: [], health: [], cliCreate: [], cliInProcess: [], cliDestroy: [] };
  for (let i = 0; i < P.iterations; i++) {
    // With a baseline: a block of 50 of its pairs before every other block of 50 of this
    // build's, and after the last (so which goes first alternates).
    if (base && i % 100 === 50) await smallPairs(base.client, spec, b, 100);
    const [tc, r] = await timed(() => client.realize(spec));
    if (r.root.backend !== "overlay" || !r.created) throw new Error(`not a new overlay root: ${JSON.stringify(r.root)}`);
    const total = r.root.timingsMs.total;
    s.create.push(tc);
    s.inProcess.push(total);
    s.overhead.push(tc - total);
    const [td, d] = await timed(() => client.cleanup(r.id));
    if (!d.cleaned) throw new Error(`destroy refused: ${d.warnings.join("; ")}`);
    s.destroy.push(td);
    s.health.push((await timed(() => client.health()))[0]);
    if (i % P.cliEvery === 0) {
      const [cc, out] = await timed(() => cliJson("root", "create", "--class", "routine", "--from", "small", "--backend", "overlay"));
      s.cliCreate.push(cc);
      s.cliInProcess.push(out.timingsMs.total);
      s.cliDestroy.push((await timed(() => cliJson("root", "destroy", out.id)))[0]);
    }
  }
  if (base && P.iterations % 100 !== 0) await smallPairs(base.client, spec, b, 50);
  const create = stats(s.create);
  const inProcess = stats(s.inProcess);
  const baseline = base && {
    bin: base.bin,
    create: stats(b.create),
    inProcessCreate: stats(b.inProcess),
    overheadPerCall: stats(b.overhead),
    destroy: stats(b.destroy),
    health: stats(b.health),
  };
  return {
    baseline,
    entries: gen.entries,
    oneTimeMs: r3(oneTime),
    create,
    inProcessCreate: inProcess,
    overheadPerCall: stats(s.overhead),
    overheadOfMedians: r3(create.p50 - inProcess.p50),
    destroy: stats(s.destroy),
    health: stats(s.health),
    cli: { create: stats(s.cliCreate), inProcessCreate: stats(s.cliInProcess), destroy: stats(s.cliDestroy) },
  };
}

/**
 * Phase 2: N clients creating and destroying in a loop. They share node:http's default agent,
 * which keeps alive one connection per request in flight: N connections, as N callers have.
 */
async function concurrent(ExecrootClient) {
  const spec = { class: "routine", from: ["small"], backend: "overlay" };
  const create = [];
  const destroy = [];
  const errors = [];
  const one = async () => {
    const c = new ExecrootClient({ socketPath: svc.socket, timeoutMs: 120_000 });
    for (let i = 0; i < P.pairsPerClient; i++) {
      try {
        const [tc, r] = await timed(() => c.realize(spec));
        create.push(tc);
        const [td, d] = await timed(() => c.cleanup(r.id));
        if (!d.cleaned) throw new Error(`destroy refused: ${d.warnings.join("; ")}`);
        destroy.push(td);
      } catch (e) {
        errors.push(e.message);
      }
    }
  };
  await sync();
  const t = performance.now();
  await Promise.all(Array.from({ length: P.clients }, one));
  const seconds = (performance.now() - t) / 1000;
  return {
    clients: P.clients,
    pairs: destroy.length,
    seconds: r3(seconds),
    pairsPerSecond: Math.round((destroy.length / seconds) * 10) / 10,
    create: stats(create),
    destroy: stats(destroy),
    errors: errors.length,
    firstErrors: errors.slice(0, 5),
  };
}

/** Phase 3: plugin lifecycle through the SDK harness vs git worktree add/remove, interleaved. */
async function lifecycle(plugin) {
  const tree = path.join(svc.dir, "project");
  log(`generating node-modules x${P.scale}`);
  const gen = await cliJson("fixture", "generate", "node-modules", tree, "--scale", String(P.scale));
  log(`ingesting ${gen.entries} entries`);
  await cliJson("snapshot", "create", tree, "--name", "project");
  // The same tree as a repository (after the ingest, so the snapshot has no .git).
  log("committing the same tree to git");
  const git = (...a) => run("git", ["-C", tree, ...a]);
  await git("init", "-q", "-b", "main");
  await git("config", "gc.auto", "0");
  await git("add", "-A");
  await git("-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "-qm", "project");
  const gitFiles = (await git("ls-files")).split("\n").filter(Boolean).length;

  const config = { from: "project", backend: "overlay", class: "routine" };
  const b = plugin.base(config);
  let runNo = 0;
  const pluginOnce = async () => {
    const h = plugin.harnessFor(svc.socket);
    const runId = `run-${runNo++}`;
    const [acquire, lease] = await timed(() => h.acquireLease({ ...b, runId }));
    const [realize, realized] = await timed(() => h.realizeWorkspace({ ...b, lease, workspace: { mode: "isolated_workspace" } }));
    const [execute, ran] = await timed(() => h.execute({ ...b, lease, command: "true", args: [], cwd: realized.cwd, timeoutMs: 60_000 }));
    if (ran.exitCode !== 0) throw new Error(`true exited ${ran.exitCode}: ${ran.stderr}`);
    const [release, receipt] = await timed(() => h.releaseLease({ ...b, providerLeaseId: lease.providerLeaseId, leaseMetadata: lease.metadata }));
    if (receipt.state !== "destroyed") throw new Error(`release: ${JSON.stringify(receipt)}`);
    return { acquire, realize, execute, release, total: acquire + realize + execute + release };
  };
  const gitOnce = async (i) => {
    const wt = path.join(svc.dir, `wt-${i}`);
    const branch = `bench-${i}`;
    const [add] = await timed(() => git("worktree", "add", "-q", "-b", branch, wt, "HEAD"));
    const [execute] = await timed(() => run("true", [], { cwd: wt }));
    const [remove] = await timed(() => git("worktree", "remove", "--force", wt));
    await git("branch", "-q", "-D", branch);
    return { add, execute, remove, total: add + execute + remove };
  };
  // The snapshot's layer is materialized by its first root: once per snapshot, not per run.
  log("first plugin lifecycle (materializes the layer)");
  await sync();
  const first = await pluginOnce();
  const runs = { plugin: [], git: [] };
  for (let i = 0; i < P.rounds; i++) {
    // Alternate which goes first; sync before each so writeback of one does not land in the other.
    const order = i % 2 === 0 ? ["plugin", "git"] : ["git", "plugin"];
    for (const which of order) {
      await sync();
      log(`round ${i + 1}/${P.rounds}: ${which}`);
      runs[which].push(which === "plugin" ? await pluginOnce() : await gitOnce(i));
    }
  }
  const med = (rows) => Object.fromEntries(Object.keys(rows[0]).map((k) => [k, r3(pct(rows.map((r) => r[k]), 50))]));
  const plug = med(runs.plugin);
  const g = med(runs.git);
  return {
    entries: gen.entries,
    gitFiles,
    rounds: P.rounds,
    firstPluginLifecycleMs: r3(first.total),
    plugin: plug,
    git: g,
    // Of the medians, and the median of each round's own ratio (the two ran side by side).
    ratio: Math.round((g.total / plug.total) * 10) / 10,
    pairedRatio: Math.round(pct(runs.git.map((r, i) => r.total / runs.plugin[i].total), 50) * 10) / 10,
    runs,
  };
}

/** True for this process and the processes it started (their command lines name its directory). */
function ours(pid) {
  if (Number(pid) === process.pid) return true;
  try {
    return svc !== null && fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(svc.dir);
  } catch {
    return false;
  }
}

/** The machine, and what else is using the CPU now (top's second frame: the last 0.5 s). */
async function machine() {
  const load = os.loadavg().map((x) => Math.round(x * 100) / 100);
  const top = await run("top", ["-b", "-n", "2", "-d", "0.5", "-w", "200"]).catch(() => "");
  const frame = top.split(/^top - /m).pop().split("\n");
  const head = frame.findIndex((l) => /\bPID\b.*%CPU/.test(l));
  const busy = head < 0 ? [] : frame
    .slice(head + 1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 12 && Number(f[8]) >= 5)
    .map((f) => `${f[11]} ${f[8]}%${ours(f[0]) ? " (this benchmark)" : ""}`);
  return { cores: os.cpus().length, kernel: os.release(), loadavg: load, busyProcesses: busy };
}

function goals(res) {
  return [
    { goal: "create through the service p50 ≤ 0.5 ms (small)", value: res.small.create.p50, met: res.small.create.p50 <= 0.5 },
    { goal: "create through the service p99 ≤ 5 ms (small)", value: res.small.create.p99, met: res.small.create.p99 <= 5 },
  ];
}

function markdown(res) {
  const s = res.small;
  const c = res.concurrent;
  const l = res.lifecycle;
  const ms = (x) => (x === null ? "–" : `${x < 10 ? x.toFixed(3) : x.toFixed(1)} ms`);
  const lines = [
    `Service benchmark, ${res.date}, commit ${res.commit}${res.quick ? " (--quick: not a measurement)" : ""}`,
    "",
    `| small shape (${s.entries} entries), sequential, ${s.create.n} creates | p50 | p99 |`,
    "|---|---|---|",
    `| create through the service (wall, client side) | ${ms(s.create.p50)} | ${ms(s.create.p99)} |`,
    `| in-process create (the answer's \`timingsMs.total\`) | ${ms(s.inProcessCreate.p50)} | ${ms(s.inProcessCreate.p99)} |`,
    `| service overhead per call (wall − in-process) | ${ms(s.overheadPerCall.p50)} | ${ms(s.overheadPerCall.p99)} |`,
    `| destroy through the service (wall) | ${ms(s.destroy.p50)} | ${ms(s.destroy.p99)} |`,
    `| \`GET /v1/health\` round trip | ${ms(s.health.p50)} | ${ms(s.health.p99)} |`,
    `| create through the CLI (wall, spawn included; ${s.cli.create.n} calls) | ${ms(s.cli.create.p50)} | ${ms(s.cli.create.p99)} |`,
    `| in-process create in the CLI (\`timingsMs.total\`) | ${ms(s.cli.inProcessCreate.p50)} | ${ms(s.cli.inProcessCreate.p99)} |`,
    `| destroy through the CLI (wall) | ${ms(s.cli.destroy.p50)} | ${ms(s.cli.destroy.p99)} |`,
    "",
    ...(s.baseline ? sideBySide(s, ms) : []),
    `| ${c.clients} concurrent clients, ${c.pairs} create+destroy pairs | value |`,
    "|---|---|",
    `| sustained pairs per second | ${c.pairsPerSecond} (${c.seconds} s) |`,
    `| create p50 / p99 under load | ${ms(c.create.p50)} / ${ms(c.create.p99)} |`,
    `| destroy p50 / p99 under load | ${ms(c.destroy.p50)} / ${ms(c.destroy.p99)} |`,
    `| failed requests | ${c.errors} |`,
    "",
    `| lifecycle, ${l.entries}-entry project (${l.gitFiles} files in git), medians of ${l.rounds} interleaved rounds | execroot plugin (SDK harness) | git worktree |`,
    "|---|---|---|",
    `| acquire / \`git worktree add -b\` | ${ms(l.plugin.acquire)} | ${ms(l.git.add)} |`,
    `| realize | ${ms(l.plugin.realize)} | – |`,
    `| execute \`true\` | ${ms(l.plugin.execute)} | ${ms(l.git.execute)} |`,
    `| release / \`git worktree remove --force\` | ${ms(l.plugin.release)} | ${ms(l.git.remove)} |`,
    `| whole lifecycle | ${ms(l.plugin.total)} | ${ms(l.git.total)} |`,
    `| git worktree / plugin: of the medians; median of each round's ratio | | ${l.ratio}x; ${l.pairedRatio}x |`,
    "",
    "| goal | measured | met |",
    "|---|---|---|",
    ...res.goals.map((g) => `| ${g.goal} | ${ms(g.value)} | ${g.met ? "yes" : "no"} |`),
    "",
    `Machine: ${res.machine.before.cores} cores, kernel ${res.machine.before.kernel}; load ${res.machine.before.loadavg.join(" ")} before, ${res.machine.after.loadavg.join(" ")} after.`,
    ...Object.entries({ ...res.machine.phases, end: res.machine.after }).map(
      ([k, m]) => `Busy (≥ 5% CPU) as ${k === "end" ? "it ended" : `the ${k} phase started`}: ${m.busyProcesses.join(", ") || "nothing else"}.`,
    ),
  ];
  return lines.join("\n");
}

/** Phase 1 against the --baseline build: p50 / p99 of each, and the ratio of the p50s. */
function sideBySide(s, ms) {
  const b = s.baseline;
  const row = (what, x, y) => `| ${what} | ${ms(y.p50)} / ${ms(y.p99)} | ${ms(x.p50)} / ${ms(x.p99)} | ${(y.p50 / x.p50).toFixed(2)}x |`;
  return [
    `| side by side, alternating blocks of 50 pairs (${b.create.n} baseline, ${s.create.n} this build) | baseline p50 / p99 | this build p50 / p99 | baseline / this build, p50 |`,
    "|---|---|---|---|",
    row("create through the service (wall)", s.create, b.create),
    row("in-process create (`timingsMs.total`)", s.inProcessCreate, b.inProcessCreate),
    row("the service's overhead per call", s.overheadPerCall, b.overheadPerCall),
    row("destroy through the service (wall)", s.destroy, b.destroy),
    row("`GET /v1/health` round trip", s.health, b.health),
    "",
  ];
}

async function main() {
  if (process.getuid() !== 0) throw new Error("the service benchmark needs root (overlay mounts)");
  const pluginDir = path.join(repoRoot, "clients", "paperclip-plugin");
  if (!fs.existsSync(path.join(pluginDir, "node_modules", "@paperclipai", "plugin-sdk"))) {
    throw new Error(`the plugin's dependencies are not installed: run npm ci in ${pluginDir}`);
  }
  // Imported here so that a missing SDK is the message above, not a resolution error.
  const plugin = await import("../clients/paperclip-plugin/test/harness.js");
  const { ExecrootClient } = await import("../clients/node/index.js");

  const res = { date: new Date().toISOString(), commit: commitOf(), command: process.argv.slice(1).join(" "), bin: BIN, quick: P.quick, params: P };
  res.machine = { before: await machine() };
  log(`binary ${BIN}, starting the service`);
  svc = await startServe();
  if (opt.baseline) {
    log(`baseline ${opt.baseline}, starting its service`);
    const BaseClient = opt["baseline-client"] ? (await import(path.resolve(opt["baseline-client"]))).ExecrootClient : ExecrootClient;
    base = await startBaseline(path.resolve(opt.baseline), BaseClient);
  }
  const health = await svc.client.health();
  if (!health.overlay.available) throw new Error(`overlay roots are unavailable: ${health.overlay.reason}`);
  res.version = health.version;

  // What else runs moves during a run on a shared machine: note it as each phase starts.
  res.machine.phases = {};
  log(`small: ${P.iterations} create/destroy through the service`);
  res.machine.phases.small = await machine();
  res.small = await small(svc.client);
  log(`concurrent: ${P.clients} clients x ${P.pairsPerClient} pairs`);
  res.machine.phases.concurrent = await machine();
  res.concurrent = await concurrent(ExecrootClient);
  res.machine.phases.lifecycle = await machine();
  res.lifecycle = await lifecycle(plugin);
  // Every root made was destroyed: none may be left in the store, nor any mount (before the
  // cleanup, which would remove them) but the roots the running service mounted ahead in its
  // lease of tmp/ (docs/format.md, "Root skeletons"), which it unmounts when it stops: the
  // cleanup's own check after the stop counts every mount left.
  res.rootsLeft = (await svc.client.list()).length;
  const ahead = path.join(svc.store, "tmp") + "/";
  res.mountsLeft = mountsUnder(svc.dir).filter((m) => !m.startsWith(ahead));
  res.machine.after = await machine();
  res.goals = goals(res);
  return res;
}

let res;
let failure = null;
try {
  res = await main();
} catch (e) {
  failure = e;
}
const leaks = await cleanup().catch((e) => ({ error: e.message }));
if (failure) {
  console.error(`service benchmark failed: ${failure.stack || failure}`);
  if (leaks.mounts?.length || leaks.dirLeft) console.error(`and it left: ${JSON.stringify(leaks)}`);
  process.exit(1);
}
res.leaks = leaks;
fs.mkdirSync(path.dirname(outFile), { recursive: true });
fs.writeFileSync(outFile, JSON.stringify(res, null, 2) + "\n");
console.log(markdown(res));
log(`wrote ${outFile}`);
const bad = [];
if (res.concurrent.errors) bad.push(`${res.concurrent.errors} failed requests under load: ${res.concurrent.firstErrors.join("; ")}`);
if (res.rootsLeft) bad.push(`${res.rootsLeft} roots left in the store`);
if (res.mountsLeft.length) bad.push(`mounts left after every root was destroyed: ${res.mountsLeft.join(", ")}`);
if (leaks.error || leaks.mounts.length || leaks.dirLeft) bad.push(`left behind: ${JSON.stringify(leaks)}`);
if (bad.length) {
  console.error(`service benchmark: ${bad.join("; ")}`);
  process.exit(1);
}
