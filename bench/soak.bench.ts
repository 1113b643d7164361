/**
 * The soak benchmark (`node bench/soak.bench.ts` after a build): does the mesh return to a steady
 * size after load? It spawns its own nats-server and the four services (deploy/config/sim.yaml:
 * the `sim` models answer at once), sends SOAK_N requests (default 100,000) at SOAK_CONCURRENCY in
 * flight (default 16) in SOAK_ROUNDS rounds (default 10), alternating the one-hop "Hello there" and
 * the two-hop "What is 17 * 23?", and checks every answer. Memory is read before the load (after
 * SOAK_WARMUP requests, default 2000, and the same idle wait as at the end), after
 * each round once the load has stopped for SOAK_SETTLE_MS (default 2000), and once more after the
 * mesh stood idle for SOAK_IDLE_MS (default 65000: past every job's 60 s deadline; 0 skips it):
 * every process's RSS (VmRSS), and each service's V8 heap after a full garbage collection, through
 * the inspector (the services are started with `--inspect=127.0.0.1:0`; SOAK_HEAP=0 leaves it off
 * and reads RSS only). SOAK_NODE_OPTIONS adds V8/Node flags to the services (e.g.
 * `--max-semi-space-size=8`), SOAK_OUT names the report (default `bench/soak`: bench/soak.md and
 * bench/soak.svg). Prints a line per round and the verdicts. Any failed request, any service that
 * exits or logs an error, fails the whole run.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { basename } from "node:path";
import { ServiceNames } from "@handoff/contracts";
import { SERVICE_NODE_OPTIONS } from "@handoff/nats-process";
import { findNatsServer, type NatsHandle, spawnNatsServer } from "@handoff/testkit";
import { type BenchMesh, startBenchMesh } from "./bench-mesh.ts";
import { envInt, envText, runConcurrent, summarize } from "./lib.ts";
import { childPids, machineFacts } from "./proc.ts";
import {
  type MemorySample,
  progressLine,
  renderSoakMarkdown,
  renderSoakSvg,
  renderSoakTables,
  type SoakReport,
  type SoakRound,
  type SoakSnapshot,
} from "./soak-report.ts";

const settings = {
  n: envInt(process.env, "SOAK_N", 100_000),
  concurrency: envInt(process.env, "SOAK_CONCURRENCY", 16),
  rounds: envInt(process.env, "SOAK_ROUNDS", 10),
  settleMs: envInt(process.env, "SOAK_SETTLE_MS", 2_000, 0),
  idleMs: envInt(process.env, "SOAK_IDLE_MS", 65_000, 0),
  warmup: envInt(process.env, "SOAK_WARMUP", 2_000, 0),
};
const heapProbe = envInt(process.env, "SOAK_HEAP", 1, 0) !== 0;
/** An optional text setting from the environment: undefined when unset or blank. */
const nodeOptions = envText(process.env, "SOAK_NODE_OPTIONS");
const out = envText(process.env, "SOAK_OUT") ?? "bench/soak";

const HTTP_TIMEOUT_MS = 30_000;
const INSPECTOR_TIMEOUT_MS = 20_000;
const root = new URL("..", import.meta.url);
const configPath = new URL("deploy/config/sim.yaml", root).pathname;

// ---------------------------------------------------------------------------------------------
// Clean-up: whatever happens (error, Ctrl-C, SIGTERM), the services and nats-server go away.

const cleanups: Array<() => Promise<void>> = [];
let cleaning: Promise<void> | undefined;
/** Aborted on SIGINT/SIGTERM: stops the load at once, so the services can drain quickly. */
const interrupted = new AbortController();

function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const fn of cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch (error) {
        console.error("clean-up step failed:", error);
      }
    }
  })();
  return cleaning;
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: stopping the load, the services and nats-server…`);
    interrupted.abort(new Error(`interrupted by ${signal}`));
    void cleanup().finally(() => process.exit(130));
  });
}

// ---------------------------------------------------------------------------------------------
// The requests.

interface ChatKind {
  question: string;
  route: string[];
  /** Text the answer must contain, if any. */
  contains?: string;
}

const KINDS: readonly ChatKind[] = [
  { question: "Hello there", route: ["classifier"] },
  { question: "What is 17 * 23?", route: ["classifier", "tool-executor"], contains: "391" },
];

/** One checked request: HTTP 200, an answer, the expected route and text (as bench/mesh.bench.ts). */
async function chat(gatewayUrl: string, kind: ChatKind, index: number): Promise<void> {
  // A timer cleared when the request is over: the client must not hold each request's timer for
  // the whole timeout either (AbortSignal.timeout would), or its own memory grows with the load.
  const expired = new AbortController();
  const timer = setTimeout(
    () => expired.abort(new Error(`no answer within ${HTTP_TIMEOUT_MS} ms`)),
    HTTP_TIMEOUT_MS,
  );
  let res: Response;
  let text: string;
  try {
    res = await fetch(`${gatewayUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "handoff",
        messages: [{ role: "user", content: kind.question }],
      }),
      signal: AbortSignal.any([expired.signal, interrupted.signal]),
    });
    text = await res.text();
  } finally {
    clearTimeout(timer);
  }
  if (res.status !== 200) {
    throw new Error(`request ${index}: HTTP ${res.status}: ${text.slice(0, 500)}`);
  }
  const answer = JSON.parse(text) as {
    choices?: Array<{ message?: { content?: unknown } }>;
    handoff?: { route?: unknown };
  };
  const content = answer.choices?.[0]?.message?.content;
  if (typeof content !== "string" || content === "") {
    throw new Error(`request ${index}: no answer text in ${text.slice(0, 500)}`);
  }
  if (kind.contains !== undefined && !content.includes(kind.contains)) {
    throw new Error(`request ${index}: answer "${content}" lacks "${kind.contains}"`);
  }
  const route = kind.route.join(" -> ");
  const got = Array.isArray(answer.handoff?.route) ? answer.handoff.route.join(" -> ") : "?";
  if (got !== route) throw new Error(`request ${index}: route ${got}, expected ${route}`);
}

// ---------------------------------------------------------------------------------------------
// Memory.

/** VmRSS of `pid` in MB (10^6 bytes), NaN when it cannot be read. */
function rssMb(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1];
    return kb === undefined ? Number.NaN : (Number(kb) * 1024) / 1e6;
  } catch {
    return Number.NaN;
  }
}

/** The inspector's WebSocket URL a service printed at start (`--inspect=127.0.0.1:0`). */
function inspectorUrl(output: string): string | undefined {
  return /Debugger listening on (ws:\/\/\S+)/.exec(output)?.[1];
}

/**
 * Forces a full GC in the process behind `url` through the Chrome DevTools protocol, then reads
 * the V8 heap in use and committed, in MB. One short-lived connection per reading.
 */
async function heapAfterGc(url: string): Promise<{ usedMb: number; totalMb: number }> {
  const socket = new WebSocket(url);
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  const failAll = (error: Error) => {
    for (const waiter of pending.values()) waiter.reject(error);
    pending.clear();
  };
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(String(event.data)) as {
      id?: number;
      result?: unknown;
      error?: { message: string };
    };
    if (message.id === undefined) return;
    const waiter = pending.get(message.id);
    pending.delete(message.id);
    if (message.error) waiter?.reject(new Error(`inspector: ${message.error.message}`));
    else waiter?.resolve(message.result);
  });
  socket.addEventListener("close", () => failAll(new Error("inspector connection closed")));
  socket.addEventListener("error", () => failAll(new Error(`inspector connection failed`)));
  const call = (method: string) =>
    new Promise<unknown>((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      socket.send(JSON.stringify({ id, method }));
    });
  const timer = setTimeout(() => {
    failAll(new Error(`no answer from the inspector at ${url} within ${INSPECTOR_TIMEOUT_MS} ms`));
    socket.close();
  }, INSPECTOR_TIMEOUT_MS);
  try {
    await new Promise<void>((resolve, reject) => {
      socket.addEventListener("open", () => resolve(), { once: true });
      socket.addEventListener("error", () => reject(new Error(`cannot reach ${url}`)), {
        once: true,
      });
    });
    await call("HeapProfiler.collectGarbage");
    const usage = (await call("Runtime.getHeapUsage")) as { usedSize: number; totalSize: number };
    return { usedMb: usage.usedSize / 1e6, totalMb: usage.totalSize / 1e6 };
  } finally {
    clearTimeout(timer);
    socket.close();
  }
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const binary = findNatsServer();
  if (binary === undefined) {
    throw new Error("nats-server not found on PATH or in /usr/sbin, /usr/local/bin: install it");
  }
  const machine = machineFacts(binary);
  const startedAt = new Date();
  const { n, concurrency, rounds, settleMs, idleMs, warmup } = settings;
  if (rounds > n) throw new Error(`SOAK_ROUNDS (${rounds}) is more than SOAK_N (${n})`);
  console.log(
    `Handoff soak: ${warmup} warm-up + ${n} requests, ${concurrency} in flight, ${rounds} rounds, ${settleMs} ms settle, ${idleMs} ms idle at the end, heap ${heapProbe ? "via the inspector" : "not read"}${nodeOptions ? `, services with ${nodeOptions}` : ""}`,
  );
  console.log(
    `${machine.cpuModel}, ${machine.cores} cores (load average ${machine.loadAverage.toFixed(2)}), Node ${machine.node}, ${machine.natsServer}\n`,
  );

  // Always a fresh server of our own on a free port with a temporary store: never NATS_URL.
  const nats: NatsHandle = await spawnNatsServer(binary);
  cleanups.push(() => nats.stop());

  process.stdout.write("starting the mesh (4 processes)… ");
  const options = [
    envText(process.env, "NODE_OPTIONS"),
    nodeOptions,
    heapProbe ? "--inspect=127.0.0.1:0" : "",
  ]
    .filter(Boolean)
    .join(" ");
  const mesh: BenchMesh = await startBenchMesh({
    natsUrl: nats.url,
    configPath,
    env: options ? { NODE_OPTIONS: options } : {},
    onStop: (stop) => cleanups.push(stop),
  });
  console.log("ready");

  const pids = new Map<string, number>();
  for (const name of ServiceNames) {
    const proc = mesh.processes.get(name);
    if (proc) pids.set(name, proc.pid);
  }
  const natsPid = childPids(process.pid, "nats-server")[0];
  if (natsPid !== undefined) pids.set("nats-server", natsPid);
  const inspectors = new Map<string, string>();
  if (heapProbe) {
    for (const [name, proc] of mesh.processes) {
      const url = inspectorUrl(proc.output());
      if (url === undefined) throw new Error(`${name} printed no inspector URL`);
      inspectors.set(name, url);
    }
  }

  const sample = async (): Promise<Record<string, MemorySample>> => {
    const memory: Record<string, MemorySample> = {};
    // RSS first, as the settled process holds it; the forced GC comes after.
    for (const [name, pid] of pids) memory[name] = { rssMb: rssMb(pid) };
    for (const [name, url] of inspectors) {
      const entry = memory[name];
      if (!entry) continue;
      const heap = await heapAfterGc(url);
      entry.heapMb = heap.usedMb;
      entry.heapTotalMb = heap.totalMb;
    }
    return memory;
  };
  const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  const names = [...pids.keys()];

  const load = (count: number, offset: number) =>
    runConcurrent(count, concurrency, (i) => {
      interrupted.signal.throwIfAborted();
      const index = offset + i;
      return chat(mesh.gatewayUrl, KINDS[index % KINDS.length] as ChatKind, index);
    });
  // Warm-up, then as long an idle wait as at the end: the start reading is then comparable with
  // the idle one, with the code compiled and the pools filled in both.
  if (warmup > 0) {
    process.stdout.write(`warm-up: ${warmup} requests, then idle… `);
    await load(warmup, 0);
    mesh.check();
  }
  const startIdleMs = warmup > 0 && idleMs > 0 ? idleMs : settleMs;
  await pause(startIdleMs);
  const start: SoakSnapshot = { idleMs: startIdleMs, memory: await sample() };
  console.log(progressLine("start", start.memory, names));

  const records: SoakRound[] = [];
  const base = Math.floor(n / rounds);
  let sent = 0;
  for (let round = 1; round <= rounds; round++) {
    const size = round === rounds ? n - sent : base;
    const result = await load(size, warmup + sent);
    sent += size;
    mesh.check();
    const summary = summarize(result);
    await pause(settleMs);
    mesh.check();
    const record: SoakRound = {
      round,
      requests: size,
      totalRequests: sent,
      elapsedMs: summary.elapsedMs,
      opsPerSec: summary.opsPerSec,
      p50Ms: summary.p50Ms,
      p99Ms: summary.p99Ms,
      memory: await sample(),
    };
    records.push(record);
    const label = `round ${round}/${rounds}: ${sent} requests, ${summary.opsPerSec.toFixed(0)} req/s, p99 ${summary.p99Ms.toFixed(1)} ms`;
    console.log(progressLine(label, record.memory, names));
  }

  let idle: SoakSnapshot | undefined;
  if (idleMs > 0) {
    process.stdout.write(`idle for ${(idleMs / 1000).toFixed(0)} s… `);
    await pause(idleMs);
    mesh.check();
    idle = { idleMs, memory: await sample() };
    console.log(progressLine("idle", idle.memory, names));
  }

  const finishedAt = new Date();
  const auditFile = new URL("bench/soak-audit.md", root);
  const env = [`SOAK_N=${n}`, `SOAK_CONCURRENCY=${concurrency}`, `SOAK_ROUNDS=${rounds}`];
  if (settleMs !== 2_000) env.push(`SOAK_SETTLE_MS=${settleMs}`);
  if (idleMs !== 65_000) env.push(`SOAK_IDLE_MS=${idleMs}`);
  if (warmup !== 2_000) env.push(`SOAK_WARMUP=${warmup}`);
  if (!heapProbe) env.push("SOAK_HEAP=0");
  if (nodeOptions) env.push(`SOAK_NODE_OPTIONS='${nodeOptions}'`);
  if (out !== "bench/soak") env.push(`SOAK_OUT=${out}`);
  const report: SoakReport = {
    settings,
    machine,
    command: `npm run build && ${env.join(" ")} node bench/soak.bench.ts`,
    processes: names,
    services: [...ServiceNames],
    rounds: records,
    start,
    idle,
    nodeOptions,
    heapNote: heapProbe
      ? "The services run with `--inspect=127.0.0.1:0` added to their `NODE_OPTIONS` (beside the " +
        `launchers' heap limits, \`${SERVICE_NODE_OPTIONS}\`); after the RSS reading, the ` +
        "benchmark connects to each one's inspector, forces a full garbage collection " +
        "(`HeapProfiler.collectGarbage`) and reads the V8 heap in use (`Runtime.getHeapUsage`): " +
        "what stays reachable, which is what a leak grows."
      : "The V8 heap was not read (`SOAK_HEAP=0`): RSS only.",
    startedAt,
    finishedAt,
    warnings: mesh.warnings(),
    audit: existsSync(auditFile) ? readFileSync(auditFile, "utf8") : undefined,
  };
  console.log(`\n${renderSoakTables(report)}`);
  if (report.warnings.length > 0) {
    console.log(`\nService warnings during the run (${report.warnings.length}):`);
    for (const line of report.warnings.slice(0, 20)) console.log(`  ${line}`);
  }
  const markdown = new URL(`${out}.md`, root);
  const svg = new URL(`${out}.svg`, root);
  writeFileSync(markdown, renderSoakMarkdown(report, basename(svg.pathname)));
  writeFileSync(svg, renderSoakSvg(report));
  console.log(
    `\nwrote ${markdown.pathname} and ${svg.pathname} (${((+finishedAt - +startedAt) / 1000).toFixed(1)} s)`,
  );
}

try {
  await main();
} catch (error) {
  if (interrupted.signal.aborted) {
    console.error("soak interrupted: no results");
    process.exitCode = 130;
  } else {
    const detail = error instanceof Error ? (error.stack ?? error.message) : error;
    console.error("\nsoak FAILED:", detail);
    process.exitCode = 1;
  }
} finally {
  await cleanup();
}
// Keep-alive sockets and timers of finished clients must not keep a finished run alive.
process.exit();
