import { z } from "zod";
import { Stage } from "./envelope.js";

/** One schema issue, as recorded and returned: a dotted path and what is wrong there. */
export const Issue = z.object({
  path: z.string(),
  message: z.string(),
});
export type Issue = z.infer<typeof Issue>;

/**
 * A payload a stage could not process, recorded on `handoff.v1.dlq.<stage>`. Nothing is dropped:
 * the raw payload is kept so an operator can fix and republish it.
 */
export const DeadLetter = z.object({
  stage: Stage,
  subject: z.string(),
  reason: z.enum(["invalid_payload", "unauthentic", "max_deliveries", "failed"]),
  error: z.object({ code: z.string(), message: z.string() }),
  /** Present when the payload failed its schema. */
  issues: z.array(Issue).optional(),
  /** Set when a job id could be read from the payload, even an invalid one. */
  job_id: z.string().optional(),
  stream_sequence: z.number().int().nonnegative(),
  deliveries: z.number().int().nonnegative(),
  /** The payload exactly as received (UTF-8). */
  payload: z.string(),
  recorded_at: z.iso.datetime(),
});
export type DeadLetter = z.infer<typeof DeadLetter>;

/** Turns zod issues into `{ path, message }` pairs, the form every error response uses. */
export function toIssues(error: z.ZodError): Issue[] {
  return error.issues.map((issue) => ({
    path: formatPath(issue.path),
    message: issue.message,
  }));
}

/** `["messages", 0, "role"]` becomes `messages[0].role`; the root is `(root)`. */
export function formatPath(path: readonly PropertyKey[]): string {
  if (path.length === 0) return "(root)";
  let out = "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else out += out === "" ? String(key) : `.${String(key)}`;
  }
  return out;
}
