import {
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
  type ToolDefinition,
} from "@handoff/contracts";
import { z } from "zod";
import { errorBody } from "./errors.js";
import { docs } from "./route-schema.js";

/**
 * OpenAI's Responses API (`POST /v1/responses`), the subset the mesh can honour, in its exact wire
 * shape: the request is read into the chat-completions request the mesh runs, and the job's record
 * is written back as a `response` object (or its stream of typed events). The gateway keeps no
 * conversation state: every request carries its whole conversation in `input`. A field this
 * gateway cannot honour is refused with a 400 naming it, never dropped.
 */

// --- The request ---------------------------------------------------------------------------------

/** Why each refused value is refused: the messages that mark an issue as "unsupported". */
const REFUSALS = new Set<string>();

function refusal(why: string): string {
  REFUSALS.add(why);
  return why;
}

/** A field accepted only as `null` (or absent): any value asks for what the mesh cannot do. */
const onlyNull = (why: string) => z.null({ error: refusal(why) }).optional();

const NO_STATE =
  "this gateway keeps no conversation state: send the whole conversation in `input` instead";

const ToolName = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,64}$/, "tool names are 1-64 letters, digits, '_' or '-'");

const ItemStatus = z.enum(["in_progress", "completed", "incomplete"]);

/** A prompt-caching hint: accepted, and left to each model's own caching. */
const PromptCacheBreakpoint = z.strictObject({
  mode: z.literal("explicit"),
  ttl: z.enum(["30m", "12h"]).optional(),
});

const InputText = z.strictObject({
  type: z.literal("input_text"),
  text: z.string(),
  prompt_cache_breakpoint: PromptCacheBreakpoint.optional(),
});

/** Text a model wrote, sent back as history (an earlier response's output message). */
const OutputTextInput = z.strictObject({
  type: z.literal("output_text"),
  text: z.string(),
  /** Citations of the text: the text alone is what the model reads again. */
  annotations: z.array(z.unknown()).optional(),
  logprobs: z.array(z.unknown()).optional(),
});

const ContentPart = z.discriminatedUnion("type", [InputText, OutputTextInput]);

/** `EasyInputMessage`, an input message, or an earlier response's output message. */
const MessageItem = z.strictObject({
  type: z.literal("message").optional(),
  role: z.enum(["user", "system", "developer", "assistant"]),
  content: z.union([z.string(), z.array(ContentPart)]),
  /** Set on an earlier response's output message sent back; not needed to read it. */
  id: z.string().optional(),
  status: ItemStatus.optional(),
  /** Labels an assistant message as commentary or final answer; the text is the same. */
  phase: z.enum(["commentary", "final_answer"]).nullish(),
});

const FunctionCallItem = z.strictObject({
  type: z.literal("function_call"),
  call_id: z.string().min(1),
  name: z.string().min(1),
  arguments: z.string(),
  id: z.string().optional(),
  status: ItemStatus.optional(),
});

const FunctionCallOutputItem = z.strictObject({
  type: z.literal("function_call_output"),
  call_id: z.string().min(1),
  output: z.union([z.string(), z.array(z.discriminatedUnion("type", [InputText]))]),
  id: z.string().nullish(),
  status: ItemStatus.nullish(),
});

const InputItem = z.discriminatedUnion("type", [
  MessageItem,
  FunctionCallItem,
  FunctionCallOutputItem,
]);
type InputItem = z.infer<typeof InputItem>;

const FunctionTool = z.strictObject({
  type: z.literal("function"),
  name: ToolName,
  description: z.string().nullish(),
  /** JSON Schema of the arguments object, nested at most `MAX_JSON_DEPTH` levels. */
  parameters: FreeFormObject.nullish(),
  strict: z.boolean().nullish(),
});

/** The tools a response may call: functions only; built-in tools run on OpenAI's side. */
const Tool = z.discriminatedUnion("type", [FunctionTool]);

const ResponsesToolChoice = z.union([
  z.enum(["none", "auto", "required"]),
  z.discriminatedUnion("type", [z.strictObject({ type: z.literal("function"), name: ToolName })]),
]);

const FormatName = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,64}$/, "names are 1-64 letters, digits, '_' or '-'");

const TextFormat = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("text") }),
  z.strictObject({ type: z.literal("json_object") }),
  z.strictObject({
    type: z.literal("json_schema"),
    name: FormatName,
    schema: FreeFormObject,
    description: z.string().optional(),
    strict: z.boolean().nullish(),
  }),
]);

/** OpenAI's `metadata`: at most 16 pairs, keys up to 64 characters, values up to 512. */
const Metadata = z
  .record(z.string().max(64), z.string().max(512))
  .refine((value) => Object.keys(value).length <= 16, "metadata holds at most 16 pairs");

export const ResponsesRequest = z
  .strictObject({
    model: z.string().min(1),
    input: z.union([z.string(), z.array(InputItem).min(1)]),
    /** Inserted as the first (system) message. */
    instructions: z.string().nullish(),
    tools: z.array(Tool).max(128).optional(),
    tool_choice: ResponsesToolChoice.optional(),
    /** False: at most one function call per turn. */
    parallel_tool_calls: z.boolean().nullish(),
    temperature: z.number().min(0).max(2).nullish(),
    top_p: z.number().min(0).max(1).nullish(),
    max_output_tokens: z.number().int().positive().nullish(),
    /** A cap on built-in tool calls; with function tools only there are none to cap. */
    max_tool_calls: z.number().int().positive().nullish(),
    text: z
      .strictObject({
        format: TextFormat.optional(),
        verbosity: onlyNull("verbosity is not supported: the mesh's models are not asked for it"),
      })
      .optional(),
    stream: z.boolean().nullish(),
    stream_options: z
      .strictObject({
        include_obfuscation: z
          .literal(false, { error: refusal("stream obfuscation is not supported") })
          .optional(),
      })
      .nullish(),
    metadata: Metadata.nullish(),
    /** End-user identifiers and a cache key: hints to OpenAI, with no effect on the answer. */
    user: z.string().optional(),
    safety_identifier: z.string().max(128).nullish(),
    prompt_cache_key: z.string().nullish(),
    /** Accepted without effect: this gateway stores no responses (`GET /v1/jobs/{id}` has jobs). */
    store: z.boolean().nullish(),
    previous_response_id: onlyNull(NO_STATE),
    conversation: onlyNull(NO_STATE),
    background: z
      .literal(false, {
        error: refusal(
          "background responses are not supported: submit the work with POST /v1/jobs and follow it there",
        ),
      })
      .nullish(),
    reasoning: onlyNull(
      "reasoning options are not supported: the mesh picks the model, and its effort, per request",
    ),
    include: z
      .array(
        z.never({
          error: refusal(
            "include asks for output this gateway does not produce (log-probabilities, reasoning, built-in tool results)",
          ),
        }),
      )
      .nullish(),
    truncation: z
      .literal("disabled", {
        error: refusal(
          "truncation: auto is not supported: a conversation longer than the model's context fails instead",
        ),
      })
      .nullish(),
    top_logprobs: z
      .literal(0, { error: refusal("log-probabilities are not supported on /v1/responses") })
      .nullish(),
    /** Upper bound on the job's model spend, in US dollars (also `x-handoff-max-cost-usd`). */
    max_cost_usd: z.number().positive().optional(),
    handoff: HandoffRequestOptions.optional(),
  })
  .superRefine((body, ctx) => {
    const names = new Set((body.tools ?? []).map((tool) => tool.name));
    const choice = body.tool_choice;
    if (choice === "required" && names.size === 0) {
      ctx.addIssue({
        code: "custom",
        path: ["tool_choice"],
        message: 'tool_choice "required" needs at least one function in tools',
      });
    }
    if (typeof choice === "object" && !names.has(choice.name)) {
      ctx.addIssue({
        code: "custom",
        path: ["tool_choice", "name"],
        message: `no function tool named "${choice.name}" in tools`,
      });
    }
    if (typeof body.input === "string") return;
    // As OpenAI requires: each output answers a call made earlier, each call has its output.
    const calls = new Map<string, number>();
    const answered = new Set<string>();
    body.input.forEach((item, index) => {
      if (item.type === "function_call") calls.set(item.call_id, index);
      if (item.type !== "function_call_output") return;
      answered.add(item.call_id);
      if (!calls.has(item.call_id)) {
        ctx.addIssue({
          code: "custom",
          path: ["input", index, "call_id"],
          message: `no function_call with call_id "${item.call_id}" before this output in input`,
        });
      }
    });
    for (const [callId, index] of calls) {
      if (answered.has(callId)) continue;
      ctx.addIssue({
        code: "custom",
        path: ["input", index, "call_id"],
        message: `no function_call_output for call_id "${callId}" in input`,
      });
    }
  });
ResponsesRequest.register(docs, { id: "ResponsesRequest" });
export type ResponsesRequest = z.infer<typeof ResponsesRequest>;

// --- Validation errors ---------------------------------------------------------------------------

interface Problem {
  path: PropertyKey[];
  message: string;
  unsupported: boolean;
}

function valueAt(value: unknown, path: readonly PropertyKey[]): unknown {
  let at = value;
  for (const key of path) {
    if (at === null || typeof at !== "object") return undefined;
    at = (at as Record<PropertyKey, unknown>)[key];
  }
  return at;
}

/** Why a `type` this door does not take is refused, by where it was sent. */
function unsupportedType(path: readonly PropertyKey[], value: unknown): string {
  if (value === undefined) return "type is required";
  const shown = JSON.stringify(value);
  const where = path.filter((key) => typeof key === "string").join(".");
  if (where === "tools.type") {
    return `tool type ${shown} is not supported: built-in tools run on OpenAI's side; this gateway calls function tools only`;
  }
  if (where === "tool_choice.type") {
    return `tool_choice type ${shown} is not supported: use "auto", "none", "required" or {"type": "function", "name": ...}`;
  }
  if (where === "input.type") {
    if (value === "item_reference") {
      return `input item type "item_reference" is not supported: ${NO_STATE} (with the AI SDK, set providerOptions.openai.store to false)`;
    }
    return `input item type ${shown} is not supported: send message, function_call and function_call_output items`;
  }
  if (where.endsWith("content.type") || where.endsWith("output.type")) {
    return `content type ${shown} is not supported: the mesh's models read text (input_text, output_text) only`;
  }
  return `type ${shown} is not supported here`;
}

/**
 * One zod issue as the problems a client can act on, each naming its field: an unknown key by its
 * own path, a union by the branch the value was meant for, a `type` this door does not take by
 * why it is refused.
 */
function problems(issue: z.core.$ZodIssue, prefix: PropertyKey[], body: unknown): Problem[] {
  const path = [...prefix, ...issue.path];
  if (issue.code === "unrecognized_keys") {
    return issue.keys.map((key) => ({
      path: [...path, key],
      message: `"${key}" is not supported by this gateway`,
      unsupported: true,
    }));
  }
  if (issue.code === "invalid_union") {
    if (issue.errors.length === 0) {
      return [{ path, message: unsupportedType(path, valueAt(body, path)), unsupported: true }];
    }
    // The branch the value was meant for: one that looked inside it (an array for `string | array`,
    // an object with a `type`), else one that took its type but not its value (an enum); the
    // others fail at their root on the value's type, which says nothing about the value.
    const deep = issue.errors.find((branch) => branch.some((inner) => inner.path.length > 0));
    const typed = issue.errors.find((branch) =>
      branch.every((inner) => inner.code !== "invalid_type"),
    );
    const chosen = deep ?? typed;
    if (!chosen) {
      const kinds = issue.errors.map((branch) =>
        branch[0]?.code === "invalid_type" ? branch[0].expected : "value",
      );
      const got = valueAt(body, path);
      return [
        {
          path,
          message: `expected ${kinds.join(" or ")}, got ${got === null ? "null" : Array.isArray(got) ? "array" : typeof got}`,
          unsupported: false,
        },
      ];
    }
    return chosen.flatMap((inner) => problems(inner, path, body));
  }
  return [{ path, message: issue.message, unsupported: REFUSALS.has(issue.message) }];
}

/**
 * The request body, validated; else a 400 whose message and `param` name the first failing field:
 * `HANDOFF_ERR_UNSUPPORTED` when it asks for what this gateway does not do (an unknown field, a
 * built-in tool, an image, stored state), else `HANDOFF_ERR_VALIDATION`.
 */
export function parseResponsesRequest(body: unknown): ResponsesRequest {
  const parsed = ResponsesRequest.safeParse(body);
  if (parsed.success) return parsed.data;
  const found = parsed.error.issues.flatMap((issue) => problems(issue, [], body));
  const code = found[0]?.unsupported ? "HANDOFF_ERR_UNSUPPORTED" : "HANDOFF_ERR_VALIDATION";
  const rewritten = new z.ZodError(
    found.map((p) => ({
      code: "custom" as const,
      path: p.path,
      message: p.message,
      input: undefined,
    })),
  );
  throw HandoffError.validation("request body", rewritten, code);
}

// --- The request as the mesh runs it -------------------------------------------------------------

function partsText(content: string | ReadonlyArray<{ text: string }>): string {
  return typeof content === "string" ? content : content.map((part) => part.text).join("");
}

/**
 * The conversation as chat messages: `instructions` first, as a system message; each function call
 * joins the assistant turn it belongs to (the message or calls just before it), each output
 * becomes a tool message.
 */
function messagesOf(body: ResponsesRequest): RequestMessage[] {
  const messages: RequestMessage[] = [];
  if (body.instructions) messages.push({ role: "system", content: body.instructions });
  const items: InputItem[] =
    typeof body.input === "string" ? [{ role: "user", content: body.input }] : body.input;
  for (const item of items) {
    switch (item.type) {
      case undefined:
      case "message":
        messages.push({ role: item.role, content: partsText(item.content) });
        break;
      case "function_call": {
        const call: ToolCall = {
          id: item.call_id,
          type: "function",
          function: { name: item.name, arguments: item.arguments },
        };
        const last = messages.at(-1);
        if (last?.role === "assistant") last.tool_calls = [...(last.tool_calls ?? []), call];
        else messages.push({ role: "assistant", content: null, tool_calls: [call] });
        break;
      }
      case "function_call_output":
        messages.push({
          role: "tool",
          tool_call_id: item.call_id,
          content: partsText(item.output),
        });
        break;
    }
  }
  return messages;
}

function toolDefinition(tool: z.infer<typeof FunctionTool>): ToolDefinition {
  return {
    type: "function",
    function: {
      name: tool.name,
      ...(tool.description != null ? { description: tool.description } : {}),
      ...(tool.parameters != null ? { parameters: tool.parameters } : {}),
      ...(tool.strict != null ? { strict: tool.strict } : {}),
    },
  };
}

type Format = z.infer<typeof TextFormat>;

function responseFormat(format: Format): NonNullable<ChatCompletionRequest["response_format"]> {
  if (format.type !== "json_schema") return { type: format.type };
  return {
    type: "json_schema",
    json_schema: {
      name: format.name,
      ...(format.description !== undefined ? { description: format.description } : {}),
      schema: format.schema,
      ...(format.strict != null ? { strict: format.strict } : {}),
    },
  };
}

/** The chat-completions request the mesh runs for a Responses request. */
export function chatRequestFrom(body: ResponsesRequest): ChatCompletionRequest {
  const choice = body.tool_choice;
  const format = body.text?.format;
  return {
    model: body.model,
    messages: messagesOf(body),
    ...(body.tools?.length ? { tools: body.tools.map(toolDefinition) } : {}),
    ...(choice !== undefined
      ? {
          tool_choice:
            typeof choice === "string"
              ? choice
              : { type: "function" as const, function: { name: choice.name } },
        }
      : {}),
    ...(body.parallel_tool_calls != null ? { parallel_tool_calls: body.parallel_tool_calls } : {}),
    ...(body.temperature != null ? { temperature: body.temperature } : {}),
    ...(body.top_p != null ? { top_p: body.top_p } : {}),
    ...(body.max_output_tokens != null ? { max_tokens: body.max_output_tokens } : {}),
    ...(format ? { response_format: responseFormat(format) } : {}),
    stream: body.stream === true,
    ...(body.user !== undefined ? { user: body.user } : {}),
    ...(body.metadata ? { metadata: body.metadata } : {}),
    ...(body.max_cost_usd !== undefined ? { max_cost_usd: body.max_cost_usd } : {}),
    ...(body.handoff ? { handoff: body.handoff } : {}),
  };
}

// --- The response object -------------------------------------------------------------------------

const OutputText = z.object({
  type: z.literal("output_text"),
  text: z.string(),
  annotations: z.array(z.never()),
});

const OutputMessage = z.object({
  id: z.string(),
  type: z.literal("message"),
  role: z.literal("assistant"),
  status: ItemStatus,
  content: z.array(OutputText),
});

const FunctionCall = z.object({
  id: z.string(),
  type: z.literal("function_call"),
  status: ItemStatus,
  call_id: z.string(),
  name: z.string(),
  arguments: z.string(),
});

export const ResponseOutputItem = z.discriminatedUnion("type", [OutputMessage, FunctionCall]);
export type ResponseOutputItem = z.infer<typeof ResponseOutputItem>;

/** A function tool as a response repeats it: every field present. */
const FunctionToolEcho = z.object({
  type: z.literal("function"),
  name: z.string(),
  description: z.string().nullable(),
  parameters: z.record(z.string(), z.unknown()).nullable(),
  strict: z.boolean().nullable(),
});

/** OpenAI's `ResponseError`: the gateway's error code (as `errorBody` writes it) and message. */
const ResponseError = z.object({
  code: z.string(),
  message: z.string(),
  type: z.string(),
  param: z.string().nullable(),
});

const ResponseUsage = z.object({
  input_tokens: z.number().int(),
  /**
   * Of `input_tokens`, those the providers read from their prompt caches (`cached_tokens`) and
   * wrote to them (`cache_write_tokens`), over every model call the job made.
   */
  input_tokens_details: z.object({
    cached_tokens: z.number().int(),
    cache_write_tokens: z.number().int(),
  }),
  output_tokens: z.number().int(),
  /** Reasoning tokens are not reported apart by the mesh's models: 0. */
  output_tokens_details: z.object({ reasoning_tokens: z.number().int() }),
  total_tokens: z.number().int(),
});

/**
 * OpenAI's `response` object, as the gateway writes it: the request's settings repeated, the
 * output items, usage summed over every model call the job made, and Handoff's `handoff` report
 * (on a response the job answered). `output_text` is not on the wire: the SDKs compute it.
 */
export const ResponseObject = z.object({
  id: z.string(),
  object: z.literal("response"),
  created_at: z.number().int(),
  status: z.enum(["in_progress", "completed", "incomplete", "failed"]),
  completed_at: z.number().int().nullable(),
  error: ResponseError.nullable(),
  incomplete_details: z
    .object({ reason: z.enum(["max_output_tokens", "content_filter"]) })
    .nullable(),
  instructions: z.string().nullable(),
  max_output_tokens: z.number().int().nullable(),
  max_tool_calls: z.number().int().nullable(),
  model: z.string(),
  output: z.array(ResponseOutputItem),
  parallel_tool_calls: z.boolean(),
  previous_response_id: z.null(),
  reasoning: z.null(),
  background: z.literal(false),
  /** OpenAI's access programs; none apply here. */
  access_programs: z.null(),
  metadata: z.record(z.string(), z.string()),
  temperature: z.number().nullable(),
  top_p: z.number().nullable(),
  text: z.object({ format: TextFormat }),
  tool_choice: ResponsesToolChoice,
  tools: z.array(FunctionToolEcho),
  truncation: z.literal("disabled"),
  usage: ResponseUsage.nullable(),
  user: z.string().optional(),
  safety_identifier: z.string().optional(),
  prompt_cache_key: z.string().optional(),
  handoff: HandoffInfo.optional(),
});
ResponseObject.register(docs, { id: "Response" });
export type ResponseObject = z.infer<typeof ResponseObject>;

/** The ids a job's response and its items go by: the same in the JSON answer and the stream. */
export const responseIds = {
  response: (jobId: string) => `resp_${jobId}`,
  message: (jobId: string) => `msg_${jobId}`,
  functionCall: (jobId: string, index: number) => `fc_${jobId}_${index}`,
};

const seconds = (iso: string) => Math.floor(Date.parse(iso) / 1000);

/**
 * A response as it stands before the job has answered (`in_progress`, no output): what the
 * stream's `response.created` and `response.in_progress` carry, and the base of every other.
 */
export function pendingResponse(
  jobId: string,
  createdAt: string,
  body: ResponsesRequest,
): ResponseObject {
  return {
    id: responseIds.response(jobId),
    object: "response",
    created_at: seconds(createdAt),
    status: "in_progress",
    completed_at: null,
    error: null,
    incomplete_details: null,
    instructions: body.instructions ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    max_tool_calls: body.max_tool_calls ?? null,
    model: body.model,
    output: [],
    parallel_tool_calls: body.parallel_tool_calls ?? true,
    previous_response_id: null,
    reasoning: null,
    background: false,
    access_programs: null,
    metadata: body.metadata ?? {},
    temperature: body.temperature ?? null,
    top_p: body.top_p ?? null,
    text: { format: body.text?.format ?? { type: "text" } },
    tool_choice: body.tool_choice ?? "auto",
    tools: (body.tools ?? []).map((tool) => ({
      type: "function" as const,
      name: tool.name,
      description: tool.description ?? null,
      parameters: tool.parameters ?? null,
      strict: tool.strict ?? null,
    })),
    truncation: "disabled",
    usage: null,
    ...(body.user !== undefined ? { user: body.user } : {}),
    ...(body.safety_identifier != null ? { safety_identifier: body.safety_identifier } : {}),
    ...(body.prompt_cache_key != null ? { prompt_cache_key: body.prompt_cache_key } : {}),
  };
}

const INCOMPLETE: Partial<
  Record<JobResult["finish_reason"], "max_output_tokens" | "content_filter">
> = { length: "max_output_tokens", content_filter: "content_filter" };

/**
 * The `response` for a job that answered: its text as one message (left out when the answer is
 * only function calls), then a `function_call` item per call for the client to run. An answer cut
 * at `max_output_tokens` (or filtered) is `incomplete`, saying why.
 */
export function responseFromRecord(
  record: JobRecord & { result: JobResult },
  traceId: string,
  body: ResponsesRequest,
): ResponseObject {
  const { result } = record;
  const completion = completionFromRecord(record, traceId);
  const reason = INCOMPLETE[result.finish_reason];
  const status = reason ? "incomplete" : "completed";
  const text = result.message.content ?? "";
  const calls = result.message.tool_calls ?? [];
  const output: ResponseOutputItem[] = [];
  if (text.length > 0 || calls.length === 0) {
    output.push({
      id: responseIds.message(record.id),
      type: "message",
      role: "assistant",
      status,
      content: [{ type: "output_text", text, annotations: [] }],
    });
  }
  calls.forEach((call, index) => {
    output.push({
      id: responseIds.functionCall(record.id, index),
      type: "function_call",
      status: "completed",
      call_id: call.id,
      name: call.function.name,
      arguments: call.function.arguments,
    });
  });
  const { prompt_tokens: input, completion_tokens: generated } = completion.usage;
  const cached = promptCacheTokens(record.usage);
  return {
    ...pendingResponse(record.id, record.created_at, body),
    status,
    completed_at: status === "completed" ? seconds(record.updated_at) : null,
    incomplete_details: reason ? { reason } : null,
    model: result.model,
    output,
    usage: {
      input_tokens: input,
      input_tokens_details: { cached_tokens: cached.read, cache_write_tokens: cached.written },
      output_tokens: generated,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: input + generated,
    },
    handoff: completion.handoff,
  };
}

/** The `response` of a job that failed (or never ran) after its stream opened. */
export function failedResponse(
  jobId: string,
  createdAt: string,
  body: ResponsesRequest,
  error: HandoffError,
): ResponseObject {
  const { code, message, type } = errorBody(error).error;
  return {
    ...pendingResponse(jobId, createdAt, body),
    status: "failed",
    error: { code: code ?? error.code, message, type, param: null },
  };
}

// --- The stream ----------------------------------------------------------------------------------

const sequenced = { sequence_number: z.number().int().nonnegative() };
const inItem = { item_id: z.string(), output_index: z.number().int().nonnegative() };
const inPart = { ...inItem, content_index: z.number().int().nonnegative() };

/** The typed server-sent events of a streamed response, as the gateway writes them. */
export const ResponseStreamEvent = z.discriminatedUnion("type", [
  z.object({ type: z.literal("response.created"), response: ResponseObject, ...sequenced }),
  z.object({ type: z.literal("response.in_progress"), response: ResponseObject, ...sequenced }),
  z.object({
    type: z.literal("response.output_item.added"),
    output_index: z.number().int(),
    item: ResponseOutputItem,
    ...sequenced,
  }),
  z.object({
    type: z.literal("response.content_part.added"),
    ...inPart,
    part: OutputText,
    ...sequenced,
  }),
  z.object({
    type: z.literal("response.output_text.delta"),
    ...inPart,
    delta: z.string(),
    logprobs: z.array(z.never()),
    ...sequenced,
  }),
  z.object({
    type: z.literal("response.output_text.done"),
    ...inPart,
    text: z.string(),
    logprobs: z.array(z.never()),
    ...sequenced,
  }),
  z.object({
    type: z.literal("response.content_part.done"),
    ...inPart,
    part: OutputText,
    ...sequenced,
  }),
  z.object({
    type: z.literal("response.function_call_arguments.delta"),
    ...inItem,
    delta: z.string(),
    ...sequenced,
  }),
  z.object({
    type: z.literal("response.function_call_arguments.done"),
    ...inItem,
    arguments: z.string(),
    ...sequenced,
  }),
  z.object({
    type: z.literal("response.output_item.done"),
    output_index: z.number().int(),
    item: ResponseOutputItem,
    ...sequenced,
  }),
  z.object({ type: z.literal("response.completed"), response: ResponseObject, ...sequenced }),
  z.object({ type: z.literal("response.incomplete"), response: ResponseObject, ...sequenced }),
  z.object({ type: z.literal("response.failed"), response: ResponseObject, ...sequenced }),
]);
ResponseStreamEvent.register(docs, { id: "ResponseStreamEvent" });
export type ResponseStreamEvent = z.infer<typeof ResponseStreamEvent>;

/** An event before its sequence number is given. */
type Unsequenced = ResponseStreamEvent extends infer E
  ? E extends ResponseStreamEvent
    ? Omit<E, "sequence_number">
    : never
  : never;

/**
 * The events of one streamed response, in OpenAI's order, numbered from 0: `response.created` and
 * `response.in_progress`; the answer's message opened at its first text, its text deltas as they
 * come; at the end whatever text the deltas did not carry, the message closed, each function call
 * (added, its arguments, done), then `response.completed` (or `response.incomplete`) with the whole
 * response; or `response.failed`. The text of the deltas is exactly the final message's text, when
 * each delta was a piece of it in order (as `relayStreamedJob` guarantees).
 */
export class ResponseEvents {
  #sequence = 0;
  #streamed = "";
  #opened = false;
  readonly #jobId: string;
  readonly #pending: ResponseObject;
  readonly #emit: (event: ResponseStreamEvent) => void;

  constructor(jobId: string, pending: ResponseObject, emit: (event: ResponseStreamEvent) => void) {
    this.#jobId = jobId;
    this.#pending = pending;
    this.#emit = emit;
  }

  #send(event: Unsequenced): void {
    this.#emit({ ...event, sequence_number: this.#sequence++ } as ResponseStreamEvent);
  }

  start(): void {
    this.#send({ type: "response.created", response: this.#pending });
    this.#send({ type: "response.in_progress", response: this.#pending });
  }

  /** The message item and its text part, opened once; the message is always output 0. */
  #open(): void {
    if (this.#opened) return;
    this.#opened = true;
    const id = responseIds.message(this.#jobId);
    this.#send({
      type: "response.output_item.added",
      output_index: 0,
      item: { id, type: "message", role: "assistant", status: "in_progress", content: [] },
    });
    this.#send({
      type: "response.content_part.added",
      item_id: id,
      output_index: 0,
      content_index: 0,
      part: { type: "output_text", text: "", annotations: [] },
    });
  }

  #delta(delta: string): void {
    this.#open();
    this.#streamed += delta;
    this.#send({
      type: "response.output_text.delta",
      item_id: responseIds.message(this.#jobId),
      output_index: 0,
      content_index: 0,
      delta,
      logprobs: [],
    });
  }

  /** A piece of the answer's text, as the answering model streamed it. */
  text(delta: string): void {
    if (delta.length > 0) this.#delta(delta);
  }

  /** The job answered: the rest of its text, its items closed, then the whole response. */
  answer(response: ResponseObject): void {
    response.output.forEach((item, index) => {
      if (item.type === "message") {
        const text = item.content.map((part) => part.text).join("");
        this.#open();
        const rest = text.slice(this.#streamed.length);
        if (rest.length > 0) this.#delta(rest);
        const at = { item_id: item.id, output_index: index, content_index: 0 };
        this.#send({ type: "response.output_text.done", ...at, text, logprobs: [] });
        this.#send({
          type: "response.content_part.done",
          ...at,
          part: { type: "output_text", text, annotations: [] },
        });
      } else {
        this.#send({
          type: "response.output_item.added",
          output_index: index,
          item: { ...item, status: "in_progress", arguments: "" },
        });
        const at = { item_id: item.id, output_index: index };
        if (item.arguments.length > 0) {
          this.#send({
            type: "response.function_call_arguments.delta",
            ...at,
            delta: item.arguments,
          });
        }
        this.#send({
          type: "response.function_call_arguments.done",
          ...at,
          arguments: item.arguments,
        });
      }
      this.#send({ type: "response.output_item.done", output_index: index, item });
    });
    this.#send({
      type: response.status === "incomplete" ? "response.incomplete" : "response.completed",
      response,
    });
  }

  /** The job failed, or never ran: the response, failed, with why. */
  fail(response: ResponseObject): void {
    this.#send({ type: "response.failed", response });
  }
}
