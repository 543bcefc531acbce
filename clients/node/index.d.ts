// Types of execroot's Node client (index.js). Field names follow the caller (Paperclip) where
// it has one, and execroot's JSON contract (docs/api.md) otherwise.

export declare const DEFAULT_SOCKET: string;

export declare class ExecrootError extends Error {
  status: number;
  code: string;
  body: unknown;
}

export interface MountSpec { path: string; from: string }

export interface RealizeSpec {
  key?: string;
  class?: "routine" | "preview" | "artifact" | "repo-edit";
  from?: string | string[];
  repo?: string;
  baseRef?: string;
  branch?: string;
  mounts?: MountSpec[];
  owner?: string | number;
  backend?: "auto" | "overlay" | "copy" | "worktree";
  durable?: boolean;
  labels?: Record<string, string>;
  /** A dependency layer built once per inputs and stacked on `from` (docs/roots.md, "Provisioning"). */
  provision?: { command: string; inputs: string[]; scope?: "inputs" | "base"; env?: string[]; timeoutSecs?: number };
}

/** Root document: the CLI's `root show --json` (docs/cli.md). */
export interface Root {
  id: string;
  key: string | null;
  class: string;
  backend: string;
  state?: string;
  cwd: string;
  snapshots: string[];
  branchName: string | null;
  worktreePath: string | null;
  baseRef: string | null;
  created?: boolean;
  warnings: string[];
  mounted?: boolean;
  usage?: { bytes: number; inodes: number };
  git?: GitReadiness;
  /** Null without `provision`. */
  provision?: { key: string; snapshot: string; hit: boolean; ageSecs: number; log: string; copiedIn: boolean } | null;
  [field: string]: unknown;
}

export interface GitReadiness {
  dirtyEntryCount: number;
  untrackedEntryCount: number;
  ignoredEntryCount: number;
  aheadCount: number;
  behindCount: number;
  isMergedIntoBase: boolean;
  paths: string[];
}

/** Paperclip's RealizedExecutionWorkspace fields, plus execroot's own. */
export interface RealizedWorkspace {
  cwd: string;
  strategy: "project_primary" | "git_worktree";
  branchName: string | null;
  worktreePath: string | null;
  baseRef: string | null;
  created: boolean;
  warnings: string[];
  id: string;
  providerType: "local_fs" | "git_worktree";
  root: Root;
}

export interface CleanupResult { cleanedPath: string | null; cleaned: boolean; warnings: string[] }

export interface RootStatus {
  id: string;
  cwd: string;
  state: string | undefined;
  mounted: boolean | undefined;
  dirtyTrackedFiles: number | null;
  untrackedFiles: number | null;
  ignoredFiles: number | null;
  aheadCount: number | null;
  behindCount: number | null;
  isMergedIntoBase: boolean | null;
  paths: string[];
  usage: { bytes: number; inodes: number } | null;
}

export interface ExecParams {
  command: string;
  args?: string[];
  env?: Record<string, string>;
  stdin?: string;
  cwd?: string;
  timeoutMs?: number;
}

export interface ExecResult {
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
}

export declare class ExecrootClient {
  constructor(options?: { socketPath?: string; timeoutMs?: number });
  socketPath: string;
  timeoutMs: number;
  /** Close the kept-alive connections (later calls open new ones). */
  close(): void;
  health(): Promise<{ ok: boolean; version: string; overlay: { available: boolean; reason: string | null } }>;
  realize(spec: RealizeSpec): Promise<RealizedWorkspace>;
  list(): Promise<Root[]>;
  get(idOrKey: string): Promise<Root>;
  cleanup(idOrKey: string, options?: { force?: boolean }): Promise<CleanupResult>;
  status(idOrKey: string): Promise<RootStatus>;
  exec(idOrKey: string, params: ExecParams): Promise<ExecResult>;
  diff(idOrKey: string): Promise<unknown>;
  commit(idOrKey: string, options?: { name?: string }): Promise<unknown>;
  snapshot(spec: { path: string; name?: string; shared?: boolean }): Promise<unknown>;
  snapshots(): Promise<unknown>;
  gc(options?: Record<string, unknown>): Promise<unknown>;
  df(): Promise<unknown>;
}

export declare function toRealized(root: Root): RealizedWorkspace;
