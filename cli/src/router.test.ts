import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it, vi } from "vitest";
import { exportRow, parseSince } from "./jobs.js";
import { routerMain, setRouting } from "./router.js";

const dir = mkdtempSync(join(tmpdir(), "handoff-router-cli-"));

/** Labelled prompts with a learnable signal: proofs need the strong model, greetings do not. */
function writeData(name: string, labelled = true): string {
  const lines: string[] = [];
  for (let i = 0; i < 80; i++) {
    const hard = i % 2 === 0;
    const row: Record<string, unknown> = {
      id: `q${i}`,
      source: "quiz",
      domain: `d${i % 8}`,
      prompt: hard
        ? `Prove lemma ${i} about 3 primes and 5 groups, and show every step of the argument in full.`
        : `Which color is item ${i}?\nA. red\nB. blue`,
    };
    if (labelled) {
      row.weak_correct = !hard || i % 6 === 0;
      row.strong_correct = true;
    }
    lines.push(JSON.stringify(row));
  }
  const path = join(dir, name);
  writeFileSync(path, `${lines.join("\n")}\n`);
  return path;
}

async function cli(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const progress = { isTTY: false, write: (text: string) => err.push(text.trimEnd()) };
  const code = await routerMain(argv, {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    progress,
  });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

const data = writeData("data.jsonl");
const model = join(dir, "model.json");
const train = () =>
  cli("train", "--data", data, "--out", model, "--folds", "4", "--hash-bits", "10");

beforeAll(async () => {
  expect((await train()).code).toBe(0);
});

describe("handoff router train", () => {
  it("writes a model file, the same bytes every time, and reports its cross-validated figures", async () => {
    const first = await train();
    expect(first.code).toBe(0);
    const bytes = readFileSync(model, "utf8");
    expect(first.err).toMatch(/training: \d+% \([\d.]+s\) fold 2\/4/);
    expect(first.err).toMatch(/training: done in/);
    expect(first.err).toMatch(
      /learned: threshold 0\.\d+; cross-validated strong share at 95% [\d.]+%/,
    );
    await train();
    expect(readFileSync(model, "utf8")).toBe(bytes);
    expect(JSON.parse(bytes).trained).toMatchObject({
      data: { rows: 80 },
      seed: 1,
      folds: 4,
      features: "ngram+kind",
    });
  });

  it("refuses data without labels, and bad options, naming them", async () => {
    expect(
      await cli(
        "train",
        "--data",
        writeData("unlabelled.jsonl", false),
        "--out",
        join(dir, "x.json"),
      ),
    ).toMatchObject({
      code: 2,
      err: expect.stringContaining("has no labels: training needs weak_correct and strong_correct"),
    });
    expect(await cli("train", "--data", data, "--out", model, "--folds", "1")).toMatchObject({
      code: 2,
      err: '--folds must be a whole number from 2 to 20, got "1"',
    });
    expect(await cli("train", "--data", data, "--out", model, "--features", "shape")).toMatchObject(
      {
        code: 2,
        err: '--features is ngram+kind (the default), ngram+shape or ngram (n-grams alone, the plain baseline), got "shape"',
      },
    );
    expect(await cli("train", "--data", data)).toMatchObject({ code: 2, err: "--out is required" });
    expect(await cli("train", "--data", join(dir, "missing.jsonl"), "--out", model)).toMatchObject({
      code: 2,
      err: expect.stringContaining("cannot read the data file"),
    });
  });
});

describe("handoff router score and eval", () => {
  it("prints one {id, score} a line, in the file's order", async () => {
    const { code, out } = await cli(
      "score",
      "--data",
      data,
      "--strategy",
      "learned",
      "--model",
      model,
    );
    expect(code).toBe(0);
    const rows = out.split("\n").map((l) => JSON.parse(l) as { id: string; score: number });
    expect(rows.map((r) => r.id)).toEqual(Array.from({ length: 80 }, (_, i) => `q${i}`));
    const proof = rows.filter((_, i) => i % 2 === 0).reduce((s, r) => s + r.score, 0) / 40;
    const color = rows.filter((_, i) => i % 2 === 1).reduce((s, r) => s + r.score, 0) / 40;
    expect(proof).toBeGreaterThan(color);
  });

  it("reports the figures of each strategy next to the baselines, as JSON and as a plot", async () => {
    const plot = join(dir, "curves.svg");
    const { code, out, err } = await cli(
      "eval",
      "--data",
      data,
      "--model",
      model,
      "--strategy",
      "rules,learned",
      "--json",
      "--plot",
      plot,
    );
    expect(code).toBe(0);
    const report = JSON.parse(out) as {
      rows: number;
      labelled: boolean;
      strategies: Array<{ name: string; strong_share_at_95: number | null; apgr: number | null }>;
    };
    expect(report).toMatchObject({ rows: 80, labelled: true });
    expect(report.strategies.map((s) => s.name)).toEqual([
      "rules",
      "learned",
      "always-weak",
      "always-strong",
      "random",
      "oracle",
    ]);
    const learned = report.strategies[1];
    const random = report.strategies[4];
    expect(learned?.strong_share_at_95).toBeLessThan(random?.strong_share_at_95 ?? 0);
    const svg = readFileSync(plot, "utf8");
    expect(svg).toMatch(/^<\?xml [^>]+>\n<svg /);
    expect(svg).toContain(">learned<");
    expect(err).toContain(`wrote ${plot}`);
  });

  it("warns when it scores prompts the model was trained on", async () => {
    const { code, out, err } = await cli(
      "eval",
      "--data",
      data,
      "--model",
      model,
      "--strategy",
      "rules,learned",
      "--json",
    );
    expect(code).toBe(0);
    expect(err).toContain(
      `warning: 80 of 80 prompts of ${data} are in the training data of ${model}: the learned figures are not held-out`,
    );
    expect(JSON.parse(out).seen_in_training).toEqual({ learned: 80 });
    const fresh = join(dir, "fresh.jsonl");
    writeFileSync(
      fresh,
      '{"id": "new", "prompt": "Prove lemma 99 about 3 primes and 5 rings, and show every step of the argument in full.", "weak_correct": false, "strong_correct": true}\n',
    );
    const other = await cli(
      "eval",
      "--data",
      fresh,
      "--model",
      model,
      "--strategy",
      "learned",
      "--json",
    );
    expect(other.err).not.toContain("warning");
  });

  it("trains on several files at once, refusing an id found in two", async () => {
    const second = join(dir, "second.jsonl");
    writeFileSync(
      second,
      '{"id": "extra", "prompt": "Which is red?\\nA. sky\\nB. rose", "weak_correct": true, "strong_correct": true}\n',
    );
    const both = await cli(
      "train",
      "--data",
      data,
      "--data",
      second,
      "--out",
      join(dir, "both.json"),
      "--folds",
      "4",
      "--hash-bits",
      "10",
    );
    expect(both.code).toBe(0);
    expect(JSON.parse(readFileSync(join(dir, "both.json"), "utf8")).trained.data.rows).toBe(81);
    expect(
      await cli("train", "--data", data, "--data", data, "--out", join(dir, "x.json")),
    ).toMatchObject({
      code: 2,
      err: expect.stringContaining('id "q0" appears in more than one of'),
    });
  });

  it("prints a table a person reads, and evaluates another model file next to the default", async () => {
    const { code, out } = await cli(
      "eval",
      "--data",
      data,
      "--model",
      model,
      "--strategy",
      `learned,learned:${model}`,
    );
    expect(code).toBe(0);
    expect(out).toMatch(/^strategy\s+strong@95/m);
    expect(out).toContain(`learned:${model}`);
    expect(out).toMatch(/^\(oracle\)/m);
  });

  it("reports strong share and cost only for traffic without labels, and refuses a plot", async () => {
    const traffic = writeData("traffic.jsonl", false);
    const report = await cli(
      "eval",
      "--data",
      traffic,
      "--model",
      model,
      "--strategy",
      "learned",
      "--json",
    );
    expect(JSON.parse(report.out)).toMatchObject({
      labelled: false,
      weak_quality: null,
      strategies: [{ name: "learned", strong_share_at_95: null }],
    });
    expect(
      await cli("eval", "--data", traffic, "--model", model, "--plot", join(dir, "p.svg")),
    ).toMatchObject({ code: 2, err: expect.stringContaining("--plot needs labelled data") });
  });

  it("names unknown strategies and unreadable models", async () => {
    expect(await cli("eval", "--data", data, "--strategy", "magic")).toMatchObject({
      code: 2,
      err: expect.stringContaining('unknown strategy "magic"'),
    });
    expect(await cli("eval", "--data", data, "--strategy", "rules:x.json")).toMatchObject({
      code: 2,
      err: expect.stringContaining("only learned and cascade read a model file"),
    });
    expect(
      await cli("eval", "--data", data, "--strategy", "learned", "--model", join(dir, "nope.json")),
    ).toMatchObject({ code: 1, err: expect.stringContaining("cannot read the router model") });
    expect(
      await cli("eval", "--data", data, "--strategy", "cascade", "--model", model),
    ).toMatchObject({
      code: 1,
      err: expect.stringContaining("has none: train it with handoff router train --answers"),
    });
  });
});

describe("handoff router calibrate", () => {
  it("writes the threshold for a strong share into the config, keeping the rest of the file", async () => {
    const config = join(dir, "handoff.yaml");
    const text = `# my deployment\ntiers:\n  light: [{ provider: sim, model: a }] # the cheap one\n  mid: [{ provider: sim, model: b }]\n  heavy: [{ provider: sim, model: c }]\nrouting:\n  strategy: learned\n  model: ${model}\n`;
    writeFileSync(config, text);
    const { code, out } = await cli(
      "calibrate",
      "--strong-share",
      "0.25",
      "--data",
      data,
      "--config",
      config,
    );
    expect(code).toBe(0);
    const written = readFileSync(config, "utf8");
    expect(written).toContain("# my deployment");
    expect(written).toContain("# the cheap one");
    const threshold = Number(/threshold: ([\d.]+)/.exec(written)?.[1]);
    expect(threshold).toBeGreaterThan(0);
    // Ties move together; the realized share is the step nearest the one asked for.
    const realized = Number(/sends ([\d.]+)%/.exec(out)?.[1]) / 100;
    expect(Math.abs(realized - 0.25)).toBeLessThan(0.2);
    expect(out).toMatch(
      /^routing\.strategy: learned, routing\.threshold: [\d.]+ in .*: sends [\d.]+% of 80 prompts to the heavy tier, quality [\d.]+% \(always-strong [\d.]+%\)$/,
    );
  });

  it("edits JSON configs too, and refuses a share outside [0, 1]", async () => {
    const updated = setRouting('{"tiers": {}, "routing": {"strategy": "rules"}}', "c.json", {
      strategy: "learned",
      threshold: 0.3,
    });
    expect(JSON.parse(updated)).toEqual({
      tiers: {},
      routing: { strategy: "learned", threshold: 0.3 },
    });
    expect(
      await cli("calibrate", "--strong-share", "1.5", "--data", data, "--config", "x.yaml"),
    ).toMatchObject({
      code: 2,
      err: expect.stringContaining("--strong-share must be a share between 0 and 1"),
    });
  });
});

describe("handoff router split", () => {
  it("holds out whole domains, the same way every time", async () => {
    const out1 = join(dir, "split1");
    const out2 = join(dir, "split2");
    for (const out of [out1, out2]) {
      const { mkdirSync } = await import("node:fs");
      mkdirSync(out, { recursive: true });
      expect((await cli("split", "--data", data, "--out-dir", out, "--domains", "2")).code).toBe(0);
    }
    expect(readFileSync(join(out1, "heldout.jsonl"), "utf8")).toBe(
      readFileSync(join(out2, "heldout.jsonl"), "utf8"),
    );
    const held = readFileSync(join(out1, "heldout.jsonl"), "utf8").trim().split("\n");
    expect(held).toHaveLength(20);
  });
});

describe("handoff jobs export", () => {
  it("reads --since as an ISO time or a duration back from now", () => {
    const now = new Date("2026-12-01T12:00:00Z");
    expect(parseSince("6h", now).toISOString()).toBe("2026-12-01T06:00:00.000Z");
    expect(parseSince("2026-11-30T00:00:00Z", now).toISOString()).toBe("2026-11-30T00:00:00.000Z");
    expect(() => parseSince("yesterday", now)).toThrow(
      /--since must be an ISO time .* got "yesterday"/,
    );
  });

  it("writes a replay row only for jobs that kept their input", () => {
    const base = {
      id: "job_00000001",
      status: "succeeded" as const,
      created_at: "2026-12-01T00:00:00.000Z",
      updated_at: "2026-12-01T00:00:01.000Z",
      hops: [],
      usage: [],
      cost_usd: 0,
      cost_by_stage: {},
    };
    expect(exportRow(base)).toBeUndefined();
    const row = exportRow({
      ...base,
      input: { model: "handoff", messages: [{ role: "user", content: "hi" }], tools: [] },
    });
    expect(row).toMatchObject({
      id: "job_00000001",
      source: "traffic",
      messages: [{ role: "user", content: "hi" }],
    });
  });
});

describe("errors a person reads", () => {
  const CANARY = "sk-canary-cli-8d1e2f3a";
  const broken = join(dir, "broken.yaml");
  writeFileSync(broken, `tiers:\n  light: [{ provider: sim, model: ${CANARY}\n`);

  it("prints a config error as one line, code and message, without a stack or the file's text", async () => {
    vi.stubEnv("LOG_LEVEL", "info");
    try {
      const result = await cli("score", "--data", data, "--config", broken);
      expect(result.code).toBe(1);
      expect(result.err).toMatch(
        new RegExp(`^HANDOFF_ERR_CONFIG: ${broken}: line \\d+, column \\d+: not valid YAML: `),
      );
      expect(result.err.split("\n")).toHaveLength(1);
      expect(result.err).not.toMatch(/^\s+at /m);
      expect(result.err).not.toContain(CANARY);
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it("adds the stack at LOG_LEVEL=debug, still without the file's text", async () => {
    vi.stubEnv("LOG_LEVEL", "debug");
    try {
      const result = await cli("score", "--data", data, "--config", broken);
      expect(result.code).toBe(1);
      expect(result.err).toContain("HANDOFF_ERR_CONFIG");
      expect(result.err).toMatch(/^\s+at /m);
      expect(result.err).not.toContain(CANARY);
    } finally {
      vi.unstubAllEnvs();
    }
  });
});
