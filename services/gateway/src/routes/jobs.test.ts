import { request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import { simProfile } from "@handoff/config";
import type { JobRecord } from "@handoff/contracts";
import type { JobClient } from "@handoff/mesh";
import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { buildApp } from "../app.js";

const JOB_ID = "job-watched-0001";

const running: JobRecord = {
  id: JOB_ID,
  status: "running",
  stage: "tool-executor",
  created_at: new Date().toISOString(),
  updated_at: new Date().toISOString(),
  hops: ["classifier"],
  usage: [],
  cost_usd: 0,
  cost_by_stage: {},
};

/**
 * A KV watch that yields nothing until stopped, opened only once `open()` is called: the time a
 * client may leave while the route waits for it.
 */
function slowWatch() {
  let open = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  let requested = () => {};
  const asked = new Promise<void>((resolve) => {
    requested = resolve;
  });
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
  const jobs = {
    store: {
      get: async () => running,
      kv: {
        watch: async () => {
          requested();
          await opened;
          return watch;
        },
      },
    },
  } as unknown as JobClient;
  return { jobs, watch, asked, open };
}

let app: FastifyInstance | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
});

describe("GET /v1/jobs/:id/events", () => {
  it("stops the watch of a client that left while it was being opened", async () => {
    const { jobs, watch, asked, open } = slowWatch();
    app = buildApp({
      jobs,
      config: simProfile,
      logger: pino({ level: "silent" }),
      ready: () => true,
    });
    await app.listen({ host: "127.0.0.1", port: 0 });
    const { port } = app.server.address() as AddressInfo;

    // The stream opens (headers sent), then the client hangs up before the watch is there.
    const client = httpRequest({ host: "127.0.0.1", port, path: `/v1/jobs/${JOB_ID}/events` });
    const headers = new Promise<void>((resolve) => client.once("response", () => resolve()));
    client.on("error", () => {});
    client.end();
    await Promise.all([asked, headers]);
    client.destroy();
    // Long enough for the server to see the connection close.
    await new Promise((resolve) => setTimeout(resolve, 100));
    open();

    // Without a client the watch must end at once, not follow the job until it ends.
    const deadline = Date.now() + 2_000;
    while (watch.stops === 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(watch.stops).toBeGreaterThan(0);
  });
});
