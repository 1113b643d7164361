import type { SparseVector } from "./features.js";

/**
 * L2-regularized logistic regression over sparse rows, fitted by L-BFGS. Full-batch and free of
 * randomness: the same rows give the same weights, bit for bit, which keeps training
 * reproducible without a seed. Labels may be soft (any value in [0, 1]); a per-row offset lets a
 * model learn a correction on top of another model's logit (the cascade's verifier does).
 */

export interface LogisticOptions {
  /** Total feature width (weights), not counting the bias. */
  width: number;
  /** L2 strength λ: the penalty is λ/(2n)·‖w‖²; the bias is not penalized. */
  l2: number;
  maxIterations?: number;
  /** Stop when the largest gradient component falls below this. */
  tolerance?: number;
  /** Fit an intercept (default). Without one, the offsets alone set the baseline. */
  fitBias?: boolean;
  /** Called after each iteration with the iteration number and the objective. */
  onIteration?: (iteration: number, loss: number) => void;
}

export interface LogisticModel {
  weights: Float64Array;
  bias: number;
  iterations: number;
  loss: number;
}

export function sigmoid(z: number): number {
  if (z >= 0) return 1 / (1 + Math.exp(-z));
  const e = Math.exp(z);
  return e / (1 + e);
}

/** log(1 + e^z), without overflow. */
function softplus(z: number): number {
  return z > 0 ? z + Math.log1p(Math.exp(-z)) : Math.log1p(Math.exp(z));
}

export function dot(weights: ArrayLike<number>, row: SparseVector): number {
  let sum = 0;
  for (let k = 0; k < row.indices.length; k++) {
    sum += (weights[row.indices[k] as number] ?? 0) * (row.values[k] as number);
  }
  return sum;
}

/** Objective and gradient at `theta` (weights then bias, packed in one array). */
function evaluate(
  theta: Float64Array,
  rows: readonly SparseVector[],
  labels: ArrayLike<number>,
  offsets: ArrayLike<number> | undefined,
  l2: number,
  fitBias: boolean,
  gradient: Float64Array,
): number {
  const n = rows.length;
  const width = theta.length - 1;
  const bias = theta[width] as number;
  gradient.fill(0);
  let loss = 0;
  for (let i = 0; i < n; i++) {
    const row = rows[i] as SparseVector;
    const z = dot(theta, row) + bias + (offsets ? (offsets[i] as number) : 0);
    const y = labels[i] as number;
    loss += softplus(z) - y * z;
    const r = (sigmoid(z) - y) / n;
    for (let k = 0; k < row.indices.length; k++) {
      const j = row.indices[k] as number;
      gradient[j] = (gradient[j] as number) + r * (row.values[k] as number);
    }
    gradient[width] = (gradient[width] as number) + r;
  }
  loss /= n;
  if (!fitBias) gradient[width] = 0;
  let penalty = 0;
  for (let j = 0; j < width; j++) {
    const w = theta[j] as number;
    penalty += w * w;
    gradient[j] = (gradient[j] as number) + (l2 / n) * w;
  }
  return loss + (l2 / (2 * n)) * penalty;
}

function vdot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] as number) * (b[i] as number);
  return s;
}

/** Fits the model. `labels[i]` in [0, 1]; `offsets[i]` added to row i's logit, if given. */
export function fitLogistic(
  rows: readonly SparseVector[],
  labels: ArrayLike<number>,
  options: LogisticOptions,
  offsets?: ArrayLike<number>,
): LogisticModel {
  if (rows.length === 0) throw new Error("cannot fit a model on no rows");
  const size = options.width + 1;
  const maxIterations = options.maxIterations ?? 300;
  const tolerance = options.tolerance ?? 1e-6;
  const memory = 10;
  const fitBias = options.fitBias ?? true;

  let theta = new Float64Array(size);
  let gradient = new Float64Array(size);
  let loss = evaluate(theta, rows, labels, offsets, options.l2, fitBias, gradient);
  const history: { s: Float64Array; y: Float64Array; rho: number }[] = [];
  const direction = new Float64Array(size);
  const alpha = new Float64Array(memory);
  let iteration = 0;

  for (; iteration < maxIterations; iteration++) {
    let largest = 0;
    for (let i = 0; i < size; i++) largest = Math.max(largest, Math.abs(gradient[i] as number));
    if (largest < tolerance) break;

    // Two-loop recursion: direction = -H·g.
    for (let i = 0; i < size; i++) direction[i] = -(gradient[i] as number);
    for (let h = history.length - 1; h >= 0; h--) {
      const { s, y, rho } = history[h] as (typeof history)[number];
      const a = rho * vdot(s, direction);
      alpha[h] = a;
      for (let i = 0; i < size; i++) direction[i] = (direction[i] as number) - a * (y[i] as number);
    }
    const last = history.at(-1);
    const gamma = last ? vdot(last.s, last.y) / vdot(last.y, last.y) : 1 / Math.max(largest, 1);
    for (let i = 0; i < size; i++) direction[i] = (direction[i] as number) * gamma;
    for (let h = 0; h < history.length; h++) {
      const { s, y, rho } = history[h] as (typeof history)[number];
      const b = rho * vdot(y, direction);
      const a = alpha[h] as number;
      for (let i = 0; i < size; i++)
        direction[i] = (direction[i] as number) + (a - b) * (s[i] as number);
    }

    // Backtracking line search with the Armijo condition.
    const slope = vdot(gradient, direction);
    if (slope >= 0) {
      // Not a descent direction (numerical trouble): restart from steepest descent.
      history.length = 0;
      continue;
    }
    let step = 1;
    const next = new Float64Array(size);
    const nextGradient = new Float64Array(size);
    let nextLoss = Number.POSITIVE_INFINITY;
    for (let tries = 0; tries < 40; tries++) {
      for (let i = 0; i < size; i++)
        next[i] = (theta[i] as number) + step * (direction[i] as number);
      nextLoss = evaluate(next, rows, labels, offsets, options.l2, fitBias, nextGradient);
      if (nextLoss <= loss + 1e-4 * step * slope) break;
      step /= 2;
    }
    if (!(nextLoss < loss)) break;

    const s = new Float64Array(size);
    const y = new Float64Array(size);
    for (let i = 0; i < size; i++) {
      s[i] = (next[i] as number) - (theta[i] as number);
      y[i] = (nextGradient[i] as number) - (gradient[i] as number);
    }
    const sy = vdot(s, y);
    if (sy > 1e-12) {
      history.push({ s, y, rho: 1 / sy });
      if (history.length > memory) history.shift();
    }
    const improvement = loss - nextLoss;
    theta = next;
    gradient = nextGradient;
    loss = nextLoss;
    options.onIteration?.(iteration + 1, loss);
    if (improvement < 1e-10 * Math.max(1, Math.abs(loss))) {
      iteration++;
      break;
    }
  }
  return {
    weights: theta.subarray(0, options.width),
    bias: theta[options.width] as number,
    iterations: iteration,
    loss,
  };
}
