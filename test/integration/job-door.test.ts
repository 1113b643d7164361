import { randomUUID } from "node:crypto";
import { HandoffClientError, httpClient, natsClient } from "@handoff/client";
import { HandoffConfig as ConfigSchema, simProfile } from "@handoff/config";
import { JobEvent, Streams, Subjects } from "@handoff/contracts";
import { type NatsHandle, waitFor } from "@handoff/testkit";
import {
  AckPolicy,
  DeliverPolicy,
  type JetStreamClient,
  jetstream,
  jetstreamManager,
} from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { submitMain, watchMain } from "../../cli/src/client-commands.js";
import type { Gateway } from "../../services/gateway/src/service.js";
import { type InProcessMesh, startInProcessMesh } from "./support/in-process-mesh.js";

/**
 * The NATS door from a backend's side: job requests published on `handoff.v1.requests.<tenant>`
 * with its own NATS client, and every job's events consumed from `HANDOFF_EVENTS` through a
 * durable consumer filtered to the tenant's jobs, across the backend's own restart.
 */

const JOBS = 1_000;

let mesh: InProcessMesh;
let nats: NatsHandle;
let gateway: Gateway;
let gatewayUrl: string;

beforeAll(async () => {
  const config = ConfigSchema.parse({
    ...simProfile,
    limits: { ...simProfile.limits, request_timeout_ms: 120_000 },
  });
  mesh = await startInProcessMesh(config, { concurrency: 32 });
  ({ nats, gateway, url: gatewayUrl } = mesh);
});

afterAll(() => mesh?.stop());

/** A backend's own connection, as a Go or Python service would open one. */
async function backend(): Promise<{ nc: NatsConnection; js: JetStreamClient }> {
  const conn = await connect({ servers: nats.url });
  return { nc: conn, js: jetstream(conn) };
}

/** Creates the tenant's durable consumer on the events, filtered to its jobs. */
async function eventsConsumer(conn: NatsConnection, tenant: string, name: string): Promise<void> {
  const jsm = await jetstreamManager(conn);
  await jsm.consumers.add(Streams.events, {
    durable_name: name,
    filter_subject: Subjects.tenantEvents(tenant),
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
  });
}

/** Reads events from the durable consumer until `done` says enough, acking each. */
async function readEvents(
  js: JetStreamClient,
  name: string,
  into: JobEvent[],
  done: () => boolean,
  limit = Number.POSITIVE_INFINITY,
): Promise<void> {
  const consumer = await js.consumers.get(Streams.events, name);
  let read = 0;
  while (!done() && read < limit) {
    const batch = await consumer.fetch({
      max_messages: Math.min(100, limit - read),
      expires: 1_000,
    });
    for await (const msg of batch) {
      into.push(JobEvent.parse(msg.json()));
      msg.ack();
      read++;
    }
  }
}

const ask = (text: string) => ({
  model: "handoff",
  messages: [{ role: "user" as const, content: text }],
});

describe("jobs published straight onto NATS", () => {
  it(`${JOBS} jobs: every event reaches the backend's durable consumer, across its restart`, async () => {
    const tenant = "team-a";
    const consumerName = `backend-${randomUUID().slice(0, 8)}`;
    const first = await backend();
    await eventsConsumer(first.nc, tenant, consumerName);

    const ids: string[] = [];
    const published = (async () => {
      for (let i = 0; i < JOBS; i++) {
        const id = `job-a-${i.toString().padStart(5, "0")}-${randomUUID().slice(0, 8)}`;
        ids.push(id);
        const text = i % 3 === 0 ? `What is ${i} * 7?` : `Say hello to number ${i}.`;
        await first.js.publish(
          Subjects.requests(tenant),
          JSON.stringify({ ...ask(text), job_id: id }),
          { msgID: `req-${id}` },
        );
      }
    })();

    // The backend reads a third of what it will get, then goes away without a goodbye…
    const events: JobEvent[] = [];
    await readEvents(first.js, consumerName, events, () => false, JOBS);
    await published;
    await first.nc.close();

    // …and comes back later on a new connection, to the same durable consumer.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const second = await backend();
    const ended = () => {
      const terminal = new Set(
        events.filter((e) => e.type === "succeeded" || e.type === "failed").map((e) => e.job_id),
      );
      return ids.every((id) => terminal.has(id));
    };
    await waitFor(
      async () => {
        await readEvents(second.js, consumerName, events, ended, 500);
        return ended() || undefined;
      },
      { timeoutMs: 240_000, intervalMs: 10, what: `the events of all ${JOBS} jobs` },
    );
    // The events stay as long as the job records do (24 hours by default).
    const jsm = await jetstreamManager(second.nc);
    const eventStream = await jsm.streams.info(Streams.events);
    const records = await jsm.streams.info("KV_handoff-jobs");
    expect(eventStream.config.max_age).toBe(records.config.max_age);
    expect(eventStream.config.max_age).toBe(24 * 3_600 * 1e9);
    await second.nc.close();

    const byJob = new Map<string, JobEvent[]>();
    for (const event of events)
      byJob.set(event.job_id, [...(byJob.get(event.job_id) ?? []), event]);
    expect(byJob.size).toBe(JOBS);
    for (const id of ids) {
      const mine = byJob.get(id) ?? [];
      const types = mine.map((e) => e.type);
      // Each once: the stream dedupes a re-published event.
      expect(new Set(types).size, `${id}: ${types.join(",")}`).toBe(types.length);
      expect(types).toContain("queued");
      const answer = mine.find((e) => e.type === "succeeded");
      expect(answer, `${id} answered`).toBeDefined();
      if (answer?.type !== "succeeded") continue;
      expect(answer.tenant).toBe(tenant);
      expect(answer.completion.handoff.job_id).toBe(id);
      expect(answer.completion.choices[0]?.message.content).toBeTruthy();
    }
    // The tool jobs went through the tool-executor and their answer has the product.
    const seven = byJob.get(ids[3] as string)?.find((e) => e.type === "succeeded");
    expect(seven?.type === "succeeded" && seven.completion.choices[0]?.message.content).toContain(
      "21",
    );
  }, 300_000);

  it("answers reply_to with the job's queued event, and a re-send with the same Nats-Msg-Id is one job", async () => {
    const { nc: conn, js } = await backend();
    try {
      const inbox = `handoff.v1.replies.${randomUUID()}`;
      const replies = conn.subscribe(inbox, { max: 1 });
      const request = JSON.stringify({ ...ask("Say hello."), reply_to: inbox });
      const msgID = `req-${randomUUID()}`;
      await js.publish(Subjects.requests("team-b"), request, { msgID });
      const again = await js.publish(Subjects.requests("team-b"), request, { msgID });
      expect(again.duplicate).toBe(true);
      let queued: JobEvent | undefined;
      for await (const msg of replies) queued = JobEvent.parse(msg.json());
      expect(queued).toMatchObject({ type: "queued", tenant: "team-b", request_id: msgID });
      const id = queued?.job_id as string;
      // The same message id always names the same job.
      expect(id).toMatch(/^nats-/);
      const record = await waitFor(async () => {
        const r = await gateway.app?.inject({ method: "GET", url: `/v1/jobs/${id}` });
        const body = r?.json() as { status?: string } | undefined;
        return body?.status === "succeeded" ? body : undefined;
      });
      expect(record.status).toBe("succeeded");
    } finally {
      await conn.close();
    }
  });

  it("refuses an invalid request with a failed event naming the zod paths, on the events stream and reply_to, and acks it", async () => {
    const { nc: conn, js } = await backend();
    try {
      const inbox = `handoff.v1.replies.${randomUUID()}`;
      const replies = conn.subscribe(inbox, { max: 1 });
      const id = `bad-${randomUUID()}`;
      await js.publish(
        Subjects.requests("team-c"),
        JSON.stringify({
          model: "handoff",
          messages: [],
          temperature: 9,
          job_id: id,
          reply_to: inbox,
        }),
        { msgID: `req-${id}` },
      );
      let refused: JobEvent | undefined;
      for await (const msg of replies) refused = JobEvent.parse(msg.json());
      expect(refused?.type).toBe("failed");
      if (refused?.type !== "failed") return;
      expect(refused.job_id).toBe(id);
      expect(refused.error.code).toBe("HANDOFF_ERR_VALIDATION");
      expect(refused.error.issues?.map((i) => i.path).sort()).toEqual(["messages", "temperature"]);
      // The same event is on the job's subject, for a backend that consumes the stream instead.
      const jsm = await jetstreamManager(conn);
      const stored = await jsm.streams.getMessage(Streams.events, {
        last_by_subj: Subjects.event("team-c", id),
      });
      expect(JobEvent.parse(stored?.json())).toMatchObject({ type: "failed", job_id: id });
      // Never retried: the request left the work queue.
      await waitFor(async () =>
        (await jsm.streams.info(Streams.requests)).state.messages === 0 ? true : undefined,
      );
    } finally {
      await conn.close();
    }
  });

  it("refuses a request whose tenant does not match its subject, and one that is not JSON", async () => {
    const { nc: conn, js } = await backend();
    try {
      const jsm = await jetstreamManager(conn);
      const id = `mismatch-${randomUUID()}`;
      await js.publish(
        Subjects.requests("team-d"),
        JSON.stringify({ ...ask("hi"), tenant: "team-e", job_id: id }),
      );
      const mismatch = await waitFor(() =>
        jsm.streams
          .getMessage(Streams.events, { last_by_subj: Subjects.event("team-d", id) })
          .then((m) => JobEvent.parse(m?.json()))
          .catch(() => undefined),
      );
      expect(mismatch).toMatchObject({ type: "failed", error: { issues: [{ path: "tenant" }] } });

      const msgID = `garbage-${randomUUID()}`;
      await js.publish(Subjects.requests("team-d"), "{not json", { msgID });
      const garbage = await waitFor(async () => {
        const info = await jsm.streams.info(Streams.events, {
          subjects_filter: Subjects.tenantEvents("team-d"),
        });
        // Its id comes from its message id: the one job of team-d's that it did not choose.
        const subject = Object.keys(info.state.subjects ?? {}).find((s) => s.includes(".nats-"));
        if (!subject) return undefined;
        const m = await jsm.streams.getMessage(Streams.events, { last_by_subj: subject });
        return JobEvent.parse(m?.json());
      });
      expect(garbage).toMatchObject({
        type: "failed",
        request_id: msgID,
        error: { code: "HANDOFF_ERR_VALIDATION", issues: [{ path: "(root)" }] },
      });
    } finally {
      await conn.close();
    }
  });

  it("gives the same idempotency key from the same tenant the first request's job", async () => {
    const { nc: conn, js } = await backend();
    try {
      const key = `key-${randomUUID()}`;
      const replies: JobEvent[] = [];
      for (let i = 0; i < 2; i++) {
        const inbox = `handoff.v1.replies.${randomUUID()}`;
        const sub = conn.subscribe(inbox, { max: 1 });
        await js.publish(
          Subjects.requests("team-f"),
          JSON.stringify({ ...ask("Say hello once."), idempotency_key: key, reply_to: inbox }),
        );
        for await (const msg of sub) replies.push(JobEvent.parse(msg.json()));
      }
      expect(replies[0]?.type).toBe("queued");
      expect(replies[1]).toMatchObject({
        type: "queued",
        job_id: replies[0]?.job_id,
        replayed: true,
      });
    } finally {
      await conn.close();
    }
  });
});

describe("the client library, over NATS and over HTTP", () => {
  it("NATS: submit confirms the job, events run queued → succeeded, result is the answer", async () => {
    const { nc: conn } = await backend();
    try {
      const client = natsClient({ nc: conn, tenant: "team-lib" });
      const job = await client.submit(ask("What is 6 * 7?"));
      expect(job.pending).toBeUndefined();
      const types: string[] = [];
      for await (const event of client.events(job.id, { timeoutMs: 30_000 }))
        types.push(event.type);
      expect(types[0]).toBe("queued");
      expect(types.at(-1)).toBe("succeeded");
      const outcome = await client.result(job.id, { timeoutMs: 30_000 });
      expect(outcome.status).toBe("succeeded");
      if (outcome.status !== "succeeded") return;
      expect(outcome.completion.choices[0]?.message.content).toContain("42");
      expect(outcome.completion.handoff.job_id).toBe(job.id);
    } finally {
      await conn.close();
    }
  });

  it("NATS: a refused request throws with the issue paths; one idempotency key is one job", async () => {
    const { nc: conn } = await backend();
    try {
      const client = natsClient({ nc: conn, tenant: "team-lib" });
      const refused = await client
        .submit({ model: "handoff", messages: [], temperature: 7 } as never)
        .catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(HandoffClientError);
      expect((refused as HandoffClientError).issues?.map((i) => i.path).sort()).toEqual([
        "messages",
        "temperature",
      ]);
      const key = `k-${randomUUID()}`;
      const first = await client.submit(ask("Say hi."), { idempotencyKey: key });
      const second = await client.submit(ask("Say hi."), { idempotencyKey: key });
      expect(second).toEqual({ id: first.id, replayed: true });
    } finally {
      await conn.close();
    }
  });

  it("an abort that came before the wait began ends the wait at once, over NATS and HTTP", async () => {
    const gone = AbortSignal.abort();
    const { nc: conn } = await backend();
    try {
      const nats = natsClient({ nc: conn, tenant: "team-lib" });
      // A job that never comes: before, its consumer waited for it for ever.
      const waiting = nats.result(`never-${randomUUID()}`, { signal: gone });
      const outcome = await Promise.race([
        waiting.then(
          () => "answered",
          (error: unknown) => (error as HandoffClientError).code,
        ),
        new Promise((resolve) => setTimeout(() => resolve("still waiting"), 3_000)),
      ]);
      expect(outcome).toBe("aborted");

      const http = httpClient({ url: gatewayUrl });
      const job = await http.submit(ask("Say hi."));
      await http.result(job.id, { timeoutMs: 30_000 });
      // Before, the stream was read (and the job followed) as if nothing had been aborted.
      await expect(http.result(job.id, { signal: gone })).rejects.toMatchObject({
        code: "aborted",
      });
    } finally {
      await conn.close();
    }
  });

  it("HTTP: the same calls through the gateway, and the errors it answers", async () => {
    const client = httpClient({ url: gatewayUrl });
    const job = await client.submit(ask("What is 6 * 7?"));
    const outcome = await client.result(job.id, { timeoutMs: 30_000 });
    expect(
      outcome.status === "succeeded" && outcome.completion.choices[0]?.message.content,
    ).toContain("42");
    const refused = await client
      .submit({ model: "handoff", messages: [] })
      .catch((error: unknown) => error);
    expect(refused).toMatchObject({ status: 400, code: "HANDOFF_ERR_VALIDATION" });
    await expect(client.submit(ask("hi"), { jobId: "mine-12345678" })).rejects.toMatchObject({
      code: "unsupported",
    });
    await expect(client.result("no-such-job-000", { timeoutMs: 5_000 })).rejects.toMatchObject({
      status: 404,
    });
  });

  it("the CLI: handoff submit --nats, handoff watch --nats, handoff ask --nats", async () => {
    const out: string[] = [];
    const err: string[] = [];
    const io = { out: (l: string) => out.push(l), err: (l: string) => err.push(l) };
    const env = { NATS_URL: nats.url };
    expect(await submitMain(["--nats", "--tenant", "team-cli", "What is 6 * 7?"], io, env)).toBe(0);
    const id = out[0] as string;
    expect(id).toMatch(/^[A-Za-z0-9_-]{8,64}$/);
    out.length = 0;
    expect(await watchMain(["--nats", "--tenant", "team-cli", id], io, env)).toBe(0);
    expect(out[0]).toMatch(/queued$/);
    expect(out.at(-1)).toContain("succeeded");
    expect(out.at(-1)).toContain("42");
    out.length = 0;
    expect(await submitMain(["--nats", "What is 6 * 7?"], io, env, true)).toBe(0);
    expect(out.join("\n")).toContain("42");
    expect(out.join("\n")).toMatch(/route: +classifier/);
    expect(err).toEqual([]);
  });
});
