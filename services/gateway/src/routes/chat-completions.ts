import type { HandoffConfig } from "@handoff/config";
import { activeTraceId, recordFromEnvelope } from "@handoff/mesh";
import { trace } from "@opentelemetry/api";
import type { FastifyInstance } from "fastify";
import { errorBody, jobFailure } from "../errors.js";
import type { JobClient } from "../job-client.js";
import { completionFromRecord } from "../mapping.js";
import { streamCompletion } from "../streaming.js";
import { parseSubmission } from "../submission.js";
import { checkJobFits } from "../submit-guards.js";
import { inRequestSpan } from "../tracing.js";

export interface ChatRouteDeps {
  jobs: JobClient;
  config: HandoffConfig;
  /** The NATS server's `max_payload`, checked before a stream opens (a 413, not an event). */
  maxPayload?: () => number | undefined;
}

/** `POST /v1/chat/completions`: OpenAI's request in, OpenAI's answer (or stream) out, plus `handoff`. */
export function registerChatCompletions(app: FastifyInstance, deps: ChatRouteDeps): void {
  app.post("/v1/chat/completions", (request, reply) =>
    inRequestSpan(request, async () => {
      const submission = parseSubmission(request, deps.config);
      const { envelope, timeoutMs, body } = submission;
      const traceId = activeTraceId() ?? "";
      const span = trace.getActiveSpan();
      span?.setAttributes({
        "handoff.job.id": envelope.id,
        "handoff.stream": envelope.input.stream,
      });
      request.log.info(
        { job_id: envelope.id, timeout_ms: timeoutMs, stream: body.stream === true },
        "job submitted",
      );

      if (envelope.input.stream) {
        // Once the stream is open its status is 200: a job too large for NATS is refused first.
        const record = recordFromEnvelope(envelope, "queued", traceId || undefined);
        checkJobFits(envelope, record, deps.maxPayload?.());
        return streamCompletion(request, reply, submission, deps.jobs, traceId);
      }

      reply.header("x-handoff-job-id", envelope.id);
      if (traceId) reply.header("x-handoff-trace-id", traceId);
      const record = await deps.jobs.run(envelope, traceId || undefined);
      if (record) {
        span?.setAttributes({
          "handoff.route": record.hops.join(","),
          "handoff.cost_usd": record.cost_usd,
          "handoff.job.status": record.status,
          ...(record.route ? { "handoff.route.decision": record.route.decision } : {}),
        });
      }
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
