import type { HandoffConfig } from "@handoff/config";
import { ensureTopology, meshLimits, registerService, trackConnection } from "@handoff/mesh";
import type { NatsConnection } from "@nats-io/nats-core";
import type { Service } from "@nats-io/services";
import type { FastifyInstance } from "fastify";
import type { Logger } from "pino";
import { buildApp } from "./app.js";
import { JobClient } from "./job-client.js";

export interface GatewayDeps {
  nc: NatsConnection;
  config: HandoffConfig;
  logger: Logger;
  version: string;
  host: string;
  port: number;
}

export interface Gateway {
  start(): Promise<string>;
  stop(): Promise<void>;
  readonly app: FastifyInstance | undefined;
}

/**
 * The gateway: streams and KV in place, registered with the NATS service API, HTTP listening.
 * `stop()` stops accepting, lets in-flight requests get their answers, then deregisters.
 */
export function createGateway(deps: GatewayDeps): Gateway {
  const connection = trackConnection(deps.nc);
  let app: FastifyInstance | undefined;
  let service: Service | undefined;
  let topologyReady = false;
  const counters = { requests: 0, in_flight: 0 };

  return {
    get app() {
      return app;
    },
    async start() {
      const limits = meshLimits(deps.config);
      const topology = await ensureTopology(deps.nc, limits);
      topologyReady = true;
      const jobs = new JobClient(deps.nc, topology.jobs);
      app = buildApp({
        jobs,
        config: deps.config,
        logger: deps.logger,
        ready: () => topologyReady && connection.connected(),
      });
      app.addHook("onRequest", async (_request, reply) => {
        counters.requests++;
        counters.in_flight++;
        reply.raw.once("close", () => counters.in_flight--);
      });
      service = await registerService(deps.nc, {
        name: "gateway",
        version: deps.version,
        description: "OpenAI-compatible HTTP front door of the Handoff mesh",
        stats: () => ({ ...counters }),
      });
      const url = await app.listen({ host: deps.host, port: deps.port });
      deps.logger.info({ url, instance: service.info().id }, "gateway ready");
      return url;
    },
    async stop() {
      topologyReady = false;
      await app?.close();
      await service?.stop();
    },
  };
}
