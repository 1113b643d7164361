import type { HandoffConfig } from "@handoff/config";
import {
  answerCacheOutcome,
  type HandoffError,
  isTerminal,
  type JobRecord,
  type JobResult,
} from "@handoff/contracts";
import { activeTraceId, checkJobFits, type JobClient, recordFromEnvelope } from "@handoff/mesh";
import { trace } from "@opentelemetry/api";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { z } from "zod";
import { type ErrorAnswer, type ErrorContext, jobFailure, toHandoffError } from "./errors.js";
import {
  claimIdempotencyKey,
  type IdempotencyStore,
  REPLAYED_HEADER,
  REPLAYED_HEADER_DOC,
  type Replay,
  waitForJob,
} from "./idempotency.js";
import {
  type ErrorResponse,
  eventStream,
  type HeaderDoc,
  parsedByHandler,
  writtenByHandler,
} from "./route-schema.js";
import { openSse, type SseStream } from "./sse.js";
import { type AnswerWriter, relayStreamedJob, type StreamedJob } from "./streaming.js";
import { type Submission, SubmissionHeaders } from "./submission.js";
import { inRequestSpan } from "./tracing.js";

/**
 * A door: a route that takes one API dialect's request (OpenAI's chat completions, OpenAI's
 * Responses, Anthropic's Messages), runs it as a job of the mesh, and answers in the same dialect.
 * Every door goes the same way, here: the request is read into a job; an `Idempotency-Key` is
 * claimed (or an earlier identical request's job is replayed, waited for and answered as it would
 * have been); the job is streamed or run; a job that failed is answered with the dialect's error
 * body naming the job; a key whose job never started is released. Each dialect brings its own
 * reading of the request and writing of answers and errors ({@link Dialect}).
 */

export interface DoorDeps {
  jobs: JobClient;
  config: HandoffConfig;
  /** The NATS server's `max_payload`, checked before a stream opens (a 413, not an event). */
  maxPayload?: () => number | undefined;
  /** Where `Idempotency-Key`s are claimed; by default the bucket next to `jobs`' records. */
  idempotency?: IdempotencyStore;
}

/** A job that answered. */
export type Answered = JobRecord & { result: JobResult };

/** One API dialect, as a door reads and answers it. `Body` is its own request, as read. */
export interface Dialect<Body> {
  /** `METHOD /path`: the route an `Idempotency-Key`'s request is hashed under. */
  route: string;
  /** Named in the "job submitted" log line, when set. */
  api?: string;
  /**
   * Reads the request: the job it submits, and the dialect's own request, which its answers
   * repeat parts of. Throws the dialect's 4xx for a request it cannot take.
   */
  parse(request: FastifyRequest, config: HandoffConfig): { body: Body; submission: Submission };
  /** The answer of a job that answered. */
  answer(record: Answered, traceId: string, body: Body): unknown;
  /** The answer of a job that failed, naming it: its status and body. */
  failure: ErrorAnswer;
  /**
   * Starts a streamed answer on `sse`: writes what opens the stream, and returns the writer of
   * the rest (the answer's text as it comes, then its end, or the error).
   */
  stream(sse: SseStream, job: StreamedJob, body: Body): AnswerWriter;
}

/** What the exact response cache did for the answer (`handoff.cache`), on non-streamed answers. */
export const CACHE_HEADER = "x-handoff-cache";

/** The headers of a door's answer, as its route documents them. */
const ANSWER_HEADERS: Record<string, HeaderDoc> = {
  "x-handoff-job-id": { type: "string", description: "The job's id." },
  "x-handoff-trace-id": { type: "string", description: "The job's trace id." },
  [REPLAYED_HEADER.toLowerCase()]: REPLAYED_HEADER_DOC,
  [CACHE_HEADER]: {
    enum: ["hit", "miss", "bypass"],
    description:
      "When the answering tier is cached (`cache.tiers`): `hit` (answered from the exact response cache, at no model cost), `miss` or `bypass`, as `handoff.cache` says. Not sent on streamed answers, whose headers leave before the answer is known: their last event's `handoff.cache` says it.",
  },
};

/** The `x-handoff-cache` header of an answered job, when its answering tier is cached. */
function cacheHeader(record: JobRecord): Record<string, string> {
  const outcome = answerCacheOutcome(record);
  return outcome ? { [CACHE_HEADER]: outcome } : {};
}

/** The errors every door may answer with (in its own dialect's shape). */
const DOOR_ERRORS: readonly ErrorResponse[] = [
  "BadRequest",
  "BudgetExceeded",
  "ModelNotFound",
  "BodyTooLarge",
  "UnsupportedMediaType",
  "IdempotencyMismatch",
  "UpstreamFailed",
  "Timeout",
];

/** What a door's route says of itself; the rest every door says alike ({@link doorRoute}). */
export interface DoorSchema {
  operationId: string;
  summary: string;
  description: string;
  /** The dialect's request. */
  body: z.ZodType;
  /** The answer: `json`, or with `stream: true` server-sent events, each carrying an `event`. */
  answer: { description: string; json: z.ZodType; events: string; event: z.ZodType };
  /** The dialect's error body, when it is not OpenAI's. */
  errorBody?: z.ZodType;
}

/**
 * The route options of a door speaking `dialect`: its schema (the request headers a submission
 * reads, its body, its answer with the job's headers, the errors every door may answer), and its
 * handler, which reads its own request and writes its own answers in the dialect: fastify neither
 * validates nor serializes with the schemas ({@link parsedByHandler}, {@link writtenByHandler}).
 */
export function doorRoute<Body>(deps: DoorDeps, dialect: Dialect<Body>, schema: DoorSchema) {
  const { answer, ...operation } = schema;
  return {
    schema: {
      tags: ["chat"],
      headers: SubmissionHeaders,
      ...operation,
      response: {
        200: {
          description: answer.description,
          headers: ANSWER_HEADERS,
          content: {
            "application/json": { schema: answer.json },
            ...eventStream(answer.events, answer.event),
          },
        },
      },
      errors: DOOR_ERRORS,
    },
    ...parsedByHandler,
    ...writtenByHandler,
    handler: doorHandler(deps, dialect),
  };
}

/** The headers every answer of job `id` carries. */
function jobHeaders(id: string, traceId: string): Record<string, string> {
  return { "x-handoff-job-id": id, ...(traceId ? { "x-handoff-trace-id": traceId } : {}) };
}

const context = (id: string, traceId: string): ErrorContext => ({
  job_id: id,
  ...(traceId ? { trace_id: traceId } : {}),
});

/** The handler of a door speaking `dialect`. */
function doorHandler<Body>(deps: DoorDeps, dialect: Dialect<Body>) {
  return (request: FastifyRequest, reply: FastifyReply) =>
    inRequestSpan(request, () => enter(request, reply, deps, dialect));
}

async function enter<Body>(
  request: FastifyRequest,
  reply: FastifyReply,
  deps: DoorDeps,
  dialect: Dialect<Body>,
): Promise<unknown> {
  const { body, submission } = dialect.parse(request, deps.config);
  const { envelope, timeoutMs, idempotencyKey } = submission;
  const stream = envelope.input.stream;
  const traceId = activeTraceId() ?? "";
  const span = trace.getActiveSpan();

  if (stream) {
    // Once the stream is open its status is 200: a job too large for NATS is refused first.
    const record = recordFromEnvelope(envelope, "queued", traceId || undefined);
    checkJobFits(envelope, record, deps.maxPayload?.());
  }

  const claim =
    idempotencyKey === undefined
      ? undefined
      : await claimIdempotencyKey(request, deps, dialect.route, idempotencyKey, {
          job_id: envelope.id,
          created_at: envelope.created_at,
          deadline: envelope.budget.deadline,
          ...(traceId ? { trace_id: traceId } : {}),
        });
  if (claim?.kind === "replay") {
    return replay(request, reply, deps, dialect, body, { timeoutMs, stream }, claim);
  }

  span?.setAttributes({ "handoff.job.id": envelope.id, "handoff.stream": stream });
  request.log.info(
    {
      job_id: envelope.id,
      timeout_ms: timeoutMs,
      stream,
      ...(dialect.api ? { api: dialect.api } : {}),
    },
    "job submitted",
  );
  const headers = jobHeaders(envelope.id, traceId);

  if (stream) {
    const sse = openSse(reply, headers);
    const job = { id: envelope.id, createdAt: envelope.created_at, traceId };
    const writer = dialect.stream(sse, job, body);
    await relayStreamedJob(request, sse, submission, deps.jobs, traceId, writer);
    // A job that could not be queued must not keep the key.
    await claim?.releaseUnlessStarted();
    return undefined;
  }

  reply.headers(headers);
  let record: JobRecord | undefined;
  try {
    record = await deps.jobs.run(envelope, traceId || undefined);
  } catch (error) {
    await claim?.releaseUnlessStarted();
    throw error;
  }
  if (record) {
    span?.setAttributes({
      "handoff.route": record.hops.join(","),
      "handoff.cost_usd": record.cost_usd,
      "handoff.job.status": record.status,
      ...(record.route ? { "handoff.route.decision": record.route.decision } : {}),
    });
  }
  if (record?.status === "failed") await claim?.releaseUnlessStarted();
  if (!record || record.status === "failed" || !record.result) {
    // Failures after submission name the job, so the client can look it up later.
    const { status, body: failure } = dialect.failure(
      jobFailure(record, timeoutMs, envelope.id),
      context(envelope.id, traceId),
    );
    return reply.status(status).send(failure);
  }
  reply.headers(cacheHeader(record));
  return dialect.answer({ ...record, result: record.result }, traceId, body);
}

/**
 * The answer to a request whose `Idempotency-Key` an earlier, identical request holds: that
 * request's job, waited for (up to this request's own timeout) and answered as it would have
 * been, with `Idempotent-Replayed: true`. Nothing is submitted. A streamed replay opens its
 * stream at once and writes the stored answer whole once the job ends.
 */
async function replay<Body>(
  request: FastifyRequest,
  reply: FastifyReply,
  deps: DoorDeps,
  dialect: Dialect<Body>,
  body: Body,
  { timeoutMs, stream }: { timeoutMs: number; stream: boolean },
  { entry, record: current }: Replay,
): Promise<unknown> {
  const id = entry.job_id;
  const traceId = current.trace_id ?? entry.trace_id ?? "";
  trace.getActiveSpan()?.setAttributes({
    "handoff.job.id": id,
    "handoff.stream": stream,
    "handoff.idempotent_replay": true,
  });
  request.log.info({ job_id: id, stream }, "job replayed for its idempotency key");
  const headers = { ...jobHeaders(id, traceId), [REPLAYED_HEADER.toLowerCase()]: "true" };

  if (stream) {
    const sse = openSse(reply, headers);
    const writer = dialect.stream(sse, { id, createdAt: current.created_at, traceId }, body);
    let record: JobRecord | undefined;
    let failed: HandoffError | undefined;
    try {
      record = isTerminal(current.status)
        ? current
        : await waitForJob(deps.jobs.store, id, timeoutMs, sse.signal);
    } catch (error) {
      failed = toHandoffError(error);
      request.log.error({ err: error, job_id: id }, "replayed job could not be followed");
    }
    if (sse.closed) return undefined;
    if (!record || record.status === "failed" || !record.result) {
      writer.error(failed ?? jobFailure(record, timeoutMs, id));
    } else {
      writer.answer({ ...record, result: record.result }, record.result.message.content ?? "");
    }
    sse.end();
    return undefined;
  }

  const record = isTerminal(current.status)
    ? current
    : await waitForJob(deps.jobs.store, id, timeoutMs);
  reply.headers(headers);
  if (!record || record.status === "failed" || !record.result) {
    const { status, body: failure } = dialect.failure(
      jobFailure(record, timeoutMs, id),
      context(id, traceId),
    );
    return reply.status(status).send(failure);
  }
  reply.headers(cacheHeader(record));
  return dialect.answer({ ...record, result: record.result }, traceId, body);
}
