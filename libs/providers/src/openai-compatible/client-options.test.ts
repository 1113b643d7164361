import { Deployment } from "@handoff/config";
import type { ToolDefinition } from "@handoff/contracts";
import {
  openaiCompletion,
  openaiModelReply,
  openaiStream,
  sseEvent,
  UpstreamServer,
} from "@handoff/testkit";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { ChatRequest, ChatStreamEvent } from "../types.js";
import { OpenAICompatibleModel } from "./adapter.js";

/**
 * The options clients set that the adapter passes through (`parallel_tool_calls`, `logprobs`,
 * `top_logprobs`), against the testkit's upstream speaking OpenAI's wire format, which records
 * every request it gets.
 */

const PATH = "/v1/chat/completions";
let upstream: UpstreamServer;
let model: OpenAICompatibleModel;

beforeAll(async () => {
  upstream = await UpstreamServer.start(openaiModelReply);
  model = new OpenAICompatibleModel(
    Deployment.parse({
      provider: "openai-compatible",
      model: "gpt-4o-mini",
      base_url: `${upstream.url}/v1`,
      api_key_env: "KEY",
    }),
    { env: { KEY: "sk-test" } },
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
const hello: ChatRequest = { messages: [{ role: "user", content: "Hello there" }] };

async function collect(events: AsyncIterable<ChatStreamEvent>): Promise<ChatStreamEvent[]> {
  const out: ChatStreamEvent[] = [];
  for await (const event of events) out.push(event);
  return out;
}

describe("parallel_tool_calls", () => {
  it("is sent as the client set it, beside the tools", async () => {
    const request: ChatRequest = {
      messages: [{ role: "user", content: "What's the weather in Paris?" }],
      tools: [weather],
    };
    await model.chat({ ...request, params: { parallel_tool_calls: false } });
    await collect(model.stream({ ...request, params: { parallel_tool_calls: true } }));
    await model.chat(request);
    const [off, on, unset] = upstream.received(PATH);
    expect(off?.body.parallel_tool_calls).toBe(false);
    expect(on?.body.parallel_tool_calls).toBe(true);
    expect(on?.body.stream).toBe(true);
    expect(unset?.body).not.toHaveProperty("parallel_tool_calls");
  });

  it("is left out without tools, which OpenAI would refuse", async () => {
    await model.chat({ ...hello, params: { parallel_tool_calls: false } });
    expect(upstream.received(PATH)[0]?.body).not.toHaveProperty("parallel_tool_calls");
  });
});

describe("logprobs for the client", () => {
  /** A completion whose tokens carry `top_logprobs`, as OpenAI answers `top_logprobs: 2`. */
  function withAlternatives(): ReturnType<typeof openaiCompletion> {
    const completion = openaiCompletion(
      "gpt-4o-mini",
      { kind: "text", text: "Hi there" },
      undefined,
      { logprobs: [-0.1, -0.2] },
    );
    const choice = completion.choices[0] as unknown as {
      logprobs: { content: Array<Record<string, unknown>> };
    };
    for (const token of choice.logprobs.content) {
      token.top_logprobs = [
        { token: token.token, logprob: token.logprob, bytes: token.bytes },
        { token: "Yo", logprob: -3.5, bytes: [89, 111] },
      ];
    }
    return completion;
  }

  it("sends logprobs and top_logprobs, and returns the tokens with their alternatives", async () => {
    upstream.enqueue(PATH, { kind: "json", body: withAlternatives() });
    const result = await model.chat({ ...hello, params: { logprobs: true, top_logprobs: 2 } });
    const sent = upstream.received(PATH)[0]?.body;
    expect(sent).toMatchObject({ logprobs: true, top_logprobs: 2 });
    expect(result.choiceLogprobs).toEqual({
      content: [
        {
          token: "Hi t",
          logprob: -0.1,
          bytes: [72, 105, 32, 116],
          top_logprobs: [
            { token: "Hi t", logprob: -0.1, bytes: [72, 105, 32, 116] },
            { token: "Yo", logprob: -3.5, bytes: [89, 111] },
          ],
        },
        {
          token: "here",
          logprob: -0.2,
          bytes: [104, 101, 114, 101],
          top_logprobs: [
            { token: "here", logprob: -0.2, bytes: [104, 101, 114, 101] },
            { token: "Yo", logprob: -3.5, bytes: [89, 111] },
          ],
        },
      ],
      refusal: null,
    });
    // The mesh's own numbers are for the mesh's own requests only.
    expect(result.logprobs).toBeUndefined();
  });

  it("gathers a streamed answer's tokens, chunk by chunk, in order", async () => {
    upstream.enqueue(PATH, {
      kind: "sse",
      events: openaiStream("gpt-4o-mini", { kind: "text", text: "one two three" }, undefined, {
        logprobs: [-0.5, -0.25, -0.125],
      }),
    });
    const events = await collect(model.stream({ ...hello, params: { logprobs: true } }));
    const done = events.at(-1);
    if (done?.type !== "done") throw new Error("expected done");
    expect(upstream.received(PATH)[0]?.body).toMatchObject({ logprobs: true, stream: true });
    expect(upstream.received(PATH)[0]?.body).not.toHaveProperty("top_logprobs");
    const tokens = done.result.choiceLogprobs?.content ?? [];
    expect(tokens.map((t) => t.token).join("")).toBe("one two three");
    expect(tokens.map((t) => t.logprob)).toEqual([-0.5, -0.25, -0.125]);
    expect(tokens[0]?.top_logprobs).toEqual([]);
  });

  it("fills what a compatible server leaves out, and reads odd bytes as none", async () => {
    upstream.enqueue(PATH, {
      kind: "json",
      body: {
        model: "llama3.2",
        choices: [
          {
            index: 0,
            message: { role: "assistant", content: "ok" },
            finish_reason: "stop",
            logprobs: { content: [{ token: "ok", logprob: -0.01, bytes: "6f6b", id: 7 }] },
          },
        ],
      },
    });
    const result = await model.chat({ ...hello, params: { logprobs: true } });
    expect(result.choiceLogprobs).toEqual({
      content: [{ token: "ok", logprob: -0.01, bytes: null, top_logprobs: [] }],
      refusal: null,
    });
  });

  it("sends nothing and returns nothing when the client did not ask", async () => {
    upstream.enqueue(PATH, { kind: "json", body: withAlternatives() });
    const result = await model.chat({ ...hello, params: { top_logprobs: 2 } });
    expect(upstream.received(PATH)[0]?.body).not.toHaveProperty("logprobs");
    expect(upstream.received(PATH)[0]?.body).not.toHaveProperty("top_logprobs");
    expect(result.choiceLogprobs).toBeUndefined();
  });

  it("drops malformed entries, never the answer", async () => {
    upstream.enqueue(PATH, {
      kind: "sse",
      events: [
        sseEvent({
          model: "gpt-4o-mini",
          choices: [{ index: 0, delta: { content: "fine" }, logprobs: { content: "nonsense" } }],
        }),
        sseEvent({
          model: "gpt-4o-mini",
          choices: [{ index: 0, delta: {}, finish_reason: "stop" }],
        }),
        sseEvent("[DONE]"),
      ],
    });
    const events = await collect(model.stream({ ...hello, params: { logprobs: true } }));
    const done = events.at(-1);
    if (done?.type !== "done") throw new Error("expected done");
    expect(done.result.message.content).toBe("fine");
    expect(done.result.choiceLogprobs).toBeUndefined();
  });
});
