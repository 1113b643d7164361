import type { FinishReason, Message, ToolCall, ToolDefinition } from "@handoff/contracts";
import { z } from "zod";
import { httpFailure, type ProviderFailure } from "../errors.js";
import type { ChatRequest } from "../types.js";

/**
 * The OpenAI Chat Completions wire format (`POST /chat/completions`): the request body the adapter
 * sends and the schemas of what comes back. The mesh already speaks OpenAI's message shape, so the
 * request is mostly a copy; the schemas are lenient where compatible servers differ from OpenAI
 * (missing ids, `null` for absent fields) and strict where a wrong shape would corrupt an answer.
 */

/** Servers whose quirks the adapter knows, recognized by the base URL's host. */
export type Dialect = "openai" | "azure" | "generic";

/**
 * `api.openai.com` is OpenAI; Azure OpenAI and Azure AI Foundry resources are Azure; anything else
 * (Ollama, vLLM, llama.cpp, LM Studio, Groq, Together, a proxy) is generic.
 */
export function dialectOf(url: URL): Dialect {
  const host = url.hostname.toLowerCase();
  if (host === "api.openai.com") return "openai";
  if (/\.(openai|cognitiveservices|services\.ai)\.azure\.com$/.test(host)) return "azure";
  return "generic";
}

/** What the request body needs beyond the mesh's request. */
export interface WireRequestOptions {
  model: string;
  dialect: Dialect;
  stream: boolean;
}

/**
 * The request body. Fields the wire does not know are dropped, so nothing internal leaks to a
 * vendor. Two translations, both for compatibility:
 * - `developer` messages are sent as `system`: OpenAI treats a system message to its reasoning
 *   models as a developer message, while most local servers only know `system` and some drop a
 *   role their chat template does not name.
 * - `max_tokens` is sent as `max_completion_tokens` to OpenAI and Azure, whose reasoning models
 *   (o-series, gpt-5) reject the deprecated `max_tokens`, and as `max_tokens` everywhere else,
 *   the only spelling most compatible servers read. On Azure this needs API version 2024-10-21
 *   or later (or the `/openai/v1` API).
 *
 * `logprobs: true` goes only into requests that ask for it: the mesh's own (`request.logprobs`,
 * the chosen tokens only) or the client's (`params.logprobs`, with its `top_logprobs`), so other
 * requests stay as they were. `parallel_tool_calls` goes as the client set it, with tools only
 * (OpenAI rejects it without).
 */
export function toWireRequest(
  request: ChatRequest,
  options: WireRequestOptions,
): Record<string, unknown> {
  const body: Record<string, unknown> = {
    model: options.model,
    messages: request.messages.map(toWireMessage),
  };
  const tools = request.tools ?? [];
  // OpenAI rejects `tool_choice` without tools, and an empty `tools` array with some models.
  if (tools.length > 0) {
    body.tools = tools.map(toWireTool);
    if (request.toolChoice !== undefined) {
      body.tool_choice =
        typeof request.toolChoice === "string"
          ? request.toolChoice
          : { type: "function", function: { name: request.toolChoice.function.name } };
    }
    const parallel = request.params?.parallel_tool_calls;
    if (parallel !== undefined) body.parallel_tool_calls = parallel;
  }
  const params = request.params ?? {};
  if (params.temperature !== undefined) body.temperature = params.temperature;
  if (params.top_p !== undefined) body.top_p = params.top_p;
  if (params.max_tokens !== undefined) {
    const field = options.dialect === "generic" ? "max_tokens" : "max_completion_tokens";
    body[field] = params.max_tokens;
  }
  if (params.stop !== undefined && params.stop.length > 0) body.stop = params.stop;
  if (params.seed !== undefined) body.seed = params.seed;
  if (params.response_format !== undefined) body.response_format = params.response_format;
  if (request.logprobs === true || params.logprobs === true) body.logprobs = true;
  if (params.logprobs === true && params.top_logprobs !== undefined) {
    body.top_logprobs = params.top_logprobs;
  }
  if (options.stream) {
    body.stream = true;
    // Without it OpenAI streams no token counts at all.
    body.stream_options = { include_usage: true };
  }
  return body;
}

function toWireMessage(message: Message): Record<string, unknown> {
  switch (message.role) {
    case "system":
    case "developer":
    case "user":
      return {
        role: message.role === "developer" ? "system" : message.role,
        content: message.content,
        ...(message.name ? { name: message.name } : {}),
      };
    case "assistant": {
      const calls = message.tool_calls ?? [];
      return {
        role: "assistant",
        // Content may be null only beside tool calls; OpenAI rejects an empty `tool_calls` array.
        content: message.content ?? (calls.length > 0 ? null : ""),
        ...(calls.length > 0 ? { tool_calls: calls.map(toWireToolCall) } : {}),
        ...(message.name ? { name: message.name } : {}),
      };
    }
    case "tool":
      return { role: "tool", tool_call_id: message.tool_call_id, content: message.content };
  }
}

function toWireToolCall(call: ToolCall): Record<string, unknown> {
  return {
    id: call.id,
    type: "function",
    function: { name: call.function.name, arguments: call.function.arguments },
  };
}

function toWireTool(tool: ToolDefinition): Record<string, unknown> {
  const fn = tool.function;
  return {
    type: "function",
    function: {
      name: fn.name,
      ...(fn.description !== undefined ? { description: fn.description } : {}),
      ...(fn.parameters !== undefined ? { parameters: fn.parameters } : {}),
      ...(fn.strict !== undefined ? { strict: fn.strict } : {}),
    },
  };
}

/**
 * Token counts; compatible servers sometimes send only one of them. `prompt_tokens` includes
 * `prompt_tokens_details.cached_tokens`, the prompt tokens OpenAI (and vLLM with prefix caching)
 * read from its prompt cache. The details are advisory: a shape no server should send reads as
 * absent rather than failing the answer.
 */
const WireUsage = z.object({
  prompt_tokens: z.number().int().nonnegative().optional(),
  completion_tokens: z.number().int().nonnegative().optional(),
  prompt_tokens_details: z
    .object({ cached_tokens: z.number().int().nonnegative().nullish() })
    .nullish()
    .catch(undefined),
});
export type WireUsage = z.infer<typeof WireUsage>;

const WireToolCall = z.object({
  id: z.string().nullish(),
  type: z.string().nullish(),
  function: z.object({
    name: z.string().min(1),
    // A few servers send the arguments as an object instead of JSON text.
    arguments: z.union([z.string(), z.record(z.string(), z.unknown())]).nullish(),
  }),
});

/**
 * One token's entry in a choice's `logprobs.content` (or `.refusal`). OpenAI sends
 * `{token, logprob, bytes, top_logprobs}`, vLLM and llama.cpp the same (llama.cpp adds an `id`).
 * `logprob` is what the mesh reads; `token`, `bytes` and `top_logprobs` are passed on to a client
 * that asked. `bytes` and `top_logprobs` of a shape no server should send read as absent, so they
 * never cost the entry its `logprob`. Extra fields are dropped.
 */
const WireTopLogprob = z.object({
  token: z.string().nullish(),
  logprob: z.number(),
  bytes: z.array(z.number().int()).nullish().catch(undefined),
});
const WireTokenLogprob = WireTopLogprob.extend({
  top_logprobs: z.array(WireTopLogprob).nullish().catch(undefined),
});
export type WireTokenLogprob = z.infer<typeof WireTokenLogprob>;

/**
 * A choice's `logprobs` object: the entries of the content tokens and of the refusal tokens, in
 * order, each `null` when the model produced no such tokens.
 */
const WireLogprobs = z.object({
  content: z.array(WireTokenLogprob).nullish(),
  refusal: z.array(WireTokenLogprob).nullish(),
});
export type WireLogprobs = z.infer<typeof WireLogprobs>;

/**
 * What a choice's `logprobs` reads as: `undefined` when it is absent or `null` (not asked for, or
 * not supported), the entries, or `"malformed"`. Log-probabilities are advisory: a value of the
 * wrong shape must not fail the answer it came with, so it is read apart from the rest of the
 * choice and marked, for the assembler to drop.
 */
export type ChoiceLogprobs = WireLogprobs | "malformed" | undefined;

const WireChoiceLogprobs = z
  .unknown()
  .transform((raw): ChoiceLogprobs => {
    if (raw === null || raw === undefined) return undefined;
    const parsed = WireLogprobs.safeParse(raw);
    return parsed.success ? parsed.data : "malformed";
  })
  .optional();

/** A non-streamed `chat.completion`. */
export const WireCompletion = z.object({
  model: z.string().nullish(),
  choices: z
    .array(
      z.object({
        index: z.number().int().optional(),
        message: z.object({
          content: z.string().nullish(),
          refusal: z.string().nullish(),
          tool_calls: z.array(WireToolCall).nullish(),
        }),
        logprobs: WireChoiceLogprobs,
        finish_reason: z.string().nullish(),
      }),
    )
    .min(1, "a completion has at least one choice"),
  usage: WireUsage.nullish(),
});
export type WireCompletion = z.infer<typeof WireCompletion>;

const WireToolCallDelta = z.object({
  // Optional because a few servers send whole calls without it; OpenAI always sends it.
  index: z.number().int().nonnegative().optional(),
  id: z.string().nullish(),
  type: z.string().nullish(),
  function: z
    .object({
      name: z.string().nullish(),
      arguments: z.string().nullish(),
    })
    .nullish(),
});
export type WireToolCallDelta = z.infer<typeof WireToolCallDelta>;

/**
 * One streamed `chat.completion.chunk`. `choices` is empty in the final usage chunk (with
 * `stream_options.include_usage`) and in Azure's leading `prompt_filter_results` chunk; `usage` is
 * `null` on every other chunk.
 */
export const WireChunk = z.object({
  model: z.string().nullish(),
  choices: z
    .array(
      z.object({
        index: z.number().int().optional(),
        delta: z
          .object({
            content: z.string().nullish(),
            refusal: z.string().nullish(),
            tool_calls: z.array(WireToolCallDelta).nullish(),
          })
          .nullish(),
        /** The log-probabilities of this chunk's tokens. */
        logprobs: WireChoiceLogprobs,
        finish_reason: z.string().nullish(),
      }),
    )
    .nullish(),
  usage: WireUsage.nullish(),
});
export type WireChunk = z.infer<typeof WireChunk>;

/** The choice the mesh reads: it never asks for `n` > 1, so choice 0 (or the only one). */
export function firstChoice<T extends { index?: number | undefined }>(
  choices: readonly T[] | null | undefined,
): T | undefined {
  if (!choices) return undefined;
  return choices.find((c) => c.index === undefined || c.index === 0) ?? choices[0];
}

/**
 * The finish reason in the mesh's vocabulary. The legacy `function_call` is a tool call. A message
 * that carries tool calls is asking for them whatever the server says: Ollama and some vLLM
 * versions answer `stop` with tool calls, and other servers invent words of their own (`eos`).
 */
export function toFinishReason(
  raw: string | null | undefined,
  hasToolCalls: boolean,
): FinishReason {
  switch (raw) {
    case "length":
      return "length";
    case "content_filter":
      return "content_filter";
    case "tool_calls":
    case "function_call":
      return "tool_calls";
    default:
      return hasToolCalls ? "tool_calls" : "stop";
  }
}

/** Tool-call arguments as JSON text; a call with none gets `{}`, which every tool can parse. */
export function argumentsText(raw: string | Record<string, unknown> | null | undefined): string {
  if (raw === null || raw === undefined || raw === "") return "{}";
  return typeof raw === "string" ? raw : JSON.stringify(raw);
}

/** A vendor's error object, in the shapes seen in the wild. */
export interface VendorError {
  message?: string;
  type?: string;
  code?: string | number;
}

/**
 * The error a body reports, if any: OpenAI's `{error: {message, type, param, code}}`, a bare
 * `{error: "text"}`, or the top-level `{message, type, code}` of older vLLM versions.
 */
export function vendorError(body: unknown): VendorError | undefined {
  if (!body || typeof body !== "object") return undefined;
  const record = body as Record<string, unknown>;
  const inner = record.error;
  if (typeof inner === "string") return { message: inner };
  const source =
    inner && typeof inner === "object"
      ? (inner as Record<string, unknown>)
      : record.object === "error"
        ? record
        : undefined;
  if (!source) return undefined;
  const out: VendorError = {};
  if (typeof source.message === "string") out.message = source.message;
  if (typeof source.type === "string") out.type = source.type;
  if (typeof source.code === "string" || typeof source.code === "number") out.code = source.code;
  return out;
}

/** The vendor's message in an HTTP error body, or the start of the body when it has none. */
export function errorBodyMessage(text: string): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const fromJson = vendorError(parsed)?.message;
  const detail = (parsed as { detail?: unknown } | undefined)?.detail; // FastAPI-based servers
  const message =
    fromJson ?? (typeof detail === "string" ? detail : text.replace(/\s+/g, " ").trim());
  return message.length > 500 ? `${message.slice(0, 499)}…` : message;
}

/**
 * Classifies an error object that arrived without a telling HTTP status: inside a 200 stream, or
 * in a 200 body. A numeric `code` is an HTTP status (llama.cpp, vLLM); otherwise OpenAI's `type`
 * and `code` words pick the status the error would have had. Unknown errors count as server
 * failures, which a retry may cure.
 */
export function vendorErrorFailure(error: VendorError): ProviderFailure {
  const text = `${error.type ?? ""} ${error.code ?? ""} ${error.message ?? ""}`;
  if (typeof error.code === "number" && error.code >= 400 && error.code < 600) {
    return httpFailure(error.code, text);
  }
  const words = `${error.type ?? ""} ${error.code ?? ""}`.toLowerCase();
  if (/rate_limit|insufficient_quota/.test(words)) return httpFailure(429, text);
  if (/overloaded/.test(words)) return httpFailure(503, text);
  if (/invalid_api_key|authentication|permission/.test(words)) return httpFailure(401, text);
  if (/not_found/.test(words)) return httpFailure(404, text);
  if (/invalid_request|bad_request|context_length/.test(words)) return httpFailure(400, text);
  return httpFailure(500, text);
}
