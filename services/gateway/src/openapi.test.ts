import { simProfile } from "@handoff/config";
import { ChatCompletion, ChatCompletionRequest, ErrorBody, JobRecord } from "@handoff/contracts";
import type { JobClient } from "@handoff/mesh";
import { Ajv2020 } from "ajv/dist/2020.js";
import Fastify, { type RouteShorthandOptions } from "fastify";
import { pino } from "pino";
import { beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "./app.js";
import { registerApi, toOpenApiPath } from "./openapi.js";
import { jsonResponse } from "./route-schema.js";

type Json = Record<string, unknown>;

/** Every `$ref` in a JSON value, with where it was found. */
function refsIn(value: unknown, at = "#"): Array<{ ref: string; at: string }> {
  if (Array.isArray(value)) return value.flatMap((v, i) => refsIn(v, `${at}/${i}`));
  if (value === null || typeof value !== "object") return [];
  return Object.entries(value).flatMap(([key, child]) =>
    key === "$ref" && typeof child === "string"
      ? [{ ref: child, at }]
      : refsIn(child, `${at}/${key}`),
  );
}

/** Resolves a local JSON pointer (`#/a/b`) in `doc`; undefined when nothing is there. */
function resolvePointer(doc: unknown, ref: string): unknown {
  if (!ref.startsWith("#/")) return undefined;
  return ref
    .slice(2)
    .split("/")
    .map((token) => decodeURIComponent(token).replace(/~1/g, "/").replace(/~0/g, "~"))
    .reduce<unknown>(
      (node, token) =>
        node !== null && typeof node === "object" && Object.hasOwn(node, token)
          ? (node as Json)[token]
          : undefined,
      doc,
    );
}

function unresolvedRefs(doc: Json): string[] {
  return refsIn(doc)
    .filter(({ ref }) => resolvePointer(doc, ref) === undefined)
    .map(({ ref, at }) => `${ref} (at ${at})`);
}

const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

function operationsOf(doc: Json): Array<{ key: string; operation: Json; path: string }> {
  const paths = doc.paths as Record<string, Record<string, Json>>;
  return Object.entries(paths).flatMap(([path, item]) =>
    Object.entries(item)
      .filter(([method]) => METHODS.includes(method))
      .map(([method, operation]) => ({ key: `${method.toUpperCase()} ${path}`, operation, path })),
  );
}

/** A parameter as declared, or the one its `$ref` points at. */
const parameter = (doc: Json, p: Json): Json =>
  (p.$ref ? resolvePointer(doc, p.$ref as string) : p) as Json;

function appFor(auth: boolean) {
  return buildApp({
    jobs: {} as JobClient,
    config: simProfile,
    logger: pino({ level: "silent" }),
    ready: () => true,
    version: "1.2.3",
    ...(auth ? { apiKeys: [{ name: "docs", digest: Buffer.alloc(32), scopes: [] }] } : {}),
  });
}

/** The document the app serves at `GET /openapi.json`. */
async function servedDocument(auth: boolean): Promise<Json> {
  const app = appFor(auth);
  try {
    const res = await app.inject({ method: "GET", url: "/openapi.json" });
    expect(res.statusCode).toBe(200);
    return res.json();
  } finally {
    await app.close();
  }
}

describe("the OpenAPI document", () => {
  for (const auth of [false, true]) {
    describe(auth ? "with API keys" : "open", () => {
      let doc: Json = {};
      beforeAll(async () => {
        doc = await servedDocument(auth);
      });

      it("is an OpenAPI 3.1 document with info from the options", () => {
        expect(doc.openapi).toBe("3.1.0");
        expect(doc.info).toMatchObject({ title: "Handoff gateway", version: "1.2.3" });
        expect(JSON.parse(JSON.stringify(doc))).toEqual(doc); // plain JSON, nothing lost
      });

      it("resolves every $ref inside the document", () => {
        expect(refsIn(doc).length).toBeGreaterThan(20);
        expect(unresolvedRefs(doc)).toEqual([]);
      });

      it("has a valid JSON Schema 2020-12 for every component, validating what the wire schemas accept", () => {
        const ajv = new Ajv2020({ strict: false, validateFormats: false });
        // Registered whole, so refs between components resolve as they do in the document.
        ajv.addSchema(doc, "openapi.json");
        const schemas = (doc.components as Json).schemas as Record<string, Json>;
        for (const name of Object.keys(schemas)) {
          expect(
            () => ajv.getSchema(`openapi.json#/components/schemas/${name}`),
            name,
          ).not.toThrow();
        }
        const validate = (name: string, value: unknown) => {
          const check = ajv.getSchema(`openapi.json#/components/schemas/${name}`);
          if (!check) throw new Error(`no schema ${name}`);
          return check(value);
        };
        const request = ChatCompletionRequest.parse({
          model: "handoff",
          messages: [{ role: "user", content: "hi" }],
        });
        expect(validate("ChatCompletionRequest", request)).toBe(true);
        expect(validate("ChatCompletionRequest", { model: "handoff", messages: [] })).toBe(false);
        const error = ErrorBody.parse({
          error: { message: "m", type: "t", param: null, code: "HANDOFF_ERR_NOT_FOUND" },
        });
        expect(validate("ErrorBody", error)).toBe(true);
        expect(validate("ErrorBody", { message: "not wrapped" })).toBe(false);
      });

      it("names the wire schemas as components, each once, by the name the wire gives it", () => {
        const schemas = (doc.components as Json).schemas as Record<string, Json>;
        for (const name of [
          "ChatCompletionRequest",
          "ChatCompletion",
          "ChatCompletionChunk",
          "JobRecord",
          "ErrorBody",
          "ResponsesRequest",
          "Response",
          "AnthropicMessagesRequest",
          "AnthropicMessage",
          "AnthropicErrorBody",
        ]) {
          expect(schemas[name], name).toMatchObject({ type: "object" });
          expect(schemas[name]?.$schema).toBeUndefined();
        }
        // The events of a stream: one of each type.
        for (const name of ["ResponseStreamEvent", "AnthropicStreamEvent"]) {
          expect(schemas[name]?.oneOf, name).toEqual(expect.any(Array));
          expect(schemas[name]?.$schema).toBeUndefined();
        }
        // Requests as clients may write them (no closed objects), responses as written.
        expect(schemas.ChatCompletionRequest?.additionalProperties).toBeUndefined();
        expect(schemas.ChatCompletion?.additionalProperties).toBe(false);
        expect(schemas.JobRecord?.required).toContain("id");
        expect(Object.keys((schemas.JobRecord?.properties as Json) ?? {})).toEqual(
          Object.keys(JobRecord.shape),
        );
        expect(Object.keys((schemas.ChatCompletion?.properties as Json) ?? {})).toEqual(
          Object.keys(ChatCompletion.shape),
        );
        // One rendering of each: no request rendered as a response, nor the other way round.
        expect(Object.keys(schemas).filter((name) => name.endsWith("Input"))).toEqual([]);
        // A component used inside another is referred to, not repeated.
        const events = JSON.stringify(schemas.ResponseStreamEvent);
        expect(events).toContain('"$ref":"#/components/schemas/Response"');
        expect(JSON.stringify(schemas.AnthropicStreamEvent)).toContain(
          '"$ref":"#/components/schemas/AnthropicErrorBody"',
        );
      });

      it("gives every operation an id, a success and error responses, and declares its path parameters", () => {
        const ids = new Set<string>();
        for (const { key, operation, path } of operationsOf(doc)) {
          expect(typeof operation.operationId, key).toBe("string");
          expect(ids.has(operation.operationId as string), key).toBe(false);
          ids.add(operation.operationId as string);
          expect((operation.tags as string[] | undefined)?.length, key).toBeGreaterThan(0);
          const responses = operation.responses as Record<string, Json>;
          expect(
            Object.keys(responses).some((s) => s.startsWith("2")),
            key,
          ).toBe(true);
          expect(responses.default, key).toEqual({ $ref: "#/components/responses/ServerError" });
          const declared = ((operation.parameters as Json[] | undefined) ?? [])
            .map((p) => parameter(doc, p))
            .filter((p) => p.in === "path")
            .map((p) => p.name);
          const templated = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
          expect(declared, key).toEqual(templated);
        }
      });

      it("describes each streamed answer as server-sent events, naming the schema of their data", () => {
        const streams = {
          "POST /v1/chat/completions": "ChatCompletionChunk",
          "POST /v1/responses": "ResponseStreamEvent",
          "POST /v1/messages": "AnthropicStreamEvent",
          "GET /v1/jobs/{id}/events": "JobRecord",
        };
        const operations = new Map(operationsOf(doc).map((o) => [o.key, o.operation]));
        for (const [key, event] of Object.entries(streams)) {
          const responses = (operations.get(key)?.responses ?? {}) as Record<string, Json>;
          const content = (responses["200"]?.content ?? {}) as Record<string, Json>;
          expect(content["text/event-stream"], key).toMatchObject({
            schema: { type: "string" },
            "x-handoff-event-data": { $ref: `#/components/schemas/${event}` },
          });
        }
      });

      it(
        auth ? "requires a key on /v1 and may answer 401 and 429 there" : "requires no key",
        () => {
          for (const { key, operation, path } of operationsOf(doc)) {
            const responses = operation.responses as Json;
            const guarded = auth && path.startsWith("/v1/");
            expect(operation.security !== undefined, key).toBe(guarded);
            expect("401" in responses, key).toBe(guarded);
            expect("429" in responses, key).toBe(guarded);
          }
          const components = doc.components as Json;
          expect(components.securitySchemes !== undefined).toBe(auth);
          expect(doc.security).toBeUndefined(); // per operation, so open routes need no override
        },
      );
    });
  }

  it("describes the chat route's JSON and SSE answers, its headers and its errors", async () => {
    const doc = await servedDocument(true);
    const chat = (doc.paths as Record<string, Record<string, Json>>)["/v1/chat/completions"]
      ?.post as Json;
    const ok = (chat.responses as Record<string, Json>)["200"] as Json;
    expect(Object.keys(ok.content as Json)).toEqual(["application/json", "text/event-stream"]);
    expect(Object.keys(chat.responses as Json).sort()).toEqual(
      [
        "200",
        "400",
        "401",
        "402",
        "404",
        "413",
        "415",
        "422",
        "429",
        "502",
        "504",
        "default",
      ].sort(),
    );
    const headers = (chat.parameters as Json[]).map((p) => parameter(doc, p));
    expect(headers.map((p) => p.name)).toEqual([
      "x-handoff-timeout-ms",
      "x-handoff-max-cost-usd",
      "Idempotency-Key",
      "Cache-Control",
    ]);
    expect(headers.every((p) => p.in === "header" && p.required === false)).toBe(true);
    expect(headers[0]?.schema).toEqual({ type: "integer", minimum: 100, maximum: 600_000 });
    const limited = resolvePointer(doc, "#/components/responses/RateLimited") as Json;
    expect(Object.keys(limited.headers as Json)).toEqual([
      "retry-after",
      "x-ratelimit-limit-requests",
      "x-ratelimit-remaining-requests",
      "x-ratelimit-reset-requests",
    ]);
    const jobs = (doc.paths as Record<string, Record<string, Json>>)["/v1/jobs"]?.post as Json;
    expect(Object.keys(jobs.responses as Json)).toContain("202");
    // Both submitting routes take an Idempotency-Key, may answer 422 for a reused one, and mark
    // replayed answers.
    for (const operation of [chat, jobs]) {
      const names = (operation.parameters as Json[]).map((p) => parameter(doc, p).name);
      expect(names).toContain("Idempotency-Key");
      const responses = operation.responses as Record<string, Json>;
      expect(responses["422"]).toEqual({ $ref: "#/components/responses/IdempotencyMismatch" });
      const success = (responses["200"] ?? responses["202"]) as Json;
      expect(Object.keys(success.headers as Json)).toContain("idempotent-replayed");
    }
    // An answer says what the response cache did for it.
    const answered = (chat.responses as Record<string, Json>)["200"] as Json;
    expect(Object.keys(answered.headers as Json)).toContain("x-handoff-cache");
    const mismatch = resolvePointer(doc, "#/components/responses/IdempotencyMismatch") as Json;
    expect(mismatch.description).toContain("HANDOFF_ERR_IDEMPOTENCY_MISMATCH");
  });
});

describe("the document and the app's routes", () => {
  it("describe exactly the same routes", async () => {
    const app = appFor(false);
    await app.ready();
    try {
      const registered = app.registeredRoutes.map((r) => `${r.method} ${toOpenApiPath(r.url)}`);
      expect(registered.length).toBeGreaterThanOrEqual(10);
      expect(new Set(registered).size).toBe(registered.length);
      // The document's paths are those routes, each reachable on the app.
      const doc = (await app.inject({ method: "GET", url: "/openapi.json" })).json();
      const documented = operationsOf(doc).map((o) => o.key);
      expect([...documented].sort()).toEqual([...registered].sort());
      for (const key of documented) {
        const [method = "", path = ""] = key.split(" ");
        const url = path.replace(/\{([^}]+)\}/g, ":$1");
        expect(app.hasRoute({ method: method as "GET", url }), key).toBe(true);
      }
    } finally {
      await app.close();
    }
  });

  it("refuses a route registered without its documentation: the app does not start", async () => {
    const documented = {
      schema: {
        operationId: "probe",
        tags: ["operations"],
        response: { 200: jsonResponse("Probe.", ErrorBody) },
      },
    };
    const { operationId: _id, ...withoutId } = documented.schema;
    const undocumented: RouteShorthandOptions[] = [
      {},
      { schema: withoutId },
      { schema: { ...documented.schema, tags: [] } },
      { schema: { ...documented.schema, response: {} } },
    ];
    for (const options of undocumented) {
      const app = Fastify();
      registerApi(app, { version: "1", auth: false }, (api) => {
        api.get("/probe", options, async () => ({}));
      });
      await expect(app.ready()).rejects.toThrow("GET /probe is not documented");
      await app.close();
    }
    const app = Fastify();
    registerApi(app, { version: "1", auth: false }, (api) => {
      api.get("/probe", documented, async () => ({ error: {} }));
    });
    await app.ready();
    const doc = app.swagger() as Json;
    expect(operationsOf(doc).map((o) => o.key)).toEqual([
      "GET /probe",
      "GET /openapi.json",
      "GET /",
    ]);
    await app.close();
  });
});
