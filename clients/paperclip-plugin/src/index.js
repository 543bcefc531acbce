export { default as manifest, DRIVER_KEY, configSchema } from "./manifest.js";
export { default, createDriver } from "./plugin.js";
