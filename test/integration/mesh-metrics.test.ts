import { type Stage, Streams, Subjects } from "@handoff/contracts";
import {
  ensureStageConsumer,
  ensureTopology,
  MeshMetricNames,
  type RunnerStats,
  stageQueues,
  startMeshMetrics,
  type Topology,
} from "@handoff/mesh";
import { type NatsHandle, startNats, waitFor } from "@handoff/testkit";
import { type JetStreamClient, jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { MeterProvider, MetricReader } from "@opentelemetry/sdk-metrics";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const limits = { ackWaitMs: 30_000, maxDeliveries: 3, maxHops: 8 };

/** A reader that collects when asked, as a Prometheus scrape does. */
class ScrapeReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

let nats: NatsHandle;
let nc: NatsConnection;
let js: JetStreamClient;
let topology: Topology;

beforeAll(async () => {
  nats = await startNats();
  nc = await connect({ servers: nats.url });
  js = jetstream(nc);
  topology = await ensureTopology(nc, limits);
  await ensureStageConsumer(topology.jsm, "tool-executor", limits);
  // Three jobs for the tool-executor: the first is handed out twice and not acked, two wait.
  const consumer = await js.consumers.get(Streams.jobs, "tool-executor");
  await js.publish(Subjects.job("tool-executor"), JSON.stringify({ n: 0 }), { msgID: "m-0" });
  const first = await consumer.next({ expires: 2_000 });
  expect(first?.info.deliveryCount).toBe(1);
  first?.nak();
  await nc.flush();
  const again = await waitFor(async () => (await consumer.next({ expires: 1_000 })) ?? undefined, {
    what: "the redelivery",
  });
  expect(again.info.deliveryCount).toBe(2);
  for (let i = 1; i < 3; i++) {
    await js.publish(Subjects.job("tool-executor"), JSON.stringify({ n: i }), { msgID: `m-${i}` });
  }
  // Two dead letters for the tool-executor, one for the classifier.
  for (const stage of ["tool-executor", "tool-executor", "classifier"] as Stage[]) {
    await js.publish(Subjects.deadLetter(stage), "{}");
  }
});

afterAll(async () => {
  await nc?.close();
  await nats?.stop();
});

function points(
  collected: Awaited<ReturnType<MetricReader["collect"]>>,
  name: string,
): Array<{ stage: unknown; value: unknown }> {
  const metric = collected.resourceMetrics.scopeMetrics
    .flatMap((scope) => scope.metrics)
    .find((m) => m.descriptor.name === name);
  return (metric?.dataPoints ?? []).map((point) => ({
    stage: point.attributes.stage,
    value: point.value,
  }));
}

function meter() {
  const reader = new ScrapeReader();
  const provider = new MeterProvider({ readers: [reader] });
  return { reader, meter: provider.getMeter("test"), provider };
}

const stats: RunnerStats = {
  received: 9,
  forwarded: 3,
  finished: 2,
  failed: 1,
  retried: 4,
  dead_lettered: 2,
  rejected: 0,
  replayed: 0,
  in_flight: 1,
};

describe("mesh metrics", () => {
  it("report a stage's lag, ack pending, redelivered and dead letters from JetStream, and its replica's counters", async () => {
    const { reader, meter: m, provider } = meter();
    const handle = startMeshMetrics({ nc, stage: "tool-executor", meter: m, stats: () => stats });
    try {
      const collected = await reader.collect();
      expect(collected.errors).toEqual([]);
      expect(points(collected, MeshMetricNames.lag)).toEqual([
        { stage: "tool-executor", value: 2 },
      ]);
      expect(points(collected, MeshMetricNames.ackPending)).toEqual([
        { stage: "tool-executor", value: 1 },
      ]);
      expect(points(collected, MeshMetricNames.redelivered)).toEqual([
        { stage: "tool-executor", value: 1 },
      ]);
      expect(points(collected, MeshMetricNames.deadLetters)).toEqual([
        { stage: "tool-executor", value: 2 },
      ]);
      expect(points(collected, MeshMetricNames.retried)).toEqual([
        { stage: "tool-executor", value: 4 },
      ]);
      expect(points(collected, MeshMetricNames.deadLettered)).toEqual([
        { stage: "tool-executor", value: 2 },
      ]);

      // Read at each collection: a new job shows on the next one.
      await js.publish(Subjects.job("tool-executor"), "{}", { msgID: "m-late" });
      await waitFor(
        async () => points(await reader.collect(), MeshMetricNames.lag)[0]?.value === 3,
        { what: "the lag to follow the stream" },
      );
    } finally {
      handle.stop();
      await provider.shutdown();
    }
  });

  it("a stage without a consumer reports its dead letters only", async () => {
    const { reader, meter: m, provider } = meter();
    const handle = startMeshMetrics({ nc, stage: "classifier", meter: m });
    try {
      const collected = await reader.collect();
      expect(points(collected, MeshMetricNames.lag)).toEqual([]);
      expect(points(collected, MeshMetricNames.deadLetters)).toEqual([
        { stage: "classifier", value: 1 },
      ]);
    } finally {
      handle.stop();
      await provider.shutdown();
    }
  });

  it("stop when their connection closes", async () => {
    const own = await connect({ servers: nats.url });
    const { reader, meter: m, provider } = meter();
    let calls = 0;
    startMeshMetrics({
      nc: own,
      stage: "tool-executor",
      meter: m,
      stats: () => {
        calls++;
        return stats;
      },
    });
    try {
      expect(points(await reader.collect(), MeshMetricNames.lag)).toHaveLength(1);
      expect(calls).toBe(1);
      await own.close();
      // The callback goes with the connection (closed() settles on the next turns).
      await waitFor(
        async () => {
          const before = calls;
          await reader.collect();
          return calls === before;
        },
        { what: "the callback to be removed" },
      );
      await reader.collect();
      await reader.collect();
      const after = calls;
      await reader.collect();
      expect(calls).toBe(after);
    } finally {
      await provider.shutdown();
    }
  });

  it("stageQueues reads every stage for handoff status", async () => {
    const queues = await stageQueues(topology.jsm);
    expect(queues.map((q) => [q.stage, q.consumer, q.dead_letters])).toEqual([
      ["classifier", false, 1],
      ["tool-executor", true, 2],
      ["heavy-reasoner", false, 0],
    ]);
    const tool = queues.find((q) => q.stage === "tool-executor");
    expect(tool).toMatchObject({ ack_pending: 1, redelivered: 1 });
    expect(tool?.lag).toBeGreaterThanOrEqual(2);
  });
});
