import { ChatCompletion, JobRecord } from "@handoff/contracts";
import { checkTrace } from "@handoff/testkit";
import { Svcm } from "@nats-io/services";
import { connect } from "@nats-io/transport-node";
import { afterEach, describe, expect, it } from "vitest";
import { type Mesh, postChat, startMesh, waitFor } from "./harness.js";

/** The sim profile with a slow mid tier, so a job can be caught mid-call. */
const slowMid = (latencyMs: number) => `
tiers:
  light: [{ provider: sim, model: sim-light }]
  mid: [{ provider: sim, model: sim-mid, latency_ms: ${latencyMs} }]
  heavy: [{ provider: sim, model: sim-heavy }]
limits:
  ack_wait_ms: 1500
# These suites are about delivery, not routing: the rules send every arithmetic question here to
# the tool-executor alone, whatever the learned model makes of it.
routing:
  strategy: rules
`;

async function status(natsUrl: string, service: string) {
  const nc = await connect({ servers: natsUrl });
  try {
    const reply = await nc.request(`handoff.v1.svc.${service}.status`, "", { timeout: 2_000 });
    return reply.json<{ in_flight: number; finished: number; id: string }>();
  } finally {
    await nc.close();
  }
}

describe("the mesh under failure", () => {
  let mesh: Mesh | undefined;

  afterEach(async () => {
    await mesh?.stop();
    mesh = undefined;
  });

  it("redelivers a job when the tool-executor dies mid-call, and a replacement answers it", async () => {
    // Each mid call takes 4 s, two calls a job: the kill, sent once the job is seen in flight,
    // must land before the first process finishes, even on a loaded machine where each status
    // poll (a new connection) is slow.
    mesh = await startMesh({ config: slowMid(4_000) });
    const m = mesh;
    const pending = postChat(m.gatewayUrl, "What is 17 * 23?");
    const holder = await waitFor(
      async () => {
        const seen = await status(m.nats.url, "tool-executor");
        return seen.in_flight === 1 ? seen.id : undefined;
      },
      { timeoutMs: 10_000, what: "the tool-executor to hold the job" },
    );
    await m.processes.get("tool-executor")?.kill();
    await m.start("tool-executor", "tool-executor-2");

    const { status: code, body } = await pending;
    expect(code).toBe(200);
    const completion = ChatCompletion.parse(body);
    expect(completion.choices[0]?.message.content).toContain("391");
    expect(completion.handoff.route).toEqual(["classifier", "tool-executor"]);

    const record = JobRecord.parse(
      await (await fetch(`${m.gatewayUrl}/v1/jobs/${completion.handoff.job_id}`)).json(),
    );
    expect(record.status).toBe("succeeded");
    // The replacement's consumer span continues the same trace, with no broken links.
    // The gateway's SERVER span ends with the response, so it may be exported after the others.
    const spans = await waitFor(() => {
      const all = m.spans.trace(completion.handoff.trace_id);
      return all.some((s) => s.serviceName === "tool-executor" && s.kind === "CONSUMER") &&
        all.some((s) => s.kind === "SERVER" && s.serviceName === "gateway")
        ? all
        : undefined;
    });
    // The replacement took the job the killed process held (on a loaded machine it may also see
    // a later delivery, which waits for the first and re-sends its output). Its delivery count
    // says little: nats-server 2.9 hands a redelivery it could not make at once (nobody alive was
    // pulling when the ack wait ran out) out again as a first delivery.
    const consumers = spans.filter(
      (s) => s.serviceName === "tool-executor" && s.kind === "CONSUMER",
    );
    expect(consumers.length).toBeGreaterThan(0);
    expect(consumers.map((s) => s.attributes["handoff.instance"])).not.toContain(holder);
    expect(checkTrace(spans).broken).toEqual([]);
  });

  it("finishes the job in hand when the tool-executor is told to stop (SIGTERM drains)", async () => {
    mesh = await startMesh({ config: slowMid(1_500) });
    const m = mesh;
    const pending = postChat(m.gatewayUrl, "What is 6 * 7?");
    await waitFor(
      async () => ((await status(m.nats.url, "tool-executor")).in_flight === 1 ? true : undefined),
      {
        timeoutMs: 10_000,
      },
    );
    const exit = await m.processes.get("tool-executor")?.stop();
    expect(exit).toEqual({ code: 0, signal: null });
    const { status: code, body } = await pending;
    expect(code).toBe(200);
    expect(ChatCompletion.parse(body).choices[0]?.message.content).toContain("42");
  });

  it("spreads jobs over replicas that share one durable consumer", async () => {
    mesh = await startMesh({ config: slowMid(400) });
    const m = mesh;
    await m.start("tool-executor", "tool-executor-2");
    const questions = ["1 + 1", "2 * 3", "10 - 4", "9 / 3", "2 ^ 5", "7 % 4"].map(
      (q) => `What is ${q}?`,
    );
    const results = await Promise.all(questions.map((q) => postChat(m.gatewayUrl, q)));
    expect(results.map((r) => r.status)).toEqual(questions.map(() => 200));

    // Ask each replica for its own counters through the NATS service API.
    const nc = await connect({ servers: m.nats.url });
    try {
      const client = new Svcm(nc).client({ strategy: "timer", maxWait: 1_000 });
      const counts: number[] = [];
      for await (const stats of await client.stats("tool-executor")) {
        const data = stats.endpoints?.[0]?.data as { finished?: number } | undefined;
        counts.push(data?.finished ?? 0);
      }
      expect(counts).toHaveLength(2);
      expect(counts.reduce((a, b) => a + b, 0)).toBe(questions.length);
      expect(Math.min(...counts)).toBeGreaterThan(0);
    } finally {
      await nc.close();
    }
  });

  it("keeps answering after the NATS server restarts", async () => {
    mesh = await startMesh();
    const m = mesh;
    expect((await postChat(m.gatewayUrl, "What is 2 + 3?")).status).toBe(200);
    await m.nats.restart();
    // Services reconnect on their own; the gateway reports ready again once they have.
    await waitFor(async () => ((await fetch(`${m.gatewayUrl}/readyz`)).ok ? true : undefined), {
      timeoutMs: 20_000,
    });
    const after = await waitFor(
      async () => {
        const res = await postChat(m.gatewayUrl, "What is 3 + 4?", {
          handoff: { timeout_ms: 5_000 },
        });
        return res.status === 200 ? res : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 500, what: "an answer after the restart" },
    );
    expect(ChatCompletion.parse(after.body).choices[0]?.message.content).toContain("7");
  });
});
