import type { Stage } from "@handoff/contracts";
import type { NatsConnection } from "@nats-io/nats-core";
import type { Service } from "@nats-io/services";
import type { Logger } from "pino";
import { trackConnection } from "./connect.js";
import { type StageHandler, StageRunner } from "./runner.js";
import { registerService } from "./service-api.js";
import type { MeshSigner } from "./signing.js";
import { ensureTopology } from "./topology.js";

export interface MeshLimits {
  ackWaitMs: number;
  maxDeliveries: number;
  maxHops: number;
  replicas?: number;
}

export interface StageServiceOptions {
  nc: NatsConnection;
  stage: Stage;
  version: string;
  description: string;
  handler: StageHandler;
  logger: Logger;
  limits: MeshLimits;
  concurrency: number;
  drainTimeoutMs?: number;
  /** Signs and checks the stage's messages (see `loadMeshSigner`); default: signing off. */
  signer?: MeshSigner;
  backoffMs?: (delivery: number) => number;
}

/** A running mesh service: started once, stopped (drained) once. No process side effects. */
export interface MeshService {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Connected to NATS with streams, consumer and registration in place. */
  ready(): boolean;
  /** Service API instance id, once started. */
  readonly id: string | undefined;
}

/** The shape every stage worker shares: topology, service registration, and the runner. */
export function createStageService(options: StageServiceOptions): MeshService {
  const connection = trackConnection(options.nc);
  let runner: StageRunner | undefined;
  let service: Service | undefined;
  let started = false;
  return {
    get id() {
      return service?.info().id;
    },
    async start() {
      const topology = await ensureTopology(options.nc, options.limits);
      service = await registerService(options.nc, {
        name: options.stage,
        version: options.version,
        description: options.description,
        metadata: { concurrency: String(options.concurrency) },
        stats: () => ({ ...runner?.stats() }),
      });
      runner = new StageRunner({
        nc: options.nc,
        topology,
        stage: options.stage,
        handler: options.handler,
        instance: service.info().id,
        logger: options.logger,
        limits: options.limits,
        concurrency: options.concurrency,
        ...(options.drainTimeoutMs !== undefined ? { drainTimeoutMs: options.drainTimeoutMs } : {}),
        ...(options.signer ? { signer: options.signer } : {}),
        ...(options.backoffMs ? { backoffMs: options.backoffMs } : {}),
      });
      await runner.start();
      started = true;
      options.logger.info(
        { instance: service.info().id, subject: runner.subject, concurrency: options.concurrency },
        `${options.stage} ready`,
      );
    },
    async stop() {
      started = false;
      await runner?.stop();
      await service?.stop();
    },
    ready: () => started && connection.connected(),
  };
}

/** The mesh settings of a config: its `limits` and `jetstream` sections. */
export function meshLimits(config: {
  limits: { ack_wait_ms: number; max_deliveries: number; max_hops: number };
  jetstream: { replicas: number };
}): MeshLimits {
  return {
    ackWaitMs: config.limits.ack_wait_ms,
    maxDeliveries: config.limits.max_deliveries,
    maxHops: config.limits.max_hops,
    replicas: config.jetstream.replicas,
  };
}
