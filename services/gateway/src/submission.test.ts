import { HandoffConfig, simProfile } from "@handoff/config";
import { ErrorBody, HandoffError } from "@handoff/contracts";
import type { JobClient } from "@handoff/mesh";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { buildApp } from "./app.js";
import { parseSubmission } from "./submission.js";

const aliased = HandoffConfig.parse({
  ...simProfile,
  gateway: { model_aliases: { "gpt-4o-mini": "handoff/light" } },
});

/** The tiers of `simProfile`, with one tier (or its fallback) served by Anthropic. */
function withAnthropic(where: "light" | "heavy" | "fallback"): HandoffConfig {
  const claude = {
    id: "claude",
    provider: "anthropic",
    model: "claude-sonnet-4-5",
    price: { input_per_mtok: 3, output_per_mtok: 15 },
  };
  const sim = (model: string) => ({ provider: "sim", model });
  return HandoffConfig.parse({
    tiers: {
      light: where === "light" ? [claude] : [sim("sim-light")],
      mid: where === "fallback" ? [{ ...sim("sim-mid"), fallbacks: ["claude"] }] : [sim("sim-mid")],
      heavy: where === "light" ? [sim("sim-heavy")] : [claude],
    },
  });
}

function submit(
  body: Record<string, unknown>,
  config: HandoffConfig = aliased,
  headers: Record<string, string | string[]> = {},
) {
  return parseSubmission({ body, headers } as FastifyRequest, config);
}

function refusal(body: Record<string, unknown>, config?: HandoffConfig): HandoffError {
  try {
    submit(body, config);
  } catch (error) {
    if (error instanceof HandoffError) return error;
    throw error;
  }
  throw new Error("expected the request to be refused");
}

const hi = [{ role: "user", content: "hi" }];

describe("parseSubmission: the model", () => {
  it("routes a served name as it is, and an alias as the model it stands for", () => {
    expect(submit({ model: "handoff/mid", messages: hi }).envelope.input.model).toBe("handoff/mid");
    expect(submit({ model: "sim:sim-heavy", messages: hi }).envelope.input.model).toBe(
      "sim:sim-heavy",
    );
    const aliasedSubmission = submit({ model: "gpt-4o-mini", messages: hi });
    expect(aliasedSubmission.envelope.input.model).toBe("handoff/light");
    // The body keeps the client's name: it is what a stream's first chunk says.
    expect(aliasedSubmission.body.model).toBe("gpt-4o-mini");
  });

  it("refuses an unknown name with a 404 naming it, never routing it as handoff", () => {
    const error = refusal({ model: "gpt-4o", messages: hi });
    expect(error.code).toBe("HANDOFF_ERR_MODEL_NOT_FOUND");
    expect(error.status).toBe(404);
    expect(error.message).toContain("`gpt-4o`");
    expect(error.issues?.[0]?.path).toBe("model");
    // Aliases are own keys only.
    expect(refusal({ model: "toString", messages: hi }).code).toBe("HANDOFF_ERR_MODEL_NOT_FOUND");
  });
});

describe("parseSubmission: parallel_tool_calls and logprobs", () => {
  it("carries parallel_tool_calls, logprobs and top_logprobs to the job's params", () => {
    const { params } = submit({
      model: "handoff",
      messages: hi,
      parallel_tool_calls: false,
      logprobs: true,
      top_logprobs: 3,
    }).envelope.input;
    expect(params).toEqual({ parallel_tool_calls: false, logprobs: true, top_logprobs: 3 });
  });

  it("refuses top_logprobs without logprobs, and logprobs on a stream, naming the field", () => {
    const alone = refusal({ model: "handoff", messages: hi, top_logprobs: 2 });
    expect(alone.status).toBe(400);
    expect(alone.issues?.[0]?.path).toBe("top_logprobs");
    const streamed = refusal({ model: "handoff", messages: hi, logprobs: true, stream: true });
    expect(streamed.issues?.[0]?.path).toBe("logprobs");
    expect(streamed.message).toContain("non-streamed");
  });

  it("refuses logprobs when an Anthropic deployment may answer: its tier, a lower one, or a fallback", () => {
    for (const [where, model] of [
      ["heavy", "handoff"],
      ["heavy", "handoff/heavy"],
      ["light", "handoff/mid"], // the tool-executor falls to light over budget
      ["fallback", "handoff/mid"],
    ] as const) {
      const error = refusal({ model, messages: hi, logprobs: true }, withAnthropic(where));
      expect(error.code, `${where} ${model}`).toBe("HANDOFF_ERR_UNSUPPORTED");
      expect(error.status).toBe(400);
      expect(error.issues?.[0]?.path).toBe("logprobs");
      expect(error.message).toContain("claude (anthropic)");
    }
    const top = refusal(
      { model: "handoff", messages: hi, logprobs: true, top_logprobs: 1 },
      withAnthropic("heavy"),
    );
    expect(top.issues?.[0]?.path).toBe("top_logprobs");
  });

  it("accepts logprobs where every deployment that may answer returns them", () => {
    const config = withAnthropic("heavy");
    expect(submit({ model: "handoff/light", messages: hi, logprobs: true }, config)).toBeDefined();
    expect(submit({ model: "handoff/mid", messages: hi, logprobs: true }, config)).toBeDefined();
    // No logprobs asked: Anthropic answers as ever.
    expect(submit({ model: "handoff", messages: hi, logprobs: false }, config)).toBeDefined();
  });
});

describe("parseSubmission: the response cache", () => {
  it("bypasses it for Cache-Control no-cache or no-store, among other directives", () => {
    const choice = (headers: Record<string, string | string[]>, body = {}) =>
      submit({ model: "handoff", messages: hi, ...body }, aliased, headers).envelope.cache;
    expect(choice({})).toBeUndefined();
    expect(choice({ "cache-control": "no-cache" })).toEqual({ bypass: true });
    expect(choice({ "cache-control": "max-age=0, No-Store" })).toEqual({ bypass: true });
    expect(choice({ "cache-control": ["public", "no-cache"] })).toEqual({ bypass: true });
    expect(choice({ "cache-control": "max-age=60" })).toBeUndefined();
    expect(choice({ "cache-control": "no-transform" })).toBeUndefined();
    expect(choice({}, { handoff: { cache: false } })).toEqual({ bypass: true });
    expect(choice({}, { handoff: { cache: true } })).toEqual({ sampled: true });
  });

  it("refuses a handoff.cache that is not a boolean, naming it", () => {
    const error = refusal({ model: "handoff", messages: hi, handoff: { cache: "yes" } });
    expect(error.code).toBe("HANDOFF_ERR_VALIDATION");
    expect(error.issues?.map((issue) => issue.path)).toEqual(["handoff.cache"]);
  });
});

describe("the chat and jobs routes", () => {
  let app: FastifyInstance | undefined;
  afterEach(async () => {
    await app?.close();
  });

  it("answer an unknown model with OpenAI's 404: code model_not_found, param model", async () => {
    app = buildApp({
      // Refused before a job exists.
      jobs: {} as JobClient,
      config: aliased,
      logger: pino({ level: "silent" }),
      ready: () => true,
    });
    for (const url of ["/v1/chat/completions", "/v1/jobs"]) {
      const res = await app.inject({
        method: "POST",
        url,
        payload: { model: "gpt-4.1-nano", messages: hi },
      });
      expect(res.statusCode, url).toBe(404);
      const { error } = ErrorBody.parse(res.json());
      expect(error).toMatchObject({
        type: "invalid_request_error",
        code: "model_not_found",
        param: "model",
      });
      expect(error.message).toContain("`gpt-4.1-nano` does not exist");
    }
  });
});
