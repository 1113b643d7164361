import {
  type AssistantMessage,
  type ChatCompletionRequest,
  completionFromRecord,
  FreeFormObject,
  HandoffError,
  HandoffInfo,
  HandoffRequestOptions,
  type JobRecord,
  type JobResult,
  promptCacheTokens,
  type RequestMessage,
  type ToolCall,
  type ToolChoice,
  type ToolDefinition,
} from "@handoff/contracts";
import { z } from "zod";
import { docs } from "./route-schema.js";
import type { AnswerWriter } from "./streaming.js";

/**
 * Anthropic's Messages API (`POST /v1/messages`) on the gateway: the request read into the mesh's
 * chat-completions shape, and the job's answer written back as Anthropic's `message` or its
 * server-sent events, so the official `@anthropic-ai/sdk` works against the gateway unchanged.
 * What the mesh cannot honour (thinking, images, documents, server tools, prompt caching, top_k,
 * ...) is a 400 naming the field, never silently dropped.
 */

// ---- the request ----

const ToolName = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,64}$/, "tool names are 1-64 letters, digits, '_' or '-'");

/** The SDK echoes a text block back with `citations: null`; actual citations are not supported. */
const NoCitations = z.array(z.unknown()).max(0, "citations are not supported").nullish();

const TextBlockParam = z.strictObject({
  type: z.literal("text"),
  text: z.string(),
  citations: NoCitations,
});

const ToolUseBlockParam = z.strictObject({
  type: z.literal("tool_use"),
  id: z.string().min(1),
  name: z.string().min(1),
  /** The tool's arguments, as the model produced them: free-form JSON, bounded in depth. */
  input: FreeFormObject,
  /** How the SDK marks an ordinary tool call; other callers are server-side tool runs. */
  caller: z.strictObject({ type: z.literal("direct") }).optional(),
});

const ToolResultBlockParam = z.strictObject({
  type: z.literal("tool_result"),
  tool_use_id: z.string().min(1),
  content: z
    .union([z.string(), z.array(z.discriminatedUnion("type", [TextBlockParam]))])
    .optional(),
  is_error: z.boolean().optional(),
});

const UserBlock = z.discriminatedUnion("type", [TextBlockParam, ToolResultBlockParam]);
const AssistantBlock = z.discriminatedUnion("type", [TextBlockParam, ToolUseBlockParam]);

const UserMessageParam = z.strictObject({
  role: z.literal("user"),
  content: z.union([z.string(), z.array(UserBlock).min(1)]),
});
const AssistantMessageParam = z.strictObject({
  role: z.literal("assistant"),
  content: z.union([z.string(), z.array(AssistantBlock)]),
});
const MessageParam = z.discriminatedUnion("role", [UserMessageParam, AssistantMessageParam]);
type MessageParam = z.infer<typeof MessageParam>;

const Tool = z.strictObject({
  type: z
    .literal("custom", {
      error: "only client tools (type custom) are supported: server tools are not",
    })
    .nullish(),
  name: ToolName,
  description: z.string().optional(),
  input_schema: FreeFormObject.refine((schema) => schema.type === "object", {
    message: 'input_schema must be a JSON Schema of type "object"',
    path: ["type"],
  }),
});
type Tool = z.infer<typeof Tool>;

/** The mesh has no way to hold a turn to one tool call: only the default (false) is taken. */
const DisableParallelToolUse = z
  .literal(false, {
    error:
      "disable_parallel_tool_use: true is not supported: the mesh cannot limit a turn to one tool call",
  })
  .optional();

const AnthropicToolChoice = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("auto"), disable_parallel_tool_use: DisableParallelToolUse }),
  z.strictObject({ type: z.literal("any"), disable_parallel_tool_use: DisableParallelToolUse }),
  z.strictObject({
    type: z.literal("tool"),
    name: z.string().min(1),
    disable_parallel_tool_use: DisableParallelToolUse,
  }),
  z.strictObject({ type: z.literal("none") }),
]);
type AnthropicToolChoice = z.infer<typeof AnthropicToolChoice>;

/** The most stop sequences the mesh passes to its models (OpenAI's limit). */
export const MAX_STOP_SEQUENCES = 4;

/**
 * The body of `POST /v1/messages`, as far as the mesh can honour it. Objects are strict: any other
 * field is an issue naming it. `handoff` is the gateway's own (`timeout_ms`, `max_cost_usd`,
 * `cache`), as on the chat route.
 */
export const AnthropicMessagesRequest = z
  .strictObject({
    model: z.string().min(1),
    max_tokens: z
      .number({
        error: (issue) => (issue.input === undefined ? "max_tokens is required" : undefined),
      })
      .int()
      .positive(),
    messages: z.array(MessageParam).min(1),
    system: z
      .union([z.string(), z.array(z.discriminatedUnion("type", [TextBlockParam]))])
      .optional(),
    tools: z.array(Tool).max(128).optional(),
    tool_choice: AnthropicToolChoice.optional(),
    temperature: z.number().min(0).max(1).optional(),
    top_p: z.number().min(0).max(1).optional(),
    stop_sequences: z
      .array(z.string())
      .max(
        MAX_STOP_SEQUENCES,
        `the mesh passes at most ${MAX_STOP_SEQUENCES} stop sequences to its models`,
      )
      .optional(),
    stream: z.boolean().optional(),
    /** Accepted as Anthropic defines it; the mesh has no use for it. */
    metadata: z.strictObject({ user_id: z.string().max(256).nullish() }).optional(),
    handoff: HandoffRequestOptions.optional(),
  })
  .superRefine((request, ctx) => {
    const choice = request.tool_choice;
    if (choice?.type !== "any" && choice?.type !== "tool") return;
    const names = (request.tools ?? []).map((tool) => tool.name);
    if (names.length === 0) {
      ctx.addIssue({
        code: "custom",
        path: ["tool_choice", "type"],
        message: `tool_choice ${choice.type} needs tools`,
      });
    } else if (choice.type === "tool" && !names.includes(choice.name)) {
      ctx.addIssue({
        code: "custom",
        path: ["tool_choice", "name"],
        message: `no tool named "${choice.name}" in tools`,
      });
    }
  });
AnthropicMessagesRequest.register(docs, { id: "AnthropicMessagesRequest" });
export type AnthropicMessagesRequest = z.infer<typeof AnthropicMessagesRequest>;

/** Why a field the gateway knows of is refused; any other unknown field gets a generic reason. */
const UNSUPPORTED_FIELDS: Record<string, string> = {
  thinking: "extended thinking is not supported: the mesh's tiers answer without thinking blocks",
  top_k: "top_k is not supported: not every tier's model can honour it",
  cache_control:
    "cache_control is not supported: the mesh marks the prompt cache of its Anthropic tiers itself (a deployment's prompt_cache)",
  service_tier: "service_tier is not supported: the mesh routes the request to its own tiers",
  mcp_servers: "MCP servers are not supported",
  container: "containers (server-side code execution) are not supported",
};

function unsupportedField(key: string): string {
  return (
    UNSUPPORTED_FIELDS[key] ??
    `unsupported field "${key}": the gateway refuses what it cannot honour rather than drop it`
  );
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let value = root;
  for (const key of path) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return value;
}

type ReadableIssue = { path: PropertyKey[]; message: string };

/**
 * Zod's issues as a client can act on them: an unknown key becomes one issue whose path ends in
 * that key; a union of a string and an array of blocks reports the branch the value's JSON type
 * chose (so an image block is named, not "Invalid input"); an unknown block type or role says
 * which are taken.
 */
function readableIssues(
  issues: readonly z.core.$ZodIssue[],
  body: unknown,
  prefix: readonly PropertyKey[] = [],
): ReadableIssue[] {
  const out: ReadableIssue[] = [];
  for (const issue of issues) {
    const path = [...prefix, ...issue.path];
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys)
        out.push({ path: [...path, key], message: unsupportedField(key) });
      continue;
    }
    if (issue.code === "invalid_union") {
      if (issue.errors.length === 0 && issue.discriminator !== undefined) {
        out.push({ path, message: discriminatorMessage(issue, valueAt(body, path)) });
        continue;
      }
      // Branches that failed only because the value is of another JSON type did not apply.
      const applicable = issue.errors.filter(
        (branch) =>
          !(
            branch.length === 1 &&
            branch[0]?.code === "invalid_type" &&
            branch[0].path.length === 0
          ),
      );
      const [only] = applicable;
      if (applicable.length === 1 && only) {
        out.push(...readableIssues(only, body, path));
        continue;
      }
      if (applicable.length === 0) {
        const expected = issue.errors.flatMap((branch) =>
          branch[0]?.code === "invalid_type" ? [branch[0].expected] : [],
        );
        out.push({ path, message: `expected ${expected.join(" or ")}` });
        continue;
      }
    }
    out.push({ path, message: issue.message });
  }
  return out;
}

function discriminatorMessage(
  issue: Extract<z.core.$ZodIssue, { code: "invalid_union" }>,
  value: unknown,
): string {
  const options = ("options" in issue ? (issue.options ?? []) : []).map((o) => String(o));
  const taken = options.join(", ");
  if (value === undefined) return `${issue.discriminator} is required: one of ${taken}`;
  if (issue.discriminator === "role") {
    return value === "system"
      ? 'role "system" is not a message role here: put instructions in the top-level system field'
      : `role ${JSON.stringify(value)} is not supported: messages are ${taken} turns`;
  }
  return `type ${JSON.stringify(value)} is not supported here: this gateway takes ${taken}`;
}

/** The 400 for a body that is not a Messages request the mesh can honour, naming every path. */
export function messagesValidationError(error: z.ZodError, body: unknown): HandoffError {
  const issues = readableIssues(error.issues, body).map(
    (issue): z.core.$ZodIssue => ({ code: "custom", path: issue.path, message: issue.message }),
  );
  return HandoffError.validation("request body", new z.ZodError(issues));
}

/** Reads and validates a Messages request body; a 400 naming the failing paths otherwise. */
export function parseMessagesRequest(body: unknown): AnthropicMessagesRequest {
  const parsed = AnthropicMessagesRequest.safeParse(body);
  if (!parsed.success) throw messagesValidationError(parsed.error, body);
  return parsed.data;
}

type TextBlocks = ReadonlyArray<{ text: string }>;
const joinText = (content: string | TextBlocks | undefined): string =>
  content === undefined
    ? ""
    : typeof content === "string"
      ? content
      : content.map((b) => b.text).join("");

/**
 * A tool result as the mesh's `tool` message. A failed call (`is_error`) is marked the way the
 * mesh's tool executor marks one, output starting with `error:`, which the Anthropic provider
 * turns back into `is_error` and other models read as a failure.
 */
function toolResultContent(text: string, isError: boolean | undefined): string {
  if (!isError || text.startsWith("error:")) return text;
  return text === "" ? "error:" : `error: ${text}`;
}

function toRequestMessages(message: MessageParam): RequestMessage[] {
  if (message.role === "assistant") {
    if (typeof message.content === "string")
      return [{ role: "assistant", content: message.content }];
    const text = message.content.flatMap((b) => (b.type === "text" ? [b.text] : [])).join("");
    const calls: ToolCall[] = message.content.flatMap((b) =>
      b.type === "tool_use"
        ? [
            {
              id: b.id,
              type: "function" as const,
              function: { name: b.name, arguments: JSON.stringify(b.input) },
            },
          ]
        : [],
    );
    return [
      {
        role: "assistant",
        content: text === "" && calls.length > 0 ? null : text,
        ...(calls.length > 0 ? { tool_calls: calls } : {}),
      },
    ];
  }
  if (typeof message.content === "string") return [{ role: "user", content: message.content }];
  // Tool results become `tool` messages, in place; the text around them, user messages.
  const out: RequestMessage[] = [];
  let text: { type: "text"; text: string }[] = [];
  const flush = () => {
    if (text.length > 0) out.push({ role: "user", content: text });
    text = [];
  };
  for (const block of message.content) {
    if (block.type === "text") {
      text.push({ type: "text", text: block.text });
      continue;
    }
    flush();
    out.push({
      role: "tool",
      tool_call_id: block.tool_use_id,
      content: toolResultContent(joinText(block.content), block.is_error),
    });
  }
  flush();
  return out;
}

function toTool(tool: Tool): ToolDefinition {
  return {
    type: "function",
    function: {
      name: tool.name,
      ...(tool.description !== undefined ? { description: tool.description } : {}),
      parameters: tool.input_schema,
    },
  };
}

/** Anthropic's tool_choice as the mesh's (OpenAI's); `none` and `auto` without tools mean nothing. */
function toToolChoice(choice: AnthropicToolChoice): ToolChoice {
  switch (choice.type) {
    case "auto":
      return "auto";
    case "any":
      return "required";
    case "none":
      return "none";
    case "tool":
      return { type: "function", function: { name: choice.name } };
  }
}

/** The Messages request in the mesh's chat-completions shape, the form every door submits. */
export function toChatRequest(request: AnthropicMessagesRequest): ChatCompletionRequest {
  const system = joinText(request.system);
  const tools = request.tools ?? [];
  return {
    model: request.model,
    messages: [
      ...(system !== "" ? [{ role: "system" as const, content: system }] : []),
      ...request.messages.flatMap(toRequestMessages),
    ],
    ...(tools.length > 0 ? { tools: tools.map(toTool) } : {}),
    ...(request.tool_choice && tools.length > 0
      ? { tool_choice: toToolChoice(request.tool_choice) }
      : {}),
    max_tokens: request.max_tokens,
    ...(request.temperature !== undefined ? { temperature: request.temperature } : {}),
    ...(request.top_p !== undefined ? { top_p: request.top_p } : {}),
    ...(request.stop_sequences?.length ? { stop: request.stop_sequences } : {}),
    stream: request.stream === true,
    ...(request.handoff ? { handoff: request.handoff } : {}),
  };
}

// ---- the answer ----

const TextBlock = z.object({ type: z.literal("text"), text: z.string() });
const ToolUseBlock = z.object({
  type: z.literal("tool_use"),
  id: z.string(),
  name: z.string(),
  input: z.record(z.string(), z.unknown()),
});
const ContentBlock = z.discriminatedUnion("type", [TextBlock, ToolUseBlock]);
type ContentBlock = z.infer<typeof ContentBlock>;

export const AnthropicStopReason = z.enum([
  "end_turn",
  "max_tokens",
  "stop_sequence",
  "tool_use",
  "refusal",
]);
export type AnthropicStopReason = z.infer<typeof AnthropicStopReason>;

/**
 * Anthropic's `usage`, summed over every model call the job made. As Anthropic counts them,
 * `input_tokens` leaves out the prompt tokens read from a prompt cache (`cache_read_input_tokens`)
 * and written to one (`cache_creation_input_tokens`): the three add up to the prompt. The cache
 * fields are there when any call read or wrote some.
 */
const AnthropicUsage = z.object({
  input_tokens: z.number().int().nonnegative(),
  output_tokens: z.number().int().nonnegative(),
  cache_creation_input_tokens: z.number().int().nonnegative().optional(),
  cache_read_input_tokens: z.number().int().nonnegative().optional(),
});
type AnthropicUsage = z.infer<typeof AnthropicUsage>;

/** Anthropic's `message`, plus the `handoff` report of how it was made (as on the chat route). */
export const AnthropicMessage = z.object({
  id: z.string(),
  type: z.literal("message"),
  role: z.literal("assistant"),
  model: z.string(),
  content: z.array(ContentBlock),
  stop_reason: AnthropicStopReason.nullable(),
  stop_sequence: z.string().nullable(),
  usage: AnthropicUsage,
  handoff: HandoffInfo,
});
AnthropicMessage.register(docs, { id: "AnthropicMessage" });
export type AnthropicMessage = z.infer<typeof AnthropicMessage>;

const ErrorDetails = z.object({
  /** Handoff's code (`HANDOFF_ERR_*`): the SDK shows it as `error.errorCode`. */
  error_code: z.string(),
  issues: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
  total_issues: z.number().int().nonnegative().optional(),
  job_id: z.string().optional(),
  trace_id: z.string().optional(),
});

export const AnthropicErrorType = z.enum([
  "invalid_request_error",
  "authentication_error",
  "billing_error",
  "permission_error",
  "not_found_error",
  "request_too_large",
  "rate_limit_error",
  "timeout_error",
  "api_error",
  "overloaded_error",
]);
export type AnthropicErrorType = z.infer<typeof AnthropicErrorType>;

/** Anthropic's error body; `details` carries Handoff's code, issues and the job, when known. */
export const AnthropicErrorBody = z.object({
  type: z.literal("error"),
  error: z.object({
    type: AnthropicErrorType,
    message: z.string(),
    details: ErrorDetails.optional(),
  }),
  /** The request's trace id: what `x-handoff-trace-id` says. */
  request_id: z.string().nullable(),
});
AnthropicErrorBody.register(docs, { id: "AnthropicErrorBody" });
export type AnthropicErrorBody = z.infer<typeof AnthropicErrorBody>;

/** One server-sent event of a streamed message: its `data:`, whose `type` is the event's name. */
export const AnthropicStreamEvent = z.discriminatedUnion("type", [
  z.object({ type: z.literal("message_start"), message: AnthropicMessage.omit({ handoff: true }) }),
  z.object({
    type: z.literal("content_block_start"),
    index: z.number().int().nonnegative(),
    content_block: ContentBlock,
  }),
  z.object({
    type: z.literal("content_block_delta"),
    index: z.number().int().nonnegative(),
    delta: z.discriminatedUnion("type", [
      z.object({ type: z.literal("text_delta"), text: z.string() }),
      z.object({ type: z.literal("input_json_delta"), partial_json: z.string() }),
    ]),
  }),
  z.object({ type: z.literal("content_block_stop"), index: z.number().int().nonnegative() }),
  z.object({
    type: z.literal("message_delta"),
    delta: z.object({
      stop_reason: AnthropicStopReason.nullable(),
      stop_sequence: z.string().nullable(),
    }),
    usage: AnthropicUsage,
    handoff: HandoffInfo,
  }),
  z.object({ type: z.literal("message_stop") }),
  z.object({ type: z.literal("ping") }),
  AnthropicErrorBody,
]);
AnthropicStreamEvent.register(docs, { id: "AnthropicStreamEvent" });
export type AnthropicStreamEvent = z.infer<typeof AnthropicStreamEvent>;

/**
 * The mesh's finish reason as Anthropic's stop reason. The mesh does not record which stop
 * sequence ended an answer (its providers report both as `stop`), so `stop_sequence` is not
 * distinguished from `end_turn`.
 */
export function toStopReason(result: JobResult): AnthropicStopReason {
  if (result.message.tool_calls?.length) return "tool_use";
  switch (result.finish_reason) {
    case "length":
      return "max_tokens";
    case "content_filter":
      return "refusal";
    default:
      return "end_turn";
  }
}

/** A tool call's arguments as the `input` object of a `tool_use` block. */
function toolInput(call: ToolCall, jobId: string): Record<string, unknown> {
  const text = call.function.arguments;
  if (text.trim() === "") return {};
  try {
    const value: unknown = JSON.parse(text);
    if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      return value as Record<string, unknown>;
    }
  } catch {
    // reported below
  }
  throw new HandoffError(
    "HANDOFF_ERR_PROVIDER",
    `the model called tool "${call.function.name}" with arguments that are not a JSON object; GET /v1/jobs/${jobId} has them`,
  );
}

function toolUseBlocks(message: AssistantMessage, jobId: string): ContentBlock[] {
  return (message.tool_calls ?? []).map((call) => ({
    type: "tool_use" as const,
    id: call.id,
    name: call.function.name,
    input: toolInput(call, jobId),
  }));
}

/** Anthropic's `message` for a finished job, with the `handoff` report of how it was made. */
export function messageFromRecord(record: JobRecord, traceId: string): AnthropicMessage {
  const result = record.result;
  if (!result) throw new Error(`job ${record.id} has no result`);
  const completion = completionFromRecord(record, traceId);
  const text = result.message.content ?? "";
  return {
    id: `msg_${record.id}`,
    type: "message",
    role: "assistant",
    model: result.model,
    content: [
      ...(text !== "" ? [{ type: "text" as const, text }] : []),
      ...toolUseBlocks(result.message, record.id),
    ],
    stop_reason: toStopReason(result),
    stop_sequence: null,
    usage: anthropicUsage(record, completion.usage.completion_tokens),
    handoff: completion.handoff,
  };
}

/** A job's usage as Anthropic counts it: the cached prompt tokens apart from `input_tokens`. */
function anthropicUsage(record: JobRecord, outputTokens: number): AnthropicUsage {
  const prompt = record.usage.reduce((sum, u) => sum + u.input_tokens, 0);
  const { read, written } = promptCacheTokens(record.usage);
  return {
    input_tokens: Math.max(0, prompt - read - written),
    output_tokens: outputTokens,
    ...(read > 0 || written > 0
      ? { cache_creation_input_tokens: written, cache_read_input_tokens: read }
      : {}),
  };
}

// ---- errors ----

/** Anthropic's error type for an HTTP status, as its API pairs them. */
export function anthropicErrorType(status: number): AnthropicErrorType {
  switch (status) {
    case 400:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 402:
      return "billing_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 503:
    case 529:
      return "overloaded_error";
    case 504:
      return "timeout_error";
    default:
      return status >= 500 ? "api_error" : "invalid_request_error";
  }
}

export interface ErrorContext {
  job_id?: string;
  trace_id?: string;
}

/**
 * A Handoff error as Anthropic's error body, with its status (the mesh's own: 400, 401, 402, 404,
 * 413, 429, 502, 503, 504, ...). Handoff's code, the validation issues and the job go in
 * `error.details`, which the SDK exposes as `errorCode` and `details`.
 */
export function anthropicError(
  error: HandoffError,
  context: ErrorContext = {},
): { status: number; body: AnthropicErrorBody } {
  return {
    status: error.status,
    body: {
      type: "error",
      error: {
        type: anthropicErrorType(error.status),
        message: error.message,
        details: {
          error_code: error.code,
          ...(error.issues ? { issues: error.issues, total_issues: error.totalIssues } : {}),
          ...context,
        },
      },
      request_id: context.trace_id ?? null,
    },
  };
}

/**
 * An OpenAI-shaped error body another hook of the gateway answered with (the start-up gate's 503)
 * as Anthropic's; undefined for any other payload.
 */
export function anthropicErrorFromOpenAi(
  payload: unknown,
  status: number,
): AnthropicErrorBody | undefined {
  if (status < 400 || payload === null || typeof payload !== "object") return undefined;
  if ((payload as { type?: unknown }).type === "error") return undefined; // already Anthropic's
  const error = (payload as { error?: unknown }).error;
  if (error === null || typeof error !== "object") return undefined;
  const { message, code, job_id, trace_id } = error as Record<string, unknown>;
  if (typeof message !== "string") return undefined;
  const text = (value: unknown) => (typeof value === "string" ? value : undefined);
  const traceId = text(trace_id);
  return {
    type: "error",
    error: {
      type: anthropicErrorType(status),
      message,
      details: {
        error_code: text(code) ?? "HANDOFF_ERR_INTERNAL",
        ...(text(job_id) ? { job_id: text(job_id) } : {}),
        ...(traceId ? { trace_id: traceId } : {}),
      },
    },
    request_id: traceId ?? null,
  };
}

// ---- streaming ----

export interface MessageEventsOptions {
  jobId: string;
  /** The request's trace, named in the `handoff` report and in errors. */
  traceId: string;
}

/**
 * Writes a streamed job as Anthropic's events: `message_start` (once the answering model is
 * known: with the first token, or the answer), a text block (`content_block_start`, `text_delta`s,
 * `content_block_stop`), one block per tool call with its input as one `input_json_delta`, then
 * `message_delta` (stop reason, usage, and the `handoff` report) and `message_stop`. A failure is
 * an `error` event in Anthropic's shape, wherever the stream is.
 */
export class MessageEvents implements AnswerWriter {
  readonly #send: (event: AnthropicStreamEvent) => void;
  readonly #options: MessageEventsOptions;
  #started = false;
  #textIndex: number | undefined;
  #next = 0;

  constructor(send: (event: AnthropicStreamEvent) => void, options: MessageEventsOptions) {
    this.#send = send;
    this.#options = options;
  }

  #start(model: string): void {
    if (this.#started) return;
    this.#started = true;
    this.#send({
      type: "message_start",
      message: {
        id: `msg_${this.#options.jobId}`,
        type: "message",
        role: "assistant",
        model,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        // Known only once the job has ended: `message_delta` carries the totals.
        usage: { input_tokens: 0, output_tokens: 0 },
      },
    });
  }

  #block(content_block: ContentBlock): number {
    const index = this.#next++;
    this.#send({ type: "content_block_start", index, content_block });
    return index;
  }

  text(delta: string, model: string): void {
    this.#start(model);
    this.#textIndex ??= this.#block({ type: "text", text: "" });
    this.#send({
      type: "content_block_delta",
      index: this.#textIndex,
      delta: { type: "text_delta", text: delta },
    });
  }

  answer(record: JobRecord & { result: JobResult }, rest: string): void {
    // Built first: a tool call the client could not read fails the stream before anything more.
    let message: AnthropicMessage;
    try {
      message = messageFromRecord(record, this.#options.traceId);
    } catch (error) {
      this.error(HandoffError.from(error));
      return;
    }
    this.#start(message.model);
    if (rest !== "") this.text(rest, message.model);
    if (this.#textIndex !== undefined) {
      this.#send({ type: "content_block_stop", index: this.#textIndex });
    }
    for (const block of message.content) {
      if (block.type !== "tool_use") continue;
      const index = this.#block({ ...block, input: {} });
      this.#send({
        type: "content_block_delta",
        index,
        delta: { type: "input_json_delta", partial_json: JSON.stringify(block.input) },
      });
      this.#send({ type: "content_block_stop", index });
    }
    this.#send({
      type: "message_delta",
      delta: { stop_reason: message.stop_reason, stop_sequence: message.stop_sequence },
      usage: message.usage,
      handoff: message.handoff,
    });
    this.#send({ type: "message_stop" });
  }

  error(error: HandoffError): void {
    const { traceId, jobId } = this.#options;
    this.#send(
      anthropicError(error, { job_id: jobId, ...(traceId ? { trace_id: traceId } : {}) }).body,
    );
  }
}
