import { Streams, Subjects } from "@handoff/contracts";
import { type NatsHandle, waitFor } from "@handoff/testkit";
import { type JetStreamClient, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { headers, type Msg, type NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FaultMesh, startSingleNode, stopAll } from "./harness.js";
import { JOBS, pool, requestBody } from "./load.js";
import { accepted, guarantees, runScenario } from "./scenario.js";
import type { CountingUpstream } from "./upstream.js";

/**
 * e. Duplicate publishes of one job, processed once:
 *  - the client posts each job three times at once with its `Idempotency-Key`: one job;
 *  - every job message (the gateway's and each stage's forward) is published again at once with
 *    its `Nats-Msg-Id`, as a publisher retrying after a lost PubAck does: JetStream drops it;
 *  - and again without a `Nats-Msg-Id` after the job ended: the stage acks it without running;
 *  - and, separately, again without a `Nats-Msg-Id` at once, racing the original.
 * Each job still makes exactly the model calls of its route.
 */

const LATENCY = { light: 80, mid: 80, heavy: 200 };
/** Marks the suite's own copies, so the capture does not copy its copies. */
const COPY = "Faults-Copy";

interface Captured {
  subject: string;
  data: Uint8Array;
  msgId: string | undefined;
}

function capture(nc: NatsConnection, onMessage: (captured: Captured) => void) {
  return nc.subscribe(Subjects.allJobs, {
    callback: (_error, msg: Msg) => {
      if (msg.headers?.get(COPY)) return;
      onMessage({
        subject: msg.subject,
        data: msg.data,
        msgId: msg.headers?.get("Nats-Msg-Id") || undefined,
      });
    },
  });
}

function copy(js: JetStreamClient, captured: Captured, withMsgId: boolean) {
  const h = headers();
  h.set(COPY, "1");
  return js.publish(captured.subject, captured.data, {
    headers: h,
    ...(withMsgId && captured.msgId ? { msgID: captured.msgId } : {}),
  });
}

describe("e. duplicate publishes of one job", () => {
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

  /** Waits until the job stream holds nothing: every copy was consumed. */
  const drained = async () => {
    const jsm = await jetstreamManager(nc);
    await waitFor(
      async () => ((await jsm.streams.info(Streams.jobs)).state.messages === 0 ? true : undefined),
      { timeoutMs: 60_000, intervalMs: 200, what: "the job stream to be empty" },
    );
  };

  it("idempotent re-posts, re-publishes with the same Nats-Msg-Id, and late copies run nothing twice", async () => {
    const js = jetstream(nc);
    const captured: Captured[] = [];
    const sameIdAcks: Array<Promise<boolean>> = [];
    const sub = capture(nc, (message) => {
      captured.push(message);
      sameIdAcks.push(copy(js, message, true).then((ack) => ack.duplicate));
    });
    const reposts: Array<{
      marker: string;
      status: number;
      id: string | undefined;
      replayed: boolean;
    }> = [];
    let lateCopies = 0;

    const { verdict, load } = await runScenario(mesh, upstream, [nats.url], {
      id: "e-duplicates",
      title:
        "each job posted 3x with its Idempotency-Key; every job message re-published with its Nats-Msg-Id at once, and without one after the job ended",
      batch: "dup",
      jobs: JOBS,
      fault: async ({ load, specs }) => {
        // Two more posts of each job with its key, racing the load's own.
        await accepted(load, 1);
        await pool([...specs, ...specs], 16, async (spec) => {
          const res = await fetch(`${mesh.gatewayUrl}/v1/jobs`, {
            method: "POST",
            headers: {
              "content-type": "application/json",
              "idempotency-key": `faults-${spec.marker}`,
            },
            body: JSON.stringify(requestBody(spec)),
          });
          const body = (await res.json()) as { id?: string };
          reposts.push({
            marker: spec.marker,
            status: res.status,
            id: body.id,
            replayed: res.headers.get("idempotent-replayed") === "true",
          });
        });
        return {};
      },
      afterSettle: async () => {
        // Late copies without a Nats-Msg-Id: new stream messages for jobs that have ended.
        sub.unsubscribe();
        for (const message of captured) {
          await copy(js, message, false);
          lateCopies++;
        }
        await drained();
        // Give any (wrong) second execution time to reach the upstream.
        await new Promise((resolve) => setTimeout(resolve, 1_000));
      },
      extra: async () => ({
        reposts: reposts.length,
        reposts_replayed: reposts.filter((r) => r.replayed).length,
        job_messages_captured: captured.length,
        same_id_copies_dropped_by_jetstream: (await Promise.all(sameIdAcks)).filter(Boolean).length,
        late_copies_without_msg_id: lateCopies,
        replayed_log_lines: mesh.logs(undefined, (l) =>
          String(l.msg).startsWith("the job has already ended"),
        ).length,
      }),
    });

    expect(guarantees(verdict)).toEqual([]);
    // Every re-post named the job of its key.
    for (const repost of reposts) {
      const job = load.jobs.get(repost.marker);
      expect(repost.status, repost.marker).toBe(202);
      expect(repost.id, repost.marker).toBe(job?.id);
    }
    // JetStream dropped every same-id copy.
    const dropped = await Promise.all(sameIdAcks);
    expect(dropped.length).toBe(captured.length);
    expect(dropped.every(Boolean)).toBe(true);
    expect(lateCopies).toBe(captured.length);
    expect(mesh.unexpectedExits()).toEqual([]);
  });

  it("copies without a Nats-Msg-Id racing the original run nothing twice", async () => {
    const js = jetstream(nc);
    let copies = 0;
    // One copy per job message: a second execution forwards under the same Nats-Msg-Id, which
    // JetStream drops, but the core subscription still sees it.
    const copied = new Set<string>();
    const sub = capture(nc, (message) => {
      if (message.msgId) {
        if (copied.has(message.msgId)) return;
        copied.add(message.msgId);
      }
      copies++;
      void copy(js, message, false);
    });
    const { verdict } = await runScenario(mesh, upstream, [nats.url], {
      id: "e-duplicates-racing",
      title:
        "every job message re-published at once without a Nats-Msg-Id (two live copies of each)",
      batch: "race",
      jobs: JOBS,
      afterSettle: async () => {
        sub.unsubscribe();
        await drained();
        await new Promise((resolve) => setTimeout(resolve, 1_000));
      },
      extra: async () => ({ racing_copies: copies }),
    });
    expect(copies).toBeGreaterThanOrEqual(JOBS);
    expect(guarantees(verdict)).toEqual([]);
    expect(mesh.unexpectedExits()).toEqual([]);
  });
});
