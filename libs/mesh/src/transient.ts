/**
 * NATS trouble that heals by waiting: the server is restarting, the connection is being
 * re-established, or a clustered stream is electing a leader. Work that is already paid for (a
 * stage's output, a submitted job) is kept and written again instead of being thrown away.
 */

/** Error names of nats.js (core and JetStream) that mean "not now", not "never". */
const TRANSIENT_NAMES = new Set([
  "TimeoutError",
  "NoResponders",
  "NoRespondersError",
  "ConnectionError",
  // No responder on a JetStream API subject: the stream's leader is being elected, or the server
  // is restarting. A server without JetStream at all fails at start-up, long before this.
  "JetStreamNotEnabled",
]);

/** True when `error`, or any error in its `cause` chain, is transient NATS trouble. */
export function isTransientNatsError(error: unknown): boolean {
  const seen = new Set<unknown>();
  let current: unknown = error;
  while (current instanceof Error && !seen.has(current)) {
    seen.add(current);
    if (TRANSIENT_NAMES.has(current.name)) return true;
    if (current.name === "RequestError" && /timeout|no responders/i.test(current.message)) {
      return true;
    }
    // 503: "JetStream system temporarily unavailable" (no quorum, an election under way).
    if (current.name === "JetStreamApiError" && (current as { status?: unknown }).status === 503) {
      return true;
    }
    current = current.cause;
  }
  return false;
}

export interface PersistRetry {
  /** Give up after this long and let the caller's error path run. */
  limitMs: number;
  /** Stops waiting at once (a shutdown): the last error is thrown. */
  signal?: AbortSignal | undefined;
  /**
   * Resolves when trying again at once is worth it (the connection is back): cuts a wait short,
   * so a held write lands before anyone else acts on its absence.
   */
  wake?: () => Promise<void>;
  /** Called before each wait, with the error and the wait. */
  onRetry?: (error: unknown, delayMs: number, attempt: number) => void;
  /** First wait (default 100 ms), doubled up to `maxDelayMs` (default 2 s). */
  initialDelayMs?: number;
  maxDelayMs?: number;
}

/**
 * Runs `write` until it succeeds, retrying only transient NATS errors, with capped exponential
 * backoff, for at most `limitMs`. `write` must be safe to repeat (a put of the same value, a
 * publish with the same `Nats-Msg-Id`, a compare-and-set that re-reads).
 */
export async function retryTransient<T>(
  write: () => Promise<T>,
  options: PersistRetry,
): Promise<T> {
  const giveUpAt = Date.now() + options.limitMs;
  const initial = options.initialDelayMs ?? 100;
  const max = options.maxDelayMs ?? 2_000;
  for (let attempt = 1; ; attempt++) {
    try {
      return await write();
    } catch (error) {
      const delay = Math.min(max, initial * 2 ** Math.min(attempt - 1, 20));
      if (
        !isTransientNatsError(error) ||
        options.signal?.aborted ||
        Date.now() + delay > giveUpAt
      ) {
        throw error;
      }
      options.onRetry?.(error, delay, attempt);
      await pause(delay, options.signal, options.wake?.());
    }
  }
}

function pause(
  ms: number,
  signal: AbortSignal | undefined,
  woken: Promise<void> | undefined,
): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
    void woken?.then(done);
  });
}
