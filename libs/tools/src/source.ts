/**
 * Where the tools the mid tier may call live. A tool source lists its tools with the JSON Schema
 * of their arguments and runs a call; the toolbox in front of it (`Toolbox`) applies the guard
 * rails (allowlists, argument validation, output caps), the `execute_tool` span and the metrics,
 * so a source only has to reach its tools.
 */

/** Where a tool lives, as `handoff tools` and the `execute_tool` span report it. */
export type ToolOrigin =
  /** A NATS micro service endpoint (`$SRV` protocol), called with a request on `subject`. */
  | { kind: "nats"; service: string; subject: string; instances: number; idempotent: boolean }
  /** A tool run inside the calling process (tests, embedding). */
  | { kind: "local" }
  /** A tool of a Model Context Protocol server mounted from the config. */
  | { kind: "mcp"; server: string; transport: "stdio" | "http"; tool: string };

/** One tool as a source offers it. */
export interface SourceTool {
  /** The name the model sees: `/^[A-Za-z0-9_-]{1,64}$/`, unique across every source. */
  name: string;
  description: string;
  /** JSON Schema of the arguments object (an object schema). */
  parameters: Record<string, unknown>;
  origin: ToolOrigin;
}

/** What a call carries besides its arguments. The active OpenTelemetry context is its parent. */
export interface SourceCallContext {
  /** Aborted when the job is cancelled: the call must stop waiting at once. */
  signal: AbortSignal;
  /** Epoch milliseconds after which the answer is of no use: the job's deadline or the call's limit. */
  deadline: number;
}

/** Why a call failed, as the `execute_tool` span's `error.type` and the metrics name it. */
export type ToolErrorType =
  | "not_allowed"
  | "unknown_tool"
  | "invalid_arguments"
  | "tool_error"
  | "timeout"
  | "no_responders"
  | "unavailable";

/** A call's result: `output` goes back to the model; `error` is set when the call failed. */
export interface SourceOutcome {
  output: string;
  error?: { type: ToolErrorType; message: string };
}

export interface ToolSource {
  /** For logs and `handoff tools`: `nats`, `mcp:<server>`. */
  readonly name: string;
  /** The tools this source can run now. */
  tools(): SourceTool[];
  /**
   * Runs one call of a tool `tools()` listed, with arguments already validated against its schema.
   * Every failure of the tool or of the way to it (an error reply, a timeout, a service that is
   * gone) resolves to an outcome with `error`; it rejects only with the abort reason when
   * `ctx.signal` fires.
   */
  call(name: string, args: Record<string, unknown>, ctx: SourceCallContext): Promise<SourceOutcome>;
  /** Stops watching and closes connections or child processes. */
  close(): Promise<void>;
}
