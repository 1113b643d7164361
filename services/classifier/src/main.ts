import { loadConfig } from "@handoff/config";
import { connectNats, envInt, maybeStartHealth, onShutdown, packageVersion } from "@handoff/mesh";
import { createLogger, startTelemetry } from "@handoff/telemetry";
import { createClassifierService, loadRouting } from "./service.js";

const NAME = "classifier";

async function main(): Promise<void> {
  // 1. Config: HANDOFF_CONFIG, or the built-in sim profile.
  const { config, source } = await loadConfig();
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
    servers: process.env.NATS_URL,
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
  console.error(`${NAME} failed to start:`, error);
  process.exit(1);
});
