import type { Message, ToolDefinition } from "@handoff/contracts";
import { describe, expect, it } from "vitest";
import {
  type AnthropicRequest,
  cacheBreakpoints,
  DEFAULT_MAX_TOKENS,
  JSON_OBJECT_INSTRUCTION,
  MAX_CACHE_BREAKPOINTS,
  markPromptCache,
  readContent,
  toAnthropicMessages,
  toAnthropicRequest,
  toAnthropicToolChoice,
  toAssistant,
  toFinishReason,
  toTokenUsage,
} from "./translate.js";

const weather: ToolDefinition = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Get the current weather in a given location",
    parameters: {
      type: "object",
      properties: { location: { type: "string" } },
      required: ["location"],
    },
  },
};

describe("toAnthropicMessages", () => {
  it("merges neighbouring turns of one role so user and assistant alternate", () => {
    const messages: Message[] = [
      { role: "user", content: "one" },
      { role: "user", content: "two" },
      { role: "assistant", content: "three" },
      { role: "assistant", content: "four" },
    ];
    expect(toAnthropicMessages(messages)).toEqual([
      {
        role: "user",
        content: [
          { type: "text", text: "one" },
          { type: "text", text: "two" },
        ],
      },
      {
        role: "assistant",
        content: [
          { type: "text", text: "three" },
          { type: "text", text: "four" },
        ],
      },
    ]);
  });

  it("sends arguments that are not a JSON object as {} and notes it in the turn", () => {
    const messages: Message[] = [
      { role: "user", content: "go" },
      {
        role: "assistant",
        content: null,
        tool_calls: [
          { id: "toolu_1", type: "function", function: { name: "calc", arguments: '{"x": 1' } },
          { id: "toolu_2", type: "function", function: { name: "clock", arguments: "" } },
        ],
      },
      { role: "tool", tool_call_id: "toolu_1", content: "error: arguments are not JSON" },
      { role: "tool", tool_call_id: "toolu_2", content: "" },
    ];
    expect(toAnthropicMessages(messages)).toEqual([
      { role: "user", content: [{ type: "text", text: "go" }] },
      {
        role: "assistant",
        content: [
          {
            type: "text",
            text: '[handoff: the arguments of tool call toolu_1 (calc) were not a JSON object and were replaced by {}: {"x": 1]',
          },
          { type: "tool_use", id: "toolu_1", name: "calc", input: {} },
          { type: "tool_use", id: "toolu_2", name: "clock", input: {} },
        ],
      },
      {
        role: "user",
        content: [
          {
            type: "tool_result",
            tool_use_id: "toolu_1",
            content: "error: arguments are not JSON",
            is_error: true,
          },
          { type: "tool_result", tool_use_id: "toolu_2" },
        ],
      },
    ]);
  });
});

describe("toAnthropicRequest", () => {
  it("defaults max_tokens, clamps temperature to Anthropic's range and drops top_p beside it", () => {
    const { body } = toAnthropicRequest(
      {
        messages: [{ role: "user", content: "hi" }],
        params: { temperature: 1.6, top_p: 0.5, seed: 7 },
      },
      "claude-x",
    );
    expect(body).toEqual({
      model: "claude-x",
      max_tokens: DEFAULT_MAX_TOKENS,
      messages: [{ role: "user", content: [{ type: "text", text: "hi" }] }],
      temperature: 1,
    });
    expect(DEFAULT_MAX_TOKENS).toBe(4096);
  });

  it("sends top_p alone when no temperature is set", () => {
    const { body } = toAnthropicRequest(
      { messages: [{ role: "user", content: "hi" }], params: { top_p: 0.5 } },
      "m",
    );
    expect(body.top_p).toBe(0.5);
    expect(body.temperature).toBeUndefined();
  });

  it("leaves tool_choice out when there are no tools", () => {
    const { body } = toAnthropicRequest(
      { messages: [{ role: "user", content: "hi" }], toolChoice: "required" },
      "m",
    );
    expect(body.tools).toBeUndefined();
    expect(body.tool_choice).toBeUndefined();
  });

  it("emulates json_object with a system instruction", () => {
    const { body, answerTool } = toAnthropicRequest(
      {
        messages: [
          { role: "system", content: "Be terse." },
          { role: "user", content: "hi" },
        ],
        params: { response_format: { type: "json_object" } },
      },
      "m",
    );
    expect(body.system).toBe(`Be terse.\n\n${JSON_OBJECT_INSTRUCTION}`);
    expect(answerTool).toBeUndefined();
  });

  it("keeps the caller's tools beside the json_schema answer tool and requires a tool call", () => {
    const { body, answerTool } = toAnthropicRequest(
      {
        messages: [{ role: "user", content: "weather?" }],
        tools: [weather],
        params: {
          response_format: {
            type: "json_schema",
            json_schema: { name: "get_weather", schema: { type: "object" } },
          },
        },
      },
      "m",
    );
    // The schema's name collides with a caller tool, so the answer tool gets another one.
    expect(answerTool).toBe("get_weather_2");
    expect(body.tools?.map((t) => t.name)).toEqual(["get_weather", "get_weather_2"]);
    expect(body.tool_choice).toEqual({ type: "any" });
    expect(body.system).toBe(
      "When you have the final answer, call the get_weather_2 tool with it instead of replying in text.",
    );
  });
});

describe("system messages and the prompt prefix", () => {
  it("hoists the opening system and developer messages, and keeps later ones in their place", () => {
    const messages: Message[] = [
      { role: "system", content: "Be terse." },
      { role: "developer", content: "Use Celsius." },
      { role: "user", content: "weather?" },
      { role: "assistant", content: "Sunny." },
      { role: "system", content: "The user is in Paris." },
      { role: "user", content: "and tomorrow?" },
      { role: "system", content: "- Routed heavy by rules" },
    ];
    const { body } = toAnthropicRequest({ messages }, "m");
    expect(body.system).toBe("Be terse.\n\nUse Celsius.");
    expect(body.messages).toEqual([
      { role: "user", content: [{ type: "text", text: "weather?" }] },
      { role: "assistant", content: [{ type: "text", text: "Sunny." }] },
      {
        role: "user",
        content: [
          { type: "text", text: "The user is in Paris." },
          { type: "text", text: "and tomorrow?" },
          { type: "text", text: "- Routed heavy by rules" },
        ],
      },
    ]);
  });

  it("puts a system message after tool results behind them in the same user turn", () => {
    const messages: Message[] = [
      { role: "user", content: "go" },
      {
        role: "assistant",
        content: null,
        tool_calls: [{ id: "t1", type: "function", function: { name: "calc", arguments: "{}" } }],
      },
      { role: "tool", tool_call_id: "t1", content: "4" },
      { role: "system", content: "Answer briefly." },
    ];
    expect(toAnthropicMessages(messages).at(-1)).toEqual({
      role: "user",
      content: [
        { type: "tool_result", tool_use_id: "t1", content: "4" },
        { type: "text", text: "Answer briefly." },
      ],
    });
  });

  it("marks the parts asked for, and no more than Anthropic's four breakpoints", () => {
    const all = { tools: true, system: true, conversation: true };
    const { body } = toAnthropicRequest(
      {
        messages: [
          { role: "system", content: "Be terse." },
          { role: "user", content: "a" },
          { role: "assistant", content: "b" },
          { role: "user", content: "c" },
        ],
        tools: [weather],
      },
      "m",
      false,
      all,
    );
    expect(cacheBreakpoints(body)).toBe(3);
    expect(body.tools?.[0]?.cache_control).toEqual({ type: "ephemeral" });
    expect(body.system).toEqual([
      { type: "text", text: "Be terse.", cache_control: { type: "ephemeral" } },
    ]);
    expect(body.messages[1]?.content[0]).toEqual({
      type: "text",
      text: "b",
      cache_control: { type: "ephemeral" },
    });
    expect(body.messages[2]?.content[0]).toEqual({ type: "text", text: "c" });

    // A body that already carries breakpoints gets only as many more as the limit leaves.
    const marked = (text: string) => ({
      type: "text" as const,
      text,
      cache_control: { type: "ephemeral" as const },
    });
    const body3: AnthropicRequest = {
      model: "m",
      max_tokens: 1,
      messages: [
        { role: "user", content: [marked("0"), marked("1"), marked("2")] },
        { role: "assistant", content: [{ type: "text", text: "ok" }] },
        { role: "user", content: [{ type: "text", text: "next" }] },
      ],
      tools: [{ name: "t", input_schema: { type: "object" } }],
      system: "s",
    };
    markPromptCache(body3, all);
    expect(cacheBreakpoints(body3)).toBe(MAX_CACHE_BREAKPOINTS);
    expect(body3.tools?.[0]?.cache_control).toEqual({ type: "ephemeral" });
    expect(body3.system).toBe("s");
  });

  it("counts Anthropic's cached tokens into the whole prompt", () => {
    expect(
      toTokenUsage({
        input_tokens: 50,
        output_tokens: 20,
        cache_read_input_tokens: 1000,
        cache_creation_input_tokens: 200,
      }),
    ).toEqual({
      inputTokens: 1250,
      outputTokens: 20,
      cachedInputTokens: 1000,
      cacheWriteTokens: 200,
    });
    expect(toTokenUsage({ input_tokens: 50, output_tokens: 20 })).toEqual({
      inputTokens: 50,
      outputTokens: 20,
    });
  });
});

describe("tool_choice and stop_reason mapping", () => {
  it("maps every OpenAI tool_choice", () => {
    expect(toAnthropicToolChoice("auto")).toEqual({ type: "auto" });
    expect(toAnthropicToolChoice("required")).toEqual({ type: "any" });
    expect(toAnthropicToolChoice("none")).toEqual({ type: "none" });
    expect(toAnthropicToolChoice({ type: "function", function: { name: "f" } })).toEqual({
      type: "tool",
      name: "f",
    });
    expect(toAnthropicToolChoice(undefined)).toBeUndefined();
  });

  it("maps every documented stop_reason", () => {
    expect(toFinishReason("end_turn")).toBe("stop");
    expect(toFinishReason("stop_sequence")).toBe("stop");
    expect(toFinishReason("pause_turn")).toBe("stop");
    expect(toFinishReason("max_tokens")).toBe("length");
    expect(toFinishReason("tool_use")).toBe("tool_calls");
    expect(toFinishReason("refusal")).toBe("content_filter");
    expect(toFinishReason(null)).toBe("stop");
  });
});

describe("readContent", () => {
  it("ignores block types it does not know and rejects a broken tool_use", () => {
    expect(
      readContent(
        [
          { type: "thinking", thinking: "hmm", signature: "x" },
          { type: "text", text: "a" },
          { type: "text", text: "b" },
        ],
        undefined,
      ),
    ).toEqual({ text: "ab", toolCalls: [] });
    expect(readContent([{ type: "tool_use", id: "t", name: "f" }], undefined)).toBe(
      "content[0] is not a valid tool_use block",
    );
  });

  it("reads a truncated structured answer as length", () => {
    expect(toAssistant({ text: "", toolCalls: [], answer: '{"a":1}' }, "max_tokens")).toEqual({
      message: { role: "assistant", content: '{"a":1}' },
      finishReason: "length",
    });
  });
});
