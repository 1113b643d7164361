import type { Stage } from "@handoff/contracts";
import type { NatsConnection } from "@nats-io/nats-core";
import type { Service } from "@nats-io/services";
import type { Logger } from "pino";
import { trackConnection } from "./connect.js";
import { startMeshMetrics } from "./mesh-metrics.js";
import { type StageHandler, StageRunner } from "./runner.js";
import { registerService } from "./service-api.js";
import type { MeshSigner } from "./signing.js";
import {
  connectWithRetry,
  type NatsSource,
  retryStartup,
  StartupAborted,
  type StartupBackoff,
} from "./startup.js";
import { ensureTopology } from "./topology.js";

export interface MeshLimits {
  ackWaitMs: number;
  maxDeliveries: number;
  maxHops: number;
  replicas?: number;
}

export interface StageServiceOptions {
  /**
   * The NATS connection, or a function that opens one: `start()` then retries it (with the
   * topology and the registration) until NATS and JetStream answer.
   */
  nc: NatsSource;
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
  /** The waits between start-up attempts (default 250 ms doubling to 5 s). */
  startupBackoff?: StartupBackoff;
  /**
   * What the stage opens on NATS besides its queue (its response caches), run at start after the
   * topology and retried with it until it works.
   */
  prepare?: (nc: NatsConnection) => Promise<void>;
}

/** A running mesh service: started once, stopped (drained) once. No process side effects. */
export interface MeshService {
  /**
   * Connects (when given a function), sets up the topology and registers, retrying each until it
   * works; resolves once ready. Rejects only on a config error, or with `StartupAborted` when
   * `stop()` is called first.
   */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Connected to NATS with streams, consumer and registration in place. */
  ready(): boolean;
  /** Service API instance id, once started. */
  readonly id: string | undefined;
}

/** The shape every stage worker shares: topology, service registration, and the runner. */
export function createStageService(options: StageServiceOptions): MeshService {
  let connection: { connected: () => boolean } | undefined =
    typeof options.nc === "function" ? undefined : trackConnection(options.nc);
  let runner: StageRunner | undefined;
  let service: Service | undefined;
  let started = false;
  // stop() during start-up ends the retries.
  const stopping = new AbortController();
  const retry = {
    logger: options.logger,
    signal: stopping.signal,
    backoff: options.startupBackoff,
  };
  return {
    get id() {
      return service?.info().id;
    },
    async start() {
      const nc = await connectWithRetry(options.nc, retry);
      connection ??= trackConnection(nc);
      const what = "set up the streams and register the service";
      await retryStartup(
        async () => {
          const topology = await ensureTopology(nc, options.limits);
          await options.prepare?.(nc);
          const registered = await registerService(nc, {
            name: options.stage,
            version: options.version,
            description: options.description,
            metadata: { concurrency: String(options.concurrency) },
            stats: () => ({ ...runner?.stats() }),
          });
          let candidate: StageRunner | undefined;
          try {
            candidate = new StageRunner({
              nc,
              topology,
              stage: options.stage,
              handler: options.handler,
              instance: registered.info().id,
              logger: options.logger,
              limits: options.limits,
              concurrency: options.concurrency,
              ...(options.drainTimeoutMs !== undefined
                ? { drainTimeoutMs: options.drainTimeoutMs }
                : {}),
              ...(options.signer ? { signer: options.signer } : {}),
              ...(options.backoffMs ? { backoffMs: options.backoffMs } : {}),
            });
            await candidate.start();
            if (stopping.signal.aborted) throw new StartupAborted(what);
          } catch (error) {
            // Undone, so the next attempt (or the exit) leaves no half-registered instance.
            await candidate?.stop().catch(() => {});
            await registered.stop().catch(() => {});
            throw error;
          }
          service = registered;
          runner = candidate;
        },
        { ...retry, what },
      );
      const instance = service?.info().id;
      started = true;
      startMeshMetrics({ nc, stage: options.stage, stats: () => runner?.stats() });
      options.logger.info(
        { instance, subject: runner?.subject, concurrency: options.concurrency },
        `${options.stage} ready`,
      );
    },
    async stop() {
      stopping.abort();
      started = false;
      await runner?.stop();
      await service?.stop();
    },
    ready: () => started && connection?.connected() === true,
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
