import {
  Buckets,
  completionFromRecord,
  eventFromRecord,
  Headers,
  type JobEvent,
  JobRecord,
  NO_TENANT,
  Subjects,
} from "@handoff/contracts";
import {
  type ConsumerMessages,
  type JetStreamClient,
  type JsMsg,
  jetstream,
  type PubAck,
} from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import type { Logger } from "pino";
import { MeshSigner } from "./signing.js";
import { EVENTS_CONSUMER } from "./topology.js";
import { tracedHeaders } from "./trace-context.js";

/**
 * A job's events on `handoff.v1.events.<tenant>.<jobId>` (stream `HANDOFF_EVENTS`): `queued`,
 * `running`, then `succeeded` or `failed`. Each is published with `Nats-Msg-Id =
 * <jobId>:event:<type>`, so re-publishing one (a redelivery, a second gateway) stores it once.
 */

/** The subject of job `jobId`'s events: its owner's, or {@link NO_TENANT}'s. */
export function jobEventSubject(tenant: string | undefined, jobId: string): string {
  return Subjects.event(tenant ?? NO_TENANT, jobId);
}

export function jobEventMessageId(jobId: string, type: JobEvent["type"]): string {
  return `${jobId}:event:${type}`;
}

/** Publishes `event` to the events stream (deduplicated per job and type), signed when the mesh signs. */
export function publishJobEvent(
  js: JetStreamClient,
  event: JobEvent,
  signer: MeshSigner = MeshSigner.disabled(),
): Promise<PubAck> {
  const subject = jobEventSubject(event.tenant, event.job_id);
  const payload = JSON.stringify(event);
  return js.publish(subject, payload, {
    msgID: jobEventMessageId(event.job_id, event.type),
    headers: tracedHeaders(signer.sign(subject, payload, { [Headers.jobId]: event.job_id })),
  });
}

export interface EventRelayOptions {
  nc: NatsConnection;
  logger: Logger;
  signer?: MeshSigner;
}

/**
 * Turns every change of the job records into a job event. It reads the records bucket's own
 * stream through a durable consumer every gateway replica shares, so no change is lost while
 * gateways restart, and publishes each event before acking the change. A record overwritten
 * before any gateway read it (no gateway was running) yields only its latest state: `queued` or
 * `running` may then be skipped, never `succeeded` or `failed`.
 */
export class EventRelay {
  readonly #o: EventRelayOptions;
  readonly #js: JetStreamClient;
  readonly #signer: MeshSigner;
  #messages: ConsumerMessages | undefined;
  #loop: Promise<void> | undefined;
  #stopping = false;
  /** Events published, for the service's stats. */
  relayed = 0;

  constructor(options: EventRelayOptions) {
    this.#o = options;
    this.#js = jetstream(options.nc);
    this.#signer = options.signer ?? MeshSigner.disabled();
  }

  async start(): Promise<void> {
    const consumer = await this.#js.consumers.get(`KV_${Buckets.jobs}`, EVENTS_CONSUMER);
    this.#messages = await consumer.consume({ max_messages: 256 });
    this.#loop = this.#run(this.#messages);
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    this.#messages?.stop();
    await this.#loop;
  }

  async #run(messages: ConsumerMessages): Promise<void> {
    // One at a time: the events of one job keep the order of its record's changes.
    for await (const msg of messages) {
      if (this.#stopping) {
        msg.nak();
        continue;
      }
      try {
        await this.#relay(msg);
        msg.ack();
      } catch (error) {
        this.#o.logger.warn(
          { err: error, subject: msg.subject },
          "job event not published; retrying",
        );
        msg.nak(1_000);
      }
    }
  }

  async #relay(msg: JsMsg): Promise<void> {
    const operation = msg.headers?.get("KV-Operation");
    if ((operation && operation !== "PUT") || msg.data.length === 0) return;
    let parsed: unknown;
    try {
      parsed = msg.json();
    } catch {
      parsed = undefined;
    }
    const record = JobRecord.safeParse(parsed);
    if (!record.success) {
      this.#o.logger.warn({ subject: msg.subject }, "unreadable job record; no event for it");
      return;
    }
    // A succeeded job's answer, exactly as `POST /v1/chat/completions` returns it.
    const event = eventFromRecord(record.data, (r) => completionFromRecord(r, r.trace_id ?? ""));
    if (!event) return;
    await publishJobEvent(this.#js, event, this.#signer);
    this.relayed++;
  }
}
