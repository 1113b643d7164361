import {
  completionFromRecord,
  ErrorBody,
  eventFromRecord,
  type JobEvent,
  JobRecord,
} from "@handoff/contracts";
import {
  type HandoffClient,
  HandoffClientError,
  type JobOutcome,
  type JobRequest,
  outcomeOf,
  type SubmitOptions,
  type SubmittedJob,
  type WaitOptions,
} from "./types.js";

export interface HttpClientOptions {
  /** The gateway, e.g. `http://127.0.0.1:8080`. */
  url: string;
  /** An API key, when the gateway has them (`Authorization: Bearer`). */
  apiKey?: string;
}

/**
 * The HTTP door: `POST /v1/jobs` to submit, `GET /v1/jobs/:id/events` (server-sent events of the
 * job's record) to follow, the records turned into the same events the NATS door publishes.
 */
export function httpClient(options: HttpClientOptions): HandoffClient {
  const base = options.url.replace(/\/+$/, "");
  const headers = (extra: Record<string, string> = {}) => ({
    ...(options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {}),
    ...extra,
  });

  async function* events(id: string, wait: WaitOptions = {}): AsyncGenerator<JobEvent> {
    const abort = new AbortController();
    const timer =
      wait.timeoutMs === undefined ? undefined : setTimeout(() => abort.abort(), wait.timeoutMs);
    const stop = () => abort.abort();
    wait.signal?.addEventListener("abort", stop, { once: true });
    // Aborted before the wait began: it ends now, not when the job does.
    if (wait.signal?.aborted) stop();
    let ended = false;
    try {
      const res = await fetch(`${base}/v1/jobs/${encodeURIComponent(id)}/events`, {
        headers: headers({ accept: "text/event-stream" }),
        signal: abort.signal,
      });
      if (!res.ok || !res.body) throw await refusal(res);
      let buffer = "";
      const decoder = new TextDecoder();
      for await (const chunk of res.body) {
        buffer += decoder.decode(chunk as Uint8Array, { stream: true });
        for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = frame
            .split("\n")
            .filter((line) => line.startsWith("data: "))
            .map((line) => line.slice(6))
            .join("\n");
          if (!data) continue;
          const record = JobRecord.safeParse(JSON.parse(data));
          if (!record.success) continue;
          const event = eventFromRecord(record.data, completionOf);
          if (!event) continue;
          yield event;
          if (event.type === "succeeded" || event.type === "failed") {
            ended = true;
            return;
          }
        }
      }
    } catch (error) {
      if (error instanceof HandoffClientError) throw error;
      if (!abort.signal.aborted) {
        throw new HandoffClientError(
          `the gateway could not be read: ${(error as Error).message}`,
          "unavailable",
        );
      }
    } finally {
      clearTimeout(timer);
      wait.signal?.removeEventListener("abort", stop);
      abort.abort();
    }
    if (!ended && !wait.signal?.aborted) {
      throw new HandoffClientError(
        `job ${id} did not end within ${wait.timeoutMs} ms (it may still)`,
        "timeout",
      );
    }
  }

  return {
    async submit(request: JobRequest, submit: SubmitOptions = {}): Promise<SubmittedJob> {
      if (submit.jobId !== undefined) {
        throw new HandoffClientError(
          "over HTTP the gateway chooses the job id; jobId is for the NATS client",
          "unsupported",
        );
      }
      let res: Response;
      try {
        res = await fetch(`${base}/v1/jobs`, {
          method: "POST",
          headers: headers({
            "content-type": "application/json",
            ...(submit.idempotencyKey !== undefined
              ? { "idempotency-key": submit.idempotencyKey }
              : {}),
          }),
          body: JSON.stringify(request),
        });
      } catch (error) {
        throw new HandoffClientError(
          `the gateway could not be reached: ${(error as Error).message}`,
          "unavailable",
        );
      }
      if (res.status !== 202) throw await refusal(res);
      const body = (await res.json()) as { id: string };
      return {
        id: body.id,
        ...(res.headers.get("idempotent-replayed") === "true" ? { replayed: true } : {}),
      };
    },
    async result(id: string, wait: WaitOptions = {}): Promise<JobOutcome> {
      for await (const event of events(id, wait)) {
        const outcome = outcomeOf(event);
        if (outcome) return outcome;
      }
      throw new HandoffClientError(`stopped waiting for job ${id}`, "aborted");
    },
    events,
    async close() {},
  };
}

/** A succeeded job's answer, as `POST /v1/chat/completions` gives it. */
function completionOf(record: JobRecord) {
  return completionFromRecord(record, record.trace_id ?? "");
}

/** The gateway's error answer as a {@link HandoffClientError}. */
async function refusal(res: Response): Promise<HandoffClientError> {
  const text = await res.text().catch(() => "");
  let parsed: ErrorBody | undefined;
  try {
    parsed = ErrorBody.parse(JSON.parse(text));
  } catch {
    parsed = undefined;
  }
  const error = parsed?.error;
  return new HandoffClientError(
    error?.message ?? `the gateway answered ${res.status}: ${text.slice(0, 200)}`,
    error?.code ?? `http_${res.status}`,
    res.status,
    error?.issues,
  );
}
