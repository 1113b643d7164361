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
  defineTool,
  type Tool,
  type ToolContext,
  type ToolOutcome,
  ToolRegistry,
  toolDefinition,
} from "./tool.js";

/** The tools every tool-executor offers, whatever else is configured. */
export const builtinTools = [calculator, clock] as const;

/** A registry holding just the built-in tools. */
export function createBuiltinRegistry(): ToolRegistry {
  return new ToolRegistry(builtinTools);
}
