import { randomBytes, randomUUID } from "node:crypto";
import { HandoffConfig } from "@handoff/config";
import { ChatCompletion, ChatCompletionChunk, ErrorBody, JobRecord } from "@handoff/contracts";
import {
  ensureIdempotencyBucket,
  ensureTopology,
  IDEMPOTENCY_BUCKET,
  JobStore,
  type MeshService,
  meshLimits,
  recordFromEnvelope,
} from "@handoff/mesh";
import { createModel, ModelRouter } from "@handoff/providers";
import {
  findNatsServer,
  type NatsHandle,
  openaiModelReply,
  spawnNatsServer,
  testEnvelope,
  UpstreamServer,
  waitFor,
} from "@handoff/testkit";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClassifierService } from "../../services/classifier/src/service.js";
import {
  IdempotencyStore,
  idempotencyEntryKey,
  requestHash,
} from "../../services/gateway/src/idempotency.js";
import { createGateway, type Gateway } from "../../services/gateway/src/service.js";
import { createHeavyReasonerService } from "../../services/heavy-reasoner/src/service.js";
import { createToolExecutorService } from "../../services/tool-executor/src/service.js";

// `Idempotency-Key` against a live mesh whose every tier calls a local server speaking OpenAI's
// wire format: each model call the mesh makes is a request that server records, so "never a
// second run" is counted where it costs money.

const binary = findNatsServer();
if (!binary) throw new Error("these tests need nats-server on PATH (apt-get install nats-server)");

const logger = pino({ level: "silent" });
const KEYS = { teamA: randomBytes(24).toString("hex"), teamB: randomBytes(24).toString("hex") };
const GATEWAY_ENV = { HANDOFF_TEST_KEY_TEAM_A: KEYS.teamA, HANDOFF_TEST_KEY_TEAM_B: KEYS.teamB };
const UPSTREAM_ENV = { UPSTREAM_OPENAI_KEY: "sk-upstream-openai" };
/** Small, so that a job larger than one NATS message is easy to send. */
const MAX_PAYLOAD = 65_536;

function config(upstreamUrl: string): HandoffConfig {
  const openai = {
    provider: "openai-compatible",
    base_url: `${upstreamUrl}/v1`,
    api_key_env: "UPSTREAM_OPENAI_KEY",
    price: { input_per_mtok: 1, output_per_mtok: 2 },
  };
  return HandoffConfig.parse({
    tiers: {
      light: [{ ...openai, id: "oa-light", model: "gpt-4o-mini" }],
      mid: [{ ...openai, id: "oa-mid", model: "gpt-4o" }],
      heavy: [{ ...openai, id: "oa-heavy", model: "o3" }],
    },
    limits: { request_timeout_ms: 20_000 },
    gateway: {
      api_keys: [
        { name: "team-a", key_env: "HANDOFF_TEST_KEY_TEAM_A" },
        { name: "team-b", key_env: "HANDOFF_TEST_KEY_TEAM_B" },
      ],
    },
  });
}

let nats: NatsHandle;
let nc: NatsConnection;
let upstream: UpstreamServer;
let gateway: Gateway;
let app: FastifyInstance;
let settings: HandoffConfig;
const workers: MeshService[] = [];

beforeAll(async () => {
  nats = await spawnNatsServer(binary as string, { config: `max_payload: ${MAX_PAYLOAD}\n` });
  nc = await connect({ servers: nats.url });
  upstream = await UpstreamServer.start(openaiModelReply);
  settings = config(upstream.url);
  const router = new ModelRouter(settings, (d) => createModel(d, UPSTREAM_ENV));
  const deps = { nc, config: settings, logger, version: "0.0.0-test", concurrency: 4, router };
  workers.push(
    createClassifierService(deps),
    createToolExecutorService(deps),
    createHeavyReasonerService(deps),
  );
  for (const worker of workers) await worker.start();
  gateway = createGateway({
    nc,
    config: settings,
    logger,
    version: "0.0.0-test",
    host: "127.0.0.1",
    port: 0,
    env: GATEWAY_ENV,
  });
  await gateway.start();
  if (!gateway.app) throw new Error("gateway did not build its app");
  app = gateway.app;
});

afterAll(async () => {
  await gateway?.stop();
  for (const worker of workers) await worker.stop();
  await upstream?.close();
  await nc?.close();
  await nats?.stop();
});

type Headers = Record<string, string>;
const as = (key: string, idempotencyKey?: string): Headers => ({
  authorization: `Bearer ${key}`,
  ...(idempotencyKey !== undefined ? { "idempotency-key": idempotencyKey } : {}),
});
const ask = (content: string, extra: Record<string, unknown> = {}) => ({
  model: "handoff",
  messages: [{ role: "user", content }],
  ...extra,
});
const post = (url: string, headers: Headers, payload: unknown) =>
  app.inject({
    method: "POST",
    url,
    headers: { "content-type": "application/json", ...headers },
    payload: typeof payload === "string" ? payload : JSON.stringify(payload),
  });

/** Model calls the mesh made for prompts containing `marker`. */
const modelCalls = (marker: string) =>
  upstream.requests.filter((r) => JSON.stringify(r.body.messages ?? []).includes(marker)).length;

/** Letters only: digits and dashes would read as arithmetic to the scripted model. */
const newMarker = () =>
  Array.from(randomBytes(16), (byte) => String.fromCharCode(97 + (byte % 26))).join("");

/** A prompt the light tier answers directly, marked so its model calls can be counted. */
const hello = (marker: string) => `Hello there, I am ${marker}`;

async function finished(id: string, key: string): Promise<JobRecord> {
  let record: JobRecord | undefined;
  await waitFor(async () => {
    const res = await app.inject({ method: "GET", url: `/v1/jobs/${id}`, headers: as(key) });
    if (res.statusCode !== 200) return false;
    record = JobRecord.parse(res.json());
    return record.status === "succeeded" || record.status === "failed";
  });
  if (!record) throw new Error(`job ${id} did not finish`);
  return record;
}

/** The `data:` payloads of a server-sent-events body, in order. */
function sseData(body: string): string[] {
  return body
    .split("\n\n")
    .flatMap((event) => event.split("\n").filter((line) => line.startsWith("data: ")))
    .map((line) => line.slice("data: ".length));
}

function streamedText(body: string): { text: string; chunks: ChatCompletionChunk[] } {
  const data = sseData(body);
  expect(data.at(-1)).toBe("[DONE]");
  const chunks = data.slice(0, -1).map((d) => ChatCompletionChunk.parse(JSON.parse(d)));
  return { text: chunks.map((c) => c.choices[0]?.delta.content ?? "").join(""), chunks };
}

describe("Idempotency-Key on POST /v1/jobs", () => {
  it("answers the same key and body with the same job, replayed, and runs it once", async () => {
    const marker = newMarker();
    const key = `order-${marker}`;
    const first = await post("/v1/jobs", as(KEYS.teamA, key), ask(hello(marker)));
    expect(first.statusCode).toBe(202);
    expect(first.headers["idempotent-replayed"]).toBeUndefined();
    const accepted = first.json<{ id: string }>();
    const record = await finished(accepted.id, KEYS.teamA);
    expect(record.status).toBe("succeeded");
    const once = modelCalls(marker);
    expect(once).toBeGreaterThanOrEqual(1);

    // The same request, written differently: other key order, other spacing.
    const again = await post(
      "/v1/jobs",
      as(KEYS.teamA, key),
      `{ "messages" : [ { "content": ${JSON.stringify(hello(marker))}, "role": "user" } ],   "model": "handoff" }`,
    );
    expect(again.statusCode).toBe(202);
    expect(again.headers["idempotent-replayed"]).toBe("true");
    expect(again.headers.location).toBe(`/v1/jobs/${accepted.id}`);
    expect(again.json()).toEqual(accepted);
    expect(modelCalls(marker)).toBe(once);
  });

  it("gives concurrent requests with one key one job", async () => {
    const marker = newMarker();
    const key = `burst-${marker}`;
    const responses = await Promise.all(
      Array.from({ length: 6 }, () => post("/v1/jobs", as(KEYS.teamA, key), ask(hello(marker)))),
    );
    expect(responses.map((r) => r.statusCode)).toEqual(Array(6).fill(202));
    const ids = new Set(responses.map((r) => r.json<{ id: string }>().id));
    expect(ids.size).toBe(1);
    // Exactly one of them submitted; the others replayed its job.
    expect(responses.filter((r) => r.headers["idempotent-replayed"] === "true")).toHaveLength(5);
    const [id] = [...ids];
    const record = await finished(id as string, KEYS.teamA);
    // One model call per usage entry of the one job: six jobs would have made six times as many.
    expect(record.usage.length).toBeGreaterThanOrEqual(1);
    expect(modelCalls(marker)).toBe(record.usage.length);
  });

  it("refuses the same key with a different body or route with a 422 naming the key", async () => {
    const marker = newMarker();
    const key = `reuse-${marker}`;
    const first = await post("/v1/jobs", as(KEYS.teamA, key), ask(hello(marker)));
    expect(first.statusCode).toBe(202);

    for (const res of [
      await post("/v1/jobs", as(KEYS.teamA, key), ask(hello(`${marker} but different`))),
      await post("/v1/jobs", as(KEYS.teamA, key), ask(hello(marker), { temperature: 0.5 })),
      await post("/v1/chat/completions", as(KEYS.teamA, key), ask(hello(marker))),
    ]) {
      expect(res.statusCode).toBe(422);
      const { error } = ErrorBody.parse(res.json());
      expect(error.code).toBe("HANDOFF_ERR_IDEMPOTENCY_MISMATCH");
      expect(error.message).toContain(`Idempotency-Key "${key}"`);
      expect(error.param).toBe("headers.idempotency-key");
    }
    // Nothing ran for the refused requests.
    await finished(first.json<{ id: string }>().id, KEYS.teamA);
    expect(modelCalls(`${marker} but different`)).toBe(0);
  });

  it("scopes keys by API key: another tenant's same key is its own job", async () => {
    const marker = newMarker();
    const key = `shared-${marker}`;
    const a = await post("/v1/jobs", as(KEYS.teamA, key), ask(hello(marker)));
    const b = await post("/v1/jobs", as(KEYS.teamB, key), ask(hello(marker)));
    expect([a.statusCode, b.statusCode]).toEqual([202, 202]);
    expect(b.headers["idempotent-replayed"]).toBeUndefined();
    const idA = a.json<{ id: string }>().id;
    const idB = b.json<{ id: string }>().id;
    expect(idB).not.toBe(idA);
    expect((await finished(idA, KEYS.teamA)).owner).toBe("team-a");
    expect((await finished(idB, KEYS.teamB)).owner).toBe("team-b");
    // And a different body from the other tenant is no conflict either.
    const c = await post("/v1/jobs", as(KEYS.teamB, `${key}-2`), ask(hello(`${marker}-2`)));
    const d = await post("/v1/jobs", as(KEYS.teamA, `${key}-2`), ask(hello(`${marker}-3`)));
    expect([c.statusCode, d.statusCode]).toEqual([202, 202]);
  });

  it("refuses a malformed key with a 400 naming the header, before anything runs", async () => {
    const marker = newMarker();
    for (const bad of ["x".repeat(256), "tab\there", "clé"]) {
      const res = await post("/v1/jobs", as(KEYS.teamA, bad), ask(hello(marker)));
      expect(res.statusCode, JSON.stringify(bad)).toBe(400);
      const { error } = ErrorBody.parse(res.json());
      expect(error.code).toBe("HANDOFF_ERR_VALIDATION");
      expect(error.message).toContain("Idempotency-Key");
      expect(error.param).toBe("headers.idempotency-key");
    }
    // 255 printable characters, spaces and punctuation included, are a key.
    const longest = `${"k ~!".repeat(63)}end`;
    expect(longest).toHaveLength(255);
    const ok = await post("/v1/jobs", as(KEYS.teamA, longest), ask(hello(marker)));
    expect(ok.statusCode).toBe(202);
  });

  it("releases the key of a job that could not be queued, so the key is not stuck", async () => {
    const marker = newMarker();
    const key = `too-big-${marker}`;
    // Over the server's max_payload: refused (413) before anything is stored.
    const big = ask(`${hello(marker)} ${"x".repeat(MAX_PAYLOAD)}`);
    const refused = await post("/v1/jobs", as(KEYS.teamA, key), big);
    expect(refused.statusCode).toBe(413);
    expect(ErrorBody.parse(refused.json()).error.code).toBe("HANDOFF_ERR_MAX_PAYLOAD");
    const bucket = await ensureIdempotencyBucket(nc, {});
    expect(await bucket.get(idempotencyEntryKey("team-a", key))).toMatchObject({
      operation: "DEL",
    });
    // The key is free again: a fixed (smaller) request with it is a new job, not a 422.
    const retried = await post("/v1/jobs", as(KEYS.teamA, key), ask(hello(marker)));
    expect(retried.statusCode).toBe(202);
    expect(retried.headers["idempotent-replayed"]).toBeUndefined();
    expect((await finished(retried.json<{ id: string }>().id, KEYS.teamA)).status).toBe(
      "succeeded",
    );
  });
});

describe("Idempotency-Key on POST /v1/chat/completions", () => {
  it("replays the answer without a second model call", async () => {
    const marker = newMarker();
    const key = `chat-${marker}`;
    const first = await post("/v1/chat/completions", as(KEYS.teamA, key), ask(hello(marker)));
    expect(first.statusCode).toBe(200);
    const answer = ChatCompletion.parse(first.json());
    expect(answer.choices[0]?.message.content).toContain(marker);
    const once = modelCalls(marker);
    expect(once).toBeGreaterThanOrEqual(1);

    const again = await post("/v1/chat/completions", as(KEYS.teamA, key), ask(hello(marker)));
    expect(again.statusCode).toBe(200);
    expect(again.headers["idempotent-replayed"]).toBe("true");
    expect(again.headers["x-handoff-job-id"]).toBe(answer.handoff.job_id);
    expect(ChatCompletion.parse(again.json())).toEqual(answer);
    expect(modelCalls(marker)).toBe(once);
  });

  it("gives concurrent identical requests one job and all of them its answer", async () => {
    const marker = newMarker();
    const key = `chat-burst-${marker}`;
    const responses = await Promise.all(
      Array.from({ length: 4 }, () =>
        post("/v1/chat/completions", as(KEYS.teamA, key), ask(hello(marker))),
      ),
    );
    expect(responses.map((r) => r.statusCode)).toEqual([200, 200, 200, 200]);
    const answers = responses.map((r) => ChatCompletion.parse(r.json()));
    expect(new Set(answers.map((a) => a.handoff.job_id)).size).toBe(1);
    expect(new Set(answers.map((a) => a.choices[0]?.message.content)).size).toBe(1);
    expect(responses.filter((r) => r.headers["idempotent-replayed"] === "true")).toHaveLength(3);
    expect(modelCalls(marker)).toBe(answers[0]?.handoff.usage.length);
  });

  it("replays a streamed answer as a stream, whole, without a second model call", async () => {
    const marker = newMarker();
    const key = `stream-${marker}`;
    const request = ask(hello(marker), { stream: true, stream_options: { include_usage: true } });
    const first = await post("/v1/chat/completions", as(KEYS.teamA, key), request);
    expect(first.statusCode).toBe(200);
    const streamed = streamedText(first.body);
    expect(streamed.text).toContain(marker);
    const once = modelCalls(marker);
    expect(once).toBeGreaterThanOrEqual(1);

    const again = await post("/v1/chat/completions", as(KEYS.teamA, key), request);
    expect(again.statusCode).toBe(200);
    expect(again.headers["content-type"]).toContain("text/event-stream");
    expect(again.headers["idempotent-replayed"]).toBe("true");
    expect(again.headers["x-handoff-job-id"]).toBe(first.headers["x-handoff-job-id"]);
    const replayed = streamedText(again.body);
    expect(replayed.text).toBe(streamed.text);
    // Closed as the first stream was: the finish reason, then usage and the handoff report.
    expect(replayed.chunks.at(-2)?.choices[0]?.finish_reason).toBe(
      streamed.chunks.at(-2)?.choices[0]?.finish_reason,
    );
    expect(replayed.chunks.at(-1)?.usage).toEqual(streamed.chunks.at(-1)?.usage);
    expect(replayed.chunks.at(-1)?.handoff?.job_id).toBe(first.headers["x-handoff-job-id"]);
    expect(modelCalls(marker)).toBe(once);
  });
});

describe("the idempotency store", () => {
  let bucket: KV;
  let jobs: JobStore;

  beforeAll(async () => {
    bucket = await ensureIdempotencyBucket(nc, { idempotencyWindowMs: 60_000 });
    jobs = new JobStore((await ensureTopology(nc, meshLimits(settings))).jobs);
  });

  const request = (key: string, jobId = randomUUID()) => ({
    tenant: "team-a",
    key,
    bodyHash: requestHash("POST /v1/jobs", { n: 1 }),
    job: {
      job_id: jobId,
      created_at: new Date().toISOString(),
      deadline: new Date(Date.now() + 30_000).toISOString(),
    },
  });
  const storeJob = async (id: string) => {
    const envelope = testEnvelope({ id });
    expect(await jobs.create(recordFromEnvelope(envelope, "queued", undefined))).toBe(true);
  };

  it("lives in its own bucket, only when asked for", async () => {
    expect((await bucket.status()).bucket).toBe(IDEMPOTENCY_BUCKET);
    const topology = await ensureTopology(nc, meshLimits(settings));
    expect(topology.idempotency).toBeUndefined();
    const withWindow = await ensureTopology(nc, {
      ...meshLimits(settings),
      idempotencyWindowMs: 60_000,
    });
    expect((await withWindow.idempotency?.status())?.bucket).toBe(IDEMPOTENCY_BUCKET);
  });

  it("makes a request wait for an earlier claim's job, then replays it", async () => {
    const store = new IdempotencyStore(bucket, jobs, { windowMs: 60_000, pollMs: 10 });
    const key = randomUUID();
    const winner = await store.acquire(request(key));
    expect(winner.kind).toBe("claimed");
    const waiting = store.acquire(request(key));
    await new Promise((resolve) => setTimeout(resolve, 150));
    await storeJob(winner.kind === "claimed" ? winner.jobId : "");
    const loser = await waiting;
    expect(loser.kind).toBe("replay");
    expect(loser.kind === "replay" && loser.record.id).toBe(
      winner.kind === "claimed" && winner.jobId,
    );
  });

  it("lets the next request claim a released key at once", async () => {
    const store = new IdempotencyStore(bucket, jobs, {
      windowMs: 60_000,
      pendingTimeoutMs: 20_000,
    });
    const key = randomUUID();
    const first = await store.acquire(request(key));
    if (first.kind !== "claimed") throw new Error("expected a claim");
    await first.releaseUnlessStarted(); // its job was never stored
    const started = Date.now();
    const second = await store.acquire(request(key));
    expect(second.kind).toBe("claimed");
    expect(Date.now() - started).toBeLessThan(5_000);
    // A job that started keeps its key.
    if (second.kind !== "claimed") throw new Error("expected a claim");
    await storeJob(second.jobId);
    await second.releaseUnlessStarted();
    expect((await store.acquire(request(key))).kind).toBe("replay");
  });

  it("takes over a claim whose job never appeared (its gateway died)", async () => {
    const store = new IdempotencyStore(bucket, jobs, {
      windowMs: 60_000,
      pendingTimeoutMs: 300,
      pollMs: 10,
    });
    const key = randomUUID();
    const abandoned = await store.acquire(request(key));
    expect(abandoned.kind).toBe("claimed");
    const next = request(key);
    const taken = await store.acquire(next);
    expect(taken).toMatchObject({ kind: "claimed", jobId: next.job.job_id });
  });

  it("takes over a key whose job was never queued and could not release it (NATS was away)", async () => {
    const store = new IdempotencyStore(bucket, jobs, {
      windowMs: 60_000,
      pendingTimeoutMs: 20_000,
    });
    const key = randomUUID();
    const first = await store.acquire(request(key));
    if (first.kind !== "claimed") throw new Error("expected a claim");
    // What failUnpublished leaves when the publish failed and the release was lost with NATS.
    const envelope = testEnvelope({ id: first.jobId });
    const record = recordFromEnvelope(envelope, "queued", undefined);
    expect(await jobs.create(record)).toBe(true);
    await jobs.save({
      ...record,
      status: "failed",
      error: { code: "HANDOFF_ERR_UNAVAILABLE", message: "not queued", retryable: true },
    });
    const started = Date.now();
    const retry = request(key);
    expect(await store.acquire(retry)).toMatchObject({
      kind: "claimed",
      jobId: retry.job.job_id,
    });
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("forgets a key after the window", async () => {
    const store = new IdempotencyStore(bucket, jobs, { windowMs: 400 });
    const key = randomUUID();
    const first = await store.acquire(request(key));
    if (first.kind !== "claimed") throw new Error("expected a claim");
    await storeJob(first.jobId);
    expect((await store.acquire(request(key))).kind).toBe("replay");
    await new Promise((resolve) => setTimeout(resolve, 500));
    const later = request(key);
    expect(await store.acquire(later)).toMatchObject({
      kind: "claimed",
      jobId: later.job.job_id,
    });
  });
});
