import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { SERVICE_NODE_OPTIONS } from "@handoff/nats-process";
import {
  checkTrace,
  findNatsServer,
  freePort,
  freePorts,
  type NatsHandle,
  SpanCollector,
  spawnService,
  startNats,
  waitFor,
} from "@handoff/testkit";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { context, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { CompressionAlgorithm } from "@opentelemetry/otlp-exporter-base";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { SimpleSpanProcessor, TracerProvider } from "@opentelemetry/sdk-trace";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";

describe("freePort / waitFor", () => {
  it("returns usable ports, distinct when taken together", async () => {
    expect(await freePort()).toBeGreaterThan(0);
    const [a, b] = await freePorts(2);
    expect(a).toBeGreaterThan(0);
    expect(b).not.toBe(a);
  });

  it("waitFor resolves with the first truthy value and reports timeouts", async () => {
    let calls = 0;
    const value = await waitFor(() => (++calls >= 3 ? { calls } : undefined), { intervalMs: 5 });
    expect(value).toEqual({ calls: 3 });
    await expect(
      waitFor(
        () => {
          throw new Error("not yet there");
        },
        { timeoutMs: 100, intervalMs: 10, what: "the impossible" },
      ),
    ).rejects.toThrow(
      /timed out after 100 ms waiting for the impossible; last error: not yet there/,
    );
  });
});

describe("startNats", () => {
  const handles: NatsHandle[] = [];
  const connections: NatsConnection[] = [];
  beforeAll(() => {
    // The suite exercises the spawned-process path; a developer's NATS_URL would bypass it.
    vi.stubEnv("NATS_URL", undefined);
  });

  afterEach(async () => {
    await Promise.all(connections.splice(0).map((nc) => nc.close().catch(() => {})));
    await Promise.all(handles.splice(0).map((h) => h.stop()));
  });

  afterAll(() => {
    vi.unstubAllEnvs();
  });

  const start = async (options?: { jetstream?: boolean }) => {
    const handle = await startNats(options);
    handles.push(handle);
    return handle;
  };

  const client = async (url: string) => {
    const nc = await connect({
      servers: url,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 100,
    });
    connections.push(nc);
    return nc;
  };

  /**
   * Requests issued while the client is still disconnected can be lost, so tests wait for the
   * client's own reconnect rather than just for the server.
   */
  const nextReconnect = (nc: NatsConnection, timeoutMs = 10_000) => {
    const statuses = nc.status();
    const reconnected = (async () => {
      for await (const status of statuses) {
        if (status.type === "reconnect") return;
      }
      throw new Error("connection closed before it reconnected");
    })();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`client did not reconnect within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    return Promise.race([reconnected, timeout]).finally(() => clearTimeout(timer));
  };

  it("finds a nats-server binary on this machine", () => {
    expect(findNatsServer()).toMatch(/nats-server$/);
  });

  it("spawns a fresh JetStream server; restart keeps the store and clients reconnect; stop removes the store", async () => {
    const nats = await start();
    expect(nats.kind).toBe("process");
    expect(nats.url).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);
    // Never the shared server on the default port.
    expect(nats.url).not.toMatch(/:4222$/);
    const storeDir = nats.storeDir;
    expect(storeDir).toBeDefined();
    expect(existsSync(storeDir as string)).toBe(true);

    const nc = await client(nats.url);
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "TESTKIT", subjects: ["testkit.>"] });
    await jetstream(nc).publish("testkit.one", "hello");
    expect((await jsm.streams.info("TESTKIT")).state.messages).toBe(1);

    const reconnect = nextReconnect(nc);
    await nats.restart();
    await reconnect;

    const info = await waitFor(() => jsm.streams.info("TESTKIT"), {
      what: "stream info after restart",
    });
    expect(info.config.subjects).toEqual(["testkit.>"]);
    expect(info.state.messages).toBe(1);
    const msg = await jsm.streams.getMessage("TESTKIT", { seq: 1 });
    expect(msg?.string()).toBe("hello");

    await nc.close();
    await nats.stop();
    expect(existsSync(storeDir as string)).toBe(false);
    await expect(
      connect({ servers: nats.url, reconnect: false, timeout: 1_000 }),
    ).rejects.toThrow();
    // A second stop is harmless; using a stopped server is an error.
    await nats.stop();
    await expect(nats.restart()).rejects.toThrow(/after stop/);
  });

  it("kill() drops the server hard and restart() recovers the stream from the kept store", async () => {
    const nats = await start();
    const nc = await client(nats.url);
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "KILLED", subjects: ["killed.>"] });
    await jetstream(nc).publish("killed.a", "1");

    const reconnect = nextReconnect(nc);
    await nats.kill();
    await expect(
      connect({ servers: nats.url, reconnect: false, timeout: 1_000 }),
    ).rejects.toThrow();
    expect(existsSync(nats.storeDir as string)).toBe(true);

    await nats.restart();
    await reconnect;
    const info = await waitFor(() => jsm.streams.info("KILLED"), {
      what: "stream info after kill + restart",
    });
    expect(info.state.messages).toBe(1);
  });

  it("starts without JetStream when asked", async () => {
    const nats = await start({ jetstream: false });
    const nc = await client(nats.url);
    await expect(jetstreamManager(nc)).rejects.toThrow();
    // Core NATS still works.
    const sub = nc.subscribe("plain.subject", { max: 1 });
    nc.publish("plain.subject", "ping");
    for await (const m of sub) expect(m.string()).toBe("ping");
  });

  it("uses NATS_URL as an external server and refuses to restart or kill it", async () => {
    const real = await start();
    vi.stubEnv("NATS_URL", real.url);
    try {
      const external = await startNats();
      expect(external.kind).toBe("external");
      expect(external.url).toBe(real.url);
      await expect(external.restart()).rejects.toThrow(/spawned by the testkit/);
      await expect(external.kill()).rejects.toThrow(/spawned by the testkit/);
      await external.stop();
      // stop() on an external server must leave it running.
      const nc = await client(real.url);
      await nc.flush();
    } finally {
      vi.stubEnv("NATS_URL", undefined);
    }
  });
});

describe("SpanCollector", () => {
  let collector: SpanCollector;

  beforeAll(async () => {
    collector = await SpanCollector.start();
  });

  afterEach(() => collector.clear());

  afterAll(async () => {
    await collector.close();
  });

  const provider = (options: { gzip?: boolean } = {}) =>
    new TracerProvider({
      resource: resourceFromAttributes({ "service.name": "testkit-test" }),
      spanProcessors: [
        new SimpleSpanProcessor({
          exporter: new OTLPTraceExporter({
            url: `${collector.endpoint}/v1/traces`,
            compression: options.gzip ? CompressionAlgorithm.GZIP : CompressionAlgorithm.NONE,
          }),
        }),
      ],
    });

  it("exposes an http endpoint on 127.0.0.1", () => {
    expect(collector.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  });

  it("receives real OTLP/JSON spans with parents, kinds, attributes and status", async () => {
    const tp = provider();
    const tracer = tp.getTracer("testkit");
    const root = tracer.startSpan("root", { kind: SpanKind.SERVER });
    const rootCtx = trace.setSpan(context.active(), root);
    const child = tracer.startSpan(
      "child",
      {
        kind: SpanKind.PRODUCER,
        attributes: {
          "str.attr": "value",
          "int.attr": 42,
          "double.attr": 1.5,
          "bool.attr": true,
          "array.attr": ["a", "b"],
        },
      },
      rootCtx,
    );
    const grandchild = tracer.startSpan(
      "grandchild",
      { kind: SpanKind.CONSUMER },
      trace.setSpan(rootCtx, child),
    );
    grandchild.setStatus({ code: SpanStatusCode.ERROR, message: "boom" });
    grandchild.end();
    child.end();
    root.end();
    await tp.forceFlush();
    await tp.shutdown();

    const traceId = root.spanContext().traceId;
    const spans = await collector.waitFor((all) => all.length >= 3);
    expect(spans).toHaveLength(3);
    expect(collector.trace(traceId)).toHaveLength(3);

    const byName = Object.fromEntries(spans.map((s) => [s.name, s]));
    const r = byName.root;
    const c = byName.child;
    const g = byName.grandchild;
    expect(r?.parentSpanId).toBeUndefined();
    expect(r?.spanId).toBe(root.spanContext().spanId);
    expect(r?.kind).toBe("SERVER");
    expect(r?.serviceName).toBe("testkit-test");
    expect(c?.parentSpanId).toBe(r?.spanId);
    expect(c?.kind).toBe("PRODUCER");
    expect(c?.attributes).toEqual({
      "str.attr": "value",
      "int.attr": 42,
      "double.attr": 1.5,
      "bool.attr": true,
      "array.attr": ["a", "b"],
    });
    expect(g?.parentSpanId).toBe(c?.spanId);
    expect(g?.kind).toBe("CONSUMER");
    expect(g?.status).toEqual({ code: "ERROR", message: "boom" });
    for (const s of spans) {
      expect(s.traceId).toBe(traceId);
      expect(s.startTimeUnixNano).toBeGreaterThan(1_600_000_000_000_000_000n);
      expect(s.endTimeUnixNano).toBeGreaterThanOrEqual(s.startTimeUnixNano);
    }

    const check = checkTrace(spans);
    expect(check.roots.map((s) => s.name)).toEqual(["root"]);
    expect(check.broken).toEqual([]);

    // Losing the middle span must show up as a broken link.
    const missingMiddle = checkTrace(spans.filter((s) => s.name !== "child"));
    expect(missingMiddle.broken.map((s) => s.name)).toEqual(["grandchild"]);
  });

  it("accepts gzip from the real exporter", async () => {
    const tp = provider({ gzip: true });
    tp.getTracer("testkit").startSpan("gzipped").end();
    await tp.forceFlush();
    await tp.shutdown();
    const spans = await collector.waitFor((all) => all.some((s) => s.name === "gzipped"));
    expect(spans[0]?.serviceName).toBe("testkit-test");
  });

  it("decodes hand-written gzip JSON with string enums, string ints and numeric times", async () => {
    const body = {
      resourceSpans: [
        {
          resource: { attributes: [{ key: "service.name", value: { stringValue: "manual" } }] },
          scopeSpans: [
            {
              scope: { name: "manual" },
              spans: [
                {
                  traceId: "5B8EFFF798038103D269B633813FC60C",
                  spanId: "EEE19B7EC3C1B174",
                  parentSpanId: "",
                  name: "manual-span",
                  kind: "SPAN_KIND_CLIENT",
                  startTimeUnixNano: 1_700_000_000_000_000_000,
                  endTimeUnixNano: "1700000000500000000",
                  attributes: [
                    { key: "big", value: { intValue: "9007199254740993" } },
                    { key: "small", value: { intValue: "7" } },
                    {
                      key: "list",
                      value: { arrayValue: { values: [{ intValue: 1 }, { stringValue: "x" }] } },
                    },
                  ],
                  status: { code: 1 },
                },
              ],
            },
          ],
        },
      ],
    };
    const res = await fetch(`${collector.endpoint}/v1/traces`, {
      method: "POST",
      headers: { "content-type": "application/json", "content-encoding": "gzip" },
      body: gzipSync(JSON.stringify(body)),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({});
    const [span] = collector.trace("5b8efff798038103d269b633813fc60c");
    expect(span).toEqual({
      traceId: "5b8efff798038103d269b633813fc60c",
      spanId: "eee19b7ec3c1b174",
      name: "manual-span",
      kind: "CLIENT",
      serviceName: "manual",
      resource: { "service.name": "manual" },
      attributes: { big: "9007199254740993", small: 7, list: [1, "x"] },
      startTimeUnixNano: 1_700_000_000_000_000_000n,
      endTimeUnixNano: 1_700_000_000_500_000_000n,
      status: { code: "OK" },
    });
  });

  it("rejects protobuf with 415 and a hint, and records metrics and logs", async () => {
    const proto = await fetch(`${collector.endpoint}/v1/traces`, {
      method: "POST",
      headers: { "content-type": "application/x-protobuf" },
      body: new Uint8Array([0x0a, 0x00]),
    });
    expect(proto.status).toBe(415);
    expect(await proto.text()).toContain("OTEL_EXPORTER_OTLP_PROTOCOL=http/json");

    for (const signal of ["metrics", "logs"] as const) {
      const res = await fetch(`${collector.endpoint}/v1/${signal}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ [signal === "metrics" ? "resourceMetrics" : "resourceLogs"]: [] }),
      });
      expect(res.status).toBe(200);
    }
    expect(collector.payloads("metrics")).toEqual([
      { signal: "metrics", contentType: "application/json", body: { resourceMetrics: [] } },
    ]);
    expect(collector.payloads("logs")).toHaveLength(1);
    expect(collector.spans()).toEqual([]);
  });

  it("waitFor rejects with a listing of what it received", async () => {
    await fetch(`${collector.endpoint}/v1/traces`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        resourceSpans: [
          {
            scopeSpans: [
              {
                spans: [
                  {
                    traceId: "0af7651916cd43dd8448eb211c80319c",
                    spanId: "b7ad6b7169203331",
                    name: "lonely",
                    kind: 2,
                  },
                ],
              },
            ],
          },
        ],
      }),
    });
    await expect(collector.waitFor((all) => all.length > 1, 200)).rejects.toThrow(
      /received 1 span\(s\):\n.*"lonely" SERVER/,
    );
  });
});

describe("spawnService", () => {
  let dir: string;
  let entry: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "testkit-service-"));
    entry = join(dir, "service.mjs");
    await writeFile(
      entry,
      [
        "const log = (msg, extra = {}) => console.log(JSON.stringify({ level: 30, msg, ...extra }));",
        'console.log("plain text banner");',
        'console.error("something on stderr");',
        'log("starting", { greeting: process.env.GREETING, nodeOptions: process.env.NODE_OPTIONS });',
        'setTimeout(() => log("ready", { port: 1234 }), 50);',
        'process.on("SIGTERM", () => { log("stopping"); process.exit(7); });',
        "setInterval(() => {}, 1000);",
      ].join("\n"),
    );
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("captures JSON logs and raw output, and stop() reports the exit", async () => {
    const svc = spawnService({ name: "demo", entry, env: { GREETING: "hi" }, cwd: dir });
    expect(svc.pid).toBeGreaterThan(0);
    const ready = await svc.waitForLog((line) => line.msg === "ready");
    expect(ready.port).toBe(1234);
    expect(svc.logs().find((l) => l.msg === "starting")?.greeting).toBe("hi");
    // Started as every launcher starts a service: with the heap limits.
    expect(svc.logs().find((l) => l.msg === "starting")?.nodeOptions).toContain(
      SERVICE_NODE_OPTIONS,
    );
    expect(svc.logs().every((l) => typeof l.msg === "string")).toBe(true);
    expect(svc.output()).toContain("plain text banner");
    expect(svc.output()).toContain("something on stderr");

    const exit = await svc.stop();
    expect(exit).toEqual({ code: 7, signal: null });
    expect(svc.logs().at(-1)?.msg).toBe("stopping");
    expect(await svc.exited).toEqual(exit);
  });

  it("kill() ends a process that ignores SIGTERM politely", async () => {
    const stubborn = join(dir, "stubborn.mjs");
    await writeFile(
      stubborn,
      'process.on("SIGTERM", () => {}); console.log(JSON.stringify({ msg: "up" })); setInterval(() => {}, 1000);',
    );
    const svc = spawnService({ name: "stubborn", entry: stubborn });
    await svc.waitForLog((l) => l.msg === "up");
    await svc.kill();
    expect(await svc.exited).toEqual({ code: null, signal: "SIGKILL" });

    // stop() escalates to SIGKILL once its grace period runs out.
    const again = spawnService({ name: "stubborn-2", entry: stubborn });
    await again.waitForLog((l) => l.msg === "up");
    expect(await again.stop(300)).toEqual({ code: null, signal: "SIGKILL" });
  });

  it("waitForLog rejects with the output tail on timeout and on early exit", async () => {
    const svc = spawnService({ name: "demo", entry, env: { GREETING: undefined } });
    await expect(svc.waitForLog((l) => l.msg === "never", 300)).rejects.toThrow(
      /demo: no matching log line within 300 ms[\s\S]*plain text banner/,
    );
    await svc.stop();

    const crasher = join(dir, "crash.mjs");
    await writeFile(crasher, 'console.log("about to fail"); process.exit(3);');
    const crashed = spawnService({ name: "crasher", entry: crasher });
    await expect(crashed.waitForLog(() => true)).rejects.toThrow(
      /crasher exited \(code 3, signal null\)[\s\S]*about to fail/,
    );
  });
});
