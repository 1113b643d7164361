/**
 * The two baselines the mesh is compared with, each a workload of independent operations:
 *
 * A. core NATS request-reply: a responder answers each request with a result-sized JSON reply;
 * B. JetStream: publish a job-envelope-sized message to a work-queue stream, a durable pull
 *    consumer in the same process receives it and acks it with `ackAck`; one operation lasts from
 *    just before `js.publish` until the consumer's ack is confirmed by the server.
 *
 * Publisher and consumer (requester and responder) use separate connections, as separate services
 * would, but live in this process.
 */
import { randomUUID } from "node:crypto";
import { testEnvelope } from "@handoff/testkit";
import {
  AckPolicy,
  type ConsumerMessages,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { withTimeout } from "./lib.ts";

/** One kind of operation to measure, with its resources. */
export interface Workload {
  op: (index: number) => Promise<void>;
  close(): Promise<void>;
}

const OP_TIMEOUT_MS = 10_000;
const encoder = new TextEncoder();

/**
 * A reply shaped like the job record a stage publishes on `handoff.v1.results.<job>` for
 * "What is 17 * 23?", so the baseline moves about as many bytes as the mesh's last leg.
 */
export function resultLikePayload(): Uint8Array {
  const now = new Date().toISOString();
  const usage = (input: number, output: number, cost: number) => ({
    stage: "tool-executor",
    tier: "mid",
    provider: "sim",
    model: "sim-mid",
    input_tokens: input,
    output_tokens: output,
    cost_usd: cost,
    latency_ms: 0,
    simulated: true,
  });
  const record = {
    id: randomUUID(),
    status: "succeeded",
    stage: "tool-executor",
    created_at: now,
    updated_at: now,
    trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
    route: {
      decision: "tools",
      strategy: "rules",
      confidence: 0.8,
      reason: "tool signals arithmetic (score 2)",
    },
    hops: ["classifier", "tool-executor"],
    usage: [usage(316, 14, 0.0001488), usage(334, 4, 0.00014)],
    cost_usd: 0.0002888,
    result: {
      content: "17 * 23 = 391.",
      finish_reason: "stop",
      model: "sim-mid",
      simulated: true,
    },
  };
  return encoder.encode(JSON.stringify(record));
}

/**
 * A real job envelope (the testkit's) padded with a system message to `bytes` of JSON, the size
 * of the envelopes the mesh moves between stages. Returns a function giving one per job id.
 */
export function envelopeOfSize(bytes: number): (id: string) => string {
  const base = testEnvelope({ id: randomUUID(), question: "What is 17 * 23?" });
  const probe = JSON.stringify({
    ...base,
    input: { ...base.input, messages: [{ role: "system", content: "" }, ...base.input.messages] },
  });
  const padding = "x".repeat(Math.max(0, bytes - probe.length));
  return (id) =>
    JSON.stringify({
      ...base,
      id,
      input: {
        ...base.input,
        messages: [{ role: "system", content: padding }, ...base.input.messages],
      },
    });
}

const RR_SUBJECT = "bench.rr";

/** Baseline A: core NATS request-reply. */
export async function coreRequestReply(
  url: string,
): Promise<Workload & { replyBytes: number; requestBytes: number }> {
  const responder = await connect({ servers: url, name: "bench-responder" });
  const requester = await connect({ servers: url, name: "bench-requester" }).catch(
    async (error: unknown) => {
      await responder.close();
      throw error;
    },
  );
  const reply = resultLikePayload();
  responder.subscribe(RR_SUBJECT, {
    callback: (error, msg) => {
      if (!error) msg.respond(reply);
    },
  });
  await responder.flush();
  const request = encoder.encode(JSON.stringify({ id: randomUUID(), op: "ping" }));
  return {
    replyBytes: reply.length,
    requestBytes: request.length,
    async op(index) {
      const msg = await requester.request(RR_SUBJECT, request, { timeout: OP_TIMEOUT_MS });
      if (msg.data.length !== reply.length) {
        throw new Error(`request ${index}: got ${msg.data.length} bytes, sent ${reply.length}`);
      }
    },
    async close() {
      await Promise.allSettled([requester.close(), responder.close()]);
    },
  };
}

const JS_STREAM = "BENCH_JS";
const JS_SUBJECT = "bench.js.work";
const JS_CONSUMER = "bench";

interface Pending {
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** Baseline B: JetStream publish → durable pull consumer (`consume()`) → `ackAck`. */
export async function jetStreamWorkQueue(
  url: string,
  envelopeBytes: number,
): Promise<Workload & { messageBytes: number }> {
  const producerNc = await connect({ servers: url, name: "bench-js-producer" });
  let consumerNc: NatsConnection | undefined;
  let messages: ConsumerMessages | undefined;
  let jsm: JetStreamManager | undefined;
  const cleanup = async () => {
    messages?.stop();
    await jsm?.streams.delete(JS_STREAM).catch(() => undefined);
    await Promise.allSettled([producerNc.close(), consumerNc?.close()]);
  };
  const subscribe = async (): Promise<ConsumerMessages> => {
    jsm = await jetstreamManager(producerNc);
    // File storage and work-queue retention, like the mesh's HANDOFF_JOBS stream.
    await jsm.streams.add({
      name: JS_STREAM,
      subjects: [JS_SUBJECT],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      num_replicas: 1,
    });
    await jsm.consumers.add(JS_STREAM, {
      durable_name: JS_CONSUMER,
      filter_subject: JS_SUBJECT,
      ack_policy: AckPolicy.Explicit,
      max_ack_pending: 10_000,
    });
    consumerNc = await connect({ servers: url, name: "bench-js-consumer" });
    const consumer = await jetstream(consumerNc).consumers.get(JS_STREAM, JS_CONSUMER);
    return consumer.consume();
  };
  let iterator: ConsumerMessages;
  try {
    iterator = await subscribe();
    messages = iterator;
  } catch (error) {
    await cleanup();
    throw error;
  }

  const pending = new Map<string, Pending>();
  const failAll = (error: unknown) => {
    for (const waiter of pending.values()) waiter.reject(error);
    pending.clear();
  };
  // Each message is decoded like a real consumer would and acked without blocking the next one.
  const consuming = (async () => {
    for await (const msg of iterator) {
      const { id } = msg.json<{ id: string }>();
      msg.ackAck({ timeout: OP_TIMEOUT_MS }).then(
        (acked) => {
          const waiter = pending.get(id);
          pending.delete(id);
          if (acked) waiter?.resolve();
          else waiter?.reject(new Error(`message ${id} was already acked`));
        },
        (error: unknown) => {
          const waiter = pending.get(id);
          pending.delete(id);
          waiter?.reject(error);
        },
      );
    }
  })().catch(failAll);

  const js = jetstream(producerNc);
  const envelope = envelopeOfSize(envelopeBytes);
  return {
    messageBytes: envelope(randomUUID()).length,
    async op() {
      const id = randomUUID();
      const acked = new Promise<void>((resolve, reject) => pending.set(id, { resolve, reject }));
      // Awaited below; until then a rejection (all waiters fail on close) must not go unhandled.
      acked.catch(() => undefined);
      try {
        await js.publish(JS_SUBJECT, envelope(id));
        await withTimeout(acked, OP_TIMEOUT_MS, `JetStream message ${id}`);
      } finally {
        pending.delete(id);
      }
    },
    async close() {
      failAll(new Error("workload closed"));
      await cleanup();
      await consuming;
    },
  };
}
