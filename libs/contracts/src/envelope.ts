import { z } from "zod";
import {
  AssistantMessage,
  ChatParams,
  ChoiceLogprobs,
  FinishReason,
  Message,
  ToolChoice,
  ToolDefinition,
} from "./chat.js";
import { Stages } from "./subjects.js";

/**
 * The job envelope: the one message that travels the mesh. Each stage reads it, appends what it
 * learned (an enrichment) and what it spent (usage), and passes it on to the stage its plan names.
 */

/** Job ids are subject tokens and KV keys, so they keep to a safe alphabet. */
export const JobId = z
  .string()
  .regex(/^[A-Za-z0-9_-]{8,64}$/, "job ids are 8-64 letters, digits, '_' or '-'");
export type JobId = z.infer<typeof JobId>;

/**
 * Who submitted a job: the *name* of the gateway API key it came with (config's
 * `gateway.api_keys[].name`), never the key. Only that key, or one with the `admin` scope, reads
 * the job back. Absent on jobs submitted while the API was open.
 */
export const JobOwner = z
  .string()
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/,
    "an owner is an API key name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
  );
export type JobOwner = z.infer<typeof JobOwner>;

/** A mesh stage: one service, one durable consumer, one subject. */
export const Stage = z.enum(Stages);
export type Stage = z.infer<typeof Stage>;

/** The three model tiers a deployment maps to providers. */
export const Tier = z.enum(["light", "mid", "heavy"]);
export type Tier = z.infer<typeof Tier>;

/** What the classifier decided the request needs. */
export const RouteDecision = z.enum(["light", "tools", "heavy"]);
export type RouteDecision = z.infer<typeof RouteDecision>;

/** A cascade's verdict that the light answer does not stand: the job goes on to the heavy tier. */
export const Escalation = z.object({
  /** The stage whose answer was judged. */
  stage: Stage,
  /** The verifier's score of the answer, compared with the route's threshold. */
  score: z.number().min(0).max(1),
  /** Why: the verifier's signals (arithmetic error, no final answer, low confidence, ...). */
  reason: z.string(),
});
export type Escalation = z.infer<typeof Escalation>;

export const Route = z.object({
  decision: RouteDecision,
  /** The strategy that decided: `rules`, `learned`, `llm`, `cascade`, or `pinned`. */
  strategy: z.string().min(1),
  /** How sure the strategy is of the decision it made. */
  confidence: z.number().min(0).max(1),
  /** Human-readable why: the signals that fired, or the model's estimate. */
  reason: z.string(),
  /** The strategy's score: how much the request needs the heavy tier, in [0, 1]. */
  score: z.number().min(0).max(1).optional(),
  /** The threshold the score was compared with: at or above it, the heavy tier answers. */
  threshold: z.number().min(0).max(1).optional(),
  /** Set when a cascade judged the cheap answer and escalated the job to the heavy tier. */
  escalation: Escalation.optional(),
});
export type Route = z.infer<typeof Route>;

/** One visit of a stage. The ordered list of hops is the route the job took. */
export const Hop = z.object({
  stage: Stage,
  /** The service instance that processed it (its NATS service id). */
  instance: z.string(),
  started_at: z.iso.datetime(),
  finished_at: z.iso.datetime(),
  /** JetStream delivery count of the message: above 1 means a redelivery. */
  delivery: z.number().int().positive(),
});
export type Hop = z.infer<typeof Hop>;

/**
 * What the exact response cache did for a call of a cached tier: `hit` answered from the cache,
 * `miss` looked it up and called the model, `bypass` left it alone (the request said so, or it
 * samples: temperature above 0).
 */
export const CacheOutcome = z.enum(["hit", "miss", "bypass"]);
export type CacheOutcome = z.infer<typeof CacheOutcome>;

/**
 * One model call: who answered, how many tokens, what it cost.
 *
 * `input_tokens` is the whole prompt, whatever the provider's own count means: OpenAI's
 * `prompt_tokens` already includes the tokens read from its prompt cache, Anthropic's
 * `input_tokens` leaves out those read from and written to its cache, so the Anthropic adapter
 * adds them back. `cached_input_tokens` and `cache_write_tokens` are parts of `input_tokens`,
 * each priced at its own rate (`price.cached_input_per_mtok`, `price.cache_write_per_mtok`).
 */
export const Usage = z.object({
  stage: Stage,
  tier: Tier,
  provider: z.string(),
  model: z.string(),
  /** Every prompt token, the cached parts below included. */
  input_tokens: z.number().int().nonnegative(),
  /**
   * Of `input_tokens`, those the provider read from its prompt cache (OpenAI's
   * `prompt_tokens_details.cached_tokens`, Anthropic's `cache_read_input_tokens`). Absent: none.
   */
  cached_input_tokens: z.number().int().nonnegative().optional(),
  /**
   * Of `input_tokens`, those the provider wrote to its prompt cache (Anthropic's
   * `cache_creation_input_tokens`; OpenAI reports none). Absent: none.
   */
  cache_write_tokens: z.number().int().nonnegative().optional(),
  output_tokens: z.number().int().nonnegative(),
  cost_usd: z.number().nonnegative(),
  latency_ms: z.number().nonnegative(),
  /** True when the model is the simulated `sim` provider. */
  simulated: z.boolean(),
  /**
   * Set when the call's tier is cached (`cache.tiers`). On a `hit` the model was not called:
   * `cost_usd` is 0, the tokens are those the original call counted, `saved_usd` what it cost.
   */
  cache: CacheOutcome.optional(),
  /** On a cache hit: what the answer cost when the model made it, not spent this time. */
  saved_usd: z.number().nonnegative().optional(),
});
export type Usage = z.infer<typeof Usage>;

/** One tool execution by the tool-executor. */
export const ToolRun = z.object({
  id: z.string(),
  name: z.string(),
  arguments: z.string(),
  output: z.string(),
  /** Set when the tool failed; the error text is what the model saw. */
  error: z.string().optional(),
  /**
   * What kind of failure: `not_allowed`, `unknown_tool`, `invalid_arguments`, `tool_error`,
   * `timeout`, `no_responders` or `unavailable`.
   */
  error_type: z.string().optional(),
  latency_ms: z.number().nonnegative(),
});
export type ToolRun = z.infer<typeof ToolRun>;

/**
 * What a hop left out of the prompt it sent a tier's model to keep it within the tier's handoff
 * budget (`limits.handoff_tokens`): the lean handoff. Tokens are the mesh's estimate (about four
 * characters a token), before and after, of the whole prompt the hop built for that model.
 */
export const Compaction = z.object({
  kind: z.literal("compaction"),
  stage: Stage,
  /** The tier whose prompt was compacted. */
  tier: Tier,
  /**
   * `select`: old turns kept by relevance to the last user turn, one marker for the rest;
   * `summarize`: the rest replaced by a light-tier summary; `none`: the prompt fit, only tool
   * outputs may have been cut.
   */
  strategy: z.enum(["select", "summarize", "none"]),
  /** The budget the prompt was fitted to. */
  budget_tokens: z.number().int().nonnegative(),
  tokens_before: z.number().int().nonnegative(),
  tokens_after: z.number().int().nonnegative(),
  /** Messages of the client's conversation left out (behind a marker, or summarised). */
  turns_dropped: z.number().int().nonnegative(),
  /** Of those, the ones a light-tier summary stands for. */
  turns_summarised: z.number().int().nonnegative(),
  /** Tool outputs in the context from earlier hops cut to what the draft used. */
  tool_outputs_cut: z.number().int().nonnegative(),
  /** Enrichments no later stage reads, dropped from the envelope the stage passed on, by kind. */
  enrichments_dropped: z.array(z.string()).optional(),
  /** Why `summarize` fell back to `select` (the call failed, the budget forbade it). */
  fallback: z.string().optional(),
});
export type Compaction = z.infer<typeof Compaction>;

/** What a stage learned, for the stages after it. */
export const Enrichment = z.discriminatedUnion("kind", [
  z.object({
    kind: z.literal("classification"),
    stage: Stage,
    signals: z.array(z.string()),
  }),
  z.object({
    kind: z.literal("tool_results"),
    stage: Stage,
    runs: z.array(ToolRun),
    steps: z.number().int().nonnegative(),
  }),
  z.object({
    kind: z.literal("draft"),
    stage: Stage,
    /** A lower tier's answer, handed up when it escalates. */
    content: z.string(),
    reason: z.string(),
  }),
  Compaction,
]);
export type Enrichment = z.infer<typeof Enrichment>;

export const Budget = z.object({
  /** Upper bound on the job's total model spend. */
  max_cost_usd: z.number().nonnegative().optional(),
  /** After this instant no stage starts work on the job. */
  deadline: z.iso.datetime(),
});
export type Budget = z.infer<typeof Budget>;

export const JobInput = z.object({
  /** The model name the client asked for; routing decides which model answers. */
  model: z.string(),
  messages: z.array(Message).min(1),
  /** Tools defined by the client: their calls are returned to the client, not run here. */
  tools: z.array(ToolDefinition).default([]),
  tool_choice: ToolChoice.optional(),
  params: ChatParams.default({}),
  /** The client reads the answer as it is produced: the answering stage relays its tokens. */
  stream: z.boolean().default(false),
});
export type JobInput = z.infer<typeof JobInput>;

export const JobResult = z.object({
  message: AssistantMessage,
  finish_reason: FinishReason,
  stage: Stage,
  provider: z.string(),
  model: z.string(),
  /** The answer's token log-probabilities, when the client asked (`params.logprobs`). */
  logprobs: ChoiceLogprobs.optional(),
});
export type JobResult = z.infer<typeof JobResult>;

export const JobError = z.object({
  code: z.string(),
  message: z.string(),
  retryable: z.boolean(),
  stage: Stage.optional(),
});
export type JobError = z.infer<typeof JobError>;

/**
 * What the request said of the exact response cache: `bypass` neither reads nor writes it
 * (`Cache-Control: no-cache` or `no-store`, `"handoff": {"cache": false}`); `sampled` caches the
 * request's answers even when it samples (`"handoff": {"cache": true}`).
 */
export const JobCacheChoice = z.object({
  bypass: z.boolean().optional(),
  sampled: z.boolean().optional(),
});
export type JobCacheChoice = z.infer<typeof JobCacheChoice>;

export const JobEnvelope = z.object({
  v: z.literal(1),
  id: JobId,
  created_at: z.iso.datetime(),
  /** The API key name that submitted the job; its record keeps it. */
  owner: JobOwner.optional(),
  input: JobInput,
  /** Stages to visit, in order. Starts as `[classifier]`; stages may extend it (escalation). */
  plan: z.array(Stage).min(1),
  /**
   * The position in `plan` of the stage this message is addressed to. A plan may name a stage
   * twice; the position tells the visits apart, for forwarding and for dedupe ids. Envelopes
   * written before it existed are read as addressed to the stage's last visit.
   */
  step: z.number().int().nonnegative().optional(),
  /**
   * The job's record keeps its input (messages and tools), so its traffic can be replayed through
   * any routing strategy (`routing.record_inputs`). Off: prompts stay out of storage.
   */
  record_input: z.boolean().optional(),
  /** The request's choice about the response cache; absent: the deployment's rules apply. */
  cache: JobCacheChoice.optional(),
  route: Route.optional(),
  hops: z.array(Hop).default([]),
  enrichments: z.array(Enrichment).default([]),
  usage: z.array(Usage).default([]),
  budget: Budget,
  result: JobResult.optional(),
  error: JobError.optional(),
});
export type JobEnvelope = z.infer<typeof JobEnvelope>;
/** The envelope as a producer may write it (defaults not yet applied). */
export type JobEnvelopeInput = z.input<typeof JobEnvelope>;

/** Model spend per stage, for the stages that spent anything. */
export function costByStage(usage: readonly Usage[]): Partial<Record<Stage, number>> {
  const out: Partial<Record<Stage, number>> = {};
  for (const u of usage) out[u.stage] = roundUsd((out[u.stage] ?? 0) + u.cost_usd);
  return out;
}

/**
 * The prompt tokens of a job's calls that providers read from and wrote to their prompt caches,
 * summed: parts of the summed `input_tokens`.
 */
export function promptCacheTokens(usage: readonly Usage[]): { read: number; written: number } {
  let read = 0;
  let written = 0;
  for (const u of usage) {
    read += u.cached_input_tokens ?? 0;
    written += u.cache_write_tokens ?? 0;
  }
  return { read, written };
}

/** Total model spend of a job so far. */
export function totalCost(usage: readonly Usage[]): number {
  return roundUsd(usage.reduce((sum, u) => sum + u.cost_usd, 0));
}

/**
 * What the job may still spend: its `max_cost_usd` minus what its usage (and `pending`, usage not
 * yet on the envelope) has cost. Undefined when the job has no budget.
 */
export function remainingBudget(
  envelope: Pick<JobEnvelope, "budget" | "usage">,
  pending: readonly Usage[] = [],
): number | undefined {
  const max = envelope.budget.max_cost_usd;
  if (max === undefined) return undefined;
  return Math.max(0, roundUsd(max - totalCost([...envelope.usage, ...pending])));
}

/** Dollar amounts are kept to a nano-dollar: fine enough for per-token prices, free of float dust. */
export function roundUsd(value: number): number {
  return Math.round(value * 1e9) / 1e9;
}

/** The stage after `current` in the plan, or undefined when `current` is the last. */
export function nextStage(plan: readonly Stage[], current: Stage): Stage | undefined {
  const at = plan.lastIndexOf(current);
  return at === -1 ? undefined : plan[at + 1];
}

/**
 * The position in the plan of the visit `stage` is making: the envelope's `step`, or for an
 * envelope without one, the stage's last place in the plan (-1 when the plan does not name it).
 */
export function planStep(envelope: Pick<JobEnvelope, "plan" | "step">, stage: Stage): number {
  return envelope.step ?? envelope.plan.lastIndexOf(stage);
}

/** The stage after the visit `stage` is making, or undefined when that visit is the plan's last. */
export function stageAfter(
  envelope: Pick<JobEnvelope, "plan" | "step">,
  stage: Stage,
): Stage | undefined {
  const at = planStep(envelope, stage);
  return at === -1 ? undefined : envelope.plan[at + 1];
}

/**
 * One piece of a streamed answer, on `handoff.v1.stream.<jobId>` (core NATS). `seq` counts from 0
 * per delivery of the job to the answering stage, so a consumer can spot a gap or a restart.
 */
export const StreamChunk = z.object({
  job_id: JobId,
  stage: Stage,
  /** JetStream delivery of the job at that stage: a redelivered job streams anew. */
  delivery: z.number().int().positive(),
  seq: z.number().int().nonnegative(),
  model: z.string(),
  delta: z.string(),
});
export type StreamChunk = z.infer<typeof StreamChunk>;
