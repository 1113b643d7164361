import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { HandoffError } from "@handoff/contracts";
import { z } from "zod";
import type { VerifierSpec } from "./cascade-verifier.js";
import { DENSE_FEATURES, denseFeaturesOf, FEATURE_RECIPES, fnv1a } from "./features.js";
import type { LearnedSpec } from "./learned.js";
import { VERIFIER_FEATURES } from "./verifier.js";

/**
 * The router model file `handoff router train` writes and the `learned` and `cascade` strategies
 * read: JSON, with the hashed weights as base64 float32. It records how it was trained (data
 * digest, seed, options) so a figure can be traced to the file that produced it, and nothing that
 * changes from run to run (no timestamps), so training twice gives the same bytes.
 */

export const MODEL_FORMAT = "handoff-router/v1";

/** The model shipped with Handoff, trained on the shipped training split. */
export const DEFAULT_MODEL_PATH = fileURLToPath(new URL("../models/router.json", import.meta.url));

const Prior = z.object({ weight: z.number(), reference: z.number() });

const FiniteArray = z.array(z.number().refine(Number.isFinite, "must be a finite number"));

export const ModelFile = z.object({
  format: z.literal(MODEL_FORMAT),
  trained: z.object({
    data: z.object({ rows: z.number().int().positive(), sha256: z.string() }),
    answers: z.object({ rows: z.number().int().nonnegative(), sha256: z.string() }).optional(),
    seed: z.number().int(),
    folds: z.number().int().min(2),
    l2: z.number().positive(),
    /**
     * The feature recipe. Absent from a file of n-grams alone (the plain baseline, kept byte for
     * byte as earlier versions wrote it) and from files older than the recipes; either way
     * `learned.shape_features` says which it is.
     */
    features: z.enum(FEATURE_RECIPES).optional(),
    /**
     * Fingerprints of the training prompts (FNV-1a of each prompt's text, sorted, base64 of
     * little-endian uint32), so an evaluation can warn when it scores prompts the model saw.
     */
    prompts: z.string().optional(),
  }),
  learned: z.object({
    /** What the score is the probability of. */
    target: z.literal("strong_correct_and_weak_wrong"),
    hash_bits: z.number().int().min(8).max(24),
    /**
     * The dense features after the n-grams, by name: none, the shape features, or the shape and
     * kind-of-question features (the key predates the kind ones).
     */
    shape_features: z.array(z.string()),
    shape_mean: FiniteArray,
    shape_scale: FiniteArray,
    /** base64 of little-endian float32, 2^hash_bits + dense features long. */
    weights: z.string(),
    bias: z.number(),
    calibration: z.object({ a: z.number(), b: z.number() }),
    /**
     * The threshold at which the out-of-fold scores reached 95% of always-strong quality on the
     * training data: the default when the config names none.
     */
    threshold: z.number().min(0).max(1),
  }),
  verifier: z
    .object({
      features: z.array(z.string()),
      weights: FiniteArray,
      logprobs: Prior,
      self_confidence: Prior,
      /** Rows with an answer the verifier learned from. */
      rows: z.number().int().nonnegative(),
      threshold: z.number().min(0).max(1),
    })
    .optional(),
  /** Out-of-fold figures on the training data, for the record. */
  cross_validation: z.record(z.string(), z.number().nullable()).default({}),
});
export type ModelFile = z.infer<typeof ModelFile>;

export interface RouterModel {
  /** Sorted fingerprints of the prompts the model was trained on (empty when not recorded). */
  trainingPrompts: Uint32Array;
  learned: LearnedSpec;
  learnedThreshold: number;
  verifier: (VerifierSpec & { threshold: number; rows: number }) | undefined;
  file: ModelFile;
}

function encodeWeights(weights: Float32Array): string {
  const bytes = new Uint8Array(weights.length * 4);
  const view = new DataView(bytes.buffer);
  weights.forEach((w, i) => {
    view.setFloat32(i * 4, w, true);
  });
  return Buffer.from(bytes).toString("base64");
}

function decodeWeights(text: string, expected: number, source: string): Float32Array {
  const bytes = Buffer.from(text, "base64");
  if (bytes.length !== expected * 4) {
    throw new HandoffError(
      "HANDOFF_ERR_CONFIG",
      `${source}: learned.weights holds ${bytes.length} bytes, expected ${expected} float32 weights (2^hash_bits + dense features) = ${expected * 4} bytes`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(expected);
  for (let i = 0; i < expected; i++) {
    const w = view.getFloat32(i * 4, true);
    if (!Number.isFinite(w)) {
      throw new HandoffError(
        "HANDOFF_ERR_CONFIG",
        `${source}: learned.weights[${i}] is not finite`,
      );
    }
    out[i] = w;
  }
  return out;
}

/** The fingerprint of a prompt, as `trained.prompts` records it. */
export function promptFingerprint(text: string): number {
  return fnv1a(text);
}

/** How many of `texts` the model was trained on, by fingerprint. */
export function seenInTraining(
  model: Pick<RouterModel, "trainingPrompts">,
  texts: readonly string[],
): number {
  const seen = model.trainingPrompts;
  let count = 0;
  for (const text of texts) {
    const key = promptFingerprint(text);
    let lo = 0;
    let hi = seen.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((seen[mid] as number) < key) lo = mid + 1;
      else hi = mid;
    }
    if (seen[lo] === key) count++;
  }
  return count;
}

function encodeFingerprints(values: Uint32Array): string {
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  values.forEach((v, i) => {
    view.setUint32(i * 4, v, true);
  });
  return Buffer.from(bytes).toString("base64");
}

function decodeFingerprints(text: string | undefined, source: string): Uint32Array {
  if (text === undefined) return new Uint32Array();
  const bytes = Buffer.from(text, "base64");
  if (bytes.length % 4 !== 0) {
    throw new HandoffError(
      "HANDOFF_ERR_CONFIG",
      `${source}: trained.prompts is not a whole number of uint32 values`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Uint32Array.from({ length: bytes.length / 4 }, (_, i) => view.getUint32(i * 4, true));
}

/** The file's JSON form of a trained model. */
export function toModelFile(
  model: Omit<RouterModel, "file">,
  trained: ModelFile["trained"],
  crossValidation: ModelFile["cross_validation"],
): ModelFile {
  const { learned, verifier } = model;
  const { features, ...rest } = trained;
  return {
    format: MODEL_FORMAT,
    trained: {
      ...rest,
      ...(features && features !== "ngram" ? { features } : {}),
      prompts: encodeFingerprints(model.trainingPrompts),
    },
    learned: {
      target: "strong_correct_and_weak_wrong",
      hash_bits: learned.hashBits,
      shape_features: DENSE_FEATURES.slice(0, learned.denseMean.length),
      shape_mean: learned.denseMean,
      shape_scale: learned.denseScale,
      weights: encodeWeights(learned.weights),
      bias: learned.bias,
      calibration: learned.calibration,
      threshold: model.learnedThreshold,
    },
    ...(verifier
      ? {
          verifier: {
            features: [...VERIFIER_FEATURES],
            weights: verifier.weights,
            logprobs: verifier.logprobs,
            self_confidence: verifier.selfConfidence,
            rows: verifier.rows,
            threshold: verifier.threshold,
          },
        }
      : {}),
    cross_validation: crossValidation,
  };
}

/** Validates a parsed model file and turns it into scorers' specs. Errors name the field. */
export function fromModelFile(value: unknown, source: string): RouterModel {
  const parsed = ModelFile.safeParse(value);
  if (!parsed.success)
    throw HandoffError.validation(`router model ${source}`, parsed.error, "HANDOFF_ERR_CONFIG");
  const file = parsed.data;
  const same = (names: readonly string[], expected: readonly string[]) =>
    names.length === expected.length && names.every((n, i) => n === expected[i]);
  const shape = file.learned.shape_features;
  const recipe = FEATURE_RECIPES.find((r) => same(shape, denseFeaturesOf(r)));
  if (recipe === undefined) {
    throw new HandoffError(
      "HANDOFF_ERR_CONFIG",
      `${source}: learned.shape_features [${shape.join(", ")}] are not features this version computes (none, the shape features, or the shape and kind features [${DENSE_FEATURES.join(", ")}]); retrain with handoff router train`,
    );
  }
  const recorded = file.trained.features;
  if (recorded !== undefined && recorded !== recipe) {
    throw new HandoffError(
      "HANDOFF_ERR_CONFIG",
      `${source}: trained.features is ${recorded}, but learned.shape_features are those of ${recipe}`,
    );
  }
  if (file.verifier && !same(file.verifier.features, VERIFIER_FEATURES)) {
    throw new HandoffError(
      "HANDOFF_ERR_CONFIG",
      `${source}: verifier.features do not match this version's [${VERIFIER_FEATURES.join(", ")}]; retrain with handoff router train --answers`,
    );
  }
  if (
    file.learned.shape_mean.length !== shape.length ||
    file.learned.shape_scale.length !== shape.length
  ) {
    throw new HandoffError(
      "HANDOFF_ERR_CONFIG",
      `${source}: learned.shape_mean and learned.shape_scale need one entry per feature of learned.shape_features (${shape.length})`,
    );
  }
  const width = 2 ** file.learned.hash_bits + shape.length;
  return {
    trainingPrompts: decodeFingerprints(file.trained.prompts, source),
    learned: {
      hashBits: file.learned.hash_bits,
      denseMean: file.learned.shape_mean,
      denseScale: file.learned.shape_scale,
      weights: decodeWeights(file.learned.weights, width, source),
      bias: file.learned.bias,
      calibration: file.learned.calibration,
    },
    learnedThreshold: file.learned.threshold,
    verifier: file.verifier
      ? {
          weights: file.verifier.weights,
          logprobs: file.verifier.logprobs,
          selfConfidence: file.verifier.self_confidence,
          threshold: file.verifier.threshold,
          rows: file.verifier.rows,
        }
      : undefined,
    file,
  };
}

/** Reads a model file; a missing or invalid file is a config error that names the path. */
export async function loadModel(path: string = DEFAULT_MODEL_PATH): Promise<RouterModel> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new HandoffError(
      "HANDOFF_ERR_CONFIG",
      `cannot read the router model ${path}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new HandoffError(
      "HANDOFF_ERR_CONFIG",
      `router model ${path} is not JSON: ${(error as Error).message}`,
      { cause: error },
    );
  }
  return fromModelFile(value, path);
}

/** Writes a model file: stable key order, one trailing newline. */
export async function saveModel(path: string, file: ModelFile): Promise<void> {
  await writeFile(path, `${JSON.stringify(file, null, 1)}\n`);
}
