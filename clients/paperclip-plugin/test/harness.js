// The plugin's driver in the caller's own SDK harness, on the service at `socketPath`. Shared by
// the tests and by benches/service.mjs, which imports it from here so that the SDK resolves from
// this package's node_modules.
import { createEnvironmentTestHarness } from "@paperclipai/plugin-sdk/testing";
import { ExecrootClient } from "@execroot/client";
import manifest, { DRIVER_KEY } from "../src/manifest.js";
import { createDriver } from "../src/plugin.js";

export { DRIVER_KEY };

/** A fresh harness (its own event log) whose driver talks to the service at `socketPath`. */
export function harnessFor(socketPath) {
  const d = createDriver({ clientFor: () => new ExecrootClient({ socketPath }) });
  return createEnvironmentTestHarness({
    manifest,
    environmentDriver: {
      driverKey: DRIVER_KEY,
      onValidateConfig: d.onEnvironmentValidateConfig,
      onProbe: d.onEnvironmentProbe,
      onAcquireLease: d.onEnvironmentAcquireLease,
      onResumeLease: d.onEnvironmentResumeLease,
      onReleaseLease: d.onEnvironmentReleaseLease,
      onDestroyLease: d.onEnvironmentDestroyLease,
      onRealizeWorkspace: d.onEnvironmentRealizeWorkspace,
      onExecute: d.onEnvironmentExecute,
    },
  });
}

/** The fields every hook's params carry, for one environment with `config`. */
export const base = (config) => ({ driverKey: DRIVER_KEY, companyId: "company-1", environmentId: "env-1", config });
