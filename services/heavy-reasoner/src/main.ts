import { loadConfig } from "@handoff/config";
import {
  connectNats,
  envInt,
  isStartupAborted,
  maybeStartHealth,
  onShutdown,
  packageVersion,
} from "@handoff/mesh";
import {
  createLogger,
  logStartupFailure,
  registerConfigSecrets,
  startTelemetry,
} from "@handoff/telemetry";
import type { NatsConnection } from "@nats-io/nats-core";
import { createHeavyReasonerService } from "./service.js";

const NAME = "heavy-reasoner";

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
  // 3. The service. It connects to NATS in start(), retrying until NATS and JetStream answer.
  let nc: NatsConnection | undefined;
  const service = createHeavyReasonerService({
    nc: async () => {
      nc = await connectNats({ settings: config.nats, name: NAME, logger });
      return nc;
    },
    config,
    logger,
    version,
    concurrency: envInt(process.env, "HANDOFF_CONCURRENCY", 8),
  });
  // 4. Probes first: alive at once, ready once started (HEALTH_PORT).
  const health = await maybeStartHealth(service);
  // 5. Drain on SIGTERM/SIGINT, which also ends a start still waiting for NATS.
  onShutdown(async () => {
    await service.stop();
    health?.close();
    if (nc && !nc.isClosed()) await nc.drain();
    await telemetry.shutdown();
  }, logger);
  // 6. NATS, streams, consumer, registration: retried until they work; then "<stage> ready".
  await service.start();
}

main().catch((error: unknown) => {
  // A signal stopped the start: onShutdown exits cleanly.
  if (isStartupAborted(error)) return;
  // One line for a config or environment mistake; the stack for a bug, or at LOG_LEVEL=debug.
  logStartupFailure(NAME, error);
  process.exit(1);
});
