import { DeadLetter, Stages, Streams, Subjects } from "@handoff/contracts";
import { type NatsHandle, waitFor } from "@handoff/testkit";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ACK_WAIT_MS, type FaultMesh, startSingleNode, stopAll } from "./harness.js";
import { JOBS } from "./load.js";
import { accepted, guarantees, runScenario } from "./scenario.js";
import type { CountingUpstream } from "./upstream.js";

/**
 * d. Malformed and schema-invalid payloads on every stage subject, in the middle of the load: each
 * is dead-lettered once (with its payload and first delivery), terminated, never delivered again,
 * and names no job it can fail (signing is off, so a payload is no proof of who sent it); the
 * other jobs flow on, the one a bad payload names included.
 */

const LATENCY = { light: 50, mid: 50, heavy: 150 };

interface Bad {
  stage: (typeof Stages)[number];
  kind: string;
  seq: number;
}

function badPayloads(liveJobId: string): Array<{ kind: string; payload: string }> {
  const envelope = {
    v: 1,
    id: "faults-bad-envelope-0001",
    created_at: new Date().toISOString(),
    input: { model: "handoff", messages: [], tools: [], params: {}, stream: false },
    plan: ["classifier"],
    hops: [],
    enrichments: [],
    usage: [],
    budget: { deadline: new Date(Date.now() + 60_000).toISOString() },
  };
  return [
    { kind: "truncated JSON", payload: '{"v":1,"id":"faults-truncated-0001","inp' },
    { kind: "empty", payload: "" },
    { kind: "JSON array", payload: "[1,2,3]" },
    {
      kind: "schema-invalid envelope (v 2, no messages)",
      payload: JSON.stringify({ ...envelope, v: 2 }),
    },
    {
      kind: "schema-invalid envelope naming a live job",
      payload: JSON.stringify({ v: 1, id: liveJobId, plan: "classifier" }),
    },
  ];
}

describe("d. malformed and schema-invalid payloads on every stage subject", () => {
  let nats: NatsHandle, upstream: CountingUpstream, mesh: FaultMesh;
  let nc: NatsConnection;
  beforeAll(async () => {
    ({ nats, upstream, mesh } = await startSingleNode(LATENCY));
    nc = await connect({ servers: nats.url });
  });
  afterAll(async () => {
    await nc?.close();
    await stopAll(mesh, upstream, nats);
  });

  it("dead-letters each once, never redelivers it, and the other jobs flow", async () => {
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    // The server's own account of each termination, per stream sequence.
    const terminated = new Map<number, number[]>();
    const advisories = nc.subscribe(
      `$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.${Streams.jobs}.*`,
      {
        callback: (_error, msg) => {
          const advisory = msg.json<{ stream_seq: number; deliveries: number }>();
          terminated.set(advisory.stream_seq, [
            ...(terminated.get(advisory.stream_seq) ?? []),
            advisory.deliveries,
          ]);
        },
      },
    );
    const bad: Bad[] = [];
    let liveJob: string | undefined;
    let publishedAt = 0;

    const { verdict, load } = await runScenario(mesh, upstream, [nats.url], {
      id: "d-bad-payloads",
      title: "5 malformed or schema-invalid payloads on each stage subject, mid-load",
      batch: "bad",
      jobs: JOBS,
      fault: async ({ load }) => {
        await accepted(load, Math.floor(JOBS / 3));
        liveJob = [...load.jobs.values()].find((j) => j.id && !j.record)?.id;
        for (const stage of Stages) {
          for (const { kind, payload } of badPayloads(liveJob ?? "faults-no-live-job-01")) {
            const ack = await js.publish(Subjects.job(stage), payload);
            bad.push({ stage, kind, seq: ack.seq });
          }
        }
        publishedAt = Date.now();
        return { published: publishedAt };
      },
      extra: async () => {
        // Every bad payload has its dead letter...
        await waitFor(
          async () =>
            (await jsm.streams.info(Streams.deadLetters)).state.messages >= bad.length
              ? true
              : undefined,
          { timeoutMs: 30_000, what: `${bad.length} dead letters` },
        );
        // ...and three ack waits later none has been delivered again.
        await new Promise((resolve) =>
          setTimeout(resolve, Math.max(0, publishedAt + 3 * ACK_WAIT_MS + 1_000 - Date.now())),
        );
        const info = await jsm.streams.info(Streams.deadLetters);
        const letters: DeadLetter[] = [];
        for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
          const stored = await jsm.streams
            .getMessage(Streams.deadLetters, { seq })
            .catch(() => null);
          if (stored) letters.push(DeadLetter.parse(stored.json()));
        }
        const logged = mesh.logs(undefined, (line) =>
          String(line.msg).startsWith("terminated invalid payload"),
        );
        const stillQueued: number[] = [];
        for (const { seq } of bad) {
          if (await jsm.streams.getMessage(Streams.jobs, { seq }).catch(() => null))
            stillQueued.push(seq);
        }
        const consumers = Object.fromEntries(
          await Promise.all(
            Stages.map(async (stage) => {
              const c = await jsm.consumers.info(Streams.jobs, stage);
              return [
                stage,
                {
                  delivered: c.delivered.consumer_seq,
                  ack_floor: c.ack_floor.consumer_seq,
                  num_redelivered: c.num_redelivered,
                  num_pending: c.num_pending,
                },
              ];
            }),
          ),
        );
        return {
          bad_payloads: bad.length,
          dead_letters: letters.length,
          letters: letters.map((l) => ({
            stage: l.stage,
            reason: l.reason,
            seq: l.stream_sequence,
            deliveries: l.deliveries,
            job_id: l.job_id,
            issues: l.issues?.slice(0, 2),
          })),
          termination_log_lines: logged.length,
          terminated_advisories: Object.fromEntries(terminated),
          still_in_job_stream: stillQueued,
          consumers,
        };
      },
    });
    advisories.unsubscribe();
    const verdictJobs = (stage: (typeof Stages)[number]) =>
      [...load.jobs.values()].filter((j) => j.spec.hops.includes(stage));

    // The other jobs flowed, the one a bad payload named included.
    expect(guarantees(verdict)).toEqual([]);
    expect(liveJob).toBeDefined();
    expect(bad).toHaveLength(5 * Stages.length);

    const info = await jsm.streams.info(Streams.deadLetters);
    const letters: DeadLetter[] = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
      const stored = await jsm.streams.getMessage(Streams.deadLetters, { seq }).catch(() => null);
      if (stored) letters.push(DeadLetter.parse(stored.json()));
    }
    // Exactly one dead letter per bad payload, from its first (and only) delivery.
    expect(letters).toHaveLength(bad.length);
    for (const item of bad) {
      const mine = letters.filter((l) => l.stream_sequence === item.seq);
      expect(mine, `${item.stage}: ${item.kind}`).toHaveLength(1);
      expect(mine[0]).toMatchObject({
        stage: item.stage,
        reason: "invalid_payload",
        deliveries: 1,
      });
      // Terminated once, on the first delivery; gone from the work queue.
      expect(terminated.get(item.seq), `${item.stage}: ${item.kind} terminated`).toEqual([1]);
      expect(
        await jsm.streams.getMessage(Streams.jobs, { seq: item.seq }).catch(() => null),
      ).toBeNull();
    }
    // Each stage ran its bad payloads through the runner once: one log line per payload.
    for (const stage of Stages) {
      const lines = mesh.logs(stage, (line) =>
        String(line.msg).startsWith("terminated invalid payload"),
      );
      expect(lines, `${stage}'s terminations`).toHaveLength(5);
    }
    // Nothing was delivered twice: each consumer delivered each of its messages once (the load's
    // jobs that visit the stage, and the stage's five bad payloads).
    for (const stage of Stages) {
      const visits = [...verdictJobs(stage)].length;
      const consumer = await jsm.consumers.info(Streams.jobs, stage);
      expect(consumer.delivered.consumer_seq, `${stage}'s deliveries`).toBe(visits + 5);
    }
    expect(mesh.unexpectedExits()).toEqual([]);
  });
});
