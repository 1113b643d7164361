import { loadConfig } from "@handoff/config";
import { connectNats, envInt, isStartupAborted, onShutdown, packageVersion } from "@handoff/mesh";
import {
  createLogger,
  logStartupFailure,
  registerConfigSecrets,
  startTelemetry,
} from "@handoff/telemetry";
import type { NatsConnection } from "@nats-io/nats-core";
import { createGateway } from "./service.js";

const NAME = "gateway";

async function main(): Promise<void> {
  // 1. Config: HANDOFF_CONFIG, or the built-in sim profile.
  const { config, source } = await loadConfig();
  // Every secret the config names, so logs and provider errors are scrubbed of its value.
  registerConfigSecrets(config);
  // 2. Telemetry and logs.
  const version = packageVersion(import.meta.url);
  const telemetry = await startTelemetry({ serviceName: NAME, serviceVersion: version });
  const logger = createLogger(NAME);
  logger.info({ config: source, version }, "starting");
  // 3. The service. It listens at once, then connects to NATS, retrying until NATS answers.
  let nc: NatsConnection | undefined;
  const gateway = createGateway({
    nc: async () => {
      nc = await connectNats({ settings: config.nats, name: NAME, logger });
      return nc;
    },
    config,
    logger,
    version,
    host: process.env.HOST?.trim() || "0.0.0.0",
    port: envInt(process.env, "PORT", 8080),
  });
  // 4. Drain on SIGTERM/SIGINT: finish in-flight requests, then leave NATS. A start still waiting
  // for NATS ends there.
  onShutdown(async () => {
    await gateway.stop();
    if (nc && !nc.isClosed()) await nc.drain();
    await telemetry.shutdown();
  }, logger);
  // 5. Keys, HTTP (/healthz at once, /readyz 503 until ready), NATS, streams: "gateway ready".
  await gateway.start();
}

main().catch((error: unknown) => {
  // A signal stopped the start: onShutdown exits cleanly.
  if (isStartupAborted(error)) return;
  // One line for a config or environment mistake; the stack for a bug, or at LOG_LEVEL=debug.
  logStartupFailure(NAME, error);
  process.exit(1);
});
