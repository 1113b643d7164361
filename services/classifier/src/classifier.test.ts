import { simProfile } from "@handoff/config";
import {
  JobEnvelope,
  JobInput,
  type Message,
  type RouteDecision,
  type ToolDefinition,
} from "@handoff/contracts";
import { ModelRouter } from "@handoff/providers";
import { testStageContext } from "@handoff/testkit";
import { describe, expect, it } from "vitest";
import { type Classification, classifyByRules } from "./rules.js";
import { classifierHandler, planFor } from "./service.js";

const weatherTool: ToolDefinition = {
  type: "function",
  function: { name: "get_weather", description: "Weather by city." },
};

function input(question: string, tools: ToolDefinition[] = []): JobInput {
  return JobInput.parse({
    model: "handoff",
    messages: [{ role: "user", content: question }],
    tools,
  });
}

function envelope(question: string, tools: ToolDefinition[] = []): JobEnvelope {
  return JobEnvelope.parse({
    v: 1,
    id: "job_classifier_1",
    created_at: "2024-03-15T20:00:00.000Z",
    input: input(question, tools),
    plan: ["classifier"],
    budget: { deadline: "2099-01-01T00:00:00.000Z" },
  });
}

const stageContext = () => testStageContext("classifier");

const LONG_DESIGN_QUESTION =
  "We run a shop with a few million users and a single Postgres database. How should we design " +
  "the notification system so that email, push and SMS share one pipeline? Please compare the " +
  "trade-offs of a queue per channel versus one shared topic, and cover retries, ordering, " +
  "deduplication and what happens when a provider is down for an hour.";

describe("classifyByRules", () => {
  it("routes arithmetic to the tools", () => {
    const c = classifyByRules(input("What is 17 * 23?"));
    expect(c.decision).toBe("tools");
    expect(c.signals).toEqual(["tools:arithmetic"]);
    expect(c.confidence).toBeCloseTo(0.8, 10);
    expect(c.reason).toBe("tool signals arithmetic (score 2)");
    expect(c.wantsTools).toBe(true);
  });

  it("routes a request for a proof to heavy with high confidence", () => {
    const c = classifyByRules(input("Prove step by step that there are infinitely many primes."));
    expect(c.decision).toBe("heavy");
    expect(c.confidence).toBeGreaterThanOrEqual(0.8);
    expect(c.confidence).toBeCloseTo(0.85, 10);
    expect(c.signals).toEqual(["heavy:proof", "heavy:step-by-step"]);
    expect(c.reason).toBe("heavy signals proof, step-by-step (score 3)");
    expect(c.wantsTools).toBe(false);
  });

  it("routes small talk to light", () => {
    const c = classifyByRules(input("Hello, how are you?"));
    expect(c).toEqual({
      decision: "light",
      confidence: 0.85,
      reason: "no heavy or tool signals",
      signals: [],
      wantsTools: false,
    });
  });

  it("routes a request with client tools to the tools", () => {
    const c = classifyByRules(input("Should I take an umbrella in Paris?", [weatherTool]));
    expect(c.decision).toBe("tools");
    expect(c.signals).toEqual(["tools:client-tools"]);
    expect(c.wantsTools).toBe(true);
  });

  it("routes questions about the time to the tools", () => {
    const c = classifyByRules(input("What time is it in Tokyo?"));
    expect(c.decision).toBe("tools");
    expect(c.signals).toEqual(["tools:time"]);
  });

  it("routes a long design question to heavy", () => {
    const c = classifyByRules(input(LONG_DESIGN_QUESTION));
    expect(c.decision).toBe("heavy");
    expect(c.signals).toEqual(["heavy:analysis", "heavy:design"]);
    expect(c.confidence).toBeCloseTo(0.85, 10);
  });

  it("routes a very long prompt with one weak signal to heavy", () => {
    const c = classifyByRules(input(`Please analyze this log:\n${"line ok\n".repeat(200)}`));
    expect(c.decision).toBe("heavy");
    expect(c.signals).toEqual(["heavy:analysis", "heavy:long-prompt"]);
  });

  it("keeps tools wanted on a heavy request that also has arithmetic", () => {
    const c = classifyByRules(input("Prove rigorously that 2 + 2 = 4 in Peano arithmetic."));
    expect(c.decision).toBe("heavy");
    expect(c.wantsTools).toBe(true);
    expect(c.signals).toEqual(["heavy:proof", "heavy:step-by-step", "tools:arithmetic"]);
  });

  it("lowers the light confidence for a weak heavy signal below the threshold", () => {
    const c = classifyByRules(input("Can you analyze this sentence for me?"));
    expect(c.decision).toBe("light");
    expect(c.confidence).toBeCloseTo(0.7, 10);
    expect(c.reason).toBe("weak heavy signal analysis below threshold");
    expect(c.signals).toEqual(["heavy:analysis"]);
  });

  it("reads only the latest user message", () => {
    const messages: Message[] = [
      { role: "user", content: "What is 17 * 23?" },
      { role: "assistant", content: "391" },
      { role: "user", content: "Thanks, bye!" },
    ];
    const c = classifyByRules(JobInput.parse({ model: "m", messages }));
    expect(c.decision).toBe("light");
    expect(c.signals).toEqual([]);
  });

  it("keeps confidence within 0..0.95", () => {
    const c = classifyByRules(
      input(
        "Prove and derive step by step, analyze and critique: design the API schema of a system, " +
          "then refactor and debug it. Why? How? What?",
      ),
    );
    expect(c.decision).toBe("heavy");
    expect(c.confidence).toBe(0.95);
  });
});

describe("planFor", () => {
  const classification = (decision: RouteDecision, wantsTools: boolean): Classification => ({
    decision,
    wantsTools,
    confidence: 0.9,
    reason: "test",
    signals: [],
  });

  it("keeps light jobs at the classifier", () => {
    expect(planFor(classification("light", false))).toEqual(["classifier"]);
  });

  it("sends tool jobs to the tool-executor", () => {
    expect(planFor(classification("tools", true))).toEqual(["classifier", "tool-executor"]);
  });

  it("sends heavy jobs to the heavy-reasoner", () => {
    expect(planFor(classification("heavy", false))).toEqual(["classifier", "heavy-reasoner"]);
  });

  it("runs the tools before the heavy-reasoner when a heavy job wants them", () => {
    expect(planFor(classification("heavy", true))).toEqual([
      "classifier",
      "tool-executor",
      "heavy-reasoner",
    ]);
  });
});

describe("classifierHandler", () => {
  const handler = classifierHandler(new ModelRouter(simProfile));

  it("answers a light request itself with the light model", async () => {
    const out = await handler(envelope("Hello, how are you?"), stageContext());
    expect(out.route).toEqual({
      decision: "light",
      strategy: "rules",
      confidence: 0.85,
      reason: "no heavy or tool signals",
    });
    expect(out.plan).toEqual(["classifier"]);
    expect(out.enrichments).toEqual([{ kind: "classification", stage: "classifier", signals: [] }]);
    expect(out.usage).toHaveLength(1);
    expect(out.usage[0]).toMatchObject({
      stage: "classifier",
      tier: "light",
      provider: "sim",
      model: "sim-light",
      simulated: true,
    });
    expect(out.result).toMatchObject({
      stage: "classifier",
      provider: "sim",
      model: "sim-light",
      finish_reason: "stop",
    });
    expect(out.result?.message.content).toContain("[simulated sim-light]");
    expect(out.result?.message.content).toContain('Question: "Hello, how are you?"');
    expect(JobEnvelope.safeParse(out).success).toBe(true);
  });

  it("routes a tool request on without answering it", async () => {
    const out = await handler(envelope("What is 17 * 23?"), stageContext());
    expect(out.route?.decision).toBe("tools");
    expect(out.route?.strategy).toBe("rules");
    expect(out.plan).toEqual(["classifier", "tool-executor"]);
    expect(out.enrichments).toEqual([
      { kind: "classification", stage: "classifier", signals: ["tools:arithmetic"] },
    ]);
    expect(out.result).toBeUndefined();
    expect(out.usage).toEqual([]);
  });

  it("routes a heavy request with arithmetic through the tools to the heavy-reasoner", async () => {
    const out = await handler(
      envelope("Prove rigorously that 2 + 2 = 4 in Peano arithmetic."),
      stageContext(),
    );
    expect(out.route?.decision).toBe("heavy");
    expect(out.plan).toEqual(["classifier", "tool-executor", "heavy-reasoner"]);
    expect(out.result).toBeUndefined();
  });

  it("sends client-tool requests to the tool-executor", async () => {
    const out = await handler(envelope("Umbrella in Paris?", [weatherTool]), stageContext());
    expect(out.plan).toEqual(["classifier", "tool-executor"]);
    expect(out.result).toBeUndefined();
  });

  it("fails a light request when the job is already cancelled", async () => {
    const ctx = { ...stageContext(), signal: AbortSignal.abort() };
    await expect(handler(envelope("Hello, how are you?"), ctx)).rejects.toMatchObject({
      code: "HANDOFF_ERR_UNAVAILABLE",
      retryable: true,
    });
  });
});
