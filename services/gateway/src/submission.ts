import type { HandoffConfig } from "@handoff/config";
import { ChatCompletionRequest, HandoffError, type JobEnvelope } from "@handoff/contracts";
import type { FastifyRequest } from "fastify";
import { idempotencyKeyOf } from "./idempotency.js";
import { envelopeFromRequest } from "./mapping.js";

export interface Submission {
  body: ChatCompletionRequest;
  envelope: JobEnvelope;
  timeoutMs: number;
  /** The `Idempotency-Key` header, validated (1 to 255 printable ASCII characters). */
  idempotencyKey?: string;
}

interface NumberHeader {
  name: string;
  min: number;
  max: number;
  integer: boolean;
}

/** A numeric request header, validated; a malformed one is a 400 naming the header. */
function numberHeader(request: FastifyRequest, spec: NumberHeader): number | undefined {
  const raw = request.headers[spec.name];
  if (raw === undefined) return undefined;
  const text = Array.isArray(raw) ? raw[0] : raw;
  const value = Number(text);
  const ok =
    text !== undefined &&
    text.trim() !== "" &&
    Number.isFinite(value) &&
    (!spec.integer || Number.isInteger(value)) &&
    value >= spec.min &&
    value <= spec.max;
  if (!ok) {
    throw new HandoffError(
      "HANDOFF_ERR_VALIDATION",
      `header ${spec.name} must be ${spec.integer ? "an integer" : "a number"} between ${spec.min} and ${spec.max}`,
      { issues: [{ path: `headers.${spec.name}`, message: `got "${String(raw)}"` }] },
    );
  }
  return value;
}

/**
 * Reads a chat-completions request into a job: the body validated against OpenAI's shape, the
 * deadline (`handoff.timeout_ms`, `x-handoff-timeout-ms`, else the configured default) and the
 * budget (`max_cost_usd` in the body or `x-handoff-max-cost-usd`). The job's owner is the API key
 * the request authenticated with, if any. An `Idempotency-Key` header is checked here too.
 */
export function parseSubmission(request: FastifyRequest, config: HandoffConfig): Submission {
  const parsed = ChatCompletionRequest.safeParse(request.body);
  if (!parsed.success) throw HandoffError.validation("request body", parsed.error);
  const body = parsed.data;
  const idempotencyKey = idempotencyKeyOf(request);
  const timeoutMs =
    body.handoff?.timeout_ms ??
    numberHeader(request, {
      name: "x-handoff-timeout-ms",
      min: 100,
      max: 600_000,
      integer: true,
    }) ??
    config.limits.request_timeout_ms;
  const maxCostUsd =
    body.max_cost_usd ??
    body.handoff?.max_cost_usd ??
    numberHeader(request, { name: "x-handoff-max-cost-usd", min: 1e-9, max: 1e6, integer: false });
  const envelope = envelopeFromRequest(body, {
    recordInput: config.routing.record_inputs,
    // The key's name, set by the auth hook: the job is that key's to read back.
    ...(request.apiKeyName !== undefined ? { owner: request.apiKeyName } : {}),
    timeoutMs,
    ...(maxCostUsd !== undefined ? { maxCostUsd } : {}),
  });
  return { body, envelope, timeoutMs, ...(idempotencyKey !== undefined ? { idempotencyKey } : {}) };
}
