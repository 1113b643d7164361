import { Streams } from "@handoff/contracts";
import { type NatsCluster, startNatsCluster, waitFor } from "@handoff/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FaultMesh } from "./harness.js";
import { JOBS } from "./load.js";
import { accepted, guarantees, runScenario } from "./scenario.js";
import { CountingUpstream } from "./upstream.js";

/**
 * c. A 3-node JetStream cluster on loopback, the job stream and buckets at R3. The node leading the
 * job stream is SIGKILLed mid-flow (an election follows), then a node that leads it not; each is
 * started again on its store and catches up. The services hold a URL for every node.
 */

const LATENCY = { light: 100, mid: 100, heavy: 250 };
const DOWN_MS = 3_000;
/** Streams whose leaders are recorded: the job stream, the dead letters, the buckets. */
const STREAMS = [Streams.jobs, Streams.deadLetters, "KV_handoff-jobs", "KV_handoff-stage-outputs"];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("c. a 3-node cluster loses the job stream's leader, then a follower", () => {
  let cluster: NatsCluster;
  let upstream: CountingUpstream;
  let mesh: FaultMesh;

  beforeAll(async () => {
    cluster = await startNatsCluster({ clusterName: "handoff-faults" });
    upstream = await CountingUpstream.start(LATENCY);
    mesh = await FaultMesh.create({ natsUrl: cluster.url, replicas: 3, upstream });
    await mesh.startAll();
    const info = await cluster.waitForStreamCurrent(Streams.jobs);
    expect(info.replicas?.length).toBe(2);
  });

  afterAll(async () => {
    await mesh?.stop();
    await upstream?.close();
    await cluster?.stop();
  });

  const leaders = async () => {
    const out: Record<string, string | undefined> = {};
    for (const stream of STREAMS)
      out[stream] = await cluster.streamLeader(stream).catch(() => undefined);
    return out;
  };

  const killAndRestart = async (pick: "leader" | "follower") => {
    const before = await leaders();
    const jobsLeader = before[Streams.jobs];
    if (!jobsLeader) throw new Error("the job stream has no leader");
    const victim =
      pick === "leader"
        ? jobsLeader
        : (cluster.nodes.find((n) => n.name !== jobsLeader)?.name as string);
    const kill = Date.now();
    await cluster.kill(victim, "SIGKILL");
    // The job stream's leader after the kill: a new one when the leader died.
    const elected = await waitFor(
      async () => {
        const leader = await cluster.streamLeader(Streams.jobs).catch(() => undefined);
        return leader && leader !== victim ? leader : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 100, what: "a job-stream leader among the live nodes" },
    );
    const leaderAgain = Date.now();
    await sleep(Math.max(0, DOWN_MS - (Date.now() - kill)));
    await cluster.start(victim);
    const restarted = Date.now();
    await cluster.waitForStreamCurrent(Streams.jobs);
    const healed = Date.now();
    return {
      marks: {
        kill,
        leader_available: leaderAgain,
        node_restarted: restarted,
        replicas_current: healed,
      },
      info: {
        victim,
        leaders_before: before,
        jobs_leader_after: elected,
        leaders_after: await leaders(),
      },
    };
  };

  const victims = [
    {
      name: "SIGKILL the job stream's leader mid-flow, restart it on its store",
      pick: "leader",
      id: "c-cluster-kill-leader",
      title: "SIGKILL the node leading HANDOFF_JOBS (R3) mid-flow; restart it 3 s later",
      batch: "cll",
    },
    {
      name: "SIGKILL a node that does not lead the job stream, restart it on its store",
      pick: "follower",
      id: "c-cluster-kill-follower",
      title: "SIGKILL a node not leading HANDOFF_JOBS mid-flow; restart it 3 s later",
      batch: "clf",
    },
  ] as const;

  it.each(victims)("$name", async ({ pick, id, title, batch }) => {
    let info: Record<string, unknown> = {};
    const { verdict } = await runScenario(mesh, upstream, cluster.servers, {
      id,
      title,
      batch,
      jobs: JOBS,
      fault: async ({ load }) => {
        await accepted(load, Math.floor(JOBS / 3));
        const outcome = await killAndRestart(pick);
        info = outcome.info;
        return outcome.marks;
      },
      extra: async () => ({ cluster: info }),
    });
    expect(mesh.unexpectedExits()).toEqual([]);
    expect(guarantees(verdict)).toEqual([]);
  });
});
