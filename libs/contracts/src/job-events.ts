import { z } from "zod";
import { Issue } from "./dead-letter.js";
import { JobError, JobId, JobOwner, Stage } from "./envelope.js";
import type { JobRecord } from "./job-record.js";
import { ChatCompletion, ChatCompletionRequest } from "./openai.js";

/**
 * A job request published straight onto NATS (`handoff.v1.requests.<tenant>`): the body of
 * `POST /v1/jobs`, plus what HTTP carries in headers and the API key. Validated, budgeted and
 * deadlined exactly as over HTTP.
 */
export const JobSubmission = ChatCompletionRequest.extend({
  /** The job's owner. Optional; when given it must equal the `<tenant>` token of the subject. */
  tenant: JobOwner.optional(),
  /**
   * The same key from the same tenant within `gateway.idempotency_window_ms` gets the first
   * request's job, never a second run (as the `Idempotency-Key` header does over HTTP).
   */
  idempotency_key: z
    .string()
    .min(1)
    .max(255)
    .regex(/^[\x21-\x7e]+$/, "printable ASCII without spaces")
    .optional(),
  /** A core NATS subject that gets this request's `queued` event (or its `failed` one) at once. */
  reply_to: z
    .string()
    .min(1)
    .max(255)
    .regex(/^[^\s*>]+$/, "a subject without spaces or wildcards")
    .optional(),
  /**
   * The job's id, chosen by the publisher so it knows the event subject before it publishes. When
   * absent the id comes from the message's `Nats-Msg-Id` (the same id each time it is re-sent), or
   * is new.
   */
  job_id: JobId.optional(),
});
export type JobSubmission = z.infer<typeof JobSubmission>;

const EventBase = z.object({
  job_id: JobId,
  /** The job's owner, as in the event's subject; absent for jobs without one. */
  tenant: JobOwner.optional(),
  /** When the job got to this state. */
  at: z.iso.datetime(),
  /** The `Nats-Msg-Id` of the request that made the job, for a NATS-submitted job. */
  request_id: z.string().optional(),
  trace_id: z.string().optional(),
});

/** The job was accepted and waits for its first stage. */
export const JobQueuedEvent = EventBase.extend({
  type: z.literal("queued"),
  deadline: z.iso.datetime().optional(),
  /** This request's idempotency key named an earlier job: this is that job. */
  replayed: z.boolean().optional(),
});

/** A stage started on the job. */
export const JobRunningEvent = EventBase.extend({
  type: z.literal("running"),
  stage: Stage.optional(),
});

/** The job answered: the answer as `POST /v1/chat/completions` returns it, `handoff` report included. */
export const JobSucceededEvent = EventBase.extend({
  type: z.literal("succeeded"),
  completion: ChatCompletion,
});

/** The job failed, or its request was refused (a validation error names the issue paths). */
export const JobFailedEvent = EventBase.extend({
  type: z.literal("failed"),
  error: JobError.extend({
    issues: z.array(Issue).optional(),
    total_issues: z.number().int().nonnegative().optional(),
  }),
});

/** Every event on `handoff.v1.events.<tenant>.<jobId>`, told apart by `type`. */
export const JobEvent = z.discriminatedUnion("type", [
  JobQueuedEvent,
  JobRunningEvent,
  JobSucceededEvent,
  JobFailedEvent,
]);
export type JobEvent = z.infer<typeof JobEvent>;
export type JobQueuedEvent = z.infer<typeof JobQueuedEvent>;
export type JobRunningEvent = z.infer<typeof JobRunningEvent>;
export type JobSucceededEvent = z.infer<typeof JobSucceededEvent>;
export type JobFailedEvent = z.infer<typeof JobFailedEvent>;
export type JobEventType = JobEvent["type"];

/**
 * The event a job record stands for: `queued`, `running` (at its stage), `succeeded` with the
 * answer as the HTTP API gives it, or `failed` with the error.
 */
export function eventFromRecord(
  record: JobRecord,
  completion: (record: JobRecord) => ChatCompletion,
): JobEvent | undefined {
  const base = {
    job_id: record.id,
    at: record.updated_at,
    ...(record.owner ? { tenant: record.owner } : {}),
    ...(record.trace_id ? { trace_id: record.trace_id } : {}),
  };
  switch (record.status) {
    case "queued":
      return { ...base, type: "queued" };
    case "running":
      return { ...base, type: "running", ...(record.stage ? { stage: record.stage } : {}) };
    case "succeeded":
      return record.result
        ? { ...base, type: "succeeded", completion: completion(record) }
        : undefined;
    case "failed":
      return {
        ...base,
        type: "failed",
        error: record.error ?? {
          code: "HANDOFF_ERR_INTERNAL",
          message: "the job failed without an error",
          retryable: false,
        },
      };
  }
}
