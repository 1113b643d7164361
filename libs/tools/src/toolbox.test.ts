import type { ToolCall } from "@handoff/contracts";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { builtinTools } from "./index.js";
import { LocalToolSource } from "./local-source.js";
import type { SourceCallContext, SourceOutcome, SourceTool, ToolSource } from "./source.js";
import { defineTool } from "./tool.js";
import { refusal, Toolbox, type ToolPolicy, toolPattern } from "./toolbox.js";

const call = (name: string, args: string | object = {}): ToolCall => ({
  id: `call_${name}`,
  type: "function",
  function: { name, arguments: typeof args === "string" ? args : JSON.stringify(args) },
});

const open: ToolPolicy = { tier: "mid" };
const ctx = () => ({ signal: new AbortController().signal });

const big = defineTool({
  name: "big",
  description: "Returns n copies of a character.",
  input: z.object({ n: z.number().int(), ch: z.string().default("x") }),
  handler: ({ n, ch }) => ch.repeat(n),
});

/** A source that records what reached it and answers as told. */
class RecordingSource implements ToolSource {
  readonly name = "recording";
  readonly calls: Array<{ name: string; args: Record<string, unknown>; ctx: SourceCallContext }> =
    [];
  constructor(
    readonly list: SourceTool[],
    readonly answer: (name: string) => Promise<SourceOutcome> | SourceOutcome = () => ({
      output: "ok",
    }),
  ) {}
  tools() {
    return this.list;
  }
  async call(name: string, args: Record<string, unknown>, ctx: SourceCallContext) {
    this.calls.push({ name, args, ctx });
    return this.answer(name);
  }
  async close() {}
}

const strict: SourceTool = {
  name: "docs__search",
  description: "Searches the docs.",
  parameters: {
    type: "object",
    properties: { query: { type: "string", minLength: 1 }, limit: { type: "integer" } },
    required: ["query"],
    additionalProperties: false,
  },
  origin: { kind: "mcp", server: "docs", transport: "stdio", tool: "search" },
};

describe("toolPattern", () => {
  it("matches names and globs, and nothing else", () => {
    expect(toolPattern("calculator")("calculator")).toBe(true);
    expect(toolPattern("calculator")("calculator2")).toBe(false);
    expect(toolPattern("docs__*")("docs__search")).toBe(true);
    expect(toolPattern("docs__*")("web__search")).toBe(false);
    expect(toolPattern("clo?k")("clock")).toBe(true);
    expect(toolPattern("*")("anything-at_all")).toBe(true);
    // '-' is literal, not a character range.
    expect(toolPattern("a-c")("b")).toBe(false);
  });
});

describe("refusal", () => {
  it("needs both the tier and the key to allow a tool", () => {
    const policy: ToolPolicy = {
      tier: "mid",
      tierAllows: ["calculator", "docs__*"],
      key: "team-a",
      keyAllows: ["docs__*"],
    };
    expect(refusal(policy, "docs__search")).toBeUndefined();
    expect(refusal(policy, "calculator")).toBe(
      'tool "calculator" is not allowed for API key "team-a"',
    );
    expect(refusal(policy, "clock")).toBe(
      'tool "clock" is not allowed for the mid tier (tools.allow.mid)',
    );
    expect(refusal({ tier: "mid" }, "anything")).toBeUndefined();
    expect(refusal({ tier: "mid", tierAllows: [] }, "calculator")).toBeDefined();
  });
});

describe("Toolbox", () => {
  it("offers only the tools the policy allows", () => {
    const box = new Toolbox({ callTimeoutMs: 1_000, maxOutputBytes: 1_000 }, [
      new LocalToolSource(builtinTools),
      new RecordingSource([strict]),
    ]);
    const names = (policy: ToolPolicy) => box.offer(policy).map((t) => t.function.name);
    expect(names(open)).toEqual(["calculator", "clock", "docs__search"]);
    expect(names({ tier: "mid", tierAllows: ["docs__*", "clock"] })).toEqual([
      "clock",
      "docs__search",
    ]);
    expect(names({ tier: "mid", key: "k", keyAllows: [] })).toEqual([]);
    expect(box.offer(open)[2]?.function.parameters).toEqual(strict.parameters);
  });

  it("refuses a call to a tool the policy does not allow, without reaching the tool", async () => {
    const source = new RecordingSource([strict]);
    const box = new Toolbox({ callTimeoutMs: 1_000, maxOutputBytes: 1_000 }, [source]);
    const outcome = await box.execute(call("docs__search", { query: "x" }), ctx(), {
      tier: "mid",
      key: "team-b",
      keyAllows: ["calculator"],
    });
    expect(outcome.error?.type).toBe("not_allowed");
    expect(outcome.output).toContain('tool "docs__search" is not allowed for API key "team-b"');
    expect(source.calls).toHaveLength(0);
  });

  it("checks the arguments against the tool's JSON Schema before the call", async () => {
    const source = new RecordingSource([strict]);
    const box = new Toolbox({ callTimeoutMs: 1_000, maxOutputBytes: 1_000 }, [source]);
    const missing = await box.execute(call("docs__search", { limit: 2 }), ctx(), open);
    expect(missing.error?.type).toBe("invalid_arguments");
    expect(missing.error?.message).toContain("must have required property 'query'");
    const wrong = await box.execute(call("docs__search", { query: "", limit: 1.5 }), ctx(), open);
    expect(wrong.error?.message).toContain("/query must NOT have fewer than 1 characters");
    expect(wrong.error?.message).toContain("/limit must be integer");
    const extra = await box.execute(call("docs__search", { query: "a", rm: true }), ctx(), open);
    expect(extra.error?.message).toContain("must NOT have additional properties");
    const notJson = await box.execute(call("docs__search", "{query:"), ctx(), open);
    expect(notJson.error?.message).toContain("not valid JSON");
    const array = await box.execute(call("docs__search", "[1]"), ctx(), open);
    expect(array.error?.message).toContain("must be a JSON object");
    expect(source.calls).toHaveLength(0);

    const fine = await box.execute(call("docs__search", { query: "nats", limit: 3 }), ctx(), open);
    expect(fine).toEqual({ output: "ok" });
    expect(source.calls.map((c) => c.args)).toEqual([{ query: "nats", limit: 3 }]);
  });

  it("names the tools it has when the model asks for one that does not exist", async () => {
    const box = new Toolbox({ callTimeoutMs: 1_000, maxOutputBytes: 1_000 }, [
      new LocalToolSource(builtinTools),
    ]);
    const outcome = await box.execute(call("weather"), ctx(), {
      tier: "mid",
      tierAllows: ["clock"],
    });
    expect(outcome.error?.type).toBe("unknown_tool");
    expect(outcome.output).toBe('error: unknown tool "weather"; available tools: clock');
  });

  it("cuts output beyond max_output_bytes on a character boundary, and marks the cut", async () => {
    const box = new Toolbox({ callTimeoutMs: 1_000, maxOutputBytes: 300 }, [
      new LocalToolSource([big]),
    ]);
    const short = await box.execute(call("big", { n: 300 }), ctx(), open);
    expect(short.output).toBe("x".repeat(300));
    expect(short.truncated).toBeUndefined();
    const long = await box.execute(call("big", { n: 1_000 }), ctx(), open);
    expect(long.output).toBe(
      `${"x".repeat(300)}\n[cut: the tool returned 1000 bytes; the first 300 are shown]`,
    );
    expect(long.truncated).toEqual({ bytes: 1_000, kept: 300 });
    // "é" is two bytes: 300 bytes hold 150 of them; 301 would split one, which is dropped whole.
    const accents = await box.execute(call("big", { n: 200, ch: "é" }), ctx(), open);
    expect(accents.output.startsWith(`${"é".repeat(150)}\n[cut:`)).toBe(true);
    const odd = new Toolbox({ callTimeoutMs: 1_000, maxOutputBytes: 301 }, [
      new LocalToolSource([big]),
    ]);
    const split = await odd.execute(call("big", { n: 200, ch: "é" }), ctx(), open);
    expect(split.output).not.toContain("\uFFFD");
    expect(split.truncated?.kept).toBe(300);
  });

  it("bounds a call by the job's deadline and by call_timeout_ms, whichever comes first", async () => {
    const source = new RecordingSource([{ ...strict, name: "t", parameters: { type: "object" } }]);
    const box = new Toolbox({ callTimeoutMs: 5_000, maxOutputBytes: 1_000 }, [source]);
    const before = Date.now();
    await box.execute(call("t"), { ...ctx(), deadline: before + 200 }, open);
    await box.execute(call("t"), { ...ctx(), deadline: before + 60_000 }, open);
    await box.execute(call("t"), ctx(), open);
    const [near, far, none] = source.calls.map((c) => c.ctx.deadline - before);
    expect(near).toBe(200);
    expect(far).toBeGreaterThanOrEqual(5_000);
    expect(far).toBeLessThan(5_500);
    expect(none).toBeLessThan(5_500);
  });

  it("passes a source's failure to the model as a tool error, and rethrows an abort", async () => {
    const failing = new RecordingSource([{ ...strict, name: "t", parameters: {} }], () => ({
      output: "error: no instance",
      error: { type: "no_responders", message: "no instance" },
    }));
    const box = new Toolbox({ callTimeoutMs: 1_000, maxOutputBytes: 1_000 }, [failing]);
    expect(await box.execute(call("t"), ctx(), open)).toEqual({
      output: "error: no instance",
      error: { type: "no_responders", message: "no instance" },
    });
    const controller = new AbortController();
    controller.abort(new Error("job cancelled"));
    await expect(box.execute(call("t"), { signal: controller.signal }, open)).rejects.toThrow(
      "job cancelled",
    );
  });

  it("marks a source's failure as an error for the model, whatever the source wrote", async () => {
    const mcpLike = new RecordingSource([{ ...strict, name: "t", parameters: {} }], () => ({
      output: "Unknown topic: mars",
      error: { type: "tool_error", message: "Unknown topic: mars" },
    }));
    const box = new Toolbox({ callTimeoutMs: 1_000, maxOutputBytes: 1_000 }, [mcpLike]);
    expect((await box.execute(call("t"), ctx(), open)).output).toBe("error: Unknown topic: mars");
  });

  it("refuses a call to a tool whose schema cannot be compiled, naming the problem", async () => {
    const broken = new RecordingSource([
      { ...strict, name: "t", parameters: { type: "object", properties: { a: { type: 7 } } } },
    ]);
    const box = new Toolbox({ callTimeoutMs: 1_000, maxOutputBytes: 1_000 }, [broken]);
    const outcome = await box.execute(call("t", { a: 1 }), ctx(), open);
    expect(outcome.error?.type).toBe("invalid_arguments");
    expect(outcome.error?.message).toContain("the tool's schema is not usable");
    expect(broken.calls).toHaveLength(0);
  });
});
