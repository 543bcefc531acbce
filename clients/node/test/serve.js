// Test support: a real `execroot serve` on a fresh store and socket, stopped with SIGTERM.
// The binary is $EXECROOT_BIN, defaulting to the repository's release build.

import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ExecrootClient } from "../index.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/** The execroot binary the tests run. */
export const BIN = process.env.EXECROOT_BIN || path.join(process.env.CARGO_TARGET_DIR || path.join(repoRoot, "target"), "release", "execroot");

/** Run the CLI synchronously on `store`; returns parsed JSON. */
export function cli(store, ...args) {
  return JSON.parse(execFileSync(BIN, ["--store", store, "--json", ...args], { encoding: "utf8" }));
}

/** True when this process can mount (root): the overlay tests need it. */
export const isRoot = process.getuid && process.getuid() === 0;

/**
 * Start `execroot serve` on a new store under a temporary directory; resolves once it
 * answers /v1/health. `stop()` sends SIGTERM, waits for the exit and removes the directory.
 */
export async function startServe(options = {}) {
  if (!fs.existsSync(BIN)) throw new Error(`execroot binary ${BIN} not found: build it (cargo build --release) or set EXECROOT_BIN`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "execroot-node-"));
  fs.chmodSync(dir, 0o755);
  const store = path.join(dir, "store");
  const socket = path.join(dir, "execroot.sock");
  const args = ["--store", store, "serve", "--socket", socket, ...(options.args || [])];
  const child = spawn(BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout.on("data", (d) => (log += d));
  child.stderr.on("data", (d) => (log += d));
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  const client = new ExecrootClient({ socketPath: socket, timeoutMs: 60_000 });
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`execroot serve exited (${child.exitCode}): ${log}`);
    try {
      await client.health();
      break;
    } catch (e) {
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        throw new Error(`execroot serve did not answer within 30 s: ${e.message}\n${log}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    dir,
    store,
    socket,
    client,
    log: () => log,
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      const status = await exited;
      // Roots are left as they are by a stopped service: destroy what a test left behind.
      try {
        for (const r of cli(store, "root", "list").roots) {
          execFileSync(BIN, ["--store", store, "root", "destroy", "--force", r.id], { stdio: "ignore" });
        }
      } catch {}
      fs.rmSync(dir, { recursive: true, force: true });
      return status;
    },
  };
}

/** Make a small directory tree to ingest. */
export function makeTree(dir) {
  fs.mkdirSync(path.join(dir, "src"), { recursive: true });
  fs.writeFileSync(path.join(dir, "README.md"), "hello\n");
  fs.writeFileSync(path.join(dir, "src", "main.js"), "console.log('hi')\n");
  fs.writeFileSync(path.join(dir, "package.json"), '{ "name": "demo" }\n');
  return dir;
}
