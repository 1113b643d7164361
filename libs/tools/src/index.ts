import { calculator } from "./calculator.js";
import { clock } from "./clock.js";
import { ToolRegistry } from "./tool.js";

export {
  CalculatorError,
  calculator,
  evaluate,
  formatNumber,
  MAX_NESTING,
} from "./calculator.js";
export { clock } from "./clock.js";
export {
  type AddressKind,
  classifyAddress,
  createHttpGetTool,
  type HttpGetLookup,
  type HttpGetOptions,
} from "./http-get.js";
export { LocalToolSource } from "./local-source.js";
export {
  type McpLogger,
  type McpServerConfig,
  type McpSourceOptions,
  McpToolSource,
  mcpToolName,
} from "./mcp.js";
export { NatsToolSource, type NatsToolSourceOptions, type SourceLogger } from "./nats-source.js";
export * from "./protocol.js";
export { type ServeToolsOptions, serveTools, type ToolServer } from "./serve.js";
export type {
  SourceCallContext,
  SourceOutcome,
  SourceTool,
  ToolErrorType,
  ToolOrigin,
  ToolSource,
} from "./source.js";
export {
  defineTool,
  TOOL_NAME,
  type Tool,
  type ToolContext,
  type ToolOutcome,
  ToolRegistry,
  toolDefinition,
} from "./tool.js";
export {
  refusal,
  Toolbox,
  type ToolboxOptions,
  type ToolboxOutcome,
  type ToolPolicy,
  toolPattern,
} from "./toolbox.js";

/** The tools every tool-executor serves, unless `tools.builtin` is off. */
export const builtinTools = [calculator, clock] as const;

/** A registry holding just the built-in tools. */
export function createBuiltinRegistry(): ToolRegistry {
  return new ToolRegistry(builtinTools);
}
