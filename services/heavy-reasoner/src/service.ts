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
import { heavyMessages } from "./context.js";

export interface HeavyReasonerDeps {
  /** The NATS connection, or a function that opens one (retried at start: see `createStageService`). */
  nc: NatsSource;
  config: HandoffConfig;
  logger: Logger;
  version: string;
  concurrency: number;
  router?: ModelRouter;
}

/** The heavy-reasoner's handler: the frontier model, given everything the earlier hops found. */
export function heavyReasonerHandler(router: ModelRouter) {
  return async (envelope: JobEnvelope, ctx: StageContext): Promise<JobEnvelope> => {
    const { input } = envelope;
    const call = await router.chat("heavy", chatRequestFor(input, heavyMessages(envelope)), {
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
    handler: heavyReasonerHandler(router),
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
