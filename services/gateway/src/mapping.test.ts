import {
  ChatCompletion,
  ChatCompletionRequest,
  completionFromRecord,
  JobEnvelope,
  type JobRecord,
  type RequestMessage,
} from "@handoff/contracts";
import { testUsage } from "@handoff/testkit";
import { describe, expect, it } from "vitest";
import { envelopeFromRequest, toMessages } from "./mapping.js";

const NOW = new Date("2024-03-15T20:00:00.000Z");

function request(extra: Record<string, unknown> = {}): ChatCompletionRequest {
  return ChatCompletionRequest.parse({
    model: "handoff",
    messages: [{ role: "user", content: "What is 17 * 23?" }],
    ...extra,
  });
}

function record(extra: Partial<JobRecord> = {}): JobRecord {
  return {
    id: "job_12345678",
    status: "succeeded",
    stage: "tool-executor",
    created_at: "2024-03-15T20:00:00.500Z",
    updated_at: "2024-03-15T20:00:01.000Z",
    route: { decision: "tools", strategy: "rules", confidence: 0.8, reason: "tool signals" },
    hops: ["classifier", "tool-executor"],
    usage: [
      testUsage({
        stage: "tool-executor",
        tier: "mid",
        model: "sim-mid",
        input_tokens: 120,
        output_tokens: 14,
      }),
      testUsage({
        stage: "tool-executor",
        tier: "mid",
        model: "sim-mid",
        input_tokens: 150,
        output_tokens: 6,
      }),
    ],
    cost_usd: 0.000_139,
    cost_by_stage: { "tool-executor": 0.000_139 },
    result: {
      message: { role: "assistant", content: "17 * 23 = 391." },
      finish_reason: "stop",
      stage: "tool-executor",
      provider: "sim",
      model: "sim-mid",
    },
    ...extra,
  };
}

describe("toMessages", () => {
  it("flattens text parts to a string", () => {
    const messages: RequestMessage[] = [
      {
        role: "system",
        content: [
          { type: "text", text: "Be " },
          { type: "text", text: "brief." },
        ],
      },
      { role: "user", content: [{ type: "text", text: "Hi" }], name: "ann" },
    ];
    expect(toMessages(messages)).toEqual([
      { role: "system", content: "Be brief." },
      { role: "user", content: "Hi", name: "ann" },
    ]);
  });

  it("keeps tool calls and tool call ids", () => {
    const calls = [
      {
        id: "call_1",
        type: "function" as const,
        function: { name: "get_weather", arguments: '{"city":"Paris"}' },
      },
    ];
    const messages: RequestMessage[] = [
      { role: "assistant", content: null, tool_calls: calls },
      { role: "tool", tool_call_id: "call_1", content: [{ type: "text", text: "sunny" }] },
    ];
    expect(toMessages(messages)).toEqual([
      { role: "assistant", content: null, tool_calls: calls },
      { role: "tool", tool_call_id: "call_1", content: "sunny" },
    ]);
  });

  it("gives an assistant message without content a null content", () => {
    expect(toMessages([{ role: "assistant" }])).toEqual([{ role: "assistant", content: null }]);
  });

  it("keeps the developer role", () => {
    expect(toMessages([{ role: "developer", content: "rules" }])).toEqual([
      { role: "developer", content: "rules" },
    ]);
  });
});

describe("envelopeFromRequest", () => {
  it("builds a valid envelope that starts at the classifier", () => {
    const envelope = envelopeFromRequest(request(), {
      timeoutMs: 30_000,
      now: NOW,
      id: "job_abc12345",
    });
    expect(envelope).toEqual({
      v: 1,
      id: "job_abc12345",
      created_at: "2024-03-15T20:00:00.000Z",
      input: {
        model: "handoff",
        messages: [{ role: "user", content: "What is 17 * 23?" }],
        tools: [],
        stream: false,
        params: {},
      },
      plan: ["classifier"],
      step: 0,
      hops: [],
      enrichments: [],
      usage: [],
      budget: { deadline: "2024-03-15T20:00:30.000Z" },
    });
    expect(JobEnvelope.parse(envelope)).toEqual(envelope);
  });

  it("generates a valid job id when none is given", () => {
    const a = envelopeFromRequest(request(), { timeoutMs: 1_000 });
    const b = envelopeFromRequest(request(), { timeoutMs: 1_000 });
    expect(a.id).not.toBe(b.id);
    expect(JobEnvelope.safeParse(a).success).toBe(true);
  });

  it("prefers max_completion_tokens over max_tokens", () => {
    const envelope = envelopeFromRequest(request({ max_tokens: 50, max_completion_tokens: 80 }), {
      timeoutMs: 1_000,
      now: NOW,
    });
    expect(envelope.input.params.max_tokens).toBe(80);
    const legacy = envelopeFromRequest(request({ max_tokens: 50 }), { timeoutMs: 1_000, now: NOW });
    expect(legacy.input.params.max_tokens).toBe(50);
  });

  it("turns a stop string into a list and keeps a list", () => {
    const one = envelopeFromRequest(request({ stop: "END" }), { timeoutMs: 1_000, now: NOW });
    expect(one.input.params.stop).toEqual(["END"]);
    const many = envelopeFromRequest(request({ stop: ["a", "b"] }), { timeoutMs: 1_000, now: NOW });
    expect(many.input.params.stop).toEqual(["a", "b"]);
  });

  it("carries sampling params, zeros included, and drops nulls", () => {
    const envelope = envelopeFromRequest(
      request({ temperature: 0, top_p: 0.5, seed: 0, max_tokens: null, stop: null }),
      { timeoutMs: 1_000, now: NOW },
    );
    expect(envelope.input.params).toEqual({ temperature: 0, top_p: 0.5, seed: 0 });
  });

  it("carries client tools and tool_choice", () => {
    const tools = [{ type: "function", function: { name: "get_weather" } }];
    const choice = { type: "function", function: { name: "get_weather" } };
    const envelope = envelopeFromRequest(request({ tools, tool_choice: choice }), {
      timeoutMs: 1_000,
      now: NOW,
    });
    expect(envelope.input.tools).toEqual(tools);
    expect(envelope.input.tool_choice).toEqual(choice);
    expect(JobEnvelope.safeParse(envelope).success).toBe(true);
  });

  it("carries parallel_tool_calls, and logprobs with top_logprobs only when logprobs is true", () => {
    const on = envelopeFromRequest(
      request({ parallel_tool_calls: false, logprobs: true, top_logprobs: 5 }),
      { timeoutMs: 1_000, now: NOW },
    );
    expect(on.input.params).toEqual({
      parallel_tool_calls: false,
      logprobs: true,
      top_logprobs: 5,
    });
    const off = envelopeFromRequest(
      request({ parallel_tool_calls: null, logprobs: false, top_logprobs: null }),
      { timeoutMs: 1_000, now: NOW },
    );
    expect(off.input.params).toEqual({});
    expect(JobEnvelope.safeParse(on).success).toBe(true);
  });

  it("sets the deadline to now plus the timeout", () => {
    const envelope = envelopeFromRequest(request(), { timeoutMs: 90_500, now: NOW });
    expect(envelope.budget).toEqual({ deadline: "2024-03-15T20:01:30.500Z" });
  });

  it("carries the request's cache choice: bypass from the body or the headers, sampled on request", () => {
    const of = (extra: Record<string, unknown>, noCache = false) =>
      envelopeFromRequest(request(extra), { timeoutMs: 1_000, noCache }).cache;
    expect(of({})).toBeUndefined();
    expect(of({ handoff: { cache: false } })).toEqual({ bypass: true });
    expect(of({ handoff: { cache: true } })).toEqual({ sampled: true });
    expect(of({}, true)).toEqual({ bypass: true });
    // Cache-Control: no-cache wins over a body that asks for caching.
    expect(of({ handoff: { cache: true } }, true)).toEqual({ bypass: true });
    const envelope = envelopeFromRequest(request({ handoff: { cache: false } }), {
      timeoutMs: 1_000,
    });
    expect(JobEnvelope.parse(envelope).cache).toEqual({ bypass: true });
  });
});

describe("completionFromRecord", () => {
  it("gives OpenAI's chat.completion with the handoff report", () => {
    const completion = completionFromRecord(record(), "4bf92f3577b34da6a3ce929d0e0e4736");
    expect(completion).toEqual({
      id: "chatcmpl-job_12345678",
      object: "chat.completion",
      created: 1_710_532_800,
      model: "sim-mid",
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: "17 * 23 = 391.", refusal: null },
          finish_reason: "stop",
          logprobs: null,
        },
      ],
      usage: { prompt_tokens: 270, completion_tokens: 20, total_tokens: 290 },
      handoff: {
        job_id: "job_12345678",
        route: ["classifier", "tool-executor"],
        decision: record().route,
        escalated: false,
        usage: record().usage,
        cost_usd: 0.000_139,
        cost_by_stage: { "tool-executor": 0.000_139 },
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
        simulated: true,
      },
    });
    expect(ChatCompletion.parse(completion)).toEqual(completion);
  });

  it("returns the answer's log-probabilities when the job has them", () => {
    const logprobs = {
      content: [
        {
          token: "391",
          logprob: -0.01,
          bytes: [51, 57, 49],
          top_logprobs: [{ token: "391", logprob: -0.01, bytes: [51, 57, 49] }],
        },
      ],
      refusal: null,
    };
    const base = record();
    const completion = completionFromRecord(
      { ...base, result: { ...(base.result as NonNullable<JobRecord["result"]>), logprobs } },
      "",
    );
    expect(completion.choices[0]?.logprobs).toEqual(logprobs);
    expect(ChatCompletion.parse(completion).choices[0]?.logprobs).toEqual(logprobs);
  });

  it("says when a cascade escalated, and why", () => {
    const escalation = {
      stage: "classifier" as const,
      score: 0.93,
      reason: "verifier: arithmetic error (93%)",
    };
    const route = {
      decision: "heavy" as const,
      strategy: "cascade",
      confidence: 0.93,
      reason: "r",
      score: 0.93,
      threshold: 0.2,
      escalation,
    };
    const completion = completionFromRecord(record({ route }), "t");
    expect(completion.handoff.escalated).toBe(true);
    expect(completion.handoff.escalation).toEqual(escalation);
    expect(completion.handoff.decision?.escalation).toEqual(escalation);
  });

  it("sums tokens across every hop", () => {
    const usages = [
      testUsage({ input_tokens: 10, output_tokens: 1 }),
      testUsage({ stage: "tool-executor", tier: "mid", input_tokens: 20, output_tokens: 2 }),
      testUsage({ stage: "heavy-reasoner", tier: "heavy", input_tokens: 30, output_tokens: 3 }),
    ];
    const completion = completionFromRecord(record({ usage: usages }), "t");
    expect(completion.usage).toEqual({ prompt_tokens: 60, completion_tokens: 6, total_tokens: 66 });
  });

  it("reports the prompt tokens read from providers' caches as OpenAI does, summed like prompt_tokens", () => {
    const usages = [
      testUsage({ input_tokens: 1_200, cached_input_tokens: 1_000, output_tokens: 5 }),
      testUsage({ stage: "tool-executor", tier: "mid", input_tokens: 300, output_tokens: 7 }),
      testUsage({
        stage: "heavy-reasoner",
        tier: "heavy",
        input_tokens: 2_000,
        cached_input_tokens: 1_500,
        cache_write_tokens: 400,
        output_tokens: 9,
      }),
    ];
    const completion = completionFromRecord(record({ usage: usages }), "t");
    expect(completion.usage).toEqual({
      prompt_tokens: 3_500,
      completion_tokens: 21,
      total_tokens: 3_521,
      prompt_tokens_details: { cached_tokens: 2_500 },
    });
    expect(completion.handoff.usage[2]).toMatchObject({
      cached_input_tokens: 1_500,
      cache_write_tokens: 400,
    });
  });

  it("is not simulated when no hop used the sim provider", () => {
    const real = [testUsage({ provider: "openai-compatible", simulated: false })];
    expect(completionFromRecord(record({ usage: real }), "t").handoff.simulated).toBe(false);
  });

  it("uses the record's trace id when the request has none", () => {
    const completion = completionFromRecord(record({ trace_id: "abc123" }), "");
    expect(completion.handoff.trace_id).toBe("abc123");
  });

  it("returns the tool calls of a client-tools answer", () => {
    const calls = [
      {
        id: "call_1",
        type: "function" as const,
        function: { name: "get_weather", arguments: "{}" },
      },
    ];
    const completion = completionFromRecord(
      record({
        result: {
          message: { role: "assistant", content: null, tool_calls: calls },
          finish_reason: "tool_calls",
          stage: "tool-executor",
          provider: "sim",
          model: "sim-mid",
        },
      }),
      "t",
    );
    expect(completion.choices[0]?.message).toEqual({
      role: "assistant",
      content: null,
      tool_calls: calls,
      refusal: null,
    });
    expect(completion.choices[0]?.finish_reason).toBe("tool_calls");
    expect(ChatCompletion.safeParse(completion).success).toBe(true);
  });

  it("leaves the decision out when the record has no route", () => {
    const completion = completionFromRecord(record({ route: undefined }), "t");
    expect(completion.handoff).not.toHaveProperty("decision");
  });

  it("says what the response cache did for the answering call, when its tier is cached", () => {
    const cached = record({
      usage: [
        testUsage({ stage: "tool-executor", tier: "mid", cache: "miss" }),
        testUsage({
          stage: "tool-executor",
          tier: "mid",
          cost_usd: 0,
          cache: "hit",
          saved_usd: 1e-4,
        }),
      ],
    });
    const completion = completionFromRecord(cached, "");
    expect(completion.handoff.cache).toBe("hit");
    expect(completion.handoff.usage[1]).toMatchObject({ cache: "hit", saved_usd: 1e-4 });
    expect(ChatCompletion.parse(completion).handoff.cache).toBe("hit");
    // An earlier stage's call is not the answer's.
    const earlier = record({
      usage: [
        testUsage({ stage: "classifier", tier: "light", cache: "hit" }),
        testUsage({ stage: "tool-executor", tier: "mid" }),
      ],
    });
    expect(completionFromRecord(earlier, "").handoff).not.toHaveProperty("cache");
    expect(completionFromRecord(record(), "").handoff).not.toHaveProperty("cache");
  });

  it("throws for a record without a result", () => {
    expect(() => completionFromRecord(record({ result: undefined }), "t")).toThrow(
      "job job_12345678 has no result",
    );
  });
});
