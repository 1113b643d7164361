import { HandoffConfig as ConfigSchema, simProfile } from "@handoff/config";
import { JobEnvelope, type Message, type Stage, type ToolDefinition } from "@handoff/contracts";
import { createModel, ModelRouter } from "@handoff/providers";
import { testStageContext } from "@handoff/testkit";
import { builtinTools, LocalToolSource, Toolbox } from "@handoff/tools";
import { describe, expect, it } from "vitest";
import { toolExecutorHandler, toolPolicy } from "./service.js";
import {
  runToolLoop,
  TOOL_LOOP_INSTRUCTION,
  type ToolLoopInput,
  type ToolLoopOutcome,
} from "./tool-loop.js";

const router = new ModelRouter(simProfile);
const FIXED = new Date("2024-03-15T20:00:00.000Z");
const toolbox = new Toolbox({ callTimeoutMs: 5_000, maxOutputBytes: 16_384 }, [
  new LocalToolSource(builtinTools, () => FIXED),
]);
/** The sim profile with another tool-step limit. */
const withSteps = (max_tool_steps: number) => ({
  ...simProfile,
  limits: { ...simProfile.limits, max_tool_steps },
});

const weatherTool: ToolDefinition = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather for a city.",
    parameters: { type: "object", properties: { city: { type: "string" } } },
  },
};

const user = (content: string): Message[] => [{ role: "user", content }];

function loop(overrides: Partial<ToolLoopInput>): Promise<ToolLoopOutcome> {
  return runToolLoop({
    router,
    toolbox,
    policy: (tier) => ({ tier }),
    messages: user("What is 17 * 23?"),
    clientTools: [],
    maxSteps: 6,
    signal: new AbortController().signal,
    ...overrides,
  });
}

function envelope(question: string, plan: Stage[], tools: ToolDefinition[] = []): JobEnvelope {
  return JobEnvelope.parse({
    v: 1,
    id: "job_tools_0001",
    created_at: "2024-03-15T20:00:00.000Z",
    input: { model: "handoff", messages: user(question), tools },
    plan,
    budget: { deadline: "2099-01-01T00:00:00.000Z" },
  });
}

const stageContext = () => testStageContext("tool-executor");

describe("runToolLoop", () => {
  it("runs the calculator and answers with its result", async () => {
    const outcome = await loop({});
    expect(outcome.kind).toBe("answer");
    expect(outcome.steps).toBe(2);
    expect(outcome.usage).toHaveLength(2);
    expect(outcome.usage.map((u) => [u.stage, u.tier, u.model])).toEqual([
      ["tool-executor", "mid", "sim-mid"],
      ["tool-executor", "mid", "sim-mid"],
    ]);
    expect(outcome.runs).toHaveLength(1);
    expect(outcome.runs[0]).toMatchObject({
      name: "calculator",
      arguments: '{"expression":"17 * 23"}',
      output: "391",
    });
    expect(outcome.runs[0]?.error).toBeUndefined();
    expect(outcome.runs[0]?.id).toMatch(/^call_/);
    expect(outcome.last.finishReason).toBe("stop");
    expect(outcome.last.message.content).toContain("391");
    expect(outcome.last.message.content).toBe("17 * 23 = 391.");
  });

  it("sends the client's messages first, unchanged, and its instruction after them", async () => {
    const sent: Message[][] = [];
    const recording = new ModelRouter(simProfile, (d) => {
      const model = createModel(d);
      return {
        provider: model.provider,
        model: model.model,
        simulated: model.simulated,
        chat: (request, options) => {
          sent.push([...request.messages]);
          return model.chat(request, options);
        },
        stream: (request, options) => model.stream(request, options),
      };
    });
    const messages: Message[] = [
      { role: "system", content: "You are a terse assistant." },
      { role: "user", content: "Hi" },
      { role: "assistant", content: "Hello." },
      { role: "user", content: "What is 17 * 23?" },
    ];
    const outcome = await loop({ router: recording, messages });
    expect(outcome.kind).toBe("answer");
    expect(sent).toHaveLength(2);
    for (const turn of sent) {
      // The client's conversation is the prompt's prefix, byte for byte, on every turn.
      expect(JSON.stringify(turn.slice(0, messages.length))).toBe(JSON.stringify(messages));
      expect(turn[messages.length]).toEqual({ role: "system", content: TOOL_LOOP_INSTRUCTION });
    }
    // The second turn extends the first: its prompt starts with the whole first prompt.
    const [first, second] = sent;
    expect(second?.slice(0, first?.length)).toEqual(first);
    expect(second?.slice(first?.length).map((m) => m.role)).toEqual(["assistant", "tool"]);
  });

  it("runs the clock with the loop's clock", async () => {
    const outcome = await loop({ messages: user("What time is it in UTC?") });
    expect(outcome.kind).toBe("answer");
    expect(outcome.runs.map((r) => [r.name, r.arguments])).toEqual([
      ["clock", '{"timezone":"UTC"}'],
    ]);
    expect(JSON.parse(outcome.runs[0]?.output ?? "{}")).toMatchObject({
      iso: "2024-03-15T20:00:00.000Z",
      timezone: "UTC",
      unix: 1_710_532_800,
    });
    expect(outcome.last.message.content).toMatch(
      /^It is Friday, March 15, 2024 at 8:00:00\sPM UTC\.$/,
    );
  });

  it("hands a call to a client tool back to the client without running anything", async () => {
    const outcome = await loop({
      messages: user("What's the weather like in Paris?"),
      clientTools: [weatherTool],
    });
    expect(outcome.kind).toBe("client_tools");
    expect(outcome.steps).toBe(1);
    expect(outcome.runs).toEqual([]);
    expect(outcome.usage).toHaveLength(1);
    expect(outcome.last.message.tool_calls?.map((c) => c.function.name)).toEqual(["get_weather"]);
    expect(outcome.last.finishReason).toBe("tool_calls");
  });

  it("stops at the step limit", async () => {
    const outcome = await loop({ maxSteps: 1 });
    expect(outcome.kind).toBe("exhausted");
    expect(outcome.steps).toBe(1);
    expect(outcome.usage).toHaveLength(1);
    expect(outcome.runs.map((r) => r.output)).toEqual(["391"]);
    expect(outcome.last.message.tool_calls?.[0]?.function.name).toBe("calculator");
  });

  it("answers directly when no tool fits", async () => {
    const outcome = await loop({ messages: user("Tell me a joke") });
    expect(outcome.kind).toBe("answer");
    expect(outcome.steps).toBe(1);
    expect(outcome.runs).toEqual([]);
    expect(outcome.last.message.content).toContain("[simulated sim-mid]");
  });

  it("records a failing tool as a run with an error and answers with the failure", async () => {
    const outcome = await loop({ messages: user("What is 1 / 0?") });
    expect(outcome.kind).toBe("answer");
    expect(outcome.runs).toHaveLength(1);
    const run = outcome.runs[0];
    expect(run?.error).toBeDefined();
    expect(run?.output).toBe(`error: ${run?.error}`);
    expect(outcome.last.message.content).toBe(`The calculator tool failed (${run?.output}).`);
  });

  it("does not call tools when tool_choice is none", async () => {
    const outcome = await loop({ toolChoice: "none" });
    expect(outcome.kind).toBe("answer");
    expect(outcome.steps).toBe(1);
    expect(outcome.runs).toEqual([]);
  });

  describe("a client's forced tool choice", () => {
    /** A router over the sim profile whose models record the tools each turn offered. */
    function recordingRouter(offered: string[][]): ModelRouter {
      return new ModelRouter(simProfile, (deployment) => {
        const model = createModel(deployment);
        return {
          provider: model.provider,
          model: model.model,
          simulated: model.simulated,
          chat: (request, options) => {
            offered.push((request.tools ?? []).map((t) => t.function.name));
            return model.chat(request, options);
          },
          stream: (request, options) => model.stream(request, options),
        };
      });
    }

    it("is satisfied by a client tool, never a built-in: required on an arithmetic question", async () => {
      const offered: string[][] = [];
      const outcome = await loop({
        router: recordingRouter(offered),
        clientTools: [weatherTool],
        toolChoice: "required",
      });
      expect(outcome.kind).toBe("client_tools");
      expect(outcome.runs).toEqual([]);
      expect(outcome.last.finishReason).toBe("tool_calls");
      expect(outcome.last.message.tool_calls?.map((c) => c.function.name)).toEqual(["get_weather"]);
      // The forced turn offered the client's tools alone.
      expect(offered).toEqual([["get_weather"]]);
    });

    it("offers the client's tools alone when it names one of them", async () => {
      const offered: string[][] = [];
      const outcome = await loop({
        router: recordingRouter(offered),
        messages: user("What is 17 * 23 and the weather in Paris?"),
        clientTools: [weatherTool],
        toolChoice: { type: "function", function: { name: "get_weather" } },
      });
      expect(outcome.kind).toBe("client_tools");
      expect(outcome.last.message.tool_calls?.map((c) => c.function)).toEqual([
        { name: "get_weather", arguments: '{"city":"Paris"}' },
      ]);
      expect(offered).toEqual([["get_weather"]]);
    });

    it("leaves the built-ins to a choice that is not the client's to satisfy", async () => {
      const offered: string[][] = [];
      // No client tools: `required` is met by the calculator, as before.
      const outcome = await loop({ router: recordingRouter(offered), toolChoice: "required" });
      expect(outcome.kind).toBe("answer");
      expect(outcome.runs.map((r) => r.name)).toEqual(["calculator"]);
      expect(offered[0]).toEqual(expect.arrayContaining(["calculator", "clock"]));
      // `auto` with client tools offers everything.
      offered.length = 0;
      await loop({
        router: recordingRouter(offered),
        clientTools: [weatherTool],
        toolChoice: "auto",
      });
      expect(offered[0]).toEqual(expect.arrayContaining(["calculator", "clock", "get_weather"]));
    });
  });

  it("rejects when the job is already cancelled", async () => {
    await expect(loop({ signal: AbortSignal.abort() })).rejects.toMatchObject({
      code: "HANDOFF_ERR_UNAVAILABLE",
    });
  });

  // The sim model's expression finder used to take seconds on a prompt of 45 KB (and hours on
  // this one), holding the tool-executor's event loop for every other job meanwhile.
  it("answers a 1 MB prompt of digits, operators and parentheses", async () => {
    const piece = "(12 + 3) * 4 - 5 / (6 ^ 2) % ";
    const prompt = `What is ${piece.repeat(Math.ceil(500_000 / piece.length))}1, given ${"7 8 9 ".repeat(83_334)}?`;
    const outcome = await loop({ messages: user(prompt) });
    expect(outcome.kind).toBe("answer");
    // The calculator takes 500 characters at most: it refuses, and the model says so.
    expect(outcome.runs.map((r) => r.name)).toEqual(["calculator"]);
    expect(outcome.runs[0]?.error).toContain("expression");
    expect(outcome.last.message.content).toContain("The calculator tool failed");
  }, 5_000);
});

describe("toolExecutorHandler", () => {
  const handler = toolExecutorHandler(router, toolbox, simProfile);

  it("answers the job when the plan ends at the tool-executor", async () => {
    const out = await handler(
      envelope("What is 17 * 23?", ["classifier", "tool-executor"]),
      stageContext(),
    );
    expect(out.result).toEqual({
      message: { role: "assistant", content: "17 * 23 = 391." },
      finish_reason: "stop",
      stage: "tool-executor",
      provider: "sim",
      model: "sim-mid",
    });
    expect(out.plan).toEqual(["classifier", "tool-executor"]);
    expect(out.usage).toHaveLength(2);
    expect(out.enrichments).toHaveLength(1);
    expect(out.enrichments[0]).toMatchObject({
      kind: "tool_results",
      stage: "tool-executor",
      steps: 2,
    });
    const first = out.enrichments[0];
    expect(first?.kind === "tool_results" ? first.runs.map((r) => r.output) : []).toEqual(["391"]);
    expect(JobEnvelope.safeParse(out).success).toBe(true);
  });

  it("answers with the answering turn's log-probabilities when the client asked", async () => {
    const job = envelope("What is 17 * 23?", ["classifier", "tool-executor"]);
    job.input.params = { logprobs: true, top_logprobs: 2 };
    const out = await handler(job, stageContext());
    const tokens = out.result?.logprobs?.content ?? [];
    expect(tokens.map((t) => t.token).join("")).toBe("17 * 23 = 391.");
    expect(tokens.every((t) => t.top_logprobs.length === 2)).toBe(true);
    expect(JobEnvelope.safeParse(out).success).toBe(true);
  });

  it("hands a draft and its tool results up when the plan continues to heavy", async () => {
    const out = await handler(
      envelope("What is 17 * 23?", ["classifier", "tool-executor", "heavy-reasoner"]),
      stageContext(),
    );
    expect(out.result).toBeUndefined();
    expect(out.plan).toEqual(["classifier", "tool-executor", "heavy-reasoner"]);
    expect(out.enrichments.map((e) => e.kind)).toEqual(["tool_results", "draft"]);
    expect(out.enrichments[1]).toEqual({
      kind: "draft",
      stage: "tool-executor",
      content: "17 * 23 = 391.",
      reason: "the route sends this job to the heavy tier",
    });
    expect(out.usage).toHaveLength(2);
  });

  it("escalates to the heavy-reasoner when the loop runs out of steps", async () => {
    const out = await toolExecutorHandler(
      router,
      toolbox,
      withSteps(1),
    )(envelope("What is 17 * 23?", ["classifier", "tool-executor"]), stageContext());
    expect(out.result).toBeUndefined();
    expect(out.plan).toEqual(["classifier", "tool-executor", "heavy-reasoner"]);
    expect(out.enrichments.at(-1)).toEqual({
      kind: "draft",
      stage: "tool-executor",
      content: "",
      reason: "the tool loop reached its limit of 1 steps",
    });
    expect(out.enrichments[0]).toMatchObject({ kind: "tool_results", steps: 1 });
  });

  it("does not add the heavy-reasoner twice when it is already planned", async () => {
    const out = await toolExecutorHandler(
      router,
      toolbox,
      withSteps(1),
    )(
      envelope("What is 17 * 23?", ["classifier", "tool-executor", "heavy-reasoner"]),
      stageContext(),
    );
    expect(out.plan).toEqual(["classifier", "tool-executor", "heavy-reasoner"]);
    expect(out.enrichments.at(-1)).toMatchObject({
      kind: "draft",
      reason: "the tool loop reached its limit of 1 steps",
    });
  });

  it("returns a client tool call to the client as the result", async () => {
    const out = await handler(
      envelope("What's the weather like in Paris?", ["classifier", "tool-executor"], [weatherTool]),
      stageContext(),
    );
    expect(out.result?.finish_reason).toBe("tool_calls");
    expect(out.result?.stage).toBe("tool-executor");
    expect(out.result?.model).toBe("sim-mid");
    expect(out.result?.message.tool_calls?.map((c) => c.function.name)).toEqual(["get_weather"]);
    expect(out.enrichments[0]).toMatchObject({ kind: "tool_results", runs: [], steps: 1 });
  });
});

describe("the tool loop as a stage that streams and spends", () => {
  /**
   * A mid-tier model that says something, then calls the calculator; then answers. Its text goes
   * through `onEvent` as a streaming provider's would.
   */
  function scriptedRouter(failSecondTurn = false): ModelRouter {
    let turn = 0;
    const usage = (n: number) => ({
      stage: "tool-executor" as const,
      tier: "mid" as const,
      provider: "scripted",
      model: "scripted-mid",
      input_tokens: 10 * n,
      output_tokens: n,
      cost_usd: 0.01 * n,
      latency_ms: 1,
      simulated: true,
    });
    const chat: ModelRouter["chat"] = async (_tier, _request, context) => {
      turn++;
      if (turn === 1) {
        context.onEvent?.({ type: "text", delta: "Let me work that out. " }, "scripted-mid");
        return {
          result: {
            message: {
              role: "assistant",
              content: "Let me work that out. ",
              tool_calls: [
                {
                  id: "call_1",
                  type: "function",
                  function: { name: "calculator", arguments: '{"expression":"17 * 23"}' },
                },
              ],
            },
            finishReason: "tool_calls",
            usage: { inputTokens: 10, outputTokens: 1 },
            model: "scripted-mid",
          },
          usage: usage(1),
          tier: "mid",
          attempts: 1,
        };
      }
      if (failSecondTurn) throw new Error("the provider hung up");
      context.onEvent?.({ type: "text", delta: "17 * 23 = 391." }, "scripted-mid");
      return {
        result: {
          message: { role: "assistant", content: "17 * 23 = 391." },
          finishReason: "stop",
          usage: { inputTokens: 20, outputTokens: 2 },
          model: "scripted-mid",
        },
        usage: usage(2),
        tier: "mid",
        attempts: 1,
      };
    };
    return { chat } as unknown as ModelRouter;
  }

  it("relays only the answering turn's text, never that of a turn that calls tools", async () => {
    const relayed: string[] = [];
    const out = await toolExecutorHandler(
      scriptedRouter(),
      toolbox,
      withSteps(6),
    )(
      { ...envelope("What is 17 * 23?", ["classifier", "tool-executor"]), step: 1 },
      testStageContext("tool-executor", {
        relay: (event) => {
          if (event.type === "text") relayed.push(event.delta);
        },
      }),
    );
    expect(relayed.join("")).toBe("17 * 23 = 391.");
    expect(relayed.join("")).toBe(out.result?.message.content);
  });

  it("leaves the spend of a loop that failed half-way on the envelope it was given", async () => {
    const given = { ...envelope("What is 17 * 23?", ["classifier", "tool-executor"]), step: 1 };
    await expect(
      toolExecutorHandler(scriptedRouter(true), toolbox, simProfile)(given, stageContext()),
    ).rejects.toThrow("hung up");
    expect(given.usage.map((u) => u.cost_usd)).toEqual([0.01]);
  });
});

describe("toolPolicy", () => {
  const config = ConfigSchema.parse({
    ...simProfile,
    tools: { allow: { mid: ["calculator", "docs__*"] } },
    gateway: {
      api_keys: [
        { name: "team-a", key_env: "TEAM_A_KEY", tools: ["docs__*"] },
        { name: "team-b", key_env: "TEAM_B_KEY" },
      ],
    },
  });

  it("applies the mid tier's allowlist to every job, and the key's to a job that came with one", () => {
    expect(toolPolicy(config, {})).toEqual({
      tier: "mid",
      tierAllows: ["calculator", "docs__*"],
    });
    expect(toolPolicy(config, { owner: "team-a" })).toEqual({
      tier: "mid",
      tierAllows: ["calculator", "docs__*"],
      key: "team-a",
      keyAllows: ["docs__*"],
    });
    // A key without a list may use what the tier allows.
    expect(toolPolicy(config, { owner: "team-b" }).keyAllows).toBeUndefined();
  });

  it("gives a job whose owner is no API key (a NATS door tenant) the tier's tools", () => {
    expect(toolPolicy(config, { owner: "billing-backend" })).toEqual({
      tier: "mid",
      tierAllows: ["calculator", "docs__*"],
    });
  });

  it("checks a call the light model makes, when the budget made the loop fall back, against the light tier's list", async () => {
    const out = await loop({
      // Enough for a light turn, not for a mid one.
      budget: () => 0.0001,
      policy: (tier) => (tier === "light" ? { tier, tierAllows: ["clock"] } : { tier }),
    });
    expect(out.usage.map((u) => u.tier)).toContain("light");
    expect(out.runs[0]).toMatchObject({
      name: "calculator",
      error_type: "not_allowed",
      error:
        'tool "calculator" is not allowed for the light tier (tools.allow.light); use only the tools you were offered',
    });
  });

  it("keeps a refused tool out of the model's offer and refuses its call", async () => {
    const policy = toolPolicy(config, { owner: "team-a" });
    const out = await loop({ policy: () => policy });
    // calculator is allowed for the tier but not for team-a: not offered, so the sim model,
    // which calls the calculator only when offered one, answers without it.
    expect(out.runs).toEqual([]);
    const refused = await toolbox.execute(
      {
        id: "c1",
        type: "function",
        function: { name: "calculator", arguments: '{"expression":"1+1"}' },
      },
      { signal: new AbortController().signal },
      policy,
    );
    expect(refused.error).toEqual({
      type: "not_allowed",
      message:
        'tool "calculator" is not allowed for API key "team-a"; use only the tools you were offered',
    });
  });
});

describe("toolExecutorHandler with a mid-tier handoff budget", () => {
  it("compacts the client's conversation for the loop and reports it on the envelope", async () => {
    const config = {
      ...simProfile,
      limits: { ...simProfile.limits, handoff_tokens: { mid: 600 } },
    };
    const job = envelope("What is 17 * 23?", ["classifier", "tool-executor"]);
    const history: Message[] = [];
    for (let i = 0; i < 30; i++) {
      history.push({ role: "user", content: `Note ${i}: ${"nothing to see here ".repeat(10)}` });
      history.push({ role: "assistant", content: `Noted ${i}.` });
    }
    job.input.messages = [...history, ...job.input.messages];
    const out = await toolExecutorHandler(router, toolbox, config)(job, stageContext());
    expect(out.result?.message.content).toBe("17 * 23 = 391.");
    const compaction = out.enrichments.find((e) => e.kind === "compaction");
    expect(compaction).toMatchObject({
      stage: "tool-executor",
      tier: "mid",
      strategy: "select",
      budget_tokens: 600,
      tool_outputs_cut: 0,
    });
    if (compaction?.kind !== "compaction") throw new Error("no compaction");
    expect(compaction.tokens_after).toBeLessThanOrEqual(600);
    expect(compaction.turns_dropped).toBeGreaterThan(20);
  });
});
