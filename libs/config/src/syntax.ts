import { YAMLError } from "yaml";

/**
 * Where a config file stops parsing and why, in words of our own. Parsers quote the offending
 * source (`yaml` prints a code frame, `JSON.parse` a snippet of the input), and a config file is
 * where someone may have pasted a key: what reaches a terminal or a log is only the position and
 * the kind of problem, never the text.
 */
export interface SyntaxProblem {
  /** 1-based; absent when the parser gave no position. */
  line?: number;
  /** 1-based, in characters; absent when the parser gave no position. */
  column?: number;
  problem: string;
}

/** `<file>: line L, column C: <problem>`, or `<file>: <problem>` without a position. */
export function formatSyntaxProblem(source: string, found: SyntaxProblem): string {
  const where =
    found.line !== undefined && found.column !== undefined
      ? `line ${found.line}, column ${found.column}: `
      : "";
  return `${source}: ${where}${found.problem}`;
}

/** The 1-based line and column of a character offset into `text`. */
export function lineAndColumn(text: string, offset: number): { line: number; column: number } {
  const at = Math.max(0, Math.min(offset, text.length));
  let line = 1;
  let lineStart = 0;
  for (let i = text.indexOf("\n"); i !== -1 && i < at; i = text.indexOf("\n", i + 1)) {
    line++;
    lineStart = i + 1;
  }
  return { line, column: [...text.slice(lineStart, at)].length + 1 };
}

/**
 * A YAML error's position and problem. Parse with `prettyErrors: false` so the error carries no
 * code frame. The few messages that quote source (`Unresolved tag: !x`, `Invalid escape sequence
 * \q`, `... extra characters: xyz`, an unresolved alias's name) are cut before the quote.
 */
export function yamlSyntaxProblem(error: unknown, text: string): SyntaxProblem {
  const raw = error instanceof Error ? error.message : String(error);
  // Only the first line: any later one would be a code frame.
  let detail = raw.split("\n")[0]?.trim() ?? "";
  detail = detail.replace(/ at line \d+, column \d+.*$/, "");
  const colon = detail.indexOf(": ");
  if (colon !== -1) detail = detail.slice(0, colon);
  detail = detail.replace(/^(Invalid escape sequence)\b.*$/, "$1");
  const problem = `not valid YAML: ${detail || "syntax error"}`;
  const offset = error instanceof YAMLError ? error.pos?.[0] : undefined;
  if (offset === undefined || offset < 0) return { problem };
  return { ...lineAndColumn(text, offset), problem };
}

/**
 * Why `text` is not JSON, found by a scan of our own: V8's `JSON.parse` messages quote the input
 * and often give no position. Call it only for text that `JSON.parse` rejected.
 */
export function jsonSyntaxProblem(text: string): SyntaxProblem {
  let found: { offset: number; problem: string } | undefined;
  try {
    found = scanJson(text);
  } catch {
    // Nesting deeper than the stack: say what, without where.
  }
  if (!found) return { problem: "not valid JSON" };
  return { ...lineAndColumn(text, found.offset), problem: `not valid JSON: ${found.problem}` };
}

class JsonSyntax extends Error {
  constructor(
    readonly offset: number,
    readonly problem: string,
  ) {
    super(problem);
  }
}

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const ESCAPE = /\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})/y;

/** The first syntax error of `text` as JSON (RFC 8259), or undefined when there is none. */
function scanJson(text: string): { offset: number; problem: string } | undefined {
  let i = 0;
  const fail = (problem: string, at = i): never => {
    throw new JsonSyntax(at, problem);
  };
  /** Fails unless the next character is `char`; the end of the text is its own problem. */
  const expect = (char: string, problem: string) => {
    if (i >= text.length) fail("unexpected end of input");
    if (text[i] !== char) fail(problem);
  };
  const space = () => {
    while (i < text.length && " \t\n\r".includes(text[i] as string)) i++;
  };
  const string = () => {
    const start = i;
    i++;
    for (;;) {
      if (i >= text.length) fail("unterminated string", start);
      const code = text.charCodeAt(i);
      if (code === 0x22) {
        i++;
        return;
      }
      if (code === 0x5c) {
        ESCAPE.lastIndex = i;
        if (!ESCAPE.test(text)) fail("invalid escape in a string");
        i = ESCAPE.lastIndex;
      } else if (code < 0x20) {
        fail("unescaped control character (a line break?) in a string");
      } else i++;
    }
  };
  const value = (): void => {
    space();
    if (i >= text.length) fail("unexpected end of input");
    const c = text[i] as string;
    if (c === "{") {
      i++;
      space();
      if (text[i] === "}") {
        i++;
        return;
      }
      for (;;) {
        space();
        expect('"', "expected a property name in double quotes");
        string();
        space();
        expect(":", "expected ':' after a property name");
        i++;
        value();
        space();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") {
          i++;
          return;
        }
        fail(i >= text.length ? "unexpected end of input" : "expected ',' or '}' after a value");
      }
    }
    if (c === "[") {
      i++;
      space();
      if (text[i] === "]") {
        i++;
        return;
      }
      for (;;) {
        value();
        space();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "]") {
          i++;
          return;
        }
        fail(i >= text.length ? "unexpected end of input" : "expected ',' or ']' after a value");
      }
    }
    if (c === '"') {
      string();
      return;
    }
    if (c === "-" || (c >= "0" && c <= "9")) {
      NUMBER.lastIndex = i;
      if (!NUMBER.test(text)) fail("invalid number");
      i = NUMBER.lastIndex;
      return;
    }
    for (const literal of ["true", "false", "null"]) {
      if (text.startsWith(literal, i)) {
        i += literal.length;
        return;
      }
    }
    fail("unexpected character (strings and names need double quotes)");
  };
  try {
    value();
    space();
    if (i < text.length) fail("unexpected text after the JSON value");
    return undefined;
  } catch (error) {
    if (error instanceof JsonSyntax) return { offset: error.offset, problem: error.problem };
    throw error;
  }
}
