import type { ChatResult, ChatStreamEvent } from "./types.js";

/**
 * A whole result replayed as stream events: its text (in the pieces `split` cuts it into), then
 * each tool call in one event, then `done`. For models that answered without streaming.
 */
export function* replayAsStream(
  result: ChatResult,
  split: (text: string) => readonly string[] = (text) => [text],
): Generator<ChatStreamEvent> {
  const { content, tool_calls: calls } = result.message;
  if (content) for (const piece of split(content)) yield { type: "text", delta: piece };
  for (const [index, call] of (calls ?? []).entries()) {
    yield {
      type: "tool_call",
      index,
      id: call.id,
      name: call.function.name,
      argumentsDelta: call.function.arguments,
    };
  }
  yield { type: "done", result };
}
