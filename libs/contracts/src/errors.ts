import type { z } from "zod";
import { type Issue, toIssues } from "./dead-letter.js";

/**
 * Every error code Handoff emits, with the HTTP status the gateway answers with, the OpenAI error
 * `type` it maps to, and whether the mesh runner may retry work that failed with it.
 */
export const ErrorCodes = {
  HANDOFF_ERR_VALIDATION: { status: 400, type: "invalid_request_error", retryable: false },
  HANDOFF_ERR_UNSUPPORTED: { status: 400, type: "invalid_request_error", retryable: false },
  HANDOFF_ERR_BODY_TOO_LARGE: { status: 413, type: "invalid_request_error", retryable: false },
  /** The job would not fit in one NATS message: the server's `max_payload`. */
  HANDOFF_ERR_MAX_PAYLOAD: { status: 413, type: "invalid_request_error", retryable: false },
  HANDOFF_ERR_MEDIA_TYPE: { status: 415, type: "invalid_request_error", retryable: false },
  HANDOFF_ERR_NOT_FOUND: { status: 404, type: "not_found_error", retryable: false },
  /**
   * A model name the gateway does not serve (nor `gateway.model_aliases` maps). On the wire it
   * carries OpenAI's own code, `model_not_found`, which clients branch on.
   */
  HANDOFF_ERR_MODEL_NOT_FOUND: {
    status: 404,
    type: "invalid_request_error",
    retryable: false,
    openai_code: "model_not_found",
  },
  /** An `Idempotency-Key` sent again with a different request than the one that first used it. */
  HANDOFF_ERR_IDEMPOTENCY_MISMATCH: {
    status: 422,
    type: "idempotency_error",
    retryable: false,
  },
  /** No API key, or one the gateway does not know: OpenAI answers the same with a 401. */
  HANDOFF_ERR_UNAUTHORIZED: { status: 401, type: "invalid_request_error", retryable: false },
  /** A key's request rate is spent; `requests` is the type OpenAI gives a requests-per-minute limit. */
  HANDOFF_ERR_RATE_LIMITED: { status: 429, type: "requests", retryable: true },
  HANDOFF_ERR_BUDGET: { status: 402, type: "budget_exceeded", retryable: false },
  HANDOFF_ERR_INVALID_MESSAGE: { status: 500, type: "server_error", retryable: false },
  HANDOFF_ERR_HOP_LIMIT: { status: 500, type: "server_error", retryable: false },
  HANDOFF_ERR_DEADLINE: { status: 504, type: "timeout_error", retryable: false },
  HANDOFF_ERR_UNAVAILABLE: { status: 503, type: "server_error", retryable: true },
  HANDOFF_ERR_PROVIDER: { status: 502, type: "upstream_error", retryable: true },
  HANDOFF_ERR_PROVIDER_REJECTED: { status: 502, type: "upstream_error", retryable: false },
  HANDOFF_ERR_RETRIES_EXHAUSTED: { status: 502, type: "upstream_error", retryable: false },
  HANDOFF_ERR_CONFIG: { status: 500, type: "server_error", retryable: false },
  HANDOFF_ERR_INTERNAL: { status: 500, type: "server_error", retryable: false },
} as const satisfies Record<
  string,
  {
    status: number;
    type: string;
    retryable: boolean;
    /** The `error.code` OpenAI gives the same failure, sent instead of the Handoff code. */
    openai_code?: string;
  }
>;
export type ErrorCode = keyof typeof ErrorCodes;

/** The `error.code` an error goes by on the wire: OpenAI's own where it has one, else `code`. */
export function wireErrorCode(code: ErrorCode): string {
  const entry: { status: number; openai_code?: string } = ErrorCodes[code];
  return entry.openai_code ?? code;
}

export interface HandoffErrorOptions {
  /** Overrides the code's default retryability (a provider 429 is retryable, a 400 is not). */
  retryable?: boolean;
  /** Schema issues or other structured detail, returned to the caller; the first 20 are kept. */
  issues?: Issue[];
  /** How many issues there were in all, when `issues` is already a selection of them. */
  totalIssues?: number;
  details?: Record<string, unknown>;
  cause?: unknown;
}

/**
 * The one error type of the project. The mesh runner decides ack, nak or terminate from
 * `retryable` alone; the gateway maps `code` to an HTTP status and OpenAI's error shape.
 */
export class HandoffError extends Error {
  override readonly name = "HandoffError";
  readonly code: ErrorCode;
  readonly retryable: boolean;
  /** At most {@link MAX_ISSUES}, each cut to a bounded length. */
  readonly issues: Issue[] | undefined;
  /** How many issues there were, of which `issues` holds the first; undefined without issues. */
  readonly totalIssues: number | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: HandoffErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? ErrorCodes[code].retryable;
    this.issues = options.issues && boundIssues(options.issues);
    this.totalIssues = options.issues
      ? Math.max(options.totalIssues ?? 0, options.issues.length)
      : undefined;
    this.details = options.details;
  }

  get status(): number {
    return ErrorCodes[this.code].status;
  }

  static retryable(code: ErrorCode, message: string, options: HandoffErrorOptions = {}) {
    return new HandoffError(code, message, { ...options, retryable: true });
  }

  static nonRetryable(code: ErrorCode, message: string, options: HandoffErrorOptions = {}) {
    return new HandoffError(code, message, { ...options, retryable: false });
  }

  /**
   * A validation failure whose message names the failing paths: the first {@link MAX_ISSUES},
   * then how many more there are, so a request with a million errors makes a small answer.
   */
  static validation(what: string, error: z.ZodError, code: ErrorCode = "HANDOFF_ERR_VALIDATION") {
    const issues = toIssues(error);
    const shown = boundIssues(issues);
    const more = issues.length - shown.length;
    const summary =
      shown.map((i) => `${i.path}: ${i.message}`).join("; ") +
      (more > 0 ? `; and ${more} more (${issues.length} issues)` : "");
    return new HandoffError(code, `${what} is invalid: ${summary}`, { issues, cause: error });
  }

  /** Wraps anything thrown. Unknown errors are internal and not retryable. */
  static from(error: unknown): HandoffError {
    if (error instanceof HandoffError) return error;
    const message = error instanceof Error ? error.message : String(error);
    return new HandoffError("HANDOFF_ERR_INTERNAL", message, { cause: error });
  }

  /** The form errors take on the wire (job envelopes, records, dead letters). */
  toJSON() {
    return {
      code: this.code,
      message: this.message,
      retryable: this.retryable,
      ...(this.issues ? { issues: this.issues } : {}),
    };
  }
}

/** The most issues an error carries; `totalIssues` counts the rest. */
export const MAX_ISSUES = 20;
/** The longest issue path and message an error keeps; a longer one is cut, ending in "…". */
export const MAX_ISSUE_TEXT = 1_024;

function cut(text: string): string {
  return text.length <= MAX_ISSUE_TEXT ? text : `${text.slice(0, MAX_ISSUE_TEXT - 1)}…`;
}

/**
 * The first {@link MAX_ISSUES} issues, each path and message at most {@link MAX_ISSUE_TEXT}
 * characters: what an error returns and logs, however many issues a request made.
 */
export function boundIssues(issues: readonly Issue[]): Issue[] {
  return issues.slice(0, MAX_ISSUES).map((issue) => ({
    path: cut(issue.path),
    message: cut(issue.message),
  }));
}

export function isErrorCode(value: string): value is ErrorCode {
  return Object.hasOwn(ErrorCodes, value);
}
