import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ServiceNames } from "@handoff/contracts";
import {
  freePort,
  type NatsHandle,
  type ServiceProcess,
  SpanCollector,
  spawnService,
  startNats,
  waitFor,
} from "@handoff/testkit";
import { Svcm } from "@nats-io/services";
import { connect } from "@nats-io/transport-node";

const root = fileURLToPath(new URL("../..", import.meta.url));

export type ServiceName = (typeof ServiceNames)[number];

/** Where a built service lives; the e2e suites run what `npm run build` produced. */
export function entry(name: ServiceName): string {
  return join(root, "services", name, "dist", "main.js");
}

export interface Mesh {
  nats: NatsHandle;
  spans: SpanCollector;
  gatewayUrl: string;
  processes: Map<string, ServiceProcess>;
  /** Starts one more replica (or a replacement) of a service. */
  start(name: ServiceName, label?: string): Promise<ServiceProcess>;
  stop(): Promise<void>;
}

export interface MeshOptions {
  /** YAML config text for HANDOFF_CONFIG; the built-in sim profile when absent. */
  config?: string;
  /** Services to start (all four by default). */
  services?: ServiceName[];
  /** A NATS server to use (stopped with the mesh); by default the testkit starts an open one. */
  nats?: NatsHandle;
  /** Extra environment for every service. */
  env?: Record<string, string | undefined>;
  /** Extra environment for one service: its NATS identity, say. */
  serviceEnv?: (name: ServiceName) => Record<string, string | undefined>;
}

/**
 * Starts NATS, an OTLP receiver, and the services as separate OS processes exporting spans
 * over OTLP/HTTP JSON, and waits until each answers the NATS service API.
 */
export async function startMesh(options: MeshOptions = {}): Promise<Mesh> {
  const nats = options.nats ?? (await startNats());
  const spans = await SpanCollector.start();
  const port = await freePort();
  const processes = new Map<string, ServiceProcess>();
  let configPath: string | undefined;
  if (options.config) {
    configPath = join(mkdtempSync(join(tmpdir(), "handoff-e2e-")), "handoff.yaml");
    writeFileSync(configPath, options.config);
  }
  const env = {
    NATS_URL: nats.url,
    HANDOFF_CONFIG: configPath,
    OTEL_SERVICE_NAME: undefined,
    OTEL_TRACES_EXPORTER: "otlp",
    OTEL_EXPORTER_OTLP_ENDPOINT: spans.endpoint,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_BSP_SCHEDULE_DELAY: "100",
    OTEL_METRICS_EXPORTER: "otlp",
    OTEL_METRIC_EXPORT_INTERVAL: "500",
    OTEL_LOGS_EXPORTER: "none",
    LOG_LEVEL: "info",
    PORT: String(port),
    HOST: "127.0.0.1",
    ...options.env,
  };

  const start = async (name: ServiceName, label = name) => {
    const proc = spawnService({
      name: label,
      entry: entry(name),
      env: { ...env, ...options.serviceEnv?.(name) },
    });
    processes.set(label, proc);
    await proc.waitForLog(
      (line) => line.msg === `${name} ready` || line.msg === "gateway ready",
      20_000,
    );
    return proc;
  };

  const stop = async () => {
    await Promise.all([...processes.values()].map((p) => p.stop(15_000)));
    await spans.close();
    await nats.stop();
  };

  try {
    const names = options.services ?? [...ServiceNames];
    await Promise.all(names.map((name) => start(name)));
    return { nats, spans, gatewayUrl: `http://127.0.0.1:${port}`, processes, start, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** The names of the services answering `$SRV.PING`, one entry per instance. */
export async function pingServices(natsUrl: string): Promise<string[]> {
  const nc = await connect({ servers: natsUrl });
  try {
    const names: string[] = [];
    const client = new Svcm(nc).client({ strategy: "timer", maxWait: 1_000 });
    for await (const identity of await client.ping()) names.push(identity.name);
    return names.sort();
  } finally {
    await nc.close();
  }
}

export async function postChat(
  gatewayUrl: string,
  content: string,
  extra: Record<string, unknown> = {},
) {
  const res = await fetch(`${gatewayUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "handoff", messages: [{ role: "user", content }], ...extra }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

export { waitFor };
