import { formatPath, type ToolCall, type ToolDefinition } from "@handoff/contracts";
import { z } from "zod";

/** What a tool gets from the executor besides its arguments. */
export interface ToolContext {
  /** Aborted when the job is cancelled or times out; long-running tools should honour it. */
  signal: AbortSignal;
  /** The clock tools must use, so tests and replays are deterministic. */
  now: () => Date;
}

/** A function the model can call: a name, a description, a zod schema of its arguments, and a body. */
export interface Tool<I extends z.ZodType = z.ZodType> {
  /** Matches `/^[A-Za-z0-9_-]{1,64}$/`, the rule every provider accepts. */
  readonly name: string;
  /** Shown to the model; say what the tool does and what input it accepts. */
  readonly description: string;
  /** Schema of the arguments object; its JSON Schema is what the model sees. */
  readonly input: I;
  /**
   * Running it twice with the same arguments does no more than running it once (a lookup, a
   * computation, an HTTP GET). A call whose answer was lost with the NATS connection is then
   * made again once the connection is back; a call to a tool that is not idempotent reports the
   * loss to the model instead, since the tool may have run. Default: false.
   */
  readonly idempotent?: boolean;
  /**
   * Produces the text handed back to the model. Throw to report a problem: the registry turns the
   * message into a tool error the model can read and act on.
   */
  handler(input: z.output<I>, ctx: ToolContext): Promise<string> | string;
}

export const TOOL_NAME = /^[A-Za-z0-9_-]{1,64}$/;

function assertToolName(name: string): void {
  if (!TOOL_NAME.test(name)) {
    throw new Error(`invalid tool name "${name}": use 1-64 letters, digits, '_' or '-'`);
  }
}

/**
 * Declares a tool. It exists for type inference: `handler` gets its argument type from `input`.
 * Throws at definition time if the name would be rejected by a provider.
 */
export function defineTool<I extends z.ZodType>(tool: Tool<I>): Tool<I> {
  assertToolName(tool.name);
  return tool;
}

/**
 * The OpenAI-style definition the model sees. The parameters are generated from the zod input
 * (draft 2020-12, input side, so optional and defaulted fields are not listed as required).
 */
export function toolDefinition(tool: Tool): ToolDefinition {
  // Providers reject or ignore "$schema" inside a function definition, so it is dropped.
  const { $schema: _schema, ...parameters } = z.toJSONSchema(tool.input, {
    target: "draft-2020-12",
    io: "input",
  }) as Record<string, unknown>;
  return {
    type: "function",
    function: { name: tool.name, description: tool.description, parameters },
  };
}

/**
 * The result of one tool call: `output` goes back to the model; `error` is set when it failed,
 * and `failure` says whose fault it was: the call's (an unknown tool, bad arguments) or the tool's.
 */
export interface ToolOutcome {
  output: string;
  error?: string;
  failure?: "unknown_tool" | "invalid_arguments" | "tool_error";
}

function failure(kind: NonNullable<ToolOutcome["failure"]>, message: string): ToolOutcome {
  return { output: `error: ${message}`, error: message, failure: kind };
}

function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}

/**
 * Settles with the tool's result, or rejects with the abort reason as soon as `signal` fires, so
 * a tool that ignores its signal cannot keep a cancelled job waiting.
 */
async function runUntilAborted(tool: Tool, input: unknown, ctx: ToolContext): Promise<string> {
  const { signal } = ctx;
  let rejectAborted: (reason: unknown) => void = () => {};
  const aborted = new Promise<never>((_, reject) => {
    rejectAborted = reject;
  });
  const onAbort = () => rejectAborted(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    // Wrapping in a promise chain turns a synchronous throw from `handler` into a rejection.
    const running = Promise.resolve().then(() => tool.handler(input, ctx));
    return await Promise.race([running, aborted]);
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/** A fixed set of tools, addressed by name, that runs the model's tool calls. */
export class ToolRegistry {
  readonly #tools = new Map<string, Tool>();
  readonly #definitions: ToolDefinition[];

  /** Throws on an invalid or duplicate name, or an input schema that has no JSON Schema form. */
  constructor(tools: readonly Tool[]) {
    for (const tool of tools) {
      assertToolName(tool.name);
      if (this.#tools.has(tool.name)) throw new Error(`duplicate tool name "${tool.name}"`);
      this.#tools.set(tool.name, tool);
    }
    // Generated once up front so a schema that cannot be expressed fails at startup, not mid-job.
    this.#definitions = [...this.#tools.values()].map(toolDefinition);
  }

  /** The registered tools, in registration order. */
  tools(): Tool[] {
    return [...this.#tools.values()];
  }

  /** Whether a tool of that name is registered. */
  has(name: string): boolean {
    return this.#tools.has(name);
  }

  /** Definitions of every tool, in registration order, to offer to the model. */
  definitions(): ToolDefinition[] {
    // Copies, so a caller that edits a definition cannot change what later callers see.
    return structuredClone(this.#definitions);
  }

  /**
   * Runs one tool call. Tool problems never throw: an unknown tool, arguments that are not JSON or
   * fail the schema, and a tool that throws all come back as `{ output: "error: …", error }` so the
   * model can read and correct them. Rejects with the abort reason if `ctx.signal` is aborted.
   */
  async execute(call: ToolCall, ctx: ToolContext): Promise<ToolOutcome> {
    ctx.signal.throwIfAborted();
    const outcome = await this.#attempt(call, ctx);
    // A result that arrives after cancellation is not wanted; the caller has moved on.
    ctx.signal.throwIfAborted();
    return outcome;
  }

  async #attempt(call: ToolCall, ctx: ToolContext): Promise<ToolOutcome> {
    const { name, arguments: text } = call.function;
    const tool = this.#tools.get(name);
    if (tool === undefined) {
      const known = [...this.#tools.keys()].join(", ") || "none";
      return failure("unknown_tool", `unknown tool "${name}"; available tools: ${known}`);
    }

    let args: unknown;
    try {
      // Models often send "" for a call without arguments; that means an empty object.
      args = text.trim() === "" ? {} : JSON.parse(text);
    } catch (err) {
      return failure(
        "invalid_arguments",
        `arguments for "${name}" are not valid JSON: ${messageOf(err)}`,
      );
    }

    const parsed = tool.input.safeParse(args);
    if (!parsed.success) {
      const problems = parsed.error.issues
        .map((issue) => `${formatPath(issue.path)}: ${issue.message}`)
        .join("; ");
      return failure("invalid_arguments", `invalid arguments for "${name}": ${problems}`);
    }

    try {
      return { output: await runUntilAborted(tool, parsed.data, ctx) };
    } catch (err) {
      if (ctx.signal.aborted) throw ctx.signal.reason;
      return failure("tool_error", messageOf(err));
    }
  }
}
