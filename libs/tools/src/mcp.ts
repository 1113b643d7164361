/**
 * Tools of a Model Context Protocol server as a `ToolSource`: a stdio server the tool-executor
 * starts as a child process, or a streamable HTTP server it reaches by URL. The source lists the
 * server's tools under `<server>__<tool>`, follows `notifications/tools/list_changed`, runs calls
 * with the job's deadline and trace context, and reconnects with backoff when the server goes away.
 */
import { createHash } from "node:crypto";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import {
  getDefaultEnvironment,
  StdioClientTransport,
} from "@modelcontextprotocol/sdk/client/stdio.js";
import {
  StreamableHTTPClientTransport,
  StreamableHTTPError,
} from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  type CallToolResult,
  ErrorCode,
  McpError,
  type Tool,
  ToolListChangedNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";
import { context, propagation } from "@opentelemetry/api";
import type { SourceCallContext, SourceOutcome, SourceTool, ToolSource } from "./source.js";

/**
 * One MCP server of the config (`tools.mcp[]`): `McpServerSettings` of `@handoff/config` fits it.
 * Either `command` (stdio) or `url` (streamable HTTP).
 */
export interface McpServerConfig {
  /** Namespaces the server's tools: `search` of server `docs` is offered as `docs__search`. */
  name: string;
  /** stdio: the program to start, and its arguments and working folder. */
  command?: string;
  args?: string[];
  cwd?: string;
  /** stdio: variables set for the child, besides the minimal environment it inherits. */
  env?: Record<string, string>;
  /** stdio: variables copied from this process's environment: `{ CHILD_NAME: OUR_NAME }`. */
  env_from?: Record<string, string>;
  /** Streamable HTTP: the server's endpoint. */
  url?: string;
  /** HTTP: headers whose values come from variables: `{ Authorization: DOCS_MCP_AUTH }`. */
  headers_env?: Record<string, string>;
}

/** The part of a pino logger the source uses. */
export interface McpLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface McpSourceOptions {
  logger?: McpLogger;
  /** Where `env_from` and `headers_env` variables are read. Default: `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** How the client introduces itself in `initialize`. */
  clientName?: string;
  clientVersion?: string;
}

/** Longest name a tool may have (`SourceTool.name`). */
const MAX_TOOL_NAME = 64;
/** First wait before reconnecting; it doubles after each failed attempt up to the maximum. */
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 30_000;
/** A connection that lived this long counts as healthy: the next reconnect starts from the minimum. */
const STABLE_MS = 60_000;
/** How long `initialize` and `tools/list` may take (a server started with npx may download first). */
const SETUP_TIMEOUT_MS = 30_000;
/** `tools/list` pages followed at most, against a server that never stops paginating. */
const MAX_LIST_PAGES = 100;
/** stderr lines kept per connection attempt, to explain a server that dies while starting. */
const STDERR_TAIL = 5;
const MAX_STDERR_LINE = 2_000;

const silent: McpLogger = { info() {}, warn() {}, error() {} };

/** A setting the source cannot work with, whatever the server does: retrying will not help. */
class McpConfigError extends Error {
  override name = "McpConfigError";
}

interface Connection {
  id: number;
  client: Client;
  transport: StdioClientTransport | StreamableHTTPClientTransport;
  since: number;
}

/**
 * Name the model sees for `tool` of `server`: `<server>__<tool>` with characters outside
 * `[A-Za-z0-9_-]` replaced by `_`, and cut to 64 characters with a hash of the tool name appended
 * when longer.
 */
export function mcpToolName(server: string, tool: string): string {
  const name = `${server}__${tool}`.replace(/[^A-Za-z0-9_-]/g, "_");
  if (name.length <= MAX_TOOL_NAME) return name;
  const hash = createHash("sha256").update(tool).digest("hex").slice(0, 8);
  return `${name.slice(0, MAX_TOOL_NAME - hash.length - 1)}_${hash}`;
}

function message(error: unknown): string {
  if (error instanceof StreamableHTTPError && error.code !== undefined && error.code > 0) {
    return `${error.message} (HTTP ${error.code})`;
  }
  return error instanceof Error ? error.message : String(error);
}

/** A deferred promise that never counts as an unhandled rejection. */
function deferred(): {
  promise: Promise<void>;
  resolve: () => void;
  reject: (error: Error) => void;
} {
  let resolve!: () => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}

export class McpToolSource implements ToolSource {
  readonly name: string;
  /** The config's name of the server. */
  readonly server: string;
  readonly transport: "stdio" | "http";
  readonly #settings: McpServerConfig;
  readonly #logger: McpLogger;
  readonly #env: NodeJS.ProcessEnv;
  readonly #clientInfo: { name: string; version: string };
  /** How the server is reached, for messages: `stdio: node server.js`, `http: https://host/mcp`. */
  readonly #where: string;

  #connection: Connection | undefined;
  /** The client of the connection attempt under way, so `close()` can stop it. */
  #attempt: Client | undefined;
  #attempts = 0;
  #tools: SourceTool[] = [];
  /** Offered name to the server's own tool name. */
  #originals = new Map<string, string>();
  #listing = 0;
  #delay = RETRY_MIN_MS;
  #retryTimer: NodeJS.Timeout | undefined;
  #closed = false;
  #ready = deferred();

  private constructor(settings: McpServerConfig, options: McpSourceOptions) {
    this.#settings = settings;
    this.server = settings.name;
    this.name = `mcp:${settings.name}`;
    this.transport = settings.url === undefined ? "stdio" : "http";
    this.#logger = options.logger ?? silent;
    this.#env = options.env ?? process.env;
    this.#clientInfo = {
      name: options.clientName ?? "handoff-tool-executor",
      version: options.clientVersion ?? "0.0.0",
    };
    this.#where =
      this.transport === "stdio"
        ? `stdio: ${[settings.command ?? "", ...(settings.args ?? [])].join(" ")}`
        : `http: ${McpToolSource.#redact(settings.url ?? "")}`;
  }

  /**
   * Connects to the server and lists its tools, or rejects with an error naming the server when
   * the first attempt fails. Once connected, the source reconnects on its own whenever the server
   * goes away.
   */
  static async connect(
    settings: McpServerConfig,
    options: McpSourceOptions = {},
  ): Promise<McpToolSource> {
    const source = new McpToolSource(settings, options);
    try {
      await source.#open();
    } catch (error) {
      await source.close();
      const text = `MCP server "${source.server}" (${source.#where}) failed to start`;
      throw new Error(`${text}: ${message(error)}`, { cause: error });
    }
    return source;
  }

  /**
   * Returns a source at once and connects in the background, retrying with backoff until the
   * server answers: `tools()` is empty until then. Never rejects; `ready()` tells when it is up.
   */
  static start(settings: McpServerConfig, options: McpSourceOptions = {}): McpToolSource {
    const source = new McpToolSource(settings, options);
    source.#open().catch((error: unknown) => source.#attemptFailed(error));
    return source;
  }

  /**
   * Resolves when the source has connected for the first time. Rejects when it is closed before
   * that, or when its settings cannot work (a variable named in `env_from` or `headers_env` is
   * not set), in which case it does not retry.
   */
  ready(): Promise<void> {
    return this.#ready.promise;
  }

  /** Whether the server is connected now. */
  get connected(): boolean {
    return this.#connection !== undefined;
  }

  tools(): SourceTool[] {
    return this.#connection === undefined ? [] : this.#tools;
  }

  async call(
    name: string,
    args: Record<string, unknown>,
    ctx: SourceCallContext,
  ): Promise<SourceOutcome> {
    ctx.signal.throwIfAborted();
    const connection = this.#connection;
    if (connection === undefined) {
      const text = `MCP server "${this.server}" is not connected`;
      return { output: text, error: { type: "unavailable", message: text } };
    }
    const tool = this.#originals.get(name);
    if (tool === undefined) {
      const text = `MCP server "${this.server}" has no tool offered as "${name}"`;
      return { output: text, error: { type: "unknown_tool", message: text } };
    }

    const carrier: Record<string, string> = {};
    propagation.inject(context.active(), carrier);
    const timeout = Math.max(1, ctx.deadline - Date.now());
    // The SDK leaves its abort listener on the signal it is given: give it one per call.
    const abort = new AbortController();
    const onAbort = () => abort.abort(ctx.signal.reason);
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    try {
      const result = (await connection.client.callTool(
        {
          name: tool,
          arguments: args,
          ...(Object.keys(carrier).length > 0 ? { _meta: carrier } : {}),
        },
        undefined,
        { signal: abort.signal, timeout },
      )) as CallToolResult;
      ctx.signal.throwIfAborted();
      return McpToolSource.#outcome(result);
    } catch (error) {
      ctx.signal.throwIfAborted();
      return this.#failure(error, connection, tool, timeout);
    } finally {
      ctx.signal.removeEventListener("abort", onAbort);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#ready.reject(new Error(`MCP server "${this.server}": the source was closed`));
    const connection = this.#connection;
    this.#connection = undefined;
    this.#tools = [];
    this.#originals = new Map();
    const attempt = this.#attempt;
    this.#attempt = undefined;
    await Promise.all([
      connection === undefined ? undefined : this.#shut(connection.client, connection.transport),
      attempt?.close().catch(() => {}),
    ]);
  }

  /** One connection attempt: start or reach the server, initialize, list its tools. */
  async #open(): Promise<void> {
    const id = ++this.#attempts;
    const transport = this.#createTransport();
    const client = new Client(this.#clientInfo, { capabilities: {} });
    const stderr: string[] = [];
    if (transport instanceof StdioClientTransport && transport.stderr !== null) {
      this.#pipeStderr(transport.stderr as Readable, stderr);
    }
    client.onclose = () => this.#lost(id, "the connection closed");
    client.onerror = (error) => this.#transportError(id, error);
    // A change announced while the first list is on its way is listed again once connected.
    let changedWhileListing = false;
    client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
      if (this.#connection?.id === id) void this.#refresh(id);
      else changedWhileListing = true;
    });

    this.#attempt = client;
    try {
      await client.connect(transport, { timeout: SETUP_TIMEOUT_MS });
      const tools = await McpToolSource.#listAll(client);
      if (this.#closed) throw new Error("the source was closed");
      this.#connection = { id, client, transport, since: Date.now() };
      this.#setTools(tools);
      if (changedWhileListing) void this.#refresh(id);
    } catch (error) {
      await this.#shut(client, transport);
      // Lines the child wrote just before it died may still be on their way.
      await new Promise((resolve) => setImmediate(resolve));
      if (stderr.length > 0 && !(error instanceof McpConfigError)) {
        throw new Error(`${message(error)} (stderr: ${stderr.join(" | ")})`, { cause: error });
      }
      throw error;
    } finally {
      if (this.#attempt === client) this.#attempt = undefined;
    }
    const version = client.getServerVersion();
    this.#logger.info(
      {
        server: this.server,
        transport: this.transport,
        serverInfo: version === undefined ? undefined : `${version.name} ${version.version}`,
        tools: this.#tools.map((tool) => tool.name),
      },
      "MCP server connected",
    );
    this.#ready.resolve();
  }

  #attemptFailed(error: unknown): void {
    if (this.#closed) return;
    if (error instanceof McpConfigError) {
      this.#logger.error(
        { server: this.server, where: this.#where, err: error.message },
        "MCP server cannot be started; not retrying",
      );
      this.#ready.reject(
        new Error(`MCP server "${this.server}" (${this.#where}): ${error.message}`),
      );
      return;
    }
    this.#logger.warn(
      { server: this.server, where: this.#where, err: message(error), retryInMs: this.#delay },
      "MCP server unavailable; retrying",
    );
    this.#scheduleRetry();
  }

  #scheduleRetry(): void {
    if (this.#closed || this.#retryTimer !== undefined) return;
    const delay = this.#delay;
    this.#delay = Math.min(delay * 2, RETRY_MAX_MS);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#open().catch((error: unknown) => this.#attemptFailed(error));
    }, delay);
    this.#retryTimer.unref();
  }

  /** The connection `id` is gone: drop its tools and reconnect. */
  #lost(id: number, reason: string): void {
    const connection = this.#connection;
    if (this.#closed || connection?.id !== id) return;
    this.#connection = undefined;
    this.#tools = [];
    this.#originals = new Map();
    if (Date.now() - connection.since >= STABLE_MS) this.#delay = RETRY_MIN_MS;
    this.#logger.warn(
      { server: this.server, where: this.#where, reason, retryInMs: this.#delay },
      "MCP server lost; reconnecting",
    );
    void this.#shut(connection.client, connection.transport);
    this.#scheduleRetry();
  }

  #transportError(id: number, error: Error): void {
    if (this.#closed || this.#connection?.id !== id) return;
    if (this.transport === "http" && McpToolSource.#isConnectionLoss(error)) {
      this.#lost(id, message(error));
      return;
    }
    this.#logger.warn({ server: this.server, err: message(error) }, "MCP transport error");
  }

  /** Whether an HTTP transport error means the server or the session is gone. */
  static #isConnectionLoss(error: unknown): boolean {
    if (error instanceof StreamableHTTPError) return error.code === 404;
    if (error instanceof TypeError) return true; // fetch failed: refused, reset, DNS
    const text = message(error);
    return (
      text.startsWith("SSE stream disconnected") ||
      text.startsWith("Maximum reconnection attempts") ||
      text.startsWith("Failed to reconnect SSE stream")
    );
  }

  async #refresh(id: number): Promise<void> {
    const connection = this.#connection;
    if (connection?.id !== id) return;
    const listing = ++this.#listing;
    try {
      const tools = await McpToolSource.#listAll(connection.client);
      if (listing !== this.#listing || this.#connection !== connection) return;
      this.#setTools(tools);
      this.#logger.info(
        { server: this.server, tools: this.#tools.map((tool) => tool.name) },
        "MCP server tools changed",
      );
    } catch (error) {
      this.#logger.warn({ server: this.server, err: message(error) }, "MCP tools/list failed");
    }
  }

  static async #listAll(client: Client): Promise<Tool[]> {
    const tools: Tool[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < MAX_LIST_PAGES; page++) {
      const result = await client.listTools(cursor === undefined ? undefined : { cursor }, {
        timeout: SETUP_TIMEOUT_MS,
      });
      tools.push(...result.tools);
      if (result.nextCursor === undefined || result.nextCursor === cursor) return tools;
      cursor = result.nextCursor;
    }
    return tools;
  }

  #setTools(tools: Tool[]): void {
    this.#listing++;
    const offered: SourceTool[] = [];
    const originals = new Map<string, string>();
    for (const tool of tools) {
      if (tool.execution?.taskSupport === "required") {
        this.#logger.warn(
          { server: this.server, tool: tool.name },
          "MCP tool skipped: it can only run as a task",
        );
        continue;
      }
      const name = mcpToolName(this.server, tool.name);
      const taken = originals.get(name);
      if (taken !== undefined) {
        this.#logger.warn(
          { server: this.server, tool: tool.name, name, keeps: taken },
          "MCP tool skipped: its name collides with another tool of the server",
        );
        continue;
      }
      originals.set(name, tool.name);
      const { $schema: _, ...parameters } = tool.inputSchema as Record<string, unknown>;
      offered.push({
        name,
        description: tool.description ?? tool.title ?? tool.annotations?.title ?? tool.name,
        parameters,
        origin: { kind: "mcp", server: this.server, transport: this.transport, tool: tool.name },
      });
    }
    this.#tools = offered;
    this.#originals = originals;
  }

  #createTransport(): StdioClientTransport | StreamableHTTPClientTransport {
    const settings = this.#settings;
    if (settings.url !== undefined) {
      const headers: Record<string, string> = {};
      for (const [header, variable] of Object.entries(settings.headers_env ?? {})) {
        const value = this.#env[variable];
        if (value === undefined) {
          throw new McpConfigError(
            `header ${header} comes from the variable ${variable} (headers_env), which is not set`,
          );
        }
        headers[header] = value;
      }
      return new StreamableHTTPClientTransport(new URL(settings.url), {
        requestInit: { headers },
      });
    }
    if (settings.command === undefined) {
      throw new McpConfigError("give either command (a stdio server) or url (an HTTP server)");
    }
    const env: Record<string, string> = { ...getDefaultEnvironment(), ...settings.env };
    for (const [name, variable] of Object.entries(settings.env_from ?? {})) {
      const value = this.#env[variable];
      if (value === undefined) {
        throw new McpConfigError(
          `env_from sets ${name} from the variable ${variable}, which is not set`,
        );
      }
      env[name] = value;
    }
    return new StdioClientTransport({
      command: settings.command,
      args: settings.args ?? [],
      env,
      stderr: "pipe",
      ...(settings.cwd === undefined ? {} : { cwd: settings.cwd }),
    });
  }

  /** Logs the child's stderr line by line, keeping the last few lines in `tail`. */
  #pipeStderr(stream: Readable, tail: string[]): void {
    const lines = createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY });
    lines.on("line", (line) => {
      const text = line.length > MAX_STDERR_LINE ? `${line.slice(0, MAX_STDERR_LINE)}…` : line;
      if (text.trim() === "") return;
      tail.push(text);
      if (tail.length > STDERR_TAIL) tail.shift();
      this.#logger.warn({ server: this.server, stderr: text }, "MCP server stderr");
    });
    lines.on("error", () => {});
  }

  /** Closes a client and its transport, ending a stdio child. Never rejects. */
  async #shut(
    client: Client,
    transport: StdioClientTransport | StreamableHTTPClientTransport,
  ): Promise<void> {
    if (transport instanceof StreamableHTTPClientTransport && transport.sessionId !== undefined) {
      // Tell a stateful server the session is over, without waiting long for it.
      await Promise.race([
        transport.terminateSession().catch(() => {}),
        new Promise((resolve) => setTimeout(resolve, 1_000).unref()),
      ]);
    }
    await client.close().catch(() => {});
    await transport.close().catch(() => {});
  }

  #failure(error: unknown, connection: Connection, tool: string, timeout: number): SourceOutcome {
    const fail = (type: "timeout" | "unavailable" | "tool_error", text: string): SourceOutcome => ({
      output: text,
      error: { type, message: text },
    });
    if (error instanceof McpError) {
      if (error.code === ErrorCode.RequestTimeout) {
        return fail(
          "timeout",
          `MCP tool "${tool}" of server "${this.server}" took longer than ${timeout} ms`,
        );
      }
      if (error.code === ErrorCode.ConnectionClosed) {
        this.#lost(connection.id, "the connection closed during a call");
        return fail("unavailable", `MCP server "${this.server}" went away during the call`);
      }
      return fail("tool_error", error.message);
    }
    if (error instanceof Error && error.name === "ZodError") {
      return fail(
        "tool_error",
        `MCP server "${this.server}" sent an invalid result: ${error.message}`,
      );
    }
    if (this.transport === "http" && McpToolSource.#isConnectionLoss(error)) {
      this.#lost(connection.id, message(error));
    }
    return fail(
      "unavailable",
      `MCP server "${this.server}" could not be reached: ${message(error)}`,
    );
  }

  /** What the model reads of a tool result. */
  static #outcome(result: CallToolResult): SourceOutcome {
    const parts: string[] = [];
    for (const part of result.content ?? []) {
      switch (part.type) {
        case "text":
          parts.push(part.text);
          break;
        case "image":
        case "audio":
          parts.push(
            `[${part.type}: ${part.mimeType}, ${Buffer.byteLength(part.data, "base64")} bytes]`,
          );
          break;
        case "resource":
          parts.push(
            "text" in part.resource
              ? `[resource: ${part.resource.uri}]\n${part.resource.text}`
              : `[resource: ${part.resource.uri}]`,
          );
          break;
        case "resource_link":
          parts.push(`[resource: ${part.uri}]`);
          break;
        default:
          parts.push(`[${(part as { type: string }).type}]`);
      }
    }
    let output = parts.join("\n");
    if (parts.length === 0 && result.structuredContent !== undefined) {
      output = JSON.stringify(result.structuredContent);
    }
    if (result.isError === true) {
      const text = output === "" ? "the tool failed without saying why" : output;
      return { output: text, error: { type: "tool_error", message: text } };
    }
    return { output };
  }

  /** A URL without credentials or query, for logs and messages. */
  static #redact(url: string): string {
    try {
      const parsed = new URL(url);
      return `${parsed.origin}${parsed.pathname}`;
    } catch {
      return "(invalid URL)";
    }
  }
}
