import { createOpenAI } from "@ai-sdk/openai";
import { HandoffConfig, simProfile } from "@handoff/config";
import type { HandoffInfo } from "@handoff/contracts";
import type { MeshService } from "@handoff/mesh";
import { createModel, ModelRouter } from "@handoff/providers";
import {
  anthropicModelReply,
  type NatsHandle,
  openaiCompletion,
  openaiModelReply,
  startNats,
  UpstreamServer,
} from "@handoff/testkit";
import { tool as langchainTool } from "@langchain/core/tools";
import { ChatOpenAI } from "@langchain/openai";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { generateObject, generateText, Output, stepCountIs, streamText, tool } from "ai";
import { Ajv2020 } from "ajv/dist/2020.js";
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { createClassifierService } from "../../services/classifier/src/service.js";
import { createGateway, type Gateway } from "../../services/gateway/src/service.js";
import { createHeavyReasonerService } from "../../services/heavy-reasoner/src/service.js";
import { createToolExecutorService } from "../../services/tool-executor/src/service.js";

/**
 * Third-party clients against the gateway of the default profile (no config: every tier is the
 * simulated `sim` model, as `handoff up` runs it): the official `openai` SDK, the Vercel AI SDK's
 * OpenAI chat provider, and LangChain's `ChatOpenAI`. Each uses the features clients rely on
 * (streaming, tools, structured output, model lookup) and checks what comes back.
 */

const logger = pino({ level: "silent" });

let nats: NatsHandle;
let nc: NatsConnection;
let gateway: Gateway;
let baseURL: string;
let client: OpenAI;
const workers: MeshService[] = [];

beforeAll(async () => {
  nats = await startNats();
  nc = await connect({ servers: nats.url });
  const deps = { nc, config: simProfile, logger, version: "0.0.0-test", concurrency: 4 };
  workers.push(
    createClassifierService(deps),
    createToolExecutorService(deps),
    createHeavyReasonerService(deps),
  );
  for (const worker of workers) await worker.start();
  gateway = createGateway({ ...deps, host: "127.0.0.1", port: 0 });
  baseURL = `${await gateway.start()}/v1`;
  client = new OpenAI({ baseURL, apiKey: "not-needed", maxRetries: 0 });
});

afterAll(async () => {
  await gateway?.stop();
  for (const worker of workers) await worker.stop();
  await nc?.close();
  await nats?.stop();
});

/** The sim's prose answer to `question`, from the tier `model` names. */
const simAnswer = (model: string, question: string) =>
  `[simulated ${model}] This is a simulated answer; configure a real provider for a real one.\nQuestion: "${question}"`;

const handoffOf = (value: unknown) => (value as { handoff: HandoffInfo }).handoff;

const weatherParameters = {
  type: "object",
  properties: { city: { type: "string" } },
  required: ["city"],
  additionalProperties: false,
};

const City = z.object({
  city: z.string(),
  country: z.string(),
  population: z.number().int(),
  coastal: z.boolean(),
  landmarks: z.array(z.object({ name: z.string(), built: z.number().int() })),
  climate: z.enum(["oceanic", "continental", "mediterranean"]),
});

/** Valid against the JSON Schema zod writes for `City`, checked apart from zod. */
function expectCity(value: unknown): void {
  const validate = new Ajv2020({ strict: false }).compile(z.toJSONSchema(City));
  expect(validate(value), JSON.stringify(validate.errors)).toBe(true);
  expect(value).toMatchObject({
    city: "Paris",
    country: "sim country",
    population: 1,
    coastal: true,
    landmarks: [{ name: "sim name", built: 1 }],
    climate: "oceanic",
  });
}

describe("the official openai SDK", () => {
  const tools: OpenAI.Chat.Completions.ChatCompletionTool[] = [
    {
      type: "function",
      function: { name: "get_weather", parameters: weatherParameters },
    },
    {
      type: "function",
      function: { name: "local_news", parameters: weatherParameters },
    },
  ];

  it("chat.completions.create: a plain answer, labelled simulated", async () => {
    const completion = await client.chat.completions.create({
      model: "handoff",
      messages: [{ role: "user", content: "Hello there" }],
    });
    expect(completion.choices[0]?.message.content).toBe(simAnswer("sim-light", "Hello there"));
    expect(completion.choices[0]?.finish_reason).toBe("stop");
    expect(completion.choices[0]?.logprobs).toBeNull();
    expect(completion.usage?.total_tokens).toBeGreaterThan(0);
    expect(handoffOf(completion)).toMatchObject({ route: ["classifier"], simulated: true });
  });

  it("chat.completions.create with stream: word deltas that add up to the answer, then usage", async () => {
    const stream = await client.chat.completions.create({
      model: "handoff",
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: "user", content: "Stream me a greeting" }],
    });
    let content = "";
    let deltas = 0;
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      const piece = chunk.choices[0]?.delta.content;
      if (piece) {
        content += piece;
        deltas++;
      }
      finish = chunk.choices[0]?.finish_reason ?? finish;
      usage = chunk.usage ?? usage;
    }
    expect(content).toBe(simAnswer("sim-light", "Stream me a greeting"));
    expect(deltas).toBeGreaterThan(10);
    expect(finish).toBe("stop");
    expect(usage?.completion_tokens).toBeGreaterThan(0);
  });

  it("tools: parallel calls to the tools the question names, then an answer from the results", async () => {
    const question = {
      role: "user" as const,
      content: "What's the weather and the local news in Paris?",
    };
    const first = await client.chat.completions.create({
      model: "handoff",
      messages: [question],
      tools,
    });
    const choice = first.choices[0];
    expect(choice?.finish_reason).toBe("tool_calls");
    const calls = (choice?.message.tool_calls ?? []).flatMap((c) =>
      c.type === "function" ? [c] : [],
    );
    expect(calls.map((c) => c.function)).toEqual([
      { name: "get_weather", arguments: '{"city":"Paris"}' },
      { name: "local_news", arguments: '{"city":"Paris"}' },
    ]);
    const second = await client.chat.completions.create({
      model: "handoff",
      tools,
      messages: [
        question,
        choice?.message as OpenAI.Chat.Completions.ChatCompletionMessageParam,
        { role: "tool", tool_call_id: calls[0]?.id ?? "", content: "18°C and sunny" },
        { role: "tool", tool_call_id: calls[1]?.id ?? "", content: "A new bridge opened" },
      ],
    });
    expect(second.choices[0]?.message.content).toBe(
      "get_weather returned: 18°C and sunny local_news returned: A new bridge opened",
    );

    // parallel_tool_calls: false, one call a turn.
    const single = await client.chat.completions.create({
      model: "handoff",
      messages: [question],
      tools,
      parallel_tool_calls: false,
    });
    expect(single.choices[0]?.message.tool_calls?.map((c) => c.id)).toEqual([calls[0]?.id]);
  });

  it("tools: tool_choice required is met by the client's tool, not the mesh's calculator", async () => {
    const completion = await client.chat.completions.create({
      model: "handoff",
      messages: [{ role: "user", content: "What is 17 * 23?" }],
      tools,
      tool_choice: "required",
    });
    expect(completion.choices[0]?.finish_reason).toBe("tool_calls");
    const call = completion.choices[0]?.message.tool_calls?.[0];
    expect(call?.type === "function" ? call.function.name : undefined).toBe("get_weather");
    expect(handoffOf(completion).route).toEqual(["classifier", "tool-executor"]);
  });

  it("chat.completions.parse with a zod response_format: a parsed object valid against the schema", async () => {
    const completion = await client.chat.completions.parse({
      model: "handoff",
      messages: [{ role: "user", content: "Describe the city of Paris as JSON." }],
      response_format: zodResponseFormat(City, "city"),
    });
    const message = completion.choices[0]?.message;
    expect(message?.parsed).toEqual(JSON.parse(message?.content ?? ""));
    expectCity(message?.parsed);
  });

  it("logprobs: the answer's tokens with their alternatives", async () => {
    const completion = await client.chat.completions.create({
      model: "handoff",
      messages: [{ role: "user", content: "Hello there" }],
      logprobs: true,
      top_logprobs: 2,
    });
    const tokens = completion.choices[0]?.logprobs?.content ?? [];
    expect(tokens.map((t) => t.token).join("")).toBe(simAnswer("sim-light", "Hello there"));
    for (const token of tokens) {
      expect(token.logprob).toBeLessThanOrEqual(0);
      expect(token.top_logprobs).toHaveLength(2);
      expect(token.top_logprobs[0]?.token).toBe(token.token);
    }
  });

  it("models.retrieve: a served model and an encoded pinned name", async () => {
    const model = await client.models.retrieve("handoff");
    expect(model).toMatchObject({ id: "handoff", object: "model", owned_by: "handoff" });
    const pinned = await client.models.retrieve("handoff/light");
    expect(pinned).toMatchObject({
      id: "handoff/light",
      handoff: { route: "pinned", tier: "light" },
    });
    const deployment = await client.models.retrieve("sim:sim-heavy");
    expect(deployment).toMatchObject({ owned_by: "sim", handoff: { tier: "heavy" } });
  });

  it("an unknown model is a NotFoundError, code model_not_found, on retrieve and on chat", async () => {
    const retrieve = await client.models.retrieve("gpt-4o-mini").catch((e: unknown) => e);
    expect(retrieve).toBeInstanceOf(OpenAI.NotFoundError);
    expect(retrieve).toMatchObject({ status: 404, code: "model_not_found", param: "model" });
    const chat = await client.chat.completions
      .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
      .catch((e: unknown) => e);
    expect(chat).toBeInstanceOf(OpenAI.NotFoundError);
    expect(chat).toMatchObject({ code: "model_not_found", param: "model" });
    expect((chat as Error).message).toContain("`gpt-4o-mini` does not exist");
  });
});

describe("the Vercel AI SDK's OpenAI chat provider", () => {
  const model = () => createOpenAI({ baseURL, apiKey: "not-needed" }).chat("handoff");

  it("generateText: the answer and its usage", async () => {
    const result = await generateText({ model: model(), prompt: "Hello from the AI SDK" });
    expect(result.text).toBe(simAnswer("sim-light", "Hello from the AI SDK"));
    expect(result.finishReason).toBe("stop");
    expect(result.usage.outputTokens).toBeGreaterThan(0);
  });

  it("streamText: the text as it streams", async () => {
    const result = streamText({ model: model(), prompt: "Stream from the AI SDK" });
    const pieces: string[] = [];
    for await (const piece of result.textStream) pieces.push(piece);
    expect(pieces.length).toBeGreaterThan(10);
    expect(pieces.join("")).toBe(simAnswer("sim-light", "Stream from the AI SDK"));
    expect(await result.finishReason).toBe("stop");
  });

  it("tools: the model calls the SDK's tool, which runs, and answers from its result", async () => {
    const cities: string[] = [];
    const result = await generateText({
      model: model(),
      prompt: "What's the weather in Paris?",
      tools: {
        getWeather: tool({
          description: "The weather in a city",
          inputSchema: z.object({ city: z.string() }),
          execute: async ({ city }) => {
            cities.push(city);
            return `18°C and sunny in ${city}`;
          },
        }),
      },
      stopWhen: stepCountIs(3),
    });
    expect(cities).toEqual(["Paris"]);
    expect(result.steps).toHaveLength(2);
    expect(result.steps[0]?.toolCalls.map((c) => [c.toolName, c.input])).toEqual([
      ["getWeather", { city: "Paris" }],
    ]);
    expect(result.text).toContain("getWeather returned:");
    expect(result.text).toContain("18°C and sunny in Paris");
  });

  it("generateObject with a zod schema: an object valid against it", async () => {
    const { object } = await generateObject({
      model: model(),
      schema: City,
      prompt: "Describe the city of Paris.",
    });
    expectCity(object);
    // And its successor, generateText with an object output.
    const { output } = await generateText({
      model: model(),
      output: Output.object({ schema: City }),
      prompt: "Describe the city of Paris.",
    });
    expectCity(output);
  });
});

describe("structured output through the Responses door", () => {
  it("the openai SDK's responses.create with text.format json_schema: JSON valid against it", async () => {
    const response = await client.responses.create({
      model: "handoff",
      input: "Describe the city of Paris.",
      text: {
        format: {
          type: "json_schema",
          name: "city",
          schema: z.toJSONSchema(City) as Record<string, unknown>,
          strict: true,
        },
      },
    });
    expectCity(JSON.parse(response.output_text));
  });

  it("the AI SDK's default (Responses) provider: generateObject and an object output", async () => {
    const model = createOpenAI({ baseURL, apiKey: "not-needed" })("handoff");
    const { object } = await generateObject({
      model,
      schema: City,
      prompt: "Describe the city of Paris.",
      providerOptions: { openai: { store: false } },
    });
    expectCity(object);
  });
});

describe("LangChain's ChatOpenAI", () => {
  const chat = () =>
    new ChatOpenAI({ model: "handoff", configuration: { baseURL }, apiKey: "not-needed" });

  it("invoke: the answer as an AIMessage", async () => {
    const message = await chat().invoke("Hello from LangChain");
    expect(message.content).toBe(simAnswer("sim-light", "Hello from LangChain"));
    expect(message.usage_metadata?.output_tokens).toBeGreaterThan(0);
  });

  it("stream: chunks that add up to the answer", async () => {
    let text = "";
    let chunks = 0;
    for await (const chunk of await chat().stream("Stream from LangChain")) {
      if (typeof chunk.content === "string" && chunk.content !== "") {
        text += chunk.content;
        chunks++;
      }
    }
    expect(chunks).toBeGreaterThan(10);
    expect(text).toBe(simAnswer("sim-light", "Stream from LangChain"));
  });

  it("bindTools: a tool call with arguments its schema accepts", async () => {
    const getWeather = langchainTool(async ({ city }: { city: string }) => `sunny in ${city}`, {
      name: "get_weather",
      description: "The weather in a city",
      schema: z.object({ city: z.string() }),
    });
    const message = await chat().bindTools([getWeather]).invoke("What's the weather in Paris?");
    expect(message.tool_calls?.map((c) => [c.name, c.args])).toEqual([
      ["get_weather", { city: "Paris" }],
    ]);
    // The tool runs on what the model sent.
    const call = message.tool_calls?.[0];
    if (!call) throw new Error("expected a tool call");
    expect((await getWeather.invoke(call)).content).toBe("sunny in Paris");
  });

  it("withStructuredOutput with a zod schema: a parsed object valid against it", async () => {
    const city = await chat().withStructuredOutput(City).invoke("Describe the city of Paris.");
    expectCity(city);
  });
});

/**
 * The same options on real wire formats: a mesh whose light tier is OpenAI-compatible and whose
 * mid and heavy tiers are Anthropic, each a local upstream that records what it was sent.
 */
describe("the options on the providers' wires, through the gateway", () => {
  const env = { UPSTREAM_OPENAI_KEY: "sk-upstream", UPSTREAM_ANTHROPIC_KEY: "sk-ant-upstream" };
  let meshNats: NatsHandle;
  let meshNc: NatsConnection;
  let openaiUpstream: UpstreamServer;
  let anthropicUpstream: UpstreamServer;
  let meshGateway: Gateway;
  let sdk: OpenAI;
  const meshWorkers: MeshService[] = [];
  const weather: OpenAI.Chat.Completions.ChatCompletionTool = {
    type: "function",
    function: { name: "get_weather", parameters: weatherParameters },
  };

  beforeAll(async () => {
    meshNats = await startNats();
    meshNc = await connect({ servers: meshNats.url });
    openaiUpstream = await UpstreamServer.start(openaiModelReply);
    anthropicUpstream = await UpstreamServer.start(anthropicModelReply);
    const anthropic = {
      provider: "anthropic",
      base_url: anthropicUpstream.url,
      api_key_env: "UPSTREAM_ANTHROPIC_KEY",
    };
    const config = HandoffConfig.parse({
      tiers: {
        light: [
          {
            id: "oa-light",
            provider: "openai-compatible",
            model: "gpt-4o-mini",
            base_url: `${openaiUpstream.url}/v1`,
            api_key_env: "UPSTREAM_OPENAI_KEY",
          },
        ],
        mid: [{ ...anthropic, id: "claude-mid", model: "claude-haiku-4-5" }],
        heavy: [{ ...anthropic, id: "claude-heavy", model: "claude-sonnet-4-5" }],
      },
      gateway: { model_aliases: { "gpt-4o-mini": "handoff/light" } },
    });
    const router = new ModelRouter(config, (d) => createModel(d, env));
    const deps = { nc: meshNc, config, logger, version: "0.0.0-test", concurrency: 2, router };
    meshWorkers.push(
      createClassifierService(deps),
      createToolExecutorService(deps),
      createHeavyReasonerService(deps),
    );
    for (const worker of meshWorkers) await worker.start();
    meshGateway = createGateway({ ...deps, host: "127.0.0.1", port: 0 });
    sdk = new OpenAI({
      baseURL: `${await meshGateway.start()}/v1`,
      apiKey: "not-needed",
      maxRetries: 0,
    });
  });

  afterAll(async () => {
    await meshGateway?.stop();
    for (const worker of meshWorkers) await worker.stop();
    await openaiUpstream?.close();
    await anthropicUpstream?.close();
    await meshNc?.close();
    await meshNats?.stop();
  });

  it("logprobs: passed to the OpenAI-compatible tier and returned, through an alias of it", async () => {
    const text = "Hello from gpt-4o-mini. You asked: Hi";
    openaiUpstream.enqueue("/v1/chat/completions", {
      kind: "json",
      body: openaiCompletion("gpt-4o-mini", { kind: "text", text }, undefined, {
        logprobs: [-0.25, -0.5, -0.125],
      }),
    });
    const completion = await sdk.chat.completions.create({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Hi" }],
      logprobs: true,
      top_logprobs: 2,
    });
    expect(completion.choices[0]?.message.content).toBe(text);
    const tokens = completion.choices[0]?.logprobs?.content ?? [];
    expect(tokens.map((t) => t.token).join("")).toBe(text);
    expect(tokens.map((t) => t.logprob)).toEqual([-0.25, -0.5, -0.125]);
    expect(openaiUpstream.requests.at(-1)?.body).toMatchObject({
      model: "gpt-4o-mini",
      logprobs: true,
      top_logprobs: 2,
    });
  });

  it("logprobs: a 400 naming the field when an Anthropic tier may answer, before any model call", async () => {
    const before = anthropicUpstream.requests.length + openaiUpstream.requests.length;
    for (const model of ["handoff", "handoff/mid"]) {
      const error = await sdk.chat.completions
        .create({ model, messages: [{ role: "user", content: "Hi" }], logprobs: true })
        .catch((e: unknown) => e);
      expect(error, model).toBeInstanceOf(OpenAI.BadRequestError);
      expect(error).toMatchObject({ param: "logprobs", code: "HANDOFF_ERR_UNSUPPORTED" });
      expect((error as Error).message).toContain("claude-mid (anthropic)");
    }
    expect(anthropicUpstream.requests.length + openaiUpstream.requests.length).toBe(before);
  });

  it("parallel_tool_calls: as is on OpenAI's wire, as disable_parallel_tool_use on Anthropic's", async () => {
    const ask = (model: string) =>
      sdk.chat.completions.create({
        model,
        messages: [{ role: "user", content: "What's the weather in Paris?" }],
        tools: [weather],
        parallel_tool_calls: false,
      });
    const light = await ask("handoff/light");
    expect(light.choices[0]?.finish_reason).toBe("tool_calls");
    expect(openaiUpstream.requests.at(-1)?.body.parallel_tool_calls).toBe(false);
    const mid = await ask("handoff/mid");
    expect(mid.choices[0]?.finish_reason).toBe("tool_calls");
    expect(anthropicUpstream.requests.at(-1)?.body.tool_choice).toEqual({
      type: "auto",
      disable_parallel_tool_use: true,
    });
  });
});
