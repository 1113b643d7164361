import { context, DiagConsoleLogger, diag, metrics, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import {
  CompositePropagator,
  diagLogLevelFromString,
  getNumberFromEnv,
  getStringFromEnv,
  getStringListFromEnv,
  W3CBaggagePropagator,
  W3CTraceContextPropagator,
} from "@opentelemetry/core";
import {
  detectResources,
  envDetector,
  hostDetector,
  osDetector,
  processDetector,
  resourceFromAttributes,
  serviceInstanceIdDetector,
} from "@opentelemetry/resources";
import type { MeterProvider, MetricReader } from "@opentelemetry/sdk-metrics";
import {
  BatchSpanProcessor,
  NoopSpanProcessor,
  type SpanLimits,
  type SpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";

export interface TelemetryOptions {
  /** The service's own name, used when `OTEL_SERVICE_NAME` is not set. */
  serviceName: string;
  serviceVersion: string;
}

export interface Telemetry {
  /** How the SDK was set up: "lean" loads only the exporters named, "sdk-node" is NodeSDK. */
  readonly setup: "lean" | "sdk-node";
  /** Flushes buffered spans and metrics and stops the SDK; call once on shutdown. */
  shutdown(): Promise<void>;
}

type OtlpProtocol = "http/protobuf" | "http/json";

/** What {@link startTelemetry} sets up without NodeSDK: OTLP over HTTP and Prometheus only. */
export interface LeanPlan {
  /** "none": spans are made (every answer reports its trace id) and exported nowhere. */
  traces: OtlpProtocol | "none";
  metrics: (OtlpProtocol | "prometheus")[];
}

/**
 * Reads the `OTEL_*` variables the way NodeSDK does and says whether they ask for nothing beyond
 * OTLP over HTTP (protobuf or JSON) for traces and metrics, a Prometheus endpoint, the W3C
 * propagators, the default resource detectors and the default sampler. Anything else (gRPC, Zipkin,
 * console exporters, B3, a sampler, chosen detectors, a logs exporter, the SDK disabled) returns
 * undefined, and NodeSDK does the set-up as before.
 *
 * `OTEL_LOGS_EXPORTER` unset starts no logs pipeline: the services log with pino to stdout and emit
 * no OpenTelemetry log records, so NodeSDK's default OTLP logs exporter would never send anything.
 */
export function leanPlan(env: NodeJS.ProcessEnv = process.env): LeanPlan | undefined {
  // @opentelemetry/core's readers, over `env`: blank is unset, lists are trimmed and deduplicated.
  const string = (name: string) => (env[name]?.trim() ? env[name] : undefined);
  const list = (name: string) => [
    ...new Set(
      (string(name) ?? "")
        .split(",")
        .map((item) => item.trim())
        .filter((item) => item !== ""),
    ),
  ];
  const flag = (name: string) => env[name]?.trim().toLowerCase() === "true";
  if (flag("OTEL_SDK_DISABLED") || flag("OTEL_NODE_EXPERIMENTAL_SDK_METRICS")) return undefined;
  if (string("OTEL_NODE_RESOURCE_DETECTORS") || string("OTEL_TRACES_SAMPLER")) return undefined;
  const propagators = list("OTEL_PROPAGATORS");
  if (propagators.length > 0 && propagators.join(",") !== "tracecontext,baggage") return undefined;
  const logs = list("OTEL_LOGS_EXPORTER");
  if (logs.length > 0 && !logs.includes("none")) return undefined;
  // A protocol NodeSDK would warn about (or gRPC) is left to NodeSDK.
  const otlp = (protocol: string): OtlpProtocol | undefined =>
    protocol === "http/protobuf" || protocol === "http/json" ? protocol : undefined;

  // NodeSDK: "none" first turns tracing off; empty, or "none" among others, means otlp.
  let traceExporters = list("OTEL_TRACES_EXPORTER").filter((name) => name !== "null");
  let traces: LeanPlan["traces"] | undefined = "none";
  if (traceExporters[0] !== "none") {
    if (traceExporters.length === 0 || traceExporters.includes("none")) traceExporters = ["otlp"];
    if (traceExporters.join(",") !== "otlp") return undefined;
    traces = otlp(
      string("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") ??
        string("OTEL_EXPORTER_OTLP_PROTOCOL") ??
        "http/protobuf",
    );
    if (traces === undefined) return undefined;
  }

  const metricExporters = list("OTEL_METRICS_EXPORTER");
  if (metricExporters.includes("none")) return { traces, metrics: [] };
  const metricsProtocol =
    (
      string("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") ?? string("OTEL_EXPORTER_OTLP_PROTOCOL")
    )?.trim() || "http/protobuf";
  const readers: LeanPlan["metrics"] = [];
  for (const name of metricExporters.length > 0 ? metricExporters : ["otlp"]) {
    const reader =
      name === "prometheus" ? name : name === "otlp" ? otlp(metricsProtocol) : undefined;
    if (reader === undefined) return undefined;
    readers.push(reader);
  }
  return { traces, metrics: readers };
}

/**
 * Starts OpenTelemetry, configured entirely by the standard `OTEL_*` variables
 * (`OTEL_TRACES_EXPORTER`, `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL` including
 * `http/json`, `OTEL_BSP_*`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_METRICS_EXPORTER`, ...). Call it
 * before anything that makes spans. No auto-instrumentation is loaded: the mesh makes its own spans
 * where it knows their meaning (HTTP server, NATS publish and process, model and tool calls).
 *
 * NodeSDK loads every exporter it knows at import (gRPC, Zipkin, B3, Prometheus, three of each
 * OTLP flavour): a started service holds about 10 MB more RSS with it (bench/hot-path.md). Where the variables ask only for what
 * {@link leanPlan} covers, the same pieces NodeSDK would build are built here, and only the
 * exporters named are loaded; anything else goes to NodeSDK.
 */
export async function startTelemetry(options: TelemetryOptions): Promise<Telemetry> {
  // The standard variable wins; the service name is only its default.
  process.env.OTEL_SERVICE_NAME ??= options.serviceName;
  const plan = leanPlan();
  return plan ? startLean(plan, options) : startNodeSdk(options);
}

async function startNodeSdk(options: TelemetryOptions): Promise<Telemetry> {
  const { NodeSDK } = await import("@opentelemetry/sdk-node");
  const exporters = getStringListFromEnv("OTEL_TRACES_EXPORTER") ?? [];
  const exportNothing = exporters.length > 0 && exporters.every((name) => name === "none");
  const sdk = new NodeSDK({
    resource: resourceFromAttributes({ "service.version": options.serviceVersion }),
    instrumentations: [],
    // With export off, the SDK would install no tracer at all; every answer still reports its
    // trace id and every log line its span, so keep tracing on and export nothing.
    ...(exportNothing ? { spanProcessors: [new NoopSpanProcessor()] } : {}),
  });
  sdk.start();
  return stopOnce("sdk-node", () => sdk.shutdown());
}

/** What NodeSDK 0.301 builds for a {@link LeanPlan}, piece by piece, in the same order. */
async function startLean(plan: LeanPlan, options: TelemetryOptions): Promise<Telemetry> {
  const logLevel = getStringFromEnv("OTEL_LOG_LEVEL");
  if (logLevel !== undefined) {
    diag.setLogger(new DiagConsoleLogger(), { logLevel: diagLogLevelFromString(logLevel) });
  }
  const contextManager = new AsyncLocalStorageContextManager();
  contextManager.enable();
  context.setGlobalContextManager(contextManager);
  propagation.setGlobalPropagator(
    new CompositePropagator({
      propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()],
    }),
  );
  const resource = resourceFromAttributes({ "service.version": options.serviceVersion }).merge(
    detectResources({
      detectors: [
        serviceInstanceIdDetector,
        processDetector,
        hostDetector,
        osDetector,
        envDetector,
      ],
    }),
  );

  const readers = await Promise.all(plan.metrics.map(metricReader));
  let meterProvider: MeterProvider | undefined;
  if (readers.length > 0) {
    const sdkMetrics = await import("@opentelemetry/sdk-metrics");
    meterProvider = new sdkMetrics.MeterProvider({ resource, views: [], readers });
    metrics.setGlobalMeterProvider(meterProvider);
  }

  const spanProcessors: SpanProcessor[] =
    plan.traces === "none"
      ? [new NoopSpanProcessor()]
      : [
          new BatchSpanProcessor({
            exporter: await spanExporter(plan.traces),
            maxQueueSize: positiveFromEnv("OTEL_BSP_MAX_QUEUE_SIZE"),
            scheduledDelayMillis: positiveFromEnv("OTEL_BSP_SCHEDULE_DELAY"),
            exportTimeoutMillis: positiveFromEnv("OTEL_BSP_EXPORT_TIMEOUT"),
            maxExportBatchSize: positiveFromEnv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
          }),
        ];
  const tracerProvider = new TracerProvider({
    resource,
    spanLimits: spanLimitsFromEnv(),
    spanProcessors,
  });
  trace.setGlobalTracerProvider(tracerProvider);
  return stopOnce("lean", async () => {
    await Promise.all([tracerProvider.shutdown(), meterProvider?.shutdown()]);
  });
}

async function spanExporter(protocol: OtlpProtocol) {
  if (protocol === "http/json") {
    return new (await import("@opentelemetry/exporter-trace-otlp-http")).OTLPTraceExporter();
  }
  return new (await import("@opentelemetry/exporter-trace-otlp-proto")).OTLPTraceExporter();
}

async function metricReader(kind: LeanPlan["metrics"][number]): Promise<MetricReader> {
  if (kind === "prometheus") {
    const { PrometheusExporter } = await import("@opentelemetry/exporter-prometheus");
    return new PrometheusExporter({
      host: getStringFromEnv("OTEL_EXPORTER_PROMETHEUS_HOST"),
      port: getNumberFromEnv("OTEL_EXPORTER_PROMETHEUS_PORT"),
    });
  }
  const exporter =
    kind === "http/json"
      ? new (await import("@opentelemetry/exporter-metrics-otlp-http")).OTLPMetricExporter()
      : new (await import("@opentelemetry/exporter-metrics-otlp-proto")).OTLPMetricExporter();
  const { PeriodicExportingMetricReader } = await import("@opentelemetry/sdk-metrics");
  const exportIntervalMillis = positiveFromEnv("OTEL_METRIC_EXPORT_INTERVAL") ?? 60_000;
  const exportTimeoutMillis = Math.min(
    positiveFromEnv("OTEL_METRIC_EXPORT_TIMEOUT") ?? 30_000,
    exportIntervalMillis,
  );
  return new PeriodicExportingMetricReader({ exporter, exportIntervalMillis, exportTimeoutMillis });
}

/** A number from the environment, or undefined (and a diag warning) when it is not above 0. */
function positiveFromEnv(name: string): number | undefined {
  const value = getNumberFromEnv(name);
  if (value !== undefined && value <= 0) {
    diag.warn(`${name} (${value}) is invalid, expected number greater than 0, using default.`);
    return undefined;
  }
  return value;
}

function spanLimitsFromEnv(): SpanLimits {
  const number = (...names: string[]) =>
    names.map((name) => getNumberFromEnv(name)).find((value) => value !== undefined);
  return {
    attributeCountLimit: number("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT"),
    attributeValueLengthLimit: number(
      "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
      "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    ),
    eventCountLimit: number("OTEL_SPAN_EVENT_COUNT_LIMIT"),
    linkCountLimit: number("OTEL_SPAN_LINK_COUNT_LIMIT"),
    attributePerEventCountLimit: number(
      "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
      "OTEL_SPAN_ATTRIBUTE_PER_EVENT_COUNT_LIMIT",
    ),
    attributePerLinkCountLimit: number(
      "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
      "OTEL_SPAN_ATTRIBUTE_PER_LINK_COUNT_LIMIT",
    ),
  };
}

function stopOnce(setup: Telemetry["setup"], stop: () => Promise<void>): Telemetry {
  let stopping: Promise<void> | undefined;
  return {
    setup,
    shutdown: () => {
      stopping ??= stop().catch(() => undefined);
      return stopping;
    },
  };
}
