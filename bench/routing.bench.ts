/**
 * `npm run bench:routing`: how long one routing decision takes in-process, for each strategy that
 * decides without a model call, next to the `rules` strategy measured in the same run as the
 * baseline. Inputs are the held-out prompts shipped in data/routing (real lengths: 50 to 5,000
 * characters), cycled; the cascade's verifier reads the weak model's real answers where there are
 * some. Each call is timed on its own with a monotonic clock; a warm-up runs first. Prints a table
 * and writes bench/routing.md.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import {
  AnswerRow,
  answerOf,
  CascadeStrategy,
  LearnedStrategy,
  loadModel,
  parseJsonl,
  type RouteQuery,
  RoutingRow,
  rowInput,
  rulesScore,
} from "@handoff/routing";
import { envInt, fixed, formatTable, percentile, ratio } from "./lib.ts";

const root = new URL("..", import.meta.url);
const N = envInt(process.env, "BENCH_ROUTING_N", 20_000, 1);
const WARMUP = envInt(process.env, "BENCH_ROUTING_WARMUP", 5_000, 0);

const loadStarted = performance.now();
const model = await loadModel();
const loadMs = performance.now() - loadStarted;
const rows = parseJsonl(
  readFileSync(new URL("data/routing/heldout.jsonl", root), "utf8"),
  RoutingRow,
  "heldout.jsonl",
);
const answers = new Map(
  parseJsonl(
    readFileSync(new URL("data/routing/gsm8k-weak-answers.jsonl", root), "utf8"),
    AnswerRow,
    "answers",
  ).map((a) => [a.id, a]),
);
const queries: RouteQuery[] = rows.map((row) => {
  const answer = answers.get(row.id);
  return { input: rowInput(row), ...(answer ? { answer: answerOf(answer) } : {}) };
});
const withAnswers = queries.filter((q) => q.answer);

const learned = new LearnedStrategy(model);
const cascade = new CascadeStrategy(model);

interface Case {
  name: string;
  what: string;
  inputs: RouteQuery[];
  run: (q: RouteQuery) => number;
}

const cases: Case[] = [
  {
    name: "rules (baseline)",
    what: "keyword and shape signals",
    inputs: queries,
    run: (q) => rulesScore(q.input).score,
  },
  {
    name: "learned",
    what: "domain check, kind-of-question features + hashed n-grams, one logistic model, calibrated",
    inputs: queries,
    run: (q) => learned.assessNow(q.input).score,
  },
  {
    name: "cascade verdict",
    what: "pre-route + verifier on a weak answer (GSM8K)",
    inputs: withAnswers,
    run: (q) => cascade.verdictLogit(q),
  },
];

let sink = 0;
function measure(c: Case): number[] {
  for (let i = 0; i < WARMUP; i++) sink += c.run(c.inputs[i % c.inputs.length] as RouteQuery);
  const out = new Array<number>(N);
  for (let i = 0; i < N; i++) {
    const q = c.inputs[i % c.inputs.length] as RouteQuery;
    const start = process.hrtime.bigint();
    sink += c.run(q);
    out[i] = Number(process.hrtime.bigint() - start) / 1e6;
  }
  return out;
}

const results = cases.map((c) => {
  process.stderr.write(`measuring ${c.name}: ${N} calls...\n`);
  const ms = measure(c);
  return {
    c,
    p50: percentile(ms, 50),
    p99: percentile(ms, 99),
    p999: percentile(ms, 99.9),
    max: Math.max(...ms),
  };
});
const base = results[0] as (typeof results)[number];
const header = ["strategy", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "p99 ÷ rules p99"];
const table = results.map((r) => [
  r.c.name,
  fixed(r.p50, 4),
  fixed(r.p99, 4),
  fixed(r.p999, 4),
  fixed(r.max, 3),
  fixed(ratio(r.p99, base.p99), 2),
]);
const text = formatTable(header, table);
const machine = `${cpus().length} × ${cpus()[0]?.model ?? "unknown CPU"}, Node ${process.version}`;
console.log(text);
console.log(
  `model load: ${fixed(loadMs, 1)} ms; ${N} calls each after ${WARMUP} warm-up; ${machine}; (checksum ${sink.toFixed(0)})`,
);

const learnedP99 = results[1]?.p99 ?? Number.NaN;
writeFileSync(
  new URL("routing.md", import.meta.url),
  `# Routing benchmark

\`npm run bench:routing\` times one routing decision in-process for the strategies that decide without
a model call, next to the \`rules\` strategy measured **in the same run** as the baseline. This file
is rewritten by every run; compare the ratios across machines, not the absolute numbers.

- Inputs: the ${rows.length.toLocaleString("en-US")} held-out prompts of \`data/routing/heldout.jsonl\`, cycled
  (${withAnswers.length} of them with the weak model's answer, for the cascade's verdict).
- ${N.toLocaleString("en-US")} calls a strategy after ${WARMUP.toLocaleString("en-US")} warm-up calls, each timed on its own
  (\`process.hrtime\`), summarised by nearest rank.
${cases.map((c) => `- **${c.name}**: ${c.what}.`).join("\n")}
- The learned strategy's model (\`libs/routing/models/router.json\`) loads in ${fixed(loadMs, 1)} ms, once, at start.

${text}

Target: the learned strategy's p99 under 1 ms in-process. This run: **${fixed(learnedP99, 4)} ms**
(${learnedP99 < 1 ? "met" : "NOT met"}).

Machine: ${machine}.
`,
);
