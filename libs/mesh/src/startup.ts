import { HandoffError } from "@handoff/contracts";
import type { NatsConnection } from "@nats-io/nats-core";
import type { Logger } from "pino";

/**
 * Start-up that survives a missing dependency: a service starts its probes first, then retries
 * whatever needs NATS (the connection, the streams, the service registration) until it works,
 * and only then reports ready. A config error is never retried: it cannot heal by waiting.
 */

/** How long to wait between start-up attempts: exponential from `initialMs`, capped at `maxMs`. */
export interface StartupBackoff {
  /** The wait after the first failure (default 250 ms). */
  initialMs?: number;
  /** The longest wait (default 5 s). */
  maxMs?: number;
  /** Jitter source in [0, 1); default `Math.random`. */
  random?: () => number;
}

export const DEFAULT_STARTUP_BACKOFF = { initialMs: 250, maxMs: 5_000 } as const;

/**
 * The wait after failed attempt `attempt` (1 for the first): `initialMs * 2^(attempt-1)`, capped at
 * `maxMs`, then spread by ±25 % so replicas started together do not retry in step, and capped again.
 */
export function startupDelay(attempt: number, backoff: StartupBackoff = {}): number {
  const initial = backoff.initialMs ?? DEFAULT_STARTUP_BACKOFF.initialMs;
  const max = backoff.maxMs ?? DEFAULT_STARTUP_BACKOFF.maxMs;
  const random = backoff.random ?? Math.random;
  const exponent = Math.min(Math.max(attempt - 1, 0), 30);
  const base = Math.min(max, initial * 2 ** exponent);
  return Math.max(0, Math.min(max, Math.round(base * (0.75 + 0.5 * random()))));
}

/** Start-up was stopped by its abort signal (SIGTERM): not a failure, the process exits cleanly. */
export class StartupAborted extends Error {
  override readonly name = "StartupAborted";
  constructor(what?: string) {
    super(what ? `start-up stopped while trying to ${what}` : "start-up stopped");
  }
}

export function isStartupAborted(error: unknown): error is StartupAborted {
  return error instanceof StartupAborted;
}

/** A bad config (`HANDOFF_ERR_CONFIG`): the one start-up failure that is not retried. */
export function isConfigError(error: unknown): boolean {
  // By name and code too: a HandoffError from another copy of the contracts is still one.
  if (error instanceof HandoffError) return error.code === "HANDOFF_ERR_CONFIG";
  const { name, code } = (error ?? {}) as { name?: unknown; code?: unknown };
  return name === "HandoffError" && code === "HANDOFF_ERR_CONFIG";
}

/** Why an attempt failed, in one line: `CODE: message` for a Handoff error, the message (and its cause's) otherwise. */
export function failureReason(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  const prefix = error.name === "HandoffError" && typeof code === "string" ? `${code}: ` : "";
  const cause = error.cause instanceof Error ? error.cause.message : undefined;
  const message =
    cause && !error.message.includes(cause) ? `${error.message} (${cause})` : error.message;
  return `${prefix}${message}`.replace(/\s*\n\s*/g, " ").trim();
}

export interface RetryStartupOptions {
  /** What the step does, as the log line says it: "connect to NATS". */
  what: string;
  logger: Pick<Logger, "warn" | "info" | "isLevelEnabled">;
  /** Stops retrying (and waiting): the call then rejects with {@link StartupAborted}. */
  signal?: AbortSignal | undefined;
  backoff?: StartupBackoff | undefined;
}

/** Resolves after `ms`, or rejects with {@link StartupAborted} as soon as `signal` aborts. */
function pause(ms: number, what: string, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new StartupAborted(what));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(new StartupAborted(what));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** `promise`, or a {@link StartupAborted} rejection as soon as `signal` aborts, whichever is first. */
function unlessAborted<T>(
  promise: Promise<T>,
  what: string,
  signal: AbortSignal | undefined,
): Promise<T> {
  if (!signal) return promise;
  // The step may still settle after an abort; nobody waits for it then.
  promise.catch(() => {});
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new StartupAborted(what));
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}

/**
 * Runs `step` until it succeeds, waiting {@link startupDelay} between attempts, and logs each failed
 * attempt once, as one warning with the reason (no stack; `LOG_LEVEL=debug` adds the error). A
 * config error (`HANDOFF_ERR_CONFIG`) is thrown at once; an abort of `signal` rejects with
 * {@link StartupAborted}, without waiting for the attempt under way.
 */
export async function retryStartup<T>(
  step: (attempt: number) => Promise<T>,
  options: RetryStartupOptions,
): Promise<T> {
  const { what, logger, signal } = options;
  for (let attempt = 1; ; attempt++) {
    if (signal?.aborted) throw new StartupAborted(what);
    try {
      const value = await unlessAborted(
        Promise.resolve().then(() => step(attempt)),
        what,
        signal,
      );
      if (attempt > 1)
        logger.info({ attempts: attempt }, `${what}: done after ${attempt} attempts`);
      return value;
    } catch (error) {
      if (isStartupAborted(error) || signal?.aborted) throw new StartupAborted(what);
      if (isConfigError(error)) throw error;
      const delay = startupDelay(attempt, options.backoff);
      const reason = failureReason(error);
      logger.warn(
        {
          attempt,
          retry_in_ms: delay,
          reason,
          ...(logger.isLevelEnabled("debug") ? { err: error } : {}),
        },
        `could not ${what}: ${reason}; retrying in ${delay} ms`,
      );
      await pause(delay, what, signal);
    }
  }
}

/** An open NATS connection, or how to open one (once per call). */
export type NatsSource = NatsConnection | (() => Promise<NatsConnection>);

/**
 * The connection of `source`: itself when already open, else opened with {@link retryStartup}. A
 * connection that opens after the abort is closed rather than leaked.
 */
export async function connectWithRetry(
  source: NatsSource,
  options: Omit<RetryStartupOptions, "what"> & { what?: string },
): Promise<NatsConnection> {
  if (typeof source !== "function") return source;
  const what = options.what ?? "connect to NATS";
  return retryStartup(
    async () => {
      const nc = await source();
      if (options.signal?.aborted) {
        await nc.close().catch(() => {});
        throw new StartupAborted(what);
      }
      return nc;
    },
    { ...options, what },
  );
}
