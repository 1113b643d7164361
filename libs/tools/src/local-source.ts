import { timeoutSignal } from "./deadline.js";
import type { SourceCallContext, SourceOutcome, SourceTool, ToolSource } from "./source.js";
import { type Tool, ToolRegistry } from "./tool.js";

/**
 * Tools run in the calling process, behind the same toolbox as remote ones: for tests, and for
 * embedding the tool loop where no NATS is at hand. The mesh serves its tools on NATS instead
 * (`serveTools`).
 */
export class LocalToolSource implements ToolSource {
  readonly name = "local";
  readonly #registry: ToolRegistry;
  readonly #now: () => Date;

  constructor(tools: readonly Tool[], now: () => Date = () => new Date()) {
    this.#registry = new ToolRegistry(tools);
    this.#now = now;
  }

  tools(): SourceTool[] {
    return this.#registry.definitions().map(({ function: f }) => ({
      name: f.name,
      description: f.description ?? "",
      parameters: f.parameters ?? { type: "object" },
      origin: { kind: "local" },
    }));
  }

  async call(
    name: string,
    args: Record<string, unknown>,
    ctx: SourceCallContext,
  ): Promise<SourceOutcome> {
    const deadline = timeoutSignal(ctx.deadline - Date.now());
    const timeout = deadline.signal;
    const signal = AbortSignal.any([ctx.signal, timeout]);
    try {
      const outcome = await this.#registry.execute(
        { id: "", type: "function", function: { name, arguments: JSON.stringify(args) } },
        { signal, now: this.#now },
      );
      if (outcome.error === undefined) return { output: outcome.output };
      return {
        output: outcome.output,
        error: { type: outcome.failure ?? "tool_error", message: outcome.error },
      };
    } catch (error) {
      if (ctx.signal.aborted) throw ctx.signal.reason;
      if (timeout.aborted) {
        const message = "the tool did not answer before its deadline";
        return { output: `error: ${message}`, error: { type: "timeout", message } };
      }
      throw error;
    } finally {
      deadline.clear();
    }
  }

  async close(): Promise<void> {}
}
