import { context, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import {
  InMemorySpanExporter,
  SimpleSpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createLogger } from "./logger.js";

const exporter = new InMemorySpanExporter();
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
const contextManager = new AsyncLocalStorageContextManager();

beforeAll(() => {
  contextManager.enable();
  context.setGlobalContextManager(contextManager);
  trace.setGlobalTracerProvider(provider);
});

afterAll(async () => {
  trace.disable();
  context.disable();
  await provider.shutdown();
});

/** A destination that keeps every line pino writes, parsed. */
function sink() {
  const lines: Record<string, unknown>[] = [];
  const raw: string[] = [];
  return {
    lines,
    raw,
    write(chunk: string) {
      raw.push(chunk);
      for (const line of chunk.split("\n")) if (line.trim()) lines.push(JSON.parse(line));
    },
  };
}

describe("createLogger", () => {
  it("writes one JSON line per entry with the service, a level label and an ISO time", () => {
    const out = sink();
    const logger = createLogger("classifier", { destination: out });
    logger.info({ job_id: "job_12345678" }, "classified");
    expect(out.raw).toHaveLength(1);
    expect(out.raw[0]?.endsWith("\n")).toBe(true);
    const line = out.lines[0];
    expect(line).toMatchObject({
      level: "info",
      service: "classifier",
      name: "classifier",
      pid: process.pid,
      job_id: "job_12345678",
      msg: "classified",
    });
    expect(new Date(line?.time as string).toISOString()).toBe(line?.time);
  });

  it("labels each level by name", () => {
    const out = sink();
    const logger = createLogger("gateway", { destination: out, level: "debug" });
    logger.debug("d");
    logger.warn("w");
    logger.error("e");
    expect(out.lines.map((l) => [l.level, l.msg])).toEqual([
      ["debug", "d"],
      ["warn", "w"],
      ["error", "e"],
    ]);
  });

  it("drops entries below its level", () => {
    const out = sink();
    const logger = createLogger("gateway", { destination: out, level: "warn" });
    logger.info("hidden");
    logger.warn("shown");
    expect(out.lines.map((l) => l.msg)).toEqual(["shown"]);
  });

  it("takes its level from LOG_LEVEL when none is given", () => {
    vi.stubEnv("LOG_LEVEL", "error");
    try {
      const out = sink();
      const logger = createLogger("gateway", { destination: out });
      logger.warn("hidden");
      logger.error("shown");
      expect(logger.level).toBe("error");
      expect(out.lines.map((l) => l.msg)).toEqual(["shown"]);
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it("adds no trace ids outside a span", () => {
    const out = sink();
    createLogger("gateway", { destination: out }).info("no span");
    expect(out.lines[0]).not.toHaveProperty("trace_id");
    expect(out.lines[0]).not.toHaveProperty("span_id");
  });

  it("adds the active span's trace_id and span_id inside a span", async () => {
    const out = sink();
    const logger = createLogger("tool-executor", { destination: out });
    const tracer = trace.getTracer("logger-test");
    const ids = await tracer.startActiveSpan("work", async (span) => {
      await new Promise((resolve) => setTimeout(resolve, 1));
      logger.info("inside");
      span.end();
      return span.spanContext();
    });
    logger.info("after");
    expect(ids.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(out.lines[0]).toMatchObject({
      msg: "inside",
      trace_id: ids.traceId,
      span_id: ids.spanId,
    });
    expect(out.lines[1]).not.toHaveProperty("trace_id");
    expect(exporter.getFinishedSpans().map((s) => s.name)).toContain("work");
  });

  it("uses the innermost span's id in nested spans", () => {
    const out = sink();
    const logger = createLogger("gateway", { destination: out });
    const tracer = trace.getTracer("logger-test");
    tracer.startActiveSpan("outer", (outer) => {
      tracer.startActiveSpan("inner", (inner) => {
        logger.info("nested");
        expect(out.lines[0]).toMatchObject({
          trace_id: outer.spanContext().traceId,
          span_id: inner.spanContext().spanId,
        });
        inner.end();
      });
      outer.end();
    });
    expect(out.lines).toHaveLength(1);
  });

  it("redacts api keys, authorization headers and nested secrets", () => {
    const out = sink();
    const logger = createLogger("gateway", { destination: out });
    logger.info(
      {
        api_key: "sk-live-123",
        headers: { authorization: "Bearer abc", cookie: "session=1", accept: "json" },
        deployment: { apiKey: "sk-2", model: "gpt", password: "hunter2" },
        upstream: { headers: { authorization: "Bearer def", "x-api-key": "k" } },
        token: "t",
      },
      "calling",
    );
    const line = out.lines[0];
    expect(line).toMatchObject({
      api_key: "[redacted]",
      headers: { authorization: "[redacted]", cookie: "[redacted]", accept: "json" },
      deployment: { apiKey: "[redacted]", model: "gpt", password: "[redacted]" },
      upstream: { headers: { authorization: "[redacted]", "x-api-key": "[redacted]" } },
      token: "[redacted]",
    });
    const text = out.raw.join("");
    for (const secret of ["sk-live-123", "Bearer abc", "sk-2", "hunter2", "Bearer def"]) {
      expect(text).not.toContain(secret);
    }
  });

  it("keeps the service on child loggers", () => {
    const out = sink();
    createLogger("heavy-reasoner", { destination: out }).child({ job_id: "j1" }).info("child");
    expect(out.lines[0]).toMatchObject({ service: "heavy-reasoner", job_id: "j1", msg: "child" });
  });
});
