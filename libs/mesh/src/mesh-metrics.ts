import { type Stage, Stages, Streams, Subjects } from "@handoff/contracts";
import { JetStreamApiCodes, type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import {
  type BatchObservableResult,
  type Meter,
  metrics,
  type Observable,
} from "@opentelemetry/api";
import type { RunnerStats } from "./runner.js";
import { isApiError } from "./topology.js";

/**
 * The queue of one stage as JetStream sees it: its durable consumer on `HANDOFF_JOBS` (shared by
 * every replica of the stage) and its dead letters on `HANDOFF_DLQ`.
 */
export interface StageQueue {
  stage: Stage;
  /** False while the stage's durable consumer does not exist (the stage never started). */
  consumer: boolean;
  /** Jobs waiting for the stage that no replica has been handed yet (`num_pending`). */
  lag: number;
  /** Jobs handed to a replica and not acked yet: in progress, or lost with a crashed one. */
  ack_pending: number;
  /** Of those, jobs handed out more than once (`num_redelivered`). */
  redelivered: number;
  /** Pull requests of idle replicas waiting for work. */
  waiting: number;
  /** Dead letters kept for the stage on `handoff.v1.dlq.<stage>`. */
  dead_letters: number;
}

/** Dead letters kept per stage: one stream info call, with the stream's per-subject counts. */
export async function deadLetterCounts(jsm: JetStreamManager): Promise<Record<Stage, number>> {
  const counts = Object.fromEntries(Stages.map((stage) => [stage, 0])) as Record<Stage, number>;
  try {
    const info = await jsm.streams.info(Streams.deadLetters, {
      subjects_filter: Subjects.allDeadLetters,
    });
    for (const stage of Stages)
      counts[stage] = info.state.subjects?.[Subjects.deadLetter(stage)] ?? 0;
  } catch (error) {
    // No stream yet: nothing was ever dead-lettered.
    if (!isApiError(error, JetStreamApiCodes.StreamNotFound)) throw error;
  }
  return counts;
}

/** The queue of `stage`, read from its consumer's info; `deadLetters` from {@link deadLetterCounts}. */
export async function stageQueue(
  jsm: JetStreamManager,
  stage: Stage,
  deadLetters: number,
): Promise<StageQueue> {
  try {
    const info = await jsm.consumers.info(Streams.jobs, stage);
    return {
      stage,
      consumer: true,
      lag: info.num_pending,
      ack_pending: info.num_ack_pending,
      redelivered: info.num_redelivered,
      waiting: info.num_waiting,
      dead_letters: deadLetters,
    };
  } catch (error) {
    if (
      !isApiError(error, JetStreamApiCodes.ConsumerNotFound) &&
      !isApiError(error, JetStreamApiCodes.StreamNotFound)
    ) {
      throw error;
    }
    return {
      stage,
      consumer: false,
      lag: 0,
      ack_pending: 0,
      redelivered: 0,
      waiting: 0,
      dead_letters: deadLetters,
    };
  }
}

/** The queues of every stage, for `handoff status`. */
export async function stageQueues(jsm: JetStreamManager): Promise<StageQueue[]> {
  const dead = await deadLetterCounts(jsm);
  return Promise.all(Stages.map((stage) => stageQueue(jsm, stage, dead[stage])));
}

/** The metric names, as the OpenTelemetry SDK exports them (Prometheus: dots become `_`). */
export const MeshMetricNames = {
  lag: "handoff.stage.lag",
  ackPending: "handoff.stage.ack_pending",
  redelivered: "handoff.stage.redelivered",
  deadLetters: "handoff.stage.dead_letters",
  retried: "handoff.stage.retried",
  deadLettered: "handoff.stage.dead_lettered",
} as const;

export interface MeshMetricsOptions {
  nc: NatsConnection;
  stage: Stage;
  /** This replica's counters (retries, dead letters it made), when it has a runner. */
  stats?: () => RunnerStats | undefined;
  /** Default: the global meter provider's `@handoff/mesh` meter, taken now. */
  meter?: Meter;
  /** How long one collection may wait for JetStream before it reports nothing. Default 2 s. */
  timeoutMs?: number;
}

export interface MeshMetrics {
  /** Unregisters the instruments' callback. Also happens when the connection closes. */
  stop(): void;
}

/** One registration per connection and stage, however often a service (re)starts. */
const registered = new WeakMap<
  NatsConnection,
  Map<Stage, MeshMetrics & { update(options: MeshMetricsOptions): void }>
>();

/**
 * Observable metrics of one stage, read from JetStream at each collection (an OTLP export or a
 * Prometheus scrape), all with a `stage` attribute:
 *
 * - `handoff.stage.lag`: jobs waiting that no replica has been handed yet (consumer `num_pending`)
 * - `handoff.stage.ack_pending`: jobs handed out and not acked yet (`num_ack_pending`)
 * - `handoff.stage.redelivered`: of those, jobs delivered more than once (`num_redelivered`)
 * - `handoff.stage.dead_letters`: dead letters kept on `handoff.v1.dlq.<stage>`
 * - `handoff.stage.retried`, `handoff.stage.dead_lettered`: counters of this replica (retries it
 *   scheduled, payloads it dead-lettered)
 *
 * The first four describe the stage's shared consumer, so every replica reports the same value:
 * aggregate them with `max by (stage)`, not `sum`. Each stage service starts this for its own
 * stage; it needs only the permissions the stage already has (consumer and stream info).
 */
export function startMeshMetrics(options: MeshMetricsOptions): MeshMetrics {
  let byStage = registered.get(options.nc);
  const existing = byStage?.get(options.stage);
  if (existing) {
    existing.update(options);
    return existing;
  }
  let current = options;
  const meter = options.meter ?? metrics.getMeter("@handoff/mesh");
  const gauge = (name: string, description: string, unit: string) =>
    meter.createObservableGauge(name, { description, unit });
  const counter = (name: string, description: string, unit: string) =>
    meter.createObservableCounter(name, { description, unit });
  const lag = gauge(
    MeshMetricNames.lag,
    "Jobs waiting for the stage that no replica has been handed yet (consumer num_pending)",
    "{job}",
  );
  const ackPending = gauge(
    MeshMetricNames.ackPending,
    "Jobs handed to a replica of the stage and not acknowledged yet (consumer num_ack_pending)",
    "{job}",
  );
  const redelivered = gauge(
    MeshMetricNames.redelivered,
    "Unacknowledged jobs of the stage that were delivered more than once (consumer num_redelivered)",
    "{job}",
  );
  const deadLetters = gauge(
    MeshMetricNames.deadLetters,
    "Dead letters kept for the stage on handoff.v1.dlq.<stage>",
    "{message}",
  );
  const retried = counter(
    MeshMetricNames.retried,
    "Failed deliveries this replica handed back for a retry",
    "{job}",
  );
  const deadLettered = counter(
    MeshMetricNames.deadLettered,
    "Payloads this replica recorded as dead letters",
    "{message}",
  );
  const observables: Observable[] = [
    lag,
    ackPending,
    redelivered,
    deadLetters,
    retried,
    deadLettered,
  ];
  const timeoutMs = options.timeoutMs ?? 2_000;
  let jsm: Promise<JetStreamManager> | undefined;
  const attributes = { stage: options.stage };

  const read = async (): Promise<StageQueue> => {
    jsm ??= jetstreamManager(current.nc, { timeout: timeoutMs, checkAPI: false });
    const manager = await jsm;
    const dead = await deadLetterCounts(manager);
    return stageQueue(manager, current.stage, dead[current.stage]);
  };

  const callback = async (result: BatchObservableResult) => {
    const stats = current.stats?.();
    if (stats) {
      result.observe(retried, stats.retried, attributes);
      result.observe(deadLettered, stats.dead_lettered, attributes);
    }
    if (current.nc.isClosed()) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      // A scrape never waits on a NATS that does not answer: no point is better than a late one.
      const queue = await Promise.race([
        read(),
        new Promise<undefined>((resolve) => {
          timer = setTimeout(() => resolve(undefined), timeoutMs);
        }),
      ]);
      if (!queue) return;
      result.observe(deadLetters, queue.dead_letters, attributes);
      if (!queue.consumer) return;
      result.observe(lag, queue.lag, attributes);
      result.observe(ackPending, queue.ack_pending, attributes);
      result.observe(redelivered, queue.redelivered, attributes);
    } catch {
      // NATS unreachable or the stream gone: report nothing rather than a made-up zero.
    } finally {
      clearTimeout(timer);
    }
  };
  meter.addBatchObservableCallback(callback, observables);

  let stopped = false;
  const handle = {
    stop() {
      if (stopped) return;
      stopped = true;
      meter.removeBatchObservableCallback(callback, observables);
      registered.get(options.nc)?.delete(options.stage);
    },
    update(next: MeshMetricsOptions) {
      current = next;
    },
  };
  if (!byStage) {
    byStage = new Map();
    registered.set(options.nc, byStage);
  }
  byStage.set(options.stage, handle);
  void options.nc.closed().then(() => handle.stop());
  return handle;
}
