import { type JobRecord, Subjects } from "@handoff/contracts";
import {
  ensureTopology,
  JobClient,
  MeshSigner,
  recordFromEnvelope,
  type StageHandler,
  StageRunner,
  type Topology,
} from "@handoff/mesh";
import { type NatsHandle, startNats, testEnvelope } from "@handoff/testkit";
import { type NatsConnection, headers as natsHeaders } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

// What a client of the NATS server without the mesh's key can do to a job a gateway waits on:
// publish on its result and stream subjects. None of it may answer or fail the job.

const logger = pino({ level: "silent" });
const limits = { ackWaitMs: 2_000, maxDeliveries: 3, maxHops: 8 };
const meshKey = Buffer.from("the-mesh-signing-key-".repeat(2));

let nats: NatsHandle;
let nc: NatsConnection;
let attacker: NatsConnection;
let topology: Topology;
const runners: StageRunner[] = [];

beforeAll(async () => {
  nats = await startNats();
  nc = await connect({ servers: nats.url });
  attacker = await connect({ servers: nats.url, name: "attacker" });
  topology = await ensureTopology(nc, limits);
});
afterEach(async () => {
  await Promise.all(runners.splice(0).map((r) => r.stop()));
});
afterAll(async () => {
  await attacker?.close();
  await nc?.close();
  await nats?.stop();
});

/** A heavy-reasoner that answers after a pause, so the forgeries arrive first. */
async function slowStage(signer: MeshSigner, text = "the real answer"): Promise<void> {
  const handler: StageHandler = async (envelope, ctx) => {
    ctx.relay?.({ type: "text", delta: text }, "test");
    await new Promise((resolve) => setTimeout(resolve, 600));
    return {
      ...envelope,
      result: {
        message: { role: "assistant", content: text },
        finish_reason: "stop",
        stage: ctx.stage,
        provider: "test",
        model: "test",
      },
    };
  };
  const runner = new StageRunner({
    nc,
    topology,
    stage: "heavy-reasoner",
    handler,
    instance: "test",
    logger,
    limits,
    concurrency: 2,
    signer,
  });
  await runner.start();
  runners.push(runner);
}

/** Publishes, as the attacker, on the job's result and stream subjects. */
async function forge(jobId: string, forgedRecord: JobRecord, sign?: MeshSigner): Promise<void> {
  const result = Subjects.result(jobId);
  const stream = Subjects.stream(jobId);
  const chunk = JSON.stringify({
    job_id: jobId,
    stage: "heavy-reasoner",
    delivery: 1,
    seq: 0,
    model: "x",
    delta: "ATTACKER TEXT",
  });
  const payloads: Array<[string, string]> = [
    [result, JSON.stringify(forgedRecord)],
    [result, "garbage{"],
    [result, JSON.stringify({ id: jobId, status: "failed" })],
    [result, JSON.stringify({ ...forgedRecord, id: "another-job-123" })],
    [stream, chunk],
    [stream, "garbage{"],
  ];
  for (const [subject, payload] of payloads) {
    const h = natsHeaders();
    if (sign) for (const [k, v] of Object.entries(sign.sign(subject, payload))) h.set(k, v);
    attacker.publish(subject, payload, { headers: h });
  }
  await attacker.flush();
}

function forgedFor(jobId: string): JobRecord {
  const job = testEnvelope({ id: jobId });
  return {
    ...recordFromEnvelope(job, "succeeded", undefined),
    result: {
      message: { role: "assistant", content: "ATTACKER TEXT" },
      finish_reason: "stop",
      stage: "heavy-reasoner",
      provider: "evil",
      model: "evil",
    },
  };
}

describe("results and chunks the gateway accepts", () => {
  it("with a signing key: forged, garbage and misaddressed messages are dropped; the real answer wins", async () => {
    const signer = new MeshSigner(meshKey);
    await slowStage(signer);
    const client = new JobClient(nc, topology.jobs, { signer, pollIntervalMs: 60_000 });
    const job = testEnvelope({ plan: ["heavy-reasoner"] });
    job.input.stream = true;
    const chunks: string[] = [];
    const pending = client.run(job, undefined, { onChunk: (c) => chunks.push(c.delta) });
    // Forge while the stage is still working: unsigned, then signed with a key the mesh lacks.
    await new Promise((resolve) => setTimeout(resolve, 150));
    await forge(job.id, forgedFor(job.id));
    await forge(
      job.id,
      forgedFor(job.id),
      new MeshSigner(Buffer.from("a-key-the-mesh-never-had".repeat(2))),
    );
    const record = await pending;
    expect(record?.status).toBe("succeeded");
    expect(record?.result?.message.content).toBe("the real answer");
    expect(chunks.join("")).toBe("the real answer");
    expect(client.dropped.result).toBe(8);
    expect(client.dropped.chunk).toBe(4);
  });

  it("without a signing key: garbage, invalid and misaddressed messages still neither answer nor fail the job", async () => {
    const off = MeshSigner.disabled();
    await slowStage(off);
    const client = new JobClient(nc, topology.jobs, { pollIntervalMs: 60_000 });
    const job = testEnvelope({ plan: ["heavy-reasoner"] });
    const pending = client.run(job, undefined);
    await new Promise((resolve) => setTimeout(resolve, 150));
    const h = natsHeaders();
    for (const payload of [
      "garbage{",
      JSON.stringify({ id: job.id, status: "failed" }),
      JSON.stringify({ ...forgedFor(job.id), id: "another-job-123" }),
    ]) {
      attacker.publish(Subjects.result(job.id), payload, { headers: h });
    }
    const record = await pending;
    expect(record?.result?.message.content).toBe("the real answer");
    expect(client.dropped.result).toBe(3);
  });
});
