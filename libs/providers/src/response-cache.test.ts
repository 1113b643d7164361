import { type HandoffConfig, parseConfig, simProfile } from "@handoff/config";
import type { CachedAnswer, ChatParams, Message, ToolDefinition } from "@handoff/contracts";
import { metrics } from "@opentelemetry/api";
import {
  AggregationTemporality,
  MeterProvider,
  MetricReader,
  type ResourceMetrics,
} from "@opentelemetry/sdk-metrics";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createModel } from "./registry.js";
import {
  type CacheKeyInput,
  callCacheOf,
  canonicalJson,
  type ResponseCache,
  replayPieces,
  responseCacheKey,
} from "./response-cache.js";
import { ModelRouter, type TierCallContext } from "./router.js";
import type { ChatModel, ChatRequest, ChatResult, ChatStreamEvent } from "./types.js";

// The router's instruments are made on first use: the provider must be global before any call.
class Reader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
  }
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}
const reader = new Reader();
const meterProvider = new MeterProvider({ readers: [reader] });

beforeAll(() => {
  metrics.setGlobalMeterProvider(meterProvider);
});

afterAll(async () => {
  metrics.disable();
  await meterProvider.shutdown();
});

/** The sum of a counter's points whose attributes include `match`. */
function counted(collected: ResourceMetrics, name: string, match: Record<string, string>): number {
  const metric = collected.scopeMetrics
    .flatMap((s) => s.metrics)
    .find((m) => m.descriptor.name === name);
  return (metric?.dataPoints ?? [])
    .filter((point) => Object.entries(match).every(([k, v]) => point.attributes[k] === v))
    .reduce((sum, point) => sum + Number(point.value), 0);
}

const hello: Message[] = [{ role: "user", content: "Hello, how are you?" }];
const request: ChatRequest = { messages: hello, params: { temperature: 0 } };
const base: CacheKeyInput = {
  tenant: "team-a",
  tier: "light",
  deployment: { provider: "sim", model: "sim-light" },
  request,
};

describe("the response cache key", () => {
  it("is the tenant, then the SHA-256 of the canonical request", () => {
    expect(responseCacheKey(base)).toMatch(/^team-a\.[0-9a-f]{64}$/);
    expect(responseCacheKey({ ...base, tenant: "_" })).toMatch(/^_\.[0-9a-f]{64}$/);
  });

  it("does not depend on the order of JSON keys, at any depth", () => {
    const tool = (parameters: Record<string, unknown>): ToolDefinition => ({
      type: "function",
      function: { name: "lookup", description: "Looks up", parameters },
    });
    const one: ChatRequest = {
      messages: [{ role: "user", content: "hi", name: "ann" }],
      tools: [
        tool({ type: "object", properties: { a: { type: "string" }, b: { type: "number" } } }),
      ],
      params: { temperature: 0, max_tokens: 10, response_format: { type: "json_object" } },
    };
    const two: ChatRequest = {
      params: { response_format: { type: "json_object" }, max_tokens: 10, temperature: 0 },
      tools: [
        {
          function: {
            parameters: {
              properties: { b: { type: "number" }, a: { type: "string" } },
              type: "object",
            },
            description: "Looks up",
            name: "lookup",
          },
          type: "function",
        },
      ],
      messages: [{ name: "ann", content: "hi", role: "user" }],
    };
    expect(canonicalJson(one)).toBe(canonicalJson(two));
    expect(responseCacheKey({ ...base, request: one })).toBe(
      responseCacheKey({ ...base, request: two }),
    );
    // Absent and empty say the same: no tools, no parameters.
    expect(responseCacheKey({ ...base, request: { messages: hello } })).toBe(
      responseCacheKey({ ...base, request: { messages: hello, tools: [], params: {} } }),
    );
  });

  it("changes with every parameter that changes the output", () => {
    const variants: ChatParams[] = [
      { temperature: 0.5 },
      { top_p: 0.9 },
      { max_tokens: 64 },
      { stop: ["\n"] },
      { seed: 7 },
      { response_format: { type: "json_object" } },
      { parallel_tool_calls: false },
      { logprobs: true },
      { logprobs: true, top_logprobs: 3 },
    ];
    const keys = new Set([responseCacheKey({ ...base, request: { messages: hello } })]);
    for (const params of variants)
      keys.add(responseCacheKey({ ...base, request: { messages: hello, params } }));
    expect(keys.size).toBe(variants.length + 1);
  });

  it("changes with the messages, tools, tool choice, the mesh's logprobs, the tier and its model", () => {
    const tool: ToolDefinition = { type: "function", function: { name: "clock" } };
    const of = (change: Partial<typeof base>) => responseCacheKey({ ...base, ...change });
    const keys = [
      of({}),
      of({ request: { ...request, messages: [{ role: "user", content: "Hello, how are you" }] } }),
      of({
        request: { ...request, messages: [{ role: "system", content: "Hello, how are you?" }] },
      }),
      of({ request: { ...request, tools: [tool] } }),
      of({ request: { ...request, tools: [tool], toolChoice: "required" } }),
      of({ request: { ...request, logprobs: true } }),
      of({ tier: "mid" }),
      of({ deployment: { provider: "sim", model: "sim-mid" } }),
      of({ deployment: { provider: "openai-compatible", model: "sim-light" } }),
    ];
    expect(new Set(keys).size).toBe(keys.length);
  });

  it("changes with the tenant, so one tenant never reads another's answers", () => {
    const a = responseCacheKey(base);
    const b = responseCacheKey({ ...base, tenant: "team-b" });
    expect(a).not.toBe(b);
    expect(a.split(".").at(-1)).not.toBe(b.split(".").at(-1));
  });

  it("is the job's owner, or `_`, with the request's choice", () => {
    expect(callCacheOf({})).toEqual({ tenant: "_" });
    expect(callCacheOf({ owner: "team-a", cache: { bypass: true } })).toEqual({
      tenant: "team-a",
      bypass: true,
    });
    expect(callCacheOf({ owner: "team-a", cache: { sampled: true } })).toEqual({
      tenant: "team-a",
      sampled: true,
    });
  });
});

describe("replaying a cached answer's text", () => {
  it("cuts it into a few whole-word pieces that add up to it", () => {
    const text = "Hello from gpt-4o-mini. You asked: Hello there";
    const pieces = replayPieces(text);
    expect(pieces.length).toBeGreaterThan(1);
    expect(pieces.join("")).toBe(text);
    expect(replayPieces("word")).toEqual(["word"]);
    const long = "lorem ipsum ".repeat(1_000);
    expect(replayPieces(long).length).toBeLessThanOrEqual(64);
    expect(replayPieces(long).join("")).toBe(long);
    expect(replayPieces("  ").join("")).toBe("  ");
  });
});

/** A response cache in memory: what the router needs of one, with its entries to look at. */
class MemoryCache implements ResponseCache {
  readonly entries = new Map<string, CachedAnswer>();
  failGets = false;
  failPuts = false;
  async get(key: string) {
    if (this.failGets) throw new Error("KV unavailable");
    return this.entries.get(key);
  }
  async put(key: string, answer: CachedAnswer) {
    if (this.failPuts) throw new Error("KV unavailable");
    this.entries.set(key, answer);
    return true;
  }
}

/** A model that counts its calls; `fail` makes it fail every one. */
class Counted implements ChatModel {
  calls = 0;
  constructor(
    readonly inner: ChatModel,
    readonly fail = false,
  ) {}
  get provider() {
    return this.inner.provider;
  }
  get model() {
    return this.inner.model;
  }
  get simulated() {
    return this.inner.simulated;
  }
  async chat(req: ChatRequest): Promise<ChatResult> {
    this.calls++;
    if (this.fail) throw new Error("connection reset");
    return this.inner.chat(req);
  }
  async *stream(req: ChatRequest): AsyncIterable<ChatStreamEvent> {
    this.calls++;
    if (this.fail) throw new Error("connection reset");
    yield* this.inner.stream(req);
  }
}

function routerFor(config: HandoffConfig = simProfile, broken: string[] = []) {
  const models = new Map<string, Counted>();
  const router = new ModelRouter(config, (d) => {
    const model = new Counted(createModel(d), broken.includes(d.model));
    models.set(d.model, model);
    return model;
  });
  const cache = new MemoryCache();
  router.useCaches({ light: cache });
  const calls = (model: string) => models.get(model)?.calls ?? 0;
  return { router, cache, calls };
}

const ctx = (cache: TierCallContext["cache"]): TierCallContext => ({
  stage: "classifier",
  ...(cache ? { cache } : {}),
});

describe("the router with a response cache", () => {
  it("answers the second identical call from the cache, at no cost, and counts what it saved", async () => {
    const { router, cache, calls } = routerFor();
    const before = (await reader.collect()).resourceMetrics;
    const hitsBefore = counted(before, "handoff.cache.lookups", { outcome: "hit" });
    const first = await router.chat("light", request, ctx({ tenant: "team-a" }));
    expect(first.usage).toMatchObject({ cache: "miss", model: "sim-light" });
    expect(first.usage.cost_usd).toBeGreaterThan(0);
    expect(cache.entries.size).toBe(1);
    const second = await router.chat("light", request, ctx({ tenant: "team-a" }));
    expect(calls("sim-light")).toBe(1);
    expect(second.attempts).toBe(0);
    expect(second.result.message).toEqual(first.result.message);
    expect(second.usage).toMatchObject({
      stage: "classifier",
      tier: "light",
      provider: "sim",
      model: "sim-light",
      input_tokens: first.usage.input_tokens,
      output_tokens: first.usage.output_tokens,
      cost_usd: 0,
      cache: "hit",
      saved_usd: first.usage.cost_usd,
    });
    const after = (await reader.collect()).resourceMetrics;
    expect(
      counted(after, "handoff.cache.lookups", { outcome: "hit", "handoff.tier": "light" }),
    ).toBe(hitsBefore + 1);
    expect(
      counted(after, "handoff.cache.saved", { "handoff.tier": "light" }),
    ).toBeGreaterThanOrEqual(first.usage.cost_usd);
  });

  it("keeps the original call's prompt-cache counts with the answer and reports them on a hit", async () => {
    const { router, cache } = routerFor();
    const first = await router.chat("light", request, ctx({ tenant: "team-a" }));
    // As if the provider had read most of the prompt from its own prompt cache.
    const [key, stored] = [...cache.entries][0] ?? [];
    if (!key || !stored) throw new Error("nothing stored");
    cache.entries.set(key, {
      ...stored,
      usage: { ...stored.usage, cached_input_tokens: 4, cache_write_tokens: 2 },
    });
    const hit = await router.chat("light", request, ctx({ tenant: "team-a" }));
    expect(hit.usage).toMatchObject({
      cache: "hit",
      cost_usd: 0,
      input_tokens: first.usage.input_tokens,
      cached_input_tokens: 4,
      cache_write_tokens: 2,
    });
    expect(hit.result.usage).toMatchObject({ cachedInputTokens: 4, cacheWriteTokens: 2 });
  });

  it("keeps tenants apart", async () => {
    const { router, calls } = routerFor();
    await router.chat("light", request, ctx({ tenant: "team-a" }));
    const other = await router.chat("light", request, ctx({ tenant: "team-b" }));
    expect(other.usage.cache).toBe("miss");
    expect(calls("sim-light")).toBe(2);
  });

  it("bypasses it when the request says so: no read, no write", async () => {
    const { router, cache, calls } = routerFor();
    await router.chat("light", request, ctx({ tenant: "team-a" }));
    const fresh = await router.chat("light", request, ctx({ tenant: "team-a", bypass: true }));
    expect(fresh.usage.cache).toBe("bypass");
    expect(fresh.usage.cost_usd).toBeGreaterThan(0);
    expect(calls("sim-light")).toBe(2);
    cache.entries.clear();
    await router.chat("light", request, ctx({ tenant: "team-a", bypass: true }));
    expect(cache.entries.size).toBe(0);
  });

  it("leaves out calls that take no part, and tiers without a cache", async () => {
    const { router, cache } = routerFor();
    const plain = await router.chat("light", request, ctx(undefined));
    expect(plain.usage.cache).toBeUndefined();
    const mid = await router.chat("mid", request, ctx({ tenant: "team-a" }));
    expect(mid.usage.cache).toBeUndefined();
    expect(cache.entries.size).toBe(0);
    expect(router.cached("light")).toBe(true);
    expect(router.cached("mid")).toBe(false);
  });

  it("does not cache a sampled request unless the config or the request says so", async () => {
    const sampled: ChatRequest = { messages: hello, params: { temperature: 0.7 } };
    const plain = routerFor();
    await plain.router.chat("light", sampled, ctx({ tenant: "t" }));
    const again = await plain.router.chat("light", sampled, ctx({ tenant: "t" }));
    expect(again.usage.cache).toBe("bypass");
    expect(plain.calls("sim-light")).toBe(2);
    expect(plain.cache.entries.size).toBe(0);

    await plain.router.chat("light", sampled, ctx({ tenant: "t", sampled: true }));
    const asked = await plain.router.chat("light", sampled, ctx({ tenant: "t", sampled: true }));
    expect(asked.usage.cache).toBe("hit");
    expect(plain.calls("sim-light")).toBe(3);

    const configured = routerFor(
      parseConfig(JSON.stringify({ ...simProfile, cache: { sampled: true } }), "test.json"),
    );
    await configured.router.chat("light", sampled, ctx({ tenant: "t" }));
    const hit = await configured.router.chat("light", sampled, ctx({ tenant: "t" }));
    expect(hit.usage.cache).toBe("hit");
    expect(configured.calls("sim-light")).toBe(1);
  });

  it("replays a hit on a streaming call as several text events", async () => {
    const { router } = routerFor();
    const long: ChatRequest = {
      messages: [{ role: "user", content: "Tell me a long story about the sea and its ships" }],
    };
    const first = await router.chat("light", long, ctx({ tenant: "t" }));
    const events: string[] = [];
    const hit = await router.chat("light", long, {
      ...ctx({ tenant: "t" }),
      onEvent: (event, model) => {
        expect(model).toBe("sim-light");
        if (event.type === "text") events.push(event.delta);
      },
    });
    expect(hit.usage.cache).toBe("hit");
    expect(events.length).toBeGreaterThan(1);
    expect(events.join("")).toBe(first.result.message.content);
  });

  it("stores only the answer of the tier's first deployment, never a fallback's", async () => {
    const config = parseConfig(
      JSON.stringify({
        ...simProfile,
        resilience: { backoff_base_ms: 0, backoff_max_ms: 0 },
        tiers: {
          ...simProfile.tiers,
          light: [
            { provider: "sim", model: "broken", retries: 1 },
            { provider: "sim", model: "sim-light" },
          ],
        },
      }),
      "test.json",
    );
    const { router, cache, calls } = routerFor(config, ["broken"]);
    const answered = await router.chat("light", request, ctx({ tenant: "t" }));
    expect(answered.usage).toMatchObject({ model: "sim-light", cache: "miss" });
    expect(cache.entries.size).toBe(0);
    await router.chat("light", request, ctx({ tenant: "t" }));
    expect(calls("broken")).toBe(2);
  });

  it("does not store an answer a budget cut short, and serves a hit whatever the budget", async () => {
    const { router, cache } = routerFor();
    const tight = await router.chat("light", request, {
      ...ctx({ tenant: "t" }),
      budgetUsd: 0.00005,
    });
    expect(tight.usage.cache).toBe("miss");
    expect(cache.entries.size).toBe(0);
    await router.chat("light", request, ctx({ tenant: "t" }));
    expect(cache.entries.size).toBe(1);
    // A cached answer costs nothing: a budget that affords no call still gets it.
    const free = await router.chat("light", request, { ...ctx({ tenant: "t" }), budgetUsd: 0 });
    expect(free.usage).toMatchObject({ cache: "hit", cost_usd: 0 });
  });

  it("calls the model when the cache cannot answer, and keeps the answer when it cannot store", async () => {
    const { router, cache, calls } = routerFor();
    cache.failGets = true;
    const before = counted((await reader.collect()).resourceMetrics, "handoff.cache.lookups", {
      outcome: "error",
    });
    const answered = await router.chat("light", request, ctx({ tenant: "t" }));
    expect(answered.usage.cache).toBe("miss");
    expect(answered.result.message.content).toBeTruthy();
    expect(
      counted((await reader.collect()).resourceMetrics, "handoff.cache.lookups", {
        outcome: "error",
      }),
    ).toBe(before + 1);
    cache.failGets = false;
    cache.failPuts = true;
    cache.entries.clear();
    const unstored = await router.chat("light", request, ctx({ tenant: "t" }));
    expect(unstored.usage.cache).toBe("miss");
    expect(unstored.result.message.content).toBe(answered.result.message.content);
    expect(cache.entries.size).toBe(0);
    expect(calls("sim-light")).toBe(2);
  });
});
