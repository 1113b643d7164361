import type { Message, ToolRun, Usage } from "@handoff/contracts";
import { describe, expect, it } from "vitest";
import {
  bm25,
  cutToolOutputs,
  HANDOFF_MARKER_PREFIX,
  promptTokens,
  SUMMARY_INSTRUCTION,
  type SummaryRouter,
  selectHandoff,
  summarizeHandoff,
} from "./handoff.js";
import type { TierCallContext } from "./router.js";
import type { ChatRequest } from "./types.js";

const SYSTEM: Message = { role: "system", content: "You are a helpful assistant for Acme Corp." };
const FACT = "For the record, our production database is named orca-7 and lives in eu-west-3.";

/** A long conversation: a planted fact in turn 1, filler turns with tool outputs, a question. */
function conversation(question: string, turns = 30): Message[] {
  const messages: Message[] = [SYSTEM, { role: "user", content: FACT }];
  messages.push({ role: "assistant", content: "Noted, thanks." });
  for (let i = 0; i < turns; i++) {
    messages.push({ role: "user", content: `Step ${i}: can you check the weather report ${i}?` });
    messages.push({
      role: "assistant",
      content: null,
      tool_calls: [
        {
          id: `call_${i}`,
          type: "function",
          function: { name: "weather", arguments: `{"day":${i}}` },
        },
      ],
    });
    messages.push({
      role: "tool",
      tool_call_id: `call_${i}`,
      content: `sunny with light winds, ${10 + i} degrees, humidity ${40 + i}% `.repeat(8),
    });
    messages.push({ role: "assistant", content: `Day ${i} looks fine: sunny, ${10 + i} degrees.` });
  }
  messages.push({ role: "user", content: question });
  return messages;
}

const QUESTION = "Which region is the production database in, and what is it called?";

describe("selectHandoff", () => {
  it("leaves a conversation under the budget as it is", () => {
    const messages = conversation(QUESTION, 2);
    const out = selectHandoff(messages, { budget: 100_000 });
    expect(out.messages).toEqual(messages);
    expect(out.report).toMatchObject({ strategy: "none", turns_dropped: 0 });
    expect(out.report.tokens_after).toBe(out.report.tokens_before);
  });

  it("fits the budget, keeps the system message and the last turn, and marks the gap once", () => {
    const messages = conversation(QUESTION);
    const budget = 1_500;
    expect(promptTokens(messages)).toBeGreaterThan(2.5 * budget);
    const out = selectHandoff(messages, { budget, tier: "heavy" });
    expect(out.report.strategy).toBe("select");
    expect(out.report.tokens_after).toBeLessThanOrEqual(budget);
    expect(out.report.tokens_after).toBe(promptTokens(out.messages));
    expect(out.messages[0]).toEqual(SYSTEM);
    expect(out.messages.at(-1)).toEqual({ role: "user", content: QUESTION });
    const markers = out.messages.filter((m) => m.content?.startsWith(HANDOFF_MARKER_PREFIX));
    expect(markers).toHaveLength(1);
    expect(markers[0]?.role).toBe("system");
    expect(markers[0]?.content).toMatch(
      new RegExp(
        `^\\[handoff\\] ${out.report.turns_dropped} earlier messages of this conversation \\(about \\d+ tokens\\) were left out here by the mesh to fit the heavy tier's token budget`,
      ),
    );
    expect(out.messages.length + out.report.turns_dropped - 1).toBe(messages.length);
  });

  it("keeps every tool result with the turn that called it", () => {
    const out = selectHandoff(conversation(QUESTION), { budget: 1_500 });
    out.messages.forEach((m, i) => {
      if (m.role !== "tool") return;
      const before = out.messages.slice(0, i).findLast((p) => p.role !== "tool");
      expect(before?.role).toBe("assistant");
      expect(
        before?.role === "assistant" && before.tool_calls?.some((c) => c.id === m.tool_call_id),
      ).toBe(true);
    });
  });

  it("keeps a planted fact the last question asks about, even when it is not among the first turns", () => {
    const messages = conversation(QUESTION);
    // Move the fact to the middle: the head (first turns) no longer covers it.
    const [fact] = messages.splice(1, 2);
    messages.splice(40, 0, fact as Message, { role: "assistant", content: "Noted." });
    const out = selectHandoff(messages, { budget: 1_200, headShare: 0 });
    expect(out.report.turns_dropped).toBeGreaterThan(0);
    expect(out.messages.some((m) => m.content === FACT)).toBe(true);
  });

  it("drops the fact when the question does not mention it", () => {
    const messages = conversation("Summarise the weather for me.");
    const [fact] = messages.splice(1, 2);
    messages.splice(40, 0, fact as Message, { role: "assistant", content: "Noted." });
    const out = selectHandoff(messages, { budget: 1_200, headShare: 0 });
    expect(out.messages.some((m) => m.content === FACT)).toBe(false);
  });

  it("keeps the first turns, so the prompt's prefix is the same for the next job", () => {
    const first = conversation(QUESTION, 30);
    const next = [
      ...first,
      { role: "assistant" as const, content: "orca-7, in eu-west-3." },
      ...conversation("And what about step 31?", 31).slice(-5),
    ];
    const a = selectHandoff(first, { budget: 2_000 }).messages;
    const b = selectHandoff(next, { budget: 2_000 }).messages;
    const marker = (ms: Message[]) =>
      ms.findIndex((m) => m.content?.startsWith(HANDOFF_MARKER_PREFIX));
    expect(marker(a)).toBeGreaterThan(1);
    expect(b.slice(0, marker(a))).toEqual(a.slice(0, marker(a)));
  });

  it("keeps the turns after the last user turn and the reserve in the count", () => {
    const messages: Message[] = [
      ...conversation(QUESTION),
      { role: "assistant", content: "Let me look." },
    ];
    const out = selectHandoff(messages, { budget: 1_500, reserve: 300 });
    expect(out.messages.slice(-2)).toEqual(messages.slice(-2));
    expect(out.report.tokens_after).toBeLessThanOrEqual(1_500);
    expect(out.report.tokens_after).toBe(promptTokens(out.messages) + 300);
  });

  it("is deterministic", () => {
    const messages = conversation(QUESTION);
    expect(selectHandoff(messages, { budget: 1_000 })).toEqual(
      selectHandoff(messages, { budget: 1_000 }),
    );
  });

  it("keeps the last turn even when it alone is over the budget", () => {
    const question = `${"a very long question ".repeat(400)}?`;
    const out = selectHandoff(conversation(question), { budget: 300 });
    expect(out.messages[0]).toEqual(SYSTEM);
    expect(out.messages.at(-1)?.content).toBe(question);
    expect(out.report.tokens_after).toBeGreaterThan(300);
  });
});

describe("bm25", () => {
  it("scores documents that share the query's rarer terms higher, and others zero", () => {
    const scores = bm25(
      ["orca-7", "database"],
      ["the database orca-7 is here", "the database", "nothing at all"],
    );
    expect(scores[0]).toBeGreaterThan(scores[1] ?? 0);
    expect(scores[1]).toBeGreaterThan(0);
    expect(scores[2]).toBe(0);
  });
});

function usage(): Usage {
  return {
    stage: "heavy-reasoner",
    tier: "light",
    provider: "fake",
    model: "fake-light",
    input_tokens: 100,
    output_tokens: 20,
    cost_usd: 0.0001,
    latency_ms: 1,
    simulated: false,
  };
}

class FakeRouter implements SummaryRouter {
  readonly calls: Array<{ tier: string; request: ChatRequest; ctx: TierCallContext }> = [];
  constructor(private readonly answer: string | Error) {}
  async chat(tier: "light" | "mid" | "heavy", request: ChatRequest, ctx: TierCallContext) {
    this.calls.push({ tier, request, ctx });
    if (this.answer instanceof Error) throw this.answer;
    return {
      result: {
        message: { role: "assistant" as const, content: this.answer },
        finishReason: "stop" as const,
        usage: { inputTokens: 100, outputTokens: 20 },
        model: "fake-light",
      },
      usage: usage(),
      tier,
      attempts: 1,
    };
  }
}

describe("summarizeHandoff", () => {
  const call: TierCallContext = { stage: "heavy-reasoner", budgetUsd: 1 };

  it("replaces the left-out turns with one light-tier summary and returns its usage", async () => {
    const router = new FakeRouter("The database is orca-7 in eu-west-3; the weather was sunny.");
    const messages = conversation(QUESTION);
    const out = await summarizeHandoff(messages, {
      budget: 1_500,
      tier: "heavy",
      router,
      call,
    });
    expect(router.calls).toHaveLength(1);
    const [made] = router.calls;
    expect(made?.tier).toBe("light");
    expect(made?.ctx).toBe(call);
    expect(made?.request.messages[0]).toEqual({ role: "system", content: SUMMARY_INSTRUCTION });
    expect(made?.request.messages[1]?.content).toContain("weather");
    expect(made?.request.params).toMatchObject({ temperature: 0 });
    expect(out.usage).toEqual(usage());
    expect(out.report).toMatchObject({ strategy: "summarize" });
    expect(out.report.turns_summarised).toBe(out.report.turns_dropped);
    expect(out.report.turns_dropped).toBeGreaterThan(0);
    expect(out.report.tokens_after).toBeLessThanOrEqual(1_500);
    const summaries = out.messages.filter((m) => m.content?.startsWith(HANDOFF_MARKER_PREFIX));
    expect(summaries).toHaveLength(1);
    expect(summaries[0]?.content).toContain("A summary of them:\nThe database is orca-7");
    expect(out.messages.at(-1)).toEqual({ role: "user", content: QUESTION });
  });

  it("falls back to select when the call fails", async () => {
    const router = new FakeRouter(new Error("upstream 503"));
    const messages = conversation(QUESTION);
    const out = await summarizeHandoff(messages, { budget: 1_500, router, call });
    expect(router.calls).toHaveLength(1);
    expect(out.usage).toBeUndefined();
    const select = selectHandoff(messages, { budget: 1_500 });
    expect(out.messages).toEqual(select.messages);
    expect(out.report).toEqual({
      ...select.report,
      fallback: "the summary call failed: upstream 503",
    });
  });

  it("does not call the model when the transcript exceeds the light tier's budget", async () => {
    const router = new FakeRouter("unused");
    const out = await summarizeHandoff(conversation(QUESTION), {
      budget: 1_500,
      router,
      call,
      lightBudget: 300,
    });
    expect(router.calls).toHaveLength(0);
    expect(out.report.strategy).toBe("select");
    expect(out.report.fallback).toMatch(/light tier's handoff budget of 300/);
  });

  it("calls nothing when the conversation fits", async () => {
    const router = new FakeRouter("unused");
    const out = await summarizeHandoff(conversation(QUESTION, 1), {
      budget: 100_000,
      router,
      call,
    });
    expect(router.calls).toHaveLength(0);
    expect(out.report.strategy).toBe("none");
  });
});

describe("cutToolOutputs", () => {
  const table = [
    "region,instances,cost",
    ...Array.from({ length: 200 }, (_, i) => `region-${i},${i * 3},${i * 7}.50`),
  ].join("\n");
  const run = (output: string, error?: string): ToolRun => ({
    id: "c1",
    name: "billing",
    arguments: "{}",
    output,
    ...(error ? { error } : {}),
    latency_ms: 1,
  });

  it("keeps the header and the lines whose values the draft used", () => {
    const { runs, cut } = cutToolOutputs(
      [run(table)],
      "region-42 costs the most: 294.50 across 126 instances.",
      200,
    );
    expect(cut).toBe(1);
    const output = runs[0]?.output ?? "";
    expect(output.split("\n").slice(0, 2)).toEqual([
      "region,instances,cost",
      "region-42,126,294.50",
    ]);
    expect(output).toMatch(
      /\[handoff\] output cut by the mesh to the lines the draft used: 2 of 201 lines/,
    );
    expect(output.length).toBeLessThan(table.length / 10);
  });

  it("keeps a head with a marker when there is no draft", () => {
    const { runs, cut } = cutToolOutputs([run(table)], undefined, 100);
    expect(cut).toBe(1);
    expect(runs[0]?.output.startsWith("region,instances,cost\nregion-0,0,0.50")).toBe(true);
    expect(runs[0]?.output).toMatch(
      /\[handoff\] output cut by the mesh to its head: about \d+ of \d+ tokens\.$/,
    );
    expect(runs[0]?.output.length).toBeLessThan(600);
  });

  it("leaves short outputs and failures alone", () => {
    const short = run("391");
    const failed = run(table, "timeout");
    const { runs, cut } = cutToolOutputs([short, failed], "391", 100);
    expect(cut).toBe(0);
    expect(runs).toEqual([short, failed]);
  });
});
