import type { HandoffConfig } from "@handoff/config";
import { type JobEnvelope, remainingBudget, type Stage } from "@handoff/contracts";
import { createStageService, type MeshService, meshLimits, type StageContext } from "@handoff/mesh";
import { chatRequestFor, jobResult, ModelRouter } from "@handoff/providers";
import type { NatsConnection } from "@nats-io/nats-core";
import { trace } from "@opentelemetry/api";
import type { Logger } from "pino";
import { type Classification, classifyByRules, classifyPinned } from "./rules.js";

export interface ClassifierDeps {
  nc: NatsConnection;
  config: HandoffConfig;
  logger: Logger;
  version: string;
  concurrency: number;
  router?: ModelRouter;
}

/** The stages after the classifier for each decision: the route, as data. */
export function planFor(classification: Classification): Stage[] {
  switch (classification.decision) {
    case "light":
      return ["classifier"];
    case "tools":
      return ["classifier", "tool-executor"];
    case "heavy":
      return classification.wantsTools
        ? ["classifier", "tool-executor", "heavy-reasoner"]
        : ["classifier", "heavy-reasoner"];
  }
}

/**
 * The classifier's handler: decide the route, write it on the envelope, and answer light
 * requests with the light model right here, saving two hops.
 */
export function classifierHandler(router: ModelRouter) {
  return async (envelope: JobEnvelope, ctx: StageContext): Promise<JobEnvelope> => {
    const pinned = classifyPinned(envelope.input);
    const classification = pinned ?? classifyByRules(envelope.input);
    const strategy = pinned ? "pinned" : "rules";
    envelope.route = {
      decision: classification.decision,
      strategy,
      confidence: classification.confidence,
      reason: classification.reason,
    };
    envelope.plan = planFor(classification);
    envelope.enrichments.push({
      kind: "classification",
      stage: "classifier",
      signals: classification.signals,
    });
    trace.getActiveSpan()?.setAttributes({
      "handoff.route.decision": classification.decision,
      "handoff.route.strategy": strategy,
      "handoff.route.confidence": classification.confidence,
      "handoff.route.reason": classification.reason,
      "handoff.route.plan": envelope.plan.join(","),
    });
    ctx.logger.info({ route: envelope.route, plan: envelope.plan }, "classified");

    if (classification.decision === "light") {
      const call = await router.chat("light", chatRequestFor(envelope.input), {
        stage: "classifier",
        signal: ctx.signal,
        budgetUsd: remainingBudget(envelope),
        onEvent: ctx.relay,
      });
      envelope.usage.push(call.usage);
      envelope.result = jobResult("classifier", call);
    }
    return envelope;
  };
}

export function createClassifierService(deps: ClassifierDeps): MeshService {
  const router = deps.router ?? new ModelRouter(deps.config);
  return createStageService({
    nc: deps.nc,
    stage: "classifier",
    version: deps.version,
    description: "Decides each job's route (light, tools or heavy); answers light jobs itself",
    handler: classifierHandler(router),
    logger: deps.logger,
    limits: meshLimits(deps.config),
    concurrency: deps.concurrency,
  });
}
