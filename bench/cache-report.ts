/**
 * Turns the two runs of `npm run bench:cache` into the tables printed on stdout and into
 * bench/cache.md. Pure: everything it says comes from its argument.
 */
import type { CacheAnalysis, LatencySummary } from "./cache-analysis.ts";
import type { WorkloadRequest } from "./cache-workload.ts";
import { fixed, formatTable, sig3, wrap } from "./lib.ts";
import type { MachineFacts } from "./proc.ts";

export interface CacheReport {
  settings: {
    n: number;
    concurrency: number;
    warmup: number;
    seed: number;
    poolSize: number;
    zipfExponent: number;
    tenants: Array<{ name: string; share: number }>;
    sampledShare: number;
    noCacheShare: number;
    ttlMs: number;
    upstreamLatencyMs: number;
  };
  machine: MachineFacts;
  workload: readonly WorkloadRequest[];
  analysis: CacheAnalysis;
  /** The cached run's config file (the uncached run's is the same without `cache:`). */
  config: string;
  /** How long each run's nats-server, upstream and mesh took to start, in ms. */
  startupMs: [number, number];
  /** CPU ms each process used during each run's measured requests. */
  cpuMs: [Map<string, number>, Map<string, number>];
  /** CPU ms the whole machine was busy during each run's measured requests, when known. */
  machineMs: [number | undefined, number | undefined];
  warnings: string[];
  startedAt: Date;
  finishedAt: Date;
  command: string;
}

const WIDTH = 100;
const usd = (value: number) => `$${value.toFixed(4)}`;
const pct = (value: number) => `${sig3(100 * value)} %`;
const ms = (value: number | undefined) => (value === undefined ? "" : fixed(value, 1));
const count = (value: number) => value.toLocaleString("en-US");
/** A configured share as written: 0.6 → "60 %", 0.05 → "5 %". */
const share = (value: number) => `${+(100 * value).toFixed(2)} %`;

/** The workload: who asks what, how often. */
function workloadTable(report: CacheReport): string {
  const { workload } = report;
  const rows: string[][] = [];
  const ofAll = (n: number) => pct(n / workload.length);
  for (const kind of ["light", "heavy", "tools"] as const) {
    const of = workload.filter((r) => r.prompt.kind === kind);
    const distinct = new Set(of.map((r) => r.prompt.id)).size;
    const label = {
      light: "light: greetings, short questions",
      heavy: 'heavy: "prove …", "derive …"',
      tools: 'tools (mid, 2 turns): "What is a * b?"',
    }[kind];
    rows.push([label, count(of.length), ofAll(of.length), count(distinct)]);
  }
  for (const { name } of report.settings.tenants) {
    const of = workload.filter((r) => r.tenant === name);
    rows.push([
      `tenant ${name}`,
      count(of.length),
      ofAll(of.length),
      count(new Set(of.map((r) => r.prompt.id)).size),
    ]);
  }
  const sampled = workload.filter((r) => r.sampled);
  const noCache = workload.filter((r) => r.noCache);
  rows.push(["`temperature: 0.7` (not cached)", count(sampled.length), ofAll(sampled.length), ""]);
  rows.push(["`Cache-Control: no-cache`", count(noCache.length), ofAll(noCache.length), ""]);
  rows.push([
    "all",
    count(workload.length),
    "100 %",
    count(new Set(workload.map((r) => r.prompt.id)).size),
  ]);
  return formatTable(["requests", "count", "share", "distinct prompts"], rows, [
    "left",
    "right",
    "right",
    "right",
  ]);
}

/** From the repeat share to the hits: where the hits a naive count expects went. */
function ceilingTable(report: CacheReport): string {
  const { ceiling, ceilingMissed } = report.analysis.checks;
  const { cached } = report.analysis;
  const n = ceiling.requests;
  const row = (label: string, value: number) => [label, count(value), pct(value / n)];
  return formatTable(
    ["requests", "count", "of all"],
    [
      row("all", n),
      row(
        "whose prompt was asked before, by anyone, in any way (the repeat share)",
        ceiling.repeats,
      ),
      row("… that are cacheable (no temperature, no `no-cache`)", ceiling.cacheableRepeats),
      row(
        "… whose own tenant had asked it cacheably before (the ceiling of a per-tenant cache)",
        ceiling.sameTenantRepeats,
      ),
      row("answered wholly from the cache (measured)", cached.hitRequests),
      row("in the ceiling but not wholly answered from the cache", ceilingMissed),
    ],
    ["left", "right", "right"],
  );
}

/** The two runs side by side. */
function sideBySide(report: CacheReport): string {
  const { uncached: u, cached: c } = report.analysis;
  const none = "–";
  const rows: string[][] = [
    ["requests", count(u.requests), count(c.requests)],
    [
      "… cacheable (no temperature, no `no-cache`)",
      count(u.cacheableRequests),
      count(c.cacheableRequests),
    ],
    ["wall time, s", fixed(u.elapsedMs / 1000, 1), fixed(c.elapsedMs / 1000, 1)],
    ["requests/s", fixed(u.perSecond, 0), fixed(c.perSecond, 0)],
    [
      "model calls in the answers (`handoff.usage` entries)",
      count(u.modelCalls),
      count(c.modelCalls),
    ],
    [
      "**upstream calls** (requests the upstream received)",
      count(u.upstreamCalls),
      count(c.upstreamCalls),
    ],
    ["exact-cache lookups (hit + miss)", none, count(c.lookups)],
    ["calls that bypassed the cache (temperature, `no-cache`)", none, count(c.bypassed)],
    ["hits", none, count(c.hits)],
    ["**hit rate: hits / cacheable lookups**", none, pct(c.hits / c.lookups)],
    ["requests answered wholly from the cache", none, count(c.hitRequests)],
    ["**… / all requests**", none, pct(c.hitRequests / c.requests)],
    ["… / cacheable requests", none, pct(c.hitRequests / c.cacheableRequests)],
    ["requests with some calls hits, some not", none, count(c.partialRequests)],
    ["**dollars spent** (Σ `handoff.cost_usd`)", usd(u.spentUsd), usd(c.spentUsd)],
    ["**dollars saved** (Σ `saved_usd`)", none, usd(c.savedUsd)],
    ["spent + saved", usd(u.spentUsd + u.savedUsd), usd(c.spentUsd + c.savedUsd)],
    [
      "p50 / p99 latency, all requests, ms",
      `${ms(u.latency.p50Ms)} / ${ms(u.latency.p99Ms)}`,
      `${ms(c.latency.p50Ms)} / ${ms(c.latency.p99Ms)}`,
    ],
  ];
  return formatTable(["", "caching nothing", "exact cache (light, mid, heavy)"], rows, [
    "left",
    "right",
    "right",
  ]);
}

function byRouteTable(report: CacheReport): string {
  const rows = report.analysis.byRoute.map((r) => [
    r.route,
    count(r.requests),
    `${count(r.hitRequests)} (${pct(r.hitRequests / r.requests)})`,
    usd(r.uncachedSpentUsd),
    usd(r.cachedSpentUsd),
    usd(r.savedUsd),
  ]);
  return formatTable(
    [
      "route",
      "requests",
      "answered from the cache",
      "spent, caching nothing",
      "spent, cached",
      "saved",
    ],
    rows,
    ["left", "right", "right", "right", "right", "right"],
  );
}

const CLASS_LABEL = {
  hit: "hits (every call from the cache)",
  miss: "misses (cacheable, some call went to the model)",
  bypass: "bypass (temperature 0.7 or `no-cache`)",
} as const;

function latencyTable(report: CacheReport): string {
  const cell = (s: LatencySummary | undefined) => [ms(s?.p50Ms), ms(s?.p99Ms)];
  const rows = report.analysis.byClass
    .filter((row) => row.cached !== undefined)
    .map((row) => [
      row.route === "all" ? `**${CLASS_LABEL[row.cls]}**` : `… ${row.route}`,
      count(row.cached?.n ?? 0),
      ...cell(row.uncached),
      ...cell(row.cached),
    ]);
  return formatTable(
    [
      "the same requests, by what the cached run made of them",
      "n",
      "caching nothing p50",
      "p99",
      "cached p50",
      "p99",
    ],
    rows,
    ["left", "right", "right", "right", "right", "right"],
  );
}

function checksList(report: CacheReport): string[] {
  const { checks, cached, uncached } = report.analysis;
  return [
    `Every answer of both runs was HTTP 200, parsed as a chat completion, took its expected route (${"`classifier`"}, ${"`classifier -> heavy-reasoner`"} or ${"`classifier -> tool-executor`"}), made the expected calls with the expected models, and said exactly what the upstream says to its prompt; its \`cost_usd\` is the sum of its calls'.`,
    `**Cached answers equal uncached ones**: every answer, in both runs, for both tenants, hit or not, is the same text for the same prompt.`,
    `Caching nothing: no answer has \`handoff.cache\`, \`x-handoff-cache\` or a cache outcome on a call, and the upstream received exactly the ${count(uncached.upstreamCalls)} model calls the answers report.`,
    `Cached: \`x-handoff-cache\` equals \`handoff.cache\` on every answer, which is the answering call's outcome; sampled and \`no-cache\` requests bypassed on every call, the others hit or missed; every hit cost 0 and saved exactly what the same call cost when the model answered it (in either run), every other call cost more than 0.`,
    `**The upstream saw exactly the misses**: for each of the ${count(checks.upstreamKeysMatched)} (prompt, tier, turn) it was asked, the upstream received as many requests as the answers report calls that were not hits.`,
    `**At most once per (tenant, prompt, tier, turn) while cacheable**, but for concurrency: ${count(checks.keysStored)} such keys were stored; no request missed after an earlier miss of its key had been answered (and so stored). ${count(checks.inFlightDuplicates)} cacheable misses were second asks of a key whose first ask was still in flight.`,
    `**No hit crossed tenants**: every hit had a miss of its own tenant, sent before it was answered; ${count(checks.crossTenantChances)} lookups came when only the other tenant's answer to the same call was stored, and all of them missed. No request was answered from the cache that no earlier request of its own tenant could have stored.`,
    `**The savings close the books**: spent caching nothing − (spent with the cache + saved) = ${checks.spendGapUsd === 0 ? "$0 exactly" : `$${checks.spendGapUsd.toExponential(1)} (floating-point rounding)`}, over ${count(cached.hits)} hits.`,
  ];
}

const sumOf = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);

/** Cores the benchmark's processes, and other work on the machine, kept busy during a run. */
export function coresBusy(report: CacheReport, run: 0 | 1): { ours: number; other: number } {
  const elapsed = (run === 0 ? report.analysis.uncached : report.analysis.cached).elapsedMs;
  const ours = sumOf(report.cpuMs[run]) / elapsed;
  const machine = report.machineMs[run];
  return {
    ours,
    other: machine === undefined ? Number.NaN : Math.max(0, machine / elapsed - ours),
  };
}

/** CPU ms per request of each process, in each run, and the cores busy. */
function cpuTable(report: CacheReport): string {
  const [u, c] = report.cpuMs;
  const names = [...new Set([...u.keys(), ...c.keys()])];
  const n = report.settings.n;
  const rows = names.map((name) => [
    name,
    fixed((u.get(name) ?? Number.NaN) / n, 2),
    fixed((c.get(name) ?? Number.NaN) / n, 2),
  ]);
  rows.push(["total", fixed(sumOf(u) / n, 2), fixed(sumOf(c) / n, 2)]);
  const [bu, bc] = [coresBusy(report, 0), coresBusy(report, 1)];
  rows.push([
    "cores busy with these processes (CPU time ÷ wall time)",
    fixed(bu.ours, 2),
    fixed(bc.ours, 2),
  ]);
  rows.push([
    "cores busy with other work on the machine (/proc/stat)",
    fixed(bu.other, 2),
    fixed(bc.other, 2),
  ]);
  return formatTable(["CPU ms per request", "caching nothing", "exact cache"], rows, [
    "left",
    "right",
    "right",
  ]);
}

/** The tables alone, for the terminal. */
export function renderCacheTables(report: CacheReport): string {
  return [
    "Workload",
    workloadTable(report),
    "",
    "From the repeat share to the hits",
    ceilingTable(report),
    "",
    "Side by side",
    sideBySide(report),
    "",
    "By route",
    byRouteTable(report),
    "",
    "Latency, ms",
    latencyTable(report),
    "",
    "CPU",
    cpuTable(report),
  ].join("\n");
}

/** bench/cache.md for this run. */
export function renderCacheMarkdown(report: CacheReport): string {
  const { settings, machine, analysis } = report;
  const { uncached: u, cached: c, checks } = analysis;
  const { ceiling } = checks;
  const date = `${report.startedAt.toISOString().slice(0, 16).replace("T", " ")} UTC`;
  const seconds = (+report.finishedAt - +report.startedAt) / 1000;
  const n = settings.n;
  const tenants = settings.tenants.map((t) => `\`${t.name}\` ${share(t.share)}`).join(", ");
  const hitRow = analysis.byClass.find((r) => r.cls === "hit" && r.route === "all");
  const missRow = analysis.byClass.find((r) => r.cls === "miss" && r.route === "all");
  const heavy = analysis.byRoute.find((r) => r.route === "heavy");

  const blocks: string[] = [];
  const raw = (...lines: string[]) => blocks.push(lines.join("\n"));
  const text = (...parts: string[]) => blocks.push(wrap(parts.join(" "), WIDTH));
  const quote = (...parts: string[]) => blocks.push(wrap(parts.join(" "), WIDTH, "> "));
  const bullets = (...items: string[]) =>
    blocks.push(items.map((item) => wrap(item, WIDTH, "- ", "  ")).join("\n"));

  raw("# Exact response cache benchmark");
  text(
    "`npm run bench:cache` replays one workload with repeats twice in the same run, each time",
    "against a fresh mesh: once **caching nothing**, once with the **exact response cache** on",
    "for every tier. It reports the cache's hit rate and the dollars it saved, side by side with",
    "the uncached run, and checks that every cached answer is the uncached one and that no answer",
    "crossed tenants.",
  );
  quote(
    "The numbers below are from **one run on one machine** (described below). The hit counts,",
    "dollars and checks depend only on the workload and on how many requests overlap in time;",
    "latencies and throughput move with the machine. This file is rewritten by every run.",
  );

  raw("## What is measured, and how");
  bullets(
    `**The workload** (seed ${settings.seed}, the same in both runs): ${count(n)} chat requests ` +
      `drawn from ${settings.poolSize} distinct prompts with a Zipf-like popularity, ` +
      `P(rank r) ∝ 1/r^${settings.zipfExponent}. Ranks follow a repeating pattern of ten: six ` +
      "light prompts (greetings, short questions: the learned router sends them to the light " +
      'tier), three heavy ones ("Prove that …", "Derive …": the heavy tier) and one product ' +
      '("What is 37 * 58?": the tool loop on the mid tier, two model calls around the ' +
      `calculator). Each request is sent by one of two tenants (${tenants}), each with its own ` +
      `API key; ${share(settings.sampledShare)} of them carry \`temperature: 0.7\` (which the ` +
      `shipped \`cache.sampled: false\` does not cache) and, independently, ` +
      `${share(settings.noCacheShare)} \`Cache-Control: no-cache\`. ` +
      `${settings.concurrency} requests are in flight at a time, a new one sent as soon as ` +
      "one is answered, in the workload's order.",
    "**The upstream**: the testkit's `UpstreamServer`, speaking OpenAI's chat-completions wire " +
      "format and recording every request, behind a small front that holds each request for " +
      `**${settings.upstreamLatencyMs} ms** (\`UPSTREAM_LATENCY_MS\` in bench/cache-upstream.ts), ` +
      "a stand-in for a model's latency, small to keep the run short. Its answers are " +
      "deterministic and know nothing of tenants: the same model asked the same messages says " +
      "the same thing, and every answer repeats the prompt (light answers run to 40-159 tokens, " +
      "heavy ones to 500-1,499, about four characters a token, so cache entries have realistic " +
      "sizes); prompt tokens are the request's messages and tools at four characters a token.",
    "**The mesh**: the four services as four processes from their built " +
      "`services/<name>/dist/main.js` on a fresh nats-server (free port, temporary store) for " +
      "each run, with `LOG_LEVEL=warn` and `OTEL_*_EXPORTER=none`. The three tiers call the " +
      "upstream as `openai-compatible` deployments priced like gpt-4o-mini, gpt-4o and o1; " +
      "routing is as shipped (the learned strategy). The cached run adds only the `cache:` " +
      `section, with a TTL of ${fixed(settings.ttlMs / 3_600_000, 0)} h, far longer than the run:`,
  );
  raw("```yaml", report.config.trimEnd(), "```");
  text(
    settings.warmup > 0
      ? `Before the measured requests, each run sends ${settings.warmup} warm-up prompts (none ` +
          "of the workload's) twice, so that both the miss and the hit paths have run; they are " +
          "left out of every figure."
      : "There is no warm-up (BENCH_CACHE_WARMUP=0).",
    "Dollars are the answers' own accounting: *spent* is the sum of the jobs' `cost_usd`,",
    "*saved* the sum of the `saved_usd` of their calls answered from the cache. A request is",
    "*answered wholly from the cache* when every model call of its job was a hit (a tool-loop",
    "request makes two); *cacheable lookups* are the model calls that looked the cache up (hits",
    "and misses, not the bypassed ones). Latency is each request's own time from `fetch` to the",
    "end of its body, summarised by nearest rank.",
  );
  text("**Checks.** Any failure aborts the run before anything is written:");
  bullets(...checksList(report));

  raw("## Run it");
  raw(
    "```bash",
    "npm run bench:cache                                    # builds, then runs bench/cache.bench.ts",
    "BENCH_CACHE_N=5000 BENCH_CACHE_CONCURRENCY=16 npm run bench:cache",
    "```",
  );
  raw(
    "| Variable | Default | Meaning |",
    "| --- | --- | --- |",
    "| `BENCH_CACHE_N` | 2000 | requests in the workload (each run sends all of them) |",
    "| `BENCH_CACHE_CONCURRENCY` | 12 | requests in flight |",
    "| `BENCH_CACHE_WARMUP` | 50 | warm-up prompts, each sent twice, before each run (0 to skip) |",
    "| `BENCH_CACHE_SEED` | 42 | seed of the prompt pool and the workload |",
  );
  text(
    "It needs `nats-server` and Node ≥ 22.18 (it runs the TypeScript directly); the services are",
    "the build output, so `npm run bench:cache` builds first. Everything it starts (two",
    "nats-servers one after the other, the upstreams, the services, the temporary stores and",
    "config files) is stopped and removed at the end, also on failure or Ctrl-C.",
  );

  raw("## Machine");
  bullets(
    `CPU: ${machine.cpuModel}, ${machine.cores} cores (as the OS sees them), ${machine.memoryGiB} GiB RAM`,
    `OS: ${machine.kernel}`,
    `Node.js ${machine.node}`,
    `1-minute load average when the run started: ${fixed(machine.loadAverage, 2)}`,
    machine.natsServer,
    "nats-server, the four services, the upstream and the benchmark's own client all share these cores.",
  );

  raw(`## Results: ${date}, one run of ${fixed(seconds, 0)} s`);
  text(
    `Command: \`${report.command}\` (${count(n)} requests, concurrency ${settings.concurrency},`,
    `warm-up ${settings.warmup}, seed ${settings.seed}; each mesh took about`,
    `${fixed(Math.max(...report.startupMs) / 1000, 0)} s to start).`,
  );
  raw("### The workload");
  raw(workloadTable(report));
  raw("### Side by side");
  raw(sideBySide(report));
  raw("### From the repeat share to the hits");
  text(
    "How many requests a naive count of repeats promises, and how many an exact per-tenant cache",
    "can answer at most: a request can be a hit only if it is cacheable and its own tenant asked",
    "the same prompt cacheably before.",
  );
  raw(ceilingTable(report));
  raw("### By route");
  raw(byRouteTable(report));
  raw("### Latency of hits and misses");
  text(
    "The same requests in both runs, grouped by what the cached run made of them, so each row",
    "compares like with like. Milliseconds.",
  );
  raw(latencyTable(report));
  raw("### CPU per request during the measured requests");
  text(
    "From `/proc/<pid>/stat` (the benchmark process, which also runs the upstream, from",
    "`process.cpuUsage()`).",
  );
  raw(cpuTable(report));

  raw("## What the numbers say");
  const lostSampled = ceiling.repeats - ceiling.cacheableRepeats;
  const lostTenant = ceiling.cacheableRepeats - ceiling.sameTenantRepeats;
  text(
    `**Hit rate.** ${pct(c.hits / c.lookups)} of the cacheable lookups were hits, and`,
    `${pct(c.hitRequests / n)} of all requests (${pct(c.hitRequests / c.cacheableRequests)} of the`,
    `cacheable ones) were answered without calling any model. That is less than the workload's`,
    `repeat share of ${pct(ceiling.repeats / n)} (requests whose prompt had been asked before),`,
    `for three reasons, in this order: ${count(lostSampled)} repeats (${pct(lostSampled / n)}) were`,
    "sampled or `no-cache`, which the cache leaves alone by design;",
    `${count(lostTenant)} (${pct(lostTenant / n)}) repeated a prompt only the *other* tenant had`,
    "asked cacheably, and tenants never share answers; and",
    `${count(checks.ceilingMissed)} (${pct(checks.ceilingMissed / n)}) were sent while an earlier`,
    "ask of the same prompt by the same tenant was still on its way to the model, so both missed",
    `and both reached the upstream (${count(checks.inFlightDuplicates)} duplicate model calls in`,
    "all): the cache stores an answer when the model has given it and holds nobody back meanwhile.",
    `Of what an exact per-tenant cache could answer here at most (${pct(ceiling.sameTenantRepeats / n)}`,
    `of the requests), it answered ${pct(c.hitRequests / Math.max(1, ceiling.sameTenantRepeats))}.`,
  );
  text(
    `**Upstream calls and dollars.** The upstream received ${count(c.upstreamCalls)} calls instead`,
    `of ${count(u.upstreamCalls)} (${pct(1 - c.upstreamCalls / u.upstreamCalls)} fewer). The same`,
    `workload cost ${usd(u.spentUsd)} caching nothing and ${usd(c.spentUsd)} with the cache, which`,
    `reports ${usd(c.savedUsd)} saved: ${pct(c.savedUsd / u.spentUsd)} of the uncached spend.`,
    ...(heavy
      ? [
          `The heavy tier's prompts made ${pct(heavy.uncachedSpentUsd / u.spentUsd)} of the`,
          `uncached spend and ${pct(heavy.savedUsd / Math.max(c.savedUsd, Number.MIN_VALUE))} of`,
          "the savings: a hit is worth what the call it replaces costs, and a frontier model's",
          "long answer costs hundreds of times a small model's greeting, so the dollars saved",
          "follow the heavy hits far more than the hit rate does.",
        ]
      : []),
  );
  if (hitRow?.cached && hitRow.uncached && missRow?.cached) {
    const [cpuU, cpuC] = report.cpuMs.map((m) => sumOf(m) / n) as [number, number];
    const { ours, other } = coresBusy(report, 1);
    const slowerMiss =
      missRow.uncached !== undefined && missRow.cached.p50Ms > missRow.uncached.p50Ms;
    const saturated = ours + (Number.isFinite(other) ? other : 0) >= 0.85 * machine.cores;
    text(
      `**Latency.** A hit took ${ms(hitRow.cached.p50Ms)} ms at p50 (p99`,
      `${ms(hitRow.cached.p99Ms)} ms); the same requests took ${ms(hitRow.uncached.p50Ms)} ms`,
      `(p99 ${ms(hitRow.uncached.p99Ms)} ms) when nothing was cached, and a miss took`,
      `${ms(missRow.cached.p50Ms)} ms at p50${slowerMiss ? "" : "."}`,
      ...(slowerMiss
        ? [
            `(the same requests took ${ms(missRow.uncached?.p50Ms)} ms uncached: a miss reads KV`,
            "before the model call and writes the answer to KV before the job goes on).",
          ]
        : []),
      "A hit skips the upstream's",
      `${settings.upstreamLatencyMs} ms (twice for a tool-loop request) but not the mesh: the`,
      "gateway, the job record, every hop of the route (a heavy hit still travels classifier →",
      "heavy-reasoner, since the key covers the messages as the heavy model would get them), and",
      "one KV read per model call. So the cache saves model time and dollars, but a hit still costs",
      "most of a miss's mesh work: all processes together spent",
      `${fixed(cpuC, 1)} ms of CPU per request with the cache against ${fixed(cpuU, 1)} ms without`,
      `(${pct(1 - cpuC / cpuU)} less, though ${pct(c.hitRequests / n)} of the requests were hits).`,
      `At ${settings.concurrency} in flight the mean latency`,
      `of ${ms(c.latency.meanMs)} ms is Little's law at ${fixed(c.perSecond, 0)} requests/s`,
      `(${settings.concurrency} ÷ throughput = ${ms((settings.concurrency * 1000) / c.perSecond)} ms),`,
      `and the benchmark's processes kept ${fixed(ours, 2)} of the ${machine.cores} cores busy`,
      ...(Number.isFinite(other)
        ? [`during the cached run, other work on the machine ${fixed(other, 2)}:`]
        : ["during the cached run:"]),
      saturated
        ? "the cores were full, so a request spends most of its time waiting for one, and a hit's latency here is mostly queueing."
        : "the cores were not full, so part of the wait is elsewhere (timers, sockets, the upstream's delay).",
      "Against a real model's hundreds of milliseconds to seconds a hit's gain is far larger than",
      "here.",
    );
  }
  text(
    "**Caveats.** One run. The hit counts, upstream calls and dollars are fixed by the workload",
    "but for the in-flight duplicates, which grow with the concurrency and with the upstream's",
    "latency: a real model answering in seconds keeps a popular prompt's first ask in flight far",
    `longer than ${settings.upstreamLatencyMs} ms, so more of its repeats would miss together.`,
    "The repeat share itself is the workload's choice: more distinct prompts, a flatter",
    "popularity or more tenants lower it. Latency and throughput are another matter: the two",
    "runs follow each other on a small machine, where other work (the last row of the CPU table)",
    "can take cores from one run and not the other; expect 20 % or more between single runs, and",
    "compare the rows of one run with each other rather than across runs or machines.",
  );
  text(
    report.warnings.length > 0
      ? `The services logged ${report.warnings.length} warning(s) during the runs, e.g. \`${report.warnings[0]}\`.`
      : "The services logged no warnings or errors during the runs.",
  );
  return `${blocks.join("\n\n")}\n`;
}
