import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { answerOf } from "./cascade-verifier.js";
import { AnswerRow, isLabelled, parseJsonl, RoutingRow, rowInput } from "./dataset.js";
import { fromModelFile, seenInTraining } from "./model-file.js";
import { evaluateStrategies } from "./report.js";
import { createStrategy } from "./strategies.js";
import { routingText } from "./text.js";

/**
 * The held-out figures the README and docs/routing.md state are what the shipped files compute:
 * this re-runs `handoff router eval` on data/routing/heldout.jsonl with the model the docs name,
 * and compares every strong share the two tables print.
 */

const root = new URL("../../../", import.meta.url);
const read = (path: string) => readFileSync(fileURLToPath(new URL(path, root)), "utf8");

const allRows = parseJsonl(read("data/routing/heldout.jsonl"), RoutingRow, "heldout.jsonl");
const answers = new Map(
  parseJsonl(read("data/routing/gsm8k-weak-answers.jsonl"), AnswerRow, "answers").map((a) => [
    a.id,
    a,
  ]),
);
const model = fromModelFile(
  JSON.parse(read("data/routing/model-train-split.json")),
  "model-train-split.json",
);
const baseline = fromModelFile(
  JSON.parse(read("data/routing/ngram-baseline.json")),
  "ngram-baseline.json",
);

async function figures(part: (row: RoutingRow) => boolean = () => true) {
  const rows = allRows.filter(part);
  const score = async (name: "rules" | "learned" | "cascade", which = model) => {
    const strategy = createStrategy(name, { model: which });
    const scores = await Promise.all(
      rows.map(async (row) => {
        const answer = name === "cascade" ? answers.get(row.id) : undefined;
        return (
          await strategy.assess({
            input: rowInput(row),
            answer: answer ? answerOf(answer) : undefined,
          })
        ).score;
      }),
    );
    return {
      name,
      scores,
      threshold: strategy.defaultThreshold,
      paysLightFirst: name === "cascade",
    };
  };
  const report = evaluateStrategies(
    rows.map((row) => ({
      id: row.id,
      labels: isLabelled(row) ? { weak: row.weak_correct, strong: row.strong_correct } : undefined,
      weakUsd: 0,
      strongUsd: 0,
    })),
    [
      await score("cascade"),
      await score("learned"),
      { ...(await score("learned", baseline)), name: "baseline" },
      await score("rules"),
    ],
  );
  const share = (name: string) => {
    const value = report.strategies.find((s) => s.name === name)?.strong_share_at_95;
    return `${((value ?? Number.NaN) * 100).toFixed(1)}%`;
  };
  return { share, report };
}

/** The cells of the first Markdown table row starting with `label`. */
function rowOf(markdown: string, label: string): string[] {
  const line = markdown.split("\n").find((l) => l.startsWith(`| ${label}`));
  if (!line) throw new Error(`no table row starting with "${label}"`);
  return line
    .split("|")
    .slice(1, -1)
    .map((cell) => cell.trim().replace(/\*\*/g, ""));
}

describe("the held-out figures the docs state", () => {
  it("are what the shipped model and data compute", async () => {
    const { share, report } = await figures();
    expect(report.rows).toBe(2594);
    const docs = read("docs/routing.md");
    expect(rowOf(docs, "**cascade**")[1]).toBe(share("cascade"));
    expect(rowOf(docs, "learned (the default)")[1]).toBe(share("learned"));
    expect(rowOf(docs, "plain hashed n-gram")[1]).toBe(share("baseline"));
    expect(rowOf(docs, "rules (before this work)")[1]).toBe(share("rules"));
    expect(rowOf(docs, "random")[1]).toBe(share("random"));
    expect(rowOf(docs, "oracle")[1]).toBe(share("oracle"));

    const readme = read("README.md");
    const header = readme
      .split("\n")
      .findIndex((l) => l.startsWith("| cascade | learned | plain n-gram baseline"));
    const values = readme
      .split("\n")
      [header + 2]?.split("|")
      .slice(1, -1)
      .map((c) => c.trim().replace(/\*\*/g, ""));
    expect(values).toEqual(
      ["cascade", "learned", "baseline", "rules", "random", "oracle"].map(share),
    );
  });

  it("by source: GSM8K, where the weak answers are known, and the unseen MMLU subjects", async () => {
    const docs = read("docs/routing.md");
    for (const [label, source] of [
      ["GSM8K (the weak", "gsm8k"],
      ["MMLU, 10 unseen subjects", "mmlu"],
    ] as const) {
      const { share, report } = await figures((row) => row.source === source);
      const cells = rowOf(docs, label);
      expect(cells[1]).toBe(report.rows.toLocaleString("en-US"));
      expect(cells.slice(2)).toEqual(["random", "learned", "cascade", "oracle"].map(share));
    }
  });

  it("cross-validated: the seed-1 figures are the ones the shipped model recorded", () => {
    const shipped = fromModelFile(
      JSON.parse(read("libs/routing/models/router.json")),
      "router.json",
    );
    const cv = shipped.file.cross_validation;
    const pct = (v: number | null | undefined) => `${((v ?? Number.NaN) * 100).toFixed(1)}%`;
    const cells = rowOf(read("docs/routing.md"), "1 |");
    expect(cells[1]).toBe(pct(cv.learned_strong_share_at_95));
    expect(cells[3]).toBe(pct(cv.cascade_strong_share_at_95));
    expect(shipped.file.trained).toMatchObject({ seed: 1, folds: 5, data: { rows: 12_421 } });
  });

  it("come from a model that never saw a held-out prompt", () => {
    const seen = allRows.filter((row) => {
      const key = routingText(rowInput(row));
      return (
        model.trainingPrompts.length > 0 && key.length > 0 && seenIn(model.trainingPrompts, key)
      );
    });
    expect(model.trainingPrompts.length).toBeGreaterThan(9000);
    expect(seen).toEqual([]);
  });
});

function seenIn(prompts: Uint32Array, text: string): boolean {
  return seenInTraining({ trainingPrompts: prompts }, [text]) > 0;
}
