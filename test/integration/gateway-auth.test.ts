import { randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import { HandoffConfig as ConfigSchema, type HandoffConfig, simProfile } from "@handoff/config";
import { ErrorBody, HandoffError } from "@handoff/contracts";
import { type NatsHandle, startNats } from "@handoff/testkit";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { context, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import {
  InMemorySpanExporter,
  SimpleSpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import { Ajv2020 } from "ajv/dist/2020.js";
import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGateway, type Gateway } from "../../services/gateway/src/service.js";

const exporter = new InMemorySpanExporter();
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
const contextManager = new AsyncLocalStorageContextManager();

/** Every log line the gateway writes, parsed. */
const logLines: Array<Record<string, unknown>> = [];
const logger = pino(
  { level: "info" },
  new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString("utf8").split("\n")) {
        if (line.trim()) logLines.push(JSON.parse(line));
      }
      done();
    },
  }),
);

const KEYS = {
  ops: randomBytes(24).toString("hex"),
  teamA: randomBytes(24).toString("hex"),
  teamB: randomBytes(24).toString("hex"),
};

/** Keys are passed as an explicit environment, so the test never touches `process.env`. */
const ENV = {
  HANDOFF_TEST_KEY_OPS: KEYS.ops,
  HANDOFF_TEST_KEY_TEAM_A: KEYS.teamA,
  HANDOFF_TEST_KEY_TEAM_B: KEYS.teamB,
};

function configWithKeys(): HandoffConfig {
  return ConfigSchema.parse({
    ...simProfile,
    gateway: {
      api_keys: [
        { name: "ops", key_env: "HANDOFF_TEST_KEY_OPS" },
        { name: "team-a", key_env: "HANDOFF_TEST_KEY_TEAM_A", requests_per_minute: 3 },
        { name: "team-b", key_env: "HANDOFF_TEST_KEY_TEAM_B", requests_per_minute: 2 },
      ],
    },
  });
}

describe("gateway with API keys against a live NATS", () => {
  let nats: NatsHandle;
  let nc: NatsConnection;
  let gateway: Gateway;
  let app: FastifyInstance;

  beforeAll(async () => {
    trace.setGlobalTracerProvider(provider);
    context.setGlobalContextManager(contextManager.enable());
    nats = await startNats();
    nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    gateway = createGateway({
      nc,
      config: configWithKeys(),
      logger,
      version: "0.0.0-test",
      host: "127.0.0.1",
      port: 0,
      env: ENV,
    });
    await gateway.start();
    if (!gateway.app) throw new Error("gateway did not build its app");
    app = gateway.app;
  });

  afterAll(async () => {
    await gateway?.stop();
    await nc?.close();
    await nats?.stop();
    trace.disable();
    context.disable();
  });

  const models = (headers: Record<string, string> = {}) =>
    app.inject({ method: "GET", url: "/v1/models", headers });
  const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

  it("answers 401 in OpenAI's error shape without a key or with a wrong one", async () => {
    const attempts: Array<Record<string, string>> = [
      {},
      bearer("sk-not-a-key"),
      { "api-key": `${KEYS.ops}x` },
    ];
    for (const headers of attempts) {
      const res = await models(headers);
      expect(res.statusCode).toBe(401);
      const { error } = ErrorBody.parse(res.json());
      expect(error).toMatchObject({
        code: "HANDOFF_ERR_UNAUTHORIZED",
        type: "invalid_request_error",
      });
      expect(error.issues?.[0]?.message).toBe("invalid_api_key");
      expect(error.trace_id).toMatch(/^[0-9a-f]{32}$/);
      expect(res.body).not.toContain(KEYS.ops);
    }
  });

  it("checks the key before the body: a bad request without a key is a 401, with one a 400", async () => {
    const bad = { model: "x", messages: [] };
    const without = await app.inject({ method: "POST", url: "/v1/chat/completions", payload: bad });
    expect(without.statusCode).toBe(401);
    const withKey = await app.inject({
      method: "POST",
      url: "/v1/chat/completions",
      headers: bearer(KEYS.ops),
      payload: bad,
    });
    expect(withKey.statusCode).toBe(400);
    expect(ErrorBody.parse(withKey.json()).error.code).toBe("HANDOFF_ERR_VALIDATION");
  });

  it("accepts the right key as a Bearer token and as an api-key header", async () => {
    const viaBearer = await models(bearer(KEYS.ops));
    expect(viaBearer.statusCode).toBe(200);
    expect(viaBearer.json<{ object: string }>().object).toBe("list");
    // No limit configured for this key: no limit headers.
    expect(viaBearer.headers["x-ratelimit-limit-requests"]).toBeUndefined();
    expect((await models({ "api-key": KEYS.ops })).statusCode).toBe(200);
  });

  it("puts the key's name, never the key, on the SERVER span and in the request log", async () => {
    exporter.reset();
    const marker = `/v1/models?probe=${randomBytes(4).toString("hex")}`;
    const res = await app.inject({ method: "GET", url: marker, headers: bearer(KEYS.ops) });
    expect(res.statusCode).toBe(200);
    const span = exporter
      .getFinishedSpans()
      .find((s) => s.attributes["url.path"] === "/v1/models" && s.name === "GET /v1/models");
    expect(span?.attributes["handoff.api_key.name"]).toBe("ops");
    const completed = logLines.filter(
      (line) => line.msg === "request completed" && line.api_key_name === "ops",
    );
    expect(completed.length).toBeGreaterThan(0);
    expect(JSON.stringify(logLines)).not.toContain(KEYS.ops);
    expect(JSON.stringify(logLines)).not.toContain(KEYS.teamA);
  });

  it("limits each key on its own: 429 with Retry-After and OpenAI's headers after its N requests", async () => {
    for (const remaining of ["2", "1", "0"]) {
      const res = await models(bearer(KEYS.teamA));
      expect(res.statusCode).toBe(200);
      expect(res.headers["x-ratelimit-limit-requests"]).toBe("3");
      expect(res.headers["x-ratelimit-remaining-requests"]).toBe(remaining);
      expect(res.headers["x-ratelimit-reset-requests"]).toMatch(
        /^(\d+ms|\d+(\.\d+)?s|\d+m[\d.]+s)$/,
      );
    }
    const limited = await models(bearer(KEYS.teamA));
    expect(limited.statusCode).toBe(429);
    const retryAfter = Number(limited.headers["retry-after"]);
    // One request comes back every 20 s at 3 per minute.
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(20);
    expect(limited.headers).toMatchObject({
      "x-ratelimit-limit-requests": "3",
      "x-ratelimit-remaining-requests": "0",
    });
    const { error } = ErrorBody.parse(limited.json());
    expect(error).toMatchObject({ code: "HANDOFF_ERR_RATE_LIMITED", param: null });
    expect(error.issues?.[0]?.message).toBe("rate_limit_exceeded");

    // team-b has its own bucket, untouched by team-a's.
    const b1 = await models(bearer(KEYS.teamB));
    expect(b1.statusCode).toBe(200);
    expect(b1.headers).toMatchObject({
      "x-ratelimit-limit-requests": "2",
      "x-ratelimit-remaining-requests": "1",
    });
    expect((await models(bearer(KEYS.teamB))).statusCode).toBe(200);
    expect((await models(bearer(KEYS.teamB))).statusCode).toBe(429);
    // An unlimited key is unaffected by both.
    expect((await models(bearer(KEYS.ops))).statusCode).toBe(200);
    // A limited key is still limited on other routes: the bucket is per key, not per route.
    const schema = await app.inject({
      method: "GET",
      url: "/v1/schemas/error-body",
      headers: bearer(KEYS.teamA),
    });
    expect(schema.statusCode).toBe(429);
  });

  it("leaves /healthz, /readyz, / and /openapi.json open", async () => {
    for (const url of ["/healthz", "/readyz", "/"]) {
      expect((await app.inject({ method: "GET", url })).statusCode, url).toBe(200);
    }
    const res = await app.inject({ method: "GET", url: "/openapi.json" });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toMatch(/^application\/json/);
    const doc = JSON.parse(res.body);
    expect(doc.openapi).toBe("3.1.0");
    expect(doc.info.version).toBe("0.0.0-test");
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        "/v1/chat/completions",
        "/v1/models",
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/events",
        "/v1/schemas/{name}",
        "/healthz",
        "/readyz",
        "/openapi.json",
      ]),
    );
    expect(doc.components.securitySchemes.bearerAuth).toMatchObject({
      type: "http",
      scheme: "bearer",
    });

    // The hand-written response schemas match what the routes really answer.
    const ajv = new Ajv2020({ strict: false, validateFormats: false });
    ajv.addSchema(doc, "openapi.json");
    const validate = (name: string, value: unknown) => {
      const check = ajv.getSchema(`openapi.json#/components/schemas/${name}`);
      if (!check) throw new Error(`no schema ${name}`);
      const ok = check(value);
      return ok ? "valid" : JSON.stringify(check.errors);
    };
    expect(validate("ModelList", (await models(bearer(KEYS.ops))).json())).toBe("valid");
    expect(validate("ApiIndex", (await app.inject({ method: "GET", url: "/" })).json())).toBe(
      "valid",
    );
    const unauthorized = (await models()).json();
    expect(validate("ErrorBody", unauthorized)).toBe("valid");
  });

  it("refuses to start when a key's variable is missing, naming the variable", async () => {
    const broken = createGateway({
      nc,
      config: configWithKeys(),
      logger,
      version: "0.0.0-test",
      host: "127.0.0.1",
      port: 0,
      env: { ...ENV, HANDOFF_TEST_KEY_TEAM_B: undefined },
    });
    const failure = await broken.start().then(
      () => undefined,
      (error: unknown) => error,
    );
    try {
      expect(failure).toBeInstanceOf(HandoffError);
      expect((failure as HandoffError).code).toBe("HANDOFF_ERR_CONFIG");
      expect((failure as HandoffError).message).toContain("HANDOFF_TEST_KEY_TEAM_B");
      expect(broken.app).toBeUndefined(); // failed before building or listening
    } finally {
      await broken.stop();
    }
  });
});
