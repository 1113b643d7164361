import type { Deployment } from "@handoff/config";
import { roundUsd } from "@handoff/contracts";
import { costUsd, worstInputPerMtok } from "./cost.js";
import { estimateInputTokens } from "./tokens.js";
import type { ChatRequest } from "./types.js";

/** Input estimates are a tokenizer-free guess; a margin keeps the budget check on the safe side. */
const INPUT_MARGIN = 1.25;
/** Fewer output tokens than this is not an answer worth paying for. */
const MIN_OUTPUT_TOKENS = 16;

export interface Fit {
  /** The request to send: `max_tokens` lowered when the budget only affords a shorter answer. */
  request: ChatRequest;
  /** The most the call can cost, given its input estimate and its output cap. */
  worstCaseUsd: number;
}

/**
 * Whether a call to `deployment` fits in `budgetUsd`, and the request that keeps it inside: the
 * output is capped with `max_tokens`, so the answer cannot cost more than what is left. Undefined
 * when even a short answer would overspend. No budget means everything fits as asked.
 */
export function fitBudget(
  deployment: Deployment,
  request: ChatRequest,
  budgetUsd: number | undefined,
): Fit | undefined {
  const inputTokens = Math.ceil(
    estimateInputTokens(request.messages, request.tools) * INPUT_MARGIN,
  );
  const askedOutput = request.params?.max_tokens ?? deployment.max_output_tokens;
  // Every prompt token at its dearest price: a cache write can cost more than plain input.
  const price = { ...deployment.price, input_per_mtok: worstInputPerMtok(deployment.price) };
  const worst = (outputTokens: number) => costUsd(price, { inputTokens, outputTokens });
  if (budgetUsd === undefined || worst(askedOutput) <= budgetUsd) {
    return { request, worstCaseUsd: worst(askedOutput) };
  }
  const inputUsd = worst(0);
  const perOutputToken = deployment.price.output_per_mtok / 1e6;
  if (inputUsd > budgetUsd || perOutputToken === 0) return undefined;
  const affordable = Math.floor(roundUsd(budgetUsd - inputUsd) / perOutputToken);
  if (affordable < MIN_OUTPUT_TOKENS) return undefined;
  const maxTokens = Math.min(askedOutput, affordable);
  return {
    request: { ...request, params: { ...request.params, max_tokens: maxTokens } },
    worstCaseUsd: worst(maxTokens),
  };
}
