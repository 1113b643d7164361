import { queryObjects } from "node:v8";
import { type NatsHandle, startNats, waitFor } from "@handoff/testkit";
import {
  builtinTools,
  DEADLINE_HEADER,
  defineTool,
  NatsToolSource,
  serveTools,
  TOOL_SUBJECT_PREFIX,
  Toolbox,
  ToolMetadata,
  type ToolServer,
} from "@handoff/tools";
import type { NatsConnection } from "@nats-io/nats-core";
import { headers } from "@nats-io/nats-core";
import { Svcm } from "@nats-io/services";
import { connect } from "@nats-io/transport-node";
import { context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import {
  InMemorySpanExporter,
  SimpleSpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";

const exporter = new InMemorySpanExporter();
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
const contextManager = new AsyncLocalStorageContextManager();

let nats: NatsHandle;
const connections: NatsConnection[] = [];
const servers: ToolServer[] = [];
const sources: NatsToolSource[] = [];

async function client(): Promise<NatsConnection> {
  const nc = await connect({ servers: nats.url });
  connections.push(nc);
  return nc;
}

/** Counts which replica answered, by the tag it was served with. */
function echo(tag: string) {
  return defineTool({
    name: "echo",
    description: "Echoes its text with the replica that answered.",
    input: z.object({ text: z.string().max(50) }),
    handler: ({ text }) => `${tag}:${text}`,
  });
}

const slow = defineTool({
  name: "slow",
  description: "Answers after `ms` milliseconds, unless aborted first.",
  input: z.object({ ms: z.number().int().min(0) }),
  handler: ({ ms }, ctx) =>
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => resolve("done"), ms);
      ctx.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        aborted.push(ms);
        reject(ctx.signal.reason);
      });
    }),
});
const aborted: number[] = [];

const broken = defineTool({
  name: "broken",
  description: "Always fails.",
  input: z.object({}),
  handler: () => {
    throw new Error("the warehouse API answered 503");
  },
});

async function serve(tools: Parameters<typeof serveTools>[1], name?: string) {
  const server = await serveTools(await client(), tools, name ? { name } : {});
  servers.push(server);
  return server;
}

async function source(options: Parameters<typeof NatsToolSource.start>[1] = {}) {
  const found = await NatsToolSource.start(await client(), {
    intervalMs: 3_600_000,
    discoveryWaitMs: 500,
    ...options,
  });
  sources.push(found);
  return found;
}

const inTime = (ms = 5_000) => ({
  signal: new AbortController().signal,
  deadline: Date.now() + ms,
});

beforeAll(async () => {
  trace.setGlobalTracerProvider(provider);
  context.setGlobalContextManager(contextManager.enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  nats = await startNats();
});

afterEach(async () => {
  for (const s of sources.splice(0)) await s.close();
  for (const s of servers.splice(0)) await s.stop().catch(() => {});
  for (const nc of connections.splice(0)) await nc.close();
  exporter.reset();
});

afterAll(async () => {
  await nats?.stop();
  trace.disable();
  context.disable();
  propagation.disable();
});

describe("tools as NATS services", () => {
  it("are discovered through $SRV.INFO with their description and JSON Schema", async () => {
    await serve([echo("a"), ...builtinTools], "team-tools");
    const found = await source();
    const tools = found.tools().sort((a, b) => a.name.localeCompare(b.name));
    expect(tools.map((t) => t.name)).toEqual(["calculator", "clock", "echo"]);
    const echoTool = tools.find((t) => t.name === "echo");
    expect(echoTool).toMatchObject({
      description: "Echoes its text with the replica that answered.",
      origin: {
        kind: "nats",
        service: "team-tools",
        subject: `${TOOL_SUBJECT_PREFIX}.echo`,
        instances: 1,
      },
    });
    expect(echoTool?.parameters).toMatchObject({
      type: "object",
      properties: { text: { type: "string", maxLength: 50 } },
      required: ["text"],
    });
    expect(await found.call("echo", { text: "hi" }, inTime())).toEqual({ output: "a:hi" });
    expect(await found.call("calculator", { expression: "17 * 23" }, inTime())).toEqual({
      output: "391",
    });
  });

  it("share the calls between the replicas of a service (one queue group)", async () => {
    await serve([echo("one")]);
    await serve([echo("two")]);
    const found = await source();
    expect(found.tools()[0]?.origin).toMatchObject({ instances: 2 });
    const replies = await Promise.all(
      Array.from({ length: 40 }, (_, i) => found.call("echo", { text: String(i) }, inTime())),
    );
    const byReplica = new Map<string, number>();
    for (const reply of replies) {
      const tag = reply.output.split(":")[0] ?? "";
      byReplica.set(tag, (byReplica.get(tag) ?? 0) + 1);
    }
    // Each call answered once, by one of the two, and both took some.
    expect([...byReplica.values()].reduce((a, b) => a + b, 0)).toBe(40);
    expect(byReplica.get("one")).toBeGreaterThan(0);
    expect(byReplica.get("two")).toBeGreaterThan(0);
  });

  it("appear and disappear as services announce themselves, without waiting for a poll", async () => {
    const found = await source();
    expect(found.tools()).toEqual([]);
    const server = await serve([echo("late")]);
    await waitFor(() => found.tools().length === 1, { what: "the announced tool" });
    await server.stop();
    await waitFor(() => found.tools().length === 0, { what: "the tool gone" });
  });

  it("drop an instance that died without a word at the next poll", async () => {
    const nc = await connect({ servers: nats.url });
    await serveTools(nc, [echo("doomed")]);
    const found = await source({ intervalMs: 300 });
    expect(found.tools().map((t) => t.name)).toEqual(["echo"]);
    // Closed, not stopped: no announcement goes out.
    await nc.close();
    await waitFor(() => found.tools().length === 0, { what: "the dead instance dropped" });
  });

  it("turns error replies, timeouts and no responders into tool errors, never exceptions", async () => {
    const server = await serve([broken, slow, echo("x")]);
    const found = await source();

    expect(await found.call("broken", {}, inTime())).toEqual({
      output: "error: the warehouse API answered 503",
      error: { type: "tool_error", message: "the warehouse API answered 503" },
    });
    // The service checks the arguments with the tool's own schema, whoever calls it.
    const bad = await found.call("echo", { text: 5 }, inTime());
    expect(bad.error?.type).toBe("tool_error");
    expect(bad.error?.message).toContain('invalid arguments for "echo": text:');

    const started = Date.now();
    const late = await found.call("slow", { ms: 5_000 }, inTime(300));
    expect(late.error?.type).toBe("timeout");
    expect(Date.now() - started).toBeLessThan(2_000);
    // The service stopped the handler at the deadline the request carried.
    await waitFor(() => aborted.includes(5_000), { what: "the slow handler aborted" });

    await server.stop();
    const gone = await found.call("echo", { text: "anyone?" }, inTime());
    expect(gone.error?.type).toBe("no_responders");
    expect(gone.output).toContain('no instance of the tool service for "echo" is running');
  });

  it("keep nothing of a call once it ended: memory does not grow with the calls made", async () => {
    await serve([echo("a")]);
    const found = await source();
    const nc = await client();
    // The class of a NATS message: each answered call got one, its reply.
    const Message = (await nc.request(`${TOOL_SUBJECT_PREFIX}.echo`, '{"text":"x"}')).constructor;
    const live = () => queryObjects(Message, { format: "count" });
    for (let i = 0; i < 20; i++) await found.call("echo", { text: "warm" }, inTime());
    const before = live();
    for (let i = 0; i < 300; i++) {
      expect(await found.call("echo", { text: String(i) }, inTime())).toEqual({ output: `a:${i}` });
    }
    // Racing each call against one promise that stays pending until the connection drops kept
    // every call, its reply included, for as long as the connection lasted.
    expect(live() - before).toBeLessThan(30);
  });

  it("keep no timer of a call they answered, on either side, until its deadline", async () => {
    await serve([echo("a")]);
    const found = await source();
    const probe = setTimeout(() => {}, 0);
    clearTimeout(probe);
    const timers = async () => {
      // An object a WeakRef was made to stays alive until the macrotask that made it ends.
      await new Promise((resolve) => setImmediate(resolve));
      return queryObjects(probe.constructor, { format: "count" });
    };
    for (let i = 0; i < 20; i++) await found.call("echo", { text: "warm" }, inTime(60_000));
    const before = await timers();
    for (let i = 0; i < 200; i++) await found.call("echo", { text: String(i) }, inTime(60_000));
    // The serving side bounded each call with `AbortSignal.timeout`, whose timer (and the call's
    // span, in the context it keeps) stayed until the caller's deadline, a minute later.
    expect((await timers()) - before).toBeLessThan(20);
  });

  it("refuses to start a call whose deadline has passed", async () => {
    await serve([echo("x")]);
    const nc = await client();
    const h = headers();
    h.set(DEADLINE_HEADER, String(Date.now() - 1));
    const reply = await nc.request(`${TOOL_SUBJECT_PREFIX}.echo`, '{"text":"late"}', {
      timeout: 2_000,
      headers: h,
    });
    expect(reply.headers?.get("Nats-Service-Error-Code")).toBe("504");
    expect(reply.headers?.get("Nats-Service-Error")).toContain("deadline passed");
  });

  it("rejects with the abort reason when the job is cancelled mid-call", async () => {
    await serve([slow]);
    const found = await source();
    const controller = new AbortController();
    const pending = found.call(
      "slow",
      { ms: 2_000 },
      { signal: controller.signal, deadline: Date.now() + 5_000 },
    );
    setTimeout(() => controller.abort(new Error("job cancelled")), 50);
    await expect(pending).rejects.toThrow("job cancelled");
  });

  it("ignores endpoints that are not tools or whose metadata is unusable", async () => {
    const nc = await client();
    const other = await new Svcm(nc).add({ name: "not-tools", version: "1.0.0" });
    other.addEndpoint("plain", { subject: "plain.endpoint", handler: (_e, m) => m.respond("x") });
    other.addEndpoint("bad_schema", {
      subject: `${TOOL_SUBJECT_PREFIX}.bad_schema`,
      metadata: { [ToolMetadata.marker]: "1", [ToolMetadata.schema]: "{not json" },
      handler: (_e, m) => m.respond("x"),
    });
    other.addEndpoint("wrong_subject", {
      subject: "somewhere.else",
      metadata: { [ToolMetadata.marker]: "1", [ToolMetadata.schema]: "{}" },
      handler: (_e, m) => m.respond("x"),
    });
    await serve([echo("fine")]);
    const warnings: object[] = [];
    const found = await source({
      logger: { info: () => {}, warn: (obj) => warnings.push(obj) },
    });
    expect(found.tools().map((t) => t.name)).toEqual(["echo"]);
    expect(warnings).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          tool: "bad_schema",
          problem: expect.stringContaining("not JSON"),
        }),
        expect.objectContaining({
          tool: "wrong_subject",
          problem: expect.stringContaining("somewhere.else"),
        }),
      ]),
    );
    await other.stop();
  });

  it("puts the caller's span and the service's span in one trace", async () => {
    await serve([echo("traced")]);
    const found = await source();
    const box = new Toolbox({ callTimeoutMs: 5_000, maxOutputBytes: 1_000 }, [found]);
    const tracer = trace.getTracer("test");
    const traceId = await tracer.startActiveSpan("job", async (root) => {
      await box.execute(
        { id: "call_1", type: "function", function: { name: "echo", arguments: '{"text":"t"}' } },
        { signal: new AbortController().signal },
        { tier: "mid" },
      );
      root.end();
      return root.spanContext().traceId;
    });
    const spans = await waitFor(
      () => {
        const named = exporter.getFinishedSpans().filter((s) => s.name === "execute_tool echo");
        return named.length === 2 ? named : undefined;
      },
      { what: "both execute_tool spans" },
    );
    const clientSpan = spans.find((s) => s.kind === 2);
    const serverSpan = spans.find((s) => s.kind === 1);
    expect(clientSpan?.spanContext().traceId).toBe(traceId);
    expect(serverSpan?.spanContext().traceId).toBe(traceId);
    expect(serverSpan?.parentSpanContext?.spanId).toBe(clientSpan?.spanContext().spanId);
    expect(clientSpan?.attributes).toMatchObject({
      "gen_ai.tool.name": "echo",
      "handoff.tool.outcome": "ok",
      "handoff.tool.source": "nats",
    });
    expect(serverSpan?.attributes).toMatchObject({
      "gen_ai.tool.name": "echo",
      "handoff.tool.outcome": "ok",
    });
  });
});

describe("tool calls across a lost connection", () => {
  let own: NatsHandle;
  const opened: NatsConnection[] = [];
  const fast = async () => {
    const nc = await connect({
      servers: own.url,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 100,
    });
    opened.push(nc);
    return nc;
  };
  /** A tool that takes `ms` and counts its runs; idempotent or not. */
  const counted = (name: string, idempotent: boolean, runs: string[]) =>
    defineTool({
      name,
      description: "Sleeps, then answers with how many times it ran.",
      idempotent,
      input: z.object({ ms: z.number().int().min(0) }),
      handler: async ({ ms }) => {
        runs.push(name);
        await new Promise((resolve) => setTimeout(resolve, ms));
        return `${name} ran ${runs.filter((r) => r === name).length} time(s)`;
      },
    });

  beforeAll(async () => {
    own = await startNats();
  });
  afterAll(async () => {
    for (const nc of opened.splice(0)) await nc.close().catch(() => {});
    await own?.stop();
  });

  it("calls an idempotent tool again once NATS is back; reports a lost call of any other", async () => {
    const runs: string[] = [];
    await serveTools(await fast(), [counted("lookup", true, runs), counted("charge", false, runs)]);
    const found = await NatsToolSource.start(await fast(), {
      intervalMs: 3_600_000,
      discoveryWaitMs: 500,
    });
    try {
      const deadline = () => ({
        signal: new AbortController().signal,
        deadline: Date.now() + 20_000,
      });
      // Both calls are in flight (the handlers sleep) when the server goes away.
      const lookup = found.call("lookup", { ms: 400 }, deadline());
      const charge = found.call("charge", { ms: 400 }, deadline());
      await waitFor(() => runs.length === 2, { what: "both calls running" });
      await own.restart();
      const [lookedUp, charged] = await Promise.all([lookup, charge]);
      // The lookup's answer was lost with the connection: it was asked again, and answered.
      expect(lookedUp.error).toBeUndefined();
      expect(lookedUp.output).toMatch(/^lookup ran \d time\(s\)$/);
      // The charge may have happened: it is not repeated, and the model is told so.
      expect(charged.error?.type).toBe("unavailable");
      expect(charged.error?.message).toContain("it may have run, and it is not idempotent");
      expect(runs.filter((r) => r === "charge")).toHaveLength(1);
    } finally {
      await found.close();
    }
  });

  it("holds a call made while NATS is down until the connection is back", async () => {
    const nc = await fast();
    await serveTools(nc, builtinTools);
    const found = await NatsToolSource.start(nc, { intervalMs: 3_600_000, discoveryWaitMs: 500 });
    try {
      const disconnected = (async () => {
        for await (const status of nc.status()) if (status.type === "disconnect") return;
      })();
      await own.kill();
      await disconnected;
      // Sent during the outage, a request would be flushed before the subscriptions that answer
      // it are back, and never answered.
      const pending = found.call("calculator", { expression: "2 + 3" }, inTime(10_000));
      await new Promise((resolve) => setTimeout(resolve, 500));
      await own.restart();
      expect(await pending).toEqual({ output: "5" });
    } finally {
      await found.close();
    }
  });

  it("asks again when no instance answered, since then nothing ran", async () => {
    const first = await serveTools(await fast(), [echo("first")]);
    const found = await NatsToolSource.start(await fast(), {
      intervalMs: 3_600_000,
      discoveryWaitMs: 500,
    });
    try {
      // The only instance restarts: for a moment no one listens.
      await first.stop();
      const pending = found.call("echo", { text: "again" }, inTime(10_000));
      await new Promise((resolve) => setTimeout(resolve, 300));
      await serveTools(await fast(), [echo("second")]);
      expect(await pending).toEqual({ output: "second:again" });
    } finally {
      await found.close();
    }
  });
});
