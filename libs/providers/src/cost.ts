import type { Price } from "@handoff/config";
import { roundUsd } from "@handoff/contracts";
import type { TokenUsage } from "./types.js";

/**
 * Dollars for one call at a deployment's list price (per million tokens). The prompt is priced
 * in parts: the tokens read from the provider's prompt cache at `cached_input_per_mtok`, those
 * written to it at `cache_write_per_mtok`, the rest at `input_per_mtok`; a cache price left out
 * is the input price. Cache counts above the prompt (a provider's bad arithmetic) are capped to it.
 */
export function costUsd(price: Price, usage: TokenUsage): number {
  const input = Math.max(0, usage.inputTokens);
  const cached = Math.min(input, Math.max(0, usage.cachedInputTokens ?? 0));
  const written = Math.min(input - cached, Math.max(0, usage.cacheWriteTokens ?? 0));
  const uncached = input - cached - written;
  return roundUsd(
    (uncached * price.input_per_mtok +
      cached * (price.cached_input_per_mtok ?? price.input_per_mtok) +
      written * (price.cache_write_per_mtok ?? price.input_per_mtok) +
      usage.outputTokens * price.output_per_mtok) /
      1e6,
  );
}

/**
 * The most one prompt token may cost at `price`: whichever of the plain, cached and cache-write
 * prices is highest. Before a call nobody knows which tokens the provider's cache will read or
 * write, so a budget check prices every one at this.
 */
export function worstInputPerMtok(price: Price): number {
  return Math.max(
    price.input_per_mtok,
    price.cached_input_per_mtok ?? price.input_per_mtok,
    price.cache_write_per_mtok ?? price.input_per_mtok,
  );
}
