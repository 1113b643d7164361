/**
 * A tool service: `http_get` for the mesh's mid tier, served on NATS. Any number of copies may
 * run; they share the calls. Configured by environment:
 *
 *   NATS_URL                 the mesh's NATS (and NATS_CREDS, NATS_NKEY_SEED, ... as the services)
 *   HTTP_GET_ALLOW_HOSTS     hosts the tool may fetch, comma-separated: docs.nats.io,*.wikipedia.org
 *   HTTP_GET_ALLOW_PRIVATE   1 to allow private and loopback addresses (a lab, never production)
 *   HTTP_GET_MAX_BYTES, HTTP_GET_TIMEOUT_MS
 */
import { connectNats, onShutdown, packageVersion } from "@handoff/mesh";
import { createLogger, startTelemetry } from "@handoff/telemetry";
import { createHttpGetTool, serveTools } from "@handoff/tools";

const NAME = "http-tools";
const version = packageVersion(import.meta.url);
const telemetry = await startTelemetry({ serviceName: NAME, serviceVersion: version });
const logger = createLogger(NAME);

function numberFrom(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return undefined;
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) {
    throw new Error(`${name} must be a positive integer, got "${raw}"`);
  }
  return value;
}

async function main(): Promise<void> {
  const allowHosts = (process.env.HTTP_GET_ALLOW_HOSTS ?? "")
    .split(",")
    .map((host) => host.trim())
    .filter((host) => host !== "");
  if (allowHosts.length === 0) {
    throw new Error("HTTP_GET_ALLOW_HOSTS is empty: name the hosts http_get may fetch");
  }
  const maxBytes = numberFrom("HTTP_GET_MAX_BYTES");
  const timeoutMs = numberFrom("HTTP_GET_TIMEOUT_MS");
  const httpGet = createHttpGetTool({
    allowHosts,
    allowPrivate: process.env.HTTP_GET_ALLOW_PRIVATE === "1",
    ...(maxBytes !== undefined ? { maxBytes } : {}),
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
  });

  const nc = await connectNats({ settings: {}, name: NAME, logger });
  const server = await serveTools(nc, [httpGet], {
    name: NAME,
    version,
    onError: (err, tool) => logger.warn({ err, tool }, "a tool request could not be read"),
  });
  logger.info({ id: server.id, tools: [httpGet.name], allow_hosts: allowHosts }, `${NAME} ready`);
  onShutdown(async () => {
    await server.stop();
    await nc.drain();
    await telemetry.shutdown();
  }, logger);
}

main().catch((error: unknown) => {
  logger.fatal({ err: error }, `${NAME} failed to start`);
  process.exit(1);
});
