import type { Deployment, HandoffConfig } from "@handoff/config";
import {
  HandoffError,
  type JobInput,
  type JobResult,
  type Message,
  type Stage,
  type Tier,
  type Usage,
} from "@handoff/contracts";
import { type Span, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { costUsd } from "./cost.js";
import { createModel, deploymentId, genAiProviderName, type ModelFactory } from "./registry.js";
import type { ChatModel, ChatRequest, ChatResult } from "./types.js";

const tracer = trace.getTracer("@handoff/providers");

export interface TierCallContext {
  stage: Stage;
  signal?: AbortSignal;
}

export interface TierCallResult {
  result: ChatResult;
  /** The usage entry to append to the job envelope. */
  usage: Usage;
}

interface Bound {
  deployment: Deployment;
  model: ChatModel;
}

/**
 * Calls the model a tier maps to, in one place: per-attempt timeout, the CLIENT span with GenAI
 * attributes, and the usage entry with its cost from the deployment's price.
 */
export class ModelRouter {
  readonly #tiers: Record<Tier, Bound[]>;

  constructor(config: HandoffConfig, factory: ModelFactory = createModel) {
    const bind = (list: Deployment[]) => list.map((d) => ({ deployment: d, model: factory(d) }));
    this.#tiers = {
      light: bind(config.tiers.light),
      mid: bind(config.tiers.mid),
      heavy: bind(config.tiers.heavy),
    };
  }

  /** The deployments serving a tier, in order of preference. */
  deployments(tier: Tier): Deployment[] {
    return this.#tiers[tier].map((b) => b.deployment);
  }

  async chat(tier: Tier, request: ChatRequest, ctx: TierCallContext): Promise<TierCallResult> {
    const bound = this.#tiers[tier][0];
    if (!bound) throw new HandoffError("HANDOFF_ERR_CONFIG", `tier ${tier} has no deployment`);
    const { deployment, model } = bound;

    return tracer.startActiveSpan(
      `chat ${deployment.model}`,
      {
        kind: SpanKind.CLIENT,
        attributes: {
          "gen_ai.operation.name": "chat",
          "gen_ai.provider.name": genAiProviderName(deployment),
          "gen_ai.request.model": deployment.model,
          "handoff.tier": tier,
          "handoff.stage": ctx.stage,
          "handoff.deployment": deploymentId(deployment),
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
        const signals = ctx.signal ? [timeout, ctx.signal] : [timeout];
        try {
          const result = await model.chat(request, { signal: AbortSignal.any(signals) });
          const usage: Usage = {
            stage: ctx.stage,
            tier,
            provider: deployment.provider,
            model: result.model,
            input_tokens: result.usage.inputTokens,
            output_tokens: result.usage.outputTokens,
            cost_usd: costUsd(deployment.price, result.usage),
            latency_ms: Math.round(performance.now() - started),
            simulated: model.simulated,
          };
          recordResult(span, result, usage);
          return { result, usage };
        } catch (error) {
          const failure = asProviderError(error, deployment, ctx.signal, timeout);
          span.recordException(failure);
          span.setAttribute("error.type", failure.code);
          span.setStatus({ code: SpanStatusCode.ERROR, message: failure.message });
          throw failure;
        } finally {
          span.end();
        }
      },
    );
  }
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

/** Timeouts and transport failures are retryable; the caller's own abort is passed through. */
function asProviderError(
  error: unknown,
  deployment: Deployment,
  callerSignal: AbortSignal | undefined,
  timeout: AbortSignal,
): HandoffError {
  if (error instanceof HandoffError) return error;
  const name = deploymentId(deployment);
  if (callerSignal?.aborted) {
    return HandoffError.retryable("HANDOFF_ERR_UNAVAILABLE", `call to ${name} was cancelled`, {
      cause: error,
    });
  }
  // Which signal fired says what happened, whatever error the adapter wrapped it in.
  if (timeout.aborted) {
    return HandoffError.retryable(
      "HANDOFF_ERR_PROVIDER",
      `${name} did not answer within ${deployment.timeout_ms} ms`,
      { cause: error },
    );
  }
  const message = error instanceof Error ? error.message : String(error);
  return HandoffError.retryable("HANDOFF_ERR_PROVIDER", `${name} failed: ${message}`, {
    cause: error,
  });
}

/** The job result of a call that answered the client. */
export function jobResult(stage: Stage, call: TierCallResult): JobResult {
  return {
    message: call.result.message,
    finish_reason: call.result.finishReason,
    stage,
    provider: call.usage.provider,
    model: call.usage.model,
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
