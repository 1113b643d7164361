import { type HandoffConfig, parseConfig } from "@handoff/config";
import { HandoffError, type Message } from "@handoff/contracts";
import { trace } from "@opentelemetry/api";
import {
  InMemorySpanExporter,
  SimpleSpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { fitBudget } from "./budget.js";
import { type ProviderFailure, providerError } from "./errors.js";
import { ModelRouter } from "./router.js";
import type { ChatModel, ChatRequest, ChatResult, ChatStreamEvent } from "./types.js";

const exporter = new InMemorySpanExporter();
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
beforeAll(() => trace.setGlobalTracerProvider(provider));
afterEach(() => exporter.reset());
afterAll(async () => {
  trace.disable();
  await provider.shutdown();
});

const hello: Message[] = [{ role: "user", content: "Hello" }];

type Outcome = ProviderFailure | { failure: ProviderFailure; retryAfterMs: number } | "ok";

/** A model whose calls follow a script, so each resilience rule can be driven exactly. */
class ScriptedModel implements ChatModel {
  readonly provider = "openai-compatible" as const;
  readonly simulated = false;
  readonly requests: ChatRequest[] = [];
  constructor(
    readonly model: string,
    private readonly script: Outcome[],
  ) {}

  #next(request: ChatRequest): ChatResult {
    this.requests.push(request);
    const outcome = this.script.shift() ?? "ok";
    if (outcome === "ok") {
      return {
        message: { role: "assistant", content: `answer from ${this.model}` },
        finishReason: "stop",
        usage: { inputTokens: 100, outputTokens: 10 },
        model: this.model,
      };
    }
    const failure = typeof outcome === "string" ? outcome : outcome.failure;
    const retryAfterMs = typeof outcome === "string" ? undefined : outcome.retryAfterMs;
    throw providerError(`${this.model} says ${failure}`, {
      failure,
      deployment: this.model,
      ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
    });
  }

  async chat(request: ChatRequest): Promise<ChatResult> {
    return this.#next(request);
  }

  async *stream(request: ChatRequest): AsyncIterable<ChatStreamEvent> {
    yield { type: "text", delta: "partial " };
    yield { type: "done", result: this.#next(request) };
  }
}

function setup(
  tiers: Record<"light" | "mid" | "heavy", Array<Record<string, unknown>>>,
  scripts: Record<string, Outcome[]>,
  resilience: Record<string, unknown> = {},
) {
  const config: HandoffConfig = parseConfig(
    JSON.stringify({ tiers, resilience: { backoff_base_ms: 10, ...resilience } }),
    "test.json",
  );
  const models = new Map<string, ScriptedModel>();
  const router = new ModelRouter(config, (d) => {
    const model = models.get(d.model) ?? new ScriptedModel(d.model, scripts[d.model] ?? []);
    models.set(d.model, model);
    return model;
  });
  const calls = (model: string) => models.get(model)?.requests.length ?? 0;
  return { router, models, calls };
}

const dep = (model: string, extra: Record<string, unknown> = {}) => ({
  provider: "openai-compatible",
  model,
  price: { input_per_mtok: 1, output_per_mtok: 2 },
  ...extra,
});

async function failure(promise: Promise<unknown>): Promise<HandoffError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof HandoffError) return error;
    throw error;
  }
  throw new Error("expected the call to fail");
}

const ctx = { stage: "tool-executor" as const };

describe("retries", () => {
  it("retries a 429 after its Retry-After and answers from the second attempt", async () => {
    const { router, calls } = setup(
      { light: [dep("l")], mid: [dep("a")], heavy: [dep("h")] },
      { a: [{ failure: "rate_limit", retryAfterMs: 300 }, "ok"] },
    );
    const started = performance.now();
    const call = await router.chat("mid", { messages: hello }, ctx);
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    expect(call.attempts).toBe(2);
    expect(calls("a")).toBe(2);
    expect(call.result.message.content).toBe("answer from a");
    const spans = exporter.getFinishedSpans().filter((s) => s.name === "chat a");
    expect(spans.map((s) => s.attributes["error.type"])).toEqual(["rate_limit", undefined]);
    expect(spans.map((s) => s.attributes["handoff.attempt"])).toEqual([1, 2]);
  });

  it("never retries a bad request, not even elsewhere", async () => {
    const { router, calls } = setup(
      { light: [dep("l")], mid: [dep("a"), dep("b")], heavy: [dep("h")] },
      { a: ["bad_request"] },
    );
    const error = await failure(router.chat("mid", { messages: hello }, ctx));
    expect(error.code).toBe("HANDOFF_ERR_PROVIDER_REJECTED");
    expect(calls("a")).toBe(1);
    expect(calls("b")).toBe(0);
  });

  it.each(["auth", "not_found", "context_length"] as const)(
    "does not retry %s on the same deployment but falls back to the next",
    async (kind) => {
      const { router, calls } = setup(
        { light: [dep("l")], mid: [dep("a"), dep("b")], heavy: [dep("h")] },
        { a: [kind] },
      );
      const call = await router.chat("mid", { messages: hello }, ctx);
      expect(call.result.model).toBe("b");
      expect([calls("a"), calls("b")]).toEqual([1, 1]);
    },
  );

  it("falls back to the next deployment of the tier when one keeps failing", async () => {
    const { router, calls } = setup(
      { light: [dep("l")], mid: [dep("a"), dep("b")], heavy: [dep("h")] },
      { a: ["server", "server"] },
    );
    const call = await router.chat("mid", { messages: hello }, ctx);
    expect(call.result.model).toBe("b");
    expect(call.attempts).toBe(3);
    expect([calls("a"), calls("b")]).toEqual([2, 1]);
    expect(call.usage.model).toBe("b");
  });

  it("moves on at once when Retry-After asks for longer than the policy waits", async () => {
    const { router, calls } = setup(
      { light: [dep("l")], mid: [dep("a"), dep("b")], heavy: [dep("h")] },
      { a: [{ failure: "rate_limit", retryAfterMs: 60_000 }] },
      { max_retry_after_ms: 1_000 },
    );
    const started = performance.now();
    const call = await router.chat("mid", { messages: hello }, ctx);
    expect(performance.now() - started).toBeLessThan(500);
    expect(call.result.model).toBe("b");
    expect(calls("a")).toBe(1);
  });

  it("follows a deployment's fallbacks into another tier", async () => {
    const { router } = setup(
      {
        light: [dep("l")],
        mid: [dep("a", { retries: 1, fallbacks: ["openai-compatible:h"] })],
        heavy: [dep("h")],
      },
      { a: ["server"] },
    );
    const call = await router.chat("mid", { messages: hello }, ctx);
    expect(call.result.model).toBe("h");
    expect(call.usage.tier).toBe("mid");
  });

  it("stops at the attempt cap even when the fallbacks form a cycle", async () => {
    const always: Outcome[] = Array.from({ length: 50 }, () => "server" as const);
    const { router, calls } = setup(
      {
        light: [dep("l")],
        mid: [dep("a", { retries: 5, fallbacks: ["openai-compatible:b"] })],
        heavy: [dep("b", { retries: 5, fallbacks: ["openai-compatible:a"] })],
      },
      { a: [...always], b: [...always] },
      { max_attempts: 10, cooldown_after_failures: 100, backoff_base_ms: 0 },
    );
    const error = await failure(router.chat("mid", { messages: hello }, ctx));
    expect(error.code).toBe("HANDOFF_ERR_RETRIES_EXHAUSTED");
    expect(error.retryable).toBe(false);
    expect(calls("a") + calls("b")).toBe(10);
    expect(error.message).toContain("10 attempts");
  });

  it("rejects a config that asks for more attempts than the hard cap", () => {
    expect(() =>
      setup({ light: [dep("l")], mid: [dep("a")], heavy: [dep("h")] }, {}, { max_attempts: 50 }),
    ).toThrow(/resilience\.max_attempts/);
  });

  it("stops waiting when the caller aborts during a backoff", async () => {
    const { router } = setup(
      { light: [dep("l")], mid: [dep("a")], heavy: [dep("h")] },
      { a: [{ failure: "rate_limit", retryAfterMs: 5_000 }] },
      { max_retry_after_ms: 10_000 },
    );
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error("deadline")), 100);
    const started = performance.now();
    await expect(
      router.chat("mid", { messages: hello }, { ...ctx, signal: controller.signal }),
    ).rejects.toThrow();
    expect(performance.now() - started).toBeLessThan(1_000);
  });
});

describe("circuit breaker", () => {
  it("takes a failing deployment out of rotation, then tries it again after the cooldown", async () => {
    const { router, calls } = setup(
      { light: [dep("l")], mid: [dep("a", { retries: 3 }), dep("b")], heavy: [dep("h")] },
      { a: ["server", "server", "server"] },
      { cooldown_after_failures: 3, cooldown_ms: 300 },
    );
    expect((await router.chat("mid", { messages: hello }, ctx)).result.model).toBe("b");
    expect(router.available("openai-compatible:a")).toBe(false);
    // While it cools down, calls go straight to b.
    expect((await router.chat("mid", { messages: hello }, ctx)).result.model).toBe("b");
    expect(calls("a")).toBe(3);
    await new Promise((resolve) => setTimeout(resolve, 350));
    expect(router.available("openai-compatible:a")).toBe(true);
    expect((await router.chat("mid", { messages: hello }, ctx)).result.model).toBe("a");
    expect(calls("a")).toBe(4);
  });

  it("does not count a bad request against the deployment", async () => {
    const { router } = setup(
      { light: [dep("l")], mid: [dep("a")], heavy: [dep("h")] },
      { a: ["bad_request", "bad_request", "bad_request"] },
      { cooldown_after_failures: 2 },
    );
    for (let i = 0; i < 3; i++) await failure(router.chat("mid", { messages: hello }, ctx));
    expect(router.available("openai-compatible:a")).toBe(true);
  });
});

describe("budgets", () => {
  const priced = (model: string, input: number, output: number) =>
    dep(model, { price: { input_per_mtok: input, output_per_mtok: output } });

  it("caps max_tokens so the answer cannot cost more than what is left", () => {
    const deployment = parseConfig(
      JSON.stringify({
        tiers: {
          light: [priced("x", 1, 1_000)],
          mid: [priced("x", 1, 1_000)],
          heavy: [priced("x", 1, 1_000)],
        },
      }),
      "t.json",
    ).tiers.mid[0];
    if (!deployment) throw new Error("no deployment");
    const fit = fitBudget(deployment, { messages: hello }, 0.05);
    expect(fit?.request.params?.max_tokens).toBe(49);
    expect(fit?.worstCaseUsd).toBeLessThanOrEqual(0.05);
    expect(fitBudget(deployment, { messages: hello }, 0.00001)).toBeUndefined();
    expect(fitBudget(deployment, { messages: hello }, undefined)?.request.params).toBeUndefined();
  });

  it("prices every prompt token at its dearest rate, a cache write's surcharge included", () => {
    const parse = (price: Record<string, number>) => {
      const d = { provider: "anthropic", model: "claude", price };
      const deployment = parseConfig(
        JSON.stringify({ tiers: { light: [d], mid: [d], heavy: [d] } }),
        "t.json",
      ).tiers.mid[0];
      if (!deployment) throw new Error("no deployment");
      return deployment;
    };
    const request = { messages: hello, params: { max_tokens: 100 } };
    const plain = fitBudget(parse({ input_per_mtok: 3, output_per_mtok: 15 }), request, 1);
    const cached = fitBudget(
      parse({
        input_per_mtok: 3,
        output_per_mtok: 15,
        cached_input_per_mtok: 0.3,
        cache_write_per_mtok: 3.75,
      }),
      request,
      1,
    );
    // A cache read's discount is never counted on before the call; a write's surcharge is.
    expect(cached?.worstCaseUsd).toBeGreaterThan(plain?.worstCaseUsd ?? Infinity);
    const cheapReads = fitBudget(
      parse({ input_per_mtok: 3, output_per_mtok: 15, cached_input_per_mtok: 0.3 }),
      request,
      1,
    );
    expect(cheapReads?.worstCaseUsd).toBe(plain?.worstCaseUsd);
  });

  it("degrades to a cheaper tier the route allows when the budget cannot afford the asked one", async () => {
    const { router, calls } = setup(
      {
        light: [priced("cheap", 0.1, 0.1)],
        mid: [priced("mid", 1, 2)],
        heavy: [priced("pricey", 100, 500)],
      },
      {},
    );
    const call = await router.chat(
      "heavy",
      { messages: hello },
      { stage: "heavy-reasoner", budgetUsd: 0.001, degradeTo: ["mid", "light"] },
    );
    expect(call.tier).toBe("mid");
    expect(call.usage.tier).toBe("mid");
    expect(calls("pricey")).toBe(0);
    expect(call.usage.cost_usd).toBeLessThanOrEqual(0.001);
  });

  it("ends with a budget error naming what is left when nothing fits", async () => {
    const { router, calls } = setup(
      {
        light: [priced("cheap", 50, 50)],
        mid: [priced("mid", 100, 100)],
        heavy: [priced("pricey", 100, 500)],
      },
      {},
    );
    const error = await failure(
      router.chat(
        "heavy",
        { messages: hello },
        { stage: "heavy-reasoner", budgetUsd: 0.0001, degradeTo: ["light"] },
      ),
    );
    expect(error.code).toBe("HANDOFF_ERR_BUDGET");
    expect(error.status).toBe(402);
    expect(error.message).toContain("$0.0001 left");
    expect(error.message).toContain("tier heavy, light");
    expect(calls("cheap") + calls("pricey")).toBe(0);
  });
});

describe("streaming calls", () => {
  it("passes output on as it arrives", async () => {
    const { router } = setup({ light: [dep("l")], mid: [dep("a")], heavy: [dep("h")] }, {});
    const seen: string[] = [];
    const call = await router.chat(
      "mid",
      { messages: hello },
      {
        ...ctx,
        onEvent: (event) => {
          if (event.type === "text") seen.push(event.delta);
        },
      },
    );
    expect(seen).toEqual(["partial "]);
    expect(call.result.message.content).toBe("answer from a");
  });

  it("does not retry once output has reached the client", async () => {
    const { router, calls } = setup(
      { light: [dep("l")], mid: [dep("a"), dep("b")], heavy: [dep("h")] },
      { a: ["server"] },
    );
    const error = await failure(
      router.chat("mid", { messages: hello }, { ...ctx, onEvent: () => undefined }),
    );
    expect(error.retryable).toBe(false);
    expect(error.message).toContain("after streaming began");
    expect([calls("a"), calls("b")]).toEqual([1, 0]);
  });
});
