import { request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { HandoffConfig, simProfile } from "@handoff/config";
import { ErrorBody, MAX_JSON_DEPTH } from "@handoff/contracts";
import type { JobClient } from "@handoff/mesh";
import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { buildApp } from "./app.js";

/** A pino logger whose records land in `lines`, parsed. */
function capturingLogger(lines: Record<string, unknown>[]) {
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split("\n")) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  return pino({ level: "debug" }, sink);
}

function appWith(maxBodyBytes: number, lines: Record<string, unknown>[] = []): FastifyInstance {
  return buildApp({
    // Every request here is refused before a job exists.
    jobs: {} as JobClient,
    config: HandoffConfig.parse({
      ...simProfile,
      limits: { ...simProfile.limits, max_body_bytes: maxBodyBytes },
    }),
    logger: capturingLogger(lines),
    ready: () => true,
  });
}

let app: FastifyInstance | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
});

const chat = (body: unknown) => ({
  method: "POST" as const,
  url: "/v1/chat/completions",
  headers: { "content-type": "application/json" },
  payload: typeof body === "string" ? body : JSON.stringify(body),
});

describe("validation errors", () => {
  it("answer with the first 20 issues and the total, and are logged once, bounded", async () => {
    const lines: Record<string, unknown>[] = [];
    app = appWith(1_048_576, lines);
    const messages = Array.from({ length: 500 }, () => ({ role: "bot", content: "x" }));
    const res = await app.inject(chat({ model: "handoff", messages }));
    expect(res.statusCode).toBe(400);
    const body = ErrorBody.parse(res.json());
    expect(body.error.code).toBe("HANDOFF_ERR_VALIDATION");
    expect(body.error.issues).toHaveLength(20);
    expect(body.error.issues?.[19]?.path).toBe("messages[19].role");
    expect(body.error.total_issues).toBe(500);
    expect(body.error.message).toContain("and 480 more (500 issues)");
    expect(body.error.message).not.toContain("messages[20]");

    const failures = lines.filter((line) => line.code === "HANDOFF_ERR_VALIDATION");
    expect(failures).toHaveLength(1);
    expect(failures[0]).toMatchObject({ level: 30, total_issues: 500 });
    expect(failures[0]?.issues).toHaveLength(20);
    // Nothing else logged the issues again (fastify's own request lines carry none).
    const mentions = lines.filter((line) => JSON.stringify(line).includes("messages[0].role"));
    expect(mentions).toHaveLength(1);
    expect(JSON.stringify(failures[0]).length).toBeLessThan(8_000);
  });
});

describe("free-form JSON nesting", () => {
  /** `{"a":{"a":...}}`, `levels` objects deep, as text: built without recursion. */
  const nestedText = (levels: number) => `${'{"a":'.repeat(levels - 1)}{}${"}".repeat(levels - 1)}`;

  it(`accepts tool parameters ${MAX_JSON_DEPTH} levels deep`, async () => {
    app = appWith(1_048_576);
    const parameters = JSON.parse(nestedText(MAX_JSON_DEPTH));
    const res = await app.inject(
      chat({
        model: "handoff",
        messages: [{ role: "user", content: "hi" }],
        tools: [{ type: "function", function: { name: "deep", parameters } }],
        // Invalid on purpose, so the request stops at validation with only this issue.
        n: 2,
      }),
    );
    expect(res.statusCode).toBe(400);
    expect(ErrorBody.parse(res.json()).error.issues?.map((i) => i.path)).toEqual(["n"]);
  });

  it("refuses a hostile 100000-level value with a 400 that names the path and the limit", async () => {
    app = appWith(1_048_576);
    const body =
      '{"model":"handoff","messages":[{"role":"user","content":"hi"}],' +
      `"tools":[{"type":"function","function":{"name":"deep","parameters":${nestedText(100_000)}}}],` +
      `"response_format":{"type":"json_schema","json_schema":{"name":"r","schema":${nestedText(70)}}}}`;
    const res = await app.inject(chat(body));
    expect(res.statusCode).toBe(400);
    const error = ErrorBody.parse(res.json()).error;
    expect(error.code).toBe("HANDOFF_ERR_VALIDATION");
    expect(error.total_issues).toBe(2);
    const [tools, format] = error.issues ?? [];
    expect(tools?.path).toBe(`tools[0].function.parameters${".a".repeat(MAX_JSON_DEPTH)}`);
    expect(tools?.message).toContain(`${MAX_JSON_DEPTH} levels`);
    expect(format?.path).toBe(`response_format.json_schema.schema${".a".repeat(MAX_JSON_DEPTH)}`);
    expect(error.param).toBe(tools?.path);
  });
});

interface RawResponse {
  status?: number;
  body: string;
  /** A socket error the client saw (EPIPE, ECONNRESET), if any. */
  error?: string;
}

/**
 * POSTs `size` bytes with node's own http client, as a Content-Length body or chunked, and
 * resolves once the request is over, with whatever the client saw.
 */
function postRaw(
  port: number,
  size: number,
  options: { chunked: boolean; keepAlive: boolean },
): Promise<RawResponse> {
  return new Promise((resolve) => {
    const seen: RawResponse = { body: "" };
    const req = httpRequest({
      host: "127.0.0.1",
      port,
      method: "POST",
      path: "/v1/chat/completions",
      // No agent: `Connection: close`, the case where the server closes after answering.
      ...(options.keepAlive ? {} : { agent: false }),
      headers: {
        "content-type": "application/json",
        ...(options.chunked ? {} : { "content-length": String(size) }),
      },
    });
    req.on("response", (res) => {
      seen.status = res.statusCode;
      res.on("data", (chunk: Buffer) => {
        seen.body += chunk.toString();
      });
      res.on("error", (error: NodeJS.ErrnoException) => {
        seen.error ??= error.code ?? error.message;
      });
    });
    req.on("error", (error: NodeJS.ErrnoException) => {
      seen.error ??= error.code ?? error.message;
    });
    req.on("close", () => setTimeout(() => resolve(seen), 50));
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    for (let sent = 0; sent < size; sent += chunk.length) {
      req.write(chunk.subarray(0, Math.min(chunk.length, size - sent)));
    }
    req.end();
  });
}

describe("a body over limits.max_body_bytes", () => {
  it.each([
    { chunked: false, keepAlive: true },
    { chunked: false, keepAlive: false },
    { chunked: true, keepAlive: true },
    { chunked: true, keepAlive: false },
  ])("gets a 413 the client can read, not a broken pipe (%o)", async (options) => {
    app = appWith(4_096);
    await app.listen({ host: "127.0.0.1", port: 0 });
    const { port } = app.server.address() as AddressInfo;
    for (let round = 0; round < 3; round++) {
      const seen = await postRaw(port, 5 * 1024 * 1024, options);
      expect(seen.error).toBeUndefined();
      expect(seen.status).toBe(413);
      const error = ErrorBody.parse(JSON.parse(seen.body)).error;
      expect(error.code).toBe("HANDOFF_ERR_BODY_TOO_LARGE");
      expect(error.message).toContain("4096 bytes (limits.max_body_bytes)");
    }
  });

  it("still gets a 413 from inject, where the whole body is at hand", async () => {
    app = appWith(4_096);
    const res = await app.inject(chat({ model: "handoff", padding: "x".repeat(10_000) }));
    expect(res.statusCode).toBe(413);
    expect(res.json().error.code).toBe("HANDOFF_ERR_BODY_TOO_LARGE");
  });
});
