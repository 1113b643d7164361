import type { HandoffInfo } from "@handoff/contracts";
import { waitFor } from "@handoff/testkit";
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
 * format) recording what each sent it; the heavy-reasoner's span of the job says what was left
 * out.
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

    // The heavy-reasoner's span of the job says what its compaction did: the envelope's
    // `compaction` enrichment, figure by figure (the heavy-reasoner's unit tests check the
    // enrichment itself; as the job's last step it keeps no copy of its output to read here).
    // The span ends once the job is acked, which may be just after the answer reached the client.
    const span = await waitFor(
      async () =>
        exporter
          .getFinishedSpans()
          .find(
            (s) =>
              s.attributes["handoff.compaction.strategy"] !== undefined &&
              s.spanContext().traceId === trimmed.handoff.trace_id,
          ),
      { what: "the heavy-reasoner's span of the job" },
    );
    expect(span?.name).toBe("process handoff.v1.jobs.heavy-reasoner");
    const figures = span?.attributes ?? {};
    expect(figures).toMatchObject({
      "handoff.compaction.strategy": "select",
      "handoff.compaction.budget_tokens": 1_000,
      "handoff.compaction.turns_summarised": 0,
      "handoff.compaction.tool_outputs_cut": 0,
    });
    const after = Number(figures["handoff.compaction.tokens_after"]);
    expect(after).toBeGreaterThan(0);
    expect(after).toBeLessThanOrEqual(1_000);
    expect(Number(figures["handoff.compaction.tokens_before"])).toBeGreaterThan(2 * after);
    expect(Number(figures["handoff.compaction.turns_dropped"])).toBeGreaterThan(20);
    // Nothing after the heavy-reasoner reads the route's signals: they were dropped.
    expect(Number(figures["handoff.compaction.enrichments_dropped"])).toBeGreaterThan(0);
    expect(trimmed.handoff.route).toBeDefined();
  });
});
