import { HandoffConfig } from "./schema.js";

/**
 * The profile used when no `HANDOFF_CONFIG` is given: every tier is the deterministic simulated
 * model. Prices are illustrative list prices of small, mid and frontier models, so the demo shows
 * how cost spreads across hops; answers and usage are labelled simulated.
 */
export const simProfile: HandoffConfig = HandoffConfig.parse({
  tiers: {
    light: [
      {
        provider: "sim",
        model: "sim-light",
        price: { input_per_mtok: 0.1, output_per_mtok: 0.4 },
      },
    ],
    mid: [
      {
        provider: "sim",
        model: "sim-mid",
        price: { input_per_mtok: 0.4, output_per_mtok: 1.6 },
      },
    ],
    heavy: [
      {
        provider: "sim",
        model: "sim-heavy",
        price: { input_per_mtok: 3, output_per_mtok: 15 },
      },
    ],
  },
});
