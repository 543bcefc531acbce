// The plugin through the caller's own SDK harness (createEnvironmentTestHarness and its
// lifecycle assertions), against a real `execroot serve`.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import {
  createEnvironmentTestHarness,
  assertEnvironmentEventOrder,
  assertLeaseLifecycle,
  assertWorkspaceRealizationLifecycle,
  assertExecutionLifecycle,
  assertEnvironmentError,
} from "@paperclipai/plugin-sdk/testing";
import { pluginManifestV1Schema } from "@paperclipai/shared";
import { ExecrootClient } from "@execroot/client";
import manifest, { DRIVER_KEY } from "../src/manifest.js";
import plugin, { createDriver } from "../src/plugin.js";
import { startServe, cli, isRoot, makeTree } from "../../node/test/serve.js";
import { harnessFor, base } from "./harness.js";

const skip = isRoot ? false : "needs root (execroot serve mounts overlays); CI runs these as root";
let svc;

before(async () => {
  if (skip) return;
  svc = await startServe();
  makeTree(path.join(svc.dir, "project"));
  cli(svc.store, "snapshot", "create", path.join(svc.dir, "project"), "--name", "base");
});

after(async () => {
  if (svc) await svc.stop();
});

const harness = () => harnessFor(svc.socket);

test("the manifest is one the plugin host accepts", () => {
  const parsed = pluginManifestV1Schema.safeParse(manifest);
  assert.ok(parsed.success, JSON.stringify(parsed.error?.issues));
  assert.equal(typeof plugin.definition.onEnvironmentAcquireLease, "function");
  const pkg = JSON.parse(fs.readFileSync(new URL("../package.json", import.meta.url)));
  assert.equal(pkg.type, "module");
  assert.ok(fs.existsSync(new URL("../" + pkg.paperclipPlugin.worker, import.meta.url)));
});

test("a whole run: validate, probe, acquire, realize, execute, release", { skip }, async () => {
  const h = harness();
  const b = base({ from: "base" });
  const v = await h.validateConfig({ driverKey: DRIVER_KEY, config: b.config });
  assert.deepEqual(v, { ok: true, errors: [], warnings: [], normalizedConfig: { from: ["base"] } });
  const p = await h.probe(b);
  assert.equal(p.ok, true, JSON.stringify(p));

  const lease = await h.acquireLease({ ...b, runId: "run-1" });
  const cwd = lease.metadata.remoteCwd;
  assert.equal(fs.readFileSync(path.join(cwd, "README.md"), "utf8"), "hello\n");
  const realized = await h.realizeWorkspace({ ...b, lease, workspace: { mode: "isolated_workspace" } });
  assert.equal(realized.cwd, cwd);

  const ran = await h.execute({ ...b, lease, command: "sh", args: ["-c", "pwd; cat README.md"], cwd, timeoutMs: 10_000 });
  assert.equal(ran.exitCode, 0, ran.stderr);
  assert.equal(ran.timedOut, false);
  assert.equal(ran.stdout, `${cwd}\nhello\n`);
  const failed = await h.execute({ ...b, lease, command: "sh", args: ["-c", "exit 7"], cwd });
  assert.equal(failed.exitCode, 7);
  const slow = await h.execute({ ...b, lease, command: "sleep", args: ["30"], cwd, timeoutMs: 200 });
  assert.equal(slow.timedOut, true);

  const receipt = await h.releaseLease({ ...b, providerLeaseId: lease.providerLeaseId, leaseMetadata: lease.metadata });
  assert.deepEqual(receipt, { providerLeaseId: lease.providerLeaseId, state: "destroyed" });
  assert.equal(fs.existsSync(cwd), false, "released without reuse: the root is gone");

  assertEnvironmentEventOrder(h.environmentEvents, ["validateConfig", "probe", "acquireLease", "realizeWorkspace", "execute", "execute", "execute", "releaseLease"]);
  assertLeaseLifecycle(h.environmentEvents, "env-1");
  assertWorkspaceRealizationLifecycle(h.environmentEvents, "env-1");
  assertExecutionLifecycle(h.environmentEvents, "env-1");
});

test("reuseLease keeps the root on release and resume finds it", { skip }, async () => {
  const h = harness();
  const b = base({ from: "base", reuseLease: true });
  const lease = await h.acquireLease({ ...b, runId: "run-2", executionWorkspaceId: "ews-1" });
  fs.writeFileSync(path.join(lease.metadata.remoteCwd, "state.txt"), "kept\n");
  const stopped = await h.releaseLease({ ...b, providerLeaseId: lease.providerLeaseId });
  assert.equal(stopped.state, "stopped");

  const again = await h.acquireLease({ ...b, runId: "run-3", executionWorkspaceId: "ews-1" });
  assert.equal(again.providerLeaseId, lease.providerLeaseId, "the same execution workspace gets the same root");
  assert.equal(again.metadata.created, false);
  const resumed = await h.resumeLease({ ...b, providerLeaseId: lease.providerLeaseId, leaseMetadata: lease.metadata });
  assert.equal(resumed.metadata.remoteCwd, lease.metadata.remoteCwd);
  assert.equal(fs.readFileSync(path.join(resumed.metadata.remoteCwd, "state.txt"), "utf8"), "kept\n");

  const gone = await h.destroyLease({ ...b, providerLeaseId: lease.providerLeaseId });
  assert.equal(gone.state, "destroyed");
});

test("a refusal becomes the SDK's error and nothing is forced", { skip }, async () => {
  const repo = path.join(svc.dir, "repo");
  fs.mkdirSync(repo, { recursive: true });
  const { execFileSync } = await import("node:child_process");
  const git = (...a) => execFileSync("git", ["-C", repo, ...a], { encoding: "utf8" });
  git("init", "-q", "-b", "main");
  fs.writeFileSync(path.join(repo, "a.txt"), "a\n");
  git("add", ".");
  git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "base");

  const h = harness();
  const b = base({ repo, baseRef: "main" });
  const lease = await h.acquireLease({ ...b, runId: "run-4" });
  const cwd = lease.metadata.remoteCwd;
  fs.writeFileSync(path.join(cwd, "work.txt"), "uncommitted\n");
  await assert.rejects(h.destroyLease({ ...b, providerLeaseId: lease.providerLeaseId }), /work\.txt/);
  assertEnvironmentError(h.environmentEvents, "destroyLease", "env-1");
  assert.equal(fs.readFileSync(path.join(cwd, "work.txt"), "utf8"), "uncommitted\n");
  // The operator decides: commit, or destroy with force through execroot itself.
  await new ExecrootClient({ socketPath: svc.socket }).cleanup(lease.providerLeaseId, { force: true });
});

test("bad config is refused before anything is created", async () => {
  const h = createEnvironmentTestHarness({ manifest, environmentDriver: { driverKey: DRIVER_KEY, onValidateConfig: createDriver().onEnvironmentValidateConfig } });
  const v = await h.validateConfig({ driverKey: DRIVER_KEY, config: { class: "bogus", repo: "/x", extra: 1 } });
  assert.equal(v.ok, false);
  assert.ok(v.errors.some((e) => e.includes('"class"')));
  assert.ok(v.errors.some((e) => e.includes('"extra"')));
  assert.ok(v.errors.some((e) => e.includes('"baseRef"')));
});

test("the provision command builds once per inputs, and execute answers it from the cache", { skip }, async () => {
  const h = harness();
  const runs = path.join(svc.dir, "provision-runs");
  const provisionCommand = `echo built >> ${runs}; mkdir -p node_modules/dep && cp package.json node_modules/dep/lock-copy.json; echo installed`;
  const b = base({ from: "base", provisionCommand, provisionInputs: ["package.json"] });
  const v = await h.validateConfig({ driverKey: DRIVER_KEY, config: b.config });
  assert.equal(v.ok, true, JSON.stringify(v));

  const first = await h.acquireLease({ ...b, runId: "run-p1" });
  const cwd = first.metadata.remoteCwd;
  assert.equal(first.metadata.provision.hit, false);
  assert.equal(fs.readFileSync(path.join(cwd, "node_modules/dep/lock-copy.json"), "utf8"), '{ "name": "demo" }\n');
  // The host's provision step: `bash -lc CMD` through execute, answered from the build.
  const answered = await h.execute({ ...b, lease: first, command: "bash", args: ["-lc", provisionCommand], cwd, timeoutMs: 300_000 });
  assert.equal(answered.exitCode, 0);
  assert.equal(answered.metadata.answeredFromProvisionCache, true);
  assert.match(answered.stdout, /installed/);

  const second = await h.acquireLease({ ...b, runId: "run-p2" });
  assert.equal(second.metadata.provision.hit, true);
  assert.equal(second.metadata.provision.key, first.metadata.provision.key);
  assert.ok(fs.existsSync(path.join(second.metadata.remoteCwd, "node_modules/dep/lock-copy.json")));
  assert.equal(fs.readFileSync(runs, "utf8"), "built\n", "the command ran once for both roots");
  // Any other command runs for real.
  const other = await h.execute({ ...b, lease: second, command: "bash", args: ["-lc", "echo other"], cwd: second.metadata.remoteCwd });
  assert.equal(other.stdout, "other\n");
  assert.equal(other.metadata.answeredFromProvisionCache, undefined);

  await h.destroyLease({ ...b, providerLeaseId: first.providerLeaseId });
  await h.destroyLease({ ...b, providerLeaseId: second.providerLeaseId });
});
