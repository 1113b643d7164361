import { randomUUID } from "node:crypto";
import { type HandoffConfig, servedModels } from "@handoff/config";
import {
  type ChatCompletionRequest,
  contentText,
  HandoffError,
  type JobEnvelope,
  type Message,
  type RequestMessage,
} from "@handoff/contracts";

/** The 404 for a model name the gateway neither serves nor aliases, in OpenAI's terms. */
export function modelNotFound(name: string): HandoffError {
  const shown = name.length > 200 ? `${name.slice(0, 199)}…` : name;
  return new HandoffError(
    "HANDOFF_ERR_MODEL_NOT_FOUND",
    `The model \`${shown}\` does not exist: GET /v1/models lists the models this gateway serves`,
    { issues: [{ path: "model", message: `no model "${shown}"` }] },
  );
}

/**
 * The served model a request's `model` names: itself when the gateway serves it (`handoff`, a
 * pinned tier, a deployment id), else what `gateway.model_aliases` maps it to. Any other name is a
 * 404 `model_not_found`, never a silent `handoff`.
 */
export function resolveModel(
  name: string,
  config: Pick<HandoffConfig, "tiers" | "gateway">,
): string {
  if (servedModels(config).includes(name)) return name;
  const aliases = config.gateway.model_aliases;
  // Own keys only: "constructor" is no alias.
  const target = Object.hasOwn(aliases, name) ? aliases[name] : undefined;
  if (target !== undefined) return target;
  throw modelNotFound(name);
}

/** A request's messages in the mesh's form: content flattened to text. */
export function toMessages(messages: readonly RequestMessage[]): Message[] {
  return messages.map(toMessage);
}

function toMessage(m: RequestMessage): Message {
  switch (m.role) {
    case "system":
    case "developer":
      return {
        role: m.role,
        content: contentText(m.content),
        ...(m.name ? { name: m.name } : {}),
      };
    case "user":
      return {
        role: "user",
        content: contentText(m.content),
        ...(m.name ? { name: m.name } : {}),
      };
    case "assistant":
      return {
        role: "assistant",
        content: m.content == null ? null : contentText(m.content),
        ...(m.tool_calls ? { tool_calls: m.tool_calls } : {}),
        ...(m.name ? { name: m.name } : {}),
      };
    case "tool":
      return { role: "tool", content: contentText(m.content), tool_call_id: m.tool_call_id };
  }
}

export interface EnvelopeOptions {
  timeoutMs: number;
  maxCostUsd?: number;
  now?: Date;
  id?: string;
  /** Keep the request's messages on the job record (`routing.record_inputs`). */
  recordInput?: boolean;
  /** The API key name submitting the job (`JobEnvelope.owner`); absent when the API is open. */
  owner?: string;
  /**
   * The request's headers said `Cache-Control: no-cache` (or `no-store`): the job bypasses the
   * response cache, whatever the body says.
   */
  noCache?: boolean;
}

/**
 * The request's choice about the response cache: bypass it (`Cache-Control: no-cache` or
 * `no-store`, or `"handoff": {"cache": false}`), or cache it even when it samples
 * (`"handoff": {"cache": true}`). Undefined when it chose nothing.
 */
export function cacheChoice(
  request: Pick<ChatCompletionRequest, "handoff">,
  noCache = false,
): JobEnvelope["cache"] {
  if (noCache || request.handoff?.cache === false) return { bypass: true };
  if (request.handoff?.cache === true) return { sampled: true };
  return undefined;
}

/** The job envelope for an OpenAI-shaped request, entering the mesh at the classifier. */
export function envelopeFromRequest(
  request: ChatCompletionRequest,
  options: EnvelopeOptions,
): JobEnvelope {
  const now = options.now ?? new Date();
  const maxTokens = request.max_completion_tokens ?? request.max_tokens;
  const stop = typeof request.stop === "string" ? [request.stop] : request.stop;
  const cache = cacheChoice(request, options.noCache);
  return {
    v: 1,
    id: options.id ?? randomUUID(),
    created_at: now.toISOString(),
    ...(options.owner !== undefined ? { owner: options.owner } : {}),
    input: {
      model: request.model,
      messages: toMessages(request.messages),
      tools: request.tools ?? [],
      ...(request.tool_choice ? { tool_choice: request.tool_choice } : {}),
      stream: request.stream === true,
      params: {
        ...(request.parallel_tool_calls != null
          ? { parallel_tool_calls: request.parallel_tool_calls }
          : {}),
        ...(request.logprobs === true ? { logprobs: true } : {}),
        ...(request.logprobs === true && request.top_logprobs != null
          ? { top_logprobs: request.top_logprobs }
          : {}),
        ...(request.temperature != null ? { temperature: request.temperature } : {}),
        ...(request.top_p != null ? { top_p: request.top_p } : {}),
        ...(maxTokens != null ? { max_tokens: maxTokens } : {}),
        ...(stop != null ? { stop } : {}),
        ...(request.seed != null ? { seed: request.seed } : {}),
        ...(request.response_format != null ? { response_format: request.response_format } : {}),
      },
    },
    plan: ["classifier"],
    step: 0,
    ...(options.recordInput ? { record_input: true } : {}),
    ...(cache ? { cache } : {}),
    hops: [],
    enrichments: [],
    usage: [],
    budget: {
      deadline: new Date(now.getTime() + options.timeoutMs).toISOString(),
      ...(options.maxCostUsd !== undefined ? { max_cost_usd: options.maxCostUsd } : {}),
    },
  };
}
