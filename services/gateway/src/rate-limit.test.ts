import { describe, expect, it } from "vitest";
import { formatResetDuration, TokenBucket } from "./rate-limit.js";

/** A clock the test moves by hand. */
function manualClock(start = 1_000) {
  let now = start;
  return {
    clock: () => now,
    advance: (ms: number) => {
      now += ms;
    },
    set: (ms: number) => {
      now = ms;
    },
  };
}

describe("TokenBucket", () => {
  it("starts full, allows a burst of its capacity, then refuses", () => {
    const time = manualClock();
    const bucket = new TokenBucket(3, time.clock);
    expect([bucket.take(), bucket.take(), bucket.take()].map((r) => r.remaining)).toEqual([
      2, 1, 0,
    ]);
    const refused = bucket.take();
    expect(refused).toEqual({
      allowed: false,
      limit: 3,
      remaining: 0,
      resetMs: 60_000,
      retryAfterMs: 20_000,
    });
  });

  it("refills continuously: one request every 60/limit seconds", () => {
    const time = manualClock();
    const bucket = new TokenBucket(3, time.clock);
    for (let i = 0; i < 3; i++) bucket.take();
    time.advance(19_999);
    expect(bucket.take()).toMatchObject({ allowed: false, retryAfterMs: 1 });
    time.advance(1);
    expect(bucket.take()).toMatchObject({ allowed: true, remaining: 0, resetMs: 60_000 });
    expect(bucket.take().allowed).toBe(false);
    // Half a token's worth of time: still refused, and the wait left is the other half.
    time.advance(10_000);
    expect(bucket.take()).toMatchObject({ allowed: false, retryAfterMs: 10_000, resetMs: 50_000 });
  });

  it("never holds more than its capacity, however long it idles", () => {
    const time = manualClock();
    const bucket = new TokenBucket(2, time.clock);
    bucket.take();
    time.advance(24 * 3_600_000);
    expect(bucket.take()).toMatchObject({ allowed: true, remaining: 1, resetMs: 30_000 });
    expect(bucket.take()).toMatchObject({ allowed: true, remaining: 0 });
    expect(bucket.take().allowed).toBe(false);
  });

  it("reports how long until it is full again", () => {
    const time = manualClock();
    const bucket = new TokenBucket(60, time.clock);
    expect(bucket.take()).toMatchObject({ remaining: 59, resetMs: 1_000 });
    expect(bucket.take()).toMatchObject({ remaining: 58, resetMs: 2_000 });
    time.advance(500);
    expect(bucket.take()).toMatchObject({ remaining: 57, resetMs: 2_500 });
  });

  it("neither refills nor drains when the clock goes backwards", () => {
    const time = manualClock(50_000);
    const bucket = new TokenBucket(1, time.clock);
    expect(bucket.take().allowed).toBe(true);
    time.set(0);
    expect(bucket.take()).toMatchObject({ allowed: false, retryAfterMs: 60_000 });
    // Time lost going backwards is not credited when the clock catches up.
    time.set(50_000 + 59_999);
    expect(bucket.take().allowed).toBe(false);
    time.set(50_000 + 60_000);
    expect(bucket.take().allowed).toBe(true);
  });

  it("keeps exact counts over many refills (integer arithmetic)", () => {
    const time = manualClock();
    const bucket = new TokenBucket(7, time.clock);
    let allowed = 0;
    // An hour, one attempt every 100 ms: 7 up front, then exactly 7 per minute.
    for (let t = 0; t < 36_000; t++) {
      if (bucket.take().allowed) allowed++;
      time.advance(100);
    }
    expect(allowed).toBe(7 + 7 * 60 - 1);
  });

  it("rejects a limit that is not a positive integer", () => {
    expect(() => new TokenBucket(0)).toThrow(RangeError);
    expect(() => new TokenBucket(-1)).toThrow(RangeError);
    expect(() => new TokenBucket(1.5)).toThrow(RangeError);
    expect(() => new TokenBucket(Number.NaN)).toThrow(RangeError);
  });
});

describe("formatResetDuration", () => {
  it.each([
    [0, "0ms"],
    [0.2, "1ms"],
    [850, "850ms"],
    [1_000, "1s"],
    [2_500, "2.5s"],
    [17_001, "17.001s"],
    [60_000, "1m0s"],
    [360_000, "6m0s"],
    [90_500, "1m30.5s"],
    [3_723_000, "1h2m3s"],
    [-5, "0ms"],
  ])("%s ms is %s", (ms, text) => {
    expect(formatResetDuration(ms)).toBe(text);
  });
});
