import { createRequire } from "node:module";
import type { Logger } from "pino";

/**
 * Runs `stop` once on the first SIGTERM or SIGINT, then exits; a second signal exits at once.
 * Drain logic lives in `stop`; this only owns the process.
 */
export function onShutdown(stop: () => Promise<void>, logger: Logger, timeoutMs = 30_000): void {
  let stopping = false;
  const handle = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, "second signal: exiting now");
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, "draining");
    const force = setTimeout(() => {
      logger.error("drain did not finish in time: exiting");
      process.exit(1);
    }, timeoutMs);
    force.unref();
    stop().then(
      () => {
        logger.info("stopped");
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, "stop failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", handle);
  process.on("SIGINT", handle);
}

/** An integer from the environment, or the fallback; a malformed value is an error naming it. */
export function envInt(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) {
    throw new Error(`${name} must be a non-negative integer, got "${raw}"`);
  }
  return value;
}

/** The `version` of the package a module belongs to (its `../package.json`, from src or dist). */
export function packageVersion(moduleUrl: string): string {
  const require = createRequire(moduleUrl);
  return (require("../package.json") as { version: string }).version;
}
