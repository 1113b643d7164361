import { createOpenAI } from "@ai-sdk/openai";
import type { HandoffConfig } from "@handoff/config";
import type { HandoffInfo } from "@handoff/contracts";
import { openaiCompletion, type UpstreamServer } from "@handoff/testkit";
import { context, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { TracerProvider } from "@opentelemetry/sdk-trace";
import { generateText, jsonSchema, stepCountIs, streamText, tool } from "ai";
import OpenAI from "openai";
import { pino } from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  type InProcessMesh,
  startInProcessMesh,
  startModelUpstreams,
  UPSTREAM_KEYS,
  upstreamConfig,
} from "./support/in-process-mesh.js";

/**
 * `POST /v1/responses` driven by the official `openai` SDK (`client.responses.create`) and by the
 * Vercel AI SDK's default OpenAI provider (whose models call the Responses API), with every tier
 * behind the gateway calling local servers that speak OpenAI's and Anthropic's wire formats.
 */

const _logger = pino({ level: "silent" });
const env = UPSTREAM_KEYS;
const COMPLETIONS = "/v1/chat/completions";
const MESSAGES = "/v1/messages";

let openaiUpstream: UpstreamServer;
let anthropicUpstream: UpstreamServer;
let mesh: InProcessMesh;
let upstreams: Awaited<ReturnType<typeof startModelUpstreams>>;
let baseURL: string;
let client: OpenAI;

function config(openaiUrl: string, anthropicUrl: string): HandoffConfig {
  return upstreamConfig(openaiUrl, anthropicUrl, () => ({
    resilience: { backoff_base_ms: 20, max_attempts: 3, cooldown_after_failures: 1_000 },
  }));
}

beforeAll(async () => {
  // A tracer, so each request has a trace id to report (`x-handoff-trace-id`, `handoff.trace_id`).
  trace.setGlobalTracerProvider(new TracerProvider());
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  upstreams = await startModelUpstreams();
  openaiUpstream = upstreams.openai;
  anthropicUpstream = upstreams.anthropic;
  mesh = await startInProcessMesh(config(openaiUpstream.url, anthropicUpstream.url), { env });
  baseURL = `${mesh.url}/v1`;
  client = new OpenAI({ baseURL, apiKey: "not-needed", maxRetries: 0 });
});

afterAll(async () => {
  await mesh?.stop();
  await upstreams?.close();
  trace.disable();
  context.disable();
});

beforeEach(() => upstreams.clear());

/** The `handoff` report the gateway adds to OpenAI's `response` object. */
const handoffOf = (value: unknown) => (value as { handoff: HandoffInfo }).handoff;

type WireMessage = { role: string; content: unknown };

const weatherTool: OpenAI.Responses.FunctionTool = {
  type: "function",
  name: "get_weather",
  description: "The current weather in a city.",
  parameters: {
    type: "object",
    properties: { city: { type: "string" } },
    required: ["city"],
    additionalProperties: false,
  },
  strict: true,
};

/** Whatever a promise rejects with, or undefined when it resolves. */
const rejection = (promise: Promise<unknown>) =>
  promise.then(
    () => undefined,
    (error: unknown) => error,
  );

describe("the official OpenAI SDK's client.responses.create", () => {
  it("answers with a response object: output_text, usage, the handoff report and its headers", async () => {
    const { data: response, response: http } = await client.responses
      .create({ model: "handoff", input: "Hello there" })
      .withResponse();
    expect(response.object).toBe("response");
    expect(response.status).toBe("completed");
    expect(response.output_text).toBe("Hello from gpt-4o-mini. You asked: Hello there");
    expect(response.output).toEqual([
      {
        id: expect.stringMatching(/^msg_/),
        type: "message",
        role: "assistant",
        status: "completed",
        content: [
          {
            type: "output_text",
            text: "Hello from gpt-4o-mini. You asked: Hello there",
            annotations: [],
          },
        ],
      },
    ]);
    expect(response.model).toBe("gpt-4o-mini");
    expect(response.usage).toEqual({
      input_tokens: 40,
      input_tokens_details: { cached_tokens: 0, cache_write_tokens: 0 },
      output_tokens: 12,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: 52,
    });
    expect(response.error).toBeNull();
    expect(response.incomplete_details).toBeNull();
    expect(response.completed_at).toBeGreaterThanOrEqual(response.created_at);
    const handoff = handoffOf(response);
    expect(handoff.route).toEqual(["classifier"]);
    expect(handoff.cost_usd).toBe(0.0000132); // 40 × $0.15 + 12 × $0.60 per million tokens
    expect(handoff.usage).toEqual([
      expect.objectContaining({ stage: "classifier", tier: "light", model: "gpt-4o-mini" }),
    ]);
    expect(response.id).toBe(`resp_${handoff.job_id}`);
    expect(http.headers.get("x-handoff-job-id")).toBe(handoff.job_id);
    expect(http.headers.get("x-handoff-trace-id")).toBe(handoff.trace_id);
    expect(handoff.trace_id).toMatch(/^[0-9a-f]{32}$/);
    // The string input reached the model as the user's message.
    const [request] = openaiUpstream.received(COMPLETIONS, "gpt-4o-mini");
    expect(request?.body.messages).toEqual([{ role: "user", content: "Hello there" }]);
  });

  it("sends instructions to the model as a system message, and repeats the request's settings", async () => {
    const response = await client.responses.create({
      model: "handoff",
      instructions: "Answer in one short sentence.",
      input: [{ role: "user", content: [{ type: "input_text", text: "Hello again" }] }],
      temperature: 0.3,
      top_p: 0.9,
      max_output_tokens: 200,
      metadata: { ticket: "T-1" },
      store: true,
    });
    expect(response.output_text).toBe("Hello from gpt-4o-mini. You asked: Hello again");
    expect(response).toMatchObject({
      instructions: "Answer in one short sentence.",
      temperature: 0.3,
      top_p: 0.9,
      max_output_tokens: 200,
      metadata: { ticket: "T-1" },
      tool_choice: "auto",
      tools: [],
      parallel_tool_calls: true,
      text: { format: { type: "text" } },
    });
    const [request] = openaiUpstream.received(COMPLETIONS, "gpt-4o-mini");
    expect(request?.body.messages).toEqual([
      { role: "system", content: "Answer in one short sentence." },
      { role: "user", content: "Hello again" },
    ]);
    expect(request?.body).toMatchObject({ temperature: 0.3, top_p: 0.9, max_tokens: 200 });
  });

  it("passes text.format json_schema to the model as response_format", async () => {
    const schema = {
      type: "object",
      properties: { greeting: { type: "string" } },
      required: ["greeting"],
      additionalProperties: false,
    };
    const response = await client.responses.create({
      model: "handoff",
      input: "Say hello",
      text: { format: { type: "json_schema", name: "greeting", schema, strict: true } },
    });
    expect(response.text?.format).toEqual({
      type: "json_schema",
      name: "greeting",
      schema,
      strict: true,
    });
    const calls = openaiUpstream.received(COMPLETIONS, "gpt-4o-mini");
    expect(calls.length).toBeGreaterThan(0);
    expect(calls.at(-1)?.body.response_format).toEqual({
      type: "json_schema",
      json_schema: { name: "greeting", schema, strict: true },
    });
  });

  it("streams typed events in order whose text deltas make exactly the non-streamed answer", async () => {
    const input = "Prove step by step that there are infinitely many primes.";
    const whole = await client.responses.create({ model: "handoff", input });
    const stream = await client.responses.create({ model: "handoff", input, stream: true });
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const event of stream) events.push(event);

    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
    const types = events.map((e) => e.type);
    const deltas = events.filter((e) => e.type === "response.output_text.delta");
    expect(deltas.length).toBeGreaterThan(5); // relayed from the heavy tier token by token
    expect(types).toEqual([
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.content_part.added",
      ...deltas.map(() => "response.output_text.delta"),
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.completed",
    ]);
    const text = deltas.map((e) => e.delta).join("");
    expect(text).toBe(whole.output_text);
    expect(text).toBe(
      "Hello from claude-sonnet-4-5. You asked: Prove step by step that there are infinitely many primes.",
    );
    const created = events[0] as OpenAI.Responses.ResponseCreatedEvent;
    expect(created.response).toMatchObject({ status: "in_progress", output: [], model: "handoff" });
    const done = events.find((e) => e.type === "response.output_text.done");
    expect(done).toMatchObject({ text, output_index: 0, content_index: 0 });
    const completed = events.at(-1) as OpenAI.Responses.ResponseCompletedEvent;
    expect(completed.response.id).toBe(created.response.id);
    expect(completed.response.status).toBe("completed");
    expect(completed.response.output).toEqual([
      expect.objectContaining({
        type: "message",
        id: deltas[0]?.item_id,
        content: [{ type: "output_text", text, annotations: [] }],
      }),
    ]);
    expect(completed.response.usage).toMatchObject({ input_tokens: 40, output_tokens: 12 });
    expect(handoffOf(completed.response).route.at(-1)).toBe("heavy-reasoner");
    const request = anthropicUpstream.received(MESSAGES, "claude-sonnet-4-5").at(-1);
    expect(request?.body.stream).toBe(true);
  });

  it("returns a function_call item, then answers from the function_call_output sent back", async () => {
    const question = "What's the weather in Paris?";
    const first = await client.responses.create({
      model: "handoff",
      input: question,
      tools: [weatherTool],
    });
    expect(first.status).toBe("completed");
    expect(first.output_text).toBe("");
    expect(first.output).toEqual([
      {
        id: expect.stringMatching(/^fc_/),
        type: "function_call",
        status: "completed",
        call_id: "call_upstream_1",
        name: "get_weather",
        arguments: '{"city":"Paris"}',
      },
    ]);
    expect(first.tools).toEqual([weatherTool]);
    const offered = openaiUpstream.received(COMPLETIONS, "gpt-4o")[0]?.body.tools;
    expect(offered).toContainEqual({
      type: "function",
      function: {
        name: "get_weather",
        description: "The current weather in a city.",
        parameters: weatherTool.parameters,
        strict: true,
      },
    });

    const call = first.output[0] as OpenAI.Responses.ResponseFunctionToolCall;
    const second = await client.responses.create({
      model: "handoff",
      tools: [weatherTool],
      input: [
        { role: "user", content: question },
        ...(first.output as OpenAI.Responses.ResponseInputItem[]),
        { type: "function_call_output", call_id: call.call_id, output: "18°C and sunny" },
      ],
    });
    expect(second.output_text).toBe("The tool answered: 18°C and sunny.");
    // The model saw its own call and the client's result, in the chat wire format (then the
    // tool loop's instruction, which comes after the client's messages).
    const messages = openaiUpstream.received(COMPLETIONS, "gpt-4o").at(-1)?.body
      .messages as WireMessage[];
    expect(messages.at(-1)?.role).toBe("system");
    expect(messages.slice(-3, -1)).toEqual([
      {
        role: "assistant",
        content: null,
        tool_calls: [
          {
            id: "call_upstream_1",
            type: "function",
            function: { name: "get_weather", arguments: '{"city":"Paris"}' },
          },
        ],
      },
      { role: "tool", tool_call_id: "call_upstream_1", content: "18°C and sunny" },
    ]);
  });

  it("streams a function call as its item, its arguments and the completed response", async () => {
    const stream = await client.responses.create({
      model: "handoff",
      input: "What's the weather in Paris?",
      tools: [weatherTool],
      stream: true,
    });
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const event of stream) events.push(event);
    expect(events.map((e) => e.type)).toEqual([
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.function_call_arguments.delta",
      "response.function_call_arguments.done",
      "response.output_item.done",
      "response.completed",
    ]);
    const added = events[2] as OpenAI.Responses.ResponseOutputItemAddedEvent;
    expect(added.item).toMatchObject({
      type: "function_call",
      name: "get_weather",
      call_id: "call_upstream_1",
      arguments: "",
      status: "in_progress",
    });
    const argsDone = events[4] as OpenAI.Responses.ResponseFunctionCallArgumentsDoneEvent;
    expect(argsDone).toMatchObject({ item_id: added.item.id, arguments: '{"city":"Paris"}' });
    const completed = events.at(-1) as OpenAI.Responses.ResponseCompletedEvent;
    expect(completed.response.output).toEqual([
      expect.objectContaining({ type: "function_call", arguments: '{"city":"Paris"}' }),
    ]);
  });

  it("reports an answer cut at max_output_tokens as incomplete", async () => {
    const cut = openaiCompletion("gpt-4o-mini", { kind: "text", text: "Hello from a model that" });
    openaiUpstream.enqueue(COMPLETIONS, {
      kind: "json",
      body: { ...cut, choices: cut.choices.map((c) => ({ ...c, finish_reason: "length" })) },
    });
    const response = await client.responses.create({
      model: "handoff",
      input: "Hello, tell me everything",
      max_output_tokens: 16,
    });
    expect(response.status).toBe("incomplete");
    expect(response.incomplete_details).toEqual({ reason: "max_output_tokens" });
    expect(response.completed_at).toBeNull();
    expect(response.output_text).toBe("Hello from a model that");
    expect(response.output[0]).toMatchObject({ type: "message", status: "incomplete" });
    expect(openaiUpstream.received(COMPLETIONS, "gpt-4o-mini")[0]?.body.max_tokens).toBe(16);
  });

  it("refuses what it cannot honour with a 400 naming the field, before any model is called", async () => {
    const cases: Array<[Record<string, unknown>, string, string]> = [
      [{ tools: [{ type: "web_search" }] }, "tools[0].type", "built-in tools"],
      [{ previous_response_id: "resp_123" }, "previous_response_id", "no conversation state"],
      [{ background: true }, "background", "background responses"],
      [{ reasoning: { effort: "high" } }, "reasoning", "reasoning options"],
      [
        {
          input: [
            {
              role: "user",
              content: [{ type: "input_image", image_url: "https://example.com/a.png" }],
            },
          ],
        },
        "input[0].content[0].type",
        "input_image",
      ],
      [{ seed: 7 }, "seed", '"seed" is not supported'],
    ];
    for (const [extra, param, says] of cases) {
      const error = await rejection(
        client.responses.create({
          model: "handoff",
          input: "Hello",
          ...extra,
        } as OpenAI.Responses.ResponseCreateParamsNonStreaming),
      );
      expect(error, param).toBeInstanceOf(OpenAI.BadRequestError);
      const apiError = error as InstanceType<typeof OpenAI.BadRequestError>;
      expect(apiError.param, param).toBe(param);
      expect(apiError.code, param).toBe("HANDOFF_ERR_UNSUPPORTED");
      expect(apiError.message, param).toContain(param);
      expect(apiError.message, param).toContain(says);
    }
    // A malformed value is a validation error, also naming its field.
    const invalid = (await rejection(
      client.responses.create({ model: "handoff", input: "Hello", temperature: 3 }),
    )) as InstanceType<typeof OpenAI.BadRequestError>;
    expect(invalid.param).toBe("temperature");
    expect(invalid.code).toBe("HANDOFF_ERR_VALIDATION");
    expect(openaiUpstream.requests).toHaveLength(0);
    expect(anthropicUpstream.requests).toHaveLength(0);
  });

  it("answers an unaffordable request with a 402, and a streamed one with response.failed", async () => {
    const budget = { max_cost_usd: 0.0000001 } as object; // Handoff's own field, as extra body
    const error = await rejection(
      client.responses.create({ model: "handoff", input: "Hello", ...budget }),
    );
    expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(402);
    expect((error as InstanceType<typeof OpenAI.APIError>).code).toBe("HANDOFF_ERR_BUDGET");

    const stream = await client.responses.create({
      model: "handoff",
      input: "Hello",
      stream: true,
      ...budget,
    });
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const event of stream) events.push(event);
    expect(events.map((e) => e.type)).toEqual([
      "response.created",
      "response.in_progress",
      "response.failed",
    ]);
    const failed = events[2] as OpenAI.Responses.ResponseFailedEvent;
    expect(failed.response.status).toBe("failed");
    expect(failed.response.error).toMatchObject({ code: "HANDOFF_ERR_BUDGET" });
    expect(failed.response.error?.message).toContain("budget");
    expect(openaiUpstream.requests).toHaveLength(0);
  });

  it("replays an Idempotency-Key's response instead of running the request again", async () => {
    const body = { model: "handoff", input: "Hello, once only" };
    const headers = { "Idempotency-Key": `responses-${Date.now()}` };
    const first = await client.responses.create(body, { headers });
    const { data: again, response: http } = await client.responses
      .create(body, { headers })
      .withResponse();
    expect(http.headers.get("idempotent-replayed")).toBe("true");
    expect(again.id).toBe(first.id);
    expect(again.output_text).toBe("Hello from gpt-4o-mini. You asked: Hello, once only");
    expect(openaiUpstream.received(COMPLETIONS)).toHaveLength(1);
  });
});

describe("the Vercel AI SDK's default OpenAI provider", () => {
  // `openai(modelId)` is the Responses API model: it POSTs to `${baseURL}/responses`.
  const provider = () => createOpenAI({ baseURL, apiKey: "not-needed" });

  it("generateText gets the answer, its usage and the response id over /v1/responses", async () => {
    const result = await generateText({
      model: provider()("handoff"),
      system: "Be brief.",
      prompt: "Hello from the AI SDK",
      maxRetries: 0,
    });
    expect(result.text).toBe("Hello from gpt-4o-mini. You asked: Hello from the AI SDK");
    expect(result.finishReason).toBe("stop");
    expect(result.usage).toMatchObject({ inputTokens: 40, outputTokens: 12, totalTokens: 52 });
    expect(result.response.id).toMatch(/^resp_/);
    expect(result.response.modelId).toBe("gpt-4o-mini");
    const [request] = openaiUpstream.received(COMPLETIONS, "gpt-4o-mini");
    expect(request?.body.messages).toEqual([
      { role: "system", content: "Be brief." },
      { role: "user", content: "Hello from the AI SDK" },
    ]);
  });

  it("streamText streams the same text the model gave", async () => {
    const prompt = "Prove step by step that there are infinitely many primes.";
    const result = streamText({ model: provider()("handoff"), prompt, maxRetries: 0 });
    const pieces: string[] = [];
    for await (const piece of result.textStream) pieces.push(piece);
    expect(pieces.length).toBeGreaterThan(5);
    expect(pieces.join("")).toBe(`Hello from claude-sonnet-4-5. You asked: ${prompt}`);
    expect(await result.finishReason).toBe("stop");
    expect(await result.usage).toMatchObject({ inputTokens: 40, outputTokens: 12 });
  });

  it("runs a client-side tool round trip: the call, its result sent back, the final answer", async () => {
    const cities: string[] = [];
    const result = await generateText({
      model: provider()("handoff"),
      prompt: "What's the weather in Paris?",
      tools: {
        get_weather: tool({
          description: "The current weather in a city.",
          inputSchema: jsonSchema<{ city: string }>({
            type: "object",
            properties: { city: { type: "string" } },
            required: ["city"],
            additionalProperties: false,
          }),
          execute: async ({ city }) => {
            cities.push(city);
            return `18°C and sunny in ${city}`;
          },
        }),
      },
      stopWhen: stepCountIs(3),
      maxRetries: 0,
    });
    expect(cities).toEqual(["Paris"]);
    expect(result.steps).toHaveLength(2);
    expect(result.steps[0]?.finishReason).toBe("tool-calls");
    expect(result.steps[0]?.toolCalls).toEqual([
      expect.objectContaining({ toolName: "get_weather", input: { city: "Paris" } }),
    ]);
    expect(result.text).toBe("The tool answered: 18°C and sunny in Paris.");
    // The second request carried the call and its output back as Responses input items.
    const fed = openaiUpstream.received(COMPLETIONS, "gpt-4o").at(-1)?.body.messages as
      | WireMessage[]
      | undefined;
    // The client's messages end with the output; the tool loop's instruction follows them.
    expect(fed?.at(-1)?.role).toBe("system");
    expect(fed?.slice(-3, -1)).toEqual([
      {
        role: "assistant",
        content: null,
        tool_calls: [
          {
            id: "call_upstream_1",
            type: "function",
            function: { name: "get_weather", arguments: '{"city":"Paris"}' },
          },
        ],
      },
      { role: "tool", tool_call_id: "call_upstream_1", content: "18°C and sunny in Paris" },
    ]);
  });

  it("surfaces an unsupported option as the gateway's 400", async () => {
    const error = await rejection(
      generateText({
        model: provider()("handoff"),
        prompt: "Hello",
        providerOptions: { openai: { previousResponseId: "resp_earlier" } },
        maxRetries: 0,
      }),
    );
    expect(error).toBeInstanceOf(Error);
    expect(String((error as Error).message)).toContain("previous_response_id");
    expect((error as { statusCode?: number }).statusCode).toBe(400);
  });
});
