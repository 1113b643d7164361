import type { HandoffConfig } from "@handoff/config";
import { ChatCompletionRequest, HandoffError, isErrorCode } from "@handoff/contracts";
import { activeTraceId } from "@handoff/mesh";
import { trace } from "@opentelemetry/api";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { errorBody } from "../errors.js";
import type { JobClient } from "../job-client.js";
import { completionFromRecord, envelopeFromRequest } from "../mapping.js";
import { inRequestSpan } from "../tracing.js";

export interface ChatRouteDeps {
  jobs: JobClient;
  config: HandoffConfig;
}

/** `x-handoff-timeout-ms`, if the client sent a usable one. */
function headerTimeout(request: FastifyRequest): number | undefined {
  const raw = request.headers["x-handoff-timeout-ms"];
  if (raw === undefined) return undefined;
  const value = Number(Array.isArray(raw) ? raw[0] : raw);
  if (!Number.isInteger(value) || value < 100 || value > 600_000) {
    throw new HandoffError(
      "HANDOFF_ERR_VALIDATION",
      "header x-handoff-timeout-ms must be an integer between 100 and 600000",
      { issues: [{ path: "headers.x-handoff-timeout-ms", message: `got "${String(raw)}"` }] },
    );
  }
  return value;
}

/** `POST /v1/chat/completions`: OpenAI's request in, OpenAI's answer out, plus `handoff`. */
export function registerChatCompletions(app: FastifyInstance, deps: ChatRouteDeps): void {
  app.post("/v1/chat/completions", (request, reply) =>
    inRequestSpan(request, async () => {
      const parsed = ChatCompletionRequest.safeParse(request.body);
      if (!parsed.success) throw HandoffError.validation("request body", parsed.error);
      const body = parsed.data;
      if (body.stream) {
        throw new HandoffError(
          "HANDOFF_ERR_UNSUPPORTED",
          "stream: true is not supported by this gateway yet; send stream: false",
          { issues: [{ path: "stream", message: "streaming is not supported yet" }] },
        );
      }

      const timeoutMs =
        body.handoff?.timeout_ms ?? headerTimeout(request) ?? deps.config.limits.request_timeout_ms;
      const envelope = envelopeFromRequest(body, { timeoutMs });
      const traceId = activeTraceId() ?? "";
      const span = trace.getActiveSpan();
      span?.setAttribute("handoff.job.id", envelope.id);
      reply.header("x-handoff-job-id", envelope.id);
      if (traceId) reply.header("x-handoff-trace-id", traceId);
      request.log.info({ job_id: envelope.id, timeout_ms: timeoutMs }, "job submitted");

      // Failures after submission name the job, so the client can look it up later.
      const fail = (error: HandoffError) =>
        reply
          .status(error.status)
          .send(
            errorBody(error, { job_id: envelope.id, ...(traceId ? { trace_id: traceId } : {}) }),
          );

      const record = await deps.jobs.run(envelope, traceId || undefined);
      if (!record) {
        return fail(
          new HandoffError(
            "HANDOFF_ERR_DEADLINE",
            `no answer within ${timeoutMs} ms; the job may still finish: GET /v1/jobs/${envelope.id}`,
          ),
        );
      }
      span?.setAttributes({
        "handoff.route": record.hops.join(","),
        "handoff.cost_usd": record.cost_usd,
        "handoff.job.status": record.status,
        ...(record.route ? { "handoff.route.decision": record.route.decision } : {}),
      });
      if (record.status === "failed" || !record.result) {
        const failure = record.error;
        const code = failure && isErrorCode(failure.code) ? failure.code : "HANDOFF_ERR_INTERNAL";
        return fail(new HandoffError(code, failure?.message ?? "the job ended without an answer"));
      }
      return completionFromRecord(record, traceId);
    }),
  );
}
