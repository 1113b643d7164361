import type { JobStore } from "@handoff/mesh";
import { describe, expect, it } from "vitest";
import { waitForJob } from "./idempotency.js";

/** A job store whose watch yields nothing until stopped, opened after a moment. */
function quietStore() {
  let stop = () => {};
  const stopped = new Promise<void>((resolve) => {
    stop = resolve;
  });
  const watch = {
    stops: 0,
    stop() {
      watch.stops++;
      stop();
    },
    // biome-ignore lint/correctness/useYield: the watch ends without a change, once stopped.
    async *[Symbol.asyncIterator]() {
      await stopped;
    },
  };
  const store = {
    kv: {
      watch: async () => {
        await new Promise((resolve) => setTimeout(resolve, 20));
        return watch;
      },
    },
  } as unknown as JobStore;
  return { store, watch };
}

describe("waitForJob", () => {
  it("stops at once when the caller left while the watch was being opened", async () => {
    const { store, watch } = quietStore();
    const gone = new AbortController();
    const waiting = waitForJob(store, "job-replayed-0001", 60_000, gone.signal);
    // The client hangs up before the watch is there: its abort fires with no one listening.
    gone.abort();
    const started = Date.now();
    expect(await waiting).toBeUndefined();
    // Not held until the request's timeout (a minute here) for nobody.
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(watch.stops).toBeGreaterThan(0);
  });

  it("gives up after its timeout when the job does not end", async () => {
    const { store } = quietStore();
    expect(await waitForJob(store, "job-replayed-0002", 50)).toBeUndefined();
  });
});
