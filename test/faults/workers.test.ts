import { type NatsHandle, waitFor } from "@handoff/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Concurrency, type FaultMesh, startSingleNode, stopAll, Workers } from "./harness.js";
import { JOBS } from "./load.js";
import { accepted, guarantees, runScenario } from "./scenario.js";
import type { CountingUpstream } from "./upstream.js";

/**
 * a. SIGKILL each worker tier mid-flow (while it is inside a model call), and start a replacement.
 * Every job still ends with its answer; only the calls the dead process had under way are made
 * again (counted apart, as re-runs); nothing else is called twice.
 */

const LATENCY = { light: 150, mid: 120, heavy: 300 };

describe("a. a worker tier is SIGKILLed mid-flow and restarted", () => {
  let nats: NatsHandle, upstream: CountingUpstream, mesh: FaultMesh;
  beforeAll(async () => {
    ({ nats, upstream, mesh } = await startSingleNode(LATENCY));
  });
  afterAll(() => stopAll(mesh, upstream, nats));

  const batches = { classifier: "wkc", "tool-executor": "wkt", "heavy-reasoner": "wkh" } as const;

  it.each(Workers)("SIGKILL %s mid-call, then a replacement", async (stage) => {
    let inCall = 0;
    const outcome = await runScenario(mesh, upstream, [nats.url], {
      id: `a-sigkill-${stage}`,
      title: `SIGKILL the ${stage} while it is inside model calls, start a replacement`,
      batch: batches[stage],
      jobs: JOBS,
      affects: stage,
      fault: async ({ load }) => {
        await accepted(load, Math.floor(JOBS / 4));
        const [victim] = mesh.live(stage);
        if (!victim) throw new Error(`no ${stage} running`);
        // Mid-flow: wait until the victim is inside a model call.
        await waitFor(() => upstream.inFlight(victim) >= 1 || undefined, {
          timeoutMs: 20_000,
          intervalMs: 5,
          what: `${victim} to be inside a model call`,
        });
        inCall = upstream.inFlight(victim);
        const kill = await mesh.kill(victim);
        const replacement = await mesh.start(stage, { wait: false });
        const ready = await mesh.waitReady(replacement);
        return { kill, replacement_ready: ready };
      },
      extra: async () => ({ model_calls_in_flight_at_kill: inCall }),
    });
    const { verdict } = outcome;
    expect(inCall).toBeGreaterThanOrEqual(1);
    expect(guarantees(verdict)).toEqual([]);
    // Only what the dead process held can have run twice, and each such job says so.
    expect(verdict.reruns.length).toBeLessThanOrEqual(Concurrency[stage]);
    for (const rerun of verdict.reruns) {
      expect(rerun.deliveries, `${rerun.marker}: its record names the redelivery`).toBeGreaterThan(
        1,
      );
    }
  });
});
