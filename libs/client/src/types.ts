import type {
  ChatCompletion,
  ChatCompletionRequest,
  JobError,
  JobEvent,
  JobFailedEvent,
  JobSubmission,
} from "@handoff/contracts";

/** What a job asks: the body of `POST /v1/jobs` (an OpenAI chat-completions request). */
export type JobRequest = Omit<JobSubmission, "tenant" | "idempotency_key" | "reply_to" | "job_id"> &
  Pick<ChatCompletionRequest, "model" | "messages">;

export interface SubmitOptions {
  /**
   * The same key within the idempotency window gets the first request's job, never a second run.
   */
  idempotencyKey?: string;
  /** NATS only: the job's id (8-64 letters, digits, '_' or '-'); a new one when absent. */
  jobId?: string;
}

export interface SubmittedJob {
  id: string;
  /** The idempotency key named an earlier job: `id` is that job's. */
  replayed?: boolean;
  /** NATS: no gateway confirmed the request yet; it waits in the request stream. */
  pending?: boolean;
}

/** How a job ended: its answer as the chat API gives it, or its error. */
export type JobOutcome =
  | { id: string; status: "succeeded"; completion: ChatCompletion }
  | { id: string; status: "failed"; error: JobFailedEvent["error"] };

/** The outcome a terminal event stands for; undefined for `queued` and `running`. */
export function outcomeOf(event: JobEvent): JobOutcome | undefined {
  if (event.type === "succeeded") {
    return { id: event.job_id, status: "succeeded", completion: event.completion };
  }
  if (event.type === "failed") return { id: event.job_id, status: "failed", error: event.error };
  return undefined;
}

export interface WaitOptions {
  /** Give up waiting after this long (the job goes on): a {@link HandoffClientError} `timeout`. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface HandoffClient {
  /** Submits a job; resolves once the mesh (NATS: the request stream; HTTP: the gateway) has it. */
  submit(request: JobRequest, options?: SubmitOptions): Promise<SubmittedJob>;
  /** Waits for the job to end. */
  result(id: string, options?: WaitOptions): Promise<JobOutcome>;
  /** The job's events, from the first, until it ends. */
  events(id: string, options?: WaitOptions): AsyncIterable<JobEvent>;
  close(): Promise<void>;
}

/** A request the mesh refused, a transport failure, or a wait that timed out. */
export class HandoffClientError extends Error {
  override readonly name = "HandoffClientError";
  constructor(
    message: string,
    readonly code: string,
    readonly status?: number,
    readonly issues?: Array<{ path: string; message: string }>,
  ) {
    super(message);
  }
}

export type { JobError };
