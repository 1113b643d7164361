import type { Deployment } from "@handoff/config";
import { deploymentId, promptCacheOf } from "@handoff/config";
import { HandoffError, type ToolCall } from "@handoff/contracts";
import { z } from "zod";
import {
  httpFailure,
  type ProviderErrorDetails,
  type ProviderFailure,
  providerError,
  retryAfterMs,
} from "../errors.js";
import { fetchPost, type HttpPost, type HttpReply, headerRecord, undiciPost } from "../http.js";
import { readSse } from "../sse.js";
import type { CallOptions, ChatModel, ChatRequest, ChatResult, ChatStreamEvent } from "../types.js";
import {
  type AnthropicRequest,
  AnthropicResponse,
  type PromptCacheMarks,
  readContent,
  toAnthropicRequest,
  toAssistant,
  toTokenUsage,
} from "./translate.js";

/** The API version the adapter speaks; the request and event shapes below are this version's. */
export const ANTHROPIC_VERSION = "2023-06-01";
export const DEFAULT_ANTHROPIC_BASE_URL = "https://api.anthropic.com";
export const DEFAULT_ANTHROPIC_KEY_ENV = "ANTHROPIC_API_KEY";

export interface AnthropicModelOptions {
  /** Where the API key variable is looked up; `process.env` by default. */
  env?: NodeJS.ProcessEnv;
  /**
   * A `fetch` to send requests with instead of the adapters' own HTTP client (undici's `request`,
   * see `../http.ts`): tests and proxies substitute their own.
   */
  fetch?: typeof fetch;
}

/**
 * A `ChatModel` served by Anthropic's Messages API. It translates the mesh's OpenAI-shaped
 * requests to `POST {base_url}/v1/messages` and the answers (whole or streamed over SSE) back, and
 * classifies every failure for the resilience layer. It never retries or times out on its own:
 * that happens in one place outside the adapters, through the caller's abort signal.
 */
export class AnthropicModel implements ChatModel {
  readonly provider = "anthropic" as const;
  readonly simulated = false;
  readonly model: string;
  /** Deployment id for errors and logs, e.g. `anthropic:claude-sonnet-4-5`. */
  readonly deployment: string;
  /** The full messages endpoint. */
  readonly url: string;
  /** The prompt-cache breakpoints its requests carry (the deployment's `prompt_cache`). */
  readonly promptCache: PromptCacheMarks;
  readonly #headers: Readonly<Record<string, string>>;
  readonly #post: HttpPost;

  /**
   * Throws `HANDOFF_ERR_CONFIG` when the API key variable (`api_key_env`, by default
   * `ANTHROPIC_API_KEY`) is unset, so a misconfigured deployment fails at startup, not per call.
   */
  constructor(deployment: Deployment, options: AnthropicModelOptions = {}) {
    this.model = deployment.model;
    this.deployment = deploymentId(deployment);
    this.url = messagesUrl(deployment.base_url ?? DEFAULT_ANTHROPIC_BASE_URL);
    this.promptCache = promptCacheOf(deployment);
    this.#post = options.fetch ? fetchPost(options.fetch) : undiciPost;

    const env = options.env ?? process.env;
    const keyEnv = deployment.api_key_env ?? DEFAULT_ANTHROPIC_KEY_ENV;
    const key = env[keyEnv];
    if (key === undefined || key.trim() === "") {
      throw new HandoffError(
        "HANDOFF_ERR_CONFIG",
        `deployment ${this.deployment}: the environment variable ${keyEnv} holding its Anthropic API key is not set`,
      );
    }

    const headers = new Headers({
      "x-api-key": key,
      "anthropic-version": ANTHROPIC_VERSION,
      "content-type": "application/json",
    });
    // The deployment's own headers come last so a config can opt into a beta (`anthropic-beta`)
    // or a newer version without a code change.
    for (const [name, value] of Object.entries(deployment.headers ?? {})) {
      headers.set(name, value);
    }
    this.#headers = headerRecord(headers);
  }

  async chat(request: ChatRequest, options: CallOptions = {}): Promise<ChatResult> {
    const { signal } = options;
    const { body, answerTool } = toAnthropicRequest(request, this.model, false, this.promptCache);
    const res = await this.#send(body, signal);

    let text: string;
    try {
      text = await res.text();
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      throw this.#error(`the response broke off: ${describe(error)}`, "network", error);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw this.#error(`the response is not JSON: ${truncate(text, 200)}`, "malformed", error);
    }
    const parsed = AnthropicResponse.safeParse(json);
    if (!parsed.success) {
      throw this.#error(
        `unexpected response shape: ${z.prettifyError(parsed.error)}`,
        "malformed",
        parsed.error,
      );
    }
    const content = readContent(parsed.data.content, answerTool);
    if (typeof content === "string") throw this.#error(content, "malformed");

    const { message, finishReason } = toAssistant(content, parsed.data.stop_reason);
    return {
      message,
      finishReason,
      usage: toTokenUsage(parsed.data.usage),
      model: parsed.data.model,
    };
  }

  /**
   * Streams the answer: text deltas as they arrive, tool calls as a first event with id and name
   * followed by fragments of their JSON arguments (`index` counts tool calls, not content
   * blocks), and a last `done` event with the whole result. A stream that breaks off, carries an
   * `error` event or ends without `message_stop` throws after the events that did arrive.
   */
  async *stream(request: ChatRequest, options: CallOptions = {}): AsyncIterable<ChatStreamEvent> {
    const { signal } = options;
    const { body, answerTool } = toAnthropicRequest(request, this.model, true, this.promptCache);
    const res = await this.#send(body, signal);

    const assembler = new StreamAssembler(answerTool);
    try {
      for await (const sse of readSse(res.body)) {
        let data: unknown;
        try {
          data = JSON.parse(sse.data);
        } catch (error) {
          throw this.#error(
            `a stream event is not JSON: ${truncate(sse.data, 200)}`,
            "malformed",
            error,
          );
        }
        const step = assembler.accept(data);
        if (step.kind === "error") throw this.#error(step.message, step.failure);
        yield* step.events;
        if (step.kind === "done") {
          const result = assembler.result();
          if (typeof result === "string") throw this.#error(result, "malformed");
          yield { type: "done", result };
          return;
        }
      }
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (error instanceof HandoffError) throw error;
      // The connection dropped mid-body: what arrived is a truncated stream.
      throw this.#error(`the stream broke off: ${describe(error)}`, "malformed", error);
    } finally {
      // Releases the connection on an error and when the consumer stops early.
      res.discard();
    }
    throw this.#error("the stream ended without message_stop", "malformed");
  }

  /** Sends the request; resolves with a 2xx response, throws a classified error otherwise. */
  async #send(body: AnthropicRequest, signal: AbortSignal | undefined): Promise<HttpReply> {
    signal?.throwIfAborted();
    let res: HttpReply;
    try {
      res = await this.#post(this.url, {
        headers: this.#headers,
        body: JSON.stringify(body),
        signal,
      });
    } catch (error) {
      // The caller's abort is not a provider failure: it propagates as it was raised.
      if (signal?.aborted) throw signal.reason;
      throw this.#error(`could not reach ${this.url}: ${describe(error)}`, "network", error);
    }
    if (res.ok) return res;

    let text = "";
    try {
      text = await res.text();
    } catch {
      if (signal?.aborted) throw signal.reason;
      // The status alone still classifies the failure.
    }
    const vendor = vendorError(text);
    let failure = httpFailure(res.status, text);
    // Anthropic's own error type is more specific than a status a proxy may have rewritten.
    if (vendor?.type === "overloaded_error") failure = "overloaded";
    const detail = vendor
      ? `${vendor.type}: ${vendor.message}`
      : truncate(text.trim(), 300) || "(no body)";
    const wait = retryAfterMs(res.headers);
    throw this.#error(`HTTP ${res.status} ${detail}`, failure, undefined, {
      status: res.status,
      ...(wait === undefined ? {} : { retryAfterMs: wait }),
    });
  }

  #error(
    message: string,
    failure: ProviderFailure,
    cause?: unknown,
    extra: Pick<ProviderErrorDetails, "status" | "retryAfterMs"> = {},
  ): HandoffError {
    return providerError(
      `anthropic deployment ${this.deployment}: ${message}`,
      { failure, deployment: this.deployment, ...extra },
      cause,
    );
  }
}

/**
 * `{base}/v1/messages`. A base that already ends in `/v1` (as OpenAI-style base URLs do) is
 * accepted too, so either spelling in the config reaches the same endpoint.
 */
export function messagesUrl(baseUrl: string): string {
  const base = baseUrl.replace(/\/+$/, "");
  return base.endsWith("/v1") ? `${base}/messages` : `${base}/v1/messages`;
}

const VendorError = z.object({
  error: z.object({ type: z.string(), message: z.string() }),
});

/** Anthropic's `{type: "error", error: {type, message}}`, if the body is one. */
function vendorError(body: string): { type: string; message: string } | undefined {
  try {
    const parsed = VendorError.safeParse(JSON.parse(body));
    return parsed.success ? parsed.data.error : undefined;
  } catch {
    return undefined;
  }
}

/** How a mid-stream `error` event is classified; the HTTP status was already 200. */
function streamFailure(type: string): ProviderFailure {
  switch (type) {
    case "overloaded_error":
      return "overloaded";
    case "rate_limit_error":
      return "rate_limit";
    case "api_error":
      return "server";
    default:
      return "malformed";
  }
}

// ---- streaming ----

/**
 * Token counts of `message_start` and `message_delta`. Those of `message_delta` are cumulative
 * totals, and any of them may be absent or null there (older API versions sent output only).
 */
const Usage = z.looseObject({
  input_tokens: z.number().int().nonnegative().nullish(),
  output_tokens: z.number().int().nonnegative().nullish(),
  cache_creation_input_tokens: z.number().int().nonnegative().nullish(),
  cache_read_input_tokens: z.number().int().nonnegative().nullish(),
});
type WireUsage = z.infer<typeof Usage>;

/** The stream events the assembler reads, validated only as far as it reads them. */
const StreamEvent = z.discriminatedUnion("type", [
  z.looseObject({
    type: z.literal("message_start"),
    message: z.looseObject({ model: z.string().min(1), usage: Usage }),
  }),
  z.looseObject({
    type: z.literal("content_block_start"),
    index: z.number().int().nonnegative(),
    content_block: z.looseObject({
      type: z.string(),
      text: z.string().optional(),
      id: z.string().optional(),
      name: z.string().optional(),
      input: z.unknown().optional(),
    }),
  }),
  z.looseObject({
    type: z.literal("content_block_delta"),
    index: z.number().int().nonnegative(),
    delta: z.looseObject({
      type: z.string(),
      text: z.string().optional(),
      partial_json: z.string().optional(),
    }),
  }),
  z.looseObject({ type: z.literal("content_block_stop"), index: z.number().int().nonnegative() }),
  z.looseObject({
    type: z.literal("message_delta"),
    delta: z.looseObject({ stop_reason: z.string().nullish() }),
    usage: Usage.optional(),
  }),
  z.looseObject({ type: z.literal("message_stop") }),
  z.looseObject({ type: z.literal("ping") }),
  z.looseObject({
    type: z.literal("error"),
    error: z.looseObject({ type: z.string(), message: z.string().optional() }),
  }),
]);

type Block =
  | { kind: "text" }
  | { kind: "tool"; ordinal: number; id: string; name: string; json: string; initial: string }
  | { kind: "answer"; json: string; initial: string }
  | { kind: "ignored" };

type Step =
  | { kind: "events"; events: ChatStreamEvent[] }
  | { kind: "done"; events: ChatStreamEvent[] }
  | { kind: "error"; message: string; failure: ProviderFailure };

/**
 * Folds Anthropic stream events into mesh stream events and, at `message_stop`, the whole result.
 * Kept apart from the I/O so the event rules read in one place.
 */
class StreamAssembler {
  readonly #answerTool: string | undefined;
  readonly #blocks = new Map<number, Block>();
  readonly #tools: Extract<Block, { kind: "tool" }>[] = [];
  #answer: Extract<Block, { kind: "answer" }> | undefined;
  #text = "";
  #model: string | undefined;
  /** Anthropic's counts as they stand: `message_start`'s, overwritten by `message_delta`'s. */
  readonly #usage: WireUsage = {};
  #stopReason: string | null = null;

  constructor(answerTool: string | undefined) {
    this.#answerTool = answerTool;
  }

  accept(data: unknown): Step {
    const raw = data as { type?: unknown } | null;
    const type = raw !== null && typeof raw === "object" ? raw.type : undefined;
    // Anthropic may add event types; unknown ones are skipped, as its versioning policy asks.
    if (typeof type === "string" && !KNOWN_EVENTS.has(type)) return { kind: "events", events: [] };

    const parsed = StreamEvent.safeParse(data);
    if (!parsed.success) {
      return {
        kind: "error",
        failure: "malformed",
        message: `unexpected stream event: ${z.prettifyError(parsed.error)}`,
      };
    }
    const event = parsed.data;
    if (event.type !== "message_start" && event.type !== "ping" && event.type !== "error") {
      if (this.#model === undefined) {
        return {
          kind: "error",
          failure: "malformed",
          message: `${event.type} before message_start`,
        };
      }
    }

    switch (event.type) {
      case "message_start":
        this.#model = event.message.model;
        this.#count(event.message.usage);
        return { kind: "events", events: [] };
      case "content_block_start":
        return this.#start(event.index, event.content_block);
      case "content_block_delta":
        return this.#delta(event.index, event.delta);
      case "content_block_stop":
        return this.#stop(event.index);
      case "message_delta":
        if (event.delta.stop_reason != null) this.#stopReason = event.delta.stop_reason;
        // message_delta usage counts are cumulative totals, not increments.
        if (event.usage) this.#count(event.usage);
        return { kind: "events", events: [] };
      case "message_stop":
        return { kind: "done", events: [] };
      case "ping":
        return { kind: "events", events: [] };
      case "error":
        return {
          kind: "error",
          failure: streamFailure(event.error.type),
          message: `stream error ${event.error.type}: ${event.error.message ?? "(no message)"}`,
        };
    }
  }

  /** Keeps the counts `usage` gives; those it leaves out or sends as null stand as they were. */
  #count(usage: WireUsage): void {
    for (const field of [
      "input_tokens",
      "output_tokens",
      "cache_creation_input_tokens",
      "cache_read_input_tokens",
    ] as const) {
      const value = usage[field];
      if (value != null) this.#usage[field] = value;
    }
  }

  #start(
    index: number,
    block: {
      type: string;
      text?: string | undefined;
      id?: string | undefined;
      name?: string | undefined;
      input?: unknown;
    },
  ): Step {
    if (this.#blocks.has(index)) {
      return {
        kind: "error",
        failure: "malformed",
        message: `content block ${index} started twice`,
      };
    }
    if (block.type === "text") {
      this.#blocks.set(index, { kind: "text" });
      const text = block.text ?? "";
      this.#text += text;
      return { kind: "events", events: text ? [{ type: "text", delta: text }] : [] };
    }
    if (block.type === "tool_use") {
      if (!block.id || !block.name) {
        return {
          kind: "error",
          failure: "malformed",
          message: `tool_use block ${index} lacks its id or name`,
        };
      }
      // The start event carries `input: {}`; the real input follows as input_json_delta pieces.
      // What it carried is kept for a block whose input never gets a delta.
      const initial = JSON.stringify(block.input ?? {});
      if (block.name === this.#answerTool) {
        this.#answer = { kind: "answer", json: "", initial };
        this.#blocks.set(index, this.#answer);
        return { kind: "events", events: [] };
      }
      const tool = {
        kind: "tool" as const,
        ordinal: this.#tools.length,
        id: block.id,
        name: block.name,
        json: "",
        initial,
      };
      this.#tools.push(tool);
      this.#blocks.set(index, tool);
      return {
        kind: "events",
        events: [
          {
            type: "tool_call",
            index: tool.ordinal,
            id: tool.id,
            name: tool.name,
            argumentsDelta: "",
          },
        ],
      };
    }
    // thinking, server tools and future block types carry nothing the mesh shape can hold.
    this.#blocks.set(index, { kind: "ignored" });
    return { kind: "events", events: [] };
  }

  #delta(
    index: number,
    delta: { type: string; text?: string | undefined; partial_json?: string | undefined },
  ): Step {
    const block = this.#blocks.get(index);
    if (!block) {
      return {
        kind: "error",
        failure: "malformed",
        message: `delta for unknown content block ${index}`,
      };
    }
    if (block.kind === "text" && delta.type === "text_delta") {
      const text = delta.text ?? "";
      this.#text += text;
      return { kind: "events", events: text ? [{ type: "text", delta: text }] : [] };
    }
    if ((block.kind === "tool" || block.kind === "answer") && delta.type === "input_json_delta") {
      const piece = delta.partial_json ?? "";
      block.json += piece;
      if (piece === "") return { kind: "events", events: [] };
      // The emulated json_schema answer is the assistant's text, so its JSON streams as text.
      return {
        kind: "events",
        events: [
          block.kind === "answer"
            ? { type: "text", delta: piece }
            : { type: "tool_call", index: block.ordinal, argumentsDelta: piece },
        ],
      };
    }
    // Citations, thinking and signature deltas, or a delta type we do not know: nothing to emit.
    return { kind: "events", events: [] };
  }

  #stop(index: number): Step {
    const block = this.#blocks.get(index);
    if (!block) {
      return {
        kind: "error",
        failure: "malformed",
        message: `stop of unknown content block ${index}`,
      };
    }
    if ((block.kind === "tool" || block.kind === "answer") && block.json === "") {
      // No delta arrived (a tool without arguments): the deltas must still add up to the JSON.
      block.json = block.initial;
      return {
        kind: "events",
        events: [
          block.kind === "answer"
            ? { type: "text", delta: block.json }
            : { type: "tool_call", index: block.ordinal, argumentsDelta: block.json },
        ],
      };
    }
    return { kind: "events", events: [] };
  }

  /** The assembled result, or what makes it malformed. */
  result(): ChatResult | string {
    if (this.#model === undefined) return "the stream had no message_start";
    // A cut-short output may end inside a tool's JSON; that is "length", not a broken stream.
    const truncated = this.#stopReason === "max_tokens";
    const toolCalls: ToolCall[] = [];
    for (const tool of this.#tools) {
      if (!truncated && !isJsonObject(tool.json)) {
        return `the arguments of tool call ${tool.id} are not a JSON object: ${truncate(tool.json, 200)}`;
      }
      toolCalls.push({
        id: tool.id,
        type: "function",
        function: { name: tool.name, arguments: tool.json },
      });
    }
    if (this.#answer && !truncated && !isJsonObject(this.#answer.json)) {
      return `the structured answer is not a JSON object: ${truncate(this.#answer.json, 200)}`;
    }
    const { message, finishReason } = toAssistant(
      {
        text: this.#text,
        toolCalls,
        ...(this.#answer ? { answer: this.#answer.json } : {}),
      },
      this.#stopReason,
    );
    return {
      message,
      finishReason,
      usage: toTokenUsage(this.#usage),
      model: this.#model,
    };
  }
}

const KNOWN_EVENTS = new Set([
  "message_start",
  "content_block_start",
  "content_block_delta",
  "content_block_stop",
  "message_delta",
  "message_stop",
  "ping",
  "error",
]);

function isJsonObject(text: string): boolean {
  try {
    const value: unknown = JSON.parse(text);
    return value !== null && typeof value === "object" && !Array.isArray(value);
  } catch {
    return false;
  }
}

/** A failure's message with its cause, e.g. "fetch failed (ECONNREFUSED)". */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause as { code?: unknown; message?: unknown } | undefined;
  const detail =
    cause && typeof cause === "object"
      ? typeof cause.code === "string"
        ? cause.code
        : typeof cause.message === "string"
          ? cause.message
          : undefined
      : undefined;
  return detail ? `${error.message} (${detail})` : error.message;
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}
