import { describe, expect, it } from "vitest";
import {
  classifySubject,
  envInt,
  envText,
  fixed,
  formatTable,
  percentile,
  ratio,
  runConcurrent,
  sig3,
  summarize,
  withTimeout,
  wrap,
} from "./lib.ts";

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

describe("percentile", () => {
  const hundred = Array.from({ length: 100 }, (_, i) => 100 - i); // 100..1, unsorted

  it("uses the nearest rank, always returning one of the values", () => {
    expect(percentile(hundred, 50)).toBe(50);
    expect(percentile(hundred, 99)).toBe(99);
    expect(percentile(hundred, 99.5)).toBe(100);
    expect(percentile(hundred, 100)).toBe(100);
    expect(percentile(hundred, 0)).toBe(1);
    expect(percentile([1, 2, 3, 4], 50)).toBe(2);
    expect(percentile([1, 2, 3, 4], 51)).toBe(3);
  });

  it("handles a single value and does not reorder its input", () => {
    expect(percentile([7], 1)).toBe(7);
    expect(percentile([7], 99)).toBe(7);
    const input = [3, 1, 2];
    expect(percentile(input, 100)).toBe(3);
    expect(input).toEqual([3, 1, 2]);
  });

  it("sorts numerically, not as strings", () => {
    expect(percentile([10, 9, 100, 2], 75)).toBe(10);
  });

  it("rejects an empty list and out-of-range percentiles", () => {
    expect(() => percentile([], 50)).toThrow(/empty/);
    expect(() => percentile([1], -1)).toThrow(/between 0 and 100/);
    expect(() => percentile([1], 101)).toThrow(/between 0 and 100/);
    expect(() => percentile([1], Number.NaN)).toThrow(/between 0 and 100/);
  });
});

describe("runConcurrent", () => {
  it("runs every operation once and never more than `concurrency` at a time", async () => {
    let inFlight = 0;
    let peak = 0;
    const seen: number[] = [];
    const result = await runConcurrent(25, 4, async (i) => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      seen.push(i);
      await sleep(1 + (i % 3));
      inFlight--;
    });
    expect(peak).toBe(4);
    expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: 25 }, (_, i) => i));
    expect(result.latenciesMs).toHaveLength(25);
    expect(result.latenciesMs.every((ms) => ms > 0)).toBe(true);
  });

  it("records each operation's latency with the given clock, by operation index", async () => {
    let now = 1_000;
    const clock = () => now;
    // Serial, so the fake clock advances deterministically: op i takes (i + 1) * 10 ms.
    const result = await runConcurrent(
      3,
      1,
      async (i) => {
        now += (i + 1) * 10;
      },
      clock,
    );
    expect(result.latenciesMs).toEqual([10, 20, 30]);
    expect(result.elapsedMs).toBe(60);
  });

  it("does not start more workers than operations, and accepts zero operations", async () => {
    let calls = 0;
    await runConcurrent(2, 16, async () => {
      calls++;
    });
    expect(calls).toBe(2);
    const empty = await runConcurrent(0, 4, async () => {
      throw new Error("never called");
    });
    expect(empty.latenciesMs).toEqual([]);
  });

  it("stops starting operations after a failure and rethrows it naming the operation", async () => {
    const started: number[] = [];
    let settled = 0;
    const run = runConcurrent(100, 3, async (i) => {
      started.push(i);
      await sleep(2);
      settled++;
      if (i === 4) throw new Error("boom");
    });
    await expect(run).rejects.toThrow("operation 4 of 100 failed: boom");
    // Only the operations already in flight when #4 failed were started.
    expect(started.length).toBeLessThan(10);
    // And they were all allowed to settle before the error surfaced.
    expect(settled).toBe(started.length);
  });

  it("keeps the original error as the cause, including non-Error throws", async () => {
    const error = await runConcurrent(1, 1, () => Promise.reject("plain string")).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toBe("operation 0 of 1 failed: plain string");
    expect((error as Error).cause).toBe("plain string");
  });

  it("rejects nonsense arguments", async () => {
    const op = async () => {};
    await expect(runConcurrent(-1, 1, op)).rejects.toThrow(/n must be/);
    await expect(runConcurrent(1.5, 1, op)).rejects.toThrow(/n must be/);
    await expect(runConcurrent(1, 0, op)).rejects.toThrow(/concurrency must be/);
  });
});

describe("summarize", () => {
  it("derives throughput and latency percentiles from a run", () => {
    const latenciesMs = Array.from({ length: 100 }, (_, i) => i + 1);
    const summary = summarize({ latenciesMs, elapsedMs: 500 });
    expect(summary).toEqual({
      ops: 100,
      elapsedMs: 500,
      opsPerSec: 200,
      p50Ms: 50,
      p99Ms: 99,
      meanMs: 50.5,
      maxMs: 100,
    });
  });

  it("refuses an empty run", () => {
    expect(() => summarize({ latenciesMs: [], elapsedMs: 0 })).toThrow(/zero operations/);
  });
});

describe("ratio and number formatting", () => {
  it("divides, with NaN instead of a division by zero", () => {
    expect(ratio(1, 4)).toBe(0.25);
    expect(ratio(1, 0)).toBeNaN();
    expect(ratio(Number.POSITIVE_INFINITY, 2)).toBeNaN();
  });

  it("prints n/a for what is not a number", () => {
    expect(fixed(1.005, 1)).toBe("1.0");
    expect(fixed(Number.NaN, 2)).toBe("n/a");
    expect(sig3(Number.POSITIVE_INFINITY)).toBe("n/a");
  });

  it("keeps about three significant digits", () => {
    expect(sig3(12345.6)).toBe("12346");
    expect(sig3(123.45)).toBe("123");
    expect(sig3(12.345)).toBe("12.3");
    expect(sig3(1.2345)).toBe("1.23");
    expect(sig3(0.12345)).toBe("0.123");
    expect(sig3(0.0012345)).toBe("0.00123");
    expect(sig3(0)).toBe("0");
  });
});

describe("formatTable", () => {
  it("pads cells into a Markdown table, right-aligning the numeric columns", () => {
    const table = formatTable(
      ["what", "ops/s"],
      [
        ["core", "12000"],
        ["mesh", "300"],
      ],
      ["left", "right"],
    );
    expect(table.split("\n")).toEqual([
      "| what | ops/s |",
      "|------|------:|",
      "| core | 12000 |",
      "| mesh |   300 |",
    ]);
  });

  it("rejects rows of the wrong width", () => {
    expect(() => formatTable(["a", "b"], [["1"]])).toThrow(/row 0 has 1 cells/);
  });
});

describe("envText", () => {
  it("is the trimmed text, or undefined when unset or blank", () => {
    expect(envText({ X: " --max-semi-space-size=16 " }, "X")).toBe("--max-semi-space-size=16");
    expect(envText({ X: "   " }, "X")).toBeUndefined();
    expect(envText({}, "X")).toBeUndefined();
  });
});

describe("envInt", () => {
  it("falls back when unset or blank and parses positive integers", () => {
    expect(envInt({}, "BENCH_N", 2000)).toBe(2000);
    expect(envInt({ BENCH_N: " " }, "BENCH_N", 2000)).toBe(2000);
    expect(envInt({ BENCH_N: "500" }, "BENCH_N", 2000)).toBe(500);
    expect(envInt({ BENCH_WARMUP: "0" }, "BENCH_WARMUP", 200, 0)).toBe(0);
  });

  it("names the variable when the value is unusable", () => {
    expect(() => envInt({ BENCH_N: "0" }, "BENCH_N", 1)).toThrow(
      'BENCH_N must be an integer >= 1, got "0"',
    );
    expect(() => envInt({ BENCH_N: "1e3" }, "BENCH_N", 1)).toThrow(/BENCH_N/);
    expect(() => envInt({ BENCH_N: "-4" }, "BENCH_N", 1)).toThrow(/BENCH_N/);
    expect(() => envInt({ BENCH_N: "2.5" }, "BENCH_N", 1)).toThrow(/BENCH_N/);
  });
});

describe("withTimeout", () => {
  it("passes the value through when it comes in time", async () => {
    await expect(withTimeout(Promise.resolve(42), 1_000, "answer")).resolves.toBe(42);
  });

  it("rejects naming what did not come", async () => {
    const never = new Promise<never>(() => {});
    await expect(withTimeout(never, 5, "message 7")).rejects.toThrow(
      "message 7: no answer within 5 ms",
    );
  });

  it("passes an earlier rejection through", async () => {
    await expect(withTimeout(Promise.reject(new Error("nope")), 1_000, "x")).rejects.toThrow(
      "nope",
    );
  });
});

describe("classifySubject", () => {
  it("tells a JetStream publish from its delivery by the $JS.ACK reply subject", () => {
    expect(classifySubject("handoff.v1.jobs.classifier", "_INBOX.abc.1")).toBe(
      "JetStream publish (classifier)",
    );
    expect(
      classifySubject("handoff.v1.jobs.tool-executor", "$JS.ACK.HANDOFF_JOBS.tool-executor.1.2.3"),
    ).toBe("JetStream delivery (tool-executor)");
    expect(classifySubject("bench.js.work", "_INBOX.x")).toBe("JetStream publish (bench)");
    expect(classifySubject("bench.js.work", "$JS.ACK.BENCH_JS.bench.1.1.1")).toBe(
      "JetStream delivery (bench)",
    );
  });

  it("names the JetStream API calls and KV operations the mesh makes", () => {
    expect(classifySubject("$JS.API.CONSUMER.MSG.NEXT.HANDOFF_JOBS.classifier")).toBe(
      "pull request (CONSUMER.MSG.NEXT)",
    );
    expect(classifySubject("$JS.API.DIRECT.GET.KV_handoff-jobs.$KV.handoff-jobs.id")).toBe(
      "KV read (stream get)",
    );
    expect(classifySubject("$JS.API.STREAM.MSG.GET.KV_handoff-jobs")).toBe("KV read (stream get)");
    expect(classifySubject("$JS.API.STREAM.INFO.HANDOFF_JOBS")).toBe("other JetStream API");
    expect(classifySubject("$KV.handoff-jobs.123", "_INBOX.y")).toBe("KV write ($KV)");
    expect(classifySubject("$JS.ACK.HANDOFF_JOBS.classifier.1.5.5.1.0")).toBe("ack ($JS.ACK)");
  });

  it("names replies, results, core requests and the rest", () => {
    expect(classifySubject("_INBOX.abc.def")).toMatch(/^reply/);
    expect(classifySubject("handoff.v1.results.job-1")).toBe("result (core publish)");
    expect(classifySubject("bench.rr", "_INBOX.q")).toBe("request (core)");
    expect(classifySubject("handoff.v1.svc.gateway.status")).toBe("other (handoff.v1)");
  });
});

describe("wrap", () => {
  it("fills lines up to the width and collapses whitespace", () => {
    expect(wrap("one two  three\nfour five", 9)).toBe("one two\nthree\nfour five");
  });

  it("prefixes the first and the following lines, within the width", () => {
    expect(wrap("alpha beta gamma delta", 14, "- ", "  ")).toBe("- alpha beta\n  gamma delta");
    expect(wrap("alpha beta gamma", 12, "> ")).toBe("> alpha beta\n> gamma");
  });

  it("puts an overlong word on its own line instead of splitting it", () => {
    expect(wrap("a supercalifragilistic b", 8)).toBe("a\nsupercalifragilistic\nb");
  });

  it("returns the prefix alone for empty text", () => {
    expect(wrap("   ", 10, "- ")).toBe("-");
  });
});
