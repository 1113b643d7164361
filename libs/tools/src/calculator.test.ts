import { describe, expect, it } from "vitest";
import { CalculatorError, calculator, evaluate, formatNumber, MAX_NESTING } from "./calculator.js";

const ctx = { signal: new AbortController().signal, now: () => new Date(0) };

/** Runs the tool the way the registry would, after schema parsing. */
const calc = (expression: string) => calculator.handler({ expression }, ctx);

function errorOf(expression: string): CalculatorError {
  try {
    evaluate(expression);
  } catch (err) {
    expect(err).toBeInstanceOf(CalculatorError);
    return err as CalculatorError;
  }
  throw new Error(`expected "${expression}" to fail, but it evaluated`);
}

describe("evaluate: precedence and associativity", () => {
  it.each([
    ["1 + 2 * 3", 7],
    ["(1 + 2) * 3", 9],
    ["10 - 4 - 3", 3],
    ["100 / 10 / 5", 2],
    ["2 * 3 + 4 * 5", 26],
    ["7 - 2 * 3 + 1", 2],
    ["17 % 5", 2],
    ["-7 % 3", -1],
    ["2 + 10 % 4 * 3", 8],
    ["((2))", 2],
    ["  3\t*\n4  ", 12],
  ])("%s = %d", (expression, expected) => {
    expect(evaluate(expression)).toBe(expected);
  });
});

describe("evaluate: unary signs", () => {
  it.each([
    ["-3", -3],
    ["+3", 3],
    ["--3", 3],
    ["-(-(3))", 3],
    ["2 - -3", 5],
    ["2 * -3", -6],
    ["-2 * -3", 6],
    ["-(2 + 3)", -5],
  ])("%s = %d", (expression, expected) => {
    expect(evaluate(expression)).toBe(expected);
  });
});

describe("evaluate: powers", () => {
  it.each([
    ["2^10", 1024],
    ["2**10", 1024],
    ["2^3^2", 512],
    ["2**3**2", 512],
    ["(2^3)^2", 64],
    ["-2^2", -4],
    ["(-2)^2", 4],
    ["2^-1", 0.5],
    ["2^-2^2", 1 / 16],
    ["3 * 2^2", 12],
    ["2^2 * 3", 12],
    ["4^0.5", 2],
    ["0^0", 1],
  ])("%s = %d", (expression, expected) => {
    expect(evaluate(expression)).toBe(expected);
  });
});

describe("evaluate: numbers", () => {
  it.each([
    ["0", 0],
    ["42", 42],
    ["3.25", 3.25],
    [".5", 0.5],
    ["007", 7],
    ["1e3", 1000],
    ["1E3", 1000],
    ["2.5E-4", 0.00025],
    ["1.5e+2", 150],
    ["6×7", 42],
    ["84÷2", 42],
    ["50 \u2212 8", 42],
  ])("%s = %d", (expression, expected) => {
    expect(evaluate(expression)).toBe(expected);
  });
});

describe("evaluate: functions", () => {
  it.each([
    ["sqrt(16)", 4],
    ["sqrt(2)^2", 2.0000000000000004],
    ["abs(-3.5)", 3.5],
    ["abs(3)", 3],
    ["round(2.4)", 2],
    ["round(2.5)", 3],
    ["round(-2.5)", -3],
    ["floor(-1.5)", -2],
    ["floor(1.9)", 1],
    ["ceil(1.2)", 2],
    ["ceil(-1.2)", -1],
    ["min(3, 1, 2)", 1],
    ["max(3, 1, 2)", 3],
    ["max(7)", 7],
    ["min(-1, -5)", -5],
    ["log(1000)", 3],
    ["log(0.01)", -2],
    ["ln(1)", 0],
    ["exp(0)", 1],
    ["sin(0)", 0],
    ["cos(0)", 1],
    ["tan(0)", 0],
    ["SQRT(9)", 3],
    ["Max(1, sqrt(16) + 1)", 5],
    ["sqrt(abs(-16)) * 2", 8],
  ])("%s = %d", (expression, expected) => {
    expect(evaluate(expression)).toBe(expected);
  });

  it("computes the transcendental functions, in radians", () => {
    expect(evaluate("ln(e)")).toBeCloseTo(1, 15);
    expect(evaluate("exp(1)")).toBeCloseTo(Math.E, 15);
    expect(evaluate("sin(pi / 2)")).toBeCloseTo(1, 15);
    expect(evaluate("cos(pi)")).toBeCloseTo(-1, 15);
    expect(evaluate("tan(pi / 4)")).toBeCloseTo(1, 15);
    expect(evaluate("ln(exp(2))")).toBeCloseTo(2, 15);
  });
});

describe("evaluate: constants", () => {
  it("knows pi and e in any case", () => {
    expect(evaluate("pi")).toBe(Math.PI);
    expect(evaluate("PI")).toBe(Math.PI);
    expect(evaluate("\u03c0")).toBe(Math.PI);
    expect(evaluate("e")).toBe(Math.E);
    expect(evaluate("E")).toBe(Math.E);
    expect(evaluate("2 * pi")).toBe(2 * Math.PI);
    expect(evaluate("e^2")).toBe(Math.E ** 2);
  });
});

describe("evaluate: errors name the problem and its position", () => {
  it.each([
    ["(1 + 2))", 'unexpected ")" at position 7'],
    ["1 +", "unexpected end of expression at position 3"],
    ["* 2", 'unexpected "*" at position 0'],
    ["2 3", 'unexpected "3" at position 2'],
    ["2(3)", 'unexpected "(" at position 1'],
    ["2pi", 'unexpected "pi" at position 1'],
    ["1,000", 'unexpected "," at position 1'],
    ["1 $ 2", 'unexpected "$" at position 2'],
    ["1.", "expected a digit after the decimal point at position 2"],
    ["1e999", 'number "1e999" is too large at position 0'],
    ["(1 + 2", 'missing ")" at position 6'],
    ["sqrt(4", 'missing ")" at position 6'],
    ["foo(1)", 'unknown function "foo" at position 0'],
    ["1 + bar(2)", 'unknown function "bar" at position 4'],
    ["x + 1", 'unknown name "x" at position 0'],
    ["sqrt + 1", 'function "sqrt" needs its arguments in parentheses'],
    ["pi(2)", '"pi" is a constant, not a function, at position 0'],
    ["1 / 0", "division by zero at position 2"],
    ["1 / (2 - 2)", "division by zero at position 2"],
    ["5 % 0", "division by zero at position 2"],
    ["10^400", "result is not a finite number at position 2"],
    ["exp(1000)", "result is not a finite number at position 0"],
    ["(-8)^(1/3)", "result is not a finite number at position 4"],
    ["sqrt(-1)", "sqrt of a negative number at position 0"],
    ["1 + log(0)", "log of a number that is not positive at position 4"],
    ["ln(-1)", "ln of a number that is not positive at position 0"],
    ["sqrt(1, 2)", "sqrt takes exactly 1 argument but got 2 at position 0"],
    ["abs()", "abs takes exactly 1 argument but got 0 at position 0"],
    ["max()", "max needs at least 1 argument at position 0"],
    ["", "the expression is empty"],
    ["   ", "the expression is empty"],
  ])("%j: %s", (expression, message) => {
    expect(errorOf(expression).message).toContain(message);
  });

  it("reports the first problem from the left", () => {
    expect(errorOf("foo(1) + 1;").message).toContain('unknown function "foo" at position 0');
    expect(errorOf("1 + 2 # 3 / 0").message).toBe('unexpected "#" at position 6');
  });

  it("is an Error with its own name", () => {
    const err = errorOf("1 +");
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe("CalculatorError");
  });
});

describe("evaluate: rejects anything that is not arithmetic", () => {
  it.each([
    ["process.exit(1)", 'unknown name "process" at position 0'],
    ["constructor", 'unknown name "constructor" at position 0'],
    ["__proto__", 'unknown name "__proto__" at position 0'],
    ["toString(1)", 'unknown function "toString" at position 0'],
    ["hasOwnProperty(1)", 'unknown function "hasOwnProperty" at position 0'],
    ["1;2", 'unexpected ";" at position 1'],
    ["a=1", 'unknown name "a" at position 0'],
    ["1 = 1", 'unexpected "=" at position 2'],
    ["Math.PI", 'unknown name "Math" at position 0'],
    ['"1" + 1', 'unexpected """ at position 0'],
    ["[1]", 'unexpected "[" at position 0'],
    ["0x10", 'unexpected "x10" at position 1'],
    ["2 << 1", 'unexpected "<" at position 2'],
    ["1 // 2", 'unexpected "/" at position 3'],
    ["\u{1F600}", 'unexpected "\u{1F600}" at position 0'],
  ])("%j", (expression, message) => {
    expect(errorOf(expression).message).toContain(message);
  });
});

describe("evaluate: nesting limit", () => {
  const nested = (levels: number) => `${"(".repeat(levels)}1${")".repeat(levels)}`;

  it(`accepts ${MAX_NESTING} levels of parentheses`, () => {
    expect(evaluate(nested(MAX_NESTING))).toBe(1);
  });

  it("refuses one level more, naming the position", () => {
    expect(errorOf(nested(MAX_NESTING + 1)).message).toBe(
      `the expression is nested too deeply (more than ${MAX_NESTING} levels) at position ${MAX_NESTING}`,
    );
  });

  it("counts unary signs, powers and function calls as nesting", () => {
    expect(errorOf(`${"-".repeat(MAX_NESTING + 1)}1`).message).toContain("nested too deeply");
    expect(errorOf(`${"2^".repeat(MAX_NESTING + 1)}1`).message).toContain("nested too deeply");
    expect(errorOf(`${"abs(".repeat(MAX_NESTING + 1)}1`).message).toContain("nested too deeply");
    expect(evaluate(`${"-".repeat(MAX_NESTING)}1`)).toBe(1);
  });

  it("survives very long flat input without recursion trouble", () => {
    expect(evaluate(Array.from({ length: 10_000 }, () => "1").join("+"))).toBe(10_000);
  });

  it("reads a megabyte of digits, operators and parentheses in one pass", () => {
    expect(evaluate(`0${" + (2 - 1) * 1".repeat(70_000)}`)).toBe(70_000);
    expect(errorOf(`${"(".repeat(1_000_000)}1`).message).toContain("nested too deeply");
    expect(errorOf(`${"1 ".repeat(500_000)}`).message).toBe('unexpected "1" at position 2');
  }, 5_000);
});

describe("formatNumber", () => {
  it.each([
    [391, "391"],
    [-42, "-42"],
    [0, "0"],
    [-0, "0"],
    [2 ** 53, "9007199254740992"],
    [-(2 ** 53), "-9007199254740992"],
    [0.1 + 0.2, "0.3"],
    [1 / 3, "0.333333333333"],
    [-2 / 3, "-0.666666666667"],
    [2.5, "2.5"],
    [1e-7, "1e-7"],
    [0.000123, "0.000123"],
    [2 ** 60, "1.15292150461e+18"],
    [1e21, "1e+21"],
    [123456789012.5, "123456789013"],
  ])("%d -> %s", (value, expected) => {
    expect(formatNumber(value)).toBe(expected);
  });
});

describe("calculator tool", () => {
  it("returns the formatted result", async () => {
    expect(await calc("0.1 + 0.2")).toBe("0.3");
    expect(await calc("17 * 23")).toBe("391");
    expect(await calc("2^53")).toBe("9007199254740992");
    expect(await calc("(2 + 3) * 4 ^ 2 / sqrt(16)")).toBe("20");
    expect(await calc("pi")).toBe("3.14159265359");
    expect(await calc("10 / 4")).toBe("2.5");
  });

  it("throws CalculatorError for a bad expression", () => {
    expect(() => calc("2 +* 3")).toThrow(new CalculatorError('unexpected "*" at position 3'));
  });

  it("limits the expression length in its schema", () => {
    expect(calculator.input.safeParse({ expression: "1".repeat(500) }).success).toBe(true);
    expect(calculator.input.safeParse({ expression: "1".repeat(501) }).success).toBe(false);
    expect(calculator.input.safeParse({ expression: "" }).success).toBe(false);
  });

  it("describes its syntax to the model", () => {
    for (const word of ["sqrt", "max", "log", "pi", "^", "%", "thousands"]) {
      expect(calculator.description).toContain(word);
    }
  });
});
