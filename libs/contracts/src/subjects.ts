/**
 * The wire names of the mesh, in one place.
 *
 * Subject scheme (all versioned under `handoff.v1.`):
 *
 *   handoff.v1.jobs.<stage>      job envelopes waiting for a stage (JetStream, work queue)
 *   handoff.v1.results.<jobId>   the finished envelope, for the gateway that waits on it (core NATS)
 *   handoff.v1.stream.<jobId>    streamed tokens of the answering stage (core NATS)
 *   handoff.v1.dlq.<stage>       dead letters: payloads a stage could not process (JetStream)
 *   handoff.v1.requests.<tenant> job requests a backend publishes straight onto NATS (JetStream)
 *   handoff.v1.events.<tenant>.<jobId>  a job's queued/running/succeeded/failed events (JetStream)
 *
 * A stage publishes to `handoff.v1.jobs.<next>` where `<next>` comes from the envelope's plan,
 * never from code, so the route stays data.
 */

/** The stages a job can visit, in the order the tiers escalate. */
export const Stages = ["classifier", "tool-executor", "heavy-reasoner"] as const;
type Stage = (typeof Stages)[number];

/** Every service that registers with the NATS service API. */
export const ServiceNames = ["gateway", ...Stages] as const;
export type ServiceName = (typeof ServiceNames)[number];

const prefix = "handoff.v1";

export const Subjects = {
  prefix,
  /** Wildcard bound by the jobs stream. */
  allJobs: `${prefix}.jobs.>`,
  /** Wildcard bound by the dead-letter stream. */
  allDeadLetters: `${prefix}.dlq.>`,
  job: (stage: Stage) => `${prefix}.jobs.${stage}` as const,
  result: (jobId: string) => `${prefix}.results.${jobId}` as const,
  stream: (jobId: string) => `${prefix}.stream.${jobId}` as const,
  deadLetter: (stage: Stage) => `${prefix}.dlq.${stage}` as const,
  /** Wildcard bound by the job-requests stream. */
  allRequests: `${prefix}.requests.>`,
  /** Where a backend publishes a job request for `tenant`. */
  requests: (tenant: string) => `${prefix}.requests.${tenant}` as const,
  /** Wildcard bound by the job-events stream. */
  allEvents: `${prefix}.events.>`,
  /** A job's events; `tenant` is its owner, or {@link NO_TENANT} for a job without one. */
  event: (tenant: string, jobId: string) => `${prefix}.events.${tenant}.${jobId}` as const,
  /** Every event of one tenant's jobs: the filter of that tenant's durable consumer. */
  tenantEvents: (tenant: string) => `${prefix}.events.${tenant}.*` as const,
} as const;

/** The subject token of jobs that have no owner (submitted while the API was open). */
export const NO_TENANT = "_";
export type Subjects = typeof Subjects;

/** JetStream streams and KV buckets the mesh creates at start. */
export const Streams = {
  jobs: "HANDOFF_JOBS",
  deadLetters: "HANDOFF_DLQ",
  /** Job requests published straight onto NATS, taken in by the gateway (work queue). */
  requests: "HANDOFF_REQUESTS",
  /** Every job's events, kept as long as job records, for backends' durable consumers. */
  events: "HANDOFF_EVENTS",
} as const;
export type Streams = (typeof Streams)[keyof typeof Streams];

export const Buckets = {
  jobs: "handoff-jobs",
  /**
   * What each stage produced for each job, keyed `<jobId>.<step>`: a redelivered job whose stage
   * already did its work re-sends this instead of running again. Kept for the dedupe window.
   */
  stageOutputs: "handoff-stage-outputs",
  /**
   * The exact response cache of each cached tier (`cache.tiers`): a model's answers keyed
   * `<tenant>.<sha256 of what determines the answer>`, kept for the tier's `ttl_ms`. Created by
   * the stages that call the tier.
   */
  cacheLight: "handoff-cache-light",
  cacheMid: "handoff-cache-mid",
  cacheHeavy: "handoff-cache-heavy",
} as const;
export type Buckets = (typeof Buckets)[keyof typeof Buckets];

/** The response-cache bucket of a tier: `handoff-cache-<tier>`. */
export function responseCacheBucket(tier: "light" | "mid" | "heavy"): Buckets {
  switch (tier) {
    case "light":
      return Buckets.cacheLight;
    case "mid":
      return Buckets.cacheMid;
    case "heavy":
      return Buckets.cacheHeavy;
  }
}

/** Header names the mesh sets on its messages. `traceparent`/`tracestate` are W3C's. */
export const Headers = {
  messageId: "Nats-Msg-Id",
  jobId: "Handoff-Job-Id",
  stage: "Handoff-Stage",
  errorCode: "Handoff-Error-Code",
  /** `v1 <key id> <mac>`: the mesh signing key's HMAC over subject and payload (see @handoff/mesh). */
  signature: "Handoff-Signature",
} as const;
export type Headers = (typeof Headers)[keyof typeof Headers];

/**
 * The dedupe id of a job forwarded to the stage at position `step` of its plan: a redelivered job
 * is forwarded only once, and a plan that visits a stage twice makes two distinct messages.
 */
export function forwardMessageId(jobId: string, step: number, stage: Stage): string {
  return `${jobId}:${step}:${stage}`;
}
