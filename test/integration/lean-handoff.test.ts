import { Buckets, type HandoffInfo, JobEnvelope } from "@handoff/contracts";
import { Kvm } from "@nats-io/kv";
import { context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import {
  InMemorySpanExporter,
  SimpleSpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type InProcessMesh,
  startInProcessMesh,
  startModelUpstreams,
  UPSTREAM_KEYS,
  upstreamConfig,
} from "./support/in-process-mesh.js";

/**
 * The lean handoff through a live mesh: the same long conversation sent to a mesh that forwards
 * everything and to one with `limits.handoff_tokens.heavy`, the heavy upstream (Anthropic's wire
 * format) recording what each sent it; the job's envelope, as the heavy-reasoner kept it, says
 * what was left out.
 */

const MESSAGES = "/v1/messages";
const FACT = "Remember this: the vault code for the Lisbon office is 7341-kestrel.";
const QUESTION = "What is the vault code for the Lisbon office?";

function conversation() {
  const messages: Array<{ role: "system" | "user" | "assistant"; content: string }> = [
    { role: "system", content: "You are the assistant of a facilities team." },
    { role: "user", content: FACT },
    { role: "assistant", content: "Noted." },
  ];
  for (let i = 0; i < 30; i++) {
    messages.push({
      role: "user",
      content: `Meeting notes ${i}: ${"the agenda covered budgets, hiring and the roadmap. ".repeat(8)}`,
    });
    messages.push({ role: "assistant", content: `Summary of meeting ${i}: nothing urgent.` });
  }
  messages.push({ role: "user", content: QUESTION });
  return messages;
}

const exporter = new InMemorySpanExporter();
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });

let upstreams: Awaited<ReturnType<typeof startModelUpstreams>>;
let full: InProcessMesh;
let lean: InProcessMesh;

beforeAll(async () => {
  trace.setGlobalTracerProvider(provider);
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  upstreams = await startModelUpstreams();
  full = await startInProcessMesh(upstreamConfig(upstreams.openai.url, upstreams.anthropic.url), {
    env: UPSTREAM_KEYS,
  });
  lean = await startInProcessMesh(
    upstreamConfig(upstreams.openai.url, upstreams.anthropic.url, () => ({
      limits: { request_timeout_ms: 20_000, handoff_tokens: { heavy: 1_000 } },
    })),
    { env: UPSTREAM_KEYS },
  );
});

afterAll(async () => {
  await lean?.stop();
  await full?.stop();
  await upstreams?.close();
  trace.disable();
  context.disable();
  propagation.disable();
});

/** Asks `mesh` the conversation on the heavy tier; the job's handoff and the heavy request. */
async function ask(mesh: InProcessMesh) {
  upstreams.clear();
  const client = new OpenAI({ baseURL: `${mesh.url}/v1`, apiKey: "not-needed", maxRetries: 0 });
  const completion = await client.chat.completions.create({
    model: "handoff/heavy",
    messages: conversation(),
  });
  const heavy = upstreams.anthropic.received(MESSAGES);
  expect(heavy).toHaveLength(1);
  const handoff = (completion as unknown as { handoff: HandoffInfo }).handoff;
  return { handoff, body: heavy[0]?.body as { system?: unknown; messages: unknown[] } };
}

describe("lean handoff", () => {
  it("sends the heavy upstream fewer tokens, with the planted fact and the question, and says so", async () => {
    const everything = await ask(full);
    const trimmed = await ask(lean);
    const size = (body: { system?: unknown; messages: unknown[] }) =>
      JSON.stringify(body.system ?? "").length + JSON.stringify(body.messages).length;
    expect(size(trimmed.body)).toBeLessThan(size(everything.body) / 2);
    const text = JSON.stringify(trimmed.body);
    expect(text).toContain("7341-kestrel");
    expect(text).toContain(QUESTION);
    expect(text).toContain("[handoff] ");
    expect(JSON.stringify(everything.body)).not.toContain("[handoff] ");

    // The heavy usage's prompt tokens are the mesh's estimate, reported by the upstream.
    expect(trimmed.handoff.usage.at(-1)).toMatchObject({ stage: "heavy-reasoner", tier: "heavy" });

    // The envelope the heavy-reasoner kept (its stage output) carries the compaction.
    const kv = await new Kvm(lean.nc).open(Buckets.stageOutputs);
    const keys: string[] = [];
    for await (const key of await kv.keys(`${trimmed.handoff.job_id}.>`)) keys.push(key);
    const outputs = await Promise.all(
      keys.map(async (key) => JobEnvelope.parse((await kv.get(key))?.json())),
    );
    const last = outputs.find((e) => e.result?.stage === "heavy-reasoner");
    const compaction = last?.enrichments.find((e) => e.kind === "compaction");
    expect(compaction).toMatchObject({
      kind: "compaction",
      stage: "heavy-reasoner",
      tier: "heavy",
      strategy: "select",
      budget_tokens: 1_000,
      turns_summarised: 0,
      tool_outputs_cut: 0,
    });
    if (compaction?.kind !== "compaction") throw new Error("no compaction on the envelope");
    expect(compaction.tokens_after).toBeLessThanOrEqual(1_000);
    expect(compaction.tokens_before).toBeGreaterThan(2 * compaction.tokens_after);
    expect(compaction.turns_dropped).toBeGreaterThan(20);
    // The trace says it too: the heavy-reasoner's span of the job carries the compaction.
    const span = exporter
      .getFinishedSpans()
      .find(
        (s) =>
          s.attributes["handoff.compaction.strategy"] !== undefined &&
          s.spanContext().traceId === trimmed.handoff.trace_id,
      );
    expect(span?.name).toBe("process handoff.v1.jobs.heavy-reasoner");
    expect(span?.attributes).toMatchObject({
      "handoff.compaction.strategy": "select",
      "handoff.compaction.budget_tokens": 1_000,
      "handoff.compaction.tokens_before": compaction.tokens_before,
      "handoff.compaction.tokens_after": compaction.tokens_after,
      "handoff.compaction.turns_dropped": compaction.turns_dropped,
    });
    // Nothing after the heavy-reasoner reads the route's signals: they were dropped.
    expect(last?.enrichments.some((e) => e.kind === "classification")).toBe(false);
    expect(trimmed.handoff.route).toBeDefined();
  });
});
