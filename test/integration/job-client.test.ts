import { Buckets, type JobEvent, type JobRecord, Streams } from "@handoff/contracts";
import {
  ensureJobDoor,
  ensureTopology,
  JobClient,
  jobEventSubject,
  LEGACY_EVENTS_CONSUMER,
  recordFromEnvelope,
  type StageHandler,
  StageRunner,
  type Topology,
} from "@handoff/mesh";
import { type NatsHandle, startNats, testEnvelope, waitFor } from "@handoff/testkit";
import { AckPolicy } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";

// The gateway's side of a job: how a waiting request learns the outcome when the live result is
// missed, and what the record says when the deadline passes first.

const logger = pino({ level: "silent" });
const limits = { ackWaitMs: 1_000, maxDeliveries: 3, maxHops: 8 };

let nats: NatsHandle;
let nc: NatsConnection;
let topology: Topology;

beforeAll(async () => {
  nats = await startNats();
  nc = await connect({ servers: nats.url });
  topology = await ensureTopology(nc, limits);
});
afterAll(async () => {
  await nc?.close();
  await nats?.stop();
});
beforeEach(async () => {
  await topology.jsm.streams.purge(Streams.jobs);
  await topology.jsm.consumers.delete(Streams.jobs, "classifier").catch(() => false);
});

describe("a gateway waiting on a job", () => {
  it("finds the answer in the stored record when the live result never comes", async () => {
    const client = new JobClient(nc, topology.jobs, { pollIntervalMs: 100 });
    const job = { ...testEnvelope({ deadlineInMs: 20_000 }), step: 0 };
    const started = Date.now();
    const waiting = client.run(job, undefined);
    // A stage that finished while this gateway was not listening: the record, no message.
    await waitFor(async () => ((await client.store.get(job.id)) ? true : undefined));
    const answered: JobRecord = {
      ...recordFromEnvelope(job, "succeeded", undefined),
      result: {
        message: { role: "assistant", content: "from the record" },
        finish_reason: "stop",
        stage: "classifier",
        provider: "test",
        model: "test",
      },
    };
    await client.store.save(answered);
    const record = await waiting;
    expect(record?.result?.message.content).toBe("from the record");
    // Found by looking, long before the deadline would have ended the wait.
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it("stops waiting at once for a client that left before its job was submitted", async () => {
    const client = new JobClient(nc, topology.jobs, { pollIntervalMs: 100 });
    const job = { ...testEnvelope({ deadlineInMs: 20_000 }), step: 0 };
    const left = new AbortController();
    left.abort();
    const started = Date.now();
    // No stage runs here: without the check, the wait would last until the deadline.
    expect(await client.run(job, undefined, { signal: left.signal })).toBeUndefined();
    expect(Date.now() - started).toBeLessThan(5_000);
    // The job itself was submitted and goes on.
    expect((await client.store.get(job.id))?.status).toBe("queued");
  });

  it("records a job that passed its deadline as failed at once, and no stage runs it after", async () => {
    const client = new JobClient(nc, topology.jobs, { pollIntervalMs: 100 });
    const job = { ...testEnvelope({ deadlineInMs: 600 }), step: 0 };
    const record = await client.run(job, undefined);
    expect(record?.status).toBe("failed");
    expect(record?.error?.code).toBe("HANDOFF_ERR_DEADLINE");
    expect((await client.store.get(job.id))?.status).toBe("failed");
    // The job's events, published by this client: queued with the job, failed at the deadline.
    const subject = jobEventSubject(undefined, job.id);
    const types: string[] = [];
    const info = await topology.jsm.streams.info(Streams.events, { subjects_filter: subject });
    for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
      const msg = await topology.jsm.streams.getMessage(Streams.events, { seq }).catch(() => null);
      if (msg?.subject === subject) types.push(msg.json<JobEvent>().type);
    }
    expect(types).toEqual(["queued", "failed"]);

    // A replica that comes up later finds the job over: acked, the handler never called.
    let called = false;
    const handler: StageHandler = async (envelope) => {
      called = true;
      return envelope;
    };
    const runner = new StageRunner({
      nc,
      topology,
      stage: "classifier",
      handler,
      instance: "late",
      logger,
      limits,
      concurrency: 1,
    });
    await runner.start();
    try {
      await waitFor(async () => (runner.stats().received === 1 ? true : undefined));
      await waitFor(async () =>
        (await topology.jsm.streams.info(Streams.jobs)).state.messages === 0 ? true : undefined,
      );
      expect(called).toBe(false);
      expect((await client.store.get(job.id))?.error?.code).toBe("HANDOFF_ERR_DEADLINE");
    } finally {
      await runner.stop();
    }
  });

  it("queues a job submitted while NATS is restarting once it is back, instead of failing it", async () => {
    const client = new JobClient(nc, topology.jobs, { pollIntervalMs: 100 });
    const job = { ...testEnvelope({ deadlineInMs: 30_000 }), step: 0 };
    await nats.kill();
    const submitting = client.submit(job, undefined);
    await new Promise((resolve) => setTimeout(resolve, 500));
    await nats.restart();
    await submitting;
    const record = await client.store.get(job.id);
    expect(record?.status).toBe("queued");
    expect((await topology.jsm.streams.info(Streams.jobs)).state.messages).toBe(1);
  });
});

describe("the job door's topology", () => {
  it("removes the record-change consumer that earlier gateways relayed events from", async () => {
    const stream = `KV_${Buckets.jobs}`;
    await topology.jsm.consumers.add(stream, {
      durable_name: LEGACY_EVENTS_CONSUMER,
      filter_subject: `$KV.${Buckets.jobs}.>`,
      ack_policy: AckPolicy.Explicit,
    });
    await ensureJobDoor(topology.jsm, limits);
    await expect(topology.jsm.consumers.info(stream, LEGACY_EVENTS_CONSUMER)).rejects.toThrow(
      /consumer not found/i,
    );
    // Starting again (a second gateway, a restart) finds nothing to remove and goes on.
    await ensureJobDoor(topology.jsm, limits);
  });
});
