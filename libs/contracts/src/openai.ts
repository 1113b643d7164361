import { z } from "zod";
import {
  AssistantMessage,
  ChoiceLogprobs,
  Content,
  FinishReason,
  MAX_TOP_LOGPROBS,
  ResponseFormat,
  ToolCall,
  ToolChoice,
  ToolDefinition,
} from "./chat.js";
import { CacheOutcome, Escalation, JobId, Route, Stage, Usage } from "./envelope.js";

/**
 * The gateway's OpenAI-compatible surface: `POST /v1/chat/completions` takes OpenAI's request shape
 * and answers with OpenAI's `chat.completion`, plus a `handoff` object that says how it was made.
 * Fields OpenAI defines but Handoff does not use are accepted and ignored; fields whose meaning
 * Handoff cannot honour are rejected with a named path.
 */

const RequestSystemMessage = z.object({
  role: z.enum(["system", "developer"]),
  content: Content,
  name: z.string().optional(),
});
const RequestUserMessage = z.object({
  role: z.literal("user"),
  content: Content,
  name: z.string().optional(),
});
const RequestAssistantMessage = z.object({
  role: z.literal("assistant"),
  content: Content.nullish(),
  tool_calls: z.array(ToolCall).optional(),
  name: z.string().optional(),
});
const RequestToolMessage = z.object({
  role: z.literal("tool"),
  content: Content,
  tool_call_id: z.string().min(1),
});

export const RequestMessage = z.discriminatedUnion("role", [
  RequestSystemMessage,
  RequestUserMessage,
  RequestAssistantMessage,
  RequestToolMessage,
]);
export type RequestMessage = z.infer<typeof RequestMessage>;

/** Handoff's own request options, in a namespaced object OpenAI clients can pass via extra body. */
export const HandoffRequestOptions = z.object({
  /** How long the gateway waits for the answer before a 504. */
  timeout_ms: z.number().int().min(100).max(600_000).optional(),
  /** Upper bound on the job's model spend, in US dollars. */
  max_cost_usd: z.number().positive().optional(),
  /**
   * The exact response cache, for this request: `false` neither reads nor writes it (as
   * `Cache-Control: no-cache` does); `true` caches it even when it samples (temperature above 0).
   * Absent: the deployment's `cache` settings decide.
   */
  cache: z.boolean().optional(),
});

export const ChatCompletionRequest = z.object({
  model: z.string().min(1),
  messages: z.array(RequestMessage).min(1),
  tools: z.array(ToolDefinition).max(128).optional(),
  tool_choice: ToolChoice.optional(),
  /** False: at most one tool call per turn. */
  parallel_tool_calls: z.boolean().nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  max_tokens: z.number().int().positive().nullish(),
  max_completion_tokens: z.number().int().positive().nullish(),
  stop: z.union([z.string(), z.array(z.string()).max(4)]).nullish(),
  seed: z.number().int().nullish(),
  response_format: ResponseFormat.nullish(),
  /** Return the answer's token log-probabilities in `choices[].logprobs`. */
  logprobs: z.boolean().nullish(),
  /** With `logprobs: true`: the most likely alternatives for each token, 0 to 20. */
  top_logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).nullish(),
  n: z.literal(1, { error: "only n = 1 is supported" }).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
  user: z.string().optional(),
  metadata: z.record(z.string(), z.string()).optional(),
  /** Upper bound on the job's model spend, in US dollars (also `x-handoff-max-cost-usd`). */
  max_cost_usd: z.number().positive().optional(),
  handoff: HandoffRequestOptions.optional(),
});
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;

/** One model call, as reported to the client: the cost of one hop. */
export const HopUsage = Usage;

export const HandoffInfo = z.object({
  job_id: JobId,
  /** The stages the job visited, in order. */
  route: z.array(Stage),
  decision: Route.optional(),
  /** True when a cascade judged the cheap tier's answer and sent the job on to the heavy tier. */
  escalated: z.boolean(),
  /** Why the job was escalated: the stage whose answer was judged, the verdict's score and reason. */
  escalation: Escalation.optional(),
  usage: z.array(HopUsage),
  cost_usd: z.number().nonnegative(),
  /** The same spend, summed per stage. */
  cost_by_stage: z.partialRecord(Stage, z.number().nonnegative()),
  /** The job's budget, when it had one. */
  max_cost_usd: z.number().optional(),
  trace_id: z.string(),
  /** True when any answer in the chain came from the simulated `sim` provider. */
  simulated: z.boolean(),
  /**
   * When the answering call's tier is cached (`cache.tiers`): `hit` when the answer came from the
   * response cache (its usage costs 0), `miss` when the model made it, `bypass` when the request
   * left the cache alone. Absent for a tier that is not cached.
   */
  cache: CacheOutcome.optional(),
});
export type HandoffInfo = z.infer<typeof HandoffInfo>;

/**
 * OpenAI's `usage` of a chat completion, summed over every model call the job made (the hops a
 * route took, the tool loop's turns). `prompt_tokens_details.cached_tokens`, as OpenAI reports it,
 * is the part of `prompt_tokens` the providers read from their prompt caches; it is there when
 * any call read some.
 */
export const CompletionUsage = z.object({
  prompt_tokens: z.number().int(),
  completion_tokens: z.number().int(),
  total_tokens: z.number().int(),
  prompt_tokens_details: z.object({ cached_tokens: z.number().int() }).optional(),
});
export type CompletionUsage = z.infer<typeof CompletionUsage>;

export const ChatCompletion = z.object({
  id: z.string(),
  object: z.literal("chat.completion"),
  created: z.number().int(),
  model: z.string(),
  choices: z.array(
    z.object({
      index: z.number().int(),
      message: AssistantMessage.extend({ refusal: z.string().nullable() }),
      finish_reason: FinishReason,
      /** The answer's token log-probabilities when the request asked (`logprobs: true`). */
      logprobs: ChoiceLogprobs.nullable(),
    }),
  ),
  usage: CompletionUsage,
  handoff: HandoffInfo,
});
export type ChatCompletion = z.infer<typeof ChatCompletion>;

/** One server-sent event of a streamed completion: OpenAI's `chat.completion.chunk`. */
export const ChatCompletionChunk = z.object({
  id: z.string(),
  object: z.literal("chat.completion.chunk"),
  created: z.number().int(),
  model: z.string(),
  choices: z.array(
    z.object({
      index: z.number().int(),
      delta: z.object({
        role: z.literal("assistant").optional(),
        content: z.string().nullable().optional(),
        tool_calls: z
          .array(
            z.object({
              index: z.number().int(),
              id: z.string().optional(),
              type: z.literal("function").optional(),
              function: z.object({ name: z.string().optional(), arguments: z.string().optional() }),
            }),
          )
          .optional(),
      }),
      finish_reason: FinishReason.nullable(),
      logprobs: z.null(),
    }),
  ),
  usage: CompletionUsage.nullable().optional(),
  /** On the last chunk: how the answer was made, as on a non-streamed completion. */
  handoff: HandoffInfo.optional(),
});
export type ChatCompletionChunk = z.infer<typeof ChatCompletionChunk>;

/** OpenAI's error body, with Handoff's issue list when a request failed validation. */
export const ErrorBody = z.object({
  error: z.object({
    message: z.string(),
    type: z.string(),
    param: z.string().nullable(),
    code: z.string().nullable(),
    /** The first 20 issues at most; `total_issues` counts them all. */
    issues: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
    /** How many issues the request had, with `issues`. */
    total_issues: z.number().int().nonnegative().optional(),
    job_id: z.string().optional(),
    trace_id: z.string().optional(),
  }),
});
export type ErrorBody = z.infer<typeof ErrorBody>;
