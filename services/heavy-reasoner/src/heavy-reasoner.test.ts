import { simProfile } from "@handoff/config";
import { type Enrichment, JobEnvelope, type Message, type Route } from "@handoff/contracts";
import {
  type ChatRequest,
  createModel,
  estimateInputTokens,
  ModelRouter,
} from "@handoff/providers";
import { testStageContext } from "@handoff/testkit";
import { describe, expect, it } from "vitest";
import { contextMessage, heavyMessages } from "./context.js";
import { heavyReasonerHandler } from "./service.js";

const QUESTION = "Prove rigorously that 17 * 23 is odd.";

const route: Route = {
  decision: "heavy",
  strategy: "rules",
  confidence: 0.85,
  reason: "heavy signals proof, step-by-step (score 3)",
};

const enrichments: Enrichment[] = [
  { kind: "classification", stage: "classifier", signals: ["heavy:proof"] },
  {
    kind: "tool_results",
    stage: "tool-executor",
    steps: 2,
    runs: [
      {
        id: "c1",
        name: "calculator",
        arguments: '{"expression":"17 * 23"}',
        output: "391",
        latency_ms: 1,
      },
      {
        id: "c2",
        name: "clock",
        arguments: '{"timezone":"Mars/Olympus"}',
        output: 'error: unknown time zone "Mars/Olympus"',
        error: 'unknown time zone "Mars/Olympus"',
        latency_ms: 0,
      },
    ],
  },
  {
    kind: "draft",
    stage: "tool-executor",
    content: "17 * 23 = 391.\n\n  It is odd.",
    reason: "the route sends this job to the heavy tier",
  },
];

function envelope(extra: Partial<JobEnvelope> = {}): JobEnvelope {
  return JobEnvelope.parse({
    v: 1,
    id: "job_heavy_0001",
    created_at: "2024-03-15T20:00:00.000Z",
    input: { model: "handoff", messages: [{ role: "user", content: QUESTION }] },
    plan: ["classifier", "tool-executor", "heavy-reasoner"],
    budget: { deadline: "2099-01-01T00:00:00.000Z" },
    ...extra,
  });
}

const stageContext = () => testStageContext("heavy-reasoner");

describe("contextMessage", () => {
  it("is undefined for an envelope with nothing learned yet", () => {
    expect(contextMessage(envelope())).toBeUndefined();
  });

  it("is undefined when only a classification and a blank draft are present", () => {
    const only: Enrichment[] = [
      { kind: "classification", stage: "classifier", signals: [] },
      { kind: "draft", stage: "tool-executor", content: "   ", reason: "limit" },
    ];
    expect(contextMessage(envelope({ enrichments: only }))).toBeUndefined();
  });

  it("lists the route, each tool run and the draft as '- ' lines", () => {
    const message = contextMessage(envelope({ route, enrichments }));
    expect(message?.role).toBe("system");
    const lines = (message?.content ?? "").split("\n");
    expect(lines[0]).toMatch(/^You are the heavy reasoning tier/);
    expect(lines.slice(1)).toEqual([
      "- Routed heavy by rules (confidence 0.85): heavy signals proof, step-by-step (score 3)",
      '- Tool calculator({"expression":"17 * 23"}) returned: 391',
      '- Tool clock({"timezone":"Mars/Olympus"}) failed: unknown time zone "Mars/Olympus"',
      "- Draft from the tool-executor (the route sends this job to the heavy tier): 17 * 23 = 391. It is odd.",
    ]);
  });

  it("gives the confidence with two decimals", () => {
    const message = contextMessage(envelope({ route: { ...route, confidence: 0.9 } }));
    expect(message?.content).toContain("(confidence 0.90)");
  });

  it("cuts a long draft to one line of 600 characters", () => {
    const draft: Enrichment = {
      kind: "draft",
      stage: "tool-executor",
      content: `${"word ".repeat(200)}\nend`,
      reason: "limit",
    };
    const content = contextMessage(envelope({ enrichments: [draft] }))?.content ?? "";
    const line = content.split("\n").find((l) => l.startsWith("- Draft"));
    const prefix = "- Draft from the tool-executor (limit): ";
    expect(line?.startsWith(prefix)).toBe(true);
    expect(line?.slice(prefix.length)).toHaveLength(600);
    expect(line?.endsWith("…")).toBe(true);
  });
});

describe("heavyReasonerHandler", () => {
  const handler = heavyReasonerHandler(new ModelRouter(simProfile));

  it("answers with the heavy model and appends its usage", async () => {
    const out = await handler(envelope({ route, enrichments }), stageContext());
    expect(out.usage).toHaveLength(1);
    expect(out.usage[0]).toMatchObject({
      stage: "heavy-reasoner",
      tier: "heavy",
      provider: "sim",
      model: "sim-heavy",
      simulated: true,
    });
    expect(out.result).toMatchObject({
      stage: "heavy-reasoner",
      provider: "sim",
      model: "sim-heavy",
      finish_reason: "stop",
    });
    expect(JobEnvelope.safeParse(out).success).toBe(true);
  });

  it("mentions the findings of the earlier hops in its answer", async () => {
    const out = await handler(envelope({ route, enrichments }), stageContext());
    const content = out.result?.message.content ?? "";
    expect(content).toContain("[simulated sim-heavy]");
    expect(content).toContain(`Question: "${QUESTION}"`);
    expect(content).toContain("Findings handed up by earlier stages (4):");
    expect(content).toContain('- Tool calculator({"expression":"17 * 23"}) returned: 391');
    expect(content).toContain("- Draft from the tool-executor");
  });

  it("answers without findings when nothing was handed up", async () => {
    const out = await handler(envelope(), stageContext());
    const content = out.result?.message.content ?? "";
    expect(content).toContain("[simulated sim-heavy]");
    expect(content).not.toContain("Findings");
  });

  it("puts the context after the client's messages, which stay first and unchanged", async () => {
    const conversation = [
      { role: "system" as const, content: "You are a careful mathematician." },
      { role: "user" as const, content: "Is 91 prime?" },
      { role: "assistant" as const, content: "No: 91 = 7 * 13." },
      { role: "user" as const, content: QUESTION },
    ];
    const job = envelope({ route, enrichments });
    job.input.messages = conversation;
    const messages = heavyMessages(job);
    expect(messages.slice(0, conversation.length)).toEqual(conversation);
    expect(messages.at(-1)).toEqual(contextMessage(job));
    expect(messages).toHaveLength(conversation.length + 1);
  });

  it("sends two jobs that share a conversation the same prompt prefix, whatever they found", async () => {
    // A provider's prompt cache keys on the prefix: the conversation must open both prompts.
    const sent: ChatRequest[] = [];
    const recording = new ModelRouter(simProfile, (d) => {
      const model = createModel(d);
      return {
        provider: model.provider,
        model: model.model,
        simulated: model.simulated,
        chat: (request, options) => {
          sent.push(request);
          return model.chat(request, options);
        },
        stream: (request, options) => model.stream(request, options),
      };
    });
    const run = heavyReasonerHandler(recording);
    const conversation: Message[] = [
      { role: "system", content: "You are a careful mathematician." },
      { role: "user", content: "Is 91 prime?" },
      { role: "assistant", content: "No: 91 = 7 * 13." },
      { role: "user", content: QUESTION },
    ];
    const job = (id: string, found: Enrichment[], why: Route) => {
      const e = envelope({ id, route: why, enrichments: found });
      e.input.messages = structuredClone(conversation);
      return e;
    };
    await run(job("job_heavy_0001", enrichments, route), stageContext());
    await run(
      job("job_heavy_0002", enrichments.slice(0, 1), { ...route, confidence: 0.6, reason: "x" }),
      stageContext(),
    );
    const [first, second] = sent;
    const prefix = (request: ChatRequest | undefined) =>
      JSON.stringify(request?.messages.slice(0, conversation.length));
    expect(prefix(first)).toBe(JSON.stringify(conversation));
    expect(prefix(second)).toBe(prefix(first));
    // What differs between the jobs comes only after the client's messages.
    expect(first?.messages.at(-1)).not.toEqual(second?.messages.at(-1));
    expect(first?.messages.at(-1)?.role).toBe("system");
  });

  it("counts the context message in the input tokens", async () => {
    const bare = await handler(envelope(), stageContext());
    const rich = await handler(envelope({ route, enrichments }), stageContext());
    expect(rich.usage[0]?.input_tokens ?? 0).toBeGreaterThan(bare.usage[0]?.input_tokens ?? 0);
  });
});

describe("heavyReasonerHandler with a handoff budget", () => {
  /** A router over the sim models that keeps every request, by tier of the model asked. */
  function recordingRouter() {
    const sent: Array<{ model: string; request: ChatRequest }> = [];
    const router = new ModelRouter(simProfile, (d) => {
      const model = createModel(d);
      return {
        provider: model.provider,
        model: model.model,
        simulated: model.simulated,
        chat: (request, options) => {
          sent.push({ model: d.model, request });
          return model.chat(request, options);
        },
        stream: (request, options) => model.stream(request, options),
      };
    });
    return { router, sent };
  }

  const FACT = "Our staging cluster is called heron-12.";
  function longJob(): JobEnvelope {
    const messages: Message[] = [
      { role: "system", content: "You are an SRE assistant." },
      { role: "user", content: FACT },
      { role: "assistant", content: "Noted." },
    ];
    for (let i = 0; i < 40; i++) {
      messages.push({
        role: "user",
        content: `Log batch ${i}: ${"GET /healthz 200 ok ".repeat(30)}`,
      });
      messages.push({ role: "assistant", content: `Batch ${i} is healthy.` });
    }
    messages.push({ role: "user", content: "Which staging cluster name did I give you?" });
    const table = Array.from({ length: 300 }, (_, i) => `row ${i}: value ${i * 11}`).join("\n");
    const job = envelope({
      route,
      enrichments: [
        enrichments[0] as Enrichment,
        {
          kind: "tool_results",
          stage: "tool-executor",
          steps: 1,
          runs: [{ id: "c9", name: "query", arguments: "{}", output: table, latency_ms: 1 }],
        },
        { kind: "draft", stage: "tool-executor", content: "row 7 has value 77", reason: "heavy" },
      ],
    });
    job.input.messages = messages;
    return job;
  }

  it("sends the heavy model at most its budget, with the fact and the question, and reports it", async () => {
    const { router, sent } = recordingRouter();
    const run = heavyReasonerHandler(router, { budget: 1_500, strategy: "select" });
    const out = await run(longJob(), stageContext());
    const heavy = sent.filter((s) => s.model === "sim-heavy");
    expect(heavy).toHaveLength(1);
    const messages = heavy[0]?.request.messages ?? [];
    expect(estimateInputTokens(messages)).toBeLessThanOrEqual(1_500);
    expect(messages.some((m) => m.content === FACT)).toBe(true);
    expect(messages.at(-2)?.content).toBe("Which staging cluster name did I give you?");
    expect(messages.at(-1)?.content).toContain("row 7: value 77");
    expect(messages.at(-1)?.content).not.toContain("row 8: value 88");
    const compaction = out.enrichments.find((e) => e.kind === "compaction");
    expect(compaction).toMatchObject({
      kind: "compaction",
      stage: "heavy-reasoner",
      tier: "heavy",
      strategy: "select",
      budget_tokens: 1_500,
      tool_outputs_cut: 1,
      turns_summarised: 0,
      enrichments_dropped: ["classification", "tool_results", "draft"],
    });
    if (compaction?.kind !== "compaction") throw new Error("no compaction");
    expect(compaction.tokens_after).toBe(estimateInputTokens(messages));
    expect(compaction.tokens_before).toBeGreaterThan(3 * compaction.tokens_after);
    expect(compaction.turns_dropped).toBeGreaterThan(40);
    // What no later stage reads is gone; what the record reads stays.
    expect(out.enrichments.map((e) => e.kind)).toEqual(["compaction"]);
    expect(out.route).toEqual(route);
    expect(out.usage).toHaveLength(1);
    expect(out.result?.stage).toBe("heavy-reasoner");
    expect(JobEnvelope.safeParse(out).success).toBe(true);
  });

  it("summarises with one light call, whose usage lands on the envelope", async () => {
    const { router, sent } = recordingRouter();
    const run = heavyReasonerHandler(router, { budget: 1_500, strategy: "summarize" });
    const out = await run(longJob(), stageContext());
    expect(sent.map((s) => s.model)).toEqual(["sim-light", "sim-heavy"]);
    expect(out.usage.map((u) => [u.stage, u.tier])).toEqual([
      ["heavy-reasoner", "light"],
      ["heavy-reasoner", "heavy"],
    ]);
    expect(out.enrichments.find((e) => e.kind === "compaction")).toMatchObject({
      strategy: "summarize",
    });
  });

  it("keeps the enrichments when a stage comes after the heavy-reasoner", async () => {
    const { router } = recordingRouter();
    const job = longJob();
    job.plan = ["classifier", "heavy-reasoner", "tool-executor"];
    job.step = 1;
    const out = await heavyReasonerHandler(router, { budget: 1_500, strategy: "select" })(
      job,
      stageContext(),
    );
    expect(out.enrichments.map((e) => e.kind)).toEqual([
      "classification",
      "tool_results",
      "draft",
      "compaction",
    ]);
  });

  it("changes nothing without a budget", async () => {
    const { router, sent } = recordingRouter();
    const job = longJob();
    const out = await heavyReasonerHandler(router)(job, stageContext());
    expect(sent[0]?.request.messages).toEqual(heavyMessages(job));
    expect(out.enrichments.some((e) => e.kind === "compaction")).toBe(false);
  });
});
