import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type McpLogger, type McpServerConfig, McpToolSource, mcpToolName } from "./mcp.js";
import type { SourceCallContext } from "./source.js";

const FIXTURE = fileURLToPath(
  new URL("../../../test/fixtures/mcp-notes-server.ts", import.meta.url),
);
const LAUNCH_NOTE = "The Handoff launch is on 2027-03-14; the code word is PELICAN.";

interface Entry {
  level: "info" | "warn" | "error";
  obj: Record<string, unknown>;
  msg: string;
}

function recordingLogger(): McpLogger & { entries: Entry[] } {
  const entries: Entry[] = [];
  const log = (level: Entry["level"]) => (obj: object, msg: string) => {
    entries.push({ level, obj: obj as Record<string, unknown>, msg });
  };
  return { entries, info: log("info"), warn: log("warn"), error: log("error") };
}

function ctx(ms = 5_000, signal: AbortSignal = new AbortController().signal): SourceCallContext {
  return { signal, deadline: Date.now() + ms };
}

async function waitFor(check: () => boolean, ms = 5_000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

function stdioServer(name = "notes"): McpServerConfig {
  return { name, command: process.execPath, args: [FIXTURE] };
}

/** Starts the fixture over streamable HTTP and waits for its port. */
async function httpServer(
  port: number,
  ...extra: string[]
): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [FIXTURE, "--http", String(port), ...extra], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  for await (const line of lines) {
    const match = /^listening (\d+)$/.exec(line);
    if (match) return { child, port: Number(match[1]) };
  }
  throw new Error("the fixture exited before listening");
}

async function stop(child: ChildProcess | undefined): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGKILL");
  await exited;
}

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  server.close();
  await once(server, "close");
  if (typeof address !== "object" || address === null) throw new Error("no port");
  return address.port;
}

describe("mcpToolName", () => {
  it("namespaces, sanitises and shortens tool names", () => {
    expect(mcpToolName("docs", "search")).toBe("docs__search");
    expect(mcpToolName("docs", "files.read/v2")).toBe("docs__files_read_v2");
    const long = mcpToolName("docs", "x".repeat(100));
    expect(long).toHaveLength(64);
    expect(long).toMatch(/^docs__x+_[0-9a-f]{8}$/);
    expect(mcpToolName("docs", "x".repeat(100))).toBe(long);
    expect(mcpToolName("docs", `${"x".repeat(99)}y`)).not.toBe(long);
  });
});

describe("McpToolSource over stdio", () => {
  const logger = recordingLogger();
  let source: McpToolSource;

  beforeAll(async () => {
    process.env.HANDOFF_MCP_TEST_SECRET = "parent-only";
    process.env.HANDOFF_MCP_TEST_TOKEN = "token-for-child";
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    source = await McpToolSource.connect(
      {
        ...stdioServer(),
        env: { NOTES_PLAIN: "plain-value" },
        env_from: { NOTES_TOKEN: "HANDOFF_MCP_TEST_TOKEN" },
      },
      { logger },
    );
  });

  afterAll(async () => {
    await source?.close();
    context.disable();
    propagation.disable();
    delete process.env.HANDOFF_MCP_TEST_SECRET;
    delete process.env.HANDOFF_MCP_TEST_TOKEN;
  });

  it("lists the server's tools, namespaced, with their schemas", () => {
    expect(source.name).toBe("mcp:notes");
    const tools = source.tools();
    expect(tools.map((tool) => tool.name)).toEqual(
      expect.arrayContaining([
        "notes__lookup_note",
        "notes__slow",
        "notes__echo_meta",
        "notes__env",
        "notes__add_tool",
        "notes__crash",
      ]),
    );
    const lookup = tools.find((tool) => tool.name === "notes__lookup_note");
    expect(lookup).toEqual({
      name: "notes__lookup_note",
      description: "Returns the stored note about a topic.",
      parameters: {
        type: "object",
        properties: {
          topic: { type: "string", description: "The note's topic, like handoff-launch" },
        },
        required: ["topic"],
      },
      origin: { kind: "mcp", server: "notes", transport: "stdio", tool: "lookup_note" },
    });
    for (const tool of tools) expect(tool.name).toMatch(/^[A-Za-z0-9_-]{1,64}$/);
  });

  it("logs the child's stderr line by line at warn", () => {
    const lines = logger.entries
      .filter((entry) => entry.msg === "MCP server stderr")
      .map((entry) => [entry.level, entry.obj.stderr]);
    expect(lines).toContainEqual(["warn", "notes server: ready on stdio"]);
    expect(lines).toContainEqual(["warn", "notes server: 3 notes loaded"]);
  });

  it("calls a tool and returns its text", async () => {
    const outcome = await source.call("notes__lookup_note", { topic: "handoff-launch" }, ctx());
    expect(outcome).toEqual({ output: LAUNCH_NOTE });
  });

  it("turns an isError result into a tool_error, message passed through", async () => {
    const outcome = await source.call("notes__lookup_note", { topic: "mars-base" }, ctx());
    expect(outcome.error?.type).toBe("tool_error");
    expect(outcome.output).toMatch(/^No note about "mars-base"\. Known topics: handoff-launch/);
    expect(outcome.error?.message).toBe(outcome.output);
  });

  it("reports arguments the server rejects as a tool_error", async () => {
    const outcome = await source.call("notes__lookup_note", { topic: 42 }, ctx());
    expect(outcome.error?.type).toBe("tool_error");
    expect(outcome.output).toMatch(/topic/);
  });

  it("summarises non-text content and falls back to structured content", async () => {
    expect(await source.call("notes__mixed", {}, ctx())).toEqual({
      output: [
        "see attached",
        "[image: image/png, 10 bytes]",
        "[resource: notes://handoff-launch]",
        "[resource: notes://lunch-order]",
        "Friday lunch is ordered from the noodle bar at 11:30.",
      ].join("\n"),
    });
    expect(await source.call("notes__count_notes", {}, ctx())).toEqual({ output: '{"count":3}' });
  });

  it("answers unknown_tool for a name it does not offer", async () => {
    const outcome = await source.call("notes__nope", {}, ctx());
    expect(outcome.error?.type).toBe("unknown_tool");
  });

  it("times out at the deadline, quickly", async () => {
    const started = Date.now();
    const outcome = await source.call("notes__slow", { ms: 5_000 }, ctx(300));
    expect(Date.now() - started).toBeLessThan(1_500);
    expect(outcome.error?.type).toBe("timeout");
    expect(outcome.output).toMatch(/^MCP tool "slow" of server "notes" took longer than \d+ ms$/);
    // The server is still there for the next call.
    expect((await source.call("notes__slow", { ms: 10 }, ctx())).output).toBe("done");
  });

  it("rejects with the abort reason when the signal fires", async () => {
    const controller = new AbortController();
    const reason = new Error("job cancelled");
    setTimeout(() => controller.abort(reason), 100);
    const started = Date.now();
    await expect(
      source.call("notes__slow", { ms: 5_000 }, ctx(10_000, controller.signal)),
    ).rejects.toBe(reason);
    expect(Date.now() - started).toBeLessThan(1_500);
    await expect(
      source.call("notes__lookup_note", { topic: "handoff-launch" }, ctx(5_000, controller.signal)),
    ).rejects.toBe(reason);
  });

  it("carries the active trace context to the server in _meta", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const spanId = "00f067aa0ba902b7";
    const active = trace.setSpanContext(context.active(), { traceId, spanId, traceFlags: 1 });
    const outcome = await context.with(active, () => source.call("notes__echo_meta", {}, ctx()));
    expect(JSON.parse(outcome.output)).toMatchObject({ traceparent: `00-${traceId}-${spanId}-01` });
  });

  it("passes env and env_from to the child, and nothing else of the parent's", async () => {
    const env = async (name: string) =>
      JSON.parse((await source.call("notes__env", { name }, ctx())).output);
    expect(await env("NOTES_PLAIN")).toEqual({ set: true, value: "plain-value" });
    expect(await env("NOTES_TOKEN")).toEqual({ set: true, value: "token-for-child" });
    expect(await env("HANDOFF_MCP_TEST_SECRET")).toEqual({ set: false });
    expect(await env("HANDOFF_MCP_TEST_TOKEN")).toEqual({ set: false });
    expect((await env("PATH")).set).toBe(true);
  });

  it("follows notifications/tools/list_changed", async () => {
    const added = await source.call("notes__add_tool", { name: "late.tool" }, ctx());
    expect(added.output).toBe("added late.tool");
    await waitFor(() => source.tools().some((tool) => tool.name === "notes__late_tool"));
    const late = source.tools().find((tool) => tool.name === "notes__late_tool");
    expect(late?.origin).toEqual({
      kind: "mcp",
      server: "notes",
      transport: "stdio",
      tool: "late.tool",
    });
    expect(late?.description).toBe("Added at runtime: late.tool");
    expect((await source.call("notes__late_tool", {}, ctx())).output).toBe("this is late.tool");
  });
});

describe("McpToolSource lifecycle", () => {
  it("reports a crashed server as unavailable, then reconnects", async () => {
    const logger = recordingLogger();
    const source = await McpToolSource.connect(stdioServer("crashy"), { logger });
    try {
      const crashed = await source.call("crashy__crash", {}, ctx());
      expect(crashed.error?.type).toBe("unavailable");
      expect(source.tools()).toEqual([]);
      const meanwhile = await source.call(
        "crashy__lookup_note",
        { topic: "handoff-launch" },
        ctx(),
      );
      expect(meanwhile.error).toEqual({
        type: "unavailable",
        message: 'MCP server "crashy" is not connected',
      });

      await waitFor(() => source.connected);
      expect(source.tools().length).toBeGreaterThan(0);
      const again = await source.call("crashy__lookup_note", { topic: "handoff-launch" }, ctx());
      expect(again).toEqual({ output: LAUNCH_NOTE });
      const messages = logger.entries.map((entry) => entry.msg);
      expect(messages).toContain("MCP server lost; reconnecting");
      expect(messages.filter((msg) => msg === "MCP server connected")).toHaveLength(2);
    } finally {
      await source.close();
    }
  });

  it("fails to connect with an error naming the server and the missing variable", async () => {
    await expect(
      McpToolSource.connect(
        { ...stdioServer("docs"), env_from: { TOKEN: "HANDOFF_MCP_TEST_MISSING" } },
        { env: {} },
      ),
    ).rejects.toThrow(
      /^MCP server "docs" \(stdio: .*mcp-notes-server\.ts\) failed to start: env_from sets TOKEN from the variable HANDOFF_MCP_TEST_MISSING, which is not set$/,
    );
  });

  it("fails to connect when the command does not exist or dies at once", async () => {
    await expect(
      McpToolSource.connect({ name: "ghost", command: "/nonexistent/mcp-server" }),
    ).rejects.toThrow(
      /^MCP server "ghost" \(stdio: \/nonexistent\/mcp-server\) failed to start: .*ENOENT/,
    );
    await expect(
      McpToolSource.connect({
        name: "dies",
        command: process.execPath,
        args: ["-e", "console.error('no config found'); process.exit(3)"],
      }),
    ).rejects.toThrow(
      /^MCP server "dies" .* failed to start: .*Connection closed.*no config found/,
    );
  });

  it("start() does not retry a missing variable, and ready() says why", async () => {
    const logger = recordingLogger();
    const source = McpToolSource.start(
      { ...stdioServer("docs"), env_from: { TOKEN: "HANDOFF_MCP_TEST_MISSING" } },
      { env: {}, logger },
    );
    await expect(source.ready()).rejects.toThrow(/HANDOFF_MCP_TEST_MISSING/);
    expect(source.tools()).toEqual([]);
    expect(logger.entries.map((entry) => entry.level)).toEqual(["error"]);
    await source.close();
  });
});

describe("McpToolSource over streamable HTTP", () => {
  let server: { child: ChildProcess; port: number } | undefined;
  let restarted: ChildProcess | undefined;

  afterAll(async () => {
    await stop(server?.child);
    await stop(restarted);
  });

  it("sends headers from headers_env, and the server needs them", async () => {
    server = await httpServer(0, "--require-header", "X-Api-Key=s3cret");
    const url = `http://127.0.0.1:${server.port}/mcp`;
    const settings = { name: "remote", url, headers_env: { "X-Api-Key": "NOTES_KEY" } };

    const source = await McpToolSource.connect(settings, { env: { NOTES_KEY: "s3cret" } });
    try {
      const lookup = source.tools().find((tool) => tool.name === "remote__lookup_note");
      expect(lookup?.origin).toEqual({
        kind: "mcp",
        server: "remote",
        transport: "http",
        tool: "lookup_note",
      });
      const outcome = await source.call("remote__lookup_note", { topic: "handoff-launch" }, ctx());
      expect(outcome).toEqual({ output: LAUNCH_NOTE });

      await source.call("remote__add_tool", { name: "http_late" }, ctx());
      await waitFor(() => source.tools().some((tool) => tool.name === "remote__http_late"));
    } finally {
      await source.close();
    }

    await expect(McpToolSource.connect(settings, { env: { NOTES_KEY: "wrong" } })).rejects.toThrow(
      /^MCP server "remote" \(http: http:\/\/127\.0\.0\.1:\d+\/mcp\) failed to start: .*401/,
    );
    await expect(McpToolSource.connect(settings, { env: {} })).rejects.toThrow(
      /failed to start: header X-Api-Key comes from the variable NOTES_KEY \(headers_env\), which is not set$/,
    );
  });

  it("start() waits for a server that is not up yet, and reconnects after it restarts", async () => {
    const port = await freePort();
    const logger = recordingLogger();
    const source = McpToolSource.start(
      { name: "later", url: `http://127.0.0.1:${port}/mcp` },
      { logger },
    );
    try {
      expect(source.tools()).toEqual([]);
      expect((await source.call("later__lookup_note", { topic: "x" }, ctx())).error?.type).toBe(
        "unavailable",
      );
      await waitFor(() =>
        logger.entries.some((entry) => entry.msg === "MCP server unavailable; retrying"),
      );

      restarted = (await httpServer(port)).child;
      await source.ready();
      expect(source.tools().length).toBeGreaterThan(0);
      expect(await source.call("later__lookup_note", { topic: "handoff-launch" }, ctx())).toEqual({
        output: LAUNCH_NOTE,
      });

      await stop(restarted);
      const down = await source.call("later__lookup_note", { topic: "handoff-launch" }, ctx());
      expect(down.error?.type).toBe("unavailable");
      await waitFor(() => !source.connected);
      expect(source.tools()).toEqual([]);

      restarted = (await httpServer(port)).child;
      await waitFor(() => source.connected, 8_000);
      expect(await source.call("later__lookup_note", { topic: "handoff-launch" }, ctx())).toEqual({
        output: LAUNCH_NOTE,
      });
    } finally {
      await source.close();
    }
  }, 15_000);
});
