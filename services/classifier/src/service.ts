import type { HandoffConfig } from "@handoff/config";
import {
  HandoffError,
  type JobEnvelope,
  type Message,
  type RouteDecision,
  remainingBudget,
  type Stage,
} from "@handoff/contracts";
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
import {
  type Assessment,
  type CascadeStrategy,
  classifyPinned,
  decide,
  splitSelfConfidence,
  toolSignals,
} from "@handoff/routing";
import { trace } from "@opentelemetry/api";
import type { Logger } from "pino";
import { type ClassifierRouting, isCascade, llmStrategyFor, loadRouting } from "./routing.js";

export interface ClassifierDeps {
  /** The NATS connection, or a function that opens one (retried at start: see `createStageService`). */
  nc: NatsSource;
  config: HandoffConfig;
  logger: Logger;
  version: string;
  concurrency: number;
  /**
   * The routing, from `loadRouting(config)`. Without it, the service loads it on its first job;
   * main.ts loads it before starting, so a bad model file stops the start instead.
   */
  routing?: ClassifierRouting;
  router?: ModelRouter;
}

/** The stages after the classifier for each decision: the route, as data. */
export function planFor(decision: RouteDecision, tools: boolean): Stage[] {
  switch (decision) {
    case "light":
      return ["classifier"];
    case "tools":
      return ["classifier", "tool-executor"];
    case "heavy":
      return tools
        ? ["classifier", "tool-executor", "heavy-reasoner"]
        : ["classifier", "heavy-reasoner"];
  }
}

/** Appended after the client's messages, so its own prefix (and a provider's cache of it) stays. */
const CONFIDENCE_REQUEST: Message = {
  role: "system",
  content:
    "After your answer, add one last line of the form `Confidence: N%`: how likely it is that " +
    "your answer is correct.",
};

/**
 * The classifier's handler: score the request with the configured strategy, write the route on
 * the envelope, and answer light requests with the light model right here, saving two hops. With
 * the cascade, a light answer is judged before anyone sees it: it stands, or the job goes on to the
 * heavy tier with the answer attached as a draft.
 */
export function classifierHandler(router: ModelRouter, routing: ClassifierRouting) {
  const span = () => trace.getActiveSpan();

  async function assess(
    envelope: JobEnvelope,
    ctx: StageContext,
  ): Promise<{ name: string; assessment: Assessment; threshold: number }> {
    const threshold = routing.thresholds.heavy;
    const { strategy } = routing;
    if (strategy) {
      // A cascade decides twice: here before the light answer (its pre-route), later on it.
      const assessment = isCascade(strategy)
        ? strategy.preRoute(envelope.input)
        : await strategy.assess({ input: envelope.input }, ctx.signal);
      return { name: routing.name, assessment, threshold };
    }
    // llm: the light model decides; when it cannot, the fallback does, and says so.
    const llm = llmStrategyFor(
      router,
      envelope.usage,
      () => remainingBudget(envelope),
      callCacheOf(envelope),
    );
    try {
      return {
        name: "llm",
        assessment: await llm.assess({ input: envelope.input }, ctx.signal),
        threshold,
      };
    } catch (error) {
      if (ctx.signal.aborted) throw error;
      const { strategy: fallback, threshold: own } = routing.fallback as NonNullable<
        ClassifierRouting["fallback"]
      >;
      const failure = HandoffError.from(error);
      ctx.logger.warn({ err: failure }, "llm routing failed; using the fallback strategy");
      const assessment = await fallback.assess({ input: envelope.input }, ctx.signal);
      return {
        name: fallback.name,
        threshold: own,
        assessment: {
          ...assessment,
          reason: `llm routing failed (${failure.message}); ${fallback.name}: ${assessment.reason}`,
          signals: ["llm:failed", ...assessment.signals],
        },
      };
    }
  }

  async function answerLight(envelope: JobEnvelope, ctx: StageContext): Promise<void> {
    const call = await router.chat("light", chatRequestFor(envelope.input), {
      stage: "classifier",
      signal: ctx.signal,
      budgetUsd: remainingBudget(envelope),
      onEvent: ctx.relay,
      cache: callCacheOf(envelope),
    });
    envelope.usage.push(call.usage);
    envelope.result = jobResult("classifier", call);
  }

  /** The cascade's light turn: answer without streaming, judge, then keep or escalate. */
  async function cascade(
    envelope: JobEnvelope,
    ctx: StageContext,
    strategy: CascadeStrategy,
  ): Promise<void> {
    const { input } = envelope;
    const settings = routing.config.cascade;
    // A confidence line would corrupt structured output or a tool call, and its tokens would be
    // among the log-probabilities a client asked for.
    const askConfidence =
      settings.self_confidence &&
      input.tools.length === 0 &&
      !input.params.response_format &&
      input.params.logprobs !== true;
    const request = chatRequestFor(
      input,
      askConfidence ? [...input.messages, CONFIDENCE_REQUEST] : input.messages,
    );
    const options = {
      stage: "classifier" as const,
      signal: ctx.signal,
      budgetUsd: remainingBudget(envelope),
      cache: callCacheOf(envelope),
    };
    let call: Awaited<ReturnType<ModelRouter["chat"]>>;
    try {
      call = await router.chat(
        "light",
        { ...request, ...(settings.logprobs ? { logprobs: true } : {}) },
        options,
      );
    } catch (error) {
      // Some models refuse to return log-probabilities (OpenAI's reasoning models answer 400 or
      // 403): the answer matters more than the signal, so ask once more without them.
      if (
        !settings.logprobs ||
        ctx.signal.aborted ||
        !/logprob/i.test(String((error as Error).message))
      )
        throw error;
      ctx.logger.warn({ err: error }, "the light tier refused logprobs; verifying without them");
      call = await router.chat("light", request, options);
    }
    envelope.usage.push(call.usage);
    const raw = call.result.message.content ?? "";
    const { text, confidence } = askConfidence
      ? splitSelfConfidence(raw)
      : { text: raw, confidence: undefined };
    const verdict = await strategy.assess({
      input,
      answer: {
        text,
        finishReason: call.result.finishReason,
        logprobs: call.result.logprobs,
        selfConfidence: confidence,
      },
    });
    const route = envelope.route as NonNullable<JobEnvelope["route"]>;
    route.score = verdict.score;
    route.reason = `${route.reason}; ${verdict.reason}`;
    const calls = call.result.message.tool_calls;
    if (verdict.score >= routing.thresholds.heavy && !calls?.length) {
      route.decision = "heavy";
      route.confidence = verdict.score;
      route.escalation = { stage: "classifier", score: verdict.score, reason: verdict.reason };
      envelope.plan = planFor("heavy", false);
      envelope.enrichments.push({
        kind: "draft",
        stage: "classifier",
        content: text,
        reason: `cascade: ${verdict.reason}`,
      });
      span()?.setAttributes({
        "handoff.route.escalated": true,
        "handoff.route.escalation.score": verdict.score,
        "handoff.route.escalation.reason": verdict.reason,
      });
      ctx.logger.info(
        { score: verdict.score, reason: verdict.reason },
        "cascade escalates to heavy",
      );
      return;
    }
    route.confidence = 1 - verdict.score;
    const result = jobResult("classifier", call);
    envelope.result = {
      ...result,
      message: { ...result.message, content: calls?.length ? raw : text },
    };
  }

  return async (envelope: JobEnvelope, ctx: StageContext): Promise<JobEnvelope> => {
    const pinned = classifyPinned(envelope.input);
    const toolHints = toolSignals(envelope.input);
    let decision: RouteDecision;
    let tools: boolean;
    let signals: string[];
    if (pinned) {
      decision = pinned.decision;
      tools = pinned.wantsTools;
      signals = pinned.signals;
      envelope.route = { decision, strategy: "pinned", confidence: 1, reason: pinned.reason };
    } else {
      const { name, assessment, threshold } = await assess(envelope, ctx);
      const thresholds = { ...routing.thresholds, heavy: threshold };
      tools = toolHints.length > 0;
      // Before its light answer a cascade goes straight to heavy only above direct_heavy_above;
      // the threshold is for the verdict on that answer.
      const cascading = isCascade(routing.strategy);
      const direct = routing.config.cascade.direct_heavy_above ?? Number.POSITIVE_INFINITY;
      decision = decide(assessment.score, cascading ? { heavy: direct } : thresholds, tools);
      signals = [...assessment.signals, ...toolHints];
      envelope.route = {
        decision,
        strategy: name,
        confidence: decision === "heavy" ? assessment.score : 1 - assessment.score,
        reason: assessment.reason,
        score: assessment.score,
        threshold: thresholds.heavy,
      };
    }
    envelope.plan = planFor(decision, tools);
    envelope.enrichments.push({ kind: "classification", stage: "classifier", signals });
    const route = envelope.route;
    span()?.setAttributes({
      "handoff.route.decision": route.decision,
      "handoff.route.strategy": route.strategy,
      "handoff.route.confidence": route.confidence,
      "handoff.route.reason": route.reason,
      "handoff.route.plan": envelope.plan.join(","),
      ...(route.score !== undefined ? { "handoff.route.score": route.score } : {}),
      ...(route.threshold !== undefined ? { "handoff.route.threshold": route.threshold } : {}),
    });
    ctx.logger.info({ route, plan: envelope.plan }, "classified");

    if (decision === "light") {
      if (route.strategy === "cascade" && isCascade(routing.strategy)) {
        await cascade(envelope, ctx, routing.strategy);
      } else {
        await answerLight(envelope, ctx);
      }
    }
    return envelope;
  };
}

export function createClassifierService(deps: ClassifierDeps): MeshService {
  const router = deps.router ?? new ModelRouter(deps.config);
  let handler = deps.routing ? classifierHandler(router, deps.routing) : undefined;
  let loading: Promise<ReturnType<typeof classifierHandler>> | undefined;
  const handle = async (envelope: JobEnvelope, ctx: StageContext) => {
    if (!handler) {
      loading ??= loadRouting(deps.config).then((routing) => classifierHandler(router, routing));
      handler = await loading;
    }
    return handler(envelope, ctx);
  };
  return createStageService({
    nc: deps.nc,
    stage: "classifier",
    version: deps.version,
    description: "Decides each job's route (light, tools or heavy); answers light jobs itself",
    handler: handle,
    logger: deps.logger,
    limits: meshLimits(deps.config),
    signer: loadMeshSigner(deps.config.mesh),
    concurrency: deps.concurrency,
    // The classifier calls the light tier (routing, light answers, the cascade's light turn).
    prepare: async (nc) =>
      router.useCaches(
        await openResponseCaches(nc, deps.config, ["light"], { logger: deps.logger }),
      ),
  });
}

export { loadRouting };
