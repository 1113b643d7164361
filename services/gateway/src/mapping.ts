import { randomUUID } from "node:crypto";
import {
  type ChatCompletion,
  type ChatCompletionRequest,
  contentText,
  type JobEnvelope,
  type JobRecord,
  type Message,
  type RequestMessage,
} from "@handoff/contracts";

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
}

/** The job envelope for an OpenAI-shaped request, entering the mesh at the classifier. */
export function envelopeFromRequest(
  request: ChatCompletionRequest,
  options: EnvelopeOptions,
): JobEnvelope {
  const now = options.now ?? new Date();
  const maxTokens = request.max_completion_tokens ?? request.max_tokens;
  const stop = typeof request.stop === "string" ? [request.stop] : request.stop;
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
    hops: [],
    enrichments: [],
    usage: [],
    budget: {
      deadline: new Date(now.getTime() + options.timeoutMs).toISOString(),
      ...(options.maxCostUsd !== undefined ? { max_cost_usd: options.maxCostUsd } : {}),
    },
  };
}

/** OpenAI's `chat.completion` for a finished job, with the `handoff` report of how it was made. */
export function completionFromRecord(record: JobRecord, traceId: string): ChatCompletion {
  const result = record.result;
  if (!result) throw new Error(`job ${record.id} has no result`);
  const prompt = record.usage.reduce((sum, u) => sum + u.input_tokens, 0);
  const completion = record.usage.reduce((sum, u) => sum + u.output_tokens, 0);
  return {
    id: `chatcmpl-${record.id}`,
    object: "chat.completion",
    created: Math.floor(Date.parse(record.created_at) / 1000),
    model: result.model,
    choices: [
      {
        index: 0,
        message: {
          role: "assistant",
          content: result.message.content,
          ...(result.message.tool_calls ? { tool_calls: result.message.tool_calls } : {}),
          refusal: null,
        },
        finish_reason: result.finish_reason,
        logprobs: null,
      },
    ],
    usage: {
      prompt_tokens: prompt,
      completion_tokens: completion,
      total_tokens: prompt + completion,
    },
    handoff: {
      job_id: record.id,
      route: record.hops,
      ...(record.route ? { decision: record.route } : {}),
      escalated: record.route?.escalation !== undefined,
      ...(record.route?.escalation ? { escalation: record.route.escalation } : {}),
      usage: record.usage,
      cost_usd: record.cost_usd,
      cost_by_stage: record.cost_by_stage,
      ...(record.max_cost_usd !== undefined ? { max_cost_usd: record.max_cost_usd } : {}),
      // The request's own trace: the one its SERVER span started and every hop continued.
      trace_id: traceId || record.trace_id || "",
      simulated: record.usage.some((u) => u.simulated),
    },
  };
}
