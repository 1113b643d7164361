import { randomUUID } from "node:crypto";
import { JobEvent, NO_TENANT, Streams, Subjects } from "@handoff/contracts";
import { DeliverPolicy, type JetStreamClient, jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import {
  type HandoffClient,
  HandoffClientError,
  type JobOutcome,
  type JobRequest,
  outcomeOf,
  type SubmitOptions,
  type SubmittedJob,
  type WaitOptions,
} from "./types.js";

export interface NatsClientOptions {
  /** An open connection; the client never closes it. */
  nc: NatsConnection;
  /** Whose jobs these are: the `<tenant>` of `handoff.v1.requests.<tenant>`; none by default. */
  tenant?: string;
  /**
   * How long `submit` waits for the gateway to confirm it took the request in (default 10 s).
   * Past it `submit` resolves with `pending: true`: the request waits in the stream.
   */
  confirmTimeoutMs?: number;
}

/**
 * The NATS door: publishes job requests on `handoff.v1.requests.<tenant>` with JetStream (a
 * `Nats-Msg-Id` per job, so a retried publish is one job) and reads each job's events from the
 * `HANDOFF_EVENTS` stream with an ordered consumer on the job's subject, from its first event.
 */
export function natsClient(options: NatsClientOptions): HandoffClient {
  const js: JetStreamClient = jetstream(options.nc);
  const tenant = options.tenant ?? NO_TENANT;

  async function* events(id: string, wait: WaitOptions = {}): AsyncGenerator<JobEvent> {
    const consumer = await js.consumers.get(Streams.events, {
      filter_subjects: Subjects.event(tenant, id),
      deliver_policy: DeliverPolicy.All,
    });
    const messages = await consumer.consume();
    const stop = () => messages.stop();
    const timer =
      wait.timeoutMs === undefined ? undefined : setTimeout(() => stop(), wait.timeoutMs);
    wait.signal?.addEventListener("abort", stop, { once: true });
    // Aborted before the consumer was there (or before the wait began): its abort fired with no
    // one listening, and the consumer would wait for the job's end (for ever, for a job that
    // never comes, without a timeout).
    if (wait.signal?.aborted) stop();
    let ended = false;
    try {
      for await (const msg of messages) {
        const event = JobEvent.parse(msg.json());
        yield event;
        if (event.type === "succeeded" || event.type === "failed") {
          ended = true;
          break;
        }
      }
    } finally {
      clearTimeout(timer);
      wait.signal?.removeEventListener("abort", stop);
      messages.stop();
      await consumer.delete().catch(() => {});
    }
    if (!ended && !wait.signal?.aborted) {
      throw new HandoffClientError(
        `job ${id} did not end within ${wait.timeoutMs} ms (it may still)`,
        "timeout",
      );
    }
  }

  return {
    async submit(request: JobRequest, submit: SubmitOptions = {}): Promise<SubmittedJob> {
      const id = submit.jobId ?? randomUUID();
      // The gateway answers here when it has taken the request in, or refused it.
      const replyTo = `${Subjects.prefix}.replies.${randomUUID()}`;
      const replies = options.nc.subscribe(replyTo, { max: 1 });
      const body = {
        ...request,
        job_id: id,
        reply_to: replyTo,
        ...(submit.idempotencyKey !== undefined ? { idempotency_key: submit.idempotencyKey } : {}),
      };
      try {
        await js.publish(Subjects.requests(tenant), JSON.stringify(body), { msgID: `job:${id}` });
      } catch (error) {
        replies.unsubscribe();
        throw new HandoffClientError(
          `the job request could not be published: ${(error as Error).message}`,
          "unavailable",
        );
      }
      const timer = setTimeout(() => replies.unsubscribe(), options.confirmTimeoutMs ?? 10_000);
      try {
        for await (const msg of replies) {
          const event = JobEvent.parse(msg.json());
          if (event.type === "failed") {
            throw new HandoffClientError(
              event.error.message,
              event.error.code,
              undefined,
              event.error.issues,
            );
          }
          // With an idempotency key, the job may be an earlier one.
          return {
            id: event.job_id,
            ...(event.type === "queued" && event.replayed ? { replayed: true } : {}),
          };
        }
      } finally {
        clearTimeout(timer);
      }
      // No gateway answered in time: the request waits, durably, in the request stream.
      return { id, pending: true };
    },
    async result(id: string, wait: WaitOptions = {}): Promise<JobOutcome> {
      for await (const event of events(id, wait)) {
        const outcome = outcomeOf(event);
        if (outcome) return outcome;
      }
      throw new HandoffClientError(`stopped waiting for job ${id}`, "aborted");
    },
    events,
    async close() {
      // The connection is the caller's.
    },
  };
}
