import {
  HandoffError,
  isTerminal,
  type JobEnvelope,
  JobEnvelope as JobEnvelopeSchema,
  planStep,
  roundUsd,
  type Stage,
  type StreamChunk,
  Streams,
  Subjects,
  totalCost,
  Usage,
} from "@handoff/contracts";
import {
  type ConsumerMessages,
  type JetStreamClient,
  type JsMsg,
  jetstream,
} from "@nats-io/jetstream";
import type { KV, KvEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import { context, type Span, SpanKind } from "@opentelemetry/api";
import type { Logger } from "pino";
import { decodeEnvelope, encodeEnvelope } from "./codec.js";
import { publishDeadLetter, salvageJobId, storedMessage } from "./dead-letters.js";
import { JobStore, type RecordSnapshot } from "./job-store.js";
import { MaxDeliveriesWatcher } from "./max-deliveries.js";
import { JobOutcomes } from "./outcomes.js";
import { publishJob } from "./publish.js";
import { MeshSigner } from "./signing.js";
import {
  duplicateWindowMs,
  ensureStageConsumer,
  ensureStageOutputs,
  type Topology,
  type TopologyOptions,
} from "./topology.js";
import {
  activeTraceId,
  extractContext,
  markError,
  tracedHeaders,
  tracer,
} from "./trace-context.js";
import { retryTransient } from "./transient.js";

/** What a stage handler gets besides the envelope. */
export interface StageContext {
  stage: Stage;
  /** The service instance id (as registered with the NATS service API). */
  instance: string;
  /** JetStream delivery count: above 1 when the job is being retried. */
  delivery: number;
  /** Aborted at the job's deadline, or when a draining runner runs out of patience. */
  signal: AbortSignal;
  logger: Logger;
  /**
   * Set when the client streams the answer: pass it as a model call's `onEvent`, and the call's
   * text reaches the client as it is produced. Undefined otherwise.
   */
  relay: ((event: StreamedOutput, model: string) => void) | undefined;
}

/** The part of a model's streamed output the runner relays: text deltas. */
export type StreamedOutput = { type: "text"; delta: string } | { type: "tool_call" };

/**
 * A stage's logic: take the envelope, return it enriched. To end the job, set `result` (or
 * `error`); to pass it on, leave both unset and the runner forwards it to the next stage of its
 * plan. Throw a retryable `HandoffError` to be redelivered later, a non-retryable one to fail
 * the job.
 */
export type StageHandler = (envelope: JobEnvelope, ctx: StageContext) => Promise<JobEnvelope>;

export interface StageRunnerOptions {
  nc: NatsConnection;
  topology: Topology;
  stage: Stage;
  handler: StageHandler;
  instance: string;
  logger: Logger;
  limits: TopologyOptions & { maxHops: number };
  /** Jobs processed at once by this replica. */
  concurrency: number;
  /** Delay before a failed delivery is retried. */
  backoffMs?: (delivery: number) => number;
  /** How long `stop()` waits for in-flight jobs before aborting them back to the queue. */
  drainTimeoutMs?: number;
  /** Signs what the stage publishes and checks what it receives; default: signing off. */
  signer?: MeshSigner;
}

export interface RunnerStats {
  received: number;
  forwarded: number;
  finished: number;
  failed: number;
  retried: number;
  dead_lettered: number;
  /** Messages dropped because they were unsigned or badly signed. */
  rejected: number;
  /**
   * Redeliveries of work this stage had already done (or of a job that had ended): acked after
   * re-sending what the first delivery produced, without running the handler again.
   */
  replayed: number;
  in_flight: number;
}

/** Exponential backoff from half a second to 30 seconds, with jitter against thundering herds. */
export function defaultBackoff(delivery: number): number {
  const base = Math.min(30_000, 500 * 2 ** Math.max(0, delivery - 1));
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

/** Codes that point at a bug or bad data rather than a bad request: kept for an operator. */
const DEAD_LETTER_CODES = new Set([
  "HANDOFF_ERR_INVALID_MESSAGE",
  "HANDOFF_ERR_HOP_LIMIT",
  "HANDOFF_ERR_INTERNAL",
  "HANDOFF_ERR_CONFIG",
]);

/**
 * Runs one stage: pulls jobs from the stage's durable consumer, decodes and validates them,
 * continues their trace, calls the handler with heartbeats, forwards or finishes the job, and only
 * then acks. It is the only place that decides ack, nak or terminate, and it decides from
 * `HandoffError.retryable` alone.
 */
export class StageRunner {
  readonly #o: StageRunnerOptions;
  readonly #js: JetStreamClient;
  readonly #outcomes: JobOutcomes;
  readonly #inFlight = new Set<Promise<void>>();
  readonly #abort = new AbortController();
  readonly #stats: RunnerStats = {
    received: 0,
    forwarded: 0,
    finished: 0,
    failed: 0,
    retried: 0,
    dead_lettered: 0,
    rejected: 0,
    replayed: 0,
    in_flight: 0,
  };
  readonly #signer: MeshSigner;
  readonly #store: JobStore;
  /** Deliveries being worked on, by `<job>.<step>`: bounded by the runner's concurrency. */
  readonly #busy = new Map<string, Promise<void>>();
  /** Held writes waiting for NATS to come back. */
  #reconnect: { promise: Promise<void>; resolve: () => void } | undefined;
  #statuses: { stop?: () => void } | undefined;
  #outputs: KV | undefined;
  #watcher: MaxDeliveriesWatcher | undefined;
  #stopping = false;
  #loop: Promise<void> | undefined;
  #batch: ConsumerMessages | undefined;
  #slotFreed: (() => void) | undefined;

  constructor(options: StageRunnerOptions) {
    this.#o = options;
    this.#js = jetstream(options.nc);
    this.#signer = options.signer ?? MeshSigner.disabled();
    this.#store = new JobStore(options.topology.jobs);
    this.#outcomes = new JobOutcomes(options.nc, this.#store, this.#signer);
  }

  get subject(): string {
    return Subjects.job(this.#o.stage);
  }

  stats(): RunnerStats {
    return { ...this.#stats, in_flight: this.#inFlight.size };
  }

  async start(): Promise<void> {
    await ensureStageConsumer(this.#o.topology.jsm, this.#o.stage, this.#o.limits);
    this.#outputs = await ensureStageOutputs(this.#o.nc, this.#o.limits);
    this.#watcher = new MaxDeliveriesWatcher({
      nc: this.#o.nc,
      jsm: this.#o.topology.jsm,
      js: this.#js,
      stage: this.#o.stage,
      outcomes: this.#outcomes,
      signer: this.#signer,
      logger: this.#o.logger,
      onDeadLetter: () => {
        this.#stats.dead_lettered++;
      },
    });
    this.#watcher.start();
    const consumer = await this.#js.consumers.get(Streams.jobs, this.#o.stage);
    void this.#watchConnection().catch(() => {});
    this.#loop = this.#pull(consumer);
  }

  /**
   * Drains: stops pulling, lets in-flight jobs finish and ack, and after the drain timeout aborts
   * the stragglers, which go back to the queue (nak) for another replica.
   */
  async stop(): Promise<void> {
    if (this.#stopping) return this.#loop;
    this.#stopping = true;
    this.#batch?.stop();
    this.#slotFreed?.();
    await this.#loop;
    const all = Promise.allSettled([...this.#inFlight]);
    const timeout = this.#o.drainTimeoutMs ?? 25_000;
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<"expired">((resolve) => {
      timer = setTimeout(() => resolve("expired"), timeout);
    });
    if ((await Promise.race([all, expired])) === "expired") {
      this.#o.logger.warn({ in_flight: this.#inFlight.size }, "drain timed out; returning jobs");
      this.#abort.abort(new Error("runner stopped"));
      await all;
    }
    clearTimeout(timer);
    this.#statuses?.stop?.();
    await this.#watcher?.stop();
  }

  async #pull(consumer: Awaited<ReturnType<JetStreamClient["consumers"]["get"]>>): Promise<void> {
    while (!this.#stopping) {
      const free = this.#o.concurrency - this.#inFlight.size;
      if (free <= 0) {
        await new Promise<void>((resolve) => {
          this.#slotFreed = resolve;
        });
        continue;
      }
      try {
        // Ask for exactly as many jobs as there are free slots: nothing waits in a local buffer
        // while its ack timer runs.
        this.#batch = await consumer.fetch({ max_messages: free, expires: 5_000 });
        for await (const msg of this.#batch) {
          if (this.#stopping) {
            msg.nak();
            continue;
          }
          this.#track(this.#process(msg));
        }
      } catch (error) {
        if (this.#stopping) break;
        this.#o.logger.warn({ err: error }, "pull failed; retrying");
        await new Promise((resolve) => setTimeout(resolve, 1_000));
      } finally {
        this.#batch = undefined;
      }
    }
  }

  #track(work: Promise<void>): void {
    this.#inFlight.add(work);
    void work.finally(() => {
      this.#inFlight.delete(work);
      const wake = this.#slotFreed;
      this.#slotFreed = undefined;
      wake?.();
    });
  }

  async #process(msg: JsMsg): Promise<void> {
    this.#stats.received++;
    const parent = extractContext(msg.headers);
    await context.with(parent, () =>
      tracer.startActiveSpan(
        `process ${msg.subject}`,
        {
          kind: SpanKind.CONSUMER,
          attributes: {
            "messaging.system": "nats",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": msg.subject,
            "messaging.consumer.group.name": this.#o.stage,
            "messaging.message.id": msg.headers?.get("Nats-Msg-Id") ?? "",
            "handoff.stage": this.#o.stage,
            "handoff.delivery": msg.info.deliveryCount,
            "handoff.instance": this.#o.instance,
          },
        },
        async (span) => {
          try {
            await this.#handle(msg, span);
          } catch (error) {
            // Only transport trouble lands here (NATS down mid-way): the job is redelivered.
            markError(span, error);
            this.#o.logger.error({ err: error }, "job processing failed; will be redelivered");
            msg.nak(this.#backoff(msg.info.deliveryCount));
          } finally {
            span.end();
          }
        },
      ),
    );
  }

  async #handle(msg: JsMsg, span: Span): Promise<void> {
    const { stage } = this.#o;
    const delivery = msg.info.deliveryCount;
    const verdict = this.#signer.verify(msg.subject, msg.data, msg.headers);
    span.setAttribute("handoff.signature", verdict);
    if (verdict === "unsigned" || verdict === "forged") {
      await this.#reject(msg, verdict, span);
      return;
    }
    const decoded = decodeEnvelope(msg.string(), `job envelope on ${msg.subject}`);
    if (!decoded.ok) {
      // Only a message the mesh itself signed may fail the job it names.
      const jobId = verdict === "authentic" ? salvageJobId(msg.string()) : undefined;
      markError(span, decoded.error);
      await publishDeadLetter(this.#js, {
        stage,
        msg: storedMessage(msg),
        reason: "invalid_payload",
        error: decoded.error,
        issues: decoded.issues,
        ...(jobId ? { jobId } : {}),
      });
      this.#stats.dead_lettered++;
      if (jobId) await this.#outcomes.unreadable(jobId, stage, decoded.error, activeTraceId());
      this.#o.logger.error(
        { job_id: jobId, issues: decoded.issues },
        `terminated invalid payload: ${decoded.error.message}`,
      );
      // The reason travels in the dead letter: nats-server 2.9 ignores a `+TERM` that carries one.
      msg.term();
      return;
    }

    const input = decoded.envelope;
    const step = planStep(input, stage);
    span.setAttributes({ "handoff.job.id": input.id, "handoff.step": step });
    const logger = this.#o.logger.child({ job_id: input.id, stage, step, delivery });
    // One delivery of a job's visit at a time in this process: a redelivery (its ack wait ran
    // out while NATS was away) or a copy waits for the delivery under way, then finds its output.
    const key = outputKey(input.id, step);
    for (let busy = this.#busy.get(key); busy; busy = this.#busy.get(key)) {
      span.setAttribute("handoff.waited_for_delivery", true);
      logger.info("another delivery of this job is under way here; waiting for it");
      await this.#keepAlive(msg, busy);
    }
    let release = () => {};
    const done = new Promise<void>((resolve) => {
      release = resolve;
    });
    this.#busy.set(key, done);
    try {
      await this.#work(msg, input, step, span, logger);
    } finally {
      this.#busy.delete(key);
      release();
    }
  }

  async #work(
    msg: JsMsg,
    input: JobEnvelope,
    step: number,
    span: Span,
    logger: Logger,
  ): Promise<void> {
    const { stage } = this.#o;
    const delivery = msg.info.deliveryCount;
    const seen = await this.#replay(input, step, this.#mayRepeat(msg), span, logger);
    if (seen === "replayed") {
      this.#ack(msg);
      return;
    }
    const refused = this.#refuse(input, step);
    if (refused) {
      await this.#fail(msg, input, refused, span, logger);
      return;
    }
    if (delivery > this.#o.limits.maxDeliveries) {
      // The last allowed delivery died without an answer (a crash, a drain, a lost connection):
      // this extra one, which the consumer allows for exactly this, ends the job.
      const exhausted = new HandoffError(
        "HANDOFF_ERR_RETRIES_EXHAUSTED",
        `${stage} finished none of the ${delivery - 1} deliveries of job ${input.id}: the last ended in a crash, a drain or a lost connection`,
      );
      await this.#fail(msg, input, exhausted, span, logger, "max_deliveries");
      return;
    }

    const startedAt = new Date();
    // The handler works on a copy; what it spent stays on the copy even when it throws.
    const working = workingCopy(input);
    let output: JobEnvelope;
    try {
      output = await this.#runHandler(msg, working, logger);
    } catch (thrown) {
      const error = this.#classify(thrown, input);
      if (this.#abort.signal.aborted) {
        // Draining and out of time: hand the job to another replica without spending a retry.
        logger.warn("returning job to the queue on shutdown");
        msg.nak();
        return;
      }
      if (error.retryable) {
        if (delivery < this.#o.limits.maxDeliveries) {
          const delay = this.#backoff(delivery);
          this.#stats.retried++;
          span.setAttribute("handoff.retry_in_ms", delay);
          logger.warn(
            { err: error, retry_in_ms: delay },
            `stage failed, will retry: ${error.message}`,
          );
          msg.nak(delay);
          return;
        }
        const exhausted = new HandoffError(
          "HANDOFF_ERR_RETRIES_EXHAUSTED",
          `${stage} failed on all ${delivery} deliveries; last error: ${error.message}`,
          { cause: error },
        );
        await this.#fail(msg, spent(input, working), exhausted, span, logger, "max_deliveries");
        return;
      }
      await this.#fail(msg, spent(input, working), error, span, logger);
      return;
    }

    const checked = JobEnvelopeSchema.safeParse(output);
    if (!checked.success) {
      const error = HandoffError.validation(
        `${stage} output`,
        checked.error,
        "HANDOFF_ERR_INTERNAL",
      );
      await this.#fail(msg, input, error, span, logger);
      return;
    }
    const out = checked.data;
    span.setAttributes({
      "handoff.stage.cost_usd": roundUsd(totalCost(out.usage) - totalCost(input.usage)),
      "handoff.job.cost_usd": totalCost(out.usage),
    });
    out.hops.push({
      stage,
      instance: this.#o.instance,
      started_at: startedAt.toISOString(),
      finished_at: new Date().toISOString(),
      delivery,
    });

    const next = out.result || out.error ? undefined : out.plan[step + 1];
    if (!next && !out.result && !out.error) {
      const error = new HandoffError(
        "HANDOFF_ERR_INTERNAL",
        `${stage} ended the plan without an answer`,
      );
      await this.#fail(msg, spent(input, out), error, span, logger);
      return;
    }
    if (next) out.step = step + 1;
    // What this visit produced is kept before anyone sees it: a redelivery re-sends it instead of
    // running the handler (and paying for its model calls) again. While NATS is away (a restart,
    // a leader election) the output is held here and written once it is back.
    let attempts = 0;
    await retryTransient(
      async () => {
        // Back from an outage: claim the delivery again first, so it is not handed elsewhere.
        if (attempts++ > 0) this.#heartbeat(msg);
        // The record as read at the start of this delivery spares the write a read; after an
        // outage the write reads afresh.
        const record = attempts === 1 ? seen : undefined;
        // A job's last step keeps no copy when it read the job's record: the ended record, which
        // holds the answer, is what a redelivery finds (and re-announces) instead of running the
        // handler. Without a readable record to end, the copy is kept as for a forward.
        if (next || !seen?.record) await this.#remember(out, step);
        await this.#send(out, next, logger, record);
      },
      {
        limitMs: duplicateWindowMs(this.#o.limits),
        signal: this.#abort.signal,
        wake: () => this.#reconnected(),
        onRetry: (error, delay) => {
          logger.warn(
            { err: error, retry_in_ms: delay },
            "NATS is unavailable; holding the stage's output and retrying",
          );
        },
      },
    );
    if (next) this.#stats.forwarded++;
    else if (out.error) this.#stats.failed++;
    else this.#stats.finished++;
    this.#ack(msg);
  }

  /**
   * Forwards `out` to `next`, or records and announces its end. Record first, then forward: the
   * next stage cannot finish the job before this write lands, so the compare-and-set never loses
   * to it. Sending the same output twice is harmless: the forward carries the same dedupe id, and
   * a finished record is neither overwritten nor announced again.
   */
  async #send(
    out: JobEnvelope,
    next: Stage | undefined,
    logger: Logger,
    record?: RecordSnapshot,
  ): Promise<void> {
    if (next) {
      const written = await this.#outcomes.progressed(out, next, activeTraceId(), record);
      // The job's `running` event goes out first, then the forward: both before the ack.
      await Promise.all([
        written && this.#outcomes.published(written),
        publishJob(this.#js, out, next, this.#signer),
      ]);
      logger.info({ next }, `forwarded to ${next}`);
    } else {
      await this.#outcomes.finished(out, activeTraceId(), record);
      logger.info({ status: out.error ? "failed" : "succeeded" }, "job finished");
    }
  }

  async #remember(out: JobEnvelope, step: number): Promise<void> {
    if (!this.#outputs) throw new Error("the stage runner is not started");
    await this.#outputs.put(outputKey(out.id, step), encodeEnvelope(out));
  }

  /**
   * A delivery of work already done: the job has ended (its record says so), or this stage has
   * already produced its output for this position of the plan (a crash or a lost ack after the
   * forward; a server that lost its acknowledgements in a restart). Re-sends what was produced,
   * and reports "replayed": the caller acks without running the handler, so no model is paid
   * twice. Otherwise returns the job's record as read (undefined if unreadable), for the stage's
   * own write to compare-and-set against without reading it again.
   */
  async #replay(
    input: JobEnvelope,
    step: number,
    repeat: boolean,
    span: Span,
    logger: Logger,
  ): Promise<RecordSnapshot | "replayed" | undefined> {
    const [read, entry] = await this.#lookBack(input, step, repeat, logger);
    const record = read?.record;
    if (record && isTerminal(record.status)) {
      span.setAttribute("handoff.replayed", "ended");
      this.#stats.replayed++;
      logger.info({ status: record.status }, "the job has already ended; acked without running");
      await this.#outcomes.announce(record);
      return "replayed";
    }
    if (entry?.operation !== "PUT" || entry.length === 0) return read;
    const kept = decodeEnvelope(entry.string(), `${this.#o.stage} output of job ${input.id}`);
    if (!kept.ok) {
      logger.warn({ issues: kept.issues }, "the stage's kept output is unreadable; running again");
      return read;
    }
    const out = kept.envelope;
    const next = out.result || out.error ? undefined : out.plan[step + 1];
    span.setAttribute("handoff.replayed", next ? "forward" : "result");
    this.#stats.replayed++;
    logger.info("this stage already did this job's work; re-sending what it produced");
    await this.#send(out, next, logger, read);
    return "replayed";
  }

  /**
   * Whether a delivery may repeat an earlier one, whose process may have kept its output and died.
   * Its count says so above 1. But nats-server before 2.10.14 (nats-io/nats-server#5305) hands out
   * a redelivery it could not make at once (the ack wait ran out while only a dead client's pull
   * request waited) later as a first delivery, count 1. Such a delivery comes at least an ack wait
   * after the message was stored, so a message older than half the ack wait counts as a possible
   * repeat too: half leaves room for this host's clock and the server's to disagree.
   */
  #mayRepeat(msg: JsMsg): boolean {
    if (msg.info.deliveryCount > 1) return true;
    const storedMs = msg.info.timestampNanos / 1e6;
    return Date.now() - storedMs >= this.#o.limits.ackWaitMs / 2;
  }

  /**
   * Reads what a delivery needs to know before it runs: the job's record and, where this stage may
   * already have produced it, its kept output for `<job>.<step>`.
   *
   * A delivery that may repeat an earlier one ({@link StageRunner.#mayRepeat}) reads both at once:
   * the earlier one may have kept the output and died before it wrote the record. A fresh first
   * delivery reads the record alone, and the output only if the record is missing or unreadable,
   * or lists more hops than the envelope (a stage's write adds its hop): a first delivery of a
   * message whose visit has already been recorded is a copy published after the dedupe window, or
   * a message whose ack a restarted server lost. Any other fresh first delivery has no output to
   * find, since forwards carry a dedupe id for longer than a job's redeliveries last, and this
   * saves a request on every job's critical path.
   */
  async #lookBack(
    input: JobEnvelope,
    step: number,
    repeat: boolean,
    logger: Logger,
  ): Promise<[RecordSnapshot | undefined, KvEntry | null | undefined]> {
    const outputs = this.#outputs;
    if (!outputs) throw new Error("the stage runner is not started");
    const record = this.#store.read(input.id).catch((error: unknown) => {
      if (!(error instanceof HandoffError) || error.code !== "HANDOFF_ERR_INVALID_MESSAGE")
        throw error;
      logger.warn({ err: error }, "the job's record is unreadable; running the stage");
      return undefined;
    });
    const output = () => outputs.get(outputKey(input.id, step));
    if (repeat) return Promise.all([record, output()]);
    const read = await record;
    const stored = read?.record;
    if (stored && (isTerminal(stored.status) || stored.hops.length <= input.hops.length)) {
      return [read, undefined];
    }
    return [read, await output()];
  }

  /**
   * A message this stage cannot authenticate is kept for an operator (dead-lettered, with its
   * payload) and terminated; it fails no job, whatever job it names, and runs no handler.
   */
  async #reject(msg: JsMsg, verdict: "unsigned" | "forged", span: Span): Promise<void> {
    const why =
      verdict === "unsigned"
        ? "carries no mesh signature"
        : "has a signature that no accepted key made";
    const error = new HandoffError(
      "HANDOFF_ERR_INVALID_MESSAGE",
      `message ${msg.info.streamSequence} on ${msg.subject} ${why}; dropped`,
    );
    markError(span, error);
    await publishDeadLetter(this.#js, {
      stage: this.#o.stage,
      msg: storedMessage(msg),
      reason: "unauthentic",
      error,
    });
    this.#stats.rejected++;
    this.#stats.dead_lettered++;
    this.#o.logger.warn(
      { subject: msg.subject, stream_sequence: msg.info.streamSequence, signature: verdict },
      error.message,
    );
    msg.term();
  }

  /** Checks that make running the handler pointless or harmful. */
  #refuse(envelope: JobEnvelope, step: number): HandoffError | undefined {
    const { stage } = this.#o;
    if (envelope.plan[step] !== stage) {
      return new HandoffError(
        "HANDOFF_ERR_INVALID_MESSAGE",
        envelope.step === undefined
          ? `job ${envelope.id} reached ${stage}, which its plan [${envelope.plan.join(", ")}] does not name`
          : `job ${envelope.id} reached ${stage} at step ${step} of its plan [${envelope.plan.join(", ")}], which names another stage there`,
      );
    }
    if (envelope.hops.length >= this.#o.limits.maxHops) {
      return new HandoffError(
        "HANDOFF_ERR_HOP_LIMIT",
        `job ${envelope.id} made ${envelope.hops.length} hops, the limit is ${this.#o.limits.maxHops}`,
      );
    }
    if (Date.parse(envelope.budget.deadline) <= Date.now()) {
      return new HandoffError(
        "HANDOFF_ERR_DEADLINE",
        `job ${envelope.id} passed its deadline (${envelope.budget.deadline}) before ${stage} started`,
      );
    }
    return undefined;
  }

  async #runHandler(msg: JsMsg, envelope: JobEnvelope, logger: Logger): Promise<JobEnvelope> {
    const remaining = Math.max(1, Date.parse(envelope.budget.deadline) - Date.now());
    // Aborted at the deadline or when a draining runner gives up. Not `AbortSignal.timeout`: its
    // timer would outlive the job until the deadline (a minute by default), keeping the delivery's
    // span and context reachable; at hundreds of jobs a second, most of a stage's heap.
    const deadline = new AbortController();
    const timer = setTimeout(
      () => deadline.abort(new DOMException("the job reached its deadline", "TimeoutError")),
      remaining,
    );
    const stop = () => deadline.abort(this.#abort.signal.reason);
    if (this.#abort.signal.aborted) stop();
    else this.#abort.signal.addEventListener("abort", stop, { once: true });
    const signal = deadline.signal;
    // Tell JetStream the job is alive well inside its ack wait, however long the model takes.
    const beat = setInterval(() => msg.working(), Math.max(250, this.#o.limits.ackWaitMs / 3));
    try {
      return await this.#o.handler(envelope, {
        stage: this.#o.stage,
        instance: this.#o.instance,
        delivery: msg.info.deliveryCount,
        signal,
        logger,
        relay: envelope.input.stream ? this.#relay(envelope.id, msg.info.deliveryCount) : undefined,
      });
    } finally {
      clearInterval(beat);
      clearTimeout(timer);
      this.#abort.signal.removeEventListener("abort", stop);
    }
  }

  /** Publishes text deltas on `handoff.v1.stream.<jobId>`, numbered, for the waiting gateway. */
  #relay(jobId: string, delivery: number) {
    const subject = Subjects.stream(jobId);
    let seq = 0;
    return (event: StreamedOutput, model: string) => {
      if (event.type !== "text" || event.delta === "") return;
      const chunk: StreamChunk = {
        job_id: jobId,
        stage: this.#o.stage,
        delivery,
        seq: seq++,
        model,
        delta: event.delta,
      };
      const payload = JSON.stringify(chunk);
      const headers = this.#signer.sign(subject, payload);
      this.#o.nc.publish(
        subject,
        payload,
        Object.keys(headers).length > 0 ? { headers: tracedHeaders(headers) } : undefined,
      );
    };
  }

  #classify(thrown: unknown, envelope: JobEnvelope): HandoffError {
    // Past the deadline, nothing is worth a retry: whatever went wrong, the job is late.
    const late = !(thrown instanceof HandoffError) || thrown.retryable;
    if (Date.parse(envelope.budget.deadline) <= Date.now() && late) {
      return new HandoffError(
        "HANDOFF_ERR_DEADLINE",
        `job ${envelope.id} ran past its deadline in ${this.#o.stage}`,
        { cause: thrown },
      );
    }
    return HandoffError.from(thrown);
  }

  /** Ends the job with an error the client will see; keeps the payload if an operator should. */
  async #fail(
    msg: JsMsg,
    input: JobEnvelope,
    error: HandoffError,
    span: Span,
    logger: Logger,
    reason: "max_deliveries" | "failed" = "failed",
  ): Promise<void> {
    markError(span, error);
    if (reason === "max_deliveries" || DEAD_LETTER_CODES.has(error.code)) {
      await publishDeadLetter(this.#js, {
        stage: this.#o.stage,
        msg: storedMessage(msg),
        reason,
        error,
        jobId: input.id,
      });
      this.#stats.dead_lettered++;
    }
    const failed: JobEnvelope = {
      ...input,
      error: { code: error.code, message: error.message, retryable: false, stage: this.#o.stage },
    };
    await this.#outcomes.finished(failed, activeTraceId());
    this.#stats.failed++;
    logger.error({ err: error, code: error.code }, `job failed: ${error.message}`);
    if (reason === "max_deliveries") msg.term();
    else this.#ack(msg);
  }

  /** Resolves at the connection's next reconnect. */
  #reconnected(): Promise<void> {
    if (!this.#reconnect) {
      let resolve = () => {};
      const promise = new Promise<void>((r) => {
        resolve = r;
      });
      this.#reconnect = { promise, resolve };
    }
    return this.#reconnect.promise;
  }

  async #watchConnection(): Promise<void> {
    // nats.js hands out a queued iterator; stopping it ends this loop when the runner stops.
    const statuses = this.#o.nc.status() as AsyncIterable<{ type: string }> & { stop?: () => void };
    this.#statuses = statuses;
    for await (const status of statuses) {
      if (status.type !== "reconnect") continue;
      const waiting = this.#reconnect;
      this.#reconnect = undefined;
      waiting?.resolve();
    }
  }

  /** Tells JetStream the delivery is alive; while disconnected there is no one to tell. */
  #heartbeat(msg: JsMsg): void {
    try {
      msg.working();
    } catch {
      // Closed or reconnecting: the next beat, or the redelivery, takes it from here.
    }
  }

  /** Waits for `work`, keeping `msg` alive meanwhile. */
  async #keepAlive(msg: JsMsg, work: Promise<void>): Promise<void> {
    const beat = setInterval(
      () => this.#heartbeat(msg),
      Math.max(250, this.#o.limits.ackWaitMs / 3),
    );
    try {
      await work;
    } finally {
      clearInterval(beat);
    }
  }

  /**
   * Acks a delivery whose work is done and recorded. A plain ack, not a confirmed one: an ack
   * that is lost (NATS going away at that moment) means a redelivery, which finds the output or
   * the ended record and re-sends instead of running the handler; waiting for a confirmation
   * would cost a round trip on every job to learn nothing the redelivery does not handle.
   */
  #ack(msg: JsMsg): void {
    try {
      msg.ack();
    } catch {
      // Closed or reconnecting: the redelivery takes it from here.
    }
  }

  #backoff(delivery: number): number {
    return (this.#o.backoffMs ?? defaultBackoff)(delivery);
  }
}

/** The key of a stage's output for one job and plan position, in `Buckets.stageOutputs`. */
function outputKey(jobId: string, step: number): string {
  return `${jobId}.${step}`;
}

/**
 * The copy of `input` a handler works on: its own top-level fields and lists (plan, hops,
 * enrichments, usage, messages), which is what handlers change. Entries are shared, not cloned:
 * a deep copy of every envelope was 2 to 4% of a stage's CPU (bench/profile.md), and what the
 * runner keeps `input` for after a failure (the job's id, budget, usage and route) is in the
 * top-level fields and lists.
 */
function workingCopy(input: JobEnvelope): JobEnvelope {
  return {
    ...input,
    input: { ...input.input, messages: [...input.input.messages] },
    plan: [...input.plan],
    hops: [...input.hops],
    enrichments: [...input.enrichments],
    usage: [...input.usage],
  };
}

/** `input` with the usage the handler had recorded on its copy before it threw. */
function spent(input: JobEnvelope, working: JobEnvelope): JobEnvelope {
  // Only entries that keep the contract: a record that does not validate helps nobody.
  const usage = working.usage.filter((entry) => Usage.safeParse(entry).success);
  return usage.length > input.usage.length ? { ...input, usage } : input;
}
