import { Streams } from "@handoff/contracts";
import { type NatsHandle, waitFor } from "@handoff/testkit";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Concurrency, type FaultMesh, rssMiB, startSingleNode, stopAll } from "./harness.js";
import { BURST, HeavyMix, knob } from "./load.js";
import { accepted, guarantees, runScenario } from "./scenario.js";
import type { CountingUpstream } from "./upstream.js";

/**
 * g. A burst of jobs (3,000 by default, `FAULTS_BURST`) with the heavy tier stopped: the heavy jobs
 * pile up in the stream, not in any process. Every service's memory stays bounded while they wait
 * and while the heavy tier drains them: a replica holds at most its concurrency (it fetches only as
 * many jobs as it has free slots, far below the consumer's max_ack_pending).
 * All complete once the heavy tier starts.
 */

const LATENCY = { light: 20, mid: 20, heavy: 40 };
/**
 * How much a service's resident memory may grow over its idle size during the burst, in MiB
 * (`FAULTS_RSS_GROWTH_MIB`). The heaps grow with throughput (V8 sizes them to the allocation
 * rate): about 150 to 175 MiB over idle on the reference machine (docs/reliability.md), whether
 * or not the heavy jobs wait. The bound catches a process that keeps what it handled; the
 * structural guarantee is the ack-pending check (the waiting jobs stay in the stream).
 */
const RSS_GROWTH_MIB = Number(knob("FAULTS_RSS_GROWTH_MIB") ?? 256);
/**
 * The most unacknowledged heavy jobs nats-server may count at once: the replica's concurrency,
 * plus as many again for acks sent and not yet applied by the server.
 */
const ACK_PENDING_BOUND = 2 * Concurrency["heavy-reasoner"];

describe("g. a burst with the heavy tier stopped", () => {
  let nats: NatsHandle, upstream: CountingUpstream, mesh: FaultMesh;
  beforeAll(async () => {
    ({ nats, upstream, mesh } = await startSingleNode(LATENCY));
  });
  afterAll(() => stopAll(mesh, upstream, nats));

  it(`${BURST} jobs while the heavy-reasoner is stopped: bounded memory, all complete once it starts`, async () => {
    for (const label of mesh.live("heavy-reasoner")) await mesh.terminate(label);
    const nc = await connect({ servers: nats.url });
    const jsm = await jetstreamManager(nc);

    // Idle sizes, after a short settle.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const idle: Record<string, number> = { ...mesh.rss() };
    const peak: Record<string, number> = { ...idle };
    const heavyIdle: { value?: number } = {};
    let maxAckPending = 0;
    let maxQueued = 0;
    let sampling = true;
    const t0 = Date.now();
    const timeline: Record<string, Array<[number, number]>> = {};
    let lastTimeline = 0;
    const sampler = (async () => {
      while (sampling) {
        const now = Date.now();
        const sample = now - lastTimeline >= 2_000;
        if (sample) lastTimeline = now;
        for (const [label, mib] of Object.entries(mesh.rss())) {
          peak[label] = Math.max(peak[label] ?? 0, mib);
          if (sample) {
            const series = timeline[label] ?? [];
            series.push([Math.round((now - t0) / 1000), Math.round(mib)]);
            timeline[label] = series;
          }
        }
        const consumer = await jsm.consumers
          .info(Streams.jobs, "heavy-reasoner")
          .catch(() => undefined);
        if (consumer) maxAckPending = Math.max(maxAckPending, consumer.num_ack_pending);
        const stream = await jsm.streams.info(Streams.jobs).catch(() => undefined);
        if (stream) maxQueued = Math.max(maxQueued, stream.state.messages);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    })();

    let heavyLabel = "";
    let queuedBeforeStart = 0;
    const { verdict, load } = await runScenario(mesh, upstream, [nats.url], {
      id: "g-burst-heavy-stopped",
      title: `a burst of ${BURST} jobs (60% through the heavy tier) while the heavy-reasoner is stopped; it starts once the rest are done`,
      batch: "burst",
      jobs: BURST,
      mix: HeavyMix,
      // As fast as the gateway takes them.
      ratePerSec: 100_000,
      affects: "heavy-reasoner",
      settleMs: 300_000,
      fault: async ({ load }) => {
        await accepted(load, BURST, 300_000);
        const allAccepted = Date.now();
        const others = await load.settleSome(
          (j) => !j.spec.hops.includes("heavy-reasoner"),
          300_000,
        );
        if (others.length > 0)
          throw new Error(`${others.length} jobs without the heavy tier did not finish`);
        queuedBeforeStart = (await jsm.streams.info(Streams.jobs)).state.messages;
        const started = Date.now();
        heavyLabel = await mesh.start("heavy-reasoner", { wait: false });
        const ready = await mesh.waitReady(heavyLabel);
        const pid = mesh.entry(heavyLabel).proc.pid;
        heavyIdle.value = rssMiB(pid);
        return { all_accepted: allAccepted, heavy_started: started, heavy_ready: ready };
      },
      extra: async () => {
        sampling = false;
        await sampler;
        return {
          queued_in_stream_when_heavy_started: queuedBeforeStart,
          max_jobs_in_stream: maxQueued,
          heavy_max_ack_pending_observed: maxAckPending,
          heavy_concurrency: Concurrency["heavy-reasoner"],
          consumer_max_ack_pending: (await jsm.consumers.info(Streams.jobs, "heavy-reasoner"))
            .config.max_ack_pending,
          rss_mib: Object.fromEntries(
            Object.keys(peak).map((label) => [
              label,
              {
                idle: round(idle[label] ?? heavyIdle.value),
                peak: round(peak[label]),
                growth: round((peak[label] ?? 0) - (idle[label] ?? heavyIdle.value ?? 0)),
              },
            ]),
          ),
          rss_growth_bound_mib: RSS_GROWTH_MIB,
          rss_timeline_s_mib: timeline,
        };
      },
    });
    sampling = false;
    await sampler;
    await nc.close();

    const heavyJobs = [...load.jobs.values()].filter((j) =>
      j.spec.hops.includes("heavy-reasoner"),
    ).length;
    // The heavy jobs waited in the stream, not in a process.
    expect(queuedBeforeStart).toBe(heavyJobs);
    // The heavy tier never held more than it works on at once. The server's count also holds the
    // acks on their way: a stage acks without waiting for a confirmation and then pulls the next
    // job, and nats-server may apply the pull before the ack. A replica that buffered jobs ahead
    // of its slots would show hundreds here.
    expect(maxAckPending).toBeLessThanOrEqual(ACK_PENDING_BOUND);
    // Every process's memory stayed within the bound of its idle size.
    for (const [label, mib] of Object.entries(peak)) {
      const base = idle[label] ?? heavyIdle.value;
      expect(base, `${label}'s idle size`).toBeDefined();
      expect(
        mib - (base as number),
        `${label}: ${round(base)} MiB idle, ${round(mib)} MiB peak`,
      ).toBeLessThan(RSS_GROWTH_MIB);
    }
    expect(guarantees(verdict)).toEqual([]);
    expect(mesh.unexpectedExits()).toEqual([]);
    await waitFor(async () => ((await mesh.isReady(heavyLabel)) ? true : undefined), {
      timeoutMs: 5_000,
    });
  });
});

function round(value: number | undefined): number | undefined {
  return value === undefined ? undefined : Math.round(value * 10) / 10;
}
