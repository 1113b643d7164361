import { z } from "zod";
import { FreeFormObject } from "./json-depth.js";

/**
 * Chat messages in the OpenAI chat-completions shape, the lingua franca of the mesh.
 * Providers translate to and from their own wire formats at the edge.
 */

export const TextPart = z.object({
  type: z.literal("text"),
  text: z.string(),
});

/** Message content as clients send it: a string or an array of text parts. */
export const Content = z.union([z.string(), z.array(TextPart)], {
  error: "content must be a string or an array of text parts",
});
export type Content = z.infer<typeof Content>;

export const ToolCall = z.object({
  id: z.string().min(1),
  type: z.literal("function"),
  function: z.object({
    name: z.string().min(1),
    /** JSON text, as the model produced it. */
    arguments: z.string(),
  }),
});
export type ToolCall = z.infer<typeof ToolCall>;

/** Tool names follow OpenAI's rule so every provider accepts them. */
const ToolName = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,64}$/, "tool names are 1-64 letters, digits, '_' or '-'");

export const ToolDefinition = z.object({
  type: z.literal("function"),
  function: z.object({
    name: ToolName,
    description: z.string().optional(),
    /** JSON Schema of the arguments object, nested at most `MAX_JSON_DEPTH` levels. */
    parameters: FreeFormObject.optional(),
    strict: z.boolean().optional(),
  }),
});
export type ToolDefinition = z.infer<typeof ToolDefinition>;

/** Which tool the model may call: OpenAI's `tool_choice`. */
export const ToolChoice = z.union([
  z.enum(["none", "auto", "required"]),
  z.object({ type: z.literal("function"), function: z.object({ name: z.string().min(1) }) }),
]);
export type ToolChoice = z.infer<typeof ToolChoice>;

export const SystemMessage = z.object({
  role: z.enum(["system", "developer"]),
  content: z.string(),
  name: z.string().optional(),
});
export const UserMessage = z.object({
  role: z.literal("user"),
  content: z.string(),
  name: z.string().optional(),
});
export const AssistantMessage = z.object({
  role: z.literal("assistant"),
  content: z.string().nullable(),
  tool_calls: z.array(ToolCall).optional(),
  name: z.string().optional(),
});
export type AssistantMessage = z.infer<typeof AssistantMessage>;
export const ToolMessage = z.object({
  role: z.literal("tool"),
  content: z.string(),
  tool_call_id: z.string().min(1),
});

/** A message inside the mesh: content is always normalized to a string. */
export const Message = z.discriminatedUnion("role", [
  SystemMessage,
  UserMessage,
  AssistantMessage,
  ToolMessage,
]);
export type Message = z.infer<typeof Message>;

export const FinishReason = z.enum(["stop", "length", "tool_calls", "content_filter"]);
export type FinishReason = z.infer<typeof FinishReason>;

/** OpenAI's `response_format`: free text, any JSON object, or JSON matching a schema. */
export const ResponseFormat = z.discriminatedUnion("type", [
  z.object({ type: z.literal("text") }),
  z.object({ type: z.literal("json_object") }),
  z.object({
    type: z.literal("json_schema"),
    json_schema: z.object({
      name: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "names are 1-64 letters, digits, '_' or '-'"),
      description: z.string().optional(),
      schema: FreeFormObject.optional(),
      strict: z.boolean().nullish(),
    }),
  }),
]);
export type ResponseFormat = z.infer<typeof ResponseFormat>;

/** The most alternatives OpenAI returns per token (`top_logprobs`). */
export const MAX_TOP_LOGPROBS = 20;

/** Sampling parameters passed through to whichever model answers. */
export const ChatParams = z.object({
  temperature: z.number().min(0).max(2).optional(),
  top_p: z.number().min(0).max(1).optional(),
  max_tokens: z.number().int().positive().optional(),
  stop: z.array(z.string()).max(4).optional(),
  seed: z.number().int().optional(),
  response_format: ResponseFormat.optional(),
  /** OpenAI's `parallel_tool_calls`: false allows at most one tool call per turn. */
  parallel_tool_calls: z.boolean().optional(),
  /** The client wants the answer's token log-probabilities (`choices[].logprobs`). */
  logprobs: z.boolean().optional(),
  /** With `logprobs`: this many most likely alternatives for each token. */
  top_logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).optional(),
});
export type ChatParams = z.infer<typeof ChatParams>;

/** One alternative for a token: OpenAI's `top_logprobs[]` entry. */
export const TopLogprob = z.object({
  token: z.string(),
  logprob: z.number(),
  /** The token's UTF-8 bytes; null when the token has none of its own. */
  bytes: z.array(z.number().int()).nullable(),
});
export type TopLogprob = z.infer<typeof TopLogprob>;

/** One generated token with its log-probability and the alternatives asked for. */
export const TokenLogprob = TopLogprob.extend({ top_logprobs: z.array(TopLogprob) });
export type TokenLogprob = z.infer<typeof TokenLogprob>;

/**
 * OpenAI's `choices[].logprobs`: the content tokens of the answer, and of a refusal, in order;
 * each `null` when the model produced no such tokens.
 */
export const ChoiceLogprobs = z.object({
  content: z.array(TokenLogprob).nullable(),
  refusal: z.array(TokenLogprob).nullable(),
});
export type ChoiceLogprobs = z.infer<typeof ChoiceLogprobs>;

/** Flattens client content (string or text parts) to the mesh's string form. */
export function contentText(content: Content | null | undefined): string {
  if (content == null) return "";
  if (typeof content === "string") return content;
  return content.map((part) => part.text).join("");
}
