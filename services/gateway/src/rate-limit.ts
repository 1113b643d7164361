/**
 * Request-rate limiting as token buckets, one per API key, and failed-authentication throttling
 * per client address. Pure: time comes from an injected clock, so the arithmetic is tested without
 * timers. Both live in one gateway process: N replicas behind a load balancer allow up to N times
 * the configured rate.
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

/** How many failures an address may make, in what window, and how many addresses are tracked. */
export interface FailureLimit {
  /** Failures within one window that lock the address out until the window ends. */
  max: number;
  /** Starts at an address's first failure. */
  windowMs: number;
  /** Addresses tracked at once; past it the oldest window is forgotten first. */
  maxAddresses: number;
}

interface FailureWindow {
  failures: number;
  /** When the window ends, on the throttle's clock. */
  endsAt: number;
}

/**
 * Counts failures (failed authentications) per client address in fixed windows: an address that
 * failed `max` times within `windowMs` of its first failure is blocked until that window ends.
 * Memory is bounded: a window that ended is dropped, and at `maxAddresses` the oldest window
 * makes room for a new one, so a flood of addresses costs at most `maxAddresses` entries (and
 * can at worst make the throttle forget the oldest of them early).
 */
export class FailureThrottle {
  // Insertion order is window order: every window lasts `windowMs` and starts at the clock's
  // (never decreasing) now, so the first entry is always the one that ends first.
  private readonly windows = new Map<string, FailureWindow>();
  private last = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly limit: FailureLimit,
    private readonly clock: Clock = monotonicClock,
  ) {
    for (const [name, value] of Object.entries(limit)) {
      if (!Number.isInteger(value) || value <= 0) {
        throw new RangeError(`failure limit ${name} must be a positive integer, got ${value}`);
      }
    }
  }

  /** Addresses tracked now. */
  get size(): number {
    return this.windows.size;
  }

  /** How long `address` stays blocked, in ms; 0 when it may try. */
  blockedFor(address: string): number {
    const now = this.now();
    const window = this.windows.get(address);
    if (!window) return 0;
    if (window.endsAt <= now) {
      this.windows.delete(address);
      return 0;
    }
    return window.failures >= this.limit.max ? window.endsAt - now : 0;
  }

  /** Counts one failure of `address`. True when it reached the limit: the address is now blocked. */
  fail(address: string): boolean {
    const now = this.now();
    this.expire(now);
    const window = this.windows.get(address);
    if (window) {
      window.failures++;
      return window.failures === this.limit.max;
    }
    if (this.windows.size >= this.limit.maxAddresses) {
      const oldest = this.windows.keys().next();
      if (!oldest.done) this.windows.delete(oldest.value);
    }
    this.windows.set(address, { failures: 1, endsAt: now + this.limit.windowMs });
    return this.limit.max === 1;
  }

  /** Drops the windows that ended, oldest first, stopping at the first still running. */
  private expire(now: number): void {
    for (const [address, window] of this.windows) {
      if (window.endsAt > now) break;
      this.windows.delete(address);
    }
  }

  /** The clock, held to never go back, so window order stays insertion order. */
  private now(): number {
    this.last = Math.max(this.last, this.clock());
    return this.last;
  }
}
