import { randomUUID } from "node:crypto";
import type { AssistantMessage, HandoffError, TokenLogprob, ToolCall } from "@handoff/contracts";
import { providerError } from "../errors.js";
import type { SseEvent } from "../sse.js";
import { estimateInputTokens, estimateTokens } from "../tokens.js";
import type { ChatRequest, ChatResult, ChatStreamEvent } from "../types.js";
import {
  argumentsText,
  type ChoiceLogprobs,
  firstChoice,
  toFinishReason,
  vendorError,
  vendorErrorFailure,
  WireChunk,
  type WireCompletion,
  type WireTokenLogprob,
  type WireUsage,
} from "./wire.js";

/** An id for a tool call the server sent without one; the mesh needs one to pair the result. */
export function syntheticCallId(): string {
  return `call_${randomUUID().replace(/-/g, "").slice(0, 24)}`;
}

/**
 * Token counts from the server, with the tokenizer-free estimate for whatever it left out. The
 * prompt tokens read from the server's prompt cache (`prompt_tokens_details.cached_tokens`) are
 * already among `prompt_tokens`, as the mesh counts them; without a `prompt_tokens` to be part of,
 * they are not counted.
 */
export function usageOf(
  usage: WireUsage | null | undefined,
  request: ChatRequest,
  message: AssistantMessage,
): ChatResult["usage"] {
  const outputText =
    (message.content ?? "") + (message.tool_calls ?? []).map((c) => c.function.arguments).join("");
  const cached = usage?.prompt_tokens_details?.cached_tokens ?? 0;
  const prompt = usage?.prompt_tokens;
  return {
    inputTokens: prompt ?? estimateInputTokens(request.messages, request.tools),
    outputTokens: usage?.completion_tokens ?? estimateTokens(outputText),
    ...(prompt !== undefined && cached > 0 ? { cachedInputTokens: Math.min(cached, prompt) } : {}),
  };
}

/**
 * The numbers of `logprobs[which]`, in token order. Undefined when the request did not ask
 * for log-probabilities (so an answer not asking stays exactly as it was, whatever the server
 * sends), when the server sent none, and when they are malformed: log-probabilities are advisory,
 * so a malformed entry drops them all, never the answer.
 */
function logprobsOf(
  request: ChatRequest,
  logprobs: ChoiceLogprobs,
  which: "content" | "refusal",
): number[] | undefined {
  if (request.logprobs !== true || logprobs === undefined || logprobs === "malformed") {
    return undefined;
  }
  const entries = logprobs[which] ?? [];
  return entries.length > 0 ? entries.map((entry) => entry.logprob) : undefined;
}

/** Wire entries as the client reads them: OpenAI's shape, with what a server left out filled. */
function clientTokens(entries: readonly WireTokenLogprob[] | null | undefined): TokenLogprob[] {
  return (entries ?? []).map((entry) => ({
    token: entry.token ?? "",
    logprob: entry.logprob,
    bytes: entry.bytes ?? null,
    top_logprobs: (entry.top_logprobs ?? []).map((top) => ({
      token: top.token ?? "",
      logprob: top.logprob,
      bytes: top.bytes ?? null,
    })),
  }));
}

/**
 * The client's `choices[].logprobs` from a choice's: only when the request's `params.logprobs`
 * asked, and the server sent entries, well formed (malformed ones are dropped, as for the mesh).
 */
function choiceLogprobsOf(
  request: ChatRequest,
  logprobs: ChoiceLogprobs,
): ChatResult["choiceLogprobs"] {
  if (request.params?.logprobs !== true || logprobs === undefined || logprobs === "malformed") {
    return undefined;
  }
  const content = clientTokens(logprobs.content);
  const refusal = clientTokens(logprobs.refusal);
  if (content.length === 0 && refusal.length === 0) return undefined;
  return {
    content: content.length > 0 ? content : null,
    refusal: refusal.length > 0 ? refusal : null,
  };
}

/** A non-streamed completion as the mesh's result. */
export function resultOfCompletion(
  completion: WireCompletion,
  request: ChatRequest,
  fallbackModel: string,
): ChatResult {
  // The schema guarantees at least one choice.
  const choice = firstChoice(completion.choices) as WireCompletion["choices"][number];
  const calls: ToolCall[] = (choice.message.tool_calls ?? []).map((call) => ({
    id: call.id || syntheticCallId(),
    type: "function",
    function: { name: call.function.name, arguments: argumentsText(call.function.arguments) },
  }));
  // A refusal (structured outputs) is the only text the model produced, so it is the answer.
  const raw = choice.message.content ?? choice.message.refusal ?? null;
  // The log-probabilities of the tokens of that text.
  const logprobs = logprobsOf(
    request,
    choice.logprobs,
    choice.message.content == null && choice.message.refusal != null ? "refusal" : "content",
  );
  const message: AssistantMessage = {
    role: "assistant",
    content: raw === "" && calls.length > 0 ? null : raw,
    ...(calls.length > 0 ? { tool_calls: calls } : {}),
  };
  const choiceLogprobs = choiceLogprobsOf(request, choice.logprobs);
  return {
    message,
    finishReason: toFinishReason(choice.finish_reason, calls.length > 0),
    usage: usageOf(completion.usage, request, message),
    model: completion.model || fallbackModel,
    ...(logprobs ? { logprobs } : {}),
    ...(choiceLogprobs ? { choiceLogprobs } : {}),
  };
}

interface PartialCall {
  id?: string;
  name?: string;
  arguments: string;
}

/**
 * Turns the events of one streamed completion into the mesh's stream events and, at the end, the
 * assembled result. Feed it every SSE event with `accept`; it stops accepting at `[DONE]`. Throws
 * classified provider errors for an error event, a `data:` payload that is not JSON, or a chunk
 * of the wrong shape.
 */
export class StreamAssembler {
  readonly #deployment: string;
  readonly #request: ChatRequest;
  readonly #fallbackModel: string;
  #text = "";
  /** The log-probabilities of the text's tokens so far; undefined once a chunk's were malformed. */
  #logprobs: number[] | undefined = [];
  /** The client's entries so far (`params.logprobs`); undefined once a chunk's were malformed. */
  #clientLogprobs: { content: TokenLogprob[]; refusal: TokenLogprob[] } | undefined = {
    content: [],
    refusal: [],
  };
  readonly #calls = new Map<number, PartialCall>();
  #finish: string | undefined;
  #usage: WireUsage | undefined;
  #model: string | undefined;
  #sawDone = false;
  #chunks = 0;

  constructor(deployment: string, request: ChatRequest, fallbackModel: string) {
    this.#deployment = deployment;
    this.#request = request;
    this.#fallbackModel = fallbackModel;
  }

  /** `[DONE]` arrived: nothing after it belongs to the answer. */
  get done(): boolean {
    return this.#sawDone;
  }

  /** Chunks accepted so far, for error messages. */
  get chunks(): number {
    return this.#chunks;
  }

  accept(event: SseEvent): ChatStreamEvent[] {
    if (this.#sawDone) return [];
    const data = event.data.trim();
    if (data === "[DONE]") {
      this.#sawDone = true;
      return [];
    }
    if (data === "") return []; // an empty keep-alive event

    let json: unknown;
    try {
      json = JSON.parse(data);
    } catch {
      throw this.#malformed(`data line ${this.#chunks + 1} of the stream is not JSON`);
    }
    const reported = vendorError(json);
    if (event.event === "error" || reported) {
      const error = reported ?? {};
      throw providerError(
        `${this.#deployment}: the stream reported an error: ${error.message ?? data.slice(0, 200)}`,
        { failure: vendorErrorFailure(error), deployment: this.#deployment },
      );
    }
    const parsed = WireChunk.safeParse(json);
    if (!parsed.success) {
      const where = parsed.error.issues.map((i) => i.path.join(".") || "(root)").join(", ");
      throw this.#malformed(`chunk ${this.#chunks + 1} has an unexpected shape (${where})`);
    }
    this.#chunks++;
    const chunk = parsed.data;
    if (chunk.model && !this.#model) this.#model = chunk.model;
    if (chunk.usage) this.#usage = chunk.usage;

    const choice = firstChoice(chunk.choices);
    if (!choice) return [];
    const out: ChatStreamEvent[] = [];
    const delta = choice.delta;
    const text = (delta?.content ?? "") + (delta?.refusal ?? "");
    if (text !== "") {
      this.#text += text;
      out.push({ type: "text", delta: text });
    }
    if (this.#logprobs && this.#request.logprobs === true) {
      if (choice.logprobs === "malformed") {
        // Advisory: a gap would misalign the rest, so the whole answer goes without them.
        this.#logprobs = undefined;
      } else {
        // In the order of `text`: the content tokens, then the refusal tokens.
        for (const which of ["content", "refusal"] as const) {
          for (const value of logprobsOf(this.#request, choice.logprobs, which) ?? []) {
            this.#logprobs.push(value);
          }
        }
      }
    }
    if (this.#clientLogprobs && this.#request.params?.logprobs === true) {
      if (choice.logprobs === "malformed") this.#clientLogprobs = undefined;
      else if (choice.logprobs) {
        this.#clientLogprobs.content.push(...clientTokens(choice.logprobs.content));
        this.#clientLogprobs.refusal.push(...clientTokens(choice.logprobs.refusal));
      }
    }
    for (const [position, call] of (delta?.tool_calls ?? []).entries()) {
      const index = call.index ?? position;
      const partial = this.#calls.get(index) ?? { arguments: "" };
      this.#calls.set(index, partial);
      // Some servers repeat the id and name on every fragment: the first one counts.
      if (call.id && !partial.id) partial.id = call.id;
      const name = call.function?.name;
      if (name && !partial.name) partial.name = name;
      const args = call.function?.arguments ?? "";
      partial.arguments += args;
      out.push({
        type: "tool_call",
        index,
        ...(call.id ? { id: call.id } : {}),
        ...(name ? { name } : {}),
        argumentsDelta: args,
      });
    }
    if (choice.finish_reason) this.#finish = choice.finish_reason;
    return out;
  }

  /**
   * The assembled result once the stream has closed. A stream that closed before `[DONE]` and
   * before any finish reason was cut off, and its answer may be incomplete: malformed.
   */
  finish(): ChatResult {
    if (!this.#sawDone && this.#finish === undefined) {
      throw this.#malformed(
        `the stream ended after ${this.#chunks} chunks without a finish_reason or [DONE]`,
      );
    }
    const calls: ToolCall[] = [];
    for (const [index, partial] of [...this.#calls.entries()].sort((a, b) => a[0] - b[0])) {
      if (!partial.name) throw this.#malformed(`streamed tool call ${index} has no function name`);
      calls.push({
        id: partial.id ?? syntheticCallId(),
        type: "function",
        function: { name: partial.name, arguments: argumentsText(partial.arguments) },
      });
    }
    const message: AssistantMessage = {
      role: "assistant",
      content: this.#text === "" && calls.length > 0 ? null : this.#text,
      ...(calls.length > 0 ? { tool_calls: calls } : {}),
    };
    const logprobs = this.#logprobs;
    const client = this.#clientLogprobs;
    const choiceLogprobs =
      client && (client.content.length > 0 || client.refusal.length > 0)
        ? {
            content: client.content.length > 0 ? [...client.content] : null,
            refusal: client.refusal.length > 0 ? [...client.refusal] : null,
          }
        : undefined;
    return {
      message,
      finishReason: toFinishReason(this.#finish, calls.length > 0),
      usage: usageOf(this.#usage, this.#request, message),
      model: this.#model ?? this.#fallbackModel,
      ...(logprobs && logprobs.length > 0 ? { logprobs: [...logprobs] } : {}),
      ...(choiceLogprobs ? { choiceLogprobs } : {}),
    };
  }

  #malformed(what: string): HandoffError {
    return providerError(`${this.#deployment}: malformed stream: ${what}`, {
      failure: "malformed",
      deployment: this.#deployment,
    });
  }
}
