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
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { KV, KvEntry } from "@nats-io/kv";

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
    ...repeatedDeliveries(envelope),
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

/** The stages a job's hops show delivered more than once, with the delivery that finished them. */
function repeatedDeliveries(envelope: JobEnvelope): Pick<JobRecord, "deliveries"> {
  const deliveries: NonNullable<JobRecord["deliveries"]> = {};
  for (const hop of envelope.hops) {
    if (hop.delivery > 1)
      deliveries[hop.stage] = Math.max(hop.delivery, deliveries[hop.stage] ?? 0);
  }
  return Object.keys(deliveries).length > 0 ? { deliveries } : {};
}

/** `record` with the owner of the record it replaces, if that one had an owner. */
function keepOwner(record: JobRecord, current: JobRecord): JobRecord {
  const owner = current.owner;
  if (owner === undefined || owner === record.owner) return record;
  return { ...record, owner };
}

/** A write that lost a compare-and-set: another writer got there first. */
function lostRace(error: unknown): boolean {
  return (
    error instanceof JetStreamApiError &&
    (error.code === JetStreamApiCodes.StreamWrongLastSequence ||
      error.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

/** A job record as read, with the revision to compare-and-set against (0: never written). */
export interface RecordSnapshot {
  record: JobRecord | undefined;
  revision: number;
}

/** How many times a write re-reads after losing a race before it gives up. */
const MAX_RACES = 10;

/**
 * Job records in the `handoff-jobs` KV bucket. Writes are compare-and-set, so a late write from a
 * redelivered stage can never overwrite a finished job or move a running one back.
 */
export class JobStore {
  constructor(readonly kv: KV) {}

  async get(id: string): Promise<JobRecord | undefined> {
    return (await this.read(id)).record;
  }

  /**
   * The record with the revision a compare-and-set against it needs: a caller that read the
   * record anyway hands this to {@link save} or {@link update}, which then write without reading
   * it again.
   */
  async read(id: string): Promise<RecordSnapshot> {
    const entry = await this.kv.get(id);
    if (entry?.operation === "PUT" && entry.length > 0) {
      return { record: this.#parse(id, entry), revision: entry.revision };
    }
    return { record: undefined, revision: entry?.revision ?? 0 };
  }

  /** Writes the first record of a new job in one round trip; false if the id is taken. */
  async create(record: JobRecord): Promise<boolean> {
    try {
      await this.kv.create(record.id, JSON.stringify(record));
      return true;
    } catch (error) {
      if (lostRace(error)) return false;
      throw error;
    }
  }

  /**
   * Writes `record` unless the stored one is already terminal, or further along than `record`
   * (it lists more hops: a late write of a redelivered stage). Returns false when the write was
   * skipped. The stored record's `owner` is kept whatever `record` says: a job's owner is set
   * once, at submission, and decides who may read it.
   */
  save(record: JobRecord, from?: RecordSnapshot): Promise<boolean> {
    return this.update(
      record.id,
      (current) => {
        if (!current) return record;
        if (isTerminal(current.status) || current.hops.length > record.hops.length)
          return undefined;
        return keepOwner(record, current);
      },
      from,
    );
  }

  /**
   * Fails a job known only by its id (its message could not be read): the stored record keeps
   * every field it has (owner, route, hops, usage) and gains the error. False if it had ended.
   */
  fail(
    id: string,
    stage: JobRecord["stage"],
    error: NonNullable<JobRecord["error"]>,
    traceId?: string,
  ) {
    return this.update(id, (current) => {
      const now = new Date().toISOString();
      if (current && isTerminal(current.status)) return undefined;
      const base: JobRecord = current ?? {
        id,
        status: "failed",
        created_at: now,
        updated_at: now,
        hops: [],
        usage: [],
        cost_usd: 0,
        cost_by_stage: {},
      };
      return {
        ...base,
        status: "failed",
        ...(stage ? { stage } : {}),
        ...(traceId && !base.trace_id ? { trace_id: traceId } : {}),
        updated_at: now,
        error,
      };
    });
  }

  /**
   * Read, decide, compare-and-set. `next` sees the stored record (undefined when there is none)
   * and returns the record to write, or undefined to leave it. With `from` (what the caller read
   * earlier), the first round decides on that and skips the read: a record changed since makes the
   * compare-and-set fail, and the next round reads. Only a lost race is retried; a stored record
   * that does not validate is reported, never overwritten.
   */
  async update(
    id: string,
    next: (current: JobRecord | undefined) => JobRecord | undefined,
    from?: RecordSnapshot,
  ): Promise<boolean> {
    for (let race = 0; ; race++) {
      const seen = race === 0 && from ? from : await this.read(id);
      const record = next(seen.record);
      if (!record) return false;
      const payload = JSON.stringify(record);
      try {
        if (seen.record) await this.kv.update(id, payload, seen.revision);
        else if (seen.revision > 0) await this.kv.put(id, payload, { previousSeq: seen.revision });
        else await this.kv.create(id, payload);
        return true;
      } catch (error) {
        if (!lostRace(error) || race + 1 >= MAX_RACES) throw error;
      }
    }
  }

  #parse(id: string, entry: KvEntry): JobRecord {
    let value: unknown;
    try {
      value = entry.json();
    } catch {
      throw new HandoffError(
        "HANDOFF_ERR_INVALID_MESSAGE",
        `job record ${id} in ${Buckets.jobs} is not JSON; it is left as it is`,
      );
    }
    const parsed = JobRecord.safeParse(value);
    if (!parsed.success) {
      throw HandoffError.validation(
        `job record ${id} in ${Buckets.jobs}`,
        parsed.error,
        "HANDOFF_ERR_INVALID_MESSAGE",
      );
    }
    return parsed.data;
  }
}
