/**
 * Prints the fault suite's last figures (`test/faults/.results/*.json`) as the Markdown tables of
 * docs/reliability.md: `npm run test:faults:report` after `npm run test:faults`.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const dir = fileURLToPath(new URL("./.results/", import.meta.url));

interface Result {
  scenario: string;
  recorded_at: string;
  title: string;
  passed: boolean;
  wall_ms: number;
  environment: Record<string, string | undefined>;
  jobs?: {
    accepted: number;
    succeeded: number;
    lost: number;
    wrong: number;
    duplicate_executions: number;
    reruns_after_sigkill: number;
    retried_submissions: number;
  };
  timings?: Record<string, number | null>;
  affected_timings?: Record<string, number | null>;
  [extra: string]: unknown;
}

let files: string[];
try {
  files = readdirSync(dir).filter((f) => f.endsWith(".json"));
} catch {
  files = [];
}
if (files.length === 0) {
  process.stderr.write("no results: run `npm run test:faults` first\n");
  process.exit(1);
}
const results = files
  .map((f) => JSON.parse(readFileSync(join(dir, f), "utf8")) as Result)
  .sort((a, b) => a.scenario.localeCompare(b.scenario));

const seconds = (ms: number | null | undefined) =>
  ms === null || ms === undefined ? "–" : `${(ms / 1000).toFixed(1)} s`;

/** The recovery figures of a scenario: after each named mark, first and last completion. */
function recovery(r: Result): string {
  const t = r.affected_timings ?? r.timings;
  if (!t) return "";
  const marks = Object.keys(t)
    .filter((k) => k.endsWith("_at_ms") && k !== "longest_gap_starts_at_ms")
    .map((k) => k.slice(0, -"_at_ms".length));
  const parts = marks.map(
    (m) =>
      `${m.replaceAll("_", " ")}: first ${seconds(t[`first_completion_after_${m}_ms`])}, all ${seconds(t[`all_completed_after_${m}_ms`])}`,
  );
  parts.push(`longest gap ${seconds(t.longest_completion_gap_ms)}`);
  return parts.join("; ");
}

const env = results[0]?.environment ?? {};
const out: string[] = [];
out.push(
  `Measured ${results[0]?.recorded_at.slice(0, 10)} with ${env.nats_server}, Node ${env.node}, ${env.cpus} CPUs; jobs per scenario ${env.jobs}, burst ${env.burst}.`,
  "",
  "| scenario | passed | accepted | answered | lost | duplicate executions | re-runs of calls cut by SIGKILL | retried submissions | wall |",
  "|---|---|---|---|---|---|---|---|---|",
);
for (const r of results) {
  const j = r.jobs;
  out.push(
    `| ${r.scenario} | ${r.passed ? "yes" : "**no**"} | ${j?.accepted ?? "–"} | ${j?.succeeded ?? "–"} | ${j?.lost ?? "–"} | ${j?.duplicate_executions ?? "–"} | ${j?.reruns_after_sigkill ?? "–"} | ${j?.retried_submissions ?? "–"} | ${seconds(r.wall_ms)} |`,
  );
}
out.push(
  "",
  "| scenario | what was done | recovery (ms from the mark to the first and last answer) |",
);
out.push("|---|---|---|");
for (const r of results) out.push(`| ${r.scenario} | ${r.title} | ${recovery(r)} |`);
process.stdout.write(`${out.join("\n")}\n`);
