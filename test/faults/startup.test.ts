import {
  findNatsServer,
  freePort,
  type NatsCluster,
  type NatsHandle,
  spawnNatsServer,
  startNatsCluster,
  waitFor,
} from "@handoff/testkit";
import { afterEach, describe, expect, it } from "vitest";
import { FaultMesh, type ServiceName, Workers } from "./harness.js";
import { JOBS } from "./load.js";
import { guarantees, runScenario } from "./scenario.js";
import { CountingUpstream } from "./upstream.js";

/**
 * h. Services started before NATS, and before a cluster has its JetStream quorum: each stays up,
 * alive (`/healthz` 200) and not ready (`/readyz` 503), retrying; when NATS (or the quorum)
 * appears, every one becomes ready without a restart, and the load then runs clean.
 */

const LATENCY = { light: 50, mid: 50, heavy: 150 };
const ALL: ServiceName[] = ["gateway", ...Workers];

const retrying = (line: Record<string, unknown>) =>
  line.level === "warn" && typeof line.reason === "string" && Number(line.attempt) >= 2;

/** Starts the four services against NATS that is not there yet; checks they wait, alive and not ready. */
async function startWaiting(mesh: FaultMesh) {
  const labels = await Promise.all(ALL.map((name) => mesh.start(name, { wait: false })));
  const reasons: Record<string, string> = {};
  for (const label of labels) {
    await waitFor(async () => ((await mesh.healthStatus(label)) === 200 ? true : undefined), {
      timeoutMs: 20_000,
      what: `${label}'s /healthz`,
    });
    const line = await mesh.entry(label).proc.waitForLog(retrying, 30_000);
    reasons[label] = String(line.reason);
  }
  // Some seconds without NATS (or quorum): all alive, none ready.
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  const states: Record<string, { healthz: number | undefined; ready: boolean; exited: boolean }> =
    {};
  for (const label of labels) {
    states[label] = {
      healthz: await mesh.healthStatus(label),
      ready: await mesh.isReady(label),
      exited: mesh.entry(label).exitedAt !== undefined,
    };
  }
  return { labels, reasons, states };
}

/** Waits until every process is ready; returns how long each took after `since`. */
async function readyAfter(mesh: FaultMesh, labels: string[], since: number) {
  const out: Record<string, number> = {};
  await Promise.all(
    labels.map(async (label) => {
      out[label] = (await mesh.waitReady(label, 90_000)) - since;
    }),
  );
  return out;
}

describe("h. services started before NATS and before the cluster's quorum", () => {
  let upstream: CountingUpstream | undefined;
  let mesh: FaultMesh | undefined;
  let nats: NatsHandle | undefined;
  let cluster: NatsCluster | undefined;

  afterEach(async () => {
    await mesh?.stop();
    await upstream?.close();
    await nats?.stop();
    await cluster?.stop();
    mesh = undefined;
    upstream = undefined;
    nats = undefined;
    cluster = undefined;
  });

  it("before NATS: alive and not ready while it is missing, ready without a restart once it starts", async () => {
    const binary = findNatsServer();
    if (!binary) throw new Error("the fault suite needs nats-server (apt-get install nats-server)");
    const port = await freePort();
    upstream = await CountingUpstream.start(LATENCY);
    mesh = await FaultMesh.create({ natsUrl: `nats://127.0.0.1:${port}`, replicas: 1, upstream });
    const m = mesh;
    const waiting = await startWaiting(m);
    const natsStarted = Date.now();
    nats = await spawnNatsServer(binary, { port });
    const natsUp = Date.now();
    const ready = await readyAfter(m, waiting.labels, natsStarted);

    const { verdict } = await runScenario(m, upstream, [nats.url], {
      id: "h-start-before-nats",
      title: "the four services start with no NATS; nats-server starts on their URL later",
      batch: "sbn",
      jobs: JOBS,
      extra: async () => ({
        waiting: waiting.states,
        first_retry_reason: waiting.reasons,
        nats_serving_after_start_ms: natsUp - natsStarted,
        ready_after_nats_start_ms: ready,
      }),
    });

    for (const label of waiting.labels) {
      expect(waiting.states[label], label).toEqual({ healthz: 200, ready: false, exited: false });
    }
    // The same processes, never restarted.
    expect(m.unexpectedExits()).toEqual([]);
    expect([...m.procs.keys()].sort()).toEqual([...waiting.labels].sort());
    expect(guarantees(verdict)).toEqual([]);
  });

  it("before quorum: one of three nodes up, ready without a restart once the others join", async () => {
    cluster = await startNatsCluster({ startNodes: ["n1"], clusterName: "handoff-faults-quorum" });
    const c = cluster;
    upstream = await CountingUpstream.start(LATENCY);
    mesh = await FaultMesh.create({ natsUrl: c.url, replicas: 3, upstream });
    const m = mesh;
    const waiting = await startWaiting(m);
    const joinStarted = Date.now();
    await Promise.all([c.start("n2"), c.start("n3")]);
    await c.waitForJetStream(60_000);
    const quorum = Date.now();
    const ready = await readyAfter(m, waiting.labels, joinStarted);

    const { verdict } = await runScenario(m, upstream, c.servers, {
      id: "h-start-before-quorum",
      title:
        "the four services start against a 3-node cluster with one node up (no JetStream quorum); the other two join later",
      batch: "sbq",
      jobs: JOBS,
      extra: async () => ({
        waiting: waiting.states,
        first_retry_reason: waiting.reasons,
        jetstream_after_join_ms: quorum - joinStarted,
        ready_after_join_ms: ready,
        job_stream: await c.streamCluster("HANDOFF_JOBS"),
      }),
    });

    for (const label of waiting.labels) {
      expect(waiting.states[label], label).toEqual({ healthz: 200, ready: false, exited: false });
    }
    expect(m.unexpectedExits()).toEqual([]);
    expect([...m.procs.keys()].sort()).toEqual([...waiting.labels].sort());
    expect(guarantees(verdict)).toEqual([]);
  });
});
