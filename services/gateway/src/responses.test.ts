import {
  ChatCompletionRequest,
  HandoffError,
  type JobRecord,
  type JobResult,
} from "@handoff/contracts";
import { testUsage } from "@handoff/testkit";
import { describe, expect, it } from "vitest";
import { errorBody } from "./errors.js";
import {
  chatRequestFrom,
  failedResponse,
  parseResponsesRequest,
  pendingResponse,
  ResponseEvents,
  ResponseObject,
  type ResponseStreamEvent,
  ResponseStreamEvent as ResponseStreamEventSchema,
  type ResponsesRequest,
  responseFromRecord,
} from "./responses.js";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";

function parse(extra: Record<string, unknown> = {}): ResponsesRequest {
  return parseResponsesRequest({ model: "handoff", input: "What is 17 * 23?", ...extra });
}

/** The error a body is refused with. */
function refusalOf(body: Record<string, unknown>): HandoffError {
  try {
    parseResponsesRequest(body);
  } catch (error) {
    if (error instanceof HandoffError) return error;
    throw error;
  }
  throw new Error(`accepted: ${JSON.stringify(body)}`);
}

function record(result: Partial<JobResult> = {}): JobRecord & { result: JobResult } {
  return {
    id: "job_12345678",
    status: "succeeded",
    stage: "tool-executor",
    created_at: "2024-03-15T20:00:00.500Z",
    updated_at: "2024-03-15T20:00:02.000Z",
    hops: ["classifier", "tool-executor"],
    usage: [
      testUsage({ input_tokens: 30, output_tokens: 2 }),
      testUsage({ stage: "tool-executor", tier: "mid", model: "sim-mid", input_tokens: 120 }),
    ],
    cost_usd: 0.000_006,
    cost_by_stage: { classifier: 0.000_003, "tool-executor": 0.000_003 },
    result: {
      message: { role: "assistant", content: "17 * 23 = 391." },
      finish_reason: "stop",
      stage: "tool-executor",
      provider: "sim",
      model: "sim-mid",
      ...result,
    },
  };
}

describe("parseResponsesRequest and chatRequestFrom", () => {
  it("reads a string input as the user's message", () => {
    const chat = chatRequestFrom(parse());
    expect(chat).toEqual({
      model: "handoff",
      messages: [{ role: "user", content: "What is 17 * 23?" }],
      stream: false,
    });
    // What the mesh is given is a valid chat-completions request.
    expect(ChatCompletionRequest.safeParse(chat).success).toBe(true);
  });

  it("maps the settings the mesh honours onto the chat request", () => {
    const schema = { type: "object", properties: { n: { type: "number" } } };
    const chat = chatRequestFrom(
      parse({
        instructions: "Be exact.",
        temperature: 0.2,
        top_p: 0.5,
        max_output_tokens: 64,
        parallel_tool_calls: false,
        text: { format: { type: "json_schema", name: "answer", schema, strict: true } },
        stream: true,
        user: "u-1",
        metadata: { a: "b" },
        max_cost_usd: 0.5,
        handoff: { timeout_ms: 5_000 },
        store: true,
        safety_identifier: "s-1",
        prompt_cache_key: "k",
      }),
    );
    expect(chat).toEqual({
      model: "handoff",
      messages: [
        { role: "system", content: "Be exact." },
        { role: "user", content: "What is 17 * 23?" },
      ],
      parallel_tool_calls: false,
      temperature: 0.2,
      top_p: 0.5,
      max_tokens: 64,
      response_format: {
        type: "json_schema",
        json_schema: { name: "answer", schema, strict: true },
      },
      stream: true,
      user: "u-1",
      metadata: { a: "b" },
      max_cost_usd: 0.5,
      handoff: { timeout_ms: 5_000 },
    });
    for (const type of ["text", "json_object"] as const) {
      expect(chatRequestFrom(parse({ text: { format: { type } } })).response_format).toEqual({
        type,
      });
    }
  });

  it("maps function tools and tool_choice, named or not", () => {
    const parameters = { type: "object", properties: { city: { type: "string" } } };
    const body = parse({
      tools: [
        {
          type: "function",
          name: "get_weather",
          description: "Weather.",
          parameters,
          strict: false,
        },
        { type: "function", name: "clock", parameters: null, strict: null },
      ],
      tool_choice: { type: "function", name: "clock" },
    });
    const chat = chatRequestFrom(body);
    expect(chat.tools).toEqual([
      {
        type: "function",
        function: { name: "get_weather", description: "Weather.", parameters, strict: false },
      },
      { type: "function", function: { name: "clock" } },
    ]);
    expect(chat.tool_choice).toEqual({ type: "function", function: { name: "clock" } });
    for (const choice of ["auto", "none", "required"] as const) {
      const tools = [{ type: "function", name: "clock" }];
      expect(chatRequestFrom(parse({ tools, tool_choice: choice })).tool_choice).toBe(choice);
    }
  });

  it("turns input items into a chat conversation: calls join their assistant turn, outputs answer them", () => {
    const body = parse({
      instructions: "Use the tools.",
      input: [
        { role: "developer", content: "Cities are in France." },
        {
          role: "user",
          content: [
            { type: "input_text", text: "Weather in " },
            { type: "input_text", text: "Paris and Lyon?" },
          ],
        },
        // An earlier response's output, sent back as it came.
        {
          id: "msg_1",
          type: "message",
          role: "assistant",
          status: "completed",
          content: [{ type: "output_text", text: "Checking both.", annotations: [] }],
        },
        {
          type: "function_call",
          id: "fc_1",
          call_id: "call_a",
          name: "get_weather",
          arguments: '{"city":"Paris"}',
          status: "completed",
        },
        {
          type: "function_call",
          call_id: "call_b",
          name: "get_weather",
          arguments: '{"city":"Lyon"}',
        },
        { type: "function_call_output", call_id: "call_a", output: "18°C" },
        {
          type: "function_call_output",
          call_id: "call_b",
          output: [{ type: "input_text", text: "15°C" }],
        },
        { type: "message", role: "assistant", content: "Paris 18°C, Lyon 15°C." },
        { role: "user", content: "And Nice?" },
        {
          type: "function_call",
          call_id: "call_c",
          name: "get_weather",
          arguments: '{"city":"Nice"}',
        },
        { type: "function_call_output", call_id: "call_c", output: "21°C" },
      ],
    });
    const call = (id: string, city: string) => ({
      id,
      type: "function",
      function: { name: "get_weather", arguments: JSON.stringify({ city }) },
    });
    expect(chatRequestFrom(body).messages).toEqual([
      { role: "system", content: "Use the tools." },
      { role: "developer", content: "Cities are in France." },
      { role: "user", content: "Weather in Paris and Lyon?" },
      {
        role: "assistant",
        content: "Checking both.",
        tool_calls: [call("call_a", "Paris"), call("call_b", "Lyon")],
      },
      { role: "tool", tool_call_id: "call_a", content: "18°C" },
      { role: "tool", tool_call_id: "call_b", content: "15°C" },
      { role: "assistant", content: "Paris 18°C, Lyon 15°C." },
      { role: "user", content: "And Nice?" },
      { role: "assistant", content: null, tool_calls: [call("call_c", "Nice")] },
      { role: "tool", tool_call_id: "call_c", content: "21°C" },
    ]);
    expect(ChatCompletionRequest.safeParse(chatRequestFrom(body)).success).toBe(true);
  });

  it("accepts what the two SDKs send by default, and the 'off' values of what it cannot do", () => {
    // The AI SDK: messages without `type`, a string system message, function tools with strict.
    expect(() =>
      parse({
        input: [
          { role: "system", content: "be brief" },
          { role: "user", content: [{ type: "input_text", text: "hi" }] },
          { type: "function_call", call_id: "c1", name: "get_weather", arguments: "{}" },
          { type: "function_call_output", call_id: "c1", output: "sunny" },
        ],
        tools: [
          {
            type: "function",
            name: "get_weather",
            description: "w",
            parameters: { type: "object" },
            strict: false,
          },
        ],
        tool_choice: "auto",
      }),
    ).not.toThrow();
    expect(() =>
      parse({
        previous_response_id: null,
        conversation: null,
        background: false,
        reasoning: null,
        include: [],
        truncation: "disabled",
        top_logprobs: 0,
        store: false,
        stream_options: { include_obfuscation: false },
        text: { format: { type: "text" }, verbosity: null },
        max_tool_calls: 3,
        parallel_tool_calls: true,
      }),
    ).not.toThrow();
  });

  const unsupported: Array<[string, Record<string, unknown>, string, string]> = [
    ["an unknown field", { seed: 1 }, "seed", '"seed" is not supported'],
    [
      "an unknown field of an item",
      { input: [{ role: "user", content: "hi", name: "bob" }] },
      "input[0].name",
      '"name" is not supported',
    ],
    [
      "previous_response_id",
      { previous_response_id: "resp_1" },
      "previous_response_id",
      "no conversation state",
    ],
    ["conversation", { conversation: "conv_1" }, "conversation", "no conversation state"],
    ["background", { background: true }, "background", "POST /v1/jobs"],
    ["reasoning", { reasoning: { effort: "high" } }, "reasoning", "reasoning options"],
    ["include", { include: ["message.output_text.logprobs"] }, "include[0]", "include asks"],
    ["truncation auto", { truncation: "auto" }, "truncation", "truncation: auto"],
    ["logprobs", { top_logprobs: 5 }, "top_logprobs", "log-probabilities"],
    ["verbosity", { text: { verbosity: "low" } }, "text.verbosity", "verbosity"],
    [
      "stream obfuscation",
      { stream_options: { include_obfuscation: true } },
      "stream_options.include_obfuscation",
      "obfuscation",
    ],
    [
      "a built-in tool",
      { tools: [{ type: "web_search" }] },
      "tools[0].type",
      'tool type "web_search"',
    ],
    [
      "a built-in tool choice",
      { tool_choice: { type: "web_search_preview" } },
      "tool_choice.type",
      "tool_choice type",
    ],
    [
      "an image input",
      {
        input: [
          {
            role: "user",
            content: [
              { type: "input_text", text: "what is this?" },
              { type: "input_image", image_url: "https://example.com/a.png" },
            ],
          },
        ],
      },
      "input[0].content[1].type",
      'content type "input_image"',
    ],
    [
      "a file as function output",
      {
        input: [
          { type: "function_call", call_id: "c", name: "f", arguments: "{}" },
          {
            type: "function_call_output",
            call_id: "c",
            output: [{ type: "input_file", file_id: "file-1" }],
          },
        ],
      },
      "input[1].output[0].type",
      'content type "input_file"',
    ],
    [
      "an item reference",
      {
        input: [
          { role: "user", content: "hi" },
          { type: "item_reference", id: "msg_1" },
        ],
      },
      "input[1].type",
      "store to false",
    ],
    [
      "a reasoning item",
      { input: [{ type: "reasoning", id: "rs_1", summary: [] }] },
      "input[0].type",
      'input item type "reasoning"',
    ],
    [
      "a strict-off function field",
      {
        tools: [
          { type: "function", name: "f", parameters: null, strict: null, defer_loading: true },
        ],
      },
      "tools[0].defer_loading",
      '"defer_loading" is not supported',
    ],
  ];
  for (const [what, extra, param, says] of unsupported) {
    it(`refuses ${what} with a 400 HANDOFF_ERR_UNSUPPORTED naming ${param}`, () => {
      const error = refusalOf({ model: "handoff", input: "hi", ...extra });
      expect(error.status).toBe(400);
      expect(error.code).toBe("HANDOFF_ERR_UNSUPPORTED");
      expect(error.issues?.[0]?.path).toBe(param);
      expect(error.message).toContain(`${param}: `);
      expect(error.message).toContain(says);
      expect(errorBody(error).error).toMatchObject({ param, type: "invalid_request_error" });
    });
  }

  const invalid: Array<[string, Record<string, unknown>, string, string]> = [
    ["a missing model", { model: undefined }, "model", "expected string"],
    ["a temperature out of range", { temperature: 3 }, "temperature", "<=2"],
    [
      "an input neither string nor list",
      { input: 42 },
      "input",
      "expected string or array, got number",
    ],
    ["an empty input list", { input: [] }, "input", ">=1"],
    [
      "content neither string nor parts",
      { input: [{ role: "user", content: 7 }] },
      "input[0].content",
      "expected string or array",
    ],
    [
      "tool_choice required without tools",
      { tool_choice: "required" },
      "tool_choice",
      "needs at least one",
    ],
    ["an unknown tool_choice", { tool_choice: "sometimes" }, "tool_choice", "Invalid option"],
    ["a bad role", { input: [{ role: "tool", content: "x" }] }, "input[0].role", "Invalid option"],
    [
      "an output for no call",
      { input: [{ type: "function_call_output", call_id: "nope", output: "x" }] },
      "input[0].call_id",
      'no function_call with call_id "nope"',
    ],
    [
      "a call with no output",
      {
        input: [
          { role: "user", content: "hi" },
          { type: "function_call", call_id: "c9", name: "f", arguments: "{}" },
        ],
      },
      "input[1].call_id",
      'no function_call_output for call_id "c9"',
    ],
    [
      "a tool_choice naming no tool",
      { tool_choice: { type: "function", name: "ghost" } },
      "tool_choice.name",
      'no function tool named "ghost"',
    ],
    [
      "a bad tool name",
      { tools: [{ type: "function", name: "has space" }] },
      "tools[0].name",
      "tool names",
    ],
    [
      "a json_schema without a schema",
      { text: { format: { type: "json_schema", name: "x" } } },
      "text.format.schema",
      "expected record",
    ],
  ];
  for (const [what, extra, param, says] of invalid) {
    it(`refuses ${what} with a 400 HANDOFF_ERR_VALIDATION naming ${param}`, () => {
      const error = refusalOf({ model: "handoff", input: "hi", ...extra });
      expect(error.code).toBe("HANDOFF_ERR_VALIDATION");
      expect(error.issues?.[0]?.path).toBe(param);
      expect(error.issues?.[0]?.message).toContain(says);
      expect(errorBody(error).error.param).toBe(param);
    });
  }
});

describe("responseFromRecord", () => {
  it("reports the prompt tokens providers read from and wrote to their caches", () => {
    const cached = {
      ...record(),
      usage: [
        testUsage({ input_tokens: 1_200, cached_input_tokens: 1_024, output_tokens: 2 }),
        testUsage({
          stage: "tool-executor" as const,
          tier: "mid" as const,
          input_tokens: 500,
          cache_write_tokens: 300,
        }),
      ],
    };
    const response = responseFromRecord(cached, TRACE, parse());
    expect(ResponseObject.parse(response)).toEqual(response);
    expect(response.usage).toMatchObject({
      input_tokens: 1_700,
      input_tokens_details: { cached_tokens: 1_024, cache_write_tokens: 300 },
    });
  });

  it("writes a text answer as a completed response with one message, usage and the handoff report", () => {
    const body = parse({ instructions: "Be exact.", metadata: { k: "v" }, temperature: 0.1 });
    const response = responseFromRecord(record(), TRACE, body);
    expect(ResponseObject.parse(response)).toEqual(response);
    expect(response).toMatchObject({
      id: "resp_job_12345678",
      object: "response",
      created_at: 1_710_532_800,
      status: "completed",
      completed_at: 1_710_532_802,
      error: null,
      incomplete_details: null,
      model: "sim-mid",
      instructions: "Be exact.",
      metadata: { k: "v" },
      temperature: 0.1,
      top_p: null,
      tool_choice: "auto",
      tools: [],
      parallel_tool_calls: true,
      text: { format: { type: "text" } },
      output: [
        {
          id: "msg_job_12345678",
          type: "message",
          role: "assistant",
          status: "completed",
          content: [{ type: "output_text", text: "17 * 23 = 391.", annotations: [] }],
        },
      ],
      usage: {
        input_tokens: 150,
        input_tokens_details: { cached_tokens: 0, cache_write_tokens: 0 },
        output_tokens: 7,
        output_tokens_details: { reasoning_tokens: 0 },
        total_tokens: 157,
      },
    });
    expect(response.handoff).toMatchObject({
      job_id: "job_12345678",
      route: ["classifier", "tool-executor"],
      cost_usd: 0.000_006,
      trace_id: TRACE,
    });
    expect(response).not.toHaveProperty("output_text");
  });

  it("writes client tool calls as function_call items, with no empty message", () => {
    const calls = [
      {
        id: "call_1",
        type: "function" as const,
        function: { name: "get_weather", arguments: '{"city":"Paris"}' },
      },
      {
        id: "call_2",
        type: "function" as const,
        function: { name: "get_weather", arguments: '{"city":"Lyon"}' },
      },
    ];
    const response = responseFromRecord(
      record({
        message: { role: "assistant", content: null, tool_calls: calls },
        finish_reason: "tool_calls",
      }),
      TRACE,
      parse({ tools: [{ type: "function", name: "get_weather", strict: true }] }),
    );
    expect(response.status).toBe("completed");
    expect(response.output).toEqual([
      {
        id: "fc_job_12345678_0",
        type: "function_call",
        status: "completed",
        call_id: "call_1",
        name: "get_weather",
        arguments: '{"city":"Paris"}',
      },
      {
        id: "fc_job_12345678_1",
        type: "function_call",
        status: "completed",
        call_id: "call_2",
        name: "get_weather",
        arguments: '{"city":"Lyon"}',
      },
    ]);
    expect(response.tools).toEqual([
      { type: "function", name: "get_weather", description: null, parameters: null, strict: true },
    ]);
  });

  it("says why an answer is incomplete", () => {
    for (const [finish, reason] of [
      ["length", "max_output_tokens"],
      ["content_filter", "content_filter"],
    ] as const) {
      const response = responseFromRecord(record({ finish_reason: finish }), TRACE, parse());
      expect(response.status).toBe("incomplete");
      expect(response.incomplete_details).toEqual({ reason });
      expect(response.completed_at).toBeNull();
      expect(response.output[0]).toMatchObject({ type: "message", status: "incomplete" });
    }
  });

  it("writes a failure as a failed response carrying the error", () => {
    const error = new HandoffError("HANDOFF_ERR_BUDGET", "no tier fits the budget");
    const response = failedResponse("job_1", "2024-03-15T20:00:00.500Z", parse(), error);
    expect(ResponseObject.parse(response)).toEqual(response);
    expect(response).toMatchObject({
      id: "resp_job_1",
      status: "failed",
      output: [],
      usage: null,
      error: {
        code: errorBody(error).error.code,
        message: "no tier fits the budget",
        type: "budget_exceeded",
        param: null,
      },
    });
  });
});

describe("ResponseEvents", () => {
  const collect = () => {
    const events: ResponseStreamEvent[] = [];
    const body = parse();
    const writer = new ResponseEvents(
      "job_12345678",
      pendingResponse("job_12345678", "2024-03-15T20:00:00.500Z", body),
      (event) => events.push(ResponseStreamEventSchema.parse(event)),
    );
    return { events, body, writer };
  };
  const deltas = (events: ResponseStreamEvent[]) =>
    events.flatMap((e) => (e.type === "response.output_text.delta" ? [e.delta] : []));

  it("streams text as it comes, then the rest of the stored answer, then the whole response", () => {
    const { events, body, writer } = collect();
    writer.start();
    writer.text("17 * ");
    writer.text("");
    writer.text("23 ");
    const final = responseFromRecord(record(), TRACE, body);
    writer.answer(final);
    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
    expect(events.map((e) => e.type)).toEqual([
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.content_part.added",
      "response.output_text.delta",
      "response.output_text.delta",
      "response.output_text.delta",
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.completed",
    ]);
    expect(deltas(events)).toEqual(["17 * ", "23 ", "= 391."]);
    expect(deltas(events).join("")).toBe("17 * 23 = 391.");
    expect(events[0]).toMatchObject({ response: { status: "in_progress", output: [] } });
    expect(events[2]).toMatchObject({
      output_index: 0,
      item: { id: "msg_job_12345678", type: "message", status: "in_progress", content: [] },
    });
    for (const event of events.slice(3, 9)) {
      expect(event).toMatchObject({
        item_id: "msg_job_12345678",
        output_index: 0,
        content_index: 0,
      });
    }
    expect(events[7]).toMatchObject({ text: "17 * 23 = 391.", logprobs: [] });
    expect(events[9]).toMatchObject({ item: final.output[0] });
    expect(events[10]).toMatchObject({ type: "response.completed", response: final });
  });

  it("sends a stored answer nothing streamed of as one delta (a tier that did not stream, a replay)", () => {
    const { events, body, writer } = collect();
    writer.start();
    writer.answer(responseFromRecord(record({ finish_reason: "length" }), TRACE, body));
    expect(deltas(events)).toEqual(["17 * 23 = 391."]);
    expect(events.at(-1)?.type).toBe("response.incomplete");
  });

  it("streams function calls as items with their arguments after the message", () => {
    const { events, body, writer } = collect();
    writer.start();
    writer.text("Checking.");
    const call = {
      id: "call_1",
      type: "function" as const,
      function: { name: "f", arguments: '{"a":1}' },
    };
    writer.answer(
      responseFromRecord(
        record({
          message: { role: "assistant", content: "Checking.", tool_calls: [call] },
          finish_reason: "tool_calls",
        }),
        TRACE,
        body,
      ),
    );
    expect(events.map((e) => e.type).slice(5)).toEqual([
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.output_item.added",
      "response.function_call_arguments.delta",
      "response.function_call_arguments.done",
      "response.output_item.done",
      "response.completed",
    ]);
    const at = { item_id: "fc_job_12345678_0", output_index: 1 };
    expect(events[8]).toMatchObject({
      output_index: 1,
      item: {
        type: "function_call",
        call_id: "call_1",
        name: "f",
        arguments: "",
        status: "in_progress",
      },
    });
    expect(events[9]).toMatchObject({ ...at, delta: '{"a":1}' });
    expect(events[10]).toMatchObject({ ...at, arguments: '{"a":1}' });
    expect(events[11]).toMatchObject({
      output_index: 1,
      item: { arguments: '{"a":1}', status: "completed" },
    });
  });

  it("ends a failed job with response.failed", () => {
    const { events, body, writer } = collect();
    writer.start();
    writer.text("partial");
    writer.fail(
      failedResponse(
        "job_12345678",
        "2024-03-15T20:00:00.500Z",
        body,
        new HandoffError("HANDOFF_ERR_DEADLINE", "too slow"),
      ),
    );
    expect(events.at(-1)).toMatchObject({
      type: "response.failed",
      sequence_number: events.length - 1,
      response: { status: "failed", error: { message: "too slow", type: "timeout_error" } },
    });
  });
});
