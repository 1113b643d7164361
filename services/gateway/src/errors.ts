import {
  type ErrorBody,
  ErrorCodes,
  HandoffError,
  isErrorCode,
  type JobRecord,
  wireErrorCode,
} from "@handoff/contracts";
import type { FastifyError, FastifyReply, FastifyRequest } from "fastify";
import { replyBodyTooLarge } from "./body-limit.js";

interface FastifyLikeError {
  code?: string;
  statusCode?: number;
  message: string;
}

/**
 * Maps fastify's own request errors (body limit, bad JSON, media type) onto Handoff's codes.
 * `bodyLimit`, when given, is named in the message of a body that is too large.
 */
export function toHandoffError(error: unknown, bodyLimit?: number): HandoffError {
  if (error instanceof HandoffError) return error;
  const e = error as FastifyLikeError;
  switch (e.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new HandoffError(
        "HANDOFF_ERR_BODY_TOO_LARGE",
        bodyLimit === undefined
          ? `request body is larger than the limit: ${e.message}`
          : `request body is larger than the limit of ${bodyLimit} bytes (limits.max_body_bytes)`,
        {
          cause: error,
        },
      );
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return new HandoffError("HANDOFF_ERR_MEDIA_TYPE", "request body must be application/json", {
        cause: error,
      });
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return new HandoffError(
        "HANDOFF_ERR_VALIDATION",
        "request body is empty; send a JSON object",
        {
          cause: error,
          issues: [{ path: "(root)", message: "empty body" }],
        },
      );
    case "FST_ERR_CTP_INVALID_JSON_BODY":
      return new HandoffError(
        "HANDOFF_ERR_VALIDATION",
        `request body is not valid JSON: ${e.message}`,
        {
          cause: error,
          issues: [{ path: "(root)", message: e.message }],
        },
      );
  }
  if (e.statusCode === 400 && error instanceof SyntaxError) {
    return new HandoffError(
      "HANDOFF_ERR_VALIDATION",
      `request body is not valid JSON: ${e.message}`,
      {
        cause: error,
        issues: [{ path: "(root)", message: e.message }],
      },
    );
  }
  if (typeof e.statusCode === "number" && e.statusCode >= 400 && e.statusCode < 500) {
    return new HandoffError("HANDOFF_ERR_VALIDATION", e.message, { cause: error });
  }
  return HandoffError.from(error);
}

/** What an error answer names besides the error: the job, the request's trace. */
export interface ErrorContext {
  job_id?: string;
  trace_id?: string;
}

/** An error as one API dialect answers it: the status and the body. */
export type ErrorAnswer = (
  error: HandoffError,
  context: ErrorContext,
) => { status: number; body: unknown };

/**
 * OpenAI's error body: `{ error: { message, type, param, code } }`, plus the issue list (the
 * first 20 issues) and how many issues there were.
 */
export function errorBody(error: HandoffError, extra: ErrorContext = {}): ErrorBody {
  const param = error.issues?.[0]?.path;
  return {
    error: {
      message: error.message,
      type: ErrorCodes[error.code].type,
      param: param && param !== "(root)" ? param : null,
      // OpenAI's own code where it has one (`model_not_found`), so clients branch as on OpenAI.
      code: wireErrorCode(error.code),
      ...(error.issues ? { issues: error.issues, total_issues: error.totalIssues } : {}),
      ...extra,
    },
  };
}

/** An error in OpenAI's shape ({@link errorBody}), with the status of its code. */
export const openAiError: ErrorAnswer = (error, context) => ({
  status: error.status,
  body: errorBody(error, context),
});

/**
 * An error handler answering in the shape `answer` writes. The one place a failed request is
 * logged, once (fastify logs nothing of its own for errors a handler like this one answers): a
 * 5xx with its error, a 4xx with its code and issues (already bounded: 20). A body refused before
 * it was read is answered so that a client still sending it reads the 413.
 */
export function errorHandler(bodyLimit: number, answer: ErrorAnswer) {
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
    const { status, body } = answer(handoffError, traceId ? { trace_id: traceId } : {});
    if (handoffError.code === "HANDOFF_ERR_BODY_TOO_LARGE" && !request.raw.complete) {
      replyBodyTooLarge(request, reply, status, body);
      return;
    }
    return reply.status(status).send(body);
  };
}

/** The error a finished job reports, or one for a job that never finished. */
export function jobFailure(
  record: JobRecord | undefined,
  timeoutMs: number,
  jobId: string,
): HandoffError {
  if (!record) {
    return new HandoffError(
      "HANDOFF_ERR_DEADLINE",
      `no answer within ${timeoutMs} ms; the job may still finish: GET /v1/jobs/${jobId}`,
    );
  }
  const failure = record.error;
  const code = failure && isErrorCode(failure.code) ? failure.code : "HANDOFF_ERR_INTERNAL";
  return new HandoffError(code, failure?.message ?? "the job ended without an answer");
}
