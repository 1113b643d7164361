import type { HandoffConfig } from "@handoff/config";
import {
  HandoffError,
  isTerminal,
  JobId,
  JobRecord,
  jsonSchemaOf,
  type WireSchemaName,
  WireSchemas,
} from "@handoff/contracts";
import { activeTraceId, type JobClient } from "@handoff/mesh";
import { trace } from "@opentelemetry/api";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { mayReadJob } from "../auth.js";
import {
  type IdempotencyEntry,
  type IdempotencyStore,
  idempotencyStoreFor,
  REPLAYED_HEADER,
  requestHash,
} from "../idempotency.js";
import { openSse } from "../sse.js";
import { parseSubmission } from "../submission.js";
import { inRequestSpan } from "../tracing.js";

export interface JobRouteDeps {
  jobs: JobClient;
  config: HandoffConfig;
  /** API keys are configured: a key reads only its own jobs (or all, with the `admin` scope). */
  auth: boolean;
  /** Where `Idempotency-Key`s are claimed; by default the bucket next to `jobs`' records. */
  idempotency?: IdempotencyStore;
}

/** `POST /v1/jobs`'s 202 body: the same for the first request and every replay of its key. */
function accepted(job: Pick<IdempotencyEntry, "job_id" | "created_at" | "deadline" | "trace_id">) {
  const id = job.job_id;
  return {
    id,
    object: "handoff.job",
    status: "queued",
    created_at: job.created_at,
    deadline: job.deadline,
    ...(job.trace_id ? { trace_id: job.trace_id } : {}),
    links: { self: `/v1/jobs/${id}`, events: `/v1/jobs/${id}/events` },
  };
}

function jobId(raw: string): string {
  const id = JobId.safeParse(raw);
  if (!id.success) throw HandoffError.validation("job id", id.error);
  return id.data;
}

/**
 * The record of job `id` if the caller may read it. A job another key owns is answered exactly as
 * an id that does not exist (same status, code and message, after the same single read), so a key
 * learns nothing about other keys' jobs.
 */
async function readableJob(
  deps: JobRouteDeps,
  request: FastifyRequest,
  id: string,
): Promise<JobRecord> {
  const record = await deps.jobs.store.get(id);
  if (!record || !mayReadJob(request, record.owner, deps.auth)) {
    throw new HandoffError("HANDOFF_ERR_NOT_FOUND", `no job with id ${id}`);
  }
  return record;
}

/**
 * The async jobs API: `POST /v1/jobs` takes a chat-completions request and answers 202 with the
 * job's id at once; `GET /v1/jobs/:id` is the stored record; `GET /v1/jobs/:id/events` streams the
 * record's changes as server-sent events until the job ends. Also `GET /v1/schemas/:name`.
 */
export function registerJobs(app: FastifyInstance, deps: JobRouteDeps): void {
  const { jobs } = deps;

  app.post("/v1/jobs", (request, reply) =>
    inRequestSpan(request, async () => {
      const { envelope, body, idempotencyKey } = parseSubmission(request, deps.config);
      if (body.stream) {
        throw new HandoffError(
          "HANDOFF_ERR_UNSUPPORTED",
          "a job is not streamed; follow GET /v1/jobs/{id}/events",
          {
            issues: [{ path: "stream", message: "must be false or absent for /v1/jobs" }],
          },
        );
      }
      const traceId = activeTraceId();
      const job = {
        job_id: envelope.id,
        created_at: envelope.created_at,
        deadline: envelope.budget.deadline,
        ...(traceId ? { trace_id: traceId } : {}),
      };
      const span = trace.getActiveSpan();
      const claim =
        idempotencyKey === undefined
          ? undefined
          : await (deps.idempotency ?? (await idempotencyStoreFor(jobs, deps.config))).acquire({
              tenant: request.apiKeyName ?? "",
              key: idempotencyKey,
              bodyHash: requestHash("POST /v1/jobs", request.body),
              job,
            });
      if (claim?.kind === "replay") {
        // The key's job, answered as the first request was answered.
        span?.setAttributes({
          "handoff.job.id": claim.entry.job_id,
          "handoff.idempotent_replay": true,
        });
        request.log.info({ job_id: claim.entry.job_id }, "job replayed for its idempotency key");
        return reply
          .status(202)
          .header("location", `/v1/jobs/${claim.entry.job_id}`)
          .header(REPLAYED_HEADER, "true")
          .send(accepted(claim.entry));
      }
      span?.setAttribute("handoff.job.id", envelope.id);
      try {
        await jobs.submit(envelope, traceId);
      } catch (error) {
        // Not queued: the key must not name a job that never runs.
        await claim?.releaseUnlessStarted();
        throw error;
      }
      request.log.info({ job_id: envelope.id }, "job accepted");
      return reply.status(202).header("location", `/v1/jobs/${envelope.id}`).send(accepted(job));
    }),
  );

  app.get<{ Params: { id: string } }>("/v1/jobs/:id", (request) =>
    inRequestSpan(request, () => readableJob(deps, request, jobId(request.params.id))),
  );

  app.get<{ Params: { id: string } }>("/v1/jobs/:id/events", (request, reply) =>
    inRequestSpan(request, async () => {
      const id = jobId(request.params.id);
      await readableJob(deps, request, id);
      const sse = openSse(reply);
      // The watch delivers the current record first, then every change.
      const watch = await jobs.store.kv.watch({ key: id });
      sse.signal.addEventListener("abort", () => watch.stop(), { once: true });
      try {
        for await (const entry of watch) {
          if (entry.operation !== "PUT") continue;
          const record = JobRecord.safeParse(entry.json());
          if (!record.success) continue;
          sse.send(record.data, record.data.status);
          if (isTerminal(record.data.status)) break;
        }
      } finally {
        watch.stop();
        sse.end();
      }
    }),
  );

  app.get<{ Params: { name: string } }>("/v1/schemas/:name", async (request) => {
    const name = request.params.name.replace(/\.(schema\.)?json$/, "");
    if (!Object.hasOwn(WireSchemas, name)) {
      throw new HandoffError(
        "HANDOFF_ERR_NOT_FOUND",
        `no schema named ${name}; known: ${Object.keys(WireSchemas).join(", ")}`,
      );
    }
    return jsonSchemaOf(name as WireSchemaName);
  });
}
