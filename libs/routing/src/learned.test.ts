import { describe, expect, it } from "vitest";
import { fitPlatt } from "./calibration.js";
import { trainVerifier, verify } from "./cascade-verifier.js";
import type { AnswerRow, RoutingRow } from "./dataset.js";
import {
  DENSE_FEATURES,
  denseFeatures,
  featurize,
  fitDenseScaling,
  fnv1a,
  SHAPE_FEATURES,
  type SparseVector,
  shapeFeatures,
  tokenize,
} from "./features.js";
import { assignFolds, groupKeys, seededRandom, shuffled } from "./folds.js";
import { LearnedScorer, trainLearned } from "./learned.js";
import { fitLogistic, sigmoid } from "./logistic.js";
import { fromModelFile, MODEL_FORMAT } from "./model-file.js";
import { splitRows } from "./split.js";
import { trainRouter } from "./train.js";

/**
 * A small labelled corpus with a signal a router can learn: questions about "integrals" and
 * "proofs" are hard for the weak model, questions about "capitals" and "colors" are not.
 */
function corpus(): RoutingRow[] {
  const random = seededRandom(42);
  const rows: RoutingRow[] = [];
  const topics = [
    { domain: "calculus", words: "Evaluate the integral of x squared times sine", hard: 0.8 },
    {
      domain: "logic",
      words: "Give a proof that the statement follows from the premises",
      hard: 0.7,
    },
    { domain: "geography", words: "What is the capital city of this country", hard: 0.1 },
    { domain: "art", words: "Which color do you get mixing these paints", hard: 0.15 },
  ];
  for (const topic of topics) {
    for (let i = 0; i < 60; i++) {
      const hard = random() < topic.hard;
      rows.push({
        id: `${topic.domain}/${i}`,
        source: "quiz",
        // Two domains a topic, so a fold that holds one out still learned from the other.
        domain: `${topic.domain}-${i % 2}`,
        prompt: `${topic.words} number ${i}?\nA. one\nB. two\nC. three\nD. four`,
        weak_correct: !hard,
        strong_correct: hard ? random() < 0.9 : random() < 0.95,
      });
    }
  }
  return rows;
}

describe("features", () => {
  it("turns numbers into shapes so different values share a feature", () => {
    expect(tokenize("What is 17 * 23?")).toEqual(["what", "is", "##", "*", "##", "?"]);
    expect(tokenize("In 1999 and 20245")).toEqual(["in", "####", "and", "####"]);
  });

  it("hashes with FNV-1a, the same on every platform", () => {
    expect(fnv1a("")).toBe(0x811c9dc5);
    expect(fnv1a("a")).toBe(0xe40c292c);
    expect(fnv1a("foobar")).toBe(0xbf9cf968);
  });

  it("gives n-gram features unit length and appends the standardized shape features", () => {
    const space = {
      hashBits: 10,
      denseMean: shapeFeatures("").map(() => 0),
      denseScale: shapeFeatures("").map(() => 1),
    };
    const v = featurize("the cat the hat", space);
    const hashed = Array.from(v.values).slice(0, v.values.length - shapeFeatures("").length);
    expect(hashed.reduce((s, x) => s + x * x, 0)).toBeCloseTo(1, 12);
    expect(Array.from(v.indices).slice(-shapeFeatures("").length)).toEqual(
      shapeFeatures("").map((_, j) => 1024 + j),
    );
    expect(featurize("the cat the hat", space)).toEqual(v);
  });

  it("reads answer options and negations as shape", () => {
    const [, , options, , , , negation] = shapeFeatures(
      "Which is NOT a prime?\nA. 2\nB. 3\nC. 4\nD. 5",
    );
    expect(options).toBe(1);
    expect(negation).toBe(1);
  });
});

describe("logistic regression", () => {
  it("recovers the weight of a single feature from its log-odds", () => {
    // y = 1 with probability σ(2x - 1), written out exactly as soft labels.
    const xs = [-2, -1, 0, 1, 2];
    const rows = xs.map((x) => ({ indices: Int32Array.from([0]), values: Float64Array.from([x]) }));
    const model = fitLogistic(
      rows,
      xs.map((x) => sigmoid(2 * x - 1)),
      { width: 1, l2: 1e-9, maxIterations: 500, tolerance: 1e-10 },
    );
    expect(model.weights[0]).toBeCloseTo(2, 4);
    expect(model.bias).toBeCloseTo(-1, 4);
  });

  it("learns only a correction on top of an offset when the bias is off", () => {
    const rows = [0, 1, 2, 3].map(() => ({
      indices: Int32Array.from([0]),
      values: Float64Array.from([0]),
    }));
    const model = fitLogistic(
      rows,
      [0.5, 0.5, 0.5, 0.5],
      { width: 1, l2: 1, fitBias: false },
      [1, 1, 1, 1],
    );
    expect(model.bias).toBe(0);
  });

  it("is deterministic: the same rows give the same weights", () => {
    const rows = corpus()
      .slice(0, 50)
      .map((_, i) => ({
        indices: Int32Array.from([i % 7, 7 + (i % 3)]),
        values: Float64Array.from([1, 0.5]),
      }));
    const labels = rows.map((_, i) => (i % 4 === 0 ? 1 : 0));
    const a = fitLogistic(rows, labels, { width: 10, l2: 1 });
    const b = fitLogistic(rows, labels, { width: 10, l2: 1 });
    expect(Array.from(a.weights)).toEqual(Array.from(b.weights));
  });

  it("fits Platt scaling that maps over-confident logits back to frequencies", () => {
    // Logits twice too large: the fitted slope is about one half.
    const logits: number[] = [];
    const labels: number[] = [];
    for (let i = -40; i <= 40; i++) {
      const z = i / 10;
      const p = sigmoid(z / 2);
      for (let k = 0; k < 20; k++) {
        logits.push(z);
        labels.push(k < Math.round(p * 20) ? 1 : 0);
      }
    }
    const platt = fitPlatt(logits, labels);
    expect(platt.a).toBeCloseTo(0.5, 1);
    expect(Math.abs(platt.b)).toBeLessThan(0.05);
  });

  it("fits Platt scaling on logits in tight clusters, where a full Newton step diverges", () => {
    // Out-of-fold logits of a dense model on a small corpus: every easy prompt in one cluster,
    // the hard ones in a few others. Full Newton steps from (1, prior) sent the slope to 10^11.
    const logits: number[] = [];
    const labels: number[] = [];
    const cluster = (z: number, positives: number, negatives: number) => {
      for (let i = 0; i < positives + negatives; i++) {
        logits.push(z);
        labels.push(i < positives ? 1 : 0);
      }
    };
    cluster(-5.55, 0, 40);
    cluster(0.3, 2, 0);
    cluster(0.4, 12, 6);
    cluster(0.82, 11, 6);
    cluster(0.88, 1, 2);
    const platt = fitPlatt(logits, labels);
    expect(platt.a).toBeGreaterThan(0.1);
    expect(platt.a).toBeLessThan(2);
    expect(sigmoid(platt.a * -5.55 + platt.b)).toBeLessThan(0.05);
    expect(sigmoid(platt.a * 0.82 + platt.b)).toBeCloseTo(0.65, 1);
  });
});

describe("folds and splits", () => {
  const rows: RoutingRow[] = [
    ...corpus(),
    ...Array.from({ length: 20 }, (_, i) => ({
      id: `gsm/${i}`,
      source: "gsm8k",
      domain: "grade_school_math",
      prompt: `Word problem ${i}`,
      weak_correct: true,
      strong_correct: true,
    })),
  ];

  it("holds out whole domains, and splits a single-domain source by row", () => {
    const keys = groupKeys(rows);
    expect(keys[0]).toBe("domain:quiz/calculus-0");
    expect(keys.at(-1)).toBe("row:gsm/19");
    const folds = assignFolds(rows, 4, 7);
    const foldsOf = (domain: string) =>
      new Set(rows.flatMap((r, i) => (r.domain === domain ? [folds[i]] : [])));
    expect(foldsOf("calculus-0").size).toBe(1);
    expect(foldsOf("grade_school_math").size).toBeGreaterThan(1);
  });

  it("splits reproducibly by seed", () => {
    const a = splitRows(rows, { domains: 2, rowShare: 0.5, seed: 3 });
    const b = splitRows(rows, { domains: 2, rowShare: 0.5, seed: 3 });
    expect(a).toEqual(b);
    expect(a.heldOutDomains).toHaveLength(2);
    expect(a.heldOut.filter((r) => r.source === "gsm8k")).toHaveLength(10);
    for (const domain of a.heldOutDomains)
      expect(a.train.some((r) => r.domain === domain)).toBe(false);
    expect(shuffled([1, 2, 3, 4, 5], 9)).toEqual(shuffled([1, 2, 3, 4, 5], 9));
  });
});

describe("training the learned router", () => {
  const options = { seed: 1, folds: 4, l2: 1, hashBits: 12, maxIterations: 100 };

  it("learns which topics need the strong model, as calibrated probabilities", () => {
    const trained = trainLearned(corpus(), options);
    const scorer = new LearnedScorer(trained.spec);
    const hard = scorer.score("Evaluate the integral of x squared times sine number 99?");
    const easy = scorer.score("What is the capital city of this country number 99?");
    expect(hard).toBeGreaterThan(easy + 0.2);
    expect(hard).toBeLessThan(1);
    expect(easy).toBeGreaterThan(0);
  });

  it("trains the same model twice from the same data and seed, whatever the recipe", () => {
    for (const features of ["ngram+kind", "ngram+shape", "ngram"] as const) {
      const a = trainRouter(corpus(), undefined, { ...options, features, dataDigest: "x" });
      const b = trainRouter(corpus(), undefined, { ...options, features, dataDigest: "x" });
      expect(JSON.stringify(a.model.file)).toBe(JSON.stringify(b.model.file));
    }
  });

  it("refuses rows without labels", () => {
    const rows = corpus();
    rows[3] = { id: "x", prompt: "no labels" };
    expect(() => trainRouter(rows, undefined, { ...options, dataDigest: "x" })).toThrow(/row "x"/);
  });
});

describe("the two-stage ngram+kind fit", () => {
  /**
   * What needs the strong model is the kind of question ("which of the following"), whatever the
   * topic: 80% of those questions are strong wins, 20% of the others, exactly.
   */
  function kindCorpus(): RoutingRow[] {
    return Array.from({ length: 160 }, (_, i): RoutingRow => {
      const which = i % 2 === 0;
      const win = which ? i % 10 !== 0 : i % 10 === 1;
      return {
        id: `k/${i}`,
        source: "quiz",
        domain: `d${i % 8}`,
        prompt: which
          ? `Which of the following holds for case ${i % 4}?\nA. one\nB. two`
          : `Name the case ${i % 4}.\nA. one\nB. two`,
        weak_correct: !win,
        strong_correct: true,
      };
    });
  }
  const options = { seed: 1, folds: 4, l2: 1, hashBits: 12, maxIterations: 100 };
  const base = 2 ** options.hashBits;

  it("fits the dense features first, alone: their weights are those of a dense-only model", () => {
    const rows = kindCorpus();
    const { spec } = trainLearned(rows, { ...options, features: "ngram+kind" });
    expect(spec.denseMean).toHaveLength(DENSE_FEATURES.length);
    expect(spec.weights).toHaveLength(base + DENSE_FEATURES.length);

    const texts = rows.map((row) => row.prompt as string);
    const { mean, scale } = fitDenseScaling(texts, DENSE_FEATURES.length);
    const denseRows: SparseVector[] = texts.map((text) => ({
      indices: Int32Array.from(DENSE_FEATURES, (_, j) => j),
      values: Float64Array.from(
        denseFeatures(text, DENSE_FEATURES.length),
        (v, j) => (v - (mean[j] as number)) / (scale[j] as number),
      ),
    }));
    const alone = fitLogistic(
      denseRows,
      rows.map((row) => (row.weak_correct ? 0 : 1)),
      { width: DENSE_FEATURES.length, l2: options.l2, maxIterations: options.maxIterations },
    );
    Array.from(spec.weights.subarray(base)).forEach((w, j) => {
      expect(w).toBeCloseTo(alone.weights[j] as number, 4);
    });
  });

  it("fits the n-grams on top of the dense logit, learning only what it leaves unexplained", () => {
    const rows = kindCorpus();
    const twoStage = trainLearned(rows, { ...options, features: "ngram+kind" }).spec;
    const ngramOnly = trainLearned(rows, { ...options, features: "ngram" }).spec;
    // The words of "which of the following" carry the whole signal. Alone, the n-grams learn it;
    // with the dense model's logit as their offset there is nothing left for them to learn.
    const following = fnv1a("u:following") & (base - 1);
    expect(Math.abs(ngramOnly.weights[following] as number)).toBeGreaterThan(0.3);
    expect(Math.abs(twoStage.weights[following] as number)).toBeLessThan(
      0.1 * Math.abs(ngramOnly.weights[following] as number),
    );
    // One linear model all the same: it scores the two kinds of question apart.
    const scorer = new LearnedScorer(twoStage);
    const which = scorer.score("Which of the following holds for case 9?\nA. one\nB. two");
    const name = scorer.score("Name the case 9.\nA. one\nB. two");
    expect(which).toBeCloseTo(0.8, 1);
    expect(name).toBeCloseTo(0.2, 1);
  });

  it("records its recipe and dense features in the model file; the baseline's file has neither", () => {
    const train = (features: "ngram+kind" | "ngram+shape" | "ngram") =>
      trainRouter(kindCorpus(), undefined, { ...options, features, dataDigest: "d" }).model.file;
    const kind = train("ngram+kind");
    expect(kind.trained.features).toBe("ngram+kind");
    expect(kind.learned.shape_features).toEqual([...DENSE_FEATURES]);
    const shape = train("ngram+shape");
    expect(shape.trained.features).toBe("ngram+shape");
    expect(shape.learned.shape_features).toEqual([...SHAPE_FEATURES]);
    const ngram = train("ngram");
    expect(Object.keys(ngram.trained)).toEqual(["data", "seed", "folds", "l2", "prompts"]);
    expect(ngram.learned.shape_features).toEqual([]);
    for (const file of [kind, shape, ngram]) {
      expect(() => fromModelFile(JSON.parse(JSON.stringify(file)), "m.json")).not.toThrow();
    }
  });
});

describe("the cascade's verifier", () => {
  const rows = Array.from(
    { length: 80 },
    (_, i): RoutingRow => ({
      id: `g/${i}`,
      source: "gsm8k",
      domain: "math",
      prompt: `Ann has ${i + 3} apples and buys ${i + 5} more. How many apples does she have?`,
      weak_correct: i % 2 === 0,
      strong_correct: true,
    }),
  );
  // The weak model's right answers add up; its wrong ones do not.
  const answers = new Map<string, AnswerRow>(
    rows.map((row, i) => [
      row.id,
      {
        id: row.id,
        weak_response:
          i % 2 === 0
            ? `${i + 3} + ${i + 5} = ${2 * i + 8}\n#### ${2 * i + 8}`
            : `${i + 3} + ${i + 5} = ${2 * i + 9}\n#### ${2 * i + 9}`,
      },
    ]),
  );

  it("learns that a wrong sum means the answer does not stand", () => {
    const trained = trainVerifier(
      rows.map((r) => ({ ...r, weak_correct: r.weak_correct as boolean, strong_correct: true })),
      answers,
      new Float64Array(rows.length),
      { l2: 0.1, folds: rows.map((_, i) => i % 4) },
    );
    const question = "Ann has 7 apples and buys 9 more. How many apples does she have?";
    const wrong = verify(trained.spec, 0, question, { text: "7 + 9 = 17\n#### 17" });
    const right = verify(trained.spec, 0, question, { text: "7 + 9 = 16\n#### 16" });
    expect(wrong.score).toBeGreaterThan(0.8);
    expect(right.score).toBeLessThan(0.5);
    expect(wrong.signals).toContain("arithmetic error");
  });

  it("keeps the pre-route's score for an answer it cannot judge, and moves it by the priors", () => {
    const spec = {
      weights: new Array(20).fill(1),
      logprobs: { weight: 3, reference: 0.15 },
      selfConfidence: { weight: -3, reference: 0.75 },
    };
    const question = "Who wrote Hamlet?";
    expect(verify(spec, 0.4, question, { text: "Shakespeare." }).logit).toBeCloseTo(0.4, 12);
    const unsure = verify(spec, 0.4, question, {
      text: "Shakespeare.",
      selfConfidence: 0.25,
      logprobs: [Math.log(0.5)],
    });
    expect(unsure.logit).toBeCloseTo(0.4 + 3 * (0.5 - 0.15) - 3 * (0.25 - 0.75), 12);
    expect(unsure.signals).toEqual(["token uncertainty 0.50", "self-reported confidence 25%"]);
  });
});

describe("the model file", () => {
  it("round-trips a trained model and validates what it reads", () => {
    const { model } = trainRouter(corpus(), undefined, {
      seed: 1,
      folds: 4,
      l2: 1,
      hashBits: 10,
      dataDigest: "d",
    });
    const back = fromModelFile(JSON.parse(JSON.stringify(model.file)), "m.json");
    expect(Array.from(back.learned.weights)).toEqual(Array.from(model.learned.weights));
    expect(back.learnedThreshold).toBe(model.learnedThreshold);

    const broken = JSON.parse(JSON.stringify(model.file));
    broken.learned.weights = broken.learned.weights.slice(0, 40);
    expect(() => fromModelFile(broken, "m.json")).toThrow(
      `expected ${1024 + DENSE_FEATURES.length} float32 weights`,
    );
    expect(() => fromModelFile({ ...model.file, format: "other" }, "m.json")).toThrow(
      /router model m\.json is invalid: format/,
    );
    expect(() =>
      fromModelFile(
        { ...model.file, learned: { ...model.file.learned, shape_features: ["x"] } },
        "m.json",
      ),
    ).toThrow(/retrain/);
    expect(() =>
      fromModelFile(
        { ...model.file, trained: { ...model.file.trained, features: "ngram+shape" } },
        "m.json",
      ),
    ).toThrow(
      "m.json: trained.features is ngram+shape, but learned.shape_features are those of ngram+kind",
    );
    expect(model.file.format).toBe(MODEL_FORMAT);
  });
});
