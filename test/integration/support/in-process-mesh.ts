import { HandoffConfig } from "@handoff/config";
import type { MeshService } from "@handoff/mesh";
import { createModel, ModelRouter } from "@handoff/providers";
import {
  anthropicModelReply,
  type NatsHandle,
  openaiModelReply,
  startNats,
  UpstreamServer,
} from "@handoff/testkit";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { createClassifierService } from "../../../services/classifier/src/service.js";
import { createGateway, type Gateway } from "../../../services/gateway/src/service.js";
import { createHeavyReasonerService } from "../../../services/heavy-reasoner/src/service.js";
import { createToolExecutorService } from "../../../services/tool-executor/src/service.js";

/**
 * The whole mesh in the test process: a nats-server of its own, the three workers and the gateway
 * on one connection, listening on a free port. What the client-facing suites (SDKs, doors) share.
 */
export interface InProcessMesh {
  nats: NatsHandle;
  nc: NatsConnection;
  gateway: Gateway;
  /** The gateway's URL, e.g. `http://127.0.0.1:41234`. */
  url: string;
  stop(): Promise<void>;
}

export interface InProcessMeshOptions {
  /** Where API keys and upstream keys are read (models built with it; the gateway's keys too). */
  env?: Record<string, string>;
  /** Jobs each worker takes at once (default 4). */
  concurrency?: number;
  /**
   * A running nats-server to use instead of a new one; `stop()` then leaves it running, so a
   * second mesh can start on the same streams and buckets (a restart of every service).
   */
  nats?: NatsHandle;
}

export async function startInProcessMesh(
  config: HandoffConfig,
  options: InProcessMeshOptions = {},
): Promise<InProcessMesh> {
  const logger = pino({ level: "silent" });
  const nats = options.nats ?? (await startNats());
  const nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  const env = options.env;
  const router = env ? new ModelRouter(config, (d) => createModel(d, env)) : undefined;
  const deps = {
    nc,
    config,
    logger,
    version: "0.0.0-test",
    concurrency: options.concurrency ?? 4,
    ...(router ? { router } : {}),
  };
  const workers: MeshService[] = [
    createClassifierService(deps),
    createToolExecutorService(deps),
    createHeavyReasonerService(deps),
  ];
  for (const worker of workers) await worker.start();
  const gateway = createGateway({
    nc,
    config,
    logger,
    version: "0.0.0-test",
    host: "127.0.0.1",
    port: 0,
    ...(env ? { env } : {}),
  });
  const url = await gateway.start();
  return {
    nats,
    nc,
    gateway,
    url,
    async stop() {
      await gateway.stop();
      for (const worker of workers) await worker.stop();
      await nc.close();
      if (!options.nats) await nats.stop();
    },
  };
}

/** Local servers speaking OpenAI's and Anthropic's wire formats, answering like a model. */
export async function startModelUpstreams(): Promise<{
  openai: UpstreamServer;
  anthropic: UpstreamServer;
  clear(): void;
  close(): Promise<void>;
}> {
  const openai = await UpstreamServer.start(openaiModelReply);
  const anthropic = await UpstreamServer.start(anthropicModelReply);
  return {
    openai,
    anthropic,
    clear() {
      openai.requests.length = 0;
      anthropic.requests.length = 0;
    },
    async close() {
      await openai.close();
      await anthropic.close();
    },
  };
}

/** The upstream keys the {@link upstreamConfig} deployments read. */
export const UPSTREAM_KEYS = {
  UPSTREAM_OPENAI_KEY: "sk-upstream-openai",
  UPSTREAM_ANTHROPIC_KEY: "sk-ant-upstream",
};

/**
 * A config whose light and mid tiers call the OpenAI-wire upstream (`gpt-4o-mini`, `gpt-4o`) and
 * whose heavy tier calls the Anthropic-wire one (`claude-sonnet-4-5`), with fast test backoff.
 * `extra` is merged over it (whole tiers replaced), before validation.
 */
export function upstreamConfig(
  openaiUrl: string,
  anthropicUrl: string,
  extra: (base: UpstreamDeployments) => Record<string, unknown> = () => ({}),
): HandoffConfig {
  const openai = {
    provider: "openai-compatible",
    base_url: `${openaiUrl}/v1`,
    api_key_env: "UPSTREAM_OPENAI_KEY",
  };
  const anthropic = {
    provider: "anthropic",
    base_url: anthropicUrl,
    api_key_env: "UPSTREAM_ANTHROPIC_KEY",
  };
  const deployments = {
    openai,
    anthropic,
    light: {
      ...openai,
      id: "oa-light",
      model: "gpt-4o-mini",
      price: { input_per_mtok: 0.15, output_per_mtok: 0.6 },
    },
    mid: {
      ...openai,
      id: "oa-mid",
      model: "gpt-4o",
      price: { input_per_mtok: 2.5, output_per_mtok: 10 },
    },
    heavy: {
      ...anthropic,
      id: "claude-heavy",
      model: "claude-sonnet-4-5",
      price: { input_per_mtok: 3, output_per_mtok: 15 },
    },
  };
  const more = extra(deployments);
  return HandoffConfig.parse({
    // Fast backoff; a breaker that never opens, so one test's failures stay its own.
    resilience: { backoff_base_ms: 20, max_attempts: 4, cooldown_after_failures: 1_000 },
    limits: { request_timeout_ms: 20_000 },
    ...more,
    tiers: {
      light: [deployments.light],
      mid: [deployments.mid],
      heavy: [deployments.heavy],
      ...(more.tiers as Record<string, unknown> | undefined),
    },
  });
}

export interface UpstreamDeployments {
  openai: Record<string, unknown>;
  anthropic: Record<string, unknown>;
  light: Record<string, unknown>;
  mid: Record<string, unknown>;
  heavy: Record<string, unknown>;
}
