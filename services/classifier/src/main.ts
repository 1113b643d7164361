import { loadConfig } from "@handoff/config";
import { connectNats, envInt, maybeStartHealth, onShutdown, packageVersion } from "@handoff/mesh";
import {
  createLogger,
  logStartupFailure,
  registerConfigSecrets,
  startTelemetry,
} from "@handoff/telemetry";
import { createClassifierService, loadRouting } from "./service.js";

const NAME = "classifier";

async function main(): Promise<void> {
  // 1. Config: HANDOFF_CONFIG, or the built-in sim profile.
  const { config, source } = await loadConfig();
  // Every secret the config names, so logs and provider errors are scrubbed of its value.
  registerConfigSecrets(config);
  // 2. Telemetry and logs.
  const version = packageVersion(import.meta.url);
  const telemetry = startTelemetry({ serviceName: NAME, serviceVersion: version });
  const logger = createLogger(NAME);
  logger.info({ config: source, version }, "starting");
  // The routing strategy, and its model file when it has one: a bad model stops the start here.
  const routing = await loadRouting(config);
  logger.info(
    {
      strategy: routing.name,
      threshold: routing.thresholds.heavy,
      model: config.routing.model ?? "builtin",
    },
    "routing",
  );
  // 3. NATS.
  const nc = await connectNats({
    settings: config.nats,
    name: NAME,
    logger,
    waitOnFirstConnect: true,
  });
  // 4. The service.
  const service = createClassifierService({
    nc,
    config,
    logger,
    version,
    routing,
    concurrency: envInt(process.env, "HANDOFF_CONCURRENCY", 32),
  });
  await service.start();
  const health = await maybeStartHealth(service);
  // 5. Drain on SIGTERM/SIGINT.
  onShutdown(async () => {
    await service.stop();
    health?.close();
    await nc.drain();
    await telemetry.shutdown();
  }, logger);
}

main().catch((error: unknown) => {
  // One line for a config or environment mistake; the stack for a bug, or at LOG_LEVEL=debug.
  logStartupFailure(NAME, error);
  process.exit(1);
});
