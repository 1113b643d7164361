import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import type { Logger } from "pino";

export interface ConnectOptions {
  /** Comma-separated server URLs, as in `NATS_URL`. */
  servers?: string;
  /** Connection name shown by the server's monitoring (e.g. `classifier`). */
  name: string;
  logger?: Logger;
  /** Keep retrying the first connect instead of failing at once (services start before NATS). */
  waitOnFirstConnect?: boolean;
}

export const DEFAULT_NATS_URL = "nats://127.0.0.1:4222";

export function natsServers(value: string | undefined): string[] {
  const servers = (value ?? DEFAULT_NATS_URL)
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  return servers.length > 0 ? servers : [DEFAULT_NATS_URL];
}

/**
 * Connects with unbounded reconnects: a NATS restart or a dropped link pauses the mesh, it does not
 * kill it. Connection state changes are logged.
 */
export async function connectNats(options: ConnectOptions): Promise<NatsConnection> {
  const nc = await connect({
    servers: natsServers(options.servers),
    name: options.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    waitOnFirstConnect: options.waitOnFirstConnect ?? false,
  });
  const logger = options.logger;
  if (logger) {
    logger.info({ server: nc.getServer() }, "connected to NATS");
    void (async () => {
      for await (const status of nc.status()) {
        switch (status.type) {
          case "disconnect":
          case "reconnecting":
            logger.warn({ nats: status }, `NATS ${status.type}`);
            break;
          case "reconnect":
            logger.info({ nats: status }, "NATS reconnected");
            break;
          case "error":
            logger.error({ nats: status }, "NATS error");
            break;
          default:
            logger.debug({ nats: status }, `NATS ${status.type}`);
        }
      }
    })();
  }
  return nc;
}

/** Follows the connection's status events, for readiness probes. */
export function trackConnection(nc: NatsConnection): { connected: () => boolean } {
  let connected = !nc.isClosed();
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === "disconnect" || status.type === "close") connected = false;
      if (status.type === "reconnect") connected = true;
    }
    connected = false;
  })();
  return { connected: () => connected && !nc.isClosed() };
}
