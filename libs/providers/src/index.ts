export * from "./cost.js";
export * from "./errors.js";
export * from "./registry.js";
export * from "./router.js";
export * from "./sim/sim-model.js";
export * from "./tokens.js";
export * from "./types.js";
