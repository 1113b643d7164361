import { ChatCompletion, ErrorBody, ServiceNames } from "@handoff/contracts";
import {
  fakeNatsServer,
  findNatsServer,
  freePorts,
  type NatsHandle,
  type ServiceProcess,
  spawnNatsServer,
  spawnService,
} from "@handoff/testkit";
import { afterEach, describe, expect, it } from "vitest";
import { entry, postChat, type ServiceName, waitFor } from "./harness.js";

/**
 * "Start and stay up": services started before NATS (or before JetStream) stay alive and
 * not-ready, retrying, and become ready when it appears, without a restart. Only a bad config
 * (or a server older than the minimum) stops them.
 */

const WORKERS = ServiceNames.filter((name) => name !== "gateway");

const quietEnv = {
  OTEL_TRACES_EXPORTER: "none",
  OTEL_METRICS_EXPORTER: "none",
  OTEL_LOGS_EXPORTER: "none",
  LOG_LEVEL: "info",
  HOST: "127.0.0.1",
};

function natsBinary(): string {
  const binary = findNatsServer();
  if (!binary)
    throw new Error("these tests need a nats-server binary (apt-get install nats-server)");
  return binary;
}

async function get(url: string): Promise<{ status: number; body: unknown }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.json() };
}

/** Resolves `true` once the process has exited; `false` while it runs. */
function exitWatch(proc: ServiceProcess): () => boolean {
  let exited = false;
  void proc.exited.then(() => {
    exited = true;
  });
  return () => exited;
}

const retried = (reason: RegExp) => (line: Record<string, unknown>) =>
  line.level === "warn" && typeof line.reason === "string" && reason.test(line.reason);

const readyLine = (name: ServiceName) => (line: Record<string, unknown>) =>
  line.msg === (name === "gateway" ? "gateway ready" : `${name} ready`);

describe("start-up before NATS", () => {
  const processes: ServiceProcess[] = [];
  const servers: NatsHandle[] = [];

  afterEach(async () => {
    await Promise.all(processes.splice(0).map((proc) => proc.stop(15_000)));
    await Promise.all(servers.splice(0).map((server) => server.stop()));
  });

  it("keeps all four services up and not ready until NATS and JetStream appear, then serves", async () => {
    const [natsPort, gatewayPort, ...workerPorts] = await freePorts(2 + WORKERS.length);
    const gatewayUrl = `http://127.0.0.1:${gatewayPort}`;
    const healthPorts = new Map(WORKERS.map((name, i) => [name, workerPorts[i]]));

    const started = Date.now();
    const procs = new Map<ServiceName, ServiceProcess>();
    for (const name of ServiceNames) {
      const proc = spawnService({
        name,
        entry: entry(name),
        env: {
          ...quietEnv,
          // Nothing listens here yet.
          NATS_URL: `nats://127.0.0.1:${natsPort}`,
          HANDOFF_CONFIG: undefined,
          PORT: String(gatewayPort),
          HEALTH_PORT: name === "gateway" ? undefined : String(healthPorts.get(name)),
        },
      });
      processes.push(proc);
      procs.set(name, proc);
    }
    const exited = new Map([...procs].map(([name, proc]) => [name, exitWatch(proc)]));
    const running = () => [...exited].filter(([, hasExited]) => !hasExited()).map(([n]) => n);

    // 1. No NATS at all. The gateway serves its probes from its first second or two.
    await waitFor(async () => (await get(`${gatewayUrl}/healthz`)).status === 200, {
      timeoutMs: 10_000,
      intervalMs: 50,
      what: "the gateway's /healthz",
    });
    const healthyAfterMs = Date.now() - started;
    expect(healthyAfterMs).toBeLessThan(10_000);
    expect(await get(`${gatewayUrl}/readyz`)).toEqual({
      status: 503,
      body: { status: "not ready" },
    });
    // Other routes say why, in the API's error shape.
    const early = await postChat(gatewayUrl, "What is 17 * 23?");
    expect(early.status).toBe(503);
    expect(ErrorBody.parse(early.body).error).toMatchObject({
      code: "HANDOFF_ERR_UNAVAILABLE",
      type: "server_error",
      message: expect.stringContaining("the gateway is starting"),
    });
    for (const name of WORKERS) {
      const health = `http://127.0.0.1:${healthPorts.get(name)}`;
      await waitFor(async () => (await get(`${health}/healthz`)).status === 200, {
        timeoutMs: 10_000,
        what: `${name}'s /healthz`,
      });
      expect((await get(`${health}/readyz`)).status).toBe(503);
    }
    // Each says why it is not ready, and keeps trying.
    for (const [name, proc] of procs) {
      const first = await proc.waitForLog(retried(/connection refused/), 10_000);
      expect(first.msg, name).toMatch(/^could not connect to NATS: connection refused/);
      await proc.waitForLog((line) => retried(/connection refused/)(line) && line.attempt === 3);
    }
    expect(running()).toEqual([...ServiceNames]);

    // 2. NATS without JetStream (as a cluster before its JetStream quorum): connected, not ready.
    const withoutJs = await spawnNatsServer(natsBinary(), { port: natsPort, jetstream: false });
    servers.push(withoutJs);
    for (const proc of procs.values()) {
      await proc.waitForLog(retried(/jetstream is not enabled/i), 20_000);
    }
    expect(await get(`${gatewayUrl}/readyz`)).toEqual({
      status: 503,
      body: { status: "not ready" },
    });
    expect((await postChat(gatewayUrl, "What is 17 * 23?")).status).toBe(503);
    for (const name of WORKERS) {
      expect((await get(`http://127.0.0.1:${healthPorts.get(name)}/readyz`)).status).toBe(503);
    }
    for (const [name, proc] of procs) {
      expect(proc.logs().some(readyLine(name)), `${name} is not ready yet`).toBe(false);
    }
    await withoutJs.stop();
    servers.splice(servers.indexOf(withoutJs), 1);

    // 3. NATS with JetStream on the same address: every service becomes ready, no restart.
    const nats = await spawnNatsServer(natsBinary(), { port: natsPort });
    servers.push(nats);
    await Promise.all([...procs].map(([name, proc]) => proc.waitForLog(readyLine(name), 45_000)));
    await waitFor(async () => (await get(`${gatewayUrl}/readyz`)).status === 200, {
      timeoutMs: 10_000,
      what: "the gateway's /readyz to answer 200",
    });
    expect((await get(`${gatewayUrl}/readyz`)).body).toEqual({ status: "ready" });
    for (const name of WORKERS) {
      const health = `http://127.0.0.1:${healthPorts.get(name)}`;
      await waitFor(async () => (await get(`${health}/readyz`)).status === 200, {
        timeoutMs: 10_000,
        what: `${name}'s /readyz to answer 200`,
      });
    }

    // Answered through the tool-executor, and through the heavy-reasoner.
    const tools = await postChat(gatewayUrl, "What is 17 * 23?");
    expect(tools.status).toBe(200);
    const toolAnswer = ChatCompletion.parse(tools.body);
    expect(toolAnswer.choices[0]?.message.content).toContain("391");
    expect(toolAnswer.handoff.route).toEqual(["classifier", "tool-executor"]);
    const heavy = await postChat(
      gatewayUrl,
      "Prove step by step that there are infinitely many primes.",
    );
    expect(heavy.status).toBe(200);
    expect(ChatCompletion.parse(heavy.body).handoff.route.at(-1)).toBe("heavy-reasoner");

    // The same four processes all along.
    expect(running()).toEqual([...ServiceNames]);
    for (const proc of procs.values()) {
      expect(proc.logs().filter((line) => line.level === "fatal")).toEqual([]);
    }
  });

  it.each(["gateway", "classifier"] as const)(
    "%s exits cleanly (code 0) on SIGTERM while still waiting for NATS",
    async (name) => {
      const [natsPort, port] = await freePorts(2);
      const proc = spawnService({
        name,
        entry: entry(name),
        env: {
          ...quietEnv,
          NATS_URL: `nats://127.0.0.1:${natsPort}`,
          HANDOFF_CONFIG: undefined,
          PORT: String(port),
        },
      });
      processes.push(proc);
      await proc.waitForLog(retried(/connection refused/), 15_000);
      const exit = await proc.stop(10_000);
      expect(exit).toEqual({ code: 0, signal: null });
      expect(proc.logs().some((line) => line.msg === "stopped")).toBe(true);
      expect(proc.logs().filter((line) => line.level === "fatal")).toEqual([]);
    },
  );

  it.each(["gateway", "tool-executor"] as const)(
    "%s still exits at once (code 1) on a bad NATS setting, without retrying",
    async (name) => {
      const [natsPort, port] = await freePorts(2);
      const proc = spawnService({
        name,
        entry: entry(name),
        env: {
          ...quietEnv,
          NATS_URL: `nats://127.0.0.1:${natsPort}`,
          NATS_CREDS: "/nonexistent/handoff-test.creds",
          HANDOFF_CONFIG: undefined,
          PORT: String(port),
        },
      });
      processes.push(proc);
      const exit = await proc.exited;
      expect(exit.code).toBe(1);
      const fatal = proc.logs().find((line) => line.level === "fatal");
      expect(fatal).toMatchObject({ code: "HANDOFF_ERR_CONFIG" });
      expect(String(fatal?.msg)).toContain(
        `${name} failed to start: HANDOFF_ERR_CONFIG: NATS_CREDS names /nonexistent/handoff-test.creds`,
      );
      expect(proc.logs().filter((line) => line.level === "warn")).toEqual([]);
      expect(proc.output()).not.toContain("    at ");
    },
  );
});

/**
 * A listener that answers the NATS handshake as a given server version would. No nats-server
 * older than 2.9 is installed here, and the version in INFO is all the check reads.
 */

describe("the minimum nats-server version", () => {
  it("stops a service on a server older than 2.9.0, naming both versions", async () => {
    const old = await fakeNatsServer("2.8.4");
    try {
      const proc = spawnService({
        name: "classifier",
        entry: entry("classifier"),
        env: { ...quietEnv, NATS_URL: old.url, HANDOFF_CONFIG: undefined },
      });
      const exit = await proc.exited;
      expect(exit.code).toBe(1);
      const fatal = proc.logs().find((line) => line.level === "fatal");
      expect(fatal).toMatchObject({ code: "HANDOFF_ERR_CONFIG" });
      expect(String(fatal?.msg)).toMatch(
        /^classifier failed to start: HANDOFF_ERR_CONFIG: the NATS server at 127\.0\.0\.1:\d+ reports version 2\.8\.4; Handoff needs nats-server 2\.9\.0 or newer/,
      );
      expect(proc.logs().some((line) => line.msg === "connected to NATS")).toBe(false);
    } finally {
      await old.close();
    }
  });
});
