/**
 * Turns the measurements of one run into the tables printed on stdout and into bench/README.md.
 * Pure: everything it says comes from its argument.
 */
import { fixed, formatTable, ratio, type Summary, sig3, wrap } from "./lib.ts";
import type { MachineFacts } from "./proc.ts";

export type WorkloadKey = "core" | "jetstream" | "mesh-tools" | "mesh-light";

export interface Traffic {
  /** Operations during which the messages were counted. */
  ops: number;
  counts: Map<string, { messages: number; bytes: number }>;
}

export interface Measurement {
  key: WorkloadKey;
  label: string;
  /** What one operation is, with its payload sizes. */
  what: string;
  /** The measured run, at the configured concurrency. */
  loaded: Summary;
  /** One operation at a time: latency without queueing. */
  serial: Summary | undefined;
  /** CPU ms each process used during the measured run. */
  cpuMs: Map<string, number>;
  /** Messages through nats-server per operation, counted during the warm-up. */
  traffic: Traffic | undefined;
}

export interface BenchSettings {
  n: number;
  concurrency: number;
  warmup: number;
  serialN: number;
}

export interface Report {
  settings: BenchSettings;
  machine: MachineFacts;
  measurements: Measurement[];
  serviceWarnings: string[];
  startedAt: Date;
  finishedAt: Date;
  command: string;
}

const PROCESS_ORDER = [
  "bench (client)",
  "nats-server",
  "gateway",
  "classifier",
  "tool-executor",
  "heavy-reasoner",
];

function find(report: Report, key: WorkloadKey): Measurement | undefined {
  return report.measurements.find((m) => m.key === key);
}

function resultsTable(report: Report): string {
  return formatTable(
    ["workload", "ops/s", "p50 ms", "p99 ms", "mean ms", "max ms"],
    report.measurements.map((m) => [
      m.label,
      fixed(m.loaded.opsPerSec, 0),
      fixed(m.loaded.p50Ms, 2),
      fixed(m.loaded.p99Ms, 2),
      fixed(m.loaded.meanMs, 2),
      fixed(m.loaded.maxMs, 1),
    ]),
    ["left", "right", "right", "right", "right", "right"],
  );
}

function whatTable(report: Report): string {
  return formatTable(
    ["workload", "one operation"],
    report.measurements.map((m) => [m.label, m.what]),
  );
}

/** Throughput as a fraction of each baseline's, latency as a multiple of each baseline's. */
function ratioTable(report: Report): string {
  const core = find(report, "core");
  const js = find(report, "jetstream");
  const meshes = report.measurements.filter((m) => m.key.startsWith("mesh"));
  const cell = (value: number, unit: string) =>
    Number.isFinite(value) ? `${sig3(value)}${unit}` : "n/a";
  return formatTable(
    [
      "mesh request",
      "ops/s ÷ JetStream",
      "ops/s ÷ core req-reply",
      "p50 ÷ JetStream",
      "p50 ÷ core",
      "p99 ÷ JetStream",
      "p99 ÷ core",
    ],
    meshes.map((m) => [
      m.label,
      cell(ratio(m.loaded.opsPerSec, js?.loaded.opsPerSec ?? Number.NaN), ""),
      cell(ratio(m.loaded.opsPerSec, core?.loaded.opsPerSec ?? Number.NaN), ""),
      cell(ratio(m.loaded.p50Ms, js?.loaded.p50Ms ?? Number.NaN), "×"),
      cell(ratio(m.loaded.p50Ms, core?.loaded.p50Ms ?? Number.NaN), "×"),
      cell(ratio(m.loaded.p99Ms, js?.loaded.p99Ms ?? Number.NaN), "×"),
      cell(ratio(m.loaded.p99Ms, core?.loaded.p99Ms ?? Number.NaN), "×"),
    ]),
    ["left", "right", "right", "right", "right", "right", "right"],
  );
}

function serialTable(report: Report): string | undefined {
  const rows = report.measurements.filter((m) => m.serial !== undefined);
  if (rows.length === 0) return undefined;
  return formatTable(
    ["workload", "ops/s", "p50 ms", "p99 ms"],
    rows.map((m) => {
      const s = m.serial as Summary;
      return [m.label, fixed(s.opsPerSec, 0), fixed(s.p50Ms, 2), fixed(s.p99Ms, 2)];
    }),
    ["left", "right", "right", "right"],
  );
}

/** CPU ms per operation of each process, and how many cores were busy on average. */
function cpuTable(report: Report): string {
  const names = PROCESS_ORDER.filter((name) => report.measurements.some((m) => m.cpuMs.has(name)));
  return formatTable(
    ["workload", ...names, "total", "cores busy"],
    report.measurements.map((m) => {
      const total = [...m.cpuMs.values()].reduce((sum, ms) => sum + ms, 0);
      return [
        m.label,
        ...names.map((name) => {
          const ms = m.cpuMs.get(name);
          return ms === undefined ? "" : fixed(ms / m.loaded.ops, 3);
        }),
        fixed(total / m.loaded.ops, 3),
        `${fixed(total / m.loaded.elapsedMs, 2)} of ${report.machine.cores}`,
      ];
    }),
    ["left", ...names.map(() => "right" as const), "right", "right"],
  );
}

/** Messages per operation through nats-server, by purpose, for each workload. */
function trafficTable(report: Report): string | undefined {
  const measured = report.measurements.filter((m) => m.traffic !== undefined);
  if (measured.length === 0) return undefined;
  const kinds = [
    ...new Set(measured.flatMap((m) => [...(m.traffic as Traffic).counts.keys()])),
  ].sort();
  const perOp = (m: Measurement, kind: string) => {
    const traffic = m.traffic as Traffic;
    const count = traffic.counts.get(kind);
    return count === undefined ? "" : fixed(count.messages / traffic.ops, 1);
  };
  const bytes = (m: Measurement, kind: string) => {
    const count = (m.traffic as Traffic).counts.get(kind);
    return count === undefined || count.messages === 0
      ? ""
      : `${fixed(count.bytes / count.messages, 0)} B`;
  };
  const totals = measured.map((m) => {
    const traffic = m.traffic as Traffic;
    const all = [...traffic.counts.values()].reduce((sum, c) => sum + c.messages, 0);
    return fixed(all / traffic.ops, 1);
  });
  return formatTable(
    ["messages per operation", ...measured.map((m) => m.label)],
    [
      ...kinds.map((kind) => [
        kind,
        ...measured.map((m) => {
          const n = perOp(m, kind);
          return n === "" ? "" : `${n} (${bytes(m, kind)})`;
        }),
      ]),
      ["total", ...totals],
    ],
    ["left", ...measured.map(() => "right" as const)],
  );
}

/** The tables, as printed at the end of a run. */
export function renderTables(report: Report): string {
  const { n, concurrency, serialN } = report.settings;
  const sections = [
    `Results: ${n} operations, ${concurrency} in flight\n\n${resultsTable(report)}`,
    `Mesh relative to the baselines (same run, same server)\n\n${ratioTable(report)}`,
  ];
  const serial = serialTable(report);
  if (serial) sections.push(`Unloaded: ${serialN} operations, one at a time\n\n${serial}`);
  sections.push(`CPU ms per operation during the measured run\n\n${cpuTable(report)}`);
  const traffic = trafficTable(report);
  if (traffic)
    sections.push(`NATS messages per operation (counted during the warm-up)\n\n${traffic}`);
  return sections.join("\n\n");
}

const cpuPerOp = (m: Measurement, name?: string): number =>
  (name === undefined
    ? [...m.cpuMs.values()].reduce((sum, ms) => sum + ms, 0)
    : (m.cpuMs.get(name) ?? Number.NaN)) / m.loaded.ops;

/** Cores kept busy on average during the measured run, by one process or by all of them. */
const busyOf = (m: Measurement, name?: string): number =>
  cpuPerOp(m, name) * (m.loaded.ops / m.loaded.elapsedMs);
const coresBusy = (m: Measurement): number => busyOf(m);

/** Messages per operation of one kind (or all kinds) seen during the warm-up. */
function messagesPerOp(m: Measurement, kind?: string): number {
  if (m.traffic === undefined) return Number.NaN;
  const counts = [...m.traffic.counts].filter(([k]) => kind === undefined || k === kind);
  return counts.reduce((sum, [, c]) => sum + c.messages, 0) / m.traffic.ops;
}

function meanBytes(m: Measurement, kind: string): number {
  const count = m.traffic?.counts.get(kind);
  return count && count.messages > 0 ? count.bytes / count.messages : Number.NaN;
}

function need(report: Report, key: WorkloadKey): Measurement {
  const m = find(report, key);
  if (m === undefined) throw new Error(`the report lacks the ${key} measurement`);
  return m;
}

const WIDTH = 100;

/** bench/README.md for this run: method, command, machine, tables and what they say. */
export function renderReadme(report: Report): string {
  const { settings, machine } = report;
  const core = need(report, "core");
  const js = need(report, "jetstream");
  const tools = need(report, "mesh-tools");
  const light = need(report, "mesh-light");
  const date = `${report.startedAt.toISOString().slice(0, 16).replace("T", " ")} UTC`;
  const seconds = (+report.finishedAt - +report.startedAt) / 1000;
  const x = (value: number) => `${sig3(value)}×`;
  const pct = (value: number) => `${sig3(100 * value)} %`;
  const ms = (value: number) => `${fixed(value, 2)} ms`;
  const serial = serialTable(report);
  const traffic = trafficTable(report);

  // Where the CPU went during the tools run, and the ceiling it implies.
  const toolsCpu = cpuPerOp(tools);
  const ceiling = (machine.cores * 1000) / toolsCpu;
  const cpuBound = coresBusy(tools) >= 0.8 * machine.cores;
  const share = (name: string) => pct(cpuPerOp(tools, name) / toolsCpu);
  const littleMean = (settings.concurrency * 1000) / tools.loaded.opsPerSec;

  // Job-record writes beyond the gateway's and one per stage visit are compare-and-set retries.
  const kvWrites = messagesPerOp(tools, "KV write ($KV)");
  const kvRetries = kvWrites - 3;
  const envelopeToClassifier = meanBytes(tools, "JetStream publish (classifier)");
  const envelopeToTools = meanBytes(tools, "JetStream publish (tool-executor)");
  const resultBytes = meanBytes(tools, "result (core publish)");

  const blocks: string[] = [];
  /** A verbatim block: heading, table, code. */
  const raw = (...lines: string[]) => blocks.push(lines.join("\n"));
  /** A paragraph, wrapped. */
  const text = (...parts: string[]) => blocks.push(wrap(parts.join(" "), WIDTH));
  const quote = (...parts: string[]) => blocks.push(wrap(parts.join(" "), WIDTH, "> "));
  const bullets = (...items: string[]) =>
    blocks.push(items.map((item) => wrap(item, WIDTH, "- ", "  ")).join("\n"));

  raw("# Benchmarks");
  text(
    "`npm run bench` measures what the Handoff mesh costs on top of NATS: its throughput and",
    "latency next to two baselines measured **in the same run, on the same freshly spawned",
    "nats-server**, so that the ratios between them mean something on any machine.",
  );
  quote(
    "The numbers below are from **one run on one machine** (described below). Absolute numbers",
    "move with the CPU, the core count and whatever else the machine is doing: compare the",
    "**ratios** (mesh ÷ baseline) across machines and commits, not the absolute numbers. This file",
    "is rewritten by every run.",
  );

  raw("## What is measured, and how");
  text(
    "One nats-server (the one on `PATH` or in `/usr/sbin`, on a free port with a temporary",
    "JetStream store; never `NATS_URL` or a server already running) serves all workloads, one",
    "after the other:",
  );
  bullets(
    "**A. core NATS request-reply**: a responder subscribed to `bench.rr` answers every request " +
      `with a fixed JSON reply shaped like a job result (${core.what}). Requester and responder ` +
      "are two connections in the benchmark process.",
    "**B. JetStream publish → pull → ackAck**: a work-queue stream on file storage (like the " +
      "mesh's `HANDOFF_JOBS`) with a durable pull consumer read with `consume()`. Each message is " +
      "a real job envelope from the testkit, padded to about 1.5 KB. One operation lasts from just " +
      "before `js.publish` until the consumer's `ackAck()` is confirmed by the server. Publisher " +
      "and consumer are two connections in the benchmark process; the consumer decodes each " +
      "message and acks it without waiting for the previous ack.",
    "**mesh**: the four services (`gateway`, `classifier`, `tool-executor`, `heavy-reasoner`) run " +
      "as four processes from their built `services/<name>/dist/main.js`, with the built-in `sim` " +
      "models (deterministic, zero latency), `OTEL_TRACES_EXPORTER=none` (spans are still made, " +
      "just not exported) and `LOG_LEVEL=warn`. The benchmark sends `POST /v1/chat/completions` " +
      "with `fetch` (undici, keep-alive) and checks every answer: HTTP 200, the expected route, " +
      "and `391` in the answer to the arithmetic. Two kinds of request, measured separately: " +
      `"What is 17 * 23?" (${tools.what}) and "Hello there" (${light.what}).`,
  );
  text(
    `Each workload gets a warm-up of ${settings.warmup} operations (not measured), then`,
    `**${settings.n} operations with ${settings.concurrency} in flight**: a new one starts as soon`,
    "as one finishes. Throughput is operations ÷ wall time of that run; latency is each",
    "operation's own start-to-end time, summarised as nearest-rank p50 and p99. Then",
    `${settings.serialN} operations **one at a time** give the latency without any queueing. Any`,
    "failed or wrong operation aborts the whole run: there are no numbers with errors in them.",
  );
  text(
    "Two more things are recorded to explain the numbers: the **CPU time** each process used",
    "during the measured run (from `/proc/<pid>/stat`; the benchmark itself from",
    "`process.cpuUsage()`), and the **NATS messages** one operation costs, counted by purpose by a",
    "wildcard subscriber (on `handoff.v1.>`, `$KV.>`, `$JS.API.>`, `$JS.ACK.>`, `_INBOX.>` …)",
    "during the warm-up only, since copying every message to one more client would slow the",
    "measured run.",
  );

  raw("## Run it");
  raw(
    "```bash",
    "npm run bench                                   # builds, then runs bench/mesh.bench.ts",
    "BENCH_N=5000 BENCH_CONCURRENCY=32 npm run bench # more operations, more in flight",
    "```",
  );
  raw(
    "| Variable | Default | Meaning |",
    "| --- | --- | --- |",
    "| `BENCH_N` | 2000 | measured operations per workload |",
    "| `BENCH_CONCURRENCY` | 16 | operations in flight during the measured run |",
    "| `BENCH_WARMUP` | 200 | unmeasured operations before it (0 to skip) |",
    "| `BENCH_SERIAL_N` | 200 | operations one at a time, for unloaded latency (0 to skip) |",
  );
  text(
    "It needs `nats-server` and Node ≥ 22.18 (it runs the TypeScript directly); the services are",
    "the build output, so `npm run bench` builds first. Everything it starts (nats-server, the",
    "four services, the temporary store) is stopped and removed at the end, also on failure or",
    "Ctrl-C.",
  );

  raw("## Machine");
  bullets(
    `CPU: ${machine.cpuModel}, ${machine.cores} cores (as the OS sees them), ${machine.memoryGiB} GiB RAM`,
    `OS: ${machine.kernel}`,
    `Node.js ${machine.node}`,
    `1-minute load average when the run started: ${fixed(machine.loadAverage, 2)}`,
    machine.natsServer,
    "nats-server, the four services and the benchmark's own client all share these cores.",
  );

  raw(`## Results: ${date}, one run of ${fixed(seconds, 0)} s`);
  text(
    `Command: \`${report.command}\` (N = ${settings.n}, concurrency ${settings.concurrency},`,
    `warm-up ${settings.warmup}, ${settings.serialN} one at a time).`,
  );
  raw(whatTable(report));
  raw(`### Throughput and latency, ${settings.concurrency} in flight`);
  raw(resultsTable(report));
  raw("### The mesh relative to the baselines");
  text(
    "Throughput as a fraction of the baseline's (1 = as fast); latency as a multiple of the",
    "baseline's (1× = as quick).",
  );
  raw(ratioTable(report));
  if (serial) {
    raw("### Unloaded latency, one operation at a time");
    raw(serial);
  }
  raw("### CPU per operation (ms) during the measured run");
  text(
    "CPU milliseconds each process spent per operation; *cores busy* is the total CPU time over",
    "the wall time of the run.",
  );
  raw(cpuTable(report));
  if (traffic) {
    raw("### NATS messages per operation (counted during the warm-up)");
    text(
      "A JetStream message is counted twice: once published, once delivered to the consumer.",
      "Replies (PubAcks, KV reads, ack confirmations, request replies) all travel on `_INBOX`.",
      "Mean payload size in brackets.",
    );
    raw(traffic);
  }

  raw("## What the numbers say");
  text(
    `**Throughput.** The mesh answered the 2-hop arithmetic request`,
    `${fixed(tools.loaded.opsPerSec, 0)} times a second:`,
    `${pct(ratio(tools.loaded.opsPerSec, js.loaded.opsPerSec))} of the raw JetStream baseline and`,
    `${pct(ratio(tools.loaded.opsPerSec, core.loaded.opsPerSec))} of core request-reply. The 1-hop`,
    `greeting reached ${fixed(light.loaded.opsPerSec, 0)}/s`,
    `(${pct(ratio(light.loaded.opsPerSec, js.loaded.opsPerSec))} of JetStream); the 2-hop request`,
    `ran at ${pct(ratio(tools.loaded.opsPerSec, light.loaded.opsPerSec))} of the 1-hop rate.`,
  );
  text(
    cpuBound ? "**The mesh is CPU-bound here.**" : "**The mesh was not CPU-bound in this run.**",
    `During the arithmetic run ${fixed(coresBusy(tools), 2)} of ${machine.cores} cores were busy,`,
    `and one request cost ${fixed(toolsCpu, 2)} ms of CPU in all processes together, against`,
    `${fixed(cpuPerOp(js), 2)} ms for a JetStream baseline message. ${machine.cores} cores ÷`,
    `${fixed(toolsCpu, 2)} ms puts the ceiling at about ${fixed(ceiling, 0)} requests/s,`,
    cpuBound
      ? "close to what was measured."
      : `above what was measured, so ${settings.concurrency} in flight did not fill the machine: try a higher BENCH_CONCURRENCY.`,
    `The CPU is spread over every process on the path: gateway ${share("gateway")}, classifier`,
    `${share("classifier")}, tool-executor ${share("tool-executor")}, nats-server`,
    `${share("nats-server")}, and the benchmark's own HTTP client ${share("bench (client)")}`,
    "(fetch and JSON parsing compete with the mesh for the same cores, so a load generator on",
    "another machine would measure a somewhat faster mesh). The baselines are bounded by the one",
    "Node process that runs both of their ends (during the JetStream baseline it kept",
    `${fixed(busyOf(js, "bench (client)"), 2)} of a core busy, its event loop being one thread),`,
    "not by nats-server, which spent",
    `${fixed(cpuPerOp(js, "nats-server"), 3)} ms of CPU per JetStream message and`,
    `${fixed(cpuPerOp(core, "nats-server"), 3)} ms per request-reply.`,
  );
  text(
    `**Where a request's work goes.** One arithmetic request costs`,
    `${fixed(messagesPerOp(tools), 0)} NATS messages, against ${fixed(messagesPerOp(js), 0)} for a`,
    `baseline JetStream message and ${fixed(messagesPerOp(core), 0)} for a core request-reply.`,
    "Each mesh hop is a JetStream publish (and its PubAck), a pull delivery and an ack, plus a",
    "write of the job record to the `handoff-jobs` KV bucket, which is a read and a",
    "compare-and-set write: two round trips. The gateway adds its own record write (read +",
    "create) and the job's first publish, and the last stage sends the result back over core NATS.",
    "Around that, the gateway parses HTTP and validates the request with zod, every stage decodes",
    "and validates the envelope with zod and validates its output again, and every publish and",
    "stage makes OpenTelemetry spans.",
    ...(Number.isFinite(kvRetries) && kvRetries >= 0.05
      ? [
          `Of the ${fixed(kvWrites, 2)} KV writes per arithmetic request, about`,
          `${fixed(kvRetries, 2)} were retries: the classifier writes its "running" record *after*`,
          "forwarding the job, so the tool-executor's final write sometimes lands first, the",
          "classifier's compare-and-set fails, and it re-reads the record, finds it finished and",
          "gives up. Harmless, but wasted work.",
        ]
      : []),
  );
  text(
    cpuBound ? "**Latency under load is mostly queueing.**" : "**Latency under load.**",
    `With ${settings.concurrency} in flight, the arithmetic request's mean latency of`,
    `${ms(tools.loaded.meanMs)} (p50 ${ms(tools.loaded.p50Ms)}) is just Little's law at`,
    `${fixed(tools.loaded.opsPerSec, 0)} requests/s: ${settings.concurrency} ÷ throughput =`,
    `${ms(littleMean)}. Each request mostly waits its turn for a core.`,
    ...(tools.serial && js.serial
      ? [
          `One at a time, the arithmetic request takes ${ms(tools.serial.p50Ms)} at p50`,
          `(${x(ratio(tools.serial.p50Ms, js.serial.p50Ms))} the JetStream baseline's`,
          `${ms(js.serial.p50Ms)}), the greeting ${light.serial ? ms(light.serial.p50Ms) : "n/a"}.`,
          "That unloaded time is the real price of the path: about six round trips to nats-server",
          "on the critical path (the gateway's record read, create and first publish; the",
          "classifier's publish to the tool-executor; the tool-executor's record read and write",
          "before it publishes the result), two pull deliveries, the HTTP request, and the",
          "validation and tracing work above, across four processes. The classifier's own record",
          "write and both acks happen off the critical path, but still cost CPU.",
        ]
      : []),
  );
  text(
    "**In proportion.** The sim models answer in zero time, so everything measured here is",
    "orchestration overhead. A real model call takes hundreds of milliseconds to seconds, next to",
    "which the few milliseconds a request spends in the mesh hardly show in its latency; what the",
    `mesh costs is throughput per core: about ${fixed(1000 / toolsCpu, 0)} two-hop requests per`,
    "CPU-second on this machine (load generator included), before any model runs.",
  );
  text(
    "**Caveats.** One run, on a small machine shared by nats-server, four services and the load",
    "generator. When this benchmark was written, eleven runs within a few minutes on its 2-core",
    "virtual machine (shared with other work) gave an arithmetic-request ÷ JetStream throughput",
    "ratio between 0.055 and 0.094: the baselines are measured over a fraction of a second each,",
    "and everything is sensitive to whatever else the machine runs. Expect 20 % or more between",
    "single runs on a small shared machine, check the load average above, and run it a few times",
    "(or with a larger `BENCH_N`) before reading much into a change. The JetStream baseline's",
    "message is about",
    "1.5 KB; the envelopes the mesh actually moved averaged",
    `${fixed(envelopeToClassifier, 0)} B to the classifier and ${fixed(envelopeToTools, 0)} B to`,
    `the tool-executor, and its results ${fixed(resultBytes, 0)} B, so if anything the baseline`,
    "carries more bytes than the mesh does.",
  );
  text(
    report.serviceWarnings.length > 0
      ? `The services logged ${report.serviceWarnings.length} warning(s) during the run, e.g. \`${report.serviceWarnings[0]}\`.`
      : "The services logged no warnings or errors during the run.",
  );
  raw("## Other benchmarks");
  text(
    "Each writes its own report, rewritten by every run; the figures below are from their last",
    "runs on this machine (2026-12-02), each next to its baseline measured in the same run.",
  );
  raw(
    "| benchmark | baseline | with the feature |",
    "| --- | --- | --- |",
    "| `npm run bench:cache` ([cache.md](cache.md)): 2,000 requests, 300 prompts, 2 tenants | caching nothing: 2,185 upstream calls, $35.96 | exact cache on every tier: 73.9 % of cacheable lookups hit, 806 upstream calls, $12.91 ($23.05 saved); no answer crossed tenants |",
    "| `npm run bench:handoff` ([handoff-tokens.md](handoff-tokens.md)): 30 conversations of 20-60 turns, 3 jobs each | forwarding everything: 747,865 tokens to heavy, 97.6 % prefix-cached on later jobs, $0.980, facts 30/30 | `handoff_tokens.heavy: 5000`: 0.52x the tokens, 48.9 % prefix-cached, $0.807, facts 30/30 |",
    "| `npm run bench:routing` ([routing.md](routing.md)) | the rules | a learned decision, a cascade verdict: p99 under 1 ms in-process |",
  );
  return `${blocks.join("\n\n")}\n`;
}
