import type { Server } from "node:http";
import { startHealthServer } from "./health.js";
import { envInt } from "./shutdown.js";
import type { MeshService } from "./stage-service.js";

/** Starts the optional health endpoint of a worker (`HEALTH_PORT`), for probes. */
export async function maybeStartHealth(
  service: MeshService,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Server | undefined> {
  const port = envInt(env, "HEALTH_PORT", 0);
  if (port === 0) return undefined;
  return startHealthServer(port, { live: () => true, ready: () => service.ready() });
}
