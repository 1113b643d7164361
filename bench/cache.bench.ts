/**
 * `npm run bench:cache`: the exact response cache on a workload with repeats. The same
 * deterministic workload (Zipf-popular prompts, two tenants, some sampled and some `no-cache`
 * requests) is replayed twice in one run, each time against a fresh mesh on a fresh nats-server
 * with a fresh upstream: once caching nothing, once caching every tier. Every answer is checked;
 * then the two runs are checked against each other and against what the upstream received.
 * Progress goes to stderr, the tables to stdout, and the report to bench/cache.md. Any failed
 * request or check fails the whole run: there are no numbers with errors in them.
 */

import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ChatCompletion } from "@handoff/contracts";
import { findNatsServer, spawnNatsServer } from "@handoff/testkit";
import { startBenchMesh } from "./bench-mesh.ts";
import {
  type AnswerRecord,
  analyseCacheRuns,
  type CallRecord,
  type RunRecord,
  type UpstreamCall,
} from "./cache-analysis.ts";
import { type CacheReport, renderCacheMarkdown, renderCacheTables } from "./cache-report.ts";
import {
  answerText,
  MODELS,
  promptOf,
  startBenchUpstream,
  tierOfModel,
  turnOf,
  UPSTREAM_LATENCY_MS,
} from "./cache-upstream.ts";
import {
  generateWorkload,
  type Prompt,
  promptPool,
  ROUTES,
  type WorkloadSpec,
  warmupPrompts,
} from "./cache-workload.ts";
import { envInt, runConcurrent } from "./lib.ts";
import { CpuMeter, childPids, machineFacts } from "./proc.ts";

const settings = {
  n: envInt(process.env, "BENCH_CACHE_N", 2000),
  concurrency: envInt(process.env, "BENCH_CACHE_CONCURRENCY", 12),
  warmup: envInt(process.env, "BENCH_CACHE_WARMUP", 50, 0),
  seed: envInt(process.env, "BENCH_CACHE_SEED", 42, 0),
};

/** Distinct prompts the workload draws from. */
const POOL_SIZE = 300;
/** P(the prompt of rank r) ∝ 1 / r^ZIPF_EXPONENT. */
const ZIPF_EXPONENT = 0.9;
const TENANTS = [
  { name: "team-a", share: 0.6, keyEnv: "BENCH_KEY_TEAM_A" },
  { name: "team-b", share: 0.4, keyEnv: "BENCH_KEY_TEAM_B" },
];
/** Share of requests with `temperature: 0.7`, which the shipped defaults do not cache. */
const SAMPLED_SHARE = 0.1;
/** Share of requests with `Cache-Control: no-cache`. */
const NO_CACHE_SHARE = 0.05;
/** The cached run's `ttl_ms` for every tier: an hour, far longer than the run. */
const TTL_MS = 3_600_000;
const HTTP_TIMEOUT_MS = 30_000;
const root = new URL("..", import.meta.url);

// ---------------------------------------------------------------------------------------------
// Clean-up: whatever happens (error, Ctrl-C, SIGTERM), servers, processes and files go away.

const cleanups: Array<() => Promise<void>> = [];
/** Aborted on SIGINT/SIGTERM: stops the load at once. */
const interrupted = new AbortController();

async function cleanup(): Promise<void> {
  for (const fn of cleanups.splice(0).reverse()) {
    try {
      await fn();
    } catch (error) {
      console.error("clean-up step failed:", error);
    }
  }
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: stopping the load, the services, the upstream and nats-server…`);
    interrupted.abort(new Error(`interrupted by ${signal}`));
    void cleanup().finally(() => process.exit(130));
  });
}

const progress = (text: string) => process.stderr.write(text);

let ticksPerSecond: number | undefined;

/**
 * CPU time the whole machine has spent busy so far (every core, every process: the `cpu` line of
 * /proc/stat less idle and iowait), in ms; undefined off Linux. Next to the benchmark's own
 * processes, it shows how much of the machine other work took during a run.
 */
function machineBusyMs(): number | undefined {
  try {
    ticksPerSecond ??= Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
    const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
    const [label, ...fields] = line.trim().split(/\s+/);
    const ticks = fields.slice(0, 8).map(Number);
    if (label !== "cpu" || ticks.length < 5 || ticks.some((t) => !Number.isFinite(t))) {
      return undefined;
    }
    const total = ticks.reduce((a, b) => a + b, 0);
    const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0);
    return ((total - idle) * 1000) / (ticksPerSecond > 0 ? ticksPerSecond : 100);
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// The config: three tiers on the local upstream, two API keys, routing as shipped.

function configYaml(upstreamUrl: string, cached: boolean): string {
  const tier = (name: keyof typeof MODELS) => {
    const { model, price } = MODELS[name];
    return [
      `  ${name}:`,
      `    - id: ${model}`,
      "      provider: openai-compatible",
      `      model: ${model}`,
      `      base_url: ${upstreamUrl}/v1`,
      "      api_key_env: BENCH_UPSTREAM_KEY",
      `      price: { input_per_mtok: ${price.input_per_mtok}, output_per_mtok: ${price.output_per_mtok} }`,
    ];
  };
  return [
    "tiers:",
    ...tier("light"),
    ...tier("mid"),
    ...tier("heavy"),
    "gateway:",
    "  api_keys:",
    ...TENANTS.flatMap((t) => [`    - name: ${t.name}`, `      key_env: ${t.keyEnv}`]),
    ...(cached
      ? [
          "cache:",
          "  tiers:",
          `    light: { ttl_ms: ${TTL_MS} }`,
          `    mid: { ttl_ms: ${TTL_MS} }`,
          `    heavy: { ttl_ms: ${TTL_MS} }`,
        ]
      : []),
    "",
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------
// One request, checked.

interface Ask {
  prompt: Prompt;
  tenant: string;
  sampled: boolean;
  noCache: boolean;
}

/** The tiers of the calls each kind of prompt makes, in order. */
const CALL_TIERS: Record<Prompt["kind"], string[]> = {
  light: ["light"],
  heavy: ["heavy"],
  tools: ["mid", "mid"],
};

/** The answer text the upstream's determinism implies for a prompt. */
function expectedText(prompt: Prompt): string {
  switch (prompt.kind) {
    case "light":
      return answerText(MODELS.light.model, prompt.text);
    case "heavy":
      return answerText(MODELS.heavy.model, prompt.text);
    case "tools":
      return `The tool answered: ${prompt.product}.`;
  }
}

async function ask(
  gatewayUrl: string,
  keys: ReadonlyMap<string, string>,
  request: Ask,
  clock: () => number,
): Promise<Omit<AnswerRecord, "index">> {
  const { prompt } = request;
  const body = JSON.stringify({
    model: "handoff",
    messages: [{ role: "user", content: prompt.text }],
    ...(request.sampled ? { temperature: 0.7 } : {}),
  });
  const sentMs = clock();
  const res = await fetch(`${gatewayUrl}/v1/chat/completions`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      authorization: `Bearer ${keys.get(request.tenant)}`,
      ...(request.noCache ? { "cache-control": "no-cache" } : {}),
    },
    body,
    signal: AbortSignal.any([AbortSignal.timeout(HTTP_TIMEOUT_MS), interrupted.signal]),
  });
  const text = await res.text();
  const doneMs = clock();
  const what = `"${prompt.text}" for ${request.tenant}`;
  if (res.status !== 200) throw new Error(`${what}: HTTP ${res.status}: ${text.slice(0, 500)}`);
  const parsed = ChatCompletion.safeParse(JSON.parse(text));
  if (!parsed.success) {
    throw new Error(`${what}: not a chat completion: ${parsed.error.message.slice(0, 500)}`);
  }
  const { handoff, choices } = parsed.data;
  const content = choices[0]?.message.content ?? "";
  const expected = expectedText(prompt);
  if (content !== expected) {
    throw new Error(
      `${what}: answer "${content.slice(0, 200)}", expected "${expected.slice(0, 200)}"`,
    );
  }
  const route = handoff.route.join(" -> ");
  if (route !== ROUTES[prompt.kind].join(" -> ")) {
    throw new Error(`${what}: route ${route}, expected ${ROUTES[prompt.kind].join(" -> ")}`);
  }
  const calls: CallRecord[] = handoff.usage.map((u) => ({
    stage: u.stage,
    tier: u.tier,
    model: u.model,
    costUsd: u.cost_usd,
    cache: u.cache,
    savedUsd: u.saved_usd,
  }));
  const tiers = calls.map((c) => c.tier).join(",");
  if (tiers !== CALL_TIERS[prompt.kind].join(",")) {
    throw new Error(
      `${what}: calls of tiers ${tiers}, expected ${CALL_TIERS[prompt.kind].join(",")}`,
    );
  }
  for (const call of calls) {
    if (call.model !== MODELS[call.tier as keyof typeof MODELS].model) {
      throw new Error(`${what}: the ${call.tier} call was answered by ${call.model}`);
    }
  }
  const sum = calls.reduce((total, c) => total + c.costUsd, 0);
  if (Math.abs(sum - handoff.cost_usd) > 1e-9) {
    throw new Error(`${what}: cost_usd ${handoff.cost_usd} is not the sum of its calls' ${sum}`);
  }
  return {
    content,
    costUsd: handoff.cost_usd,
    calls,
    answerCache: handoff.cache,
    header: res.headers.get("x-handoff-cache"),
    sentMs,
    doneMs,
  };
}

// ---------------------------------------------------------------------------------------------
// One run: a fresh nats-server, upstream and mesh; a warm-up; the workload.

interface RunOutput {
  record: RunRecord;
  warnings: string[];
  startupMs: number;
  /** CPU ms each process used during the measured requests. */
  cpuMs: Map<string, number>;
  /** CPU ms the whole machine was busy during them (undefined off Linux). */
  machineMs: number | undefined;
}

async function runOnce(
  binary: string,
  label: string,
  cached: boolean,
  workload: ReturnType<typeof generateWorkload>,
  warmup: Prompt[],
): Promise<RunOutput> {
  const started = performance.now();
  progress(`${label}: nats-server, upstream, 4 services… `);
  const nats = await spawnNatsServer(binary);
  cleanups.push(() => nats.stop());
  const upstream = await startBenchUpstream();
  cleanups.push(() => upstream.close());
  const dir = mkdtempSync(join(tmpdir(), "handoff-bench-cache-"));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  const configPath = join(dir, "handoff.yaml");
  writeFileSync(configPath, configYaml(upstream.url, cached));

  const keys = new Map(TENANTS.map((t) => [t.name, randomBytes(24).toString("hex")]));
  const env: Record<string, string> = { BENCH_UPSTREAM_KEY: "sk-bench-upstream" };
  for (const t of TENANTS) env[t.keyEnv] = keys.get(t.name) as string;
  const mesh = await startBenchMesh({
    natsUrl: nats.url,
    configPath,
    env,
    onStop: (stop) => cleanups.push(stop),
  });
  const startupMs = performance.now() - started;
  progress(`ready in ${(startupMs / 1000).toFixed(1)} s\n`);
  const pids = new Map<string, number>([["bench (client + upstream)", process.pid]]);
  const natsPid = childPids(process.pid, "nats-server").at(-1);
  if (natsPid !== undefined) pids.set("nats-server", natsPid);
  for (const [name, proc] of mesh.processes) pids.set(name, proc.pid);

  const t0 = performance.now();
  const clock = () => performance.now() - t0;
  const check = () => interrupted.signal.throwIfAborted();

  if (warmup.length > 0) {
    // Each warm-up prompt twice, the second wave after the first: the miss and the hit paths.
    progress(`${label}: warm-up, ${warmup.length} prompts twice… `);
    for (let wave = 0; wave < 2; wave++) {
      await runConcurrent(warmup.length, settings.concurrency, async (i) => {
        check();
        const tenant = (TENANTS[i % TENANTS.length] as (typeof TENANTS)[number]).name;
        await ask(
          mesh.gatewayUrl,
          keys,
          { prompt: warmup[i] as Prompt, tenant, sampled: false, noCache: false },
          clock,
        );
      });
    }
    mesh.check();
    progress("done\n");
  }
  const offset = upstream.requests.length;

  progress(`${label}: ${workload.length} requests, ${settings.concurrency} in flight: `);
  const answers: AnswerRecord[] = [];
  let done = 0;
  const step = Math.max(1, Math.round(workload.length / 10));
  const meter = new CpuMeter(pids);
  const machineBefore = machineBusyMs();
  meter.start();
  const run = await runConcurrent(workload.length, settings.concurrency, async (index) => {
    check();
    const request = workload[index] as (typeof workload)[number];
    answers[index] = { index, ...(await ask(mesh.gatewayUrl, keys, request, clock)) };
    if (++done % step === 0) progress(`${done} `);
  });
  const cpuMs = meter.stop();
  const machineAfter = machineBusyMs();
  const machineMs =
    machineBefore !== undefined && machineAfter !== undefined
      ? machineAfter - machineBefore
      : undefined;
  mesh.check();
  const perSecond = (workload.length * 1000) / run.elapsedMs;
  progress(`→ ${perSecond.toFixed(0)} requests/s\n`);

  const upstreamCalls: UpstreamCall[] = upstream.requests.slice(offset).map((r) => {
    const tier = tierOfModel(String(r.body.model));
    if (!tier) throw new Error(`the upstream got a request for an unknown model ${r.body.model}`);
    return { tier, prompt: promptOf(r.body), turn: turnOf(r.body) };
  });
  const warnings = mesh.warnings();
  await cleanup();
  return {
    record: { cached, answers, upstream: upstreamCalls, elapsedMs: run.elapsedMs },
    warnings,
    startupMs,
    cpuMs,
    machineMs,
  };
}

async function main(): Promise<void> {
  const binary = findNatsServer();
  if (binary === undefined) {
    throw new Error("nats-server not found on PATH or in /usr/sbin, /usr/local/bin: install it");
  }
  const machine = machineFacts(binary);
  const startedAt = new Date();
  const pool = promptPool(POOL_SIZE, settings.seed);
  const spec: WorkloadSpec = {
    requests: settings.n,
    seed: settings.seed,
    pool,
    zipfExponent: ZIPF_EXPONENT,
    tenants: TENANTS,
    sampledShare: SAMPLED_SHARE,
    noCacheShare: NO_CACHE_SHARE,
  };
  const workload = generateWorkload(spec);
  const warmup = warmupPrompts(settings.warmup, POOL_SIZE);
  progress(
    `Handoff exact-cache benchmark: ${settings.n} requests over ${POOL_SIZE} prompts (Zipf ${ZIPF_EXPONENT}), concurrency ${settings.concurrency}, seed ${settings.seed}, upstream latency ${UPSTREAM_LATENCY_MS} ms\n`,
  );
  progress(
    `${machine.cpuModel}, ${machine.cores} cores (load average ${machine.loadAverage.toFixed(2)}), Node ${machine.node}, ${machine.natsServer}\n`,
  );

  const uncached = await runOnce(binary, "caching nothing", false, workload, warmup);
  const cached = await runOnce(binary, "exact cache", true, workload, warmup);

  const analysis = analyseCacheRuns(workload, uncached.record, cached.record);
  if (analysis.problems.length > 0) {
    throw new Error(`the runs do not add up:\n  ${analysis.problems.join("\n  ")}`);
  }
  const finishedAt = new Date();
  const report: CacheReport = {
    settings: {
      ...settings,
      poolSize: POOL_SIZE,
      zipfExponent: ZIPF_EXPONENT,
      tenants: TENANTS.map(({ name, share }) => ({ name, share })),
      sampledShare: SAMPLED_SHARE,
      noCacheShare: NO_CACHE_SHARE,
      ttlMs: TTL_MS,
      upstreamLatencyMs: UPSTREAM_LATENCY_MS,
    },
    machine,
    workload,
    analysis,
    config: configYaml("http://127.0.0.1:<port>", true),
    startupMs: [uncached.startupMs, cached.startupMs],
    cpuMs: [uncached.cpuMs, cached.cpuMs],
    machineMs: [uncached.machineMs, cached.machineMs],
    warnings: [...uncached.warnings, ...cached.warnings],
    startedAt,
    finishedAt,
    command: "npm run bench:cache",
  };
  console.log(renderCacheTables(report));
  if (report.warnings.length > 0) {
    console.log(`\nService warnings during the runs (${report.warnings.length}):`);
    for (const line of report.warnings.slice(0, 20)) console.log(`  ${line}`);
  }
  const file = new URL("bench/cache.md", root);
  writeFileSync(file, renderCacheMarkdown(report));
  progress(`\nwrote ${file.pathname} (${((+finishedAt - +startedAt) / 1000).toFixed(1)} s)\n`);
}

try {
  await main();
} catch (error) {
  if (interrupted.signal.aborted) {
    console.error("benchmark interrupted: no results");
    process.exitCode = 130;
  } else {
    const detail = error instanceof Error ? (error.stack ?? error.message) : error;
    console.error("\nbenchmark FAILED:", detail);
    process.exitCode = 1;
  }
} finally {
  await cleanup();
}
// Keep-alive sockets and timers of finished clients must not keep a finished run alive.
process.exit();
