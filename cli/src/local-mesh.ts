import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import { ServiceNames } from "@handoff/contracts";
import { natsConnectionOptions } from "@handoff/mesh";
import {
  findNatsServer,
  type NatsHandle,
  probeNats,
  serviceEnv,
  spawnNatsServer,
  waitFor,
} from "@handoff/nats-process";
import { Svcm } from "@nats-io/services";
import { connect } from "@nats-io/transport-node";
import {
  DEFAULT_RESTART_POLICY,
  type GaveUp,
  type RestartPolicy,
  Supervisor,
} from "./supervise.js";

export interface LocalMeshOptions {
  /** The repository root (where `services/*\/dist` live). */
  root: string;
  env?: NodeJS.ProcessEnv;
  /** Progress lines for a person. */
  say?: (line: string) => void;
  /** When a crashed service is restarted, and when `up` gives up on it. */
  restartPolicy?: RestartPolicy;
  /** Aborting it stops a start under way: what was started is stopped, and the start rejects. */
  signal?: AbortSignal;
}

export interface LocalMesh {
  gatewayUrl: string;
  natsUrl: string;
  /** `nats-server` started by us, or a server that was already there. */
  natsStartedHere: boolean;
  logDir: string;
  /** The running service processes, by name (a restarted one replaces its predecessor). */
  children(): Map<string, ChildProcess>;
  /**
   * Resolves when a service crashed `restartPolicy.maxCrashes` times within its window, after
   * everything (services, and NATS if started here) has been stopped; the error names the service.
   */
  failed: Promise<Error>;
  stop(): Promise<void>;
}

const WORKERS = ["classifier", "tool-executor", "heavy-reasoner"] as const;

export const HOW_TO_INSTALL_NATS = [
  "Handoff needs a NATS server with JetStream, and none answered or could be started.",
  "Do one of:",
  "  - Debian/Ubuntu:  sudo apt-get install -y nats-server",
  "  - macOS:          brew install nats-server",
  "  - any OS:         download nats-server from https://github.com/nats-io/nats-server/releases and put it on PATH",
  "  - Docker:         docker run -p 4222:4222 nats:2.10-alpine -js",
  "  - or point NATS_URL at a server you run (JetStream on).",
].join("\n");

async function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** Finds or starts NATS: `NATS_URL` (default localhost:4222) if it answers, else `nats-server`. */
async function provideNats(
  stateDir: string,
  env: NodeJS.ProcessEnv,
  say: (line: string) => void,
): Promise<{ url: string; handle?: NatsHandle }> {
  const url = env.NATS_URL?.trim() || "nats://127.0.0.1:4222";
  // Credentials and TLS from the NATS_* variables, as the services will use them.
  const { state } = await probeNats(url, 1_500, natsConnectionOptions(undefined, env));
  if (state === "jetstream") {
    say(`NATS:     using the server at ${url}`);
    return { url };
  }
  if (state === "no-jetstream") {
    throw new Error(
      `A NATS server answers at ${url} but JetStream is off. Restart it with -js, or set NATS_URL to another server.`,
    );
  }
  const binary = findNatsServer();
  if (!binary) throw new Error(`No NATS server answers at ${url}.\n${HOW_TO_INSTALL_NATS}`);
  const storeDir = join(stateDir, "nats");
  mkdirSync(storeDir, { recursive: true });
  const port = (await portFree(4222)) ? 4222 : undefined;
  const handle = await spawnNatsServer(binary, { storeDir, ...(port ? { port } : {}) });
  say(`NATS:     started ${binary} at ${handle.url} (JetStream data in ${storeDir})`);
  return { url: handle.url, handle };
}

function startService(
  root: string,
  name: string,
  env: NodeJS.ProcessEnv,
  logDir: string,
): ChildProcess {
  const log = openSync(join(logDir, `${name}.log`), "a");
  try {
    return spawn(process.execPath, [join(root, "services", name, "dist", "main.js")], {
      cwd: root,
      env,
      stdio: ["ignore", log, log],
      // Its own process group: a Ctrl-C in the terminal reaches only this runner, which then
      // stops each service with one SIGTERM, so they drain instead of exiting on a second signal.
      detached: true,
    });
  } finally {
    // The child has its own copy.
    closeSync(log);
  }
}

/** The last lines of a service's log, to show why it died. */
function logTail(file: string, lines = 8): string[] {
  try {
    const text = readFileSync(file, "utf8").trimEnd();
    return text === "" ? [] : text.split("\n").slice(-lines);
  } catch {
    return [];
  }
}

/**
 * A service that exited while the mesh started, or crashed too often after: the message names it,
 * its log, and the log's last lines. Reported as it is, without a stack: the log says the rest.
 */
export class ServiceFailed extends Error {
  override readonly name = "ServiceFailed";
}

/** Where `up` keeps NATS data and logs: `$HANDOFF_STATE_DIR`, or `.handoff` in the repository. */
export function stateDir(root: string, env: NodeJS.ProcessEnv): string {
  const dir = env.HANDOFF_STATE_DIR?.trim();
  return dir ? resolve(dir) : join(root, ".handoff");
}

/** Resolves when `signal` aborts; never when there is none. */
function aborted(signal: AbortSignal | undefined): Promise<never> {
  return new Promise((_, reject) => {
    if (!signal) return;
    const fire = () => reject(new Error("start-up interrupted"));
    if (signal.aborted) fire();
    else signal.addEventListener("abort", fire, { once: true });
  });
}

/**
 * The whole mesh on this machine, no Docker: NATS (found or started), then the four services as
 * their own processes, logging to `.handoff/logs/` (or `$HANDOFF_STATE_DIR/logs/`). Resolves when
 * the gateway is ready and every service answers `$SRV.PING`; a service that exits before then
 * fails the start. From then on the services are supervised: one that exits is restarted with a
 * backoff (and the restart is said), and one that crashes too often stops everything
 * (`failed`).
 */
export async function startLocalMesh(options: LocalMeshOptions): Promise<LocalMesh> {
  const { root } = options;
  const baseEnv = options.env ?? process.env;
  const say = options.say ?? (() => {});
  const state = stateDir(root, baseEnv);
  const nats = await provideNats(state, baseEnv, say);
  if (options.signal?.aborted) {
    await nats.handle?.stop();
    throw new Error("start-up interrupted");
  }
  const interrupted = aborted(options.signal);
  // A rejection nobody awaits yet must not end the process.
  interrupted.catch(() => {});

  const logDir = join(state, "logs");
  mkdirSync(logDir, { recursive: true });
  const port = Number(baseEnv.PORT ?? 8080);
  const host = baseEnv.HOST ?? "127.0.0.1";
  const collector = Boolean(baseEnv.OTEL_EXPORTER_OTLP_ENDPOINT);
  // `serviceEnv`: with the heap limits the services get wherever they are started.
  const env: NodeJS.ProcessEnv = serviceEnv({
    ...baseEnv,
    NATS_URL: nats.url,
    // Without a collector configured, keep the SDK from exporting to a port nobody serves.
    OTEL_TRACES_EXPORTER: baseEnv.OTEL_TRACES_EXPORTER ?? (collector ? undefined : "none"),
    OTEL_METRICS_EXPORTER: baseEnv.OTEL_METRICS_EXPORTER ?? (collector ? undefined : "none"),
    OTEL_LOGS_EXPORTER: baseEnv.OTEL_LOGS_EXPORTER ?? "none",
  });
  const supervisor = new Supervisor({
    policy: options.restartPolicy ?? DEFAULT_RESTART_POLICY,
    say,
  });
  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      await supervisor.stop();
      await nats.handle?.stop();
    })();
    return stopping;
  };
  const logOf = (name: string) => join(logDir, `${name}.log`);
  const explain = (reason: GaveUp) =>
    new ServiceFailed(
      [
        `${reason.message}; see ${logOf(reason.service)}`,
        ...logTail(logOf(reason.service)).map((line) => `  | ${line}`),
      ].join("\n"),
    );
  // The supervisor giving up stops everything; `failed` resolves once it has.
  const failed = supervisor.failure.then(async (reason) => {
    await stop();
    return explain(reason);
  });
  const startFailed = failed.then((error) => Promise.reject(error));
  startFailed.catch(() => {});

  try {
    for (const name of WORKERS) {
      supervisor.add(name, () => startService(root, name, env, logDir));
    }
    supervisor.add("gateway", () =>
      startService(root, "gateway", { ...env, PORT: String(port), HOST: host }, logDir),
    );

    const gatewayUrl = `http://${host === "0.0.0.0" ? "127.0.0.1" : host}:${port}`;
    await Promise.race([
      (async () => {
        await waitFor(
          async () => {
            const res = await fetch(`${gatewayUrl}/readyz`).catch(() => undefined);
            return res?.ok ? true : undefined;
          },
          { timeoutMs: 30_000, intervalMs: 200, what: `gateway ready at ${gatewayUrl}/readyz` },
        );
        await waitForServices(nats.url, env);
      })(),
      startFailed,
      interrupted,
    ]);
    // Up: from now on a crash is restarted instead of failing the start.
    supervisor.arm();
    return {
      gatewayUrl,
      natsUrl: nats.url,
      natsStartedHere: nats.handle !== undefined,
      logDir,
      children: () => supervisor.children(),
      failed,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Waits until every Handoff service answers the service API's PING. */
async function waitForServices(natsUrl: string, env: NodeJS.ProcessEnv): Promise<void> {
  const nc = await connect({
    ...natsConnectionOptions(undefined, env, natsUrl),
    name: "handoff-cli",
  });
  try {
    const client = new Svcm(nc).client({ strategy: "timer", maxWait: 500 });
    await waitFor(
      async () => {
        const seen = new Set<string>();
        for await (const identity of await client.ping()) seen.add(identity.name);
        return ServiceNames.every((name) => seen.has(name)) ? true : undefined;
      },
      {
        timeoutMs: 30_000,
        intervalMs: 200,
        what: `all of ${ServiceNames.join(", ")} answering $SRV.PING`,
      },
    );
  } finally {
    await nc.close();
  }
}
