import type { ChatCompletion } from "@handoff/contracts";
import { testUsage } from "@handoff/testkit";
import { describe, expect, it } from "vitest";
import { formatCompletion, formatError } from "./ask.js";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";

function completion(extra: Partial<ChatCompletion["handoff"]> = {}): ChatCompletion {
  return {
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
      decision: {
        decision: "tools",
        strategy: "rules",
        confidence: 0.8,
        reason: "tool signals arithmetic (score 2)",
      },
      escalated: false,
      usage: [
        testUsage({
          stage: "tool-executor",
          tier: "mid",
          model: "sim-mid",
          input_tokens: 120,
          output_tokens: 14,
          cost_usd: 0.000_070_4,
          latency_ms: 3,
        }),
        testUsage({
          stage: "tool-executor",
          tier: "mid",
          model: "sim-mid",
          input_tokens: 150,
          output_tokens: 6,
          cost_usd: 0.000_069_6,
          latency_ms: 1,
        }),
      ],
      cost_usd: 0.000_14,
      cost_by_stage: { "tool-executor": 0.000_14 },
      trace_id: TRACE,
      simulated: true,
      ...extra,
    },
  };
}

describe("formatCompletion", () => {
  it("prints the answer, the route, a row per hop, the total and the trace", () => {
    expect(formatCompletion(completion()).split("\n")).toEqual([
      "17 * 23 = 391.",
      "",
      "route:   classifier -> tool-executor  (tools by rules, confidence 0.80: tool signals arithmetic (score 2))",
      "cost per hop:",
      "  stage          tier  provider  model    tokens in  out  cost        latency",
      "  tool-executor  mid   sim       sim-mid  120        14   $0.0000704  3 ms",
      "  tool-executor  mid   sim       sim-mid  150        6    $0.0000696  1 ms",
      "total:   $0.0001400  (simulated models: configure real providers for real answers)",
      `trace:   ${TRACE}`,
      "job:     job_12345678",
    ]);
  });

  it("prints four decimals for a cent or more and no simulated note for real models", () => {
    const text = formatCompletion(
      completion({
        route: ["classifier", "tool-executor", "heavy-reasoner"],
        usage: [
          testUsage({
            provider: "anthropic",
            model: "claude",
            tier: "heavy",
            cost_usd: 0.0125,
            simulated: false,
          }),
        ],
        cost_usd: 0.0125,
        simulated: false,
      }),
    );
    const lines = text.split("\n");
    expect(lines[2]?.startsWith("route:   classifier -> tool-executor -> heavy-reasoner  (")).toBe(
      true,
    );
    expect(lines.find((l) => l.startsWith("total:"))).toBe("total:   $0.0125");
    expect(lines.filter((l) => l.includes("$0.0125"))).toHaveLength(2);
  });

  it("prints the score against its threshold, and why a cascade escalated", () => {
    const escalation = {
      stage: "classifier" as const,
      score: 0.91,
      reason: "verifier: arithmetic error (91%)",
    };
    const decision = {
      decision: "heavy" as const,
      strategy: "cascade",
      confidence: 0.91,
      reason: "pre-route: 20% likely to need the strong model; verifier: arithmetic error (91%)",
      score: 0.91,
      threshold: 0.18,
      escalation,
    };
    const lines = formatCompletion(
      completion({
        route: ["classifier", "heavy-reasoner"],
        decision,
        escalated: true,
        escalation,
      }),
    ).split("\n");
    expect(lines[2]).toBe(
      "route:   classifier -> heavy-reasoner  (heavy by cascade, score 0.91 vs threshold 0.18, confidence 0.91: pre-route: 20% likely to need the strong model; verifier: arithmetic error (91%))",
    );
    expect(lines[3]).toBe(
      "escalated: the classifier's answer did not stand (verifier: arithmetic error (91%))",
    );
  });

  it("prints the route alone when there is no decision", () => {
    const { decision: _decision, ...handoff } = completion().handoff;
    const text = formatCompletion({ ...completion(), handoff });
    expect(text.split("\n")[2]).toBe("route:   classifier -> tool-executor");
  });

  it("prints the tool calls of an answer without content", () => {
    const base = completion();
    const text = formatCompletion({
      ...base,
      choices: [
        {
          index: 0,
          message: {
            role: "assistant",
            content: null,
            refusal: null,
            tool_calls: [
              {
                id: "call_1",
                type: "function",
                function: { name: "get_weather", arguments: '{"city":"Paris"}' },
              },
            ],
          },
          finish_reason: "tool_calls",
          logprobs: null,
        },
      ],
    });
    expect(text.split("\n")[0]).toBe('(calls get_weather {"city":"Paris"})');
  });

  it("prints a header only when no hop was billed", () => {
    const lines = formatCompletion(completion({ usage: [], cost_usd: 0, simulated: false })).split(
      "\n",
    );
    const header = lines.indexOf("cost per hop:");
    expect(lines[header + 1]).toBe("  stage  tier  provider  model  tokens in  out  cost  latency");
    expect(lines[header + 2]).toBe("total:   $0.0000000");
  });
});

describe("formatError", () => {
  it("lists the status, code, message and every issue", () => {
    const text = formatError(400, {
      message:
        "request body is invalid: messages[0].role: Invalid input; n: only n = 1 is supported",
      type: "invalid_request_error",
      param: "messages[0].role",
      code: "HANDOFF_ERR_VALIDATION",
      issues: [
        { path: "messages[0].role", message: "Invalid input" },
        { path: "n", message: "only n = 1 is supported" },
      ],
    });
    expect(text.split("\n")).toEqual([
      "error 400 HANDOFF_ERR_VALIDATION: request body is invalid: messages[0].role: Invalid input; n: only n = 1 is supported",
      "  at messages[0].role: Invalid input",
      "  at n: only n = 1 is supported",
    ]);
  });

  it("falls back to the type without a code and adds the job and trace ids", () => {
    const text = formatError(504, {
      message: "no answer within 60000 ms",
      type: "timeout_error",
      param: null,
      code: null,
      job_id: "job_12345678",
      trace_id: TRACE,
    });
    expect(text.split("\n")).toEqual([
      "error 504 timeout_error: no answer within 60000 ms",
      "job:     job_12345678",
      `trace:   ${TRACE}`,
    ]);
  });
});
