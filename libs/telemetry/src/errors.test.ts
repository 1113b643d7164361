import { parseArgs } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import {
  errorFields,
  errorLine,
  formatError,
  isExpectedError,
  isUserError,
  logStartupFailure,
  showsStack,
  wantsStacks,
} from "./errors.js";
import { clearSecrets, registerSecret } from "./secrets.js";

/** A stand-in for `HandoffError`, which telemetry knows by name and code only. */
class HandoffError extends Error {
  override readonly name = "HandoffError";
  constructor(
    readonly code: string,
    message: string,
    readonly issues?: Array<{ path: string; message: string }>,
  ) {
    super(message);
  }
}

const configError = () =>
  new HandoffError(
    "HANDOFF_ERR_CONFIG",
    "/etc/handoff.yaml: line 3, column 7: not valid YAML: Map keys must be unique",
  );

function parseArgsError(): Error {
  try {
    parseArgs({ args: ["--nope"], options: {} });
  } catch (error) {
    return error as Error;
  }
  throw new Error("parseArgs accepted an unknown option");
}

const STACK_LINE = /^\s+at /m;

afterEach(() => clearSecrets());

describe("which errors are the user's", () => {
  it("knows config, validation and auth errors, and a rejected command line", () => {
    expect(isUserError(configError())).toBe(true);
    expect(isUserError(new HandoffError("HANDOFF_ERR_VALIDATION", "bad"))).toBe(true);
    expect(isUserError(parseArgsError())).toBe(true);
  });

  it("does not count bugs, operational errors or non-errors", () => {
    expect(isUserError(new TypeError("x is undefined"))).toBe(false);
    expect(isUserError(new HandoffError("HANDOFF_ERR_INTERNAL", "bug"))).toBe(false);
    expect(isUserError(new HandoffError("HANDOFF_ERR_PROVIDER", "upstream 500"))).toBe(false);
    expect(isUserError("a string")).toBe(false);
    expect(isUserError(Object.assign(new Error("e"), { code: "ENOENT" }))).toBe(false);
  });

  it("expects every Handoff code but a bug's", () => {
    expect(isExpectedError(new HandoffError("HANDOFF_ERR_PROVIDER", "upstream 500"))).toBe(true);
    expect(isExpectedError(new HandoffError("HANDOFF_ERR_UNAVAILABLE", "no NATS"))).toBe(true);
    expect(isExpectedError(new HandoffError("HANDOFF_ERR_INTERNAL", "bug"))).toBe(false);
    expect(isExpectedError(new RangeError("bug"))).toBe(false);
  });
});

describe("stacks", () => {
  it("are wanted at LOG_LEVEL debug and trace only", () => {
    expect(wantsStacks({})).toBe(false);
    expect(wantsStacks({ LOG_LEVEL: "info" })).toBe(false);
    expect(wantsStacks({ LOG_LEVEL: "debug" })).toBe(true);
    expect(wantsStacks({ LOG_LEVEL: " TRACE " })).toBe(true);
  });

  it("are shown for bugs always, for expected errors only at debug", () => {
    expect(showsStack(new Error("bug"), {})).toBe(true);
    expect(showsStack(configError(), {})).toBe(false);
    expect(showsStack(configError(), { LOG_LEVEL: "debug" })).toBe(true);
  });
});

describe("formatError", () => {
  it("prints a user's error as one line, code and message", () => {
    const text = formatError(configError(), {});
    expect(text).toBe(
      "HANDOFF_ERR_CONFIG: /etc/handoff.yaml: line 3, column 7: not valid YAML: Map keys must be unique",
    );
    expect(text).not.toMatch(STACK_LINE);
    expect(formatError(parseArgsError(), {})).toMatch(/^Unknown option '--nope'/);
  });

  it("prints the stack of a user's error at LOG_LEVEL=debug", () => {
    const text = formatError(configError(), { LOG_LEVEL: "debug" });
    expect(text).toContain("HANDOFF_ERR_CONFIG");
    expect(text).toMatch(STACK_LINE);
  });

  it("prints a bug with its stack", () => {
    const text = formatError(new TypeError("cannot read x of undefined"), {});
    expect(text).toContain("TypeError: cannot read x of undefined");
    expect(text).toMatch(STACK_LINE);
  });

  it("keeps a multi-line message on one line, and scrubs secrets", () => {
    registerSecret("sk-canary-5b5b5b5b");
    expect(errorLine(new HandoffError("HANDOFF_ERR_CONFIG", "a\n  b sk-canary-5b5b5b5b"))).toBe(
      "HANDOFF_ERR_CONFIG: a b [redacted]",
    );
    expect(formatError(new Error("bug with sk-canary-5b5b5b5b"), {})).not.toContain("canary");
  });
});

describe("errorFields and logStartupFailure", () => {
  function sink() {
    const lines: Record<string, unknown>[] = [];
    const raw: string[] = [];
    return {
      lines,
      raw,
      write(chunk: string) {
        raw.push(chunk);
        lines.push(JSON.parse(chunk));
      },
    };
  }

  it("carries the code and issues of a user's error, and no err", () => {
    const error = new HandoffError("HANDOFF_ERR_CONFIG", "bad", [{ path: "a", message: "b" }]);
    expect(errorFields(error, {})).toEqual({
      code: "HANDOFF_ERR_CONFIG",
      issues: [{ path: "a", message: "b" }],
    });
    expect(errorFields(error, { LOG_LEVEL: "debug" })).toMatchObject({ err: error });
  });

  it("logs a config error as one fatal line without a stack", () => {
    const out = sink();
    logStartupFailure("gateway", configError(), { destination: out, env: {} });
    expect(out.lines).toHaveLength(1);
    expect(out.lines[0]).toMatchObject({
      level: "fatal",
      service: "gateway",
      code: "HANDOFF_ERR_CONFIG",
      msg: "gateway failed to start: HANDOFF_ERR_CONFIG: /etc/handoff.yaml: line 3, column 7: not valid YAML: Map keys must be unique",
    });
    expect(out.lines[0]).not.toHaveProperty("err");
    expect(out.raw.join("")).not.toContain("    at ");
  });

  it("logs the stack at LOG_LEVEL=debug, and for a bug", () => {
    const debug = sink();
    logStartupFailure("gateway", configError(), {
      destination: debug,
      env: { LOG_LEVEL: "debug" },
    });
    expect((debug.lines[0]?.err as { stack?: string } | undefined)?.stack).toMatch(STACK_LINE);

    const bug = sink();
    logStartupFailure("classifier", new TypeError("x is undefined"), {
      destination: bug,
      env: {},
    });
    expect(bug.lines[0]).toMatchObject({
      level: "fatal",
      msg: "classifier failed to start: x is undefined",
    });
    expect((bug.lines[0]?.err as { stack?: string } | undefined)?.stack).toMatch(STACK_LINE);
  });
});
