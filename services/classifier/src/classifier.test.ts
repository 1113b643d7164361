import { HandoffConfig, simProfile } from "@handoff/config";
import { JobEnvelope, type ToolDefinition } from "@handoff/contracts";
import { ModelRouter } from "@handoff/providers";
import { loadModel } from "@handoff/routing";
import { openaiCompletion, openaiError, testStageContext, UpstreamServer } from "@handoff/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadRouting } from "./routing.js";
import { classifierHandler, planFor } from "./service.js";

const weatherTool: ToolDefinition = {
  type: "function",
  function: { name: "get_weather", description: "Weather by city." },
};

function envelope(question: string, tools: ToolDefinition[] = [], model = "handoff"): JobEnvelope {
  return JobEnvelope.parse({
    v: 1,
    id: "job_classifier_1",
    created_at: "2024-03-15T20:00:00.000Z",
    input: { model, messages: [{ role: "user", content: question }], tools },
    plan: ["classifier"],
    budget: { deadline: "2099-01-01T00:00:00.000Z" },
  });
}

const stageContext = () => testStageContext("classifier");

/** The config of the sim profile with its routing section replaced. */
function withRouting(
  routing: Record<string, unknown>,
  tiers: unknown = simProfile.tiers,
): HandoffConfig {
  return HandoffConfig.parse({ tiers, routing });
}

describe("planFor", () => {
  it("keeps light jobs at the classifier and sends the rest on", () => {
    expect(planFor("light", false)).toEqual(["classifier"]);
    expect(planFor("tools", true)).toEqual(["classifier", "tool-executor"]);
    expect(planFor("heavy", false)).toEqual(["classifier", "heavy-reasoner"]);
    expect(planFor("heavy", true)).toEqual(["classifier", "tool-executor", "heavy-reasoner"]);
  });
});

describe("the default routing: the learned strategy and the shipped model", () => {
  let handler: ReturnType<typeof classifierHandler>;
  let threshold: number;

  beforeAll(async () => {
    const routing = await loadRouting(simProfile);
    threshold = routing.thresholds.heavy;
    handler = classifierHandler(new ModelRouter(simProfile), routing);
  });

  it("uses the model's calibrated threshold and records score, threshold and reason", async () => {
    expect(threshold).toBe((await loadModel()).learnedThreshold);
    const question = "Which is the capital of France?\nA. Lyon\nB. Paris\nC. Nice\nD. Lille";
    const out = await handler(envelope(question), stageContext());
    expect(out.route).toMatchObject({ decision: "light", strategy: "learned", threshold });
    expect(out.route?.score).toBeLessThan(threshold);
    expect(out.route?.confidence).toBeCloseTo(1 - (out.route?.score ?? 0), 12);
    expect(out.route?.reason).toMatch(/^learned model: \d+% likely to need the strong model$/);
    expect(out.plan).toEqual(["classifier"]);
    expect(out.usage).toHaveLength(1);
    expect(out.result?.message.content).toContain("[simulated sim-light]");
    expect(JobEnvelope.safeParse(out).success).toBe(true);
  });

  it("sends a question the model scores above the threshold to the heavy tier", async () => {
    const out = await handler(
      envelope(
        "A store sells pencils at 3 for $1. Sam buys 27 pencils and pays with a $20 bill. How much change does he get?",
      ),
      stageContext(),
    );
    expect(out.route?.score).toBeGreaterThanOrEqual(threshold);
    expect(out.route?.decision).toBe("heavy");
    expect(out.plan).toEqual(["classifier", "heavy-reasoner"]);
    expect(out.result).toBeUndefined();
  });

  it("lets the rules decide what the model never learned about, on the model's scale", async () => {
    const hello = await handler(envelope("Hello there!"), stageContext());
    expect(hello.route).toMatchObject({ decision: "light", strategy: "learned", score: 0.01 });
    expect(hello.route?.reason).toBe(
      "outside what the learned model knows (not an options question or a word problem), so the rules decide: no heavy signals",
    );
    expect(hello.enrichments[0]).toMatchObject({ signals: ["learned:out-of-domain"] });
    const design = await handler(
      envelope("Design the API schema of a notification system and compare the trade-offs."),
      stageContext(),
    );
    expect(design.route?.decision).toBe("heavy");
    expect(design.route?.score).toBeGreaterThan(threshold);
  });

  it("routes requests that want tools to the tool-executor, with the tool signals", async () => {
    const arithmetic = await handler(envelope("What is 17 * 23?"), stageContext());
    expect(arithmetic.plan).toEqual(["classifier", "tool-executor"]);
    // Bare arithmetic is not a word problem: the rules decide, and their tool signal wins.
    expect(arithmetic.enrichments).toEqual([
      {
        kind: "classification",
        stage: "classifier",
        signals: ["learned:out-of-domain", "tools:arithmetic"],
      },
    ]);
    const client = await handler(envelope("Umbrella in Paris?", [weatherTool]), stageContext());
    expect(client.route?.decision).toBe("tools");
  });

  it("lets a pinned model name choose the tier", async () => {
    const out = await handler(envelope("Hello", [], "handoff/heavy"), stageContext());
    expect(out.route).toEqual({
      decision: "heavy",
      strategy: "pinned",
      confidence: 1,
      reason: "model handoff/heavy pins the heavy tier",
    });
    expect(out.plan).toEqual(["classifier", "heavy-reasoner"]);
  });

  it("fails a light request when the job is already cancelled", async () => {
    const ctx = { ...stageContext(), signal: AbortSignal.abort() };
    await expect(handler(envelope("What is the capital of France?"), ctx)).rejects.toMatchObject({
      code: "HANDOFF_ERR_UNAVAILABLE",
      retryable: true,
    });
  });
});

describe("the rules strategy", () => {
  it("keeps today's keyword decisions at its default threshold", async () => {
    const config = withRouting({ strategy: "rules" });
    const handler = classifierHandler(new ModelRouter(config), await loadRouting(config));
    const proof = await handler(
      envelope("Prove step by step that there are infinitely many primes."),
      stageContext(),
    );
    expect(proof.route).toMatchObject({
      decision: "heavy",
      strategy: "rules",
      threshold: 0.5,
      reason: "heavy signals proof, step-by-step (weight 3)",
    });
    const hello = await handler(envelope("Hello, how are you?"), stageContext());
    expect(hello.route).toMatchObject({ decision: "light", score: 0 });
  });

  it("gives the mid tier the band under the threshold", async () => {
    const config = withRouting({ strategy: "rules", threshold: 0.9, mid_threshold: 0.3 });
    const handler = classifierHandler(new ModelRouter(config), await loadRouting(config));
    const out = await handler(envelope("Can you analyze this sentence for me?"), stageContext());
    expect(out.route?.decision).toBe("tools");
    expect(out.plan).toEqual(["classifier", "tool-executor"]);
  });
});

/** A light tier on a local server speaking OpenAI's wire format, answering from a script. */
describe("strategies that read the light model", () => {
  let upstream: UpstreamServer;
  const light = () => [
    {
      provider: "openai-compatible" as const,
      model: "light-1",
      base_url: `${upstream.url}/v1`,
      price: { input_per_mtok: 0.1, output_per_mtok: 0.4 },
    },
  ];
  const replyText = (text: string, finish = "stop") => {
    const body = openaiCompletion("light-1", { kind: "text", text });
    body.choices[0] = { ...body.choices[0], finish_reason: finish } as (typeof body.choices)[0];
    return { kind: "json" as const, body };
  };

  beforeAll(async () => {
    upstream = await UpstreamServer.start(() => replyText("fallback answer"));
  });
  afterAll(async () => {
    await upstream.close();
  });

  const handlerFor = async (routing: Record<string, unknown>) => {
    const config = withRouting(routing, { ...simProfile.tiers, light: light() });
    return classifierHandler(new ModelRouter(config), await loadRouting(config));
  };

  it("llm: routes on the light model's schema-constrained decision and bills its call", async () => {
    const handler = await handlerFor({ strategy: "llm" });
    upstream.enqueue(
      "/v1/chat/completions",
      replyText('{"needs_strong_model": true, "confidence": 0.9, "reason": "a proof"}'),
    );
    const out = await handler(
      envelope("Prove that there are infinitely many primes."),
      stageContext(),
    );
    expect(out.route).toMatchObject({
      decision: "heavy",
      strategy: "llm",
      score: 0.9,
      threshold: 0.5,
    });
    expect(out.usage).toMatchObject([{ stage: "classifier", tier: "light", model: "light-1" }]);
    const sent = upstream.requests.at(-1)?.body as {
      response_format?: { type: string };
      temperature?: number;
    };
    expect(sent.response_format?.type).toBe("json_schema");
    expect(sent.temperature).toBe(0);
  });

  it("llm: falls back to the configured strategy, and says why, when the answer is not the schema", async () => {
    const handler = await handlerFor({ strategy: "llm", llm_fallback: "rules" });
    upstream.enqueue("/v1/chat/completions", replyText("Sure! I'd route that to the big model."));
    const out = await handler(
      envelope("Prove that there are infinitely many primes."),
      stageContext(),
    );
    expect(out.route?.strategy).toBe("rules");
    expect(out.route?.reason).toMatch(
      /^llm routing failed \(the llm router's answer is not JSON: .*\); rules: heavy signals proof/,
    );
    expect(out.enrichments[0]).toMatchObject({ signals: ["llm:failed", "heavy:proof"] });
    // Its spend still counts.
    expect(out.usage).toHaveLength(1);
  });

  const WORD_PROBLEM =
    "Toula bought 3 dozen donuts at $68 a dozen and 2 dozen cupcakes at $80 a dozen. How much did she pay in total?";

  it("cascade: keeps a light answer that passes verification, without the confidence line", async () => {
    const handler = await handlerFor({ strategy: "cascade" });
    upstream.enqueue(
      "/v1/chat/completions",
      replyText(
        "3 x 68 = 204 and 2 x 80 = 160, so 204 + 160 = 364.\nThe answer is 364.\nConfidence: 95%",
      ),
    );
    const out = await handler(envelope(WORD_PROBLEM), stageContext());
    expect(out.route).toMatchObject({ decision: "light", strategy: "cascade" });
    expect(out.route?.escalation).toBeUndefined();
    expect(out.result?.message.content).toBe(
      "3 x 68 = 204 and 2 x 80 = 160, so 204 + 160 = 364.\nThe answer is 364.",
    );
    const sent = upstream.requests.at(-1)?.body as {
      messages: Array<{ role: string; content: string }>;
      logprobs?: boolean;
    };
    expect(sent.logprobs).toBe(true);
    // The confidence request comes after the client's messages, so their prefix stays the same.
    expect(sent.messages.at(-1)).toMatchObject({
      role: "system",
      content: expect.stringContaining("Confidence: N%"),
    });
    expect(sent.messages[0]).toEqual({ role: "user", content: WORD_PROBLEM });
  });

  it("cascade: escalates a wrong light answer to heavy with the draft, and bills both calls", async () => {
    const handler = await handlerFor({ strategy: "cascade" });
    upstream.enqueue(
      "/v1/chat/completions",
      replyText("3 x 68 = 204 and 2 x 80 = 150, so 204 + 150 = 354.5\nConfidence: 40%"),
    );
    const out = await handler(envelope(WORD_PROBLEM), stageContext());
    expect(out.route).toMatchObject({ decision: "heavy", strategy: "cascade" });
    expect(out.route?.escalation).toMatchObject({
      stage: "classifier",
      reason: expect.stringContaining("arithmetic error"),
    });
    expect(out.route?.escalation?.reason).toContain("self-reported confidence 40%");
    expect(out.plan).toEqual(["classifier", "heavy-reasoner"]);
    expect(out.result).toBeUndefined();
    expect(out.enrichments.at(-1)).toMatchObject({
      kind: "draft",
      stage: "classifier",
      content: "3 x 68 = 204 and 2 x 80 = 150, so 204 + 150 = 354.5",
    });
    expect(out.usage).toMatchObject([{ stage: "classifier", tier: "light" }]);
  });

  it("cascade: reads the provider's token log-probabilities into the verdict", async () => {
    const handler = await handlerFor({ strategy: "cascade", cascade: { self_confidence: false } });
    const body = openaiCompletion(
      "light-1",
      { kind: "text", text: "Paris is the capital of France." },
      undefined,
      {
        logprobs: [-2.5, -3, -2, -2.8, -3.1, -2.2],
      },
    );
    upstream.enqueue("/v1/chat/completions", { kind: "json", body });
    const out = await handler(envelope("What is the capital of France?"), stageContext());
    expect(out.route?.reason).toMatch(/token uncertainty 0\.9\d/);
  });

  it("cascade: returns the client's logprobs of the answer it keeps, without asking for a confidence line", async () => {
    const handler = await handlerFor({ strategy: "cascade" });
    const body = openaiCompletion(
      "light-1",
      { kind: "text", text: "Paris is the capital of France." },
      undefined,
      { logprobs: [-0.01, -0.02, -0.01, -0.03, -0.02, -0.01] },
    );
    upstream.enqueue("/v1/chat/completions", { kind: "json", body });
    const job = envelope("What is the capital of France?");
    job.input.params = { logprobs: true, top_logprobs: 1 };
    const out = await handler(job, stageContext());
    expect(out.result?.message.content).toBe("Paris is the capital of France.");
    const tokens = out.result?.logprobs?.content ?? [];
    expect(tokens.map((t) => t.token).join("")).toBe("Paris is the capital of France.");
    const sent = upstream.requests.at(-1)?.body as {
      messages: Array<{ role: string; content: string }>;
      logprobs?: boolean;
      top_logprobs?: number;
    };
    expect(sent).toMatchObject({ logprobs: true, top_logprobs: 1 });
    expect(sent.messages.map((m) => m.role)).toEqual(["user"]);
  });

  it("cascade: asks again without logprobs when the model refuses them", async () => {
    const handler = await handlerFor({ strategy: "cascade" });
    upstream.enqueue(
      "/v1/chat/completions",
      openaiError(400, "logprobs is not supported with this model."),
      replyText(
        "3 x 68 = 204 and 2 x 80 = 160, so 204 + 160 = 364.\nThe answer is 364.\nConfidence: 90%",
      ),
    );
    const before = upstream.requests.length;
    const out = await handler(envelope(WORD_PROBLEM), stageContext());
    const calls = upstream.requests
      .slice(before)
      .map((r) => (r.body as { logprobs?: boolean }).logprobs);
    expect(calls).toEqual([true, undefined]);
    expect(out.result?.message.content).toBe(
      "3 x 68 = 204 and 2 x 80 = 160, so 204 + 160 = 364.\nThe answer is 364.",
    );
  });

  it("cascade: a cut-off answer does not stand", async () => {
    const handler = await handlerFor({ strategy: "cascade" });
    upstream.enqueue("/v1/chat/completions", replyText("3 x 68 = 204, then 2 x", "length"));
    const out = await handler(envelope(WORD_PROBLEM), stageContext());
    expect(out.route?.escalation?.reason).toContain("answer cut off");
  });
});
