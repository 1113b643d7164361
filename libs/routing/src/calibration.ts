import { sigmoid } from "./logistic.js";

/**
 * Platt scaling: p = σ(a·z + b), fitted on held-out logits so a model's scores read as
 * probabilities. Fitted by Newton's method on the two parameters, with Platt's smoothed targets so
 * a separable fold does not push the slope to infinity.
 */
export interface Platt {
  a: number;
  b: number;
}

export function fitPlatt(logits: ArrayLike<number>, labels: ArrayLike<number>): Platt {
  const n = logits.length;
  let positives = 0;
  for (let i = 0; i < n; i++) positives += labels[i] as number;
  const negatives = n - positives;
  const hi = (positives + 1) / (positives + 2);
  const lo = 1 / (negatives + 2);
  let a = 1;
  let b = Math.log((positives + 1) / (negatives + 1));
  for (let iteration = 0; iteration < 100; iteration++) {
    let ga = 0;
    let gb = 0;
    let haa = 1e-9;
    let hab = 0;
    let hbb = 1e-9;
    for (let i = 0; i < n; i++) {
      const z = logits[i] as number;
      const label = labels[i] as number;
      // Platt's smoothing for hard labels; soft labels are their own targets.
      const t = label === 1 ? hi : label === 0 ? lo : label;
      const p = sigmoid(a * z + b);
      const d = p - t;
      const w = p * (1 - p);
      ga += d * z;
      gb += d;
      haa += w * z * z;
      hab += w * z;
      hbb += w;
    }
    const det = haa * hbb - hab * hab;
    if (Math.abs(det) < 1e-18) break;
    const da = (hbb * ga - hab * gb) / det;
    const db = (haa * gb - hab * ga) / det;
    a -= da;
    b -= db;
    if (Math.abs(da) < 1e-10 && Math.abs(db) < 1e-10) break;
  }
  return { a, b };
}
