import { HandoffConfig as ConfigSchema, type HandoffConfig, simProfile } from "@handoff/config";
import {
  ChatCompletion,
  ChatCompletionChunk,
  ErrorBody,
  HandoffError,
  JobRecord,
  Streams,
} from "@handoff/contracts";
import { ensureTopology, type MeshService, StageRunner } from "@handoff/mesh";
import { type NatsHandle, startNats, waitFor } from "@handoff/testkit";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import {
  InMemorySpanExporter,
  SimpleSpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClassifierService } from "../../services/classifier/src/service.js";
import { createGateway, type Gateway } from "../../services/gateway/src/service.js";
import { createHeavyReasonerService } from "../../services/heavy-reasoner/src/service.js";
import { createToolExecutorService } from "../../services/tool-executor/src/service.js";

const logger = pino({ level: "silent" });

/** The `data:` payloads of a server-sent-events body, in order. */
function sseData(body: string): string[] {
  return body
    .split("\n\n")
    .flatMap((event) => event.split("\n").filter((line) => line.startsWith("data: ")))
    .map((line) => line.slice("data: ".length));
}
const exporter = new InMemorySpanExporter();
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
const contextManager = new AsyncLocalStorageContextManager();

/** A config whose mid tier is slower than its timeout: every tool call fails, retryably. */
function brokenMidTier(): HandoffConfig {
  return ConfigSchema.parse({
    ...simProfile,
    tiers: {
      ...simProfile.tiers,
      mid: [{ provider: "sim", model: "sim-slow", latency_ms: 2_000, timeout_ms: 100 }],
    },
    limits: { ...simProfile.limits, max_deliveries: 2, max_body_bytes: 4_096 },
  });
}

describe("gateway against a live mesh", () => {
  let nats: NatsHandle;
  let nc: NatsConnection;
  let gateway: Gateway;
  let app: FastifyInstance;
  const workers: MeshService[] = [];

  beforeAll(async () => {
    trace.setGlobalTracerProvider(provider);
    context.setGlobalContextManager(contextManager.enable());
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    nats = await startNats();
    nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    const config = ConfigSchema.parse({
      ...simProfile,
      limits: { ...simProfile.limits, max_body_bytes: 4_096, request_timeout_ms: 10_000 },
    });
    const deps = { nc, config, logger, version: "0.0.0-test", concurrency: 4 };
    workers.push(
      createClassifierService(deps),
      createToolExecutorService(deps),
      createHeavyReasonerService(deps),
    );
    for (const worker of workers) await worker.start();
    gateway = createGateway({
      nc,
      config,
      logger,
      version: "0.0.0-test",
      host: "127.0.0.1",
      port: 0,
    });
    await gateway.start();
    if (!gateway.app) throw new Error("gateway did not build its app");
    app = gateway.app;
  });

  afterAll(async () => {
    await gateway?.stop();
    for (const worker of workers) await worker.stop();
    await nc?.close();
    await nats?.stop();
    trace.disable();
    context.disable();
    propagation.disable();
  });

  const chat = (content: string, extra: Record<string, unknown> = {}) =>
    app.inject({
      method: "POST",
      url: "/v1/chat/completions",
      payload: { model: "handoff", messages: [{ role: "user", content }], ...extra },
    });

  it("answers arithmetic through the tool-executor with a real calculator call", async () => {
    const res = await chat("What is 17 * 23?");
    expect(res.statusCode).toBe(200);
    const body = ChatCompletion.parse(res.json());
    expect(body.choices[0]?.message.content).toContain("391");
    expect(body.choices[0]?.finish_reason).toBe("stop");
    expect(body.handoff.route).toEqual(["classifier", "tool-executor"]);
    expect(body.handoff.decision?.decision).toBe("tools");
    expect(body.handoff.usage.map((u) => [u.stage, u.tier, u.model])).toEqual([
      ["tool-executor", "mid", "sim-mid"],
      ["tool-executor", "mid", "sim-mid"],
    ]);
    const sum = body.handoff.usage.reduce((s, u) => s + u.cost_usd, 0);
    expect(body.handoff.cost_usd).toBeCloseTo(sum, 9);
    expect(body.handoff.cost_usd).toBeGreaterThan(0);
    expect(body.usage.total_tokens).toBe(body.usage.prompt_tokens + body.usage.completion_tokens);
    expect(body.handoff.trace_id).toMatch(/^[0-9a-f]{32}$/);
    expect(res.headers["x-handoff-job-id"]).toBe(body.handoff.job_id);
    expect(res.headers["x-handoff-trace-id"]).toBe(body.handoff.trace_id);

    // The calculator ran inside the request's trace.
    const tool = exporter.getFinishedSpans().find((s) => s.name === "execute_tool calculator");
    expect(tool?.spanContext().traceId).toBe(body.handoff.trace_id);
  });

  it("routes a proof to the heavy-reasoner and answers a greeting in the classifier", async () => {
    const proof = ChatCompletion.parse(
      (await chat("Prove step by step that there are infinitely many primes.")).json(),
    );
    expect(proof.handoff.route.at(-1)).toBe("heavy-reasoner");
    expect(proof.handoff.usage.at(-1)).toMatchObject({ stage: "heavy-reasoner", tier: "heavy" });

    const hello = ChatCompletion.parse((await chat("Hello there!")).json());
    expect(hello.handoff.route).toEqual(["classifier"]);
    expect(hello.handoff.usage).toHaveLength(1);
    expect(hello.handoff.usage[0]).toMatchObject({
      stage: "classifier",
      tier: "light",
      simulated: true,
    });
  });

  it("returns a client-defined tool call to the client, unrun", async () => {
    const res = await chat("What's the weather in Paris?", {
      tools: [
        {
          type: "function",
          function: {
            name: "get_weather",
            parameters: { type: "object", properties: { city: { type: "string" } } },
          },
        },
      ],
    });
    const body = ChatCompletion.parse(res.json());
    expect(body.choices[0]?.finish_reason).toBe("tool_calls");
    expect(body.choices[0]?.message.tool_calls?.[0]?.function.name).toBe("get_weather");
  });

  it("stores the job record, served by GET /v1/jobs/:id", async () => {
    const done = ChatCompletion.parse((await chat("What is 2 + 2?")).json());
    const res = await app.inject({ method: "GET", url: `/v1/jobs/${done.handoff.job_id}` });
    expect(res.statusCode).toBe(200);
    const record = JobRecord.parse(res.json());
    expect(record).toMatchObject({
      id: done.handoff.job_id,
      status: "succeeded",
      hops: ["classifier", "tool-executor"],
      trace_id: done.handoff.trace_id,
    });
    expect(record.result?.message.content).toContain("4");
    expect(JSON.stringify(record)).not.toContain("What is 2 + 2?"); // prompts are not stored
  });

  it("answers 404 for an unknown job and 400 for a malformed id", async () => {
    const missing = await app.inject({ method: "GET", url: "/v1/jobs/no-such-job-123" });
    expect(missing.statusCode).toBe(404);
    expect(ErrorBody.parse(missing.json()).error.code).toBe("HANDOFF_ERR_NOT_FOUND");
    const bad = await app.inject({ method: "GET", url: "/v1/jobs/bad!id" });
    expect(bad.statusCode).toBe(400);
    expect(ErrorBody.parse(bad.json()).error.issues?.[0]?.path).toBe("(root)");
  });

  it("rejects an invalid request with 400 naming each zod issue path", async () => {
    const res = await app.inject({
      method: "POST",
      url: "/v1/chat/completions",
      payload: { model: "x", messages: [{ role: "robot", content: "hi" }], temperature: 7 },
    });
    expect(res.statusCode).toBe(400);
    const { error } = ErrorBody.parse(res.json());
    expect(error.type).toBe("invalid_request_error");
    expect(error.code).toBe("HANDOFF_ERR_VALIDATION");
    expect(error.issues?.map((i) => i.path)).toEqual(
      expect.arrayContaining(["messages[0].role", "temperature"]),
    );
    expect(error.message).toContain("messages[0].role");
  });

  it("rejects malformed JSON with 400 and a non-JSON body with 415", async () => {
    const malformed = await app.inject({
      method: "POST",
      url: "/v1/chat/completions",
      headers: { "content-type": "application/json" },
      payload: '{"model": ',
    });
    expect(malformed.statusCode).toBe(400);
    expect(ErrorBody.parse(malformed.json()).error.message).toMatch(/not valid JSON/);

    const text = await app.inject({
      method: "POST",
      url: "/v1/chat/completions",
      headers: { "content-type": "text/plain" },
      payload: "hello",
    });
    expect(text.statusCode).toBe(415);
  });

  it("streams a completion as OpenAI chunks from the answering tier, ending in [DONE]", async () => {
    const res = await chat("What is 17 * 23?", {
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toMatch(/^text\/event-stream/);
    const events = sseData(res.body);
    expect(events.at(-1)).toBe("[DONE]");
    const chunks = events.slice(0, -1).map((e) => ChatCompletionChunk.parse(JSON.parse(e)));
    expect(chunks[0]?.choices[0]?.delta.role).toBe("assistant");
    // Several content deltas, relayed from the tool-executor as the model produced them.
    const deltas = chunks.flatMap((c) => c.choices.map((ch) => ch.delta.content ?? ""));
    expect(deltas.filter((d) => d !== "").length).toBeGreaterThan(1);
    expect(deltas.join("")).toBe("17 * 23 = 391.");
    const finish = chunks.find((c) => c.choices[0]?.finish_reason);
    expect(finish?.choices[0]?.finish_reason).toBe("stop");
    const usage = chunks.at(-1);
    expect(usage?.choices).toEqual([]);
    expect(usage?.usage?.total_tokens).toBeGreaterThan(0);
    expect(usage?.handoff?.route).toEqual(["classifier", "tool-executor"]);
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
  });

  it("ends a stream whose job fails with an error event in OpenAI's shape", async () => {
    const res = await chat("Prove that P != NP.", { stream: true, max_cost_usd: 0.000001 });
    expect(res.statusCode).toBe(200);
    const events = sseData(res.body);
    const last = JSON.parse(events.at(-1) ?? "{}");
    expect(ErrorBody.parse(last).error.code).toBe("HANDOFF_ERR_BUDGET");
    expect(events).not.toContain("[DONE]");
  });

  it("accepts a job asynchronously and streams its record's changes until it ends", async () => {
    const res = await app.inject({
      method: "POST",
      url: "/v1/jobs",
      payload: { model: "handoff", messages: [{ role: "user", content: "What is 6 * 7?" }] },
    });
    expect(res.statusCode).toBe(202);
    const job = res.json<{ id: string; status: string; links: { events: string } }>();
    expect(job.status).toBe("queued");
    expect(res.headers.location).toBe(`/v1/jobs/${job.id}`);
    const events = await app.inject({ method: "GET", url: job.links.events });
    expect(events.headers["content-type"]).toMatch(/^text\/event-stream/);
    const records = sseData(events.body).map((e) => JobRecord.parse(JSON.parse(e)));
    expect(records.at(-1)?.status).toBe("succeeded");
    expect(records.at(-1)?.result?.message.content).toContain("42");
    expect(events.body).toContain("event: succeeded");
    const missing = await app.inject({ method: "GET", url: "/v1/jobs/no-such-job-123/events" });
    expect(missing.statusCode).toBe(404);
  });

  it("lists the models: routed, pinned per tier, and every deployment", async () => {
    const res = await app.inject({ method: "GET", url: "/v1/models" });
    const ids = res.json<{ object: string; data: Array<{ id: string }> }>().data.map((m) => m.id);
    expect(ids.slice(0, 4)).toEqual(["handoff", "handoff/light", "handoff/mid", "handoff/heavy"]);
    expect(ids).toEqual(expect.arrayContaining(["sim:sim-light", "sim:sim-mid", "sim:sim-heavy"]));
  });

  it("honours a pinned tier in the model name", async () => {
    const body = ChatCompletion.parse((await chat("Hello!", { model: "handoff/heavy" })).json());
    expect(body.handoff.route.at(-1)).toBe("heavy-reasoner");
    expect(body.handoff.decision).toMatchObject({
      decision: "heavy",
      strategy: "pinned",
      confidence: 1,
    });
  });

  it("degrades a proof to a cheaper tier when the budget cannot afford the heavy one", async () => {
    const body = ChatCompletion.parse(
      (
        await chat("Prove step by step that there are infinitely many primes.", {
          max_cost_usd: 0.0002,
        })
      ).json(),
    );
    expect(body.handoff.route.at(-1)).toBe("heavy-reasoner");
    expect(body.handoff.usage.at(-1)?.tier).not.toBe("heavy");
    expect(body.handoff.cost_usd).toBeLessThanOrEqual(0.0002);
  });

  it("ends a job with a budget error when no tier is affordable, and checks the budget header", async () => {
    const res = await app.inject({
      method: "POST",
      url: "/v1/chat/completions",
      headers: { "x-handoff-max-cost-usd": "0.0000001" },
      payload: { model: "handoff", messages: [{ role: "user", content: "What is 2 + 2?" }] },
    });
    expect(res.statusCode).toBe(402);
    const { error } = ErrorBody.parse(res.json());
    expect(error.code).toBe("HANDOFF_ERR_BUDGET");
    expect(error.message).toMatch(/budget has \$[0-9.e-]+ left/);
    expect(error.job_id).toBeDefined();
    const bad = await app.inject({
      method: "POST",
      url: "/v1/chat/completions",
      headers: { "x-handoff-max-cost-usd": "lots" },
      payload: { model: "handoff", messages: [{ role: "user", content: "hi" }] },
    });
    expect(bad.statusCode).toBe(400);
    expect(ErrorBody.parse(bad.json()).error.param).toBe("headers.x-handoff-max-cost-usd");
  });

  it("answers 413 for a body over the limit", async () => {
    const res = await chat("x".repeat(10_000));
    expect(res.statusCode).toBe(413);
    expect(ErrorBody.parse(res.json()).error.code).toBe("HANDOFF_ERR_BODY_TOO_LARGE");
  });

  it("reports healthz and readyz, and 404s unknown routes in OpenAI's error shape", async () => {
    expect((await app.inject({ method: "GET", url: "/healthz" })).statusCode).toBe(200);
    expect((await app.inject({ method: "GET", url: "/readyz" })).statusCode).toBe(200);
    const unknown = await app.inject({ method: "GET", url: "/v1/nope" });
    expect(unknown.statusCode).toBe(404);
    expect(ErrorBody.parse(unknown.json()).error.type).toBe("not_found_error");
  });

  it("serves the JSON Schema of every wire message", async () => {
    const res = await app.inject({ method: "GET", url: "/v1/schemas/job-envelope.schema.json" });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({
      type: "object",
      required: expect.arrayContaining(["id", "plan"]),
    });
    expect((await app.inject({ method: "GET", url: "/v1/schemas/nope" })).statusCode).toBe(404);
  });
});

describe("gateway failure paths", () => {
  let nats: NatsHandle;
  let nc: NatsConnection;

  beforeAll(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  });

  afterAll(async () => {
    await nc?.close();
    await nats?.stop();
  });

  it("answers 504 at the deadline when no stage takes the job, and keeps its record", async () => {
    const gateway = createGateway({
      nc,
      config: simProfile,
      logger,
      version: "0.0.0-test",
      host: "127.0.0.1",
      port: 0,
    });
    await gateway.start();
    try {
      const started = Date.now();
      const res = await gateway.app?.inject({
        method: "POST",
        url: "/v1/chat/completions",
        headers: { "x-handoff-timeout-ms": "400" },
        payload: { model: "handoff", messages: [{ role: "user", content: "hi" }] },
      });
      expect(res?.statusCode).toBe(504);
      expect(Date.now() - started).toBeLessThan(5_000);
      const { error } = ErrorBody.parse(res?.json());
      expect(error.code).toBe("HANDOFF_ERR_DEADLINE");
      expect(error.job_id).toBeDefined();
      const record = await gateway.app?.inject({ method: "GET", url: `/v1/jobs/${error.job_id}` });
      // The record says at once that the job is over, and why.
      expect(JobRecord.parse(record?.json())).toMatchObject({
        status: "failed",
        stage: "classifier",
        error: { code: "HANDOFF_ERR_DEADLINE" },
      });

      const badHeader = await gateway.app?.inject({
        method: "POST",
        url: "/v1/chat/completions",
        headers: { "x-handoff-timeout-ms": "soon" },
        payload: { model: "handoff", messages: [{ role: "user", content: "hi" }] },
      });
      expect(badHeader?.statusCode).toBe(400);
      expect(ErrorBody.parse(badHeader?.json()).error.param).toBe("headers.x-handoff-timeout-ms");
    } finally {
      await gateway.stop();
      // Leave no queued job behind for the next test's workers.
      await (await jetstreamManager(nc)).streams.purge(Streams.jobs);
    }
  });

  it("ends a stream with an error, never a mix of two answers, when a redelivery answers differently", async () => {
    const gateway = createGateway({
      nc,
      config: simProfile,
      logger,
      version: "0.0.0-test",
      host: "127.0.0.1",
      port: 0,
    });
    await gateway.start();
    const topology = await ensureTopology(nc, { ackWaitMs: 2_000, maxDeliveries: 3 });
    // The first delivery streams part of an answer and fails; the second answers otherwise.
    const runner = new StageRunner({
      nc,
      topology,
      stage: "classifier",
      instance: "flaky",
      logger,
      limits: { ackWaitMs: 2_000, maxDeliveries: 3, maxHops: 8 },
      concurrency: 1,
      backoffMs: () => 50,
      handler: async (envelope, ctx) => {
        if (ctx.delivery === 1) {
          ctx.relay?.({ type: "text", delta: "The first answer " }, "test");
          await new Promise((resolve) => setTimeout(resolve, 100));
          throw HandoffError.retryable("HANDOFF_ERR_PROVIDER", "the connection dropped");
        }
        ctx.relay?.({ type: "text", delta: "The second answer." }, "test");
        return {
          ...envelope,
          result: {
            message: { role: "assistant", content: "The second answer." },
            finish_reason: "stop",
            stage: "classifier",
            provider: "test",
            model: "test",
          },
        };
      },
    });
    await runner.start();
    try {
      const res = await gateway.app?.inject({
        method: "POST",
        url: "/v1/chat/completions",
        payload: { model: "handoff", stream: true, messages: [{ role: "user", content: "hi" }] },
      });
      const events = sseData(res?.body ?? "");
      const text = events
        .filter((data) => data !== "[DONE]" && !data.includes('"error"'))
        .map((data) => ChatCompletionChunk.parse(JSON.parse(data)).choices[0]?.delta.content ?? "")
        .join("");
      expect(text).toBe("The first answer ");
      expect(events.at(-1)).not.toBe("[DONE]");
      const { error } = ErrorBody.parse(JSON.parse(events.at(-1) ?? "{}"));
      expect(error.message).toMatch(/differs from its final answer/);
    } finally {
      await runner.stop();
      await gateway.stop();
    }
  });

  it("answers 502 with the job id when a stage exhausts its retries", async () => {
    const config = brokenMidTier();
    const deps = { nc, config, logger, version: "0.0.0-test", concurrency: 2 };
    const workers = [createClassifierService(deps), createToolExecutorService(deps)];
    for (const worker of workers) await worker.start();
    const gateway = createGateway({ ...deps, host: "127.0.0.1", port: 0 });
    await gateway.start();
    try {
      const res = await gateway.app?.inject({
        method: "POST",
        url: "/v1/chat/completions",
        payload: { model: "handoff", messages: [{ role: "user", content: "What is 6 * 7?" }] },
      });
      expect(res?.statusCode).toBe(502);
      const { error } = ErrorBody.parse(res?.json());
      expect(error.code).toBe("HANDOFF_ERR_RETRIES_EXHAUSTED");
      expect(error.message).toContain("2 attempts (sim:sim-slow: timeout; sim:sim-slow: timeout)");
      expect(error.message).toContain("did not answer within 100 ms");
      expect(error.job_id).toMatch(/.+/);
    } finally {
      await gateway.stop();
      for (const worker of workers) await worker.stop();
    }
  });

  it("is not ready while NATS is down, and ready again after it returns", async () => {
    const gateway = createGateway({
      nc,
      config: simProfile,
      logger,
      version: "0.0.0-test",
      host: "127.0.0.1",
      port: 0,
    });
    await gateway.start();
    try {
      const readyz = async () =>
        (await gateway.app?.inject({ method: "GET", url: "/readyz" }))?.statusCode;
      expect(await readyz()).toBe(200);
      await nats.kill();
      await waitFor(async () => ((await readyz()) === 503 ? true : undefined), {
        timeoutMs: 10_000,
      });
      await nats.restart();
      await waitFor(async () => ((await readyz()) === 200 ? true : undefined), {
        timeoutMs: 15_000,
      });
    } finally {
      await gateway.stop();
    }
  });
});
