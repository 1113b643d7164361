import { once } from "node:events";
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type ServerResponse,
} from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { Deployment } from "@handoff/config";
import { HandoffError, type Message, type ToolDefinition } from "@handoff/contracts";
import { afterEach, describe, expect, it } from "vitest";
import { providerDetails } from "../errors.js";
import type { ChatRequest, ChatStreamEvent } from "../types.js";
import { AnthropicModel, messagesUrl } from "./adapter.js";

// A local HTTP server that replays Anthropic's documented wire format, and records what it got.

interface Received {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
}

type Handler = (req: Received, res: ServerResponse) => void | Promise<void>;

interface TestServer {
  url: string;
  received: Received[];
}

const servers: ReturnType<typeof createServer>[] = [];

afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    server.close();
  }
});

async function serve(handler: Handler): Promise<TestServer> {
  const received: Received[] = [];
  const server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    const entry: Received = {
      method: req.method ?? "",
      path: req.url ?? "",
      headers: req.headers,
      body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
    };
    received.push(entry);
    await handler(entry, res);
  });
  servers.push(server);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, received };
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Handler {
  return (_req, res) => {
    res.writeHead(status, { "content-type": "application/json", ...headers });
    res.end(JSON.stringify(body));
  };
}

/** Writes an SSE body in small pieces, so events and lines arrive split across chunks. */
function sse(body: string, options: { pieceSize?: number; crlf?: boolean } = {}): Handler {
  return async (_req, res) => {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    const text = options.crlf ? body.replace(/\n/g, "\r\n") : body;
    const size = options.pieceSize ?? text.length;
    for (let i = 0; i < text.length; i += size) {
      res.write(text.slice(i, i + size));
      if (options.pieceSize) await sleep(1);
    }
    res.end();
  };
}

/** One SSE event as Anthropic sends it: the event name and the same type inside the data. */
function event(data: { type: string } & Record<string, unknown>): string {
  return `event: ${data.type}\ndata: ${JSON.stringify(data)}\n\n`;
}

const KEY_ENV = "TEST_ANTHROPIC_KEY";
const env = { [KEY_ENV]: "sk-ant-test-123" };

function model(url: string, extra: Record<string, unknown> = {}): AnthropicModel {
  const deployment = Deployment.parse({
    id: "claude-test",
    provider: "anthropic",
    model: "claude-sonnet-4-5",
    base_url: url,
    api_key_env: KEY_ENV,
    ...extra,
  });
  return new AnthropicModel(deployment, { env });
}

async function collect(
  events: AsyncIterable<ChatStreamEvent>,
): Promise<{ events: ChatStreamEvent[]; error?: unknown }> {
  const out: ChatStreamEvent[] = [];
  try {
    for await (const e of events) out.push(e);
  } catch (error) {
    return { events: out, error };
  }
  return { events: out };
}

function failureOf(error: unknown) {
  expect(error).toBeInstanceOf(HandoffError);
  const handoff = error as HandoffError;
  return {
    code: handoff.code,
    retryable: handoff.retryable,
    ...providerDetails(error),
  };
}

const weatherTool: ToolDefinition = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Get the current weather in a given location",
    parameters: {
      type: "object",
      properties: { location: { type: "string" }, unit: { type: "string" } },
      required: ["location"],
    },
  },
};
const timeTool: ToolDefinition = {
  type: "function",
  function: { name: "get_time", description: "The current time." },
};

const user = (content: string): Message => ({ role: "user", content });

// A non-streamed answer shaped like the Messages API documentation's example.
const plainAnswer = {
  id: "msg_013Zva2CMHLNnXjNJJKqJ2EF",
  type: "message",
  role: "assistant",
  model: "claude-sonnet-4-5-20250929",
  content: [{ type: "text", text: "Hi! My name is Claude." }],
  stop_reason: "end_turn",
  stop_sequence: null,
  usage: { input_tokens: 2095, output_tokens: 503 },
};

describe("AnthropicModel requests", () => {
  it("sends the documented request: headers, top-level system, alternating turns, tools", async () => {
    const server = await serve(json(200, plainAnswer));
    const m = model(`${server.url}/`, { headers: { "anthropic-beta": "test-beta-2025" } });
    const request: ChatRequest = {
      messages: [
        { role: "system", content: "You are a weather bot." },
        { role: "developer", content: "Use Celsius." },
        user("What is the weather and time in Paris?"),
        {
          role: "assistant",
          content: "Let me check.",
          tool_calls: [
            {
              id: "toolu_01A",
              type: "function",
              function: { name: "get_weather", arguments: '{"location":"Paris"}' },
            },
            { id: "toolu_01B", type: "function", function: { name: "get_time", arguments: "{}" } },
          ],
        },
        { role: "tool", tool_call_id: "toolu_01A", content: "15 degrees, cloudy" },
        { role: "tool", tool_call_id: "toolu_01B", content: "14:05" },
        user("Thanks. And tomorrow?"),
      ],
      tools: [weatherTool, timeTool],
      toolChoice: "required",
      params: { max_tokens: 512, stop: ["\n\nHuman:"], temperature: 0.2 },
    };

    await m.chat(request);

    expect(server.received).toHaveLength(1);
    const got = server.received[0];
    expect(got?.method).toBe("POST");
    expect(got?.path).toBe("/v1/messages");
    expect(got?.headers["x-api-key"]).toBe("sk-ant-test-123");
    expect(got?.headers["anthropic-version"]).toBe("2023-06-01");
    expect(got?.headers["anthropic-beta"]).toBe("test-beta-2025");
    expect(got?.headers["content-type"]).toBe("application/json");
    expect(got?.body).toEqual({
      model: "claude-sonnet-4-5",
      max_tokens: 512,
      // The system prompt and the last tool carry the default prompt-cache breakpoints.
      system: [
        {
          type: "text",
          text: "You are a weather bot.\n\nUse Celsius.",
          cache_control: { type: "ephemeral" },
        },
      ],
      messages: [
        {
          role: "user",
          content: [{ type: "text", text: "What is the weather and time in Paris?" }],
        },
        {
          role: "assistant",
          content: [
            { type: "text", text: "Let me check." },
            {
              type: "tool_use",
              id: "toolu_01A",
              name: "get_weather",
              input: { location: "Paris" },
            },
            { type: "tool_use", id: "toolu_01B", name: "get_time", input: {} },
          ],
        },
        {
          // The two tool messages and the user's follow-up make one user turn, results first.
          role: "user",
          content: [
            { type: "tool_result", tool_use_id: "toolu_01A", content: "15 degrees, cloudy" },
            { type: "tool_result", tool_use_id: "toolu_01B", content: "14:05" },
            { type: "text", text: "Thanks. And tomorrow?" },
          ],
        },
      ],
      tools: [
        {
          name: "get_weather",
          description: "Get the current weather in a given location",
          input_schema: weatherTool.function.parameters,
        },
        {
          name: "get_time",
          description: "The current time.",
          input_schema: { type: "object", properties: {} },
          cache_control: { type: "ephemeral" },
        },
      ],
      tool_choice: { type: "any" },
      temperature: 0.2,
      stop_sequences: ["\n\nHuman:"],
    });
  });

  it("maps a named tool_choice and tool_choice none", async () => {
    const server = await serve(json(200, plainAnswer));
    const m = model(server.url);
    await m.chat({
      messages: [user("hi")],
      tools: [weatherTool],
      toolChoice: { type: "function", function: { name: "get_weather" } },
    });
    await m.chat({ messages: [user("hi")], tools: [weatherTool], toolChoice: "none" });
    expect(server.received.map((r) => r.body.tool_choice)).toEqual([
      { type: "tool", name: "get_weather" },
      { type: "none" },
    ]);
  });
});

describe("AnthropicModel.chat answers", () => {
  it("reads a plain answer", async () => {
    const server = await serve(json(200, plainAnswer));
    const result = await model(server.url).chat({ messages: [user("Hello, Claude")] });
    expect(result).toEqual({
      message: { role: "assistant", content: "Hi! My name is Claude." },
      finishReason: "stop",
      usage: { inputTokens: 2095, outputTokens: 503 },
      model: "claude-sonnet-4-5-20250929",
    });
    expect(server.received[0]?.body).toEqual({
      model: "claude-sonnet-4-5",
      max_tokens: 4096,
      messages: [{ role: "user", content: [{ type: "text", text: "Hello, Claude" }] }],
    });
  });

  it("maps tool_use blocks to tool_calls", async () => {
    const server = await serve(
      json(200, {
        id: "msg_01Aq9w938a90dw8q",
        type: "message",
        role: "assistant",
        model: "claude-sonnet-4-5-20250929",
        content: [
          { type: "text", text: "I'll check the current weather in San Francisco for you." },
          {
            type: "tool_use",
            id: "toolu_01A09q90qw90lq917835lq9",
            name: "get_weather",
            input: { location: "San Francisco, CA", unit: "celsius" },
          },
        ],
        stop_reason: "tool_use",
        stop_sequence: null,
        usage: { input_tokens: 384, output_tokens: 92 },
      }),
    );
    const result = await model(server.url).chat({
      messages: [user("What is the weather in San Francisco?")],
      tools: [weatherTool],
    });
    expect(result).toEqual({
      message: {
        role: "assistant",
        content: "I'll check the current weather in San Francisco for you.",
        tool_calls: [
          {
            id: "toolu_01A09q90qw90lq917835lq9",
            type: "function",
            function: {
              name: "get_weather",
              arguments: '{"location":"San Francisco, CA","unit":"celsius"}',
            },
          },
        ],
      },
      finishReason: "tool_calls",
      usage: { inputTokens: 384, outputTokens: 92 },
      model: "claude-sonnet-4-5-20250929",
    });
  });

  it("maps max_tokens and refusal stop reasons, and null content when there is no text", async () => {
    const server = await serve((req, res) => {
      const refusal = (req.body.messages as unknown[]).length > 1;
      json(200, {
        ...plainAnswer,
        content: refusal ? [] : [{ type: "text", text: "Once upon a" }],
        stop_reason: refusal ? "refusal" : "max_tokens",
      })(req, res);
    });
    const m = model(server.url);
    const cut = await m.chat({ messages: [user("story")], params: { max_tokens: 3 } });
    expect(cut.finishReason).toBe("length");
    expect(cut.message.content).toBe("Once upon a");
    const refused = await m.chat({
      messages: [user("a"), { role: "assistant", content: "b" }, user("c")],
    });
    expect(refused.finishReason).toBe("content_filter");
    expect(refused.message).toEqual({ role: "assistant", content: null });
  });

  it("emulates response_format json_schema with a forced tool and reads its input as the answer", async () => {
    const schema = {
      type: "object",
      properties: { city: { type: "string" }, temperature_c: { type: "number" } },
      required: ["city", "temperature_c"],
    };
    const server = await serve(
      json(200, {
        ...plainAnswer,
        content: [
          {
            type: "tool_use",
            id: "toolu_01Json",
            name: "weather_report",
            input: { city: "Paris", temperature_c: 15 },
          },
        ],
        stop_reason: "tool_use",
        usage: { input_tokens: 120, output_tokens: 30 },
      }),
    );
    const result = await model(server.url).chat({
      messages: [user("Weather in Paris as JSON")],
      params: {
        response_format: {
          type: "json_schema",
          json_schema: { name: "weather_report", description: "A weather report.", schema },
        },
      },
    });

    expect(server.received[0]?.body.tools).toEqual([
      {
        name: "weather_report",
        description: "A weather report.",
        input_schema: schema,
        cache_control: { type: "ephemeral" },
      },
    ]);
    expect(server.received[0]?.body.tool_choice).toEqual({ type: "tool", name: "weather_report" });
    expect(result).toEqual({
      message: { role: "assistant", content: '{"city":"Paris","temperature_c":15}' },
      finishReason: "stop",
      usage: { inputTokens: 120, outputTokens: 30 },
      model: "claude-sonnet-4-5-20250929",
    });
  });

  it("treats a 2xx with an unexpected shape as malformed", async () => {
    const server = await serve(json(200, { id: "msg_1", content: "not blocks" }));
    const error = await model(server.url)
      .chat({ messages: [user("hi")] })
      .catch((e: unknown) => e);
    expect(failureOf(error)).toEqual({
      code: "HANDOFF_ERR_PROVIDER",
      retryable: true,
      failure: "malformed",
      deployment: "claude-test",
    });
  });

  it("treats a 2xx body that is not JSON as malformed", async () => {
    const server = await serve((_req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end("<html>gateway</html>");
    });
    const error = await model(server.url)
      .chat({ messages: [user("hi")] })
      .catch((e: unknown) => e);
    expect(failureOf(error).failure).toBe("malformed");
  });
});

describe("AnthropicModel prompt caching", () => {
  const EPHEMERAL = { type: "ephemeral" };

  /** A conversation with history: a system prompt, a tool round, and a new question. */
  const conversation: Message[] = [
    { role: "system", content: "You are a weather bot." },
    user("What is the weather in Paris?"),
    {
      role: "assistant",
      content: null,
      tool_calls: [
        {
          id: "toolu_01A",
          type: "function",
          function: { name: "get_weather", arguments: '{"location":"Paris"}' },
        },
      ],
    },
    { role: "tool", tool_call_id: "toolu_01A", content: "15 degrees, cloudy" },
    { role: "assistant", content: "It is 15 degrees and cloudy in Paris." },
    user("And in Lyon?"),
  ];

  /** Every block of a request body that carries `cache_control`, by where it is. */
  function breakpoints(body: Record<string, unknown>): string[] {
    const found: string[] = [];
    const visit = (where: string, blocks: unknown) => {
      if (!Array.isArray(blocks)) return;
      blocks.forEach((block: { cache_control?: unknown }, i) => {
        if (block.cache_control !== undefined) {
          expect(block.cache_control).toEqual(EPHEMERAL);
          found.push(`${where}[${i}]`);
        }
      });
    };
    visit("tools", body.tools);
    visit("system", body.system);
    (body.messages as Array<{ content: unknown }>).forEach((m, i) => {
      visit(`messages[${i}].content`, m.content);
    });
    return found;
  }

  it("marks the last tool and the system prompt by default, not the conversation", async () => {
    const server = await serve(json(200, plainAnswer));
    await model(server.url).chat({ messages: conversation, tools: [weatherTool, timeTool] });
    const body = server.received[0]?.body ?? {};
    expect(breakpoints(body)).toEqual(["tools[1]", "system[0]"]);
    expect(body.system).toEqual([
      { type: "text", text: "You are a weather bot.", cache_control: EPHEMERAL },
    ]);
  });

  it("with prompt_cache.conversation, marks the last block before the final user turn too", async () => {
    const server = await serve(json(200, plainAnswer));
    const m = model(server.url, { prompt_cache: { conversation: true } });
    await m.chat({ messages: conversation, tools: [weatherTool, timeTool] });
    const body = server.received[0]?.body ?? {};
    const messages = body.messages as Array<{ role: string; content: unknown[] }>;
    // user, assistant (tool_use), user (tool_result), assistant (text), user: the history ends
    // with the assistant's answer, whose last block carries the breakpoint.
    expect(messages.map((t) => t.role)).toEqual(["user", "assistant", "user", "assistant", "user"]);
    expect(messages[3]?.content.at(-1)).toEqual({
      type: "text",
      text: "It is 15 degrees and cloudy in Paris.",
      cache_control: EPHEMERAL,
    });
    expect(breakpoints(body)).toEqual(["tools[1]", "system[0]", "messages[3].content[0]"]);
    expect(breakpoints(body).length).toBeLessThanOrEqual(4);
  });

  it("marks a tool_use block when the history ends in a tool call, as the tool loop's does", async () => {
    const server = await serve(json(200, plainAnswer));
    const m = model(server.url, { prompt_cache: { conversation: true } });
    await m.chat({ messages: conversation.slice(0, 4), tools: [weatherTool] });
    const messages = server.received[0]?.body.messages as Array<{ content: unknown[] }>;
    expect(messages[1]?.content.at(-1)).toMatchObject({
      type: "tool_use",
      id: "toolu_01A",
      cache_control: EPHEMERAL,
    });
  });

  it("marks nothing for a single question without system prompt or tools", async () => {
    const server = await serve(json(200, plainAnswer));
    await model(server.url, { prompt_cache: { conversation: true } }).chat({
      messages: [user("Hello, Claude")],
    });
    expect(server.received[0]?.body).toEqual({
      model: "claude-sonnet-4-5",
      max_tokens: 4096,
      messages: [{ role: "user", content: [{ type: "text", text: "Hello, Claude" }] }],
    });
  });

  it("marks nothing with prompt_cache: false, and only what an object names", async () => {
    const server = await serve(json(200, plainAnswer));
    await model(server.url, { prompt_cache: false }).chat({
      messages: conversation,
      tools: [weatherTool],
    });
    const off = server.received[0]?.body ?? {};
    expect(breakpoints(off)).toEqual([]);
    expect(off.system).toBe("You are a weather bot.");
    await model(server.url, { prompt_cache: { tools: false } }).chat({
      messages: conversation,
      tools: [weatherTool],
    });
    expect(breakpoints(server.received[1]?.body ?? {})).toEqual(["system[0]"]);
  });

  it("streams with the same breakpoints", async () => {
    const server = await serve(sse(TEXT_STREAM));
    await collect(model(server.url).stream({ messages: conversation, tools: [weatherTool] }));
    expect(breakpoints(server.received[0]?.body ?? {})).toEqual(["tools[0]", "system[0]"]);
  });

  it("keeps a system message after the conversation in the last user turn, so the prefix stays", async () => {
    // What the mesh adds (the heavy tier's context, the tool loop's instruction) comes after the
    // client's messages; two jobs with different additions share everything before them.
    const server = await serve(json(200, plainAnswer));
    const m = model(server.url, { prompt_cache: { conversation: true } });
    for (const note of ["- Routed heavy by rules", "- Tool calculator returned: 391"]) {
      await m.chat({
        messages: [...conversation, { role: "system", content: note }],
        tools: [weatherTool],
      });
    }
    const [first, second] = server.received.map((r) => r.body);
    expect(first?.system).toEqual(second?.system);
    expect(first?.tools).toEqual(second?.tools);
    const turns = (body: Record<string, unknown> | undefined) =>
      body?.messages as Array<{ role: string; content: Array<{ type: string; text?: string }> }>;
    expect(JSON.stringify(turns(first)?.slice(0, -1))).toBe(
      JSON.stringify(turns(second)?.slice(0, -1)),
    );
    expect(turns(first)?.at(-1)).toEqual({
      role: "user",
      content: [
        { type: "text", text: "And in Lyon?" },
        { type: "text", text: "- Routed heavy by rules" },
      ],
    });
    expect(first?.system).toEqual([
      { type: "text", text: "You are a weather bot.", cache_control: EPHEMERAL },
    ]);
  });

  it("reads the cache counts of a recorded answer into a whole-prompt input count", async () => {
    // Anthropic's input_tokens leave out the cached tokens; the mesh counts the whole prompt.
    const server = await serve(
      json(200, {
        ...plainAnswer,
        usage: {
          input_tokens: 21,
          cache_creation_input_tokens: 188,
          cache_read_input_tokens: 1800,
          cache_creation: { ephemeral_5m_input_tokens: 188, ephemeral_1h_input_tokens: 0 },
          output_tokens: 393,
          service_tier: "standard",
        },
      }),
    );
    const result = await model(server.url).chat({ messages: [user("Hello, Claude")] });
    expect(result.usage).toEqual({
      inputTokens: 21 + 188 + 1800,
      outputTokens: 393,
      cachedInputTokens: 1800,
      cacheWriteTokens: 188,
    });
  });

  it("reads null cache counts as none", async () => {
    const server = await serve(
      json(200, {
        ...plainAnswer,
        usage: {
          input_tokens: 2095,
          cache_creation_input_tokens: null,
          cache_read_input_tokens: null,
          output_tokens: 503,
        },
      }),
    );
    const result = await model(server.url).chat({ messages: [user("Hello, Claude")] });
    expect(result.usage).toEqual({ inputTokens: 2095, outputTokens: 503 });
  });

  /** A text stream whose message_start reports cache counts; message_delta as given. */
  function cachedStream(deltaUsage: Record<string, unknown>): string {
    return (
      event({
        type: "message_start",
        message: {
          id: "msg_cache",
          type: "message",
          role: "assistant",
          model: "claude-sonnet-4-5-20250929",
          content: [],
          stop_reason: null,
          stop_sequence: null,
          usage: {
            input_tokens: 12,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 2048,
            cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 },
            output_tokens: 1,
            service_tier: "standard",
          },
        },
      }) +
      event({ type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }) +
      event({
        type: "content_block_delta",
        index: 0,
        delta: { type: "text_delta", text: "Hello!" },
      }) +
      event({ type: "content_block_stop", index: 0 }) +
      event({
        type: "message_delta",
        delta: { stop_reason: "end_turn", stop_sequence: null },
        usage: deltaUsage,
      }) +
      event({ type: "message_stop" })
    );
  }

  it("streams: keeps message_start's cache counts when message_delta gives the output only", async () => {
    const server = await serve(sse(cachedStream({ output_tokens: 9 })));
    const { events, error } = await collect(model(server.url).stream({ messages: [user("Hi")] }));
    expect(error).toBeUndefined();
    const done = events.at(-1);
    expect(done?.type === "done" ? done.result.usage : undefined).toEqual({
      inputTokens: 12 + 2048,
      outputTokens: 9,
      cachedInputTokens: 2048,
    });
  });

  it("streams: takes message_delta's cumulative counts, cache counts included", async () => {
    const server = await serve(
      sse(
        cachedStream({
          input_tokens: 12,
          cache_creation_input_tokens: 300,
          cache_read_input_tokens: 2048,
          output_tokens: 9,
        }),
        { pieceSize: 11 },
      ),
    );
    const { events, error } = await collect(model(server.url).stream({ messages: [user("Hi")] }));
    expect(error).toBeUndefined();
    const done = events.at(-1);
    expect(done?.type === "done" ? done.result.usage : undefined).toEqual({
      inputTokens: 12 + 300 + 2048,
      outputTokens: 9,
      cachedInputTokens: 2048,
      cacheWriteTokens: 300,
    });
  });
});

describe("AnthropicModel HTTP errors", () => {
  const cases: {
    name: string;
    status: number;
    headers: Record<string, string>;
    error: { type: string; message: string };
    expected: Record<string, unknown>;
  }[] = [
    {
      name: "429 with retry-after is a retryable rate_limit",
      status: 429,
      headers: { "retry-after": "7" },
      error: {
        type: "rate_limit_error",
        message: "Number of request tokens has exceeded your rate limit.",
      },
      expected: {
        code: "HANDOFF_ERR_PROVIDER",
        retryable: true,
        failure: "rate_limit",
        retryAfterMs: 7000,
      },
    },
    {
      name: "529 is a retryable overloaded",
      status: 529,
      headers: {},
      error: { type: "overloaded_error", message: "Overloaded" },
      expected: { code: "HANDOFF_ERR_PROVIDER", retryable: true, failure: "overloaded" },
    },
    {
      name: "500 is a retryable server failure",
      status: 500,
      headers: {},
      error: { type: "api_error", message: "Internal server error" },
      expected: { code: "HANDOFF_ERR_PROVIDER", retryable: true, failure: "server" },
    },
    {
      name: "400 prompt is too long is a non-retryable context_length",
      status: 400,
      headers: {},
      error: {
        type: "invalid_request_error",
        message: "prompt is too long: 214315 tokens > 200000 maximum",
      },
      expected: {
        code: "HANDOFF_ERR_PROVIDER_REJECTED",
        retryable: false,
        failure: "context_length",
      },
    },
    {
      name: "401 is auth",
      status: 401,
      headers: {},
      error: { type: "authentication_error", message: "invalid x-api-key" },
      expected: { code: "HANDOFF_ERR_PROVIDER_REJECTED", retryable: false, failure: "auth" },
    },
  ];

  for (const c of cases) {
    it(c.name, async () => {
      const server = await serve(
        json(
          c.status,
          { type: "error", error: c.error, request_id: "req_011CSHoEeqs5C35K2UUqR7Fy" },
          c.headers,
        ),
      );
      const error = await model(server.url)
        .chat({ messages: [user("hi")] })
        .catch((e: unknown) => e);
      expect(failureOf(error)).toEqual({
        ...c.expected,
        deployment: "claude-test",
        status: c.status,
      });
      const message = (error as Error).message;
      expect(message).toContain("claude-test");
      expect(message).toContain(c.error.message);
      expect(message).toContain(c.error.type);
    });
  }

  it("classifies an HTTP error of a streamed call the same way", async () => {
    const server = await serve(
      json(529, { type: "error", error: { type: "overloaded_error", message: "Overloaded" } }),
    );
    const { events, error } = await collect(model(server.url).stream({ messages: [user("hi")] }));
    expect(events).toEqual([]);
    expect(failureOf(error)).toEqual({
      code: "HANDOFF_ERR_PROVIDER",
      retryable: true,
      failure: "overloaded",
      deployment: "claude-test",
      status: 529,
    });
  });
});

// The streaming examples of Anthropic's documentation, replayed.

const TEXT_STREAM =
  event({
    type: "message_start",
    message: {
      id: "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
      type: "message",
      role: "assistant",
      content: [],
      model: "claude-sonnet-4-5-20250929",
      stop_reason: null,
      stop_sequence: null,
      usage: { input_tokens: 25, output_tokens: 1 },
    },
  }) +
  event({ type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }) +
  event({ type: "ping" }) +
  event({
    type: "content_block_delta",
    index: 0,
    delta: { type: "text_delta", text: "Hello" },
  }) +
  event({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "!" } }) +
  event({ type: "content_block_stop", index: 0 }) +
  event({
    type: "message_delta",
    delta: { stop_reason: "end_turn", stop_sequence: null },
    usage: { output_tokens: 15 },
  }) +
  event({ type: "message_stop" });

const TEXT_RESULT: ChatStreamEvent = {
  type: "done",
  result: {
    message: { role: "assistant", content: "Hello!" },
    finishReason: "stop",
    usage: { inputTokens: 25, outputTokens: 15 },
    model: "claude-sonnet-4-5-20250929",
  },
};

function toolStream(): string {
  const fragments = ["", '{"location":', ' "San Fra', 'ncisco, CA"', ', "unit": "fah', 'renheit"}'];
  return (
    event({
      type: "message_start",
      message: {
        id: "msg_014p7gG3wDgGV9EUtLvnow3U",
        type: "message",
        role: "assistant",
        model: "claude-sonnet-4-5-20250929",
        stop_sequence: null,
        usage: { input_tokens: 472, output_tokens: 2 },
        content: [],
        stop_reason: null,
      },
    }) +
    event({ type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }) +
    event({ type: "ping" }) +
    event({
      type: "content_block_delta",
      index: 0,
      delta: { type: "text_delta", text: "Okay, let's check the weather" },
    }) +
    event({
      type: "content_block_delta",
      index: 0,
      delta: { type: "text_delta", text: " for San Francisco, CA:" },
    }) +
    event({ type: "content_block_stop", index: 0 }) +
    event({
      type: "content_block_start",
      index: 1,
      content_block: {
        type: "tool_use",
        id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        name: "get_weather",
        input: {},
      },
    }) +
    fragments
      .map((partial_json) =>
        event({
          type: "content_block_delta",
          index: 1,
          delta: { type: "input_json_delta", partial_json },
        }),
      )
      .join("") +
    event({ type: "content_block_stop", index: 1 }) +
    // A second call, to a tool without arguments: no input_json_delta carries anything.
    event({
      type: "content_block_start",
      index: 2,
      content_block: { type: "tool_use", id: "toolu_02Time", name: "get_time", input: {} },
    }) +
    event({
      type: "content_block_delta",
      index: 2,
      delta: { type: "input_json_delta", partial_json: "" },
    }) +
    event({ type: "content_block_stop", index: 2 }) +
    event({
      type: "message_delta",
      delta: { stop_reason: "tool_use", stop_sequence: null },
      usage: { output_tokens: 89 },
    }) +
    event({ type: "message_stop" })
  );
}

describe("AnthropicModel.stream", () => {
  it("streams text deltas and ends with the assembled result and usage", async () => {
    const server = await serve(sse(TEXT_STREAM));
    const { events, error } = await collect(model(server.url).stream({ messages: [user("Hi")] }));
    expect(error).toBeUndefined();
    expect(events).toEqual([
      { type: "text", delta: "Hello" },
      { type: "text", delta: "!" },
      TEXT_RESULT,
    ]);
    expect(server.received[0]?.body.stream).toBe(true);
  });

  it("parses a stream cut into 7-byte pieces with CRLF line endings", async () => {
    const server = await serve(sse(TEXT_STREAM, { pieceSize: 7, crlf: true }));
    const { events, error } = await collect(model(server.url).stream({ messages: [user("Hi")] }));
    expect(error).toBeUndefined();
    expect(events).toEqual([
      { type: "text", delta: "Hello" },
      { type: "text", delta: "!" },
      TEXT_RESULT,
    ]);
  });

  it("reassembles streamed tool use, indexing tool calls by their own ordinal", async () => {
    const server = await serve(sse(toolStream(), { pieceSize: 13 }));
    const { events, error } = await collect(
      model(server.url).stream({
        messages: [user("What is the weather like in San Francisco?")],
        tools: [weatherTool, timeTool],
      }),
    );
    expect(error).toBeUndefined();
    expect(events).toEqual([
      { type: "text", delta: "Okay, let's check the weather" },
      { type: "text", delta: " for San Francisco, CA:" },
      {
        type: "tool_call",
        index: 0,
        id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        name: "get_weather",
        argumentsDelta: "",
      },
      { type: "tool_call", index: 0, argumentsDelta: '{"location":' },
      { type: "tool_call", index: 0, argumentsDelta: ' "San Fra' },
      { type: "tool_call", index: 0, argumentsDelta: 'ncisco, CA"' },
      { type: "tool_call", index: 0, argumentsDelta: ', "unit": "fah' },
      { type: "tool_call", index: 0, argumentsDelta: 'renheit"}' },
      { type: "tool_call", index: 1, id: "toolu_02Time", name: "get_time", argumentsDelta: "" },
      { type: "tool_call", index: 1, argumentsDelta: "{}" },
      {
        type: "done",
        result: {
          message: {
            role: "assistant",
            content: "Okay, let's check the weather for San Francisco, CA:",
            tool_calls: [
              {
                id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                type: "function",
                function: {
                  name: "get_weather",
                  arguments: '{"location": "San Francisco, CA", "unit": "fahrenheit"}',
                },
              },
              {
                id: "toolu_02Time",
                type: "function",
                function: { name: "get_time", arguments: "{}" },
              },
            ],
          },
          finishReason: "tool_calls",
          usage: { inputTokens: 472, outputTokens: 89 },
          model: "claude-sonnet-4-5-20250929",
        },
      },
    ]);
    // Deltas add up to each call's arguments, as consumers of the stream rely on.
    const args = events
      .filter((e) => e.type === "tool_call" && e.index === 0)
      .map((e) => (e.type === "tool_call" ? e.argumentsDelta : ""))
      .join("");
    expect(JSON.parse(args)).toEqual({ location: "San Francisco, CA", unit: "fahrenheit" });
  });

  it("streams an emulated json_schema answer as text", async () => {
    const body =
      event({
        type: "message_start",
        message: {
          id: "msg_01Json",
          type: "message",
          role: "assistant",
          model: "claude-sonnet-4-5-20250929",
          content: [],
          stop_reason: null,
          stop_sequence: null,
          usage: { input_tokens: 849, output_tokens: 10 },
        },
      }) +
      event({
        type: "content_block_start",
        index: 0,
        content_block: { type: "tool_use", id: "toolu_01J", name: "weather_report", input: {} },
      }) +
      event({
        type: "content_block_delta",
        index: 0,
        delta: { type: "input_json_delta", partial_json: "" },
      }) +
      event({
        type: "content_block_delta",
        index: 0,
        delta: { type: "input_json_delta", partial_json: '{"city": "Par' },
      }) +
      event({
        type: "content_block_delta",
        index: 0,
        delta: { type: "input_json_delta", partial_json: 'is", "temperature_c": 15}' },
      }) +
      event({ type: "content_block_stop", index: 0 }) +
      event({
        type: "message_delta",
        delta: { stop_reason: "tool_use", stop_sequence: null },
        usage: { output_tokens: 47 },
      }) +
      event({ type: "message_stop" });
    const server = await serve(sse(body));
    const { events, error } = await collect(
      model(server.url).stream({
        messages: [user("Weather in Paris as JSON")],
        params: {
          response_format: {
            type: "json_schema",
            json_schema: { name: "weather_report", schema: { type: "object" } },
          },
        },
      }),
    );
    expect(error).toBeUndefined();
    expect(server.received[0]?.body.tool_choice).toEqual({ type: "tool", name: "weather_report" });
    expect(events).toEqual([
      { type: "text", delta: '{"city": "Par' },
      { type: "text", delta: 'is", "temperature_c": 15}' },
      {
        type: "done",
        result: {
          message: { role: "assistant", content: '{"city": "Paris", "temperature_c": 15}' },
          finishReason: "stop",
          usage: { inputTokens: 849, outputTokens: 47 },
          model: "claude-sonnet-4-5-20250929",
        },
      },
    ]);
  });

  it("throws a retryable overloaded error on a mid-stream error event, after the deltas before it", async () => {
    const head = TEXT_STREAM.slice(0, TEXT_STREAM.indexOf("event: content_block_stop"));
    const body =
      head +
      "event: error\n" +
      'data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n';
    const server = await serve(sse(body));
    const { events, error } = await collect(model(server.url).stream({ messages: [user("Hi")] }));
    expect(events).toEqual([
      { type: "text", delta: "Hello" },
      { type: "text", delta: "!" },
    ]);
    expect(failureOf(error)).toEqual({
      code: "HANDOFF_ERR_PROVIDER",
      retryable: true,
      failure: "overloaded",
      deployment: "claude-test",
    });
    expect((error as Error).message).toContain("overloaded_error: Overloaded");
  });

  it("treats a stream whose connection is destroyed as malformed", async () => {
    const head = TEXT_STREAM.slice(0, TEXT_STREAM.indexOf("event: content_block_stop"));
    const server = await serve(async (_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write(head);
      res.write('event: content_block_delta\ndata: {"type":"content_blo');
      await sleep(20);
      res.socket?.destroy();
    });
    const { events, error } = await collect(model(server.url).stream({ messages: [user("Hi")] }));
    expect(events).toEqual([
      { type: "text", delta: "Hello" },
      { type: "text", delta: "!" },
    ]);
    expect(failureOf(error)).toMatchObject({ retryable: true, failure: "malformed" });
  });

  it("treats a stream that ends without message_stop as malformed", async () => {
    const withoutStop = TEXT_STREAM.slice(0, TEXT_STREAM.indexOf("event: message_stop"));
    const server = await serve(sse(withoutStop));
    const { events, error } = await collect(model(server.url).stream({ messages: [user("Hi")] }));
    expect(events).toHaveLength(2);
    expect(failureOf(error)).toMatchObject({ failure: "malformed" });
    expect((error as Error).message).toContain("without message_stop");
  });

  it("treats a data line that is not JSON as malformed", async () => {
    const head = TEXT_STREAM.slice(0, TEXT_STREAM.indexOf("event: content_block_stop"));
    const server = await serve(sse(`${head}event: content_block_delta\ndata: {oops\n\n`));
    const { events, error } = await collect(model(server.url).stream({ messages: [user("Hi")] }));
    expect(events).toHaveLength(2);
    expect(failureOf(error)).toMatchObject({ failure: "malformed" });
    expect((error as Error).message).toContain("{oops");
  });
});

describe("AnthropicModel aborts, network and config", () => {
  it("rejects promptly with the caller's abort reason when the server hangs", async () => {
    const server = await serve(() => {}); // never answers
    const controller = new AbortController();
    const reason = new Error("caller gave up");
    setTimeout(() => controller.abort(reason), 50);
    const started = performance.now();
    const error = await model(server.url)
      .chat({ messages: [user("hi")] }, { signal: controller.signal })
      .catch((e: unknown) => e);
    expect(error).toBe(reason);
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it("rejects a hanging stream with the abort reason after the deltas that arrived", async () => {
    const head = TEXT_STREAM.slice(0, TEXT_STREAM.indexOf("event: content_block_stop"));
    const server = await serve((_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write(head); // and then nothing more
    });
    const controller = new AbortController();
    const reason = new Error("deadline");
    const stream = model(server.url).stream(
      { messages: [user("hi")] },
      { signal: controller.signal },
    );
    const events: ChatStreamEvent[] = [];
    const error = await (async () => {
      try {
        for await (const e of stream) {
          events.push(e);
          if (events.length === 2) setTimeout(() => controller.abort(reason), 20);
        }
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(events).toEqual([
      { type: "text", delta: "Hello" },
      { type: "text", delta: "!" },
    ]);
    expect(error).toBe(reason);
  });

  for (const status of [200, 529]) {
    it(`rejects with the abort reason when a ${status} body hangs half-sent`, async () => {
      const server = await serve((_req, res) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.write('{"type":"'); // and then nothing more
      });
      const controller = new AbortController();
      const reason = new Error("deadline");
      setTimeout(() => controller.abort(reason), 50);
      const error = await model(server.url)
        .chat({ messages: [user("hi")] }, { signal: controller.signal })
        .catch((e: unknown) => e);
      expect(error).toBe(reason);
    });
  }

  it("classifies a non-streamed body cut off by the server as a network failure", async () => {
    const server = await serve(async (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.write('{"id":"msg_1","content":[');
      await sleep(20);
      res.socket?.destroy();
    });
    const error = await model(server.url)
      .chat({ messages: [user("hi")] })
      .catch((e: unknown) => e);
    expect(failureOf(error)).toMatchObject({ retryable: true, failure: "network" });
  });

  it("does not call out at all when the signal is already aborted", async () => {
    const server = await serve(json(200, plainAnswer));
    const reason = new Error("already");
    const error = await model(server.url)
      .chat({ messages: [user("hi")] }, { signal: AbortSignal.abort(reason) })
      .catch((e: unknown) => e);
    expect(error).toBe(reason);
    expect(server.received).toHaveLength(0);
  });

  it("classifies a refused connection as a retryable network failure", async () => {
    const server = createServer();
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as AddressInfo;
    server.close();
    await once(server, "close");
    const error = await model(`http://127.0.0.1:${port}`)
      .chat({ messages: [user("hi")] })
      .catch((e: unknown) => e);
    expect(failureOf(error)).toEqual({
      code: "HANDOFF_ERR_PROVIDER",
      retryable: true,
      failure: "network",
      deployment: "claude-test",
    });
    expect((error as Error).message).toContain("ECONNREFUSED");
  });

  it("throws HANDOFF_ERR_CONFIG at construction when the key variable is unset", () => {
    const deployment = Deployment.parse({
      provider: "anthropic",
      model: "claude-haiku-4-5",
      api_key_env: "MISSING_ANTHROPIC_KEY",
    });
    let error: unknown;
    try {
      new AnthropicModel(deployment, { env: {} });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(HandoffError);
    expect((error as HandoffError).code).toBe("HANDOFF_ERR_CONFIG");
    expect((error as HandoffError).message).toContain("MISSING_ANTHROPIC_KEY");
    expect((error as HandoffError).message).toContain("anthropic:claude-haiku-4-5");
  });

  it("reads ANTHROPIC_API_KEY by default and targets api.anthropic.com", () => {
    const deployment = Deployment.parse({ provider: "anthropic", model: "claude-haiku-4-5" });
    expect(() => new AnthropicModel(deployment, { env: {} })).toThrow(/ANTHROPIC_API_KEY/);
    const m = new AnthropicModel(deployment, { env: { ANTHROPIC_API_KEY: "k" } });
    expect(m.url).toBe("https://api.anthropic.com/v1/messages");
    expect(m.provider).toBe("anthropic");
    expect(m.simulated).toBe(false);
    expect(m.model).toBe("claude-haiku-4-5");
  });

  it("builds the endpoint from a base URL with or without a trailing slash or /v1", () => {
    expect(messagesUrl("https://proxy.example/")).toBe("https://proxy.example/v1/messages");
    expect(messagesUrl("https://proxy.example/anthropic")).toBe(
      "https://proxy.example/anthropic/v1/messages",
    );
    expect(messagesUrl("https://proxy.example/v1/")).toBe("https://proxy.example/v1/messages");
  });
});
