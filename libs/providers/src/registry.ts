import type { Deployment } from "@handoff/config";

export { deploymentId } from "@handoff/config";

import { AnthropicModel } from "./anthropic/adapter.js";
import { OpenAICompatibleModel } from "./openai-compatible/adapter.js";
import { SimModel } from "./sim/sim-model.js";
import type { ChatModel } from "./types.js";

/** Builds the model adapter a deployment names. */
export type ModelFactory = (deployment: Deployment, env?: NodeJS.ProcessEnv) => ChatModel;

export const createModel: ModelFactory = (deployment, env = process.env) => {
  switch (deployment.provider) {
    case "sim":
      return new SimModel({ model: deployment.model, latencyMs: deployment.latency_ms });
    case "openai-compatible":
      return new OpenAICompatibleModel(deployment, { env });
    case "anthropic":
      return new AnthropicModel(deployment, { env });
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
