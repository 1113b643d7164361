import {
  type HandoffError,
  Headers,
  isTerminal,
  type JobEnvelope,
  type JobRecord,
  type Stage,
  Subjects,
} from "@handoff/contracts";
import { type JetStreamClient, jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { publishRecordEvent } from "./job-events.js";
import { type JobStore, type RecordSnapshot, recordFromEnvelope } from "./job-store.js";
import { MeshSigner } from "./signing.js";
import { tracedHeaders, withProducerSpan } from "./trace-context.js";

/**
 * How a job's progress and end become visible: the KV record (durable, for `GET /v1/jobs/:id` and
 * for a gateway that missed the live message), the same record published on
 * `handoff.v1.results.<jobId>` for the gateway waiting on it, and the job's event on
 * `handoff.v1.events.<tenant>.<jobId>` for backends that follow it.
 */
export class JobOutcomes {
  readonly #js: JetStreamClient;

  constructor(
    private readonly nc: NatsConnection,
    private readonly store: JobStore,
    private readonly signer: MeshSigner = MeshSigner.disabled(),
  ) {
    this.#js = jetstream(nc);
  }

  /**
   * The job moved on to `next`. `from`, the record as the caller read it, saves a read: the write
   * compare-and-sets against it (and reads only if the record has changed since).
   */
  async progressed(
    envelope: JobEnvelope,
    next: Stage,
    traceId: string | undefined,
    from?: RecordSnapshot,
  ): Promise<JobRecord | undefined> {
    const record = recordFromEnvelope(envelope, "running", traceId, next);
    return (await this.store.save(record, from)) ? record : undefined;
  }

  /**
   * Publishes the event of a record just written (`running`, after {@link progressed}): before
   * the caller acks, so a crash in between means a redelivery that publishes it again.
   */
  published(record: JobRecord): Promise<void> {
    return publishRecordEvent(this.#js, record, this.signer);
  }

  /** The job ended, with `result` or `error` set on the envelope; `from` as for `progressed`. */
  async finished(envelope: JobEnvelope, traceId: string | undefined, from?: RecordSnapshot) {
    const status = envelope.error ? "failed" : "succeeded";
    await this.#publish(recordFromEnvelope(envelope, status, traceId), from);
  }

  /**
   * An authentic payload too broken to read as an envelope still named its job: fail that job, so
   * its client gets the reason now instead of a timeout. The stored record keeps what it knew of
   * the job. (The runner never calls this for a message it cannot authenticate: anyone could name
   * a live job.)
   */
  async unreadable(jobId: string, stage: Stage, error: HandoffError, traceId: string | undefined) {
    const failed = await this.store.fail(
      jobId,
      stage,
      { code: error.code, message: error.message, retryable: false, stage },
      traceId,
    );
    if (!failed) return;
    const record = await this.store.get(jobId);
    if (record) await this.announce(record);
  }

  /**
   * Publishes a finished job's record for the gateway waiting on it, and its event (again, after a
   * redelivery: the event is stored once).
   */
  async announce(record: JobRecord) {
    const subject = Subjects.result(record.id);
    // Both publishes start in this tick, the result first: nats.js sends them in one write.
    const sent = withProducerSpan(
      subject,
      { "messaging.message.conversation_id": record.id, "handoff.job.status": record.status },
      async () => {
        const payload = JSON.stringify(record);
        this.nc.publish(subject, payload, {
          headers: tracedHeaders(
            this.signer.sign(subject, payload, { [Headers.jobId]: record.id }),
          ),
        });
      },
    );
    await Promise.all([sent, this.published(record)]);
  }

  // The record is written before it is announced, so a gateway that misses the message finds it.
  async #publish(record: JobRecord, from: RecordSnapshot | undefined) {
    if (await this.store.save(record, from)) {
      await this.announce(record);
      return;
    }
    // A job already recorded as finished is not announced twice, but its event is published
    // again: this may be a retry after the write landed and the event did not (NATS went away in
    // between), and the events stream stores an event once.
    const stored = await this.store.get(record.id);
    if (stored && isTerminal(stored.status)) await this.published(stored);
  }
}
