import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type DeadLetter,
  HandoffError,
  Headers,
  type JobEnvelope,
  type Stage,
  Streams,
  Subjects,
} from "@handoff/contracts";
import {
  createStageService,
  encodeEnvelope,
  ensureStageConsumer,
  ensureTopology,
  JobStore,
  type MeshService,
  MeshSigner,
  publishJob,
  type StageHandler,
  type Topology,
} from "@handoff/mesh";
import {
  fakeNatsServer,
  type NatsHandle,
  startNats,
  testEnvelope,
  waitFor,
} from "@handoff/testkit";
import { type JetStreamClient, jetstream } from "@nats-io/jetstream";
import { type Msg, type NatsConnection, headers as natsHeaders } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { TracerProvider } from "@opentelemetry/sdk-trace";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dlqMain } from "../../cli/src/dlq.js";
import type { Io } from "../../cli/src/progress.js";
import { statusMain } from "../../cli/src/status.js";

/**
 * `handoff status` and `handoff dlq` against a real nats-server, with real stage services making
 * real dead letters: an unauthentic message (signing on, none given) and a job whose retries ran
 * out. The commands run in-process through their `main` functions, as `handoff` calls them.
 */

const KEY = "operator-cli-test-mesh-key-0123456789abcdef";
const signer = new MeshSigner(Buffer.from(KEY, "utf8"));
const limits = { ackWaitMs: 2_000, maxDeliveries: 2, maxHops: 8 };
const logger = pino({ level: "silent" });

let nats: NatsHandle;
let nc: NatsConnection;
let js: JetStreamClient;
let topology: Topology;
let store: JobStore;
let dir: string;
let cliEnv: NodeJS.ProcessEnv;
let failing = true;
const services: MeshService[] = [];

const answer: StageHandler = async (envelope, ctx) => ({
  ...envelope,
  result: {
    message: { role: "assistant", content: `answered by ${ctx.stage}` },
    finish_reason: "stop",
    stage: ctx.stage,
    provider: "test",
    model: "test",
  },
});

async function startStage(stage: Stage, handler: StageHandler): Promise<void> {
  const service = createStageService({
    nc,
    stage,
    version: "0.0.0-test",
    description: `test ${stage}`,
    handler,
    logger,
    limits,
    concurrency: 2,
    signer,
    backoffMs: () => 50,
  });
  await service.start();
  services.push(service);
}

interface Run {
  code: number;
  out: string[];
  err: string[];
  text: string;
}

async function run(
  main: (argv: string[], io: Io, env: NodeJS.ProcessEnv) => Promise<number>,
  args: string[],
  env: NodeJS.ProcessEnv = cliEnv,
): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const progress = { write: (text: string) => err.push(text) };
  const code = await main(
    [...args, "--nats", nats.url],
    {
      out: (l) => out.push(l),
      err: (l) => err.push(l),
      progress,
    },
    env,
  );
  return { code, out, err, text: out.join("\n") };
}

async function deadLetters(stage?: Stage): Promise<Array<{ seq: number; letter: DeadLetter }>> {
  const info = await topology.jsm.streams.info(Streams.deadLetters);
  const found = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const msg = await topology.jsm.streams.getMessage(Streams.deadLetters, { seq });
    if (!msg) continue;
    const letter = msg.json<DeadLetter>();
    if (!stage || letter.stage === stage) found.push({ seq, letter });
  }
  return found;
}

async function firstDeadLetter(stage: Stage): Promise<{ seq: number; letter: DeadLetter }> {
  const [first] = await deadLetters(stage);
  if (!first) throw new Error(`no dead letter for ${stage}`);
  return first;
}

function capture(stage: Stage): { next(): Promise<Msg> } {
  const sub = nc.subscribe(Subjects.job(stage), { max: 1 });
  return {
    async next() {
      for await (const msg of sub) return msg;
      throw new Error("subscription closed without a message");
    },
  };
}

async function recordStatus(id: string): Promise<string | undefined> {
  return (await store.get(id))?.status;
}

let unauthenticJob: JobEnvelope;
let exhaustedJob: JobEnvelope;

beforeAll(async () => {
  // Trace context on every message, as the services have it: a replay must keep it.
  trace.setGlobalTracerProvider(new TracerProvider());
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  nats = await startNats();
  nc = await connect({ servers: nats.url });
  js = jetstream(nc);
  topology = await ensureTopology(nc, limits);
  store = new JobStore(topology.jobs);
  dir = mkdtempSync(join(tmpdir(), "handoff-operator-"));
  const config = join(dir, "handoff.yaml");
  writeFileSync(
    config,
    [
      "tiers:",
      "  light: [{ provider: sim, model: sim-light }]",
      "  mid: [{ provider: sim, model: sim-mid }]",
      "  heavy: [{ provider: sim, model: sim-heavy }]",
      "mesh:",
      "  signing_key_env: TEST_OPERATOR_MESH_KEY",
      "",
    ].join("\n"),
  );
  cliEnv = { HANDOFF_CONFIG: config, TEST_OPERATOR_MESH_KEY: KEY };

  await startStage("classifier", answer);
  await startStage("tool-executor", async (envelope, ctx) => {
    if (failing) throw HandoffError.retryable("HANDOFF_ERR_PROVIDER", "upstream keeps failing");
    return answer(envelope, ctx);
  });
  // The heavy-reasoner's queue exists, but nothing serves it: its jobs wait (lag).
  await ensureStageConsumer(topology.jsm, "heavy-reasoner", limits);
  await publishJob(js, testEnvelope({ plan: ["heavy-reasoner"] }), "heavy-reasoner", signer);

  // A message that does not carry the mesh's signature: dead-lettered as unauthentic.
  unauthenticJob = testEnvelope({ plan: ["classifier"] });
  await js.publish(Subjects.job("classifier"), encodeEnvelope(unauthenticJob), {
    msgID: "unsigned-1",
  });
  // A signed job whose stage fails on every delivery: dead-lettered as max_deliveries.
  exhaustedJob = testEnvelope({ plan: ["tool-executor"], deadlineInMs: 120_000 });
  await publishJob(js, exhaustedJob, "tool-executor", signer);
  await waitFor(async () => (await deadLetters()).length === 2 || undefined, {
    timeoutMs: 20_000,
    what: "two dead letters",
  });
  await waitFor(async () => (await recordStatus(exhaustedJob.id)) === "failed", {
    what: "the exhausted job to fail",
  });
}, 60_000);

afterAll(async () => {
  await Promise.all(services.map((service) => service.stop()));
  await nc?.close();
  await nats?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
  trace.disable();
  context.disable();
  propagation.disable();
});

describe("handoff status", () => {
  it("shows every instance from $SRV, each stage's queue and dead letters, and jobs by status", async () => {
    const { code, text } = await run(statusMain, ["--json"]);
    expect(code).toBe(0);
    const report = JSON.parse(text);
    expect(report.instances.map((i: { name: string }) => i.name)).toEqual([
      "classifier",
      "tool-executor",
    ]);
    for (const instance of report.instances) {
      expect(instance.id).toMatch(/\S+/);
      expect(instance.version).toBe("0.0.0-test");
      expect(Date.parse(instance.started)).not.toBeNaN();
      expect(instance.stats).toHaveProperty("received");
    }
    expect(report.instances[1].stats).toMatchObject({ dead_lettered: 1, retried: 1 });
    expect(report.missing).toEqual(["gateway", "heavy-reasoner"]);
    const stages = Object.fromEntries(report.stages.map((s: { stage: string }) => [s.stage, s]));
    expect(stages.classifier).toMatchObject({ consumer: true, lag: 0, dead_letters: 1 });
    expect(stages["tool-executor"]).toMatchObject({ consumer: true, lag: 0, dead_letters: 1 });
    expect(stages["heavy-reasoner"]).toMatchObject({ consumer: true, lag: 1, dead_letters: 0 });
    expect(report.dead_letters).toBe(2);
    expect(report.jobs).toMatchObject({ failed: 1, succeeded: 0 });
  });

  it("reads for people", async () => {
    const { code, text } = await run(statusMain, []);
    expect(code).toBe(0);
    expect(text).toContain(`NATS ${nats.url}`);
    expect(text).toMatch(/instances \(2\)/);
    expect(text).toMatch(/tool-executor\s+\S+\s+0\.0\.0-test\s+\d+s\s+received \d+/);
    expect(text).toContain("no instance answers for: gateway, heavy-reasoner");
    expect(text).toMatch(/STAGE\s+LAG\s+ACK PENDING\s+REDELIVERED\s+DEAD LETTERS/);
    expect(text).toMatch(/heavy-reasoner\s+1\s+0\s+0\s+0/);
    expect(text).toMatch(/classifier\s+0\s+0\s+0\s+1/);
    expect(text).toContain("2 dead letters: handoff dlq list");
    expect(text).toMatch(/failed 1/);
  });

  it("refuses a server older than 2.9.0, naming its version, and exits 1", async () => {
    const old = await fakeNatsServer("2.8.4");
    try {
      const err: string[] = [];
      const code = await statusMain(
        ["--nats", old.url],
        { out: () => {}, err: (l) => err.push(l) },
        {},
      );
      expect(code).toBe(1);
      expect(err.join("\n")).toMatch(/version 2\.8\.4; Handoff needs nats-server 2\.9\.0 or newer/);
    } finally {
      await old.close();
    }
  });

  it("says it cannot reach NATS and exits 1", async () => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await statusMain(
      ["--nats", "nats://127.0.0.1:1"],
      { out: (l) => out.push(l), err: (l) => err.push(l) },
      {},
    );
    expect(code).toBe(1);
    expect(err.join("\n")).toMatch(/cannot connect to NATS at nats:\/\/127\.0\.0\.1:1/);
  });
});

describe("handoff dlq", () => {
  it("list shows seq, time, stage, reason, job, deliveries and error", async () => {
    const letters = await deadLetters();
    const json = await run(dlqMain, ["list", "--json"]);
    expect(json.code).toBe(0);
    const rows = json.out.map((line) => JSON.parse(line));
    expect(rows).toEqual(
      letters.map(({ seq, letter }) => ({
        seq,
        time: letter.recorded_at,
        stage: letter.stage,
        reason: letter.reason,
        ...(letter.job_id ? { job_id: letter.job_id } : {}),
        deliveries: letter.deliveries,
        error: `${letter.error.code}: ${letter.error.message}`,
      })),
    );
    expect(rows.map((r) => [r.stage, r.reason, r.job_id])).toEqual([
      ["classifier", "unauthentic", undefined],
      ["tool-executor", "max_deliveries", exhaustedJob.id],
    ]);
    expect(rows[1].deliveries).toBe(2);

    const human = await run(dlqMain, ["list"]);
    expect(human.out[0]).toMatch(/^SEQ\s+TIME\s+STAGE\s+REASON\s+JOB\s+DELIVERIES\s+ERROR$/);
    expect(human.text).toMatch(
      new RegExp(
        `${rows[1].seq}\\s+\\S+Z\\s+tool-executor\\s+max_deliveries\\s+${exhaustedJob.id}\\s+2\\s+HANDOFF_ERR_RETRIES_EXHAUSTED`,
      ),
    );
    expect(human.text).toContain("2 dead letters");

    const one = await run(dlqMain, ["list", "--stage", "classifier", "--json"]);
    expect(one.out.map((line) => JSON.parse(line).stage)).toEqual(["classifier"]);
    expect((await run(dlqMain, ["list", "--stage", "nope"])).code).toBe(2);
  });

  it("show prints the whole dead letter, payload included", async () => {
    const { seq, letter } = await firstDeadLetter("tool-executor");
    const exact = await run(dlqMain, ["show", String(seq), "--json"]);
    expect(exact.code).toBe(0);
    const shown = JSON.parse(exact.text);
    expect(shown).toMatchObject({
      ...letter,
      seq,
      dlq_subject: Subjects.deadLetter("tool-executor"),
    });
    expect(shown.payload).toBe(letter.payload);
    expect(shown.headers.traceparent).toMatch(/^00-[0-9a-f]{32}-/);

    const readable = await run(dlqMain, ["show", String(seq)]);
    expect(JSON.parse(readable.text).payload).toMatchObject({ id: exhaustedJob.id, v: 1 });

    const missing = await run(dlqMain, ["show", "99999"]);
    expect(missing.code).toBe(1);
    expect(missing.err.join("\n")).toMatch(/no dead letter with sequence 99999/);
  });

  it("replays an unauthentic dead letter unsigned: the stage dead-letters it again", async () => {
    const { seq } = await firstDeadLetter("classifier");
    const seen = capture("classifier");
    const replay = await run(dlqMain, ["replay", String(seq)]);
    expect(replay.code).toBe(0);
    expect(replay.text).toMatch(
      new RegExp(`replayed dead letter ${seq} \\(classifier, unauthentic\\)`),
    );
    expect(replay.text).toContain("unsigned");
    expect(replay.text).toContain("not signed: it was dead-lettered as unauthentic");
    expect(replay.text).toContain(`dead letter ${seq} deleted`);

    const msg = await seen.next();
    expect(msg.headers?.get(Headers.signature) ?? "").toBe("");
    expect(signer.verify(msg.subject, msg.data, msg.headers)).toBe("unsigned");
    expect(msg.headers?.get("Handoff-Replay-Of")).toBe(String(seq));
    expect(msg.headers?.get("Nats-Msg-Id")).toMatch(new RegExp(`^dlq-replay:${seq}:\\d+$`));
    expect(msg.string()).toBe(encodeEnvelope(unauthenticJob));

    // Gone from the dead letters, and back as a new one: the stage refused it again.
    const again = await waitFor(
      async () => {
        const letters = await deadLetters("classifier");
        return letters.length === 1 && letters[0] && letters[0].seq !== seq
          ? letters[0]
          : undefined;
      },
      { what: "the replay to be dead-lettered again" },
    );
    expect(again.letter.reason).toBe("unauthentic");
    expect((await run(dlqMain, ["show", String(seq)])).code).toBe(1);
    // The job it named was never touched.
    expect(await store.get(unauthenticJob.id)).toBeUndefined();
  });

  it("replays a job that ran out of deliveries: signed, same trace, record re-opened, runs once", async () => {
    failing = false;
    const { seq } = await firstDeadLetter("tool-executor");
    const stored = await topology.jsm.streams.getMessage(Streams.deadLetters, { seq });
    const traceparent = stored?.header.get("traceparent");
    expect(traceparent).toBeTruthy();
    const seen = capture("tool-executor");

    const replay = await run(dlqMain, ["replay", String(seq), "--json"]);
    expect(replay.code).toBe(0);
    const outcome = JSON.parse(replay.text);
    expect(outcome).toMatchObject({
      seq,
      stage: "tool-executor",
      reason: "max_deliveries",
      subject: Subjects.job("tool-executor"),
      job_id: exhaustedJob.id,
      duplicate: false,
      signature: "signed",
      payload_changed: false,
      record_reopened: true,
      deleted: true,
    });
    expect(outcome.trace).toBe(traceparent?.split("-")[1]);

    const msg = await seen.next();
    expect(signer.verify(msg.subject, msg.data, msg.headers)).toBe("authentic");
    expect(msg.headers?.get("traceparent")).toBe(traceparent);
    expect(msg.headers?.get(Headers.jobId)).toBe(exhaustedJob.id);
    expect(msg.headers?.get("Nats-Msg-Id")).toBe(outcome.msg_id);

    await waitFor(async () => (await recordStatus(exhaustedJob.id)) === "succeeded", {
      what: "the replayed job to succeed",
    });
    expect((await store.get(exhaustedJob.id))?.result?.message.content).toBe(
      "answered by tool-executor",
    );
    expect(await deadLetters("tool-executor")).toEqual([]);

    const twice = await run(dlqMain, ["replay", String(seq)]);
    expect(twice.code).toBe(1);
    expect(twice.err.join("\n")).toMatch(new RegExp(`no dead letter with sequence ${seq}`));
  });

  it("refuses to replay a job past its deadline, and replays it with a new one", async () => {
    failing = true;
    const late = testEnvelope({ plan: ["tool-executor"], deadlineInMs: 4_000 });
    await publishJob(js, late, "tool-executor", signer);
    const { seq } = await waitFor(
      async () => (await deadLetters("tool-executor")).find((d) => d.letter.job_id === late.id),
      { what: "the late job's dead letter" },
    );
    failing = false;
    await waitFor(() => Date.now() > Date.parse(late.budget.deadline) || undefined, {
      what: "the deadline to pass",
    });

    const refused = await run(dlqMain, ["replay", String(seq)]);
    expect(refused.code).toBe(1);
    expect(refused.err.join("\n")).toMatch(/deadline passed at .*--deadline 10m/);
    expect((await run(dlqMain, ["show", String(seq)])).code).toBe(0);

    const seen = capture("tool-executor");
    const replay = await run(dlqMain, ["replay", String(seq), "--deadline", "1m", "--json"]);
    expect(replay.code).toBe(0);
    expect(JSON.parse(replay.text)).toMatchObject({ signature: "signed", payload_changed: true });
    const msg = await seen.next();
    expect(signer.verify(msg.subject, msg.data, msg.headers)).toBe("authentic");
    const deadline = Date.parse(msg.json<JobEnvelope>().budget.deadline);
    expect(deadline).toBeGreaterThan(Date.now() + 30_000);
    await waitFor(async () => (await recordStatus(late.id)) === "succeeded", {
      what: "the job with its new deadline to succeed",
    });
  });

  it("replays a fixed payload in place of one that did not parse", async () => {
    failing = false;
    const job = testEnvelope({ plan: ["tool-executor"], deadlineInMs: 60_000 });
    // Signed by the mesh, but not an envelope this version reads: invalid_payload, job failed.
    const broken = JSON.stringify({ ...job, v: 2 });
    const subject = Subjects.job("tool-executor");
    const h = natsHeaders();
    for (const [key, value] of Object.entries(signer.sign(subject, broken))) h.set(key, value);
    await js.publish(subject, broken, { msgID: `broken-${job.id}`, headers: h });
    const { seq, letter } = await waitFor(
      async () => (await deadLetters("tool-executor")).find((d) => d.letter.job_id === job.id),
      { what: "the invalid payload's dead letter" },
    );
    expect(letter.reason).toBe("invalid_payload");
    await waitFor(async () => (await recordStatus(job.id)) === "failed", {
      what: "the job named by the broken payload to fail",
    });

    const fixed = join(dir, "fixed.json");
    writeFileSync(fixed, `${encodeEnvelope(job)}\n`);
    const seen = capture("tool-executor");
    const replay = await run(dlqMain, ["replay", String(seq), "--payload", fixed, "--json"]);
    expect(replay.code).toBe(0);
    expect(JSON.parse(replay.text)).toMatchObject({
      reason: "invalid_payload",
      signature: "signed",
      payload_changed: true,
      record_reopened: true,
    });
    const msg = await seen.next();
    expect(msg.string()).toBe(encodeEnvelope(job));
    expect(signer.verify(msg.subject, msg.data, msg.headers)).toBe("authentic");
    await waitFor(async () => (await recordStatus(job.id)) === "succeeded", {
      what: "the fixed job to succeed",
    });
  });

  it("keeps the original signature a dead letter carries, without the mesh key", async () => {
    const job = testEnvelope({ plan: ["tool-executor"], deadlineInMs: 60_000 });
    const payload = encodeEnvelope(job);
    const subject = Subjects.job("tool-executor");
    const letter: DeadLetter = {
      stage: "tool-executor",
      subject,
      reason: "failed",
      error: { code: "HANDOFF_ERR_INTERNAL", message: "a bug" },
      job_id: job.id,
      stream_sequence: 1,
      deliveries: 1,
      payload,
      recorded_at: new Date().toISOString(),
    };
    const h = natsHeaders();
    h.set("Handoff-Original-Signature", signer.signature(subject, payload) as string);
    const ack = await js.publish(Subjects.deadLetter("tool-executor"), JSON.stringify(letter), {
      headers: h,
    });
    const seen = capture("tool-executor");
    // No config: this shell holds no key, and needs none.
    const replay = await run(dlqMain, ["replay", String(ack.seq), "--json"], {});
    expect(replay.code).toBe(0);
    expect(JSON.parse(replay.text)).toMatchObject({ signature: "kept", payload_changed: false });
    const msg = await seen.next();
    expect(signer.verify(msg.subject, msg.data, msg.headers)).toBe("authentic");
  });

  it("will not replay unsigned when the config says the mesh signs but the key is missing", async () => {
    failing = true;
    const job = testEnvelope({ plan: ["tool-executor"], deadlineInMs: 60_000 });
    await publishJob(js, job, "tool-executor", signer);
    const { seq } = await waitFor(
      async () => (await deadLetters("tool-executor")).find((d) => d.letter.job_id === job.id),
      { what: "a dead letter" },
    );
    const { code, err } = await run(dlqMain, ["replay", String(seq)], {
      HANDOFF_CONFIG: cliEnv.HANDOFF_CONFIG,
    });
    expect(code).toBe(1);
    expect(err.join("\n")).toMatch(
      /cannot sign the replay as the mesh does: .*TEST_OPERATOR_MESH_KEY/,
    );
    expect((await run(dlqMain, ["show", String(seq)])).code).toBe(0);
  });
});
