/**
 * Turns the rounds of `npm run bench:soak` into its verdicts, the bench/soak.md report and the
 * bench/soak.svg plot. Pure: everything it says comes from its arguments, so the unit tests can pin
 * the growth and verdict rules.
 *
 * Memory is in MB (10^6 bytes) throughout: the resident set size (VmRSS) of each process after the
 * round settled, and, where it could be read, the V8 heap in use right after a full garbage
 * collection (what a leak of JavaScript objects grows; RSS also moves with the allocator and with
 * when V8 last collected).
 */
import { fixed, formatTable, wrap } from "./lib.ts";
import type { MachineFacts } from "./proc.ts";

/** One process's memory after one round. */
export interface MemorySample {
  /** VmRSS, MB; NaN when it could not be read. */
  rssMb: number;
  /** V8 heap used right after a forced full GC, MB; undefined when not measured. */
  heapMb?: number | undefined;
  /** V8 heap committed (used or not) right after that GC, MB: most of the RSS above the heap used. */
  heapTotalMb?: number | undefined;
}

/** Memory read once, outside the rounds: before the load, or after the mesh stood idle. */
export interface SoakSnapshot {
  /** How long the mesh had been idle when it was read, ms. */
  idleMs: number;
  memory: Record<string, MemorySample>;
}

/** What one round did, and every process's memory once it settled. */
export interface SoakRound {
  /** 1-based. */
  round: number;
  /** Requests sent in this round. */
  requests: number;
  /** Requests sent since the start, this round included. */
  totalRequests: number;
  elapsedMs: number;
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  /** By process name. */
  memory: Record<string, MemorySample>;
}

/** When a series counts as steady: its growth is within `absMb` or within `relative` of its start. */
export interface SteadyRule {
  absMb: number;
  /** A fraction: 0.05 is 5%. */
  relative: number;
}

/** For RSS: its peak grew under 10 MB or under 5% from the first half of the rounds to the last. */
export const RSS_RULE: SteadyRule = { absMb: 10, relative: 0.05 };
/**
 * For the heap after GC over the last half of the rounds, when there is no idle reading: under 2 MB
 * or under 5%. (Under load the heap also holds whatever jobs in flight or not yet past their
 * deadline keep, which follows the request rate: the idle reading is the better test.)
 */
export const HEAP_RULE: SteadyRule = { absMb: 2, relative: 0.05 };
/**
 * For the heap after GC once the mesh stood idle, against the heap before the load: within 5 MB or
 * 10%. A leak of 50 bytes per request is 5 MB over 100,000 requests.
 */
export const IDLE_RULE: SteadyRule = { absMb: 5, relative: 0.1 };
/** The most RSS a service may hold after the load. */
export const SERVICE_RSS_LIMIT_MB = 200;

/** How a series moved between two rounds. */
export interface Growth {
  /** 1-based rounds compared. */
  from: number;
  to: number;
  startMb: number;
  endMb: number;
  deltaMb: number;
  /** deltaMb / startMb; NaN when the start is 0 or unknown. */
  relative: number;
  /** Requests sent after round `from` up to and including round `to`. */
  requests: number;
  /** deltaMb per 10,000 of those requests; NaN without requests. */
  mbPer10k: number;
}

export type Verdict = "steady" | "growing" | "n/a";

export interface ProcessVerdict {
  name: string;
  /** Round 1 is the warm-up: from round 2 (or round 1 when there is only one) to the last. */
  afterWarmup: Growth | undefined;
  /** From the end of the first half of the rounds to the end of the last. */
  lastHalf: Growth | undefined;
  /** The highest reading of the last half against the highest of the first: the verdict's base. */
  peaks: Growth | undefined;
  /**
   * {@link peaks} within {@link RSS_RULE}; or, when the peaks grew, steady all the same if the
   * process came back to its start once idle ({@link backWhenIdle}): what it let go, it did not keep.
   */
  verdict: Verdict;
  /**
   * The peaks grew, and the idle reading is within {@link RSS_RULE} of the start reading (one high
   * reading before a full GC, not a leak). Undefined when the peaks did not grow or either reading
   * is missing.
   */
  backWhenIdle: boolean | undefined;
  heapAfterWarmup: Growth | undefined;
  heapLastHalf: Growth | undefined;
  /**
   * Once idle against the start, within {@link IDLE_RULE}, when both were read; else the last half
   * of the rounds, within {@link HEAP_RULE}.
   */
  heapVerdict: Verdict;
  /** RSS after the last round, MB. */
  finalRssMb: number;
  /** Under {@link SERVICE_RSS_LIMIT_MB} after the last round; undefined for processes not checked. */
  underLimit: boolean | undefined;
  /** The same once the mesh stood idle after the load; undefined without that reading. */
  underLimitIdle: boolean | undefined;
  /** Heap after GC once idle, less the heap before the load: what the load left behind. */
  heapLeftMb: number | undefined;
}

export interface SoakReport {
  settings: {
    n: number;
    concurrency: number;
    rounds: number;
    settleMs: number;
    /** Requests sent before the start reading (not counted in the rounds). */
    warmup: number;
  };
  machine: MachineFacts;
  command: string;
  /** Process names in display order. */
  processes: string[];
  /** The processes held to {@link SERVICE_RSS_LIMIT_MB} (the services, not nats-server). */
  services: string[];
  rounds: SoakRound[];
  /** Before the first request. */
  start?: SoakSnapshot | undefined;
  /** After the last round, once the mesh stood idle past the jobs' deadlines. */
  idle?: SoakSnapshot | undefined;
  /** Extra `NODE_OPTIONS` the services ran with (SOAK_NODE_OPTIONS), if any. */
  nodeOptions?: string | undefined;
  /** How the heap was read, or why it was not (printed as is). */
  heapNote: string;
  startedAt: Date;
  finishedAt: Date;
  /** Warnings (pino level 40) the services logged during the run. */
  warnings: string[];
  /** Markdown for the "In-process maps" section (the audit), included verbatim. */
  audit?: string | undefined;
}

/** The 0-based index of the round the last half starts from: the end of the first half. */
export function lastHalfStart(rounds: number): number {
  return Math.max(0, Math.floor(rounds / 2) - 1);
}

/**
 * How `values` (one per round, MB) moved from round index `from` to `to` (0-based), with
 * `totals[i]` the requests sent up to round i. Undefined when either end is unknown.
 */
export function growth(
  values: readonly (number | undefined)[],
  totals: readonly number[],
  from: number,
  to: number,
): Growth | undefined {
  const start = values[from];
  const end = values[to];
  if (start === undefined || end === undefined || !Number.isFinite(start)) return undefined;
  if (!Number.isFinite(end) || to <= from) return undefined;
  const deltaMb = end - start;
  const requests = (totals[to] ?? 0) - (totals[from] ?? 0);
  return {
    from: from + 1,
    to: to + 1,
    startMb: start,
    endMb: end,
    deltaMb,
    relative: start > 0 ? deltaMb / start : Number.NaN,
    requests,
    mbPer10k: requests > 0 ? (deltaMb * 10_000) / requests : Number.NaN,
  };
}

/**
 * The rounds (1-based, inclusive) whose peaks {@link peakGrowth} compares: the first half after
 * the warm-up round (round 1 itself when nothing else is in the first half), and the last half.
 */
export function peakRanges(rounds: number): { first: [number, number]; last: [number, number] } {
  const half = lastHalfStart(rounds) + 1;
  return { first: [half >= 2 ? 2 : 1, half], last: [half + 1, rounds] };
}

/**
 * How the highest reading of the last half of the rounds compares with the highest of the first
 * half (after the warm-up). RSS read at one instant dips and peaks with when V8 last collected and
 * how much young generation it kept; a leak lifts every reading, the peaks too, while the dips of a
 * steady process do not count as growth. `from` and `to` are the rounds of the two peaks.
 */
export function peakGrowth(
  values: readonly (number | undefined)[],
  totals: readonly number[],
): Growth | undefined {
  if (values.length < 2) return undefined;
  const { first, last } = peakRanges(values.length);
  const peak = ([from, to]: [number, number]) => {
    let best: number | undefined;
    for (let i = from - 1; i <= to - 1; i++) {
      const value = values[i];
      if (value === undefined || !Number.isFinite(value)) continue;
      if (best === undefined || value > (values[best] as number)) best = i;
    }
    return best;
  };
  const a = peak(first);
  const b = peak(last);
  if (a === undefined || b === undefined) return undefined;
  const startMb = values[a] as number;
  const endMb = values[b] as number;
  const deltaMb = endMb - startMb;
  const requests = (totals[last[1] - 1] ?? 0) - (totals[first[1] - 1] ?? 0);
  return {
    from: a + 1,
    to: b + 1,
    startMb,
    endMb,
    deltaMb,
    relative: startMb > 0 ? deltaMb / startMb : Number.NaN,
    requests,
    mbPer10k: requests > 0 ? (deltaMb * 10_000) / requests : Number.NaN,
  };
}

const under = (rssMb: number) => Number.isFinite(rssMb) && rssMb < SERVICE_RSS_LIMIT_MB;

/** Steady when the growth is within the rule's absolute or relative allowance (shrinking is). */
export function judge(g: Growth | undefined, rule: SteadyRule): Verdict {
  return g === undefined ? "n/a" : judgeChange(g.startMb, g.deltaMb, rule);
}

/** {@link judge} for a change of `deltaMb` from `startMb`. */
export function judgeChange(startMb: number, deltaMb: number, rule: SteadyRule): Verdict {
  if (!Number.isFinite(deltaMb)) return "n/a";
  if (deltaMb < rule.absMb) return "steady";
  if (startMb > 0 && deltaMb / startMb < rule.relative) return "steady";
  return "growing";
}

/** Every process's growth and verdicts. */
export function verdicts(
  report: Pick<SoakReport, "processes" | "services" | "rounds" | "start" | "idle">,
) {
  const { rounds } = report;
  const totals = rounds.map((r) => r.totalRequests);
  const last = rounds.length - 1;
  const warm = rounds.length > 1 ? 1 : 0;
  const half = lastHalfStart(rounds.length);
  return report.processes.map((name): ProcessVerdict => {
    const rss = rounds.map((r) => r.memory[name]?.rssMb);
    const heap = rounds.map((r) => r.memory[name]?.heapMb);
    const lastHalf = growth(rss, totals, half, last);
    const peaks = peakGrowth(rss, totals);
    const heapLastHalf = growth(heap, totals, half, last);
    const finalRssMb = rss[last] ?? Number.NaN;
    const idleRss = report.idle?.memory[name]?.rssMb;
    const startHeap = report.start?.memory[name]?.heapMb;
    const idleHeap = report.idle?.memory[name]?.heapMb;
    const heapLeftMb =
      startHeap !== undefined && idleHeap !== undefined ? idleHeap - startHeap : undefined;
    const startRss = report.start?.memory[name]?.rssMb;
    const peakVerdict = judge(peaks, RSS_RULE);
    // A leak keeps what it took: idle, the process stays above where it started.
    const backWhenIdle =
      peakVerdict === "growing" && startRss !== undefined && idleRss !== undefined
        ? judgeChange(startRss, idleRss - startRss, RSS_RULE) === "steady"
        : undefined;
    return {
      name,
      afterWarmup: growth(rss, totals, warm, last),
      lastHalf,
      peaks,
      verdict: backWhenIdle ? "steady" : peakVerdict,
      backWhenIdle,
      heapAfterWarmup: growth(heap, totals, warm, last),
      heapLastHalf,
      heapVerdict:
        heapLeftMb !== undefined && startHeap !== undefined
          ? judgeChange(startHeap, heapLeftMb, IDLE_RULE)
          : judge(heapLastHalf, HEAP_RULE),
      finalRssMb,
      underLimit: report.services.includes(name) ? under(finalRssMb) : undefined,
      underLimitIdle:
        report.services.includes(name) && idleRss !== undefined ? under(idleRss) : undefined,
      heapLeftMb,
    };
  });
}

const mb = (value: number | undefined) =>
  value === undefined || !Number.isFinite(value) ? "n/a" : value.toFixed(1);

const signed = (value: number) =>
  Number.isFinite(value) ? `${value >= 0 ? "+" : ""}${value.toFixed(1)}` : "n/a";

const percent = (value: number) =>
  Number.isFinite(value) ? `${value >= 0 ? "+" : ""}${(value * 100).toFixed(1)}%` : "n/a";

/** `+3.2 MB (+2.5%)`, or n/a. */
export function formatGrowth(g: Growth | undefined): string {
  return g === undefined ? "n/a" : `${signed(g.deltaMb)} MB (${percent(g.relative)})`;
}

const per10k = (g: Growth | undefined) => (g === undefined ? "n/a" : signed(g.mbPer10k));

const ruleText = (rule: SteadyRule) =>
  `under ${rule.absMb} MB or under ${(rule.relative * 100).toFixed(0)}%`;

const hasHeap = (report: Pick<SoakReport, "rounds">) =>
  report.rounds.some((r) => Object.values(r.memory).some((m) => m.heapMb !== undefined));

const seconds = (ms: number) => `${(ms / 1000).toFixed(0)} s`;

/** `used / committed`, or just `used`, or n/a. */
const heapCell = (sample: MemorySample | undefined) =>
  sample?.heapMb === undefined
    ? "n/a"
    : sample.heapTotalMb === undefined
      ? mb(sample.heapMb)
      : `${mb(sample.heapMb)} / ${sample.heapTotalMb.toFixed(0)}`;

/** The short per-round progress line the benchmark prints. */
export function progressLine(
  label: string,
  memory: Record<string, MemorySample>,
  processes: readonly string[],
): string {
  const cells = processes
    .map((name) => {
      const sample = memory[name];
      const heap = sample?.heapMb === undefined ? "" : `/${mb(sample.heapMb)}`;
      return `${name} ${mb(sample?.rssMb)}${heap}`;
    })
    .join(", ");
  return `${label} | MB (RSS/heap): ${cells}`;
}

const yesNo = (value: boolean | undefined) =>
  value === undefined ? "n/a" : value ? "yes" : "**NO**";

const range = ([from, to]: [number, number]) => (from === to ? `r${from}` : `r${from}–${to}`);

/** The RSS verdicts: growth after the warm-up, of the peaks from half to half, and the limit. */
export function renderRssVerdicts(report: SoakReport): string {
  const n = report.rounds.length;
  const warm = n > 1 ? 2 : 1;
  const { first, last } = peakRanges(n);
  const idle = report.idle !== undefined;
  const headers = [
    "process",
    "start",
    "r1",
    `r${warm}`,
    `r${n}`,
    ...(idle ? ["idle"] : []),
    `r${warm}→r${n}`,
    `peak ${range(first)} → ${range(last)}`,
    "MB / 10k req",
    "verdict",
    `< ${SERVICE_RSS_LIMIT_MB} MB at r${n}`,
    ...(idle ? [`< ${SERVICE_RSS_LIMIT_MB} MB idle`] : []),
  ];
  const rows = verdicts(report).map((v) => {
    const service = report.services.includes(v.name);
    return [
      v.name,
      mb(report.start?.memory[v.name]?.rssMb),
      mb(report.rounds[0]?.memory[v.name]?.rssMb),
      mb(v.afterWarmup?.startMb),
      mb(v.finalRssMb),
      ...(idle ? [mb(report.idle?.memory[v.name]?.rssMb)] : []),
      formatGrowth(v.afterWarmup),
      formatGrowth(v.peaks),
      per10k(v.peaks),
      v.verdict === "growing"
        ? "**growing**"
        : v.backWhenIdle
          ? "steady (back when idle)"
          : v.verdict,
      service ? yesNo(v.underLimit) : "(not a service)",
      ...(idle ? [service ? yesNo(v.underLimitIdle) : ""] : []),
    ];
  });
  const align = headers.map((h, i) =>
    i === 0 || h.startsWith("<") || h === "verdict" ? "left" : "right",
  );
  return formatTable(headers, rows, align as Array<"left" | "right">);
}

/** The heap verdicts: the heap after a full GC, over the last half, and what the load left. */
export function renderHeapVerdicts(report: SoakReport): string {
  const n = report.rounds.length;
  const half = lastHalfStart(n) + 1;
  const idle = report.idle !== undefined && report.start !== undefined;
  const headers = [
    "process",
    "start",
    `r${half}`,
    `r${n}`,
    `r${half}→r${n}`,
    "MB / 10k req",
    ...(idle ? ["idle", "idle − start"] : []),
    "verdict",
  ];
  const rows = verdicts(report)
    .filter((v) => report.rounds.some((r) => r.memory[v.name]?.heapMb !== undefined))
    .map((v) => [
      v.name,
      mb(report.start?.memory[v.name]?.heapMb),
      mb(v.heapLastHalf?.startMb),
      mb(v.heapLastHalf?.endMb),
      formatGrowth(v.heapLastHalf),
      per10k(v.heapLastHalf),
      ...(idle
        ? [
            mb(report.idle?.memory[v.name]?.heapMb),
            v.heapLeftMb === undefined ? "n/a" : `${signed(v.heapLeftMb)} MB`,
          ]
        : []),
      v.heapVerdict === "growing" ? "**growing**" : v.heapVerdict,
    ]);
  const align = headers.map((h, i) => (i === 0 || h === "verdict" ? "left" : "right"));
  return formatTable(headers, rows, align as Array<"left" | "right">);
}

/** One row per reading (start, each round, idle): load figures, then one column per process. */
export function renderRoundTable(report: SoakReport, which: "rss" | "heap"): string {
  const cell = (sample: MemorySample | undefined) =>
    which === "rss" ? mb(sample?.rssMb) : heapCell(sample);
  const headers = ["reading", "requests", "req/s", "p50 ms", "p99 ms", ...report.processes];
  const rows: string[][] = [];
  if (report.start) {
    rows.push([
      "start",
      "0",
      "",
      "",
      "",
      ...report.processes.map((p) => cell(report.start?.memory[p])),
    ]);
  }
  for (const r of report.rounds) {
    rows.push([
      `round ${r.round}`,
      String(r.totalRequests),
      r.opsPerSec.toFixed(0),
      fixed(r.p50Ms, 1),
      fixed(r.p99Ms, 1),
      ...report.processes.map((name) => cell(r.memory[name])),
    ]);
  }
  if (report.idle) {
    rows.push([
      `idle ${seconds(report.idle.idleMs)}`,
      String(report.rounds.at(-1)?.totalRequests ?? 0),
      "",
      "",
      "",
      ...report.processes.map((p) => cell(report.idle?.memory[p])),
    ]);
  }
  return formatTable(
    headers,
    rows,
    headers.map((_, i) => (i === 0 ? "left" : "right")),
  );
}

/** What the benchmark prints at the end. */
export function renderSoakTables(report: SoakReport): string {
  const parts = ["RSS (MB):", renderRoundTable(report, "rss"), "", "RSS verdicts:"];
  parts.push(renderRssVerdicts(report));
  if (hasHeap(report)) {
    parts.push("", "V8 heap after a full GC, used / committed (MB):");
    parts.push(renderRoundTable(report, "heap"), "", "Heap verdicts:", renderHeapVerdicts(report));
  }
  return parts.join("\n");
}

const formatDate = (date: Date) => date.toISOString().replace(/\.\d+Z$/, "Z");

/** bench/soak.md. */
export function renderSoakMarkdown(report: SoakReport, svgName = "soak.svg"): string {
  const { settings, machine } = report;
  const all = verdicts(report).filter((v) => report.services.includes(v.name));
  const n = report.rounds.length;
  const warm = n > 1 ? 2 : 1;
  const heap = hasHeap(report);
  const idle = report.idle;
  const summary = all.map((v) => {
    const parts = [
      `RSS ${v.verdict} (its peak in the last half of the rounds ${formatGrowth(v.peaks)} on the first half's${v.backWhenIdle ? ", but back to its start reading once idle" : ""})`,
    ];
    if (heap) {
      const startHeap = report.start?.memory[v.name]?.heapMb;
      const idleHeap = idle?.memory[v.name]?.heapMb;
      parts.push(
        v.heapLeftMb !== undefined
          ? `heap after GC ${v.heapVerdict}: ${mb(startHeap)} MB before the load, ${mb(idleHeap)} MB idle after it`
          : `heap after GC ${v.heapVerdict} over the last half (${formatGrowth(v.heapLastHalf)})`,
      );
    }
    const limit = idle
      ? `RSS ${mb(v.finalRssMb)} MB after the last round (${v.underLimit ? "under" : "over"} ${SERVICE_RSS_LIMIT_MB} MB), ${mb(idle.memory[v.name]?.rssMb)} MB idle (${v.underLimitIdle ? "under" : "over"})`
      : `RSS ${mb(v.finalRssMb)} MB after the last round (${v.underLimit ? "under" : "over"} ${SERVICE_RSS_LIMIT_MB} MB)`;
    parts.push(limit);
    return wrap(`\`${v.name}\`: ${parts.join("; ")}.`, 100, "- ", "  ");
  });
  const elapsed = (+report.finishedAt - +report.startedAt) / 1000;
  const lines = [
    "# Soak benchmark",
    "",
    wrap(
      "`npm run bench:soak` sends many requests through the four services of the mesh, in rounds, " +
        "and reads every process's memory before the load, after each round once the load stopped, " +
        "and once the mesh stood idle past the jobs' deadlines: a service that keeps something per " +
        "job, per request or per trace without ever letting it go grows from round to round, and " +
        "does not come back when idle. The numbers below are from **one run on one machine** " +
        "(described below); this file is rewritten by every run. Its last section, the audit of " +
        "the in-process maps, comes from `bench/soak-audit.md`.",
      100,
    ),
    "",
    "## Result",
    "",
    wrap(
      `${report.rounds.at(-1)?.totalRequests ?? 0} requests in ${n} rounds (${elapsed.toFixed(0)} s in all, after ${settings.warmup} warm-up requests):`,
      100,
    ),
    "",
    ...summary,
    "",
    "RSS (MB):",
    "",
    renderRssVerdicts(report),
    "",
  ];
  if (heap) lines.push("V8 heap used after a full GC (MB):", "", renderHeapVerdicts(report), "");
  lines.push(
    wrap(
      `Round 1 is the warm-up (code compiled, pools and buffers filled): RSS growth is counted from ` +
        `round ${warm}. RSS read at one instant dips and peaks with when V8 last collected and how ` +
        "much young generation it kept, so the RSS verdict compares peaks: the highest reading of " +
        `the last half of the rounds (${range(peakRanges(n).last)}) with the highest of the first ` +
        `half (${range(peakRanges(n).first)}), **steady** when it grew ${ruleText(RSS_RULE)}; a leak ` +
        "lifts every reading, the peaks too. Peaks that grew are still **steady (back when idle)** " +
        "when the idle reading came back within the same allowance of the start reading: a leak " +
        "keeps what it took. " +
        "The heap verdict compares the heap after a full GC once the mesh stood idle (past every " +
        "job's deadline, so nothing a job may hold until then counts) with the heap before the load " +
        `(after the warm-up): what the load left behind, **steady** when it grew ` +
        `${ruleText(IDLE_RULE)} (without an idle reading: over the last half of the rounds, ` +
        `${ruleText(HEAP_RULE)}). "MB / 10k req" is that growth per 10,000 requests of the last ` +
        `half. A service should hold under ${SERVICE_RSS_LIMIT_MB} MB of RSS after the load. ` +
        "nats-server is shown for reference: " +
        "JetStream keeps every job's record and events for their TTL (a day by default), so its " +
        "memory follows the number of jobs it holds, by design.",
      100,
    ),
    "",
    `![RSS and heap per process, before the load, after each round and idle](${svgName})`,
    "",
    "## How it was measured",
    "",
    "```",
    report.command,
    "```",
    "",
    wrap(
      `One fresh nats-server (on a free port, temporary JetStream store) and the four services, each ` +
        `its own process from its built \`services/<name>/dist/main.js\`, with the config ` +
        "`deploy/config/sim.yaml` (every tier the deterministic `sim` model, which answers at once; " +
        "a job's deadline is 60 s), `LOG_LEVEL=warn` and no telemetry export" +
        (report.nodeOptions ? `, and \`NODE_OPTIONS=${report.nodeOptions}\`` : "") +
        `. ${settings.n} requests of ` +
        "`POST /v1/chat/completions` (model `handoff`), alternating a one-hop " +
        '"Hello there" (classifier, light model) and a two-hop "What is 17 * 23?" (classifier, ' +
        "tool-executor, calculator over NATS), each answer checked (HTTP 200, route, `391` in the " +
        `arithmetic's answer), ${settings.concurrency} in flight, in ${settings.rounds} rounds. ` +
        (settings.warmup > 0
          ? `Before them, ${settings.warmup} warm-up requests (code compiled, pools filled), then ` +
            `the mesh stands idle for ${seconds(report.start?.idleMs ?? 0)} and is read: the ` +
            "start. "
          : "The start is read before any request. ") +
        `After each round the load stops for ${(settings.settleMs / 1000).toFixed(1)} s, then ` +
        "each process's VmRSS is read from `/proc/<pid>/status`. " +
        report.heapNote +
        (idle
          ? ` After the last round the mesh stands idle for ${seconds(idle.idleMs)} (past the ` +
            "deadline of every job it ran, so whatever a job holds until its deadline is let go), " +
            "and is read once more."
          : ""),
      100,
    ),
    "",
    "## Machine",
    "",
    `- CPU: ${machine.cpuModel}, ${machine.cores} cores, ${machine.memoryGiB} GiB RAM`,
    `- OS: ${machine.kernel}`,
    `- Node.js ${machine.node}`,
    `- ${machine.natsServer}`,
    `- 1-minute load average at the start: ${fixed(machine.loadAverage, 2)}`,
    `- run: ${formatDate(report.startedAt)} to ${formatDate(report.finishedAt)}`,
    "",
    "## RSS (MB)",
    "",
    renderRoundTable(report, "rss"),
    "",
  );
  if (heap) {
    lines.push("## V8 heap after a full GC, used / committed (MB)", "");
    lines.push(renderRoundTable(report, "heap"), "");
  }
  if (report.warnings.length > 0) {
    lines.push(`## Service warnings during the run (${report.warnings.length})`, "");
    for (const warning of report.warnings.slice(0, 20)) lines.push(`- ${warning}`);
    lines.push("");
  }
  if (report.audit !== undefined) {
    lines.push("## In-process maps", "", report.audit.trim(), "");
  }
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------
// The plot.

/** One line of a panel: a value per round (undefined where unknown). */
export interface PlotLine {
  name: string;
  values: ReadonlyArray<number | undefined>;
}

export interface LinePanel {
  title: string;
  lines: PlotLine[];
}

/** Okabe–Ito colours (the yellow left out: it vanishes on white), as libs/routing's plot uses. */
const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000"];
const INK = "#1f2328";
const MUTED_INK = "#57606a";
const GRID = "#e6e8eb";
const AXIS = "#8c959f";
const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif';

export function escapeXml(text: string): string {
  return text
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

/** A step of 1, 2 or 5 times a power of ten giving about `target` intervals over `span`. */
export function niceStep(span: number, target = 5): number {
  if (!(span > 0) || !Number.isFinite(span)) return 1;
  const raw = span / target;
  const power = 10 ** Math.floor(Math.log10(raw));
  const scaled = raw / power;
  const factor = scaled <= 1 ? 1 : scaled <= 2 ? 2 : scaled <= 5 ? 5 : 10;
  return factor * power;
}

/** The y range of a panel: from 0 (memory starts there) to a nice step above the highest value. */
export function yRange(values: readonly number[]): { max: number; step: number } {
  const top = Math.max(0, ...values.filter(Number.isFinite));
  if (top === 0) return { max: 1, step: 0.2 };
  const step = niceStep(top * 1.05);
  return { max: Math.ceil((top * 1.05) / step) * step, step };
}

const num = (value: number) => Number(value.toFixed(2)).toString();

/** One panel at (x, y) of the given size: axes, grid, a polyline and dots per line, a legend. */
function panelSvg(
  panel: LinePanel,
  labels: readonly string[],
  box: { x: number; y: number; width: number; height: number },
): string[] {
  const rounds = labels.length;
  const left = box.x + 56;
  const right = box.x + box.width - 150;
  const top = box.y + 34;
  const bottom = box.y + box.height - 40;
  const values = panel.lines.flatMap((l) =>
    l.values.filter((v): v is number => v !== undefined && Number.isFinite(v)),
  );
  const { max, step } = yRange(values);
  const xOf = (i: number) => (rounds > 1 ? left + ((right - left) * i) / (rounds - 1) : left);
  const yOf = (v: number) => bottom - ((bottom - top) * v) / max;
  const out: string[] = [];
  out.push(
    `<text x="${num(box.x + 12)}" y="${num(box.y + 20)}" font-size="14" font-weight="600" fill="${INK}">${escapeXml(panel.title)}</text>`,
  );
  for (let v = 0; v <= max + step / 1000; v += step) {
    const y = yOf(v);
    out.push(
      `<line x1="${num(left)}" y1="${num(y)}" x2="${num(right)}" y2="${num(y)}" stroke="${GRID}" stroke-width="1"/>`,
      `<text x="${num(left - 6)}" y="${num(y + 4)}" font-size="11" text-anchor="end" fill="${MUTED_INK}">${escapeXml(num(v))}</text>`,
    );
  }
  const everyNth = Math.max(1, Math.ceil(rounds / 12));
  for (let i = 0; i < rounds; i++) {
    if (i % everyNth !== 0 && i !== rounds - 1) continue;
    out.push(
      `<text x="${num(xOf(i))}" y="${num(bottom + 16)}" font-size="11" text-anchor="middle" fill="${MUTED_INK}">${escapeXml(labels[i] ?? String(i + 1))}</text>`,
    );
  }
  out.push(
    `<line x1="${num(left)}" y1="${num(bottom)}" x2="${num(right)}" y2="${num(bottom)}" stroke="${AXIS}" stroke-width="1"/>`,
    `<line x1="${num(left)}" y1="${num(top)}" x2="${num(left)}" y2="${num(bottom)}" stroke="${AXIS}" stroke-width="1"/>`,
    `<text x="${num((left + right) / 2)}" y="${num(bottom + 32)}" font-size="11" text-anchor="middle" fill="${MUTED_INK}">after round</text>`,
    `<text x="${num(box.x + 14)}" y="${num((top + bottom) / 2)}" font-size="11" text-anchor="middle" fill="${MUTED_INK}" transform="rotate(-90 ${num(box.x + 14)} ${num((top + bottom) / 2)})">MB</text>`,
  );
  panel.lines.forEach((line, index) => {
    const color = PALETTE[index % PALETTE.length] as string;
    // A gap where a value is unknown: separate polylines either side of it.
    const runs: string[][] = [[]];
    line.values.forEach((value, i) => {
      if (value === undefined || !Number.isFinite(value)) {
        if ((runs.at(-1) as string[]).length > 0) runs.push([]);
        return;
      }
      (runs.at(-1) as string[]).push(`${num(xOf(i))},${num(yOf(value))}`);
    });
    for (const points of runs) {
      if (points.length > 1) {
        out.push(
          `<polyline points="${points.join(" ")}" fill="none" stroke="${color}" stroke-width="2" stroke-linejoin="round"/>`,
        );
      }
      for (const point of points) {
        const [cx, cy] = point.split(",");
        out.push(`<circle cx="${cx}" cy="${cy}" r="2.5" fill="${color}"/>`);
      }
    }
    const ly = top + 8 + index * 18;
    out.push(
      `<line x1="${num(right + 16)}" y1="${num(ly)}" x2="${num(right + 38)}" y2="${num(ly)}" stroke="${color}" stroke-width="2.5"/>`,
      `<text x="${num(right + 44)}" y="${num(ly + 4)}" font-size="12" fill="${INK}">${escapeXml(line.name)}</text>`,
    );
  });
  return out;
}

/**
 * Panels stacked in one self-contained SVG document (white background, no fonts, scripts or
 * images), one x position per label, the same for every panel. Pure: the same input, the same text.
 */
export function renderLinePlotSvg(
  title: string,
  labels: readonly string[],
  panels: readonly LinePanel[],
  options: { width?: number; panelHeight?: number } = {},
): string {
  const width = options.width ?? 760;
  const panelHeight = options.panelHeight ?? 300;
  if (panels.length === 0 || labels.length === 0) {
    throw new Error("nothing to plot: no panel or no reading");
  }
  for (const line of panels.flatMap((p) => p.lines)) {
    if (line.values.length !== labels.length) {
      throw new Error(
        `line ${line.name} has ${line.values.length} values for ${labels.length} labels`,
      );
    }
  }
  const height = 36 + panels.length * panelHeight;
  const body = panels.flatMap((panel, i) =>
    panelSvg(panel, labels, { x: 0, y: 36 + i * panelHeight, width, height: panelHeight }),
  );
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family='${FONT}'>`,
    `<title>${escapeXml(title)}</title>`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="12" y="24" font-size="16" font-weight="600" fill="${INK}">${escapeXml(title)}</text>`,
    ...body,
    "</svg>",
    "",
  ].join("\n");
}

/** bench/soak.svg: RSS per reading per process, and the heap after GC when it was measured. */
export function renderSoakSvg(report: SoakReport): string {
  const readings: Array<Record<string, MemorySample>> = [
    ...(report.start ? [report.start.memory] : []),
    ...report.rounds.map((r) => r.memory),
    ...(report.idle ? [report.idle.memory] : []),
  ];
  const labels = [
    ...(report.start ? ["start"] : []),
    ...report.rounds.map((r) => String(r.round)),
    ...(report.idle ? ["idle"] : []),
  ];
  const line = (name: string, which: "rssMb" | "heapMb"): PlotLine => ({
    name,
    values: readings.map((memory) => memory[name]?.[which]),
  });
  const panels: LinePanel[] = [
    { title: "RSS (MB)", lines: report.processes.map((p) => line(p, "rssMb")) },
  ];
  if (hasHeap(report)) {
    const withHeap = report.processes.filter((p) =>
      readings.some((memory) => memory[p]?.heapMb !== undefined),
    );
    panels.push({
      title: "V8 heap used after a full GC (MB)",
      lines: withHeap.map((p) => line(p, "heapMb")),
    });
  }
  const total = report.rounds.at(-1)?.totalRequests ?? 0;
  return renderLinePlotSvg(
    `Soak: ${total} requests in ${report.rounds.length} rounds; memory before, after each round, idle`,
    labels,
    panels,
  );
}
