import { queryObjects } from "node:v8";
import { type Deployment, type HandoffConfig, parseConfig, simProfile } from "@handoff/config";
import { HandoffError, type Message } from "@handoff/contracts";
import { SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import {
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AnthropicModel } from "./anthropic/adapter.js";
import { costUsd } from "./cost.js";
import { OpenAICompatibleModel } from "./openai-compatible/adapter.js";
import { createModel, deploymentId, genAiProviderName } from "./registry.js";
import { replayAsStream } from "./replay.js";
import { jobResult, ModelRouter } from "./router.js";
import { SimModel } from "./sim/sim-model.js";
import { estimateInputTokens, estimateTokens } from "./tokens.js";
import type { ChatModel, ChatRequest, ChatResult, ChatStreamEvent } from "./types.js";

const exporter = new InMemorySpanExporter();
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });

beforeAll(() => {
  trace.setGlobalTracerProvider(provider);
});

afterEach(() => {
  exporter.reset();
});

afterAll(async () => {
  trace.disable();
  await provider.shutdown();
});

const hello: Message[] = [{ role: "user", content: "Hello, how are you?" }];

/** The sim profile with the mid tier replaced. */
function withMid(mid: Record<string, unknown>): HandoffConfig {
  return parseConfig(
    JSON.stringify({ tiers: { light: simProfile.tiers.light, mid: [mid], heavy: [mid] } }),
    "test.json",
  );
}

function spansNamed(name: string): ReadableSpan[] {
  return exporter.getFinishedSpans().filter((span) => span.name === name);
}

async function failure(promise: Promise<unknown>): Promise<HandoffError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof HandoffError) return error;
    throw error;
  }
  throw new Error("expected the call to fail");
}

class FailingModel implements ChatModel {
  readonly provider = "sim" as const;
  readonly simulated = true;
  constructor(
    readonly model: string,
    readonly error: unknown,
  ) {}
  async chat(): Promise<never> {
    throw this.error;
  }
  // biome-ignore lint/correctness/useYield: the stream fails before it yields anything.
  async *stream(): AsyncIterable<never> {
    throw this.error;
  }
}

/** A model that records its requests and, when asked, answers with token log-probabilities. */
class LogprobsModel implements ChatModel {
  readonly provider = "openai-compatible" as const;
  readonly simulated = false;
  readonly requests: ChatRequest[] = [];
  constructor(readonly model: string) {}
  async chat(request: ChatRequest): Promise<ChatResult> {
    this.requests.push(request);
    return {
      message: { role: "assistant", content: "Paris." },
      finishReason: "stop",
      usage: { inputTokens: 12, outputTokens: 2 },
      model: this.model,
      ...(request.logprobs ? { logprobs: [-0.01, -0.25] } : {}),
    };
  }
  async *stream(request: ChatRequest): AsyncIterable<ChatStreamEvent> {
    yield* replayAsStream(await this.chat(request));
  }
}

describe("estimateTokens", () => {
  it("counts about four characters a token, rounding up", () => {
    expect(estimateTokens("")).toBe(0);
    expect(estimateTokens("a")).toBe(1);
    expect(estimateTokens("abcd")).toBe(1);
    expect(estimateTokens("abcde")).toBe(2);
    expect(estimateTokens("x".repeat(400))).toBe(100);
  });
});

describe("estimateInputTokens", () => {
  it("adds framing per request and per message", () => {
    expect(estimateInputTokens([])).toBe(3);
    expect(estimateInputTokens([{ role: "user", content: "abcd" }])).toBe(3 + 4 + 1);
    expect(
      estimateInputTokens([
        { role: "system", content: "abcdefgh" },
        { role: "user", content: "abcd" },
      ]),
    ).toBe(3 + (4 + 2) + (4 + 1));
  });

  it("counts an assistant's tool calls and a null content as nothing", () => {
    const messages: Message[] = [
      {
        role: "assistant",
        content: null,
        tool_calls: [
          {
            id: "c1",
            type: "function",
            function: { name: "calculator", arguments: '{"expression":"1+1"}' },
          },
        ],
      },
    ];
    // "calculator" is 10 characters (3 tokens), the 20-character arguments 5.
    expect(estimateInputTokens(messages)).toBe(3 + 4 + 0 + 3 + 5);
  });

  it("counts the JSON of each tool's function", () => {
    const tool = { type: "function" as const, function: { name: "clock" } };
    const expected = 3 + 4 + 1 + estimateTokens(JSON.stringify(tool.function));
    expect(estimateInputTokens([{ role: "user", content: "abcd" }], [tool])).toBe(expected);
  });
});

describe("costUsd", () => {
  it("prices input and output tokens per million", () => {
    const price = { input_per_mtok: 0.4, output_per_mtok: 1.6 };
    expect(costUsd(price, { inputTokens: 1_000, outputTokens: 500 })).toBe(0.0012);
    expect(costUsd(price, { inputTokens: 1_000_000, outputTokens: 1_000_000 })).toBe(2);
    expect(
      costUsd({ input_per_mtok: 3, output_per_mtok: 15 }, { inputTokens: 7, outputTokens: 3 }),
    ).toBe(0.000066);
  });

  it("is zero at a zero price", () => {
    const free = { input_per_mtok: 0, output_per_mtok: 0 };
    expect(costUsd(free, { inputTokens: 123_456, outputTokens: 7 })).toBe(0);
  });

  it("prices prompt tokens read from the provider's cache at the cached price", () => {
    // 1,000 of 1,200 prompt tokens read from the cache at 10% of the input price.
    const price = { input_per_mtok: 2.5, output_per_mtok: 10, cached_input_per_mtok: 0.25 };
    const usage = { inputTokens: 1_200, outputTokens: 100, cachedInputTokens: 1_000 };
    // 200 uncached at 2.5, 1,000 cached at 0.25, 100 output at 10, per million.
    expect(costUsd(price, usage)).toBe(0.0005 + 0.00025 + 0.001);
    expect(costUsd(price, usage)).toBe(0.00175);
    // Without a cached price the cached tokens cost what input costs: no discount assumed.
    expect(costUsd({ input_per_mtok: 2.5, output_per_mtok: 10 }, usage)).toBe(
      costUsd(
        { input_per_mtok: 2.5, output_per_mtok: 10 },
        { inputTokens: 1_200, outputTokens: 100 },
      ),
    );
  });

  it("prices cache writes at the cache-write price, the rest of the prompt at the input price", () => {
    // Anthropic's Sonnet: input 3, cache reads 0.30, 5-minute cache writes 3.75, output 15.
    const price = {
      input_per_mtok: 3,
      output_per_mtok: 15,
      cached_input_per_mtok: 0.3,
      cache_write_per_mtok: 3.75,
    };
    const usage = {
      inputTokens: 50 + 1_000 + 200,
      outputTokens: 20,
      cachedInputTokens: 1_000,
      cacheWriteTokens: 200,
    };
    expect(costUsd(price, usage)).toBe(0.0015); // (50·3 + 1000·0.3 + 200·3.75 + 20·15) / 1e6
    // Without a cache-write price, writes cost the input price.
    expect(costUsd({ ...price, cache_write_per_mtok: undefined }, usage)).toBe(0.00135);
  });

  it("never prices more cached tokens than the prompt has", () => {
    const price = {
      input_per_mtok: 1,
      output_per_mtok: 0,
      cached_input_per_mtok: 0,
      cache_write_per_mtok: 2,
    };
    expect(
      costUsd(price, {
        inputTokens: 100,
        outputTokens: 0,
        cachedInputTokens: 80,
        cacheWriteTokens: 80,
      }),
    ).toBe(0.00004); // 80 read at 0, the 20 left written at 2
  });

  it("rounds to a nano-dollar", () => {
    const price = { input_per_mtok: 0.1, output_per_mtok: 0 };
    // 0.1 $/Mtok for 3 tokens is 3e-7; 0.1 * 3 alone would carry float dust.
    expect(costUsd(price, { inputTokens: 3, outputTokens: 0 })).toBe(0.000_000_3);
    expect(costUsd(price, { inputTokens: 1, outputTokens: 0 })).toBe(0.000_000_1);
  });
});

describe("registry", () => {
  const sim: Deployment = simProfile.tiers.mid[0] as Deployment;

  it("builds a SimModel for a sim deployment", () => {
    const model = createModel(sim);
    expect(model).toBeInstanceOf(SimModel);
    expect(model.model).toBe("sim-mid");
    expect(model.simulated).toBe(true);
  });

  it("builds the adapter each provider names", () => {
    const env = { OPENAI_API_KEY: "sk-test", ANTHROPIC_API_KEY: "ak-test" };
    const openai = createModel(
      {
        ...sim,
        provider: "openai-compatible",
        model: "gpt-4o-mini",
        api_key_env: "OPENAI_API_KEY",
      },
      env,
    );
    expect(openai).toBeInstanceOf(OpenAICompatibleModel);
    expect([openai.provider, openai.model, openai.simulated]).toEqual([
      "openai-compatible",
      "gpt-4o-mini",
      false,
    ]);
    const claude = createModel({ ...sim, provider: "anthropic", model: "claude-sonnet-4-5" }, env);
    expect(claude).toBeInstanceOf(AnthropicModel);
  });

  it("refuses a deployment whose API key variable is unset, naming it", () => {
    const config = withMid({
      provider: "openai-compatible",
      model: "gpt-4o-mini",
      api_key_env: "NOT_SET_ANYWHERE",
    });
    expect(() => new ModelRouter(config, (d) => createModel(d, {}))).toThrow(/NOT_SET_ANYWHERE/);
    try {
      new ModelRouter(config, (d) => createModel(d, {}));
    } catch (error) {
      expect((error as HandoffError).code).toBe("HANDOFF_ERR_CONFIG");
    }
  });

  it("names providers by the GenAI conventions", () => {
    expect(genAiProviderName(sim)).toBe("handoff.sim");
    expect(genAiProviderName({ ...sim, provider: "openai-compatible" })).toBe("openai");
    expect(genAiProviderName({ ...sim, provider: "anthropic" })).toBe("anthropic");
  });

  it("names a deployment by its id, or provider and model", () => {
    expect(deploymentId(sim)).toBe("sim:sim-mid");
    expect(deploymentId({ ...sim, id: "primary" })).toBe("primary");
  });
});

describe("ModelRouter", () => {
  it("lists the deployments of each tier", () => {
    const router = new ModelRouter(simProfile);
    expect(router.deployments("mid")).toEqual(simProfile.tiers.mid);
    expect(router.deployments("heavy").map((d) => d.model)).toEqual(["sim-heavy"]);
  });

  it("answers with the tier's model and a priced usage entry", async () => {
    const router = new ModelRouter(simProfile);
    const call = await router.chat("mid", { messages: hello }, { stage: "tool-executor" });
    const price = simProfile.tiers.mid[0]?.price;
    if (!price) throw new Error("sim profile has no mid price");
    expect(call.result.model).toBe("sim-mid");
    expect(call.result.message.content).toContain("[simulated sim-mid]");
    expect(call.usage).toEqual({
      stage: "tool-executor",
      tier: "mid",
      provider: "sim",
      model: "sim-mid",
      input_tokens: call.result.usage.inputTokens,
      output_tokens: call.result.usage.outputTokens,
      cost_usd: costUsd(price, call.result.usage),
      latency_ms: expect.any(Number),
      simulated: true,
    });
    expect(call.usage.input_tokens).toBe(estimateInputTokens(hello));
    expect(call.usage.cost_usd).toBeGreaterThan(0);
    expect(call.usage.latency_ms).toBeGreaterThanOrEqual(0);
  });

  it("records the prompt's cached parts on the usage entry and the span, priced at their rates", async () => {
    const config = withMid({
      provider: "openai-compatible",
      model: "gpt-4o",
      price: { input_per_mtok: 2.5, output_per_mtok: 10, cached_input_per_mtok: 0.25 },
    });
    const cached: ChatModel = {
      provider: "openai-compatible",
      model: "gpt-4o",
      simulated: false,
      async chat() {
        return {
          message: { role: "assistant", content: "ok" },
          finishReason: "stop",
          usage: { inputTokens: 1_200, outputTokens: 100, cachedInputTokens: 1_000 },
          model: "gpt-4o-2024-08-06",
        };
      },
      async *stream() {
        yield { type: "done", result: await this.chat({ messages: hello }) };
      },
    };
    const router = new ModelRouter(config, (d) => (d.model === "gpt-4o" ? cached : createModel(d)));
    const call = await router.chat("mid", { messages: hello }, { stage: "tool-executor" });
    expect(call.usage).toMatchObject({
      input_tokens: 1_200,
      cached_input_tokens: 1_000,
      output_tokens: 100,
      cost_usd: 0.00175,
    });
    expect(call.usage.cache_write_tokens).toBeUndefined();
    const [span] = spansNamed("chat gpt-4o");
    expect(span?.attributes["gen_ai.usage.input_tokens"]).toBe(1_200);
    expect(span?.attributes["gen_ai.usage.cache_read.input_tokens"]).toBe(1_000);
    expect(span?.attributes["gen_ai.usage.cache_creation.input_tokens"]).toBeUndefined();
  });

  it("uses the first deployment of each tier", async () => {
    const router = new ModelRouter(simProfile);
    const light = await router.chat("light", { messages: hello }, { stage: "classifier" });
    const heavy = await router.chat("heavy", { messages: hello }, { stage: "heavy-reasoner" });
    expect([light.usage.model, light.usage.tier]).toEqual(["sim-light", "light"]);
    expect([heavy.usage.model, heavy.usage.tier]).toEqual(["sim-heavy", "heavy"]);
    expect(heavy.usage.cost_usd).toBeGreaterThan(light.usage.cost_usd);
  });

  it("retries a call that outlasts the deployment's timeout, then gives up for good", async () => {
    const router = new ModelRouter(
      withMid({ provider: "sim", model: "sim-slow", timeout_ms: 20, latency_ms: 2_000 }),
    );
    const started = performance.now();
    const error = await failure(
      router.chat("mid", { messages: hello }, { stage: "tool-executor" }),
    );
    expect(performance.now() - started).toBeLessThan(1_500);
    expect(error.code).toBe("HANDOFF_ERR_RETRIES_EXHAUSTED");
    expect(error.retryable).toBe(false);
    expect(error.message).toBe(
      "tier mid: every attempt failed, 2 attempts (sim:sim-slow: timeout; sim:sim-slow: timeout); " +
        "last: sim:sim-slow did not answer within 20 ms",
    );
    expect((error.cause as HandoffError).message).toBe("sim:sim-slow did not answer within 20 ms");
  });

  it("reports the caller's own abort as a cancelled, retryable call", async () => {
    const router = new ModelRouter(simProfile);
    const error = await failure(
      router.chat(
        "mid",
        { messages: hello },
        { stage: "tool-executor", signal: AbortSignal.abort() },
      ),
    );
    expect(error.code).toBe("HANDOFF_ERR_UNAVAILABLE");
    expect(error.retryable).toBe(true);
    expect(error.message).toBe("call to sim:sim-mid was cancelled");
  });

  it("wraps a model that throws in a provider error and retries it before giving up", async () => {
    const router = new ModelRouter(
      simProfile,
      (deployment) => new FailingModel(deployment.model, new Error("connection reset")),
    );
    const error = await failure(
      router.chat("mid", { messages: hello }, { stage: "tool-executor" }),
    );
    expect(error.code).toBe("HANDOFF_ERR_RETRIES_EXHAUSTED");
    expect(error.status).toBe(502);
    expect(error.message).toContain("2 attempts (sim:sim-mid: server; sim:sim-mid: server)");
    const last = error.cause as HandoffError;
    expect(last.code).toBe("HANDOFF_ERR_PROVIDER");
    expect(last.message).toBe("sim:sim-mid failed: connection reset");
    expect((last.cause as Error).message).toBe("connection reset");
  });

  it("does not retry a model's own non-retryable HandoffError, and keeps its code", async () => {
    const rejected = new HandoffError("HANDOFF_ERR_PROVIDER_REJECTED", "prompt too long");
    let calls = 0;
    const router = new ModelRouter(simProfile, (d) => {
      const model = new FailingModel(d.model, rejected);
      return Object.assign(model, {
        chat: async () => {
          calls++;
          throw rejected;
        },
      });
    });
    const error = await failure(router.chat("heavy", { messages: hello }, { stage: "classifier" }));
    expect(error.code).toBe("HANDOFF_ERR_PROVIDER_REJECTED");
    expect(error.retryable).toBe(false);
    expect(error.message).toContain("prompt too long");
    expect(error.cause).toBe(rejected);
    expect(calls).toBe(1);
  });

  it("passes logprobs to the model and returns the model's to the caller", async () => {
    const models = new Map<string, LogprobsModel>();
    const router = new ModelRouter(simProfile, (d) => {
      const model = new LogprobsModel(d.model);
      models.set(d.model, model);
      return model;
    });
    const light = () => models.get("sim-light") as LogprobsModel;
    const asking = { messages: hello, logprobs: true };

    const call = await router.chat("light", asking, { stage: "classifier" });
    expect(light().requests.at(-1)?.logprobs).toBe(true);
    expect(call.result.logprobs).toEqual([-0.01, -0.25]);

    // Streaming, when the caller takes the output as it comes.
    const deltas: string[] = [];
    const streamed = await router.chat("light", asking, {
      stage: "classifier",
      onEvent: (event) => {
        if (event.type === "text") deltas.push(event.delta);
      },
    });
    expect(deltas).toEqual(["Paris."]);
    expect(light().requests.at(-1)?.logprobs).toBe(true);
    expect(streamed.result.logprobs).toEqual([-0.01, -0.25]);

    // A budget that lowers max_tokens keeps the rest of the request.
    const capped = await router.chat(
      "light",
      { ...asking, params: { max_tokens: 1000 } },
      { stage: "classifier", budgetUsd: 0.0002 },
    );
    const sent = light().requests.at(-1);
    expect(sent?.params?.max_tokens).toBeLessThan(1000);
    expect(sent?.logprobs).toBe(true);
    expect(capped.result.logprobs).toEqual([-0.01, -0.25]);

    // Not asked, none.
    const plain = await router.chat("light", { messages: hello }, { stage: "classifier" });
    expect(light().requests.at(-1)?.logprobs).toBeUndefined();
    expect(plain.result.logprobs).toBeUndefined();
  });

  it("returns no logprobs from the sim model, even when asked", async () => {
    const router = new ModelRouter(simProfile);
    const call = await router.chat(
      "light",
      { messages: hello, logprobs: true },
      { stage: "classifier" },
    );
    expect(call.result.message.content).toContain("[simulated sim-light]");
    expect("logprobs" in call.result).toBe(false);
  });

  it("binds every deployment at construction, so a factory that throws fails there", () => {
    expect(
      () =>
        new ModelRouter(simProfile, () => {
          throw new Error("no adapter");
        }),
    ).toThrow("no adapter");
  });
});

describe("ModelRouter spans", () => {
  it("records a CLIENT chat span with GenAI attributes and the cost", async () => {
    const router = new ModelRouter(simProfile);
    const call = await router.chat(
      "mid",
      { messages: hello, params: { max_tokens: 500, temperature: 0.3 } },
      { stage: "tool-executor" },
    );
    const spans = spansNamed("chat sim-mid");
    expect(spans).toHaveLength(1);
    const span = spans[0] as ReadableSpan;
    expect(span.kind).toBe(SpanKind.CLIENT);
    expect(span.status.code).not.toBe(SpanStatusCode.ERROR);
    expect(span.instrumentationScope.name).toBe("@handoff/providers");
    expect(span.attributes).toMatchObject({
      "gen_ai.operation.name": "chat",
      "gen_ai.provider.name": "handoff.sim",
      "gen_ai.request.model": "sim-mid",
      "gen_ai.request.max_tokens": 500,
      "gen_ai.request.temperature": 0.3,
      "gen_ai.response.model": "sim-mid",
      "gen_ai.response.finish_reasons": ["stop"],
      "gen_ai.usage.input_tokens": call.usage.input_tokens,
      "gen_ai.usage.output_tokens": call.usage.output_tokens,
      "handoff.cost_usd": call.usage.cost_usd,
      "handoff.simulated": true,
      "handoff.tier": "mid",
      "handoff.stage": "tool-executor",
      "handoff.deployment": "sim:sim-mid",
    });
    expect(span.attributes["error.type"]).toBeUndefined();
  });

  it("leaves request attributes out when the request has no such params", async () => {
    await new ModelRouter(simProfile).chat("light", { messages: hello }, { stage: "classifier" });
    const span = spansNamed("chat sim-light")[0];
    expect(span?.attributes).not.toHaveProperty("gen_ai.request.max_tokens");
    expect(span?.attributes).not.toHaveProperty("gen_ai.request.temperature");
  });

  it("marks a failed call's span as an error with its error type", async () => {
    const router = new ModelRouter(simProfile, (d) => new FailingModel(d.model, new Error("boom")));
    await failure(router.chat("mid", { messages: hello }, { stage: "tool-executor" }));
    const span = spansNamed("chat sim-mid")[0];
    expect(span?.status).toEqual({
      code: SpanStatusCode.ERROR,
      message: "sim:sim-mid failed: boom",
    });
    expect(span?.attributes["error.type"]).toBe("server");
    expect(span?.attributes).not.toHaveProperty("gen_ai.usage.input_tokens");
    expect(span?.events.map((e) => e.name)).toEqual(["exception"]);
  });

  it("marks a timed-out call's span with the timeout", async () => {
    const router = new ModelRouter(
      withMid({ provider: "sim", model: "sim-slow", timeout_ms: 10, latency_ms: 1_000 }),
    );
    await failure(router.chat("mid", { messages: hello }, { stage: "tool-executor" }));
    const span = spansNamed("chat sim-slow")[0];
    expect(span?.status.code).toBe(SpanStatusCode.ERROR);
    expect(span?.status.message).toBe("sim:sim-slow did not answer within 10 ms");
    expect(span?.attributes["error.type"]).toBe("timeout");
  });
});

describe("jobResult", () => {
  it("takes the message, finish reason, provider and model of the call", async () => {
    const router = new ModelRouter(simProfile);
    const call = await router.chat("heavy", { messages: hello }, { stage: "heavy-reasoner" });
    expect(jobResult("heavy-reasoner", call)).toEqual({
      message: call.result.message,
      finish_reason: "stop",
      stage: "heavy-reasoner",
      provider: "sim",
      model: "sim-heavy",
    });
  });

  it("keeps a tool-calls finish reason", async () => {
    const router = new ModelRouter(simProfile);
    const call = await router.chat(
      "mid",
      {
        messages: [{ role: "user", content: "What is 2 + 2?" }],
        tools: [{ type: "function", function: { name: "calculator" } }],
      },
      { stage: "tool-executor" },
    );
    const result = jobResult("tool-executor", call);
    expect(result.finish_reason).toBe("tool_calls");
    expect(result.message.tool_calls?.[0]?.function.arguments).toBe('{"expression":"2 + 2"}');
  });
});

describe("memory", () => {
  it("keeps no timer of a call that ended, so nothing of it waits for timeout_ms", async () => {
    const router = new ModelRouter(simProfile);
    const probe = setTimeout(() => {}, 0);
    clearTimeout(probe);
    // Counted from a new macrotask: objects a WeakRef was made to in the current one stay alive
    // until it ends.
    const live = async () => {
      await new Promise((resolve) => setImmediate(resolve));
      return queryObjects(probe.constructor, { format: "count" });
    };
    const job = new AbortController();
    for (let i = 0; i < 5; i++)
      await router.chat("light", { messages: hello }, { stage: "classifier" });
    const before = await live();
    for (let i = 0; i < 200; i++) {
      await router.chat("light", { messages: hello }, { stage: "classifier", signal: job.signal });
    }
    // `AbortSignal.timeout` kept each call's timer, and the span and context it was made in,
    // for the deployment's whole timeout_ms (60 s here) after the call ended.
    expect((await live()) - before).toBeLessThan(20);
  });
});
