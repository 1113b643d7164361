import { describe, expect, it } from "vitest";
import { arithmeticClaims } from "./arithmetic.js";
import { DENSE_FEATURES, featurize, kindFeatures, shapeFeatures } from "./features.js";
import { classifyByRules } from "./rules.js";
import { inLearnedDomain } from "./strategies.js";
import { hasAnswerOptions, isQuantitative, verifierFeatures } from "./verifier.js";

// Routing reads every prompt (and the cascade every light answer): none of it may take more than
// time in proportion to the text. Each case below took seconds to forever before; a few seconds
// per test is the guard.

const MB = 1_000_000;

describe("routing on long and hostile text", () => {
  it("reads a chain of operators without an '=' at once (it backtracked exponentially)", () => {
    expect(arithmeticClaims("1 + ".repeat(40))).toEqual([]);
    expect(arithmeticClaims(`${"1 + ".repeat(200)}1 = 201`)).toMatchObject([
      { left: 201, right: 201, ok: true },
    ]);
    // What the regular expressions read is unchanged: spaces after "(", before ")".
    expect(arithmeticClaims("( 2 + 3 ) x 4 = 20")).toMatchObject([{ left: 20, ok: true }]);
  }, 5_000);

  it("finds answer options in a prompt of a megabyte of line breaks at once", () => {
    for (const br of ["\n", "\r", "\r\n"]) {
      const blank = br.repeat(MB / br.length);
      expect(hasAnswerOptions(blank)).toBe(false);
      expect(hasAnswerOptions(`Which?${blank}A. one${br}  B. two`)).toBe(true);
      expect(inLearnedDomain(blank)).toBe(false);
      expect(isQuantitative(`${blank}1 and 2`)).toBe(true);
    }
  }, 5_000);

  it("featurizes and classifies a 1 MB prompt of digits, operators and parentheses", () => {
    const prompt = `What is ${"(12 + 3) * 4 - 5 / (6 ^ 2) % 7 8 9 \n\n".repeat(MB / 40)}?`;
    expect(shapeFeatures(prompt)).toHaveLength(11);
    const features = featurize(prompt, { hashBits: 10, denseMean: [], denseScale: [] });
    expect(features.indices.length).toBeGreaterThan(0);
    const dense = DENSE_FEATURES.map(() => 0);
    const all = featurize(prompt, { hashBits: 10, denseMean: dense, denseScale: dense });
    expect(Array.from(all.values).every(Number.isFinite)).toBe(true);
    expect(inLearnedDomain(prompt)).toBe(false);
    const input = { model: "handoff", messages: [{ role: "user" as const, content: prompt }] };
    expect(classifyByRules({ ...input, tools: [] }).decision).toBeDefined();
    const answer = { text: `${"1 + ".repeat(1_000)}= 1000\n#### 1000` };
    expect(verifierFeatures(prompt, answer).every(Number.isFinite)).toBe(true);
  }, 5_000);

  it("reads the kind of question of a megabyte of repeated words, options or signs at once", () => {
    // `/both .* and/` took 22 s on 200 kB of "both " (quadratic); a megabyte would take hours.
    for (const prompt of [
      `Which?\nA. ${"both ".repeat(MB / 5)}`,
      "A. x\n".repeat(MB / 5),
      "$a".repeat(MB / 2),
      `${"? ".repeat(MB / 2)}Answer:`,
      "_ ".repeat(MB / 2),
    ]) {
      expect(kindFeatures(prompt).every(Number.isFinite)).toBe(true);
    }
  }, 5_000);
});
