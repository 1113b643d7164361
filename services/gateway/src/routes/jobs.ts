import type { HandoffConfig } from "@handoff/config";
import {
  ChatCompletionRequest,
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
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import { mayReadJob } from "../auth.js";
import {
  claimIdempotencyKey,
  type IdempotencyEntry,
  type IdempotencyStore,
  REPLAYED_HEADER,
  REPLAYED_HEADER_DOC,
} from "../idempotency.js";
import {
  docs,
  eventStream,
  jsonResponse,
  parsedByHandler,
  writtenByHandler,
} from "../route-schema.js";
import { openSse } from "../sse.js";
import { parseSubmission, SubmissionHeaders } from "../submission.js";
import { inRequestSpan } from "../tracing.js";

export interface JobRouteDeps {
  jobs: JobClient;
  config: HandoffConfig;
  /** API keys are configured: a key reads only its own jobs (or all, with the `admin` scope). */
  auth: boolean;
  /** Where `Idempotency-Key`s are claimed; by default the bucket next to `jobs`' records. */
  idempotency?: IdempotencyStore;
}

const dateTime = () => z.string().register(docs, { format: "date-time" });

/** `POST /v1/jobs`'s 202 body. */
const JobAccepted = z
  .object({
    id: z.string(),
    object: z.literal("handoff.job"),
    status: z.literal("queued"),
    created_at: dateTime(),
    deadline: dateTime(),
    trace_id: z.string().optional(),
    links: z.object({ self: z.string(), events: z.string() }),
  })
  .register(docs, { id: "JobAccepted", description: "A job taken for asynchronous processing." });

/** A JSON Schema document, as `GET /v1/schemas/:name` answers it. */
const JsonSchema = z
  .record(z.string(), z.unknown())
  .register(docs, { id: "JsonSchema", description: "A JSON Schema (draft 2020-12) document." });

/** The path of a job's routes; its id is checked by the handlers ({@link jobId}). */
const JobParams = z.object({ id: JobId });

/** `POST /v1/jobs`'s 202 body: the same for the first request and every replay of its key. */
function accepted(
  job: Pick<IdempotencyEntry, "job_id" | "created_at" | "deadline" | "trace_id">,
): z.output<typeof JobAccepted> {
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

  app.post(
    "/v1/jobs",
    {
      schema: {
        operationId: "createJob",
        summary: "Submit a chat completion as an asynchronous job",
        description:
          "Answers at once with the job's id; follow `GET /v1/jobs/{id}` or its events. `stream` must be false or absent. With an `Idempotency-Key` an earlier identical request holds, no job is submitted: the answer is the first request's 202, with `Idempotent-Replayed: true`.",
        tags: ["jobs"],
        headers: SubmissionHeaders,
        body: ChatCompletionRequest,
        response: {
          202: jsonResponse("The job is queued.", JobAccepted, {
            location: { type: "string", description: "The job's URL." },
            [REPLAYED_HEADER.toLowerCase()]: REPLAYED_HEADER_DOC,
          }),
        },
        errors: [
          "BadRequest",
          "ModelNotFound",
          "BodyTooLarge",
          "UnsupportedMediaType",
          "IdempotencyMismatch",
        ],
      },
      // The body is read as on the chat route; the 202 is serialized with its schema.
      ...parsedByHandler,
    },
    (request, reply) =>
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
            : await claimIdempotencyKey(request, deps, "POST /v1/jobs", idempotencyKey, job);
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

  app.get<{ Params: { id: string } }>(
    "/v1/jobs/:id",
    {
      schema: {
        operationId: "getJob",
        summary: "Get a job's record",
        description: "The stored record: status, stages visited, usage, cost, result or error.",
        tags: ["jobs"],
        params: JobParams,
        response: { 200: jsonResponse("The job's record.", JobRecord) },
        errors: ["BadRequest", "NotFound"],
      },
      ...parsedByHandler,
      ...writtenByHandler,
    },
    (request) => inRequestSpan(request, () => readableJob(deps, request, jobId(request.params.id))),
  );

  app.get<{ Params: { id: string } }>(
    "/v1/jobs/:id/events",
    {
      schema: {
        operationId: "streamJobEvents",
        summary: "Follow a job's record as server-sent events",
        description:
          "The current record, then every change, each as an event named by the job's status, until the job ends.",
        tags: ["jobs"],
        params: JobParams,
        response: {
          200: {
            description: "The record's changes.",
            content: eventStream(
              "`event: <status>` and `data: <JobRecord JSON>` events.",
              JobRecord,
            ),
          },
        },
        errors: ["BadRequest", "NotFound"],
      },
      ...parsedByHandler,
      ...writtenByHandler,
    },
    (request, reply) =>
      inRequestSpan(request, async () => {
        const id = jobId(request.params.id);
        await readableJob(deps, request, id);
        const sse = openSse(reply);
        // The watch delivers the current record first, then every change.
        const watch = await jobs.store.kv.watch({ key: id });
        // A client that left while the watch was being opened is gone already: its abort fired
        // before anyone listened, and the watch would follow the job for nobody until it ended.
        if (sse.signal.aborted) watch.stop();
        else sse.signal.addEventListener("abort", () => watch.stop(), { once: true });
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

  app.withTypeProvider<ZodTypeProvider>().get(
    "/v1/schemas/:name",
    {
      schema: {
        operationId: "getWireSchema",
        summary: "Get the JSON Schema of a wire message",
        tags: ["schemas"],
        params: z.object({
          name: z.string().register(docs, {
            description: "A wire message's name, optionally with `.json` or `.schema.json`.",
            examples: Object.keys(WireSchemas),
          }),
        }),
        response: { 200: jsonResponse("The JSON Schema.", JsonSchema) },
        errors: ["NotFound"],
      },
      ...writtenByHandler,
    },
    async (request) => {
      const name = request.params.name.replace(/\.(schema\.)?json$/, "");
      if (!Object.hasOwn(WireSchemas, name)) {
        throw new HandoffError(
          "HANDOFF_ERR_NOT_FOUND",
          `no schema named ${name}; known: ${Object.keys(WireSchemas).join(", ")}`,
        );
      }
      return jsonSchemaOf(name as WireSchemaName);
    },
  );
}
