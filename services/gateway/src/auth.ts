import { createHash, timingSafeEqual } from "node:crypto";
import type { ApiKey } from "@handoff/config";
import { HandoffError } from "@handoff/contracts";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import {
  type Clock,
  type FailureLimit,
  FailureThrottle,
  formatResetDuration,
  monotonicClock,
  TokenBucket,
} from "./rate-limit.js";

/** What a key may do beyond its own jobs (`gateway.api_keys[].scopes`). */
export type ApiKeyScope = ApiKey["scopes"][number];

declare module "fastify" {
  interface FastifyRequest {
    /** The name of the API key the request authenticated with; unset when the API is open. */
    apiKeyName?: string;
    /** That key's scopes; unset when the API is open. */
    apiKeyScopes?: readonly ApiKeyScope[];
  }
}

/**
 * Routes that answer without a key, by their route pattern: probes (an orchestrator has no key),
 * and the API's own description, which a client reads to learn how to authenticate.
 */
export const OPEN_ROUTES: ReadonlySet<string> = new Set([
  "/",
  "/healthz",
  "/readyz",
  "/openapi.json",
]);

/** A configured API key, read from its environment variable at start. */
export interface ApiKeyEntry {
  /** Who holds the key: logs and spans show this, never the key. */
  readonly name: string;
  /** sha256 of the key. Only the digest is kept, and compared in constant time. */
  readonly digest: Buffer;
  /** Absent: no limit. */
  readonly requestsPerMinute?: number;
  /** `admin`: reads every job, not only its own. */
  readonly scopes: readonly ApiKeyScope[];
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

/**
 * Reads each configured key from the environment variable its `key_env` names. A variable that is
 * unset or empty is a startup error naming it: a gateway that silently dropped a key would lock
 * that client out, and one that ran open would be worse. Surrounding whitespace is trimmed (secret
 * files often end in a newline). Two variables holding the same key are an error too: the key
 * would name two callers.
 */
export function loadApiKeys(
  keys: readonly (Omit<ApiKey, "scopes"> & Partial<Pick<ApiKey, "scopes">>)[],
  env: Readonly<Record<string, string | undefined>>,
): ApiKeyEntry[] {
  const byDigest = new Map<string, string>();
  return keys.map((key) => {
    const value = env[key.key_env]?.trim();
    if (!value) {
      throw new HandoffError(
        "HANDOFF_ERR_CONFIG",
        `API key "${key.name}": environment variable ${key.key_env} is not set or is empty`,
      );
    }
    const digest = sha256(value);
    const hex = digest.toString("hex");
    const other = byDigest.get(hex);
    if (other !== undefined) {
      throw new HandoffError(
        "HANDOFF_ERR_CONFIG",
        `API keys "${other}" and "${key.name}" hold the same key; give each client its own`,
      );
    }
    byDigest.set(hex, key.name);
    return {
      name: key.name,
      digest,
      ...(key.requests_per_minute !== undefined
        ? { requestsPerMinute: key.requests_per_minute }
        : {}),
      scopes: [...(key.scopes ?? [])],
    };
  });
}

/** The key a request presents, and the header it came in (for the error's `param`). */
interface PresentedKey {
  key: string;
  header: "authorization" | "api-key" | "x-api-key";
}

function firstHeader(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/**
 * `Authorization: Bearer <key>` as OpenAI's clients send it, else `api-key: <key>` as Azure's do,
 * else `x-api-key: <key>` as Anthropic's do. The first one present is the key presented.
 */
function presentedKey(request: FastifyRequest): PresentedKey | undefined {
  const authorization = firstHeader(request.headers.authorization)?.trim();
  // The scheme name is case-insensitive (RFC 9110, section 11.1).
  const bearer = authorization?.match(/^bearer\s+(\S+)$/i)?.[1];
  if (bearer) return { key: bearer, header: "authorization" };
  for (const header of ["api-key", "x-api-key"] as const) {
    const key = firstHeader(request.headers[header])?.trim();
    if (key) return { key, header };
  }
  return undefined;
}

/**
 * The entry whose key is `presented`, comparing sha256 digests with `timingSafeEqual`. Hashing
 * first gives equal-length buffers whatever was sent, and every entry is compared (no early
 * exit), so the time taken says nothing about how close a guess came or which key it matched.
 */
function matchKey(entries: readonly ApiKeyEntry[], presented: string): ApiKeyEntry | undefined {
  const digest = sha256(presented);
  let found: ApiKeyEntry | undefined;
  for (const entry of entries) {
    if (timingSafeEqual(entry.digest, digest) && !found) found = entry;
  }
  return found;
}

function unauthorized(message: string, header: PresentedKey["header"]): HandoffError {
  // Handoff's code stays in `code`, like every other error; OpenAI's (`invalid_api_key`) is the
  // issue's message, and the issue's path names the header, so `param` says where to look.
  return new HandoffError("HANDOFF_ERR_UNAUTHORIZED", message, {
    issues: [{ path: `headers.${header}`, message: "invalid_api_key" }],
  });
}

/**
 * Written to the raw response, not with `reply.header()`: a streamed answer hijacks the reply and
 * writes its own head, which merges headers already set on the raw response but never sees the
 * reply's.
 */
function setHeader(reply: FastifyReply, name: string, value: string | number): void {
  reply.raw.setHeader(name, String(value));
}

export interface AuthOptions {
  keys: readonly ApiKeyEntry[];
  /** Failed authentications allowed per client address (`gateway.auth_failures`). */
  failures: FailureLimit;
  /** The rate limiters' clock; tests inject one. */
  clock?: Clock;
}

/**
 * Whether the request may see a job owned by `owner`: always when the API is open (`auth` false),
 * else only the key that submitted it, or a key with the `admin` scope. A job without an owner
 * (submitted while the API was open) is an admin's only. Routes answer a refusal exactly as they
 * answer an unknown id, so a key cannot learn which ids other keys' jobs have.
 */
export function mayReadJob(
  request: FastifyRequest,
  owner: string | undefined,
  auth: boolean,
): boolean {
  if (!auth) return true;
  if (request.apiKeyScopes?.includes("admin")) return true;
  return owner !== undefined && request.apiKeyName !== undefined && owner === request.apiKeyName;
}

/**
 * Requires an API key on every route but {@link OPEN_ROUTES} (so also on unknown paths: a caller
 * without a key learns nothing about which routes exist), then spends one request from the key's
 * token bucket. A missing or unknown key is a 401 in OpenAI's error shape (Anthropic's on
 * `POST /v1/messages`, whose error handler answers it); a spent bucket a 429 with `Retry-After`. Responses to an authenticated request carry OpenAI's
 * `x-ratelimit-{limit,remaining,reset}-requests` headers when the key has a limit.
 *
 * Failed authentications are counted per client address (`request.ip`: the peer's, since the
 * gateway does not trust proxy headers): once an address has failed `failures.max` times within
 * the window, it gets a 429 with `Retry-After`, before its key is even looked at, until the
 * window ends.
 *
 * Register after the tracing hook: the key's name goes on the request's SERVER span.
 */
export function registerAuth(app: FastifyInstance, options: AuthOptions): void {
  const clock = options.clock ?? monotonicClock;
  const throttle = new FailureThrottle(options.failures, clock);
  const buckets = new Map<string, TokenBucket>();
  for (const key of options.keys) {
    if (key.requestsPerMinute !== undefined) {
      buckets.set(key.name, new TokenBucket(key.requestsPerMinute, clock));
    }
  }
  app.decorateRequest("apiKeyName", undefined);
  app.decorateRequest("apiKeyScopes", undefined);

  /** Counts a failed attempt; the address that reaches the limit is logged once. */
  const failed = (request: FastifyRequest) => {
    if (throttle.fail(request.ip)) {
      request.log.warn(
        { client_address: request.ip, failures: options.failures.max },
        "too many failed authentications: address throttled",
      );
    }
  };

  app.addHook("onRequest", async (request, reply) => {
    const route = request.routeOptions.url;
    if (route !== undefined && OPEN_ROUTES.has(route)) return;

    const blockedMs = throttle.blockedFor(request.ip);
    if (blockedMs > 0) {
      const seconds = Math.max(1, Math.ceil(blockedMs / 1_000));
      setHeader(reply, "retry-after", seconds);
      request.otelSpan?.setAttribute("handoff.rate_limited", true);
      throw new HandoffError(
        "HANDOFF_ERR_RATE_LIMITED",
        `too many failed authentications from this address: ${options.failures.max} within ` +
          `${Math.ceil(options.failures.windowMs / 1_000)} s; retry in ${seconds} s`,
        { issues: [{ path: "(root)", message: "rate_limit_exceeded" }] },
      );
    }

    const presented = presentedKey(request);
    if (!presented) {
      failed(request);
      setHeader(reply, "www-authenticate", 'Bearer realm="handoff"');
      throw unauthorized(
        "no API key: send `Authorization: Bearer <key>` (or an `api-key` or `x-api-key` header)",
        "authorization",
      );
    }
    const entry = matchKey(options.keys, presented.key);
    if (!entry) {
      failed(request);
      setHeader(reply, "www-authenticate", 'Bearer realm="handoff", error="invalid_token"');
      throw unauthorized("incorrect API key provided", presented.header);
    }

    request.apiKeyName = entry.name;
    request.apiKeyScopes = entry.scopes;
    request.otelSpan?.setAttribute("handoff.api_key.name", entry.name);
    // Every later line of this request, fastify's "request completed" included, names the key.
    request.log = request.log.child({ api_key_name: entry.name });
    reply.log = request.log;

    const bucket = buckets.get(entry.name);
    if (!bucket) return;
    const state = bucket.take();
    setHeader(reply, "x-ratelimit-limit-requests", state.limit);
    setHeader(reply, "x-ratelimit-remaining-requests", state.remaining);
    setHeader(reply, "x-ratelimit-reset-requests", formatResetDuration(state.resetMs));
    if (!state.allowed) {
      const seconds = Math.max(1, Math.ceil(state.retryAfterMs / 1_000));
      setHeader(reply, "retry-after", seconds);
      request.otelSpan?.setAttribute("handoff.rate_limited", true);
      throw new HandoffError(
        "HANDOFF_ERR_RATE_LIMITED",
        `rate limit reached for API key "${entry.name}": ${state.limit} requests per minute ` +
          `on this gateway instance; retry in ${seconds} s`,
        { issues: [{ path: "(root)", message: "rate_limit_exceeded" }] },
      );
    }
  });
}
