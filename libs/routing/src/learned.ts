import { fitPlatt, type Platt } from "./calibration.js";
import { isLabelled, type LabelledRow, type RoutingRow, rowInput } from "./dataset.js";
import {
  denseFeaturesOf,
  type FeatureRecipe,
  type FeatureSpace,
  featureWidth,
  featurize,
  fitDenseScaling,
  type SparseVector,
} from "./features.js";
import { assignFolds } from "./folds.js";
import { dot, fitLogistic, sigmoid } from "./logistic.js";
import { routingText } from "./text.js";

/**
 * The `learned` router: one linear model over hashed n-grams and dense features of the prompt,
 * trained on labelled prompts to predict that the strong model answers correctly where the weak
 * one does not, then Platt-calibrated on cross-validated predictions so its score is that
 * probability. No network, no tokens: a few microseconds of arithmetic per prompt.
 */

export interface LearnedSpec extends FeatureSpace {
  denseMean: number[];
  denseScale: number[];
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

/** The recipe `handoff router train` uses unless told otherwise. */
export const DEFAULT_FEATURE_RECIPE: FeatureRecipe = "ngram+kind";

export interface LearnedTrainOptions {
  /** Which features, fitted how: `ngram+kind` (the default), `ngram+shape` or `ngram`. */
  features?: FeatureRecipe;
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

/** A fitted linear model and the feature space it reads, before calibration. */
interface Fitted {
  space: { hashBits: number; denseMean: number[]; denseScale: number[] };
  weights: Float64Array;
  bias: number;
}

/**
 * A row of the full feature space cut in two: its hashed n-grams (indices as they are) and its
 * dense features (re-indexed from 0). `featurize` writes the dense block last, so it is the tail.
 */
function splitRow(row: SparseVector, denseCount: number, base: number) {
  const cut = row.indices.length - denseCount;
  const ngrams: SparseVector = {
    indices: row.indices.subarray(0, cut),
    values: row.values.subarray(0, cut),
  };
  const dense: SparseVector = {
    indices: row.indices.subarray(cut).map((index) => index - base),
    values: row.values.subarray(cut),
  };
  return { ngrams, dense };
}

/**
 * The `ngram+kind` fit, in two stages. Stage 1: a logistic regression on the dense features alone
 * (shape and kind of question), whose logit z_k says what the form of a prompt says. Stage 2: a
 * logistic regression on the n-grams with z_k as a fixed offset on every row (and its own bias),
 * so the n-grams learn only a correction z_g on top. Fitted jointly, the n-grams (tens of
 * thousands of them, most naming a topic) explain the training subjects' own rates and crowd out
 * the few features that carry over to a subject never seen; fitted second, they can only add what
 * the form did not say. Held out over whole subjects, the two stages beat both the joint fit of
 * the same features and the n-grams alone (docs/routing.md). The two logits add up: one linear
 * model: n-gram weights from stage 2, dense weights from stage 1, the two biases summed; the
 * model file and the scorer are those of any other recipe.
 */
function fitInTwoStages(
  rows: readonly SparseVector[],
  labels: readonly number[],
  space: Fitted["space"],
  options: LearnedTrainOptions,
  onIteration: () => void,
): { weights: Float64Array; bias: number } {
  const denseCount = space.denseMean.length;
  const base = 2 ** space.hashBits;
  const parts = rows.map((row) => splitRow(row, denseCount, base));
  const maxIterations = options.maxIterations ?? 200;
  const form = fitLogistic(
    parts.map((p) => p.dense),
    labels,
    { width: denseCount, l2: options.l2, maxIterations },
  );
  const formLogits = parts.map((p) => dot(form.weights, p.dense) + form.bias);
  const ngrams = fitLogistic(
    parts.map((p) => p.ngrams),
    labels,
    { width: base, l2: options.l2, maxIterations, onIteration },
    formLogits,
  );
  const weights = new Float64Array(base + denseCount);
  weights.set(ngrams.weights, 0);
  weights.set(form.weights, base);
  return { weights, bias: form.bias + ngrams.bias };
}

/** Fits the recipe's linear model on some rows: the feature scaling, then the weights. */
function fit(
  texts: readonly string[],
  labels: readonly number[],
  options: LearnedTrainOptions,
  phase: string,
  step: (phase: string) => void,
): Fitted {
  const recipe = options.features ?? DEFAULT_FEATURE_RECIPE;
  const scaling = fitDenseScaling(texts, denseFeaturesOf(recipe).length);
  const space = { hashBits: options.hashBits, denseMean: scaling.mean, denseScale: scaling.scale };
  const rows: SparseVector[] = texts.map((t) => featurize(t, space));
  const onIteration = () => step(phase);
  if (recipe === "ngram+kind") {
    return { space, ...fitInTwoStages(rows, labels, space, options, onIteration) };
  }
  const model = fitLogistic(rows, labels, {
    width: featureWidth(space),
    l2: options.l2,
    maxIterations: options.maxIterations ?? 200,
    onIteration,
  });
  return { space, weights: model.weights, bias: model.bias };
}

/**
 * Trains the learned router: k-fold cross-validation (whole domains held out together) gives
 * honest out-of-fold scores, Platt scaling on them calibrates, and a final fit on every row gives
 * the weights. Every fit, both stages of a two-stage recipe included, sees only its training
 * fold. Deterministic: the seed fixes the folds, and the fits use no randomness.
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
    const fitted = fit(
      train.map((i) => texts[i] as string),
      train.map((i) => labels[i] as number),
      options,
      phase,
      step,
    );
    for (const i of test) {
      rawOutOfFold[i] =
        dot(fitted.weights, featurize(texts[i] as string, fitted.space)) + fitted.bias;
    }
    done = start + maxIterations;
    options.onProgress?.({ phase, done, total });
  }
  const calibration = fitPlatt(rawOutOfFold, labels);
  const outOfFoldLogits = rawOutOfFold.map((z) => calibration.a * z + calibration.b);

  const fitted = fit(texts, labels, options, "final fit", step);
  options.onProgress?.({ phase: "final fit", done: total, total });
  return {
    spec: {
      ...fitted.space,
      weights: Float32Array.from(fitted.weights),
      bias: fitted.bias,
      calibration,
    },
    outOfFoldLogits,
    folds,
  };
}
