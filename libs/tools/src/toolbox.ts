import type { ToolCall, ToolDefinition } from "@handoff/contracts";
import {
  type Counter,
  type Histogram,
  metrics,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import type { SourceOutcome, SourceTool, ToolErrorType, ToolSource } from "./source.js";

const tracer = trace.getTracer("@handoff/tools");

/**
 * Who may use which tools, for one request: the patterns of the tier running the loop
 * (`tools.allow.<tier>`) and of the API key that submitted the job (`gateway.api_keys[].tools`).
 * A tool must match both; an absent list allows every tool.
 */
export interface ToolPolicy {
  tier: string;
  tierAllows?: readonly string[] | undefined;
  /** The API key's name, when the job came with one. */
  key?: string | undefined;
  keyAllows?: readonly string[] | undefined;
}

/** A glob of tool names (`*` any run of characters, `?` one) as a matcher. */
export function toolPattern(pattern: string): (name: string) => boolean {
  const source = pattern
    .split("")
    .map((ch) => (ch === "*" ? ".*" : ch === "?" ? "." : ch.replace(/[.+^${}()|[\]\\-]/g, "\\$&")))
    .join("");
  const regex = new RegExp(`^${source}$`);
  return (name) => regex.test(name);
}

/** Whether any of the patterns matches; an absent list matches everything. */
function matchesAny(patterns: readonly string[] | undefined, name: string): boolean {
  return patterns === undefined || patterns.some((pattern) => toolPattern(pattern)(name));
}

/** Why a policy refuses a tool, or undefined when it allows it. */
export function refusal(policy: ToolPolicy, name: string): string | undefined {
  if (!matchesAny(policy.tierAllows, name)) {
    return `tool "${name}" is not allowed for the ${policy.tier} tier (tools.allow.${policy.tier})`;
  }
  if (!matchesAny(policy.keyAllows, name)) {
    return `tool "${name}" is not allowed for API key "${policy.key ?? "?"}"`;
  }
  return undefined;
}

/** A tool call's outcome as the loop records it. */
export interface ToolboxOutcome {
  output: string;
  error?: { type: ToolErrorType; message: string };
  /** Set when the output was longer than `maxOutputBytes` and cut. */
  truncated?: { bytes: number; kept: number };
}

export interface ToolboxOptions {
  /** The longest one call may take, whatever the job's deadline. */
  callTimeoutMs: number;
  /** Output longer than this (UTF-8 bytes) is cut, with a marker, before the model sees it. */
  maxOutputBytes: number;
}

const instruments = (() => {
  let made: { calls: Counter; duration: Histogram } | undefined;
  return () => {
    made ??= (() => {
      const meter = metrics.getMeter("@handoff/tools");
      return {
        calls: meter.createCounter("handoff.tool.calls", {
          description: "Tool calls by tool and outcome (ok, or the error type)",
          unit: "{call}",
        }),
        duration: meter.createHistogram("handoff.tool.duration", {
          description: "Duration of tool calls, from the tool-executor's side",
          unit: "s",
        }),
      };
    })();
    return made;
  };
})();

/** Validators are compiled once per schema text; tools come and go, so the cache is bounded. */
const MAX_VALIDATORS = 1_000;

/**
 * Every tool the mid tier can reach, from all its sources, behind the guard rails: it offers a
 * request only the tools its policy allows, refuses a call to any other, checks the arguments
 * against the tool's JSON Schema before the call, bounds the call by the job's deadline and
 * `callTimeoutMs`, cuts output to `maxOutputBytes`, and records each call as an `execute_tool`
 * CLIENT span and in metrics. No tool problem throws: each comes back as an outcome the model
 * reads.
 */
export class Toolbox {
  readonly #sources: ToolSource[] = [];
  readonly #options: ToolboxOptions;
  readonly #ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
  readonly #validators = new Map<string, ValidateFunction | Error>();

  constructor(options: ToolboxOptions, sources: readonly ToolSource[] = []) {
    this.#options = options;
    this.#sources.push(...sources);
  }

  add(source: ToolSource): void {
    this.#sources.push(source);
  }

  /** Every tool of every source, the first source's winning a name two of them use. */
  list(): Array<SourceTool & { source: string }> {
    const seen = new Map<string, SourceTool & { source: string }>();
    for (const source of this.#sources) {
      for (const tool of source.tools()) {
        if (!seen.has(tool.name)) seen.set(tool.name, { ...tool, source: source.name });
      }
    }
    return [...seen.values()];
  }

  /** The definitions of the tools the policy allows, to offer to the model. */
  offer(policy: ToolPolicy): ToolDefinition[] {
    return this.list()
      .filter((tool) => refusal(policy, tool.name) === undefined)
      .map((tool) => ({
        type: "function" as const,
        function: { name: tool.name, description: tool.description, parameters: tool.parameters },
      }));
  }

  async execute(
    call: ToolCall,
    ctx: { signal: AbortSignal; deadline?: number },
    policy: ToolPolicy,
  ): Promise<ToolboxOutcome> {
    const name = call.function.name;
    const tool = this.list().find((t) => t.name === name);
    return tracer.startActiveSpan(
      `execute_tool ${name}`,
      {
        kind: SpanKind.CLIENT,
        attributes: {
          "gen_ai.operation.name": "execute_tool",
          "gen_ai.tool.name": name,
          "gen_ai.tool.call.id": call.id,
          "gen_ai.tool.type": "function",
          ...(tool ? { "handoff.tool.source": tool.source } : {}),
        },
      },
      async (span) => {
        const started = performance.now();
        let outcome: ToolboxOutcome | undefined;
        try {
          outcome = await this.#run(call, tool, ctx, policy);
          return outcome;
        } finally {
          const result = outcome?.error?.type ?? (outcome ? "ok" : "aborted");
          span.setAttribute("handoff.tool.outcome", result);
          if (outcome?.truncated) span.setAttribute("handoff.tool.output_truncated", true);
          if (result !== "ok") {
            span.setAttribute("error.type", result);
            span.setStatus({
              code: SpanStatusCode.ERROR,
              message: outcome?.error?.message ?? result,
            });
          }
          const { calls, duration } = instruments();
          const attributes = { "gen_ai.tool.name": tool ? name : "(unknown)", outcome: result };
          calls.add(1, attributes);
          duration.record((performance.now() - started) / 1000, attributes);
          span.end();
        }
      },
    );
  }

  async #run(
    call: ToolCall,
    tool: (SourceTool & { source: string }) | undefined,
    ctx: { signal: AbortSignal; deadline?: number },
    policy: ToolPolicy,
  ): Promise<ToolboxOutcome> {
    ctx.signal.throwIfAborted();
    const name = call.function.name;
    if (!tool) {
      const offered = this.offer(policy).map((t) => t.function.name);
      return failure(
        "unknown_tool",
        `unknown tool "${name}"; available tools: ${offered.join(", ") || "none"}`,
      );
    }
    const refused = refusal(policy, name);
    if (refused) return failure("not_allowed", `${refused}; use only the tools you were offered`);
    const text = call.function.arguments;
    let args: unknown;
    try {
      // Models often send "" for a call without arguments; that means an empty object.
      args = text.trim() === "" ? {} : JSON.parse(text);
    } catch (error) {
      return failure(
        "invalid_arguments",
        `arguments for "${name}" are not valid JSON: ${(error as Error).message}`,
      );
    }
    if (typeof args !== "object" || args === null || Array.isArray(args)) {
      return failure("invalid_arguments", `arguments for "${name}" must be a JSON object`);
    }
    const problem = this.#check(tool, args);
    if (problem) return failure("invalid_arguments", `invalid arguments for "${name}": ${problem}`);

    const deadline = Math.min(
      ctx.deadline ?? Number.POSITIVE_INFINITY,
      Date.now() + this.#options.callTimeoutMs,
    );
    const source = this.#sources.find((s) => s.name === tool.source);
    if (!source) return failure("unavailable", `the source of "${name}" is gone`);
    const result: SourceOutcome = await source.call(name, args as Record<string, unknown>, {
      signal: ctx.signal,
      deadline,
    });
    ctx.signal.throwIfAborted();
    // Every failure reads the same to the model, whichever source it came from.
    if (result.error && !result.output.startsWith("error:")) {
      return this.#capped({ ...result, output: `error: ${result.output}` });
    }
    return this.#capped(result);
  }

  /** The schema's complaints about `args`, joined, or undefined when they conform. */
  #check(tool: SourceTool, args: object): string | undefined {
    const key = JSON.stringify(tool.parameters);
    let validator = this.#validators.get(key);
    if (validator === undefined) {
      try {
        validator = this.#ajv.compile(tool.parameters);
      } catch (error) {
        validator = error as Error;
      }
      if (this.#validators.size >= MAX_VALIDATORS) this.#validators.clear();
      this.#validators.set(key, validator);
    }
    if (validator instanceof Error) return `the tool's schema is not usable: ${validator.message}`;
    if (validator(args)) return undefined;
    return (validator.errors ?? [])
      .slice(0, 5)
      .map((e) => `${e.instancePath || "(root)"} ${e.message ?? "is invalid"}`)
      .join("; ");
  }

  #capped(result: SourceOutcome): ToolboxOutcome {
    const bytes = Buffer.byteLength(result.output);
    const max = this.#options.maxOutputBytes;
    if (bytes <= max) return result;
    // Cut on a character boundary: a multi-byte character is dropped whole, never split.
    const kept = new TextDecoder()
      .decode(Buffer.from(result.output).subarray(0, max))
      .replace(/\uFFFD$/, "");
    const keptBytes = Buffer.byteLength(kept);
    return {
      ...result,
      output: `${kept}\n[cut: the tool returned ${bytes} bytes; the first ${keptBytes} are shown]`,
      truncated: { bytes, kept: keptBytes },
    };
  }
}

function failure(type: ToolErrorType, message: string): ToolboxOutcome {
  return { output: `error: ${message}`, error: { type, message } };
}
