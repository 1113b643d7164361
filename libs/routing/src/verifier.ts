import { agrees, arithmeticClaims, parseNumber } from "./arithmetic.js";

/**
 * What a cascade's verifier reads in the light model's answer before deciding whether it stands.
 * Signals that any answer has (cut off, empty) apply always; the checks of a worked calculation
 * (arithmetic re-done with the calculator, a missing or unexplained final answer, numbers from the
 * question left unused) apply when the question is quantitative: it states numbers and offers no
 * answer options. Feature values are plain numbers so a logistic model can weigh them.
 */

export const VERIFIER_FEATURES = [
  "quantitative",
  "truncated",
  "empty",
  "no_final_answer",
  "arithmetic_error",
  "log_arithmetic_errors",
  "non_integer_final",
  "final_not_computed",
  "unused_question_numbers",
  "log_calculations",
  "log_answer_chars",
  "hedging",
  "negative_final",
  "final_with_remarks",
  "negative_step",
] as const;
export type VerifierFeature = (typeof VERIFIER_FEATURES)[number];

export interface LightAnswer {
  text: string;
  /** The provider's finish reason: `length` means it was cut off. */
  finishReason?: string | undefined;
  /** Token log-probabilities, where the provider returned them. */
  logprobs?: readonly number[] | undefined;
  /** The confidence the model reported itself, in [0, 1], when it did. */
  selfConfidence?: number | undefined;
}

const NUMBER_IN_TEXT = /\$?\d+(?:,\d{3})*(?:\.\d+)?%?/g;
// An option's indentation stays on its line (spaces, not line breaks): a leading `\s*` would
// rescan every blank line after each line start, time quadratic in a prompt of newlines.
const OPTION_LINE = /^[^\S\n\r\u2028\u2029]*\(?[A-Ja-j][.)]\s/m;
const OPTION_LINES = /^[^\S\n\r\u2028\u2029]*\(?[A-Ja-j][.)]\s/gm;
const FINAL_MARKERS = [
  /####\s*(-?\$?\d[\d,]*(?:\.\d+)?%?)/g,
  /\\boxed\{\s*(-?\$?\d[\d,]*(?:\.\d+)?%?)\s*\}/g,
  /(?:final answer|the answer|answer)\s*(?:is|:|=)\s*(?:\*\*)?\s*(-?\$?\d[\d,]*(?:\.\d+)?%?)/gi,
];

/** Second thoughts and approximations: a worked answer that doubts itself is often wrong. */
const HEDGES =
  /\b(?:however|approximately|roughly|about|actually|but wait|assum(?:e|ing)|re-?evaluate|mistake|let me|doesn't make sense|not possible|impossible|negative|round(?:ing|ed)?(?: up| down)?)\b|≈/gi;
/** A final-answer line with words after the number: `#### 520 (Thursday's revenue)`. */
const FINAL_WITH_REMARKS = /(?:####|answer is)\s*-?\$?\d[\d,]*(?:\.\d+)?%?\s*[^\s.\d]/i;

/** Quantities written as words, as questions often state them ("three weeks", "a dozen"). */
const WORD_VALUES: Record<string, number> = {
  one: 1,
  two: 2,
  three: 3,
  four: 4,
  five: 5,
  six: 6,
  seven: 7,
  eight: 8,
  nine: 9,
  ten: 10,
  eleven: 11,
  twelve: 12,
  twenty: 20,
  thirty: 30,
  forty: 40,
  fifty: 50,
  hundred: 100,
};
const COUNT_WORDS = new RegExp(`\\b(?:${Object.keys(WORD_VALUES).join("|")})\\b`, "gi");

const NUMBER_WORDS =
  /\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|hundred|thousand|half|twice|double|triple|third|quarter|dozen)\b/gi;

/** Quantities a text states, in digits or in words ("three days", "twice"). */
export function quantities(text: string): { digits: number; words: number } {
  return {
    digits: text.match(NUMBER_IN_TEXT)?.length ?? 0,
    words: text.match(NUMBER_WORDS)?.length ?? 0,
  };
}

/** Whether a question offers answer options on lines of their own (A. ..., B. ...). */
export function hasAnswerOptions(question: string): boolean {
  return (question.match(OPTION_LINES)?.length ?? 0) >= 2;
}

/**
 * A question that states quantities (in digits or words) and offers no answer options: a worked
 * calculation is expected.
 */
export function isQuantitative(question: string): boolean {
  if (OPTION_LINE.test(question)) return false;
  const { digits, words } = quantities(question);
  return digits >= 1 && digits + words >= 2;
}

/** The final answer an answer states explicitly (`#### 42`, `\boxed{42}`, "the answer is 42"). */
export function finalAnswer(answer: string): string | undefined {
  let found: { at: number; text: string } | undefined;
  for (const pattern of FINAL_MARKERS) {
    for (const match of answer.matchAll(pattern)) {
      const at = match.index ?? 0;
      if (!found || at >= found.at) found = { at, text: match[1] ?? "" };
    }
  }
  return found?.text;
}

/** Whether the answer stops mid-way: cut off by the provider or mid-calculation. */
export function isTruncated(answer: LightAnswer): boolean {
  if (answer.finishReason === "length") return true;
  const text = answer.text.trimEnd();
  if (/<<[^>]*$/.test(text)) return true;
  return /[=+\-*/×÷(,]$/.test(text);
}

/** The verifier's features of an answer to a question, in `VERIFIER_FEATURES` order. */
export function verifierFeatures(question: string, answer: LightAnswer): number[] {
  const text = answer.text;
  const truncated = isTruncated(answer) ? 1 : 0;
  const empty = text.trim() === "" ? 1 : 0;
  if (!isQuantitative(question)) {
    return [0, truncated, empty, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
  }
  const claims = arithmeticClaims(text);
  const errors = claims.filter((c) => !c.ok).length;
  const final = finalAnswer(text);
  const finalValue = final === undefined ? undefined : parseNumber(final);
  const nonInteger =
    finalValue !== undefined && Math.abs(finalValue - Math.round(finalValue)) > 1e-9 ? 1 : 0;
  const notComputed =
    final !== undefined &&
    claims.length > 0 &&
    !claims.some((c) => agrees(c.right, final) || agrees(c.left, final))
      ? 1
      : 0;
  const inQuestion = new Set([
    ...(question.match(NUMBER_IN_TEXT) ?? [])
      .map((n) => parseNumber(n))
      .filter((n) => n !== undefined),
    ...(question.match(COUNT_WORDS) ?? []).map((w) => WORD_VALUES[w.toLowerCase()] as number),
  ]);
  const inAnswer = new Set([
    ...(text.match(NUMBER_IN_TEXT) ?? []).map((n) => parseNumber(n)).filter((n) => n !== undefined),
    ...(text.match(COUNT_WORDS) ?? []).map((w) => WORD_VALUES[w.toLowerCase()] as number),
  ]);
  let unused = 0;
  for (const n of inQuestion) if (!inAnswer.has(n)) unused++;
  return [
    1,
    truncated,
    empty,
    final === undefined ? 1 : 0,
    errors > 0 ? 1 : 0,
    Math.log1p(errors),
    nonInteger,
    notComputed,
    inQuestion.size > 0 ? unused / inQuestion.size : 0,
    Math.log1p(claims.length),
    Math.log1p(text.length) / 8,
    Math.log1p(text.match(HEDGES)?.length ?? 0),
    finalValue !== undefined && finalValue < 0 ? 1 : 0,
    final !== undefined && FINAL_WITH_REMARKS.test(text) ? 1 : 0,
    claims.some((c) => c.right < 0) ? 1 : 0,
  ];
}

/**
 * Each token's log-probability counts down to this floor: OpenAI writes -9999 for a token outside
 * its top 20, and one such token would otherwise swamp the mean.
 */
const LOGPROB_FLOOR = -10;

/** Mean token log-probability turned into an uncertainty in [0, 1): 1 − e^mean. */
export function logprobUncertainty(logprobs: readonly number[] | undefined): number | undefined {
  if (!logprobs || logprobs.length === 0) return undefined;
  const finite = logprobs
    .filter((v) => !Number.isNaN(v))
    .map((v) => Math.max(LOGPROB_FLOOR, Math.min(0, v)));
  if (finite.length === 0) return undefined;
  const mean = finite.reduce((s, v) => s + v, 0) / finite.length;
  return 1 - Math.exp(Math.min(0, mean));
}

const CONFIDENCE_LINE =
  /\n?[ \t]*[*_]*\s*confidence\s*(?:[*_]*\s*[:=]|[:=]\s*[*_]*)\s*[*_]*\s*(\d{1,3}(?:\.\d+)?)\s*%?\s*[*_]*\s*$/i;

/**
 * Splits the self-reported confidence line the cascade asks for ("Confidence: 85%") off the end of
 * an answer: the client gets the answer without it, the verifier the number.
 */
export function splitSelfConfidence(text: string): { text: string; confidence?: number } {
  const match = CONFIDENCE_LINE.exec(text);
  if (!match) return { text };
  const value = Number(match[1]);
  if (!Number.isFinite(value) || value > 100) return { text };
  return { text: text.slice(0, match.index).trimEnd(), confidence: value / 100 };
}
