import { randomUUID } from "node:crypto";
import type { JobEnvelope, Stage } from "@handoff/contracts";

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
    },
    plan: options.plan ?? ["classifier"],
    hops: [],
    enrichments: [],
    usage: [],
    budget: { deadline: new Date(now + (options.deadlineInMs ?? 30_000)).toISOString() },
  };
}
