import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import {
  findNatsServer,
  openaiError,
  spawnNatsServer,
  spawnService,
  UpstreamServer,
} from "@handoff/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { entry, type Mesh, type ServiceName, startMesh, waitFor } from "./harness.js";

/**
 * Errors that do not leak. Secrets are planted as canaries (each a value no output has a reason
 * to contain), the mesh is driven through the paths where they could escape (an upstream that
 * echoes the key it was sent, a client with a wrong key), and every output is searched: each
 * service's stdout and stderr, every exported span (attributes, events, status), every HTTP
 * answer, and the job records. To cover another secret, add it to `canaries`; to cover another
 * output, add it to `outputs`.
 */

const run = promisify(execFile);
const root = fileURLToPath(new URL("../..", import.meta.url));
const cliEntry = join(root, "cli", "dist", "main.js");
const SERVICES: ServiceName[] = ["gateway", "classifier", "tool-executor", "heavy-reasoner"];

const canary = (kind: string) => `canary-${kind}-${randomBytes(8).toString("hex")}`;

/** The secrets planted in this suite, by what they are. */
const canaries: Record<string, string> = {
  "gateway API key": `hk-${canary("gateway")}`,
  "provider API key": `sk-${canary("provider")}`,
  "wrong key a client sent": `sk-${canary("wrong")}`,
  "NATS password": canary("nats-password"),
  "mesh signing key": `${canary("mesh-signing")}-${canary("key")}`,
};

/** Where Handoff wrote or answered during the suite: a label, and the text to search. */
const outputs: Array<{ where: string; text: () => string }> = [];

/** The first canary found in `text`, if any, with a little context (the canary masked). */
function leak(text: string): string | undefined {
  for (const [what, value] of Object.entries(canaries)) {
    const at = text.indexOf(value);
    if (at === -1) continue;
    const context = text
      .slice(Math.max(0, at - 80), at + value.length + 40)
      .replaceAll(value, "<>");
    return `${what} at ...${context}...`;
  }
  return undefined;
}

type Json = Record<string, unknown>;
const list = (value: unknown): Json[] => (Array.isArray(value) ? (value as Json[]) : []);
const object = (value: unknown): Json =>
  typeof value === "object" && value !== null ? (value as Json) : {};

/** A received span, as much of it as waiting for a trace needs. */
interface RawSpan {
  service: string;
  traceId: string;
  kind: number;
  status: number;
}

/**
 * An OTLP/HTTP receiver that keeps every request body as it arrived, so the search sees all of a
 * span (its events too, where an exception's message and stack go, which the testkit's collector
 * does not keep), and parses just enough of it to wait for a trace.
 */
class RawOtlp {
  readonly bodies: string[] = [];
  readonly #server: Server;
  url = "";

  constructor() {
    this.#server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (chunk: Buffer) => chunks.push(chunk));
      req.on("end", () => {
        this.bodies.push(Buffer.concat(chunks).toString("utf8"));
        res.writeHead(200, { "content-type": "application/json" }).end("{}");
      });
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
    return this;
  }

  spans(): RawSpan[] {
    const out: RawSpan[] = [];
    for (const body of this.bodies) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(body);
      } catch {
        continue;
      }
      for (const resourceSpans of list(object(parsed).resourceSpans)) {
        const name = list(object(resourceSpans.resource).attributes).find(
          (a) => a.key === "service.name",
        );
        const service = String(object(name?.value).stringValue ?? "");
        for (const scopeSpans of list(resourceSpans.scopeSpans)) {
          for (const span of list(scopeSpans.spans)) {
            out.push({
              service,
              traceId: String(span.traceId).toLowerCase(),
              kind: Number(span.kind ?? 0),
              status: Number(object(span.status).code ?? 0),
            });
          }
        }
      }
    }
    return out;
  }

  text(): string {
    return this.bodies.join("\n");
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/** What the gateway answers: an error body, or a job record. */
interface ErrorOrRecord {
  status?: string;
  error: { code: string; message: string; job_id?: string; trace_id?: string };
}

const SPAN_KIND_SERVER = 2;
const SPAN_KIND_CLIENT = 3;
const STATUS_ERROR = 2;

describe("secrets never leave Handoff", () => {
  let upstream: UpstreamServer;
  let otlp: RawOtlp;
  let mesh: Mesh;
  const auth = () => ({ authorization: `Bearer ${canaries["gateway API key"]}` });

  /** An HTTP exchange with the gateway, whose answer is kept as an output. */
  async function call(what: string, path: string, init: RequestInit = {}) {
    const res = await fetch(`${mesh.gatewayUrl}${path}`, init);
    const text = await res.text();
    outputs.push({ where: `HTTP ${res.status} answer to ${what}`, text: () => text });
    return { status: res.status, text, json: () => JSON.parse(text) as ErrorOrRecord };
  }

  const chat = (what: string, content: string, extra: Record<string, unknown> = {}) =>
    call(what, "/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json", ...auth() },
      body: JSON.stringify({ model: "handoff", messages: [{ role: "user", content }], ...extra }),
    });

  beforeAll(async () => {
    const key = canaries["provider API key"];
    // The vendor echoes the key it was sent, as OpenAI's 401 does in part and a careless proxy
    // in full: a 401 for the mid tier's model, a 500 for the heavy tier's.
    upstream = await UpstreamServer.start((body) =>
      body.model === "leaky-401"
        ? openaiError(401, `Incorrect API key provided: ${key}. You can find your API key at ...`)
        : openaiError(500, `internal error while serving key ${key}; request was Bearer ${key}`),
    );
    otlp = await new RawOtlp().start();
    // NATS that wants a password: the services get it from NATS_PASSWORD.
    const binary = findNatsServer();
    if (!binary) throw new Error("this suite needs nats-server on PATH");
    const natsPassword = canaries["NATS password"] as string;
    const nats = await spawnNatsServer(binary, {
      config: `authorization { users = [ { user: handoff, password: "${natsPassword}" } ] }\n`,
      connect: { user: "handoff", pass: natsPassword },
    });
    mesh = await startMesh({
      nats,
      config: `
tiers:
  light: [{ provider: sim, model: sim-light }]
  mid:
    - provider: openai-compatible
      model: leaky-401
      base_url: ${upstream.url}/v1
      api_key_env: HANDOFF_TEST_PROVIDER_KEY
      retries: 1
  heavy:
    - provider: openai-compatible
      model: leaky-500
      base_url: ${upstream.url}/v1
      api_key_env: HANDOFF_TEST_PROVIDER_KEY
      retries: 2
routing:
  strategy: rules
mesh:
  signing_key_env: HANDOFF_TEST_MESH_KEY
gateway:
  api_keys:
    - name: ci
      key_env: HANDOFF_TEST_GATEWAY_KEY
`,
      env: {
        HANDOFF_TEST_PROVIDER_KEY: key,
        HANDOFF_TEST_GATEWAY_KEY: canaries["gateway API key"],
        NATS_USER: "handoff",
        NATS_PASSWORD: natsPassword,
        HANDOFF_TEST_MESH_KEY: canaries["mesh signing key"],
        // Every span body, events included, comes to the raw receiver.
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${otlp.url}/v1/traces`,
      },
    });
    for (const [name, proc] of mesh.processes) {
      outputs.push({ where: `${name} stdout and stderr`, text: () => proc.output() });
    }
    outputs.push({ where: "exported spans (OTLP traces, raw)", text: () => otlp.text() });
    outputs.push({
      where: "exported metrics and logs (OTLP)",
      text: () => JSON.stringify(mesh.spans.payloads()),
    });
  });

  afterAll(async () => {
    await mesh?.stop();
    await otlp?.close();
    await upstream?.close();
  });

  it("sends the planted provider key upstream, so an echo would carry it", async () => {
    const res = await chat("a question for the mid tier", "What is 17 * 23?");
    expect(res.status).toBe(502);
    const error = res.json().error;
    expect(error.code).toBe("HANDOFF_ERR_PROVIDER_REJECTED");
    expect(error.message).toContain("HTTP 401");
    expect(error.message).toContain("[redacted]");
    const sent = upstream.received("/v1/chat/completions", "leaky-401")[0];
    expect(sent?.headers.authorization).toBe(`Bearer ${canaries["provider API key"]}`);

    const record = await call("the failed mid job's record", `/v1/jobs/${error.job_id}`, {
      headers: auth(),
    });
    expect(record.status).toBe(200);
    expect(record.json().status).toBe("failed");
    await waitForFailedCall(error.trace_id, "tool-executor");
  });

  it("keeps a 500 that echoes the key out of the answer, the record and the spans", async () => {
    const res = await chat(
      "a question for the heavy tier",
      "Prove step by step that there are infinitely many primes.",
    );
    expect(res.status).toBe(502);
    const error = res.json().error;
    expect(error.message).toContain("HTTP 500");
    expect(upstream.received("/v1/chat/completions", "leaky-500").length).toBeGreaterThan(0);
    const record = await call("the failed heavy job's record", `/v1/jobs/${error.job_id}`, {
      headers: auth(),
    });
    expect(record.json().error.message).toContain("[redacted]");
    await waitForFailedCall(error.trace_id, "heavy-reasoner");
  });

  it("keeps the key out of a streamed answer's error event", async () => {
    const res = await chat("a streamed question for the mid tier", "What is 6 * 7?", {
      stream: true,
    });
    expect(res.text).toContain("HANDOFF_ERR_PROVIDER");
  });

  it("answers a wrong key with a 401 that does not repeat it", async () => {
    const res = await call("a request with a wrong key", "/v1/chat/completions", {
      method: "POST",
      headers: {
        "content-type": "application/json",
        authorization: `Bearer ${canaries["wrong key a client sent"]}`,
      },
      body: JSON.stringify({ model: "handoff", messages: [{ role: "user", content: "hi" }] }),
    });
    expect(res.status).toBe(401);
    const azure = await call("a request with a wrong api-key header", "/v1/models", {
      headers: { "api-key": canaries["wrong key a client sent"] },
    });
    expect(azure.status).toBe(401);
  });

  it("stops a gateway whose key variable is unset with one line that names the variable", async () => {
    const config = join(mkdtempSync(join(tmpdir(), "handoff-secrets-")), "handoff.yaml");
    writeFileSync(
      config,
      "tiers:\n  light: [{ provider: sim, model: a }]\n  mid: [{ provider: sim, model: b }]\n  heavy: [{ provider: sim, model: c }]\ngateway:\n  api_keys: [{ name: ci, key_env: HANDOFF_TEST_UNSET_KEY }]\n",
    );
    const failing = spawnService({
      name: "gateway-without-key",
      entry: entry("gateway"),
      env: {
        NATS_URL: mesh.nats.url,
        NATS_USER: "handoff",
        NATS_PASSWORD: canaries["NATS password"],
        HANDOFF_CONFIG: config,
        HANDOFF_TEST_UNSET_KEY: undefined,
        OTEL_TRACES_EXPORTER: "none",
        OTEL_METRICS_EXPORTER: "none",
        OTEL_LOGS_EXPORTER: "none",
        LOG_LEVEL: "info",
        PORT: "0",
        HOST: "127.0.0.1",
      },
    });
    outputs.push({ where: "gateway-without-key stdout and stderr", text: () => failing.output() });
    const exit = await failing.exited;
    expect(exit.code).toBe(1);
    const fatal = failing.logs().find((line) => line.level === "fatal");
    expect(fatal).toMatchObject({ code: "HANDOFF_ERR_CONFIG" });
    expect(String(fatal?.msg)).toContain("HANDOFF_TEST_UNSET_KEY");
    expect(failing.output()).not.toContain("    at ");
  });

  it("leaves no canary in any output", async () => {
    // Stopped first, so their shutdown lines and last span exports are searched too.
    await Promise.all([...mesh.processes.values()].map((proc) => proc.stop(15_000)));
    expect(outputs.length).toBeGreaterThan(SERVICES.length);
    const found = outputs.flatMap(({ where, text }) => {
      const hit = leak(text());
      return hit ? [`${where}: ${hit}`] : [];
    });
    expect(found).toEqual([]);
    // The search does find a canary where there is one: in what the upstream was sent.
    expect(leak(JSON.stringify(upstream.requests))).toMatch(/^provider API key at /);
    // The search would have seen them: the spans did record the provider failures.
    expect(otlp.text()).toContain("exception");
    expect(otlp.text()).toContain("[redacted]");
  });

  /** Waits until the trace holds the failed model call of `service` and the gateway's span. */
  async function waitForFailedCall(traceId: string | undefined, service: string): Promise<void> {
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);
    await waitFor(
      () => {
        const spans = otlp.spans().filter((s) => s.traceId === traceId);
        const failed = spans.some(
          (s) => s.service === service && s.kind === SPAN_KIND_CLIENT && s.status === STATUS_ERROR,
        );
        const server = spans.some((s) => s.service === "gateway" && s.kind === SPAN_KIND_SERVER);
        return failed && server ? true : undefined;
      },
      { timeoutMs: 15_000, what: `the failed ${service} call and the gateway span of ${traceId}` },
    );
  }
});

describe("errors a person reads at startup", () => {
  const dir = mkdtempSync(join(tmpdir(), "handoff-startup-"));
  const secret = `sk-${canary("config")}`;
  const brokenYaml = join(dir, "broken.yaml");
  writeFileSync(
    brokenYaml,
    `tiers:\n  light: [{ provider: sim, model: sim-light }]\n  mid: [{ provider: sim, api_key: ${secret}\n`,
  );
  const invalid = join(dir, "invalid.json");
  writeFileSync(
    invalid,
    JSON.stringify({
      tiers: {
        light: [{ provider: "sim", model: "a" }],
        mid: [{ provider: "sim", model: "b", timeout_ms: secret }],
        heavy: [{ provider: secret, model: "c" }],
      },
    }),
  );

  async function start(name: ServiceName, config: string, logLevel = "info") {
    const proc = spawnService({
      name,
      entry: entry(name),
      env: {
        HANDOFF_CONFIG: config,
        LOG_LEVEL: logLevel,
        OTEL_TRACES_EXPORTER: "none",
        OTEL_METRICS_EXPORTER: "none",
        OTEL_LOGS_EXPORTER: "none",
        // Nothing listens here: a service that got past its config would fail differently.
        NATS_URL: "nats://127.0.0.1:1",
      },
    });
    const exit = await proc.exited;
    const lines = proc
      .output()
      .split("\n")
      .filter((line) => line.trim() !== "");
    return { exit, lines, output: proc.output(), logs: proc.logs() };
  }

  it.each(SERVICES)("%s: a broken YAML config is one line without a stack", async (name) => {
    const { exit, lines, output, logs } = await start(name, brokenYaml);
    expect(exit.code).toBe(1);
    expect(lines).toHaveLength(1);
    expect(logs[0]).toMatchObject({ level: "fatal", code: "HANDOFF_ERR_CONFIG" });
    expect(String(logs[0]?.msg)).toMatch(
      new RegExp(
        `^${name} failed to start: HANDOFF_ERR_CONFIG: ${brokenYaml}: line \\d+, column \\d+: not valid YAML: `,
      ),
    );
    expect(logs[0]).not.toHaveProperty("err");
    expect(output).not.toContain("    at ");
    expect(output).not.toContain(secret);
  });

  it("names the failing paths of an invalid config, and not the values", async () => {
    const { exit, lines, output, logs } = await start("tool-executor", invalid);
    expect(exit.code).toBe(1);
    expect(lines).toHaveLength(1);
    expect(String(logs[0]?.msg)).toContain(`${invalid} is invalid: `);
    expect(String(logs[0]?.msg)).toContain("tiers.mid[0].timeout_ms");
    expect(String(logs[0]?.msg)).toContain("tiers.heavy[0].provider");
    expect(output).not.toContain("    at ");
    expect(output).not.toContain(secret);
  });

  it("adds the stack at LOG_LEVEL=debug, still without the file's text", async () => {
    const { exit, output, logs } = await start("gateway", brokenYaml, "debug");
    expect(exit.code).toBe(1);
    const fatal = logs.find((line) => line.level === "fatal");
    expect((fatal?.err as { stack?: string } | undefined)?.stack).toMatch(/\n\s+at /);
    expect(output).toContain("    at ");
    expect(output).not.toContain(secret);
  });

  describe("the CLI", () => {
    async function cli(args: string[], logLevel = "info") {
      try {
        const { stdout, stderr } = await run(process.execPath, [cliEntry, ...args], {
          env: { ...process.env, LOG_LEVEL: logLevel },
        });
        return { code: 0, stdout, stderr };
      } catch (error) {
        const e = error as { code: number; stdout: string; stderr: string };
        return { code: e.code, stdout: e.stdout, stderr: e.stderr };
      }
    }

    it("prints a bad argument as one line without a stack, and the stack at debug", async () => {
      const plain = await cli(["ask", "--nope"]);
      expect(plain.code).toBe(2);
      expect(plain.stderr.trim().split("\n")).toHaveLength(1);
      expect(plain.stderr).toMatch(/^Unknown option/);
      expect(plain.stderr).not.toContain("    at ");

      const debug = await cli(["ask", "--nope"], "debug");
      expect(debug.code).toBe(2);
      expect(debug.stderr).toContain("    at ");
    });

    it("prints a broken config as one line, code and message, without the file's text", async () => {
      const data = join(dir, "data.jsonl");
      writeFileSync(data, `${JSON.stringify({ id: "q1", prompt: "What is 2 + 2?" })}\n`);
      const result = await cli([
        "router",
        "score",
        "--strategy",
        "rules",
        "--data",
        data,
        "--config",
        brokenYaml,
      ]);
      expect(result.code).toBe(1);
      expect(result.stderr.trim()).toMatch(
        new RegExp(`^HANDOFF_ERR_CONFIG: ${brokenYaml}: line \\d+, column \\d+: not valid YAML: `),
      );
      expect(result.stderr.trim().split("\n")).toHaveLength(1);
      expect(result.stderr).not.toContain(secret);
    });
  });
});
