import type { HandoffConfig } from "@handoff/config";
import type { Usage } from "@handoff/contracts";
import { type CallCache, jsonRequest, type ModelRouter } from "@handoff/providers";
import {
  CascadeStrategy,
  createStrategy,
  DEFAULT_MODEL_PATH,
  type JsonCall,
  LlmStrategy,
  loadModel,
  type RouterModel,
  type RoutingStrategy,
  type StrategyName,
  type Thresholds,
} from "@handoff/routing";

/**
 * The classifier's routing, built once at start from the config: the strategy, its thresholds,
 * and the router model (read from disk only when a strategy needs it).
 */
export interface ClassifierRouting {
  name: StrategyName;
  thresholds: Thresholds;
  config: HandoffConfig["routing"];
  /** The strategy, for every name but `llm` (which is made per job, to account its call). */
  strategy: RoutingStrategy | undefined;
  /** What decides when the `llm` strategy's model fails, against its own threshold. */
  fallback: { strategy: RoutingStrategy; threshold: number } | undefined;
}

async function modelFor(config: HandoffConfig): Promise<{ model: RouterModel; source: string }> {
  const source = config.routing.model ?? DEFAULT_MODEL_PATH;
  const model = await loadModel(source);
  const { cascade } = config.routing;
  if (model.verifier) {
    if (cascade.logprob_weight !== undefined)
      model.verifier.logprobs.weight = cascade.logprob_weight;
    if (cascade.self_confidence_weight !== undefined)
      model.verifier.selfConfidence.weight = cascade.self_confidence_weight;
  }
  return { model, source };
}

export async function loadRouting(config: HandoffConfig): Promise<ClassifierRouting> {
  const settings = config.routing;
  const name = settings.strategy;
  const needsModel =
    name === "learned" ||
    name === "cascade" ||
    (name === "llm" && settings.llm_fallback === "learned");
  const loaded = needsModel ? await modelFor(config) : undefined;
  const deps = { model: loaded?.model, ...(loaded ? { modelSource: loaded.source } : {}) };
  // The threshold: the config's, else the strategy's own; learned and cascade need it to place
  // the rules' decisions on their scale outside the model's domain.
  const own = (strategy: StrategyName) =>
    strategy === "llm" ? 0.5 : createStrategy(strategy, deps).defaultThreshold;
  const heavy = settings.threshold ?? own(name);
  const fallbackName = settings.llm_fallback;
  const fallbackThreshold = own(fallbackName);
  return {
    name,
    thresholds: { heavy, mid: settings.mid_threshold },
    config: settings,
    strategy: name === "llm" ? undefined : createStrategy(name, { ...deps, threshold: heavy }),
    fallback:
      name === "llm"
        ? {
            strategy: createStrategy(fallbackName, { ...deps, threshold: fallbackThreshold }),
            threshold: fallbackThreshold,
          }
        : undefined,
  };
}

/**
 * The `llm` strategy for one job: its light-model call lands in `usage`, and goes through the
 * light tier's response cache as the job's (`cache`) when that tier is cached.
 */
export function llmStrategyFor(
  router: ModelRouter,
  usage: Usage[],
  budgetUsd: () => number | undefined,
  cache?: CallCache,
): LlmStrategy {
  const call: JsonCall = async (request, signal) => {
    const out = await router.chat("light", jsonRequest(request), {
      stage: "classifier",
      signal,
      budgetUsd: budgetUsd(),
      ...(cache ? { cache } : {}),
    });
    usage.push(out.usage);
    return { text: out.result.message.content ?? "" };
  };
  return new LlmStrategy(call);
}

export function isCascade(strategy: RoutingStrategy | undefined): strategy is CascadeStrategy {
  return strategy instanceof CascadeStrategy;
}
