import type {
  AssistantMessage,
  FinishReason,
  Message,
  ToolCall,
  ToolDefinition,
} from "@handoff/contracts";
import { z } from "zod";
import type { ChatRequest, TokenUsage, ToolChoice } from "../types.js";

/**
 * Translation between the mesh's OpenAI-shaped chat vocabulary and Anthropic's Messages API
 * (`POST /v1/messages`, `anthropic-version: 2023-06-01`). Pure functions, no I/O, so every rule can
 * be tested on its own.
 */

/** Anthropic requires `max_tokens`; this is what we send when the caller set none. */
export const DEFAULT_MAX_TOKENS = 4096;

/** The instruction added to `system` for OpenAI's `response_format: {type: "json_object"}`. */
export const JSON_OBJECT_INSTRUCTION =
  "Answer with a single JSON object and nothing else: no prose, no Markdown code fences.";

/**
 * A prompt-cache breakpoint: the prompt up to and including the block that carries it (tools,
 * then system, then messages, in that order) is cached, for five minutes from its last use.
 */
export type CacheControl = { type: "ephemeral" };

/** Anthropic allows at most this many `cache_control` breakpoints in one request. */
export const MAX_CACHE_BREAKPOINTS = 4;

/** Anthropic content blocks the adapter sends. */
export type AnthropicTextBlock = { type: "text"; text: string; cache_control?: CacheControl };
export type AnthropicToolUseBlock = {
  type: "tool_use";
  id: string;
  name: string;
  input: Record<string, unknown>;
  cache_control?: CacheControl;
};
export type AnthropicToolResultBlock = {
  type: "tool_result";
  tool_use_id: string;
  content?: string;
  is_error?: boolean;
  cache_control?: CacheControl;
};
export type AnthropicBlock = AnthropicTextBlock | AnthropicToolUseBlock | AnthropicToolResultBlock;

export interface AnthropicMessage {
  role: "user" | "assistant";
  content: AnthropicBlock[];
}

export interface AnthropicTool {
  name: string;
  description?: string;
  input_schema: Record<string, unknown>;
  cache_control?: CacheControl;
}

/**
 * Anthropic's `tool_choice`. `disable_parallel_tool_use: true` is OpenAI's
 * `parallel_tool_calls: false`: at most one tool call (with `any` or `tool`: exactly one).
 */
export type AnthropicToolChoice =
  | { type: "auto"; disable_parallel_tool_use?: boolean }
  | { type: "any"; disable_parallel_tool_use?: boolean }
  | { type: "none" }
  | { type: "tool"; name: string; disable_parallel_tool_use?: boolean };

/** The body of `POST /v1/messages`, as far as the adapter uses it. */
export interface AnthropicRequest {
  model: string;
  max_tokens: number;
  /** A string, or text blocks when the system prompt carries a cache breakpoint. */
  system?: string | AnthropicTextBlock[];
  messages: AnthropicMessage[];
  tools?: AnthropicTool[];
  tool_choice?: AnthropicToolChoice;
  temperature?: number;
  top_p?: number;
  stop_sequences?: string[];
  stream?: boolean;
}

/** A request in Anthropic's shape, plus what is needed to read its answer back. */
export interface TranslatedRequest {
  body: AnthropicRequest;
  /**
   * Set when `response_format: json_schema` is emulated: the name of the tool whose `input` is the
   * answer. A `tool_use` of this tool is read back as the assistant's JSON text, not a tool call.
   */
  answerTool?: string;
}

/**
 * Which parts of the prompt to mark with a `cache_control` breakpoint (see the deployment's
 * `prompt_cache`): the last tool, the system prompt, and the last block before the final user
 * turn. None by default.
 */
export interface PromptCacheMarks {
  tools: boolean;
  system: boolean;
  conversation: boolean;
}

const NO_MARKS: PromptCacheMarks = { tools: false, system: false, conversation: false };

/**
 * Builds the Anthropic request body for an OpenAI-shaped request, with prompt-cache breakpoints
 * where `cache` asks for them.
 */
export function toAnthropicRequest(
  request: ChatRequest,
  model: string,
  stream = false,
  cache: PromptCacheMarks = NO_MARKS,
): TranslatedRequest {
  const params = request.params ?? {};
  const system: string[] = [];
  // Anthropic has no system role inside `messages`. The system and developer messages the
  // conversation opens with are its system prompt (top-level `system`); later ones stay where they
  // were said (see `toAnthropicMessages`). Hoisting them would change the system prompt, and with
  // it the prefix of the whole prompt that Anthropic's cache keys on.
  for (const m of leadingInstructions(request.messages)) {
    if (m.content.trim() !== "") system.push(m.content);
  }

  const body: AnthropicRequest = {
    model,
    max_tokens: params.max_tokens ?? DEFAULT_MAX_TOKENS,
    messages: toAnthropicMessages(request.messages),
  };

  // Anthropic's temperature runs 0..1, OpenAI's 0..2; clamping keeps 0..1 exact and turns "hotter
  // than 1" into the hottest Anthropic accepts rather than a 400.
  if (params.temperature !== undefined) body.temperature = Math.min(1, params.temperature);
  // Recent Claude models reject a request that sets both ("temperature and top_p cannot both be
  // specified for this model"), so temperature, the more common knob, wins.
  if (params.top_p !== undefined && params.temperature === undefined) body.top_p = params.top_p;
  if (params.stop && params.stop.length > 0) body.stop_sequences = [...params.stop];
  // `seed` has no Anthropic equivalent and is dropped; so are `logprobs` and `top_logprobs`, which
  // the gateway refuses up front when an Anthropic deployment may answer.

  let tools = (request.tools ?? []).map(toAnthropicTool);
  let toolChoice = toAnthropicToolChoice(request.toolChoice);
  let answerTool: string | undefined;

  const format = params.response_format;
  if (format?.type === "json_object") {
    system.push(JSON_OBJECT_INSTRUCTION);
  } else if (format?.type === "json_schema") {
    // Anthropic's documented pattern for JSON output: a tool whose input schema is the wanted
    // schema, which the model is made to call; its `input` is the answer.
    const spec = format.json_schema;
    answerTool = uniqueName(
      spec.name,
      tools.map((t) => t.name),
    );
    const schemaTool: AnthropicTool = {
      name: answerTool,
      description:
        spec.description ??
        "Give your final answer by calling this tool; its input is the answer, as JSON.",
      input_schema: spec.schema ?? { type: "object" },
    };
    if (tools.length === 0 || request.toolChoice === "none") {
      tools = [schemaTool];
      toolChoice = { type: "tool", name: answerTool };
    } else {
      // The caller's tools stay callable; "any" makes the model either call one of them or answer
      // through the schema tool, never reply in free text.
      tools = [...tools, schemaTool];
      if (toolChoice === undefined || toolChoice.type === "auto") toolChoice = { type: "any" };
      system.push(
        `When you have the final answer, call the ${answerTool} tool with it instead of replying in text.`,
      );
    }
  }

  if (tools.length > 0) {
    body.tools = tools;
    // OpenAI's `parallel_tool_calls: false` is a flag of Anthropic's tool_choice (of any type but
    // `none`, which calls no tool at all); Anthropic's default (auto) carries it when none was set.
    if (params.parallel_tool_calls === false && toolChoice?.type !== "none") {
      toolChoice = { ...(toolChoice ?? { type: "auto" }), disable_parallel_tool_use: true };
    }
    // tool_choice is only meaningful (and only accepted) alongside tools.
    if (toolChoice) body.tool_choice = toolChoice;
  }
  if (system.length > 0) body.system = system.join("\n\n");
  markPromptCache(body, cache);
  if (stream) body.stream = true;
  return answerTool === undefined ? { body } : { body, answerTool };
}

/** The system and developer messages before the conversation's first turn of another role. */
function leadingInstructions(
  messages: readonly Message[],
): Array<Extract<Message, { role: "system" | "developer" }>> {
  const out: Array<Extract<Message, { role: "system" | "developer" }>> = [];
  for (const m of messages) {
    if (m.role !== "system" && m.role !== "developer") break;
    out.push(m);
  }
  return out;
}

/**
 * Marks the prompt's stable prefix for Anthropic's prompt cache, in prompt order: the last tool
 * definition, the system prompt (as one text block), and the last block of the turn before the
 * final user turn: the conversation's history, which the next request of the same conversation
 * starts with too. Never more than {@link MAX_CACHE_BREAKPOINTS} in the body, those it already
 * carries counted. Anthropic caches nothing for a prefix under its minimum length (1,024 to 4,096
 * tokens, by model), and charges nothing extra then.
 */
export function markPromptCache(body: AnthropicRequest, cache: PromptCacheMarks): void {
  let left = Math.max(0, MAX_CACHE_BREAKPOINTS - cacheBreakpoints(body));
  const mark = <T extends { cache_control?: CacheControl }>(block: T | undefined) => {
    if (!block || left === 0) return;
    block.cache_control = { type: "ephemeral" };
    left--;
  };
  if (cache.tools && body.tools && body.tools.length > 0) {
    const last = body.tools.length - 1;
    body.tools = body.tools.map((tool, i) => (i === last ? { ...tool } : tool));
    mark(body.tools[last]);
  }
  if (cache.system && typeof body.system === "string" && left > 0) {
    const block: AnthropicTextBlock = { type: "text", text: body.system };
    mark(block);
    body.system = [block];
  }
  if (cache.conversation) {
    const finalUser = body.messages.findLastIndex((m) => m.role === "user");
    mark(body.messages[finalUser - 1]?.content.at(-1));
  }
}

/** The `cache_control` breakpoints of a request body, for tests and checks. */
export function cacheBreakpoints(body: AnthropicRequest): number {
  const blocks: Array<{ cache_control?: CacheControl }> = [
    ...(body.tools ?? []),
    ...(Array.isArray(body.system) ? body.system : []),
    ...body.messages.flatMap((m) => m.content),
  ];
  return blocks.filter((b) => b.cache_control !== undefined).length;
}

/** OpenAI's tool definition as an Anthropic tool. */
export function toAnthropicTool(tool: ToolDefinition): AnthropicTool {
  const { name, description, parameters } = tool.function;
  return {
    name,
    ...(description === undefined ? {} : { description }),
    // Anthropic requires an object schema even for a tool without arguments.
    input_schema: parameters ?? { type: "object", properties: {} },
  };
}

/** OpenAI's tool_choice as Anthropic's; undefined leaves Anthropic's default (auto). */
export function toAnthropicToolChoice(
  choice: ToolChoice | undefined,
): AnthropicToolChoice | undefined {
  if (choice === undefined) return undefined;
  if (choice === "auto") return { type: "auto" };
  if (choice === "required") return { type: "any" };
  if (choice === "none") return { type: "none" };
  return { type: "tool", name: choice.function.name };
}

/**
 * The conversation as Anthropic wants it: user and assistant turns only, strictly alternating.
 * Tool results travel as `tool_result` blocks inside a user turn, assistant tool calls as
 * `tool_use` blocks, and neighbouring turns of one role are merged into one. The system and
 * developer messages the conversation opens with are left out (they are the system prompt); one
 * after the first turn (an instruction the mesh adds after the client's messages, say) stays in
 * its place, as a text block of a user turn.
 */
export function toAnthropicMessages(messages: readonly Message[]): AnthropicMessage[] {
  const out: AnthropicMessage[] = [];
  const append = (role: AnthropicMessage["role"], blocks: AnthropicBlock[]) => {
    if (blocks.length === 0) return;
    const last = out.at(-1);
    if (last?.role === role) last.content.push(...blocks);
    else out.push({ role, content: blocks });
  };

  let opening = true;
  for (const m of messages) {
    if (m.role !== "system" && m.role !== "developer") opening = false;
    switch (m.role) {
      case "system":
      case "developer":
        // The opening ones are hoisted into `system`; a later one is said where it was.
        if (!opening) append("user", textBlocks(m.content));
        break;
      case "user":
        append("user", textBlocks(m.content));
        break;
      case "tool":
        append("user", [toolResultBlock(m.tool_call_id, m.content)]);
        break;
      case "assistant":
        append("assistant", assistantBlocks(m));
        break;
    }
  }
  return out;
}

/** Anthropic rejects empty text blocks, so empty content becomes no block at all. */
function textBlocks(text: string | null): AnthropicTextBlock[] {
  return text ? [{ type: "text", text }] : [];
}

function toolResultBlock(toolUseId: string, content: string): AnthropicToolResultBlock {
  return {
    type: "tool_result",
    tool_use_id: toolUseId,
    ...(content === "" ? {} : { content }),
    // The tool executor reports failures as output starting with "error:"; Anthropic has a flag
    // for exactly that, which tells the model the call failed rather than returned this text.
    ...(content.startsWith("error:") ? { is_error: true } : {}),
  };
}

function assistantBlocks(m: AssistantMessage): AnthropicBlock[] {
  const notes: string[] = [];
  const uses: AnthropicToolUseBlock[] = (m.tool_calls ?? []).map((call) => {
    const input = parseArguments(call.function.arguments);
    if (input === undefined) {
      // Anthropic needs `input` as an object. Arguments that are not a JSON object (a model's
      // broken output, replayed from history) are sent as {} with a note in the turn, so the
      // model can make sense of the tool's complaint that follows.
      notes.push(
        `[handoff: the arguments of tool call ${call.id} (${call.function.name}) were not a JSON object and were replaced by {}: ${truncate(call.function.arguments, 200)}]`,
      );
    }
    return { type: "tool_use", id: call.id, name: call.function.name, input: input ?? {} };
  });
  const text = [m.content ?? "", ...notes].filter((t) => t !== "").join("\n");
  return [...textBlocks(text), ...uses];
}

function parseArguments(text: string): Record<string, unknown> | undefined {
  if (text.trim() === "") return {}; // no arguments at all is an empty object, not an error
  try {
    const value: unknown = JSON.parse(text);
    return value !== null && typeof value === "object" && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

function uniqueName(name: string, taken: readonly string[]): string {
  if (!taken.includes(name)) return name;
  let n = 2;
  while (taken.includes(`${name}_${n}`)) n++;
  return `${name}_${n}`;
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

// ---- responses ----

const TextBlock = z.object({ type: z.literal("text"), text: z.string() });
const ToolUseBlock = z.object({
  type: z.literal("tool_use"),
  id: z.string().min(1),
  name: z.string().min(1),
  input: z.record(z.string(), z.unknown()),
});

/**
 * A non-streamed Messages API response, validated only as far as the adapter reads it. Content
 * blocks of other types (thinking, server tools) are allowed and ignored.
 */
export const AnthropicResponse = z.object({
  model: z.string().min(1),
  content: z.array(z.looseObject({ type: z.string() })),
  stop_reason: z.string().nullable(),
  usage: z.looseObject({
    input_tokens: z.number().int().nonnegative(),
    output_tokens: z.number().int().nonnegative(),
    cache_creation_input_tokens: z.number().int().nonnegative().nullish(),
    cache_read_input_tokens: z.number().int().nonnegative().nullish(),
  }),
});
export type AnthropicResponse = z.infer<typeof AnthropicResponse>;

/**
 * Anthropic's token counts in the mesh's terms. Anthropic's `input_tokens` are only the prompt
 * tokens after its last cache breakpoint: those it read from the cache
 * (`cache_read_input_tokens`) and wrote to it (`cache_creation_input_tokens`) come on top. The
 * mesh's `inputTokens` is the whole prompt, as OpenAI counts it, with the two as parts of it.
 */
export function toTokenUsage(usage: {
  input_tokens?: number | null | undefined;
  output_tokens?: number | null | undefined;
  cache_creation_input_tokens?: number | null | undefined;
  cache_read_input_tokens?: number | null | undefined;
}): TokenUsage {
  const read = usage.cache_read_input_tokens ?? 0;
  const written = usage.cache_creation_input_tokens ?? 0;
  return {
    inputTokens: (usage.input_tokens ?? 0) + read + written,
    outputTokens: usage.output_tokens ?? 0,
    ...(read > 0 ? { cachedInputTokens: read } : {}),
    ...(written > 0 ? { cacheWriteTokens: written } : {}),
  };
}

/** Anthropic's stop_reason as OpenAI's finish_reason. */
export function toFinishReason(stopReason: string | null | undefined): FinishReason {
  switch (stopReason) {
    case "max_tokens":
    case "model_context_window_exceeded":
      return "length";
    case "tool_use":
      return "tool_calls";
    case "refusal":
      return "content_filter";
    default:
      // end_turn, stop_sequence, pause_turn (a server-tool loop paused: the turn ended for now),
      // and any reason added later: the model stopped without the caller having to act.
      return "stop";
  }
}

/** The content a response is read into, before it becomes an OpenAI assistant message. */
export interface AssembledContent {
  text: string;
  toolCalls: ToolCall[];
  /** The emulated json_schema answer, as JSON text, when the model called the answer tool. */
  answer?: string;
}

/**
 * The assistant message and finish reason for assembled content. An emulated json_schema answer
 * wins over everything else: its JSON becomes the content (text the model said around it would
 * make it unparseable) and the finish reason is "stop" unless the output was cut short.
 */
export function toAssistant(
  content: AssembledContent,
  stopReason: string | null | undefined,
): { message: AssistantMessage; finishReason: FinishReason } {
  if (content.answer !== undefined) {
    const finishReason = toFinishReason(stopReason) === "length" ? "length" : "stop";
    return { message: { role: "assistant", content: content.answer }, finishReason };
  }
  const message: AssistantMessage = {
    role: "assistant",
    content: content.text === "" ? null : content.text,
  };
  if (content.toolCalls.length > 0) message.tool_calls = content.toolCalls;
  let finishReason = toFinishReason(stopReason);
  // A turn that ends in tool calls is a tool-call turn for the caller, whatever else was said.
  if (content.toolCalls.length > 0 && finishReason === "stop") finishReason = "tool_calls";
  return { message, finishReason };
}

/**
 * Reads the content blocks of a validated response. Returns an error description instead of
 * throwing, so the adapter can classify it as a malformed response.
 */
export function readContent(
  blocks: AnthropicResponse["content"],
  answerTool: string | undefined,
): AssembledContent | string {
  let text = "";
  const toolCalls: ToolCall[] = [];
  let answer: string | undefined;
  for (const [i, raw] of blocks.entries()) {
    if (raw.type === "text") {
      const block = TextBlock.safeParse(raw);
      if (!block.success) return `content[${i}] is not a valid text block`;
      text += block.data.text;
    } else if (raw.type === "tool_use") {
      const block = ToolUseBlock.safeParse(raw);
      if (!block.success) return `content[${i}] is not a valid tool_use block`;
      const { id, name, input } = block.data;
      if (name === answerTool) answer = JSON.stringify(input);
      else
        toolCalls.push({
          id,
          type: "function",
          function: { name, arguments: JSON.stringify(input) },
        });
    }
  }
  return answer === undefined ? { text, toolCalls } : { text, toolCalls, answer };
}
