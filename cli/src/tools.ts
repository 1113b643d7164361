import type { HandoffConfig } from "@handoff/config";
import {
  NatsToolSource,
  type SourceTool,
  TOOLS_CATALOG_SUBJECT,
  type ToolOrigin,
  type ToolsCatalog,
  toolPattern,
} from "@handoff/tools";
import type { NatsConnection } from "@nats-io/nats-core";
import { reportCommand, table } from "./operator.js";
import type { Io } from "./progress.js";

export const TOOLS_USAGE = `handoff tools [--json] [--nats <url>] [--wait <ms>]

Every tool the mesh can see, where it lives, and who may use it:
  tool services on NATS   found through $SRV.INFO: the service, its instances
  MCP servers             as the running tool-executors mount them (tools.mcp in their config)
  who                     the mid tier's allowlist (tools.allow.mid) and each API key's
                          (gateway.api_keys[].tools), as the tool-executors enforce them; with
                          no tool-executor running, as this machine's config says

  --json         one JSON object, for scripts
  --nats <url>   NATS server (default $NATS_URL, the config's nats.url, or nats://127.0.0.1:4222)
  --wait <ms>    how long to collect answers (default 1000)
`;

export interface ToolListing {
  name: string;
  description: string;
  origin: ToolOrigin;
  /** How many of the answering tool-executors can reach it (NATS tools: all of them). */
  executors: number;
  /** Whether the mid tier may use it (`tools.allow.mid`). */
  mid: boolean;
  /** The API keys that may use it, when the mid tier may: all keys when there are none. */
  keys: string[];
}

export interface ToolsReport {
  nats: string;
  /** Tool-executor instances that answered; 0 means the allowlists are this machine's config. */
  executors: string[];
  tools: ToolListing[];
  /** The keys the allowlists know, so "every key" can be told from "no key". */
  all_keys: string[];
}

function allowedBy(patterns: readonly string[] | null | undefined, name: string): boolean {
  return patterns == null || patterns.some((pattern) => toolPattern(pattern)(name));
}

/** Every tool-executor's catalog, collected for `waitMs`. */
async function catalogs(nc: NatsConnection, waitMs: number): Promise<ToolsCatalog[]> {
  const found: ToolsCatalog[] = [];
  try {
    const replies = await nc.requestMany(TOOLS_CATALOG_SUBJECT, "", {
      strategy: "stall",
      maxWait: waitMs,
      stall: Math.min(250, waitMs),
    });
    for await (const reply of replies) {
      try {
        found.push(reply.json<ToolsCatalog>());
      } catch {
        // Not a catalog: someone else answers on the subject; it says nothing about tools.
      }
    }
  } catch {
    // No tool-executor is running: the NATS tools are still listed, with this config's rules.
  }
  return found;
}

export async function collectTools(
  nc: NatsConnection,
  servers: string,
  config: HandoffConfig,
  waitMs = 1_000,
): Promise<ToolsReport> {
  const [answers, nats] = await Promise.all([
    catalogs(nc, waitMs),
    NatsToolSource.start(nc, { discoveryWaitMs: waitMs, intervalMs: 3_600_000 }),
  ]);
  const onNats = nats.tools();
  await nats.close();
  // The rules the tool-executors enforce, else this machine's config.
  const rules: Pick<ToolsCatalog, "keys"> & { tiers: { mid: string[] | null } } = answers[0] ?? {
    tiers: { mid: config.tools.allow.mid ?? null },
    keys: Object.fromEntries(config.gateway.api_keys.map((key) => [key.name, key.tools ?? null])),
  };
  const byName = new Map<string, { tool: Omit<SourceTool, "parameters">; executors: number }>();
  for (const tool of onNats) byName.set(tool.name, { tool, executors: answers.length });
  for (const answer of answers) {
    for (const tool of answer.tools) {
      if (tool.origin.kind === "nats") continue;
      const seen = byName.get(tool.name);
      if (seen) seen.executors++;
      else byName.set(tool.name, { tool, executors: 1 });
    }
  }
  const allKeys = Object.keys(rules.keys).sort();
  const tools = [...byName.values()]
    .map(({ tool, executors }) => {
      const mid = allowedBy(rules.tiers.mid, tool.name);
      return {
        name: tool.name,
        description: tool.description,
        origin: tool.origin,
        executors,
        mid,
        keys: mid ? allKeys.filter((key) => allowedBy(rules.keys[key], tool.name)) : [],
      };
    })
    .sort((a, b) => a.name.localeCompare(b.name));
  return { nats: servers, executors: answers.map((a) => a.instance), tools, all_keys: allKeys };
}

function where(origin: ToolOrigin): string {
  switch (origin.kind) {
    case "nats":
      return `NATS ${origin.service} (${origin.instances} instance${origin.instances === 1 ? "" : "s"})`;
    case "mcp":
      return `MCP ${origin.server} (${origin.transport}) ${origin.tool}`;
    case "local":
      return "in process";
  }
}

export function formatTools(report: ToolsReport): string[] {
  const lines = [`NATS ${report.nats}`];
  lines.push(
    report.executors.length > 0
      ? `${report.executors.length} tool-executor(s) answered; allowlists as they enforce them`
      : "no tool-executor answered: MCP tools are not listed, and allowlists are this config's",
  );
  if (report.tools.length === 0) {
    lines.push("", "no tools found");
    return lines;
  }
  const who = (tool: ToolListing) => {
    if (!tool.mid) return "no one (not in tools.allow.mid)";
    if (report.all_keys.length === 0) return "every request";
    if (tool.keys.length === report.all_keys.length) return "every API key";
    return tool.keys.length === 0 ? "no API key" : `keys: ${tool.keys.join(", ")}`;
  };
  const rows = report.tools.map((tool) => [
    tool.name,
    where(tool.origin) +
      (tool.origin.kind === "mcp" && tool.executors < report.executors.length
        ? ` on ${tool.executors} of ${report.executors.length} executors`
        : ""),
    who(tool),
  ]);
  lines.push(
    "",
    ...table(["TOOL", "WHERE", "WHO MAY USE IT"], rows).map((l) => `  ${l}`.trimEnd()),
  );
  return lines;
}

export function toolsMain(
  argv: string[],
  io: Io,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  return reportCommand(
    argv,
    io,
    env,
    { usage: TOOLS_USAGE, name: "handoff-tools", what: "tools" },
    (connection, waitMs) =>
      collectTools(connection.nc, connection.servers, connection.config, waitMs),
    formatTools,
  );
}
