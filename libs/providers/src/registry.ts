import type { Deployment } from "@handoff/config";
import { HandoffError } from "@handoff/contracts";
import { SimModel } from "./sim/sim-model.js";
import type { ChatModel } from "./types.js";

/** Builds the model adapter a deployment names. */
export type ModelFactory = (deployment: Deployment, env?: NodeJS.ProcessEnv) => ChatModel;

export const createModel: ModelFactory = (deployment) => {
  switch (deployment.provider) {
    case "sim":
      return new SimModel({ model: deployment.model, latencyMs: deployment.latency_ms });
    case "openai-compatible":
    case "anthropic":
      throw new HandoffError(
        "HANDOFF_ERR_CONFIG",
        `provider "${deployment.provider}" (model ${deployment.model}) is not available in this build`,
      );
  }
};

/** The `gen_ai.provider.name` of a deployment, per the OpenTelemetry GenAI conventions. */
export function genAiProviderName(deployment: Deployment): string {
  switch (deployment.provider) {
    case "sim":
      return "handoff.sim";
    case "openai-compatible":
      return "openai";
    case "anthropic":
      return "anthropic";
  }
}

export function deploymentId(deployment: Deployment): string {
  return deployment.id ?? `${deployment.provider}:${deployment.model}`;
}
