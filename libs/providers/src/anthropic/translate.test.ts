import type { Message, ToolDefinition } from "@handoff/contracts";
import { describe, expect, it } from "vitest";
import {
  DEFAULT_MAX_TOKENS,
  JSON_OBJECT_INSTRUCTION,
  readContent,
  toAnthropicMessages,
  toAnthropicRequest,
  toAnthropicToolChoice,
  toAssistant,
  toFinishReason,
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
