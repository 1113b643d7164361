import Anthropic from "@anthropic-ai/sdk";
import type { HandoffConfig } from "@handoff/config";
import type { HandoffInfo } from "@handoff/contracts";
import { anthropicError, openaiStream, type UpstreamServer } from "@handoff/testkit";
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
 * The official `@anthropic-ai/sdk` against the gateway's `POST /v1/messages`, with every tier
 * behind it calling local servers that speak OpenAI's and Anthropic's wire formats. The SDK sends
 * its key as `x-api-key`, which the gateway checks like any other.
 */

const _logger = pino({ level: "silent" });
const KEY = "sk-handoff-anthropic-door";
const env = { ...UPSTREAM_KEYS, HANDOFF_SDK_KEY: KEY };
const COMPLETIONS = "/v1/chat/completions";
const MESSAGES = "/v1/messages";

let openaiUpstream: UpstreamServer;
let anthropicUpstream: UpstreamServer;
let mesh: InProcessMesh;
let upstreams: Awaited<ReturnType<typeof startModelUpstreams>>;
let baseURL: string;
let client: Anthropic;

function config(openaiUrl: string, anthropicUrl: string): HandoffConfig {
  return upstreamConfig(openaiUrl, anthropicUrl, () => ({
    gateway: { api_keys: [{ name: "sdk-client", key_env: "HANDOFF_SDK_KEY" }] },
  }));
}

beforeAll(async () => {
  upstreams = await startModelUpstreams();
  openaiUpstream = upstreams.openai;
  anthropicUpstream = upstreams.anthropic;
  mesh = await startInProcessMesh(config(openaiUpstream.url, anthropicUpstream.url), { env });
  baseURL = mesh.url;
  client = new Anthropic({ baseURL, apiKey: KEY, maxRetries: 0 });
});

afterAll(async () => {
  await mesh?.stop();
  await upstreams?.close();
});

beforeEach(() => upstreams.clear());

/** The `handoff` report the gateway adds to Anthropic's shapes. */
const handoffOf = (value: unknown) => (value as { handoff: HandoffInfo }).handoff;

const textOf = (message: Anthropic.Message) =>
  message.content.map((block) => (block.type === "text" ? block.text : "")).join("");

const PRIMES = "Prove step by step that there are infinitely many primes.";
const PRIMES_ANSWER = `Hello from claude-sonnet-4-5. You asked: ${PRIMES}`;

/** The event types of a stream with consecutive repeats of one type folded into one. */
const shape = (types: string[]) => types.filter((type, i) => type !== types[i - 1]);
const EVENT_ORDER = [
  "message_start",
  "content_block_start",
  "content_block_delta",
  "content_block_stop",
  "message_delta",
  "message_stop",
];

describe("the official Anthropic SDK against the gateway", () => {
  it("gets a message from the light tier, with usage, the handoff report and the job's headers", async () => {
    const { data: message, response } = await client.messages
      .create({
        model: "handoff",
        max_tokens: 256,
        messages: [{ role: "user", content: "Hello there" }],
      })
      .withResponse();
    expect(message.type).toBe("message");
    expect(message.role).toBe("assistant");
    expect(message.id).toMatch(/^msg_/);
    expect(message.model).toBe("gpt-4o-mini");
    expect(message.content).toEqual([
      { type: "text", text: "Hello from gpt-4o-mini. You asked: Hello there" },
    ]);
    expect(message.stop_reason).toBe("end_turn");
    expect(message.stop_sequence).toBeNull();
    expect(message.usage).toEqual({ input_tokens: 40, output_tokens: 12 });
    const handoff = handoffOf(message);
    expect(handoff.route).toEqual(["classifier"]);
    expect(handoff.cost_usd).toBe(0.0000132); // 40 × $0.15 + 12 × $0.60 per million tokens
    expect(handoff.usage).toEqual([
      expect.objectContaining({ stage: "classifier", tier: "light", model: "gpt-4o-mini" }),
    ]);
    expect(message.id).toBe(`msg_${handoff.job_id}`);
    expect(response.headers.get("x-handoff-job-id")).toBe(handoff.job_id);
    // Set when the request is traced (an OpenTelemetry SDK is registered), as on the chat route.
    expect(response.headers.get("x-handoff-trace-id") ?? "").toBe(handoff.trace_id);
    // The request went upstream with the mesh's own key, max_tokens passed on.
    const [request] = openaiUpstream.received(COMPLETIONS);
    expect(request?.headers.authorization).toBe("Bearer sk-upstream-openai");
    expect(request?.body.max_tokens).toBe(256);
  });

  it("passes the system prompt through to the model, as a string or as text blocks", async () => {
    await client.messages.create({
      model: "handoff",
      max_tokens: 128,
      system: "You are a terse pirate.",
      messages: [{ role: "user", content: "Hello there" }],
      stop_sequences: ["Arr"],
      // Anthropic's parameter, which this SDK's types no longer list: sent as older clients do.
      ...({ temperature: 0.25 } as object),
    });
    const [light] = openaiUpstream.received(COMPLETIONS, "gpt-4o-mini");
    const sent = light?.body.messages as Array<{ role: string; content: unknown }>;
    expect(sent[0]).toEqual({ role: "system", content: "You are a terse pirate." });
    expect(sent.at(-1)).toEqual({ role: "user", content: "Hello there" });
    expect(light?.body.temperature).toBe(0.25);
    expect(light?.body.stop).toEqual(["Arr"]);

    // To the Anthropic tier, the prompt arrives as Anthropic's top-level `system`.
    await client.messages.create({
      model: "handoff/heavy",
      max_tokens: 128,
      system: [
        { type: "text", text: "You are a careful " },
        { type: "text", text: "mathematician." },
      ],
      messages: [{ role: "user", content: PRIMES }],
    });
    const [heavy] = anthropicUpstream.received(MESSAGES, "claude-sonnet-4-5");
    // As a text block carrying Anthropic's prompt-cache breakpoint (the deployment's default).
    expect(heavy?.body.system).toEqual([
      {
        type: "text",
        text: "You are a careful mathematician.",
        cache_control: { type: "ephemeral" },
      },
    ]);
    expect(heavy?.headers["x-api-key"]).toBe("sk-ant-upstream");
    expect(heavy?.body.max_tokens).toBe(128);
  });

  it("streams with messages.stream(): Anthropic's events in order, the text the non-streamed answer", async () => {
    const request = {
      model: "handoff",
      max_tokens: 512,
      messages: [{ role: "user" as const, content: PRIMES }],
    };
    const stream = client.messages.stream(request);
    const types: string[] = [];
    let deltas = 0;
    stream.on("text", () => {
      deltas++;
    });
    for await (const event of stream) types.push(event.type);
    const final = await stream.finalMessage();
    expect(shape(types)).toEqual(EVENT_ORDER);
    expect(deltas).toBeGreaterThan(5); // relayed token by token from the answering tier
    expect(textOf(final)).toBe(PRIMES_ANSWER);
    expect(final.stop_reason).toBe("end_turn");
    expect(final.model).toBe("claude-sonnet-4-5");
    expect(final.usage).toMatchObject({ input_tokens: 40, output_tokens: 12 });
    const [upstream] = anthropicUpstream.received(MESSAGES, "claude-sonnet-4-5");
    expect(upstream?.body.stream).toBe(true);

    const plain = await client.messages.create(request);
    expect(textOf(plain)).toBe(textOf(final));
    expect(plain.model).toBe(final.model);
  });

  it("streams with create({ stream: true }), ending in message_delta (stop reason, usage, handoff) and message_stop", async () => {
    const stream = await client.messages.create({
      model: "handoff",
      max_tokens: 256,
      stream: true,
      messages: [{ role: "user", content: "Hi, how are you?" }],
    });
    const events: Anthropic.RawMessageStreamEvent[] = [];
    for await (const event of stream) events.push(event);
    expect(shape(events.map((e) => e.type))).toEqual(EVENT_ORDER);
    const text = events
      .map((e) =>
        e.type === "content_block_delta" && e.delta.type === "text_delta" ? e.delta.text : "",
      )
      .join("");
    expect(text).toBe("Hello from gpt-4o-mini. You asked: Hi, how are you?");
    const start = events[0] as Anthropic.RawMessageStartEvent;
    expect(start.message).toMatchObject({ role: "assistant", content: [], stop_reason: null });
    const delta = events.at(-2) as Anthropic.RawMessageDeltaEvent;
    expect(delta.delta).toEqual({ stop_reason: "end_turn", stop_sequence: null });
    expect(delta.usage).toMatchObject({ input_tokens: 40, output_tokens: 12 });
    expect(handoffOf(delta).route).toEqual(["classifier"]);
    expect(`msg_${handoffOf(delta).job_id}`).toBe(start.message.id);

    const plain = await client.messages.create({
      model: "handoff",
      max_tokens: 256,
      messages: [{ role: "user", content: "Hi, how are you?" }],
    });
    expect(textOf(plain)).toBe(text);
  });

  it("returns a client tool's call as tool_use, then answers from the tool_result the SDK sends back", async () => {
    const tools: Anthropic.Tool[] = [
      {
        name: "get_weather",
        description: "The current weather in a city",
        input_schema: {
          type: "object",
          properties: { city: { type: "string" } },
          required: ["city"],
        },
      },
    ];
    const question: Anthropic.MessageParam = {
      role: "user",
      content: "What's the weather in Paris?",
    };
    const first = await client.messages.create({
      model: "handoff",
      max_tokens: 256,
      tools,
      messages: [question],
    });
    expect(first.stop_reason).toBe("tool_use");
    const call = first.content.find((block) => block.type === "tool_use");
    if (call?.type !== "tool_use") throw new Error("expected a tool_use block");
    expect(call.name).toBe("get_weather");
    expect(call.input).toEqual({ city: "Paris" });
    // The mesh offered the client's tool to the model in its own wire shape.
    const [offer] = openaiUpstream.received(COMPLETIONS, "gpt-4o");
    const offered = offer?.body.tools as Array<{ function: { name: string; parameters: unknown } }>;
    expect(offered.find((t) => t.function.name === "get_weather")?.function.parameters).toEqual(
      tools[0]?.input_schema,
    );

    const second = await client.messages.create({
      model: "handoff",
      max_tokens: 256,
      tools,
      messages: [
        question,
        { role: "assistant", content: first.content },
        {
          role: "user",
          content: [{ type: "tool_result", tool_use_id: call.id, content: "18°C and sunny" }],
        },
      ],
    });
    expect(second.stop_reason).toBe("end_turn");
    expect(textOf(second)).toBe("The tool answered: 18°C and sunny.");
    const fedTo = openaiUpstream.received(COMPLETIONS, "gpt-4o").at(-1);
    // The client's conversation ends with the result; the tool loop's instruction follows it.
    const fed = (fedTo?.body.messages as Array<Record<string, unknown>> | undefined)?.at(-2);
    expect(fed).toEqual({ role: "tool", tool_call_id: call.id, content: "18°C and sunny" });
  });

  it("streams a tool call as input_json_delta, and takes back a failed tool_result (is_error)", async () => {
    const tools: Anthropic.Tool[] = [
      {
        name: "get_weather",
        input_schema: { type: "object", properties: { city: { type: "string" } } },
      },
    ];
    const question: Anthropic.MessageParam = { role: "user", content: "Weather in Paris today?" };
    const stream = client.messages.stream({
      model: "handoff",
      max_tokens: 256,
      tools,
      messages: [question],
    });
    const json: string[] = [];
    stream.on("inputJson", (partial) => json.push(partial));
    const first = await stream.finalMessage();
    expect(first.stop_reason).toBe("tool_use");
    const call = first.content.find((block) => block.type === "tool_use");
    if (call?.type !== "tool_use") throw new Error("expected a tool_use block");
    expect(call.input).toEqual({ city: "Paris" });
    expect(json.join("")).toBe('{"city":"Paris"}');

    const second = await client.messages.create({
      model: "handoff",
      max_tokens: 256,
      tools,
      messages: [
        question,
        // The streamed message, exactly as the SDK assembled it.
        { role: "assistant", content: first.content },
        {
          role: "user",
          content: [
            {
              type: "tool_result",
              tool_use_id: call.id,
              content: [{ type: "text", text: "no such city" }],
              is_error: true,
            },
          ],
        },
      ],
    });
    // The model was told the call failed, as the mesh marks failed tool runs.
    expect(textOf(second)).toBe("The tool answered: error: no such city.");
  });

  it("refuses a field the mesh cannot honour with a 400 invalid_request_error naming it", async () => {
    const error = await client.messages
      .create({
        model: "handoff",
        max_tokens: 2048,
        thinking: { type: "enabled", budget_tokens: 1024 },
        messages: [{ role: "user", content: "Hello there" }],
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(Anthropic.BadRequestError);
    const apiError = error as InstanceType<typeof Anthropic.BadRequestError>;
    expect(apiError.status).toBe(400);
    expect(apiError.type).toBe("invalid_request_error");
    expect(apiError.apiMessage).toContain("thinking");
    expect(apiError.errorCode).toBe("HANDOFF_ERR_VALIDATION");
    expect(apiError.error).toMatchObject({
      type: "error",
      error: { type: "invalid_request_error", details: { issues: [{ path: "thinking" }] } },
    });

    const image = await client.messages
      .create({
        model: "handoff",
        max_tokens: 64,
        messages: [
          {
            role: "user",
            content: [
              { type: "text", text: "What is this?" },
              {
                type: "image",
                source: { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" },
              },
            ],
          },
        ],
      })
      .then(
        () => undefined,
        (e: unknown) => e as InstanceType<typeof Anthropic.BadRequestError>,
      );
    expect(image?.status).toBe(400);
    expect(image?.apiMessage).toContain("messages[0].content[1].type");
    expect(image?.apiMessage).toContain('"image" is not supported');
    expect(openaiUpstream.requests).toHaveLength(0);
    expect(anthropicUpstream.requests).toHaveLength(0);
  });

  it("answers a wrong key with a 401 authentication_error, and takes the key as a Bearer token too", async () => {
    const wrong = new Anthropic({ baseURL, apiKey: "sk-not-this-one", maxRetries: 0 });
    const error = await wrong.messages
      .create({ model: "handoff", max_tokens: 64, messages: [{ role: "user", content: "Hi" }] })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(Anthropic.AuthenticationError);
    const apiError = error as InstanceType<typeof Anthropic.AuthenticationError>;
    expect(apiError.status).toBe(401);
    expect(apiError.type).toBe("authentication_error");
    expect(apiError.error).toMatchObject({
      type: "error",
      error: { type: "authentication_error", details: { error_code: "HANDOFF_ERR_UNAUTHORIZED" } },
    });
    expect(JSON.stringify(apiError.error)).not.toContain(KEY);
    expect(openaiUpstream.requests).toHaveLength(0);

    const bearer = new Anthropic({ baseURL, authToken: KEY, maxRetries: 0 });
    const message = await bearer.messages.create({
      model: "handoff",
      max_tokens: 64,
      messages: [{ role: "user", content: "Hello there" }],
    });
    expect(textOf(message)).toBe("Hello from gpt-4o-mini. You asked: Hello there");
  });

  it("raises the mesh's failure in the SDK: a 502 api_error naming Handoff's code", async () => {
    // claude-heavy's attempts (its default `retries`), with no deployment to fall back to.
    const attempts = 2;
    anthropicUpstream.enqueue(
      MESSAGES,
      ...Array.from({ length: attempts }, () => anthropicError(500, "Internal server error")),
    );
    const error = await client.messages
      .create({
        model: "handoff/heavy",
        max_tokens: 64,
        messages: [{ role: "user", content: "Design a ledger." }],
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(Anthropic.InternalServerError);
    const apiError = error as InstanceType<typeof Anthropic.InternalServerError>;
    expect(apiError.status).toBe(502);
    expect(apiError.type).toBe("api_error");
    expect(apiError.errorCode).toBe("HANDOFF_ERR_RETRIES_EXHAUSTED");
    expect(apiError.apiMessage).toContain(`every attempt failed, ${attempts} attempts`);
    expect(apiError.error).toMatchObject({
      error: { details: { job_id: expect.any(String) } },
    });
    expect(anthropicUpstream.received(MESSAGES)).toHaveLength(attempts);
  });

  it("ends a stream that breaks after output began with an error event the SDK raises", async () => {
    openaiUpstream.enqueue(COMPLETIONS, {
      kind: "sse",
      events: openaiStream("gpt-4o-mini", {
        kind: "text",
        text: "this answer will be cut off before its end arrives",
      }),
      cut: true,
    });
    const stream = await client.messages.create({
      model: "handoff",
      max_tokens: 64,
      stream: true,
      messages: [{ role: "user", content: "Hi again!" }],
    });
    const types: string[] = [];
    const consume = async () => {
      for await (const event of stream) types.push(event.type);
    };
    const error = await consume().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(Anthropic.APIError);
    const apiError = error as InstanceType<typeof Anthropic.APIError>;
    expect(apiError.type).toBe("api_error");
    expect(apiError.message).toMatch(/after streaming began/);
    expect(apiError.errorCode).toMatch(/^HANDOFF_ERR_/);
    expect(types.slice(0, 3)).toEqual([
      "message_start",
      "content_block_start",
      "content_block_delta",
    ]);
    expect(types).not.toContain("message_stop");
  });

  it("replays a request sent again with the same Idempotency-Key, running the job once", async () => {
    const body = {
      model: "handoff",
      max_tokens: 64,
      messages: [{ role: "user" as const, content: "Hello idempotent world" }],
    };
    const headers = { "Idempotency-Key": `anthropic-door-${Date.now()}` };
    const first = await client.messages.create(body, { headers }).withResponse();
    const again = await client.messages.create(body, { headers }).withResponse();
    expect(again.data.id).toBe(first.data.id);
    expect(textOf(again.data)).toBe(textOf(first.data));
    expect(again.response.headers.get("idempotent-replayed")).toBe("true");
    expect(first.response.headers.get("idempotent-replayed")).toBeNull();
    expect(openaiUpstream.received(COMPLETIONS)).toHaveLength(1);
  });
});
