/**
 * Turns the measurements of one run into the tables printed on stdout and into bench/README.md.
 * Pure: everything it says comes from its argument.
 */
import { SERVICE_NODE_OPTIONS } from "@handoff/nats-process";
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
  /** Resident set size (VmRSS) of each process right after the measured run, in bytes. */
  rssBytes: Map<string, number>;
  /** Cores other processes on the machine kept busy during the measured run (/proc/stat). */
  otherCores?: number | undefined;
  /** Messages through nats-server per operation, counted during the warm-up. */
  traffic: Traffic | undefined;
}

/**
 * The paths of the peer comparison, all to the same mock OpenAI upstream. `relay` is the bare
 * relay (bench/bare-relay.ts): the mesh's shape, a front and a tier on NATS request-reply, with
 * none of Handoff's work.
 */
export type PeerKey = "direct" | "portkey" | "relay" | "handoff" | "handoff-traced";

/** One path of the peer comparison (`BENCH_PEERS=1`), measured like a main workload. */
export interface PeerMeasurement {
  key: PeerKey;
  label: string;
  /** What one request goes through. */
  what: string;
  loaded: Summary;
  serial: Summary | undefined;
  cpuMs: Map<string, number>;
  rssBytes: Map<string, number>;
  /** Cores other processes on the machine kept busy during the measured run (/proc/stat). */
  otherCores?: number | undefined;
  /** Completions the upstream answered per request (warm-up, measured and serial runs). */
  upstreamCallsPerOp: number;
}

/** What `BENCH_PEERS=1` adds to a run: Handoff next to Portkey's gateway. */
export interface PeerReport {
  portkey: {
    version: string;
    /** npm's summary line of the install, e.g. "added 95 packages in 3s". */
    install: string;
    installMs: number;
  };
  measurements: PeerMeasurement[];
  /** What the OTLP sink received during the traced run (until its mesh had stopped). */
  otlp: { exports: number; bytes: number; spans: number; ops: number } | undefined;
  /** Wall time the peer mode added to the run, the install included. */
  durationMs: number;
}

export interface BenchSettings {
  n: number;
  concurrency: number;
  warmup: number;
  serialN: number;
  /** BENCH_PEERS: also measure Handoff next to Portkey's gateway. */
  peers: boolean;
  /** BENCH_SERVICE_NODE_OPTIONS: NODE_OPTIONS of every mesh service, e.g. a V8 heap setting. */
  serviceNodeOptions?: string | undefined;
}

export interface Report {
  settings: BenchSettings;
  machine: MachineFacts;
  measurements: Measurement[];
  serviceWarnings: string[];
  startedAt: Date;
  finishedAt: Date;
  command: string;
  /** The peer comparison, when the run had BENCH_PEERS=1. */
  peers?: PeerReport | undefined;
  /**
   * Sections kept by hand and included as they are (bench/hot-path.md: the before-and-after of
   * the hot-path work, which one run cannot measure).
   */
  appendix?: string | undefined;
}

/** The mesh's services, whose memory the target is about. */
export const SERVICES = ["gateway", "classifier", "tool-executor", "heavy-reasoner"] as const;

const PROCESS_ORDER = [
  "bench (client)",
  "mock upstream",
  "Portkey",
  "relay front",
  "relay tier",
  "nats-server",
  ...SERVICES,
  "OTLP sink",
];

/** The processes in `maps`, in report order (any unknown name last). */
function processNames(maps: ReadonlyArray<ReadonlyMap<string, number>>): string[] {
  const seen = new Set(maps.flatMap((m) => [...m.keys()]));
  return [
    ...PROCESS_ORDER.filter((name) => seen.has(name)),
    ...[...seen].filter((name) => !PROCESS_ORDER.includes(name)),
  ];
}

/** Megabytes (10^6 bytes), one decimal. */
const mb = (bytes: number | undefined): string =>
  bytes === undefined ? "" : fixed(bytes / 1e6, 1);

/** RSS in MB of each process after each row's measured run. */
function rssTable(rows: ReadonlyArray<{ label: string; rssBytes: Map<string, number> }>): string {
  const names = processNames(rows.map((r) => r.rssBytes));
  return formatTable(
    ["workload", ...names],
    rows.map((r) => [r.label, ...names.map((name) => mb(r.rssBytes.get(name)))]),
    ["left", ...names.map(() => "right" as const)],
  );
}

/** CPU ms per operation of each process, and how many cores were busy on average. */
function cpuRows(
  rows: ReadonlyArray<{ label: string; loaded: Summary; cpuMs: Map<string, number> }>,
  names: readonly string[],
  cores: number,
): string {
  return formatTable(
    ["workload", ...names, "total", "cores busy"],
    rows.map((m) => {
      const total = [...m.cpuMs.values()].reduce((sum, ms) => sum + ms, 0);
      return [
        m.label,
        ...names.map((name) => {
          const ms = m.cpuMs.get(name);
          return ms === undefined ? "" : fixed(ms / m.loaded.ops, 3);
        }),
        fixed(total / m.loaded.ops, 3),
        `${fixed(total / m.loaded.elapsedMs, 2)} of ${cores}`,
      ];
    }),
    ["left", ...names.map(() => "right" as const), "right", "right"],
  );
}

// ---------------------------------------------------------------------------------------------
// Targets: the issue's, each met or not.

/** One target of the issue, and whether this run met it (undefined: not measured). */
export interface Verdict {
  measure: string;
  /** This run's figure, as shown. */
  value: string;
  target: string;
  met: boolean | undefined;
}

/** The memory target: each service under 200 MB resident after the load run. */
export const RSS_TARGET_BYTES = 200e6;

export const verdictWord = (met: boolean | undefined): string =>
  met === undefined ? "not measured" : met ? "met" : "not met";

/**
 * Each service under {@link RSS_TARGET_BYTES} after the load run: the largest service RSS after
 * any of `rows`' measured runs decides.
 */
export function rssVerdict(
  rows: ReadonlyArray<{ label: string; rssBytes: Map<string, number> }>,
): Verdict {
  let worst: { name: string; bytes: number } | undefined;
  for (const row of rows) {
    for (const name of SERVICES) {
      const bytes = row.rssBytes.get(name);
      if (bytes !== undefined && (worst === undefined || bytes > worst.bytes)) {
        worst = { name, bytes };
      }
    }
  }
  return {
    measure: "RSS per service after the load run",
    value: worst === undefined ? "n/a" : `largest: ${worst.name}, ${mb(worst.bytes)} MB`,
    target: `< ${fixed(RSS_TARGET_BYTES / 1e6, 0)} MB each`,
    met: worst === undefined ? undefined : worst.bytes < RSS_TARGET_BYTES,
  };
}

/** Unloaded p50 minus the direct path's unloaded p50: what a hop adds, without queueing. */
export function overheadMs(m: PeerMeasurement, direct: PeerMeasurement | undefined): number {
  return m.serial && direct?.serial ? m.serial.p50Ms - direct.serial.p50Ms : Number.NaN;
}

function peer(peers: PeerReport, key: PeerKey): PeerMeasurement | undefined {
  return peers.measurements.find((m) => m.key === key);
}

/**
 * The mean requests per second of every measurement of `key`. Portkey, the tracing-off and
 * tracing-on meshes and the bare relay are measured in rounds (Portkey, off, on, relay, Portkey,
 * off, on, relay): on this machine one measurement of each differed from the next by 10 to 25 %
 * either way from run order and noise, and a ratio of two single measurements by as much.
 */
export function meanRate(peers: PeerReport, key: PeerKey): number {
  return mean(peers.measurements.filter((m) => m.key === key).map((m) => m.loaded.opsPerSec));
}

/** The mean overhead over the direct path of every measurement of `key` that ran one at a time. */
export function meanOverheadMs(peers: PeerReport, key: PeerKey): number {
  const direct = peer(peers, "direct");
  return mean(
    peers.measurements
      .filter((m) => m.key === key)
      .map((m) => overheadMs(m, direct))
      .filter(Number.isFinite),
  );
}

function mean(values: readonly number[]): number {
  return values.length === 0 ? Number.NaN : values.reduce((a, b) => a + b, 0) / values.length;
}

/**
 * A ratio to two decimals, or to three when two would round it onto the `line` it falls short
 * of: 0.8996 against 0.9 reads "0.900", not a "0.90" judged not met.
 */
export function ratioBeside(value: number, line: number): string {
  const two = fixed(value, 2);
  return Number(two) === line && value < line ? fixed(value, 3) : two;
}

/** The four targets for Handoff next to Portkey, from the peer measurements. */
export function peerVerdicts(peers: PeerReport): Verdict[] {
  const judge = (value: number, ok: (v: number) => boolean) =>
    Number.isFinite(value) ? ok(value) : undefined;

  const throughput = ratio(meanRate(peers, "handoff"), meanRate(peers, "portkey"));
  const handoffOverhead = meanOverheadMs(peers, "handoff");
  const portkeyOverhead = meanOverheadMs(peers, "portkey");
  const overheadKnown = Number.isFinite(handoffOverhead) && Number.isFinite(portkeyOverhead);
  const tracing = ratio(meanRate(peers, "handoff-traced"), meanRate(peers, "handoff"));
  return [
    {
      measure: "Handoff `handoff/light` ÷ Portkey, requests per second (mean of the rounds)",
      value: ratioBeside(throughput, 1),
      target: "≥ 1.0",
      met: judge(throughput, (v) => v >= 1),
    },
    {
      measure: "Unloaded p50 overhead over direct: Handoff vs Portkey (mean of the rounds)",
      value: overheadKnown
        ? `${fixed(handoffOverhead, 2)} ms vs ${fixed(portkeyOverhead, 2)} ms`
        : "n/a (BENCH_SERIAL_N=0)",
      target: "≤ Portkey's",
      met: overheadKnown ? handoffOverhead <= portkeyOverhead : undefined,
    },
    {
      measure: "Tracing on ÷ tracing off, requests per second (mean of the rounds)",
      value: ratioBeside(tracing, 0.9),
      target: "≥ 0.9",
      met: judge(tracing, (v) => v >= 0.9),
    },
    rssVerdict(peers.measurements.filter((m) => m.key === "handoff" || m.key === "handoff-traced")),
  ];
}

/** CPU ms per request of the processes named, during one measured run. */
function cpuPerRequest(m: PeerMeasurement | undefined, names: readonly string[]): number {
  return m === undefined
    ? Number.NaN
    : names.reduce((sum, name) => sum + (m.cpuMs.get(name) ?? 0), 0) / m.loaded.ops;
}

/** {@link cpuPerRequest}, over every measurement of `key`. */
function meanCpuPerOp(peers: PeerReport, key: PeerKey, names: readonly string[]): number {
  return mean(peers.measurements.filter((m) => m.key === key).map((m) => cpuPerRequest(m, names)));
}

/** Overheads within this share of Portkey's are read as the same. */
const SAME_OVERHEAD_BAND = 0.2;
const PORTKEY_PROCESSES = ["Portkey"];
const RELAY_PROCESSES = ["relay front", "nats-server", "relay tier"];
const LIGHT_PROCESSES = ["gateway", "nats-server", "classifier"];

/**
 * Portkey, the bare relay and Handoff's `handoff/light` (tracing off) side by side: each one's
 * rate against Portkey's, its unloaded overhead over direct, and the CPU per request of its own
 * processes, all means over the rounds. Undefined when the run had no bare relay.
 */
export function shapeTable(peers: PeerReport): string | undefined {
  if (!peers.measurements.some((m) => m.key === "relay")) return undefined;
  const portkeyRate = meanRate(peers, "portkey");
  const rows: Array<[string, PeerKey, readonly string[]]> = [
    ["Portkey (one process)", "portkey", PORTKEY_PROCESSES],
    ["bare relay (front, nats-server, tier)", "relay", RELAY_PROCESSES],
    ["Handoff `handoff/light` (gateway, nats-server, classifier)", "handoff", LIGHT_PROCESSES],
  ];
  return formatTable(
    ["path", "requests/s", "÷ Portkey", "unloaded overhead ms", "CPU ms per request"],
    rows.map(([label, key, names]) => [
      label,
      fixed(meanRate(peers, key), 0),
      fixed(ratio(meanRate(peers, key), portkeyRate), 2),
      fixed(meanOverheadMs(peers, key), 2),
      fixed(meanCpuPerOp(peers, key, names), 3),
    ]),
    ["left", "right", "right", "right", "right"],
  );
}

/**
 * What the bare relay says about the first two targets: whether the mesh's shape alone, with
 * nothing stored or checked, reaches Portkey's rate and overhead on this machine.
 */
export function shapeReading(peers: PeerReport): string | undefined {
  if (!peers.measurements.some((m) => m.key === "relay")) return undefined;
  const relayRate = ratio(meanRate(peers, "relay"), meanRate(peers, "portkey"));
  const handoffOfRelay = ratio(meanRate(peers, "handoff"), meanRate(peers, "relay"));
  const relayOverhead = meanOverheadMs(peers, "relay");
  const portkeyOverhead = meanOverheadMs(peers, "portkey");
  const handoffOverhead = meanOverheadMs(peers, "handoff");
  const parts = [
    `The bare relay served ${fixed(relayRate, 2)}× Portkey's rate and Handoff's durable path`,
    `${fixed(handoffOfRelay, 2)}× the relay's.`,
  ];
  parts.push(
    relayRate >= 1
      ? "The mesh's shape alone does not stand in the way of the throughput target: the gap is" +
          " the work Handoff does per request on top of it (the durable job and its record," +
          " validation, the framework, spans)."
      : "Even the mesh's shape with nothing stored or checked falls short of Portkey's rate on" +
          " this machine, so no design with a separate gateway and tier on NATS meets the" +
          " throughput target here, durable or not.",
  );
  if (Number.isFinite(relayOverhead) && Number.isFinite(portkeyOverhead)) {
    // Unloaded overheads of about a millisecond moved by a few tenths from run to run here.
    const band = SAME_OVERHEAD_BAND * portkeyOverhead;
    parts.push(
      `Unloaded, the relay added ${fixed(relayOverhead, 2)} ms over direct against Portkey's`,
      `${fixed(portkeyOverhead, 2)} ms and Handoff's ${fixed(handoffOverhead, 2)} ms:`,
      relayOverhead < portkeyOverhead - band
        ? "the shape alone adds less than Portkey does, and the rest of Handoff's overhead is" +
            " its own work (its round trips to the JetStream store among it)."
        : relayOverhead > portkeyOverhead + band
          ? "the shape alone, one NATS round trip and a second process, already adds more than" +
            " Portkey does."
          : "the shape alone adds about what Portkey does (within a fifth), so the overhead" +
            " target leaves no room for Handoff's own work on top of it (its round trips to" +
            " the JetStream store among it).",
    );
  }
  return parts.join(" ");
}

function verdictTable(verdicts: readonly Verdict[]): string {
  return formatTable(
    ["target", "this run", "goal", "verdict"],
    verdicts.map((v) => [v.measure, v.value, v.target, verdictWord(v.met)]),
  );
}

/** The peer paths: throughput, latency loaded and unloaded, overhead over direct, upstream calls. */
function peerResultsTable(peers: PeerReport): string {
  const direct = peer(peers, "direct");
  return formatTable(
    [
      "path",
      "ops/s",
      "p50 ms",
      "p99 ms",
      "unloaded p50 ms",
      "overhead over direct ms",
      "upstream calls per request",
      "other load, cores",
    ],
    peers.measurements.map((m) => [
      m.label,
      fixed(m.loaded.opsPerSec, 0),
      fixed(m.loaded.p50Ms, 2),
      fixed(m.loaded.p99Ms, 2),
      m.serial ? fixed(m.serial.p50Ms, 2) : "n/a",
      m.key === "direct" ? "0 (base)" : fixed(overheadMs(m, direct), 2),
      fixed(m.upstreamCallsPerOp, 2),
      m.otherCores === undefined ? "n/a" : fixed(m.otherCores, 2),
    ]),
    ["left", "right", "right", "right", "right", "right", "right", "right"],
  );
}

function peerCpuTable(peers: PeerReport, cores: number): string {
  return cpuRows(peers.measurements, processNames(peers.measurements.map((m) => m.cpuMs)), cores);
}

/** The peer comparison as printed at the end of a run. */
export function renderPeerTables(
  peers: PeerReport,
  settings: BenchSettings,
  cores: number,
): string {
  const shape = shapeTable(peers);
  return [
    `Side by side with Portkey ${peers.portkey.version}: ${settings.n} requests, ${settings.concurrency} in flight, same mock upstream\n\n${peerResultsTable(peers)}`,
    `Against the targets\n\n${verdictTable(peerVerdicts(peers))}`,
    ...(shape ? [`The mesh's shape against its work\n\n${shape}`] : []),
    `CPU ms per request during the measured run\n\n${peerCpuTable(peers, cores)}`,
    `RSS (MB) after the load run\n\n${rssTable(peers.measurements)}`,
  ].join("\n\n");
}

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
  return cpuRows(report.measurements, names, report.machine.cores);
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
  const memory = rssVerdict(report.measurements);
  sections.push(
    `RSS (MB) after the load run; each service under 200 MB: ${verdictWord(memory.met)} (${memory.value})\n\n${rssTable(report.measurements)}`,
  );
  const traffic = trafficTable(report);
  if (traffic)
    sections.push(`NATS messages per operation (counted during the warm-up)\n\n${traffic}`);
  if (report.peers) {
    sections.push(renderPeerTables(report.peers, report.settings, report.machine.cores));
  }
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

const PEER_HEADING = "## Side by side with Portkey (BENCH_PEERS=1)";

/** Other load, in cores, above which the peer section warns that a path was disturbed. */
const OTHER_LOAD_WARNING_CORES = 0.2;

/**
 * The README's peer section: the figures of `BENCH_PEERS=1` and the targets, or, for a
 * run without it, one sentence on how to get them.
 */
export function renderPeerSection(
  peers: PeerReport | undefined,
  settings: BenchSettings,
  cores: number,
): string {
  if (peers === undefined) {
    return [
      PEER_HEADING,
      wrap(
        "This run had no peers: `BENCH_PEERS=1 npm run bench` also measures Handoff next to " +
          "Portkey's open-source gateway on the same mock OpenAI upstream, with tracing off and " +
          "on, and checks the issue's targets.",
        WIDTH,
      ),
    ].join("\n\n");
  }
  const blocks: string[] = [PEER_HEADING];
  const text = (...parts: string[]) => blocks.push(wrap(parts.join(" "), WIDTH));
  const bullets = (...items: string[]) =>
    blocks.push(items.map((item) => wrap(item, WIDTH, "- ", "  ")).join("\n"));
  const direct = peer(peers, "direct");
  const portkey = peer(peers, "portkey");
  const handoff = peer(peers, "handoff");
  const traced = peer(peers, "handoff-traced");
  const ms = (value: number) => `${fixed(value, 2)} ms`;
  const otlp = peers.otlp;

  text(
    `Portkey's open-source AI gateway (\`@portkey-ai/gateway\` ${peers.portkey.version}, a`,
    "stateless Node proxy) and Handoff, measured in this same run against the same mock OpenAI",
    "upstream, one after the other, with the same client, the same request",
    `("Hello there") and ${settings.concurrency} in flight. The upstream is a process of its own`,
    "([mock-upstream.ts](mock-upstream.ts)) that answers every `POST /v1/chat/completions` at once",
    "with a fixed `chat.completion`, so what is measured is each path's own cost:",
  );
  bullets(
    "**direct**: the benchmark's client straight to the upstream, the base every overhead is measured from.",
    "**Portkey**: installed with `npm install --prefix <temporary folder>` " +
      `(${peers.portkey.install}; ${fixed(peers.portkey.installMs / 1000, 1)} s) and started as ` +
      "`node build/start-server.js --port=<port> --headless`, a process of its own with no config " +
      "file; each request names its upstream in headers, `x-portkey-provider: openai` and " +
      "`x-portkey-custom-host: http://127.0.0.1:<port>/v1`.",
    "**bare relay**: the mesh's shape with none of Handoff's work, as a lower bound for any " +
      "design that keeps a gateway and a model tier as separate processes on NATS " +
      "([bare-relay.ts](bare-relay.ts)). A bare `node:http` front sends the request's bytes " +
      "on NATS request-reply, on a nats-server of its own, to a tier process that posts them " +
      "to the upstream through Handoff's own HTTP client and replies with the answer: no " +
      "framework, no validation, nothing stored, no redelivery, no spans.",
    "**Handoff, tracing off**: a second mesh (a fresh nats-server and the four services) whose " +
      "tiers are `openai-compatible` deployments on the upstream, asked for `handoff/light`: " +
      "gateway → JetStream → classifier → light model, one hop and one upstream call, with " +
      "`OTEL_TRACES_EXPORTER=none` as in the main run (spans are made, not exported).",
    "**Handoff, tracing on**: the same on another fresh mesh whose services export every span " +
      "over OTLP/HTTP (protobuf, the SDK's default batching) to a sink process that answers 200 " +
      "and keeps nothing ([otlp-sink.ts](otlp-sink.ts))" +
      (otlp
        ? `: it received ${otlp.exports} exports, ${fixed(otlp.spans / otlp.ops, 1)} spans and ${fixed(otlp.bytes / otlp.ops / 1000, 1)} kB per request.`
        : "."),
    "They are measured in rounds (`BENCH_PEER_ROUNDS`): Portkey, Handoff with tracing off, " +
      "Handoff with tracing on (each on a fresh mesh), then the bare relay. Each ratio is of " +
      "the mean rates (and overheads) over the rounds: on this machine a single pair differed " +
      "by 10 to 25 % either way from run order and noise alone.",
  );
  text(
    `Each path gets ${settings.warmup} requests of warm-up, ${settings.n} with`,
    `${settings.concurrency} in flight and ${settings.serialN} one at a time; its *overhead over`,
    "direct* is its unloaded p50 minus the direct path's. Every answer is checked (HTTP 200 and the",
    "upstream's text in it), and the upstream's own count of completions gives the calls per",
    "request. *Other load* is the CPU the rest of the machine used during the measured run (busy",
    "time in `/proc/stat` less that of the processes measured), in cores: a path measured while",
    "other work ran had fewer cores than the others, and its figures are not comparable.",
  );
  blocks.push(`### Throughput and latency, ${settings.concurrency} in flight`);
  blocks.push(peerResultsTable(peers));
  const disturbed = peers.measurements.filter(
    (m) => (m.otherCores ?? 0) >= OTHER_LOAD_WARNING_CORES,
  );
  if (disturbed.length > 0) {
    text(
      "**Other work shared the machine:**",
      disturbed.map((m) => `${fixed(m.otherCores ?? 0, 2)} cores during "${m.label}"`).join(", "),
      `(of ${cores}), so those paths had fewer cores to themselves: run it again on a quiet`,
      "machine before reading much into the ratios.",
    );
  }
  blocks.push("### Against the targets");
  blocks.push(verdictTable(peerVerdicts(peers)));
  const shape = shapeTable(peers);
  if (shape) {
    blocks.push("### The mesh's shape against its work");
    text(
      "The means over the rounds; CPU per request counts only each path's own processes (not",
      "the client's or the upstream's).",
    );
    blocks.push(shape);
    text(shapeReading(peers) ?? "");
  }
  blocks.push("### CPU per request (ms) during the measured run");
  text(
    "CPU milliseconds each process spent per request; the client and the upstream run on the same",
    "cores as the path under test.",
  );
  blocks.push(peerCpuTable(peers, cores));
  blocks.push("### Memory after the load run (RSS, MB)");
  blocks.push(rssTable(peers.measurements));

  const meshNames = ["nats-server", ...SERVICES];
  /** Cores the named processes kept busy on average during the measured run. */
  const busy = (m: PeerMeasurement | undefined, names: readonly string[]) =>
    m === undefined ? Number.NaN : cpuPerRequest(m, names) * (m.loaded.ops / m.loaded.elapsedMs);
  const portkeyCpu = cpuPerRequest(portkey, ["Portkey"]);
  const rounds = peers.measurements.filter((m) => m.key === "handoff-traced").length;
  const handoffCpu = cpuPerRequest(handoff, meshNames);
  text(
    "**Reading it.** Portkey relays a request within one process; Handoff's `handoff/light`",
    "path crosses its gateway, nats-server (a JetStream publish, a pull delivery, an ack and the",
    "job record's KV writes) and the classifier, and answers from a durable job. In the first",
    "round, per request it",
    `spent ${ms(handoffCpu)} of CPU in nats-server and the services against Portkey's`,
    `${ms(portkeyCpu)} in its process (${fixed(ratio(handoffCpu, portkeyCpu), 1)}×). Under load`,
    `Portkey's one event loop kept ${fixed(busy(portkey, ["Portkey"]), 2)} of a core busy while`,
    `Handoff's processes together kept ${fixed(busy(handoff, meshNames), 2)} of ${cores} busy;`,
    "with the client and the upstream on the same cores, CPU per request is what sets the",
    "throughput ratio above.",
    ...(direct?.serial && portkey?.serial && handoff?.serial
      ? [
          `Unloaded, Portkey added ${ms(meanOverheadMs(peers, "portkey"))} to the direct path's`,
          `${ms(direct.serial.p50Ms)} and Handoff ${ms(meanOverheadMs(peers, "handoff"))}`,
          "(means of the rounds).",
        ]
      : []),
    ...(handoff && traced
      ? [
          `Over ${rounds} round${rounds === 1 ? "" : "s"} of tracing off then on, each on fresh`,
          "meshes, exporting every span served",
          `${fixed(100 * ratio(meanRate(peers, "handoff-traced"), meanRate(peers, "handoff")), 0)} % of`,
          "the tracing-off rate; in the first round the mesh's CPU per request went from",
          `${ms(handoffCpu)} to ${ms(cpuPerRequest(traced, meshNames))} (the sink took another`,
          `${ms(cpuPerRequest(traced, ["OTLP sink"]))}).`,
        ]
      : []),
    `The peer mode added ${fixed(peers.durationMs / 1000, 0)} s to this run, the install included.`,
  );
  return blocks.join("\n\n");
}

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
    "Three more things are recorded to explain the numbers: the **CPU time** each process used",
    "during the measured run (from `/proc/<pid>/stat`; the benchmark itself from",
    "`process.cpuUsage()`), the **resident memory** (RSS) of each process right after the measured",
    "run (`VmRSS` in `/proc/<pid>/status`), and the **NATS messages** one operation costs, counted",
    "by purpose by a wildcard subscriber (on `handoff.v1.>`, `$KV.>`, `$JS.API.>`, `$JS.ACK.>`,",
    "`_INBOX.>` …) during the warm-up only, since copying every message to one more client would",
    "slow the measured run.",
  );
  text(
    "With `BENCH_PEERS=1` the run goes on to put Handoff **side by side with Portkey's open-source",
    "gateway**: the benchmark installs `@portkey-ai/gateway` from npm into a temporary folder,",
    "starts a mock OpenAI upstream in its own process, and measures the same request five ways,",
    "each like the workloads above: straight to the upstream, through Portkey, through a second",
    "Handoff mesh asked for `handoff/light` with tracing off and with every span exported over",
    "OTLP to a sink process, and through a bare relay (a front and a tier on NATS request-reply,",
    "nothing stored or checked: the least the mesh's shape can cost). Its section below has the",
    "figures and the issue's targets.",
  );

  raw("## Run it");
  raw(
    "```bash",
    "npm run bench                                   # builds, then runs bench/mesh.bench.ts",
    "BENCH_N=5000 BENCH_CONCURRENCY=32 npm run bench # more operations, more in flight",
    "BENCH_PEERS=1 npm run bench                     # and Handoff next to Portkey's gateway",
    "```",
  );
  raw(
    "| Variable | Default | Meaning |",
    "| --- | --- | --- |",
    "| `BENCH_N` | 2000 | measured operations per workload |",
    "| `BENCH_CONCURRENCY` | 16 | operations in flight during the measured run |",
    "| `BENCH_WARMUP` | 200 | unmeasured operations before it (0 to skip) |",
    "| `BENCH_SERIAL_N` | 200 | operations one at a time, for unloaded latency (0 to skip) |",
    "| `BENCH_PEERS` | 0 | `1`: also measure Handoff next to Portkey's gateway and the bare relay on a mock OpenAI upstream, tracing off and on (installs `@portkey-ai/gateway` from npm into a temporary folder, so it needs the registry; adds about half a minute) |",
    `| \`BENCH_SERVICE_NODE_OPTIONS\` | (none) | \`NODE_OPTIONS\` for every mesh service (not the client or the peers); each of the services' own heap limits (\`${SERVICE_NODE_OPTIONS}\`) stays unless these name that size (\`--max-semi-space-size=16 --max-old-space-size=8192\` gives the limits before 2026-12-03's last change; V8's own on this machine are 64 and 4096) |`,
    "| `BENCH_PEER_ROUNDS` | 2 | rounds of the peer mode, each Portkey, then Handoff with tracing off, then on, then the bare relay; the ratios are of their mean rates |",
  );
  text(
    "It needs `nats-server` and Node ≥ 22.18 (it runs the TypeScript directly); the services are",
    "the build output, so `npm run bench` builds first. Everything it starts (nats-server, the",
    "four services, the temporary store; with `BENCH_PEERS=1` also Portkey, the mock upstream, the",
    "OTLP sink, the bare relay's processes and the folder Portkey was installed into) is stopped",
    "and removed at the end, also on failure or Ctrl-C.",
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
    ...(settings.serviceNodeOptions
      ? [`Every mesh service ran with \`NODE_OPTIONS=${settings.serviceNodeOptions}\`.`]
      : []),
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
  const memory = rssVerdict(report.measurements);
  raw("### Memory after the load run (RSS, MB)");
  text(
    "Resident set size of each process right after each measured run, in MB (10^6 bytes). The",
    `issue's target, each service under ${fixed(RSS_TARGET_BYTES / 1e6, 0)} MB after the load run,`,
    `was **${verdictWord(memory.met)}** (${memory.value}).`,
  );
  raw(rssTable(report.measurements));
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
    "The gateway creates the job's record in the `handoff-jobs` KV bucket, then publishes the job",
    "and its `queued` event together. Each stage takes a pull delivery and reads the record (a",
    "redelivery, or a record that shows this visit done, also reads the stage's kept output for",
    "the job, to re-send what was already done). A stage that forwards keeps its output, writes",
    "the record with a compare-and-set against the revision it read (no second read), then",
    "forwards the job with its `running` event; the last stage writes the ended record (which",
    "holds the answer, so no copy is kept), announces the result over core NATS with its",
    "`succeeded` event, and acks (a plain ack). Every KV read and",
    "write and every JetStream publish is a request with a reply on `_INBOX`, which is why replies",
    "are the largest line of the message table. Around that, the gateway parses HTTP and validates",
    "the request with zod, every stage decodes and validates the envelope with zod and validates",
    "its output again, and every publish and stage makes OpenTelemetry spans.",
    ...(Number.isFinite(kvWrites) && kvWrites > 4.05
      ? [
          `Of the ${fixed(kvWrites, 2)} KV writes per arithmetic request, about`,
          `${fixed(kvWrites - 4, 2)} were retries of a compare-and-set that lost a race (four are`,
          "expected: the record's creation, the classifier's output and each stage's record).",
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
          "That unloaded time is the real price of the path: four round trips to nats-server on",
          "the critical path of the greeting (the gateway's record creation, then its publish; the",
          "classifier's two reads at once, then its output and record writes at once; the result",
          "goes back without one), four for a stage that forwards (reads, output, record, forward),",
          "the calculator's request, a pull delivery per hop, the HTTP request, and the validation",
          "and tracing work above, across three or four processes.",
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
  raw(renderPeerSection(report.peers, settings, machine.cores));
  if (report.appendix) raw(report.appendix.trim());
  raw("## Other benchmarks");
  text(
    "Each writes its own report, rewritten by every run; the figures below are from their last",
    "runs on this machine (2026-12-02; `bench:http` and `bench:soak` 2026-12-03), each next to its",
    "baseline measured in the same run.",
  );
  raw(
    "| benchmark | baseline | with the feature |",
    "| --- | --- | --- |",
    "| `npm run bench:cache` ([cache.md](cache.md)): 2,000 requests, 300 prompts, 2 tenants | caching nothing: 2,185 upstream calls, $35.96 | exact cache on every tier: 73.9 % of cacheable lookups hit, 806 upstream calls, $12.91 ($23.05 saved); no answer crossed tenants |",
    "| `npm run bench:handoff` ([handoff-tokens.md](handoff-tokens.md)): 30 conversations of 20-60 turns, 3 jobs each | forwarding everything: 747,865 tokens to heavy, 97.6 % prefix-cached on later jobs, $0.980, facts 30/30 | `handoff_tokens.heavy: 5000`: 0.52x the tokens, 48.9 % prefix-cached, $0.807, facts 30/30 |",
    "| `npm run bench:routing` ([routing.md](routing.md)) | the rules | a learned decision, a cascade verdict: p99 under 1 ms in-process |",
    "| `npm run bench:soak` ([soak.md](soak.md)): 100,000 requests in 10 rounds, memory after each | each service's heap after a full GC before the load: 23-32 MB | after 100,000 requests and idle: 23-30 MB, RSS steady from round to round; 91-147 MB after each round with the launchers' heap limits (158-189 MB with the young generation's alone, 255-335 MB with neither), 92-118 MB once idle |",
    "| `npm run bench:http` (prints its table): 3 rounds of 3,000 chat calls through the OpenAI-compatible adapter to the mock upstream | the global `fetch`: 0.33-0.48 ms of CPU per call | the adapters' own client (undici's `request`): 0.34-0.41× the CPU per call, 2.3-2.6× the calls per second |",
  );
  return `${blocks.join("\n\n")}\n`;
}
