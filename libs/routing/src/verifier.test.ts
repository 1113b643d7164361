import { describe, expect, it } from "vitest";
import { agrees, arithmeticClaims, normalizeExpression, parseNumber } from "./arithmetic.js";
import {
  finalAnswer,
  isQuantitative,
  isTruncated,
  logprobUncertainty,
  splitSelfConfidence,
  VERIFIER_FEATURES,
  verifierFeatures,
} from "./verifier.js";

const feature = (question: string, text: string, finishReason?: string) => {
  const values = verifierFeatures(question, { text, finishReason });
  return Object.fromEntries(VERIFIER_FEATURES.map((name, i) => [name, values[i]]));
};

const WORD_PROBLEM =
  "Toula bought 3 dozen donuts at $68 a dozen and 2 dozen mini cupcakes at $80 a dozen. How much did she pay?";

describe("arithmetic claims", () => {
  it("re-checks GSM8K annotations with the calculator", () => {
    const claims = arithmeticClaims(
      "She pays 3 * 68 = <<3*68=204>>204 and 2*80 = <<2*80=150>>150.",
    );
    expect(claims.map((c) => [c.text, c.ok])).toEqual([
      ["3*68 = 204", true],
      ["2*80 = 150", false],
    ]);
  });

  it("checks a written chain link by link, so a wrong middle step is caught", () => {
    const claims = arithmeticClaims("So 15 x 8 x 3/4 = 36 x 3/4 = 27 units are occupied.");
    expect(claims.map((c) => [c.text, c.ok])).toEqual([
      ["15 x 8 x 3/4 = 36 x 3/4", false],
      ["36 x 3/4 = 27", true],
    ]);
  });

  it("reads dollars, thousands separators, escaped stars and percents", () => {
    expect(arithmeticClaims("$1,200 \\* 15% = $180")).toMatchObject([{ ok: true, right: 180 }]);
    expect(arithmeticClaims("8 x $5 x 60% = $24")).toMatchObject([{ ok: true }]);
    expect(normalizeExpression("$1,200 x 15%")).toBe("1200*(15/100)");
  });

  it("accepts a result rounded to the precision it is written in, and nothing coarser", () => {
    expect(arithmeticClaims("60 / 7 = 8.57")).toMatchObject([{ ok: true }]);
    expect(arithmeticClaims("60 / 7 = 8")).toMatchObject([{ ok: false }]);
    expect(agrees(0.5, "50%")).toBe(true);
    expect(agrees(2, "two")).toBe(false);
  });

  it("reads a bare fraction the way people write it: 12.8 / 2/5 is 12.8 divided by two fifths", () => {
    expect(arithmeticClaims("12.8 / 2/5 = 32")).toMatchObject([{ ok: true }]);
  });

  it("leaves alone numbers with words between them and counts a repeated claim once", () => {
    expect(arithmeticClaims("He watched 2 x 1 hour = 120 minutes.")).toEqual([]);
    expect(arithmeticClaims("6 * 4 = <<6*4=24>>24 eggs")).toHaveLength(1);
  });

  it("parses written numbers", () => {
    expect(parseNumber("$1,234.50")).toBe(1234.5);
    expect(parseNumber("12%")).toBe(0.12);
    expect(parseNumber("twelve")).toBeUndefined();
  });
});

describe("answer signals", () => {
  it("finds the final answer however it is marked", () => {
    expect(finalAnswer("... so 64.\n#### 64")).toBe("64");
    expect(finalAnswer("The answer is $1,250.")).toBe("$1,250");
    expect(finalAnswer("we get \\boxed{42}")).toBe("42");
    expect(finalAnswer("I think it is sixty-four")).toBeUndefined();
  });

  it("calls an answer cut off when the provider says so or it stops mid-calculation", () => {
    expect(isTruncated({ text: "15 + 25 = <<15+2" })).toBe(true);
    expect(isTruncated({ text: "Total: 40 +" })).toBe(true);
    expect(isTruncated({ text: "Done.", finishReason: "length" })).toBe(true);
    expect(isTruncated({ text: "Done.", finishReason: "stop" })).toBe(false);
  });

  it("checks the working of a quantitative question", () => {
    const good = feature(
      WORD_PROBLEM,
      "3 x 68 = <<3*68=204>>204\n2 x 80 = <<2*80=160>>160\n204 + 160 = <<204+160=364>>364\n#### 364",
    );
    expect(good).toMatchObject({
      quantitative: 1,
      arithmetic_error: 0,
      no_final_answer: 0,
      non_integer_final: 0,
      final_not_computed: 0,
      unused_question_numbers: 0,
    });
    const bad = feature(
      WORD_PROBLEM,
      "3 x 68 = <<3*68=204>>204\n2 x 80 = <<2*80=150>>150\nHowever, roughly 204 + 150 = 354.5",
    );
    expect(bad).toMatchObject({
      arithmetic_error: 1,
      no_final_answer: 1,
      hedging: expect.any(Number),
    });
    expect(bad.hedging).toBeGreaterThan(0);
    expect(feature(WORD_PROBLEM, "It costs 204 + 160 = 364.\n#### 363.5")).toMatchObject({
      non_integer_final: 1,
      final_not_computed: 1,
    });
  });

  it("counts quantities stated in words among the question's numbers", () => {
    const question = "Jason walks 240 minutes in three weeks. How long does he walk each week?";
    expect(feature(question, "240 / 4 = 60\n#### 60").unused_question_numbers).toBe(0.5);
    expect(feature(question, "240 / 3 = 80\n#### 80").unused_question_numbers).toBe(0);
  });

  it("does not judge the working of a question that is not quantitative", () => {
    const question =
      "Which gas do plants absorb?\nA. Oxygen\nB. Carbon dioxide\nC. Helium\nD. Neon";
    expect(isQuantitative(question)).toBe(false);
    expect(isQuantitative("Hello there")).toBe(false);
    expect(isQuantitative(WORD_PROBLEM)).toBe(true);
    const values = feature(question, "B");
    expect(values.quantitative).toBe(0);
    expect(values.no_final_answer).toBe(0);
    expect(feature(question, "", "length")).toMatchObject({ truncated: 1, empty: 1 });
  });
});

describe("self-reported confidence and log-probabilities", () => {
  it("splits the confidence line off the answer", () => {
    expect(splitSelfConfidence("Paris is the capital.\nConfidence: 95%")).toEqual({
      text: "Paris is the capital.",
      confidence: 0.95,
    });
    expect(splitSelfConfidence("It is 4.\n**Confidence:** 60 %")).toEqual({
      text: "It is 4.",
      confidence: 0.6,
    });
    expect(splitSelfConfidence("No line here.")).toEqual({ text: "No line here." });
    expect(splitSelfConfidence("x\nConfidence: 250%")).toEqual({ text: "x\nConfidence: 250%" });
  });

  it("turns token log-probabilities into an uncertainty", () => {
    expect(logprobUncertainty(undefined)).toBeUndefined();
    expect(logprobUncertainty([])).toBeUndefined();
    expect(logprobUncertainty([0, 0])).toBe(0);
    expect(logprobUncertainty([Math.log(0.5), Math.log(0.5)])).toBeCloseTo(0.5, 12);
    // OpenAI's -9999 for a token outside its top 20 counts as the floor, not as certainty of doom.
    expect(logprobUncertainty([-9999, 0])).toBeCloseTo(1 - Math.exp(-5), 12);
    expect(logprobUncertainty([Number.NEGATIVE_INFINITY, 0])).toBeCloseTo(1 - Math.exp(-5), 12);
  });
});
