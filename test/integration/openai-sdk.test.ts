import type { HandoffConfig } from "@handoff/config";
import type { HandoffInfo } from "@handoff/contracts";
import {
  anthropicError,
  openaiError,
  openaiStream,
  sseEvent,
  type UpstreamServer,
} from "@handoff/testkit";
import OpenAI from "openai";
import { pino } from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  type InProcessMesh,
  startInProcessMesh,
  startModelUpstreams,
  UPSTREAM_KEYS,
  upstreamConfig,
} from "./support/in-process-mesh.js";

/**
 * The official `openai` SDK against the gateway, with every tier behind it calling local servers
 * that speak OpenAI's and Anthropic's wire formats, failures included.
 */

const _logger = pino({ level: "silent" });
const env = UPSTREAM_KEYS;
const COMPLETIONS = "/v1/chat/completions";
const MESSAGES = "/v1/messages";

let openaiUpstream: UpstreamServer;
let anthropicUpstream: UpstreamServer;
let mesh: InProcessMesh;
let upstreams: Awaited<ReturnType<typeof startModelUpstreams>>;
let client: OpenAI;

function config(openaiUrl: string, anthropicUrl: string): HandoffConfig {
  return upstreamConfig(openaiUrl, anthropicUrl, (d) => ({
    tiers: {
      mid: [
        { ...d.mid, timeout_ms: 1_000 },
        {
          ...d.anthropic,
          id: "claude-mid",
          model: "claude-haiku-4-5",
          price: { input_per_mtok: 1, output_per_mtok: 5 },
          fallbacks: ["claude-heavy"],
        },
      ],
      heavy: [{ ...d.heavy, fallbacks: ["claude-mid"] }],
    },
  }));
}

beforeAll(async () => {
  upstreams = await startModelUpstreams();
  openaiUpstream = upstreams.openai;
  anthropicUpstream = upstreams.anthropic;
  mesh = await startInProcessMesh(config(openaiUpstream.url, anthropicUpstream.url), { env });
  client = new OpenAI({ baseURL: `${mesh.url}/v1`, apiKey: "not-needed", maxRetries: 0 });
});

afterAll(async () => {
  await mesh?.stop();
  await upstreams?.close();
});

beforeEach(() => upstreams.clear());

/** The `handoff` report the gateway adds to OpenAI's shapes. */
const handoffOf = (value: unknown) => (value as { handoff: HandoffInfo }).handoff;

describe("the official OpenAI SDK against the gateway", () => {
  it("gets a completion from the light tier, with its true cost", async () => {
    const completion = await client.chat.completions.create({
      model: "handoff",
      messages: [{ role: "user", content: "Hello there" }],
    });
    expect(completion.object).toBe("chat.completion");
    expect(completion.choices[0]?.message.content).toBe(
      "Hello from gpt-4o-mini. You asked: Hello there",
    );
    expect(completion.usage).toMatchObject({
      prompt_tokens: 40,
      completion_tokens: 12,
      total_tokens: 52,
    });
    const handoff = handoffOf(completion);
    expect(handoff.route).toEqual(["classifier"]);
    expect(handoff.usage).toEqual([
      expect.objectContaining({
        stage: "classifier",
        tier: "light",
        provider: "openai-compatible",
        model: "gpt-4o-mini",
        input_tokens: 40,
        output_tokens: 12,
        cost_usd: 0.0000132, // 40 × $0.15 + 12 × $0.60 per million tokens
        simulated: false,
      }),
    ]);
    expect(handoff.cost_usd).toBe(0.0000132);
    const [request] = openaiUpstream.received(COMPLETIONS);
    expect(request?.headers.authorization).toBe("Bearer sk-upstream-openai");
    expect(request?.body.model).toBe("gpt-4o-mini");
  });

  it("runs a tool loop: the mid model calls the calculator over OpenAI's wire, and answers with its result", async () => {
    const completion = await client.chat.completions.create({
      model: "handoff",
      messages: [{ role: "user", content: "What is 17 * 23?" }],
    });
    expect(completion.choices[0]?.message.content).toBe("The tool answered: 391.");
    expect(handoffOf(completion).route).toEqual(["classifier", "tool-executor"]);
    const calls = openaiUpstream.received(COMPLETIONS, "gpt-4o");
    expect(calls).toHaveLength(2);
    const [first, second] = calls;
    if (!first || !second) throw new Error("expected two calls");
    const offered = first.body.tools as Array<{ function: { name: string } }>;
    expect(offered.map((t) => t.function.name)).toEqual(
      expect.arrayContaining(["calculator", "clock"]),
    );
    const fed = (second.body.messages as Array<{ role: string; content: string }>).at(-1);
    expect(fed).toMatchObject({ role: "tool", content: "391" });
  });

  it("returns a client-defined tool call to the SDK, then continues with the client's result", async () => {
    const tools: OpenAI.Chat.Completions.ChatCompletionTool[] = [
      {
        type: "function",
        function: {
          name: "get_weather",
          parameters: {
            type: "object",
            properties: { city: { type: "string" } },
            required: ["city"],
          },
        },
      },
    ];
    const question = { role: "user" as const, content: "What's the weather in Paris?" };
    const first = await client.chat.completions.create({
      model: "handoff",
      messages: [question],
      tools,
    });
    const choice = first.choices[0];
    expect(choice?.finish_reason).toBe("tool_calls");
    const call = choice?.message.tool_calls?.[0];
    if (call?.type !== "function") throw new Error("expected a function tool call");
    expect(call.function).toEqual({ name: "get_weather", arguments: '{"city":"Paris"}' });

    const second = await client.chat.completions.create({
      model: "handoff",
      tools,
      messages: [
        question,
        choice?.message as OpenAI.Chat.Completions.ChatCompletionMessageParam,
        { role: "tool", tool_call_id: call.id, content: "18°C and sunny" },
      ],
    });
    expect(second.choices[0]?.message.content).toBe("The tool answered: 18°C and sunny.");
  });

  it("streams a heavy answer relayed from the Anthropic tier, ending with usage", async () => {
    const stream = await client.chat.completions.create({
      model: "handoff",
      stream: true,
      stream_options: { include_usage: true },
      messages: [
        { role: "user", content: "Prove step by step that there are infinitely many primes." },
      ],
    });
    let content = "";
    let deltas = 0;
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    let handoff: HandoffInfo | undefined;
    for await (const chunk of stream) {
      const piece = chunk.choices[0]?.delta.content;
      if (piece) {
        content += piece;
        deltas++;
      }
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
      handoff = handoffOf(chunk) ?? handoff;
    }
    expect(content).toBe(
      "Hello from claude-sonnet-4-5. You asked: Prove step by step that there are infinitely many primes.",
    );
    expect(deltas).toBeGreaterThan(5);
    expect(finish).toBe("stop");
    expect(usage).toMatchObject({ prompt_tokens: 40, completion_tokens: 12 });
    expect(handoff?.route.at(-1)).toBe("heavy-reasoner");
    const [request] = anthropicUpstream.received(MESSAGES, "claude-sonnet-4-5");
    expect(request?.body.stream).toBe(true);
    expect(request?.headers["x-api-key"]).toBe("sk-ant-upstream");
    // The earlier hops' findings come after the client's question, in its turn: the client's
    // messages stay the prompt's prefix, which Anthropic's prompt cache keys on.
    const turns = request?.body.messages as Array<{
      role: string;
      content: Array<{ text?: string }>;
    }>;
    expect(turns.at(-1)?.content[0]?.text).toBe(
      "Prove step by step that there are infinitely many primes.",
    );
    expect(turns.at(-1)?.content[1]?.text).toMatch(/^You are the heavy reasoning tier/);
    expect(request?.body.system).toBeUndefined();
  });

  it("honours a 429's Retry-After and answers from the retry", async () => {
    anthropicUpstream.enqueue(
      MESSAGES,
      anthropicError(429, "Number of requests has exceeded your rate limit", 1),
    );
    const started = Date.now();
    const completion = await client.chat.completions.create({
      model: "handoff/heavy",
      messages: [{ role: "user", content: "Design a sharded job scheduler." }],
    });
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_000);
    expect(completion.choices[0]?.message.content).toContain("Hello from claude-sonnet-4-5");
    const calls = anthropicUpstream.received(MESSAGES, "claude-sonnet-4-5");
    expect(calls).toHaveLength(2);
    expect((calls[1]?.at ?? 0) - (calls[0]?.at ?? 0)).toBeGreaterThanOrEqual(1_000);
  });

  it("falls back to the next deployment of the tier when the first keeps answering 500", async () => {
    openaiUpstream.enqueue(
      COMPLETIONS,
      openaiError(500, "The server had an error while processing your request."),
      openaiError(500, "The server had an error while processing your request."),
    );
    const completion = await client.chat.completions.create({
      model: "handoff",
      messages: [{ role: "user", content: "What is 6 * 7?" }],
    });
    expect(completion.choices[0]?.message.content).toBe("The tool answered: 42.");
    const usage = handoffOf(completion).usage;
    // The first turn was answered by the fallback (Anthropic), the second by the recovered primary.
    expect(usage.map((u) => u.model)).toEqual(["claude-haiku-4-5", "gpt-4o"]);
    expect(openaiUpstream.received(COMPLETIONS, "gpt-4o")).toHaveLength(3);
  });

  it("times out an upstream that hangs and answers from the retry", async () => {
    openaiUpstream.enqueue(COMPLETIONS, { kind: "hang" });
    const started = Date.now();
    const completion = await client.chat.completions.create({
      model: "handoff",
      messages: [{ role: "user", content: "What is 5 + 5?" }],
    });
    const elapsed = Date.now() - started;
    expect(completion.choices[0]?.message.content).toBe("The tool answered: 10.");
    expect(elapsed).toBeGreaterThanOrEqual(1_000); // oa-mid's per-attempt timeout
    expect(elapsed).toBeLessThan(8_000);
  });

  it("recovers from a malformed stream that breaks before any output", async () => {
    openaiUpstream.enqueue(COMPLETIONS, { kind: "sse", events: [sseEvent("{not json")] });
    const stream = await client.chat.completions.create({
      model: "handoff",
      stream: true,
      messages: [{ role: "user", content: "Hi, how are you?" }],
    });
    let content = "";
    for await (const chunk of stream) content += chunk.choices[0]?.delta.content ?? "";
    expect(content).toBe("Hello from gpt-4o-mini. You asked: Hi, how are you?");
    expect(openaiUpstream.received(COMPLETIONS, "gpt-4o-mini")).toHaveLength(2);
  });

  it("raises an error in the SDK when a stream breaks after output began", async () => {
    const move = {
      kind: "text" as const,
      text: "this answer will be cut off before its end arrives",
    };
    openaiUpstream.enqueue(COMPLETIONS, {
      kind: "sse",
      events: openaiStream("gpt-4o-mini", move),
      cut: true,
    });
    const stream = await client.chat.completions.create({
      model: "handoff",
      stream: true,
      messages: [{ role: "user", content: "Hi again!" }],
    });
    let content = "";
    const consume = async () => {
      for await (const chunk of stream) content += chunk.choices[0]?.delta.content ?? "";
    };
    await expect(consume()).rejects.toThrow(/after streaming began/);
    expect(content.length).toBeGreaterThan(0);
    expect(openaiUpstream.received(COMPLETIONS, "gpt-4o-mini")).toHaveLength(1);
  });

  it("gives up at the attempt cap, even around a cyclic fallback list, and says why", async () => {
    for (let i = 0; i < 10; i++)
      anthropicUpstream.enqueue(MESSAGES, anthropicError(500, "Internal server error"));
    const error = await client.chat.completions
      .create({ model: "handoff/heavy", messages: [{ role: "user", content: "Design a ledger." }] })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(OpenAI.APIError);
    const apiError = error as InstanceType<typeof OpenAI.APIError>;
    expect(apiError.status).toBe(502);
    expect(apiError.code).toBe("HANDOFF_ERR_RETRIES_EXHAUSTED");
    expect(apiError.message).toContain("4 attempts");
    // claude-heavy and claude-mid name each other as fallbacks; the cap of 4 ends the cycle.
    expect(anthropicUpstream.received(MESSAGES)).toHaveLength(4);
    anthropicUpstream.requests.length = 0;
  });

  it("reports an unaffordable request as a 402 the SDK raises", async () => {
    const error = await client.chat.completions
      .create({
        model: "handoff",
        messages: [{ role: "user", content: "Hello" }],
        // Handoff's own field, passed through the SDK's body like any extra parameter.
        ...({ max_cost_usd: 0.0000001 } as object),
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(402);
    expect((error as InstanceType<typeof OpenAI.APIError>).code).toBe("HANDOFF_ERR_BUDGET");
    expect(openaiUpstream.requests).toHaveLength(0);
  });

  it("lists the models the config offers", async () => {
    const ids: string[] = [];
    for await (const model of client.models.list()) ids.push(model.id);
    expect(ids).toEqual(
      expect.arrayContaining([
        "handoff",
        "handoff/heavy",
        "oa-light",
        "oa-mid",
        "claude-mid",
        "claude-heavy",
      ]),
    );
  });
});
