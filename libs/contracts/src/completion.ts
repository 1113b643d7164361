import { type CacheOutcome, promptCacheTokens } from "./envelope.js";
import type { JobRecord } from "./job-record.js";
import type { ChatCompletion } from "./openai.js";

/**
 * What the response cache did for the call that answered a job (the answering stage's last model
 * call): `hit`, `miss` or `bypass`; undefined when that call's tier is not cached.
 */
export function answerCacheOutcome(
  record: Pick<JobRecord, "usage" | "result">,
): CacheOutcome | undefined {
  const stage = record.result?.stage;
  if (!stage) return undefined;
  return record.usage.filter((u) => u.stage === stage).at(-1)?.cache;
}

/** OpenAI's `chat.completion` for a finished job, with the `handoff` report of how it was made. */
export function completionFromRecord(record: JobRecord, traceId: string): ChatCompletion {
  const result = record.result;
  if (!result) throw new Error(`job ${record.id} has no result`);
  const prompt = record.usage.reduce((sum, u) => sum + u.input_tokens, 0);
  const completion = record.usage.reduce((sum, u) => sum + u.output_tokens, 0);
  // Like `prompt_tokens`, summed over the job's calls: a part of it, so the two add up.
  const { read: cached } = promptCacheTokens(record.usage);
  const cache = answerCacheOutcome(record);
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
        logprobs: result.logprobs ?? null,
      },
    ],
    usage: {
      prompt_tokens: prompt,
      completion_tokens: completion,
      total_tokens: prompt + completion,
      ...(cached > 0 ? { prompt_tokens_details: { cached_tokens: cached } } : {}),
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
      ...(cache ? { cache } : {}),
    },
  };
}
