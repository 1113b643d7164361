import { describe, expect, it } from "vitest";
import {
  DENSE_FEATURES,
  denseFeatures,
  denseFeaturesOf,
  FEATURE_RECIPES,
  featurize,
  fitDenseScaling,
  KIND_FEATURES,
  kindFeatures,
  SHAPE_FEATURES,
  shapeFeatures,
} from "./features.js";

/** One kind feature of a prompt, by name. */
function kind(text: string, name: (typeof KIND_FEATURES)[number]): number {
  return kindFeatures(text)[KIND_FEATURES.indexOf(name)] as number;
}

describe("the kind-of-question features", () => {
  it("has one value per name, all zero for an empty prompt", () => {
    expect(kindFeatures("")).toEqual(KIND_FEATURES.map(() => 0));
    expect(new Set(DENSE_FEATURES).size).toBe(DENSE_FEATURES.length);
  });

  it("counts the question's words and numbers, leaving the options out", () => {
    const text = "Add 3 and 4.5 then 1,000.\nA. 7\nB. 8";
    expect(kind(text, "log_question_words")).toBeCloseTo(Math.log1p(3), 12);
    expect(kind(text, "log_question_numbers")).toBeCloseTo(Math.log1p(3), 12);
  });

  it("measures the options' text without its marker: mean, spread, share of numbers", () => {
    // Option texts "ab", "abcd", "-5 left" (lengths 2, 4, 7), "$3".
    const text = "Pick one.\nA. ab\nB) abcd\n(c) -5 left\nD. $3";
    const lengths = [2, 4, 7, 2];
    const mean = 15 / 4;
    const sd = Math.sqrt(lengths.reduce((s, l) => s + (l - mean) ** 2, 0) / 4);
    expect(kind(text, "log_option_text_chars")).toBeCloseTo(Math.log1p(mean), 12);
    expect(kind(text, "log_option_chars_sd")).toBeCloseTo(Math.log1p(sd), 12);
    expect(kind(text, "option_length_spread")).toBeCloseTo(Math.log1p(7) - Math.log1p(2), 12);
    expect(kind(text, "numeric_option_share")).toBe(0.5);
    expect(kind("No options here", "option_length_spread")).toBe(0);
  });

  it("spots 'which of the following' in the question, not in the options", () => {
    expect(kind("Which of the following is a prime?\nA. 4\nB. 5", "which_of_the_following")).toBe(
      1,
    );
    expect(kind("Pick one\nA. which of the following\nB. x", "which_of_the_following")).toBe(0);
  });

  it("spots options that point at the others: all or none of the above, both ... and", () => {
    expect(kind("Q\nA. x\nB. All of the above", "aggregate_option")).toBe(1);
    expect(kind("Q\nA. x\nB. none of the above", "aggregate_option")).toBe(1);
    expect(kind("Q\nA. Both x and y\nB. z", "aggregate_option")).toBe(1);
    expect(kind("Q\nA. both and\nB. z", "aggregate_option")).toBe(0);
    expect(kind("Both x and y?\nA. yes\nB. no", "aggregate_option")).toBe(0);
  });

  it("spots mathematical notation", () => {
    for (const text of ["Let $x$ be", "\\(x\\)", "\\frac{1}{2}", "x^2", "a_{n}"])
      expect(kind(text, "latex")).toBe(1);
    expect(kind("costs $5 and $", "latex")).toBe(1);
    expect(kind("costs $5", "latex")).toBe(0);
  });

  it("measures the words: long ones, capitalized ones, sentences", () => {
    const text = "Photosynthesis happens in Plants. Does it? yes";
    expect(kind(text, "long_word_share")).toBeCloseTo(1 / 7, 12);
    expect(kind(text, "capitalized_word_share")).toBeCloseTo(3 / 7, 12);
    expect(kind(text, "log_sentences")).toBeCloseTo(Math.log1p(2), 12);
  });

  it("knows a question that ends with a question mark, a trailing Answer: aside", () => {
    expect(kind("What is it?\nA. x\nB. y\nAnswer:", "ends_with_question")).toBe(1);
    expect(kind("What is it?  ", "ends_with_question")).toBe(1);
    expect(kind("Complete the sentence.\nAnswer:", "ends_with_question")).toBe(0);
  });

  it("spots blanks, rates, quantities, pronouns, years and quotations", () => {
    expect(kind("Fill in: the ___ of Rome", "fill_in_blank")).toBe(1);
    expect(kind("Fill in the blank", "fill_in_blank")).toBe(1);
    expect(kind("What is the average speed?", "rate_words")).toBe(1);
    expect(kind("She buys 3 apples each day", "quantity_words")).toBe(1);
    expect(kind("She buys 3 apples", "third_person")).toBe(1);
    expect(kind("Should you buy 3 apples?", "second_person")).toBe(1);
    expect(kind("In 1999 the law", "year")).toBe(1);
    expect(kind("In 1899 the law", "year")).toBe(0);
    expect(kind('He said "no"', "quotation")).toBe(1);
    expect(kind("He said “no”", "quotation")).toBe(1);
    expect(kind("The cat sat", "rate_words")).toBe(0);
    expect(kind("The cat sat", "quantity_words")).toBe(0);
    expect(kind("The cat sat", "third_person")).toBe(0);
  });
});

describe("the dense features of a recipe", () => {
  it("are a prefix of DENSE_FEATURES: none, the shape features, or shape and kind", () => {
    expect(denseFeaturesOf("ngram")).toEqual([]);
    expect(denseFeaturesOf("ngram+shape")).toEqual(SHAPE_FEATURES);
    expect(denseFeaturesOf("ngram+kind")).toEqual([...SHAPE_FEATURES, ...KIND_FEATURES]);
    expect(FEATURE_RECIPES[0]).toBe("ngram+kind");
    const text = "Which of the following is NOT prime?\nA. 2\nB. 4";
    expect(denseFeatures(text, 0)).toEqual([]);
    expect(denseFeatures(text, SHAPE_FEATURES.length)).toEqual(shapeFeatures(text));
    expect(denseFeatures(text, DENSE_FEATURES.length)).toEqual([
      ...shapeFeatures(text),
      ...kindFeatures(text),
    ]);
  });

  it("are standardized on the training texts and follow the hashed n-grams", () => {
    const texts = ["What is 1 + 1?\nA. 2\nB. 3", "Why is the sky blue?", "She has 3 cats."];
    const { mean, scale } = fitDenseScaling(texts, DENSE_FEATURES.length);
    expect(mean).toHaveLength(DENSE_FEATURES.length);
    const at = KIND_FEATURES.indexOf("third_person") + SHAPE_FEATURES.length;
    expect(mean[at]).toBeCloseTo(1 / 3, 12);
    expect(scale[at]).toBeCloseTo(Math.sqrt(2 / 9), 12);
    // Constant over the corpus (no year anywhere): a scale of 1, not a division by zero.
    expect(scale[KIND_FEATURES.indexOf("year") + SHAPE_FEATURES.length]).toBe(1);

    const v = featurize(texts[2] as string, { hashBits: 10, denseMean: mean, denseScale: scale });
    const tail = Array.from(v.indices).slice(-DENSE_FEATURES.length);
    expect(tail).toEqual(DENSE_FEATURES.map((_, j) => 1024 + j));
    expect(v.values[v.values.length - DENSE_FEATURES.length + at]).toBeCloseTo(
      (1 - 1 / 3) / Math.sqrt(2 / 9),
      12,
    );
  });
});
