import type { HandoffConfig } from "@handoff/config";
import {
  ensureTopology,
  loadMeshSigner,
  meshLimits,
  registerService,
  trackConnection,
} from "@handoff/mesh";
import type { NatsConnection } from "@nats-io/nats-core";
import type { Service } from "@nats-io/services";
import type { FastifyInstance } from "fastify";
import type { Logger } from "pino";
import { buildApp } from "./app.js";
import { loadApiKeys } from "./auth.js";
import { JobClient } from "./job-client.js";

export interface GatewayDeps {
  nc: NatsConnection;
  config: HandoffConfig;
  logger: Logger;
  version: string;
  host: string;
  port: number;
  /** Where the API keys' variables are read; `process.env` when absent. */
  env?: Readonly<Record<string, string | undefined>>;
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
      // Keys first: a missing variable fails the start before anything touches NATS.
      const apiKeys = loadApiKeys(deps.config.gateway.api_keys, deps.env ?? process.env);
      const signer = loadMeshSigner(deps.config.mesh, deps.env ?? process.env);
      const limits = meshLimits(deps.config);
      const topology = await ensureTopology(deps.nc, limits);
      topologyReady = true;
      const jobs = new JobClient(deps.nc, topology.jobs, { signer, logger: deps.logger });
      app = buildApp({
        jobs,
        config: deps.config,
        logger: deps.logger,
        ready: () => topologyReady && connection.connected(),
        version: deps.version,
        apiKeys,
        maxPayload: () => deps.nc.info?.max_payload,
        // Counted before the key check, so refused requests (401, 429) show in the stats too.
        onRequest: (reply) => {
          counters.requests++;
          counters.in_flight++;
          reply.raw.once("close", () => counters.in_flight--);
        },
      });
      service = await registerService(deps.nc, {
        name: "gateway",
        version: deps.version,
        description: "OpenAI-compatible HTTP front door of the Handoff mesh",
        stats: () => ({ ...counters }),
      });
      const url = await app.listen({ host: deps.host, port: deps.port });
      // The message is what deployments and the e2e harness wait for: keep it as it is.
      deps.logger.info(
        {
          url,
          instance: service.info().id,
          auth: apiKeys.length > 0 ? "api_key" : "none",
          mesh_signing: signer.enabled,
          api_keys: apiKeys.map((key) => key.name),
        },
        "gateway ready",
      );
      return url;
    },
    async stop() {
      topologyReady = false;
      await app?.close();
      await service?.stop();
    },
  };
}
