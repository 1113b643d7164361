import {
  completionFromRecord,
  eventFromRecord,
  Headers,
  type JobEvent,
  type JobRecord,
  NO_TENANT,
  Subjects,
} from "@handoff/contracts";
import type { JetStreamClient, PubAck } from "@nats-io/jetstream";
import { MeshSigner } from "./signing.js";
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

/**
 * Publishes the event a change of a job's record makes (`eventFromRecord`): `queued`, `running`
 * with the stage, `succeeded` with the answer exactly as `POST /v1/chat/completions` returns it,
 * or `failed`. Whoever writes a record calls this after the write and before it acks or answers,
 * so no change that makes an event goes unpublished; a repeat (a redelivery re-sending its
 * output) is stored once, by its message id.
 */
export async function publishRecordEvent(
  js: JetStreamClient,
  record: JobRecord,
  signer: MeshSigner = MeshSigner.disabled(),
): Promise<void> {
  const event = eventFromRecord(record, (r) => completionFromRecord(r, r.trace_id ?? ""));
  if (event) await publishJobEvent(js, event, signer);
}
