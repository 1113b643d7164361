import { HandoffError, type Stage, Streams } from "@handoff/contracts";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import type { Logger } from "pino";
import { decodeEnvelope } from "./codec.js";
import { publishDeadLetter, salvageJobId } from "./dead-letters.js";
import type { JobOutcomes } from "./outcomes.js";
import type { MeshSigner } from "./signing.js";

/** The server's advisory that a message used up its consumer's `max_deliver`. */
export function maxDeliveriesAdvisorySubject(stage: Stage): string {
  return `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${Streams.jobs}.${stage}`;
}

interface MaxDeliveriesAdvisory {
  stream_seq: number;
  deliveries: number;
}

export interface MaxDeliveriesWatcherOptions {
  nc: NatsConnection;
  jsm: JetStreamManager;
  js: JetStreamClient;
  stage: Stage;
  outcomes: JobOutcomes;
  signer: MeshSigner;
  logger: Logger;
  /** Called once per message this watcher dead-lettered. */
  onDeadLetter?: () => void;
}

/**
 * The backstop for a job no delivery finished. The runner fails a job itself when a delivery
 * fails on the last allowed attempt, or when one arrives after it (the last one died in a crash
 * or a drain). If even that delivery dies, the server stops delivering and announces it: this
 * watcher fetches the message, dead-letters it, fails its job, and deletes it from the work
 * queue, where it would otherwise stay for good. One replica per stage acts on each advisory
 * (a queue group); acting twice is harmless (the dead letter is deduplicated, a finished record
 * is not overwritten, a deleted message is gone).
 */
export class MaxDeliveriesWatcher {
  readonly #o: MaxDeliveriesWatcherOptions;
  #sub: Subscription | undefined;
  readonly #pending = new Set<Promise<void>>();

  constructor(options: MaxDeliveriesWatcherOptions) {
    this.#o = options;
  }

  start(): void {
    this.#sub = this.#o.nc.subscribe(maxDeliveriesAdvisorySubject(this.#o.stage), {
      queue: `handoff-${this.#o.stage}-max-deliveries`,
      callback: (error, msg) => {
        if (error) return;
        let advisory: MaxDeliveriesAdvisory;
        try {
          advisory = msg.json<MaxDeliveriesAdvisory>();
        } catch {
          return;
        }
        if (!Number.isSafeInteger(advisory.stream_seq) || advisory.stream_seq <= 0) return;
        const work = this.settle(advisory.stream_seq, advisory.deliveries).catch((failure) =>
          this.#o.logger.error(
            { err: failure, stream_sequence: advisory.stream_seq },
            "could not settle a message that ran out of deliveries; it stays in the queue",
          ),
        );
        this.#pending.add(work);
        void work.finally(() => this.#pending.delete(work));
      },
    });
  }

  async stop(): Promise<void> {
    this.#sub?.unsubscribe();
    await Promise.allSettled([...this.#pending]);
  }

  /** Dead-letters, fails and deletes the job message at `seq`, if it is still there. */
  async settle(seq: number, deliveries: number): Promise<void> {
    const { stage, jsm, js, signer, outcomes, logger } = this.#o;
    const stored = await jsm.streams.getMessage(Streams.jobs, { seq }).catch(() => null);
    if (!stored) return;
    const payload = stored.string();
    const verdict = signer.verify(stored.subject, stored.data, stored.header);
    // As in the runner: a readable envelope fails its job unless its signature is missing or
    // wrong; an unreadable one only when the mesh signed it.
    const trusted = verdict === "authentic" || verdict === "unchecked";
    const decoded = decodeEnvelope(payload, `job envelope on ${stored.subject}`);
    const jobId = decoded.ok ? decoded.envelope.id : salvageJobId(payload);
    const error = new HandoffError(
      "HANDOFF_ERR_RETRIES_EXHAUSTED",
      `${stage} finished none of the ${deliveries} deliveries of ${jobId ? `job ${jobId}` : `message ${seq}`}: the last ones ended in a crash, a drain or a lost connection`,
    );
    await publishDeadLetter(js, {
      stage,
      msg: {
        subject: stored.subject,
        payload,
        stream: Streams.jobs,
        streamSequence: seq,
        deliveries,
      },
      reason: "max_deliveries",
      error,
      ...(jobId ? { jobId } : {}),
    });
    this.#o.onDeadLetter?.();
    if (trusted && decoded.ok) {
      const envelope = decoded.envelope;
      await outcomes.finished(
        {
          ...envelope,
          error: { code: error.code, message: error.message, retryable: false, stage },
        },
        undefined,
      );
    } else if (verdict === "authentic" && jobId) {
      await outcomes.unreadable(jobId, stage, error, undefined);
    }
    await jsm.streams.deleteMessage(Streams.jobs, seq, false).catch(() => false);
    logger.error({ job_id: jobId, stream_sequence: seq, deliveries }, error.message);
  }
}
