import { describe, expect, it } from "vitest";
import { leanPlan } from "./sdk.js";

describe("leanPlan: what the OTEL_* variables ask for, where no NodeSDK is needed", () => {
  it.each([
    [
      "nothing set: OTLP over HTTP/protobuf, traces and metrics",
      {},
      ["http/protobuf", ["http/protobuf"]],
    ],
    [
      "the e2e suites' settings",
      {
        OTEL_TRACES_EXPORTER: "otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_METRICS_EXPORTER: "otlp",
        OTEL_LOGS_EXPORTER: "none",
      },
      ["http/json", ["http/json"]],
    ],
    [
      "tracing off, metrics off (the bench and fault suites)",
      { OTEL_TRACES_EXPORTER: "none", OTEL_METRICS_EXPORTER: "none", OTEL_LOGS_EXPORTER: "none" },
      ["none", []],
    ],
    [
      "a Prometheus endpoint",
      { OTEL_METRICS_EXPORTER: "prometheus" },
      ["http/protobuf", ["prometheus"]],
    ],
    [
      "per-signal protocols win over the general one",
      {
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/protobuf",
        OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: " http/protobuf ",
      },
      ["http/protobuf", ["http/protobuf"]],
    ],
    [
      '"none" among other trace exporters means otlp, as in NodeSDK',
      { OTEL_TRACES_EXPORTER: "otlp,none" },
      ["http/protobuf", ["http/protobuf"]],
    ],
    [
      '"none" first turns tracing off',
      { OTEL_TRACES_EXPORTER: "none,otlp" },
      ["none", ["http/protobuf"]],
    ],
    [
      "blank values are unset",
      { OTEL_TRACES_EXPORTER: " ", OTEL_PROPAGATORS: "" },
      ["http/protobuf", ["http/protobuf"]],
    ],
    [
      "the default propagators, named",
      { OTEL_PROPAGATORS: "tracecontext, baggage" },
      ["http/protobuf", ["http/protobuf"]],
    ],
  ] as const)("%s", (_what, env, [traces, metrics]) => {
    expect(leanPlan(env)).toEqual({ traces, metrics });
  });

  it.each([
    ["gRPC traces", { OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" }],
    ["gRPC metrics only", { OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: "grpc" }],
    [
      "an unknown protocol (NodeSDK warns about it)",
      { OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/xml" },
    ],
    ["Zipkin", { OTEL_TRACES_EXPORTER: "zipkin" }],
    ["console spans", { OTEL_TRACES_EXPORTER: "otlp,console" }],
    ["console metrics", { OTEL_METRICS_EXPORTER: "console" }],
    ["a logs exporter", { OTEL_LOGS_EXPORTER: "otlp" }],
    ["B3 propagation", { OTEL_PROPAGATORS: "tracecontext,baggage,b3" }],
    ["W3C trace context alone", { OTEL_PROPAGATORS: "tracecontext" }],
    ["a sampler", { OTEL_TRACES_SAMPLER: "parentbased_traceidratio" }],
    ["chosen resource detectors", { OTEL_NODE_RESOURCE_DETECTORS: "env,host" }],
    ["the SDK disabled", { OTEL_SDK_DISABLED: "TRUE" }],
    ["the SDK's own metrics", { OTEL_NODE_EXPERIMENTAL_SDK_METRICS: "true" }],
  ] as const)("leaves %s to NodeSDK", (_what, env) => {
    expect(leanPlan(env)).toBeUndefined();
  });
});
