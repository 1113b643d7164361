import { Buckets, HandoffError, type Stage, Streams, Subjects } from "@handoff/contracts";
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import { type NatsConnection, nanos } from "@nats-io/nats-core";

export interface TopologyOptions {
  /** How long a stage may hold a job without a heartbeat before JetStream redelivers it. */
  ackWaitMs: number;
  /** Deliveries of one job to one stage before the runner dead-letters it. */
  maxDeliveries: number;
  /** Job records expire from KV after this long. */
  jobRecordTtlMs?: number;
  /** Dead letters are kept this long. */
  deadLetterTtlMs?: number;
  /** Stream and bucket replicas across a NATS cluster (1 on a single server). */
  replicas?: number;
  /**
   * How long the gateway remembers an `Idempotency-Key` (`gateway.idempotency_window_ms`): the
   * max age of the idempotency bucket when it is created. Only the gateway sets it, and only then
   * does `ensureTopology` create the bucket: the stages never touch it (nor may, under
   * `deploy/nats/handoff-auth.conf`).
   */
  idempotencyWindowMs?: number;
}

const MINUTE = 60_000;
/** JetStream's "stream name already in use" (not in the client's code table). */
const STREAM_NAME_IN_USE = 10058;
const DAY = 24 * 60 * MINUTE;
/** "consumer name already in use" (2.9) and "consumer already exists" (2.10+). */
const CONSUMER_EXISTS = [10013, 10148];

/**
 * The dedupe window must outlast every redelivery of a job, so a stage that dies after forwarding
 * but before acking never forwards twice: ten minutes, or longer if acks may wait longer.
 */
export function duplicateWindowMs(options: TopologyOptions): number {
  return Math.max(10 * MINUTE, options.ackWaitMs * (options.maxDeliveries + 1));
}

export function jobStreamConfig(
  options: TopologyOptions,
): Partial<StreamConfig> & { name: string } {
  return {
    name: Streams.jobs,
    subjects: [Subjects.allJobs],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    duplicate_window: nanos(duplicateWindowMs(options)),
    num_replicas: options.replicas ?? 1,
    description: "Handoff job envelopes, one subject per stage",
  };
}

export function deadLetterStreamConfig(
  options: TopologyOptions,
): Partial<StreamConfig> & { name: string } {
  return {
    name: Streams.deadLetters,
    subjects: [Subjects.allDeadLetters],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    max_age: nanos(options.deadLetterTtlMs ?? 14 * DAY),
    num_replicas: options.replicas ?? 1,
    description: "Handoff payloads a stage could not process, with the reason",
  };
}

/** Creates the stream, or brings an existing one to this configuration. Safe to run concurrently. */
async function ensureStream(
  jsm: JetStreamManager,
  config: Partial<StreamConfig> & { name: string },
) {
  try {
    const info = await jsm.streams.info(config.name);
    const { name, retention, storage, ...mutable } = config;
    if (info.config.retention !== retention || info.config.storage !== storage) {
      // Not a passing state to wait out: a service start-up retries anything but a config error.
      throw new HandoffError(
        "HANDOFF_ERR_CONFIG",
        `stream ${name} exists with retention ${info.config.retention}/${info.config.storage}, ` +
          `expected ${retention}/${storage}: delete it or point Handoff at another server`,
      );
    }
    return await jsm.streams.update(name, { ...info.config, ...mutable });
  } catch (error) {
    if (!isApiError(error, JetStreamApiCodes.StreamNotFound)) throw error;
    try {
      return await jsm.streams.add(config);
    } catch (addError) {
      // Another replica created it between our info and add: that is the state we wanted.
      if (isApiError(addError, STREAM_NAME_IN_USE)) {
        return await jsm.streams.info(config.name);
      }
      throw addError;
    }
  }
}

export function isApiError(error: unknown, code: number): boolean {
  return error instanceof JetStreamApiError && error.code === code;
}

export interface Topology {
  jsm: JetStreamManager;
  jobs: KV;
  /**
   * The gateway's claimed `Idempotency-Key`s (see `IDEMPOTENCY_BUCKET`); present when the options
   * set `idempotencyWindowMs`.
   */
  idempotency?: KV;
}

/**
 * Streams and the job-record bucket, created idempotently by every service at start. The events
 * stream is among them: whoever writes a job's record publishes its event.
 */
export async function ensureTopology(
  nc: NatsConnection,
  options: TopologyOptions,
): Promise<Topology> {
  const jsm = await jetstreamManager(nc);
  await ensureStream(jsm, jobStreamConfig(options));
  await ensureStream(jsm, deadLetterStreamConfig(options));
  await ensureStream(jsm, eventStreamConfig(options));
  const jobs = await new Kvm(nc).create(Buckets.jobs, {
    history: 1,
    replicas: options.replicas ?? 1,
    ttl: options.jobRecordTtlMs ?? DAY,
    description: "Handoff job records",
  });
  if (options.idempotencyWindowMs === undefined) return { jsm, jobs };
  const idempotency = await ensureIdempotencyBucket(nc, options);
  return { jsm, jobs, idempotency };
}

/**
 * The bucket of `Idempotency-Key` claims: per tenant and key (hashed), the job the key names and
 * a hash of the request that claimed it. Entries expire after the idempotency window; the
 * bucket's max age is set when it is created (a later, shorter window is enforced by the gateway).
 */
export const IDEMPOTENCY_BUCKET = "handoff-idempotency";

/** Creates (or opens) {@link IDEMPOTENCY_BUCKET}. */
export function ensureIdempotencyBucket(
  nc: NatsConnection | JetStreamClient,
  options: Pick<TopologyOptions, "replicas" | "idempotencyWindowMs">,
): Promise<KV> {
  return new Kvm(nc).create(IDEMPOTENCY_BUCKET, {
    history: 1,
    replicas: options.replicas ?? 1,
    ttl: options.idempotencyWindowMs ?? DAY,
    description: "Handoff Idempotency-Key claims: the job each key names",
  });
}

/**
 * The bucket of what each stage produced per job (`Buckets.stageOutputs`), kept as long as the
 * dedupe window: only stages use it, so only they create it.
 */
export function ensureStageOutputs(nc: NatsConnection, options: TopologyOptions): Promise<KV> {
  return new Kvm(nc).create(Buckets.stageOutputs, {
    history: 1,
    replicas: options.replicas ?? 1,
    ttl: duplicateWindowMs(options),
    description: "What each Handoff stage produced per job, for redeliveries",
  });
}

/**
 * The durable pull consumer of a stage. Every replica of the stage shares it, so adding replicas
 * adds throughput; the work-queue stream hands each job to exactly one of them.
 */
export async function ensureStageConsumer(
  jsm: JetStreamManager,
  stage: Stage,
  options: TopologyOptions,
): Promise<void> {
  await ensureConsumer(jsm, Streams.jobs, {
    durable_name: stage,
    filter_subject: Subjects.job(stage),
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(options.ackWaitMs),
    // The runner counts deliveries and dead-letters itself; one more lets it see the last one.
    max_deliver: options.maxDeliveries + 1,
    max_ack_pending: 10_000,
    description: `Handoff ${stage} stage`,
  });
}

/** The durable consumer the gateway takes NATS job requests in with. */
export const INTAKE_CONSUMER = "intake";
/**
 * The durable consumer on the record bucket's stream that earlier gateways turned record changes
 * into job events with; removed at start (see {@link ensureJobDoor}).
 */
export const LEGACY_EVENTS_CONSUMER = "handoff-events";

/**
 * Job requests published straight onto NATS, `handoff.v1.requests.<tenant>`: a work queue the
 * gateway's intake empties, deduplicated on `Nats-Msg-Id` within the dedupe window. A request
 * waits here (for a day at most) while no gateway runs.
 */
export function requestStreamConfig(
  options: TopologyOptions,
): Partial<StreamConfig> & { name: string } {
  return {
    name: Streams.requests,
    subjects: [Subjects.allRequests],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    max_age: nanos(DAY),
    duplicate_window: nanos(duplicateWindowMs(options)),
    num_replicas: options.replicas ?? 1,
    description: "Handoff job requests from backends, one subject per tenant",
  };
}

/**
 * Every job's events, `handoff.v1.events.<tenant>.<jobId>`, kept as long as job records (24 hours
 * by default), so a backend's durable consumer that was down for less than that misses none.
 */
export function eventStreamConfig(
  options: TopologyOptions,
): Partial<StreamConfig> & { name: string } {
  return {
    name: Streams.events,
    subjects: [Subjects.allEvents],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    max_age: nanos(options.jobRecordTtlMs ?? DAY),
    duplicate_window: nanos(duplicateWindowMs(options)),
    num_replicas: options.replicas ?? 1,
    description: "Handoff job events (queued, running, succeeded, failed), one subject per job",
  };
}

/**
 * The job door's stream and consumer: the intake of NATS job requests. Only the gateway creates
 * them. It also removes the durable consumer that earlier versions used to relay record changes
 * into events ({@link LEGACY_EVENTS_CONSUMER}): events are now published by whoever writes the
 * record, and a consumer nobody reads would only pile up pending messages.
 */
export async function ensureJobDoor(
  jsm: JetStreamManager,
  options: TopologyOptions,
): Promise<void> {
  await ensureStream(jsm, requestStreamConfig(options));
  await ensureConsumer(jsm, Streams.requests, {
    durable_name: INTAKE_CONSUMER,
    filter_subject: Subjects.allRequests,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(options.ackWaitMs),
    // A request is retried until it is taken in or refused: only NATS trouble fails the intake.
    max_deliver: -1,
    max_ack_pending: 1_000,
    description: "Handoff gateway intake of job requests",
  });
  try {
    await jsm.consumers.delete(`KV_${Buckets.jobs}`, LEGACY_EVENTS_CONSUMER);
  } catch (error) {
    if (!isApiError(error, JetStreamApiCodes.ConsumerNotFound)) throw error;
  }
}

/** Creates a durable consumer, or brings its mutable settings up to date. */
async function ensureConsumer(
  jsm: JetStreamManager,
  stream: string,
  config: {
    durable_name: string;
    filter_subject: string;
    deliver_policy: DeliverPolicy;
  } & Record<string, unknown>,
): Promise<void> {
  try {
    await jsm.consumers.info(stream, config.durable_name);
    const {
      durable_name: _name,
      filter_subject: _subject,
      deliver_policy: _policy,
      ...mutable
    } = config;
    await jsm.consumers.update(stream, config.durable_name, mutable);
  } catch (error) {
    if (!isApiError(error, JetStreamApiCodes.ConsumerNotFound)) throw error;
    try {
      await jsm.consumers.add(stream, config);
    } catch (addError) {
      // Another replica created it first.
      if (!CONSUMER_EXISTS.some((code) => isApiError(addError, code))) throw addError;
    }
  }
}
