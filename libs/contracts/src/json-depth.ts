import { z } from "zod";

/**
 * How deep free-form JSON in a request may nest (tool parameter schemas, `response_format`
 * schemas): an object or array is one level, each object or array inside it one more. Real JSON
 * Schemas stay far below; a deeper value is refused before anything walks it recursively (zod,
 * `JSON.stringify`, a provider's SDK), any of which a hostile value could drive off the stack.
 */
export const MAX_JSON_DEPTH = 64;

interface Frame {
  value: unknown;
  depth: number;
  key: string | number;
  parent: Frame | undefined;
}

function pathOf(frame: Frame): (string | number)[] {
  const path: (string | number)[] = [];
  for (let at: Frame | undefined = frame; at?.parent; at = at.parent) path.push(at.key);
  return path.reverse();
}

/**
 * The path (relative to `value`) of the first object or array, in document order, that sits more
 * than `limit` levels deep, or undefined when there is none. `value` itself, if an object or
 * array, is level 1. Iterative, and it never looks below the first level past the limit, so it
 * costs at most one visit of each value and no call stack, however the value is built.
 */
export function findTooDeep(
  value: unknown,
  limit: number = MAX_JSON_DEPTH,
): (string | number)[] | undefined {
  const stack: Frame[] = [{ value, depth: 1, key: "", parent: undefined }];
  for (let frame = stack.pop(); frame; frame = stack.pop()) {
    const current = frame.value;
    if (typeof current !== "object" || current === null) continue;
    if (frame.depth > limit) return pathOf(frame);
    const depth = frame.depth + 1;
    // Pushed last to first, so the first child is visited first.
    if (Array.isArray(current)) {
      for (let i = current.length - 1; i >= 0; i--) {
        const child: unknown = current[i];
        if (typeof child === "object" && child !== null) {
          stack.push({ value: child, depth, key: i, parent: frame });
        }
      }
    } else {
      const keys = Object.keys(current);
      for (let i = keys.length - 1; i >= 0; i--) {
        const key = keys[i] as string;
        const child: unknown = (current as Record<string, unknown>)[key];
        if (typeof child === "object" && child !== null) {
          stack.push({ value: child, depth, key, parent: frame });
        }
      }
    }
  }
  return undefined;
}

/** The message of a too-deep issue, naming the limit. */
export const TOO_DEEP_MESSAGE = `nested more than ${MAX_JSON_DEPTH} levels deep (the limit for free-form JSON)`;

/**
 * A free-form JSON object (a JSON Schema a client wrote): any keys and values, nested at most
 * {@link MAX_JSON_DEPTH} levels. A deeper value is one issue whose path leads to the first
 * object or array past the limit, e.g. `tools[0].function.parameters.properties.a.properties...`.
 */
export const FreeFormObject = z.record(z.string(), z.unknown()).superRefine((value, ctx) => {
  const path = findTooDeep(value);
  if (path) ctx.addIssue({ code: "custom", path, message: TOO_DEEP_MESSAGE });
});
