import { createHash } from "node:crypto";
import { trainVerifier } from "./cascade-verifier.js";
import { type AnswerRow, isLabelled, type RoutingRow, rowInput } from "./dataset.js";
import { apgr, type Labels, qualityCurve, shareFor, thresholdForShare } from "./evaluate.js";
import { DEFAULT_FEATURE_RECIPE, type LearnedTrainOptions, trainLearned } from "./learned.js";
import { sigmoid } from "./logistic.js";
import { type ModelFile, promptFingerprint, type RouterModel, toModelFile } from "./model-file.js";
import { routingText } from "./text.js";

/**
 * `handoff router train`: the learned router and, when the weak model's answers are given, the
 * cascade's verifier, with their cross-validated figures and default thresholds, as one model file.
 */

export interface TrainOptions extends Omit<LearnedTrainOptions, "maxIterations"> {
  /** Digest of the data (and answers) files, recorded in the model file. */
  dataDigest: string;
  answersDigest?: string;
}

export const TRAIN_DEFAULTS = {
  features: DEFAULT_FEATURE_RECIPE,
  seed: 1,
  folds: 5,
  l2: 1,
  hashBits: 18,
} as const;

export function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

export interface TrainedRouter {
  model: RouterModel;
  /** Out-of-fold figures on the training data. */
  crossValidation: Record<string, number | null>;
}

/**
 * The score at which out-of-fold scores first reach 95% of always-strong quality: the threshold a
 * deployment starts from. Half when the data never reaches it.
 */
function thresholdAt95(
  scores: ArrayLike<number>,
  labels: readonly Labels[],
): { threshold: number; share: number | undefined } {
  const curve = qualityCurve(scores, labels);
  const share = shareFor(curve, 0.95 * curve.strongQuality);
  if (share === undefined) return { threshold: 0.5, share };
  return { threshold: thresholdForShare(scores, share), share };
}

export function trainRouter(
  rows: readonly RoutingRow[],
  answers: ReadonlyMap<string, AnswerRow> | undefined,
  options: TrainOptions,
): TrainedRouter {
  const labelled = rows.filter(isLabelled);
  if (labelled.length !== rows.length) {
    const first = rows.find((row) => !isLabelled(row));
    throw new Error(
      `every training row needs weak_correct and strong_correct; row "${first?.id}" has none`,
    );
  }
  const labels = labelled.map((row) => ({ weak: row.weak_correct, strong: row.strong_correct }));
  const learned = trainLearned(labelled, {
    ...options,
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  const learnedScores = Array.from(learned.outOfFoldLogits, sigmoid);
  const learnedAt = thresholdAt95(learnedScores, labels);
  const crossValidation: Record<string, number | null> = {
    learned_strong_share_at_95: learnedAt.share ?? null,
    learned_apgr: apgr(qualityCurve(learnedScores, labels)),
  };

  let verifier: RouterModel["verifier"];
  if (answers) {
    const trained = trainVerifier(labelled, answers, learned.outOfFoldLogits, {
      l2: options.l2,
      folds: learned.folds,
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
    const cascadeScores = learnedScores.map((score, i) => {
      const verdict = trained.outOfFoldLogits[i] as number;
      return Number.isNaN(verdict) ? score : sigmoid(verdict);
    });
    const cascadeAt = thresholdAt95(cascadeScores, labels);
    crossValidation.cascade_strong_share_at_95 = cascadeAt.share ?? null;
    crossValidation.cascade_apgr = apgr(qualityCurve(cascadeScores, labels));
    verifier = { ...trained.spec, threshold: cascadeAt.threshold, rows: trained.rows };
  }
  const trainingPrompts = Uint32Array.from(
    new Set(labelled.map((row) => promptFingerprint(routingText(rowInput(row))))),
  ).sort();
  const model = {
    trainingPrompts,
    learned: learned.spec,
    learnedThreshold: learnedAt.threshold,
    verifier,
  };
  const trainedBy: ModelFile["trained"] = {
    data: { rows: labelled.length, sha256: options.dataDigest },
    ...(answers && options.answersDigest
      ? { answers: { rows: answers.size, sha256: options.answersDigest } }
      : {}),
    seed: options.seed,
    folds: options.folds,
    l2: options.l2,
    features: options.features ?? DEFAULT_FEATURE_RECIPE,
  };
  const file = toModelFile(model, trainedBy, crossValidation);
  return { model: { ...model, file }, crossValidation };
}
