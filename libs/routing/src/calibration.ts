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

/** log(1 + e^f), without overflow. */
function softplus(f: number): number {
  return f > 0 ? f + Math.log1p(Math.exp(-f)) : Math.log1p(Math.exp(f));
}

/** The cross-entropy of σ(a·z + b) against the targets. */
function plattLoss(logits: ArrayLike<number>, targets: Float64Array, a: number, b: number): number {
  let loss = 0;
  for (let i = 0; i < targets.length; i++) {
    const f = a * (logits[i] as number) + b;
    loss += softplus(f) - (targets[i] as number) * f;
  }
  return loss;
}

/**
 * Newton's method from (1, the prior log-odds). Undamped, it takes every full step, and may
 * overshoot: it converges on most data (an overshoot on the way does no harm), but on logits in a
 * few tight clusters (a dense model's, on a small corpus) it can diverge. Damped, it halves a
 * step until the objective does not rise (Lin, Lin and Weng, "A note on Platt's probabilistic
 * outputs", 2007), which always converges. `converged` is whether the steps became negligible.
 */
function newton(
  logits: ArrayLike<number>,
  targets: Float64Array,
  prior: number,
  damped: boolean,
): Platt & { converged: boolean } {
  let a = 1;
  let b = prior;
  let loss = damped ? plattLoss(logits, targets, a, b) : 0;
  for (let iteration = 0; iteration < 100; iteration++) {
    let ga = 0;
    let gb = 0;
    let haa = 1e-9;
    let hab = 0;
    let hbb = 1e-9;
    for (let i = 0; i < targets.length; i++) {
      const z = logits[i] as number;
      const p = sigmoid(a * z + b);
      const d = p - (targets[i] as number);
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
    let step = 1;
    if (damped) {
      // Rounding aside, the objective must not rise.
      const slack = 1e-12 * Math.max(1, Math.abs(loss));
      let next = plattLoss(logits, targets, a - da, b - db);
      while (!(next <= loss + slack) && step > 1e-10) {
        step /= 2;
        next = plattLoss(logits, targets, a - step * da, b - step * db);
      }
      if (!(next <= loss + slack)) break;
      loss = next;
    }
    a -= step * da;
    b -= step * db;
    if (Math.abs(da) < 1e-10 && Math.abs(db) < 1e-10) return { a, b, converged: true };
  }
  return { a, b, converged: false };
}

/**
 * Fits a and b. The undamped Newton's method first: every model file so far was calibrated by it,
 * and where it converges the damped one reaches the same optimum by another path, which would
 * change their bytes in the last digit. Where it does not converge, the damped one.
 */
export function fitPlatt(logits: ArrayLike<number>, labels: ArrayLike<number>): Platt {
  const n = logits.length;
  let positives = 0;
  for (let i = 0; i < n; i++) positives += labels[i] as number;
  const negatives = n - positives;
  const hi = (positives + 1) / (positives + 2);
  const lo = 1 / (negatives + 2);
  // Platt's smoothing for hard labels; soft labels are their own targets.
  const targets = Float64Array.from({ length: n }, (_, i) => {
    const label = labels[i] as number;
    return label === 1 ? hi : label === 0 ? lo : label;
  });
  const prior = Math.log((positives + 1) / (negatives + 1));
  const plain = newton(logits, targets, prior, false);
  if (plain.converged && Number.isFinite(plain.a) && Number.isFinite(plain.b)) {
    return { a: plain.a, b: plain.b };
  }
  const { a, b } = newton(logits, targets, prior, true);
  return { a, b };
}
