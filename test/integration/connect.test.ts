import { connectNats, isTransientNatsError } from "@handoff/mesh";
import { type NatsHandle, startNats } from "@handoff/testkit";
import type { NatsConnection } from "@nats-io/nats-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

// The connection every service makes: requests skip the up-front stack traces (a cost on every
// KV read and publish), and a failed request still says what kind of failure it was.

let nats: NatsHandle;
let nc: NatsConnection;

beforeAll(async () => {
  nats = await startNats();
  nc = await connectNats({ name: "connect-test", env: { NATS_URL: nats.url } });
});
afterAll(async () => {
  await nc?.close();
  await nats?.stop();
});

describe("a service's NATS connection", () => {
  it("builds no error objects for requests that succeed", () => {
    const options = (nc as unknown as { options: { noAsyncTraces?: boolean } }).options;
    expect(options.noAsyncTraces).toBe(true);
  });

  it("still fails requests with errors the retry logic recognises as transient", async () => {
    const nobody = await nc.request("connect-test.nobody", "hi", { timeout: 1_000 }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(nobody).toBeInstanceOf(Error);
    expect((nobody as Error).message).toMatch(/no responders/i);
    expect(isTransientNatsError(nobody)).toBe(true);

    // A responder that never answers: the request times out.
    const silent = nc.subscribe("connect-test.silent");
    await nc.flush();
    const late = await nc.request("connect-test.silent", "hi", { timeout: 200 }).then(
      () => undefined,
      (error: unknown) => error,
    );
    silent.unsubscribe();
    expect((late as Error).name).toBe("TimeoutError");
    expect(isTransientNatsError(late)).toBe(true);
  });
});
