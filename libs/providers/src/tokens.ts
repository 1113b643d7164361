import type { Message, ToolDefinition } from "@handoff/contracts";

/**
 * A tokenizer-free estimate (about four characters a token, plus a few tokens of framing per
 * message), used where a provider reports no usage: the simulated model and cut-off streams.
 */
export function estimateTokens(text: string): number {
  return text.length === 0 ? 0 : Math.ceil(text.length / 4);
}

export function estimateInputTokens(
  messages: readonly Message[],
  tools: readonly ToolDefinition[] = [],
): number {
  let total = 3;
  for (const message of messages) {
    total += 4 + estimateTokens(message.content ?? "");
    if (message.role === "assistant" && message.tool_calls) {
      for (const call of message.tool_calls) {
        total += estimateTokens(call.function.name) + estimateTokens(call.function.arguments);
      }
    }
  }
  for (const tool of tools) total += estimateTokens(JSON.stringify(tool.function));
  return total;
}
