import { ErrorBody, HandoffError } from "@handoff/contracts";
import { describe, expect, it } from "vitest";
import { errorBody, toHandoffError } from "./errors.js";

function fastifyError(code: string, statusCode: number, message: string): Error {
  return Object.assign(new Error(message), { code, statusCode });
}

describe("toHandoffError", () => {
  it("maps a body that is too large to 413", () => {
    const cause = fastifyError("FST_ERR_CTP_BODY_TOO_LARGE", 413, "Request body is too large");
    const error = toHandoffError(cause);
    expect(error.code).toBe("HANDOFF_ERR_BODY_TOO_LARGE");
    expect(error.status).toBe(413);
    expect(error.retryable).toBe(false);
    expect(error.message).toBe("request body is larger than the limit: Request body is too large");
    expect(error.cause).toBe(cause);
  });

  it("names the configured limit of a body that is too large", () => {
    const cause = fastifyError("FST_ERR_CTP_BODY_TOO_LARGE", 413, "Request body is too large");
    expect(toHandoffError(cause, 4_096).message).toBe(
      "request body is larger than the limit of 4096 bytes (limits.max_body_bytes)",
    );
  });

  it("maps a plain object with fastify's code too", () => {
    const error = toHandoffError({
      code: "FST_ERR_CTP_BODY_TOO_LARGE",
      statusCode: 413,
      message: "big",
    });
    expect(error.code).toBe("HANDOFF_ERR_BODY_TOO_LARGE");
    expect(error.status).toBe(413);
  });

  it("maps an unsupported media type to 415", () => {
    const error = toHandoffError(
      fastifyError("FST_ERR_CTP_INVALID_MEDIA_TYPE", 415, "Unsupported Media Type: text/plain"),
    );
    expect(error.code).toBe("HANDOFF_ERR_MEDIA_TYPE");
    expect(error.status).toBe(415);
    expect(error.message).toBe("request body must be application/json");
  });

  it("maps an empty JSON body to a validation error at (root)", () => {
    const error = toHandoffError(fastifyError("FST_ERR_CTP_EMPTY_JSON_BODY", 400, "empty"));
    expect(error.code).toBe("HANDOFF_ERR_VALIDATION");
    expect(error.status).toBe(400);
    expect(error.issues).toEqual([{ path: "(root)", message: "empty body" }]);
  });

  it("maps fastify's invalid JSON error to 400 with the issue at (root)", () => {
    const error = toHandoffError(
      fastifyError("FST_ERR_CTP_INVALID_JSON_BODY", 400, "Body is not valid JSON"),
    );
    expect(error.code).toBe("HANDOFF_ERR_VALIDATION");
    expect(error.status).toBe(400);
    expect(error.message).toBe("request body is not valid JSON: Body is not valid JSON");
    expect(error.issues).toEqual([{ path: "(root)", message: "Body is not valid JSON" }]);
  });

  it("maps the parser's SyntaxError with status 400 to a validation error at (root)", () => {
    let syntax: SyntaxError;
    try {
      JSON.parse("{ nope");
      throw new Error("unreachable");
    } catch (error) {
      syntax = error as SyntaxError;
    }
    const error = toHandoffError(Object.assign(syntax, { statusCode: 400 }));
    expect(error.code).toBe("HANDOFF_ERR_VALIDATION");
    expect(error.status).toBe(400);
    expect(error.message).toBe(`request body is not valid JSON: ${syntax.message}`);
    expect(error.issues).toEqual([{ path: "(root)", message: syntax.message }]);
  });

  it("maps other client errors to a validation error with their message", () => {
    const error = toHandoffError(fastifyError("FST_ERR_SOMETHING", 422, "weird request"));
    expect(error.code).toBe("HANDOFF_ERR_VALIDATION");
    expect(error.message).toBe("weird request");
    expect(error.issues).toBeUndefined();
  });

  it("maps anything else to an internal error", () => {
    const error = toHandoffError(new Error("database on fire"));
    expect(error.code).toBe("HANDOFF_ERR_INTERNAL");
    expect(error.status).toBe(500);
    expect(error.retryable).toBe(false);
    expect(error.message).toBe("database on fire");
    expect(toHandoffError(fastifyError("X", 503, "upstream")).code).toBe("HANDOFF_ERR_INTERNAL");
  });

  it("returns a HandoffError unchanged", () => {
    const original = new HandoffError("HANDOFF_ERR_DEADLINE", "too slow");
    expect(toHandoffError(original)).toBe(original);
  });
});

describe("errorBody", () => {
  it("gives OpenAI's error shape with param the first issue path", () => {
    const error = new HandoffError("HANDOFF_ERR_VALIDATION", "request body is invalid", {
      issues: [
        { path: "messages[0].role", message: "Invalid input" },
        { path: "n", message: "only n = 1 is supported" },
      ],
    });
    const body = errorBody(error);
    expect(body).toEqual({
      error: {
        message: "request body is invalid",
        type: "invalid_request_error",
        param: "messages[0].role",
        code: "HANDOFF_ERR_VALIDATION",
        issues: [
          { path: "messages[0].role", message: "Invalid input" },
          { path: "n", message: "only n = 1 is supported" },
        ],
        total_issues: 2,
      },
    });
    expect(ErrorBody.parse(body)).toEqual(body);
  });

  it("carries at most 20 issues and the total count", () => {
    const issues = Array.from({ length: 45 }, (_, i) => ({ path: `a${i}`, message: "bad" }));
    const body = errorBody(new HandoffError("HANDOFF_ERR_VALIDATION", "invalid", { issues }));
    expect(body.error.issues).toHaveLength(20);
    expect(body.error.issues?.[19]?.path).toBe("a19");
    expect(body.error.total_issues).toBe(45);
    expect(ErrorBody.parse(body)).toEqual(body);
  });

  it("gives a null param for a root issue and no issues", () => {
    const root = toHandoffError(fastifyError("FST_ERR_CTP_INVALID_JSON_BODY", 400, "bad"));
    expect(errorBody(root).error.param).toBeNull();
    const none = errorBody(new HandoffError("HANDOFF_ERR_PROVIDER", "upstream failed"));
    expect(none).toEqual({
      error: {
        message: "upstream failed",
        type: "upstream_error",
        param: null,
        code: "HANDOFF_ERR_PROVIDER",
      },
    });
  });

  it("adds the job and trace ids when given", () => {
    const body = errorBody(new HandoffError("HANDOFF_ERR_DEADLINE", "no answer in time"), {
      job_id: "job_12345678",
      trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
    });
    expect(body.error).toMatchObject({
      type: "timeout_error",
      code: "HANDOFF_ERR_DEADLINE",
      job_id: "job_12345678",
      trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
    });
    expect(ErrorBody.safeParse(body).success).toBe(true);
  });

  it("types a 413 as an invalid request", () => {
    const error = toHandoffError(fastifyError("FST_ERR_CTP_BODY_TOO_LARGE", 413, "big"));
    expect(errorBody(error).error.type).toBe("invalid_request_error");
    expect(errorBody(error).error.code).toBe("HANDOFF_ERR_BODY_TOO_LARGE");
  });
});
