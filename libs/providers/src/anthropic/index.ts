/** Anthropic Messages API provider: the adapter, its translation rules and its SSE decoder. */
export {
  ANTHROPIC_VERSION,
  AnthropicModel,
  type AnthropicModelOptions,
  DEFAULT_ANTHROPIC_BASE_URL,
  DEFAULT_ANTHROPIC_KEY_ENV,
  messagesUrl,
} from "./adapter.js";
export {
  type AnthropicBlock,
  type AnthropicMessage,
  type AnthropicRequest,
  type AnthropicTool,
  type AnthropicToolChoice,
  DEFAULT_MAX_TOKENS,
  JSON_OBJECT_INSTRUCTION,
  type TranslatedRequest,
  toAnthropicMessages,
  toAnthropicRequest,
  toAnthropicTool,
  toAnthropicToolChoice,
  toFinishReason,
} from "./translate.js";
