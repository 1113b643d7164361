export * from "./logger.js";
export * from "./sdk.js";
