import {
  apgr,
  type Curve,
  type Labels,
  oracleCurve,
  qualityAt,
  qualityCurve,
  randomCurve,
  shareAbove,
  shareFor,
} from "./evaluate.js";

/**
 * The figures `handoff router eval` prints: for each strategy asked, and next to always-weak,
 * always-strong, random and oracle, the strong share at which quality reaches 95% of always-strong,
 * quality at 30% and 50% strong share, APGR, and dollars per 1,000 requests at the config's prices.
 * On a file without labels, only what needs none: the strong share and cost at each strategy's
 * threshold.
 */

export interface EvalRow {
  id: string;
  labels?: Labels | undefined;
  /** Dollars for the light (weak) tier to answer this prompt, and for the heavy (strong) tier. */
  weakUsd: number;
  strongUsd: number;
}

export interface ScoredStrategy {
  name: string;
  scores: ArrayLike<number>;
  threshold: number;
  /**
   * A cascade pays the light call on every request (the light answer is what it verifies) and the
   * strong call on those it escalates; other strategies pay one call per request.
   */
  paysLightFirst: boolean;
}

export interface OperatingPoint {
  threshold: number;
  strong_share: number;
  quality: number | null;
  usd_per_1k: number;
}

export interface StrategyFigures {
  name: string;
  kind: "strategy" | "baseline";
  strong_share_at_95: number | null;
  quality_at_30: number | null;
  quality_at_50: number | null;
  apgr: number | null;
  usd_per_1k_at_95: number | null;
  /** Where the configured (or the model's default) threshold puts it. */
  at_threshold: OperatingPoint | null;
  /** The quality-vs-strong-share curve, sampled every 5% of strong calls (empty without labels). */
  curve: Array<{ strong_share: number; quality: number }>;
}

/** The curve at 0%, 5%, ..., 100% strong calls. */
function sampled(curve: Curve): StrategyFigures["curve"] {
  return Array.from({ length: 21 }, (_, i) => ({
    strong_share: i / 20,
    quality: qualityAt(curve, i / 20),
  }));
}

export interface EvalReport {
  rows: number;
  labelled: boolean;
  weak_quality: number | null;
  strong_quality: number | null;
  oracle_quality: number | null;
  target_quality: number | null;
  usd_per_1k: { always_weak: number; always_strong: number };
  strategies: StrategyFigures[];
}

export interface EvalCurves {
  /** Curve points per figure name, for the plot. */
  curves: Map<string, Curve>;
}

/** Cost of sending the top `share` (by score, ties spread evenly) to the strong model. */
function costAt(
  rows: readonly EvalRow[],
  scores: ArrayLike<number>,
  share: number,
  paysLightFirst: boolean,
): number {
  const n = rows.length;
  const order = Array.from({ length: n }, (_, i) => i).sort(
    (a, b) => (scores[b] as number) - (scores[a] as number) || a - b,
  );
  let total = rows.reduce((sum, row) => sum + row.weakUsd, 0);
  const want = share * n;
  let i = 0;
  while (i < n && i < want) {
    const score = scores[order[i] as number] as number;
    let j = i;
    let delta = 0;
    while (j < n && scores[order[j] as number] === score) {
      const row = rows[order[j] as number] as EvalRow;
      delta += row.strongUsd - (paysLightFirst ? 0 : row.weakUsd);
      j++;
    }
    // A run of ties straddling the share is taken in part: its average cost per prompt.
    total += j <= want ? delta : (delta * (want - i)) / (j - i);
    i = j;
  }
  return (total / n) * 1000;
}

function operatingPoint(
  rows: readonly EvalRow[],
  strategy: ScoredStrategy,
  curve: Curve | undefined,
): OperatingPoint {
  const share = shareAbove(strategy.scores, strategy.threshold);
  return {
    threshold: strategy.threshold,
    strong_share: share,
    quality: curve ? qualityAt(curve, share) : null,
    usd_per_1k: costAt(rows, strategy.scores, share, strategy.paysLightFirst),
  };
}

function figuresOf(
  name: string,
  kind: StrategyFigures["kind"],
  curve: Curve,
  cost: (share: number) => number,
  target: number,
  at: OperatingPoint | null,
): StrategyFigures {
  const share = shareFor(curve, target);
  return {
    name,
    kind,
    strong_share_at_95: share ?? null,
    quality_at_30: qualityAt(curve, 0.3),
    quality_at_50: qualityAt(curve, 0.5),
    apgr: apgr(curve),
    usd_per_1k_at_95: share === undefined ? null : cost(share),
    at_threshold: at,
    curve: sampled(curve),
  };
}

export function evaluateStrategies(
  rows: readonly EvalRow[],
  strategies: readonly ScoredStrategy[],
): EvalReport & EvalCurves {
  const n = rows.length;
  if (n === 0) throw new Error("nothing to evaluate: no rows");
  const perThousand = (sum: number) => (sum / n) * 1000;
  const usd = {
    always_weak: perThousand(rows.reduce((s, r) => s + r.weakUsd, 0)),
    always_strong: perThousand(rows.reduce((s, r) => s + r.strongUsd, 0)),
  };
  const labelled = rows.every((row) => row.labels !== undefined);
  const curves = new Map<string, Curve>();
  if (!labelled) {
    return {
      rows: n,
      labelled,
      weak_quality: null,
      strong_quality: null,
      oracle_quality: null,
      target_quality: null,
      usd_per_1k: usd,
      strategies: strategies.map((s) => ({
        name: s.name,
        kind: "strategy",
        strong_share_at_95: null,
        quality_at_30: null,
        quality_at_50: null,
        apgr: null,
        usd_per_1k_at_95: null,
        at_threshold: operatingPoint(rows, s, undefined),
        curve: [],
      })),
      curves,
    };
  }
  const labels = rows.map((row) => row.labels as Labels);
  const random = randomCurve(labels);
  const oracle = oracleCurve(labels);
  const target = 0.95 * random.strongQuality;
  const oracleScores = labels.map((l) => Number(l.strong) - Number(l.weak));
  const figures: StrategyFigures[] = [];
  for (const strategy of strategies) {
    const curve = qualityCurve(strategy.scores, labels);
    curves.set(strategy.name, curve);
    figures.push(
      figuresOf(
        strategy.name,
        "strategy",
        curve,
        (share) => costAt(rows, strategy.scores, share, strategy.paysLightFirst),
        target,
        operatingPoint(rows, strategy, curve),
      ),
    );
  }
  const flat = new Float64Array(n);
  curves.set("random", random);
  curves.set("oracle", oracle);
  const always = (name: string, share: number): StrategyFigures => ({
    name,
    kind: "baseline",
    strong_share_at_95: qualityAt(random, share) >= target - 1e-12 ? share : null,
    quality_at_30: null,
    quality_at_50: null,
    apgr: null,
    usd_per_1k_at_95: null,
    curve: [],
    at_threshold: {
      threshold: share === 0 ? 1 : 0,
      strong_share: share,
      quality: qualityAt(random, share),
      usd_per_1k: share === 0 ? usd.always_weak : usd.always_strong,
    },
  });
  figures.push(
    always("always-weak", 0),
    always("always-strong", 1),
    figuresOf(
      "random",
      "baseline",
      random,
      (share) => costAt(rows, flat, share, false),
      target,
      null,
    ),
    figuresOf(
      "oracle",
      "baseline",
      oracle,
      (share) => costAt(rows, oracleScores, share, false),
      target,
      null,
    ),
  );
  return {
    rows: n,
    labelled,
    weak_quality: random.weakQuality,
    strong_quality: random.strongQuality,
    oracle_quality: labels.reduce((s, l) => s + Number(l.weak || l.strong), 0) / n,
    target_quality: target,
    usd_per_1k: usd,
    strategies: figures,
    curves,
  };
}
