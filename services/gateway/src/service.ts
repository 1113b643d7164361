import type { HandoffConfig } from "@handoff/config";
import {
  connectWithRetry,
  ensureJobDoor,
  ensureTopology,
  JobClient,
  loadMeshSigner,
  meshLimits,
  type NatsSource,
  registerService,
  retryStartup,
  StartupAborted,
  type StartupBackoff,
  trackConnection,
} from "@handoff/mesh";
import type { NatsConnection } from "@nats-io/nats-core";
import type { Service } from "@nats-io/services";
import type { FastifyInstance } from "fastify";
import type { Logger } from "pino";
import { buildApp } from "./app.js";
import { loadApiKeys } from "./auth.js";
import { JobIntake } from "./intake.js";

export interface GatewayDeps {
  /**
   * The NATS connection, or a function that opens one: `start()` then listens first and retries
   * it (with the streams and the registration) until NATS and JetStream answer.
   */
  nc: NatsSource;
  config: HandoffConfig;
  logger: Logger;
  version: string;
  host: string;
  port: number;
  /** Where the API keys' variables are read; `process.env` when absent. */
  env?: Readonly<Record<string, string | undefined>>;
  /** The waits between start-up attempts (default 250 ms doubling to 5 s). */
  startupBackoff?: StartupBackoff;
}

export interface Gateway {
  /**
   * Reads the keys (a config error throws before anything listens), listens, then connects, sets
   * up the streams and registers, retrying each until it works. Resolves with the URL once ready;
   * rejects with `StartupAborted` when `stop()` comes first.
   */
  start(): Promise<string>;
  stop(): Promise<void>;
  readonly app: FastifyInstance | undefined;
}

/**
 * The gateway: HTTP listening from the start (`/healthz` 200, `/readyz` and every other route 503
 * until the mesh is up), then streams and KV in place and registered with the NATS service API.
 * `stop()` stops accepting, lets in-flight requests get their answers, then deregisters.
 */
export function createGateway(deps: GatewayDeps): Gateway {
  let connection: { connected: () => boolean } | undefined;
  let nc: NatsConnection | undefined;
  let app: FastifyInstance | undefined;
  let service: Service | undefined;
  let jobs: JobClient | undefined;
  let intake: JobIntake | undefined;
  let topologyReady = false;
  const counters = { requests: 0, in_flight: 0 };
  // stop() during start-up ends the retries.
  const stopping = new AbortController();
  const retry = {
    logger: deps.logger,
    signal: stopping.signal,
    backoff: deps.startupBackoff,
  };

  return {
    get app() {
      return app;
    },
    async start() {
      // Keys first: a missing variable fails the start before anything listens or touches NATS.
      const apiKeys = loadApiKeys(deps.config.gateway.api_keys, deps.env ?? process.env);
      const signer = loadMeshSigner(deps.config.mesh, deps.env ?? process.env);
      const limits = meshLimits(deps.config);
      app = buildApp({
        // Until the mesh is up, routes other than the probes answer 503.
        jobs: () => jobs,
        config: deps.config,
        logger: deps.logger,
        ready: () => topologyReady && connection?.connected() === true,
        version: deps.version,
        apiKeys,
        maxPayload: () => nc?.info?.max_payload,
        // Counted before the key check, so refused requests (401, 429) show in the stats too.
        onRequest: (reply) => {
          counters.requests++;
          counters.in_flight++;
          reply.raw.once("close", () => counters.in_flight--);
        },
      });
      const url = await app.listen({ host: deps.host, port: deps.port });
      deps.logger.info({ url }, "gateway listening; not ready until NATS and the streams are up");

      const conn = await connectWithRetry(deps.nc, retry);
      nc = conn;
      connection = trackConnection(conn);
      const what = "set up the streams and register the service";
      await retryStartup(
        async () => {
          // The gateway alone keeps Idempotency-Key claims: its bucket is made here, not by stages.
          const topology = await ensureTopology(conn, {
            ...limits,
            idempotencyWindowMs: deps.config.gateway.idempotency_window_ms,
          });
          // The NATS door: job requests in (its stream and the intake consumer).
          await ensureJobDoor(topology.jsm, limits);
          const client = new JobClient(conn, topology.jobs, { signer, logger: deps.logger });
          // The NATS door's intake; job events are published by whoever writes a record.
          const door = {
            intake: new JobIntake({
              jobs: client,
              config: deps.config,
              logger: deps.logger,
              signer,
            }),
          };
          const closeDoor = async () => {
            await door.intake.stop().catch(() => {});
          };
          let registered: Service;
          try {
            await door.intake.start();
            registered = await registerService(conn, {
              name: "gateway",
              version: deps.version,
              description: "OpenAI-compatible HTTP front door of the Handoff mesh",
              stats: () => ({
                ...counters,
                nats_requests: { ...door.intake.stats },
              }),
            });
          } catch (error) {
            // This attempt's consumers stop: the next attempt starts its own.
            await closeDoor();
            throw error;
          }
          if (stopping.signal.aborted) {
            await registered.stop().catch(() => {});
            await closeDoor();
            throw new StartupAborted(what);
          }
          service = registered;
          ({ intake } = door);
          jobs = client;
        },
        { ...retry, what },
      );
      topologyReady = true;
      // The message is what deployments and the e2e harness wait for: keep it as it is.
      deps.logger.info(
        {
          url,
          instance: service?.info().id,
          auth: apiKeys.length > 0 ? "api_key" : "none",
          mesh_signing: signer.enabled,
          api_keys: apiKeys.map((key) => key.name),
        },
        "gateway ready",
      );
      return url;
    },
    async stop() {
      stopping.abort();
      topologyReady = false;
      await app?.close();
      await intake?.stop();
      await service?.stop();
    },
  };
}
