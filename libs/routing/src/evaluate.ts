/**
 * The evaluation of a router over labelled prompts: a plain function of (scores, labels), so the
 * same code scores a benchmark file and a team's own traffic. A router sends the prompts it scores
 * highest to the strong model; sweeping the threshold from "none" to "all" traces quality against
 * the share of strong calls. Prompts with equal scores are taken in random order, which on
 * average makes the curve a straight line across each run of ties: that expectation is what is
 * computed, so a router cannot look better by the order its ties happen to come in.
 *
 * - quality: the share answered correctly (weak_correct when routed weak, strong_correct when strong);
 * - strong share: the share of prompts routed to the strong model;
 * - strong_share_at_95: the smallest strong share at which quality reaches 95% of always-strong;
 * - APGR (RouteLLM's "average performance gap recovered"): the area under the curve between
 *   always-weak and always-strong, as a share of the gap, here over the exact curve rather than
 *   RouteLLM's ten sampled thresholds.
 */

export interface Labels {
  weak: boolean;
  strong: boolean;
}

/** A corner of the curve: routing the prompts scoring at least `threshold` to the strong model. */
export interface CurvePoint {
  share: number;
  quality: number;
  /** The score threshold that gives this point (Infinity at share 0). */
  threshold: number;
}

export interface Curve {
  points: CurvePoint[];
  weakQuality: number;
  strongQuality: number;
}

export function qualityCurve(scores: ArrayLike<number>, labels: readonly Labels[]): Curve {
  const n = labels.length;
  if (n === 0 || scores.length !== n)
    throw new Error("scores and labels must be non-empty and of one length");
  const order = Array.from({ length: n }, (_, i) => i).sort(
    (a, b) => (scores[b] as number) - (scores[a] as number) || a - b,
  );
  let correct = 0;
  let strongCorrect = 0;
  for (const label of labels) {
    correct += label.weak ? 1 : 0;
    strongCorrect += label.strong ? 1 : 0;
  }
  const weakQuality = correct / n;
  const points: CurvePoint[] = [
    { share: 0, quality: weakQuality, threshold: Number.POSITIVE_INFINITY },
  ];
  let i = 0;
  while (i < n) {
    const score = scores[order[i] as number] as number;
    let j = i;
    while (j < n && scores[order[j] as number] === score) {
      const label = labels[order[j] as number] as Labels;
      correct += (label.strong ? 1 : 0) - (label.weak ? 1 : 0);
      j++;
    }
    points.push({ share: j / n, quality: correct / n, threshold: score });
    i = j;
  }
  return { points, weakQuality, strongQuality: strongCorrect / n };
}

/** The straight curve of a router that picks at random. */
export function randomCurve(labels: readonly Labels[]): Curve {
  return qualityCurve(new Float64Array(labels.length), labels);
}

/** The curve of a router that knows the answers: the upper bound. */
export function oracleCurve(labels: readonly Labels[]): Curve {
  return qualityCurve(
    labels.map((l) => Number(l.strong) - Number(l.weak)),
    labels,
  );
}

/** Quality at a strong share, interpolated along the curve. */
export function qualityAt(curve: Curve, share: number): number {
  const { points } = curve;
  for (let k = 1; k < points.length; k++) {
    const a = points[k - 1] as CurvePoint;
    const b = points[k] as CurvePoint;
    if (share <= b.share) {
      if (b.share === a.share) return b.quality;
      return a.quality + ((b.quality - a.quality) * (share - a.share)) / (b.share - a.share);
    }
  }
  return (points.at(-1) as CurvePoint).quality;
}

/** The smallest strong share at which quality reaches `target`; undefined if it never does. */
export function shareFor(curve: Curve, target: number): number | undefined {
  const { points } = curve;
  const eps = 1e-12;
  if ((points[0] as CurvePoint).quality >= target - eps) return 0;
  for (let k = 1; k < points.length; k++) {
    const a = points[k - 1] as CurvePoint;
    const b = points[k] as CurvePoint;
    if (b.quality >= target - eps) {
      if (b.quality === a.quality) return b.share;
      return a.share + ((b.share - a.share) * (target - a.quality)) / (b.quality - a.quality);
    }
  }
  return undefined;
}

/** RouteLLM's APGR over the exact curve. */
export function apgr(curve: Curve): number {
  const gap = curve.strongQuality - curve.weakQuality;
  if (gap === 0) return 0;
  let area = 0;
  const { points } = curve;
  for (let k = 1; k < points.length; k++) {
    const a = points[k - 1] as CurvePoint;
    const b = points[k] as CurvePoint;
    area += ((b.share - a.share) * (a.quality + b.quality)) / 2;
  }
  return (area - curve.weakQuality) / gap;
}

/**
 * The score threshold that sends `share` of the prompts to the strong model (those scoring at or
 * above it). Tied scores move together, so the realized share can only be one of the steps between
 * them: this picks the step nearest to `share`, the larger one when two are as near.
 */
export function thresholdForShare(scores: ArrayLike<number>, share: number): number {
  if (!(share >= 0 && share <= 1))
    throw new Error(`a strong share is between 0 and 1, got ${share}`);
  const sorted = Float64Array.from(scores).sort().reverse();
  const n = sorted.length;
  if (n === 0) throw new Error("no scores to calibrate on");
  const want = share * n;
  // Candidate thresholds: each distinct score (sending every prompt at or above it), and one just
  // above the highest (sending none).
  let best = { threshold: Math.min(1, (sorted[0] as number) + 1e-9), distance: want };
  let i = 0;
  while (i < n) {
    const score = sorted[i] as number;
    let j = i;
    while (j < n && sorted[j] === score) j++;
    const distance = Math.abs(j - want);
    if (distance <= best.distance) best = { threshold: score, distance };
    i = j;
  }
  return best.threshold;
}

/** Share of scores at or above a threshold. */
export function shareAbove(scores: ArrayLike<number>, threshold: number): number {
  let above = 0;
  for (let i = 0; i < scores.length; i++) if ((scores[i] as number) >= threshold) above++;
  return scores.length === 0 ? 0 : above / scores.length;
}
