import { createHash, randomUUID } from "node:crypto";
import type { HandoffConfig } from "@handoff/config";
import {
  HandoffError,
  type JobEnvelope,
  type JobEvent,
  JobId,
  JobOwner,
  JobSubmission,
  NO_TENANT,
  Streams,
} from "@handoff/contracts";
import {
  extractContext,
  INTAKE_CONSUMER,
  isTransientNatsError,
  type JobClient,
  type MeshSigner,
  publishJobEvent,
  tracer,
} from "@handoff/mesh";
import {
  type ConsumerMessages,
  type JetStreamClient,
  type JsMsg,
  jetstream,
} from "@nats-io/jetstream";
import { context, SpanKind, SpanStatusCode } from "@opentelemetry/api";
import type { Logger } from "pino";
import { type IdempotencyStore, idempotencyStoreFor, requestHash } from "./idempotency.js";
import { jobFor } from "./submission.js";

/**
 * The NATS door: job requests a backend publishes on `handoff.v1.requests.<tenant>` (stream
 * `HANDOFF_REQUESTS`) are taken in here with the same validation, deadline, budget and
 * idempotency rules as `POST /v1/jobs`. Every request ends in an event on the job's subject of
 * `HANDOFF_EVENTS` (and on its `reply_to`, when it names one): `queued`, or `failed` with the zod
 * issue paths. A request is acked only once its job is queued or its refusal published.
 */

export interface IntakeOptions {
  jobs: JobClient;
  config: HandoffConfig;
  logger: Logger;
  signer: MeshSigner;
  /** Where idempotency keys are claimed; the gateway's bucket by default. */
  idempotency?: IdempotencyStore;
}

/** The route idempotency keys are hashed under: one key space with `POST /v1/jobs`. */
const ROUTE = "POST /v1/jobs";
/** Fields of a NATS request that are not part of the `POST /v1/jobs` body. */
const DOOR_FIELDS = ["tenant", "idempotency_key", "reply_to", "job_id"] as const;

/** The job id of a request without `job_id`: the same for every re-send of the same message. */
export function jobIdFor(tenant: string, messageId: string | undefined): string {
  if (!messageId) return randomUUID();
  return `nats-${createHash("sha256").update(`${tenant}\u0000${messageId}`).digest("base64url").slice(0, 32)}`;
}

/** A request that cannot be taken in: answered with a `failed` event, never retried. */
class Refused extends Error {
  constructor(
    readonly error: HandoffError,
    readonly jobId: string,
    readonly tenant: string | undefined,
    readonly replyTo: string | undefined,
  ) {
    super(error.message);
  }
}

export class JobIntake {
  readonly #o: IntakeOptions;
  readonly #js: JetStreamClient;
  #messages: ConsumerMessages | undefined;
  #loop: Promise<void> | undefined;
  #stopping = false;
  readonly stats = { taken_in: 0, refused: 0, replayed: 0, duplicates: 0 };

  constructor(options: IntakeOptions) {
    this.#o = options;
    this.#js = jetstream(options.jobs.nc);
  }

  async start(): Promise<void> {
    const consumer = await this.#js.consumers.get(Streams.requests, INTAKE_CONSUMER);
    this.#messages = await consumer.consume({ max_messages: 64 });
    this.#loop = this.#run(this.#messages);
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    this.#messages?.stop();
    await this.#loop;
  }

  async #run(messages: ConsumerMessages): Promise<void> {
    const inFlight = new Set<Promise<void>>();
    for await (const msg of messages) {
      if (this.#stopping) {
        msg.nak();
        continue;
      }
      const work = this.#process(msg).finally(() => inFlight.delete(work));
      inFlight.add(work);
      // Bounded: as many requests at once as one pull batch.
      if (inFlight.size >= 64) await Promise.race(inFlight);
    }
    await Promise.allSettled(inFlight);
  }

  async #process(msg: JsMsg): Promise<void> {
    const parent = extractContext(msg.headers);
    await context.with(parent, () =>
      tracer.startActiveSpan(
        `process ${msg.subject}`,
        {
          kind: SpanKind.CONSUMER,
          attributes: {
            "messaging.system": "nats",
            "messaging.operation.type": "process",
            "messaging.destination.name": msg.subject,
            "messaging.consumer.group.name": INTAKE_CONSUMER,
            "messaging.message.id": msg.headers?.get("Nats-Msg-Id") ?? "",
          },
        },
        async (span) => {
          try {
            const jobId = await this.#takeIn(msg);
            if (jobId) span.setAttribute("handoff.job.id", jobId);
            msg.ack();
          } catch (error) {
            if (error instanceof Refused) {
              span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
              await this.#refuse(msg, error);
              return;
            }
            span.recordException(error as Error);
            span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error).message });
            this.#o.logger.warn(
              { err: error, subject: msg.subject },
              "job request not taken in; it will be redelivered",
            );
            msg.nak(Math.min(30_000, 500 * 2 ** Math.min(msg.info.deliveryCount, 6)));
          } finally {
            span.end();
          }
        },
      ),
    );
  }

  /** Takes a request in; returns its job id. Throws {@link Refused} for a request to refuse. */
  async #takeIn(msg: JsMsg): Promise<string> {
    const messageId = msg.headers?.get("Nats-Msg-Id") || undefined;
    const token = msg.subject.split(".").slice(3).join(".");
    const tenantOk = token === NO_TENANT || JobOwner.safeParse(token).success;
    const tenant = tenantOk && token !== NO_TENANT ? token : undefined;
    let raw: unknown;
    try {
      raw = msg.json();
    } catch (error) {
      throw new Refused(
        new HandoffError("HANDOFF_ERR_VALIDATION", "the job request is not JSON", {
          issues: [{ path: "(root)", message: `not JSON: ${(error as Error).message}` }],
        }),
        jobIdFor(token, messageId),
        tenant,
        undefined,
      );
    }
    const replyTo = replyToOf(raw);
    const parsed = JobSubmission.safeParse(raw);
    // A refused request still names its job as the publisher chose it, when it chose a valid id.
    const chosen = JobId.safeParse((raw as { job_id?: unknown } | null)?.job_id);
    const jobId = (chosen.success ? chosen.data : undefined) ?? jobIdFor(token, messageId);
    if (!tenantOk) {
      throw new Refused(
        new HandoffError(
          "HANDOFF_ERR_VALIDATION",
          `the subject ${msg.subject} names no valid tenant: publish on handoff.v1.requests.<tenant> (an API key name, or ${NO_TENANT})`,
          { issues: [{ path: "subject", message: "not a tenant name" }] },
        ),
        jobId,
        undefined,
        replyTo,
      );
    }
    if (!parsed.success) {
      throw new Refused(
        HandoffError.validation("job request", parsed.error),
        jobId,
        tenant,
        replyTo,
      );
    }
    const request = parsed.data;
    if (request.tenant !== undefined && request.tenant !== tenant) {
      throw new Refused(
        new HandoffError(
          "HANDOFF_ERR_VALIDATION",
          `tenant "${request.tenant}" does not match the subject's tenant "${token}"`,
          { issues: [{ path: "tenant", message: `published on ${msg.subject}` }] },
        ),
        jobId,
        tenant,
        replyTo,
      );
    }

    const body = Object.fromEntries(
      Object.entries(request).filter(([key]) => !(DOOR_FIELDS as readonly string[]).includes(key)),
    ) as typeof request;
    const config = this.#o.config;
    const timeoutMs = request.handoff?.timeout_ms ?? config.limits.request_timeout_ms;
    const maxCostUsd = request.max_cost_usd ?? request.handoff?.max_cost_usd;
    let envelope: JobEnvelope;
    try {
      envelope = jobFor(body, config, {
        id: jobId,
        timeoutMs,
        ...(tenant !== undefined ? { owner: tenant } : {}),
        ...(maxCostUsd !== undefined ? { maxCostUsd } : {}),
      });
    } catch (error) {
      // An unknown model name: refused as over HTTP.
      throw new Refused(HandoffError.from(error), jobId, tenant, replyTo);
    }
    const queued: JobEvent = {
      type: "queued",
      job_id: jobId,
      at: envelope.created_at,
      deadline: envelope.budget.deadline,
      ...(tenant !== undefined ? { tenant } : {}),
      ...(messageId ? { request_id: messageId } : {}),
    };

    const claim =
      request.idempotency_key === undefined
        ? undefined
        : await (this.#o.idempotency ?? (await idempotencyStoreFor(this.#o.jobs, config))).acquire({
            tenant: tenant ?? "",
            key: request.idempotency_key,
            bodyHash: requestHash(ROUTE, body),
            job: {
              job_id: jobId,
              created_at: envelope.created_at,
              deadline: envelope.budget.deadline,
            },
          });
    if (claim?.kind === "replay") {
      this.stats.replayed++;
      const existing = claim.entry.job_id;
      this.#reply(replyTo, {
        ...queued,
        job_id: existing,
        at: claim.entry.created_at,
        deadline: claim.entry.deadline,
        replayed: true,
      });
      this.#o.logger.info({ job_id: existing }, "job request replayed for its idempotency key");
      return existing;
    }

    const duplicate = () => {
      // A re-send of a request already taken in (past the stream's dedupe window): its events stand.
      this.stats.duplicates++;
      this.#reply(replyTo, queued);
      return jobId;
    };
    if (await this.#o.jobs.store.get(jobId)) return duplicate();
    // The event first: a backend watching the job's subject sees it queued before anything runs.
    await publishJobEvent(this.#js, queued, this.#o.signer);
    try {
      if (!(await this.#o.jobs.submitNew(envelope, undefined, { queuedEvent: false })))
        return duplicate();
    } catch (error) {
      await claim?.releaseUnlessStarted();
      if (isTransientNatsError(error) || (error instanceof HandoffError && error.retryable)) {
        throw error;
      }
      throw new Refused(HandoffError.from(error), jobId, tenant, replyTo);
    }
    this.stats.taken_in++;
    this.#reply(replyTo, queued);
    this.#o.logger.info({ job_id: jobId, tenant }, "job request taken in");
    return jobId;
  }

  async #refuse(msg: JsMsg, refused: Refused): Promise<void> {
    const { error } = refused;
    const event: JobEvent = {
      type: "failed",
      job_id: refused.jobId,
      at: new Date().toISOString(),
      ...(refused.tenant !== undefined ? { tenant: refused.tenant } : {}),
      ...(msg.headers?.get("Nats-Msg-Id") ? { request_id: msg.headers.get("Nats-Msg-Id") } : {}),
      error: {
        code: error.code,
        message: error.message,
        retryable: false,
        ...(error.issues ? { issues: error.issues } : {}),
        ...(error.totalIssues !== undefined ? { total_issues: error.totalIssues } : {}),
      },
    };
    try {
      await publishJobEvent(this.#js, event, this.#o.signer);
    } catch (publishError) {
      // Not told, not dropped: the request comes back and is refused again.
      this.#o.logger.warn(
        { err: publishError },
        "refusal not published; the request will come back",
      );
      msg.nak(1_000);
      return;
    }
    this.#reply(refused.replyTo, event);
    this.stats.refused++;
    this.#o.logger.info(
      { job_id: refused.jobId, code: error.code, issues: error.issues },
      `job request refused: ${error.message}`,
    );
    msg.term();
  }

  /** The request's `reply_to` gets the event too (core NATS: whoever listens now). */
  #reply(replyTo: string | undefined, event: JobEvent): void {
    if (!replyTo) return;
    try {
      this.#o.jobs.nc.publish(replyTo, JSON.stringify(event));
    } catch (error) {
      this.#o.logger.warn({ err: error, reply_to: replyTo }, "reply_to not answered");
    }
  }
}

/** `reply_to` of a request that may not validate, if it holds a usable subject. */
function replyToOf(raw: unknown): string | undefined {
  if (typeof raw !== "object" || raw === null) return undefined;
  const replyTo = JobSubmission.shape.reply_to.safeParse((raw as { reply_to?: unknown }).reply_to);
  return replyTo.success ? replyTo.data : undefined;
}
