import { Ajv2020 } from "ajv/dist/2020.js";
import { describe, expect, it } from "vitest";
import type { ZodError, z } from "zod";
import { contentText, Message, ToolChoice } from "./chat.js";
import { formatPath, toIssues } from "./dead-letter.js";
import {
  JobEnvelope,
  type JobEnvelopeInput,
  nextStage,
  planStep,
  roundUsd,
  stageAfter,
  totalCost,
  type Usage,
} from "./envelope.js";
import { ErrorCodes, HandoffError, isErrorCode } from "./errors.js";
import { isTerminal, JobRecord } from "./job-record.js";
import { jsonSchemaOf, type WireSchemaName, WireSchemas } from "./json-schema.js";
import { ChatCompletionRequest } from "./openai.js";
import { forwardMessageId, ServiceNames, Stages, Subjects } from "./subjects.js";

const NOW = "2024-03-15T20:00:00.000Z";
const LATER = "2024-03-15T20:01:00.000Z";

function minimalEnvelope(): JobEnvelopeInput {
  return {
    v: 1,
    id: "job_12345678",
    created_at: NOW,
    input: { model: "handoff", messages: [{ role: "user", content: "Hello" }] },
    plan: ["classifier"],
    budget: { deadline: LATER },
  };
}

function zodError(schema: z.ZodType, value: unknown): ZodError {
  const parsed = schema.safeParse(value);
  if (parsed.success) throw new Error("expected the value to be rejected");
  return parsed.error;
}

function paths(schema: z.ZodType, value: unknown): string[] {
  return toIssues(zodError(schema, value)).map((issue) => issue.path);
}

function usage(cost: number): Usage {
  return {
    stage: "classifier",
    tier: "light",
    provider: "sim",
    model: "sim-light",
    input_tokens: 1,
    output_tokens: 1,
    cost_usd: cost,
    latency_ms: 0,
    simulated: true,
  };
}

describe("formatPath", () => {
  it("joins keys with dots and indexes with brackets", () => {
    expect(formatPath(["messages", 0, "role"])).toBe("messages[0].role");
    expect(formatPath(["tiers", "mid", 0, "model"])).toBe("tiers.mid[0].model");
    expect(formatPath(["a", "b"])).toBe("a.b");
  });

  it("names the root (root)", () => {
    expect(formatPath([])).toBe("(root)");
  });

  it("starts with a bracket when the path starts with an index", () => {
    expect(formatPath([2, "name"])).toBe("[2].name");
    expect(formatPath([0, 1])).toBe("[0][1]");
  });
});

describe("toIssues", () => {
  it("gives each zod issue its dotted path and message", () => {
    const error = zodError(Message, { role: "user", content: 42 });
    expect(toIssues(error)).toEqual([{ path: "content", message: expect.any(String) }]);
    expect(toIssues(error)[0]?.message).toMatch(/string/);
  });

  it("reports a problem with the whole value at (root)", () => {
    expect(paths(JobEnvelope, "not an object")).toEqual(["(root)"]);
  });

  it("names nested array paths", () => {
    const request = { model: "m", messages: [{ role: "user", content: "hi" }, { role: "bot" }] };
    expect(paths(ChatCompletionRequest, request)).toEqual(["messages[1].role"]);
  });
});

describe("HandoffError", () => {
  it("has the HTTP status of its code", () => {
    expect(new HandoffError("HANDOFF_ERR_VALIDATION", "x").status).toBe(400);
    expect(new HandoffError("HANDOFF_ERR_BODY_TOO_LARGE", "x").status).toBe(413);
    expect(new HandoffError("HANDOFF_ERR_MEDIA_TYPE", "x").status).toBe(415);
    expect(new HandoffError("HANDOFF_ERR_NOT_FOUND", "x").status).toBe(404);
    expect(new HandoffError("HANDOFF_ERR_DEADLINE", "x").status).toBe(504);
    expect(new HandoffError("HANDOFF_ERR_UNAVAILABLE", "x").status).toBe(503);
    expect(new HandoffError("HANDOFF_ERR_PROVIDER", "x").status).toBe(502);
    expect(new HandoffError("HANDOFF_ERR_INTERNAL", "x").status).toBe(500);
  });

  it("takes its retryability from the code by default", () => {
    expect(new HandoffError("HANDOFF_ERR_PROVIDER", "x").retryable).toBe(true);
    expect(new HandoffError("HANDOFF_ERR_UNAVAILABLE", "x").retryable).toBe(true);
    expect(new HandoffError("HANDOFF_ERR_VALIDATION", "x").retryable).toBe(false);
    expect(new HandoffError("HANDOFF_ERR_PROVIDER_REJECTED", "x").retryable).toBe(false);
  });

  it("lets the options override retryability", () => {
    expect(new HandoffError("HANDOFF_ERR_PROVIDER", "x", { retryable: false }).retryable).toBe(
      false,
    );
    expect(new HandoffError("HANDOFF_ERR_INTERNAL", "x", { retryable: true }).retryable).toBe(true);
    expect(HandoffError.retryable("HANDOFF_ERR_VALIDATION", "x").retryable).toBe(true);
    expect(HandoffError.nonRetryable("HANDOFF_ERR_PROVIDER", "x").retryable).toBe(false);
  });

  it("is an Error named HandoffError that keeps its cause", () => {
    const cause = new Error("root cause");
    const error = new HandoffError("HANDOFF_ERR_PROVIDER", "upstream broke", { cause });
    expect(error).toBeInstanceOf(Error);
    expect(error.name).toBe("HandoffError");
    expect(error.message).toBe("upstream broke");
    expect(error.cause).toBe(cause);
    expect(new HandoffError("HANDOFF_ERR_PROVIDER", "no cause").cause).toBeUndefined();
  });

  it("builds a validation error whose message names every failing path", () => {
    const zod = zodError(ChatCompletionRequest, { model: "", messages: [{ role: "bot" }], n: 2 });
    const error = HandoffError.validation("request body", zod);
    expect(error.code).toBe("HANDOFF_ERR_VALIDATION");
    expect(error.retryable).toBe(false);
    expect(error.status).toBe(400);
    expect(error.cause).toBe(zod);
    expect(error.issues?.map((i) => i.path)).toEqual(["model", "messages[0].role", "n"]);
    expect(error.message.startsWith("request body is invalid: ")).toBe(true);
    expect(error.message).toContain("model: ");
    expect(error.message).toContain("messages[0].role: ");
    expect(error.message).toContain("n: only n = 1 is supported");
    expect(error.message.split("; ")).toHaveLength(3);
  });

  it("builds a validation error with another code when asked", () => {
    const zod = zodError(JobEnvelope, {});
    expect(HandoffError.validation("config.yaml", zod, "HANDOFF_ERR_CONFIG").code).toBe(
      "HANDOFF_ERR_CONFIG",
    );
  });

  it("wraps a plain Error as an internal, non-retryable error", () => {
    const plain = new TypeError("cannot read x of undefined");
    const error = HandoffError.from(plain);
    expect(error).toBeInstanceOf(HandoffError);
    expect(error.code).toBe("HANDOFF_ERR_INTERNAL");
    expect(error.retryable).toBe(false);
    expect(error.status).toBe(500);
    expect(error.message).toBe("cannot read x of undefined");
    expect(error.cause).toBe(plain);
  });

  it("wraps a thrown non-Error by its string form", () => {
    const error = HandoffError.from("something odd");
    expect(error.code).toBe("HANDOFF_ERR_INTERNAL");
    expect(error.message).toBe("something odd");
  });

  it("returns a HandoffError passed to from() unchanged", () => {
    const original = new HandoffError("HANDOFF_ERR_DEADLINE", "too late");
    expect(HandoffError.from(original)).toBe(original);
  });

  it("serializes code, message, retryable and issues to JSON", () => {
    const withIssues = new HandoffError("HANDOFF_ERR_VALIDATION", "bad", {
      issues: [{ path: "model", message: "required" }],
      details: { hidden: true },
    });
    expect(withIssues.toJSON()).toEqual({
      code: "HANDOFF_ERR_VALIDATION",
      message: "bad",
      retryable: false,
      issues: [{ path: "model", message: "required" }],
    });
    expect(JSON.parse(JSON.stringify(withIssues))).toEqual(withIssues.toJSON());
    expect(new HandoffError("HANDOFF_ERR_PROVIDER", "down").toJSON()).toEqual({
      code: "HANDOFF_ERR_PROVIDER",
      message: "down",
      retryable: true,
    });
  });

  it("recognizes its own error codes", () => {
    expect(isErrorCode("HANDOFF_ERR_PROVIDER")).toBe(true);
    expect(isErrorCode("HANDOFF_ERR_NOPE")).toBe(false);
    expect(isErrorCode("toString")).toBe(false);
    expect(Object.keys(ErrorCodes).every(isErrorCode)).toBe(true);
  });
});

describe("JobEnvelope", () => {
  it("accepts a minimal envelope and fills in the defaults", () => {
    const envelope = JobEnvelope.parse(minimalEnvelope());
    expect(envelope.hops).toEqual([]);
    expect(envelope.enrichments).toEqual([]);
    expect(envelope.usage).toEqual([]);
    expect(envelope.input.tools).toEqual([]);
    expect(envelope.input.params).toEqual({});
    expect(envelope.plan).toEqual(["classifier"]);
    expect(envelope.result).toBeUndefined();
  });

  it("rejects job ids outside the safe alphabet or length", () => {
    for (const id of ["short", "has space in it", "dots.are.bad", "x".repeat(65), "job/12345678"]) {
      const error = zodError(JobEnvelope, { ...minimalEnvelope(), id });
      expect(toIssues(error)).toEqual([
        { path: "id", message: "job ids are 8-64 letters, digits, '_' or '-'" },
      ]);
    }
    expect(JobEnvelope.parse({ ...minimalEnvelope(), id: "a".repeat(64) }).id).toHaveLength(64);
  });

  it("rejects an empty plan", () => {
    expect(paths(JobEnvelope, { ...minimalEnvelope(), plan: [] })).toEqual(["plan"]);
  });

  it("rejects an unknown stage with the plan index", () => {
    expect(
      paths(JobEnvelope, { ...minimalEnvelope(), plan: ["classifier", "summarizer"] }),
    ).toEqual(["plan[1]"]);
  });

  it("rejects an unknown stage in a usage entry by its path", () => {
    const envelope = { ...minimalEnvelope(), usage: [{ ...usage(0), stage: "gateway" }] };
    expect(paths(JobEnvelope, envelope)).toEqual(["usage[0].stage"]);
  });

  it("rejects an envelope with no messages and a bad deadline, naming both", () => {
    const base = minimalEnvelope();
    const envelope = {
      ...base,
      input: { ...base.input, messages: [] },
      budget: { deadline: "tomorrow" },
    };
    expect(paths(JobEnvelope, envelope).sort()).toEqual(["budget.deadline", "input.messages"]);
  });

  it("rejects another envelope version", () => {
    expect(paths(JobEnvelope, { ...minimalEnvelope(), v: 2 })).toEqual(["v"]);
  });
});

describe("planStep and stageAfter", () => {
  const plan = ["classifier", "tool-executor", "classifier", "heavy-reasoner"] as const;

  it("follows the envelope's position, not the stage's name, when a plan visits a stage twice", () => {
    expect(stageAfter({ plan: [...plan], step: 0 }, "classifier")).toBe("tool-executor");
    expect(stageAfter({ plan: [...plan], step: 2 }, "classifier")).toBe("heavy-reasoner");
    expect(stageAfter({ plan: [...plan], step: 3 }, "heavy-reasoner")).toBeUndefined();
  });

  it("reads an envelope without a position as the stage's last visit", () => {
    expect(planStep({ plan: [...plan] }, "classifier")).toBe(2);
    expect(planStep({ plan: [...plan] }, "tool-executor")).toBe(1);
    expect(planStep({ plan: ["classifier"] }, "heavy-reasoner")).toBe(-1);
    expect(stageAfter({ plan: ["classifier"] }, "heavy-reasoner")).toBeUndefined();
  });
});

describe("nextStage", () => {
  it("gives the stage after the current one", () => {
    expect(nextStage(["classifier", "tool-executor", "heavy-reasoner"], "classifier")).toBe(
      "tool-executor",
    );
    expect(nextStage(["classifier", "tool-executor", "heavy-reasoner"], "tool-executor")).toBe(
      "heavy-reasoner",
    );
  });

  it("gives undefined for the last stage", () => {
    expect(nextStage(["classifier"], "classifier")).toBeUndefined();
    expect(nextStage(["classifier", "heavy-reasoner"], "heavy-reasoner")).toBeUndefined();
  });

  it("gives undefined for a stage that is not in the plan", () => {
    expect(nextStage(["classifier", "heavy-reasoner"], "tool-executor")).toBeUndefined();
  });

  it("continues from the last visit of a stage that appears twice", () => {
    const plan = ["classifier", "tool-executor", "classifier", "heavy-reasoner"] as const;
    expect(nextStage(plan, "classifier")).toBe("heavy-reasoner");
  });
});

describe("totalCost and roundUsd", () => {
  it("sums costs without float dust", () => {
    expect(0.1 + 0.2).not.toBe(0.3);
    expect(totalCost([usage(0.1), usage(0.2)])).toBe(0.3);
    expect(totalCost([usage(0.000_000_1), usage(0.000_000_2)])).toBe(0.000_000_3);
  });

  it("is zero for no usage", () => {
    expect(totalCost([])).toBe(0);
  });

  it("rounds to a nano-dollar", () => {
    expect(roundUsd(0.1 + 0.2)).toBe(0.3);
    expect(roundUsd(1.234_567_891_4)).toBe(1.234_567_891);
    expect(roundUsd(0.000_000_000_4)).toBe(0);
    expect(roundUsd(0.000_000_000_6)).toBe(0.000_000_001);
  });
});

describe("ChatCompletionRequest", () => {
  it("accepts an OpenAI-shaped request with text parts, tools and tool_choice", () => {
    const request = {
      model: "gpt-4o-mini",
      messages: [
        { role: "system", content: "Be brief." },
        {
          role: "user",
          content: [
            { type: "text", text: "What is " },
            { type: "text", text: "the weather?" },
          ],
        },
        {
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
        { role: "tool", tool_call_id: "call_1", content: "sunny" },
      ],
      tools: [
        {
          type: "function",
          function: {
            name: "get_weather",
            description: "Weather by city",
            parameters: { type: "object", properties: { city: { type: "string" } } },
          },
        },
      ],
      tool_choice: { type: "function", function: { name: "get_weather" } },
      temperature: 0.2,
      max_completion_tokens: 200,
      stop: "END",
      n: 1,
      stream: false,
      user: "u-1",
      metadata: { team: "search" },
      handoff: { timeout_ms: 5_000 },
    };
    const parsed = ChatCompletionRequest.parse(request);
    expect(parsed.messages).toHaveLength(4);
    expect(parsed.tools?.[0]?.function.name).toBe("get_weather");
    expect(parsed.tool_choice).toEqual({ type: "function", function: { name: "get_weather" } });
    expect(parsed.handoff).toEqual({ timeout_ms: 5_000 });
  });

  it("accepts null for the nullable sampling fields OpenAI clients send", () => {
    const parsed = ChatCompletionRequest.parse({
      model: "m",
      messages: [{ role: "user", content: "hi" }],
      temperature: null,
      max_tokens: null,
      n: null,
      stop: null,
    });
    expect(parsed.temperature).toBeNull();
  });

  it("rejects n = 2 with a message that says only n = 1 works", () => {
    const error = zodError(ChatCompletionRequest, {
      model: "m",
      messages: [{ role: "user", content: "hi" }],
      n: 2,
    });
    expect(toIssues(error)).toEqual([{ path: "n", message: "only n = 1 is supported" }]);
  });

  it("rejects an empty message list", () => {
    expect(paths(ChatCompletionRequest, { model: "m", messages: [] })).toEqual(["messages"]);
  });

  it("rejects an unknown role by its path", () => {
    expect(
      paths(ChatCompletionRequest, { model: "m", messages: [{ role: "wizard", content: "hi" }] }),
    ).toEqual(["messages[0].role"]);
  });

  it("rejects a tool message without tool_call_id, a bad tool name and too many stops", () => {
    const request = {
      model: "m",
      messages: [{ role: "tool", content: "x" }],
      tools: [{ type: "function", function: { name: "has space" } }],
      stop: ["a", "b", "c", "d", "e"],
    };
    expect(paths(ChatCompletionRequest, request).sort()).toEqual([
      "messages[0].tool_call_id",
      "stop",
      "tools[0].function.name",
    ]);
  });

  it("rejects a timeout below 100 ms", () => {
    const request = {
      model: "m",
      messages: [{ role: "user", content: "hi" }],
      handoff: { timeout_ms: 99 },
    };
    expect(paths(ChatCompletionRequest, request)).toEqual(["handoff.timeout_ms"]);
  });
});

describe("ToolChoice", () => {
  it("accepts the keywords and a named function, nothing else", () => {
    for (const value of ["none", "auto", "required"]) expect(ToolChoice.parse(value)).toBe(value);
    expect(ToolChoice.safeParse("always").success).toBe(false);
    expect(ToolChoice.safeParse({ type: "function", function: { name: "" } }).success).toBe(false);
  });
});

describe("contentText", () => {
  it("flattens strings, text parts and missing content", () => {
    expect(contentText("plain")).toBe("plain");
    expect(
      contentText([
        { type: "text", text: "a" },
        { type: "text", text: "b" },
      ]),
    ).toBe("ab");
    expect(contentText(null)).toBe("");
    expect(contentText(undefined)).toBe("");
  });
});

describe("jsonSchemaOf", () => {
  const required: Record<WireSchemaName, string[]> = {
    "job-envelope": ["v", "id", "created_at", "input", "plan", "budget"],
    "job-record": ["id", "status", "created_at", "updated_at", "hops", "usage", "cost_usd"],
    "dead-letter": [
      "stage",
      "subject",
      "reason",
      "error",
      "stream_sequence",
      "deliveries",
      "payload",
      "recorded_at",
    ],
    "chat-completion-request": ["model", "messages"],
    "chat-completion": ["id", "object", "created", "model", "choices", "usage", "handoff"],
    "chat-completion-chunk": ["id", "object", "created", "model", "choices"],
    "stream-chunk": ["job_id", "stage", "delivery", "seq", "model", "delta"],
    "error-body": ["error"],
    "job-submission": ["model", "messages"],
    // A union: each of its variants requires these, and its own fields (below).
    "job-event": [],
  };

  it("gives job-event one variant per event type, each an object naming its type", () => {
    const schema = jsonSchemaOf("job-event");
    expect(schema.$id).toBe("https://handoff.dev/schemas/v1/job-event.schema.json");
    const variants = (schema.oneOf ?? schema.anyOf) as Array<Record<string, unknown>>;
    const byType = Object.fromEntries(
      variants.map((v) => [
        (v.properties as { type: { const: string } }).type.const,
        [...(v.required as string[])].sort(),
      ]),
    );
    expect(byType).toEqual({
      queued: ["at", "job_id", "type"],
      running: ["at", "job_id", "type"],
      succeeded: ["at", "completion", "job_id", "type"],
      failed: ["at", "error", "job_id", "type"],
    });
    const ajv = new Ajv2020({ strict: false, validateFormats: false });
    const validate = ajv.compile(schema);
    const at = "2026-12-02T00:00:00.000Z";
    expect(validate({ type: "queued", job_id: "job-00000001", at, tenant: "team-a" })).toBe(true);
    expect(
      validate({
        type: "failed",
        job_id: "job-00000001",
        at,
        error: {
          code: "HANDOFF_ERR_VALIDATION",
          message: "bad",
          retryable: false,
          issues: [{ path: "messages", message: "Required" }],
        },
      }),
    ).toBe(true);
    expect(validate({ type: "finished", job_id: "job-00000001", at })).toBe(false);
    expect(validate({ type: "queued", job_id: "bad id", at })).toBe(false);
  });

  it.each((Object.keys(WireSchemas) as WireSchemaName[]).filter((name) => name !== "job-event"))(
    "gives %s an $id, object type and its required fields",
    (name) => {
      const schema = jsonSchemaOf(name);
      expect(schema.$id).toBe(`https://handoff.dev/schemas/v1/${name}.schema.json`);
      expect(schema.type).toBe("object");
      expect([...(schema.required as string[])].sort()).toEqual([...required[name]].sort());
    },
  );

  it("does not require fields that have defaults", () => {
    const required = jsonSchemaOf("job-envelope").required as string[];
    expect(required).not.toContain("hops");
    expect(required).not.toContain("usage");
  });

  it("accepts a minimal envelope and rejects a bad id under a JSON Schema validator", () => {
    const ajv = new Ajv2020({ strict: false, validateFormats: false });
    const validate = ajv.compile(jsonSchemaOf("job-envelope"));
    expect(validate(minimalEnvelope())).toBe(true);
    expect(validate({ ...minimalEnvelope(), id: "bad id" })).toBe(false);
    expect(validate.errors?.[0]?.instancePath).toBe("/id");
  });

  it.each(["job-envelope", "job-record"] as const)(
    "gives %s an optional owner, an API key name",
    (name) => {
      const schema = jsonSchemaOf(name);
      const owner = (schema.properties as Record<string, { type?: string; pattern?: string }>)
        .owner;
      expect(owner?.type).toBe("string");
      expect(owner?.pattern).toBe("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$");
      expect(schema.required).not.toContain("owner");
    },
  );

  it("validates an envelope's owner under a JSON Schema validator", () => {
    const ajv = new Ajv2020({ strict: false, validateFormats: false });
    const validate = ajv.compile(jsonSchemaOf("job-envelope"));
    expect(validate({ ...minimalEnvelope(), owner: "team-a" })).toBe(true);
    expect(validate({ ...minimalEnvelope(), owner: "sk live key" })).toBe(false);
    expect(validate.errors?.[0]?.instancePath).toBe("/owner");
  });
});

describe("job owner", () => {
  const record = {
    id: "job_12345678",
    status: "queued",
    created_at: NOW,
    updated_at: NOW,
    hops: [],
    usage: [],
    cost_usd: 0,
  };

  it("is kept by the envelope and the record, and optional on both", () => {
    expect(JobEnvelope.parse({ ...minimalEnvelope(), owner: "ci.bot_2" }).owner).toBe("ci.bot_2");
    expect(JobEnvelope.parse(minimalEnvelope()).owner).toBeUndefined();
    expect(JobRecord.parse({ ...record, owner: "team-a" }).owner).toBe("team-a");
    expect(JobRecord.parse(record).owner).toBeUndefined();
  });

  it("is an API key name, not anything that could be a key", () => {
    for (const owner of ["", "has space", "-dash-first", "x".repeat(65), "a/b"]) {
      expect(paths(JobEnvelope, { ...minimalEnvelope(), owner }), owner).toEqual(["owner"]);
      expect(paths(JobRecord, { ...record, owner }), owner).toEqual(["owner"]);
    }
  });
});

describe("Subjects", () => {
  it("names the per-stage, per-job and wildcard subjects", () => {
    expect(Subjects.prefix).toBe("handoff.v1");
    expect(Subjects.job("classifier")).toBe("handoff.v1.jobs.classifier");
    expect(Subjects.job("heavy-reasoner")).toBe("handoff.v1.jobs.heavy-reasoner");
    expect(Subjects.result("job_12345678")).toBe("handoff.v1.results.job_12345678");
    expect(Subjects.stream("job_12345678")).toBe("handoff.v1.stream.job_12345678");
    expect(Subjects.deadLetter("tool-executor")).toBe("handoff.v1.dlq.tool-executor");
    expect(Subjects.allJobs).toBe("handoff.v1.jobs.>");
    expect(Subjects.allDeadLetters).toBe("handoff.v1.dlq.>");
  });

  it("lists the stages in escalation order and the gateway among the services", () => {
    expect(Stages).toEqual(["classifier", "tool-executor", "heavy-reasoner"]);
    expect(ServiceNames).toEqual(["gateway", "classifier", "tool-executor", "heavy-reasoner"]);
  });
});

describe("forwardMessageId", () => {
  it("is the job id, the plan position and the target stage", () => {
    expect(forwardMessageId("job_12345678", 1, "tool-executor")).toBe(
      "job_12345678:1:tool-executor",
    );
    expect(forwardMessageId("job_12345678", 1, "heavy-reasoner")).not.toBe(
      forwardMessageId("job_12345678", 1, "tool-executor"),
    );
  });

  it("tells two visits of the same stage apart", () => {
    expect(forwardMessageId("job_12345678", 1, "classifier")).not.toBe(
      forwardMessageId("job_12345678", 3, "classifier"),
    );
  });
});

describe("isTerminal", () => {
  it("is true only for succeeded and failed jobs", () => {
    expect(isTerminal("succeeded")).toBe(true);
    expect(isTerminal("failed")).toBe(true);
    expect(isTerminal("queued")).toBe(false);
    expect(isTerminal("running")).toBe(false);
  });
});
