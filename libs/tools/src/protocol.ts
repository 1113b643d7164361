import type { ToolOrigin } from "./source.js";

/**
 * The wire protocol of a Handoff tool service, so a tool can be written in any language with a
 * NATS client:
 *
 * - A tool is an endpoint of a NATS micro service (the `$SRV` protocol) listening on
 *   `handoff.v1.tools.call.<tool>` in a queue group, so replicas share the calls.
 * - The endpoint's metadata marks it as a tool (`handoff.tool: "1"`) and carries its description
 *   and the JSON Schema of its arguments (`handoff.tool.description`, `handoff.tool.schema`).
 * - A call is a request whose body is the arguments object as JSON, with the caller's W3C trace
 *   context (`traceparent`, `tracestate`) and `Handoff-Deadline` (epoch milliseconds) in headers.
 * - The reply's body is the text for the model. A failure is a reply with the micro protocol's
 *   `Nats-Service-Error` and `Nats-Service-Error-Code` headers: 400 bad arguments, 500 the tool
 *   failed, 504 the deadline passed.
 * - A tool service publishes on `handoff.v1.tools.changed` when it starts and stops, so callers
 *   rediscover at once instead of at their next `$SRV.INFO` poll.
 * - `handoff.tool.idempotent: "true"` says a repeated call does no more than one: a caller whose
 *   connection dropped during the call asks again once it is back. A "no responders" reply means
 *   no instance received the call, so any tool's call is made again then, within its deadline.
 */

/** Subject prefix of tool endpoints; the tool's name is the last token. */
export const TOOL_SUBJECT_PREFIX = "handoff.v1.tools.call";
/** Where tool services announce that they started or stopped. */
export const TOOLS_CHANGED_SUBJECT = "handoff.v1.tools.changed";

/**
 * Every tool-executor answers a request here with the tools it can reach (NATS and MCP) and who
 * may use them: what `handoff tools` lists.
 */
export const TOOLS_CATALOG_SUBJECT = "handoff.v1.tools.catalog";

/** Endpoint metadata keys. */
export const ToolMetadata = {
  /** Marks an endpoint as a Handoff tool; the value is the protocol version, `1`. */
  marker: "handoff.tool",
  description: "handoff.tool.description",
  /** The JSON Schema of the arguments object, as JSON text. */
  schema: "handoff.tool.schema",
  /** `true` when a repeated call does no more than one (see `Tool.idempotent`). */
  idempotent: "handoff.tool.idempotent",
} as const;
export const TOOL_PROTOCOL_VERSION = "1";

/** Request header: the instant (epoch milliseconds) after which the caller no longer waits. */
export const DEADLINE_HEADER = "Handoff-Deadline";

/** `Nats-Service-Error-Code` values a tool service replies with. */
export const ToolErrorCode = {
  invalidArguments: 400,
  failed: 500,
  deadline: 504,
} as const;

/** The subject a tool is called on. */
export function toolSubject(name: string): string {
  return `${TOOL_SUBJECT_PREFIX}.${name}`;
}

/** What a tool service announces on `TOOLS_CHANGED_SUBJECT`. */
export interface ToolsChanged {
  event: "up" | "down";
  service: string;
  id: string;
  tools: string[];
}

/** One tool-executor's answer on `TOOLS_CATALOG_SUBJECT`. */
export interface ToolsCatalog {
  /** The tool-executor instance that answered. */
  instance: string;
  tools: Array<{
    name: string;
    description: string;
    origin: ToolOrigin;
  }>;
  /** `tools.allow`: per tier, the patterns it allows (null: every tool). */
  tiers: Record<"light" | "mid", string[] | null>;
  /** Per API key name, the patterns it allows (null: every tool its tier allows). */
  keys: Record<string, string[] | null>;
}
