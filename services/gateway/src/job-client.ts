import {
  HandoffError,
  isTerminal,
  type JobEnvelope,
  JobRecord,
  StreamChunk,
  Subjects,
} from "@handoff/contracts";
import { JobStore, publishJob, recordFromEnvelope } from "@handoff/mesh";
import { type JetStreamClient, jetstream } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";

export interface RunOptions {
  /** Receives the answer's tokens as the answering stage relays them. */
  onChunk?: (chunk: StreamChunk) => void;
  /** Stops waiting (the job itself goes on), e.g. when the client hangs up. */
  signal?: AbortSignal;
}

export interface JobClientOptions {
  /** How often a waiting request checks the job record, in case it missed the live result. */
  pollIntervalMs?: number;
}

/**
 * Submits jobs to the mesh and waits for their outcome: the live result on
 * `handoff.v1.results.<jobId>` (core NATS, fast), backed by the KV record (durable), so a result
 * published while this gateway was reconnecting is still found.
 */
export class JobClient {
  readonly store: JobStore;
  readonly #js: JetStreamClient;
  readonly #pollMs: number;

  constructor(
    private readonly nc: NatsConnection,
    kv: KV,
    options: JobClientOptions = {},
  ) {
    this.store = new JobStore(kv);
    this.#js = jetstream(nc);
    this.#pollMs = options.pollIntervalMs ?? 2_000;
  }

  /** Records the job as queued and publishes it to the first stage of its plan. */
  async submit(envelope: JobEnvelope, traceId: string | undefined): Promise<void> {
    const first = envelope.plan[0];
    if (!first) throw new HandoffError("HANDOFF_ERR_INTERNAL", "job has an empty plan");
    if (!(await this.store.create(recordFromEnvelope(envelope, "queued", traceId, first)))) {
      throw new HandoffError("HANDOFF_ERR_INTERNAL", `job id ${envelope.id} is already taken`);
    }
    await publishJob(this.#js, envelope, first);
  }

  /**
   * Submits and waits until the job finishes or its deadline passes. Resolves to the terminal
   * record, or undefined at the deadline (or when `signal` aborts): the job may still finish
   * later, and its record will say. With `onChunk`, streamed answer tokens arrive as they come.
   */
  async run(
    envelope: JobEnvelope,
    traceId: string | undefined,
    options: RunOptions = {},
  ): Promise<JobRecord | undefined> {
    // Subscribe before publishing, so even the fastest answer cannot slip past.
    const results = this.nc.subscribe(Subjects.result(envelope.id), { max: 1 });
    const chunks = options.onChunk ? this.nc.subscribe(Subjects.stream(envelope.id)) : undefined;
    const deadline = Date.parse(envelope.budget.deadline);
    let timer: NodeJS.Timeout | undefined;
    let poller: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    try {
      await this.submit(envelope, traceId);
      return await new Promise<JobRecord | undefined>((resolve, reject) => {
        timer = setTimeout(() => resolve(undefined), Math.max(0, deadline - Date.now()));
        onAbort = () => resolve(undefined);
        options.signal?.addEventListener("abort", onAbort, { once: true });
        poller = setInterval(() => {
          this.store.get(envelope.id).then(
            (record) => {
              if (record && isTerminal(record.status)) resolve(record);
            },
            () => undefined, // A failed poll is retried on the next tick; the live path goes on.
          );
        }, this.#pollMs);
        void (async () => {
          for await (const msg of results) {
            const parsed = JobRecord.safeParse(msg.json());
            if (parsed.success) resolve(parsed.data);
            else {
              reject(
                HandoffError.validation(
                  `result for job ${envelope.id}`,
                  parsed.error,
                  "HANDOFF_ERR_INVALID_MESSAGE",
                ),
              );
            }
          }
        })().catch(reject);
        if (chunks && options.onChunk) {
          const onChunk = options.onChunk;
          void (async () => {
            for await (const msg of chunks) {
              const parsed = StreamChunk.safeParse(msg.json());
              // A broken chunk costs the client some text, not the answer: the record has it all.
              if (parsed.success) onChunk(parsed.data);
            }
          })().catch(() => undefined);
        }
      });
    } finally {
      clearTimeout(timer);
      clearInterval(poller);
      if (onAbort) options.signal?.removeEventListener("abort", onAbort);
      results.unsubscribe();
      chunks?.unsubscribe();
    }
  }
}
