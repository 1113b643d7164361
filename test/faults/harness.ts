import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Stages } from "@handoff/contracts";
import {
  findNatsServer,
  freePort,
  freePortNotIn,
  type NatsHandle,
  type ServiceProcess,
  spawnNatsServer,
  spawnService,
  waitFor,
} from "@handoff/testkit";
import { knob } from "./load.js";
import { CountingUpstream, type Tier, TierModels } from "./upstream.js";

/**
 * The mesh of the fault suite: the four services as OS processes running their build output
 * (`services/<name>/dist/main.js`), each with its own config file whose model deployments point at
 * the {@link CountingUpstream} and name the process in an `x-fault-proc` header, so every model
 * call is counted per job and per process. Processes are named `<service>#<n>`; a replacement gets
 * the next number, so the calls of a killed process and of its successor stay apart.
 */

const root = fileURLToPath(new URL("../..", import.meta.url));

export type ServiceName = "gateway" | (typeof Stages)[number];
export const Workers = Stages;

/** The stage that calls each tier's model. */
export const TierStage = {
  light: "classifier",
  mid: "tool-executor",
  heavy: "heavy-reasoner",
} as const satisfies Record<Tier, (typeof Stages)[number]>;

export function entry(name: ServiceName): string {
  return join(root, "services", name, "dist", "main.js");
}

/** Mesh limits the suite runs with: redeliveries after 2 s, so a kill heals quickly. */
export const ACK_WAIT_MS = 2_000;
export const MAX_DELIVERIES = 5;

/** Jobs one replica works on at once (`HANDOFF_CONCURRENCY`), the services' defaults. */
export const Concurrency: Record<(typeof Stages)[number], number> = {
  classifier: 32,
  "tool-executor": 16,
  "heavy-reasoner": 8,
};

/** A service process of the mesh and what happened to it. */
export interface ProcEntry {
  label: string;
  name: ServiceName;
  proc: ServiceProcess;
  /** The worker's `HEALTH_PORT` (the gateway's probes are on its HTTP port). */
  healthPort: number | undefined;
  startedAt: number;
  /** When it first answered `/readyz` 200 (as seen by {@link FaultMesh.waitReady}). */
  readyAt: number | undefined;
  /** When the suite SIGKILLed it. */
  killedAt: number | undefined;
  /** When the suite SIGTERMed it. */
  stoppedAt: number | undefined;
  /** When it exited, whatever the reason. */
  exitedAt: number | undefined;
}

export interface FaultMeshOptions {
  /** `NATS_URL` for every service: one URL, or a cluster's comma-separated list. */
  natsUrl: string;
  /** `jetstream.replicas`: 3 on the cluster. */
  replicas: number;
  upstream: CountingUpstream;
  /** `LOG_LEVEL` of the services; default `FAULTS_LOG_LEVEL` or `info`. */
  logLevel?: string;
}

function configText(options: FaultMeshOptions, label: string): string {
  const deployment = (tier: Tier) => `
    - id: fault-${tier}
      provider: openai-compatible
      model: ${TierModels[tier]}
      base_url: ${options.upstream.baseUrl}
      headers: { x-fault-proc: "${label}" }
      timeout_ms: 120000
      retries: 1`;
  // One attempt per call: a second call for a job at the upstream can only be a second execution.
  return `
tiers:
  light:${deployment("light")}
  mid:${deployment("mid")}
  heavy:${deployment("heavy")}
routing:
  strategy: rules
resilience:
  max_attempts: 1
limits:
  ack_wait_ms: ${ACK_WAIT_MS}
  max_deliveries: ${MAX_DELIVERIES}
  request_timeout_ms: 600000
jetstream:
  replicas: ${options.replicas}
`;
}

/** Resident set size of a process in MiB, from /proc; undefined once it is gone. */
export function rssMiB(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = /VmRSS:\s+(\d+)\s+kB/.exec(status)?.[1];
    return kb === undefined ? undefined : Number(kb) / 1024;
  } catch {
    return undefined;
  }
}

async function readyz(url: string): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

async function healthz(url: string): Promise<number | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return undefined;
  }
}

export class FaultMesh {
  readonly procs = new Map<string, ProcEntry>();
  readonly #counters = new Map<ServiceName, number>();
  /**
   * Ports this mesh has handed out (the gateway's among them): a worker started while the gateway
   * is down must not be given the gateway's port, which the kernel would otherwise hand out again.
   */
  readonly #ports = new Set<number>();

  private constructor(
    readonly options: FaultMeshOptions,
    readonly gatewayUrl: string,
    private readonly gatewayPort: number,
    private readonly dir: string,
  ) {
    this.#ports.add(gatewayPort);
  }

  static async create(options: FaultMeshOptions): Promise<FaultMesh> {
    const port = await freePort();
    const dir = await mkdtemp(join(tmpdir(), "handoff-faults-"));
    return new FaultMesh(options, `http://127.0.0.1:${port}`, port, dir);
  }

  /** Starts the four services (one replica each) and waits until each is ready. */
  async startAll(): Promise<void> {
    await Promise.all((["gateway", ...Workers] as ServiceName[]).map((name) => this.start(name)));
  }

  /**
   * Starts a process of `name` and, unless `wait` is false, waits until it is ready (`/readyz`
   * 200). Returns its label, `<name>#<n>`.
   */
  async start(name: ServiceName, { wait = true } = {}): Promise<string> {
    const n = (this.#counters.get(name) ?? 0) + 1;
    this.#counters.set(name, n);
    const label = `${name}#${n}`;
    const configPath = join(this.dir, `${name}-${n}.yaml`);
    await writeFile(configPath, configText(this.options, label));
    const healthPort = name === "gateway" ? undefined : await freePortNotIn(this.#ports);
    const proc = spawnService({
      name: label,
      entry: entry(name),
      env: {
        NATS_URL: this.options.natsUrl,
        HANDOFF_CONFIG: configPath,
        HOST: "127.0.0.1",
        PORT: name === "gateway" ? String(this.gatewayPort) : undefined,
        HEALTH_PORT: healthPort === undefined ? undefined : String(healthPort),
        HANDOFF_CONCURRENCY: name === "gateway" ? undefined : String(Concurrency[name]),
        LOG_LEVEL: this.options.logLevel ?? knob("FAULTS_LOG_LEVEL") ?? "info",
        OTEL_SERVICE_NAME: undefined,
        OTEL_TRACES_EXPORTER: "none",
        OTEL_METRICS_EXPORTER: "none",
        OTEL_LOGS_EXPORTER: "none",
      },
    });
    const entryRecord: ProcEntry = {
      label,
      name,
      proc,
      healthPort,
      startedAt: Date.now(),
      readyAt: undefined,
      killedAt: undefined,
      stoppedAt: undefined,
      exitedAt: undefined,
    };
    void proc.exited.then(() => {
      entryRecord.exitedAt = Date.now();
    });
    this.procs.set(label, entryRecord);
    if (wait) await this.waitReady(label);
    return label;
  }

  entry(label: string): ProcEntry {
    const found = this.procs.get(label);
    if (!found) throw new Error(`no process ${label}`);
    return found;
  }

  /** Labels of the running processes of `name`. */
  live(name: ServiceName): string[] {
    return [...this.procs.values()]
      .filter((p) => p.name === name && p.exitedAt === undefined)
      .map((p) => p.label);
  }

  /** The `/readyz` URL of a process. */
  probeUrl(label: string, probe: "readyz" | "healthz" = "readyz"): string {
    const { healthPort } = this.entry(label);
    const base = healthPort === undefined ? this.gatewayUrl : `http://127.0.0.1:${healthPort}`;
    return `${base}/${probe}`;
  }

  async isReady(label: string): Promise<boolean> {
    return readyz(this.probeUrl(label));
  }

  async healthStatus(label: string): Promise<number | undefined> {
    return healthz(this.probeUrl(label, "healthz"));
  }

  /** Waits until the process answers `/readyz` 200; rejects if it exits first. */
  async waitReady(label: string, timeoutMs = 60_000): Promise<number> {
    const p = this.entry(label);
    await waitFor(
      async () => {
        if (p.exitedAt !== undefined) {
          throw new Error(`${label} exited before it was ready:\n${p.proc.output().slice(-4_000)}`);
        }
        return (await this.isReady(label)) || undefined;
      },
      { timeoutMs, intervalMs: 100, what: `${label} to be ready` },
    ).catch((error: unknown) => {
      throw new Error(
        `${(error as Error).message}\nlast output of ${label}:\n${p.proc.output().slice(-4_000)}`,
      );
    });
    p.readyAt ??= Date.now();
    return p.readyAt;
  }

  /** SIGKILLs a process (a crash) and records when. */
  async kill(label: string): Promise<number> {
    const p = this.entry(label);
    p.killedAt = Date.now();
    await p.proc.kill();
    return p.killedAt;
  }

  /** SIGTERMs a process (a drain) and waits for its exit. */
  async terminate(label: string): Promise<void> {
    const p = this.entry(label);
    p.stoppedAt = Date.now();
    await p.proc.stop(30_000);
  }

  /** When each process the suite SIGKILLed was killed: calls made before that may be re-run. */
  killTimes(): Map<string, number> {
    const out = new Map<string, number>();
    for (const p of this.procs.values()) if (p.killedAt !== undefined) out.set(p.label, p.killedAt);
    return out;
  }

  /** Resident memory of every running process, in MiB. */
  rss(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const p of this.procs.values()) {
      if (p.exitedAt !== undefined || p.proc.pid < 0) continue;
      const value = rssMiB(p.proc.pid);
      if (value !== undefined) out[p.label] = value;
    }
    return out;
  }

  /** Log records of every process of `name` matching `predicate`. */
  logs(
    name: ServiceName | undefined,
    predicate: (line: Record<string, unknown>) => boolean,
  ): Array<Record<string, unknown> & { proc: string }> {
    const out: Array<Record<string, unknown> & { proc: string }> = [];
    for (const p of this.procs.values()) {
      if (name !== undefined && p.name !== name) continue;
      for (const line of p.proc.logs()) if (predicate(line)) out.push({ ...line, proc: p.label });
    }
    return out;
  }

  /** Processes that exited without the suite killing or stopping them. */
  unexpectedExits(): string[] {
    return [...this.procs.values()]
      .filter(
        (p) => p.exitedAt !== undefined && p.killedAt === undefined && p.stoppedAt === undefined,
      )
      .map((p) => `${p.label}: ${p.proc.output().slice(-2_000)}`);
  }

  async stop(): Promise<void> {
    await Promise.all([...this.procs.values()].map((p) => p.proc.stop(20_000)));
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** A scenario file's world: one nats-server with a file store, the counting upstream, the mesh. */
export interface SingleNode {
  nats: NatsHandle;
  upstream: CountingUpstream;
  mesh: FaultMesh;
}

/** Starts a nats-server, the upstream with `latency` per tier, and the four services on them. */
export async function startSingleNode(latency: Record<Tier, number>): Promise<SingleNode> {
  const binary = findNatsServer();
  if (!binary) throw new Error("the fault suite needs nats-server (apt-get install nats-server)");
  const nats = await spawnNatsServer(binary);
  const upstream = await CountingUpstream.start(latency);
  const mesh = await FaultMesh.create({ natsUrl: nats.url, replicas: 1, upstream });
  await mesh.startAll();
  return { nats, upstream, mesh };
}

/** Stops what {@link startSingleNode} (or a cluster scenario) started; safe on a failed start. */
export async function stopAll(
  mesh: FaultMesh | undefined,
  upstream: CountingUpstream | undefined,
  nats: { stop(): Promise<void> } | undefined,
): Promise<void> {
  await mesh?.stop();
  await upstream?.close();
  await nats?.stop();
}
