import { randomBytes } from "node:crypto";
import { HandoffConfig as ConfigSchema, type HandoffConfig, simProfile } from "@handoff/config";
import { ChatCompletion, ErrorBody, HandoffError, JobRecord } from "@handoff/contracts";
import {
  ensureTopology,
  JobOutcomes,
  JobStore,
  type MeshService,
  meshLimits,
  recordFromEnvelope,
} from "@handoff/mesh";
import { type NatsHandle, startNats, testEnvelope, waitFor } from "@handoff/testkit";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClassifierService } from "../../services/classifier/src/service.js";
import { createGateway, type Gateway } from "../../services/gateway/src/service.js";
import { createHeavyReasonerService } from "../../services/heavy-reasoner/src/service.js";
import { createToolExecutorService } from "../../services/tool-executor/src/service.js";

const logger = pino({ level: "silent" });

const KEYS = {
  teamA: randomBytes(24).toString("hex"),
  teamB: randomBytes(24).toString("hex"),
  ops: randomBytes(24).toString("hex"),
};
const ENV = {
  HANDOFF_TEST_KEY_TEAM_A: KEYS.teamA,
  HANDOFF_TEST_KEY_TEAM_B: KEYS.teamB,
  HANDOFF_TEST_KEY_OPS: KEYS.ops,
};
const FAILURES = { max: 3, window_ms: 60_000 };

function config(): HandoffConfig {
  return ConfigSchema.parse({
    ...simProfile,
    limits: { ...simProfile.limits, request_timeout_ms: 10_000 },
    gateway: {
      api_keys: [
        { name: "team-a", key_env: "HANDOFF_TEST_KEY_TEAM_A" },
        { name: "team-b", key_env: "HANDOFF_TEST_KEY_TEAM_B" },
        { name: "ops", key_env: "HANDOFF_TEST_KEY_OPS", scopes: ["admin"] },
      ],
      auth_failures: FAILURES,
    },
  });
}

const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

/** A 404's error with the id it names and its trace id taken out, to compare two ids' answers. */
function notFound(body: string, id: string) {
  const { error } = ErrorBody.parse(JSON.parse(body.replaceAll(id, "<id>")));
  const { trace_id: _traceId, ...rest } = error;
  return rest;
}

describe("job owners and failed-authentication throttling against a live mesh", () => {
  let nats: NatsHandle;
  let nc: NatsConnection;
  let gateway: Gateway;
  let app: FastifyInstance;
  let url: string;
  let kv: KV;
  let store: JobStore;
  const workers: MeshService[] = [];

  beforeAll(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    const settings = config();
    const deps = { nc, config: settings, logger, version: "0.0.0-test", concurrency: 4 };
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
      env: ENV,
    });
    url = await gateway.start();
    if (!gateway.app) throw new Error("gateway did not build its app");
    app = gateway.app;
    kv = (await ensureTopology(nc, meshLimits(settings))).jobs;
    store = new JobStore(kv);
  });

  afterAll(async () => {
    await gateway?.stop();
    for (const worker of workers) await worker.stop();
    await nc?.close();
    await nats?.stop();
  });

  const getJob = (id: string, key: string, suffix = "") =>
    app.inject({ method: "GET", url: `/v1/jobs/${id}${suffix}`, headers: bearer(key) });

  /** The record as `key` reads it once the job has finished. */
  async function finished(id: string, key: string): Promise<JobRecord> {
    let record: JobRecord | undefined;
    await waitFor(async () => {
      const res = await getJob(id, key);
      if (res.statusCode !== 200) return false;
      record = JobRecord.parse(res.json());
      return record.status === "succeeded" || record.status === "failed";
    });
    if (!record) throw new Error(`job ${id} did not finish`);
    return record;
  }

  it("records the key's name as the job's owner, through every stage's write", async () => {
    const res = await app.inject({
      method: "POST",
      url: "/v1/jobs",
      headers: bearer(KEYS.teamA),
      payload: { model: "handoff", messages: [{ role: "user", content: "What is 17 * 23?" }] },
    });
    expect(res.statusCode).toBe(202);
    const { id } = res.json<{ id: string }>();

    const record = await finished(id, KEYS.teamA);
    // Written last by the tool-executor, after the classifier's progress write.
    expect(record).toMatchObject({ status: "succeeded", owner: "team-a" });
    expect(record.hops).toEqual(["classifier", "tool-executor"]);

    // The stored record names the key, never holds it.
    const entry = await kv.get(id);
    const stored = entry?.string() ?? "";
    expect(JSON.parse(stored).owner).toBe("team-a");
    for (const key of Object.values(KEYS)) expect(stored).not.toContain(key);
  });

  it("answers another key exactly as an unknown id, on the record and its events; admin reads all", async () => {
    const res = await app.inject({
      method: "POST",
      url: "/v1/chat/completions",
      headers: bearer(KEYS.teamA),
      payload: { model: "handoff", messages: [{ role: "user", content: "Hello there" }] },
    });
    expect(res.statusCode).toBe(200);
    const id = ChatCompletion.parse(res.json()).handoff.job_id;
    expect((await finished(id, KEYS.teamA)).owner).toBe("team-a");
    const unknown = randomBytes(8).toString("hex");

    for (const suffix of ["", "/events"]) {
      const foreign = await getJob(id, KEYS.teamB, suffix);
      const missing = await getJob(unknown, KEYS.teamB, suffix);
      expect(foreign.statusCode, suffix).toBe(404);
      expect(missing.statusCode, suffix).toBe(404);
      expect(foreign.headers["content-type"]).toBe(missing.headers["content-type"]);
      expect(notFound(foreign.body, id)).toEqual(notFound(missing.body, unknown));
      expect(notFound(foreign.body, id).code).toBe("HANDOFF_ERR_NOT_FOUND");

      // The owner and an admin key read it; the events end with the finished record.
      for (const key of [KEYS.teamA, KEYS.ops]) {
        const own = await getJob(id, key, suffix);
        expect(own.statusCode, suffix).toBe(200);
        expect(own.body).toContain('"owner":"team-a"');
      }
    }
    expect((await getJob(id, KEYS.ops, "/events")).headers["content-type"]).toMatch(
      /^text\/event-stream/,
    );
  });

  it("keeps the owner when a writer's record has none (an unreadable message failing the job)", async () => {
    const envelope = { ...testEnvelope(), owner: "team-b" };
    expect(await store.create(recordFromEnvelope(envelope, "queued", undefined))).toBe(true);
    // A record built without the envelope, as for a payload too broken to read.
    const { owner: _owner, ...ownerless } = recordFromEnvelope(envelope, "running", undefined);
    expect(await store.save(ownerless)).toBe(true);
    expect((await store.get(envelope.id))?.owner).toBe("team-b");
    // A record naming another owner does not change it either.
    expect(await store.save({ ...ownerless, owner: "team-a" })).toBe(true);
    expect((await store.get(envelope.id))?.owner).toBe("team-b");

    const outcomes = new JobOutcomes(nc, store);
    await outcomes.unreadable(
      envelope.id,
      "classifier",
      new HandoffError("HANDOFF_ERR_INVALID_MESSAGE", "unreadable"),
      undefined,
    );
    const failed = await store.get(envelope.id);
    expect(failed).toMatchObject({ status: "failed", owner: "team-b" });
    expect((await getJob(envelope.id, KEYS.teamB)).statusCode).toBe(200);
    expect((await getJob(envelope.id, KEYS.teamA)).statusCode).toBe(404);
  });

  // Last: it blocks this test's address (127.0.0.1) for the rest of the window.
  it("throttles an address that failed authentication too often, even with a right key", async () => {
    const models = (headers: Record<string, string>) =>
      fetch(`${url}/v1/models`, { headers, signal: AbortSignal.timeout(5_000) });
    expect((await models(bearer(KEYS.teamA))).status).toBe(200);
    const failures: Array<Record<string, string>> = [
      {},
      bearer("sk-wrong"),
      { "api-key": "sk-wrong" },
    ];
    for (const headers of failures) {
      expect((await models(headers)).status).toBe(401);
    }
    const blocked = await models(bearer(KEYS.teamA));
    expect(blocked.status).toBe(429);
    const retryAfter = Number(blocked.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(FAILURES.window_ms / 1_000);
    const { error } = ErrorBody.parse(await blocked.json());
    expect(error.code).toBe("HANDOFF_ERR_RATE_LIMITED");
    expect(error.message).toContain("too many failed authentications");
    // Probes stay open; another address is not affected.
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    const elsewhere = await app.inject({
      method: "GET",
      url: "/v1/models",
      headers: bearer(KEYS.teamA),
      remoteAddress: "192.0.2.10",
    });
    expect(elsewhere.statusCode).toBe(200);
  });
});
