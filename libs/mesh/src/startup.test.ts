import { createServer, type Server, type Socket } from "node:net";
import { Writable } from "node:stream";
import { HandoffError } from "@handoff/contracts";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { checkNatsServerVersion, connectNats, MIN_NATS_SERVER_VERSION } from "./connect.js";
import {
  connectWithRetry,
  isConfigError,
  isStartupAborted,
  retryStartup,
  StartupAborted,
  startupDelay,
} from "./startup.js";

/** A pino logger whose records are kept, to read the start-up lines back. */
function capture(level = "info") {
  const lines: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split("\n")) {
        if (line.trim()) lines.push(JSON.parse(line));
      }
      done();
    },
  });
  return { logger: pino({ level }, destination), lines };
}

const fast = { initialMs: 1, maxMs: 2 };

describe("startupDelay", () => {
  it("doubles from 250 ms and stops at 5 s", () => {
    const middle = { random: () => 0.5 };
    const delays = [1, 2, 3, 4, 5, 6, 7, 50].map((n) => startupDelay(n, middle));
    expect(delays).toEqual([250, 500, 1_000, 2_000, 4_000, 5_000, 5_000, 5_000]);
  });

  it("spreads each wait by a quarter either way, never past the cap", () => {
    expect(startupDelay(1, { random: () => 0 })).toBe(188);
    expect(startupDelay(1, { random: () => 0.999_999 })).toBe(312);
    expect(startupDelay(5, { random: () => 0 })).toBe(3_000);
    expect(startupDelay(5, { random: () => 0.999_999 })).toBe(5_000);
    expect(startupDelay(9, { random: () => 0 })).toBe(3_750);
    for (let attempt = 1; attempt < 40; attempt++) {
      const delay = startupDelay(attempt);
      expect(delay).toBeGreaterThan(0);
      expect(delay).toBeLessThanOrEqual(5_000);
    }
  });
});

describe("retryStartup", () => {
  it("retries until the step works, logging each failure once with its reason and no stack", async () => {
    const { logger, lines } = capture();
    let calls = 0;
    const value = await retryStartup(
      async (attempt) => {
        calls++;
        expect(attempt).toBe(calls);
        if (calls < 3) throw new Error(`NATS is not there yet (${calls})`, { cause: "x" });
        return "up";
      },
      { what: "connect to NATS", logger, backoff: fast },
    );
    expect(value).toBe("up");
    expect(calls).toBe(3);
    const warnings = lines.filter((line) => line.level === 40);
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatchObject({
      attempt: 1,
      reason: "NATS is not there yet (1)",
      msg: expect.stringMatching(
        /^could not connect to NATS: NATS is not there yet \(1\); retrying in \d+ ms$/,
      ),
    });
    expect(warnings[1]).toMatchObject({ attempt: 2, reason: "NATS is not there yet (2)" });
    for (const warning of warnings) {
      expect(warning).not.toHaveProperty("err");
      expect(JSON.stringify(warning)).not.toContain("    at ");
    }
    expect(lines.at(-1)).toMatchObject({ level: 30, attempts: 3 });
  });

  it("names a Handoff error's code and a cause in the reason", async () => {
    const { logger, lines } = capture();
    let calls = 0;
    await retryStartup(
      async () => {
        calls++;
        if (calls === 1) throw new HandoffError("HANDOFF_ERR_UNAVAILABLE", "no quorum");
        if (calls === 2) {
          throw new Error("connection refused", { cause: new Error("connect ECONNREFUSED") });
        }
      },
      { what: "set up the streams", logger, backoff: fast },
    );
    expect(lines.filter((l) => l.level === 40).map((l) => l.reason)).toEqual([
      "HANDOFF_ERR_UNAVAILABLE: no quorum",
      "connection refused (connect ECONNREFUSED)",
    ]);
  });

  it("adds the error itself at debug", async () => {
    const { logger, lines } = capture("debug");
    let calls = 0;
    await retryStartup(
      async () => {
        if (++calls === 1) throw new Error("down");
      },
      { what: "connect to NATS", logger, backoff: fast },
    );
    const warning = lines.find((line) => line.level === 40);
    expect((warning?.err as { stack?: string } | undefined)?.stack).toContain("down");
  });

  it("never retries a config error", async () => {
    const { logger, lines } = capture();
    let calls = 0;
    const config = new HandoffError("HANDOFF_ERR_CONFIG", "NATS_CREDS names a missing file");
    const failure = await retryStartup(
      async () => {
        calls++;
        throw config;
      },
      { what: "connect to NATS", logger, backoff: fast },
    ).catch((error: unknown) => error);
    expect(failure).toBe(config);
    expect(calls).toBe(1);
    expect(lines.filter((line) => line.level === 40)).toEqual([]);
  });

  it("stops waiting between attempts when aborted", async () => {
    const { logger } = capture();
    const abort = new AbortController();
    let calls = 0;
    const started = Date.now();
    const pending = retryStartup(
      async () => {
        calls++;
        // Aborted while the retry waits its (here one-minute) backoff.
        setTimeout(() => abort.abort(), 20);
        throw new Error("down");
      },
      {
        what: "connect to NATS",
        logger,
        signal: abort.signal,
        backoff: { initialMs: 60_000, maxMs: 60_000 },
      },
    );
    const failure = await pending.catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(StartupAborted);
    expect(isStartupAborted(failure)).toBe(true);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(calls).toBe(1);
  });

  it("does not wait for an attempt under way when aborted", async () => {
    const { logger } = capture();
    const abort = new AbortController();
    const pending = retryStartup(() => new Promise<never>(() => {}), {
      what: "set up the streams",
      logger,
      signal: abort.signal,
    });
    setTimeout(() => abort.abort(), 20);
    const failure = await pending.catch((error: unknown) => error);
    expect(isStartupAborted(failure)).toBe(true);
    expect((failure as Error).message).toBe("start-up stopped while trying to set up the streams");
  });

  it("does not start when already aborted", async () => {
    const { logger } = capture();
    let calls = 0;
    const failure = await retryStartup(async () => calls++, {
      what: "connect to NATS",
      logger,
      signal: AbortSignal.abort(),
    }).catch((error: unknown) => error);
    expect(isStartupAborted(failure)).toBe(true);
    expect(calls).toBe(0);
  });
});

describe("isConfigError", () => {
  it("is true for HANDOFF_ERR_CONFIG only", () => {
    expect(isConfigError(new HandoffError("HANDOFF_ERR_CONFIG", "bad"))).toBe(true);
    expect(isConfigError(new HandoffError("HANDOFF_ERR_UNAVAILABLE", "later"))).toBe(false);
    expect(isConfigError(Object.assign(new Error("x"), { code: "HANDOFF_ERR_CONFIG" }))).toBe(
      false,
    );
    expect(isConfigError(undefined)).toBe(false);
  });
});

describe("the minimum nats-server version", () => {
  it("is 2.9.0", () => {
    expect(MIN_NATS_SERVER_VERSION).toBe("2.9.0");
  });

  it.each(["2.9.0", "2.9.10", "2.10.4", "v2.11.0-RC.1", "2.12", "3.0.0"])("accepts %s", (v) => {
    expect(() => checkNatsServerVersion(v)).not.toThrow();
  });

  it.each(["2.8.4", "2.2.0", "1.4.1", "2.8", "v2.8.99-beta"])(
    "refuses %s with a config error naming it and the minimum",
    (version) => {
      let failure: unknown;
      try {
        checkNatsServerVersion(version, "the NATS server at 127.0.0.1:4222");
      } catch (error) {
        failure = error;
      }
      expect(failure).toBeInstanceOf(HandoffError);
      expect((failure as HandoffError).code).toBe("HANDOFF_ERR_CONFIG");
      expect((failure as HandoffError).message).toBe(
        `the NATS server at 127.0.0.1:4222 reports version ${version}; Handoff needs nats-server 2.9.0 or newer: upgrade the server`,
      );
    },
  );

  it("refuses a server that names no version", () => {
    expect(() => checkNatsServerVersion(undefined)).toThrow(/reports no version; .* 2\.9\.0/);
    expect(() => checkNatsServerVersion("")).toThrow(/reports no version/);
    expect(() => checkNatsServerVersion("unknown")).toThrow(/reports version unknown/);
  });
});

/**
 * Speaks just enough of the NATS protocol for a client to connect, announcing `version`: no
 * nats-server older than 2.9 is installed here, and this is the only part of one the check reads.
 */
async function fakeNatsServer(version: string) {
  const sockets = new Set<Socket>();
  let closedByClient = 0;
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => {
      sockets.delete(socket);
      closedByClient++;
    });
    socket.on("error", () => {});
    const { port } = server.address() as { port: number };
    socket.write(
      `INFO ${JSON.stringify({
        server_id: "FAKE",
        server_name: "fake",
        version,
        proto: 1,
        go: "go1.19",
        host: "127.0.0.1",
        port,
        headers: true,
        max_payload: 1_048_576,
      })}\r\n`,
    );
    socket.on("data", (data) => {
      for (const line of String(data).split("\r\n")) {
        if (line === "PING") socket.write("PONG\r\n");
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `nats://127.0.0.1:${port}`,
    connections: () => sockets.size,
    closedByClient: () => closedByClient,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

describe("connectNats and the server version", () => {
  let fake: Awaited<ReturnType<typeof fakeNatsServer>> | undefined;
  afterEach(async () => {
    await fake?.close();
    fake = undefined;
  });

  it("refuses a server older than 2.9.0, closing the connection, and is not retried", async () => {
    fake = await fakeNatsServer("2.8.4");
    const { logger, lines } = capture();
    let attempts = 0;
    const failure = await connectWithRetry(
      () => {
        attempts++;
        return connectNats({ servers: fake?.url, name: "version-test", env: {}, logger });
      },
      { logger, backoff: fast },
    ).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(HandoffError);
    expect((failure as HandoffError).code).toBe("HANDOFF_ERR_CONFIG");
    expect((failure as HandoffError).message).toMatch(
      /^the NATS server at 127\.0\.0\.1:\d+ reports version 2\.8\.4; Handoff needs nats-server 2\.9\.0 or newer/,
    );
    expect(attempts).toBe(1);
    // The client hung up, and never logged itself as connected.
    await expect.poll(() => fake?.closedByClient()).toBe(1);
    expect(fake.connections()).toBe(0);
    expect(lines.map((line) => line.msg)).not.toContain("connected to NATS");
  });

  it("accepts a 2.9.0 server", async () => {
    fake = await fakeNatsServer("2.9.0");
    const nc = await connectNats({ servers: fake.url, name: "version-test", env: {} });
    try {
      expect(nc.info?.version).toBe("2.9.0");
      expect(nc.isClosed()).toBe(false);
    } finally {
      await nc.close();
    }
  });
});

describe("connectWithRetry", () => {
  it("retries a refused connection, logging the reason, until aborted", async () => {
    // A port that was free a moment ago: nothing listens there.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const { port } = probe.address() as { port: number };
    await new Promise<void>((resolve) => probe.close(() => resolve()));

    const { logger, lines } = capture();
    const abort = new AbortController();
    let attempts = 0;
    const pending = connectWithRetry(
      () => {
        attempts++;
        if (attempts === 3) abort.abort();
        return connectNats({ servers: `nats://127.0.0.1:${port}`, name: "retry-test", env: {} });
      },
      { logger, signal: abort.signal, backoff: fast },
    );
    const failure = await pending.catch((error: unknown) => error);
    expect(isStartupAborted(failure)).toBe(true);
    expect(attempts).toBe(3);
    const warnings = lines.filter((line) => line.level === 40);
    expect(warnings.length).toBe(2);
    expect(warnings[0]?.msg).toMatch(/^could not connect to NATS: connection refused/);
  });
});
