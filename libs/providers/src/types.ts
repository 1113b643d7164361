import type {
  AssistantMessage,
  ChatParams,
  ChoiceLogprobs,
  FinishReason,
  Message,
  ToolChoice,
  ToolDefinition,
} from "@handoff/contracts";

export type { ToolChoice } from "@handoff/contracts";

/** One model call, in the mesh's OpenAI-shaped vocabulary. */
export interface ChatRequest {
  messages: readonly Message[];
  tools?: readonly ToolDefinition[];
  toolChoice?: ToolChoice;
  params?: ChatParams;
  /**
   * Ask the provider for token log-probabilities where it supports them, for the mesh's own use
   * (the cascade's verifier reads `ChatResult.logprobs`); ignored by providers that do not. The
   * OpenAI-compatible adapter sends `logprobs: true`; Anthropic has no such option, and the
   * simulated model keeps them for clients that ask (`params.logprobs`). What the client asked
   * for is in `params.logprobs` and `params.top_logprobs`, answered in `ChatResult.choiceLogprobs`.
   */
  logprobs?: boolean;
}

/**
 * A call's tokens, the same way for every provider: `inputTokens` is the whole prompt, and the
 * tokens the provider read from or wrote to its prompt cache are parts of it (OpenAI's
 * `prompt_tokens` counts them already; Anthropic's `input_tokens` does not, so its adapter adds
 * them). Absent cache counts are none.
 */
export interface TokenUsage {
  inputTokens: number;
  outputTokens: number;
  /** Of `inputTokens`, those read from the provider's prompt cache. */
  cachedInputTokens?: number;
  /** Of `inputTokens`, those written to the provider's prompt cache. */
  cacheWriteTokens?: number;
}

export interface ChatResult {
  message: AssistantMessage;
  finishReason: FinishReason;
  usage: TokenUsage;
  /** The model that answered, as the provider reports it. */
  model: string;
  /**
   * The log-probability (natural log) of each generated content token, in order. Only when the
   * request asked for `logprobs` and the provider returned them; absent when it returned none, or
   * returned them malformed (they are advisory and never fail an answer).
   */
  logprobs?: number[];
  /**
   * The answer's tokens with their log-probabilities and `top_logprobs` alternatives, as OpenAI's
   * `choices[].logprobs` holds them: only when the request's `params.logprobs` asked and the
   * provider returned them (well formed). Providers without them (Anthropic) leave it out.
   */
  choiceLogprobs?: ChoiceLogprobs;
}

/** Incremental output of a streamed call; the last event is always `done` with the whole result. */
export type ChatStreamEvent =
  | { type: "text"; delta: string }
  | { type: "tool_call"; index: number; id?: string; name?: string; argumentsDelta: string }
  | { type: "done"; result: ChatResult };

export interface CallOptions {
  signal?: AbortSignal;
}

/** Provider ids as they appear in the config file. */
export type ProviderId = "sim" | "openai-compatible" | "anthropic";

/**
 * A chat model behind one interface. Adapters translate the OpenAI-shaped request to their
 * vendor's wire format and back; retries, fallbacks and timeouts live outside them, in one place.
 */
export interface ChatModel {
  readonly provider: ProviderId;
  readonly model: string;
  /** True for the simulated `sim` provider, so output can always be labelled. */
  readonly simulated: boolean;
  chat(request: ChatRequest, options?: CallOptions): Promise<ChatResult>;
  stream(request: ChatRequest, options?: CallOptions): AsyncIterable<ChatStreamEvent>;
}
