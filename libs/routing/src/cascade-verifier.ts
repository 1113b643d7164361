import type { AnswerRow, LabelledRow } from "./dataset.js";
import { rowInput } from "./dataset.js";
import type { SparseVector } from "./features.js";
import type { TrainProgress } from "./learned.js";
import { strongWins } from "./learned.js";
import { fitLogistic, sigmoid } from "./logistic.js";
import { routingText } from "./text.js";
import {
  type LightAnswer,
  logprobUncertainty,
  VERIFIER_FEATURES,
  verifierFeatures,
} from "./verifier.js";

/**
 * The cascade's verifier: given the pre-route's log-odds that a prompt needs the strong model and
 * the light model's answer, the log-odds that the answer should not stand. It is a logistic model
 * on top of the pre-route (the pre-route logit is its offset, with no intercept of its own), so an
 * answer with no evidence either way keeps the pre-route's score, and each signal moves it.
 *
 * The answer signals (arithmetic, final answer, truncation) are trained on the weak model's real
 * answers. Log-probabilities and self-reported confidence cannot be trained from the shipped data
 * (RouteLLM published no such fields), so they enter with fixed prior weights that the config can
 * change: `weight × (value − reference)` added to the log-odds.
 */

export interface PriorSignal {
  /** Log-odds added per unit of (value − reference). */
  weight: number;
  reference: number;
}

export interface VerifierSpec {
  /** One weight per `VERIFIER_FEATURES` entry. */
  weights: number[];
  /** Uncertainty from token log-probabilities: 1 − e^(mean logprob). */
  logprobs: PriorSignal;
  /** The model's own confidence in [0, 1]; a lower one raises the score. */
  selfConfidence: PriorSignal;
}

export const DEFAULT_PRIORS = {
  logprobs: { weight: 3, reference: 0.15 },
  selfConfidence: { weight: -3, reference: 0.75 },
} as const satisfies Pick<VerifierSpec, "logprobs" | "selfConfidence">;

export interface Verdict {
  /** Calibrated log-odds that the answer needs the strong model. */
  logit: number;
  score: number;
  /** The signals that fired, for the reason and the trace. */
  signals: string[];
}

const SIGNAL_NAMES: Partial<Record<(typeof VERIFIER_FEATURES)[number], string>> = {
  truncated: "answer cut off",
  empty: "empty answer",
  no_final_answer: "no final answer",
  arithmetic_error: "arithmetic error",
  non_integer_final: "non-integer final answer",
  final_not_computed: "final answer not from the working",
  hedging: "second thoughts",
  negative_final: "negative final answer",
  final_with_remarks: "final answer with remarks",
  negative_step: "negative intermediate result",
};

/** The verifier's judgement of one answer, on top of the pre-route's logit. */
export function verify(
  spec: VerifierSpec,
  preLogit: number,
  question: string,
  answer: LightAnswer,
): Verdict {
  const features = verifierFeatures(question, answer);
  let logit = preLogit;
  const signals: string[] = [];
  features.forEach((value, i) => {
    logit += (spec.weights[i] ?? 0) * value;
    const name = SIGNAL_NAMES[VERIFIER_FEATURES[i] as (typeof VERIFIER_FEATURES)[number]];
    if (name && value > 0) signals.push(name);
  });
  const uncertainty = logprobUncertainty(answer.logprobs);
  if (uncertainty !== undefined) {
    logit += spec.logprobs.weight * (uncertainty - spec.logprobs.reference);
    signals.push(`token uncertainty ${uncertainty.toFixed(2)}`);
  }
  if (answer.selfConfidence !== undefined) {
    logit += spec.selfConfidence.weight * (answer.selfConfidence - spec.selfConfidence.reference);
    signals.push(`self-reported confidence ${Math.round(answer.selfConfidence * 100)}%`);
  }
  return { logit, score: sigmoid(logit), signals };
}

/** An answers-file row as the verifier reads it. */
export function answerOf(row: AnswerRow): LightAnswer {
  return { text: row.weak_response, finishReason: row.finish_reason, logprobs: row.logprobs };
}

export interface VerifierTrainOptions {
  l2: number;
  /** Fold of each row (the learned router's), for honest out-of-fold verdicts. */
  folds: readonly number[];
  onProgress?: (progress: TrainProgress) => void;
}

export interface VerifierTraining {
  spec: VerifierSpec;
  /** Out-of-fold verdict logits for the rows that have answers (NaN for the others). */
  outOfFoldLogits: Float64Array;
  /** Rows the verifier learned from. */
  rows: number;
}

function vector(features: number[]): SparseVector {
  return {
    indices: Int32Array.from(features.map((_, i) => i)),
    values: Float64Array.from(features),
  };
}

/**
 * Trains the verifier on the rows that have an answer, with each row's out-of-fold pre-route logit
 * as its offset (an in-sample pre-route would look surer than it is and teach the verifier to
 * ignore the answer).
 */
export function trainVerifier(
  rows: readonly LabelledRow[],
  answers: ReadonlyMap<string, AnswerRow>,
  preLogits: ArrayLike<number>,
  options: VerifierTrainOptions,
): VerifierTraining {
  const withAnswers = rows.flatMap((row, i) => {
    const answer = answers.get(row.id);
    return answer ? [{ i, row, answer }] : [];
  });
  if (withAnswers.length === 0) {
    throw new Error("no row of the data has an answer in the answers file (ids must match)");
  }
  const features = withAnswers.map(({ row, answer }) =>
    vector(verifierFeatures(routingText(rowInput(row)), answerOf(answer))),
  );
  const labels = withAnswers.map(({ row }) => strongWins(row));
  const offsets = withAnswers.map(({ i }) => preLogits[i] as number);
  const fitOn = (which: number[]) =>
    fitLogistic(
      which.map((k) => features[k] as SparseVector),
      which.map((k) => labels[k] as number),
      { width: VERIFIER_FEATURES.length, l2: options.l2, fitBias: false, maxIterations: 200 },
      which.map((k) => offsets[k] as number),
    );

  const outOfFoldLogits = new Float64Array(rows.length).fill(Number.NaN);
  const foldIds = [...new Set(withAnswers.map(({ i }) => options.folds[i] ?? 0))].sort(
    (a, b) => a - b,
  );
  foldIds.forEach((fold, n) => {
    const train: number[] = [];
    const test: number[] = [];
    withAnswers.forEach(({ i }, k) => {
      (options.folds[i] === fold ? test : train).push(k);
    });
    if (train.length > 0) {
      const model = fitOn(train);
      for (const k of test) {
        const f = features[k] as SparseVector;
        let z = offsets[k] as number;
        f.values.forEach((v, j) => {
          z += (model.weights[j] as number) * v;
        });
        outOfFoldLogits[(withAnswers[k] as (typeof withAnswers)[number]).i] = z;
      }
    }
    options.onProgress?.({ phase: "verifier", done: n + 1, total: foldIds.length + 1 });
  });
  const final = fitOn(withAnswers.map((_, k) => k));
  options.onProgress?.({ phase: "verifier", done: foldIds.length + 1, total: foldIds.length + 1 });
  return {
    spec: { weights: Array.from(final.weights), ...structuredClone(DEFAULT_PRIORS) },
    outOfFoldLogits,
    rows: withAnswers.length,
  };
}
