import {
  forwardMessageId,
  Headers,
  type JobEnvelope,
  type Stage,
  Subjects,
} from "@handoff/contracts";
import type { JetStreamClient, PubAck } from "@nats-io/jetstream";
import { encodeEnvelope } from "./codec.js";
import { tracedHeaders, withProducerSpan } from "./trace-context.js";

/**
 * Publishes a job envelope to a stage's subject inside a PRODUCER span, carrying the trace in
 * its headers. `Nats-Msg-Id = <jobId>:<stage>` makes JetStream drop a second publish of the same
 * hop, so a stage that is redelivered a job after forwarding it never forwards it twice.
 */
export function publishJob(
  js: JetStreamClient,
  envelope: JobEnvelope,
  stage: Stage,
): Promise<PubAck> {
  const subject = Subjects.job(stage);
  const msgID = forwardMessageId(envelope.id, stage);
  return withProducerSpan(
    subject,
    {
      "messaging.message.id": msgID,
      "messaging.message.conversation_id": envelope.id,
      "handoff.stage.next": stage,
    },
    async (span) => {
      const ack = await js.publish(subject, encodeEnvelope(envelope), {
        msgID,
        headers: tracedHeaders({ [Headers.jobId]: envelope.id, [Headers.stage]: stage }),
      });
      span.setAttribute("handoff.duplicate", ack.duplicate);
      return ack;
    },
  );
}
