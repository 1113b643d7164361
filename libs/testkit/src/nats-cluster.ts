import { type ChildProcess, spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  findNatsServer,
  freePortNotIn,
  hasExited,
  killHard,
  onProcessExit,
  probeNats,
  waitExit,
} from "@handoff/nats-process";
import { connect } from "@nats-io/transport-node";

/**
 * A JetStream cluster of nats-server processes on loopback, for fault tests: each node has its own
 * client and route ports and its own store directory, all fixed for the cluster's life, so a node
 * killed (SIGKILL or SIGTERM) comes back on the same address and the same store, as a real node
 * restarted by its supervisor does.
 */

/** One node of a {@link NatsCluster}. */
export interface ClusterNode {
  /** Its `server_name`, as `$JS.API.STREAM.INFO` names leaders and replicas: `n1`, `n2`, ... */
  readonly name: string;
  /** Client URL, `nats://127.0.0.1:<port>`. */
  readonly url: string;
  readonly port: number;
  /** The cluster (route) port. */
  readonly clusterPort: number;
  /** Its JetStream store, kept across kills and restarts. */
  readonly storeDir: string;
  /** The running process id, undefined while the node is down. */
  readonly pid: number | undefined;
  /** Whether the node's process runs. */
  running(): boolean;
  /** What the node has logged since it was last started (the last 64 KiB). */
  output(): string;
}

/** A stream's replication as `$JS.API.STREAM.INFO` reports it. */
export interface StreamClusterInfo {
  /** The cluster's name. */
  name?: string;
  /** `server_name` of the stream's leader; absent while it has none (an election is under way). */
  leader?: string;
  /** The other replicas: whether each is current, how far it lags, whether it is offline. */
  replicas?: Array<{
    name: string;
    current: boolean;
    active?: number;
    lag?: number;
    offline?: boolean;
  }>;
}

export interface NatsCluster {
  readonly nodes: readonly ClusterNode[];
  /** Every node's client URL, comma-separated: what `NATS_URL` takes. */
  readonly url: string;
  /** Every node's client URL. */
  readonly servers: string[];
  /** The node named `name` (`n1`...). */
  node(name: string): ClusterNode;
  /** Starts a node that is down on its ports and store; resolves once it accepts clients. */
  start(name: string): Promise<void>;
  /**
   * Sends `signal` to a running node and waits for it to exit (SIGKILL after 10 s for a SIGTERM
   * that does not end it). SIGTERM is nats-server's graceful shutdown: it hands over leaderships
   * first; SIGKILL is a crash. The store is kept.
   */
  kill(name: string, signal?: "SIGKILL" | "SIGTERM"): Promise<void>;
  /** {@link NatsCluster.kill} then {@link NatsCluster.start}. */
  restart(name: string, signal?: "SIGKILL" | "SIGTERM"): Promise<void>;
  /** The stream's cluster info (leader and replicas), asked through any running node. */
  streamCluster(stream: string): Promise<StreamClusterInfo>;
  /** `server_name` of the stream's leader, or undefined while it has none. */
  streamLeader(stream: string): Promise<string | undefined>;
  /**
   * Resolves once JetStream answers through a running node (the meta group has a leader: a
   * quorum of nodes is up). Rejects after `timeoutMs` (default 30 s).
   */
  waitForJetStream(timeoutMs?: number): Promise<void>;
  /**
   * Resolves once `stream` has a leader and every replica is current, i.e. the cluster has healed.
   * Rejects after `timeoutMs` (default 60 s).
   */
  waitForStreamCurrent(stream: string, timeoutMs?: number): Promise<StreamClusterInfo>;
  /** Stops every node (SIGTERM, then SIGKILL) and removes the stores. Safe to call twice. */
  stop(): Promise<void>;
}

export interface StartNatsClusterOptions {
  /** Number of nodes; default 3. */
  size?: number;
  /**
   * Names of the nodes to start now (default all): `["n1"]` starts a cluster below its JetStream
   * quorum, the others joining later through {@link NatsCluster.start}.
   */
  startNodes?: string[];
  /** The nats-server executable; default {@link findNatsServer}. */
  binary?: string;
  /** Extra top-level nats.conf text for every node (`max_payload`, accounts...). */
  config?: string;
  /** Cluster name; default `handoff-test`. */
  clusterName?: string;
  /**
   * Wait for the JetStream meta leader before resolving (default true when every node starts,
   * false otherwise: a cluster below quorum has none).
   */
  waitForJetStream?: boolean;
}

const OUTPUT_LIMIT = 64 * 1024;
const START_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 10_000;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

interface NodeState {
  name: string;
  port: number;
  clusterPort: number;
  storeDir: string;
  configFile: string;
  child: ChildProcess | undefined;
  output: string;
}

function nodeConfig(
  node: Pick<NodeState, "name" | "port" | "clusterPort" | "storeDir">,
  all: Array<Pick<NodeState, "clusterPort">>,
  clusterName: string,
  extra: string,
): string {
  const routes = all
    .filter((other) => other.clusterPort !== node.clusterPort)
    .map((other) => `    "nats-route://127.0.0.1:${other.clusterPort}"`)
    .join("\n");
  return [
    `server_name: "${node.name}"`,
    `listen: "127.0.0.1:${node.port}"`,
    "jetstream {",
    `  store_dir: "${node.storeDir}"`,
    "}",
    "cluster {",
    `  name: "${clusterName}"`,
    `  listen: "127.0.0.1:${node.clusterPort}"`,
    "  routes: [",
    routes,
    "  ]",
    "}",
    extra,
    "",
  ].join("\n");
}

/**
 * Starts a JetStream cluster of `size` nats-server processes on 127.0.0.1 (free ports, one store
 * directory per node under a temporary folder). Resolves once the started nodes accept clients
 * and, when they make a quorum, JetStream answers.
 */
export async function startNatsCluster(
  options: StartNatsClusterOptions = {},
): Promise<NatsCluster> {
  const binary = options.binary ?? findNatsServer();
  if (!binary) {
    throw new Error(
      "startNatsCluster needs a nats-server binary: `apt-get install -y nats-server` or put one on PATH",
    );
  }
  const size = options.size ?? 3;
  const clusterName = options.clusterName ?? "handoff-test";
  const root = await mkdtemp(join(tmpdir(), "handoff-nats-cluster-"));
  const states: NodeState[] = [];
  const used = new Set<number>();
  const port = () => freePortNotIn(used);
  for (let i = 1; i <= size; i++) {
    const name = `n${i}`;
    const storeDir = join(root, name);
    await mkdir(storeDir, { recursive: true });
    states.push({
      name,
      port: await port(),
      clusterPort: await port(),
      storeDir,
      configFile: join(root, `${name}.conf`),
      child: undefined,
      output: "",
    });
  }
  for (const state of states) {
    await writeFile(
      state.configFile,
      nodeConfig(state, states, clusterName, options.config ?? ""),
      "utf8",
    );
  }

  let stopped = false;
  const unregister = onProcessExit(() => {
    for (const state of states) if (state.child) killHard(state.child);
    try {
      rmSync(root, { recursive: true, force: true });
    } catch {
      // Best effort at exit.
    }
  });

  const find = (name: string): NodeState => {
    const state = states.find((s) => s.name === name);
    if (!state)
      throw new Error(`no node ${name} in this cluster (${states.map((s) => s.name).join(", ")})`);
    return state;
  };
  const isRunning = (state: NodeState) => state.child !== undefined && !hasExited(state.child);

  const launch = (state: NodeState): ChildProcess => {
    state.output = "";
    const child = spawn(binary, ["-c", state.configFile], { stdio: ["ignore", "pipe", "pipe"] });
    const append = (chunk: string) => {
      state.output += chunk;
      if (state.output.length > OUTPUT_LIMIT) state.output = state.output.slice(-OUTPUT_LIMIT);
    };
    child.stdout?.setEncoding("utf8").on("data", append);
    child.stderr?.setEncoding("utf8").on("data", append);
    child.on("error", (err) => append(`\n[spawn error] ${err.message}\n`));
    state.child = child;
    return child;
  };

  /** Starts the node and waits until its client port takes a connection. */
  const startNode = async (state: NodeState): Promise<void> => {
    if (stopped) throw new Error("NatsCluster.start() called after stop()");
    if (isRunning(state)) return;
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      const child = launch(state);
      let lastError = "";
      while (Date.now() < deadline && !hasExited(child)) {
        const probe = await probeNats(`nats://127.0.0.1:${state.port}`, 500);
        if (probe.state !== "down") return;
        lastError = probe.detail ?? probe.state;
        await sleep(100);
      }
      const out = state.output;
      killHard(child);
      await waitExit(child, STOP_GRACE_MS);
      state.child = undefined;
      // A restart can find the old socket still bound for a moment: try again.
      if (/address already in use/i.test(out) && Date.now() < deadline) {
        await sleep(250);
        continue;
      }
      throw new Error(
        `cluster node ${state.name} (port ${state.port}) did not accept clients within ${START_TIMEOUT_MS} ms (${lastError}). Its output:\n${out}`,
      );
    }
  };

  const killNode = async (state: NodeState, signal: "SIGKILL" | "SIGTERM"): Promise<void> => {
    const child = state.child;
    if (!child || hasExited(child)) {
      state.child = undefined;
      return;
    }
    try {
      child.kill(signal);
    } catch {
      // Already gone.
    }
    if (!(await waitExit(child, STOP_GRACE_MS))) {
      killHard(child);
      await waitExit(child, STOP_GRACE_MS);
    }
    state.child = undefined;
  };

  const servers = states.map((s) => `nats://127.0.0.1:${s.port}`);

  /** A JetStream API request through whichever running node answers first. */
  const jsApi = async <T>(subject: string, timeoutMs = 2_000): Promise<T> => {
    const live = states.filter(isRunning).map((s) => `nats://127.0.0.1:${s.port}`);
    if (live.length === 0) throw new Error("no cluster node is running");
    const nc = await connect({
      servers: live,
      reconnect: false,
      timeout: timeoutMs,
      name: "handoff-cluster-probe",
    });
    try {
      const reply = await nc.request(subject, "", { timeout: timeoutMs });
      return reply.json<T>();
    } finally {
      await nc.close();
    }
  };

  const streamCluster = async (stream: string): Promise<StreamClusterInfo> => {
    const info = await jsApi<{
      error?: { code?: number; description?: string };
      cluster?: StreamClusterInfo;
    }>(`$JS.API.STREAM.INFO.${stream}`);
    if (info.error) {
      throw new Error(`stream info ${stream}: ${info.error.description ?? info.error.code}`);
    }
    return info.cluster ?? {};
  };

  const waitUntil = async <T>(
    what: string,
    timeoutMs: number,
    check: () => Promise<T | undefined>,
  ): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    let last = "";
    for (;;) {
      try {
        const value = await check();
        if (value !== undefined) return value;
      } catch (error) {
        last = error instanceof Error ? error.message : String(error);
      }
      if (Date.now() > deadline) {
        throw new Error(
          `timed out after ${timeoutMs} ms waiting for ${what}${last ? `; last error: ${last}` : ""}`,
        );
      }
      await sleep(200);
    }
  };

  const cluster: NatsCluster = {
    nodes: states.map((state) => ({
      name: state.name,
      url: `nats://127.0.0.1:${state.port}`,
      port: state.port,
      clusterPort: state.clusterPort,
      storeDir: state.storeDir,
      get pid() {
        return isRunning(state) ? state.child?.pid : undefined;
      },
      running: () => isRunning(state),
      output: () => state.output,
    })),
    url: servers.join(","),
    servers,
    node(name) {
      const found = cluster.nodes.find((n) => n.name === name);
      if (!found) throw new Error(`no node ${name} in this cluster`);
      return found;
    },
    start: (name) => startNode(find(name)),
    kill: (name, signal = "SIGKILL") => killNode(find(name), signal),
    async restart(name, signal = "SIGKILL") {
      const state = find(name);
      await killNode(state, signal);
      await startNode(state);
    },
    streamCluster,
    async streamLeader(stream) {
      return (await streamCluster(stream)).leader;
    },
    async waitForJetStream(timeoutMs = 30_000) {
      await waitUntil("JetStream to answer in the cluster", timeoutMs, async () => {
        const info = await jsApi<{ error?: { description?: string } }>("$JS.API.INFO");
        if (info.error) throw new Error(info.error.description ?? "JetStream not ready");
        return true;
      });
    },
    waitForStreamCurrent(stream, timeoutMs = 60_000) {
      return waitUntil(
        `stream ${stream} to have a leader and current replicas`,
        timeoutMs,
        async () => {
          const info = await streamCluster(stream);
          if (!info.leader) return undefined;
          const replicas = info.replicas ?? [];
          return replicas.every((r) => r.current && !r.offline) ? info : undefined;
        },
      );
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await Promise.all(states.map((state) => killNode(state, "SIGTERM")));
      unregister();
      await rm(root, { recursive: true, force: true, maxRetries: 5 });
    },
  };

  try {
    const first = options.startNodes ?? states.map((s) => s.name);
    await Promise.all(first.map((name) => startNode(find(name))));
    const quorum = first.length > size / 2;
    if (options.waitForJetStream ?? quorum) await cluster.waitForJetStream();
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}
