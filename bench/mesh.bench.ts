/**
 * `npm run bench`: throughput and latency of the Handoff mesh next to two baselines measured in
 * the same run on the same freshly spawned nats-server:
 *
 *   A. core NATS request-reply (the floor for any message round trip);
 *   B. JetStream publish → durable pull consumer → ackAck (the floor for one durable hop);
 *   mesh: HTTP requests to the gateway, with the four services running as separate processes
 *         from their built `dist/main.js`, for a 2-hop tools request and a 1-hop light request.
 *
 * Each workload gets a warm-up, a measured run of BENCH_N operations at BENCH_CONCURRENCY in
 * flight, and a short serial run (one at a time) for the unloaded latency. Prints the tables and
 * writes bench/README.md. Any failed operation fails the whole run.
 *
 * With BENCH_PEERS=1 it then measures Handoff side by side with Portkey's open-source gateway
 * (installed from npm into a temporary folder) against one mock OpenAI upstream: direct, through
 * Portkey, through the bare relay (bench/bare-relay.ts: a front and a tier on NATS request-reply,
 * nothing stored), and through a second mesh asked for `handoff/light`, with tracing off and on.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findNatsServer, freePort, type NatsHandle, spawnNatsServer } from "@handoff/testkit";
import { connect } from "@nats-io/transport-node";
import { coreRequestReply, jetStreamWorkQueue, type Workload } from "./baselines.ts";
import { startBenchMesh } from "./bench-mesh.ts";
import {
  classifySubject,
  envFlag,
  envInt,
  envText,
  runConcurrent,
  type Summary,
  summarize,
} from "./lib.ts";
import {
  type Child,
  chatRequest,
  installPortkey,
  MOCK_KEY,
  MOCK_KEY_ENV,
  MOCK_MODELS,
  PORTKEY_PACKAGE,
  PORTKEY_RANGE,
  type PortkeyInstall,
  peerConfigYaml,
  portkeyHeaders,
  startMockUpstream,
  startOtlpSink,
  startPortkey,
  startRelay,
  statsOf,
} from "./peers.ts";
import { CpuMeter, childPids, machineBusyMs, machineFacts, rssOf } from "./proc.ts";
import {
  type Measurement,
  type PeerKey,
  type PeerMeasurement,
  type PeerReport,
  renderReadme,
  renderTables,
} from "./report.ts";

const settings = {
  n: envInt(process.env, "BENCH_N", 2000),
  concurrency: envInt(process.env, "BENCH_CONCURRENCY", 16),
  warmup: envInt(process.env, "BENCH_WARMUP", 200, 0),
  serialN: envInt(process.env, "BENCH_SERIAL_N", 200, 0),
  peers: envFlag(process.env, "BENCH_PEERS"),
  /** Rounds of the peer mode: Portkey, Handoff with tracing off, then on, then the bare relay. */
  peerRounds: envInt(process.env, "BENCH_PEER_ROUNDS", 2, 1),
  serviceNodeOptions: envText(process.env, "BENCH_SERVICE_NODE_OPTIONS"),
};
/** NODE_OPTIONS of every mesh service, when BENCH_SERVICE_NODE_OPTIONS sets them. */
const serviceNodeOptions = settings.serviceNodeOptions
  ? { NODE_OPTIONS: settings.serviceNodeOptions }
  : {};

/** Size of the JetStream baseline's message, about that of a job envelope between stages. */
const ENVELOPE_BYTES = 1536;
const HTTP_TIMEOUT_MS = 30_000;
const root = new URL("..", import.meta.url);

// ---------------------------------------------------------------------------------------------
// Clean-up: whatever happens (error, Ctrl-C, SIGTERM), servers, processes and stores go away.

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

interface ChatKind {
  question: string;
  route: string[];
  /** Text the answer must contain, if any. */
  contains?: string;
}

/** One HTTP request to the gateway, checked: 200, the expected route, the expected answer. */
function chatOp(gatewayUrl: string, kind: ChatKind): Workload {
  const body = JSON.stringify({
    model: "handoff",
    messages: [{ role: "user", content: kind.question }],
  });
  const route = kind.route.join(" -> ");
  return {
    async op(index) {
      const res = await fetch(`${gatewayUrl}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
        signal: AbortSignal.any([AbortSignal.timeout(HTTP_TIMEOUT_MS), interrupted.signal]),
      });
      const text = await res.text();
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
      const got = Array.isArray(answer.handoff?.route) ? answer.handoff.route.join(" -> ") : "?";
      if (got !== route) throw new Error(`request ${index}: route ${got}, expected ${route}`);
    },
    close: async () => {},
  };
}

// ---------------------------------------------------------------------------------------------
// Measuring.

/**
 * Counts the messages flowing through the server by purpose, with a wildcard subscriber. Used
 * only during warm-ups: copying every message to one more client would distort the measurement.
 */
async function startTap(url: string) {
  const nc = await connect({ servers: url, name: "bench-tap" });
  const counts = new Map<string, { messages: number; bytes: number }>();
  for (const subject of [
    "handoff.v1.>",
    "bench.>",
    "$KV.>",
    "$JS.API.>",
    "$JS.ACK.>",
    "_INBOX.>",
  ]) {
    nc.subscribe(subject, {
      callback: (error, msg) => {
        if (error) return;
        const kind = classifySubject(msg.subject, msg.reply ?? "");
        const entry = counts.get(kind) ?? { messages: 0, bytes: 0 };
        entry.messages++;
        entry.bytes += msg.data.length;
        counts.set(kind, entry);
      },
    });
  }
  await nc.flush();
  return {
    async stop() {
      await nc.flush();
      await nc.close();
      return counts;
    },
  };
}

/**
 * Warm-up, the measured run (CPU of every process in `pids` metered, their RSS read right after
 * it) and the serial run of one workload. With `natsUrl`, the warm-up's NATS messages are counted.
 */
async function measure(
  name: string,
  workload: Workload,
  natsUrl: string | undefined,
  pids: ReadonlyMap<string, number>,
): Promise<Omit<Measurement, "key" | "label" | "what">> {
  const { n, concurrency, warmup, serialN } = settings;
  const op = (index: number) => {
    interrupted.signal.throwIfAborted();
    return workload.op(index);
  };
  process.stdout.write(`${name}: warm-up ${warmup}`);
  const tap = natsUrl === undefined ? undefined : await startTap(natsUrl);
  let traffic: Measurement["traffic"];
  try {
    if (warmup > 0) await runConcurrent(warmup, concurrency, op);
  } finally {
    const counts = await tap?.stop();
    traffic = warmup > 0 && counts !== undefined ? { ops: warmup, counts } : undefined;
  }

  process.stdout.write(`, ${n} ops at concurrency ${concurrency}`);
  const meter = new CpuMeter(pids);
  const machineBefore = machineBusyMs();
  meter.start();
  const loaded = summarize(await runConcurrent(n, concurrency, op));
  const cpuMs = meter.stop();
  const machineAfter = machineBusyMs();
  const rssBytes = rssOf(pids);
  // What the rest of the machine (processes not in `pids`) kept busy meanwhile, in cores.
  const ours = [...cpuMs.values()].reduce((sum, ms) => sum + ms, 0);
  const otherCores =
    machineBefore === undefined || machineAfter === undefined
      ? undefined
      : Math.max(0, machineAfter - machineBefore - ours) / loaded.elapsedMs;

  let serial: Summary | undefined;
  if (serialN > 0) {
    process.stdout.write(`, ${serialN} one at a time`);
    serial = summarize(await runConcurrent(serialN, 1, op));
  }
  process.stdout.write(
    ` → ${loaded.opsPerSec.toFixed(0)} ops/s, p50 ${loaded.p50Ms.toFixed(2)} ms, p99 ${loaded.p99Ms.toFixed(2)} ms\n`,
  );
  return { loaded, serial, cpuMs, rssBytes, otherCores, traffic };
}

// ---------------------------------------------------------------------------------------------
// BENCH_PEERS=1: Handoff side by side with Portkey's gateway, on one mock OpenAI upstream.

/** Installs Portkey's gateway into a temporary folder, removed at the end of the run. */
async function installPeers(): Promise<PortkeyInstall> {
  const dir = mkdtempSync(join(tmpdir(), "handoff-bench-portkey-"));
  // Registered first among the peer clean-ups, so it runs after Portkey has stopped.
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true, maxRetries: 3 }));
  process.stdout.write(
    `BENCH_PEERS=1: npm install ${PORTKEY_PACKAGE}@${PORTKEY_RANGE} into ${dir}… `,
  );
  const install = await installPortkey(dir, interrupted.signal);
  console.log(`${install.version}, ${install.summary} (${(install.ms / 1000).toFixed(1)} s)\n`);
  return install;
}

/** Starts a nats-server of its own; returns it with its pid (for the CPU and memory figures). */
async function freshNats(binary: string): Promise<{ nats: NatsHandle; pid: number | undefined }> {
  const before = new Set(childPids(process.pid, "nats-server"));
  const nats = await spawnNatsServer(binary);
  cleanups.push(() => nats.stop());
  const pid = childPids(process.pid, "nats-server").find((p) => !before.has(p));
  return { nats, pid };
}

async function runPeers(
  binary: string,
  install: PortkeyInstall,
  serviceWarnings: string[],
): Promise<PeerReport> {
  const started = performance.now();
  const { warmup, n, serialN } = settings;
  const opsPerWorkload = warmup + n + serialN;
  const register = (child: Child) => cleanups.push(() => child.stop());
  const dir = mkdtempSync(join(tmpdir(), "handoff-bench-peers-"));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));

  console.log(
    `\nSide by side with Portkey ${install.version}: the same request to one mock OpenAI upstream, at concurrency ${settings.concurrency}`,
  );
  process.stdout.write("starting the mock OpenAI upstream (its own process)… ");
  const upstream = await startMockUpstream(await freePort(), register);
  console.log(`ready on ${upstream.url}`);
  const upstreamV1 = `${upstream.url}/v1`;
  const basePids = new Map<string, number>([
    ["bench (client)", process.pid],
    ["mock upstream", upstream.child.pid],
  ]);
  const completions = async () =>
    (await statsOf<{ completions: number }>(upstream.url)).completions;

  const measurements: PeerMeasurement[] = [];
  const run = async (
    key: PeerKey,
    label: string,
    what: string,
    workload: Workload,
    pids: ReadonlyMap<string, number>,
    check: () => void = () => {},
  ) => {
    const before = await completions();
    const { loaded, serial, cpuMs, rssBytes, otherCores } = await measure(
      label,
      workload,
      undefined,
      pids,
    );
    check();
    const calls = (await completions()) - before;
    if (calls < opsPerWorkload) {
      throw new Error(
        `${label}: the upstream answered ${calls} completions for ${opsPerWorkload} requests`,
      );
    }
    measurements.push({
      key,
      label,
      what,
      loaded,
      serial,
      cpuMs,
      rssBytes,
      otherCores,
      upstreamCallsPerOp: calls / opsPerWorkload,
    });
  };
  const timeouts = { timeoutMs: HTTP_TIMEOUT_MS, signal: interrupted.signal };

  // (a) Straight to the upstream: the base every overhead is measured from.
  await run(
    "direct",
    "direct to the upstream",
    "client → mock upstream",
    chatRequest({
      baseUrl: upstreamV1,
      model: MOCK_MODELS.light,
      headers: { authorization: `Bearer ${MOCK_KEY}` },
      ...timeouts,
    }),
    basePids,
  );

  // (b) Portkey's gateway, routed to the upstream by headers: one process for every round.
  process.stdout.write("starting Portkey's gateway (its own process, --headless)… ");
  const portkey = await startPortkey(install.entry, await freePort(), register);
  console.log(`ready on ${portkey.url}`);
  const rounds = settings.peerRounds;
  const measurePortkey = (round: number) =>
    run(
      "portkey",
      `Portkey ${install.version}${rounds > 1 ? ` (round ${round + 1})` : ""}`,
      "client → Portkey → mock upstream",
      chatRequest({
        baseUrl: `${portkey.url}/v1`,
        model: MOCK_MODELS.light,
        headers: portkeyHeaders(upstreamV1),
        ...timeouts,
      }),
      new Map([...basePids, ["Portkey", portkey.child.pid]]),
      () => {
        if (/Unhandled|Error/.test(portkey.child.output())) {
          throw new Error(`Portkey reported an error:\n${portkey.child.output().slice(-4000)}`);
        }
      },
    );

  // (c) The bare relay: a front and a tier process on NATS request-reply, on a nats-server of
  // its own, measured at the end of every round, so that Portkey and the two meshes keep the
  // order of the runs before it.
  process.stdout.write(
    "starting the bare relay (nats-server, a front and a tier on request-reply)… ",
  );
  const relayNats = await freshNats(binary);
  const relay = await startRelay(relayNats.nats.url, upstreamV1, await freePort(), register);
  console.log(`ready on ${relay.url}`);
  const relayPids = new Map([
    ...basePids,
    ["relay front", relay.front.pid],
    ["relay tier", relay.tier.pid],
  ]);
  if (relayNats.pid !== undefined) relayPids.set("nats-server", relayNats.pid);
  const measureRelay = (round: number) =>
    run(
      "relay",
      `bare relay: front → NATS request-reply → tier${rounds > 1 ? ` (round ${round + 1})` : ""}`,
      "client → front → nats-server → tier → mock upstream (nothing stored)",
      chatRequest({
        baseUrl: `${relay.url}/v1`,
        model: MOCK_MODELS.light,
        ...timeouts,
      }),
      relayPids,
    );

  // (d, e) Through a mesh of its own, asked for handoff/light: tracing off, then on. Each round
  // measures Portkey, the two meshes, then the relay, so every ratio is of rates taken side by
  // side.
  const configPath = join(dir, "handoff.yaml");
  writeFileSync(configPath, peerConfigYaml(upstream.url));
  let otlp: PeerReport["otlp"];
  const order = Array.from({ length: rounds }, (_, round) => [
    { traced: false, round },
    { traced: true, round },
  ]).flat();
  for (const { traced, round } of order) {
    if (!traced) await measurePortkey(round);
    const label = `Handoff handoff/light, tracing ${traced ? "on" : "off"}${rounds > 1 ? ` (round ${round + 1})` : ""}`;
    process.stdout.write(
      `starting a mesh on the mock upstream (nats-server, 4 services${traced ? ", OTLP sink" : ""})… `,
    );
    const { nats, pid: natsPid } = await freshNats(binary);
    const sink = traced ? await startOtlpSink(await freePort(), register) : undefined;
    const mesh = await startBenchMesh({
      natsUrl: nats.url,
      configPath,
      env: { [MOCK_KEY_ENV]: MOCK_KEY },
      onStop: (stop) => cleanups.push(stop),
      overrides: {
        OTEL_TRACES_EXPORTER: sink ? "otlp" : "none",
        OTEL_EXPORTER_OTLP_ENDPOINT: sink?.url,
        OTEL_EXPORTER_OTLP_PROTOCOL: sink ? "http/protobuf" : undefined,
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: undefined,
        ...serviceNodeOptions,
      },
    });
    console.log("ready");
    const pids = new Map(basePids);
    if (natsPid !== undefined) pids.set("nats-server", natsPid);
    for (const [name, proc] of mesh.processes) pids.set(name, proc.pid);
    if (sink) pids.set("OTLP sink", sink.child.pid);
    await run(
      traced ? "handoff-traced" : "handoff",
      label,
      `client → gateway → JetStream → classifier → mock upstream${traced ? ", spans → OTLP sink" : ""}`,
      chatRequest({
        baseUrl: `${mesh.gatewayUrl}/v1`,
        model: "handoff/light",
        route: ["classifier"],
        ...timeouts,
      }),
      pids,
      () => mesh.check(),
    );
    serviceWarnings.push(...mesh.warnings().map((line) => `${label}: ${line}`));
    // Stopping the services flushes the spans they still hold, so the sink's count is complete.
    await mesh.stop();
    await nats.stop();
    if (sink) {
      const stats = await statsOf<{
        exports: number;
        bytes: number;
        spans: number;
        unreadable: number;
      }>(sink.url);
      if (stats.spans === 0) throw new Error("tracing on, but no spans reached the OTLP sink");
      otlp = {
        exports: (otlp?.exports ?? 0) + stats.exports,
        bytes: (otlp?.bytes ?? 0) + stats.bytes,
        spans: (otlp?.spans ?? 0) + stats.spans,
        ops: (otlp?.ops ?? 0) + opsPerWorkload,
      };
      console.log(
        `  OTLP sink: ${stats.exports} exports, ${(stats.spans / opsPerWorkload).toFixed(1)} spans and ${(stats.bytes / opsPerWorkload / 1000).toFixed(1)} kB per request${stats.unreadable > 0 ? ` (${stats.unreadable} exports unreadable)` : ""}`,
      );
      await sink.child.stop();
      await measureRelay(round);
    }
  }
  await portkey.child.stop();
  await relay.front.stop();
  await relay.tier.stop();
  await relayNats.nats.stop();
  await upstream.child.stop();
  return {
    portkey: { version: install.version, install: install.summary, installMs: install.ms },
    measurements,
    otlp,
    durationMs: performance.now() - started + install.ms,
  };
}

async function main(): Promise<void> {
  const binary = findNatsServer();
  if (binary === undefined) {
    throw new Error("nats-server not found on PATH or in /usr/sbin, /usr/local/bin: install it");
  }
  const machine = machineFacts(binary);
  const startedAt = new Date();
  console.log(
    `Handoff mesh benchmark: N=${settings.n}, concurrency ${settings.concurrency}, warm-up ${settings.warmup}, serial ${settings.serialN}`,
  );
  console.log(
    `${machine.cpuModel}, ${machine.cores} cores (load average ${machine.loadAverage.toFixed(2)}), Node ${machine.node}, ${machine.natsServer}\n`,
  );
  // Installed first: without the network, a peer run fails before spending time on the rest.
  const portkeyInstall = settings.peers ? await installPeers() : undefined;

  // Always a fresh server of our own on a free port with a temporary store: never NATS_URL.
  const nats: NatsHandle = await spawnNatsServer(binary);
  cleanups.push(() => nats.stop());
  const pids = new Map<string, number>([["bench (client)", process.pid]]);
  const natsPid = childPids(process.pid, "nats-server")[0];
  if (natsPid !== undefined) pids.set("nats-server", natsPid);

  const measurements: Measurement[] = [];

  const core = await coreRequestReply(nats.url);
  try {
    measurements.push({
      key: "core",
      label: "A. core NATS request-reply",
      what: `request ${core.requestBytes} B → reply ${core.replyBytes} B`,
      ...(await measure("core request-reply", core, nats.url, pids)),
    });
  } finally {
    await core.close();
  }

  const js = await jetStreamWorkQueue(nats.url, ENVELOPE_BYTES);
  try {
    measurements.push({
      key: "jetstream",
      label: "B. JetStream publish → pull → ackAck",
      what: `${js.messageBytes} B message, file store, work queue`,
      ...(await measure("JetStream publish/consume/ack", js, nats.url, pids)),
    });
  } finally {
    await js.close();
  }

  process.stdout.write("starting the mesh (4 processes)… ");
  const mesh = await startBenchMesh({
    natsUrl: nats.url,
    onStop: (stop) => cleanups.push(stop),
    overrides: serviceNodeOptions,
  });
  console.log("ready");
  const meshPids = new Map(pids);
  for (const [name, proc] of mesh.processes) meshPids.set(name, proc.pid);

  const kinds: Array<{ key: Measurement["key"]; label: string; what: string; kind: ChatKind }> = [
    {
      key: "mesh-tools",
      label: 'mesh: "What is 17 * 23?"',
      what: "HTTP → classifier → tool-executor (2 hops, 2 model calls + calculator)",
      kind: {
        question: "What is 17 * 23?",
        route: ["classifier", "tool-executor"],
        contains: "391",
      },
    },
    {
      key: "mesh-light",
      label: 'mesh: "Hello there"',
      what: "HTTP → classifier, answered by the light model (1 hop, 1 model call)",
      kind: { question: "Hello there", route: ["classifier"] },
    },
  ];
  for (const { key, label, what, kind } of kinds) {
    const result = await measure(label, chatOp(mesh.gatewayUrl, kind), nats.url, meshPids);
    mesh.check();
    measurements.push({ key, label, what, ...result });
  }
  const serviceWarnings = mesh.warnings();

  let peers: PeerReport | undefined;
  if (portkeyInstall !== undefined) {
    // The peers get the machine to themselves: the main mesh and its server are done.
    await mesh.stop();
    await nats.stop();
    peers = await runPeers(binary, portkeyInstall, serviceWarnings);
  }

  const finishedAt = new Date();
  const report = {
    settings,
    machine,
    measurements,
    serviceWarnings,
    startedAt,
    finishedAt,
    command: [
      settings.peers ? "BENCH_PEERS=1" : "",
      settings.serviceNodeOptions
        ? `BENCH_SERVICE_NODE_OPTIONS="${settings.serviceNodeOptions}"`
        : "",
      "npm run bench",
    ]
      .filter(Boolean)
      .join(" "),
    peers,
    appendix: readFileSync(new URL("bench/hot-path.md", root), "utf8"),
  };
  console.log(`\n${renderTables(report)}`);
  if (serviceWarnings.length > 0) {
    console.log(`\nService warnings during the run (${serviceWarnings.length}):`);
    for (const line of serviceWarnings.slice(0, 20)) console.log(`  ${line}`);
  }
  const readme = new URL("bench/README.md", root);
  writeFileSync(readme, renderReadme(report));
  console.log(`\nwrote ${readme.pathname} (${((+finishedAt - +startedAt) / 1000).toFixed(1)} s)`);
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
