import { describe, expect, it } from "vitest";
import { z } from "zod";
import { JobEnvelope } from "./envelope.js";
import { HandoffError, MAX_ISSUE_TEXT, MAX_ISSUES } from "./errors.js";
import { findTooDeep, MAX_JSON_DEPTH, TOO_DEEP_MESSAGE } from "./json-depth.js";
import { ChatCompletionRequest } from "./openai.js";

/** A JSON Schema whose `properties.a` nests `levels` objects deep in all (the root is level 1). */
function nestedSchema(levels: number): Record<string, unknown> {
  const even = levels % 2 === 0;
  let schema: Record<string, unknown> = even
    ? { type: "object", properties: {} }
    : { type: "string" };
  // Each wrapper adds two levels: the schema object and its `properties` object.
  for (let depth = even ? 2 : 1; depth < levels; depth += 2) {
    schema = { type: "object", properties: { a: schema } };
  }
  return schema;
}

/** `[[[...]]]`, `levels` arrays deep, parsed from text as a request body would be. */
function nestedArrays(levels: number): unknown {
  return JSON.parse(`${"[".repeat(levels)}${"]".repeat(levels)}`);
}

function depthOf(value: unknown): number {
  let depth = 0;
  for (let at = value; typeof at === "object" && at !== null; depth++) {
    at = Array.isArray(at) ? at[0] : Object.values(at).find((v) => typeof v === "object");
  }
  return depth;
}

const request = (extra: Record<string, unknown>) => ({
  model: "handoff",
  messages: [{ role: "user", content: "hi" }],
  ...extra,
});

const tool = (parameters: unknown) => ({
  type: "function",
  function: { name: "lookup", parameters },
});

describe("findTooDeep", () => {
  it("accepts scalars, flat values and exactly the limit", () => {
    expect(findTooDeep("text")).toBeUndefined();
    expect(findTooDeep(null)).toBeUndefined();
    expect(findTooDeep({ a: 1, b: [1, 2, { c: "d" }] })).toBeUndefined();
    expect(findTooDeep(nestedArrays(MAX_JSON_DEPTH))).toBeUndefined();
  });

  it("names the path of the first value past the limit", () => {
    const path = findTooDeep(nestedArrays(MAX_JSON_DEPTH + 1));
    expect(path).toEqual(new Array(MAX_JSON_DEPTH).fill(0));
    expect(findTooDeep({ ok: [1], deep: { x: [[{}]] } }, 3)).toEqual(["deep", "x", 0]);
    // Document order: the first key's subtree before the second's.
    expect(findTooDeep({ first: [[[]]], second: [[[]]] }, 3)).toEqual(["first", 0, 0]);
  });

  it("walks a hostile, very deep value without recursion, stopping at the limit", () => {
    const hostile = nestedArrays(200_000);
    expect(findTooDeep(hostile)).toHaveLength(MAX_JSON_DEPTH);
    // Even a cycle ends: it only ever gets deeper.
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    expect(findTooDeep(cycle)).toHaveLength(MAX_JSON_DEPTH);
  });
});

describe("free-form JSON in a request", () => {
  it("accepts tool parameters and a response_format schema 64 levels deep", () => {
    const schema = nestedSchema(MAX_JSON_DEPTH);
    expect(depthOf(schema)).toBe(MAX_JSON_DEPTH);
    const parsed = ChatCompletionRequest.safeParse(
      request({
        tools: [tool(schema)],
        response_format: { type: "json_schema", json_schema: { name: "deep", schema } },
      }),
    );
    expect(parsed.success).toBe(true);
  });

  it("refuses tool parameters 65 levels deep, naming the path and the limit", () => {
    const schema = nestedSchema(MAX_JSON_DEPTH + 1);
    expect(depthOf(schema)).toBe(MAX_JSON_DEPTH + 1);
    const parsed = ChatCompletionRequest.safeParse(request({ tools: [tool(schema)] }));
    expect(parsed.success).toBe(false);
    const error = HandoffError.validation("request body", parsed.error as z.ZodError);
    expect(error.issues).toHaveLength(1);
    const issue = error.issues?.[0];
    expect(issue?.path.startsWith("tools[0].function.parameters.properties.a.properties.a")).toBe(
      true,
    );
    expect(issue?.message).toBe(TOO_DEEP_MESSAGE);
    expect(issue?.message).toContain("64 levels");
  });

  it("refuses a deep response_format schema at its path", () => {
    const parsed = ChatCompletionRequest.safeParse(
      request({
        response_format: {
          type: "json_schema",
          json_schema: { name: "deep", schema: { items: nestedArrays(100_000) } },
        },
      }),
    );
    expect(parsed.success).toBe(false);
    const issues = parsed.error?.issues ?? [];
    expect(issues).toHaveLength(1);
    expect(issues[0]?.path.slice(0, 5)).toEqual([
      "response_format",
      "json_schema",
      "schema",
      "items",
      0,
    ]);
    expect(issues[0]?.path).toHaveLength(3 + MAX_JSON_DEPTH);
  });

  it("keeps metadata flat: its values are strings", () => {
    const parsed = ChatCompletionRequest.safeParse(request({ metadata: { a: { b: "c" } } }));
    expect(parsed.success).toBe(false);
    expect(parsed.error?.issues[0]?.path).toEqual(["metadata", "a"]);
  });

  it("holds inside the mesh too: an envelope's tools are checked when decoded", () => {
    const parsed = JobEnvelope.safeParse({
      v: 1,
      id: "job_depth_0001",
      created_at: "2024-03-15T20:00:00.000Z",
      input: {
        model: "handoff",
        messages: [{ role: "user", content: "hi" }],
        tools: [tool({ deep: nestedArrays(1_000) })],
      },
      plan: ["classifier"],
      budget: { deadline: "2099-01-01T00:00:00.000Z" },
    });
    expect(parsed.success).toBe(false);
    expect(parsed.error?.issues[0]?.message).toBe(TOO_DEEP_MESSAGE);
  });
});

describe("bounded validation errors", () => {
  const many = z.object({ items: z.array(z.number()) });

  it("keeps the first 20 issues and counts them all", () => {
    const parsed = many.safeParse({ items: Array.from({ length: 1_000 }, (_, i) => `x${i}`) });
    const error = HandoffError.validation("request body", parsed.error as z.ZodError);
    expect(error.issues).toHaveLength(MAX_ISSUES);
    expect(error.issues?.[0]?.path).toBe("items[0]");
    expect(error.issues?.[19]?.path).toBe("items[19]");
    expect(error.totalIssues).toBe(1_000);
    expect(error.message).toContain("items[19]: ");
    expect(error.message).not.toContain("items[20]");
    expect(error.message.endsWith("; and 980 more (1000 issues)")).toBe(true);
    expect(error.toJSON().issues).toHaveLength(MAX_ISSUES);
  });

  it("says nothing more when every issue is shown", () => {
    const parsed = many.safeParse({ items: ["a", "b"] });
    const error = HandoffError.validation("request body", parsed.error as z.ZodError);
    expect(error.issues).toHaveLength(2);
    expect(error.totalIssues).toBe(2);
    expect(error.message).not.toContain("more");
  });

  it("cuts an issue's path and message to a bounded length", () => {
    const long = "k".repeat(100_000);
    const error = new HandoffError("HANDOFF_ERR_VALIDATION", "invalid", {
      issues: [{ path: long, message: long }],
    });
    expect(error.issues?.[0]?.path).toHaveLength(MAX_ISSUE_TEXT);
    expect(error.issues?.[0]?.path.endsWith("…")).toBe(true);
    expect(error.issues?.[0]?.message).toHaveLength(MAX_ISSUE_TEXT);
  });

  it("bounds issues given directly too, keeping a total given with them", () => {
    const issues = Array.from({ length: 30 }, (_, i) => ({ path: `p${i}`, message: "m" }));
    const error = new HandoffError("HANDOFF_ERR_VALIDATION", "invalid", { issues });
    expect(error.issues).toHaveLength(MAX_ISSUES);
    expect(error.totalIssues).toBe(30);
    const selected = new HandoffError("HANDOFF_ERR_VALIDATION", "invalid", {
      issues: issues.slice(0, 5),
      totalIssues: 500,
    });
    expect(selected.totalIssues).toBe(500);
    expect(new HandoffError("HANDOFF_ERR_INTERNAL", "x").totalIssues).toBeUndefined();
  });
});
