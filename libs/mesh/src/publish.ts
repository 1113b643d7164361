import {
  forwardMessageId,
  Headers,
  type JobEnvelope,
  type Stage,
  Subjects,
} from "@handoff/contracts";
import type { JetStreamClient, PubAck } from "@nats-io/jetstream";
import { encodeEnvelope } from "./codec.js";
import { MeshSigner } from "./signing.js";
import { tracedHeaders, withProducerSpan } from "./trace-context.js";

/**
 * Publishes a job envelope to a stage's subject inside a PRODUCER span, carrying the trace in
 * its headers. `Nats-Msg-Id = <jobId>:<step>:<stage>` (`step`: the envelope's position in its plan)
 * makes JetStream drop a second publish of the same hop within the dedupe window, so a stage that
 * is redelivered a job after forwarding it never forwards it twice. With a signing key, the
 * message carries the mesh's signature.
 */
export function publishJob(
  js: JetStreamClient,
  envelope: JobEnvelope,
  stage: Stage,
  signer: MeshSigner = MeshSigner.disabled(),
): Promise<PubAck> {
  const subject = Subjects.job(stage);
  const msgID = forwardMessageId(
    envelope.id,
    envelope.step ?? envelope.plan.lastIndexOf(stage),
    stage,
  );
  return withProducerSpan(
    subject,
    {
      "messaging.message.id": msgID,
      "messaging.message.conversation_id": envelope.id,
      "handoff.stage.next": stage,
    },
    async (span) => {
      const payload = encodeEnvelope(envelope);
      const ack = await js.publish(subject, payload, {
        msgID,
        headers: tracedHeaders(
          signer.sign(subject, payload, { [Headers.jobId]: envelope.id, [Headers.stage]: stage }),
        ),
      });
      span.setAttribute("handoff.duplicate", ack.duplicate);
      return ack;
    },
  );
}
