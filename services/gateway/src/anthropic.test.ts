import { HandoffConfig, simProfile } from "@handoff/config";
import {
  ChatCompletionRequest,
  ErrorBody,
  type ErrorCode,
  ErrorCodes,
  HandoffError,
  type JobEnvelope,
  type JobRecord,
  type JobResult,
  type StreamChunk,
} from "@handoff/contracts";
import { type JobClient, type RunOptions, recordFromEnvelope } from "@handoff/mesh";
import { testUsage } from "@handoff/testkit";
import { Ajv2020 } from "ajv/dist/2020.js";
import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  AnthropicErrorBody,
  AnthropicMessage,
  AnthropicStreamEvent,
  anthropicError,
  anthropicErrorType,
  MessageEvents,
  messageFromRecord,
  parseMessagesRequest,
  toChatRequest,
} from "./anthropic.js";
import { buildApp } from "./app.js";
import { loadApiKeys } from "./auth.js";

const logger = pino({ level: "silent" });

/** A minimal valid request, with `extra` fields on top. */
const minimal = (extra: Record<string, unknown> = {}) => ({
  model: "handoff",
  max_tokens: 256,
  messages: [{ role: "user", content: "Hi" }],
  ...extra,
});

/** The validation error a body fails with (or undefined when it passes). */
function refusal(body: unknown): HandoffError | undefined {
  try {
    parseMessagesRequest(body);
    return undefined;
  } catch (error) {
    return error as HandoffError;
  }
}

const WEATHER_TOOL = {
  name: "get_weather",
  description: "Current weather",
  input_schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
};

describe("toChatRequest: Anthropic's request in the mesh's shape", () => {
  it("maps system, text, tool_use and tool_result blocks, tools and sampling parameters", () => {
    const request = parseMessagesRequest({
      model: "handoff",
      max_tokens: 512,
      system: [
        { type: "text", text: "You are terse. " },
        { type: "text", text: "Use Celsius." },
      ],
      messages: [
        { role: "user", content: "Weather in Paris?" },
        {
          role: "assistant",
          content: [
            { type: "text", text: "Let me look.", citations: null },
            {
              type: "tool_use",
              id: "toolu_1",
              name: "get_weather",
              input: { city: "Paris" },
              caller: { type: "direct" },
            },
          ],
        },
        {
          role: "user",
          content: [
            { type: "tool_result", tool_use_id: "toolu_1", content: "18°C" },
            { type: "text", text: "And tomorrow?" },
          ],
        },
      ],
      tools: [WEATHER_TOOL],
      tool_choice: { type: "tool", name: "get_weather" },
      temperature: 0.3,
      top_p: 0.9,
      stop_sequences: ["\n\nHuman:"],
      metadata: { user_id: "u-1" },
      stream: true,
    });
    const chat = toChatRequest(request);
    // What the chat door would accept: the same validation applies to both.
    expect(ChatCompletionRequest.safeParse(chat).success).toBe(true);
    expect(chat).toEqual({
      model: "handoff",
      messages: [
        { role: "system", content: "You are terse. Use Celsius." },
        { role: "user", content: "Weather in Paris?" },
        {
          role: "assistant",
          content: "Let me look.",
          tool_calls: [
            {
              id: "toolu_1",
              type: "function",
              function: { name: "get_weather", arguments: '{"city":"Paris"}' },
            },
          ],
        },
        { role: "tool", tool_call_id: "toolu_1", content: "18°C" },
        { role: "user", content: [{ type: "text", text: "And tomorrow?" }] },
      ],
      tools: [
        {
          type: "function",
          function: {
            name: "get_weather",
            description: "Current weather",
            parameters: WEATHER_TOOL.input_schema,
          },
        },
      ],
      tool_choice: { type: "function", function: { name: "get_weather" } },
      max_tokens: 512,
      temperature: 0.3,
      top_p: 0.9,
      stop: ["\n\nHuman:"],
      stream: true,
    });
  });

  it("marks a failed tool result the way the mesh's tool executor does, from string or text blocks", () => {
    const chat = toChatRequest(
      parseMessagesRequest(
        minimal({
          messages: [
            { role: "user", content: "Weather?" },
            {
              role: "assistant",
              content: [
                { type: "tool_use", id: "t1", name: "get_weather", input: {} },
                { type: "tool_use", id: "t2", name: "get_weather", input: {} },
                { type: "tool_use", id: "t3", name: "get_weather", input: {} },
              ],
            },
            {
              role: "user",
              content: [
                {
                  type: "tool_result",
                  tool_use_id: "t1",
                  content: [
                    { type: "text", text: "city " },
                    { type: "text", text: "unknown" },
                  ],
                  is_error: true,
                },
                {
                  type: "tool_result",
                  tool_use_id: "t2",
                  content: "error: timeout",
                  is_error: true,
                },
                { type: "tool_result", tool_use_id: "t3" },
              ],
            },
          ],
        }),
      ),
    );
    expect(chat.messages.slice(1)).toEqual([
      {
        role: "assistant",
        content: null,
        tool_calls: ["t1", "t2", "t3"].map((id) => ({
          id,
          type: "function",
          function: { name: "get_weather", arguments: "{}" },
        })),
      },
      { role: "tool", tool_call_id: "t1", content: "error: city unknown" },
      { role: "tool", tool_call_id: "t2", content: "error: timeout" },
      { role: "tool", tool_call_id: "t3", content: "" },
    ]);
  });

  it("maps each tool_choice, and keeps tool_choice only with tools", () => {
    const choice = (tool_choice: unknown, tools: unknown[] = [WEATHER_TOOL]) =>
      toChatRequest(parseMessagesRequest(minimal({ tools, tool_choice }))).tool_choice;
    expect(choice({ type: "auto" })).toBe("auto");
    expect(choice({ type: "any", disable_parallel_tool_use: false })).toBe("required");
    expect(choice({ type: "none" })).toBe("none");
    expect(choice({ type: "tool", name: "get_weather" })).toEqual({
      type: "function",
      function: { name: "get_weather" },
    });
    expect(choice({ type: "auto" }, [])).toBeUndefined();
    const plain = toChatRequest(parseMessagesRequest(minimal()));
    expect(plain).toEqual({
      model: "handoff",
      messages: [{ role: "user", content: "Hi" }],
      max_tokens: 256,
      stream: false,
    });
  });
});

describe("parseMessagesRequest: what the mesh cannot honour is a 400 naming it", () => {
  const cases: Array<[string, unknown, string, RegExp]> = [
    [
      "thinking",
      minimal({ thinking: { type: "enabled", budget_tokens: 1024 } }),
      "thinking",
      /thinking/,
    ],
    ["top_k", minimal({ top_k: 5 }), "top_k", /top_k/],
    ["an unknown field", minimal({ frobnicate: true }), "frobnicate", /"frobnicate"/],
    [
      "an image block",
      minimal({
        messages: [
          {
            role: "user",
            content: [
              { type: "image", source: { type: "base64", media_type: "image/png", data: "x" } },
            ],
          },
        ],
      }),
      "messages[0].content[0].type",
      /"image" is not supported/,
    ],
    [
      "a document block",
      minimal({
        messages: [
          { role: "user", content: [{ type: "document", source: { type: "text", data: "x" } }] },
        ],
      }),
      "messages[0].content[0].type",
      /"document" is not supported/,
    ],
    [
      "a thinking block in an assistant turn",
      minimal({
        messages: [
          { role: "user", content: "Hi" },
          { role: "assistant", content: [{ type: "thinking", thinking: "hm", signature: "s" }] },
        ],
      }),
      "messages[1].content[0].type",
      /"thinking" is not supported/,
    ],
    [
      "an image in a tool result",
      minimal({
        messages: [
          {
            role: "user",
            content: [
              { type: "tool_result", tool_use_id: "t", content: [{ type: "image", source: {} }] },
            ],
          },
        ],
      }),
      "messages[0].content[0].content[0].type",
      /"image" is not supported/,
    ],
    [
      "cache_control on a block",
      minimal({
        messages: [
          {
            role: "user",
            content: [{ type: "text", text: "Hi", cache_control: { type: "ephemeral" } }],
          },
        ],
      }),
      "messages[0].content[0].cache_control",
      /cache_control/,
    ],
    [
      "citations",
      minimal({
        messages: [
          { role: "user", content: [{ type: "text", text: "Hi", citations: [{ type: "x" }] }] },
        ],
      }),
      "messages[0].content[0].citations",
      /citations are not supported/,
    ],
    [
      "a server tool",
      minimal({ tools: [{ type: "web_search_20250305", name: "web_search", max_uses: 3 }] }),
      "tools[0].type",
      /server tools are not/,
    ],
    [
      "disable_parallel_tool_use",
      minimal({
        tools: [WEATHER_TOOL],
        tool_choice: { type: "auto", disable_parallel_tool_use: true },
      }),
      "tool_choice.disable_parallel_tool_use",
      /one tool call/,
    ],
    [
      "a tool_choice naming no tool",
      minimal({ tools: [WEATHER_TOOL], tool_choice: { type: "tool", name: "nope" } }),
      "tool_choice.name",
      /no tool named "nope"/,
    ],
    [
      "a missing max_tokens",
      { model: "handoff", messages: [{ role: "user", content: "Hi" }] },
      "max_tokens",
      /max_tokens is required/,
    ],
    [
      "a system role in messages",
      minimal({ messages: [{ role: "system", content: "Be brief" }] }),
      "messages[0].role",
      /top-level system field/,
    ],
    ["a temperature above Anthropic's 1", minimal({ temperature: 1.5 }), "temperature", /1/],
    [
      "more stop sequences than the mesh passes on",
      minimal({ stop_sequences: ["a", "b", "c", "d", "e"] }),
      "stop_sequences",
      /at most 4/,
    ],
    [
      "content that is neither string nor blocks",
      minimal({ messages: [{ role: "user", content: 5 }] }),
      "messages[0].content",
      /string or array/,
    ],
  ];

  for (const [what, body, path, message] of cases) {
    it(`refuses ${what} at ${path}`, () => {
      const error = refusal(body);
      expect(error).toBeInstanceOf(HandoffError);
      expect(error?.code).toBe("HANDOFF_ERR_VALIDATION");
      const issue = error?.issues?.find((i) => i.path === path);
      expect(issue, JSON.stringify(error?.issues)).toBeDefined();
      expect(issue?.message).toMatch(message);
      // The message names the path too, as every validation error does.
      expect(error?.message).toContain(path);
    });
  }

  it("names every unknown field at once", () => {
    const error = refusal(minimal({ thinking: {}, top_k: 3, service_tier: "auto" }));
    expect(error?.issues?.map((i) => i.path).sort()).toEqual(["service_tier", "thinking", "top_k"]);
  });
});

function record(result: Partial<JobResult> = {}, extra: Partial<JobRecord> = {}): JobRecord {
  return {
    id: "job_12345678",
    status: "succeeded",
    stage: "tool-executor",
    created_at: "2024-03-15T20:00:00.500Z",
    updated_at: "2024-03-15T20:00:01.000Z",
    route: { decision: "tools", strategy: "rules", confidence: 0.8, reason: "tool signals" },
    hops: ["classifier", "tool-executor"],
    usage: [
      testUsage({ stage: "classifier", input_tokens: 30, output_tokens: 2 }),
      testUsage({
        stage: "tool-executor",
        tier: "mid",
        model: "sim-mid",
        input_tokens: 120,
        output_tokens: 14,
      }),
    ],
    cost_usd: 0.000_139,
    cost_by_stage: { "tool-executor": 0.000_139 },
    result: {
      message: { role: "assistant", content: "17 * 23 = 391." },
      finish_reason: "stop",
      stage: "tool-executor",
      provider: "sim",
      model: "sim-mid",
      ...result,
    },
    ...extra,
  };
}

describe("messageFromRecord", () => {
  it("is Anthropic's message, with usage summed over the hops and the handoff report", () => {
    const message = messageFromRecord(record(), "trace-1");
    expect(AnthropicMessage.parse(message)).toEqual(message);
    expect(message).toMatchObject({
      id: "msg_job_12345678",
      type: "message",
      role: "assistant",
      model: "sim-mid",
      content: [{ type: "text", text: "17 * 23 = 391." }],
      stop_reason: "end_turn",
      stop_sequence: null,
      usage: { input_tokens: 150, output_tokens: 16 },
    });
    expect(message.handoff).toMatchObject({
      job_id: "job_12345678",
      route: ["classifier", "tool-executor"],
      trace_id: "trace-1",
      cost_usd: 0.000_139,
    });
  });

  it("counts cached prompt tokens apart from input_tokens, as Anthropic does", () => {
    const cached = record(
      {},
      {
        usage: [
          testUsage({ stage: "classifier", input_tokens: 30, output_tokens: 2 }),
          testUsage({
            stage: "tool-executor",
            tier: "mid",
            input_tokens: 1_250,
            cached_input_tokens: 1_000,
            cache_write_tokens: 200,
            output_tokens: 14,
          }),
        ],
      },
    );
    const message = messageFromRecord(cached, "");
    expect(AnthropicMessage.parse(message)).toEqual(message);
    expect(message.usage).toEqual({
      input_tokens: 80,
      output_tokens: 16,
      cache_creation_input_tokens: 200,
      cache_read_input_tokens: 1_000,
    });
  });

  it("answers tool calls as tool_use blocks whose input is the parsed arguments", () => {
    const message = messageFromRecord(
      record({
        message: {
          role: "assistant",
          content: "Checking.",
          tool_calls: [
            {
              id: "call_1",
              type: "function",
              function: { name: "get_weather", arguments: '{"city":"Paris","days":[1,2]}' },
            },
            { id: "call_2", type: "function", function: { name: "clock", arguments: "" } },
          ],
        },
        finish_reason: "tool_calls",
      }),
      "",
    );
    expect(message.content).toEqual([
      { type: "text", text: "Checking." },
      {
        type: "tool_use",
        id: "call_1",
        name: "get_weather",
        input: { city: "Paris", days: [1, 2] },
      },
      { type: "tool_use", id: "call_2", name: "clock", input: {} },
    ]);
    expect(message.stop_reason).toBe("tool_use");
  });

  it("maps the finish reasons", () => {
    const reason = (finish_reason: JobResult["finish_reason"]) =>
      messageFromRecord(record({ finish_reason }), "").stop_reason;
    expect(reason("stop")).toBe("end_turn");
    expect(reason("length")).toBe("max_tokens");
    expect(reason("content_filter")).toBe("refusal");
  });

  it("refuses tool arguments that are not a JSON object, naming the job", () => {
    const bad = record({
      message: {
        role: "assistant",
        content: null,
        tool_calls: [{ id: "c", type: "function", function: { name: "f", arguments: "[1" } }],
      },
      finish_reason: "tool_calls",
    });
    expect(() => messageFromRecord(bad, "")).toThrow(/not a JSON object.*job_12345678/);
  });
});

describe("errors in Anthropic's shape", () => {
  it("pairs each status with Anthropic's error type", () => {
    const expected: Record<number, string> = {
      400: "invalid_request_error",
      401: "authentication_error",
      402: "billing_error",
      403: "permission_error",
      404: "not_found_error",
      413: "request_too_large",
      415: "invalid_request_error",
      422: "invalid_request_error",
      429: "rate_limit_error",
      500: "api_error",
      502: "api_error",
      503: "overloaded_error",
      504: "timeout_error",
      529: "overloaded_error",
    };
    for (const [status, type] of Object.entries(expected)) {
      expect(anthropicErrorType(Number(status)), status).toBe(type);
    }
  });

  it("answers every Handoff code with its status, a valid body and the code in details", () => {
    for (const code of Object.keys(ErrorCodes) as ErrorCode[]) {
      const { status, body } = anthropicError(new HandoffError(code, `failed: ${code}`), {
        job_id: "job_1",
        trace_id: "t1",
      });
      expect(status, code).toBe(ErrorCodes[code].status);
      expect(AnthropicErrorBody.parse(body)).toEqual(body);
      expect(body).toMatchObject({
        type: "error",
        error: {
          type: anthropicErrorType(status),
          message: `failed: ${code}`,
          details: { error_code: code, job_id: "job_1", trace_id: "t1" },
        },
        request_id: "t1",
      });
    }
    const unauthorized = anthropicError(new HandoffError("HANDOFF_ERR_UNAUTHORIZED", "no key"));
    expect(unauthorized.status).toBe(401);
    expect(unauthorized.body.error.type).toBe("authentication_error");
    expect(unauthorized.body.request_id).toBeNull();
  });

  it("carries the validation issues", () => {
    const error = refusal(minimal({ thinking: {} })) as HandoffError;
    const { status, body } = anthropicError(error);
    expect(status).toBe(400);
    expect(body.error.type).toBe("invalid_request_error");
    expect(body.error.message).toContain("thinking");
    expect(body.error.details?.issues?.[0]?.path).toBe("thinking");
  });
});

describe("MessageEvents", () => {
  const events = () => {
    const sent: AnthropicStreamEvent[] = [];
    const writer = new MessageEvents((event) => sent.push(AnthropicStreamEvent.parse(event)), {
      jobId: "job_12345678",
      traceId: "trace-1",
    });
    return { sent, writer };
  };
  const succeeded = (result: Partial<JobResult> = {}) =>
    record(result) as JobRecord & { result: JobResult };

  it("streams text in Anthropic's event order, the rest of the answer after the relayed part", () => {
    const { sent, writer } = events();
    writer.text("17 * 23", "sim-mid");
    writer.text(" = ", "sim-mid");
    writer.answer(succeeded(), "391.");
    expect(sent.map((e) => e.type)).toEqual([
      "message_start",
      "content_block_start",
      "content_block_delta",
      "content_block_delta",
      "content_block_delta",
      "content_block_stop",
      "message_delta",
      "message_stop",
    ]);
    const text = sent
      .flatMap((e) =>
        e.type === "content_block_delta" && e.delta.type === "text_delta" ? [e.delta.text] : [],
      )
      .join("");
    expect(text).toBe("17 * 23 = 391.");
    expect(sent[0]).toMatchObject({
      message: { id: "msg_job_12345678", model: "sim-mid", content: [], stop_reason: null },
    });
    expect(sent.at(-2)).toMatchObject({
      type: "message_delta",
      delta: { stop_reason: "end_turn", stop_sequence: null },
      usage: { input_tokens: 150, output_tokens: 16 },
      handoff: { job_id: "job_12345678", trace_id: "trace-1" },
    });
  });

  it("writes tool calls as tool_use blocks with their input as input_json_delta", () => {
    const { sent, writer } = events();
    writer.answer(
      succeeded({
        message: {
          role: "assistant",
          content: null,
          tool_calls: [
            {
              id: "call_1",
              type: "function",
              function: { name: "get_weather", arguments: '{"city":"Paris"}' },
            },
          ],
        },
        finish_reason: "tool_calls",
      }),
      "",
    );
    expect(sent).toEqual([
      expect.objectContaining({ type: "message_start" }),
      {
        type: "content_block_start",
        index: 0,
        content_block: { type: "tool_use", id: "call_1", name: "get_weather", input: {} },
      },
      {
        type: "content_block_delta",
        index: 0,
        delta: { type: "input_json_delta", partial_json: '{"city":"Paris"}' },
      },
      { type: "content_block_stop", index: 0 },
      expect.objectContaining({
        type: "message_delta",
        delta: { stop_reason: "tool_use", stop_sequence: null },
      }),
      { type: "message_stop" },
    ]);
  });

  it("ends with an error event in Anthropic's shape", () => {
    const { sent, writer } = events();
    writer.text("Hel", "sim-light");
    writer.error(new HandoffError("HANDOFF_ERR_RETRIES_EXHAUSTED", "gave up after 4 attempts"));
    expect(sent.at(-1)).toEqual({
      type: "error",
      error: {
        type: "api_error",
        message: "gave up after 4 attempts",
        details: {
          error_code: "HANDOFF_ERR_RETRIES_EXHAUSTED",
          job_id: "job_12345678",
          trace_id: "trace-1",
        },
      },
      request_id: "trace-1",
    });
  });
});

// ---- the route, through the app ----

/** SSE frames as `{event, data}`. */
function frames(body: string): Array<{ event: string | undefined; data: unknown }> {
  return body
    .split("\n\n")
    .filter((frame) => frame.includes("data: "))
    .map((frame) => {
      const event = /^event: (.*)$/m.exec(frame)?.[1];
      const data = /^data: (.*)$/m.exec(frame)?.[1] ?? "";
      return { event, data: JSON.parse(data) };
    });
}

/**
 * A job client that answers every job from `answer`, relaying `chunks` first when streaming (a
 * string is a chunk of delivery 1; `[delta, delivery]` names the delivery).
 */
function fakeJobs(answer: Partial<JobResult>, chunks: Array<string | [string, number]> = []) {
  const submitted: JobEnvelope[] = [];
  const jobs = {
    run: async (envelope: JobEnvelope, traceId: string | undefined, options: RunOptions = {}) => {
      submitted.push(envelope);
      const seqs = new Map<number, number>();
      for (const piece of chunks) {
        const [delta, delivery] = typeof piece === "string" ? [piece, 1] : piece;
        const seq = seqs.get(delivery) ?? 0;
        seqs.set(delivery, seq + 1);
        const chunk: StreamChunk = {
          job_id: envelope.id,
          stage: "classifier",
          delivery,
          seq,
          model: "sim-light",
          delta,
        };
        options.onChunk?.(chunk);
      }
      const queued = recordFromEnvelope(envelope, "queued", traceId);
      return {
        ...queued,
        status: "succeeded",
        hops: ["classifier"],
        usage: [testUsage({})],
        cost_usd: 0.000_003,
        result: {
          message: { role: "assistant", content: "Hello there." },
          finish_reason: "stop",
          stage: "classifier",
          provider: "sim",
          model: "sim-light",
          ...answer,
        },
      } satisfies JobRecord;
    },
  } as unknown as JobClient;
  return { jobs, submitted };
}

describe("POST /v1/messages on the app", () => {
  let app: FastifyInstance | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  function appWith(
    options: { jobs?: JobClient | (() => JobClient | undefined); maxBodyBytes?: number } = {},
  ) {
    const config = HandoffConfig.parse({
      ...simProfile,
      limits: { ...simProfile.limits, max_body_bytes: options.maxBodyBytes ?? 1_048_576 },
    });
    app = buildApp({
      jobs: options.jobs ?? ({} as JobClient),
      config,
      logger,
      ready: () => true,
      apiKeys: loadApiKeys(config.gateway.api_keys, { KA: "sk-right" }),
    });
    return app;
  }

  const post = (target: FastifyInstance, payload: unknown, headers: Record<string, string> = {}) =>
    target.inject({ method: "POST", url: "/v1/messages", headers, payload: payload as object });

  it("answers a message with the job's headers, the system prompt and parameters reaching the job", async () => {
    const { jobs, submitted } = fakeJobs({});
    const res = await post(
      appWith({ jobs }),
      minimal({ system: "Be brief.", temperature: 0.2, stop_sequences: ["END"] }),
    );
    expect(res.statusCode).toBe(200);
    const message = AnthropicMessage.parse(res.json());
    expect(message.content).toEqual([{ type: "text", text: "Hello there." }]);
    expect(message.stop_reason).toBe("end_turn");
    const [envelope] = submitted;
    expect(res.headers["x-handoff-job-id"]).toBe(envelope?.id);
    expect(message.id).toBe(`msg_${envelope?.id}`);
    expect(envelope?.input.messages).toEqual([
      { role: "system", content: "Be brief." },
      { role: "user", content: "Hi" },
    ]);
    expect(envelope?.input.params).toEqual({ max_tokens: 256, temperature: 0.2, stop: ["END"] });
  });

  it("takes Handoff's deadline and budget from the body's handoff object or the headers", async () => {
    const { jobs, submitted } = fakeJobs({});
    const target = appWith({ jobs });
    await post(target, minimal({ handoff: { timeout_ms: 5_000, max_cost_usd: 0.5 } }));
    await post(target, minimal(), {
      "x-handoff-timeout-ms": "7000",
      "x-handoff-max-cost-usd": "0.25",
    });
    const budgets = submitted.map((e) => ({
      ms: Date.parse(e.budget.deadline) - Date.parse(e.created_at),
      usd: e.budget.max_cost_usd,
    }));
    expect(budgets).toEqual([
      { ms: 5_000, usd: 0.5 },
      { ms: 7_000, usd: 0.25 },
    ]);
  });

  it("answers a body over the limit with a 413 request_too_large", async () => {
    const res = await post(
      appWith({ jobs: fakeJobs({}).jobs, maxBodyBytes: 4_096 }),
      minimal({ messages: [{ role: "user", content: "x".repeat(8_000) }] }),
    );
    expect(res.statusCode).toBe(413);
    const body = AnthropicErrorBody.parse(res.json());
    expect(body.error.type).toBe("request_too_large");
    expect(body.error.details?.error_code).toBe("HANDOFF_ERR_BODY_TOO_LARGE");
  });

  it("streams Anthropic's named events, the text exactly the stored answer", async () => {
    const { jobs } = fakeJobs({}, ["Hello", " the"]);
    const res = await post(appWith({ jobs }), minimal({ stream: true }));
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toMatch(/^text\/event-stream/);
    const all = frames(res.body);
    for (const frame of all) {
      const event = AnthropicStreamEvent.parse(frame.data);
      expect(frame.event).toBe(event.type);
    }
    expect(all.map((f) => f.event)).toEqual([
      "message_start",
      "content_block_start",
      "content_block_delta",
      "content_block_delta",
      "content_block_delta",
      "content_block_stop",
      "message_delta",
      "message_stop",
    ]);
    const text = all
      .map((f) => f.data as { delta?: { text?: string } })
      .map((d) => d.delta?.text ?? "")
      .join("");
    expect(text).toBe("Hello there.");
    expect(res.body).not.toContain("[DONE]");
  });

  it("never streams a mix of two answers: a redelivery's chunks are dropped, a differing answer is an error event", async () => {
    // The first delivery streamed "The first", then a redelivery streamed and stored another answer.
    const { jobs } = fakeJobs({ message: { role: "assistant", content: "The second answer." } }, [
      ["The first", 1],
      ["The second answer.", 2],
    ]);
    const res = await post(appWith({ jobs }), minimal({ stream: true }));
    const all = frames(res.body);
    expect(all.map((f) => f.event)).toEqual([
      "message_start",
      "content_block_start",
      "content_block_delta",
      "error",
    ]);
    expect(JSON.stringify(all)).not.toContain("The second answer.");
    const error = AnthropicErrorBody.parse(all.at(-1)?.data);
    expect(error.error.message).toMatch(/differs from its final answer/);
    expect(error.error.type).toBe("overloaded_error");
  });

  it("refuses an unsupported field with a 400 in Anthropic's shape, submitting nothing", async () => {
    const { jobs, submitted } = fakeJobs({});
    const res = await post(
      appWith({ jobs }),
      minimal({ thinking: { type: "enabled", budget_tokens: 2048 } }),
    );
    expect(res.statusCode).toBe(400);
    const body = AnthropicErrorBody.parse(res.json());
    expect(body.error.type).toBe("invalid_request_error");
    expect(body.error.message).toContain("thinking");
    expect(body.error.details?.error_code).toBe("HANDOFF_ERR_VALIDATION");
    expect(submitted).toHaveLength(0);
  });

  it("answers malformed JSON and a failed job in Anthropic's shape", async () => {
    const target = appWith({ jobs: fakeJobs({}).jobs });
    const bad = await target.inject({
      method: "POST",
      url: "/v1/messages",
      headers: { "content-type": "application/json" },
      payload: "{not json",
    });
    expect(bad.statusCode).toBe(400);
    expect(AnthropicErrorBody.parse(bad.json()).error.type).toBe("invalid_request_error");

    const failing = {
      run: async (envelope: JobEnvelope) => ({
        ...recordFromEnvelope(envelope, "queued", undefined),
        status: "failed",
        error: { code: "HANDOFF_ERR_RETRIES_EXHAUSTED", message: "gave up", retryable: false },
      }),
    } as unknown as JobClient;
    const res = await post(appWith({ jobs: failing }), minimal());
    expect(res.statusCode).toBe(502);
    const body = AnthropicErrorBody.parse(res.json());
    expect(body.error).toMatchObject({
      type: "api_error",
      message: "gave up",
      details: { error_code: "HANDOFF_ERR_RETRIES_EXHAUSTED" },
    });
    expect(body.error.details?.job_id).toBe(res.headers["x-handoff-job-id"]);
  });

  it("answers 503 in Anthropic's shape while the gateway starts", async () => {
    const res = await post(appWith({ jobs: () => undefined }), minimal());
    expect(res.statusCode).toBe(503);
    const body = AnthropicErrorBody.parse(res.json());
    expect(body.error.type).toBe("overloaded_error");
    expect(body.error.details?.error_code).toBe("HANDOFF_ERR_UNAVAILABLE");
  });
});

describe("API keys as x-api-key", () => {
  let app: FastifyInstance | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  function start() {
    const config = HandoffConfig.parse({
      ...simProfile,
      gateway: { api_keys: [{ name: "team-a", key_env: "KA" }] },
    });
    app = buildApp({
      jobs: fakeJobs({}).jobs,
      config,
      logger,
      ready: () => true,
      apiKeys: loadApiKeys(config.gateway.api_keys, { KA: "sk-right" }),
    });
    return app;
  }

  it("takes the key as x-api-key or as a Bearer token, on every route", async () => {
    const target = start();
    for (const headers of [{ "x-api-key": "sk-right" }, { authorization: "Bearer sk-right" }]) {
      const models = await target.inject({ method: "GET", url: "/v1/models", headers });
      expect(models.statusCode, JSON.stringify(headers)).toBe(200);
      const message = await target.inject({
        method: "POST",
        url: "/v1/messages",
        headers: { ...headers, "anthropic-version": "2023-06-01" },
        payload: minimal(),
      });
      expect(message.statusCode, JSON.stringify(headers)).toBe(200);
      expect(AnthropicMessage.parse(message.json()).content).toEqual([
        { type: "text", text: "Hello there." },
      ]);
      const chat = await target.inject({
        method: "POST",
        url: "/v1/chat/completions",
        headers,
        payload: { model: "handoff", messages: [{ role: "user", content: "Hi" }] },
      });
      expect(chat.statusCode, JSON.stringify(headers)).toBe(200);
    }
  });

  it("refuses a wrong or missing key: Anthropic's authentication_error on /v1/messages, OpenAI's shape elsewhere", async () => {
    const target = start();
    for (const headers of [{}, { "x-api-key": "sk-wrong" }, { authorization: "Bearer sk-wrong" }]) {
      const res = await target.inject({
        method: "POST",
        url: "/v1/messages",
        headers,
        payload: minimal(),
      });
      expect(res.statusCode, JSON.stringify(headers)).toBe(401);
      const body = AnthropicErrorBody.parse(res.json());
      expect(body.error.type).toBe("authentication_error");
      expect(body.error.details?.error_code).toBe("HANDOFF_ERR_UNAUTHORIZED");
      expect(res.body).not.toContain("sk-right");
    }
    const models = await target.inject({
      method: "GET",
      url: "/v1/models",
      headers: { "x-api-key": "sk-wrong" },
    });
    expect(models.statusCode).toBe(401);
    const { error } = ErrorBody.parse(models.json());
    expect(error.param).toBe("headers.x-api-key");
    expect(error.message).toBe("incorrect API key provided");
  });
});

describe("the OpenAPI document of POST /v1/messages", () => {
  type Json = Record<string, unknown>;
  let doc: Json = {};
  const ajv = new Ajv2020({ strict: false, validateFormats: false });
  beforeAll(async () => {
    // The document the app serves, with API keys configured.
    const app = buildApp({
      jobs: {} as JobClient,
      config: simProfile,
      logger,
      ready: () => true,
      version: "1",
      apiKeys: loadApiKeys([{ name: "a", key_env: "KA" }], { KA: "sk-right" }),
    });
    try {
      doc = (await app.inject({ method: "GET", url: "/openapi.json" })).json();
    } finally {
      await app.close();
    }
    ajv.addSchema(doc, "openapi.json");
  });
  const validate = (name: string, value: unknown) => {
    const check = ajv.getSchema(`openapi.json#/components/schemas/${name}`);
    if (!check) throw new Error(`no schema ${name}`);
    return check(value) ? "valid" : JSON.stringify(check.errors);
  };
  const operation = () => (doc.paths as Record<string, Record<string, Json>>)["/v1/messages"]?.post;
  const responses = () => (operation()?.responses ?? {}) as Record<string, Json>;
  const schemaOf = (status: string) =>
    ((responses()[status]?.content as Json)?.["application/json"] as Json | undefined)?.schema;

  it("describes Anthropic's request, message, events and errors, 401 and 429 included", () => {
    expect(operation()?.operationId).toBe("createMessage");
    expect(schemaOf("200")).toEqual({ $ref: "#/components/schemas/AnthropicMessage" });
    for (const status of ["400", "401", "402", "413", "429", "502", "504"]) {
      expect(schemaOf(status), status).toEqual({
        $ref: "#/components/schemas/AnthropicErrorBody",
      });
    }
    expect(responses().default).toEqual({ $ref: "#/components/responses/ServerError" });
    // The chat route's errors stay OpenAI's.
    const chat = (doc.paths as Record<string, Record<string, Json>>)["/v1/chat/completions"]?.post;
    expect(((chat?.responses ?? {}) as Json)["401"]).toEqual({
      $ref: "#/components/responses/Unauthorized",
    });
  });

  it("has component schemas that accept what the route answers, and refuse what it refuses", () => {
    expect(
      validate("AnthropicMessagesRequest", minimal({ system: "Be brief.", stream: true })),
    ).toBe("valid");
    expect(validate("AnthropicMessagesRequest", minimal({ thinking: {} }))).not.toBe("valid");
    expect(validate("AnthropicMessage", messageFromRecord(record(), "t"))).toBe("valid");
    const { body } = anthropicError(new HandoffError("HANDOFF_ERR_UNAUTHORIZED", "no key"));
    expect(validate("AnthropicErrorBody", body)).toBe("valid");
    expect(validate("AnthropicStreamEvent", { type: "message_stop" })).toBe("valid");
    expect(validate("AnthropicStreamEvent", body)).toBe("valid");
  });
});
