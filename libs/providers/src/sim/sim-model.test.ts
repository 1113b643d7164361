import type { Message, ToolDefinition } from "@handoff/contracts";
import { Ajv2020 } from "ajv/dist/2020.js";
import { describe, expect, it } from "vitest";
import { estimateTokens } from "../tokens.js";
import type { ChatRequest, ChatStreamEvent } from "../types.js";
import { findExpression, SimModel } from "./sim-model.js";

const calculatorTool: ToolDefinition = {
  type: "function",
  function: {
    name: "calculator",
    description: "Evaluates an arithmetic expression.",
    parameters: { type: "object", properties: { expression: { type: "string" } } },
  },
};
const clockTool: ToolDefinition = {
  type: "function",
  function: { name: "clock", description: "The current time." },
};
const weatherTool: ToolDefinition = {
  type: "function",
  function: { name: "get_weather", description: "Weather by city." },
};

const user = (content: string): Message => ({ role: "user", content });

function sim(latencyMs?: number): SimModel {
  return new SimModel({ model: "sim-test", ...(latencyMs !== undefined ? { latencyMs } : {}) });
}

async function collect(events: AsyncIterable<ChatStreamEvent>): Promise<ChatStreamEvent[]> {
  const out: ChatStreamEvent[] = [];
  for await (const event of events) out.push(event);
  return out;
}

describe("SimModel tool calls", () => {
  it("calls the calculator for arithmetic when it is offered", async () => {
    const result = await sim().chat({
      messages: [user("What is 17 * 23?")],
      tools: [calculatorTool, clockTool],
    });
    expect(result.finishReason).toBe("tool_calls");
    expect(result.message.content).toBeNull();
    expect(result.message.tool_calls).toHaveLength(1);
    const call = result.message.tool_calls?.[0];
    expect(call?.type).toBe("function");
    expect(call?.function.name).toBe("calculator");
    expect(call?.function.arguments).toBe('{"expression":"17 * 23"}');
    expect(call?.id).toMatch(/^call_[0-9a-f]{24}$/);
    expect(result.model).toBe("sim-test");
  });

  it("reports the calculator's result once the tool has answered", async () => {
    const first = await sim().chat({
      messages: [user("What is 17 * 23?")],
      tools: [calculatorTool],
    });
    const call = first.message.tool_calls?.[0];
    if (!call) throw new Error("expected a tool call");
    const second = await sim().chat({
      messages: [
        user("What is 17 * 23?"),
        first.message,
        { role: "tool", tool_call_id: call.id, content: "391" },
      ],
      tools: [calculatorTool],
    });
    expect(second.finishReason).toBe("stop");
    expect(second.message.tool_calls).toBeUndefined();
    expect(second.message.content).toBe("17 * 23 = 391.");
  });

  it("still answers from the tool results when an instruction follows them", async () => {
    // The mesh adds its instructions after the conversation, tool results included.
    const first = await sim().chat({
      messages: [user("What is 17 * 23?")],
      tools: [calculatorTool],
    });
    const call = first.message.tool_calls?.[0];
    if (!call) throw new Error("expected a tool call");
    const second = await sim().chat({
      messages: [
        user("What is 17 * 23?"),
        first.message,
        { role: "tool", tool_call_id: call.id, content: "391" },
        { role: "system", content: "- Routed heavy by rules (confidence 0.90): proof" },
      ],
      tools: [calculatorTool],
    });
    expect(second.message.tool_calls).toBeUndefined();
    expect(second.message.content).toBe("17 * 23 = 391.");
  });

  it("reports a failed tool as a failure", async () => {
    const response = await sim().chat({
      messages: [
        user("What is 1 / 0?"),
        {
          role: "assistant",
          content: null,
          tool_calls: [
            {
              id: "call_a",
              type: "function",
              function: { name: "calculator", arguments: '{"expression":"1 / 0"}' },
            },
          ],
        },
        { role: "tool", tool_call_id: "call_a", content: "error: division by zero" },
      ],
      tools: [calculatorTool],
    });
    expect(response.message.content).toBe("The calculator tool failed (error: division by zero).");
  });

  it("reads the local time from a clock result and other tools' output verbatim", async () => {
    const response = await sim().chat({
      messages: [
        user("what time is it in Asia/Tokyo, and the weather?"),
        {
          role: "assistant",
          content: null,
          tool_calls: [
            { id: "c1", type: "function", function: { name: "clock", arguments: "{}" } },
            { id: "c2", type: "function", function: { name: "get_weather", arguments: "{}" } },
          ],
        },
        { role: "tool", tool_call_id: "c1", content: '{"local":"Friday 09:00"}' },
        { role: "tool", tool_call_id: "c2", content: "sunny" },
      ],
    });
    expect(response.message.content).toBe("It is Friday 09:00. get_weather returned: sunny");
  });

  it("calls the clock with the time zone the question names", async () => {
    const result = await sim().chat({
      messages: [user("what time is it in Asia/Tokyo")],
      tools: [calculatorTool, clockTool],
    });
    expect(result.message.tool_calls?.map((c) => c.function)).toEqual([
      { name: "clock", arguments: '{"timezone":"Asia/Tokyo"}' },
    ]);
  });

  it("calls the clock without a time zone when none is named", async () => {
    const result = await sim().chat({
      messages: [user("What's the time?")],
      tools: [clockTool],
    });
    expect(result.message.tool_calls?.[0]?.function).toEqual({ name: "clock", arguments: "{}" });
  });

  it("calls a client tool whose name matches a word of the question", async () => {
    const result = await sim().chat({
      messages: [user("What is the weather like in Paris?")],
      tools: [calculatorTool, clockTool, weatherTool],
    });
    expect(result.message.tool_calls?.map((c) => c.function.name)).toEqual(["get_weather"]);
  });

  it("answers in text, labelled simulated, when no tools are offered", async () => {
    const result = await sim().chat({ messages: [user("What is 17 * 23?")] });
    expect(result.finishReason).toBe("stop");
    expect(result.message.tool_calls).toBeUndefined();
    expect(result.message.content).toContain("simulated");
    expect(result.message.content).toBe(
      '[simulated sim-test] This is a simulated answer; configure a real provider for a real one.\nQuestion: "What is 17 * 23?"',
    );
  });

  it("answers in text when the offered tools do not fit the question", async () => {
    const result = await sim().chat({
      messages: [user("Tell me a joke")],
      tools: [calculatorTool, clockTool],
    });
    expect(result.finishReason).toBe("stop");
    expect(result.message.content).toContain("simulated");
  });

  it("makes no tool call when tool_choice is none", async () => {
    const result = await sim().chat({
      messages: [user("What is 17 * 23?")],
      tools: [calculatorTool],
      toolChoice: "none",
    });
    expect(result.finishReason).toBe("stop");
    expect(result.message.tool_calls).toBeUndefined();
    expect(result.message.content).toContain("simulated");
  });

  it("calls the tool a named tool_choice forces", async () => {
    const result = await sim().chat({
      messages: [user("What is 17 * 23?")],
      tools: [calculatorTool, clockTool],
      toolChoice: { type: "function", function: { name: "clock" } },
    });
    expect(result.finishReason).toBe("tool_calls");
    expect(result.message.tool_calls?.map((c) => c.function.name)).toEqual(["clock"]);
  });

  it("calls the first tool when a tool is required and none fits", async () => {
    const result = await sim().chat({
      messages: [user("Hello")],
      tools: [clockTool, calculatorTool],
      toolChoice: "required",
    });
    expect(result.message.tool_calls?.map((c) => c.function)).toEqual([
      { name: "clock", arguments: "{}" },
    ]);
  });

  it("puts the findings of system messages in its answer", async () => {
    const result = await sim().chat({
      messages: [
        { role: "system", content: "Context:\n- Tool calculator returned: 391\n- Routed heavy" },
        user("Explain 17 * 23"),
      ],
    });
    expect(result.message.content).toContain(
      "Findings handed up by earlier stages (2):\n- Tool calculator returned: 391\n- Routed heavy",
    );
  });
});

describe("SimModel determinism and usage", () => {
  const request: ChatRequest = {
    messages: [user("What is 17 * 23?")],
    tools: [calculatorTool, clockTool],
  };

  it("gives the same result, tool call id included, to the same request", async () => {
    const a = await sim().chat(request);
    const b = await sim().chat(request);
    expect(b).toEqual(a);
    expect(b.message.tool_calls?.[0]?.id).toBe(a.message.tool_calls?.[0]?.id);
  });

  it("gives a different tool call id to a different question", async () => {
    const a = await sim().chat(request);
    const b = await sim().chat({ ...request, messages: [user("What is 17 * 24?")] });
    expect(b.message.tool_calls?.[0]?.id).not.toBe(a.message.tool_calls?.[0]?.id);
  });

  it("counts tokens from the text, deterministically", async () => {
    const text = await sim().chat({ messages: [user("Hello there")] });
    expect(text.usage.inputTokens).toBe(10);
    expect(text.usage.outputTokens).toBe(estimateTokens(text.message.content ?? ""));
    expect(text.usage.outputTokens).toBeGreaterThan(0);

    const call = await sim().chat(request);
    // The arguments text plus eight tokens of framing per call.
    expect(call.usage.outputTokens).toBe(estimateTokens('{"expression":"17 * 23"}') + 8);
    expect(call.usage.inputTokens).toBeGreaterThan(10);
    expect((await sim().chat(request)).usage).toEqual(call.usage);
  });

  it("cuts the answer at max_tokens and finishes with length", async () => {
    const result = await sim().chat({
      messages: [user("Hello there")],
      params: { max_tokens: 5 },
    });
    expect(result.finishReason).toBe("length");
    expect(result.message.content).toBe("[simulated sim-test]");
    expect(result.message.content).toHaveLength(20);
    expect(result.usage.outputTokens).toBe(5);
  });

  it("leaves an answer within max_tokens whole", async () => {
    const result = await sim().chat({
      messages: [user("Hello there")],
      params: { max_tokens: 1_000 },
    });
    expect(result.finishReason).toBe("stop");
    expect(result.message.content).toContain('Question: "Hello there"');
  });
});

describe("SimModel latency", () => {
  it("takes its configured latency", async () => {
    const started = performance.now();
    await sim(60).chat({ messages: [user("hi")] });
    expect(performance.now() - started).toBeGreaterThanOrEqual(50);
  });

  it("rejects when the signal aborts during the wait", async () => {
    const controller = new AbortController();
    const started = performance.now();
    const pending = sim(5_000).chat({ messages: [user("hi")] }, { signal: controller.signal });
    setTimeout(() => controller.abort(), 10);
    await expect(pending).rejects.toMatchObject({ name: "AbortError" });
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it("rejects at once when the signal is already aborted", async () => {
    const reason = new Error("gone");
    await expect(
      sim().chat({ messages: [user("hi")] }, { signal: AbortSignal.abort(reason) }),
    ).rejects.toBe(reason);
  });
});

describe("SimModel.stream", () => {
  it("streams text deltas that add up to the chat() content, then done", async () => {
    const request: ChatRequest = { messages: [user("Hello there, how are you today?")] };
    const expected = await sim().chat(request);
    const events = await collect(sim().stream(request));
    const deltas = events.filter((e) => e.type === "text").map((e) => e.delta);
    expect(deltas.length).toBeGreaterThan(5);
    expect(deltas.join("")).toBe(expected.message.content);
    const last = events.at(-1);
    expect(last).toEqual({ type: "done", result: expected });
    expect(events.filter((e) => e.type === "done")).toHaveLength(1);
  });

  it("streams a tool call as one event before done", async () => {
    const events = await collect(
      sim().stream({ messages: [user("What is 17 * 23?")], tools: [calculatorTool] }),
    );
    expect(events.map((e) => e.type)).toEqual(["tool_call", "done"]);
    const first = events[0];
    expect(first?.type === "tool_call" ? first.name : undefined).toBe("calculator");
    expect(first?.type === "tool_call" ? first.argumentsDelta : undefined).toBe(
      '{"expression":"17 * 23"}',
    );
  });
});

describe("SimModel identity", () => {
  it("says it is the simulated sim provider", () => {
    const model = sim();
    expect(model.provider).toBe("sim");
    expect(model.simulated).toBe(true);
    expect(model.model).toBe("sim-test");
  });
});

describe("findExpression", () => {
  it.each([
    ["What is 17 * 23?", "17 * 23"],
    ["compute (2 + 3) ^ 2", "(2 + 3) ^ 2"],
    ["what is 6 × 7?", "6 * 7"],
    ["12 ÷ 4 please", "12 / 4"],
    ["Please work out (1+2)*3 for me.", "(1+2)*3"],
    ["what's 2.5 * 4.", "2.5 * 4"],
  ])("finds the expression in %j", (text, expression) => {
    expect(findExpression(text)).toBe(expression);
  });

  it.each([
    "In 2024 we sold many apples.",
    "I have 3 cats and 4 dogs",
    "Hello, how are you?",
    "version 1.2.3",
  ])("finds none in %j", (text) => {
    expect(findExpression(text)).toBeUndefined();
  });

  it.each([
    ["the longest of several", "1 + 2 and then 10 * 20 + 3", "10 * 20 + 3"],
    ["the first of equals", "1 + 2 or 3 + 4", "1 + 2"],
    ["without unmatched parentheses", "((2 + 3) * 4", "(2 + 3) * 4"],
    ["after a sign and a parenthesis", "is -(2 + 3)?", "-(2 + 3)"],
    ["without trailing dots and spaces", "take 7 - 2 . ..", "7 - 2"],
  ])("finds %s", (_what, text, expression) => {
    expect(findExpression(text)).toBe(expression);
  });
});

/** About `bytes` characters of `piece`, repeated. */
function repeatTo(piece: string, bytes: number): string {
  return piece.repeat(Math.ceil(bytes / piece.length)).slice(0, bytes);
}

const MB = 1_000_000;

// Each of these took seconds or more before: a backtracking regular expression over long runs of
// digits and spaces, and parentheses trimmed one at a time. A few seconds is the test's guard.
describe("SimModel on a 1 MB prompt", () => {
  it("finds no expression in a megabyte of digits and spaces, at once", () => {
    expect(findExpression(repeatTo("1 23 456 7.8 ", MB))).toBeUndefined();
  }, 5_000);

  it("finds the expression in a megabyte of digits, operators and parentheses", () => {
    const piece = "(12 + 3) * 4 - 5 / (6 ^ 2) % ";
    const text = `What is ${piece.repeat(Math.ceil(MB / piece.length))}1?`;
    const expression = findExpression(text);
    expect(expression?.length).toBeGreaterThan(MB - 10);
    expect(expression?.startsWith("(12 + 3) * 4")).toBe(true);
  }, 5_000);

  it("balances a megabyte of opening parentheses in one pass", () => {
    const expression = findExpression(`${"(".repeat(MB)}1 + 2 ${"9 ".repeat(MB / 2)}`);
    expect(expression?.startsWith("1 + 2")).toBe(true);
  }, 5_000);

  it("answers a 1 MB prompt with a calculator call, and as text without tools", async () => {
    const prompt = `Compute ${repeatTo("(17 * 23) + 4 ", MB / 2)} and ${repeatTo("1 2 3 ", MB / 2)}`;
    const withTools = await sim().chat({
      messages: [user(prompt)],
      tools: [calculatorTool, clockTool, weatherTool],
    });
    expect(withTools.message.tool_calls?.[0]?.function.name).toBe("calculator");
    const text = await sim().chat({ messages: [user(prompt)] });
    expect(text.finishReason).toBe("stop");
    expect(text.message.content).toContain("simulated");
    const events = await collect(sim().stream({ messages: [user(prompt)] }));
    expect(events.at(-1)?.type).toBe("done");
  }, 5_000);
});

describe("SimModel with a forced tool choice", () => {
  it("fills in the calculator's expression when the calculator is forced", () => {
    const result = sim().respond({
      messages: [user("What is 17 * 23?")],
      tools: [calculatorTool],
      toolChoice: { type: "function", function: { name: "calculator" } },
    });
    expect(result.message.tool_calls?.[0]?.function).toEqual({
      name: "calculator",
      arguments: '{"expression":"17 * 23"}',
    });
  });

  it("fills in the clock's time zone when the clock is forced, even without a time question", () => {
    const result = sim().respond({
      messages: [user("Tell me about Asia/Tokyo please, in Asia/Tokyo")],
      tools: [calculatorTool, clockTool],
      toolChoice: { type: "function", function: { name: "clock" } },
    });
    expect(result.message.tool_calls?.[0]?.function).toEqual({
      name: "clock",
      arguments: '{"timezone":"Asia/Tokyo"}',
    });
  });
});

describe("SimModel response_format", () => {
  const ajv = new Ajv2020({ strict: false, validateFormats: false });
  const schema = {
    type: "object",
    properties: {
      answer: { type: "string" },
      confidence: { type: "number", minimum: 0, maximum: 1 },
      steps: { type: "integer", minimum: 1 },
      correct: { type: "boolean" },
      tags: { type: "array", items: { type: "string" }, minItems: 2 },
      grade: { enum: ["A", "B", "C"] },
      source: {
        type: "object",
        properties: { name: { type: "string" }, year: { type: "integer" } },
        required: ["name", "year"],
        additionalProperties: false,
      },
    },
    required: ["answer", "confidence", "steps", "correct", "tags", "grade", "source"],
    additionalProperties: false,
  };
  const format = {
    type: "json_schema" as const,
    json_schema: { name: "graded", strict: true, schema },
  };

  it("answers json_schema with JSON valid against the schema, the same each time", async () => {
    const request: ChatRequest = {
      messages: [user("Explain photosynthesis")],
      params: { response_format: format },
    };
    const result = await sim().chat(request);
    expect(result.finishReason).toBe("stop");
    const value: unknown = JSON.parse(result.message.content ?? "");
    const validate = ajv.compile(schema);
    expect(validate(value), ajv.errorsText(validate.errors)).toBe(true);
    expect(value).toMatchObject({
      answer: expect.stringContaining('Question: "Explain photosynthesis"'),
      grade: "A",
      tags: ["sim tags", "sim tags 2"],
    });
    expect((await sim().chat(request)).message.content).toBe(result.message.content);
  });

  it("fills a json_schema answer from the tools' results once they have answered", async () => {
    const result = await sim().chat({
      messages: [
        user("What is 17 * 23?"),
        {
          role: "assistant",
          content: null,
          tool_calls: [
            {
              id: "c1",
              type: "function",
              function: { name: "calculator", arguments: '{"expression":"17 * 23"}' },
            },
          ],
        },
        { role: "tool", tool_call_id: "c1", content: "391" },
      ],
      params: {
        response_format: {
          type: "json_schema",
          json_schema: {
            name: "result",
            schema: {
              type: "object",
              properties: { answer: { type: "string" }, value: { type: "integer" } },
              required: ["answer", "value"],
            },
          },
        },
      },
    });
    expect(JSON.parse(result.message.content ?? "")).toEqual({
      answer: "17 * 23 = 391.",
      value: 391,
    });
  });

  it("answers json_object with a JSON object, and streams JSON that adds up to it", async () => {
    const request: ChatRequest = {
      messages: [user("Hello")],
      params: { response_format: { type: "json_object" } },
    };
    const result = await sim().chat(request);
    const value = JSON.parse(result.message.content ?? "") as Record<string, unknown>;
    expect(value).toMatchObject({ simulated: true, answer: expect.stringContaining("Hello") });
    const events = await collect(sim().stream(request));
    const text = events.map((e) => (e.type === "text" ? e.delta : "")).join("");
    expect(text).toBe(result.message.content);
  });

  it("answers in prose for response_format text", async () => {
    const result = await sim().chat({
      messages: [user("Hello")],
      params: { response_format: { type: "text" } },
    });
    expect(result.message.content).toContain("[simulated sim-test]");
    expect(result.message.content).toContain("\n");
  });
});

describe("SimModel parallel tool calls", () => {
  const cityTool = (name: string): ToolDefinition => ({
    type: "function",
    function: {
      name,
      parameters: {
        type: "object",
        properties: {
          city: { type: "string" },
          unit: { type: "string", enum: ["celsius", "fahrenheit"] },
          days: { type: "integer", minimum: 1, maximum: 7 },
        },
        required: ["city", "unit"],
        additionalProperties: false,
      },
    },
  });
  const question = user("What's the weather and the local news in Paris?");

  it("calls every client tool the question mentions, in one turn, with arguments valid against their parameters", async () => {
    const result = await sim().chat({
      messages: [question],
      tools: [calculatorTool, cityTool("get_weather"), cityTool("local_news"), clockTool],
    });
    expect(result.finishReason).toBe("tool_calls");
    const calls = result.message.tool_calls ?? [];
    expect(calls.map((c) => c.function)).toEqual([
      { name: "get_weather", arguments: '{"city":"Paris","unit":"celsius"}' },
      { name: "local_news", arguments: '{"city":"Paris","unit":"celsius"}' },
    ]);
    expect(new Set(calls.map((c) => c.id)).size).toBe(2);
    const validate = new Ajv2020({ strict: false }).compile(
      cityTool("x").function.parameters as object,
    );
    for (const call of calls) expect(validate(JSON.parse(call.function.arguments))).toBe(true);
  });

  it("adds the calculator and the clock to the turn when the question asks for them too", async () => {
    const result = await sim().chat({
      messages: [user("What is 6 * 7, what time is it in Europe/Paris, and the weather there?")],
      tools: [calculatorTool, clockTool, weatherTool],
    });
    expect(result.message.tool_calls?.map((c) => c.function)).toEqual([
      { name: "calculator", arguments: '{"expression":"6 * 7"}' },
      { name: "clock", arguments: '{"timezone":"Europe/Paris"}' },
      { name: "get_weather", arguments: "{}" },
    ]);
  });

  it("reads a camelCase or kebab-case tool name's words, as SDKs name tools", async () => {
    const result = await sim().chat({
      messages: [question],
      tools: [cityTool("getWeather"), cityTool("local-news"), cityTool("stockPrice")],
    });
    expect(result.message.tool_calls?.map((c) => c.function.name)).toEqual([
      "getWeather",
      "local-news",
    ]);
  });

  it("makes one call only with parallel_tool_calls: false", async () => {
    const result = await sim().chat({
      messages: [question],
      tools: [cityTool("get_weather"), cityTool("local_news")],
      params: { parallel_tool_calls: false },
    });
    expect(result.message.tool_calls?.map((c) => c.function.name)).toEqual(["get_weather"]);
  });

  it("calls only the tool a named tool_choice forces, and streams each call of a turn", async () => {
    const forced = await sim().chat({
      messages: [question],
      tools: [cityTool("get_weather"), cityTool("local_news")],
      toolChoice: { type: "function", function: { name: "local_news" } },
    });
    expect(forced.message.tool_calls?.map((c) => c.function.name)).toEqual(["local_news"]);
    const events = await collect(
      sim().stream({ messages: [question], tools: [cityTool("get_weather"), cityTool("news")] }),
    );
    expect(events.filter((e) => e.type === "tool_call").map((e) => e.index)).toEqual([0, 1]);
  });
});

describe("SimModel logprobs", () => {
  it("gives each word token a log-probability, with top_logprobs alternatives, only when asked", async () => {
    const plain = await sim().chat({ messages: [user("Hello there")] });
    expect(plain.choiceLogprobs).toBeUndefined();
    const result = await sim().chat({
      messages: [user("Hello there")],
      params: { logprobs: true, top_logprobs: 3 },
    });
    const content = result.choiceLogprobs?.content ?? [];
    expect(content.map((t) => t.token).join("")).toBe(result.message.content);
    expect(result.choiceLogprobs?.refusal).toBeNull();
    for (const token of content) {
      expect(token.logprob).toBeLessThanOrEqual(0);
      expect(token.bytes).toEqual([...Buffer.from(token.token, "utf8")]);
      expect(token.top_logprobs).toHaveLength(3);
      expect(token.top_logprobs[0]).toEqual({
        token: token.token,
        logprob: token.logprob,
        bytes: token.bytes,
      });
      const logprobs = token.top_logprobs.map((t) => t.logprob);
      expect([...logprobs].sort((a, b) => b - a)).toEqual(logprobs);
      expect(new Set(token.top_logprobs.map((t) => t.token)).size).toBe(3);
    }
    const again = await sim().chat({
      messages: [user("Hello there")],
      params: { logprobs: true },
    });
    expect(again.choiceLogprobs?.content?.map((t) => t.logprob)).toEqual(
      content.map((t) => t.logprob),
    );
    expect(again.choiceLogprobs?.content?.[0]?.top_logprobs).toEqual([]);
  });
});
