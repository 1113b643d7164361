import {
  HandoffError,
  isTerminal,
  type JobEnvelope,
  JobRecord,
  StreamChunk,
  Subjects,
} from "@handoff/contracts";
import { type JetStreamClient, jetstream } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { Msg, NatsConnection } from "@nats-io/nats-core";
import type { Logger } from "pino";
import { publishRecordEvent } from "./job-events.js";
import { JobStore, recordFromEnvelope } from "./job-store.js";
import { publishJob } from "./publish.js";
import { MeshSigner } from "./signing.js";
import { checkJobFits, failUnpublished, unavailable } from "./submit-guards.js";
import { type PersistRetry, retryTransient } from "./transient.js";

export interface RunOptions {
  /** Receives the answer's tokens as the answering stage relays them. */
  onChunk?: (chunk: StreamChunk) => void;
  /** Stops waiting (the job itself goes on), e.g. when the client hangs up. */
  signal?: AbortSignal;
}

export interface JobClientOptions {
  /** How often a waiting request checks the job record, in case it missed the live result. */
  pollIntervalMs?: number;
  /** Signs submitted jobs and checks results and chunks; default: signing off. */
  signer?: MeshSigner;
  /** Where dropped (unparsable, misaddressed or unsigned) results and chunks are reported. */
  logger?: Logger;
}

/** How long a submission keeps trying while NATS is away, at most (and never past the deadline). */
const SUBMIT_RETRY_MS = 30_000;

/** Why a message on a job's result or stream subject was not taken. */
type Refusal = { kind: "result" | "chunk"; reason: string };

/**
 * Submits jobs to the mesh and waits for their outcome: the live result on
 * `handoff.v1.results.<jobId>` (core NATS, fast), backed by the KV record (durable), so a result
 * published while this gateway was reconnecting is still found.
 */
export class JobClient {
  readonly store: JobStore;
  readonly #js: JetStreamClient;
  readonly #pollMs: number;
  readonly #signer: MeshSigner;
  readonly #logger: Logger | undefined;
  /** Messages dropped since start, by kind: for stats and tests. */
  readonly dropped = { result: 0, chunk: 0 };

  constructor(
    /** The connection jobs are submitted on (and the gateway's buckets opened from). */
    readonly nc: NatsConnection,
    kv: KV,
    options: JobClientOptions = {},
  ) {
    this.store = new JobStore(kv);
    this.#js = jetstream(nc);
    this.#pollMs = options.pollIntervalMs ?? 2_000;
    this.#signer = options.signer ?? MeshSigner.disabled();
    this.#logger = options.logger;
  }

  /**
   * Records the job as queued and publishes it to the first stage of its plan. A job too large
   * for one NATS message is refused (413) before anything is stored; a publish that fails marks
   * the new record failed, so no record waits `queued` for a job nobody has (503, retryable).
   */
  async submit(envelope: JobEnvelope, traceId: string | undefined): Promise<void> {
    if (!(await this.submitNew(envelope, traceId))) {
      throw new HandoffError("HANDOFF_ERR_INTERNAL", `job id ${envelope.id} is already taken`);
    }
  }

  /**
   * {@link submit}, for a job whose id its publisher chose: false, and nothing published, when a
   * job with that id already exists (a request sent twice). The job's `queued` event goes out with
   * it, unless the caller published its own (`queuedEvent: false`).
   */
  async submitNew(
    envelope: JobEnvelope,
    traceId: string | undefined,
    options: { queuedEvent?: boolean } = {},
  ): Promise<boolean> {
    const first = envelope.plan[0];
    if (!first) throw new HandoffError("HANDOFF_ERR_INTERNAL", "job has an empty plan");
    const record = recordFromEnvelope(envelope, "queued", traceId, first);
    checkJobFits(envelope, record, this.nc.info?.max_payload);
    // NATS may be away for a moment (a restart, a stream leader being elected): both writes are
    // retried, within the job's deadline, before the client is told to try again.
    const retry = this.#submitRetry(envelope);
    let attempts = 0;
    let created: boolean;
    try {
      created = await retryTransient(() => {
        attempts++;
        return this.store.create(record);
      }, retry);
    } catch (error) {
      throw unavailable("the job store is unavailable; try again", error);
    }
    // A retried create that finds the record found its own first attempt.
    if (!created && attempts === 1) return false;
    const announce = options.queuedEvent ?? true;
    try {
      // The same message ids on every attempt: a publish that landed unseen is not stored twice.
      // The event leaves first, so a backend sees the job queued before anything runs it.
      await retryTransient(
        () =>
          Promise.all([
            announce && publishRecordEvent(this.#js, record, this.#signer),
            publishJob(this.#js, envelope, first, this.#signer),
          ]),
        retry,
      );
    } catch (error) {
      throw await failUnpublished(this.store, record, error, (failed) =>
        publishRecordEvent(this.#js, failed, this.#signer),
      );
    }
    return true;
  }

  #submitRetry(envelope: JobEnvelope): PersistRetry {
    const untilDeadline = Date.parse(envelope.budget.deadline) - Date.now();
    return {
      limitMs: Math.max(0, Math.min(SUBMIT_RETRY_MS, untilDeadline)),
      onRetry: (error, delay) =>
        this.#logger?.warn(
          { job_id: envelope.id, err: error, retry_in_ms: delay },
          "NATS is unavailable; retrying the job's submission",
        ),
    };
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
    // Subscribe before publishing, so even the fastest answer cannot slip past. No `max`: a forged
    // message must not use up the subscription before the real answer comes.
    const results = this.nc.subscribe(Subjects.result(envelope.id));
    const chunks = options.onChunk ? this.nc.subscribe(Subjects.stream(envelope.id)) : undefined;
    const deadline = Date.parse(envelope.budget.deadline);
    let timer: NodeJS.Timeout | undefined;
    let poller: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    try {
      await this.submit(envelope, traceId);
      return await new Promise<JobRecord | undefined>((resolve, reject) => {
        // At the deadline the job is over: its record says so at once (unless it just ended).
        timer = setTimeout(
          () => this.#expire(envelope).then(resolve, () => resolve(undefined)),
          Math.max(0, deadline - Date.now()),
        );
        onAbort = () => resolve(undefined);
        options.signal?.addEventListener("abort", onAbort, { once: true });
        // A client that left before (or while) the job was submitted: nobody waits for it.
        if (options.signal?.aborted) resolve(undefined);
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
            const record = this.#accept(msg, envelope.id, "result", JobRecord);
            if (record && isTerminal(record.status)) resolve(record);
          }
        })().catch(reject);
        if (chunks && options.onChunk) {
          const onChunk = options.onChunk;
          void (async () => {
            for await (const msg of chunks) {
              const chunk = this.#accept(msg, envelope.id, "chunk", StreamChunk);
              if (chunk) onChunk(chunk);
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

  /**
   * Fails a job that passed its deadline, unless it has ended, and returns its record as it now
   * stands. A stage still working on it finds the record ended and stops there.
   */
  async #expire(envelope: JobEnvelope): Promise<JobRecord | undefined> {
    const failed = await this.store.fail(envelope.id, undefined, {
      code: "HANDOFF_ERR_DEADLINE",
      message: `job ${envelope.id} passed its deadline (${envelope.budget.deadline}) before it finished`,
      retryable: false,
    });
    const record = await this.store.get(envelope.id);
    if (failed && record) await publishRecordEvent(this.#js, record, this.#signer);
    return record;
  }

  /**
   * Takes a message on a job's result or stream subject only if it is signed by the mesh (when a
   * signing key is set), parses, and names the job waited for. Anything else is counted, logged
   * and dropped: it never answers or fails the job, whose KV record stays the authority.
   */
  #accept<T extends { id?: string; job_id?: string }>(
    msg: Msg,
    jobId: string,
    kind: Refusal["kind"],
    schema: { safeParse(value: unknown): { success: true; data: T } | { success: false } },
  ): T | undefined {
    const refuse = (reason: string): undefined => {
      this.dropped[kind]++;
      this.#logger?.warn(
        { job_id: jobId, subject: msg.subject, dropped: kind },
        `dropped a ${kind} message for job ${jobId}: ${reason}`,
      );
      return undefined;
    };
    const verdict = this.#signer.verify(msg.subject, msg.data, msg.headers);
    if (verdict === "unsigned") return refuse("it carries no mesh signature");
    if (verdict === "forged") return refuse("its signature was not made by an accepted key");
    let value: unknown;
    try {
      value = JSON.parse(msg.string());
    } catch {
      return refuse("it is not JSON");
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) return refuse(`it is not a valid ${kind}`);
    const named = parsed.data.id ?? parsed.data.job_id;
    if (named !== jobId) return refuse("it names another job");
    return parsed.data;
  }
}
