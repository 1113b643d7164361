import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, rmSync, statSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import type { ConnectionOptions } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { hasExited, killHard, onProcessExit, waitExit } from "./exit-guard.js";
import { freePort } from "./free-port.js";

/** A NATS server for a test, whichever way it was obtained. */
export interface NatsHandle {
  /** Client URL, e.g. `nats://127.0.0.1:43121`. */
  url: string;
  /** `external` came from `NATS_URL`, `process` is a spawned nats-server, `container` a Testcontainers one. */
  kind: "external" | "process" | "container";
  /** `process` only: the JetStream store directory (a temporary one is removed by {@link NatsHandle.stop}). */
  storeDir?: string;
  /**
   * How a client must connect besides the URL (credentials, TLS files), as given in
   * {@link SpawnNatsOptions.connect}; empty for an open server.
   */
  connectOptions: Partial<ConnectionOptions>;
  /** `process` only: what the server has logged (the last 64 KiB), e.g. permission violations. */
  output(): string;
  /**
   * Releases the server. external: no-op; process: SIGTERM, wait for exit (SIGKILL after 5 s),
   * remove the temporary store; container: stop it. Safe to call twice.
   */
  stop(): Promise<void>;
  /**
   * process only: stop and start again on the same port and store (for reconnect tests).
   * Resolves once the server serves again; clients reconnect on their own schedule, and requests
   * sent before they do can be lost, so wait for the client's `reconnect` status.
   */
  restart(): Promise<void>;
  /** process only: SIGKILL the server; the store is kept, so {@link NatsHandle.restart} recovers it. */
  kill(): Promise<void>;
}

const EXTRA_SEARCH_DIRS = ["/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/bin"];
const READY_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 5_000;
const OUTPUT_LIMIT = 64 * 1024;

/**
 * Locates a nats-server executable: PATH first, then the sbin/bin directories where distro
 * packages put it (sbin is often missing from PATH for non-root users).
 */
export function findNatsServer(): string | undefined {
  const exe = process.platform === "win32" ? "nats-server.exe" : "nats-server";
  const dirs = (process.env.PATH ?? "").split(delimiter).filter((dir) => dir !== "");
  for (const dir of [...dirs, ...EXTRA_SEARCH_DIRS]) {
    const candidate = join(dir, exe);
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // Not here; keep looking.
    }
  }
  return undefined;
}

/** A running nats-server child with its captured output. */
interface Launched {
  child: ChildProcess;
  output(): string;
  spawnError(): Error | undefined;
}

class AddressInUseError extends Error {}

interface LaunchSpec {
  port: number;
  storeDir: string;
  jetstream: boolean;
  /** A nats.conf to read first; the flags (address, port, store, JetStream) override it. */
  configFile?: string;
  env?: Record<string, string>;
}

function launch(binary: string, spec: LaunchSpec): Launched {
  const args = spec.configFile ? ["-c", spec.configFile] : [];
  args.push("-a", "127.0.0.1", "-p", String(spec.port), "-sd", spec.storeDir);
  if (spec.jetstream) args.push("-js");
  const child = spawn(binary, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...spec.env },
  });
  let output = "";
  let error: Error | undefined;
  const append = (chunk: string) => {
    output += chunk;
    if (output.length > OUTPUT_LIMIT) output = output.slice(-OUTPUT_LIMIT);
  };
  child.stdout?.setEncoding("utf8").on("data", append);
  child.stderr?.setEncoding("utf8").on("data", append);
  // Without a listener a failed spawn (EACCES, ENOENT) would crash the test process.
  child.on("error", (err) => {
    error = err;
    append(`\n[spawn error] ${err.message}\n`);
  });
  return { child, output: () => output, spawnError: () => error };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** What answers at a NATS URL: a server with JetStream, one without, or nothing. */
export interface NatsProbe {
  state: "jetstream" | "no-jetstream" | "down";
  /** Why it is not `jetstream`, for error messages. */
  detail?: string;
}

/**
 * Connects once without reconnecting and asks the JetStream API for account info: the cheapest
 * call that only succeeds once JetStream really serves (it finishes recovering its store after
 * the client port opens). Used by the tests' readiness wait and by the local runner.
 */
export async function probeNats(
  url: string,
  timeoutMs = 1_000,
  options: Partial<ConnectionOptions> = {},
): Promise<NatsProbe> {
  let nc: Awaited<ReturnType<typeof connect>> | undefined;
  try {
    nc = await connect({
      ...options,
      servers: url,
      reconnect: false,
      timeout: timeoutMs,
      name: "handoff-probe",
    });
    const reply = await nc.request("$JS.API.INFO", "", { timeout: timeoutMs });
    const info = reply.json<{ error?: { code?: number; description?: string } }>();
    if (!info.error) return { state: "jetstream" };
    return {
      state: "no-jetstream",
      detail: `JetStream not ready: ${info.error.description ?? info.error.code}`,
    };
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    // Connected, but nobody answered the JetStream API: JetStream is off (or not up yet).
    return { state: nc ? "no-jetstream" : "down", detail };
  } finally {
    await nc?.close();
  }
}

/** Succeeds once the server accepts a client and, when asked, answers a JetStream API call. */
async function probe(
  url: string,
  jetstream: boolean,
  options: Partial<ConnectionOptions>,
): Promise<void> {
  const { state, detail } = await probeNats(url, 1_000, options);
  if (state === "down" || (jetstream && state !== "jetstream")) throw new Error(detail ?? state);
}

async function waitReady(
  launched: Launched,
  url: string,
  jetstream: boolean,
  options: Partial<ConnectionOptions>,
): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let lastError: unknown;
  while (Date.now() < deadline) {
    const spawnError = launched.spawnError();
    if (spawnError || hasExited(launched.child)) {
      const out = launched.output();
      if (/address already in use/i.test(out)) throw new AddressInUseError(out);
      throw new Error(
        `nats-server exited before it was ready (code ${launched.child.exitCode}, signal ${launched.child.signalCode}). Its output:\n${out}`,
      );
    }
    try {
      await probe(url, jetstream, options);
      return;
    } catch (err) {
      lastError = err;
    }
    await sleep(100);
  }
  killHard(launched.child);
  const reason = lastError instanceof Error ? lastError.message : String(lastError);
  throw new Error(
    `nats-server at ${url} was not ready within ${READY_TIMEOUT_MS} ms (last probe: ${reason}). Its output:\n${launched.output()}`,
  );
}

async function terminate(child: ChildProcess): Promise<void> {
  if (hasExited(child)) return;
  child.kill("SIGTERM");
  if (await waitExit(child, STOP_GRACE_MS)) return;
  killHard(child);
  await waitExit(child, STOP_GRACE_MS);
}

/** Options for {@link spawnNatsServer}. */
export interface SpawnNatsOptions {
  /** Enable JetStream. Default true. */
  jetstream?: boolean;
  /** Port to listen on; default a free one. A fixed port that is taken is an error. */
  port?: number;
  /** A JetStream store to keep; default a temporary one, removed on stop. */
  storeDir?: string;
  /**
   * nats.conf text for the server (authorization, accounts, `tls { }`, `max_payload`...). The
   * address, port, store and JetStream flags still come from the options above.
   */
  config?: string;
  /** Environment for the server process, read by `$VARIABLE` references in `config`. */
  env?: Record<string, string>;
  /** The server requires TLS: its URL is `tls://`. */
  tls?: boolean;
  /** How the readiness probe (and {@link NatsHandle.connectOptions}) connects: credentials, TLS. */
  connect?: Partial<ConnectionOptions>;
}

/**
 * Runs a nats-server process on 127.0.0.1 and resolves once it serves. Used by the tests (free
 * port, temporary store) and by the local runner (fixed port, a data folder that persists).
 */
export async function spawnNatsServer(
  binary: string,
  options: SpawnNatsOptions = {},
): Promise<NatsHandle> {
  const jetstream = options.jetstream ?? true;
  const temporary = options.storeDir === undefined;
  const storeDir = options.storeDir ?? (await mkdtemp(join(tmpdir(), "handoff-nats-")));
  let current: Launched | undefined;
  let stopped = false;
  let port = options.port ?? 0;
  const scheme = options.tls ? "tls" : "nats";
  const connectOptions = options.connect ?? {};
  let configFile: string | undefined;
  let configDir: string | undefined;
  if (options.config !== undefined) {
    configDir = await mkdtemp(join(tmpdir(), "handoff-nats-conf-"));
    configFile = join(configDir, "nats.conf");
    await writeFile(configFile, options.config, { mode: 0o600 });
  }

  const removeStore = async () => {
    if (configDir) await rm(configDir, { recursive: true, force: true });
    if (temporary) await rm(storeDir, { recursive: true, force: true, maxRetries: 5 });
  };
  const unregister = onProcessExit(() => {
    if (current) killHard(current.child);
    if (!temporary) return;
    try {
      rmSync(storeDir, { recursive: true, force: true });
    } catch {
      // Best effort: the server may still hold files for a moment after SIGKILL.
    }
  });

  /** Starts the server on `port` and waits until it serves; retries while the port is busy. */
  const boot = async (pickNewPortOnConflict: boolean): Promise<void> => {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (let attempt = 1; ; attempt++) {
      const launched = launch(binary, {
        port,
        storeDir,
        jetstream,
        ...(configFile ? { configFile } : {}),
        ...(options.env ? { env: options.env } : {}),
      });
      current = launched;
      try {
        await waitReady(launched, `${scheme}://127.0.0.1:${port}`, jetstream, connectOptions);
        return;
      } catch (err) {
        current = undefined;
        killHard(launched.child);
        // freePort() can lose a race with another process, and a restart can briefly find
        // the old socket still bound; both heal with another attempt.
        if (!(err instanceof AddressInUseError) || attempt >= 10 || Date.now() > deadline) {
          throw err instanceof AddressInUseError
            ? new Error(`nats-server could not bind port ${port}. Its output:\n${err.message}`)
            : err;
        }
        if (pickNewPortOnConflict) port = await freePort();
        else await sleep(250);
      }
    }
  };

  try {
    if (options.port === undefined) port = await freePort();
    await boot(options.port === undefined);
  } catch (err) {
    unregister();
    await removeStore();
    throw err;
  }

  const requireRunning = (what: string) => {
    if (stopped) throw new Error(`NatsHandle.${what}() called after stop()`);
  };

  return {
    url: `${scheme}://127.0.0.1:${port}`,
    kind: "process",
    storeDir,
    connectOptions,
    output: () => current?.output() ?? "",
    async stop() {
      if (stopped) return;
      stopped = true;
      const launched = current;
      current = undefined;
      if (launched) await terminate(launched.child);
      unregister();
      await removeStore();
    },
    async restart() {
      requireRunning("restart");
      const launched = current;
      current = undefined;
      if (launched) await terminate(launched.child);
      await boot(false);
    },
    async kill() {
      requireRunning("kill");
      const launched = current;
      current = undefined;
      if (!launched) return;
      killHard(launched.child);
      await waitExit(launched.child, STOP_GRACE_MS);
    },
  };
}
