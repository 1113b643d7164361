import type { RoutingRow } from "./dataset.js";

/** mulberry32: a small seeded generator, so every shuffle in training is reproducible. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fisher–Yates with a seeded generator; returns a new array. */
export function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  const random = seededRandom(seed);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

/**
 * The group a row is held out with in cross-validation. Unseen topics are what a router meets in
 * production, so folds hold out whole domains (MMLU subjects); a source with a single domain (all
 * of GSM8K is one) is split by row instead, as are rows with no domain.
 */
export function groupKeys(rows: readonly RoutingRow[]): string[] {
  const domainsOf = new Map<string, Set<string>>();
  for (const row of rows) {
    if (row.domain === undefined) continue;
    const source = row.source ?? "";
    const set = domainsOf.get(source) ?? new Set<string>();
    set.add(row.domain);
    domainsOf.set(source, set);
  }
  return rows.map((row) => {
    const source = row.source ?? "";
    if (row.domain !== undefined && (domainsOf.get(source)?.size ?? 0) > 1) {
      return `domain:${source}/${row.domain}`;
    }
    return `row:${row.id}`;
  });
}

/** Assigns each row to one of `k` folds, whole groups together, in a seeded order. */
export function assignFolds(rows: readonly RoutingRow[], k: number, seed: number): number[] {
  const keys = groupKeys(rows);
  const groups = shuffled([...new Set(keys)].sort(), seed);
  const foldOf = new Map<string, number>();
  groups.forEach((group, i) => {
    foldOf.set(group, i % k);
  });
  return keys.map((key) => foldOf.get(key) ?? 0);
}
