import type { ServiceName } from "@handoff/contracts";
import type { NatsConnection } from "@nats-io/nats-core";
import { type Service, Svcm } from "@nats-io/services";

export interface RegisterOptions {
  name: ServiceName;
  /** Semver of the running build. */
  version: string;
  description: string;
  metadata?: Record<string, string>;
  /** Live counters, returned by `$SRV.STATS` and by the `status` endpoint. */
  stats: () => Record<string, unknown>;
}

/**
 * Registers an instance with the NATS service API (the micro protocol), so `$SRV.PING`,
 * `$SRV.INFO` and `$SRV.STATS` (e.g. `nats micro ls`) find every replica of every service. Each
 * also answers `handoff.v1.svc.<name>.status` with its counters.
 */
export async function registerService(
  nc: NatsConnection,
  options: RegisterOptions,
): Promise<Service> {
  const service = await new Svcm(nc).add({
    name: options.name,
    version: options.version,
    description: options.description,
    metadata: options.metadata ?? {},
    statsHandler: async () => options.stats(),
  });
  service.addEndpoint("status", {
    subject: `handoff.v1.svc.${options.name}.status`,
    handler: (error, msg) => {
      if (error) return;
      msg.respond(JSON.stringify({ id: service.info().id, ...options.stats() }));
    },
    metadata: { description: "counters of one instance" },
  });
  return service;
}
