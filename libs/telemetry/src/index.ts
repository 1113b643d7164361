export * from "./errors.js";
export * from "./logger.js";
export * from "./sdk.js";
export * from "./secrets.js";
