import type { HandoffConfig } from "@handoff/config";
import {
  type ChatCompletionChunk,
  completionFromRecord,
  type HandoffError,
  isTerminal,
  type JobRecord,
} from "@handoff/contracts";
import { activeTraceId, checkJobFits, type JobClient, recordFromEnvelope } from "@handoff/mesh";
import { trace } from "@opentelemetry/api";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { errorBody, jobFailure, toHandoffError } from "../errors.js";
import {
  type IdempotencyStore,
  idempotencyStoreFor,
  REPLAYED_HEADER,
  type Replay,
  requestHash,
  waitForJob,
} from "../idempotency.js";
import { openSse } from "../sse.js";
import { streamCompletion } from "../streaming.js";
import { parseSubmission, type Submission } from "../submission.js";
import { inRequestSpan } from "../tracing.js";

export interface ChatRouteDeps {
  jobs: JobClient;
  config: HandoffConfig;
  /** The NATS server's `max_payload`, checked before a stream opens (a 413, not an event). */
  maxPayload?: () => number | undefined;
  /** Where `Idempotency-Key`s are claimed; by default the bucket next to `jobs`' records. */
  idempotency?: IdempotencyStore;
}

const ROUTE = "POST /v1/chat/completions";

/** `POST /v1/chat/completions`: OpenAI's request in, OpenAI's answer (or stream) out, plus `handoff`. */
export function registerChatCompletions(app: FastifyInstance, deps: ChatRouteDeps): void {
  app.post("/v1/chat/completions", (request, reply) =>
    inRequestSpan(request, async () => {
      const submission = parseSubmission(request, deps.config);
      const { envelope, timeoutMs, body, idempotencyKey } = submission;
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
      if (claim?.kind === "replay") return replay(request, reply, deps, submission, claim);

      span?.setAttributes({
        "handoff.job.id": envelope.id,
        "handoff.stream": envelope.input.stream,
      });
      request.log.info(
        { job_id: envelope.id, timeout_ms: timeoutMs, stream: body.stream === true },
        "job submitted",
      );

      if (envelope.input.stream) {
        await streamCompletion(request, reply, submission, deps.jobs, traceId);
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
        const error = jobFailure(record, timeoutMs, envelope.id);
        return reply
          .status(error.status)
          .send(
            errorBody(error, { job_id: envelope.id, ...(traceId ? { trace_id: traceId } : {}) }),
          );
      }
      return completionFromRecord(record, traceId);
    }),
  );
}

/**
 * The answer to a request whose `Idempotency-Key` an earlier, identical request holds: that
 * request's job, waited for (up to this request's own timeout) and answered as it would have
 * been, with `Idempotent-Replayed: true`. Nothing is submitted. A streamed replay opens its
 * stream at once and sends the stored answer whole, in one content chunk, when the job ends.
 */
async function replay(
  request: FastifyRequest,
  reply: FastifyReply,
  deps: ChatRouteDeps,
  { timeoutMs, body }: Submission,
  { entry, record: current }: Replay,
) {
  const id = entry.job_id;
  const traceId = current.trace_id ?? entry.trace_id ?? "";
  trace.getActiveSpan()?.setAttributes({
    "handoff.job.id": id,
    "handoff.stream": body.stream === true,
    "handoff.idempotent_replay": true,
  });
  request.log.info(
    { job_id: id, stream: body.stream === true },
    "job replayed for its idempotency key",
  );
  const headers = {
    "x-handoff-job-id": id,
    ...(traceId ? { "x-handoff-trace-id": traceId } : {}),
    [REPLAYED_HEADER.toLowerCase()]: "true",
  };
  const failureBody = (error: HandoffError) =>
    errorBody(error, { job_id: id, ...(traceId ? { trace_id: traceId } : {}) });

  if (body.stream) {
    await replayStream(request, reply, deps, { timeoutMs, body }, current, headers, failureBody);
    return undefined;
  }
  const record = isTerminal(current.status)
    ? current
    : await waitForJob(deps.jobs.store, id, timeoutMs);
  reply.headers(headers);
  if (!record || record.status === "failed" || !record.result) {
    const error = jobFailure(record, timeoutMs, id);
    return reply.status(error.status).send(failureBody(error));
  }
  return completionFromRecord(record, traceId);
}

/** {@link replay} of a streamed request: the stored answer as chunks, once the job has ended. */
async function replayStream(
  request: FastifyRequest,
  reply: FastifyReply,
  deps: ChatRouteDeps,
  { timeoutMs, body }: Pick<Submission, "timeoutMs" | "body">,
  current: JobRecord,
  headers: Record<string, string>,
  failureBody: (error: HandoffError) => unknown,
): Promise<void> {
  const id = current.id;
  const traceId = headers["x-handoff-trace-id"] ?? "";
  const sse = openSse(reply, headers);
  const created = Math.floor(Date.parse(current.created_at) / 1000);
  const chunk = (
    model: string,
    delta: ChatCompletionChunk["choices"][number]["delta"],
    finish: ChatCompletionChunk["choices"][number]["finish_reason"] = null,
  ): ChatCompletionChunk => ({
    id: `chatcmpl-${id}`,
    object: "chat.completion.chunk",
    created,
    model,
    choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }],
  });
  sse.send(chunk(body.model, { role: "assistant", content: "" }));
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
  if (sse.closed) return;
  if (!record || record.status === "failed" || !record.result) {
    sse.send(failureBody(failed ?? jobFailure(record, timeoutMs, id)));
    sse.end();
    return;
  }
  const completion = completionFromRecord(record, traceId);
  const { model } = completion;
  const message = record.result.message;
  if (message.content) sse.send(chunk(model, { content: message.content }));
  if (message.tool_calls?.length) {
    sse.send(
      chunk(model, {
        tool_calls: message.tool_calls.map((call, index) => ({
          index,
          id: call.id,
          type: "function" as const,
          function: { name: call.function.name, arguments: call.function.arguments },
        })),
      }),
    );
  }
  const last = chunk(model, {}, record.result.finish_reason);
  if (body.stream_options?.include_usage) {
    sse.send(last);
    sse.send({
      ...last,
      choices: [],
      usage: completion.usage,
      handoff: completion.handoff,
    });
  } else {
    sse.send({ ...last, handoff: completion.handoff });
  }
  sse.done();
  sse.end();
}
