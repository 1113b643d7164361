import { describe, expect, it } from "vitest";
import { ChatParams, ChoiceLogprobs } from "./chat.js";
import { JobResult } from "./envelope.js";
import { ErrorCodes, HandoffError, wireErrorCode } from "./errors.js";
import { ChatCompletion, ChatCompletionRequest } from "./openai.js";

const hi = { model: "handoff", messages: [{ role: "user", content: "hi" }] };

const logprobs = {
  content: [
    {
      token: "hi",
      logprob: -0.5,
      bytes: [104, 105],
      top_logprobs: [
        { token: "hi", logprob: -0.5, bytes: [104, 105] },
        { token: "yo", logprob: -2, bytes: null },
      ],
    },
  ],
  refusal: null,
};

describe("the request options clients send", () => {
  it("accepts parallel_tool_calls, logprobs and top_logprobs, nulls included", () => {
    const parsed = ChatCompletionRequest.parse({
      ...hi,
      parallel_tool_calls: false,
      logprobs: true,
      top_logprobs: 20,
    });
    expect(parsed).toMatchObject({ parallel_tool_calls: false, logprobs: true, top_logprobs: 20 });
    expect(
      ChatCompletionRequest.parse({
        ...hi,
        parallel_tool_calls: null,
        logprobs: null,
        top_logprobs: null,
      }),
    ).toMatchObject({ parallel_tool_calls: null, logprobs: null, top_logprobs: null });
  });

  it("rejects top_logprobs outside 0..20 and a logprobs that is not a boolean, by path", () => {
    const parsed = ChatCompletionRequest.safeParse({ ...hi, logprobs: "yes", top_logprobs: 21 });
    expect(parsed.success).toBe(false);
    expect(parsed.error?.issues.map((i) => i.path.join(".")).sort()).toEqual([
      "logprobs",
      "top_logprobs",
    ]);
  });

  it("carries them in the job's params", () => {
    expect(
      ChatParams.parse({ parallel_tool_calls: true, logprobs: true, top_logprobs: 0 }),
    ).toEqual({ parallel_tool_calls: true, logprobs: true, top_logprobs: 0 });
  });
});

describe("log-probabilities in answers", () => {
  it("are OpenAI's choices[].logprobs on a completion, or null", () => {
    const choice = {
      index: 0,
      message: { role: "assistant", content: "hi", refusal: null },
      finish_reason: "stop",
    };
    const completion = {
      id: "chatcmpl-1",
      object: "chat.completion",
      created: 1,
      model: "m",
      choices: [{ ...choice, logprobs }],
      usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
      handoff: {
        job_id: "job_12345678",
        route: ["classifier"],
        escalated: false,
        usage: [],
        cost_usd: 0,
        cost_by_stage: {},
        trace_id: "",
        simulated: true,
      },
    };
    expect(ChatCompletion.parse(completion).choices[0]?.logprobs).toEqual(logprobs);
    expect(
      ChatCompletion.parse({ ...completion, choices: [{ ...choice, logprobs: null }] }).choices[0]
        ?.logprobs,
    ).toBeNull();
    expect(ChoiceLogprobs.safeParse({ content: [{ token: "x", logprob: -1 }] }).success).toBe(
      false,
    );
  });

  it("travel on a job's result", () => {
    const result = JobResult.parse({
      message: { role: "assistant", content: "hi" },
      finish_reason: "stop",
      stage: "classifier",
      provider: "sim",
      model: "sim-light",
      logprobs,
    });
    expect(result.logprobs).toEqual(logprobs);
  });
});

describe("model_not_found", () => {
  it("is a 404 whose wire code is OpenAI's; other codes keep their own", () => {
    const error = new HandoffError("HANDOFF_ERR_MODEL_NOT_FOUND", "no model x");
    expect(error.status).toBe(404);
    expect(error.retryable).toBe(false);
    expect(ErrorCodes.HANDOFF_ERR_MODEL_NOT_FOUND.type).toBe("invalid_request_error");
    expect(wireErrorCode("HANDOFF_ERR_MODEL_NOT_FOUND")).toBe("model_not_found");
    expect(wireErrorCode("HANDOFF_ERR_NOT_FOUND")).toBe("HANDOFF_ERR_NOT_FOUND");
  });
});
