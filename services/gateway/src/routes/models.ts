import { deploymentId, type HandoffConfig } from "@handoff/config";
import type { FastifyInstance } from "fastify";
import { modelNotFound } from "../mapping.js";

/** OpenAI's model object, with how Handoff serves the model in `handoff`. */
export interface ModelObject {
  id: string;
  object: "model";
  created: number;
  owned_by: string;
  handoff: Record<string, unknown>;
}

/**
 * The models the gateway serves, as `GET /v1/models` lists them: `handoff` (routed by the
 * classifier), one pinned name per tier (`handoff/light`, `handoff/mid`, `handoff/heavy`), every
 * configured deployment with its tier, provider and price, then each of `gateway.model_aliases`
 * with the model it stands for (`alias_of`) and that model's details.
 */
export function modelObjects(config: HandoffConfig, created: number): ModelObject[] {
  const tiers = ["light", "mid", "heavy"] as const;
  const served: ModelObject[] = [
    { id: "handoff", object: "model", created, owned_by: "handoff", handoff: { route: "auto" } },
    ...tiers.map((tier) => ({
      id: `handoff/${tier}`,
      object: "model" as const,
      created,
      owned_by: "handoff",
      handoff: { route: "pinned", tier },
    })),
  ];
  for (const tier of tiers) {
    for (const deployment of config.tiers[tier]) {
      const id = deploymentId(deployment);
      // One deployment may serve several tiers: it is listed once, under its first.
      if (served.some((model) => model.id === id)) continue;
      served.push({
        id,
        object: "model",
        created,
        owned_by: deployment.provider,
        handoff: {
          tier,
          provider: deployment.provider,
          model: deployment.model,
          price: deployment.price,
        },
      });
    }
  }
  const aliases = Object.entries(config.gateway.model_aliases).flatMap(([alias, target]) => {
    const of = served.find((model) => model.id === target);
    return of
      ? [{ ...of, id: alias, owned_by: "handoff", handoff: { alias_of: target, ...of.handoff } }]
      : [];
  });
  return [...served, ...aliases];
}

/**
 * `GET /v1/models`, OpenAI's model list ({@link modelObjects}), and `GET /v1/models/:id`, one of
 * them (the OpenAI SDK's `models.retrieve`); an id the gateway does not serve is a 404 with
 * OpenAI's `model_not_found` code. An id with a `/` (`handoff/light`) is sent percent-encoded
 * (`handoff%2Flight`), as the SDKs do.
 */
export function registerModels(app: FastifyInstance, config: HandoffConfig): void {
  const models = modelObjects(config, Math.floor(Date.now() / 1000));
  const byId = new Map(models.map((model) => [model.id, model]));
  const list = { object: "list", data: models };
  app.get("/v1/models", async () => list);
  app.get<{ Params: { id: string } }>("/v1/models/:id", async (request) => {
    const model = byId.get(request.params.id);
    if (!model) throw modelNotFound(request.params.id);
    return model;
  });
}
