import { execFile } from "node:child_process";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { type CollectedSpan, SpanCollector } from "@handoff/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/**
 * The services set OpenTelemetry up without NodeSDK where the OTEL_* variables ask only for OTLP
 * over HTTP and Prometheus (libs/telemetry `leanPlan`). What they export must not change: the same
 * resource, spans, propagation and metrics as NodeSDK builds from the same variables.
 */

const run = promisify(execFile);
const root = fileURLToPath(new URL("../..", import.meta.url));
const telemetry = pathToFileURL(`${root}libs/telemetry/dist/index.js`).href;

/** Starts telemetry the way a service does, makes a span, a metric and a traceparent, stops. */
const PROBE = `
import { context, metrics, propagation, SpanKind, trace } from "@opentelemetry/api";
const { startTelemetry } = await import(process.argv[1]);
const started = await startTelemetry({ serviceName: "probe", serviceVersion: "1.2.3" });
const carrier = {};
trace.getTracer("probe").startActiveSpan("probe work", { kind: SpanKind.CONSUMER }, (span) => {
  span.setAttribute("probe.n", 7);
  propagation.inject(context.active(), carrier);
  span.end();
});
metrics.getMeter("probe").createCounter("probe.count").add(3);
await started.shutdown();
process.stdout.write(JSON.stringify({ setup: started.setup, carrier }));
`;

let collector: SpanCollector;

beforeAll(async () => {
  collector = await SpanCollector.start();
});

afterAll(async () => {
  await collector?.close();
});

/** Runs the probe with only `env` (and PATH) for environment; what it printed. */
async function runProbe(env: Record<string, string>) {
  const { stdout } = await run(
    process.execPath,
    ["--input-type=module", "--eval", PROBE, telemetry],
    { cwd: root, env: { PATH: process.env.PATH, ...env }, timeout: 30_000 },
  );
  return JSON.parse(stdout) as { setup: string; carrier: Record<string, string> };
}

/** Runs the probe exporting OTLP/JSON to the collector; what it printed, and its span. */
async function probe(name: string, extra: Record<string, string> = {}) {
  const out = await runProbe({
    OTEL_EXPORTER_OTLP_ENDPOINT: collector.endpoint,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_METRICS_EXPORTER: "otlp",
    OTEL_LOGS_EXPORTER: "none",
    OTEL_RESOURCE_ATTRIBUTES: `probe.run=${name}`,
    ...extra,
  });
  const ours = (s: CollectedSpan) => s.resource["probe.run"] === name;
  const span = (await collector.waitFor((spans) => spans.some(ours))).find(ours) as CollectedSpan;
  return { ...out, span };
}

/** The resource without what differs from one process to the next. */
function stable(resource: CollectedSpan["resource"]) {
  const { "service.instance.id": _id, "process.pid": _pid, "probe.run": _run, ...rest } = resource;
  return rest;
}

describe("telemetry without NodeSDK", () => {
  it("exports the resource, span, propagation and metrics NodeSDK would", async () => {
    const lean = await probe("lean");
    // Naming the resource detectors is something only NodeSDK does here; "all" are the defaults.
    const sdk = await probe("sdk", { OTEL_NODE_RESOURCE_DETECTORS: "all" });
    expect(lean.setup).toBe("lean");
    expect(sdk.setup).toBe("sdk-node");

    expect(stable(lean.span.resource)).toEqual(stable(sdk.span.resource));
    expect(lean.span.resource).toMatchObject({
      "service.name": "probe",
      "service.version": "1.2.3",
      "probe.run": "lean",
    });
    expect(lean.span.resource["host.name"]).toBeTruthy();
    expect(lean.span.resource["service.instance.id"]).toBeTruthy();
    for (const { span } of [lean, sdk]) {
      expect(span).toMatchObject({
        name: "probe work",
        kind: "CONSUMER",
        attributes: { "probe.n": 7 },
      });
    }
    expect(lean.carrier.traceparent).toBe(`00-${lean.span.traceId}-${lean.span.spanId}-01`);
    expect(Object.keys(lean.carrier)).toEqual(Object.keys(sdk.carrier));

    // Both flushed the counter on shutdown, over OTLP/JSON.
    const counted = collector
      .payloads("metrics")
      .filter(
        (p) =>
          p.contentType === "application/json" && JSON.stringify(p.body).includes("probe.count"),
      );
    expect(counted.length).toBeGreaterThanOrEqual(2);
  });

  it("with tracing off still makes spans, so answers and logs carry trace ids", async () => {
    const out = await runProbe({ OTEL_TRACES_EXPORTER: "none", OTEL_METRICS_EXPORTER: "none" });
    expect(out.setup).toBe("lean");
    expect(out.carrier.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  });
});
