import { findNatsServer, type NatsHandle, spawnNatsServer } from "@handoff/nats-process";

/**
 * A NATS server for a test: `NATS_URL`, a nats-server process of `@handoff/nats-process`, or a
 * Testcontainers container. Only the tests use this; `handoff up` uses `@handoff/nats-process`
 * alone, without Testcontainers.
 */

/** Options for {@link startNats}. */
export interface StartNatsOptions {
  /** Enable JetStream. Default true. */
  jetstream?: boolean;
}

const HOW_TO_GET_NATS = [
  "No NATS server is available for the tests. Do one of:",
  "  - install nats-server: `apt-get install -y nats-server` (Debian/Ubuntu) or `brew install nats-server` (macOS), or put a nats-server binary on PATH;",
  "  - run a Docker engine, so Testcontainers can start nats:2.10-alpine;",
  "  - set NATS_URL to a server you run yourself (with JetStream: `nats-server -js`).",
].join("\n");

/**
 * Provides a fresh NATS server for a test: the one in `NATS_URL` if set, else a nats-server
 * process on a free port with a temporary store, else a Testcontainers container if a Docker
 * engine answers. Throws with installation instructions when none of these is possible.
 */
export async function startNats(options: StartNatsOptions = {}): Promise<NatsHandle> {
  const jetstream = options.jetstream ?? true;
  const externalUrl = process.env.NATS_URL?.trim();
  if (externalUrl) return externalHandle(externalUrl);

  const binary = findNatsServer();
  if (binary !== undefined) return spawnNatsServer(binary, { jetstream });

  const container = await startContainer(jetstream);
  if (container !== undefined) return container;

  throw new Error(HOW_TO_GET_NATS);
}

function externalHandle(url: string): NatsHandle {
  const unsupported = (what: string) => () =>
    Promise.reject(
      new Error(
        `NatsHandle.${what}() needs a nats-server spawned by the testkit, but NATS_URL points at an external server (${url}); unset NATS_URL to let the testkit spawn one`,
      ),
    );
  return {
    url,
    kind: "external",
    connectOptions: {},
    output: () => "",
    // The server belongs to whoever set NATS_URL.
    stop: async () => {},
    restart: unsupported("restart"),
    kill: unsupported("kill"),
  };
}

async function startContainer(jetstream: boolean): Promise<NatsHandle | undefined> {
  // Loaded lazily so that machines without Docker never pay for (or trip over) testcontainers.
  let tc: typeof import("testcontainers");
  try {
    tc = await import("testcontainers");
  } catch {
    return undefined;
  }
  try {
    await tc.getContainerRuntimeClient();
  } catch {
    return undefined;
  }
  const container = await new tc.GenericContainer("nats:2.10-alpine")
    // An empty command would fall back to the image's config file, so pass an explicit flag.
    .withCommand(jetstream ? ["-js"] : ["-p", "4222"])
    .withExposedPorts(4222)
    .withWaitStrategy(tc.Wait.forLogMessage(/Server is ready/))
    .start();
  const url = `nats://${container.getHost()}:${container.getMappedPort(4222)}`;
  const unsupported = (what: string) => () =>
    Promise.reject(
      new Error(
        `NatsHandle.${what}() needs a nats-server process spawned by the testkit; this one runs in a container (install nats-server locally to get a process)`,
      ),
    );
  let stopped = false;
  return {
    url,
    kind: "container",
    connectOptions: {},
    output: () => "",
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await container.stop();
    },
    restart: unsupported("restart"),
    kill: unsupported("kill"),
  };
}
