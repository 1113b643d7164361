import type { ToolCall } from "@handoff/contracts";
import { ToolDefinition } from "@handoff/contracts";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { builtinTools, calculator, clock, createBuiltinRegistry } from "./index.js";
import { defineTool, type ToolContext, ToolRegistry, toolDefinition } from "./tool.js";

const FIXED = new Date("2024-03-15T20:00:00.000Z");

function context(signal: AbortSignal = new AbortController().signal): ToolContext {
  return { signal, now: () => FIXED };
}

function call(name: string, args: string): ToolCall {
  return { id: "call_1", type: "function", function: { name, arguments: args } };
}

const failing = defineTool({
  name: "failing",
  description: "Always throws.",
  input: z.object({}),
  handler: () => {
    throw new Error("disk on fire");
  },
});

const nested = defineTool({
  name: "nested",
  description: "Has a nested schema.",
  input: z.object({
    items: z.array(z.object({ count: z.number().int().positive() })),
    label: z.string(),
  }),
  handler: ({ items, label }) => `${label}: ${items.reduce((sum, item) => sum + item.count, 0)}`,
});

describe("defineTool", () => {
  it("returns the tool unchanged", () => {
    expect(defineTool(failing)).toBe(failing);
  });

  it("rejects names providers would refuse", () => {
    for (const name of ["", "has space", "dots.not.allowed", "x".repeat(65)]) {
      expect(() => defineTool({ ...failing, name })).toThrow(`invalid tool name "${name}"`);
    }
    expect(defineTool({ ...failing, name: "ok_Name-2" }).name).toBe("ok_Name-2");
  });
});

describe("toolDefinition", () => {
  it("gives the calculator's arguments as JSON Schema", () => {
    const definition = toolDefinition(calculator);
    expect(ToolDefinition.parse(definition)).toEqual(definition);
    expect(definition.type).toBe("function");
    expect(definition.function.name).toBe("calculator");
    expect(definition.function.description).toBe(calculator.description);
    const parameters = definition.function.parameters ?? {};
    expect(parameters).not.toHaveProperty("$schema");
    expect(parameters).toMatchObject({
      type: "object",
      properties: { expression: { type: "string", minLength: 1, maxLength: 500 } },
      required: ["expression"],
    });
  });

  it("leaves the optional clock time zone out of required", () => {
    const parameters = toolDefinition(clock).function.parameters ?? {};
    expect(parameters).toMatchObject({
      type: "object",
      properties: { timezone: { type: "string" } },
    });
    expect(parameters.required).toBeUndefined();
  });
});

describe("ToolRegistry", () => {
  const registry = new ToolRegistry([...builtinTools, failing, nested]);

  it("rejects duplicate names", () => {
    expect(() => new ToolRegistry([calculator, clock, calculator])).toThrow(
      'duplicate tool name "calculator"',
    );
  });

  it("rejects invalid names even without defineTool", () => {
    expect(() => new ToolRegistry([{ ...failing, name: "a b" }])).toThrow(
      'invalid tool name "a b"',
    );
  });

  it("knows its tools", () => {
    expect(registry.has("calculator")).toBe(true);
    expect(registry.has("clock")).toBe(true);
    expect(registry.has("shell")).toBe(false);
    expect(registry.has("constructor")).toBe(false);
  });

  it("lists definitions in order, as copies", () => {
    const definitions = registry.definitions();
    expect(definitions.map((d) => d.function.name)).toEqual([
      "calculator",
      "clock",
      "failing",
      "nested",
    ]);
    const first = definitions[0];
    if (first) first.function.name = "changed";
    expect(registry.definitions()[0]?.function.name).toBe("calculator");
  });

  it("runs a good calculator call", async () => {
    const outcome = await registry.execute(
      call("calculator", '{"expression":"17 * 23"}'),
      context(),
    );
    expect(outcome).toEqual({ output: "391" });
  });

  it("runs a good clock call, with empty arguments meaning {}", async () => {
    const outcome = await registry.execute(call("clock", ""), context());
    expect(outcome.error).toBeUndefined();
    expect(JSON.parse(outcome.output)).toMatchObject({
      iso: "2024-03-15T20:00:00.000Z",
      timezone: "UTC",
      unix: 1710532800,
    });
  });

  it("returns an error for an unknown tool, listing the real ones", async () => {
    const outcome = await registry.execute(call("shell", '{"cmd":"ls"}'), context());
    expect(outcome.error).toBe(
      'unknown tool "shell"; available tools: calculator, clock, failing, nested',
    );
    expect(outcome.output).toBe(`error: ${outcome.error}`);
  });

  it("returns an error for arguments that are not JSON", async () => {
    const outcome = await registry.execute(call("calculator", "{expression: 1+1}"), context());
    expect(outcome.error).toMatch(/^arguments for "calculator" are not valid JSON: /);
    expect(outcome.output).toBe(`error: ${outcome.error}`);
  });

  it("returns an error naming each failing path", async () => {
    const outcome = await registry.execute(
      call("nested", '{"items":[{"count":2},{"count":-1},{"count":"x"}]}'),
      context(),
    );
    expect(outcome.error).toMatch(/^invalid arguments for "nested": /);
    expect(outcome.error).toContain("items[1].count: ");
    expect(outcome.error).toContain("items[2].count: ");
    expect(outcome.error).toContain("label: ");
    expect(outcome.output).toBe(`error: ${outcome.error}`);
  });

  it("names the root when the arguments are not an object", async () => {
    const outcome = await registry.execute(call("calculator", "42"), context());
    expect(outcome.error).toMatch(/^invalid arguments for "calculator": \(root\): /);
  });

  it("names the field for a wrong type", async () => {
    const outcome = await registry.execute(call("calculator", '{"expression":7}'), context());
    expect(outcome.error).toMatch(/^invalid arguments for "calculator": expression: /);
  });

  it("passes parsed arguments to the tool", async () => {
    const outcome = await registry.execute(
      call("nested", '{"items":[{"count":2},{"count":3}],"label":"total"}'),
      context(),
    );
    expect(outcome).toEqual({ output: "total: 5" });
  });

  it("returns an error when the tool throws", async () => {
    expect(await registry.execute(call("failing", "{}"), context())).toEqual({
      output: "error: disk on fire",
      error: "disk on fire",
      failure: "tool_error",
    });
    expect(await registry.execute(call("calculator", '{"expression":"1/0"}'), context())).toEqual({
      output: "error: division by zero at position 1",
      error: "division by zero at position 1",
      failure: "tool_error",
    });
    expect(await registry.execute(call("clock", '{"timezone":"Nowhere/Land"}'), context())).toEqual(
      {
        output: 'error: unknown time zone "Nowhere/Land"',
        error: 'unknown time zone "Nowhere/Land"',
        failure: "tool_error",
      },
    );
  });

  it("reports a thrown non-Error value", async () => {
    const weird = defineTool({
      name: "weird",
      description: "Throws a string.",
      input: z.object({}),
      handler: async () => {
        throw "just a string";
      },
    });
    const outcome = await new ToolRegistry([weird]).execute(call("weird", "{}"), context());
    expect(outcome).toEqual({
      output: "error: just a string",
      error: "just a string",
      failure: "tool_error",
    });
  });

  it("rethrows the abort reason when the signal is already aborted", async () => {
    const controller = new AbortController();
    const reason = new Error("job cancelled");
    controller.abort(reason);
    await expect(
      registry.execute(call("calculator", '{"expression":"1"}'), context(controller.signal)),
    ).rejects.toBe(reason);
    // Even a call that would otherwise be a tool error.
    await expect(registry.execute(call("shell", "{}"), context(controller.signal))).rejects.toBe(
      reason,
    );
  });

  it("rethrows the abort reason when aborted while a tool runs, even if the tool ignores it", async () => {
    let started!: () => void;
    const running = new Promise<void>((resolve) => {
      started = resolve;
    });
    const hanging = defineTool({
      name: "hanging",
      description: "Never finishes.",
      input: z.object({}),
      handler: () => {
        started();
        return new Promise<string>(() => {});
      },
    });
    const controller = new AbortController();
    const pending = new ToolRegistry([hanging]).execute(
      call("hanging", "{}"),
      context(controller.signal),
    );
    await running;
    const reason = new Error("timed out");
    controller.abort(reason);
    await expect(pending).rejects.toBe(reason);
  });

  it("rethrows the abort reason rather than reporting a tool's abort error", async () => {
    const controller = new AbortController();
    const obedient = defineTool({
      name: "obedient",
      description: "Aborts itself.",
      input: z.object({}),
      handler: (_input, ctx) => {
        controller.abort(new Error("stop"));
        ctx.signal.throwIfAborted();
        return "unreachable";
      },
    });
    await expect(
      new ToolRegistry([obedient]).execute(call("obedient", "{}"), context(controller.signal)),
    ).rejects.toThrow("stop");
  });
});

describe("createBuiltinRegistry", () => {
  it("holds the calculator and the clock", () => {
    const registry = createBuiltinRegistry();
    expect(registry.definitions().map((d) => d.function.name)).toEqual(["calculator", "clock"]);
  });
});
