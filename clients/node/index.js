// execroot's Node client: talks HTTP/1.1 + JSON to `execroot serve` over its unix socket and
// returns the caller's own shapes (Paperclip's RealizedExecutionWorkspace, its cleanup result,
// its close-readiness fields). No dependencies: HTTP/1.1 by hand on node:net (transport.js,
// which says why). Types: index.d.ts.

import { ProtocolError, Transport } from "./transport.js";

/** The default socket: `$EXECROOT_SOCKET`, else the root store's `execroot.sock`. */
export const DEFAULT_SOCKET = process.env.EXECROOT_SOCKET || "/var/lib/execroot/execroot.sock";

/** An answer of the service other than 2xx, with its `{ error: { code, message } }` body. */
export class ExecrootError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.name = "ExecrootError";
    /** HTTP status (400 bad input, 403, 404, 409 conflict, 413, 500). */
    this.status = status;
    /** The service's error code (for example `bad-input`, `not-found`, `conflict`). */
    this.code = code;
    /** The whole answer body. */
    this.body = body;
  }
}

export class ExecrootClient {
  /**
   * @param {{ socketPath?: string, timeoutMs?: number }} [options]
   */
  constructor(options = {}) {
    this.socketPath = options.socketPath || DEFAULT_SOCKET;
    this.timeoutMs = options.timeoutMs ?? 120_000;
    // Connections are kept and reused (HTTP/1.1 keep-alive): a new unix connection per call
    // costs about a tenth of a millisecond. Idle ones do not keep the process alive.
    this.transport = new Transport(this.socketPath);
  }

  /** Close the kept connections (the client stays usable: later calls open new ones). */
  close() {
    this.transport.close();
  }

  /**
   * One request; resolves `{ status, body }` for every status in `accept`, throws
   * ExecrootError otherwise (and on a connection that fails or times out).
   */
  async request(method, path, body, accept = [200, 201]) {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    let res;
    try {
      res = await this.transport.send(method, path, payload, this.timeoutMs, () => new Error(`execroot did not answer ${method} ${path} within ${this.timeoutMs} ms`));
    } catch (e) {
      if (e instanceof ProtocolError) throw new ExecrootError(0, "bad-answer", `execroot's answer to ${method} ${path} is not HTTP: ${e.message}`, null);
      throw new ExecrootError(0, "unreachable", `cannot reach execroot at ${this.socketPath}: ${e.message}`, null);
    }
    const text = res.body.toString("utf8");
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      throw new ExecrootError(res.status, "bad-answer", `execroot answered ${res.status} with a body that is not JSON: ${text.slice(0, 200)}`, text);
    }
    if (accept.includes(res.status)) return { status: res.status, body: parsed };
    const err = parsed && parsed.error ? parsed.error : {};
    throw new ExecrootError(res.status, err.code || "http-" + res.status, err.message || `execroot answered ${res.status} to ${method} ${path}`, parsed);
  }

  /** `{ ok, version, overlay: { available, reason } }`. */
  async health() {
    return (await this.request("GET", "/v1/health")).body;
  }

  /**
   * Create a root (or, with a `key` that names one, return it as it is: `created: false`).
   * Returns the caller's RealizedExecutionWorkspace fields plus execroot's `id`,
   * `providerType` and the whole `root` document.
   */
  async realize(spec) {
    const body = {};
    for (const k of ["class", "from", "key", "owner", "backend", "repo", "baseRef", "branch", "mounts", "durable", "labels", "provision"]) {
      if (spec[k] !== undefined) body[k] = spec[k];
    }
    if (body.class === undefined) body.class = spec.repo ? "repo-edit" : "routine";
    const { status, body: root } = await this.request("POST", "/v1/roots", body);
    return toRealized({ created: status === 201, ...root });
  }

  /** Every root of the caller (root's service: every root). */
  async list() {
    return (await this.request("GET", "/v1/roots")).body.roots;
  }

  /** One root by id or key, with `mounted`, `usage` and for worktrees `git`. */
  async get(idOrKey) {
    return (await this.request("GET", `/v1/roots/${enc(idOrKey)}`)).body;
  }

  /**
   * Destroy a root. Resolves `{ cleanedPath, cleaned, warnings }` whether or not execroot
   * destroyed it: a refusal (uncommitted work, processes still inside) is `cleaned: false`
   * with the reasons in `warnings`, and nothing is deleted. `force` discards uncommitted work
   * of a worktree; it is never set implicitly.
   */
  async cleanup(idOrKey, options = {}) {
    const q = options.force ? "?force=true" : "";
    const { body } = await this.request("DELETE", `/v1/roots/${enc(idOrKey)}${q}`, undefined, [200, 409]);
    if (body && body.error) {
      return { cleanedPath: null, cleaned: false, warnings: [body.error.message] };
    }
    return { cleanedPath: body.cleanedPath, cleaned: body.cleaned, warnings: body.warnings || [] };
  }

  /**
   * What the caller's close-readiness check reads: dirty tracked files, untracked files,
   * ahead/behind counts against the base, merged into base. Null git fields for roots that
   * are not worktrees.
   */
  async status(idOrKey) {
    const root = await this.get(idOrKey);
    const g = root.git || null;
    return {
      id: root.id,
      cwd: root.cwd,
      state: root.state,
      mounted: root.mounted,
      dirtyTrackedFiles: g ? g.dirtyEntryCount : null,
      untrackedFiles: g ? g.untrackedEntryCount : null,
      ignoredFiles: g ? g.ignoredEntryCount : null,
      aheadCount: g ? g.aheadCount : null,
      behindCount: g ? g.behindCount : null,
      isMergedIntoBase: g ? g.isMergedIntoBase : null,
      paths: g ? g.paths : [],
      usage: root.usage || null,
    };
  }

  /**
   * Run a command in a root as its owner: `{ command, args, env, stdin, cwd, timeoutMs }` ->
   * `{ exitCode, signal, timedOut, stdout, stderr, stdoutTruncated, stderrTruncated }`.
   */
  async exec(idOrKey, params) {
    const body = { command: params.command };
    for (const k of ["args", "env", "stdin", "cwd", "timeoutMs"]) {
      if (params[k] !== undefined) body[k] = params[k];
    }
    return (await this.request("POST", `/v1/roots/${enc(idOrKey)}/exec`, body)).body;
  }

  /** What the run changed: the CLI's `root diff --json` document. */
  async diff(idOrKey) {
    return (await this.request("GET", `/v1/roots/${enc(idOrKey)}/diff`)).body;
  }

  /** Commit what the run changed as a snapshot (`{ name }` sets a ref). */
  async commit(idOrKey, options = {}) {
    return (await this.request("POST", `/v1/roots/${enc(idOrKey)}/commit`, options)).body;
  }

  /** Ingest a directory the service may read as a snapshot: `{ path, name, shared }`. */
  async snapshot(spec) {
    return (await this.request("POST", "/v1/snapshots", spec)).body;
  }

  /** Snapshots and refs the caller may use. */
  async snapshots() {
    return (await this.request("GET", "/v1/snapshots")).body;
  }

  /** Reclaim space (root's only): the CLI's `gc --json` document. */
  async gc(options = {}) {
    return (await this.request("POST", "/v1/gc", options)).body;
  }

  /** Disk use: the CLI's `df --json` document. */
  async df() {
    return (await this.request("GET", "/v1/df")).body;
  }
}

/** The caller's RealizedExecutionWorkspace from a root document. */
export function toRealized(root) {
  const worktree = root.backend === "worktree" || root.backend === "git-overlay";
  return {
    cwd: root.cwd,
    // A worktree root is the caller's git_worktree; any other root is a private tree of the
    // project, which the caller treats like its primary checkout on the local filesystem.
    strategy: worktree ? "git_worktree" : "project_primary",
    branchName: root.branchName ?? null,
    worktreePath: root.worktreePath ?? null,
    baseRef: root.baseRef ?? null,
    created: root.created === true,
    warnings: root.warnings || [],
    id: root.id,
    providerType: root.providerType ?? (worktree ? "git_worktree" : "local_fs"),
    root,
  };
}

function enc(s) {
  return encodeURIComponent(String(s));
}
