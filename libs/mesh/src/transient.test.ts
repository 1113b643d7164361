import { HandoffError } from "@handoff/contracts";
import { JetStreamApiError } from "@nats-io/jetstream";
import {
  NoRespondersError,
  PermissionViolationError,
  RequestError,
  TimeoutError,
} from "@nats-io/nats-core";
import { describe, expect, it } from "vitest";
import { isTransientNatsError, retryTransient } from "./transient.js";

/** nats.js does not export it; it throws it when a JetStream API subject has no responder. */
function jetStreamNotEnabled(): Error {
  const error = new Error("jetstream is not enabled");
  error.name = "JetStreamNotEnabled";
  return error;
}

describe("isTransientNatsError", () => {
  it.each([
    ["a timeout", new TimeoutError()],
    ["no responders", new RequestError("no responders", { cause: new NoRespondersError("x.y") })],
    ["JetStream without a responder (an election)", jetStreamNotEnabled()],
    [
      "JetStream temporarily unavailable (503)",
      new JetStreamApiError({
        code: 503,
        err_code: 10008,
        description: "JetStream system temporarily unavailable",
      }),
    ],
    [
      "a Handoff error caused by a timeout",
      HandoffError.retryable("HANDOFF_ERR_UNAVAILABLE", "the job store is unavailable", {
        cause: new TimeoutError(),
      }),
    ],
  ])("heals by waiting: %s", (_what, error) => {
    expect(isTransientNatsError(error)).toBe(true);
  });

  it.each([
    ["a permission violation", new PermissionViolationError("nope", "publish", "a.b")],
    [
      "a wrong last sequence (400)",
      new JetStreamApiError({ code: 400, err_code: 10071, description: "wrong last sequence: 4" }),
    ],
    ["a plain error", new Error("timeout in the model")],
    ["a non-error", "timeout"],
    ["a Handoff error of its own", new HandoffError("HANDOFF_ERR_INTERNAL", "broken")],
  ])("does not: %s", (_what, error) => {
    expect(isTransientNatsError(error)).toBe(false);
  });

  it("stops at a cycle in the cause chain", () => {
    const a = new Error("a");
    const b = new Error("b", { cause: a });
    (a as { cause?: unknown }).cause = b;
    expect(isTransientNatsError(a)).toBe(false);
  });
});

describe("retryTransient", () => {
  it("retries transient failures until the write lands", async () => {
    let calls = 0;
    const retries: number[] = [];
    const value = await retryTransient(
      async () => {
        calls++;
        if (calls < 3) throw new TimeoutError();
        return "landed";
      },
      { limitMs: 5_000, initialDelayMs: 1, onRetry: (_e, delay) => retries.push(delay) },
    );
    expect(value).toBe("landed");
    expect(calls).toBe(3);
    expect(retries).toEqual([1, 2]);
  });

  it("throws at once what waiting cannot heal", async () => {
    let calls = 0;
    const broken = new HandoffError("HANDOFF_ERR_INTERNAL", "broken");
    await expect(
      retryTransient(
        async () => {
          calls++;
          throw broken;
        },
        { limitMs: 5_000, initialDelayMs: 1 },
      ),
    ).rejects.toBe(broken);
    expect(calls).toBe(1);
  });

  it("gives up with the last error once its time is used", async () => {
    let calls = 0;
    const started = Date.now();
    await expect(
      retryTransient(
        async () => {
          calls++;
          throw new TimeoutError();
        },
        { limitMs: 60, initialDelayMs: 10, maxDelayMs: 10 },
      ),
    ).rejects.toBeInstanceOf(TimeoutError);
    expect(calls).toBeGreaterThan(1);
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it("tries again at once when woken (the connection is back)", async () => {
    let calls = 0;
    let wakeUp = () => {};
    const started = Date.now();
    const value = await retryTransient(
      async () => {
        calls++;
        if (calls === 1) {
          setTimeout(() => wakeUp(), 20);
          throw new TimeoutError();
        }
        return "landed";
      },
      {
        limitMs: 60_000,
        initialDelayMs: 30_000,
        wake: () =>
          new Promise<void>((resolve) => {
            wakeUp = resolve;
          }),
      },
    );
    expect(value).toBe("landed");
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("stops waiting when its signal aborts", async () => {
    const abort = new AbortController();
    let calls = 0;
    const outcome = retryTransient(
      async () => {
        calls++;
        if (calls === 1) setTimeout(() => abort.abort(), 20);
        throw new TimeoutError();
      },
      { limitMs: 60_000, initialDelayMs: 10_000, signal: abort.signal },
    );
    await expect(outcome).rejects.toBeInstanceOf(TimeoutError);
    expect(calls).toBe(2);
  });
});
