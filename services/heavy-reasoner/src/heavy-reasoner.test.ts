import { simProfile } from "@handoff/config";
import { type Enrichment, JobEnvelope, type Message, type Route } from "@handoff/contracts";
import { type ChatRequest, createModel, ModelRouter } from "@handoff/providers";
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
