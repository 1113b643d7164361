import { readFile, writeFile } from "node:fs/promises";
import { extname } from "node:path";
import { parseArgs } from "node:util";
import { type HandoffConfig, loadConfig, parseConfig } from "@handoff/config";
import { HandoffError } from "@handoff/contracts";
import { estimateInputTokens, estimateTokens, jsonRequest, ModelRouter } from "@handoff/providers";
import {
  type AnswerRow,
  AnswerRow as AnswerRowSchema,
  answerOf,
  createStrategy,
  DEFAULT_MODEL_PATH,
  type EvalReport,
  type EvalRow,
  evaluateStrategies,
  FEATURE_RECIPES,
  type FeatureRecipe,
  isLabelled,
  LlmStrategy,
  labelsOf,
  loadModel,
  parseJsonl,
  type RouterModel,
  RoutingRow,
  type RoutingStrategy,
  renderPlotSvg,
  routingText,
  rowInput,
  type ScoredStrategy,
  STRATEGY_NAMES,
  type StrategyName,
  saveModel,
  seenInTraining,
  sha256,
  splitRows,
  TRAIN_DEFAULTS,
  thresholdForShare,
  trainRouter,
} from "@handoff/routing";
import { formatError, isExpectedError, registerConfigSecrets } from "@handoff/telemetry";
import { parseDocument } from "yaml";
import { type Io, progressBar } from "./progress.js";

/**
 * `handoff router train | score | eval | calibrate | split`: the routing library from the command
 * line, with no mesh running. Data goes to stdout (one JSON object a line, or the report), progress
 * and notes to stderr.
 */

export const ROUTER_USAGE = `handoff router: train, score, evaluate and calibrate routing strategies, without a running mesh

  handoff router train --data <jsonl> [--answers <jsonl>] --out <model.json>
        [--seed 1] [--folds 5] [--l2 1] [--hash-bits 18] [--features ngram+kind|ngram+shape|ngram]
  handoff router score --data <jsonl> [--answers <jsonl>] [--strategy <name>] [--model <file>] [--config <file>]
  handoff router eval  --data <jsonl> [--answers <jsonl>] [--strategy <a,b,...>] [--model <file>] [--config <file>]
        [--json] [--plot <file.svg>] [--output-tokens 256] [--concurrency 4 (llm calls at once)]
  handoff router calibrate --strong-share <0..1> --data <jsonl> --config <file> [--answers <jsonl>]
        [--strategy <name>] [--model <file>]
  handoff router split --data <jsonl> --out-dir <dir> [--domains 10] [--row-share 0.5] [--seed 20261201]

strategies: ${STRATEGY_NAMES.join(", ")} (llm calls the config's light tier for every prompt);
  learned:<model.json> or cascade:<model.json> evaluates another model file next to the default
data: one JSON object a line: {"id", "prompt" or "messages", "weak_correct", "strong_correct", ...}
answers: {"id", "weak_response"}: the light model's answers, read by the cascade's verifier
`;

class UsageError extends Error {}

const OPTIONS = {
  data: { type: "string", multiple: true },
  answers: { type: "string" },
  out: { type: "string" },
  "out-dir": { type: "string" },
  strategy: { type: "string" },
  model: { type: "string" },
  config: { type: "string" },
  json: { type: "boolean", default: false },
  plot: { type: "string" },
  "output-tokens": { type: "string" },
  "strong-share": { type: "string" },
  seed: { type: "string" },
  folds: { type: "string" },
  l2: { type: "string" },
  "hash-bits": { type: "string" },
  features: { type: "string" },
  domains: { type: "string" },
  "row-share": { type: "string" },
  concurrency: { type: "string" },
  help: { type: "boolean", short: "h", default: false },
} as const;

type Values = ReturnType<
  typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>
>["values"];

function number(
  values: Values,
  name: keyof Values,
  fallback: number,
  check: (n: number) => boolean,
  what: string,
): number {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (typeof raw !== "string" || raw.trim() === "" || !Number.isFinite(value) || !check(value)) {
    throw new UsageError(`--${name} must be ${what}, got "${String(raw)}"`);
  }
  return value;
}

function required(values: Values, name: "out" | "out-dir" | "config"): string {
  const value = values[name];
  if (!value) throw new UsageError(`--${name} is required`);
  return value;
}

/** A strategy to score with: its kind, and for learned and cascade, an optional model file. */
interface StrategySpec {
  kind: StrategyName;
  model?: string;
  /** How reports name it: the kind, or `kind:file` for another model. */
  label: string;
}

function strategySpecs(raw: string | undefined, fallback: StrategyName[]): StrategySpec[] {
  if (!raw) return fallback.map((kind) => ({ kind, label: kind }));
  return raw
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((item) => {
      const at = item.indexOf(":");
      const kind = at === -1 ? item : item.slice(0, at);
      const model = at === -1 ? undefined : item.slice(at + 1);
      if (!(STRATEGY_NAMES as readonly string[]).includes(kind)) {
        throw new UsageError(
          `unknown strategy "${kind}"; the strategies are ${STRATEGY_NAMES.join(", ")}`,
        );
      }
      if (model !== undefined && kind !== "learned" && kind !== "cascade") {
        throw new UsageError(
          `only learned and cascade read a model file; "${item}" names one for ${kind}`,
        );
      }
      if (model === "") throw new UsageError(`"${item}" names no model file after the colon`);
      return { kind: kind as StrategyName, ...(model ? { model } : {}), label: item };
    });
}

async function readText(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    throw new UsageError(`cannot read the ${what} ${path}: ${(error as Error).message}`);
  }
}

interface Inputs {
  rows: RoutingRow[];
  /** The files, as given, for messages. */
  source: string;
  dataText: string;
  answers: Map<string, AnswerRow> | undefined;
  answersText: string | undefined;
}

async function readInputs(values: Values): Promise<Inputs> {
  const paths = values.data ?? [];
  if (paths.length === 0) throw new UsageError("--data is required");
  const texts: string[] = [];
  const rows: RoutingRow[] = [];
  for (const path of paths) {
    const text = await readText(path, "data file");
    texts.push(text);
    rows.push(...parseJsonl(text, RoutingRow, path));
  }
  const source = paths.join(" + ");
  const ids = new Set<string>();
  for (const row of rows) {
    if (ids.has(row.id))
      throw new UsageError(`id "${row.id}" appears in more than one of ${source}`);
    ids.add(row.id);
  }
  let answers: Map<string, AnswerRow> | undefined;
  let answersText: string | undefined;
  if (values.answers) {
    answersText = await readText(values.answers, "answers file");
    const list = parseJsonl(answersText, AnswerRowSchema, values.answers);
    answers = new Map(list.map((a) => [a.id, a]));
    const matched = list.filter((a) => ids.has(a.id)).length;
    if (matched === 0) {
      throw new UsageError(
        `no id of ${values.answers} matches a row of ${source}: they must describe the same prompts`,
      );
    }
  }
  return { rows, source, dataText: texts.join(""), answers, answersText };
}

async function configFrom(values: Values): Promise<{ config: HandoffConfig; source: string }> {
  const loaded = values.config
    ? {
        config: parseConfig(await readText(values.config, "config file"), values.config),
        source: values.config,
      }
    : await loadConfig();
  // The llm strategy calls providers: their errors are scrubbed of the keys the config names.
  registerConfigSecrets(loaded.config);
  return loaded;
}

/** Runs `work` over items with at most `limit` at a time, in order of the results. */
async function mapLimited<T, R>(
  items: readonly T[],
  limit: number,
  work: (item: T, i: number) => Promise<R>,
  tick: () => void,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) {
      out[i] = await work(items[i] as T, i);
      tick();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

interface Scored {
  name: string;
  kind: StrategyName;
  scores: Float64Array;
  threshold: number;
  /** Prompts of the data the strategy's model was trained on. */
  seen: number;
}

async function scoreAll(
  specs: StrategySpec[],
  inputs: Inputs,
  config: HandoffConfig,
  values: Values,
  io: Io,
): Promise<Scored[]> {
  const models = new Map<string, RouterModel>();
  const modelAt = async (path: string) => {
    const cached = models.get(path);
    if (cached) return cached;
    const model = await loadModel(path);
    models.set(path, model);
    return model;
  };
  const out: Scored[] = [];
  for (const spec of specs) {
    const name = spec.kind;
    const source = spec.model ?? values.model ?? config.routing.model ?? DEFAULT_MODEL_PATH;
    const loaded =
      name === "learned" || name === "cascade"
        ? { model: await modelAt(source), source }
        : undefined;
    let strategy: RoutingStrategy;
    const configured =
      config.routing.strategy === name && !spec.model ? config.routing.threshold : undefined;
    if (name === "llm") {
      const router = new ModelRouter(config);
      strategy = new LlmStrategy(async (request, signal) => {
        const call = await router.chat("light", jsonRequest(request), {
          stage: "classifier",
          ...(signal ? { signal } : {}),
        });
        return { text: call.result.message.content ?? "" };
      });
    } else {
      const deps = { model: loaded?.model, ...(loaded ? { modelSource: loaded.source } : {}) };
      strategy = createStrategy(name, { ...deps, threshold: configured });
    }
    const bar = progressBar(`scoring ${spec.label}`, io.progress);
    let done = 0;
    const total = inputs.rows.length;
    const concurrency =
      name === "llm"
        ? number(
            values,
            "concurrency",
            4,
            (n) => Number.isInteger(n) && n > 0,
            "a positive whole number",
          )
        : 1;
    let failures = 0;
    const scores = await mapLimited(
      inputs.rows,
      concurrency,
      async (row) => {
        const answer = name === "cascade" ? inputs.answers?.get(row.id) : undefined;
        try {
          return (
            await strategy.assess({
              input: rowInput(row),
              answer: answer ? answerOf(answer) : undefined,
            })
          ).score;
        } catch (error) {
          // An llm call that fails scores as undecided; the count says how many did.
          if (name !== "llm") throw error;
          failures++;
          return 0.5;
        }
      },
      () => {
        done++;
        if (done % 64 === 0 || done === total) bar.update(done, total);
      },
    );
    bar.done(
      failures > 0 ? `${failures} of ${total} llm calls failed and scored 0.5` : `${total} prompts`,
    );
    if (failures > 0) io.err(`warning: ${failures} llm routing calls failed`);
    const threshold = configured ?? strategy.defaultThreshold;
    const seen = loaded
      ? seenInTraining(
          loaded.model,
          inputs.rows.map((row) => routingText(rowInput(row))),
        )
      : 0;
    if (seen > 0) {
      io.err(
        `warning: ${seen} of ${inputs.rows.length} prompts of ${inputs.source} are in the training data of ${loaded?.source}: the ${spec.label} figures are not held-out`,
      );
    }
    out.push({ name: spec.label, kind: name, scores: Float64Array.from(scores), threshold, seen });
  }
  return out;
}

/** Dollars per prompt for the light tier and the heavy tier, at the config's first deployments' list prices. */
function costRows(inputs: Inputs, config: HandoffConfig, outputTokens: number): EvalRow[] {
  const light = config.tiers.light[0]?.price ?? { input_per_mtok: 0, output_per_mtok: 0 };
  const heavy = config.tiers.heavy[0]?.price ?? { input_per_mtok: 0, output_per_mtok: 0 };
  return inputs.rows.map((row) => {
    const input = estimateInputTokens(rowInput(row).messages);
    const answer = inputs.answers?.get(row.id);
    const weakOut = answer ? estimateTokens(answer.weak_response) : outputTokens;
    return {
      id: row.id,
      labels: isLabelled(row) ? { weak: row.weak_correct, strong: row.strong_correct } : undefined,
      weakUsd: (input * light.input_per_mtok + weakOut * light.output_per_mtok) / 1e6,
      strongUsd: (input * heavy.input_per_mtok + outputTokens * heavy.output_per_mtok) / 1e6,
    };
  });
}

const pct = (v: number | null | undefined) =>
  v === null || v === undefined ? "-" : `${(v * 100).toFixed(1)}%`;
const usd = (v: number | null | undefined) =>
  v === null || v === undefined ? "-" : `$${v.toFixed(v < 1 ? 4 : 2)}`;
const dec = (v: number | null | undefined) => (v === null || v === undefined ? "-" : v.toFixed(3));

export function formatReport(report: EvalReport, source: string): string {
  const lines: string[] = [];
  lines.push(
    `${source}: ${report.rows} prompts${report.labelled ? "" : " (no labels: strong share and cost only)"}`,
  );
  if (report.labelled) {
    lines.push(
      `quality: always-weak ${pct(report.weak_quality)}, always-strong ${pct(report.strong_quality)}, oracle ${pct(report.oracle_quality)}; target (95% of always-strong) ${pct(report.target_quality)}`,
    );
  }
  lines.push(
    `cost per 1,000 requests: always-weak ${usd(report.usd_per_1k.always_weak)}, always-strong ${usd(report.usd_per_1k.always_strong)}`,
  );
  lines.push("");
  const header = [
    "strategy",
    "strong@95",
    "q@30%",
    "q@50%",
    "APGR",
    "$/1k@95",
    "threshold",
    "strong",
    "quality",
    "$/1k",
  ];
  const table = report.strategies.map((s) => [
    s.kind === "baseline" ? `(${s.name})` : s.name,
    pct(s.strong_share_at_95),
    pct(s.quality_at_30),
    pct(s.quality_at_50),
    dec(s.apgr),
    usd(s.usd_per_1k_at_95),
    s.at_threshold && s.kind === "strategy" ? s.at_threshold.threshold.toFixed(3) : "-",
    pct(s.at_threshold?.strong_share),
    pct(s.at_threshold?.quality),
    usd(s.at_threshold?.usd_per_1k),
  ]);
  const widths = header.map((h, i) =>
    Math.max(h.length, ...table.map((row) => (row[i] as string).length)),
  );
  const render = (cells: string[]) =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number)))
      .join("  ");
  lines.push(render(header));
  for (const row of table) lines.push(render(row));
  lines.push("");
  lines.push(
    "strong@95: smallest share of strong calls reaching 95% of always-strong quality; q@N%: quality at N% strong calls;",
  );
  lines.push(
    "threshold/strong/quality/$/1k: where each strategy's threshold (the config's or the model's default) puts it.",
  );
  return lines.join("\n");
}

function featuresOption(raw: string | undefined): FeatureRecipe {
  if (raw === undefined) return TRAIN_DEFAULTS.features;
  const recipe = FEATURE_RECIPES.find((r) => r === raw);
  if (recipe) return recipe;
  throw new UsageError(
    `--features is ngram+kind (the default), ngram+shape or ngram (n-grams alone, the plain baseline), got "${raw}"`,
  );
}

async function train(values: Values, io: Io): Promise<number> {
  const out = required(values, "out");
  const inputs = await readInputs(values);
  labelsOf(inputs.rows, inputs.source);
  if (!inputs.rows.every(isLabelled))
    throw new UsageError(
      `${inputs.source} has no labels: training needs weak_correct and strong_correct`,
    );
  const options = {
    seed: number(values, "seed", TRAIN_DEFAULTS.seed, Number.isInteger, "a whole number"),
    folds: number(
      values,
      "folds",
      TRAIN_DEFAULTS.folds,
      (n) => Number.isInteger(n) && n >= 2 && n <= 20,
      "a whole number from 2 to 20",
    ),
    l2: number(values, "l2", TRAIN_DEFAULTS.l2, (n) => n > 0, "a positive number"),
    hashBits: number(
      values,
      "hash-bits",
      TRAIN_DEFAULTS.hashBits,
      (n) => Number.isInteger(n) && n >= 8 && n <= 22,
      "a whole number from 8 to 22",
    ),
    features: featuresOption(values.features),
  };
  const bar = progressBar("training", io.progress);
  const started = Date.now();
  const trained = trainRouter(inputs.rows, inputs.answers, {
    ...options,
    dataDigest: sha256(inputs.dataText),
    ...(inputs.answersText ? { answersDigest: sha256(inputs.answersText) } : {}),
    onProgress: (p) => bar.update(p.done, p.total, p.phase),
  });
  bar.done();
  await saveModel(out, trained.model.file);
  const cv = trained.crossValidation;
  io.err(
    `wrote ${out}: ${inputs.rows.length} prompts, seed ${options.seed}, ${options.folds} folds, ${((Date.now() - started) / 1000).toFixed(1)}s`,
  );
  io.err(
    `learned: threshold ${trained.model.learnedThreshold.toFixed(3)}; cross-validated strong share at 95% ${pct(cv.learned_strong_share_at_95)}, APGR ${dec(cv.learned_apgr)}`,
  );
  if (trained.model.verifier) {
    io.err(
      `cascade verifier: ${trained.model.verifier.rows} answers; threshold ${trained.model.verifier.threshold.toFixed(3)}; cross-validated strong share at 95% ${pct(cv.cascade_strong_share_at_95)}, APGR ${dec(cv.cascade_apgr)}`,
    );
  }
  return 0;
}

async function score(values: Values, io: Io): Promise<number> {
  const inputs = await readInputs(values);
  const { config } = await configFrom(values);
  const specs = strategySpecs(values.strategy, [config.routing.strategy]);
  if (specs.length !== 1) throw new UsageError("score takes one --strategy");
  const [scored] = await scoreAll(specs, inputs, config, values, io);
  const scores = scored?.scores ?? new Float64Array();
  inputs.rows.forEach((row, i) => {
    io.out(JSON.stringify({ id: row.id, score: scores[i] }));
  });
  return 0;
}

async function evaluate(values: Values, io: Io): Promise<number> {
  const inputs = await readInputs(values);
  const labelled = labelsOf(inputs.rows, inputs.source);
  const { config } = await configFrom(values);
  const fallback: StrategyName[] = ["rules", "learned"];
  if (inputs.answers) fallback.push("cascade");
  const specs = strategySpecs(values.strategy, fallback);
  const labels = specs.map((s) => s.label);
  const repeated = labels.find((label, i) => labels.indexOf(label) !== i);
  if (repeated) throw new UsageError(`--strategy names ${repeated} twice`);
  const scored = await scoreAll(specs, inputs, config, values, io);
  const rows = costRows(
    inputs,
    config,
    number(
      values,
      "output-tokens",
      256,
      (n) => Number.isInteger(n) && n > 0,
      "a positive whole number",
    ),
  );
  const strategies: ScoredStrategy[] = scored.map((s) => ({
    name: s.name,
    scores: s.scores,
    threshold: s.threshold,
    paysLightFirst: s.kind === "cascade",
  }));
  const report = evaluateStrategies(rows, strategies);
  const { curves, ...rest } = report;
  const figures = {
    ...rest,
    /** Per strategy with a model: how many of the prompts that model was trained on. */
    seen_in_training: Object.fromEntries(
      scored
        .filter((s) => s.kind === "learned" || s.kind === "cascade")
        .map((s) => [s.name, s.seen]),
    ),
  };
  if (values.plot) {
    if (!labelled)
      throw new UsageError(
        "--plot needs labelled data: without weak_correct/strong_correct there is no quality to draw",
      );
    const target = figures.target_quality as number;
    const svg = renderPlotSvg({
      title: `Routing quality against strong calls: ${inputs.source} (${rows.length.toLocaleString("en-US")} prompts)`,
      series: [...curves.entries()].map(([name, curve]) => {
        const fig = figures.strategies.find((s) => s.name === name);
        return {
          name,
          kind: fig?.kind ?? ("baseline" as const),
          points: curve.points.map((p) => [p.share, p.quality] as const),
          ...(fig?.strong_share_at_95 != null ? { mark: fig.strong_share_at_95 } : {}),
        };
      }),
      lines: [
        {
          label: `always-weak ${pct(figures.weak_quality)}`,
          y: figures.weak_quality as number,
          style: "weak",
        },
        {
          label: `always-strong ${pct(figures.strong_quality)}`,
          y: figures.strong_quality as number,
          style: "strong",
        },
        { label: "95% of always-strong", y: target, style: "target" },
      ],
    });
    await writeFile(values.plot, svg);
    io.err(`wrote ${values.plot}`);
  }
  io.out(values.json ? JSON.stringify(figures, null, 2) : formatReport(figures, inputs.source));
  return 0;
}

async function calibrate(values: Values, io: Io): Promise<number> {
  const share = number(
    values,
    "strong-share",
    Number.NaN,
    (n) => n >= 0 && n <= 1,
    "a share between 0 and 1, e.g. 0.3",
  );
  if (Number.isNaN(share))
    throw new UsageError("--strong-share is required, e.g. --strong-share 0.3");
  const path = required(values, "config");
  if (values.model) {
    throw new UsageError(
      "calibrate scores with the config's own routing.model (or the shipped model); set routing.model there instead of --model",
    );
  }
  const text = await readText(path, "config file");
  const config = parseConfig(text, path);
  const inputs = await readInputs(values);
  const specs = strategySpecs(values.strategy, [config.routing.strategy]);
  const spec = specs[0] as StrategySpec;
  if (specs.length !== 1 || spec.model) {
    throw new UsageError(
      "calibrate takes one --strategy, without a model file (use --model, or routing.model in the config)",
    );
  }
  const strategy = spec.kind;
  const [scored] = await scoreAll(specs, inputs, config, values, io);
  const scores = (scored as Scored).scores;
  // Written at full precision: rounding could move it past the scores it was chosen by.
  const threshold = thresholdForShare(scores, share);
  const realized = scores.filter((s) => s >= threshold).length / scores.length;

  const updated = setRouting(text, path, { strategy, threshold });
  // What is written must still be a valid config: parse it before replacing the file.
  parseConfig(updated, path);
  await writeFile(path, updated);
  let note = "";
  if (inputs.rows.every(isLabelled)) {
    const report = evaluateStrategies(costRows(inputs, config, 256), [
      { name: strategy, scores, threshold, paysLightFirst: strategy === "cascade" },
    ]);
    note = `, quality ${pct(report.strategies[0]?.at_threshold?.quality)} (always-strong ${pct(report.strong_quality)})`;
  }
  io.out(
    `routing.strategy: ${strategy}, routing.threshold: ${threshold} in ${path}: sends ${pct(realized)} of ${inputs.rows.length} prompts to the heavy tier${note}`,
  );
  return 0;
}

/** Writes routing.strategy and routing.threshold into config text, keeping everything else (comments included). */
export function setRouting(
  text: string,
  path: string,
  routing: { strategy: StrategyName; threshold: number },
): string {
  if (extname(path).toLowerCase() === ".json") {
    const value = JSON.parse(text) as Record<string, unknown>;
    const section = (value.routing ?? {}) as Record<string, unknown>;
    value.routing = { ...section, strategy: routing.strategy, threshold: routing.threshold };
    return `${JSON.stringify(value, null, 2)}\n`;
  }
  const doc = parseDocument(text);
  doc.setIn(["routing", "strategy"], routing.strategy);
  doc.setIn(["routing", "threshold"], routing.threshold);
  return doc.toString();
}

async function split(values: Values, io: Io): Promise<number> {
  const dir = required(values, "out-dir");
  const [path, more] = values.data ?? [];
  if (!path) throw new UsageError("--data is required");
  if (more) throw new UsageError("split reads one --data file");
  const text = await readText(path, "data file");
  const rows = parseJsonl(text, RoutingRow, path);
  const lines = new Map(
    text
      .split("\n")
      .filter((l) => l.trim())
      .map((line) => [String((JSON.parse(line) as { id: unknown }).id), line.trim()]),
  );
  const result = splitRows(rows, {
    domains: number(values, "domains", 10, (n) => Number.isInteger(n) && n >= 0, "a whole number"),
    rowShare: number(values, "row-share", 0.5, (n) => n >= 0 && n <= 1, "a share between 0 and 1"),
    seed: number(values, "seed", 20261201, Number.isInteger, "a whole number"),
  });
  const write = (name: string, part: RoutingRow[]) =>
    writeFile(`${dir}/${name}`, `${part.map((r) => lines.get(r.id)).join("\n")}\n`);
  await write("train.jsonl", result.train);
  await write("heldout.jsonl", result.heldOut);
  io.out(
    `train.jsonl: ${result.train.length} prompts; heldout.jsonl: ${result.heldOut.length} prompts`,
  );
  io.out(`held-out domains: ${result.heldOutDomains.join(", ")}`);
  return 0;
}

export async function routerMain(argv: string[], io: Io): Promise<number> {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    io.err(`${(error as Error).message}\n\n${ROUTER_USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const [verb] = positionals;
  if (values.help || verb === undefined) {
    io.out(ROUTER_USAGE);
    return values.help ? 0 : 2;
  }
  try {
    switch (verb) {
      case "train":
        return await train(values, io);
      case "score":
        return await score(values, io);
      case "eval":
        return await evaluate(values, io);
      case "calibrate":
        return await calibrate(values, io);
      case "split":
        return await split(values, io);
      default:
        io.err(`unknown router command "${verb}"\n\n${ROUTER_USAGE}`);
        return 2;
    }
  } catch (error) {
    if (error instanceof UsageError) {
      io.err(error.message);
      return 2;
    }
    if (error instanceof HandoffError && isExpectedError(error)) {
      io.err(formatError(error));
      return 1;
    }
    throw error;
  }
}
