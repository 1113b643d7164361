import { HandoffConfig, simProfile } from "@handoff/config";
import { ErrorBody, HandoffError } from "@handoff/contracts";
import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { buildApp } from "./app.js";
import { loadApiKeys } from "./auth.js";
import type { JobClient } from "./job-client.js";
import { openSse } from "./sse.js";

const logger = pino({ level: "silent" });

function configWith(apiKeys: unknown[]): HandoffConfig {
  return HandoffConfig.parse({ ...simProfile, gateway: { api_keys: apiKeys } });
}

describe("loadApiKeys", () => {
  it("reads each key from its variable, keeping only a digest", () => {
    const config = configWith([
      { name: "team-a", key_env: "KEY_A", requests_per_minute: 60 },
      { name: "team-b", key_env: "KEY_B" },
    ]);
    const keys = loadApiKeys(config.gateway.api_keys, { KEY_A: "sk-a", KEY_B: " sk-b\n" });
    expect(keys.map((k) => [k.name, k.requestsPerMinute])).toEqual([
      ["team-a", 60],
      ["team-b", undefined],
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

  function appWith(apiKeys: unknown[], env: Record<string, string>): FastifyInstance {
    const config = configWith(apiKeys);
    now = 0;
    app = buildApp({
      // The routes under test never reach the job client.
      jobs: {} as JobClient,
      config,
      logger,
      ready: () => true,
      version: "9.9.9",
      apiKeys: loadApiKeys(config.gateway.api_keys, env),
      clock: () => now,
    });
    return app;
  }

  const get = (url: string, headers: Record<string, string> = {}) => {
    if (!app) throw new Error("no app");
    return app.inject({ method: "GET", url, headers });
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
});
