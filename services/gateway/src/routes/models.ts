import { deploymentId, type HandoffConfig, Price } from "@handoff/config";
import { Tier } from "@handoff/contracts";
import type { FastifyInstance } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import { modelNotFound } from "../mapping.js";
import { docs, jsonResponse } from "../route-schema.js";

/** OpenAI's model object, with how Handoff serves the model in `handoff`. */
export const ModelObject = z
  .object({
    id: z.string().register(docs, { examples: ["handoff", "handoff/mid", "sim:sim-mid"] }),
    object: z.literal("model"),
    created: z.number().int(),
    owned_by: z.string(),
    handoff: z
      .object({
        route: z.enum(["auto", "pinned"]).optional(),
        alias_of: z
          .string()
          .register(docs, {
            description:
              "On an alias (`gateway.model_aliases`): the served model it stands for, whose details follow.",
          })
          .optional(),
        tier: Tier.optional(),
        provider: z.string().optional(),
        model: z.string().optional(),
        price: Price.optional(),
      })
      .register(docs, {
        description:
          "`route: auto` is classifier-routed, `route: pinned` forces a tier; a deployment shows its tier, provider, model and price.",
      }),
  })
  .register(docs, {
    id: "Model",
    description: "OpenAI's model object, with how Handoff serves the model.",
  });
export type ModelObject = z.output<typeof ModelObject>;

const ModelList = z
  .object({ object: z.literal("list"), data: z.array(ModelObject) })
  .register(docs, { id: "ModelList" });

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
      handoff: { route: "pinned" as const, tier },
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
 * (`handoff%2Flight`), as the SDKs do. Both answers are serialized with their schemas.
 */
export function registerModels(app: FastifyInstance, config: HandoffConfig): void {
  const models = modelObjects(config, Math.floor(Date.now() / 1000));
  const byId = new Map(models.map((model) => [model.id, model]));
  const list = { object: "list" as const, data: models };
  const api = app.withTypeProvider<ZodTypeProvider>();
  api.get(
    "/v1/models",
    {
      schema: {
        operationId: "listModels",
        summary: "List the models",
        description:
          "`handoff` (routed by the classifier), one pinned name per tier (`handoff/light`, `handoff/mid`, `handoff/heavy`), every configured deployment, and the aliases of `gateway.model_aliases`.",
        tags: ["models"],
        response: { 200: jsonResponse("The model list.", ModelList) },
        errors: [],
      },
    },
    async () => list,
  );
  api.get(
    "/v1/models/:id",
    {
      schema: {
        operationId: "retrieveModel",
        summary: "Get one model",
        description:
          "One entry of the model list, by id (OpenAI's `models.retrieve`). An id with a `/` is percent-encoded: `handoff%2Flight`.",
        tags: ["models"],
        params: z.object({
          id: z.string().register(docs, {
            description: "A model id from `GET /v1/models`.",
            examples: ["handoff", "handoff/light"],
          }),
        }),
        response: { 200: jsonResponse("The model.", ModelObject) },
        errors: ["ModelNotFound"],
      },
    },
    async (request) => {
      const model = byId.get(request.params.id);
      if (!model) throw modelNotFound(request.params.id);
      return model;
    },
  );
}
