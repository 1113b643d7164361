import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { ServiceNames } from "@handoff/contracts";
import { describe, expect, it } from "vitest";
import { entry, type ServiceName } from "./harness.js";

/**
 * What each service loads at start. A service that only routes or answers has no use for the MCP
 * SDK (only the tool-executor talks to MCP servers): loading it cost the classifier, which reached
 * it through the routing library's calculator, about 200 modules, 5 MB of heap after GC and 11 MB
 * of RSS before its first job. Nor does a service load OpenTelemetry's NodeSDK, with every
 * exporter it knows, unless the OTEL_* variables ask for one it alone sets up.
 */

const run = promisify(execFile);

/**
 * Imports a service's entry point with a resolve hook that records every module it loads, then
 * prints them and exits: the static imports are all resolved by the time `import()` returns, and
 * the telemetry's, loaded as the service starts, once a module whose URL holds `argv[2]` is.
 */
const RECORDER = `
import { registerHooks } from "node:module";
const loaded = new Set();
registerHooks({
  resolve(specifier, context, next) {
    const resolved = next(specifier, context);
    loaded.add(resolved.url);
    return resolved;
  },
});
await import(process.argv[1]);
const until = Date.now() + 20_000;
while (![...loaded].some((url) => url.includes(process.argv[2])) && Date.now() < until) {
  await new Promise((resolve) => setTimeout(resolve, 20));
}
process.stdout.write(JSON.stringify([...loaded]));
process.exit(0);
`;

/** The telemetry settings of the e2e suites: OTLP/JSON traces and metrics, no logs. */
const OTLP_JSON = {
  OTEL_TRACES_EXPORTER: "otlp",
  OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
  OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:1",
  OTEL_METRICS_EXPORTER: "otlp",
  OTEL_LOGS_EXPORTER: "none",
};

async function modulesOf(
  name: ServiceName,
  otel: Record<string, string> = OTLP_JSON,
  waitFor = "exporter-trace-otlp-http",
): Promise<string[]> {
  const { stdout } = await run(
    process.execPath,
    ["--input-type=module", "--eval", RECORDER, entry(name), waitFor],
    {
      // Nowhere to connect: the service starts, and never gets further than its telemetry.
      env: { ...process.env, NATS_URL: "nats://127.0.0.1:1", LOG_LEVEL: "silent", ...otel },
      timeout: 30_000,
    },
  );
  return JSON.parse(stdout) as string[];
}

const otel = (urls: readonly string[], name: string) =>
  urls.filter((url) => url.includes(`/@opentelemetry/${name}/`));

const mcp = (urls: readonly string[]) =>
  urls.filter((url) => url.includes("@modelcontextprotocol"));

describe("what each service loads", () => {
  it("only the tool-executor loads the MCP SDK", async () => {
    const graphs = await Promise.all(
      ServiceNames.map(async (name) => [name, await modulesOf(name)] as const),
    );
    for (const [name, urls] of graphs) {
      // The recorder saw the service's own modules, so an empty MCP list means something.
      expect(urls.some((url) => url.includes(`/services/${name}/dist/`))).toBe(true);
      if (name === "tool-executor") expect(mcp(urls).length).toBeGreaterThan(0);
      else expect(mcp(urls), `${name} loads the MCP SDK`).toEqual([]);
    }
  });

  it("loads only the OpenTelemetry exporters the OTEL_* variables name, without NodeSDK", async () => {
    for (const name of ServiceNames) {
      const urls = await modulesOf(name);
      expect(otel(urls, "exporter-trace-otlp-http").length, name).toBeGreaterThan(0);
      expect(otel(urls, "exporter-metrics-otlp-http").length, name).toBeGreaterThan(0);
      for (const unused of [
        "sdk-node",
        "exporter-trace-otlp-grpc",
        "exporter-trace-otlp-proto",
        "exporter-zipkin",
        "exporter-prometheus",
        "propagator-b3",
        "sdk-logs",
      ]) {
        expect(otel(urls, unused), `${name} loads ${unused}`).toEqual([]);
      }
    }
    // What only NodeSDK sets up still gets it.
    const zipkin = await modulesOf("gateway", { OTEL_TRACES_EXPORTER: "zipkin" }, "sdk-node");
    expect(otel(zipkin, "sdk-node").length).toBeGreaterThan(0);
  });
});
