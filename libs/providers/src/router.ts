import { setTimeout as sleep } from "node:timers/promises";
import {
  type Deployment,
  deploymentId,
  type HandoffConfig,
  type Resilience,
} from "@handoff/config";
import {
  type CachedAnswer,
  HandoffError,
  type JobInput,
  type JobResult,
  type Message,
  type ResponseFormat,
  roundUsd,
  type Stage,
  type Tier,
  type Usage,
} from "@handoff/contracts";
import {
  type Counter,
  type Histogram,
  metrics,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import { CircuitBreaker } from "./breaker.js";
import { fitBudget } from "./budget.js";
import { costUsd } from "./cost.js";
import { type ProviderFailure, providerDetails, providerError } from "./errors.js";
import { createModel, genAiProviderName, type ModelFactory } from "./registry.js";
import { replayAsStream } from "./replay.js";
import {
  type CallCache,
  type ResponseCache,
  replayPieces,
  responseCacheKey,
  samples,
} from "./response-cache.js";
import type { ChatModel, ChatRequest, ChatResult, ChatStreamEvent } from "./types.js";

const tracer = trace.getTracer("@handoff/providers");
/**
 * The metric instruments, made on first use: unlike tracing, the metrics API has no proxy, so a
 * meter taken at import time (before the SDK starts) would stay a no-op for good.
 */
const instruments = (() => {
  let made:
    | {
        tokenUsage: Histogram;
        operationDuration: Histogram;
        spend: Counter;
        cacheLookups: Counter;
        cacheSaved: Counter;
      }
    | undefined;
  return () => {
    if (made) return made;
    const meter = metrics.getMeter("@handoff/providers");
    made = {
      tokenUsage: meter.createHistogram("gen_ai.client.token.usage", {
        description: "Tokens used by model calls",
        unit: "{token}",
      }),
      operationDuration: meter.createHistogram("gen_ai.client.operation.duration", {
        description: "Duration of model call attempts",
        unit: "s",
      }),
      spend: meter.createCounter("handoff.cost", {
        description: "Model spend from the configured list prices",
        unit: "USD",
      }),
      cacheLookups: meter.createCounter("handoff.cache.lookups", {
        description:
          "Model calls of cached tiers, by outcome: hit, miss, bypass, or error (the cache could not answer)",
        unit: "{call}",
      }),
      cacheSaved: meter.createCounter("handoff.cache.saved", {
        description: "Model spend saved by response-cache hits, at what the cached calls cost",
        unit: "USD",
      }),
    };
    return made;
  };
})();

export interface TierCallContext {
  stage: Stage;
  /** The caller's abort (deadline, shutdown). Never retried: it ends the call. */
  signal?: AbortSignal;
  /** The most this call may spend, in dollars; no budget when undefined. */
  budgetUsd?: number;
  /** Cheaper tiers the caller accepts, in order, when the budget cannot afford `tier`. */
  degradeTo?: readonly Tier[];
  /**
   * Makes the call a streaming one: output events arrive here as the model produces them, with
   * the model that produces them.
   */
  onEvent?:
    | ((event: Exclude<ChatStreamEvent, { type: "done" }>, model: string) => void)
    | undefined;
  /**
   * The call's part in the exact response cache (see `callCacheOf`): its tenant and what its
   * request allows. Absent: the call neither reads nor writes the cache.
   */
  cache?: CallCache | undefined;
}

export interface TierCallResult {
  result: ChatResult;
  /** The usage entry to append to the job envelope (of the attempt that answered). */
  usage: Usage;
  /** The tier that answered: the one asked for, or a cheaper one the budget forced. */
  tier: Tier;
  /** Attempts made, the answering one included; 0 for an answer from the response cache. */
  attempts: number;
}

/** What the response cache makes of one call to one tier, before the model is asked. */
type CacheLookup =
  /** The tier is not cached, or the call takes no part: nothing to report. */
  | { outcome: undefined }
  | { outcome: "bypass" }
  | { outcome: "hit"; call: TierCallResult }
  /** Looked up and not found (or the cache could not answer): the answer is stored under `key`. */
  | { outcome: "miss"; cache: ResponseCache; key: string };

interface Bound {
  deployment: Deployment;
  model: ChatModel;
  id: string;
}

/** Failures that say nothing about the deployment's health: they do not trip its breaker. */
const REQUEST_FAULTS = new Set<ProviderFailure>(["bad_request", "context_length"]);

/**
 * Every model call goes through here: the one place for per-attempt timeouts, retries with
 * exponential backoff and jitter that honour `Retry-After`, fallbacks to the next deployment of
 * the tier (and to each deployment's `fallbacks`), a circuit breaker per deployment, budgets, and
 * a hard cap on attempts that no configuration can lift. Each attempt is a CLIENT span with GenAI
 * attributes; a failed one carries `error.type`.
 */
export class ModelRouter {
  readonly #tiers: Record<Tier, Bound[]>;
  readonly #byId = new Map<string, Bound>();
  readonly #policy: Resilience;
  readonly #breaker: CircuitBreaker;
  /** The response cache of each cached tier, once a service opened it (see `useCaches`). */
  readonly #caches: Partial<Record<Tier, ResponseCache>> = {};
  /** `cache.sampled`: requests that sample are cached too. */
  readonly #cacheSampled: boolean;

  constructor(config: HandoffConfig, factory: ModelFactory = createModel) {
    const bind = (list: Deployment[]) =>
      list.map((deployment) => {
        const bound = { deployment, model: factory(deployment), id: deploymentId(deployment) };
        this.#byId.set(bound.id, bound);
        return bound;
      });
    this.#tiers = {
      light: bind(config.tiers.light),
      mid: bind(config.tiers.mid),
      heavy: bind(config.tiers.heavy),
    };
    this.#policy = config.resilience;
    this.#breaker = new CircuitBreaker(
      config.resilience.cooldown_after_failures,
      config.resilience.cooldown_ms,
    );
    this.#cacheSampled = config.cache?.sampled ?? false;
  }

  /**
   * Puts calls of these tiers through their response caches: a call whose request the cache may
   * serve is answered from it when it can, and its answer stored when the model made it. A
   * service opens the caches of the tiers it calls once NATS answers (`openResponseCaches`).
   */
  useCaches(caches: Partial<Record<Tier, ResponseCache>>): void {
    for (const tier of Object.keys(caches) as Tier[]) {
      const cache = caches[tier];
      if (cache) this.#caches[tier] = cache;
    }
  }

  /** Whether calls of `tier` go through a response cache. */
  cached(tier: Tier): boolean {
    return this.#caches[tier] !== undefined;
  }

  /** The deployments serving a tier, in order of preference. */
  deployments(tier: Tier): Deployment[] {
    return this.#tiers[tier].map((b) => b.deployment);
  }

  /** Whether a deployment is in rotation (its circuit is closed). */
  available(id: string): boolean {
    return this.#breaker.available(id);
  }

  async chat(tier: Tier, request: ChatRequest, ctx: TierCallContext): Promise<TierCallResult> {
    // A cached answer costs nothing, so any budget affords the asked tier's: look there first.
    const asked = await this.#lookup(tier, request, ctx);
    if (asked.outcome === "hit") return asked.call;
    const answering = this.#affordableTier(tier, request, ctx);
    const lookup = answering === tier ? asked : await this.#lookup(answering, request, ctx);
    if (lookup.outcome === "hit") return lookup.call;
    const primary = this.#tiers[answering][0];
    const queue = [...this.#tiers[answering]];
    const failures: string[] = [];
    let attempts = 0;
    let last: HandoffError | undefined;

    while (queue.length > 0 && attempts < this.#policy.max_attempts) {
      const bound = this.#next(queue);
      const fit = fitBudget(bound.deployment, request, ctx.budgetUsd);
      if (!fit) {
        failures.push(`${bound.id}: over budget`);
        continue;
      }
      for (let tries = 1; tries <= bound.deployment.retries; tries++) {
        if (attempts >= this.#policy.max_attempts) break;
        attempts++;
        const emitted = { any: false };
        try {
          const result = await this.#attempt(answering, bound, fit.request, ctx, attempts, emitted);
          this.#breaker.success(bound.id);
          const call = { ...result, tier: answering, attempts };
          if (lookup.outcome === undefined) return call;
          call.usage = { ...call.usage, cache: lookup.outcome };
          // Only the answer the key stands for is kept: the tier's first deployment's, to the
          // request as asked (not a fallback's, nor one cut short by a budget's max_tokens).
          if (lookup.outcome === "miss" && bound === primary && fit.request === request) {
            await this.#store(lookup, call);
          }
          return call;
        } catch (thrown) {
          if (ctx.signal?.aborted) throw thrown;
          const error = HandoffError.from(thrown);
          const details = providerDetails(error);
          const failure = details?.failure ?? "server";
          last = error;
          failures.push(`${bound.id}: ${failure}${details?.status ? ` ${details.status}` : ""}`);
          if (!REQUEST_FAULTS.has(failure)) this.#breaker.failure(bound.id);
          if (emitted.any) {
            // Output already reached the client: a retry would repeat it. End the call here.
            throw HandoffError.nonRetryable(
              "HANDOFF_ERR_PROVIDER",
              `${bound.id} failed after streaming began: ${error.message}`,
              { cause: error },
            );
          }
          // A malformed request fails the same way everywhere: no retry, no fallback.
          if (failure === "bad_request") throw error;
          if (!error.retryable) break; // auth, not found, context length: try the next one
          const asked = details?.retryAfterMs;
          if (asked !== undefined && asked > this.#policy.max_retry_after_ms) break;
          if (tries < bound.deployment.retries && attempts < this.#policy.max_attempts) {
            await sleep(Math.max(asked ?? 0, this.#backoff(tries)), undefined, {
              signal: ctx.signal,
            });
          }
        }
      }
      for (const id of bound.deployment.fallbacks) {
        const fallback = this.#byId.get(id);
        if (fallback) queue.push(fallback);
      }
    }

    if (attempts === 0) throw this.#budgetError(tier, ctx, failures);
    const summary = `${attempts} attempt${attempts === 1 ? "" : "s"} (${failures.join("; ")})`;
    if (last && !last.retryable) {
      throw new HandoffError(last.code, `tier ${answering}: ${last.message}; ${summary}`, {
        retryable: false,
        cause: last,
        ...(last.details ? { details: last.details } : {}),
      });
    }
    throw new HandoffError(
      "HANDOFF_ERR_RETRIES_EXHAUSTED",
      `tier ${answering}: every attempt failed, ${summary}; last: ${last?.message ?? "no answer"}`,
      { cause: last, details: { attempts } },
    );
  }

  /**
   * What the response cache of `tier` makes of this call: nothing (the tier is not cached, or
   * the call takes no part), a bypass (the request said so, or it samples), a hit (the answer, as
   * the call's result), or a miss (where to store the answer). A cache that cannot answer is a
   * miss: the model answers instead.
   */
  async #lookup(tier: Tier, request: ChatRequest, ctx: TierCallContext): Promise<CacheLookup> {
    const cache = this.#caches[tier];
    const primary = this.#tiers[tier][0];
    if (!cache || !ctx.cache || !primary) return { outcome: undefined };
    const { cacheLookups } = instruments();
    const attributes = { "handoff.tier": tier, "handoff.stage": ctx.stage };
    const skip =
      ctx.cache.bypass || (samples(request) && !this.#cacheSampled && !ctx.cache.sampled);
    if (skip) {
      cacheLookups.add(1, { ...attributes, outcome: "bypass" });
      return { outcome: "bypass" };
    }
    const key = responseCacheKey({
      tenant: ctx.cache.tenant,
      tier,
      deployment: primary.deployment,
      request,
    });
    return tracer.startActiveSpan(
      `cache lookup ${tier}`,
      { kind: SpanKind.INTERNAL, attributes: { "handoff.tier": tier, "handoff.stage": ctx.stage } },
      async (span): Promise<CacheLookup> => {
        const started = performance.now();
        try {
          let answer: CachedAnswer | undefined;
          try {
            answer = await cache.get(key);
          } catch (thrown) {
            const error = thrown instanceof Error ? thrown : new Error(String(thrown));
            span.recordException(error);
            span.setAttributes({ "handoff.cache.outcome": "error", "error.type": "cache" });
            cacheLookups.add(1, { ...attributes, outcome: "error" });
            return { outcome: "miss", cache, key };
          }
          if (!answer) {
            span.setAttribute("handoff.cache.outcome", "miss");
            cacheLookups.add(1, { ...attributes, outcome: "miss" });
            return { outcome: "miss", cache, key };
          }
          const saved = answer.usage.cost_usd;
          span.setAttributes({ "handoff.cache.outcome": "hit", "handoff.cache.saved_usd": saved });
          cacheLookups.add(1, { ...attributes, outcome: "hit" });
          instruments().cacheSaved.add(saved, attributes);
          const call = cachedCall(tier, ctx, answer, Math.round(performance.now() - started));
          if (ctx.onEvent) {
            // Streamed like any other answer: its text in a few pieces, then its tool calls.
            for (const event of replayAsStream(call.result, (text) => replayPieces(text))) {
              if (event.type !== "done") ctx.onEvent(event, answer.model);
            }
          }
          return { outcome: "hit", call };
        } finally {
          span.end();
        }
      },
    );
  }

  /** Keeps a model's answer for the next identical call; a failed write never fails the call. */
  async #store(
    lookup: Extract<CacheLookup, { outcome: "miss" }>,
    call: TierCallResult,
  ): Promise<void> {
    const { result, usage } = call;
    const answer: CachedAnswer = {
      v: 1,
      message: result.message,
      finish_reason: result.finishReason,
      provider: usage.provider,
      model: usage.model,
      deployment: this.#tiers[call.tier][0]?.id ?? usage.provider,
      simulated: usage.simulated,
      ...(result.logprobs ? { logprobs: result.logprobs } : {}),
      ...(result.choiceLogprobs ? { choice_logprobs: result.choiceLogprobs } : {}),
      usage: {
        input_tokens: usage.input_tokens,
        ...(usage.cached_input_tokens ? { cached_input_tokens: usage.cached_input_tokens } : {}),
        ...(usage.cache_write_tokens ? { cache_write_tokens: usage.cache_write_tokens } : {}),
        output_tokens: usage.output_tokens,
        cost_usd: usage.cost_usd,
      },
      stored_at: new Date().toISOString(),
    };
    try {
      const stored = await lookup.cache.put(lookup.key, answer);
      trace.getActiveSpan()?.setAttribute("handoff.cache.stored", stored);
    } catch (thrown) {
      const span = trace.getActiveSpan();
      span?.setAttribute("handoff.cache.stored", false);
      span?.recordException(thrown instanceof Error ? thrown : new Error(String(thrown)));
    }
  }

  /** The tier to call: the one asked for, else the first cheaper one the budget affords. */
  #affordableTier(tier: Tier, request: ChatRequest, ctx: TierCallContext): Tier {
    if (ctx.budgetUsd === undefined) return tier;
    for (const candidate of [tier, ...(ctx.degradeTo ?? [])]) {
      const list = this.#tiers[candidate];
      if (list.some((b) => fitBudget(b.deployment, request, ctx.budgetUsd))) {
        if (candidate !== tier) {
          trace.getActiveSpan()?.setAttributes({
            "handoff.budget.degraded_from": tier,
            "handoff.budget.degraded_to": candidate,
          });
        }
        return candidate;
      }
    }
    throw this.#budgetError(tier, ctx, []);
  }

  #budgetError(tier: Tier, ctx: TierCallContext, failures: string[]): HandoffError {
    const left = roundUsd(ctx.budgetUsd ?? 0);
    const tiers = [tier, ...(ctx.degradeTo ?? [])].join(", ");
    return new HandoffError(
      "HANDOFF_ERR_BUDGET",
      `the budget has $${left} left, which affords no model call in tier ${tiers} ` +
        `at the configured prices${failures.length ? ` (${failures.join("; ")})` : ""}`,
      { details: { remaining_usd: left, stage: ctx.stage } },
    );
  }

  /** The first deployment in the queue that is in rotation; if none is, the soonest back. */
  #next(queue: Bound[]): Bound {
    let at = queue.findIndex((b) => this.#breaker.available(b.id));
    if (at === -1) {
      at = 0;
      queue.forEach((b, i) => {
        const first = queue[at];
        if (first && this.#breaker.reopensAt(b.id) < this.#breaker.reopensAt(first.id)) at = i;
      });
    }
    const [bound] = queue.splice(at, 1);
    if (!bound) throw new HandoffError("HANDOFF_ERR_INTERNAL", "empty deployment queue");
    return bound;
  }

  /** Exponential backoff with full jitter: uniform in [0, base · 2^(try-1)], capped. */
  #backoff(tries: number): number {
    const ceiling = Math.min(
      this.#policy.backoff_max_ms,
      this.#policy.backoff_base_ms * 2 ** Math.max(0, tries - 1),
    );
    return Math.round(Math.random() * ceiling);
  }

  /** One attempt on one deployment: its own timeout, its own CLIENT span. */
  #attempt(
    tier: Tier,
    bound: Bound,
    request: ChatRequest,
    ctx: TierCallContext,
    attempt: number,
    emitted: { any: boolean },
  ): Promise<{ result: ChatResult; usage: Usage }> {
    const { deployment, model } = bound;
    const providerName = genAiProviderName(deployment);
    const attributes = {
      "gen_ai.operation.name": "chat",
      "gen_ai.provider.name": providerName,
      "gen_ai.request.model": deployment.model,
    };
    return tracer.startActiveSpan(
      `chat ${deployment.model}`,
      {
        kind: SpanKind.CLIENT,
        attributes: {
          ...attributes,
          "handoff.tier": tier,
          "handoff.stage": ctx.stage,
          "handoff.deployment": bound.id,
          "handoff.attempt": attempt,
          ...(request.params?.max_tokens
            ? { "gen_ai.request.max_tokens": request.params.max_tokens }
            : {}),
          ...(request.params?.temperature !== undefined
            ? { "gen_ai.request.temperature": request.params.temperature }
            : {}),
        },
      },
      async (span) => {
        const started = performance.now();
        const deadline = timeoutSignal(deployment.timeout_ms);
        const timeout = deadline.signal;
        const signal = ctx.signal ? AbortSignal.any([timeout, ctx.signal]) : timeout;
        try {
          const result = ctx.onEvent
            ? await streamed(model, request, signal, (event) => {
                emitted.any = true;
                ctx.onEvent?.(event, deployment.model);
              })
            : await model.chat(request, { signal });
          const seconds = (performance.now() - started) / 1000;
          const usage: Usage = {
            stage: ctx.stage,
            tier,
            provider: deployment.provider,
            model: result.model,
            input_tokens: result.usage.inputTokens,
            ...promptCacheUsage(result.usage),
            output_tokens: result.usage.outputTokens,
            cost_usd: costUsd(deployment.price, result.usage),
            latency_ms: Math.round(seconds * 1000),
            simulated: model.simulated,
          };
          recordResult(span, result, usage);
          const measured = { ...attributes, "gen_ai.response.model": result.model };
          const { tokenUsage, operationDuration, spend } = instruments();
          tokenUsage.record(usage.input_tokens, { ...measured, "gen_ai.token.type": "input" });
          tokenUsage.record(usage.output_tokens, { ...measured, "gen_ai.token.type": "output" });
          operationDuration.record(seconds, measured);
          spend.add(usage.cost_usd, {
            ...measured,
            "handoff.stage": ctx.stage,
            "handoff.tier": tier,
            "handoff.deployment": bound.id,
          });
          return { result, usage };
        } catch (thrown) {
          const failure = classify(thrown, bound, ctx.signal, timeout);
          span.recordException(failure);
          const kind = providerDetails(failure)?.failure ?? failure.code;
          span.setAttribute("error.type", kind);
          span.setStatus({ code: SpanStatusCode.ERROR, message: failure.message });
          instruments().operationDuration.record((performance.now() - started) / 1000, {
            ...attributes,
            "error.type": kind,
          });
          throw failure;
        } finally {
          deadline.clear();
          span.end();
        }
      },
    );
  }
}

/**
 * A signal that aborts after `ms` (with a `TimeoutError`, as `AbortSignal.timeout`'s does), and
 * `clear()`, which stops its timer once the call is over. `AbortSignal.timeout` keeps its timer,
 * and with it the async context it was made in (the attempt's span, its attributes and its parent
 * context), until the timeout passes, however early the call ended: at `timeout_ms` (60 s by
 * default) per call, memory that stays held long after a burst of load.
 */
function timeoutSignal(ms: number): { signal: AbortSignal; clear: () => void } {
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(new DOMException("The operation timed out.", "TimeoutError")),
    Math.min(ms, 2 ** 31 - 1),
  );
  timer.unref();
  return { signal: controller.signal, clear: () => clearTimeout(timer) };
}

/** Runs a streaming call, passing output events on, and returns the assembled result. */
async function streamed(
  model: ChatModel,
  request: ChatRequest,
  signal: AbortSignal,
  onEvent: (event: Exclude<ChatStreamEvent, { type: "done" }>) => void,
): Promise<ChatResult> {
  for await (const event of model.stream(request, { signal })) {
    if (event.type === "done") return event.result;
    onEvent(event);
  }
  throw new Error("the stream ended without a result");
}

/**
 * The prompt-cache counts of a call's tokens as a usage entry carries them: only those the
 * provider reported above zero, each at most the prompt.
 */
function promptCacheUsage(
  tokens: ChatResult["usage"],
): Pick<Usage, "cached_input_tokens" | "cache_write_tokens"> {
  const input = tokens.inputTokens;
  const cached = Math.min(input, tokens.cachedInputTokens ?? 0);
  const written = Math.min(input - cached, tokens.cacheWriteTokens ?? 0);
  return {
    ...(cached > 0 ? { cached_input_tokens: cached } : {}),
    ...(written > 0 ? { cache_write_tokens: written } : {}),
  };
}

function recordResult(span: Span, result: ChatResult, usage: Usage): void {
  span.setAttributes({
    "gen_ai.response.model": result.model,
    "gen_ai.response.finish_reasons": [result.finishReason],
    "gen_ai.usage.input_tokens": usage.input_tokens,
    "gen_ai.usage.output_tokens": usage.output_tokens,
    // OpenTelemetry's GenAI conventions: parts of gen_ai.usage.input_tokens.
    ...(usage.cached_input_tokens
      ? { "gen_ai.usage.cache_read.input_tokens": usage.cached_input_tokens }
      : {}),
    ...(usage.cache_write_tokens
      ? { "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_tokens }
      : {}),
    "handoff.cost_usd": usage.cost_usd,
    "handoff.simulated": usage.simulated,
  });
}

/**
 * Names what went wrong in one attempt. The caller's own abort is passed through untouched;
 * which signal fired tells a timeout from it, whatever error the adapter wrapped it in.
 */
function classify(
  error: unknown,
  bound: Bound,
  callerSignal: AbortSignal | undefined,
  timeout: AbortSignal,
): HandoffError {
  if (callerSignal?.aborted) {
    return HandoffError.retryable("HANDOFF_ERR_UNAVAILABLE", `call to ${bound.id} was cancelled`, {
      cause: error,
    });
  }
  if (timeout.aborted) {
    return providerError(
      `${bound.id} did not answer within ${bound.deployment.timeout_ms} ms`,
      { failure: "timeout", deployment: bound.id },
      error,
    );
  }
  if (error instanceof HandoffError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return providerError(
    `${bound.id} failed: ${message}`,
    { failure: "server", deployment: bound.id },
    error,
  );
}

/** The call result of an answer from the response cache: what the model said, at no cost. */
function cachedCall(
  tier: Tier,
  ctx: TierCallContext,
  answer: CachedAnswer,
  latencyMs: number,
): TierCallResult {
  const result: ChatResult = {
    message: answer.message,
    finishReason: answer.finish_reason,
    usage: {
      inputTokens: answer.usage.input_tokens,
      outputTokens: answer.usage.output_tokens,
      ...(answer.usage.cached_input_tokens
        ? { cachedInputTokens: answer.usage.cached_input_tokens }
        : {}),
      ...(answer.usage.cache_write_tokens
        ? { cacheWriteTokens: answer.usage.cache_write_tokens }
        : {}),
    },
    model: answer.model,
    ...(answer.logprobs ? { logprobs: answer.logprobs } : {}),
    ...(answer.choice_logprobs ? { choiceLogprobs: answer.choice_logprobs } : {}),
  };
  const usage: Usage = {
    stage: ctx.stage,
    tier,
    provider: answer.provider,
    model: answer.model,
    input_tokens: answer.usage.input_tokens,
    ...(answer.usage.cached_input_tokens
      ? { cached_input_tokens: answer.usage.cached_input_tokens }
      : {}),
    ...(answer.usage.cache_write_tokens
      ? { cache_write_tokens: answer.usage.cache_write_tokens }
      : {}),
    output_tokens: answer.usage.output_tokens,
    cost_usd: 0,
    latency_ms: latencyMs,
    simulated: answer.simulated,
    cache: "hit",
    saved_usd: answer.usage.cost_usd,
  };
  return { result, usage, tier, attempts: 0 };
}

/** The job result of a call that answered the client. */
export function jobResult(stage: Stage, call: TierCallResult): JobResult {
  return {
    message: call.result.message,
    finish_reason: call.result.finishReason,
    stage,
    provider: call.usage.provider,
    model: call.usage.model,
    // The client asked for them (`params.logprobs`) and the provider returned them.
    ...(call.result.choiceLogprobs ? { logprobs: call.result.choiceLogprobs } : {}),
  };
}

/**
 * A request for a JSON answer in a response format, at temperature 0 with a token cap: how a
 * strategy asks a model for a decision rather than prose.
 */
export function jsonRequest(request: {
  messages: readonly Message[];
  responseFormat: ResponseFormat;
  maxTokens: number;
}): ChatRequest {
  return {
    messages: request.messages,
    params: {
      temperature: 0,
      max_tokens: request.maxTokens,
      response_format: request.responseFormat,
    },
  };
}

/** The model request for a job's input: its messages (or `messages`), tools, tool choice, params. */
export function chatRequestFor(
  input: JobInput,
  messages: readonly Message[] = input.messages,
): ChatRequest {
  return {
    messages,
    tools: input.tools,
    ...(input.tool_choice ? { toolChoice: input.tool_choice } : {}),
    params: input.params,
  };
}
