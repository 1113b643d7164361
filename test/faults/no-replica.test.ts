import { ErrorBody, JobRecord, type Stage } from "@handoff/contracts";
import type { NatsHandle } from "@handoff/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FaultMesh, startSingleNode, stopAll, Workers } from "./harness.js";
import { JOBS, makeJobs, type Route, requestBody } from "./load.js";
import { accepted, guarantees, runScenario } from "./scenario.js";
import type { CountingUpstream, Tier } from "./upstream.js";

/**
 * f. No replica of a stage: a synchronous request that needs it gets 503 or 504 within its
 * deadline (and is never run later); asynchronous jobs that need it wait in the queue, the others
 * finish; once a replica starts, every waiting job completes, once.
 */

const LATENCY = { light: 50, mid: 50, heavy: 150 };
const SYNC_TIMEOUT_MS = 3_000;
/** How late past its deadline the gateway may answer on a busy 2-core box. */
const SLACK_MS = 1_500;

const routeThrough: Record<Stage, { route: Route; tier: Tier }> = {
  classifier: { route: "light", tier: "light" },
  "tool-executor": { route: "tools", tier: "mid" },
  "heavy-reasoner": { route: "heavy", tier: "heavy" },
};

describe("f. no replica of a stage", () => {
  let nats: NatsHandle, upstream: CountingUpstream, mesh: FaultMesh;
  beforeAll(async () => {
    ({ nats, upstream, mesh } = await startSingleNode(LATENCY));
  });
  afterAll(() => stopAll(mesh, upstream, nats));

  const batches = { classifier: "nrc", "tool-executor": "nrt", "heavy-reasoner": "nrh" } as const;

  it.each(Workers)(
    "without a %s: sync 503/504 in time, async jobs complete once it starts",
    async (stage) => {
      for (const label of mesh.live(stage)) await mesh.terminate(label);
      expect(mesh.live(stage)).toEqual([]);

      // A synchronous request that needs the missing stage.
      const { route, tier } = routeThrough[stage];
      const sync = makeJobs(`${batches[stage]}sync`, 10).find((s) => s.route === route);
      if (!sync) throw new Error(`no ${route} job in the mix`);
      const asked = Date.now();
      const res = await fetch(`${mesh.gatewayUrl}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(requestBody(sync, { handoff: { timeout_ms: SYNC_TIMEOUT_MS } })),
      });
      const syncElapsed = Date.now() - asked;
      const syncBody = ErrorBody.safeParse(await res.json());
      const syncJob = syncBody.success ? syncBody.data.error.job_id : undefined;
      const syncRecord = syncJob
        ? JobRecord.parse(await (await fetch(`${mesh.gatewayUrl}/v1/jobs/${syncJob}`)).json())
        : undefined;

      let waitingWhileAbsent = -1;
      let finishedWhileAbsent = -1;
      const { verdict, load } = await runScenario(mesh, upstream, [nats.url], {
        id: `f-no-replica-${stage}`,
        title: `no ${stage} running: a sync request, then async jobs; a replica starts after`,
        batch: batches[stage],
        jobs: JOBS,
        affects: stage,
        fault: async ({ load }) => {
          await accepted(load, JOBS, 120_000);
          // Jobs that do not need the stage finish; those that do wait.
          const others = await load.settleSome((j) => !j.spec.hops.includes(stage), 120_000);
          if (others.length > 0)
            throw new Error(`${others.length} jobs that skip ${stage} did not finish`);
          await new Promise((resolve) => setTimeout(resolve, 1_000));
          const needing = [...load.jobs.values()].filter((j) => j.spec.hops.includes(stage));
          waitingWhileAbsent = needing.filter((j) => !j.record).length;
          finishedWhileAbsent = needing.length - waitingWhileAbsent;
          const started = Date.now();
          const label = await mesh.start(stage, { wait: false });
          const ready = await mesh.waitReady(label);
          return { replica_started: started, replica_ready: ready };
        },
        extra: async () => ({
          sync_request: {
            status: res.status,
            elapsed_ms: syncElapsed,
            timeout_ms: SYNC_TIMEOUT_MS,
            code: syncBody.success ? syncBody.data.error.code : undefined,
            job_status: syncRecord?.status,
            job_error: syncRecord?.error?.code,
            model_calls_after: upstream.callsFor(sync.marker).length,
          },
          jobs_needing_the_stage_waiting_while_absent: waitingWhileAbsent,
          jobs_needing_the_stage_finished_while_absent: finishedWhileAbsent,
        }),
      });

      // The synchronous request: refused in time, its job failed, and never run afterwards.
      expect([503, 504]).toContain(res.status);
      expect(syncElapsed).toBeLessThanOrEqual(SYNC_TIMEOUT_MS + SLACK_MS);
      expect(syncRecord?.status).toBe("failed");
      expect(upstream.callsFor(sync.marker).filter((c) => c.tier === tier)).toEqual([]);
      // The asynchronous ones waited for the stage, then all completed once.
      const needing = [...load.jobs.values()].filter((j) => j.spec.hops.includes(stage)).length;
      expect(waitingWhileAbsent).toBe(needing);
      expect(finishedWhileAbsent).toBe(0);
      expect(guarantees(verdict)).toEqual([]);
      expect(mesh.unexpectedExits()).toEqual([]);
    },
  );
});
