import { type Deployment, deploymentId, type HandoffConfig } from "@handoff/config";
import {
  ChatCompletionRequest,
  HandoffError,
  type JobEnvelope,
  type Tier,
} from "@handoff/contracts";
import type { FastifyRequest } from "fastify";
import { z } from "zod";
import {
  IDEMPOTENCY_HEADER,
  IDEMPOTENCY_KEY_PATTERN,
  idempotencyKeyOf,
  MAX_IDEMPOTENCY_KEY_LENGTH,
} from "./idempotency.js";
import { envelopeFromRequest, resolveModel } from "./mapping.js";
import { docs } from "./route-schema.js";

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
  /** What it means, for the OpenAPI document. */
  description: string;
}

/** `x-handoff-timeout-ms`: the deadline, when the body's `handoff.timeout_ms` does not set one. */
export const TIMEOUT_HEADER: NumberHeader = {
  name: "x-handoff-timeout-ms",
  min: 100,
  max: 600_000,
  integer: true,
  description:
    "How long to wait for the answer before a 504, in ms (`handoff.timeout_ms` in the body wins).",
};

/** `x-handoff-max-cost-usd`: the budget, when the body's `max_cost_usd` does not set one. */
export const MAX_COST_HEADER: NumberHeader = {
  name: "x-handoff-max-cost-usd",
  min: 1e-9,
  max: 1e6,
  integer: false,
  description: "Upper bound on the job's model spend, in US dollars (`max_cost_usd` wins).",
};

function numberHeaderSchema({ min, max, integer, description }: NumberHeader) {
  return (integer ? z.number().int() : z.number())
    .min(min)
    .max(max)
    .register(docs, { description });
}

/** `Cache-Control`: `no-cache` or `no-store` make the job bypass the exact response cache. */
export const CACHE_CONTROL_HEADER = "Cache-Control";

/**
 * The request headers a submission reads ({@link submissionFor}), as the routes that take one
 * document them. The handlers read and check the headers themselves, with these bounds.
 */
export const SubmissionHeaders = z.object({
  [TIMEOUT_HEADER.name]: numberHeaderSchema(TIMEOUT_HEADER).optional(),
  [MAX_COST_HEADER.name]: numberHeaderSchema(MAX_COST_HEADER).optional(),
  [IDEMPOTENCY_HEADER]: z
    .string()
    .min(1)
    .max(MAX_IDEMPOTENCY_KEY_LENGTH)
    .regex(IDEMPOTENCY_KEY_PATTERN)
    .register(docs, {
      description:
        "Makes the request safe to retry: the same key from the same API key (every caller, when the API is open) within `gateway.idempotency_window_ms` (24 h by default) gets the first request's job back, never a second run. The same key with a different body or route is a 422. A key whose job could not be queued is released. Malformed (empty, over 255 characters, not printable ASCII): 400.",
    })
    .optional(),
  [CACHE_CONTROL_HEADER]: z
    .string()
    .register(docs, {
      description:
        'With `no-cache` or `no-store` the answer comes from the models, never from the exact response cache, and is not stored there (as `"handoff": {"cache": false}` in the body does). Other directives are ignored.',
    })
    .optional(),
});

/** Whether the request's `Cache-Control` asks for a fresh answer (`no-cache` or `no-store`). */
export function noCacheRequested(request: Pick<FastifyRequest, "headers">): boolean {
  const raw = request.headers["cache-control"];
  const values = Array.isArray(raw) ? raw : raw === undefined ? [] : [raw];
  return values
    .flatMap((value) => value.split(","))
    .map((directive) => directive.trim().toLowerCase().split("=")[0])
    .some((directive) => directive === "no-cache" || directive === "no-store");
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
  checkLogprobs(body, resolveModel(body.model, config), config);
  return submissionFor(request, config, body);
}

/** The tiers that may answer a request for `model`: a pinned tier, and those a budget falls to. */
function answeringTiers(model: string): Tier[] {
  if (model === "handoff/light") return ["light"];
  // The tool-executor, which answers for `handoff/mid`, degrades to light over budget.
  if (model === "handoff/mid") return ["mid", "light"];
  return ["light", "mid", "heavy"];
}

/** Providers whose adapters return token log-probabilities. */
const LOGPROBS_PROVIDERS: ReadonlySet<Deployment["provider"]> = new Set([
  "openai-compatible",
  "sim",
]);

/**
 * `logprobs` and `top_logprobs`, checked at request time: `top_logprobs` needs `logprobs: true`,
 * they come with a non-streamed answer, and every deployment that may answer (the tiers of
 * {@link answeringTiers} and their fallbacks) must be able to return them. Anthropic's Messages
 * API has no log-probabilities: a 400 naming the field, rather than an answer without them.
 */
function checkLogprobs(body: ChatCompletionRequest, model: string, config: HandoffConfig): void {
  const refuse = (param: "logprobs" | "top_logprobs", message: string) =>
    new HandoffError("HANDOFF_ERR_UNSUPPORTED", message, { issues: [{ path: param, message }] });
  if (body.top_logprobs != null && body.logprobs !== true) {
    throw refuse("top_logprobs", "top_logprobs needs logprobs: true");
  }
  if (body.logprobs !== true) return;
  const param = body.top_logprobs != null ? "top_logprobs" : "logprobs";
  if (body.stream === true) {
    throw refuse(
      param,
      "logprobs are returned with non-streamed completions only; send stream: false (or none)",
    );
  }
  const byId = new Map(
    (["light", "mid", "heavy"] as const).flatMap((tier) =>
      config.tiers[tier].map((d) => [deploymentId(d), d] as const),
    ),
  );
  const reachable = new Map<string, Deployment>();
  const visit = (deployment: Deployment) => {
    const id = deploymentId(deployment);
    if (reachable.has(id)) return;
    reachable.set(id, deployment);
    for (const fallback of deployment.fallbacks) {
      const next = byId.get(fallback);
      if (next) visit(next);
    }
  };
  for (const tier of answeringTiers(model)) for (const d of config.tiers[tier]) visit(d);
  const unable = [...reachable.entries()].filter(([, d]) => !LOGPROBS_PROVIDERS.has(d.provider));
  if (unable.length > 0) {
    const names = unable.map(([id, d]) => `${id} (${d.provider})`).join(", ");
    throw refuse(
      param,
      `${param} cannot be honoured for model ${body.model}: ${unable.length === 1 ? "deployment" : "deployments"} ${names} may answer and cannot return log-probabilities`,
    );
  }
}

/**
 * {@link parseSubmission} for a body already validated and read into the chat-completions shape
 * (another door's request, mapped): the same model names, deadline, budget, owner and
 * `Idempotency-Key` rules.
 */
export function submissionFor(
  request: FastifyRequest,
  config: HandoffConfig,
  body: ChatCompletionRequest,
): Submission {
  const idempotencyKey = idempotencyKeyOf(request);
  const timeoutMs =
    body.handoff?.timeout_ms ??
    numberHeader(request, TIMEOUT_HEADER) ??
    config.limits.request_timeout_ms;
  const maxCostUsd =
    body.max_cost_usd ?? body.handoff?.max_cost_usd ?? numberHeader(request, MAX_COST_HEADER);
  const envelope = jobFor(body, config, {
    // The key's name, set by the auth hook: the job is that key's to read back.
    ...(request.apiKeyName !== undefined ? { owner: request.apiKeyName } : {}),
    ...(noCacheRequested(request) ? { noCache: true } : {}),
    timeoutMs,
    ...(maxCostUsd !== undefined ? { maxCostUsd } : {}),
  });
  return { body, envelope, timeoutMs, ...(idempotencyKey !== undefined ? { idempotencyKey } : {}) };
}

export interface JobOptions {
  owner?: string;
  /** `Cache-Control: no-cache` (or `no-store`): the job bypasses the response cache. */
  noCache?: boolean;
  timeoutMs: number;
  maxCostUsd?: number;
  /** The job's id, when its publisher chose it (the NATS door). */
  id?: string;
}

/**
 * The job envelope of a validated request, whichever door it came through: an unknown model name
 * is a 404 naming it, an alias becomes the model it stands for (the job routes by the served
 * model; the request keeps the name the client sent).
 */
export function jobFor(
  body: ChatCompletionRequest,
  config: HandoffConfig,
  options: JobOptions,
): JobEnvelope {
  const model = resolveModel(body.model, config);
  const envelope = envelopeFromRequest(body, {
    recordInput: config.routing.record_inputs,
    ...options,
  });
  envelope.input.model = model;
  return envelope;
}
