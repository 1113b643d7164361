import { setTimeout as sleep } from "node:timers/promises";
import {
  type Deployment,
  deploymentId,
  type HandoffConfig,
  type Resilience,
} from "@handoff/config";
import {
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
}

export interface TierCallResult {
  result: ChatResult;
  /** The usage entry to append to the job envelope (of the attempt that answered). */
  usage: Usage;
  /** The tier that answered: the one asked for, or a cheaper one the budget forced. */
  tier: Tier;
  /** Attempts made, the answering one included. */
  attempts: number;
}

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
    const answering = this.#affordableTier(tier, request, ctx);
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
          return { ...result, tier: answering, attempts };
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
        const timeout = AbortSignal.timeout(deployment.timeout_ms);
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
          span.end();
        }
      },
    );
  }
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

function recordResult(span: Span, result: ChatResult, usage: Usage): void {
  span.setAttributes({
    "gen_ai.response.model": result.model,
    "gen_ai.response.finish_reasons": [result.finishReason],
    "gen_ai.usage.input_tokens": usage.input_tokens,
    "gen_ai.usage.output_tokens": usage.output_tokens,
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
