import { HandoffConfig, simProfile } from "@handoff/config";
import { ErrorBody, HandoffError, type JobEnvelope, type JobRecord } from "@handoff/contracts";
import { type JobClient, recordFromEnvelope } from "@handoff/mesh";
import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { buildApp } from "./app.js";
import { loadApiKeys } from "./auth.js";
import { FailureThrottle } from "./rate-limit.js";
import { openSse } from "./sse.js";

const logger = pino({ level: "silent" });

function configWith(apiKeys: unknown[], gateway: Record<string, unknown> = {}): HandoffConfig {
  return HandoffConfig.parse({ ...simProfile, gateway: { api_keys: apiKeys, ...gateway } });
}

describe("loadApiKeys", () => {
  it("reads each key from its variable, keeping only a digest", () => {
    const config = configWith([
      { name: "team-a", key_env: "KEY_A", requests_per_minute: 60 },
      { name: "team-b", key_env: "KEY_B" },
    ]);
    const keys = loadApiKeys(config.gateway.api_keys, { KEY_A: "sk-a", KEY_B: " sk-b\n" });
    expect(keys.map((k) => [k.name, k.requestsPerMinute, k.scopes])).toEqual([
      ["team-a", 60, []],
      ["team-b", undefined, []],
    ]);
    expect(keys[0]?.digest).toHaveLength(32);
    expect(JSON.stringify(keys)).not.toContain("sk-a");
    // Trimmed before hashing: the same digest as the bare key.
    const bare = loadApiKeys([{ name: "x", key_env: "K" }], { K: "sk-b" });
    expect(keys[1]?.digest.equals(bare[0]?.digest ?? Buffer.alloc(0))).toBe(true);
  });

  it("fails naming the variable when it is unset or empty", () => {
    const keys = configWith([{ name: "team-a", key_env: "HANDOFF_KEY_TEAM_A" }]).gateway.api_keys;
    for (const env of [{}, { HANDOFF_KEY_TEAM_A: "" }, { HANDOFF_KEY_TEAM_A: "  " }]) {
      let error: unknown;
      try {
        loadApiKeys(keys, env);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(HandoffError);
      expect((error as HandoffError).code).toBe("HANDOFF_ERR_CONFIG");
      expect((error as HandoffError).message).toContain("HANDOFF_KEY_TEAM_A");
      expect((error as HandoffError).message).toContain("team-a");
    }
  });

  it("refuses two variables holding the same key", () => {
    const keys = configWith([
      { name: "a", key_env: "K1" },
      { name: "b", key_env: "K2" },
    ]).gateway.api_keys;
    expect(() => loadApiKeys(keys, { K1: "same", K2: "same" })).toThrow(
      /"a" and "b" hold the same key/,
    );
  });

  it("carries each key's scopes", () => {
    const config = configWith([
      { name: "ops", key_env: "KO", scopes: ["admin"] },
      { name: "team-a", key_env: "KA" },
    ]);
    const keys = loadApiKeys(config.gateway.api_keys, { KO: "sk-o", KA: "sk-a" });
    expect(keys.map((k) => [k.name, k.scopes])).toEqual([
      ["ops", ["admin"]],
      ["team-a", []],
    ]);
  });

  it("loads nothing when no keys are configured", () => {
    expect(loadApiKeys(simProfile.gateway.api_keys, {})).toEqual([]);
  });
});

describe("the auth hook", () => {
  let app: FastifyInstance | undefined;
  let now = 0;

  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  function appWith(
    apiKeys: unknown[],
    env: Record<string, string>,
    options: { gateway?: Record<string, unknown>; jobs?: JobClient } = {},
  ): FastifyInstance {
    const config = configWith(apiKeys, options.gateway);
    now = 0;
    app = buildApp({
      // Unless a test passes one, the routes under test never reach the job client.
      jobs: options.jobs ?? ({} as JobClient),
      config,
      logger,
      ready: () => true,
      version: "9.9.9",
      apiKeys: loadApiKeys(config.gateway.api_keys, env),
      clock: () => now,
    });
    return app;
  }

  const get = (url: string, headers: Record<string, string> = {}, remoteAddress?: string) => {
    if (!app) throw new Error("no app");
    return app.inject({ method: "GET", url, headers, ...(remoteAddress ? { remoteAddress } : {}) });
  };

  it("answers 401 in OpenAI's shape without a key, with a wrong one, or with another scheme", async () => {
    appWith([{ name: "a", key_env: "KA" }], { KA: "sk-right" });
    const attempts: Array<Record<string, string>> = [
      {},
      { authorization: "Bearer sk-wrong" },
      { authorization: "Basic sk-right" },
      { authorization: "Bearer" },
      { "api-key": "sk-wrong" },
    ];
    for (const headers of attempts) {
      const res = await get("/v1/models", headers);
      expect(res.statusCode, JSON.stringify(headers)).toBe(401);
      expect(res.headers["www-authenticate"]).toMatch(/^Bearer realm="handoff"/);
      const { error } = ErrorBody.parse(res.json());
      expect(error.code).toBe("HANDOFF_ERR_UNAUTHORIZED");
      expect(error.type).toBe("invalid_request_error");
      expect(error.issues?.[0]?.message).toBe("invalid_api_key");
      expect(res.body).not.toContain("sk-right");
    }
    const wrongAzure = ErrorBody.parse((await get("/v1/models", { "api-key": "nope" })).json());
    expect(wrongAzure.error.param).toBe("headers.api-key");
    const missing = ErrorBody.parse((await get("/v1/models")).json());
    expect(missing.error.param).toBe("headers.authorization");
  });

  it("accepts the key as a Bearer token (any scheme case) or an api-key header", async () => {
    appWith([{ name: "a", key_env: "KA" }], { KA: "sk-right" });
    const accepted: Array<Record<string, string>> = [
      { authorization: "Bearer sk-right" },
      { authorization: "bearer   sk-right " },
      { "api-key": "sk-right" },
    ];
    for (const headers of accepted) {
      expect((await get("/v1/models", headers)).statusCode, JSON.stringify(headers)).toBe(200);
    }
  });

  it("guards unknown paths too, and leaves probes and the API description open", async () => {
    appWith([{ name: "a", key_env: "KA" }], { KA: "sk-right" });
    expect((await get("/v1/nope")).statusCode).toBe(401);
    expect((await get("/v1/nope", { authorization: "Bearer sk-right" })).statusCode).toBe(404);
    expect((await get("/v1/jobs/some-job-id")).statusCode).toBe(401);
    for (const url of ["/healthz", "/readyz", "/openapi.json", "/"]) {
      expect((await get(url)).statusCode, url).toBe(200);
    }
  });

  it("limits each key on its own bucket, with OpenAI's headers and Retry-After", async () => {
    appWith(
      [
        { name: "a", key_env: "KA", requests_per_minute: 2 },
        { name: "b", key_env: "KB", requests_per_minute: 3 },
        { name: "free", key_env: "KF" },
      ],
      { KA: "sk-a", KB: "sk-b", KF: "sk-f" },
    );
    const asA = () => get("/v1/models", { authorization: "Bearer sk-a" });
    const first = await asA();
    expect(first.statusCode).toBe(200);
    expect(first.headers).toMatchObject({
      "x-ratelimit-limit-requests": "2",
      "x-ratelimit-remaining-requests": "1",
      "x-ratelimit-reset-requests": "30s",
    });
    expect((await asA()).headers["x-ratelimit-remaining-requests"]).toBe("0");
    const limited = await asA();
    expect(limited.statusCode).toBe(429);
    expect(limited.headers["retry-after"]).toBe("30");
    expect(limited.headers["x-ratelimit-remaining-requests"]).toBe("0");
    const { error } = ErrorBody.parse(limited.json());
    expect(error).toMatchObject({
      code: "HANDOFF_ERR_RATE_LIMITED",
      type: "requests",
      param: null,
    });
    expect(error.issues?.[0]?.message).toBe("rate_limit_exceeded");
    expect(error.message).toContain('"a"');

    // Key b's bucket is untouched by a's; an unlimited key has no limit headers.
    const b = await get("/v1/models", { authorization: "Bearer sk-b" });
    expect(b.statusCode).toBe(200);
    expect(b.headers["x-ratelimit-remaining-requests"]).toBe("2");
    const free = await get("/v1/models", { authorization: "Bearer sk-f" });
    expect(free.statusCode).toBe(200);
    expect(free.headers["x-ratelimit-limit-requests"]).toBeUndefined();

    // Retry-After rounds up to whole seconds; after it, a's next request goes through.
    now += 29_001;
    expect((await asA()).headers["retry-after"]).toBe("1");
    now += 999;
    expect((await asA()).statusCode).toBe(200);
    // Probes never spend a token.
    expect((await get("/healthz", { authorization: "Bearer sk-a" })).statusCode).toBe(200);
  });

  it("keeps the limit headers on a streamed (hijacked) response", async () => {
    const streaming = appWith([{ name: "a", key_env: "KA", requests_per_minute: 5 }], {
      KA: "sk-a",
    });
    // A stand-in for the SSE routes, which take over the raw response and write their own head.
    streaming.get("/v1/stream-probe", (_request, reply) => {
      const sse = openSse(reply);
      sse.done();
      sse.end();
    });
    const res = await get("/v1/stream-probe", { authorization: "Bearer sk-a" });
    expect(res.headers["content-type"]).toMatch(/^text\/event-stream/);
    expect(res.headers).toMatchObject({
      "x-ratelimit-limit-requests": "5",
      "x-ratelimit-remaining-requests": "4",
    });
  });

  it("serves the OpenAPI document with the security schemes when keys are configured", async () => {
    appWith([{ name: "a", key_env: "KA" }], { KA: "sk-right" });
    const doc = (await get("/openapi.json")).json();
    expect(doc.info.version).toBe("9.9.9");
    expect(Object.keys(doc.components.securitySchemes)).toEqual(["bearerAuth", "apiKeyHeader"]);
    expect(doc.paths["/v1/models"].get.security).toEqual([
      { bearerAuth: [] },
      { apiKeyHeader: [] },
    ]);
    expect(doc.paths["/healthz"].get.security).toBeUndefined();
    expect((await get("/")).json()).toMatchObject({
      auth: "api_key",
      links: { openapi: "/openapi.json" },
    });
  });

  it("leaves the API open when no keys are configured", async () => {
    appWith([], {});
    const res = await get("/v1/models");
    expect(res.statusCode).toBe(200);
    expect(res.headers["x-ratelimit-limit-requests"]).toBeUndefined();
    const doc = (await get("/openapi.json")).json();
    expect(doc.components.securitySchemes).toBeUndefined();
    expect(doc.paths["/v1/models"].get.responses["401"]).toBeUndefined();
  });

  it("throttles an address after N failed authentications, even with the right key, until its window ends", async () => {
    appWith(
      [{ name: "a", key_env: "KA" }],
      { KA: "sk-right" },
      { gateway: { auth_failures: { max: 3, window_ms: 60_000 } } },
    );
    const attacker = "203.0.113.7";
    const other = "198.51.100.2";
    const right = { authorization: "Bearer sk-right" };
    // Missing and wrong keys both count; each of the first N is still a plain 401.
    now = 0;
    expect((await get("/v1/models", {}, attacker)).statusCode).toBe(401);
    now = 10_000;
    expect(
      (await get("/v1/models", { authorization: "Bearer sk-wrong" }, attacker)).statusCode,
    ).toBe(401);
    // A success in between neither resets nor counts.
    expect((await get("/v1/models", right, attacker)).statusCode).toBe(200);
    now = 20_000;
    expect((await get("/v1/models", { "api-key": "sk-wrong" }, attacker)).statusCode).toBe(401);

    // The window started at the first failure (t = 0): blocked until t = 60 s, whatever is sent.
    for (const headers of [right, {}, { authorization: "Bearer sk-wrong" }]) {
      const blocked = await get("/v1/models", headers, attacker);
      expect(blocked.statusCode, JSON.stringify(headers)).toBe(429);
      expect(blocked.headers["retry-after"]).toBe("40");
      const { error } = ErrorBody.parse(blocked.json());
      expect(error).toMatchObject({
        code: "HANDOFF_ERR_RATE_LIMITED",
        type: "requests",
        param: null,
      });
      expect(error.message).toContain("too many failed authentications");
      expect(error.issues?.[0]?.message).toBe("rate_limit_exceeded");
    }
    // Unknown paths are throttled too; probes stay open.
    expect((await get("/v1/nope", right, attacker)).statusCode).toBe(429);
    expect((await get("/healthz", {}, attacker)).statusCode).toBe(200);
    // Another address is untouched.
    expect((await get("/v1/models", right, other)).statusCode).toBe(200);
    expect((await get("/v1/models", {}, other)).statusCode).toBe(401);

    now = 59_001;
    expect((await get("/v1/models", right, attacker)).headers["retry-after"]).toBe("1");
    now = 60_000;
    expect((await get("/v1/models", right, attacker)).statusCode).toBe(200);
    // A fresh window: one more failure is a 401 again, not a 429.
    expect((await get("/v1/models", {}, attacker)).statusCode).toBe(401);
    expect((await get("/v1/models", right, attacker)).statusCode).toBe(200);
  });

  it("counts failures in one window: N failures spread wider than it never block", async () => {
    appWith(
      [{ name: "a", key_env: "KA" }],
      { KA: "sk-right" },
      { gateway: { auth_failures: { max: 2, window_ms: 1_000 } } },
    );
    for (let i = 0; i < 5; i++) {
      now = i * 1_000;
      expect((await get("/v1/models", {}, "192.0.2.1")).statusCode).toBe(401);
    }
    expect(
      (await get("/v1/models", { authorization: "Bearer sk-right" }, "192.0.2.1")).statusCode,
    ).toBe(200);
  });
});

describe("FailureThrottle", () => {
  it("tracks at most maxAddresses, forgetting the oldest first, whatever the flood", () => {
    let now = 0;
    const throttle = new FailureThrottle(
      { max: 2, windowMs: 60_000, maxAddresses: 100 },
      () => now,
    );
    throttle.fail("victim");
    throttle.fail("victim");
    expect(throttle.blockedFor("victim")).toBe(60_000);
    for (let i = 0; i < 10_000; i++) {
      now = i; // all within the window: nothing expires on its own
      throttle.fail(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
      expect(throttle.size).toBeLessThanOrEqual(100);
    }
    expect(throttle.size).toBe(100);
    // The newest are still counted; the oldest, the victim among them, were let go.
    expect(throttle.fail("10.0.39.15")).toBe(true); // i = 9999: its second failure
    expect(throttle.blockedFor("10.0.39.15")).toBeGreaterThan(0);
    expect(throttle.blockedFor("victim")).toBe(0);
  });

  it("drops windows that ended, so idle addresses cost nothing", () => {
    let now = 0;
    const throttle = new FailureThrottle(
      { max: 3, windowMs: 1_000, maxAddresses: 1_000 },
      () => now,
    );
    for (let i = 0; i < 500; i++) throttle.fail(`a${i}`);
    expect(throttle.size).toBe(500);
    now = 1_000;
    throttle.fail("late");
    expect(throttle.size).toBe(1);
    // A window that ended frees its address on a look-up too.
    now = 2_000;
    expect(throttle.blockedFor("late")).toBe(0);
    expect(throttle.size).toBe(0);
  });

  it("blocks at the Nth failure until the window ends, and never counts backwards in time", () => {
    let now = 5_000;
    const throttle = new FailureThrottle({ max: 2, windowMs: 10_000, maxAddresses: 10 }, () => now);
    expect(throttle.fail("x")).toBe(false);
    expect(throttle.blockedFor("x")).toBe(0);
    now = 1_000; // a clock that went back is held where it was
    expect(throttle.fail("x")).toBe(true);
    expect(throttle.blockedFor("x")).toBe(10_000);
    now = 14_999;
    expect(throttle.blockedFor("x")).toBe(1);
    now = 15_000;
    expect(throttle.blockedFor("x")).toBe(0);
    expect(() => new FailureThrottle({ max: 0, windowMs: 1, maxAddresses: 1 })).toThrow(RangeError);
  });
});

describe("job owners", () => {
  let app: FastifyInstance | undefined;

  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  const KEYS = [
    { name: "team-a", key_env: "KA" },
    { name: "team-b", key_env: "KB" },
    { name: "ops", key_env: "KO", scopes: ["admin"] },
  ];
  const ENV = { KA: "sk-a", KB: "sk-b", KO: "sk-ops" };
  const as = (key: string) => ({ authorization: `Bearer ${key}` });
  const CHAT = { model: "handoff", messages: [{ role: "user", content: "hi" }] };

  /** A job client over an in-memory store: submitted jobs are recorded as queued. */
  function memoryJobs() {
    const records = new Map<string, JobRecord>();
    const submitted: JobEnvelope[] = [];
    const record = (envelope: JobEnvelope) =>
      records.set(envelope.id, recordFromEnvelope(envelope, "succeeded", undefined));
    const jobs = {
      store: {
        get: async (id: string) => records.get(id),
        kv: {
          // The record's current value, then nothing: it is terminal, so the stream ends.
          watch: async ({ key }: { key: string }) => ({
            stop: () => undefined,
            async *[Symbol.asyncIterator]() {
              yield { operation: "PUT", json: () => records.get(key) };
            },
          }),
        },
      },
      submit: async (envelope: JobEnvelope) => {
        submitted.push(envelope);
        record(envelope);
      },
      run: async (envelope: JobEnvelope) => {
        submitted.push(envelope);
        record(envelope);
        return undefined;
      },
    } as unknown as JobClient;
    return { jobs, records, submitted };
  }

  function start(apiKeys: unknown[], env: Record<string, string>) {
    const memory = memoryJobs();
    const config = configWith(apiKeys);
    app = buildApp({
      jobs: memory.jobs,
      config,
      logger,
      ready: () => true,
      apiKeys: loadApiKeys(config.gateway.api_keys, env),
    });
    return { app, ...memory };
  }

  /** The 404 body with the id it names replaced, to compare two ids' answers. */
  const notFound = (body: string, id: string) => {
    const { error } = ErrorBody.parse(JSON.parse(body.replaceAll(id, "<id>")));
    const { trace_id: _traceId, ...rest } = error;
    return rest;
  };

  it("records the submitting key's name on the job, from both POST routes", async () => {
    const { app, submitted } = start(KEYS, ENV);
    const job = await app.inject({
      method: "POST",
      url: "/v1/jobs",
      headers: as("sk-a"),
      payload: CHAT,
    });
    expect(job.statusCode).toBe(202);
    await app.inject({
      method: "POST",
      url: "/v1/chat/completions",
      headers: as("sk-b"),
      payload: CHAT,
    });
    expect(submitted.map((e) => e.owner)).toEqual(["team-a", "team-b"]);
    expect(JSON.stringify(submitted)).not.toContain("sk-a");
  });

  it("answers another key's job exactly as an unknown id, on the record and its events; admin reads all", async () => {
    const { app } = start(KEYS, ENV);
    const job = await app.inject({
      method: "POST",
      url: "/v1/jobs",
      headers: as("sk-a"),
      payload: CHAT,
    });
    const id = job.json<{ id: string }>().id;
    const unknown = "0123456789abcdef";

    for (const path of ["", "/events"]) {
      const foreign = await app.inject({
        method: "GET",
        url: `/v1/jobs/${id}${path}`,
        headers: as("sk-b"),
      });
      const missing = await app.inject({
        method: "GET",
        url: `/v1/jobs/${unknown}${path}`,
        headers: as("sk-b"),
      });
      expect(foreign.statusCode, path).toBe(404);
      expect(missing.statusCode, path).toBe(404);
      expect(foreign.headers["content-type"]).toBe(missing.headers["content-type"]);
      expect(notFound(foreign.body, id)).toEqual(notFound(missing.body, unknown));
      expect(notFound(foreign.body, id)).toMatchObject({ code: "HANDOFF_ERR_NOT_FOUND" });

      for (const key of ["sk-a", "sk-ops"]) {
        const own = await app.inject({
          method: "GET",
          url: `/v1/jobs/${id}${path}`,
          headers: as(key),
        });
        expect(own.statusCode, `${key} ${path}`).toBe(200);
        expect(own.body).toContain('"owner":"team-a"');
      }
    }
  });

  it("keeps a job without an owner (submitted while the API was open) for admin keys", async () => {
    const { app, records } = start(KEYS, ENV);
    const id = "job-before-keys";
    records.set(id, {
      id,
      status: "succeeded",
      created_at: new Date(0).toISOString(),
      updated_at: new Date(0).toISOString(),
      hops: [],
      usage: [],
      cost_usd: 0,
      cost_by_stage: {},
    });
    expect(
      (await app.inject({ method: "GET", url: `/v1/jobs/${id}`, headers: as("sk-a") })).statusCode,
    ).toBe(404);
    expect(
      (await app.inject({ method: "GET", url: `/v1/jobs/${id}`, headers: as("sk-ops") }))
        .statusCode,
    ).toBe(200);
  });

  it("leaves every job readable when the API is open", async () => {
    const { app, records, submitted } = start([], {});
    await app.inject({ method: "POST", url: "/v1/jobs", payload: CHAT });
    const [open] = submitted;
    if (!open) throw new Error("no job submitted");
    expect(open.owner).toBeUndefined();
    // A job a key submitted before the keys were removed is readable too.
    const id = "job-of-team-a";
    records.set(id, recordFromEnvelope({ ...open, id, owner: "team-a" }, "queued", undefined));
    for (const url of [`/v1/jobs/${id}`, `/v1/jobs/${open.id}`]) {
      expect((await app.inject({ method: "GET", url })).statusCode, url).toBe(200);
    }
  });
});
