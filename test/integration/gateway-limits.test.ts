import { HandoffConfig as ConfigSchema, type HandoffConfig, simProfile } from "@handoff/config";
import { ChatCompletion, ErrorBody, JobRecord, MAX_JSON_DEPTH, Streams } from "@handoff/contracts";
import { ensureTopology, meshLimits } from "@handoff/mesh";
import { findNatsServer, type NatsHandle, spawnNatsServer } from "@handoff/testkit";
import { jetstreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClassifierService } from "../../services/classifier/src/service.js";
import { createGateway, type Gateway } from "../../services/gateway/src/service.js";
import { createHeavyReasonerService } from "../../services/heavy-reasoner/src/service.js";
import { createToolExecutorService } from "../../services/tool-executor/src/service.js";

// Bounded input, bounded work: what the gateway refuses before it stores anything (a job larger
// than one NATS message), what it never leaves behind (a `queued` record nobody will run), and
// what the mesh still answers (a 1 MB prompt, without holding up anyone else's job).

const binary = findNatsServer();
if (!binary) throw new Error("these tests need nats-server on PATH (apt-get install nats-server)");

const logger = pino({ level: "silent" });

interface Mesh {
  nats: NatsHandle;
  nc: NatsConnection;
  gateway: Gateway;
  url: string;
  kv: KV;
  stop(): Promise<void>;
}

/** A nats-server with `natsConfig`, the gateway listening on a free port, and the workers. */
async function startMesh(
  natsConfig: string,
  config: HandoffConfig,
  options: { workers: boolean },
): Promise<Mesh> {
  const nats = await spawnNatsServer(binary as string, { config: natsConfig });
  const nc = await connect({ servers: nats.url });
  const deps = { nc, config, logger, version: "0.0.0-test", concurrency: 4 };
  const workers = options.workers
    ? [
        createClassifierService(deps),
        createToolExecutorService(deps),
        createHeavyReasonerService(deps),
      ]
    : [];
  for (const worker of workers) await worker.start();
  const gateway = createGateway({ ...deps, host: "127.0.0.1", port: 0 });
  const url = await gateway.start();
  const { jobs: kv } = await ensureTopology(nc, meshLimits(config));
  return {
    nats,
    nc,
    gateway,
    url,
    kv,
    async stop() {
      await gateway.stop();
      for (const worker of workers) await worker.stop();
      await nc.close();
      await nats.stop();
    },
  };
}

async function keys(kv: KV): Promise<string[]> {
  const out: string[] = [];
  for await (const key of await kv.keys()) out.push(key);
  return out.sort();
}

async function jobMessages(nc: NatsConnection): Promise<number> {
  const jsm = await jetstreamManager(nc);
  return (await jsm.streams.info(Streams.jobs)).state.messages;
}

async function post(
  url: string,
  path: string,
  body: unknown,
): Promise<{ status: number; json: unknown }> {
  const res = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

const ask = (content: string, extra: Record<string, unknown> = {}) => ({
  model: "handoff",
  messages: [{ role: "user", content }],
  ...extra,
});

describe("a NATS server whose max_payload is 64 KiB", () => {
  let mesh: Mesh;

  beforeAll(async () => {
    mesh = await startMesh("max_payload: 65536\n", simProfile, { workers: true });
  });
  afterAll(async () => {
    await mesh?.stop();
  });

  it.each([
    ["/v1/jobs", {}],
    ["/v1/chat/completions", {}],
    ["/v1/chat/completions", { stream: true }],
  ])(
    "answers %s %o with 413 before storing anything when the job cannot fit",
    async (path, extra) => {
      const before = await keys(mesh.kv);
      const messages = await jobMessages(mesh.nc);
      // Well under the body limit (1 MiB), well over one message.
      const res = await post(mesh.url, path, ask("x".repeat(100_000), extra));
      expect(res.status).toBe(413);
      const { error } = ErrorBody.parse(res.json);
      expect(error.code).toBe("HANDOFF_ERR_MAX_PAYLOAD");
      expect(error.type).toBe("invalid_request_error");
      expect(error.message).toMatch(/the job is 1\d{5} bytes as a NATS message/);
      expect(error.message).toContain("max_payload of 65536 bytes");
      expect(await keys(mesh.kv)).toEqual(before);
      expect(await jobMessages(mesh.nc)).toBe(messages);
    },
  );

  it("still answers a request that fits", async () => {
    const res = await post(mesh.url, "/v1/chat/completions", ask("What is 17 * 23?"));
    expect(res.status).toBe(200);
    expect(ChatCompletion.parse(res.json).choices[0]?.message.content).toContain("391");
  });

  it(`refuses free-form JSON nested past ${MAX_JSON_DEPTH} levels with a 400 naming the path`, async () => {
    const before = await keys(mesh.kv);
    // As text: a value this deep is more than JSON.stringify itself can take.
    const deep = `${'{"a":'.repeat(100_000)}{}${"}".repeat(100_000)}`;
    const body = JSON.stringify(
      ask("hi", { tools: [{ type: "function", function: { name: "deep" } }] }),
    );
    const res = await post(
      mesh.url,
      "/v1/jobs",
      body.replace('"name":"deep"', `"name":"deep","parameters":${deep}`),
    );
    expect(res.status).toBe(400);
    const { error } = ErrorBody.parse(res.json);
    expect(error.param).toBe(`tools[0].function.parameters${".a".repeat(MAX_JSON_DEPTH)}`);
    expect(error.issues?.[0]?.message).toContain(`${MAX_JSON_DEPTH} levels`);
    expect(await keys(mesh.kv)).toEqual(before);
  });
});

describe("a job whose publish fails", () => {
  let mesh: Mesh;

  beforeAll(async () => {
    // No workers: nothing else touches the jobs stream.
    mesh = await startMesh("", simProfile, { workers: false });
  });
  afterAll(async () => {
    await mesh?.stop();
  });

  it.each(["/v1/jobs", "/v1/chat/completions"])(
    "%s answers 503, retryable, and leaves no record queued",
    async (path) => {
      // The gateway started with the stream in place; now it is gone, so JetStream refuses the job.
      const jsm = await jetstreamManager(mesh.nc);
      await jsm.streams.delete(Streams.jobs);
      try {
        const before = await keys(mesh.kv);
        const res = await post(mesh.url, path, ask("What is 17 * 23?"));
        expect(res.status).toBe(503);
        const { error } = ErrorBody.parse(res.json);
        expect(error.code).toBe("HANDOFF_ERR_UNAVAILABLE");
        expect(error.type).toBe("server_error");
        expect(error.message).toContain("the job could not be queued on NATS; try again");

        const added = (await keys(mesh.kv)).filter((key) => !before.includes(key));
        // Marked failed (or, failing that, removed): never left `queued`.
        for (const id of added) {
          const entry = await mesh.kv.get(id);
          const record = JobRecord.parse(entry?.json());
          expect(record.status).toBe("failed");
          expect(record.error).toMatchObject({ code: "HANDOFF_ERR_UNAVAILABLE", retryable: true });
        }
        expect(added.length).toBeLessThanOrEqual(1);
      } finally {
        await ensureTopology(mesh.nc, meshLimits(simProfile));
      }
    },
  );
});

describe("a 1 MB prompt through the default profile", () => {
  let mesh: Mesh;
  const config = ConfigSchema.parse({
    ...simProfile,
    limits: { ...simProfile.limits, max_body_bytes: 4 * 1024 * 1024, request_timeout_ms: 30_000 },
  });

  beforeAll(async () => {
    mesh = await startMesh("max_payload: 8MB\n", config, { workers: true });
  });
  afterAll(async () => {
    await mesh?.stop();
  });

  it("is answered, and a small request on the same mesh meanwhile too", async () => {
    // Half an expression, half a run of numbers with no operator: the old expression finder
    // backtracked over that run from each of its digits, minutes for this prompt.
    const piece = "(12 + 3) * 4 - 5 / (6 ^ 2) % ";
    const prompt = `What is ${piece.repeat(Math.ceil(500_000 / piece.length))}1, given ${"7 8 9 ".repeat(83_334)}?`;
    expect(prompt.length).toBeGreaterThan(1_000_000);
    const big = post(mesh.url, "/v1/chat/completions", ask(prompt));
    const small = post(mesh.url, "/v1/chat/completions", ask("What is 17 * 23?"));
    const [bigRes, smallRes] = await Promise.all([big, small]);
    expect(smallRes.status).toBe(200);
    expect(ChatCompletion.parse(smallRes.json).choices[0]?.message.content).toContain("391");
    expect(bigRes.status).toBe(200);
    const answer = ChatCompletion.parse(bigRes.json);
    expect(answer.choices[0]?.message.content).toBeTruthy();
    expect(answer.choices[0]?.finish_reason).toBe("stop");
  }, 30_000);
});
