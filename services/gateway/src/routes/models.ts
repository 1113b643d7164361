import { deploymentId, type HandoffConfig } from "@handoff/config";
import type { FastifyInstance } from "fastify";

/**
 * `GET /v1/models`, OpenAI's model list: `handoff` (routed by the classifier), one pinned name per
 * tier (`handoff/light`, `handoff/mid`, `handoff/heavy`), and every configured deployment with its
 * tier, provider and price, for inspection.
 */
export function registerModels(app: FastifyInstance, config: HandoffConfig): void {
  const created = Math.floor(Date.now() / 1000);
  const tiers = ["light", "mid", "heavy"] as const;
  const list = {
    object: "list",
    data: [
      { id: "handoff", object: "model", created, owned_by: "handoff", handoff: { route: "auto" } },
      ...tiers.map((tier) => ({
        id: `handoff/${tier}`,
        object: "model",
        created,
        owned_by: "handoff",
        handoff: { route: "pinned", tier },
      })),
      ...tiers.flatMap((tier) =>
        config.tiers[tier].map((deployment) => ({
          id: deploymentId(deployment),
          object: "model",
          created,
          owned_by: deployment.provider,
          handoff: {
            tier,
            provider: deployment.provider,
            model: deployment.model,
            price: deployment.price,
          },
        })),
      ),
    ],
  };
  app.get("/v1/models", async () => list);
}
