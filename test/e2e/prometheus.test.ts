import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { ServiceNames, Stages, Subjects } from "@handoff/contracts";
import { freePort, freePorts } from "@handoff/testkit";
import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Mesh, postChat, type ServiceName, startMesh, waitFor } from "./harness.js";

/**
 * A real Prometheus (Debian's `prometheus` package) scrapes every service's `/metrics` (the SDK's
 * `OTEL_METRICS_EXPORTER=prometheus`, one port per service) and finds each stage's lag,
 * ack-pending, redelivery and dead-letter series.
 */

function findPrometheus(): string | undefined {
  const dirs = (process.env.PATH ?? "").split(delimiter).filter((dir) => dir !== "");
  for (const dir of [...dirs, "/usr/bin", "/usr/local/bin"]) {
    const candidate = join(dir, "prometheus");
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not here.
    }
  }
  return undefined;
}

const binary = findPrometheus();
const skip = binary === undefined && !process.env.CI;
if (skip) {
  console.warn(
    "prometheus.test.ts SKIPPED: no prometheus binary (apt-get install -y prometheus); CI=1 makes this a failure",
  );
}

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

describe.skipIf(skip)("metrics scraped by a real Prometheus", () => {
  let mesh: Mesh;
  let prometheus: ChildProcess | undefined;
  let promUrl = "";
  let dir = "";
  let promOutput = "";
  const ports = new Map<ServiceName, number>();

  beforeAll(async () => {
    if (!binary) {
      throw new Error(
        "CI is set but no prometheus binary is installed: apt-get install -y prometheus (Debian's package)",
      );
    }
    const free = await freePorts(ServiceNames.length);
    for (const [i, name] of ServiceNames.entries()) ports.set(name, free[i] as number);
    mesh = await startMesh({
      env: {
        OTEL_METRICS_EXPORTER: "prometheus",
        OTEL_EXPORTER_PROMETHEUS_HOST: "127.0.0.1",
      },
      // Four services on one machine: each serves /metrics on its own port.
      serviceEnv: (name) => ({ OTEL_EXPORTER_PROMETHEUS_PORT: String(ports.get(name)) }),
    });

    dir = mkdtempSync(join(tmpdir(), "handoff-prometheus-"));
    const config = join(dir, "prometheus.yml");
    writeFileSync(
      config,
      [
        "global:",
        "  scrape_interval: 1s",
        "  scrape_timeout: 1s",
        "scrape_configs:",
        "  - job_name: handoff",
        "    static_configs:",
        ...ServiceNames.flatMap((name) => [
          `      - targets: ["127.0.0.1:${ports.get(name)}"]`,
          `        labels: { service: "${name}" }`,
        ]),
        "",
      ].join("\n"),
    );
    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    prometheus = spawn(
      binary,
      [
        `--config.file=${config}`,
        `--storage.tsdb.path=${join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    const keep = (chunk: Buffer) => {
      promOutput = (promOutput + chunk.toString()).slice(-20_000);
    };
    prometheus.stdout?.on("data", keep);
    prometheus.stderr?.on("data", keep);
  });

  afterAll(async () => {
    if (prometheus && prometheus.exitCode === null) {
      const exited = new Promise((resolve) => prometheus?.once("exit", resolve));
      prometheus.kill("SIGTERM");
      const timer = setTimeout(() => prometheus?.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
    await mesh?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function query(expr: string): Promise<Sample[]> {
    const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const body = (await res.json()) as { status: string; data: { result: Sample[] } };
    if (body.status !== "success") throw new Error(`query ${expr}: ${JSON.stringify(body)}`);
    return body.data.result;
  }

  /** The value of `name` per stage, once Prometheus has a sample for every stage. */
  async function perStage(name: string): Promise<Record<string, number>> {
    return waitFor(
      async () => {
        const samples = await query(name);
        const byStage: Record<string, number> = {};
        for (const sample of samples) {
          const stage = sample.metric.stage;
          if (stage) byStage[stage] = Number(sample.value[1]);
        }
        return Stages.every((stage) => stage in byStage) ? byStage : undefined;
      },
      {
        timeoutMs: 60_000,
        intervalMs: 500,
        what: `${name} for ${Stages.join(", ")} in Prometheus; its output:\n${promOutput}`,
      },
    );
  }

  it("scrapes every service's /metrics and finds each stage's lag, ack pending, redeliveries and dead letters", async () => {
    // Some traffic through every stage...
    for (const question of [
      "What is 17 * 23?",
      "Prove step by step that there are infinitely many primes.",
      "Hi! Who are you?",
    ]) {
      expect((await postChat(mesh.gatewayUrl, question)).status).toBe(200);
    }
    // ...and a payload the tool-executor cannot read: one dead letter.
    const nc = await connect({ servers: mesh.nats.url });
    try {
      await jetstream(nc).publish(Subjects.job("tool-executor"), "not an envelope", {
        msgID: "prometheus-test-garbage",
      });
    } finally {
      await nc.close();
    }

    const targets = await waitFor(
      async () => {
        const res = await fetch(`${promUrl}/api/v1/targets`);
        const body = (await res.json()) as {
          data: { activeTargets: Array<{ labels: Record<string, string>; health: string }> };
        };
        const up = body.data.activeTargets.filter((t) => t.health === "up");
        return up.length === ServiceNames.length ? up : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500, what: `all four targets up; output:\n${promOutput}` },
    );
    expect(targets.map((t) => t.labels.service).sort()).toEqual([...ServiceNames].sort());
    // Each service's own series: `up` per target.
    const up = await query("up");
    expect(up.map((s) => [s.metric.service, s.value[1]]).sort()).toEqual(
      [...ServiceNames].sort().map((name) => [name, "1"]),
    );

    const lag = await perStage("handoff_stage_lag");
    const ackPending = await perStage("handoff_stage_ack_pending");
    const redelivered = await perStage("handoff_stage_redelivered");
    for (const stage of Stages) {
      expect(lag[stage]).toBeGreaterThanOrEqual(0);
      expect(ackPending[stage]).toBeGreaterThanOrEqual(0);
      expect(redelivered[stage]).toBeGreaterThanOrEqual(0);
    }
    // Each stage reports itself: the series of a stage come from that stage's service.
    const lagSeries = await query("handoff_stage_lag");
    for (const sample of lagSeries) expect(sample.metric.service).toBe(sample.metric.stage);

    const dead = await waitFor(
      async () => {
        const values = await perStage("handoff_stage_dead_letters");
        return values["tool-executor"] === 1 ? values : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 500, what: "the tool-executor's dead letter in Prometheus" },
    );
    expect(dead).toEqual({ classifier: 0, "tool-executor": 1, "heavy-reasoner": 0 });
    const made = await waitFor(
      async () => {
        const samples = await query('handoff_stage_dead_lettered_total{stage="tool-executor"}');
        return samples.length === 1 && samples[0]?.value[1] === "1" ? samples : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 500, what: "the tool-executor's dead-lettered counter" },
    );
    expect(made[0]?.metric.service).toBe("tool-executor");
    const retried = await perStage("handoff_stage_retried_total");
    expect(Object.keys(retried).sort()).toEqual([...Stages].sort());
    // The tool calls: 17 * 23 went through the calculator once, from the tool-executor.
    const calls = await waitFor(
      async () => {
        const samples = await query('handoff_tool_calls_total{gen_ai_tool_name="calculator"}');
        return samples.length > 0 ? samples : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 500, what: "the tool-executor's tool call counter" },
    );
    expect(calls.map((s) => [s.metric.service, s.metric.outcome, s.value[1]])).toEqual([
      ["tool-executor", "ok", "1"],
    ]);
  });
});
