// The Node client against a real `execroot serve` (real store, real mounts, real git).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { ExecrootError } from "../index.js";
import { startServe, cli, isRoot, makeTree } from "./serve.js";

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

test("health says whether overlay roots are available", { skip }, async () => {
  const h = await svc.client.health();
  assert.equal(h.ok, true);
  assert.equal(typeof h.version, "string");
  assert.equal(typeof h.overlay.available, "boolean");
});

test("realize, reuse by key, exec, diff, status, cleanup", { skip }, async () => {
  const c = svc.client;
  const ws = await c.realize({ key: "PAP-1", from: "base" });
  assert.equal(ws.created, true);
  assert.equal(ws.strategy, "project_primary");
  assert.equal(ws.providerType, "local_fs");
  assert.equal(ws.branchName, null);
  assert.deepEqual(ws.warnings, []);
  assert.equal(fs.readFileSync(path.join(ws.cwd, "README.md"), "utf8"), "hello\n");

  const again = await c.realize({ key: "PAP-1", from: "base" });
  assert.equal(again.created, false, "the same key returns the same root");
  assert.equal(again.id, ws.id);

  const r = await c.exec(ws.id, { command: "sh", args: ["-c", "cat README.md; echo new > added.txt; echo err >&2; exit 3"] });
  assert.equal(r.exitCode, 3);
  assert.equal(r.timedOut, false);
  assert.equal(r.stdout, "hello\n");
  assert.equal(r.stderr, "err\n");
  assert.equal(fs.readFileSync(path.join(ws.cwd, "added.txt"), "utf8"), "new\n");

  const t = await c.exec(ws.id, { command: "sleep", args: ["30"], timeoutMs: 200 });
  assert.equal(t.timedOut, true);

  const d = await c.diff(ws.id);
  assert.ok(JSON.stringify(d).includes("added.txt"), `diff names the new file: ${JSON.stringify(d)}`);

  const s = await c.status("PAP-1");
  assert.equal(s.id, ws.id);
  assert.equal(s.dirtyTrackedFiles, null, "not a worktree");

  const listed = await c.list();
  assert.ok(listed.some((x) => x.id === ws.id));

  const done = await c.cleanup("PAP-1");
  assert.equal(done.cleaned, true);
  assert.equal(done.cleanedPath, ws.cwd);
  assert.equal(fs.existsSync(ws.cwd), false);

  await assert.rejects(c.get(ws.id), (e) => e instanceof ExecrootError && e.status === 404);
});

test("a worktree root keeps uncommitted work unless forced", { skip }, async () => {
  const repo = path.join(svc.dir, "repo");
  fs.mkdirSync(repo);
  const git = (...a) => execFileSync("git", ["-C", repo, ...a], { encoding: "utf8" });
  git("init", "-q", "-b", "main");
  fs.writeFileSync(path.join(repo, "a.txt"), "a\n");
  git("add", ".");
  git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "base");

  const c = svc.client;
  const ws = await c.realize({ key: "PAP-2", repo, baseRef: "main", branch: "pap-2" });
  assert.equal(ws.strategy, "git_worktree");
  assert.equal(ws.providerType, "git_worktree");
  assert.equal(ws.branchName, "pap-2");
  assert.equal(ws.worktreePath, ws.cwd);
  fs.writeFileSync(path.join(ws.cwd, "notes.txt"), "unsaved\n");

  const s = await c.status(ws.id);
  assert.equal(s.untrackedFiles, 1);
  assert.equal(s.dirtyTrackedFiles, 0);
  assert.ok(s.paths.includes("notes.txt"));

  const refused = await c.cleanup(ws.id);
  assert.equal(refused.cleaned, false);
  assert.ok(refused.warnings.join("\n").includes("notes.txt"), `the refusal names the file: ${JSON.stringify(refused)}`);
  assert.equal(fs.readFileSync(path.join(ws.cwd, "notes.txt"), "utf8"), "unsaved\n", "nothing was deleted");

  const forced = await c.cleanup(ws.id, { force: true });
  assert.equal(forced.cleaned, true);
  assert.equal(fs.existsSync(ws.cwd), false);
});

test("bad input is a 400 naming the field; unknown roots are 404", { skip }, async () => {
  const c = svc.client;
  await assert.rejects(c.realize({ class: "nonsense" }), (e) => e instanceof ExecrootError && e.status === 400);
  await assert.rejects(c.realize({ from: "no-such-ref" }), (e) => e instanceof ExecrootError && e.status === 404);
  await assert.rejects(c.exec("0000000000000000", { command: "true" }), (e) => e instanceof ExecrootError && e.status === 404);
});
