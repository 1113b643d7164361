import { fitPlatt, type Platt } from "./calibration.js";
import { isLabelled, type LabelledRow, type RoutingRow, rowInput } from "./dataset.js";
import { featureWidth, featurize, fitShapeScaling, type SparseVector } from "./features.js";
import { assignFolds } from "./folds.js";
import { dot, fitLogistic, sigmoid } from "./logistic.js";
import { routingText } from "./text.js";

/**
 * The `learned` router: a logistic regression over hashed n-grams and shape features of the
 * prompt, trained on labelled prompts to predict that the strong model answers correctly where
 * the weak one does not, then Platt-calibrated on cross-validated predictions so its score is that
 * probability. No network, no tokens: a few microseconds of arithmetic per prompt.
 */

export interface LearnedSpec {
  hashBits: number;
  shapeMean: number[];
  shapeScale: number[];
  weights: Float32Array;
  bias: number;
  calibration: Platt;
}

export class LearnedScorer {
  readonly #spec: LearnedSpec;

  constructor(spec: LearnedSpec) {
    this.#spec = spec;
  }

  /** The calibrated log-odds that the prompt needs the strong model. */
  logit(text: string): number {
    const spec = this.#spec;
    const raw = dot(spec.weights, featurize(text, spec)) + spec.bias;
    return spec.calibration.a * raw + spec.calibration.b;
  }

  /** The calibrated probability that the prompt needs the strong model. */
  score(text: string): number {
    return sigmoid(this.logit(text));
  }
}

/** Which outcome a router learns to predict. */
export function strongWins(row: LabelledRow): number {
  return row.strong_correct && !row.weak_correct ? 1 : 0;
}

export interface TrainProgress {
  phase: string;
  done: number;
  total: number;
}

export interface LearnedTrainOptions {
  /** Shape features next to the n-grams (default), or n-grams alone: the plain baseline. */
  shape?: boolean;
  seed: number;
  folds: number;
  l2: number;
  hashBits: number;
  maxIterations?: number;
  onProgress?: (progress: TrainProgress) => void;
}

export interface LearnedTraining {
  spec: LearnedSpec;
  /** Each row's calibrated logit from the fold that did not see it. */
  outOfFoldLogits: Float64Array;
  folds: number[];
}

interface Fitted {
  weights: Float64Array;
  bias: number;
}

function fit(
  texts: readonly string[],
  labels: readonly number[],
  options: LearnedTrainOptions,
  phase: string,
  step: (phase: string) => void,
): { fitted: Fitted; space: Omit<LearnedSpec, "weights" | "bias" | "calibration"> } {
  const scaling = options.shape === false ? { mean: [], scale: [] } : fitShapeScaling(texts);
  const space = { hashBits: options.hashBits, shapeMean: scaling.mean, shapeScale: scaling.scale };
  const rows: SparseVector[] = texts.map((t) => featurize(t, space));
  const model = fitLogistic(rows, labels, {
    width: featureWidth(space),
    l2: options.l2,
    maxIterations: options.maxIterations ?? 200,
    onIteration: () => step(phase),
  });
  return { fitted: { weights: model.weights, bias: model.bias }, space };
}

/**
 * Trains the learned router: k-fold cross-validation (whole domains held out together) gives
 * honest out-of-fold scores, Platt scaling on them calibrates, and a final fit on every row gives
 * the weights. Deterministic: the seed fixes the folds, and the fits use no randomness.
 */
export function trainLearned(
  rows: readonly RoutingRow[],
  options: LearnedTrainOptions,
): LearnedTraining {
  const labelled = rows.filter(isLabelled);
  if (labelled.length !== rows.length || labelled.length < options.folds * 2) {
    throw new Error(
      `training needs labelled rows (weak_correct and strong_correct on every row), at least ${options.folds * 2}; got ${labelled.length} of ${rows.length}`,
    );
  }
  const texts = labelled.map((row) => routingText(rowInput(row)));
  const labels = labelled.map(strongWins);
  const folds = assignFolds(labelled, options.folds, options.seed);
  const maxIterations = options.maxIterations ?? 200;
  const total = (options.folds + 1) * maxIterations;
  let done = 0;
  const step = (phase: string) => {
    done = Math.min(total, done + 1);
    options.onProgress?.({ phase, done, total });
  };

  const rawOutOfFold = new Float64Array(labelled.length);
  for (let k = 0; k < options.folds; k++) {
    const phase = `fold ${k + 1}/${options.folds}`;
    const train = folds.flatMap((f, i) => (f === k ? [] : [i]));
    const test = folds.flatMap((f, i) => (f === k ? [i] : []));
    const start = done;
    const { fitted, space } = fit(
      train.map((i) => texts[i] as string),
      train.map((i) => labels[i] as number),
      options,
      phase,
      step,
    );
    for (const i of test) {
      rawOutOfFold[i] = dot(fitted.weights, featurize(texts[i] as string, space)) + fitted.bias;
    }
    done = start + maxIterations;
    options.onProgress?.({ phase, done, total });
  }
  const calibration = fitPlatt(rawOutOfFold, labels);
  const outOfFoldLogits = rawOutOfFold.map((z) => calibration.a * z + calibration.b);

  const { fitted, space } = fit(texts, labels, options, "final fit", step);
  options.onProgress?.({ phase: "final fit", done: total, total });
  return {
    spec: { ...space, weights: Float32Array.from(fitted.weights), bias: fitted.bias, calibration },
    outOfFoldLogits,
    folds,
  };
}
