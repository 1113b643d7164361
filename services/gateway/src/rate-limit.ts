/**
 * Request-rate limiting as token buckets, one per API key. Pure: time comes from an injected clock,
 * so the arithmetic is tested without timers. The buckets live in one gateway process: N replicas
 * behind a load balancer allow up to N times the configured rate.
 */

/** Milliseconds from some fixed origin; only differences are used. */
export type Clock = () => number;

/** The default clock: monotonic, so a wall-clock step (NTP, DST) neither refills nor drains. */
export const monotonicClock: Clock = () => performance.now();

const MINUTE_MS = 60_000;

/** What one request costs against a bucket, and what the response headers report. */
export interface TakeResult {
  /** The request may go on (a token was taken). */
  allowed: boolean;
  /** The bucket's capacity: requests per minute. */
  limit: number;
  /** Whole requests left right now, after this one. */
  remaining: number;
  /** Until the bucket is full again, in ms (OpenAI's `x-ratelimit-reset-requests`). */
  resetMs: number;
  /** When refused: until one request's token is back, in ms. 0 when allowed. */
  retryAfterMs: number;
}

/**
 * A token bucket of `requestsPerMinute` tokens, full at first, refilled continuously at
 * `requestsPerMinute` per minute. A request takes one token or is refused. Continuous refill (not
 * a fixed window) means a client that spent its burst gets one request back every
 * `60 / requestsPerMinute` seconds, and no window edge lets it send two bursts back to back.
 */
export class TokenBucket {
  readonly limit: number;
  // Tokens are counted in units of 1/60 000 of a request, so one ms of refill adds exactly `limit`
  // units: with a whole-millisecond clock the arithmetic stays in integers, free of rounding drift.
  private readonly capacity: number;
  private units: number;
  private last: number;

  constructor(
    requestsPerMinute: number,
    private readonly clock: Clock = monotonicClock,
  ) {
    if (!Number.isInteger(requestsPerMinute) || requestsPerMinute <= 0) {
      throw new RangeError(
        `requests per minute must be a positive integer, got ${requestsPerMinute}`,
      );
    }
    this.limit = requestsPerMinute;
    this.capacity = requestsPerMinute * MINUTE_MS;
    this.units = this.capacity;
    this.last = clock();
  }

  /** Takes one token if there is one; either way reports the bucket's state for the headers. */
  take(): TakeResult {
    this.refill();
    const allowed = this.units >= MINUTE_MS;
    if (allowed) this.units -= MINUTE_MS;
    return {
      allowed,
      limit: this.limit,
      remaining: Math.floor(this.units / MINUTE_MS),
      resetMs: Math.ceil((this.capacity - this.units) / this.limit),
      retryAfterMs: allowed ? 0 : Math.ceil((MINUTE_MS - this.units) / this.limit),
    };
  }

  private refill(): void {
    const now = this.clock();
    // A clock that went backwards (a test's, or a broken one) adds nothing rather than draining.
    const elapsed = Math.max(0, now - this.last);
    this.last = Math.max(this.last, now);
    this.units = Math.min(this.capacity, this.units + elapsed * this.limit);
  }
}

/**
 * OpenAI's duration format for `x-ratelimit-reset-*` headers (`850ms`, `1s`, `2.5s`, `6m0s`,
 * `1h2m3s`), rounded up to the millisecond so a client that waits that long is never early.
 */
export function formatResetDuration(ms: number): string {
  const total = Math.max(0, Math.ceil(ms));
  if (total < 1_000) return `${total}ms`;
  const hours = Math.floor(total / 3_600_000);
  const minutes = Math.floor((total % 3_600_000) / 60_000);
  const seconds = (total % 60_000) / 1_000;
  // At most three decimals (whole milliseconds), without trailing zeros.
  const secondsText = `${Number(seconds.toFixed(3))}s`;
  if (hours > 0) return `${hours}h${minutes}m${secondsText}`;
  if (minutes > 0) return `${minutes}m${secondsText}`;
  return secondsText;
}
