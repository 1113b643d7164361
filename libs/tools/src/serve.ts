import { extractContext } from "@handoff/mesh";
import type { NatsConnection } from "@nats-io/nats-core";
import { type Service, type ServiceMsg, Svcm } from "@nats-io/services";
import { context, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { timeoutSignal } from "./deadline.js";
import {
  DEADLINE_HEADER,
  TOOL_PROTOCOL_VERSION,
  TOOLS_CHANGED_SUBJECT,
  ToolErrorCode,
  ToolMetadata,
  type ToolsChanged,
  toolSubject,
} from "./protocol.js";
import { type Tool, ToolRegistry, toolDefinition } from "./tool.js";

const tracer = trace.getTracer("@handoff/tools");

export interface ServeToolsOptions {
  /** The micro service's name, as `$SRV.INFO` and `handoff tools` show it (default `handoff-tools`). */
  name?: string;
  /** Its semver (default `1.0.0`). */
  version?: string;
  description?: string;
  /**
   * The queue group of the endpoints (default `handoff-tools`): every instance serving a tool in
   * the same group shares its calls, one instance per call.
   */
  queue?: string;
  /** How long a call without a `Handoff-Deadline` header may run (default 30 s). */
  defaultTimeoutMs?: number;
  /** The clock tools get (tests pin it). */
  now?: () => Date;
  /** Told about requests that could not even be read; tool failures go back to the caller instead. */
  onError?: (error: unknown, tool: string) => void;
}

export interface ToolServer {
  /** The instance id the NATS service API gives this server. */
  readonly id: string;
  readonly name: string;
  /** Stops answering (calls in flight finish) and announces that the tools left. */
  stop(): Promise<void>;
}

/**
 * Serves tools on NATS: one micro service endpoint per tool, each in a queue group, so any number
 * of replicas share the calls and the tool-executor finds them through `$SRV.INFO`. Each call is
 * an `execute_tool <name>` SERVER span, a child of the caller's span. Arguments are validated
 * against the tool's zod schema; the handler's result is the reply; a failure, a bad argument or a
 * passed deadline is an error reply (`Nats-Service-Error`), which the caller hands to the model.
 */
export async function serveTools(
  nc: NatsConnection,
  tools: readonly Tool[],
  options: ServeToolsOptions = {},
): Promise<ToolServer> {
  // Validates names, duplicates and schemas before anything is registered.
  const registry = new ToolRegistry(tools);
  const name = options.name ?? "handoff-tools";
  const service: Service = await new Svcm(nc).add({
    name,
    version: options.version ?? "1.0.0",
    description: options.description ?? `Handoff tools: ${tools.map((t) => t.name).join(", ")}`,
    metadata: { [ToolMetadata.marker]: TOOL_PROTOCOL_VERSION },
    queue: options.queue ?? "handoff-tools",
  });
  const id = service.info().id;
  const now = options.now ?? (() => new Date());
  const defaultTimeoutMs = options.defaultTimeoutMs ?? 30_000;
  for (const tool of registry.tools()) {
    const { function: definition } = toolDefinition(tool);
    service.addEndpoint(tool.name, {
      subject: toolSubject(tool.name),
      metadata: {
        [ToolMetadata.marker]: TOOL_PROTOCOL_VERSION,
        [ToolMetadata.description]: definition.description ?? "",
        [ToolMetadata.schema]: JSON.stringify(definition.parameters ?? { type: "object" }),
        [ToolMetadata.idempotent]: String(tool.idempotent === true),
      },
      handler: (error, msg) => {
        if (error) {
          options.onError?.(error, tool.name);
          return;
        }
        void answer(registry, tool.name, msg, { now, defaultTimeoutMs }).catch((err: unknown) =>
          options.onError?.(err, tool.name),
        );
      },
    });
  }
  const announce = (event: ToolsChanged["event"]) => {
    const body: ToolsChanged = { event, service: name, id, tools: tools.map((t) => t.name) };
    try {
      nc.publish(TOOLS_CHANGED_SUBJECT, JSON.stringify(body));
    } catch {
      // A closed connection: callers find out at their next `$SRV.INFO` poll.
    }
  };
  announce("up");
  return {
    id,
    name,
    async stop() {
      await service.stop();
      announce("down");
      await nc.flush().catch(() => {});
    },
  };
}

/** The epoch-ms deadline a request carries, or undefined when it has none (or an unreadable one). */
function deadlineOf(msg: ServiceMsg): number | undefined {
  const raw = msg.headers?.get(DEADLINE_HEADER);
  if (!raw) return undefined;
  const value = Number(raw);
  return Number.isFinite(value) ? value : undefined;
}

async function answer(
  registry: ToolRegistry,
  name: string,
  msg: ServiceMsg,
  options: { now: () => Date; defaultTimeoutMs: number },
): Promise<void> {
  const parent = extractContext(msg.headers);
  await tracer.startActiveSpan(
    `execute_tool ${name}`,
    {
      kind: SpanKind.SERVER,
      attributes: {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.type": "function",
        "messaging.system": "nats",
        "messaging.destination.name": msg.subject,
      },
    },
    parent,
    async (span) => {
      const reply = (outcome: "ok" | "error", code?: number, text?: string) => {
        span.setAttribute("handoff.tool.outcome", outcome);
        if (code !== undefined) {
          span.setAttribute("error.type", String(code));
          span.setStatus({ code: SpanStatusCode.ERROR, message: text ?? "" });
        }
      };
      try {
        const deadline = deadlineOf(msg) ?? Date.now() + options.defaultTimeoutMs;
        const remaining = deadline - Date.now();
        if (remaining <= 0) {
          const text = "the caller's deadline passed before the call started";
          reply("error", ToolErrorCode.deadline, text);
          msg.respondError(ToolErrorCode.deadline, text);
          return;
        }
        const timeout = timeoutSignal(remaining);
        let outcome: Awaited<ReturnType<ToolRegistry["execute"]>>;
        try {
          outcome = await context.with(trace.setSpan(context.active(), span), () =>
            registry.execute(
              { id: "", type: "function", function: { name, arguments: msg.string() } },
              { signal: timeout.signal, now: options.now },
            ),
          );
        } catch {
          const text = `the tool did not answer within ${Math.max(0, Math.round(remaining))} ms`;
          reply("error", ToolErrorCode.deadline, text);
          msg.respondError(ToolErrorCode.deadline, text);
          return;
        } finally {
          timeout.clear();
        }
        if (outcome.error !== undefined) {
          const code =
            outcome.failure === "tool_error"
              ? ToolErrorCode.failed
              : ToolErrorCode.invalidArguments;
          reply("error", code, outcome.error);
          msg.respondError(code, outcome.error);
          return;
        }
        reply("ok");
        msg.respond(outcome.output);
      } finally {
        span.end();
      }
    },
  );
}
