import { hostname } from "node:os";
import type { HandoffConfig } from "@handoff/config";
import {
  builtinTools,
  McpToolSource,
  NatsToolSource,
  serveTools,
  TOOLS_CATALOG_SUBJECT,
  Toolbox,
  type ToolServer,
  type ToolsCatalog,
} from "@handoff/tools";
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import type { Logger } from "pino";

/** How long the start waits for the configured MCP servers before taking jobs without them. */
const MCP_START_WAIT_MS = 15_000;

export interface MeshToolsOptions {
  config: HandoffConfig;
  logger: Logger;
  version: string;
  /** Overrides `MCP_START_WAIT_MS` (tests). */
  mcpStartWaitMs?: number;
}

/**
 * The tools of one tool-executor: it serves the built-ins (calculator, clock) as a NATS tool
 * service like any other, finds every tool service through `$SRV.INFO`, mounts the configured MCP
 * servers, and answers `handoff tools` on `TOOLS_CATALOG_SUBJECT`. The toolbox in front of them
 * applies the guard rails.
 */
export class MeshTools {
  readonly toolbox: Toolbox;
  readonly #options: MeshToolsOptions;
  #started: Promise<void> | undefined;
  #server: ToolServer | undefined;
  #nats: NatsToolSource | undefined;
  readonly #mcp: McpToolSource[] = [];
  #catalog: Subscription | undefined;

  constructor(options: MeshToolsOptions) {
    this.#options = options;
    this.toolbox = new Toolbox({
      callTimeoutMs: options.config.tools.call_timeout_ms,
      maxOutputBytes: options.config.tools.max_output_bytes,
    });
  }

  /** Serves, discovers and mounts; once per process, whatever the caller retries. */
  start(nc: NatsConnection): Promise<void> {
    this.#started ??= this.#start(nc);
    return this.#started;
  }

  async #start(nc: NatsConnection): Promise<void> {
    const { config, logger, version } = this.#options;
    const tools = config.tools;
    if (tools.builtin) {
      this.#server = await serveTools(nc, builtinTools, {
        name: "handoff-builtin-tools",
        version,
        description: "The tools every tool-executor serves: calculator, clock",
        onError: (err, tool) => logger.warn({ err, tool }, "a tool request could not be read"),
      });
    }
    const mounted = tools.mcp.map(async (settings) => {
      const source = await McpToolSource.start(settings, {
        logger: logger.child({ mcp: settings.name }),
        clientName: "handoff-tool-executor",
        clientVersion: version,
      });
      this.#mcp.push(source);
      this.toolbox.add(source);
      return source;
    });
    this.#nats = await NatsToolSource.start(nc, {
      intervalMs: tools.discovery_interval_ms,
      logger: logger.child({ tools: "nats" }),
    });
    this.toolbox.add(this.#nats);
    // A slow MCP server does not hold the stage back for ever: its tools appear once it answers.
    const wait = this.#options.mcpStartWaitMs ?? MCP_START_WAIT_MS;
    const ready = Promise.all(mounted.map(async (source) => (await source).ready()));
    let timer: NodeJS.Timeout | undefined;
    const late = await Promise.race([
      ready.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), wait);
      }),
    ]);
    clearTimeout(timer);
    if (late) {
      logger.warn(
        { waited_ms: wait },
        "not every MCP server answered in time; their tools appear once they do",
      );
    }
    this.#catalog = nc.subscribe(TOOLS_CATALOG_SUBJECT, {
      callback: (error, msg) => {
        if (error) return;
        msg.respond(JSON.stringify(this.catalog()));
      },
    });
    logger.info({ tools: this.toolbox.list().map((t) => t.name) }, "tools ready");
  }

  /** What this tool-executor can reach, and the allowlists that apply. */
  catalog(): ToolsCatalog {
    const { config } = this.#options;
    return {
      instance: `${hostname()}/${process.pid}`,
      tools: this.toolbox
        .list()
        .map(({ name, description, origin }) => ({ name, description, origin })),
      tiers: {
        light: config.tools.allow.light ?? null,
        mid: config.tools.allow.mid ?? null,
      },
      keys: Object.fromEntries(config.gateway.api_keys.map((key) => [key.name, key.tools ?? null])),
    };
  }

  async stop(): Promise<void> {
    this.#catalog?.unsubscribe();
    await this.#server?.stop().catch(() => {});
    await this.#nats?.close();
    await Promise.all(this.#mcp.map((source) => source.close().catch(() => {})));
  }
}
