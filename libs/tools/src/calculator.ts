import { z } from "zod";
import { defineTool } from "./tool.js";

/** Any problem with an expression; the message names what is wrong and where. */
export class CalculatorError extends Error {
  override readonly name = "CalculatorError";
}

/** Deeper nesting than this is refused rather than risking the call stack. */
export const MAX_NESTING = 100;

type Operator = "+" | "-" | "*" | "/" | "%" | "^" | "(" | ")" | ",";

/** `pos` is the 0-based index of the token's first character; `text` is how it was written. */
type Token =
  | { kind: "number"; value: number; text: string; pos: number }
  | { kind: "name"; name: string; text: string; pos: number }
  | { kind: "op"; op: Operator; text: string; pos: number }
  | { kind: "end"; text: ""; pos: number }
  // Lexical errors become tokens so the parser reports problems in left-to-right order.
  | { kind: "invalid"; message: string; text: string; pos: number };

// Typographic variants models and users paste in, mapped to the ASCII operator they mean.
const SINGLE_CHAR_OPS: ReadonlyMap<string, Operator> = new Map<string, Operator>([
  ["+", "+"],
  ["-", "-"],
  ["\u2212", "-"], // minus sign
  ["*", "*"],
  ["\u00d7", "*"], // multiplication sign
  ["/", "/"],
  ["\u00f7", "/"], // division sign
  ["%", "%"],
  ["^", "^"],
  ["(", "("],
  [")", ")"],
  [",", ","],
]);

const isDigit = (ch: string | undefined): boolean => ch !== undefined && ch >= "0" && ch <= "9";
const isNameStart = (ch: string | undefined): boolean => ch !== undefined && /^[A-Za-z_]$/.test(ch);
const isNamePart = (ch: string | undefined): boolean => isNameStart(ch) || isDigit(ch);

/** Splits the source into tokens on demand; never throws. */
class Lexer {
  readonly #src: string;
  #i = 0;

  constructor(src: string) {
    this.#src = src;
  }

  next(): Token {
    const src = this.#src;
    while (this.#i < src.length && /\s/.test(src[this.#i] ?? "")) this.#i++;
    const pos = this.#i;
    const ch = src[pos];
    if (ch === undefined) return { kind: "end", text: "", pos };

    if (isDigit(ch) || (ch === "." && isDigit(src[pos + 1]))) return this.#number(pos);

    if (isNameStart(ch)) {
      let end = pos + 1;
      while (isNamePart(src[end])) end++;
      const text = src.slice(pos, end);
      this.#i = end;
      return { kind: "name", name: text.toLowerCase(), text, pos };
    }
    if (ch === "\u03c0") {
      this.#i = pos + 1;
      return { kind: "name", name: "pi", text: ch, pos };
    }

    if (ch === "*" && src[pos + 1] === "*") {
      this.#i = pos + 2;
      return { kind: "op", op: "^", text: "**", pos };
    }
    const op = SINGLE_CHAR_OPS.get(ch);
    if (op !== undefined) {
      this.#i = pos + 1;
      return { kind: "op", op, text: ch, pos };
    }

    // Show a whole code point, not half of a surrogate pair.
    const text = String.fromCodePoint(src.codePointAt(pos) ?? 0xfffd);
    this.#i = pos + text.length;
    return { kind: "invalid", message: `unexpected "${text}" at position ${pos}`, text, pos };
  }

  #number(pos: number): Token {
    const src = this.#src;
    let end = pos;
    while (isDigit(src[end])) end++;
    if (src[end] === ".") {
      end++;
      if (!isDigit(src[end])) {
        this.#i = end;
        const text = src.slice(pos, end);
        return {
          kind: "invalid",
          message: `expected a digit after the decimal point at position ${end}`,
          text,
          pos,
        };
      }
      while (isDigit(src[end])) end++;
    }
    // Only a complete exponent is taken, so "2e" stays a number followed by the name "e".
    if (src[end] === "e" || src[end] === "E") {
      const sign = src[end + 1] === "+" || src[end + 1] === "-" ? 1 : 0;
      if (isDigit(src[end + 1 + sign])) {
        end += 1 + sign;
        while (isDigit(src[end])) end++;
      }
    }
    this.#i = end;
    const text = src.slice(pos, end);
    const value = Number(text);
    if (!Number.isFinite(value)) {
      return {
        kind: "invalid",
        message: `number "${text}" is too large at position ${pos}`,
        text,
        pos,
      };
    }
    return { kind: "number", value, text, pos };
  }
}

interface UnaryFunction {
  apply(x: number): number;
  /** Why `x` is outside the domain, if it is; gives a clearer message than "not finite". */
  domainError?(x: number): string | undefined;
}

const UNARY_FUNCTIONS: ReadonlyMap<string, UnaryFunction> = new Map<string, UnaryFunction>([
  [
    "sqrt",
    {
      apply: Math.sqrt,
      domainError: (x) => (x < 0 ? "sqrt of a negative number" : undefined),
    },
  ],
  ["abs", { apply: Math.abs }],
  // Half away from zero, as people round by hand; Math.round would give round(-2.5) = -2.
  ["round", { apply: (x) => Math.sign(x) * Math.round(Math.abs(x)) }],
  ["floor", { apply: Math.floor }],
  ["ceil", { apply: Math.ceil }],
  [
    "log",
    {
      apply: Math.log10,
      domainError: (x) => (x <= 0 ? "log of a number that is not positive" : undefined),
    },
  ],
  [
    "ln",
    {
      apply: Math.log,
      domainError: (x) => (x <= 0 ? "ln of a number that is not positive" : undefined),
    },
  ],
  ["exp", { apply: Math.exp }],
  ["sin", { apply: Math.sin }],
  ["cos", { apply: Math.cos }],
  ["tan", { apply: Math.tan }],
]);

const VARIADIC_FUNCTIONS: ReadonlyMap<string, (args: readonly number[]) => number> = new Map([
  ["min", (args: readonly number[]) => Math.min(...args)],
  ["max", (args: readonly number[]) => Math.max(...args)],
]);

const CONSTANTS: ReadonlyMap<string, number> = new Map([
  ["pi", Math.PI],
  ["e", Math.E],
]);

const FUNCTION_NAMES = [...UNARY_FUNCTIONS.keys(), ...VARIADIC_FUNCTIONS.keys()].join(", ");

/**
 * Recursive descent over this grammar (lowest precedence first):
 *
 *   expression := term (("+" | "-") term)*
 *   term       := unary (("*" | "/" | "%") unary)*
 *   unary      := ("+" | "-") unary | power
 *   power      := primary ("^" unary)?
 *   primary    := number | name | name "(" arguments? ")" | "(" expression ")"
 *
 * `power` takes a `unary` on its right, which makes "^" right-associative and lets "2^-1" work,
 * while a minus on its left applies to the whole power, so -2^2 = -4.
 */
class Parser {
  readonly #lexer: Lexer;
  #token: Token;
  #depth = 0;

  constructor(src: string) {
    this.#lexer = new Lexer(src);
    this.#token = this.#lexer.next();
  }

  parse(): number {
    if (this.#atEnd()) throw new CalculatorError("the expression is empty");
    const value = this.#expression();
    if (!this.#atEnd()) throw this.#unexpected();
    return value;
  }

  #atEnd(): boolean {
    return this.#token.kind === "end";
  }

  #advance(): void {
    this.#token = this.#lexer.next();
  }

  #atOp(...ops: Operator[]): Operator | undefined {
    const token = this.#token;
    return token.kind === "op" && ops.includes(token.op) ? token.op : undefined;
  }

  #unexpected(): CalculatorError {
    const token = this.#token;
    switch (token.kind) {
      case "invalid":
        return new CalculatorError(token.message);
      case "end":
        return new CalculatorError(`unexpected end of expression at position ${token.pos}`);
      case "op":
        if (token.op === ",") {
          // The likeliest cause by far is a number written as "1,000".
          return new CalculatorError(
            `unexpected "," at position ${token.pos} (commas only separate function arguments; write numbers without thousands separators)`,
          );
        }
        return new CalculatorError(`unexpected "${token.text}" at position ${token.pos}`);
      default:
        return new CalculatorError(`unexpected "${token.text}" at position ${token.pos}`);
    }
  }

  #nested<T>(pos: number, parse: () => T): T {
    if (this.#depth >= MAX_NESTING) {
      throw new CalculatorError(
        `the expression is nested too deeply (more than ${MAX_NESTING} levels) at position ${pos}`,
      );
    }
    this.#depth++;
    try {
      return parse();
    } finally {
      this.#depth--;
    }
  }

  #expression(): number {
    let value = this.#term();
    for (let op = this.#atOp("+", "-"); op !== undefined; op = this.#atOp("+", "-")) {
      const pos = this.#token.pos;
      this.#advance();
      value = binary(op, value, this.#term(), pos);
    }
    return value;
  }

  #term(): number {
    let value = this.#unary();
    for (let op = this.#atOp("*", "/", "%"); op !== undefined; op = this.#atOp("*", "/", "%")) {
      const pos = this.#token.pos;
      this.#advance();
      value = binary(op, value, this.#unary(), pos);
    }
    return value;
  }

  #unary(): number {
    const op = this.#atOp("+", "-");
    if (op === undefined) return this.#power();
    const pos = this.#token.pos;
    this.#advance();
    const operand = this.#nested(pos, () => this.#unary());
    return op === "-" ? -operand : operand;
  }

  #power(): number {
    const base = this.#primary();
    if (this.#atOp("^") === undefined) return base;
    const pos = this.#token.pos;
    this.#advance();
    const exponent = this.#nested(pos, () => this.#unary());
    return binary("^", base, exponent, pos);
  }

  #primary(): number {
    const token = this.#token;
    if (token.kind === "number") {
      this.#advance();
      return token.value;
    }
    if (token.kind === "name") {
      this.#advance();
      if (this.#atOp("(") !== undefined) return this.#call(token.name, token.text, token.pos);
      const constant = CONSTANTS.get(token.name);
      if (constant !== undefined) return constant;
      if (UNARY_FUNCTIONS.has(token.name) || VARIADIC_FUNCTIONS.has(token.name)) {
        throw new CalculatorError(
          `function "${token.text}" needs its arguments in parentheses, e.g. ${token.name}(2), at position ${token.pos}`,
        );
      }
      throw new CalculatorError(
        `unknown name "${token.text}" at position ${token.pos} (the only constants are pi and e)`,
      );
    }
    if (token.kind === "op" && token.op === "(") {
      this.#advance();
      const value = this.#nested(token.pos, () => this.#expression());
      this.#expectClose();
      return value;
    }
    throw this.#unexpected();
  }

  #expectClose(): void {
    if (this.#atOp(")") !== undefined) {
      this.#advance();
      return;
    }
    if (this.#atEnd()) {
      throw new CalculatorError(`missing ")" at position ${this.#token.pos}`);
    }
    throw this.#unexpected();
  }

  /** Called with the current token on the "(" after the function name. */
  #call(name: string, text: string, pos: number): number {
    const unary = UNARY_FUNCTIONS.get(name);
    const variadic = VARIADIC_FUNCTIONS.get(name);
    if (unary === undefined && variadic === undefined) {
      if (CONSTANTS.has(name)) {
        throw new CalculatorError(`"${text}" is a constant, not a function, at position ${pos}`);
      }
      throw new CalculatorError(
        `unknown function "${text}" at position ${pos} (available: ${FUNCTION_NAMES})`,
      );
    }

    const open = this.#token.pos;
    this.#advance();
    const args = this.#nested(open, () => {
      const values: number[] = [];
      if (this.#atOp(")") !== undefined) return values;
      values.push(this.#expression());
      while (this.#atOp(",") !== undefined) {
        this.#advance();
        values.push(this.#expression());
      }
      return values;
    });
    this.#expectClose();

    if (variadic !== undefined) {
      if (args.length === 0) {
        throw new CalculatorError(`${name} needs at least 1 argument at position ${pos}`);
      }
      return finite(variadic(args), pos);
    }

    const [x] = args;
    if (unary === undefined || x === undefined || args.length !== 1) {
      throw new CalculatorError(
        `${name} takes exactly 1 argument but got ${args.length} at position ${pos}`,
      );
    }
    const domainError = unary.domainError?.(x);
    if (domainError !== undefined) throw new CalculatorError(`${domainError} at position ${pos}`);
    return finite(unary.apply(x), pos);
  }
}

function finite(value: number, pos: number): number {
  if (!Number.isFinite(value)) {
    throw new CalculatorError(`result is not a finite number at position ${pos}`);
  }
  return value;
}

function binary(op: Operator, left: number, right: number, pos: number): number {
  switch (op) {
    case "+":
      return finite(left + right, pos);
    case "-":
      return finite(left - right, pos);
    case "*":
      return finite(left * right, pos);
    case "/":
    case "%":
      if (right === 0) throw new CalculatorError(`division by zero at position ${pos}`);
      return finite(op === "/" ? left / right : left % right, pos);
    case "^":
      return finite(left ** right, pos);
    default:
      throw new CalculatorError(`unexpected "${op}" at position ${pos}`);
  }
}

/**
 * Evaluates an arithmetic expression. Only numbers, operators, parentheses and the listed
 * functions and constants exist, so no input can reach anything in the JavaScript runtime.
 * Throws {@link CalculatorError} for every problem, naming the 0-based character position.
 */
export function evaluate(expression: string): number {
  return new Parser(expression).parse();
}

const SIGNIFICANT_DIGITS = 12;

/**
 * Formats a result for the model: integers up to 2^53 exactly, anything else with at most 12
 * significant digits and no trailing zeros, so float noise such as 0.1 + 0.2 reads as "0.3".
 */
export function formatNumber(value: number): string {
  // Past 2^53 an integer-valued double may not be the true result, so all its digits would lie.
  if (Number.isInteger(value) && Math.abs(value) <= 2 ** 53) return String(value);
  const [mantissa = "", exponent] = value.toPrecision(SIGNIFICANT_DIGITS).split("e");
  const trimmed = mantissa.includes(".") ? mantissa.replace(/\.?0+$/, "") : mantissa;
  return exponent === undefined ? trimmed : `${trimmed}e${exponent}`;
}

/** Arithmetic the model should not do in its head. */
export const calculator = defineTool({
  name: "calculator",
  idempotent: true,
  description:
    "Evaluates one arithmetic expression and returns the result. Syntax: numbers like 42, 3.14, " +
    "2.5e-4 (no thousands separators); + - * / and % (remainder); ^ or ** for powers " +
    "(right-associative, -2^2 = -4); parentheses; functions sqrt, abs, round, floor, ceil, " +
    "min(a, b, ...), max(a, b, ...), log (base 10), ln, exp, sin, cos, tan (radians); constants " +
    "pi and e. No variables, assignments or units. Results have up to 12 significant digits.",
  input: z.object({
    expression: z
      .string()
      .min(1)
      .max(500)
      .describe('The expression to evaluate, e.g. "(2 + 3) * 4 ^ 2 / sqrt(16)"'),
  }),
  handler: ({ expression }) => formatNumber(evaluate(expression)),
});
