import type { HandoffConfig } from "@handoff/config";
import { type JobEnvelope, remainingBudget } from "@handoff/contracts";
import {
  createStageService,
  loadMeshSigner,
  type MeshService,
  meshLimits,
  type NatsSource,
  openResponseCaches,
  type StageContext,
} from "@handoff/mesh";
import { callCacheOf, chatRequestFor, jobResult, ModelRouter } from "@handoff/providers";
import type { Logger } from "pino";
import { dropUnread, type LeanHandoff, leanHeavyMessages } from "./lean.js";

export interface HeavyReasonerDeps {
  /** The NATS connection, or a function that opens one (retried at start: see `createStageService`). */
  nc: NatsSource;
  config: HandoffConfig;
  logger: Logger;
  version: string;
  concurrency: number;
  router?: ModelRouter;
}

/** The lean handoff the config asks of the heavy tier (`limits.handoff_tokens`). */
export function leanHandoffOf(config: HandoffConfig): LeanHandoff {
  const { handoff_tokens: tokens, handoff_compaction: strategy } = config.limits;
  return { budget: tokens.heavy, strategy, lightBudget: tokens.light };
}

/**
 * The heavy-reasoner's handler: the frontier model, given everything the earlier hops found, or
 * with a handoff budget, what of it fits (see `leanHeavyMessages`).
 */
export function heavyReasonerHandler(
  router: ModelRouter,
  lean: LeanHandoff = { strategy: "select" },
) {
  return async (envelope: JobEnvelope, ctx: StageContext): Promise<JobEnvelope> => {
    const { input } = envelope;
    const messages = await leanHeavyMessages(envelope, router, lean, ctx.signal);
    const call = await router.chat("heavy", chatRequestFor(input, messages), {
      stage: "heavy-reasoner",
      signal: ctx.signal,
      // Over budget, a cheaper tier answers rather than none.
      budgetUsd: remainingBudget(envelope),
      degradeTo: ["mid", "light"],
      onEvent: ctx.relay,
      cache: callCacheOf(envelope),
    });
    envelope.usage.push(call.usage);
    envelope.result = jobResult("heavy-reasoner", call);
    if (lean.budget !== undefined) dropUnread(envelope);
    return envelope;
  };
}

export function createHeavyReasonerService(deps: HeavyReasonerDeps): MeshService {
  const router = deps.router ?? new ModelRouter(deps.config);
  return createStageService({
    nc: deps.nc,
    stage: "heavy-reasoner",
    version: deps.version,
    description: "Answers complex jobs with the heavy model, using earlier hops' enrichments",
    handler: heavyReasonerHandler(router, leanHandoffOf(deps.config)),
    logger: deps.logger,
    limits: meshLimits(deps.config),
    signer: loadMeshSigner(deps.config.mesh),
    concurrency: deps.concurrency,
    // The heavy tier, and the cheaper ones a budget makes it fall to.
    prepare: async (nc) =>
      router.useCaches(
        await openResponseCaches(nc, deps.config, ["heavy", "mid", "light"], {
          logger: deps.logger,
        }),
      ),
  });
}
