// The execroot sandbox provider: each lease is one execroot root, created through
// `execroot serve` (clients/node). The root's directory is the lease's `remoteCwd`, which the
// caller's adapters use as the agent's working directory; realize returns it again as `cwd`;
// execute runs in the root as its owner through the service. Nothing here deletes anything
// itself: release and destroy ask execroot, and a refusal (uncommitted work, processes still
// inside) becomes the SDK's error, never a silent force.

import { createHash } from "node:crypto";
import fs from "node:fs";
import { definePlugin } from "@paperclipai/plugin-sdk";
import { ExecrootClient } from "@execroot/client";
import { DRIVER_KEY, configSchema } from "./manifest.js";

const CLASSES = configSchema.properties.class.enum;
const BACKENDS = configSchema.properties.backend.enum;

/** Check and normalise a driver config; returns `{ ok, errors, warnings, normalizedConfig }`. */
export function validateConfig(config) {
  const errors = [];
  const warnings = [];
  const c = config || {};
  const out = {};
  for (const k of Object.keys(c)) {
    if (!(k in configSchema.properties)) errors.push(`unknown field "${k}"`);
  }
  const str = (k) => {
    if (c[k] === undefined || c[k] === null || c[k] === "") return;
    if (typeof c[k] !== "string") errors.push(`"${k}" must be a string`);
    else out[k] = c[k];
  };
  str("socketPath");
  str("repo");
  str("baseRef");
  if (c.from !== undefined) {
    const list = Array.isArray(c.from) ? c.from : [c.from];
    if (list.length === 0 || list.some((f) => typeof f !== "string" || f === "")) errors.push(`"from" must be a snapshot ref or id, or a list of them`);
    else out.from = list;
  }
  if (c.class !== undefined) {
    if (!CLASSES.includes(c.class)) errors.push(`"class" must be one of ${CLASSES.join(", ")}`);
    else out.class = c.class;
  }
  if (c.backend !== undefined) {
    if (!BACKENDS.includes(c.backend)) errors.push(`"backend" must be one of ${BACKENDS.join(", ")}`);
    else out.backend = c.backend;
  }
  if (c.owner !== undefined) {
    if (typeof c.owner !== "string" && !Number.isInteger(c.owner)) errors.push(`"owner" must be a user name or uid`);
    else out.owner = c.owner;
  }
  if (c.mounts !== undefined) {
    if (!Array.isArray(c.mounts) || c.mounts.some((m) => !m || typeof m.path !== "string" || typeof m.from !== "string")) {
      errors.push(`"mounts" must be a list of { path, from }`);
    } else out.mounts = c.mounts.map((m) => ({ path: m.path, from: m.from }));
  }
  if (c.reuseLease !== undefined) {
    if (typeof c.reuseLease !== "boolean") errors.push(`"reuseLease" must be a boolean`);
    else out.reuseLease = c.reuseLease;
  }
  if (c.timeoutMs !== undefined) {
    if (!Number.isInteger(c.timeoutMs) || c.timeoutMs < 1) errors.push(`"timeoutMs" must be a positive integer`);
    else out.timeoutMs = c.timeoutMs;
  }
  str("provisionCommand");
  if (c.provisionInputs !== undefined) {
    if (!Array.isArray(c.provisionInputs) || c.provisionInputs.length === 0 || c.provisionInputs.some((p) => typeof p !== "string" || p === "")) {
      errors.push(`"provisionInputs" must be a non-empty list of paths`);
    } else out.provisionInputs = c.provisionInputs;
  }
  if (out.provisionCommand && !out.provisionInputs) errors.push(`"provisionCommand" needs "provisionInputs"`);
  if (out.provisionInputs && !out.provisionCommand) errors.push(`"provisionInputs" needs "provisionCommand"`);
  if (out.repo && !out.baseRef) errors.push(`"repo" needs "baseRef"`);
  if (!out.repo && !out.from) warnings.push(`neither "from" nor "repo" is set: every root starts empty`);
  if (out.repo && out.from) errors.push(`"repo" and "from" exclude each other`);
  return { ok: errors.length === 0, errors, warnings, normalizedConfig: out };
}

/** The execroot key of a lease: one root per run, or per execution workspace when reused. */
export function leaseKey(params, config) {
  const scope = config.reuseLease && params.executionWorkspaceId ? `ws/${params.executionWorkspaceId}` : `run/${params.runId}`;
  const key = `paperclip/${params.companyId}/${params.environmentId}/${scope}`;
  // execroot keys are at most 200 characters.
  return key.length <= 200 ? key : `paperclip/${createHash("sha256").update(key).digest("hex")}`;
}

function config(params) {
  const v = validateConfig(params.config);
  if (!v.ok) throw new Error(`execroot driver config: ${v.errors.join("; ")}`);
  return v.normalizedConfig;
}

function leaseOf(realized) {
  return {
    providerLeaseId: realized.id,
    metadata: {
      remoteCwd: realized.cwd,
      rootId: realized.id,
      key: realized.root.key,
      backend: realized.root.backend,
      created: realized.created,
      provision: realized.root.provision ?? null,
      branchName: realized.branchName,
      worktreePath: realized.worktreePath,
      warnings: realized.warnings,
    },
  };
}

/**
 * The host runs the project's provision command through execute (as `bash -lc CMD`) after
 * realize. When that root's provision layer already holds its result, the command is not run
 * again: the answer is the build's, from its log where this process may read it, and its
 * metadata says so.
 */
function provisionAnswer(c, params) {
  const p = params.lease && params.lease.metadata && params.lease.metadata.provision;
  if (!c.provisionCommand || !p) return null;
  const args = params.args || [];
  const asShell = ["bash", "sh", "/bin/bash", "/bin/sh"].includes(params.command) && ["-c", "-lc"].includes(args[0]) && args.length === 2;
  const cmd = asShell ? args[1] : args.length === 0 ? params.command : null;
  if (cmd === null || cmd.trim() !== c.provisionCommand.trim()) return null;
  let stdout = `execroot: provision layer ${p.key} (snapshot ${p.snapshot}) ${p.hit ? "reused" : "built for this root"}; the command did not run again\n`;
  let stderr = "";
  try {
    // The build's log: its stdout, then its stderr after a `--- stderr ---` line.
    [stdout, stderr = ""] = fs.readFileSync(p.log, "utf8").split(/\n?--- stderr ---\n/);
  } catch {
    // The log is the store owner's: a plugin running as another user answers with the note.
  }
  return {
    exitCode: 0,
    signal: null,
    timedOut: false,
    stdout,
    stderr,
    metadata: { rootId: params.lease.providerLeaseId, answeredFromProvisionCache: true, provision: p },
  };
}

/**
 * The driver's hooks, on a client made by `clientFor(config)` (tests pass their own socket).
 * @param {{ clientFor?: (config: object) => ExecrootClient }} [options]
 */
export function createDriver(options = {}) {
  const clientFor = options.clientFor || ((c) => new ExecrootClient({ socketPath: c.socketPath }));

  async function destroy(params, kind) {
    const c = config(params);
    const id = params.providerLeaseId;
    if (!id) return undefined;
    const result = await clientFor(c).cleanup(id);
    if (!result.cleaned) {
      throw new Error(`execroot refused to ${kind} root ${id}: ${result.warnings.join("; ") || "no reason given"}`);
    }
    return { providerLeaseId: id, state: "destroyed" };
  }

  return {
    async onEnvironmentValidateConfig(params) {
      return validateConfig(params.config);
    },

    async onEnvironmentProbe(params) {
      const v = validateConfig(params.config);
      if (!v.ok) {
        return { ok: false, summary: "invalid config", diagnostics: v.errors.map((message) => ({ severity: "error", message })) };
      }
      const client = clientFor(v.normalizedConfig);
      let health;
      try {
        health = await client.health();
      } catch (e) {
        return { ok: false, summary: `execroot serve is not reachable at ${client.socketPath}`, diagnostics: [{ severity: "error", message: e.message, code: e.code }] };
      }
      const overlay = health.overlay || {};
      const diagnostics = v.warnings.map((message) => ({ severity: "warning", message }));
      if (!overlay.available) {
        diagnostics.push({ severity: "warning", code: "overlay-unavailable", message: `overlay roots are not available (${overlay.reason || "no reason given"}): roots are full copies` });
      }
      return {
        ok: health.ok === true,
        summary: overlay.available ? `execroot ${health.version}: overlay roots available` : `execroot ${health.version}: copy roots only`,
        diagnostics,
        metadata: { provider: DRIVER_KEY, version: health.version, overlay },
      };
    },

    async onEnvironmentAcquireLease(params) {
      const c = config(params);
      const spec = {
        key: leaseKey(params, c),
        class: c.class,
        backend: c.backend,
        owner: c.owner,
        mounts: c.mounts,
        // Only what the key already implies: a reused lease's later acquires (other runs) must
        // send the same request, or execroot refuses the key as reused with other parameters.
        labels: { "paperclip.company": params.companyId, "paperclip.environment": params.environmentId },
      };
      if (c.repo) Object.assign(spec, { repo: c.repo, baseRef: c.baseRef, class: c.class || "repo-edit" });
      else if (c.from) spec.from = c.from;
      if (c.provisionCommand) spec.provision = { command: c.provisionCommand, inputs: c.provisionInputs };
      const realized = await clientFor(c).realize(spec);
      return leaseOf(realized);
    },

    async onEnvironmentResumeLease(params) {
      const c = config(params);
      // By key first (the lease's identity across runs), by id for leases made without one.
      const meta = params.leaseMetadata || {};
      const root = await clientFor(c).get(meta.key || params.providerLeaseId);
      return {
        providerLeaseId: root.id,
        metadata: { ...meta, remoteCwd: root.cwd, rootId: root.id, key: root.key, backend: root.backend, created: false, resumed: true },
      };
    },

    async onEnvironmentReleaseLease(params) {
      const c = config(params);
      if (c.reuseLease && !params.cancelActiveWork) {
        // Kept for the next run of this execution workspace; nothing runs in it now.
        return params.providerLeaseId ? { providerLeaseId: params.providerLeaseId, state: "stopped" } : undefined;
      }
      return destroy(params, "release");
    },

    async onEnvironmentDestroyLease(params) {
      return destroy(params, "destroy");
    },

    async onEnvironmentRealizeWorkspace(params) {
      const meta = (params.lease && params.lease.metadata) || {};
      let cwd = meta.remoteCwd;
      if (!cwd && params.lease && params.lease.providerLeaseId) {
        cwd = (await clientFor(config(params)).get(params.lease.providerLeaseId)).cwd;
      }
      if (!cwd) throw new Error("execroot lease has no root: acquire it first");
      return { cwd, metadata: { remoteCwd: cwd, rootId: meta.rootId || params.lease.providerLeaseId, provider: DRIVER_KEY } };
    },

    async onEnvironmentExecute(params) {
      const c = config(params);
      const id = params.lease && params.lease.providerLeaseId;
      if (!id) throw new Error("execroot lease has no root: acquire it first");
      const cached = provisionAnswer(c, params);
      if (cached) return cached;
      const r = await clientFor(c).exec(id, {
        command: params.command,
        args: params.args,
        env: params.env,
        stdin: params.stdin,
        cwd: params.cwd,
        timeoutMs: params.timeoutMs ?? c.timeoutMs,
      });
      return {
        exitCode: r.exitCode,
        signal: r.signal ?? null,
        timedOut: r.timedOut,
        stdout: r.stdout,
        stderr: r.stderr,
        metadata: { rootId: id, stdoutTruncated: r.stdoutTruncated, stderrTruncated: r.stderrTruncated },
      };
    },
  };
}

const plugin = definePlugin({
  async setup() {},
  ...createDriver(),
});

export default plugin;
