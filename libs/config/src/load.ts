import { readFile } from "node:fs/promises";
import { dirname, extname, isAbsolute, resolve } from "node:path";
import { HandoffError } from "@handoff/contracts";
import { parse as parseYaml } from "yaml";
import { simProfile } from "./defaults.js";
import { HandoffConfig } from "./schema.js";
import { formatSyntaxProblem, jsonSyntaxProblem, yamlSyntaxProblem } from "./syntax.js";

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
    // No code frame in yaml's errors, and no warnings printed: either would quote the file.
    raw = json ? JSON.parse(text) : parseYaml(text, { prettyErrors: false, logLevel: "error" });
  } catch (error) {
    // Position and problem only, and no `cause`: the parser's own message quotes the source,
    // which may hold a pasted secret.
    const found = json ? jsonSyntaxProblem(text) : yamlSyntaxProblem(error, text);
    throw new HandoffError("HANDOFF_ERR_CONFIG", formatSyntaxProblem(source, found), {
      details: { ...found },
    });
  }
  const parsed = HandoffConfig.safeParse(raw);
  if (!parsed.success) throw HandoffError.validation(source, parsed.error, "HANDOFF_ERR_CONFIG");
  const config = parsed.data;
  // A router model named relative to the config file is found next to it, wherever the service runs.
  const model = config.routing.model;
  if (model !== undefined && !isAbsolute(model) && isAbsolute(source)) {
    config.routing.model = resolve(dirname(source), model);
  }
  // So are the NATS credential and certificate files.
  if (isAbsolute(source)) {
    const nearConfig = (file: string | undefined) =>
      file === undefined || isAbsolute(file) ? file : resolve(dirname(source), file);
    const { nats } = config;
    for (const field of ["creds_file", "nkey_seed_file"] as const) {
      const file = nearConfig(nats[field]);
      if (file !== undefined) nats[field] = file;
    }
    for (const field of ["ca_file", "cert_file", "key_file"] as const) {
      const file = nearConfig(nats.tls?.[field]);
      if (file !== undefined && nats.tls) nats.tls[field] = file;
    }
    // An MCP server's working folder, and so the script it runs relative to it.
    for (const server of config.tools.mcp) server.cwd = nearConfig(server.cwd);
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
