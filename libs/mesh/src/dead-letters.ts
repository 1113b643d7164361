import {
  type DeadLetter,
  type HandoffError,
  Headers,
  type Issue,
  type Stage,
  Subjects,
} from "@handoff/contracts";
import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import { tracedHeaders } from "./trace-context.js";

/** The stream message a dead letter keeps: read from a delivery, or fetched by its sequence. */
export interface StoredMessage {
  subject: string;
  payload: string;
  stream: string;
  streamSequence: number;
  /** How many times it was delivered, this delivery included. */
  deliveries: number;
}

export function storedMessage(msg: JsMsg): StoredMessage {
  return {
    subject: msg.subject,
    payload: msg.string(),
    stream: msg.info.stream,
    streamSequence: msg.info.streamSequence,
    deliveries: msg.info.deliveryCount,
  };
}

export interface DeadLetterInput {
  stage: Stage;
  msg: StoredMessage;
  reason: DeadLetter["reason"];
  error: HandoffError;
  issues?: Issue[];
  jobId?: string;
}

/**
 * Records a payload on `handoff.v1.dlq.<stage>` and waits for JetStream to store it. Only after
 * that may the original be terminated: a dead letter is never lost on the way.
 */
export async function publishDeadLetter(js: JetStreamClient, input: DeadLetterInput) {
  const letter: DeadLetter = {
    stage: input.stage,
    subject: input.msg.subject,
    reason: input.reason,
    error: { code: input.error.code, message: input.error.message },
    ...(input.issues ? { issues: input.issues } : {}),
    ...(input.jobId ? { job_id: input.jobId } : {}),
    stream_sequence: input.msg.streamSequence,
    deliveries: input.msg.deliveries,
    payload: input.msg.payload,
    recorded_at: new Date().toISOString(),
  };
  const extra: Record<string, string> = { [Headers.stage]: input.stage };
  if (input.jobId) extra[Headers.jobId] = input.jobId;
  return js.publish(Subjects.deadLetter(input.stage), JSON.stringify(letter), {
    headers: tracedHeaders(extra),
    // One dead letter per stream message, however many times this path runs for it.
    msgID: `dlq:${input.msg.stream}:${input.msg.streamSequence}`,
  });
}

/** Reads a job id out of a payload that failed validation, so its waiting client can be told. */
export function salvageJobId(payload: string): string | undefined {
  try {
    const value: unknown = JSON.parse(payload);
    if (value && typeof value === "object" && "id" in value) {
      const id = (value as { id: unknown }).id;
      if (typeof id === "string" && /^[A-Za-z0-9_-]{8,64}$/.test(id)) return id;
    }
  } catch {
    // Not JSON at all: there is no id to salvage.
  }
  return undefined;
}
