/**
 * Features of a prompt for the learned router: hashed word unigrams and bigrams (the hashing trick,
 * so the model file needs no vocabulary), then dense features of the prompt's form that carry over
 * to topics the model never saw: the shape features (length, numbers, answer options, negations)
 * and the kind-of-question features (how the options read, notation, "which of the following",
 * rates and quantities, pronouns, ...). Everything here is a pure function of the text, linear in
 * its length: the router reads every prompt, hostile ones included.
 */

/** A sparse feature vector: parallel arrays of indices and values. */
export interface SparseVector {
  indices: Int32Array;
  values: Float64Array;
}

/** The shape features: size and layout of the prompt. */
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

/**
 * The kind-of-question features: what sort of question a prompt asks, whatever its topic (how
 * its options read, a word problem full of quantities, a "which of the following"). On an unseen
 * subject this is most of what a prompt says about the need for the strong model, where the
 * n-grams mostly name the topic. Each is a count's logarithm, a share or a 0/1 flag;
 * "question" is the prompt without its option lines. What a shape feature already says (options
 * present, question length, how many numbers, operators, negations, Statement I/II, line count)
 * is not repeated.
 */
export const KIND_FEATURES = [
  "log_question_words",
  // Mean length of an option's text, without its `A.` marker.
  "log_option_text_chars",
  "log_option_chars_sd",
  // log(1 + longest option) − log(1 + shortest).
  "option_length_spread",
  // Share of options that start with a number (or a sign or `$` and a number).
  "numeric_option_share",
  "log_question_numbers",
  "which_of_the_following",
  // An option reading "all of the above", "none of the above" or "both ... and ...".
  "aggregate_option",
  // `$...$`, `\(`, `\frac`, `^` or `_{`.
  "latex",
  // Share of the question's words of nine letters or more.
  "long_word_share",
  "capitalized_word_share",
  "log_sentences",
  // The question ends with `?` (before a trailing `Answer:`).
  "ends_with_question",
  "fill_in_blank",
  // percent, ratio, rate, average, probability.
  "rate_words",
  // each, per, every, times, twice, half, total, left, remaining: the words of a word problem.
  "quantity_words",
  "third_person",
  "second_person",
  // A year from 1900 to 2099.
  "year",
  "quotation",
] as const;

/** Every dense feature, in the order a feature vector holds them: a model reads a prefix. */
export const DENSE_FEATURES = [...SHAPE_FEATURES, ...KIND_FEATURES] as const;

/**
 * How the learned router reads a prompt (`handoff router train --features`):
 *
 * - `ngram+kind` (the default): n-grams, shape and kind features, fitted in two stages (see
 *   `trainLearned`);
 * - `ngram+shape`: n-grams and the shape features in one logistic regression;
 * - `ngram`: n-grams alone, the plain baseline the others are measured against.
 */
export const FEATURE_RECIPES = ["ngram+kind", "ngram+shape", "ngram"] as const;
export type FeatureRecipe = (typeof FEATURE_RECIPES)[number];

/** The dense features a recipe reads, after the hashed n-grams. */
export function denseFeaturesOf(recipe: FeatureRecipe): readonly string[] {
  switch (recipe) {
    case "ngram+kind":
      return DENSE_FEATURES;
    case "ngram+shape":
      return SHAPE_FEATURES;
    case "ngram":
      return [];
  }
}

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

/** A prompt split into its answer options (`A. ...`, `(b) ...`, one a line) and the rest. */
interface PromptLayout {
  text: string;
  lines: string[];
  /** The option lines, whole. */
  optionLines: string[];
  /** Each option's text after its marker. */
  optionTexts: string[];
  /** The prompt without its option lines. */
  question: string;
}

function layoutOf(text: string): PromptLayout {
  const lines = text.split("\n");
  const optionLines: string[] = [];
  const optionTexts: string[] = [];
  const questionLines: string[] = [];
  for (const line of lines) {
    const marker = OPTION_LINE.exec(line);
    if (marker) {
      optionLines.push(line);
      optionTexts.push(line.slice(marker[0].length));
    } else {
      questionLines.push(line);
    }
  }
  return { text, lines, optionLines, optionTexts, question: questionLines.join("\n") };
}

const NUMBER = /\d+(?:[.,]\d+)*/g;

const occurrences = (text: string, pattern: RegExp) => text.match(pattern)?.length ?? 0;
const flag = (matches: boolean) => (matches ? 1 : 0);

function shapeOf({ text, lines, optionLines, question }: PromptLayout): number[] {
  const optionChars = optionLines.reduce((sum, line) => sum + line.length, 0);
  return [
    Math.log1p(text.length),
    Math.log1p(question.length),
    flag(optionLines.length >= 2),
    Math.log1p(optionLines.length > 0 ? optionChars / optionLines.length : 0),
    Math.log1p(occurrences(text, NUMBER)),
    Math.log1p(occurrences(text, /[=+*/^<>√∑∫]|\\frac|\\sqrt/g)),
    flag(/\b(?:NOT|EXCEPT|LEAST|FALSE)\b/.test(text)),
    flag(/\bStatement 1\b|\b(?:I|II|III|IV)\s+(?:only|and)\b/.test(text)),
    Math.log1p(occurrences(text, /\?/g)),
    Math.log1p(lines.length),
    flag(/```|\bdef |\bfunction\b|[;{}]\s*$/m.test(text)),
  ];
}

/** The raw shape features of a prompt, in `SHAPE_FEATURES` order. */
export function shapeFeatures(text: string): number[] {
  return shapeOf(layoutOf(text));
}

/**
 * "all of the above", "none of the above", or "both " followed later by " and": written out
 * rather than as `/both .* and/`, whose backtracking is quadratic on a line of repeated "both".
 */
function isAggregateOption(option: string): boolean {
  const lower = option.toLowerCase();
  if (lower.includes("all of the above") || lower.includes("none of the above")) return true;
  const both = lower.indexOf("both ");
  return both >= 0 && lower.lastIndexOf(" and") >= both + 5;
}

/** Whether the question ends with a question mark, ignoring a trailing "Answer:" prompt. */
function endsWithQuestion(question: string): boolean {
  let end = question.trim();
  if (end.endsWith("Answer:")) end = end.slice(0, -"Answer:".length).trimEnd();
  return end.endsWith("?");
}

function kindOf({ text, optionTexts, question }: PromptLayout): number[] {
  const lengths = optionTexts.map((option) => option.length);
  let sum = 0;
  let shortest = Number.POSITIVE_INFINITY;
  let longest = 0;
  for (const length of lengths) {
    sum += length;
    shortest = Math.min(shortest, length);
    longest = Math.max(longest, length);
  }
  const mean = lengths.length > 0 ? sum / lengths.length : 0;
  const variance =
    lengths.length > 0
      ? lengths.reduce((total, length) => total + (length - mean) ** 2, 0) / lengths.length
      : 0;
  const numericOptions = optionTexts.filter((option) => /^\s*[-$]?\d/.test(option)).length;
  let words = 0;
  let longWords = 0;
  let capitalized = 0;
  for (const [word] of question.matchAll(/[A-Za-z]+/g)) {
    words++;
    if (word.length >= 9) longWords++;
    const first = word.charCodeAt(0);
    if (first >= 65 && first <= 90) capitalized++;
  }
  const share = (part: number, whole: number) => (whole > 0 ? part / whole : 0);
  return [
    Math.log1p(words),
    Math.log1p(mean),
    Math.log1p(Math.sqrt(variance)),
    lengths.length > 0 ? Math.log1p(longest) - Math.log1p(shortest) : 0,
    share(numericOptions, optionTexts.length),
    Math.log1p(occurrences(question, NUMBER)),
    flag(/which of the following/i.test(question)),
    flag(optionTexts.some(isAggregateOption)),
    flag(/\$[^$]+\$|\\\(|\\frac|\^|_\{/.test(text)),
    share(longWords, words),
    share(capitalized, words),
    Math.log1p(occurrences(question, /[.?!](?:\s|$)/g)),
    flag(endsWithQuestion(question)),
    flag(/_{2,}|\bblank\b/i.test(question)),
    // `\b%\b` matches only between word characters ("5%x"): kept, the model was measured with it.
    flag(/\b(?:percent|%|ratio|rate|average|probability)\b/i.test(question)),
    flag(/\b(?:each|per|every|times|twice|half|total|left|remaining)\b/i.test(question)),
    flag(/\b(?:he|she|they|his|her|their)\b/i.test(question)),
    flag(/\b(?:you|your)\b/i.test(question)),
    flag(/\b(?:19|20)\d\d\b/.test(text)),
    flag(/"|“/.test(question)),
  ];
}

/** The raw kind-of-question features of a prompt, in `KIND_FEATURES` order. */
export function kindFeatures(text: string): number[] {
  return kindOf(layoutOf(text));
}

/**
 * The first `count` raw dense features of a prompt, in `DENSE_FEATURES` order: none, the shape
 * features, or the shape and kind features (the kind ones are computed only when asked for).
 */
export function denseFeatures(text: string, count: number): number[] {
  if (count === 0) return [];
  const layout = layoutOf(text);
  const shape = shapeOf(layout);
  const dense = count <= SHAPE_FEATURES.length ? shape : [...shape, ...kindOf(layout)];
  return dense.length > count ? dense.slice(0, count) : dense;
}

export interface FeatureSpace {
  /** log2 of the number of hash buckets. */
  hashBits: number;
  /**
   * Per dense feature: subtract the mean, divide by the scale (from the training data). Their
   * length says how many of `DENSE_FEATURES` the model reads: none for n-grams alone (the plain
   * baseline), the shape features, or all of them.
   */
  denseMean: readonly number[];
  denseScale: readonly number[];
}

/** Total width of the feature vector for a space: hash buckets, then the dense features. */
export function featureWidth(space: Pick<FeatureSpace, "hashBits" | "denseMean">): number {
  return 2 ** space.hashBits + space.denseMean.length;
}

/**
 * The feature vector of a prompt: unigram and bigram counts hashed into `2^hashBits` buckets and
 * scaled to unit length (so a long prompt does not shout), followed by the standardized dense
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
  const dense = denseFeatures(text, space.denseMean.length);
  const size = keys.length + dense.length;
  const indices = new Int32Array(size);
  const values = new Float64Array(size);
  keys.forEach((key, i) => {
    indices[i] = key;
    values[i] = (counts.get(key) ?? 0) / norm;
  });
  const base = 2 ** space.hashBits;
  dense.forEach((raw, j) => {
    const at = keys.length + j;
    indices[at] = base + j;
    values[at] = (raw - (space.denseMean[j] ?? 0)) / (space.denseScale[j] || 1);
  });
  return { indices, values };
}

/**
 * Mean and standard deviation of the first `count` dense features over a corpus, for
 * standardizing. A feature constant over the corpus keeps a scale of 1.
 */
export function fitDenseScaling(
  texts: readonly string[],
  count: number,
): { mean: number[]; scale: number[] } {
  const mean = new Array<number>(count).fill(0);
  const square = new Array<number>(count).fill(0);
  for (const text of texts) {
    denseFeatures(text, count).forEach((v, j) => {
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
