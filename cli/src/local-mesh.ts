import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, openSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { ServiceNames } from "@handoff/contracts";
import { natsConnectionOptions } from "@handoff/mesh";
import {
  findNatsServer,
  type NatsHandle,
  probeNats,
  spawnNatsServer,
  waitFor,
} from "@handoff/testkit";
import { Svcm } from "@nats-io/services";
import { connect } from "@nats-io/transport-node";

export interface LocalMeshOptions {
  /** The repository root (where `services/*\/dist` live). */
  root: string;
  env?: NodeJS.ProcessEnv;
  /** Progress lines for a person. */
  say?: (line: string) => void;
}

export interface LocalMesh {
  gatewayUrl: string;
  natsUrl: string;
  /** `nats-server` started by us, or a server that was already there. */
  natsStartedHere: boolean;
  logDir: string;
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
  root: string,
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
  const storeDir = join(root, ".handoff", "nats");
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
  const child = spawn(process.execPath, [join(root, "services", name, "dist", "main.js")], {
    cwd: root,
    env,
    stdio: ["ignore", log, log],
    // Its own process group: a Ctrl-C in the terminal reaches only this runner, which then
    // stops each service with one SIGTERM, so they drain instead of exiting on a second signal.
    detached: true,
  });
  return child;
}

async function terminate(child: ChildProcess, timeoutMs = 15_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  await exited;
  clearTimeout(timer);
}

/**
 * The whole mesh on this machine, no Docker: NATS (found or started), then the four services as
 * their own processes, logging to `.handoff/logs/`. Resolves when the gateway is ready and every
 * service answers `$SRV.PING`.
 */
export async function startLocalMesh(options: LocalMeshOptions): Promise<LocalMesh> {
  const { root } = options;
  const baseEnv = options.env ?? process.env;
  const say = options.say ?? (() => {});
  const nats = await provideNats(root, baseEnv, say);

  const logDir = join(root, ".handoff", "logs");
  mkdirSync(logDir, { recursive: true });
  const port = Number(baseEnv.PORT ?? 8080);
  const host = baseEnv.HOST ?? "127.0.0.1";
  const collector = Boolean(baseEnv.OTEL_EXPORTER_OTLP_ENDPOINT);
  const env: NodeJS.ProcessEnv = {
    ...baseEnv,
    NATS_URL: nats.url,
    // Without a collector configured, keep the SDK from exporting to a port nobody serves.
    OTEL_TRACES_EXPORTER: baseEnv.OTEL_TRACES_EXPORTER ?? (collector ? undefined : "none"),
    OTEL_METRICS_EXPORTER: baseEnv.OTEL_METRICS_EXPORTER ?? (collector ? undefined : "none"),
    OTEL_LOGS_EXPORTER: baseEnv.OTEL_LOGS_EXPORTER ?? "none",
  };
  const children = new Map<string, ChildProcess>();
  const stop = async () => {
    await Promise.all([...children.values()].map((child) => terminate(child)));
    await nats.handle?.stop();
  };

  try {
    for (const name of WORKERS) children.set(name, startService(root, name, env, logDir));
    children.set(
      "gateway",
      startService(root, "gateway", { ...env, PORT: String(port), HOST: host }, logDir),
    );
    for (const [name, child] of children) {
      child.once("exit", (code, signal) => {
        if (code !== 0 && signal !== "SIGTERM") {
          say(
            `${name} exited (code ${code}, signal ${signal}); see ${join(logDir, `${name}.log`)}`,
          );
        }
      });
    }

    const gatewayUrl = `http://${host === "0.0.0.0" ? "127.0.0.1" : host}:${port}`;
    await waitFor(
      async () => {
        for (const [name, child] of children) {
          if (child.exitCode !== null) {
            throw new Error(
              `${name} exited with code ${child.exitCode}; see ${join(logDir, `${name}.log`)}`,
            );
          }
        }
        const res = await fetch(`${gatewayUrl}/readyz`).catch(() => undefined);
        return res?.ok ? true : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200, what: `gateway ready at ${gatewayUrl}/readyz` },
    );
    await waitForServices(nats.url, env);
    return {
      gatewayUrl,
      natsUrl: nats.url,
      natsStartedHere: nats.handle !== undefined,
      logDir,
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
