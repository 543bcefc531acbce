// The worker the plugin host forks: newline-delimited JSON-RPC on stdin/stdout.
import { runWorker } from "@paperclipai/plugin-sdk";
import plugin from "./plugin.js";

runWorker(plugin, import.meta.url);
