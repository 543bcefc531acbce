// The plugin's manifest, as the caller's plugin host reads it (PaperclipPluginManifestV1).

/** Driver key the environments name: `config.provider` of a `driver: "sandbox"` environment. */
export const DRIVER_KEY = "execroot";

/** JSON Schema of the driver's config (what a user enters for the environment). */
export const configSchema = {
  type: "object",
  additionalProperties: false,
  properties: {
    socketPath: {
      type: "string",
      description: "execroot serve's unix socket (default: $EXECROOT_SOCKET, else /var/lib/execroot/execroot.sock)",
    },
    from: {
      description: "Snapshot ref or id (or a list, bottom first) every root presents",
      anyOf: [{ type: "string" }, { type: "array", items: { type: "string" } }],
    },
    repo: { type: "string", description: "Repository for repo-edit roots (a git worktree per run)" },
    baseRef: { type: "string", description: "Base ref of repo-edit roots" },
    class: { type: "string", enum: ["routine", "preview", "artifact", "repo-edit"] },
    backend: { type: "string", enum: ["auto", "overlay", "copy", "worktree"] },
    owner: { description: "User owning what a run can touch (root's service only)", anyOf: [{ type: "string" }, { type: "integer" }] },
    mounts: {
      type: "array",
      items: {
        type: "object",
        additionalProperties: false,
        required: ["path", "from"],
        properties: { path: { type: "string" }, from: { type: "string" } },
      },
    },
    provisionCommand: {
      type: "string",
      description: "The project's provision command (for example `pnpm install --frozen-lockfile`): run once per set of inputs, its result stacked under every root",
    },
    provisionInputs: {
      type: "array",
      items: { type: "string" },
      description: "Files, relative to the root, whose contents key the provision layer (for example package.json and pnpm-lock.yaml)",
    },
    reuseLease: { type: "boolean", description: "Keep the root on release; a later run of the same execution workspace resumes it" },
    timeoutMs: { type: "integer", minimum: 1, description: "Default timeout of execute, in ms" },
  },
};

const manifest = {
  id: "execroot.sandbox-provider",
  apiVersion: 1,
  version: "0.1.0",
  displayName: "execroot",
  description: "Gives every run a disposable copy-on-write execution root (an overlay of a snapshot, or a git worktree) in milliseconds, through execroot serve.",
  author: "execroot",
  categories: ["workspace"],
  capabilities: ["environment.drivers.register"],
  entrypoints: { worker: "./src/worker.js" },
  environmentDrivers: [
    {
      driverKey: DRIVER_KEY,
      kind: "sandbox_provider",
      displayName: "execroot",
      description: "Copy-on-write execution roots on this host",
      configSchema,
      supportsReusableLeases: true,
    },
  ],
};

export default manifest;
