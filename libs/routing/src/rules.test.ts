import { JobInput, type Message, type ToolDefinition } from "@handoff/contracts";
import { describe, expect, it } from "vitest";
import { classifyByRules, classifyPinned, rulesScore, toolSignals } from "./rules.js";

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

describe("rulesScore", () => {
  it("maps the heavy weight onto [0, 1) so the default threshold of 0.5 keeps the rules' decision", () => {
    const proof = rulesScore(input("Prove step by step that there are infinitely many primes."));
    expect(proof.weight).toBe(3);
    expect(proof.score).toBeCloseTo(1 - Math.exp(-1.5), 12);
    expect(proof.heavy).toEqual(["heavy:proof", "heavy:step-by-step"]);
    expect(rulesScore(input("Can you analyze this sentence for me?")).score).toBeLessThan(0.5);
    expect(rulesScore(input("Hello!")).score).toBe(0);
  });

  it("names the tool signals apart from the heavy ones", () => {
    expect(toolSignals(input("What is 17 * 23?"))).toEqual(["tools:arithmetic"]);
    expect(toolSignals(input("Umbrella?", [weatherTool]))).toEqual(["tools:client-tools"]);
    expect(toolSignals(input("Hello!"))).toEqual([]);
  });
});

describe("classifyPinned", () => {
  it("pins a tier from the model name and nothing else", () => {
    expect(classifyPinned({ ...input("Hello"), model: "handoff/heavy" })).toMatchObject({
      decision: "heavy",
      confidence: 1,
    });
    expect(classifyPinned({ ...input("What is 2 + 2?"), model: "handoff/light" })).toMatchObject({
      decision: "light",
      wantsTools: true,
    });
    expect(classifyPinned(input("Hello"))).toBeUndefined();
  });
});
