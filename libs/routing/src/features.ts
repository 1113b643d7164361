/**
 * Features of a prompt for the learned router: hashed word unigrams and bigrams (the hashing trick,
 * so the model file needs no vocabulary) and a few shape features that carry over to topics the
 * model never saw (length, numbers, answer options, negations). Everything here is a pure
 * function of the text, linear in its length.
 */

/** A sparse feature vector: parallel arrays of indices and values. */
export interface SparseVector {
  indices: Int32Array;
  values: Float64Array;
}

/** Number of shape features, appended after the hashed ones. */
export const SHAPE_FEATURES = [
  "log_chars",
  "log_question_chars",
  "has_options",
  "log_option_chars",
  "log_numbers",
  "math_symbols",
  "negation",
  "multi_statement",
  "log_questions",
  "log_lines",
  "code",
] as const;

// Digits become a shape (`#`, `##`, ... up to four), so "17" and "42" are one feature.
const TOKEN = /[a-z]+(?:'[a-z]+)?|\d+|[^\s\w]/g;

/** Lower-cased word, number-shape and punctuation tokens. */
export function tokenize(text: string): string[] {
  const out: string[] = [];
  for (const match of text.toLowerCase().matchAll(TOKEN)) {
    const token = match[0];
    const first = token.charCodeAt(0);
    out.push(first >= 48 && first <= 57 ? "#".repeat(Math.min(4, token.length)) : token);
  }
  return out;
}

/** FNV-1a, 32 bits, over UTF-16 code units: fast, stable across platforms and versions. */
export function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

const OPTION_LINE = /^\s*\(?[A-Ja-j][.)]\s/;

/** The raw shape features of a prompt, in `SHAPE_FEATURES` order. */
export function shapeFeatures(text: string): number[] {
  const lines = text.split("\n");
  const options = lines.filter((line) => OPTION_LINE.test(line));
  const question = lines.filter((line) => !OPTION_LINE.test(line)).join("\n");
  const optionChars = options.reduce((sum, line) => sum + line.length, 0);
  const numbers = text.match(/\d+(?:[.,]\d+)*/g)?.length ?? 0;
  return [
    Math.log1p(text.length),
    Math.log1p(question.length),
    options.length >= 2 ? 1 : 0,
    Math.log1p(options.length > 0 ? optionChars / options.length : 0),
    Math.log1p(numbers),
    Math.log1p(text.match(/[=+*/^<>√∑∫]|\\frac|\\sqrt/g)?.length ?? 0),
    /\b(?:NOT|EXCEPT|LEAST|FALSE)\b/.test(text) ? 1 : 0,
    /\bStatement 1\b|\b(?:I|II|III|IV)\s+(?:only|and)\b/.test(text) ? 1 : 0,
    Math.log1p(text.match(/\?/g)?.length ?? 0),
    Math.log1p(lines.length),
    /```|\bdef |\bfunction\b|[;{}]\s*$/m.test(text) ? 1 : 0,
  ];
}

export interface FeatureSpace {
  /** log2 of the number of hash buckets. */
  hashBits: number;
  /**
   * Per shape feature: subtract the mean, divide by the scale (from the training data). Empty for
   * a model of n-grams alone (the plain baseline).
   */
  shapeMean: readonly number[];
  shapeScale: readonly number[];
}

/** Total width of the feature vector for a space: hash buckets, then the shape features. */
export function featureWidth(space: Pick<FeatureSpace, "hashBits" | "shapeMean">): number {
  return 2 ** space.hashBits + space.shapeMean.length;
}

/**
 * The feature vector of a prompt: unigram and bigram counts hashed into `2^hashBits` buckets and
 * scaled to unit length (so a long prompt does not shout), followed by the standardized shape
 * features.
 */
export function featurize(text: string, space: FeatureSpace): SparseVector {
  const mask = 2 ** space.hashBits - 1;
  const counts = new Map<number, number>();
  const tokens = tokenize(text);
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i] as string;
    const uni = fnv1a(`u:${token}`) & mask;
    counts.set(uni, (counts.get(uni) ?? 0) + 1);
    const next = tokens[i + 1];
    if (next !== undefined) {
      const bi = fnv1a(`b:${token} ${next}`) & mask;
      counts.set(bi, (counts.get(bi) ?? 0) + 1);
    }
  }
  let norm = 0;
  for (const c of counts.values()) norm += c * c;
  norm = Math.sqrt(norm) || 1;
  const keys = [...counts.keys()].sort((a, b) => a - b);
  const shape = space.shapeMean.length > 0 ? shapeFeatures(text) : [];
  const size = keys.length + shape.length;
  const indices = new Int32Array(size);
  const values = new Float64Array(size);
  keys.forEach((key, i) => {
    indices[i] = key;
    values[i] = (counts.get(key) ?? 0) / norm;
  });
  const base = 2 ** space.hashBits;
  shape.forEach((raw, j) => {
    const at = keys.length + j;
    indices[at] = base + j;
    values[at] = (raw - (space.shapeMean[j] ?? 0)) / (space.shapeScale[j] || 1);
  });
  return { indices, values };
}

/** Mean and standard deviation of each shape feature over a corpus, for standardizing. */
export function fitShapeScaling(texts: readonly string[]): { mean: number[]; scale: number[] } {
  const k = SHAPE_FEATURES.length;
  const mean = new Array<number>(k).fill(0);
  const square = new Array<number>(k).fill(0);
  for (const text of texts) {
    shapeFeatures(text).forEach((v, j) => {
      mean[j] = (mean[j] ?? 0) + v;
      square[j] = (square[j] ?? 0) + v * v;
    });
  }
  const n = Math.max(1, texts.length);
  const scale = mean.map((sum, j) => {
    const m = sum / n;
    const variance = (square[j] ?? 0) / n - m * m;
    return variance > 1e-12 ? Math.sqrt(variance) : 1;
  });
  return { mean: mean.map((sum) => sum / n), scale };
}
