import { z } from "zod";
import { AssistantMessage, ChoiceLogprobs, FinishReason } from "./chat.js";

/**
 * One answer in the exact response cache (the `handoff-cache-<tier>` KV buckets), under
 * `<tenant>.<sha256 hex>`: what a model call returned, and what that call cost, so a hit can be
 * answered exactly as the call was, and say what it saved.
 */
export const CachedAnswer = z.object({
  v: z.literal(1),
  message: AssistantMessage,
  finish_reason: FinishReason,
  /** The provider and model that answered, as the call's usage named them. */
  provider: z.string(),
  model: z.string(),
  /** The deployment that answered (its id): always the tier's first. */
  deployment: z.string(),
  simulated: z.boolean(),
  /** The answer's content-token log-probabilities, when the call asked for them (the cascade). */
  logprobs: z.array(z.number()).optional(),
  /** The client's log-probabilities (`params.logprobs`), when the call asked for them. */
  choice_logprobs: ChoiceLogprobs.optional(),
  /** The original call's tokens and cost. */
  usage: z.object({
    input_tokens: z.number().int().nonnegative(),
    /** Of `input_tokens`, those the provider read from its prompt cache. */
    cached_input_tokens: z.number().int().nonnegative().optional(),
    /** Of `input_tokens`, those the provider wrote to its prompt cache. */
    cache_write_tokens: z.number().int().nonnegative().optional(),
    output_tokens: z.number().int().nonnegative(),
    cost_usd: z.number().nonnegative(),
  }),
  stored_at: z.iso.datetime(),
});
export type CachedAnswer = z.infer<typeof CachedAnswer>;
