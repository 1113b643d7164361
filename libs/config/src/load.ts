import { readFile } from "node:fs/promises";
import { dirname, extname, isAbsolute, resolve } from "node:path";
import { HandoffError } from "@handoff/contracts";
import { parse as parseYaml } from "yaml";
import { simProfile } from "./defaults.js";
import { HandoffConfig } from "./schema.js";

export interface LoadedConfig {
  config: HandoffConfig;
  /** Absolute path of the file read, or `builtin:sim` for the default profile. */
  source: string;
}

/** Parses and validates config text; errors name the file and each failing path. */
export function parseConfig(text: string, source: string): HandoffConfig {
  const json = extname(source).toLowerCase() === ".json";
  let raw: unknown;
  try {
    raw = json ? JSON.parse(text) : parseYaml(text);
  } catch (error) {
    throw new HandoffError(
      "HANDOFF_ERR_CONFIG",
      `${source} is not valid ${json ? "JSON" : "YAML"}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  const parsed = HandoffConfig.safeParse(raw);
  if (!parsed.success) throw HandoffError.validation(source, parsed.error, "HANDOFF_ERR_CONFIG");
  const config = parsed.data;
  // A router model named relative to the config file is found next to it, wherever the service runs.
  const model = config.routing.model;
  if (model !== undefined && !isAbsolute(model) && isAbsolute(source)) {
    config.routing.model = resolve(dirname(source), model);
  }
  return config;
}

/** Reads `HANDOFF_CONFIG` when set, otherwise returns the built-in `sim` profile. */
export async function loadConfig(env: NodeJS.ProcessEnv = process.env): Promise<LoadedConfig> {
  const path = env.HANDOFF_CONFIG?.trim();
  if (!path) return { config: simProfile, source: "builtin:sim" };
  const source = resolve(path);
  let text: string;
  try {
    text = await readFile(source, "utf8");
  } catch (error) {
    throw new HandoffError(
      "HANDOFF_ERR_CONFIG",
      `HANDOFF_CONFIG points at ${source}, which cannot be read: ${(error as Error).message}`,
      { cause: error },
    );
  }
  return { config: parseConfig(text, source), source };
}
