import { randomUUID } from "node:crypto";
import type { JobEnvelope, Stage, Usage } from "@handoff/contracts";
import type { StageContext } from "@handoff/mesh";
import { pino } from "pino";

export interface TestEnvelopeOptions {
  id?: string;
  question?: string;
  plan?: Stage[];
  /** Milliseconds from now until the job's deadline (negative for an expired job). */
  deadlineInMs?: number;
}

/** A valid job envelope as the gateway would publish it, for tests that start mid-mesh. */
export function testEnvelope(options: TestEnvelopeOptions = {}): JobEnvelope {
  const now = Date.now();
  return {
    v: 1,
    id: options.id ?? randomUUID(),
    created_at: new Date(now).toISOString(),
    input: {
      model: "handoff",
      messages: [{ role: "user", content: options.question ?? "What is 17 * 23?" }],
      tools: [],
      params: {},
      stream: false,
    },
    plan: options.plan ?? ["classifier"],
    hops: [],
    enrichments: [],
    usage: [],
    budget: { deadline: new Date(now + (options.deadlineInMs ?? 30_000)).toISOString() },
  };
}

/** The context a stage handler gets from the runner, for calling handlers directly in tests. */
export function testStageContext(
  stage: Stage,
  overrides: Partial<StageContext> = {},
): StageContext {
  return {
    stage,
    instance: "test",
    delivery: 1,
    signal: new AbortController().signal,
    logger: pino({ level: "silent" }),
    relay: undefined,
    ...overrides,
  };
}

/** One model call's usage, a cheap simulated light call unless `extra` says otherwise. */
export function testUsage(extra: Partial<Usage> = {}): Usage {
  return {
    stage: "classifier",
    tier: "light",
    provider: "sim",
    model: "sim-light",
    input_tokens: 10,
    output_tokens: 5,
    cost_usd: 0.000_003,
    latency_ms: 2,
    simulated: true,
    ...extra,
  };
}
