import { resourceFromAttributes } from "@opentelemetry/resources";
import { NodeSDK } from "@opentelemetry/sdk-node";
import { NoopSpanProcessor } from "@opentelemetry/sdk-trace";

export interface TelemetryOptions {
  /** The service's own name, used when `OTEL_SERVICE_NAME` is not set. */
  serviceName: string;
  serviceVersion: string;
}

export interface Telemetry {
  /** Flushes buffered spans and stops the SDK; call once on shutdown. */
  shutdown(): Promise<void>;
}

/**
 * Starts the OpenTelemetry NodeSDK, configured entirely by the standard `OTEL_*` variables
 * (`OTEL_TRACES_EXPORTER`, `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL` including
 * `http/json`, `OTEL_BSP_*`, `OTEL_RESOURCE_ATTRIBUTES`, ...). Call it before anything that makes
 * spans. No auto-instrumentation is loaded: the mesh makes its own spans where it knows their
 * meaning (HTTP server, NATS publish and process, model and tool calls).
 */
export function startTelemetry(options: TelemetryOptions, env = process.env): Telemetry {
  // The standard variable wins; the service name is only its default.
  env.OTEL_SERVICE_NAME ??= options.serviceName;
  const exporters = (env.OTEL_TRACES_EXPORTER ?? "")
    .split(",")
    .map((name) => name.trim())
    .filter((name) => name !== "");
  const exportNothing = exporters.length > 0 && exporters.every((name) => name === "none");
  const sdk = new NodeSDK({
    resource: resourceFromAttributes({ "service.version": options.serviceVersion }),
    instrumentations: [],
    // With export off, the SDK would install no tracer at all; every answer still reports its
    // trace id and every log line its span, so keep tracing on and export nothing.
    ...(exportNothing ? { spanProcessors: [new NoopSpanProcessor()] } : {}),
  });
  sdk.start();
  let stopping: Promise<void> | undefined;
  return {
    shutdown: () => {
      stopping ??= sdk.shutdown().catch(() => undefined);
      return stopping;
    },
  };
}
