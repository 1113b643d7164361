import { type HandoffError, isTerminal, type JobRecord } from "@handoff/contracts";
import { activeTraceId, checkJobFits, recordFromEnvelope } from "@handoff/mesh";
import { trace } from "@opentelemetry/api";
import type {
  FastifyError,
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  preSerializationAsyncHookHandler,
} from "fastify";
import {
  anthropicError,
  anthropicErrorFromOpenAi,
  type ErrorContext,
  MessageEvents,
  messageFromRecord,
  parseMessagesRequest,
  toChatRequest,
} from "../anthropic.js";
import { replyBodyTooLarge } from "../body-limit.js";
import { jobFailure, toHandoffError } from "../errors.js";
import {
  idempotencyStoreFor,
  REPLAYED_HEADER,
  type Replay,
  requestHash,
  waitForJob,
} from "../idempotency.js";
import { openSse } from "../sse.js";
import { relayStreamedJob } from "../streaming.js";
import { type Submission, submissionFor } from "../submission.js";
import { inRequestSpan } from "../tracing.js";
import type { ChatRouteDeps } from "./chat-completions.js";

export type MessagesRouteDeps = ChatRouteDeps;

const ROUTE = "POST /v1/messages";

const context = (jobId: string, traceId: string): ErrorContext => ({
  job_id: jobId,
  ...(traceId ? { trace_id: traceId } : {}),
});

/**
 * This route's error handler: the app's (one log line per failed request, a refused body drained
 * so the client reads its 413), answering in Anthropic's shape. It also answers what the hooks
 * before the handler throw, so a missing or wrong key is an `authentication_error`.
 */
function errorHandler(bodyLimit: number) {
  return (error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const handoffError = toHandoffError(error, bodyLimit);
    if (handoffError.status >= 500) request.log.error({ err: error }, handoffError.message);
    else
      request.log.info(
        {
          code: handoffError.code,
          ...(handoffError.issues
            ? { issues: handoffError.issues, total_issues: handoffError.totalIssues }
            : {}),
        },
        handoffError.message,
      );
    const traceId = request.otelSpan?.spanContext().traceId;
    const { status, body } = anthropicError(handoffError, traceId ? { trace_id: traceId } : {});
    if (handoffError.code === "HANDOFF_ERR_BODY_TOO_LARGE" && !request.raw.complete) {
      replyBodyTooLarge(request, reply, status, body);
      return;
    }
    return reply.status(status).send(body);
  };
}

/** An error the app's hooks answer rather than throw (the start-up gate's 503), in Anthropic's shape. */
const anthropicErrors: preSerializationAsyncHookHandler = async (_request, reply, payload) =>
  anthropicErrorFromOpenAi(payload, reply.statusCode) ?? payload;

/**
 * `POST /v1/messages`: Anthropic's Messages request in, Anthropic's `message` (or its events) out,
 * plus `handoff`. The request is read into the chat-completions shape and submitted exactly as
 * `POST /v1/chat/completions` submits it: the same deadline, budget, owner, payload and
 * `Idempotency-Key` rules, and the same streaming relay.
 */
export function registerMessages(app: FastifyInstance, deps: MessagesRouteDeps): void {
  app.post(
    "/v1/messages",
    {
      errorHandler: errorHandler(deps.config.limits.max_body_bytes),
      preSerialization: anthropicErrors,
    },
    (request, reply) =>
      inRequestSpan(request, async () => {
        const submission = submissionFor(
          request,
          deps.config,
          toChatRequest(parseMessagesRequest(request.body)),
        );
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
            : await (
                deps.idempotency ?? (await idempotencyStoreFor(deps.jobs, deps.config))
              ).acquire({
                tenant: request.apiKeyName ?? "",
                key: idempotencyKey,
                bodyHash: requestHash(ROUTE, request.body),
                job: {
                  job_id: envelope.id,
                  created_at: envelope.created_at,
                  deadline: envelope.budget.deadline,
                  ...(traceId ? { trace_id: traceId } : {}),
                },
              });
        if (claim?.kind === "replay") return replay(request, reply, deps, submission, claim);

        span?.setAttributes({ "handoff.job.id": envelope.id, "handoff.stream": stream });
        request.log.info(
          { job_id: envelope.id, timeout_ms: timeoutMs, stream, api: "anthropic" },
          "job submitted",
        );

        if (stream) {
          const sse = openSse(reply, {
            "x-handoff-job-id": envelope.id,
            ...(traceId ? { "x-handoff-trace-id": traceId } : {}),
          });
          const events = new MessageEvents((event) => sse.send(event, event.type), {
            jobId: envelope.id,
            traceId,
          });
          await relayStreamedJob(request, sse, submission, deps.jobs, traceId, events);
          // A job that could not be queued must not keep the key.
          await claim?.releaseUnlessStarted();
          return;
        }

        reply.header("x-handoff-job-id", envelope.id);
        if (traceId) reply.header("x-handoff-trace-id", traceId);
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
          const { status, body } = anthropicError(
            jobFailure(record, timeoutMs, envelope.id),
            context(envelope.id, traceId),
          );
          return reply.status(status).send(body);
        }
        return messageFromRecord(record, traceId);
      }),
  );
}

/**
 * The answer to a request whose `Idempotency-Key` an earlier, identical request holds: that
 * request's job, waited for (up to this request's own timeout) and answered as it would have been,
 * with `Idempotent-Replayed: true`. Nothing is submitted. A streamed replay opens its stream at
 * once and sends the stored answer whole once the job ends.
 */
async function replay(
  request: FastifyRequest,
  reply: FastifyReply,
  deps: MessagesRouteDeps,
  { timeoutMs, body }: Submission,
  { entry, record: current }: Replay,
) {
  const id = entry.job_id;
  const traceId = current.trace_id ?? entry.trace_id ?? "";
  const stream = body.stream === true;
  trace.getActiveSpan()?.setAttributes({
    "handoff.job.id": id,
    "handoff.stream": stream,
    "handoff.idempotent_replay": true,
  });
  request.log.info({ job_id: id, stream }, "job replayed for its idempotency key");
  const headers = {
    "x-handoff-job-id": id,
    ...(traceId ? { "x-handoff-trace-id": traceId } : {}),
    [REPLAYED_HEADER.toLowerCase()]: "true",
  };

  if (stream) {
    const sse = openSse(reply, headers);
    const events = new MessageEvents((event) => sse.send(event, event.type), {
      jobId: id,
      traceId,
    });
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
      events.error(failed ?? jobFailure(record, timeoutMs, id));
    } else {
      events.answer({ ...record, result: record.result }, record.result.message.content ?? "");
    }
    sse.end();
    return undefined;
  }

  const record = isTerminal(current.status)
    ? current
    : await waitForJob(deps.jobs.store, id, timeoutMs);
  reply.headers(headers);
  if (!record || record.status === "failed" || !record.result) {
    const { status, body: failure } = anthropicError(
      jobFailure(record, timeoutMs, id),
      context(id, traceId),
    );
    return reply.status(status).send(failure);
  }
  return messageFromRecord(record, traceId);
}
