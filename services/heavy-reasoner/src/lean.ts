import type { Compaction, JobEnvelope, Message } from "@handoff/contracts";
import { remainingBudget, stageAfter } from "@handoff/contracts";
import {
  type CompactionStrategy,
  callCacheOf,
  compactHandoff,
  cutToolOutputs,
  estimateInputTokens,
  type SummaryRouter,
} from "@handoff/providers";
import { trace } from "@opentelemetry/api";
import { contextMessage } from "./context.js";

/** The lean handoff's settings for the heavy tier (`limits.handoff_tokens`, `handoff_compaction`). */
export interface LeanHandoff {
  /** Prompt tokens the heavy model may be sent; absent: everything goes, as before. */
  budget?: number | undefined;
  strategy: CompactionStrategy;
  /** The light tier's own budget, which bounds what a summary call may be sent. */
  lightBudget?: number | undefined;
}

/** Enrichments only the heavy-reasoner reads: after its visit, no stage does. */
const READ_BY_HEAVY_ONLY = new Set(["classification", "tool_results", "draft"]);

/**
 * The heavy model's messages within the heavy tier's handoff budget: the tool outputs of the
 * context from earlier hops cut to what the draft used (to a tenth of the budget each), then the
 * client's conversation compacted around that context, which still comes last. Puts the
 * `compaction` enrichment on the envelope, and the summary call's usage when one was made, and
 * sets `handoff.compaction.*` on the stage's span. Without a budget: `heavyMessages`' answer.
 */
export async function leanHeavyMessages(
  envelope: JobEnvelope,
  router: SummaryRouter,
  lean: LeanHandoff,
  signal: AbortSignal,
): Promise<Message[]> {
  const budget = lean.budget;
  const { input } = envelope;
  if (budget === undefined) {
    const context = contextMessage(envelope);
    return context ? [...input.messages, context] : [...input.messages];
  }
  const draft = envelope.enrichments
    .filter((e) => e.kind === "draft")
    .map((e) => e.content)
    .join("\n");
  let toolOutputsCut = 0;
  const view: JobEnvelope = {
    ...envelope,
    enrichments: envelope.enrichments.map((e) => {
      if (e.kind !== "tool_results") return e;
      const { runs, cut } = cutToolOutputs(
        e.runs,
        draft || undefined,
        Math.max(64, Math.floor(budget / 10)),
      );
      toolOutputsCut += cut;
      return { ...e, runs };
    }),
  };
  const context = contextMessage(view);
  const base = estimateInputTokens([]);
  const reserve =
    (context ? estimateInputTokens([context]) - base : 0) +
    (estimateInputTokens([], input.tools) - base);
  const options = { budget, reserve, tier: "heavy" as const };
  const compacted = await compactHandoff(input.messages, lean.strategy, {
    ...options,
    router,
    ...(lean.lightBudget !== undefined ? { lightBudget: lean.lightBudget } : {}),
    call: {
      stage: "heavy-reasoner",
      signal,
      budgetUsd: remainingBudget(envelope),
      cache: callCacheOf(envelope),
    },
  });
  if (compacted.usage) envelope.usage.push(compacted.usage);
  // The tokens before: the whole conversation and the context with its tool outputs uncut.
  const uncut = contextMessage(envelope);
  const before = estimateInputTokens(
    uncut ? [...input.messages, uncut] : input.messages,
    input.tools,
  );
  const report: Compaction = {
    kind: "compaction",
    stage: "heavy-reasoner",
    tier: "heavy",
    strategy: compacted.report.strategy,
    budget_tokens: budget,
    tokens_before: before,
    tokens_after: compacted.report.tokens_after,
    turns_dropped: compacted.report.turns_dropped,
    turns_summarised: compacted.report.turns_summarised,
    tool_outputs_cut: toolOutputsCut,
    ...(compacted.report.fallback ? { fallback: compacted.report.fallback } : {}),
  };
  envelope.enrichments.push(report);
  trace.getActiveSpan()?.setAttributes({
    "handoff.compaction.strategy": report.strategy,
    "handoff.compaction.budget_tokens": report.budget_tokens,
    "handoff.compaction.tokens_before": report.tokens_before,
    "handoff.compaction.tokens_after": report.tokens_after,
    "handoff.compaction.turns_dropped": report.turns_dropped,
    "handoff.compaction.turns_summarised": report.turns_summarised,
    "handoff.compaction.tool_outputs_cut": report.tool_outputs_cut,
    ...(report.fallback ? { "handoff.compaction.fallback": report.fallback } : {}),
  });
  return context ? [...compacted.messages, context] : compacted.messages;
}

/**
 * After the heavy-reasoner's last visit, what only it reads (the route's signals, the tool runs,
 * the draft) goes: the job record and the client's answer read the route, hops, usage and result,
 * never the enrichments. The kinds dropped are listed on the visit's `compaction` enrichment. A
 * plan that goes on after this visit keeps everything.
 */
export function dropUnread(envelope: JobEnvelope): void {
  if (stageAfter(envelope, "heavy-reasoner") !== undefined) return;
  const report = envelope.enrichments.findLast(
    (e): e is Compaction => e.kind === "compaction" && e.stage === "heavy-reasoner",
  );
  if (!report) return;
  const dropped = envelope.enrichments.filter((e) => READ_BY_HEAVY_ONLY.has(e.kind));
  if (dropped.length === 0) return;
  report.enrichments_dropped = [...new Set(dropped.map((e) => e.kind))];
  envelope.enrichments = envelope.enrichments.filter((e) => !READ_BY_HEAVY_ONLY.has(e.kind));
  trace.getActiveSpan()?.setAttribute("handoff.compaction.enrichments_dropped", dropped.length);
}
