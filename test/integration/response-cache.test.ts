import { randomBytes, randomUUID } from "node:crypto";
import { natsClient } from "@handoff/client";
import { type HandoffConfig, parseConfig, simProfile } from "@handoff/config";
import { Buckets, type HandoffInfo, responseCacheBucket } from "@handoff/contracts";
import { ensureResponseCacheBucket, openResponseCaches } from "@handoff/mesh";
import { createModel, ModelRouter, type TierCallContext } from "@handoff/providers";
import { type NatsHandle, startNats, waitFor } from "@handoff/testkit";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { type NatsConnection, nanos } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type InProcessMesh,
  startInProcessMesh,
  startModelUpstreams,
  UPSTREAM_KEYS,
  upstreamConfig,
} from "./support/in-process-mesh.js";

/**
 * The exact response cache against a live mesh: the models behind it are local servers speaking
 * OpenAI's and Anthropic's wire formats that record every request, so a hit shows as a request
 * that never reached them.
 */

const KEYS = { teamA: randomBytes(24).toString("hex"), teamB: randomBytes(24).toString("hex") };
const env = {
  ...UPSTREAM_KEYS,
  CACHE_TEST_KEY_A: KEYS.teamA,
  CACHE_TEST_KEY_B: KEYS.teamB,
};
const COMPLETIONS = "/v1/chat/completions";
const HOUR = 3_600_000;

let upstreams: Awaited<ReturnType<typeof startModelUpstreams>>;

beforeAll(async () => {
  upstreams = await startModelUpstreams();
});

afterAll(async () => {
  await upstreams?.close();
});

/** The upstream config with two API keys, `cache` as given. */
function cachedConfig(cache: Record<string, unknown>): HandoffConfig {
  return upstreamConfig(upstreams.openai.url, upstreams.anthropic.url, () => ({
    gateway: {
      api_keys: [
        { name: "team-a", key_env: "CACHE_TEST_KEY_A" },
        { name: "team-b", key_env: "CACHE_TEST_KEY_B" },
      ],
    },
    cache,
  }));
}

/** A light-tier question no other test asks. */
const question = (what = "Hello there") => `${what}, friend ${randomUUID().slice(0, 8)}`;

/** Requests the upstreams received whose messages mention `text`. */
function upstreamCalls(text: string): number {
  return [...upstreams.openai.requests, ...upstreams.anthropic.requests].filter((r) =>
    JSON.stringify(r.body.messages ?? r.body.input ?? "").includes(text),
  ).length;
}

interface Answer {
  status: number;
  cacheHeader: string | null;
  body: {
    choices: Array<{ message: { content: string | null } }>;
    handoff: HandoffInfo;
  };
}

async function ask(
  url: string,
  content: string,
  options: {
    key?: string;
    headers?: Record<string, string>;
    body?: Record<string, unknown>;
  } = {},
): Promise<Answer> {
  const res = await fetch(`${url}${COMPLETIONS}`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      authorization: `Bearer ${options.key ?? KEYS.teamA}`,
      ...options.headers,
    },
    body: JSON.stringify({
      model: "handoff",
      messages: [{ role: "user", content }],
      ...options.body,
    }),
  });
  const body = (await res.json()) as Answer["body"];
  if (res.status !== 200) throw new Error(`status ${res.status}: ${JSON.stringify(body)}`);
  return { status: res.status, cacheHeader: res.headers.get("x-handoff-cache"), body };
}

describe("the exact response cache, per tenant, in a live mesh", () => {
  let mesh: InProcessMesh;

  beforeAll(async () => {
    mesh = await startInProcessMesh(
      cachedConfig({
        tiers: { light: { ttl_ms: HOUR }, mid: { ttl_ms: HOUR }, heavy: { ttl_ms: HOUR } },
      }),
      { env },
    );
  });

  afterAll(async () => {
    await mesh?.stop();
  });

  it("answers the second identical request from the cache: no model call, no cost, marked a hit", async () => {
    const text = question();
    const first = await ask(mesh.url, text);
    expect(first.body.handoff.route).toEqual(["classifier"]);
    expect(first.body.handoff.cache).toBe("miss");
    expect(first.cacheHeader).toBe("miss");
    const paid = first.body.handoff.usage[0];
    expect(paid).toMatchObject({ tier: "light", model: "gpt-4o-mini", cache: "miss" });
    expect(paid?.cost_usd).toBeGreaterThan(0);
    expect(upstreamCalls(text)).toBe(1);

    const second = await ask(mesh.url, text);
    expect(upstreamCalls(text)).toBe(1);
    expect(second.cacheHeader).toBe("hit");
    expect(second.body.choices[0]?.message.content).toBe(first.body.choices[0]?.message.content);
    expect(second.body.handoff.cache).toBe("hit");
    expect(second.body.handoff.cost_usd).toBe(0);
    expect(second.body.handoff.usage).toEqual([
      expect.objectContaining({
        stage: "classifier",
        tier: "light",
        provider: "openai-compatible",
        model: "gpt-4o-mini",
        input_tokens: paid?.input_tokens,
        output_tokens: paid?.output_tokens,
        cost_usd: 0,
        cache: "hit",
        saved_usd: paid?.cost_usd,
      }),
    ]);
    // The job record, which GET /v1/jobs/{id} returns, says the same.
    const record = await fetch(`${mesh.url}/v1/jobs/${second.body.handoff.job_id}`, {
      headers: { authorization: `Bearer ${KEYS.teamA}` },
    }).then((r) => r.json() as Promise<{ usage: Array<{ cache?: string }>; cost_usd: number }>);
    expect(record.usage[0]?.cache).toBe("hit");
    expect(record.cost_usd).toBe(0);
  });

  it("never shows one tenant another's answers", async () => {
    const text = question();
    await ask(mesh.url, text, { key: KEYS.teamA });
    const other = await ask(mesh.url, text, { key: KEYS.teamB });
    expect(other.body.handoff.cache).toBe("miss");
    expect(other.cacheHeader).toBe("miss");
    expect(upstreamCalls(text)).toBe(2);
    // Each has its own entry, under its own name.
    const kv = await new Kvm(mesh.nc).open(Buckets.cacheLight);
    const keys: string[] = [];
    for await (const key of await kv.keys()) keys.push(key);
    expect(keys.some((k) => k.startsWith("team-a."))).toBe(true);
    expect(keys.some((k) => k.startsWith("team-b."))).toBe(true);
    expect((await ask(mesh.url, text, { key: KEYS.teamB })).body.handoff.cache).toBe("hit");
    expect(upstreamCalls(text)).toBe(2);
  });

  it("is bypassed with Cache-Control: no-cache or handoff.cache: false, which neither read nor write it", async () => {
    const text = question();
    await ask(mesh.url, text);
    for (const bypass of [
      { headers: { "cache-control": "no-cache" } },
      { headers: { "Cache-Control": "max-age=0, no-store" } },
      { body: { handoff: { cache: false } } },
    ]) {
      const fresh = await ask(mesh.url, text, bypass);
      expect(fresh.body.handoff.cache).toBe("bypass");
      expect(fresh.cacheHeader).toBe("bypass");
      expect(fresh.body.handoff.usage[0]?.cost_usd).toBeGreaterThan(0);
    }
    expect(upstreamCalls(text)).toBe(4);

    // A bypassed answer is not stored: the next plain request still misses.
    const unstored = question();
    await ask(mesh.url, unstored, { headers: { "cache-control": "no-cache" } });
    expect((await ask(mesh.url, unstored)).body.handoff.cache).toBe("miss");
    expect(upstreamCalls(unstored)).toBe(2);
  });

  it("does not cache a request that samples, unless it asks with handoff.cache: true", async () => {
    const text = question();
    const sampled = { body: { temperature: 0.7 } };
    expect((await ask(mesh.url, text, sampled)).body.handoff.cache).toBe("bypass");
    expect((await ask(mesh.url, text, sampled)).body.handoff.cache).toBe("bypass");
    expect(upstreamCalls(text)).toBe(2);

    const asked = { body: { temperature: 0.7, handoff: { cache: true } } };
    expect((await ask(mesh.url, text, asked)).body.handoff.cache).toBe("miss");
    expect((await ask(mesh.url, text, asked)).body.handoff.cache).toBe("hit");
    expect(upstreamCalls(text)).toBe(3);
    // Another temperature is another request.
    const other = { body: { temperature: 0.9, handoff: { cache: true } } };
    expect((await ask(mesh.url, text, other)).body.handoff.cache).toBe("miss");
    expect(upstreamCalls(text)).toBe(4);
  });

  it("streams a cached answer as chunks like any other, the last one saying it was a hit", async () => {
    const text = question();
    const first = await ask(mesh.url, text);
    const res = await fetch(`${mesh.url}${COMPLETIONS}`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${KEYS.teamA}` },
      body: JSON.stringify({
        model: "handoff",
        stream: true,
        messages: [{ role: "user", content: text }],
      }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    // The headers left before the answer was known: the stream's last chunk says it.
    expect(res.headers.get("x-handoff-cache")).toBeNull();
    const events = (await res.text())
      .split("\n\n")
      .filter((block) => block.startsWith("data: "))
      .map((block) => block.slice("data: ".length));
    expect(events.at(-1)).toBe("[DONE]");
    const chunks = events.slice(0, -1).map(
      (data) =>
        JSON.parse(data) as {
          choices: Array<{ delta: { content?: string | null }; finish_reason: string | null }>;
          handoff?: HandoffInfo;
        },
    );
    const pieces = chunks
      .map((chunk) => chunk.choices[0]?.delta.content)
      .filter((piece): piece is string => typeof piece === "string" && piece.length > 0);
    expect(pieces.length).toBeGreaterThan(2);
    expect(pieces.join("")).toBe(first.body.choices[0]?.message.content);
    const last = chunks.at(-1);
    expect(last?.choices[0]?.finish_reason).toBe("stop");
    expect(last?.handoff?.cache).toBe("hit");
    expect(last?.handoff?.usage[0]).toMatchObject({ cost_usd: 0, cache: "hit" });
    expect(upstreamCalls(text)).toBe(1);
  });

  it("serves the Responses and Anthropic Messages doors from the same cache, bypassed by Cache-Control", async () => {
    const text = question();
    const headers = { "content-type": "application/json", authorization: `Bearer ${KEYS.teamA}` };
    const responses = (extra: Record<string, string> = {}) =>
      fetch(`${mesh.url}/v1/responses`, {
        method: "POST",
        headers: { ...headers, ...extra },
        body: JSON.stringify({ model: "handoff", input: text }),
      });
    const first = await responses();
    expect(first.status).toBe(200);
    expect(first.headers.get("x-handoff-cache")).toBe("miss");
    const second = await responses();
    expect(second.headers.get("x-handoff-cache")).toBe("hit");
    expect(((await second.json()) as { handoff: HandoffInfo }).handoff.cache).toBe("hit");
    expect((await responses({ "cache-control": "no-cache" })).headers.get("x-handoff-cache")).toBe(
      "bypass",
    );
    expect(upstreamCalls(text)).toBe(2);

    const message = await fetch(`${mesh.url}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": KEYS.teamA },
      body: JSON.stringify({
        model: "handoff",
        max_tokens: 256,
        messages: [{ role: "user", content: text }],
      }),
    });
    expect(message.status).toBe(200);
    const body = (await message.json()) as { handoff: HandoffInfo };
    // Another request (it sets max_tokens): its own entry.
    expect(body.handoff.cache).toBe("miss");
    expect(upstreamCalls(text)).toBe(3);
  });

  it("serves the NATS door too, per tenant, and honours handoff.cache: false there", async () => {
    const text = question();
    const client = natsClient({ nc: mesh.nc, tenant: "team-nats" });
    const completion = async (extra: Record<string, unknown> = {}) => {
      const job = await client.submit({
        model: "handoff",
        messages: [{ role: "user", content: text }],
        ...extra,
      });
      const outcome = await client.result(job.id, { timeoutMs: 20_000 });
      if (outcome.status !== "succeeded") throw new Error(`job ${job.id} ${outcome.status}`);
      return outcome.completion;
    };
    expect((await completion()).handoff.cache).toBe("miss");
    expect((await completion()).handoff.cache).toBe("hit");
    expect((await completion({ handoff: { cache: false } })).handoff.cache).toBe("bypass");
    expect(upstreamCalls(text)).toBe(2);
    // Over HTTP, team-a is another tenant.
    expect((await ask(mesh.url, text)).body.handoff.cache).toBe("miss");
  });

  it("caches each turn of the tool loop: a repeated question runs the tool again, and no model", async () => {
    const tag = randomUUID().slice(0, 8);
    const text = `What is 17 * 23? (ref ${tag})`;
    const first = await ask(mesh.url, text);
    expect(first.body.handoff.route).toEqual(["classifier", "tool-executor"]);
    expect(first.body.choices[0]?.message.content).toBe("The tool answered: 391.");
    expect(first.body.handoff.usage.map((u) => u.cache)).toEqual(["miss", "miss"]);
    expect(upstreamCalls(tag)).toBe(2);

    const second = await ask(mesh.url, text);
    expect(second.body.choices[0]?.message.content).toBe("The tool answered: 391.");
    // The first turn's tool call came from the cache; the calculator ran again and said the
    // same, so the second turn's messages were the same too.
    expect(second.body.handoff.usage.map((u) => u.cache)).toEqual(["hit", "hit"]);
    expect(second.body.handoff.cache).toBe("hit");
    expect(second.cacheHeader).toBe("hit");
    expect(second.body.handoff.cost_usd).toBe(0);
    expect(upstreamCalls(tag)).toBe(2);
  });

  it("caches the heavy tier's answers too", async () => {
    const text = `Prove step by step that there are infinitely many primes (${randomUUID().slice(0, 8)}).`;
    const first = await ask(mesh.url, text);
    expect(first.body.handoff.route.at(-1)).toBe("heavy-reasoner");
    expect(first.body.handoff.cache).toBe("miss");
    const second = await ask(mesh.url, text);
    expect(second.body.handoff.cache).toBe("hit");
    expect(second.body.handoff.usage.at(-1)).toMatchObject({
      stage: "heavy-reasoner",
      tier: "heavy",
      model: "claude-sonnet-4-5",
      cost_usd: 0,
    });
    expect(
      upstreams.anthropic.requests.filter((r) => JSON.stringify(r.body).includes(text)),
    ).toHaveLength(1);
  });

  it("falls through to the model when its bucket is gone, and the answer stands", async () => {
    // Run last in this mesh: the light tier's bucket does not come back until the next start.
    const text = question();
    const jsm = await jetstreamManager(mesh.nc);
    await jsm.streams.delete(`KV_${Buckets.cacheLight}`);
    const answered = await ask(mesh.url, text);
    expect(answered.body.choices[0]?.message.content).toContain(text);
    expect(answered.body.handoff.cache).toBe("miss");
    expect(answered.body.handoff.usage[0]?.cost_usd).toBeGreaterThan(0);
    const again = await ask(mesh.url, text);
    expect(again.body.handoff.cache).toBe("miss");
    expect(upstreamCalls(text)).toBe(2);
  });
});

describe("the cache's lifetime", () => {
  it("expires an answer after the tier's ttl_ms, set as the bucket's max age at start", async () => {
    const nats = await startNats();
    const nc = await connect({ servers: nats.url });
    let mesh: InProcessMesh | undefined;
    try {
      // A bucket left by an earlier config: the start brings its max age to the new ttl_ms.
      await ensureResponseCacheBucket(nc, "light", { ttlMs: HOUR });
      mesh = await startInProcessMesh(cachedConfig({ tiers: { light: { ttl_ms: 1_000 } } }), {
        env,
        nats,
      });
      const jsm = await jetstreamManager(nc);
      const info = await jsm.streams.info(`KV_${responseCacheBucket("light")}`);
      expect(info.config.max_age).toBe(nanos(1_000));
      // Tiers left out of the config have no bucket.
      await expect(jsm.streams.info(`KV_${responseCacheBucket("mid")}`)).rejects.toThrow();

      const text = question();
      expect((await ask(mesh.url, text)).body.handoff.cache).toBe("miss");
      expect((await ask(mesh.url, text)).body.handoff.cache).toBe("hit");
      // Counted from the bucket's stream, not with `kv.keys()`: on nats-server 2.9 listing keys
      // while entries expire can block (nats-io/nats-server#3481), which hung this test once.
      const entries = async () =>
        (await jsm.streams.info(`KV_${responseCacheBucket("light")}`)).state.messages;
      expect(await entries()).toBe(1);
      // NATS removes it once it is older than the max age (checked about every second).
      await waitFor(async () => (await entries()) === 0, {
        timeoutMs: 10_000,
        what: "the cached answer to expire",
      });
      expect((await ask(mesh.url, text)).body.handoff.cache).toBe("miss");
      expect(upstreamCalls(text)).toBe(2);
    } finally {
      await mesh?.stop();
      await nc.close();
      await nats.stop();
    }
  });

  it("survives a restart of every service: new routers on the same NATS read it", async () => {
    const nats = await startNats();
    const config = cachedConfig({ tiers: { light: { ttl_ms: HOUR } } });
    const text = question();
    let mesh: InProcessMesh | undefined;
    try {
      mesh = await startInProcessMesh(config, { env, nats });
      const first = await ask(mesh.url, text);
      expect(first.body.handoff.cache).toBe("miss");
      await mesh.stop();
      mesh = undefined;

      mesh = await startInProcessMesh(config, { env, nats });
      const after = await ask(mesh.url, text);
      expect(after.body.handoff.cache).toBe("hit");
      expect(after.body.choices[0]?.message.content).toBe(first.body.choices[0]?.message.content);
      expect(upstreamCalls(text)).toBe(1);
    } finally {
      await mesh?.stop();
      await nats.stop();
    }
  });
});

describe("the KV store behind the router", () => {
  let nats: NatsHandle;
  let nc: NatsConnection;
  const config = parseConfig(
    JSON.stringify({ ...simProfile, cache: { tiers: { light: { ttl_ms: HOUR } } } }),
    "test.json",
  );
  const request = { messages: [{ role: "user" as const, content: question() }] };
  const ctx: TierCallContext = { stage: "classifier", cache: { tenant: "team-a" } };

  /** A router over the sim models that counts its calls. */
  function router() {
    let calls = 0;
    const made = new ModelRouter(config, (d) => {
      const model = createModel(d);
      return {
        provider: model.provider,
        model: model.model,
        simulated: model.simulated,
        chat: (req, options) => {
          calls++;
          return model.chat(req, options);
        },
        stream: (req, options) => {
          calls++;
          return model.stream(req, options);
        },
      };
    });
    return { router: made, calls: () => calls };
  }

  beforeAll(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
  });

  afterAll(async () => {
    await nc?.close();
    await nats?.stop();
  });

  it("is shared by two routers: what one stored, the other answers with", async () => {
    const one = router();
    const two = router();
    one.router.useCaches(await openResponseCaches(nc, config, ["light", "mid"]));
    two.router.useCaches(await openResponseCaches(nc, config, ["light"]));
    // Only the configured tier is opened.
    expect(one.router.cached("light")).toBe(true);
    expect(one.router.cached("mid")).toBe(false);
    const stored = await one.router.chat("light", request, ctx);
    expect(stored.usage.cache).toBe("miss");
    const served = await two.router.chat("light", request, ctx);
    expect(served.usage).toMatchObject({ cache: "hit", cost_usd: 0 });
    expect(served.result.message).toEqual(stored.result.message);
    expect(two.calls()).toBe(0);
  });

  it("calls the model within its timeout when the NATS server behind the cache is down", async () => {
    const other = await startNats();
    const lost = await connect({ servers: other.url, maxReconnectAttempts: -1 });
    try {
      const { router: made, calls } = router();
      made.useCaches(await openResponseCaches(lost, config, ["light"], { opTimeoutMs: 300 }));
      await other.stop();
      const started = Date.now();
      const answered = await made.chat("light", request, ctx);
      expect(answered.usage.cache).toBe("miss");
      expect(answered.result.message.content).toBeTruthy();
      expect(calls()).toBe(1);
      // The lookup and the store each gave up after their timeout, not the default 5 s.
      expect(Date.now() - started).toBeLessThan(3_000);
    } finally {
      await lost.close();
      await other.stop();
    }
  });
});
