/**
 * The four services of the mesh as four processes from their built `services/<name>/dist/main.js`,
 * on a given nats-server and config file (or the built-in default), ready when every one answers
 * `/readyz`: every benchmark's mesh (`npm run bench`, its peer meshes, `bench:cache`, `bench:soak`).
 */
import { ServiceNames } from "@handoff/contracts";
import { freePorts, type ServiceProcess, spawnService, waitFor } from "@handoff/testkit";

const READY_TIMEOUT_MS = 30_000;
const root = new URL("..", import.meta.url);

export interface BenchMesh {
  gatewayUrl: string;
  processes: Map<string, ServiceProcess>;
  /** Throws if a service exited, or logged an error, since it started. */
  check(): void;
  /** Warnings (pino level 40) the services logged, `<service>: <message>`. */
  warnings(): string[];
  stop(): Promise<void>;
}

export interface BenchMeshOptions {
  natsUrl: string;
  /** Path of the config file (HANDOFF_CONFIG); none for the built-in default (every tier `sim`). */
  configPath?: string | undefined;
  /** More environment: the API keys and the upstream key the config names. */
  env?: Record<string, string>;
  /** Called with the mesh's stop before the first process starts, so an interruption stops it. */
  onStop: (stop: () => Promise<void>) => void;
  /**
   * Optional: environment applied last, over the fixed settings (`undefined` removes a variable),
   * e.g. `OTEL_TRACES_EXPORTER: "otlp"` and `OTEL_EXPORTER_OTLP_ENDPOINT` to export spans.
   */
  overrides?: Record<string, string | undefined>;
}

export async function startBenchMesh(options: BenchMeshOptions): Promise<BenchMesh> {
  // One port per service (the gateway's API, each worker's /readyz), distinct: the four start
  // together, so a port taken for one and not yet bound could otherwise be handed to another.
  const ports = await freePorts(ServiceNames.length);
  const portOf = new Map(ServiceNames.map((name, i) => [name, ports[i] as number]));
  const gatewayPort = portOf.get("gateway") as number;
  const processes = new Map<string, ServiceProcess>();
  const problems: string[] = [];
  let stopping = false;

  const stop = async () => {
    stopping = true;
    await Promise.all([...processes.values()].map((p) => p.stop(15_000)));
  };
  options.onStop(stop);

  const start = async (name: string) => {
    const healthPort = portOf.get(name) as number;
    const proc = spawnService({
      name,
      entry: new URL(`services/${name}/dist/main.js`, root).pathname,
      env: {
        ...options.env,
        NATS_URL: options.natsUrl,
        HANDOFF_CONFIG: options.configPath,
        HANDOFF_CONCURRENCY: undefined,
        LOG_LEVEL: "warn",
        OTEL_SERVICE_NAME: undefined,
        OTEL_TRACES_EXPORTER: "none",
        OTEL_METRICS_EXPORTER: "none",
        OTEL_LOGS_EXPORTER: "none",
        OTEL_EXPORTER_OTLP_ENDPOINT: undefined,
        HOST: "127.0.0.1",
        PORT: String(gatewayPort),
        HEALTH_PORT: name === "gateway" ? undefined : String(healthPort),
        ...options.overrides,
      },
    });
    processes.set(name, proc);
    void proc.exited.then((exit) => {
      if (!stopping) {
        problems.push(
          `${name} exited during the run (code ${exit.code}, signal ${exit.signal}):\n${proc.output().slice(-4000)}`,
        );
      }
    });
    // At LOG_LEVEL=warn there is no "ready" log line: ask /readyz (workers via HEALTH_PORT).
    const ready = waitFor(
      async () => (await fetch(`http://127.0.0.1:${healthPort}/readyz`)).status === 200,
      { timeoutMs: READY_TIMEOUT_MS, intervalMs: 100, what: `${name} /readyz` },
    );
    const died = proc.exited.then((exit) => {
      throw new Error(
        `${name} exited before it was ready (code ${exit.code}, signal ${exit.signal}):\n${proc.output().slice(-4000)}`,
      );
    });
    await Promise.race([ready, died]);
  };

  try {
    await Promise.all(ServiceNames.map(start));
  } catch (error) {
    await stop();
    throw error;
  }

  return {
    gatewayUrl: `http://127.0.0.1:${gatewayPort}`,
    processes,
    check() {
      for (const [name, proc] of processes) {
        const errors = proc.logs().filter((line) => Number(line.level) >= 50);
        if (errors.length > 0) {
          problems.push(
            `${name} logged ${errors.length} error(s), e.g. ${JSON.stringify(errors[0])}`,
          );
        }
      }
      if (problems.length > 0) throw new Error(problems.join("\n"));
    },
    warnings() {
      return [...processes].flatMap(([name, proc]) =>
        proc
          .logs()
          .filter((line) => Number(line.level) === 40)
          .map((line) => `${name}: ${String(line.msg)}`),
      );
    },
    stop,
  };
}
