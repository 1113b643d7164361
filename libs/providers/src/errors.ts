import { HandoffError } from "@handoff/contracts";
import { redactSecrets } from "@handoff/telemetry";
import type { ReplyHeaders } from "./http.js";

/** Why a provider call failed, as far as the resilience layer cares. */
export type ProviderFailure =
  | "rate_limit" // 429: retry after a while, maybe elsewhere
  | "overloaded" // 529 and friends
  | "server" // 5xx
  | "timeout" // no answer within the attempt's timeout
  | "network" // connection refused, reset, DNS
  | "malformed" // a response or stream that breaks the wire format
  | "auth" // 401/403: this deployment is misconfigured
  | "bad_request" // 400: the request itself is wrong; another deployment would say the same
  | "not_found" // 404: wrong model name or URL
  | "context_length"; // the prompt does not fit the model

/** Failures that a retry (here or at another deployment) may cure. */
const RETRYABLE = new Set<ProviderFailure>([
  "rate_limit",
  "overloaded",
  "server",
  "timeout",
  "network",
  "malformed",
]);

export interface ProviderErrorDetails {
  failure: ProviderFailure;
  /** Which deployment failed, e.g. `openai-compatible:gpt-4o-mini`. */
  deployment: string;
  /** HTTP status, when there was a response. */
  status?: number;
  /** What the provider asked us to wait (Retry-After / retry-after-ms), in milliseconds. */
  retryAfterMs?: number;
}

/**
 * A failed provider call, classified. Adapters throw it; the resilience layer reads it. The
 * message usually quotes the upstream (its error body, a transport error), and an upstream may
 * echo the key it was sent ("Incorrect API key provided: sk-..."): the message is scrubbed of
 * every registered secret here, before it becomes a job error, a span event or a client's error
 * body. The error's stack is taken from the scrubbed message.
 */
export function providerError(
  message: string,
  details: ProviderErrorDetails,
  cause?: unknown,
): HandoffError {
  const retryable = RETRYABLE.has(details.failure);
  return new HandoffError(
    retryable ? "HANDOFF_ERR_PROVIDER" : "HANDOFF_ERR_PROVIDER_REJECTED",
    redactSecrets(message),
    {
      retryable,
      details: { ...details },
      ...(cause === undefined ? {} : { cause }),
    },
  );
}

/** The classification of a provider error, if it is one. */
export function providerDetails(error: unknown): ProviderErrorDetails | undefined {
  if (!(error instanceof HandoffError) || !error.details) return undefined;
  const failure = error.details.failure;
  return typeof failure === "string"
    ? (error.details as unknown as ProviderErrorDetails)
    : undefined;
}

/**
 * `Retry-After` (seconds or an HTTP date) or `retry-after-ms`, in milliseconds; undefined when
 * absent or unreadable. Capped at ten minutes so a hostile header cannot park a job forever.
 */
export function retryAfterMs(headers: ReplyHeaders, now = Date.now()): number | undefined {
  const cap = 600_000;
  const ms = headers.get("retry-after-ms");
  if (ms !== null && ms.trim() !== "" && Number.isFinite(Number(ms))) {
    return Math.min(cap, Math.max(0, Number(ms)));
  }
  const value = headers.get("retry-after");
  if (value === null || value.trim() === "") return undefined;
  if (/^\d+(\.\d+)?$/.test(value.trim())) return Math.min(cap, Number(value) * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.min(cap, Math.max(0, date - now));
}

const CONTEXT_LENGTH =
  /context[_ ]length|maximum context|context window|too many tokens|prompt is too long|input is too long/i;

/**
 * Classifies an HTTP error response of any provider: status first, then the body for the
 * context-length case, which vendors report as a 400 with a telling message.
 */
export function httpFailure(status: number, body: string): ProviderFailure {
  if (status === 429) return "rate_limit";
  if (status === 401 || status === 403) return "auth";
  if (status === 404) return "not_found";
  if (status === 408) return "timeout";
  if (status === 413 || ((status === 400 || status === 422) && CONTEXT_LENGTH.test(body))) {
    return "context_length";
  }
  if (status === 529 || status === 503) return "overloaded";
  if (status >= 500) return "server";
  if (status === 409) return "server";
  return "bad_request";
}
