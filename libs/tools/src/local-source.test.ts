import { queryObjects } from "node:v8";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { builtinTools } from "./index.js";
import { LocalToolSource } from "./local-source.js";
import { defineTool } from "./tool.js";

/** Live timers (Node's `Timeout` objects), counted from a fresh macrotask after a full GC. */
async function liveTimers(): Promise<number> {
  // An object a WeakRef was made to stays alive until the macrotask that made it ends.
  await new Promise((resolve) => setImmediate(resolve));
  const probe = setTimeout(() => {}, 0);
  clearTimeout(probe);
  return queryObjects(probe.constructor, { format: "count" });
}

describe("LocalToolSource", () => {
  it("answers a call and keeps no timer of it once it ended", async () => {
    const source = new LocalToolSource(builtinTools);
    const job = new AbortController();
    const ctx = () => ({ signal: job.signal, deadline: Date.now() + 60_000 });
    for (let i = 0; i < 5; i++) await source.call("calculator", { expression: "1 + 1" }, ctx());
    const before = await liveTimers();
    for (let i = 0; i < 200; i++) {
      expect(await source.call("calculator", { expression: `${i} + 1` }, ctx())).toEqual({
        output: String(i + 1),
      });
    }
    // `AbortSignal.timeout` kept each call's timer, with the context it was made in, until the
    // call's deadline, a minute after the call ended.
    expect((await liveTimers()) - before).toBeLessThan(20);
  });

  it("still ends a call that runs past its deadline, as a timeout", async () => {
    const hang = defineTool({
      name: "hang",
      description: "Answers when aborted, never before.",
      input: z.object({}),
      handler: (_input, ctx) =>
        new Promise<string>((_, reject) => {
          ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true });
        }),
    });
    const source = new LocalToolSource([hang]);
    const outcome = await source.call(
      "hang",
      {},
      { signal: new AbortController().signal, deadline: Date.now() + 50 },
    );
    expect(outcome.error?.type).toBe("timeout");
  });
});
