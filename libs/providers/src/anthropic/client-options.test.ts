import { Deployment } from "@handoff/config";
import type { ToolDefinition } from "@handoff/contracts";
import { anthropicModelReply, UpstreamServer } from "@handoff/testkit";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { ChatRequest, ChatStreamEvent } from "../types.js";
import { AnthropicModel } from "./adapter.js";

/**
 * OpenAI's `parallel_tool_calls` on Anthropic's wire (`disable_parallel_tool_use` in
 * `tool_choice`), against the testkit's upstream speaking the Messages API, which records every
 * request it gets.
 */

const PATH = "/v1/messages";
let upstream: UpstreamServer;
let model: AnthropicModel;

beforeAll(async () => {
  upstream = await UpstreamServer.start(anthropicModelReply);
  model = new AnthropicModel(
    Deployment.parse({
      provider: "anthropic",
      model: "claude-haiku-4-5",
      base_url: upstream.url,
      api_key_env: "KEY",
    }),
    { env: { KEY: "sk-ant-test" } },
  );
});
afterAll(async () => {
  await upstream?.close();
});
beforeEach(() => {
  upstream.requests.length = 0;
});

const weather: ToolDefinition = {
  type: "function",
  function: {
    name: "get_weather",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};
const request: ChatRequest = {
  messages: [{ role: "user", content: "What's the weather in Paris?" }],
  tools: [weather],
};

async function drain(events: AsyncIterable<ChatStreamEvent>): Promise<void> {
  for await (const _ of events);
}

describe("parallel_tool_calls on Anthropic's wire", () => {
  it("false disables parallel tool use in tool_choice, whichever choice it is", async () => {
    const off = { parallel_tool_calls: false };
    const result = await model.chat({ ...request, params: off });
    await drain(model.stream({ ...request, toolChoice: "required", params: off }));
    await model.chat({
      ...request,
      toolChoice: { type: "function", function: { name: "get_weather" } },
      params: off,
    });
    const [auto, required, named] = upstream.received(PATH);
    expect(auto?.body.tool_choice).toEqual({ type: "auto", disable_parallel_tool_use: true });
    expect(required?.body.tool_choice).toEqual({ type: "any", disable_parallel_tool_use: true });
    expect(required?.body.stream).toBe(true);
    expect(named?.body.tool_choice).toEqual({
      type: "tool",
      name: "get_weather",
      disable_parallel_tool_use: true,
    });
    // The upstream's answer still reads back as the tool call it is.
    expect(result.message.tool_calls?.[0]?.function.name).toBe("get_weather");
  });

  it("true, or unset, leaves Anthropic's default; none and no tools carry no flag", async () => {
    await model.chat({ ...request, params: { parallel_tool_calls: true } });
    await model.chat(request);
    await model.chat({ ...request, toolChoice: "none", params: { parallel_tool_calls: false } });
    await model.chat({
      messages: request.messages,
      params: { parallel_tool_calls: false, logprobs: true, top_logprobs: 2 },
    });
    const [on, unset, none, toolless] = upstream.received(PATH);
    expect(on?.body).not.toHaveProperty("tool_choice");
    expect(unset?.body).not.toHaveProperty("tool_choice");
    expect(none?.body.tool_choice).toEqual({ type: "none" });
    expect(toolless?.body).not.toHaveProperty("tool_choice");
    // Anthropic has no log-probabilities: nothing of them goes on its wire.
    expect(toolless?.body).not.toHaveProperty("logprobs");
    expect(toolless?.body).not.toHaveProperty("top_logprobs");
  });
});
