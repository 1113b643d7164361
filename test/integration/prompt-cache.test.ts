import Anthropic from "@anthropic-ai/sdk";
import type { HandoffInfo, Usage } from "@handoff/contracts";
import {
  anthropicMessage,
  anthropicStream,
  openaiCompletion,
  openaiStream,
  type RecordedRequest,
} from "@handoff/testkit";
import OpenAI from "openai";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  type InProcessMesh,
  startInProcessMesh,
  startModelUpstreams,
  UPSTREAM_KEYS,
  upstreamConfig,
} from "./support/in-process-mesh.js";

/**
 * Providers' prompt caches through a live mesh: the upstreams speak OpenAI's and Anthropic's wire
 * formats and report cached prompt tokens as those vendors do, so what the job's usage, cost and
 * the client's `usage` say is checked against the recorded fields; and what the mesh sends them
 * is checked to keep the client's conversation as the prompt's prefix, marked for Anthropic.
 */

const COMPLETIONS = "/v1/chat/completions";
const MESSAGES = "/v1/messages";
const EPHEMERAL = { type: "ephemeral" };

let upstreams: Awaited<ReturnType<typeof startModelUpstreams>>;
let mesh: InProcessMesh;
let openai: OpenAI;
let anthropic: Anthropic;

beforeAll(async () => {
  upstreams = await startModelUpstreams();
  const config = upstreamConfig(upstreams.openai.url, upstreams.anthropic.url, (d) => ({
    tiers: {
      light: [
        {
          ...d.light,
          // gpt-4o-mini's cached input is half its input price; a tenth here makes the sums plain.
          price: { input_per_mtok: 1, output_per_mtok: 2, cached_input_per_mtok: 0.1 },
        },
      ],
      heavy: [
        {
          ...d.heavy,
          // Claude Sonnet's list prices: cache reads a tenth of input, 5-minute writes 1.25 times.
          price: {
            input_per_mtok: 3,
            output_per_mtok: 15,
            cached_input_per_mtok: 0.3,
            cache_write_per_mtok: 3.75,
          },
          prompt_cache: { conversation: true },
        },
      ],
    },
  }));
  mesh = await startInProcessMesh(config, { env: UPSTREAM_KEYS });
  openai = new OpenAI({ baseURL: `${mesh.url}/v1`, apiKey: "not-needed", maxRetries: 0 });
  anthropic = new Anthropic({ baseURL: mesh.url, apiKey: "not-needed", maxRetries: 0 });
});

afterAll(async () => {
  await mesh?.stop();
  await upstreams?.close();
});

beforeEach(() => upstreams.clear());

const handoffOf = (value: unknown) => (value as { handoff: HandoffInfo }).handoff;

describe("cached prompt tokens, as the providers report them", () => {
  it("prices OpenAI's cached_tokens at the cached price and reports them to the client", async () => {
    // 1,000 of 1,200 prompt tokens read from OpenAI's cache, at a tenth of the input price.
    upstreams.openai.enqueue(COMPLETIONS, {
      kind: "json",
      body: openaiCompletion(
        "gpt-4o-mini",
        { kind: "text", text: "Hello again." },
        { prompt: 1_200, completion: 100, cached: 1_000 },
      ),
    });
    const completion = await openai.chat.completions.create({
      model: "handoff/light",
      messages: [{ role: "user", content: "Hello there" }],
    });
    expect(completion.choices[0]?.message.content).toBe("Hello again.");
    const handoff = handoffOf(completion);
    expect(handoff.usage).toEqual([
      expect.objectContaining({
        stage: "classifier",
        tier: "light",
        model: "gpt-4o-mini",
        input_tokens: 1_200,
        cached_input_tokens: 1_000,
        output_tokens: 100,
        // 200 uncached at $1, 1,000 cached at $0.10, 100 output at $2, per million.
        cost_usd: 0.0005,
      }),
    ]);
    expect(handoff.usage[0]?.cache_write_tokens).toBeUndefined();
    expect(handoff.cost_usd).toBe(0.0005);
    // OpenAI's own shape: cached tokens a part of prompt_tokens.
    expect(completion.usage).toEqual({
      prompt_tokens: 1_200,
      completion_tokens: 100,
      total_tokens: 1_300,
      prompt_tokens_details: { cached_tokens: 1_000 },
    });
  });

  it("reads them from the include_usage chunk of a streamed answer", async () => {
    upstreams.openai.enqueue(COMPLETIONS, {
      kind: "sse",
      events: openaiStream(
        "gpt-4o-mini",
        { kind: "text", text: "Hello again, streamed." },
        { prompt: 2_048, completion: 10, cached: 1_920 },
      ),
    });
    const stream = await openai.chat.completions.create({
      model: "handoff/light",
      messages: [{ role: "user", content: "Hello there" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let usage: OpenAI.CompletionUsage | null | undefined;
    let handoff: HandoffInfo | undefined;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      handoff = (chunk as unknown as { handoff?: HandoffInfo }).handoff ?? handoff;
    }
    expect(upstreams.openai.received(COMPLETIONS)[0]?.body.stream_options).toEqual({
      include_usage: true,
    });
    expect(usage?.prompt_tokens_details).toEqual({ cached_tokens: 1_920 });
    expect(handoff?.usage[0]).toMatchObject({
      input_tokens: 2_048,
      cached_input_tokens: 1_920,
      // (128 · $1 + 1,920 · $0.10 + 10 · $2) / 1e6
      cost_usd: 0.00034,
    });
  });

  it("counts Anthropic's cache reads and writes into the prompt and prices each", async () => {
    // Anthropic's input_tokens leave out what was read from and written to the cache.
    upstreams.anthropic.enqueue(MESSAGES, {
      kind: "json",
      body: anthropicMessage(
        "claude-sonnet-4-5",
        { kind: "text", text: "There are infinitely many primes." },
        { input: 50, output: 20, cacheRead: 1_000, cacheWrite: 200 },
      ),
    });
    const completion = await openai.chat.completions.create({
      model: "handoff/heavy",
      messages: [{ role: "user", content: "Prove that there are infinitely many primes." }],
    });
    const handoff = handoffOf(completion);
    const heavy = handoff.usage.find((u: Usage) => u.stage === "heavy-reasoner");
    expect(heavy).toMatchObject({
      provider: "anthropic",
      input_tokens: 1_250,
      cached_input_tokens: 1_000,
      cache_write_tokens: 200,
      output_tokens: 20,
      // (50 · $3 + 1,000 · $0.30 + 200 · $3.75 + 20 · $15) / 1e6
      cost_usd: 0.0015,
    });
    expect(completion.usage?.prompt_tokens_details).toEqual({ cached_tokens: 1_000 });
  });

  it("streams Anthropic's counts from message_start and message_delta", async () => {
    upstreams.anthropic.enqueue(MESSAGES, {
      kind: "sse",
      events: anthropicStream(
        "claude-sonnet-4-5",
        { kind: "text", text: "There are infinitely many primes." },
        { input: 50, output: 20, cacheRead: 1_000, cacheWrite: 200 },
      ),
    });
    const stream = await openai.chat.completions.create({
      model: "handoff/heavy",
      messages: [{ role: "user", content: "Prove that there are infinitely many primes." }],
      stream: true,
    });
    let handoff: HandoffInfo | undefined;
    for await (const chunk of stream) {
      handoff = (chunk as unknown as { handoff?: HandoffInfo }).handoff ?? handoff;
    }
    expect(handoff?.usage.find((u) => u.stage === "heavy-reasoner")).toMatchObject({
      input_tokens: 1_250,
      cached_input_tokens: 1_000,
      cache_write_tokens: 200,
      cost_usd: 0.0015,
    });
  });

  it("answers Anthropic's SDK with the cached tokens apart from input_tokens, as Anthropic does", async () => {
    upstreams.anthropic.enqueue(MESSAGES, {
      kind: "json",
      body: anthropicMessage(
        "claude-sonnet-4-5",
        { kind: "text", text: "There are infinitely many primes." },
        { input: 50, output: 20, cacheRead: 1_000, cacheWrite: 200 },
      ),
    });
    const message = await anthropic.messages.create({
      model: "handoff/heavy",
      max_tokens: 256,
      messages: [{ role: "user", content: "Prove that there are infinitely many primes." }],
    });
    expect(message.usage).toMatchObject({
      input_tokens: 50,
      cache_read_input_tokens: 1_000,
      cache_creation_input_tokens: 200,
      output_tokens: 20,
    });
  });
});

describe("the client's conversation is the prompt's prefix", () => {
  const history = [
    { role: "system" as const, content: "You are a careful mathematician. Answer in full." },
    { role: "user" as const, content: "Is 91 prime?" },
    { role: "assistant" as const, content: "No: 91 = 7 * 13." },
  ];

  /** The turns of an Anthropic request body. */
  const turns = (request: RecordedRequest | undefined) =>
    request?.body.messages as Array<{
      role: string;
      content: Array<{ type: string; text?: string; cache_control?: unknown }>;
    }>;

  it("sends the heavy tier the same prefix for two jobs, marked for Anthropic's cache", async () => {
    for (const question of ["Is 97 prime?", "Is 221 prime? Show the factors."]) {
      await openai.chat.completions.create({
        model: "handoff/heavy",
        messages: [...history, { role: "user", content: question }],
      });
    }
    const [first, second] = upstreams.anthropic.received(MESSAGES, "claude-sonnet-4-5");
    expect(first && second).toBeTruthy();
    // tools (none), system and every turn before the final user turn: byte for byte the same.
    expect(first?.body.system).toEqual([
      { type: "text", text: history[0].content, cache_control: EPHEMERAL },
    ]);
    expect(JSON.stringify(second?.body.system)).toBe(JSON.stringify(first?.body.system));
    expect(JSON.stringify(turns(second)?.slice(0, -1))).toBe(
      JSON.stringify(turns(first)?.slice(0, -1)),
    );
    // The history's last block carries the conversation breakpoint: three at most in all.
    expect(turns(first)?.at(-2)?.content.at(-1)).toEqual({
      type: "text",
      text: "No: 91 = 7 * 13.",
      cache_control: EPHEMERAL,
    });
    const marks = JSON.stringify(first?.body).match(/"cache_control"/g) ?? [];
    expect(marks.length).toBe(2);
    // The final turn opens with the client's question; the mesh's context comes after it.
    const last = turns(first)?.at(-1);
    expect(last?.role).toBe("user");
    expect(last?.content[0]).toEqual({ type: "text", text: "Is 97 prime?" });
    expect(last?.content[1]?.text).toMatch(/^You are the heavy reasoning tier/);
  });

  it("sends the tool loop the client's messages first, and its instruction after them", async () => {
    for (const question of ["And 97?", "And 221?"]) {
      await openai.chat.completions.create({
        model: "handoff/mid",
        messages: [...history, { role: "user", content: question }],
      });
    }
    const sent = upstreams.openai
      .received(COMPLETIONS, "gpt-4o")
      .map((r) => r.body.messages as Array<{ role: string; content: string }>);
    expect(sent).toHaveLength(2);
    for (const [i, question] of ["And 97?", "And 221?"].entries()) {
      expect(sent[i]?.slice(0, 4)).toEqual([...history, { role: "user", content: question }]);
      expect(sent[i]?.[4]?.role).toBe("system");
      expect(sent[i]?.[4]?.content).toMatch(/^You are the tool-using tier/);
    }
    expect(JSON.stringify(sent[0]?.slice(0, 3))).toBe(JSON.stringify(sent[1]?.slice(0, 3)));
  });
});
