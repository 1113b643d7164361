import { HandoffError, type JobEnvelope, type JobRecord } from "@handoff/contracts";
import { encodeEnvelope } from "./codec.js";
import type { JobStore } from "./job-store.js";

/**
 * Room a job message keeps for its headers (job id, stage, message id, trace context, the mesh
 * signature): the envelope itself may take the server's `max_payload` less this.
 */
export const HEADER_HEADROOM_BYTES = 4_096;

/**
 * Refuses with a 413 a job that would not fit in one message of the connected NATS server: its
 * envelope (or its first record) is larger than `max_payload` less {@link HEADER_HEADROOM_BYTES}.
 * Checked before anything is stored, so a refused job leaves nothing behind. With no server
 * info (not connected) there is nothing to check against, and the publish decides.
 */
export function checkMaxPayload(payloads: readonly string[], maxPayload: number | undefined): void {
  if (maxPayload === undefined || maxPayload <= 0) return;
  const bytes = Math.max(0, ...payloads.map((payload) => Buffer.byteLength(payload)));
  const room = maxPayload - HEADER_HEADROOM_BYTES;
  if (bytes <= room) return;
  throw new HandoffError(
    "HANDOFF_ERR_MAX_PAYLOAD",
    `the job is ${bytes} bytes as a NATS message, more than the ${room} bytes the server's ` +
      `max_payload of ${maxPayload} bytes leaves after ${HEADER_HEADROOM_BYTES} bytes for ` +
      "headers; send a smaller request, or raise max_payload on the NATS server",
    { details: { bytes, max_payload: maxPayload } },
  );
}

/** {@link checkMaxPayload} for a job: its envelope as published and its record as stored. */
export function checkJobFits(
  envelope: JobEnvelope,
  record: JobRecord,
  maxPayload: number | undefined,
): void {
  if (maxPayload === undefined) return;
  checkMaxPayload([encodeEnvelope(envelope), JSON.stringify(record)], maxPayload);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Anything the job store or NATS threw, as the retryable 503 the client should see. */
export function unavailable(what: string, error: unknown): HandoffError {
  if (error instanceof HandoffError) return error;
  return HandoffError.retryable("HANDOFF_ERR_UNAVAILABLE", `${what}: ${messageOf(error)}`, {
    cause: error,
  });
}

/**
 * After the job's record was created but its publish failed: nothing will ever run the job, so
 * its record must not stay `queued`. Marks it failed with the reason (and hands the failed record
 * to `failed`, which publishes its event; or, if even that write fails, removes it) and returns
 * the retryable error for the client.
 */
export async function failUnpublished(
  store: JobStore,
  record: JobRecord,
  error: unknown,
  failed?: (record: JobRecord) => Promise<void>,
): Promise<HandoffError> {
  const failure = unavailable("the job could not be queued on NATS; try again", error);
  try {
    const ended: JobRecord = {
      ...record,
      status: "failed",
      updated_at: new Date().toISOString(),
      error: { code: failure.code, message: failure.message, retryable: failure.retryable },
    };
    if ((await store.save(ended)) && failed) {
      // NATS is in trouble: the event is tried once; the record is what stays authoritative.
      await failed(ended).catch(() => undefined);
    }
  } catch {
    try {
      await store.kv.delete(record.id);
    } catch {
      // NATS is gone altogether: the record expires with the bucket's TTL.
    }
  }
  return failure;
}
