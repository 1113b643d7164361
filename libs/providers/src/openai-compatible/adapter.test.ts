import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Deployment, type HandoffConfigInput } from "@handoff/config";
import { HandoffError, type Message, type ToolDefinition } from "@handoff/contracts";
import { clearSecrets, registerSecret } from "@handoff/telemetry";
import { afterEach, describe, expect, it } from "vitest";
import { estimateInputTokens, estimateTokens } from "../tokens.js";
import type { ChatRequest, ChatStreamEvent } from "../types.js";
import { OpenAICompatibleModel } from "./adapter.js";

// ---------------------------------------------------------------------------------------------
// A replay server: a real node:http server on 127.0.0.1 that records what it receives and
// answers with the wire format from OpenAI's documentation.
// ---------------------------------------------------------------------------------------------

interface Received {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
}

type Reply = (res: ServerResponse, received: Received) => void | Promise<void>;

interface Replay {
  base: string;
  received: Received[];
  /** Resolves when the server sees the client close the connection of the first request. */
  clientClosed: Promise<void>;
}

const servers: Array<() => Promise<void>> = [];

afterEach(async () => {
  await Promise.all(servers.splice(0).map((close) => close()));
});

async function replay(reply: Reply): Promise<Replay> {
  const received: Received[] = [];
  let markClosed = () => {};
  const clientClosed = new Promise<void>((resolve) => {
    markClosed = resolve;
  });
  const server = createServer((req, res) => {
    let raw = "";
    req.setEncoding("utf8");
    req.on("data", (piece: string) => {
      raw += piece;
    });
    req.on("end", () => {
      const entry: Received = {
        method: req.method ?? "",
        url: req.url ?? "",
        headers: req.headers,
        body: raw === "" ? {} : (JSON.parse(raw) as Record<string, unknown>),
      };
      received.push(entry);
      res.on("close", () => markClosed());
      void reply(res, entry);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  servers.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  const { port } = server.address() as AddressInfo;
  return { base: `http://127.0.0.1:${port}/v1`, received, clientClosed };
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Reply {
  return (res) => {
    res.writeHead(status, { "content-type": "application/json", ...headers });
    res.end(JSON.stringify(body));
  };
}

/** Streams `data:` events, one write each, with a short pause so they arrive as separate reads. */
function sse(events: readonly string[], after: "end" | "destroy" | "hang" = "end"): Reply {
  return async (res) => {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    for (const event of events) {
      res.write(event);
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    if (after === "end") res.end();
    if (after === "destroy") res.socket?.destroy();
  };
}

const data = (chunk: unknown) => `data: ${JSON.stringify(chunk)}\n\n`;
const DONE = "data: [DONE]\n\n";

// ---------------------------------------------------------------------------------------------
// Fixtures, shaped after the examples in OpenAI's Chat Completions reference and guides.
// ---------------------------------------------------------------------------------------------

const weatherTool: ToolDefinition = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Get current temperature for a given location.",
    parameters: {
      type: "object",
      properties: {
        location: { type: "string", description: "City and country e.g. Bogotá, Colombia" },
      },
      required: ["location"],
      additionalProperties: false,
    },
    strict: true,
  },
};

const hello: ChatRequest = { messages: [{ role: "user", content: "Hello!" }] };

const PLAIN_COMPLETION = {
  id: "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  object: "chat.completion",
  created: 1741569952,
  model: "gpt-4.1-2025-04-14",
  choices: [
    {
      index: 0,
      message: {
        role: "assistant",
        content: "Hello! How can I assist you today?",
        refusal: null,
        annotations: [],
      },
      logprobs: null,
      finish_reason: "stop",
    },
  ],
  usage: {
    prompt_tokens: 19,
    completion_tokens: 10,
    total_tokens: 29,
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: 0,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  },
  service_tier: "default",
};

const TOOL_CALL_COMPLETION = {
  id: "chatcmpl-abc123",
  object: "chat.completion",
  created: 1699896916,
  model: "gpt-4o-mini-2024-07-18",
  choices: [
    {
      index: 0,
      message: {
        role: "assistant",
        content: null,
        tool_calls: [
          {
            id: "call_abc123",
            type: "function",
            function: { name: "get_weather", arguments: '{"location":"Paris, France"}' },
          },
        ],
      },
      logprobs: null,
      finish_reason: "tool_calls",
    },
  ],
  usage: { prompt_tokens: 82, completion_tokens: 17, total_tokens: 99 },
};

/** A streamed chunk as OpenAI sends it with `include_usage`: `usage` is null until the end. */
function chunk(delta: Record<string, unknown>, finish: string | null = null) {
  return {
    id: "chatcmpl-123",
    object: "chat.completion.chunk",
    created: 1694268190,
    model: "gpt-4o-mini-2024-07-18",
    system_fingerprint: "fp_44709d6fcb",
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    usage: null,
  };
}

function usageChunk(prompt: number, completion: number) {
  return {
    id: "chatcmpl-123",
    object: "chat.completion.chunk",
    created: 1694268190,
    model: "gpt-4o-mini-2024-07-18",
    system_fingerprint: "fp_44709d6fcb",
    choices: [],
    usage: {
      prompt_tokens: prompt,
      completion_tokens: completion,
      total_tokens: prompt + completion,
    },
  };
}

const TEXT_STREAM = [
  data(chunk({ role: "assistant", content: "", refusal: null })),
  data(chunk({ content: "Hello" })),
  data(chunk({ content: "!" })),
  data(chunk({ content: " How can I help?" })),
  data(chunk({}, "stop")),
  data(usageChunk(19, 6)),
  DONE,
];

/** The tool-call deltas of OpenAI's function-calling guide ("Streaming"), one chunk each. */
const TOOL_DELTAS = [
  {
    index: 0,
    id: "call_DdmO9pD3xa9XTPNJ32zg2hcA",
    function: { arguments: "", name: "get_weather" },
    type: "function",
  },
  { index: 0, id: null, function: { arguments: '{"', name: null }, type: null },
  { index: 0, id: null, function: { arguments: "location", name: null }, type: null },
  { index: 0, id: null, function: { arguments: '":"', name: null }, type: null },
  { index: 0, id: null, function: { arguments: "Paris", name: null }, type: null },
  { index: 0, id: null, function: { arguments: ",", name: null }, type: null },
  { index: 0, id: null, function: { arguments: " France", name: null }, type: null },
  { index: 0, id: null, function: { arguments: '"}', name: null }, type: null },
];

const TOOL_STREAM = [
  data(chunk({ role: "assistant", content: null, tool_calls: [TOOL_DELTAS[0]] })),
  ...TOOL_DELTAS.slice(1).map((d) => data(chunk({ tool_calls: [d] }))),
  data(chunk({}, "tool_calls")),
  data(usageChunk(82, 17)),
  DONE,
];

const ERRORS = {
  rateLimit: {
    error: {
      message:
        "Rate limit reached for gpt-4o-mini in organization org-test on requests per min (RPM): Limit 3, Used 3, Requested 1.",
      type: "requests",
      param: null,
      code: "rate_limit_exceeded",
    },
  },
  server: {
    error: {
      message: "The server had an error while processing your request. Sorry about that!",
      type: "server_error",
      param: null,
      code: null,
    },
  },
  contextLength: {
    error: {
      message:
        "This model's maximum context length is 128000 tokens. However, your messages resulted in 130004 tokens. Please reduce the length of the messages.",
      type: "invalid_request_error",
      param: "messages",
      code: "context_length_exceeded",
    },
  },
  auth: {
    error: {
      message:
        "Incorrect API key provided: sk-test. You can find your API key at https://platform.openai.com/account/api-keys.",
      type: "invalid_request_error",
      param: null,
      code: "invalid_api_key",
    },
  },
  notFound: {
    error: {
      message: "The model `gpt-9` does not exist or you do not have access to it.",
      type: "invalid_request_error",
      param: null,
      code: "model_not_found",
    },
  },
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

type DeploymentInput = HandoffConfigInput["tiers"]["light"][number];

const ENV = { OPENAI_API_KEY: "sk-test-123" };

function model(input: Partial<DeploymentInput>, options: { fetch?: typeof fetch } = {}) {
  const deployment = Deployment.parse({
    provider: "openai-compatible",
    model: "gpt-4o-mini",
    api_key_env: "OPENAI_API_KEY",
    ...input,
  });
  return new OpenAICompatibleModel(deployment, { env: ENV, ...options });
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected the promise to reject");
}

async function providerFailure(promise: Promise<unknown>): Promise<HandoffError> {
  const error = await rejection(promise);
  expect(error).toBeInstanceOf(HandoffError);
  return error as HandoffError;
}

/** Consumes a stream; returns the events that arrived and the error that ended it, if any. */
async function drain(
  stream: AsyncIterable<ChatStreamEvent>,
): Promise<{ events: ChatStreamEvent[]; error: unknown }> {
  const events: ChatStreamEvent[] = [];
  try {
    for await (const event of stream) events.push(event);
  } catch (error) {
    return { events, error };
  }
  return { events, error: undefined };
}

// ---------------------------------------------------------------------------------------------

describe("OpenAICompatibleModel request", () => {
  it("posts the OpenAI request body with the key from the environment and the extra headers", async () => {
    const server = await replay(json(200, TOOL_CALL_COMPLETION));
    const m = model({ base_url: server.base, headers: { "OpenAI-Organization": "org-test" } });
    const messages: Message[] = [
      { role: "developer", content: "Answer briefly." },
      { role: "user", content: "What's the weather like in Paris today?", name: "ada" },
      {
        role: "assistant",
        content: null,
        tool_calls: [
          {
            id: "call_abc123",
            type: "function",
            function: { name: "get_weather", arguments: '{"location":"Paris, France"}' },
          },
        ],
      },
      { role: "tool", tool_call_id: "call_abc123", content: '{"temperature_c":14}' },
    ];
    await m.chat({
      messages,
      tools: [weatherTool],
      toolChoice: { type: "function", function: { name: "get_weather" } },
      params: {
        temperature: 0.2,
        top_p: 0.9,
        max_tokens: 256,
        stop: ["\n\n"],
        seed: 7,
        response_format: {
          type: "json_schema",
          json_schema: {
            name: "weather",
            schema: { type: "object", properties: { summary: { type: "string" } } },
            strict: true,
          },
        },
      },
    });

    expect(server.received).toHaveLength(1);
    const [request] = server.received;
    expect(request?.method).toBe("POST");
    expect(request?.url).toBe("/v1/chat/completions");
    expect(request?.headers.authorization).toBe("Bearer sk-test-123");
    expect(request?.headers["openai-organization"]).toBe("org-test");
    expect(request?.headers["content-type"]).toBe("application/json");
    expect(request?.headers["api-key"]).toBeUndefined();
    expect(request?.body).toEqual({
      model: "gpt-4o-mini",
      messages: [
        { role: "system", content: "Answer briefly." },
        { role: "user", content: "What's the weather like in Paris today?", name: "ada" },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            {
              id: "call_abc123",
              type: "function",
              function: { name: "get_weather", arguments: '{"location":"Paris, France"}' },
            },
          ],
        },
        { role: "tool", tool_call_id: "call_abc123", content: '{"temperature_c":14}' },
      ],
      tools: [
        {
          type: "function",
          function: {
            name: "get_weather",
            description: "Get current temperature for a given location.",
            parameters: weatherTool.function.parameters,
            strict: true,
          },
        },
      ],
      tool_choice: { type: "function", function: { name: "get_weather" } },
      temperature: 0.2,
      top_p: 0.9,
      max_tokens: 256,
      stop: ["\n\n"],
      seed: 7,
      response_format: {
        type: "json_schema",
        json_schema: {
          name: "weather",
          schema: { type: "object", properties: { summary: { type: "string" } } },
          strict: true,
        },
      },
    });
  });

  it("sends neither tools nor tool_choice when no tools are offered, and drops unknown fields", async () => {
    const server = await replay(json(200, PLAIN_COMPLETION));
    const sneaky = { role: "user", content: "Hi", internal: "secret" } as unknown as Message;
    await model({ base_url: `${server.base}///` }).chat({
      messages: [sneaky],
      tools: [],
      toolChoice: "required",
    });
    expect(server.received[0]?.url).toBe("/v1/chat/completions");
    expect(server.received[0]?.body).toEqual({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Hi" }],
    });
  });

  it("sends no credential to a local server without api_key_env (Ollama)", async () => {
    const server = await replay(json(200, { ...PLAIN_COMPLETION, model: "llama3.2" }));
    const ollama = new OpenAICompatibleModel(
      Deployment.parse({ provider: "openai-compatible", model: "llama3.2", base_url: server.base }),
      { env: {} },
    );
    const result = await ollama.chat({ ...hello, params: { max_tokens: 64 } });
    expect(server.received[0]?.headers.authorization).toBeUndefined();
    expect(server.received[0]?.headers["api-key"]).toBeUndefined();
    expect(server.received[0]?.body.max_tokens).toBe(64);
    expect(result.model).toBe("llama3.2");
  });

  it("speaks Azure: api-key header, deployment URL with api-version, max_completion_tokens", async () => {
    const server = await replay(json(200, PLAIN_COMPLETION));
    const azureBase = "https://my-resource.openai.azure.com";
    const seen: string[] = [];
    // Redirects the Azure host to the replay server, recording the URL the adapter built.
    const redirect: typeof fetch = (input, init) => {
      const url = String(input);
      seen.push(url);
      return fetch(url.replace(azureBase, server.base.replace(/\/v1$/, "")), init);
    };
    const m = new OpenAICompatibleModel(
      Deployment.parse({
        id: "azure-gpt-4o",
        provider: "openai-compatible",
        model: "gpt-4o",
        base_url: `${azureBase}/openai/deployments/gpt-4o/?api-version=2024-10-21`,
        api_key_env: "AZURE_OPENAI_API_KEY",
      }),
      { env: { AZURE_OPENAI_API_KEY: "azure-key-1" }, fetch: redirect },
    );
    await m.chat({ ...hello, params: { max_tokens: 100 } });
    expect(seen).toEqual([
      "https://my-resource.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
    ]);
    const [request] = server.received;
    expect(request?.url).toBe("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21");
    expect(request?.headers["api-key"]).toBe("azure-key-1");
    expect(request?.headers.authorization).toBeUndefined();
    expect(request?.body.max_completion_tokens).toBe(100);
    expect(request?.body.max_tokens).toBeUndefined();
  });

  it("defaults to api.openai.com with max_completion_tokens", async () => {
    const server = await replay(json(200, PLAIN_COMPLETION));
    const seen: string[] = [];
    const redirect: typeof fetch = (input, init) => {
      seen.push(String(input));
      return fetch(String(input).replace("https://api.openai.com/v1", server.base), init);
    };
    const m = model({}, { fetch: redirect });
    expect(m.url).toBe("https://api.openai.com/v1/chat/completions");
    await m.chat({ ...hello, params: { max_tokens: 50 } });
    expect(seen).toEqual(["https://api.openai.com/v1/chat/completions"]);
    expect(server.received[0]?.headers.authorization).toBe("Bearer sk-test-123");
    expect(server.received[0]?.body.max_completion_tokens).toBe(50);
  });
});

describe("OpenAICompatibleModel configuration", () => {
  it("refuses at construction when the key's environment variable is missing or empty", () => {
    for (const env of [{}, { OPENAI_API_KEY: "" }, { OPENAI_API_KEY: "  " }]) {
      let error: unknown;
      try {
        new OpenAICompatibleModel(
          Deployment.parse({
            id: "mid-openai",
            provider: "openai-compatible",
            model: "gpt-4o-mini",
            api_key_env: "OPENAI_API_KEY",
          }),
          { env },
        );
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(HandoffError);
      expect((error as HandoffError).code).toBe("HANDOFF_ERR_CONFIG");
      expect((error as HandoffError).message).toBe(
        "deployment mid-openai (openai-compatible): the environment variable OPENAI_API_KEY (api_key_env) is not set",
      );
    }
  });

  it("refuses a deployment that names both api_key_env and a literal credential header", () => {
    expect(() => model({ headers: { Authorization: "Bearer literal" } })).toThrow(
      /names both api_key_env \(OPENAI_API_KEY\) and a literal authorization or api-key header/,
    );
    expect(() => model({ headers: { "API-Key": "literal" } })).toThrow(HandoffError);
  });

  it("sends a literal authorization header as written when there is no api_key_env", async () => {
    const server = await replay(json(200, PLAIN_COMPLETION));
    const m = new OpenAICompatibleModel(
      Deployment.parse({
        provider: "openai-compatible",
        model: "m",
        base_url: server.base,
        headers: { Authorization: "Bearer gateway-token" },
      }),
      { env: {} },
    );
    await m.chat(hello);
    expect(server.received[0]?.headers.authorization).toBe("Bearer gateway-token");
  });
});

describe("OpenAICompatibleModel.chat", () => {
  it("returns a plain answer with the server's usage and model", async () => {
    const server = await replay(json(200, PLAIN_COMPLETION));
    const m = model({ base_url: server.base });
    expect(m.provider).toBe("openai-compatible");
    expect(m.simulated).toBe(false);
    expect(await m.chat(hello)).toEqual({
      message: { role: "assistant", content: "Hello! How can I assist you today?" },
      finishReason: "stop",
      usage: { inputTokens: 19, outputTokens: 10 },
      model: "gpt-4.1-2025-04-14",
    });
  });

  it("returns a tool call", async () => {
    const server = await replay(json(200, TOOL_CALL_COMPLETION));
    const result = await model({ base_url: server.base }).chat({
      messages: [{ role: "user", content: "What's the weather like in Paris today?" }],
      tools: [weatherTool],
    });
    expect(server.received[0]?.body.tools).toHaveLength(1);
    expect(server.received[0]?.body.tool_choice).toBeUndefined();
    expect(result).toEqual({
      message: {
        role: "assistant",
        content: null,
        tool_calls: [
          {
            id: "call_abc123",
            type: "function",
            function: { name: "get_weather", arguments: '{"location":"Paris, France"}' },
          },
        ],
      },
      finishReason: "tool_calls",
      usage: { inputTokens: 82, outputTokens: 17 },
      model: "gpt-4o-mini-2024-07-18",
    });
  });

  it("estimates usage when the server reports none and falls back to the deployment's model", async () => {
    const { usage: _usage, model: _model, ...bare } = PLAIN_COMPLETION;
    const server = await replay(json(200, bare));
    const result = await model({ base_url: server.base }).chat(hello);
    expect(result.usage).toEqual({
      inputTokens: estimateInputTokens(hello.messages),
      outputTokens: estimateTokens("Hello! How can I assist you today?"),
    });
    expect(result.usage).toEqual({ inputTokens: 9, outputTokens: 9 });
    expect(result.model).toBe("gpt-4o-mini");
  });

  it("maps finish reasons, including the legacy function_call", async () => {
    const cases: Array<[string | null, boolean, string]> = [
      ["length", false, "length"],
      ["content_filter", false, "content_filter"],
      ["function_call", false, "tool_calls"], // legacy functions API, no tool_calls array
      ["stop", true, "tool_calls"], // Ollama's answer to a tool call
      [null, false, "stop"],
    ];
    for (const [raw, withCall, expected] of cases) {
      const source = withCall ? TOOL_CALL_COMPLETION : PLAIN_COMPLETION;
      const body = {
        ...source,
        choices: [{ ...source.choices[0], finish_reason: raw }],
      };
      const server = await replay(json(200, body));
      const result = await model({ base_url: server.base }).chat(hello);
      expect(result.finishReason, String(raw)).toBe(expected);
    }
  });

  it("fills in a tool call id and arguments a compatible server left out", async () => {
    const server = await replay(
      json(200, {
        model: "qwen2.5",
        choices: [
          {
            index: 0,
            message: {
              role: "assistant",
              content: "",
              tool_calls: [{ function: { name: "get_time", arguments: { tz: "UTC" } } }],
            },
            finish_reason: "tool_calls",
          },
        ],
      }),
    );
    const result = await model({ base_url: server.base }).chat(hello);
    expect(result.message.content).toBeNull();
    const call = result.message.tool_calls?.[0];
    expect(call?.id).toMatch(/^call_[0-9a-f]{24}$/);
    expect(call?.function).toEqual({ name: "get_time", arguments: '{"tz":"UTC"}' });
  });
});

describe("OpenAICompatibleModel HTTP failures", () => {
  const deployment = "openai-compatible:gpt-4o-mini";

  it("429 with Retry-After: 2 is a retryable rate limit of 2000 ms", async () => {
    const server = await replay(json(429, ERRORS.rateLimit, { "retry-after": "2" }));
    const error = await providerFailure(model({ base_url: server.base }).chat(hello));
    expect(error.code).toBe("HANDOFF_ERR_PROVIDER");
    expect(error.retryable).toBe(true);
    expect(error.details).toEqual({
      failure: "rate_limit",
      deployment,
      status: 429,
      retryAfterMs: 2000,
    });
    expect(error.message).toBe(
      `${deployment}: HTTP 429: Rate limit reached for gpt-4o-mini in organization org-test on requests per min (RPM): Limit 3, Used 3, Requested 1.`,
    );
  });

  it("500 is a retryable server failure", async () => {
    const server = await replay(json(500, ERRORS.server));
    const error = await providerFailure(model({ base_url: server.base }).chat(hello));
    expect(error.retryable).toBe(true);
    expect(error.details).toEqual({ failure: "server", deployment, status: 500 });
    expect(error.message).toContain("The server had an error while processing your request.");
  });

  it("400 context_length_exceeded is a non-retryable context_length failure", async () => {
    const server = await replay(json(400, ERRORS.contextLength));
    const error = await providerFailure(model({ base_url: server.base }).chat(hello));
    expect(error.code).toBe("HANDOFF_ERR_PROVIDER_REJECTED");
    expect(error.retryable).toBe(false);
    expect(error.details).toEqual({ failure: "context_length", deployment, status: 400 });
    expect(error.message).toContain("maximum context length is 128000 tokens");
  });

  it("401 is a non-retryable auth failure", async () => {
    const server = await replay(json(401, ERRORS.auth));
    const error = await providerFailure(model({ base_url: server.base }).chat(hello));
    expect(error.retryable).toBe(false);
    expect(error.details).toEqual({ failure: "auth", deployment, status: 401 });
    expect(error.message).toContain("Incorrect API key provided");
  });

  it("scrubs the key from an upstream error that echoes it, wherever the error goes", async () => {
    const key = "sk-canary-upstream-31c4d2";
    registerSecret(key);
    try {
      for (const [status, message] of [
        [401, `Incorrect API key provided: ${key}. You can find your API key elsewhere.`],
        [500, `upstream failed while handling key=${key}`],
      ] as const) {
        const server = await replay(json(status, { error: { message, type: "x", code: null } }));
        const deployment = Deployment.parse({
          provider: "openai-compatible",
          model: "gpt-4o-mini",
          api_key_env: "OPENAI_API_KEY",
          base_url: server.base,
        });
        const upstream = new OpenAICompatibleModel(deployment, { env: { OPENAI_API_KEY: key } });
        const error = await providerFailure(upstream.chat(hello));
        expect(server.received[0]?.headers.authorization).toBe(`Bearer ${key}`);
        expect(error.message).toContain(`HTTP ${status}`);
        expect(error.message).toContain("[redacted]");
        for (const shown of [error.message, error.stack, JSON.stringify(error)]) {
          expect(shown).not.toContain(key);
        }
      }
    } finally {
      clearSecrets();
    }
  });

  it("404 is not_found", async () => {
    const server = await replay(json(404, ERRORS.notFound));
    const error = await providerFailure(model({ base_url: server.base }).chat(hello));
    expect(error.retryable).toBe(false);
    expect(error.details).toEqual({ failure: "not_found", deployment, status: 404 });
    expect(error.message).toBe(
      `${deployment}: HTTP 404: The model \`gpt-9\` does not exist or you do not have access to it.`,
    );
  });

  it("uses the body text when an error body is not JSON", async () => {
    const server = await replay((res) => {
      res.writeHead(502, { "content-type": "text/html" });
      res.end("<html>\n<body>Bad Gateway</body>\n</html>");
    });
    const error = await providerFailure(model({ base_url: server.base }).chat(hello));
    expect(error.details).toEqual({ failure: "server", deployment, status: 502 });
    expect(error.message).toBe(`${deployment}: HTTP 502: <html> <body>Bad Gateway</body> </html>`);
  });

  it("fails the same way before a stream starts", async () => {
    const server = await replay(json(429, ERRORS.rateLimit, { "retry-after": "2" }));
    const { events, error } = await drain(model({ base_url: server.base }).stream(hello));
    expect(events).toEqual([]);
    expect(error).toBeInstanceOf(HandoffError);
    expect((error as HandoffError).details).toEqual({
      failure: "rate_limit",
      deployment,
      status: 429,
      retryAfterMs: 2000,
    });
  });

  it("a 2xx body that is not JSON is malformed", async () => {
    const server = await replay((res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end('{"id":"chatcmpl-1","choices":[');
    });
    const error = await providerFailure(model({ base_url: server.base }).chat(hello));
    expect(error.retryable).toBe(true);
    expect(error.details).toEqual({ failure: "malformed", deployment });
    expect(error.message).toBe(
      `${deployment}: malformed response: the response body is not JSON (30 characters)`,
    );
  });

  it("a 2xx JSON body of the wrong shape is malformed", async () => {
    const server = await replay(json(200, { id: "chatcmpl-1", choices: [] }));
    const error = await providerFailure(model({ base_url: server.base }).chat(hello));
    expect(error.details).toEqual({ failure: "malformed", deployment });
    expect(error.message).toContain("choices: a completion has at least one choice");
  });

  it("a 2xx body that carries an error object is classified by it", async () => {
    const server = await replay(json(200, ERRORS.contextLength));
    const error = await providerFailure(model({ base_url: server.base }).chat(hello));
    expect(error.details).toEqual({ failure: "context_length", deployment });
  });

  it("connection refused is a retryable network failure", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));

    const error = await providerFailure(
      model({ base_url: `http://127.0.0.1:${port}/v1` }).chat(hello),
    );
    expect(error.retryable).toBe(true);
    expect(error.details).toEqual({ failure: "network", deployment });
    expect(error.message).toContain(`could not reach http://127.0.0.1:${port}/v1/chat/completions`);
    expect(error.message).toContain("ECONNREFUSED");
  });

  it("an abort of the caller's signal propagates as the abort, promptly, unclassified", async () => {
    const server = await replay(() => {}); // never answers
    const m = model({ base_url: server.base });

    const controller = new AbortController();
    const reason = new Error("caller gave up");
    setTimeout(() => controller.abort(reason), 50);
    const started = Date.now();
    expect(await rejection(m.chat(hello, { signal: controller.signal }))).toBe(reason);
    expect(Date.now() - started).toBeLessThan(1000);

    // A timeout signal's own reason comes through as it is, so the caller can tell.
    const timeout = AbortSignal.timeout(50);
    const error = await rejection(
      drain(m.stream(hello, { signal: timeout })).then((d) => {
        throw d.error;
      }),
    );
    expect(error).toBeInstanceOf(DOMException);
    expect((error as DOMException).name).toBe("TimeoutError");

    // Already aborted: no request at all.
    const before = server.received.length;
    const aborted = AbortSignal.abort(reason);
    expect(await rejection(m.chat(hello, { signal: aborted }))).toBe(reason);
    expect(server.received.length).toBe(before);
  });
});

describe("OpenAICompatibleModel.stream", () => {
  it("streams text deltas and ends with the assembled result and the include_usage usage", async () => {
    const server = await replay(sse(TEXT_STREAM));
    const { events, error } = await drain(model({ base_url: server.base }).stream(hello));
    expect(error).toBeUndefined();
    expect(server.received[0]?.headers.accept).toBe("text/event-stream");
    expect(server.received[0]?.body).toEqual({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Hello!" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(events).toEqual([
      { type: "text", delta: "Hello" },
      { type: "text", delta: "!" },
      { type: "text", delta: " How can I help?" },
      {
        type: "done",
        result: {
          message: { role: "assistant", content: "Hello! How can I help?" },
          finishReason: "stop",
          usage: { inputTokens: 19, outputTokens: 6 },
          model: "gpt-4o-mini-2024-07-18",
        },
      },
    ]);
  });

  it("reassembles a tool call streamed as in OpenAI's function-calling guide", async () => {
    const server = await replay(sse(TOOL_STREAM));
    const { events, error } = await drain(
      model({ base_url: server.base }).stream({ ...hello, tools: [weatherTool] }),
    );
    expect(error).toBeUndefined();
    expect(events).toEqual([
      {
        type: "tool_call",
        index: 0,
        id: "call_DdmO9pD3xa9XTPNJ32zg2hcA",
        name: "get_weather",
        argumentsDelta: "",
      },
      { type: "tool_call", index: 0, argumentsDelta: '{"' },
      { type: "tool_call", index: 0, argumentsDelta: "location" },
      { type: "tool_call", index: 0, argumentsDelta: '":"' },
      { type: "tool_call", index: 0, argumentsDelta: "Paris" },
      { type: "tool_call", index: 0, argumentsDelta: "," },
      { type: "tool_call", index: 0, argumentsDelta: " France" },
      { type: "tool_call", index: 0, argumentsDelta: '"}' },
      {
        type: "done",
        result: {
          message: {
            role: "assistant",
            content: null,
            tool_calls: [
              {
                id: "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                type: "function",
                function: { name: "get_weather", arguments: '{"location":"Paris, France"}' },
              },
            ],
          },
          finishReason: "tool_calls",
          usage: { inputTokens: 82, outputTokens: 17 },
          model: "gpt-4o-mini-2024-07-18",
        },
      },
    ]);
  });

  it("keeps parallel tool calls apart by index", async () => {
    const call = (index: number, id: string | null, name: string | null, args: string) => ({
      index,
      id,
      type: id ? "function" : null,
      function: { name, arguments: args },
    });
    const server = await replay(
      sse([
        data(chunk({ role: "assistant", tool_calls: [call(0, "call_a", "get_weather", "")] })),
        data(chunk({ tool_calls: [call(0, null, null, '{"location":')] })),
        data(chunk({ tool_calls: [call(1, "call_b", "get_time", "")] })),
        data(chunk({ tool_calls: [call(1, null, null, '{"tz":"CET"}')] })),
        data(chunk({ tool_calls: [call(0, null, null, '"Oslo"}')] })),
        data(chunk({}, "tool_calls")),
        DONE,
      ]),
    );
    const { events } = await drain(model({ base_url: server.base }).stream(hello));
    const done = events.at(-1);
    expect(done?.type === "done" && done.result.message.tool_calls).toEqual([
      {
        id: "call_a",
        type: "function",
        function: { name: "get_weather", arguments: '{"location":"Oslo"}' },
      },
      { id: "call_b", type: "function", function: { name: "get_time", arguments: '{"tz":"CET"}' } },
    ]);
  });

  it("tolerates Azure's leading filter chunk, comments, CRLF and events split across writes", async () => {
    const azureFilterChunk = {
      id: "",
      object: "",
      created: 0,
      model: "",
      choices: [],
      prompt_filter_results: [{ prompt_index: 0, content_filter_results: {} }],
    };
    const whole = [data(azureFilterChunk), ": keep-alive\n\n", ...TEXT_STREAM]
      .join("")
      .replace(/\n/g, "\r\n");
    // Cut into 7-character writes so lines, CRLFs and JSON land across reads.
    const pieces = whole.match(/[\s\S]{1,7}/g) ?? [];
    const server = await replay(sse(pieces));
    const { events, error } = await drain(model({ base_url: server.base }).stream(hello));
    expect(error).toBeUndefined();
    expect(events.filter((e) => e.type === "text").map((e) => e.delta)).toEqual([
      "Hello",
      "!",
      " How can I help?",
    ]);
    expect(events.at(-1)).toEqual({
      type: "done",
      result: {
        message: { role: "assistant", content: "Hello! How can I help?" },
        finishReason: "stop",
        usage: { inputTokens: 19, outputTokens: 6 },
        model: "gpt-4o-mini-2024-07-18",
      },
    });
  });

  it("keeps multi-byte characters split across network reads intact", async () => {
    const text = data(chunk({ content: "Grüße, 東京 🌍" }));
    const bytes = Buffer.from(text + data(chunk({}, "stop")) + DONE, "utf8");
    const server = await replay(async (res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      for (let at = 0; at < bytes.length; at += 5) {
        res.write(bytes.subarray(at, at + 5));
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      res.end();
    });
    const { events } = await drain(model({ base_url: server.base }).stream(hello));
    expect(events[0]).toEqual({ type: "text", delta: "Grüße, 東京 🌍" });
  });

  it("estimates usage when the stream carries none", async () => {
    const server = await replay(
      sse([data(chunk({ content: "Hi there" })), data(chunk({}, "stop")), DONE]),
    );
    const { events } = await drain(model({ base_url: server.base }).stream(hello));
    expect(events.at(-1)).toEqual({
      type: "done",
      result: {
        message: { role: "assistant", content: "Hi there" },
        finishReason: "stop",
        usage: { inputTokens: 9, outputTokens: 2 },
        model: "gpt-4o-mini-2024-07-18",
      },
    });
  });

  it("accepts a stream that ends after its finish_reason without [DONE]", async () => {
    const server = await replay(sse([data(chunk({ content: "Hi" })), data(chunk({}, "length"))]));
    const { events, error } = await drain(model({ base_url: server.base }).stream(hello));
    expect(error).toBeUndefined();
    const done = events.at(-1);
    expect(done?.type === "done" && done.result.finishReason).toBe("length");
  });

  it("replays a JSON answer from a server that ignored stream: true", async () => {
    const server = await replay(json(200, TOOL_CALL_COMPLETION));
    const { events } = await drain(model({ base_url: server.base }).stream(hello));
    expect(events).toEqual([
      {
        type: "tool_call",
        index: 0,
        id: "call_abc123",
        name: "get_weather",
        argumentsDelta: '{"location":"Paris, France"}',
      },
      {
        type: "done",
        result: {
          message: TOOL_CALL_COMPLETION.choices[0]?.message,
          finishReason: "tool_calls",
          usage: { inputTokens: 82, outputTokens: 17 },
          model: "gpt-4o-mini-2024-07-18",
        },
      },
    ]);
  });

  it("a stream cut off mid-way (socket destroyed) is malformed, after the deltas that arrived", async () => {
    const server = await replay(sse(TEXT_STREAM.slice(0, 3), "destroy"));
    const { events, error } = await drain(model({ base_url: server.base }).stream(hello));
    expect(events).toEqual([
      { type: "text", delta: "Hello" },
      { type: "text", delta: "!" },
    ]);
    expect(error).toBeInstanceOf(HandoffError);
    expect((error as HandoffError).retryable).toBe(true);
    expect((error as HandoffError).details).toEqual({
      failure: "malformed",
      deployment: "openai-compatible:gpt-4o-mini",
    });
    expect((error as HandoffError).message).toContain("the stream broke off after 3 chunks");
  });

  it("a stream that closes before any finish_reason or [DONE] is malformed", async () => {
    const server = await replay(
      sse([...TEXT_STREAM.slice(0, 2), 'data: {"id":"chatcmpl-123","ch']),
    );
    const { events, error } = await drain(model({ base_url: server.base }).stream(hello));
    expect(events).toEqual([{ type: "text", delta: "Hello" }]);
    expect((error as HandoffError).details).toEqual({
      failure: "malformed",
      deployment: "openai-compatible:gpt-4o-mini",
    });
    expect((error as HandoffError).message).toBe(
      "openai-compatible:gpt-4o-mini: malformed stream: the stream ended after 2 chunks without a finish_reason or [DONE]",
    );
  });

  it("a data line that is not JSON is malformed, after the deltas before it", async () => {
    const server = await replay(
      sse([TEXT_STREAM[0] ?? "", TEXT_STREAM[1] ?? "", "data: {not json}\n\n", ...TEXT_STREAM]),
    );
    const { events, error } = await drain(model({ base_url: server.base }).stream(hello));
    expect(events).toEqual([{ type: "text", delta: "Hello" }]);
    expect((error as HandoffError).details).toEqual({
      failure: "malformed",
      deployment: "openai-compatible:gpt-4o-mini",
    });
    expect((error as HandoffError).message).toBe(
      "openai-compatible:gpt-4o-mini: malformed stream: data line 3 of the stream is not JSON",
    );
  });

  it("an error object in the stream is thrown with its classification", async () => {
    const server = await replay(sse([TEXT_STREAM[1] ?? "", data(ERRORS.server)]));
    const { events, error } = await drain(model({ base_url: server.base }).stream(hello));
    expect(events).toEqual([{ type: "text", delta: "Hello" }]);
    expect((error as HandoffError).retryable).toBe(true);
    expect((error as HandoffError).details).toEqual({
      failure: "server",
      deployment: "openai-compatible:gpt-4o-mini",
    });
    expect((error as HandoffError).message).toBe(
      "openai-compatible:gpt-4o-mini: the stream reported an error: The server had an error while processing your request. Sorry about that!",
    );

    const limited = await replay(sse([data(ERRORS.rateLimit)]));
    const second = await drain(model({ base_url: limited.base }).stream(hello));
    expect((second.error as HandoffError).details?.failure).toBe("rate_limit");
  });

  it("an abort mid-stream propagates as the abort after the deltas that arrived", async () => {
    const server = await replay(sse(TEXT_STREAM.slice(0, 2), "hang"));
    const controller = new AbortController();
    const reason = new Error("client went away");
    const events: ChatStreamEvent[] = [];
    const started = Date.now();
    const error = await rejection(
      (async () => {
        for await (const event of model({ base_url: server.base }).stream(hello, {
          signal: controller.signal,
        })) {
          events.push(event);
          setTimeout(() => controller.abort(reason), 20);
        }
      })(),
    );
    expect(error).toBe(reason);
    expect(events).toEqual([{ type: "text", delta: "Hello" }]);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it("releases the connection when the consumer stops early", async () => {
    const server = await replay(sse(TEXT_STREAM.slice(0, 2), "hang"));
    for await (const event of model({ base_url: server.base }).stream(hello)) {
      expect(event).toEqual({ type: "text", delta: "Hello" });
      break;
    }
    await server.clientClosed; // would time out if the response were left open
  });
});

// ---------------------------------------------------------------------------------------------
// Token log-probabilities: OpenAI's `logprobs: true`, answered in `choices[].logprobs.content`
// with one `{token, logprob, bytes, top_logprobs}` entry a token, or per chunk when streamed.
// ---------------------------------------------------------------------------------------------

/** One `logprobs.content` entry as OpenAI sends it without `top_logprobs`. */
function tokenLogprob(token: string, logprob: number) {
  return { token, logprob, bytes: [...Buffer.from(token, "utf8")], top_logprobs: [] };
}

const asking: ChatRequest = { ...hello, logprobs: true };

/** PLAIN_COMPLETION's tokens and their log-probabilities, as an answer to `logprobs: true`. */
const ANSWER_TOKENS: Array<[string, number]> = [
  ["Hello", -0.0009],
  ["!", -0.0121],
  [" How", -0.2],
  [" can", -0.0003],
  [" I", 0],
  [" assist", -0.9875],
  [" you", -0.0001],
  [" today", -0.0002],
  ["?", -0.0004],
];
const ANSWER_LOGPROBS = ANSWER_TOKENS.map(([, logprob]) => logprob);

/** PLAIN_COMPLETION with `choices[0].logprobs` replaced (or removed, for `undefined`). */
function completionWithLogprobs(logprobs: unknown) {
  const { logprobs: _none, ...choice } = PLAIN_COMPLETION.choices[0] as Record<string, unknown>;
  return {
    ...PLAIN_COMPLETION,
    choices: [logprobs === undefined ? choice : { ...choice, logprobs }],
  };
}

const LOGPROBS_COMPLETION = completionWithLogprobs({
  content: ANSWER_TOKENS.map(([token, logprob]) => tokenLogprob(token, logprob)),
  refusal: null,
});

/** A streamed chunk carrying the log-probabilities of its tokens. */
function tokenChunk(tokens: Array<[string, number]>, logprobs: unknown = undefined) {
  const delta = { content: tokens.map(([token]) => token).join("") };
  const base = chunk(delta);
  const choice = base.choices[0] as Record<string, unknown>;
  return {
    ...base,
    choices: [
      {
        ...choice,
        logprobs: logprobs ?? {
          content: tokens.map(([token, logprob]) => tokenLogprob(token, logprob)),
          refusal: null,
        },
      },
    ],
  };
}

/** ANSWER_TOKENS streamed one chunk a token, except " How can" in one chunk of two. */
const LOGPROBS_STREAM = [
  data({
    ...chunk({ role: "assistant", content: "", refusal: null }),
    choices: [
      {
        index: 0,
        delta: { role: "assistant", content: "" },
        logprobs: { content: [], refusal: null },
        finish_reason: null,
      },
    ],
  }),
  data(tokenChunk(ANSWER_TOKENS.slice(0, 1))),
  data(tokenChunk(ANSWER_TOKENS.slice(1, 2))),
  data(tokenChunk(ANSWER_TOKENS.slice(2, 4))),
  ...ANSWER_TOKENS.slice(4).map(([token, logprob]) => data(tokenChunk([[token, logprob]]))),
  data(chunk({}, "stop")),
  data(usageChunk(19, 9)),
  DONE,
];

describe("OpenAICompatibleModel prompt caching", () => {
  // OpenAI reports the prompt tokens it read from its prompt cache as a part of prompt_tokens.
  const CACHED_COMPLETION = {
    ...PLAIN_COMPLETION,
    usage: {
      prompt_tokens: 2006,
      completion_tokens: 300,
      total_tokens: 2306,
      prompt_tokens_details: { cached_tokens: 1920, audio_tokens: 0 },
      completion_tokens_details: {
        reasoning_tokens: 0,
        audio_tokens: 0,
        accepted_prediction_tokens: 0,
        rejected_prediction_tokens: 0,
      },
    },
  };

  it("reads prompt_tokens_details.cached_tokens as a part of the prompt", async () => {
    const server = await replay(json(200, CACHED_COMPLETION));
    const result = await model({ base_url: server.base }).chat(hello);
    expect(result.usage).toEqual({ inputTokens: 2006, outputTokens: 300, cachedInputTokens: 1920 });
  });

  it("reads cached_tokens: 0, a null or a malformed details object as none", async () => {
    for (const details of [
      { cached_tokens: 0, audio_tokens: 0 },
      null,
      { cached_tokens: "many" },
      "cached",
    ]) {
      const server = await replay(
        json(200, {
          ...PLAIN_COMPLETION,
          usage: { ...PLAIN_COMPLETION.usage, prompt_tokens_details: details },
        }),
      );
      const result = await model({ base_url: server.base }).chat(hello);
      expect(result.usage).toEqual({ inputTokens: 19, outputTokens: 10 });
    }
  });

  it("caps a cached count above the prompt to the prompt", async () => {
    const server = await replay(
      json(200, {
        ...PLAIN_COMPLETION,
        usage: {
          prompt_tokens: 10,
          completion_tokens: 2,
          prompt_tokens_details: { cached_tokens: 64 },
        },
      }),
    );
    const result = await model({ base_url: server.base }).chat(hello);
    expect(result.usage).toEqual({ inputTokens: 10, outputTokens: 2, cachedInputTokens: 10 });
  });

  it("reads the cached tokens of the include_usage chunk that ends a stream", async () => {
    const usage = {
      ...usageChunk(1200, 6),
      usage: {
        prompt_tokens: 1200,
        completion_tokens: 6,
        total_tokens: 1206,
        prompt_tokens_details: { cached_tokens: 1024, audio_tokens: 0 },
        completion_tokens_details: {
          reasoning_tokens: 0,
          audio_tokens: 0,
          accepted_prediction_tokens: 0,
          rejected_prediction_tokens: 0,
        },
      },
    };
    const server = await replay(sse([...TEXT_STREAM.slice(0, 5), data(usage), DONE]));
    const { events, error } = await drain(model({ base_url: server.base }).stream(hello));
    expect(error).toBeUndefined();
    const done = events.at(-1);
    expect(done?.type === "done" ? done.result.usage : undefined).toEqual({
      inputTokens: 1200,
      outputTokens: 6,
      cachedInputTokens: 1024,
    });
  });

  it("marks nothing in the request: OpenAI caches prefixes on its own", async () => {
    const server = await replay(json(200, CACHED_COMPLETION));
    await model({ base_url: server.base }).chat({
      messages: [
        { role: "system", content: "Be terse." },
        { role: "user", content: "Hello!" },
      ],
    });
    expect(JSON.stringify(server.received[0]?.body)).not.toContain("cache");
  });
});

describe("OpenAICompatibleModel logprobs", () => {
  it("sends logprobs: true only when the request asks for it", async () => {
    const server = await replay(json(200, PLAIN_COMPLETION));
    const m = model({ base_url: server.base });
    await m.chat(hello);
    await m.chat({ ...hello, logprobs: false });
    await m.chat(asking);
    expect(server.received.map((r) => r.body.logprobs)).toEqual([undefined, undefined, true]);
    expect(server.received[2]?.body).toEqual({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Hello!" }],
      logprobs: true,
    });

    const streaming = await replay(sse(TEXT_STREAM));
    await drain(model({ base_url: streaming.base }).stream(asking));
    expect(streaming.received[0]?.body).toEqual({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Hello!" }],
      logprobs: true,
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it("returns the content tokens' log-probabilities of a JSON answer, in order", async () => {
    const server = await replay(json(200, LOGPROBS_COMPLETION));
    expect(await model({ base_url: server.base }).chat(asking)).toEqual({
      message: { role: "assistant", content: "Hello! How can I assist you today?" },
      finishReason: "stop",
      usage: { inputTokens: 19, outputTokens: 10 },
      model: "gpt-4.1-2025-04-14",
      logprobs: ANSWER_LOGPROBS,
    });
  });

  it("concatenates the log-probabilities of a streamed answer's chunks, in order", async () => {
    const server = await replay(sse(LOGPROBS_STREAM));
    const { events, error } = await drain(model({ base_url: server.base }).stream(asking));
    expect(error).toBeUndefined();
    expect(events.filter((e) => e.type === "text").map((e) => e.delta)).toEqual([
      "Hello",
      "!",
      " How can",
      " I",
      " assist",
      " you",
      " today",
      "?",
    ]);
    expect(events.at(-1)).toEqual({
      type: "done",
      result: {
        message: { role: "assistant", content: "Hello! How can I assist you today?" },
        finishReason: "stop",
        usage: { inputTokens: 19, outputTokens: 9 },
        model: "gpt-4o-mini-2024-07-18",
        logprobs: ANSWER_LOGPROBS,
      },
    });
  });

  it("keeps the log-probabilities of a JSON answer to a stream request", async () => {
    const server = await replay(json(200, LOGPROBS_COMPLETION));
    const { events } = await drain(model({ base_url: server.base }).stream(asking));
    const done = events.at(-1);
    expect(done?.type === "done" && done.result.logprobs).toEqual(ANSWER_LOGPROBS);
  });

  it("has none when the server sends null, no field, or no content entries", async () => {
    for (const logprobs of [null, undefined, { content: null, refusal: null }, { content: [] }]) {
      const server = await replay(json(200, completionWithLogprobs(logprobs)));
      const result = await model({ base_url: server.base }).chat(asking);
      expect(result.message.content, JSON.stringify(logprobs)).toBe(
        "Hello! How can I assist you today?",
      );
      expect(result.logprobs, JSON.stringify(logprobs)).toBeUndefined();
      expect("logprobs" in result).toBe(false);
    }
    // TEXT_STREAM's chunks all carry `logprobs: null`.
    const server = await replay(sse(TEXT_STREAM));
    const { events } = await drain(model({ base_url: server.base }).stream(asking));
    const done = events.at(-1);
    expect(done?.type === "done" && done.result.message.content).toBe("Hello! How can I help?");
    expect(done?.type === "done" && "logprobs" in done.result).toBe(false);
  });

  it("reads the shape vLLM and llama.cpp send, extra fields and top_logprobs included", async () => {
    const server = await replay(
      json(
        200,
        completionWithLogprobs({
          content: [
            {
              id: 9906, // llama.cpp adds the token id
              token: "Hello",
              logprob: -0.25,
              bytes: [72, 101, 108, 108, 111],
              top_logprobs: [{ id: 9906, token: "Hello", logprob: -0.25, bytes: null }],
            },
            { token: "!", logprob: -9999.0, bytes: null, top_logprobs: [] },
          ],
        }),
      ),
    );
    const result = await model({ base_url: server.base }).chat(asking);
    expect(result.logprobs).toEqual([-0.25, -9999]);
  });

  it("takes the refusal tokens' log-probabilities when the refusal is the answer", async () => {
    const server = await replay(
      json(200, {
        ...PLAIN_COMPLETION,
        choices: [
          {
            index: 0,
            message: { role: "assistant", content: null, refusal: "I can't help with that." },
            logprobs: {
              content: null,
              refusal: [tokenLogprob("I can't", -0.5), tokenLogprob(" help with that.", -0.1)],
            },
            finish_reason: "stop",
          },
        ],
      }),
    );
    const result = await model({ base_url: server.base }).chat(asking);
    expect(result.message.content).toBe("I can't help with that.");
    expect(result.logprobs).toEqual([-0.5, -0.1]);
  });

  it("drops malformed log-probabilities, never the answer", async () => {
    // Log-probabilities are advisory: an entry of the wrong shape loses them all, and the answer
    // they came with is returned as if none had been sent.
    const malformed = [
      { content: [tokenLogprob("Hello", -0.1), { ...tokenLogprob("!", 0), logprob: "x" }] },
      { content: [{ token: "Hello" }] },
      { content: "Hello" },
      "yes",
      [-0.1, -0.2],
    ];
    for (const logprobs of malformed) {
      const server = await replay(json(200, completionWithLogprobs(logprobs)));
      const result = await model({ base_url: server.base }).chat(asking);
      expect(result, JSON.stringify(logprobs)).toEqual({
        message: { role: "assistant", content: "Hello! How can I assist you today?" },
        finishReason: "stop",
        usage: { inputTokens: 19, outputTokens: 10 },
        model: "gpt-4.1-2025-04-14",
      });
    }

    // In a stream, one malformed chunk drops them for the whole answer: the rest would be
    // misaligned with the tokens.
    const stream = [...LOGPROBS_STREAM];
    stream[3] = data(tokenChunk(ANSWER_TOKENS.slice(2, 4), { content: [{ logprob: "x" }] }));
    const server = await replay(sse(stream));
    const { events, error } = await drain(model({ base_url: server.base }).stream(asking));
    expect(error).toBeUndefined();
    expect(events.at(-1)).toEqual({
      type: "done",
      result: {
        message: { role: "assistant", content: "Hello! How can I assist you today?" },
        finishReason: "stop",
        usage: { inputTokens: 19, outputTokens: 9 },
        model: "gpt-4o-mini-2024-07-18",
      },
    });
  });

  it("leaves the result as it was when the request did not ask, whatever the server sends", async () => {
    const server = await replay(json(200, LOGPROBS_COMPLETION));
    expect(await model({ base_url: server.base }).chat(hello)).toEqual({
      message: { role: "assistant", content: "Hello! How can I assist you today?" },
      finishReason: "stop",
      usage: { inputTokens: 19, outputTokens: 10 },
      model: "gpt-4.1-2025-04-14",
    });
    const streaming = await replay(sse(LOGPROBS_STREAM));
    const { events } = await drain(model({ base_url: streaming.base }).stream(hello));
    const done = events.at(-1);
    expect(done?.type === "done" && "logprobs" in done.result).toBe(false);
  });
});
