import type { Price } from "@handoff/config";
import { roundUsd } from "@handoff/contracts";
import type { TokenUsage } from "./types.js";

/** Dollars for one call at a deployment's list price (per million tokens). */
export function costUsd(price: Price, usage: TokenUsage): number {
  return roundUsd(
    (usage.inputTokens * price.input_per_mtok + usage.outputTokens * price.output_per_mtok) / 1e6,
  );
}
