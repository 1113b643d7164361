import { type HandoffError, isTerminal, type JobRecord } from "@handoff/contracts";
import { activeTraceId, checkJobFits, recordFromEnvelope } from "@handoff/mesh";
import { trace } from "@opentelemetry/api";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { errorBody, jobFailure, toHandoffError } from "../errors.js";
import {
  idempotencyStoreFor,
  REPLAYED_HEADER,
  type Replay,
  requestHash,
  waitForJob,
} from "../idempotency.js";
import { resolveModel } from "../mapping.js";
import {
  chatRequestFrom,
  failedResponse,
  parseResponsesRequest,
  pendingResponse,
  ResponseEvents,
  type ResponsesRequest,
  responseFromRecord,
} from "../responses.js";
import { openSse, type SseStream } from "../sse.js";
import { relayStreamedJob } from "../streaming.js";
import { submissionFor } from "../submission.js";
import { inRequestSpan } from "../tracing.js";
import type { ChatRouteDeps } from "./chat-completions.js";

const ROUTE = "POST /v1/responses";

/** A response's events written as server-sent events, each named by its type. */
function eventsOn(sse: SseStream, jobId: string, createdAt: string, body: ResponsesRequest) {
  return new ResponseEvents(jobId, pendingResponse(jobId, createdAt, body), (event) =>
    sse.send(event, event.type),
  );
}

/**
 * `POST /v1/responses`: OpenAI's Responses request in, run as the same job a chat completion is
 * (same validation of limits, deadline, budget, owner and `Idempotency-Key`), answered as OpenAI's
 * `response` object or its typed event stream, plus the `handoff` report.
 */
export function registerResponses(app: FastifyInstance, deps: ChatRouteDeps): void {
  app.post("/v1/responses", (request, reply) =>
    inRequestSpan(request, async () => {
      const body = parseResponsesRequest(request.body);
      // As on the chat route: an unknown model is a 404 naming it, an alias the model it names.
      const model = resolveModel(body.model, deps.config);
      const submission = submissionFor(request, deps.config, chatRequestFrom(body));
      submission.envelope.input.model = model;
      const { envelope, timeoutMs, idempotencyKey } = submission;
      const traceId = activeTraceId() ?? "";
      const span = trace.getActiveSpan();

      if (envelope.input.stream) {
        // Once the stream is open its status is 200: a job too large for NATS is refused first.
        const record = recordFromEnvelope(envelope, "queued", traceId || undefined);
        checkJobFits(envelope, record, deps.maxPayload?.());
      }

      const claim =
        idempotencyKey === undefined
          ? undefined
          : await (deps.idempotency ?? (await idempotencyStoreFor(deps.jobs, deps.config))).acquire(
              {
                tenant: request.apiKeyName ?? "",
                key: idempotencyKey,
                bodyHash: requestHash(ROUTE, request.body),
                job: {
                  job_id: envelope.id,
                  created_at: envelope.created_at,
                  deadline: envelope.budget.deadline,
                  ...(traceId ? { trace_id: traceId } : {}),
                },
              },
            );
      if (claim?.kind === "replay") return replay(request, reply, deps, body, timeoutMs, claim);

      span?.setAttributes({
        "handoff.job.id": envelope.id,
        "handoff.stream": envelope.input.stream,
      });
      request.log.info(
        { job_id: envelope.id, timeout_ms: timeoutMs, stream: envelope.input.stream },
        "job submitted",
      );
      const headers = {
        "x-handoff-job-id": envelope.id,
        ...(traceId ? { "x-handoff-trace-id": traceId } : {}),
      };

      if (envelope.input.stream) {
        const sse = openSse(reply, headers);
        const events = eventsOn(sse, envelope.id, envelope.created_at, body);
        events.start();
        await relayStreamedJob(request, sse, submission, deps.jobs, traceId, {
          text: (delta) => events.text(delta),
          answer: (record) => events.answer(responseFromRecord(record, traceId, body)),
          error: (error) =>
            events.fail(failedResponse(envelope.id, envelope.created_at, body, error)),
        });
        // A job that could not be queued must not keep the key.
        await claim?.releaseUnlessStarted();
        return;
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
        const error = jobFailure(record, timeoutMs, envelope.id);
        return reply
          .status(error.status)
          .send(
            errorBody(error, { job_id: envelope.id, ...(traceId ? { trace_id: traceId } : {}) }),
          );
      }
      return responseFromRecord({ ...record, result: record.result }, traceId, body);
    }),
  );
}

/**
 * The answer to a request whose `Idempotency-Key` an earlier, identical request holds: that
 * request's job, waited for (up to this request's own timeout) and answered as it would have
 * been, with `Idempotent-Replayed: true`. Nothing is submitted. A streamed replay opens its
 * stream at once and sends the stored answer whole when the job ends.
 */
async function replay(
  request: FastifyRequest,
  reply: FastifyReply,
  deps: ChatRouteDeps,
  body: ResponsesRequest,
  timeoutMs: number,
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
    const events = eventsOn(sse, id, current.created_at, body);
    events.start();
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
      const error = failed ?? jobFailure(record, timeoutMs, id);
      events.fail(failedResponse(id, current.created_at, body, error));
    } else {
      events.answer(responseFromRecord({ ...record, result: record.result }, traceId, body));
    }
    sse.end();
    return undefined;
  }

  const record = isTerminal(current.status)
    ? current
    : await waitForJob(deps.jobs.store, id, timeoutMs);
  reply.headers(headers);
  if (!record || record.status === "failed" || !record.result) {
    const error = jobFailure(record, timeoutMs, id);
    return reply
      .status(error.status)
      .send(errorBody(error, { job_id: id, ...(traceId ? { trace_id: traceId } : {}) }));
  }
  return responseFromRecord({ ...record, result: record.result }, traceId, body);
}
