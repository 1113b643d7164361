import { z } from "zod";
import { ToolDefinition } from "./chat.js";
import { JobError, JobId, JobInput, JobOwner, JobResult, Route, Stage, Usage } from "./envelope.js";

/**
 * The job record kept in the `handoff-jobs` KV bucket, keyed by job id: what `GET /v1/jobs/:id`
 * returns. It holds the route, spend and outcome of a job, not its prompt: prompts stay out of
 * storage unless a deployment opts in.
 */
export const JobStatus = z.enum(["queued", "running", "succeeded", "failed"]);
export type JobStatus = z.infer<typeof JobStatus>;

export const JobRecord = z.object({
  id: JobId,
  status: JobStatus,
  /** The stage the job is waiting for (queued/running) or finished at. */
  stage: Stage.optional(),
  created_at: z.iso.datetime(),
  updated_at: z.iso.datetime(),
  /**
   * The API key name that submitted the job. With API keys configured, only that key (or an
   * `admin` one) reads the record; a write never changes or drops it.
   */
  owner: JobOwner.optional(),
  trace_id: z.string().optional(),
  route: Route.optional(),
  /** Stages visited so far, in order. */
  hops: z.array(Stage),
  /**
   * Stages whose visit took more than one delivery (a crash, a drain or a retry on the way), with
   * the delivery that finished it. A stage that died mid-call may have called its model again.
   */
  deliveries: z.partialRecord(Stage, z.number().int().positive()).optional(),
  usage: z.array(Usage),
  cost_usd: z.number().nonnegative(),
  /** The same spend, summed per stage. */
  cost_by_stage: z.partialRecord(Stage, z.number().nonnegative()).default({}),
  /** The job's budget, when it had one. */
  max_cost_usd: z.number().optional(),
  result: JobResult.optional(),
  error: JobError.optional(),
  /**
   * The request as the job received it, kept only when the deployment opts in
   * (`routing.record_inputs`), for `handoff jobs export` and routing replay.
   */
  input: JobInput.pick({ model: true, messages: true })
    .extend({ tools: z.array(ToolDefinition).default([]) })
    .optional(),
});
export type JobRecord = z.infer<typeof JobRecord>;

export function isTerminal(status: JobStatus): boolean {
  return status === "succeeded" || status === "failed";
}
