import { HandoffError, type Issue, JobEnvelope } from "@handoff/contracts";

export type Decoded =
  | { ok: true; envelope: JobEnvelope }
  | { ok: false; error: HandoffError; issues: Issue[] };

/** Parses and validates a job envelope; failures say which paths are wrong and never throw. */
export function decodeEnvelope(payload: string, what = "job envelope"): Decoded {
  let raw: unknown;
  try {
    raw = JSON.parse(payload);
  } catch (error) {
    const issues = [{ path: "(root)", message: `not JSON: ${(error as Error).message}` }];
    return {
      ok: false,
      issues,
      error: new HandoffError("HANDOFF_ERR_INVALID_MESSAGE", `${what} is not JSON`, { issues }),
    };
  }
  const parsed = JobEnvelope.safeParse(raw);
  if (parsed.success) return { ok: true, envelope: parsed.data };
  const error = HandoffError.validation(what, parsed.error, "HANDOFF_ERR_INVALID_MESSAGE");
  // The error's issues: the first 20, bounded, for the log line and the dead letter alike.
  return { ok: false, issues: error.issues ?? [], error };
}

export function encodeEnvelope(envelope: JobEnvelope): string {
  return JSON.stringify(envelope);
}
