/**
 * The benchmark's bare relay (bench/bare-relay.ts), the lower bound `BENCH_PEERS=1 npm run bench`
 * sets beside Portkey and Handoff: real processes on a real nats-server, so a figure it reports
 * is of a path that answers, and answers its failures with the reason.
 */
import {
  findNatsServer,
  freePort,
  freePorts,
  type NatsHandle,
  spawnNatsServer,
} from "@handoff/testkit";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MOCK_ANSWER } from "../../bench/mock-upstream.ts";
import {
  type Child,
  MOCK_MODELS,
  startMockUpstream,
  startRelay,
  statsOf,
} from "../../bench/peers.ts";

const binary = findNatsServer();
if (!binary) throw new Error("these tests need nats-server on PATH (apt-get install nats-server)");
const children: Child[] = [];
const register = (child: Child) => children.push(child);

function chat(url: string, body: string = JSON.stringify(question())) {
  return fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
    signal: AbortSignal.timeout(10_000),
  });
}

function question() {
  return { model: MOCK_MODELS.light, messages: [{ role: "user", content: "Hello there" }] };
}

describe("the bare relay", () => {
  let nats: NatsHandle;

  beforeAll(async () => {
    nats = await spawnNatsServer(binary, { jetstream: false });
  });
  afterEach(async () => {
    await Promise.all(children.splice(0).map((child) => child.stop()));
  });
  afterAll(async () => {
    await nats?.stop();
  });

  it("answers a chat request with the upstream's answer, one upstream call per request", async () => {
    const upstream = await startMockUpstream(await freePort(), register);
    const relay = await startRelay(nats.url, `${upstream.url}/v1`, await freePort(), register);
    for (let i = 0; i < 3; i++) {
      const res = await chat(relay.url);
      expect(res.status).toBe(200);
      const answer = (await res.json()) as {
        model: string;
        choices: Array<{ message: { content: string } }>;
      };
      expect(answer.choices[0]?.message.content).toBe(MOCK_ANSWER);
      expect(answer.model).toBe(MOCK_MODELS.light);
    }
    // The readiness check is a NATS ping, not a completion: three requests, three calls.
    expect((await statsOf<{ completions: number }>(upstream.url)).completions).toBe(3);
  });

  it("answers 502 naming the upstream when the upstream is down", async () => {
    const upstream = await startMockUpstream(await freePort(), register);
    const relay = await startRelay(nats.url, `${upstream.url}/v1`, await freePort(), register);
    await upstream.child.stop();
    const res = await chat(relay.url);
    expect(res.status).toBe(502);
    const body = (await res.json()) as { error: { message: string } };
    expect(body.error.message).toContain(`POST ${upstream.url}/v1/chat/completions failed`);
  });

  it("answers 503 naming the subject when no tier is left, and passes an upstream's error on", async () => {
    const upstream = await startMockUpstream(await freePort(), register);
    // A base URL the mock has no route for: its 404 comes back as it was.
    const relay = await startRelay(nats.url, `${upstream.url}/nowhere`, await freePort(), register);
    const notFound = await chat(relay.url);
    expect(notFound.status).toBe(404);
    expect(await notFound.text()).toContain("no route POST /nowhere/chat/completions");

    await relay.tier.stop();
    const res = await chat(relay.url);
    expect(res.status).toBe(503);
    const body = (await res.json()) as { error: { message: string } };
    expect(body.error.message).toContain("request on bench.relay.chat failed");
    expect(body.error.message).toMatch(/no responders/i);
  });

  it("refuses another route with 404 and a body over 1 MiB with 413, each named", async () => {
    const upstream = await startMockUpstream(await freePort(), register);
    const relay = await startRelay(nats.url, `${upstream.url}/v1`, await freePort(), register);
    const wrong = await fetch(`${relay.url}/v1/models`, { signal: AbortSignal.timeout(5_000) });
    expect(wrong.status).toBe(404);
    expect(await wrong.text()).toContain("no route GET /v1/models");

    const big = await chat(relay.url, JSON.stringify({ pad: "x".repeat(1024 * 1024) }));
    expect(big.status).toBe(413);
    expect(await big.text()).toContain("request body over 1048576 bytes");
    expect((await statsOf<{ completions: number }>(upstream.url)).completions).toBe(0);
  });

  it("fails to start with the tier's own output when the tier cannot connect", async () => {
    const [natsPort, frontPort] = await freePorts(2);
    await expect(
      startRelay(`nats://127.0.0.1:${natsPort}`, "http://127.0.0.1:9/v1", frontPort, register),
    ).rejects.toThrow(/relay (tier|front) exited before/);
  });
});
