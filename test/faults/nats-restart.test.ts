import type { NatsHandle } from "@handoff/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FaultMesh, startSingleNode, stopAll } from "./harness.js";
import { JOBS } from "./load.js";
import { accepted, guarantees, runScenario } from "./scenario.js";
import type { CountingUpstream } from "./upstream.js";

/**
 * b. nats-server (one node, file store) is stopped mid-flow, by SIGTERM and by SIGKILL, and
 * started again on the same port and the same store. No service is restarted. Every job accepted
 * before, during or after ends with its answer, and no stage's work is done twice, even though the
 * server may have lost acknowledgements (and so redelivers finished work) in the restart.
 */

const LATENCY = { light: 100, mid: 100, heavy: 250 };
const DOWN_MS = 2_000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("b. nats-server is stopped mid-flow and restarted on the same store", () => {
  let nats: NatsHandle, upstream: CountingUpstream, mesh: FaultMesh;
  beforeAll(async () => {
    ({ nats, upstream, mesh } = await startSingleNode(LATENCY));
  });
  afterAll(() => stopAll(mesh, upstream, nats));

  const ready = async () => {
    const labels = [...mesh.procs.values()].filter((p) => p.exitedAt === undefined);
    await Promise.all(labels.map((p) => mesh.waitReady(p.label).catch(() => undefined)));
    // waitReady remembers the first readiness; poll again for the current one.
    const start = Date.now();
    for (const p of labels) {
      while (!(await mesh.isReady(p.label))) {
        if (Date.now() - start > 60_000) throw new Error(`${p.label} not ready again`);
        await sleep(100);
      }
    }
    return Date.now();
  };

  const outages = [
    {
      name: "SIGTERM (graceful shutdown), restarted on the same store",
      id: "b-nats-sigterm",
      title: "SIGTERM nats-server mid-flow, start it again on the same port and store",
      batch: "nst",
      // restart(): SIGTERM, wait for the exit, start on the same port and store.
      outage: () => nats.restart(),
    },
    {
      name: "SIGKILL, down for 2 s, restarted on the same store",
      id: "b-nats-sigkill",
      title: "SIGKILL nats-server mid-flow, keep it down 2 s, start it on the same port and store",
      batch: "nsk",
      outage: async () => {
        await nats.kill();
        await sleep(DOWN_MS);
        await nats.restart();
      },
    },
  ];

  it.each(outages)("$name", async ({ id, title, batch, outage }) => {
    const { verdict } = await runScenario(mesh, upstream, [nats.url], {
      id,
      title,
      batch,
      jobs: JOBS,
      fault: async ({ load }) => {
        await accepted(load, Math.floor(JOBS / 3));
        const down = Date.now();
        await outage();
        const up = Date.now();
        const meshReady = await ready();
        return { down, up, mesh_ready: meshReady };
      },
    });
    expect(mesh.unexpectedExits()).toEqual([]);
    expect(guarantees(verdict)).toEqual([]);
  });
});
