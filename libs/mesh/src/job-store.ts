import {
  Buckets,
  costByStage,
  HandoffError,
  isTerminal,
  type JobEnvelope,
  JobRecord,
  type JobStatus,
  totalCost,
} from "@handoff/contracts";
import type { KV } from "@nats-io/kv";

/**
 * The record of a job as its envelope stands now. Prompts are not copied into it, unless the job
 * was submitted with `record_input` (the deployment's `routing.record_inputs`).
 */
export function recordFromEnvelope(
  envelope: JobEnvelope,
  status: JobStatus,
  traceId: string | undefined,
  stage = envelope.hops.at(-1)?.stage ?? envelope.plan[0],
): JobRecord {
  return {
    id: envelope.id,
    status,
    stage,
    created_at: envelope.created_at,
    updated_at: new Date().toISOString(),
    ...(envelope.owner !== undefined ? { owner: envelope.owner } : {}),
    ...(traceId ? { trace_id: traceId } : {}),
    ...(envelope.route ? { route: envelope.route } : {}),
    hops: envelope.hops.map((h) => h.stage),
    usage: envelope.usage,
    cost_usd: totalCost(envelope.usage),
    cost_by_stage: costByStage(envelope.usage),
    ...(envelope.budget.max_cost_usd !== undefined
      ? { max_cost_usd: envelope.budget.max_cost_usd }
      : {}),
    ...(envelope.result ? { result: envelope.result } : {}),
    ...(envelope.error ? { error: envelope.error } : {}),
    ...(envelope.record_input
      ? {
          input: {
            model: envelope.input.model,
            messages: envelope.input.messages,
            tools: envelope.input.tools,
          },
        }
      : {}),
  };
}

/** `record` with the owner of the record it replaces, if that one had an owner. */
function keepOwner(record: JobRecord, current: Partial<JobRecord>): JobRecord {
  const owner = current.owner;
  if (typeof owner !== "string" || owner === record.owner) return record;
  return { ...record, owner };
}

/**
 * Job records in the `handoff-jobs` KV bucket. Writes are compare-and-set, so a late write from a
 * redelivered stage can never overwrite a finished job.
 */
export class JobStore {
  constructor(readonly kv: KV) {}

  async get(id: string): Promise<JobRecord | undefined> {
    const entry = await this.kv.get(id);
    if (entry?.operation !== "PUT" || entry.length === 0) return undefined;
    const parsed = JobRecord.safeParse(entry.json());
    if (!parsed.success) {
      throw HandoffError.validation(`job record ${id} in ${Buckets.jobs}`, parsed.error);
    }
    return parsed.data;
  }

  /** Writes the first record of a new job in one round trip; false if the id is taken. */
  async create(record: JobRecord): Promise<boolean> {
    try {
      await this.kv.create(record.id, JSON.stringify(record));
      return true;
    } catch (error) {
      if (await this.kv.get(record.id)) return false;
      throw error;
    }
  }

  /**
   * Writes `record` unless the stored one is already terminal. Returns false when the write was
   * skipped because the job had finished. The stored record's `owner` is kept whatever `record`
   * says: a job's owner is set once, at submission, and decides who may read it, so a writer that
   * built its record without the envelope (an unreadable message) must not drop or change it.
   */
  async save(record: JobRecord): Promise<boolean> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const entry = await this.kv.get(record.id);
      try {
        if (entry?.operation !== "PUT") {
          await this.kv.create(record.id, JSON.stringify(record));
          return true;
        }
        const current = entry.json<JobRecord>();
        if (isTerminal(current.status)) return false;
        await this.kv.update(record.id, JSON.stringify(keepOwner(record, current)), entry.revision);
        return true;
      } catch (error) {
        // Lost a compare-and-set race with another writer: read again and retry.
        if (attempt === 4) throw error;
      }
    }
    return false;
  }
}
