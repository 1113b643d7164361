import type { RoutingRow } from "./dataset.js";
import { groupKeys, shuffled } from "./folds.js";

/**
 * How the shipped evaluation holds prompts out of training: whole domains (MMLU subjects, so the
 * router is judged on topics it never saw) and a share of the rows of single-domain sources (half
 * of GSM8K), both picked by a seeded shuffle.
 */
export interface SplitOptions {
  /** Whole domains to hold out. */
  domains: number;
  /** Share of the rows of single-domain sources to hold out. */
  rowShare: number;
  seed: number;
}

export interface Split {
  train: RoutingRow[];
  heldOut: RoutingRow[];
  heldOutDomains: string[];
}

export function splitRows(rows: readonly RoutingRow[], options: SplitOptions): Split {
  const keys = groupKeys(rows);
  const domainKeys = [...new Set(keys.filter((k) => k.startsWith("domain:")))].sort();
  const heldDomains = new Set(shuffled(domainKeys, options.seed).slice(0, options.domains));
  const rowKeys = keys.filter((k) => k.startsWith("row:"));
  const heldRows = new Set(
    shuffled(rowKeys, options.seed + 1).slice(0, Math.round(rowKeys.length * options.rowShare)),
  );
  const train: RoutingRow[] = [];
  const heldOut: RoutingRow[] = [];
  rows.forEach((row, i) => {
    const key = keys[i] as string;
    (heldDomains.has(key) || heldRows.has(key) ? heldOut : train).push(row);
  });
  return {
    train,
    heldOut,
    heldOutDomains: [...heldDomains].map((k) => k.slice(k.indexOf("/") + 1)).sort(),
  };
}
