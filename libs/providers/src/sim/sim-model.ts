import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { AssistantMessage, Message, ToolCall, ToolDefinition } from "@handoff/contracts";
import { replayAsStream } from "../replay.js";
import { estimateInputTokens, estimateTokens } from "../tokens.js";
import type {
  CallOptions,
  ChatModel,
  ChatRequest,
  ChatResult,
  ChatStreamEvent,
  ToolChoice,
} from "../types.js";

export interface SimOptions {
  model: string;
  /** Time the simulated model takes to answer, so timeouts, heartbeats and kills can be exercised. */
  latencyMs?: number;
}

/**
 * A deterministic simulated model for tests, demos and benchmarks. It never pretends to be a real
 * model: every text answer says it is simulated. It does make real tool calls: arithmetic goes to
 * a `calculator` tool and questions about the time to a `clock` tool, when those tools are offered,
 * and once the tools have answered it reports their results. The same request always gets the
 * same response.
 */
export class SimModel implements ChatModel {
  readonly provider = "sim" as const;
  readonly simulated = true;
  readonly model: string;
  readonly #latencyMs: number;

  constructor(options: SimOptions) {
    this.model = options.model;
    this.#latencyMs = options.latencyMs ?? 0;
  }

  async chat(request: ChatRequest, options: CallOptions = {}): Promise<ChatResult> {
    options.signal?.throwIfAborted();
    if (this.#latencyMs > 0) await sleep(this.#latencyMs, undefined, { signal: options.signal });
    return this.respond(request);
  }

  async *stream(request: ChatRequest, options: CallOptions = {}): AsyncIterable<ChatStreamEvent> {
    // Word-sized deltas, like a real token stream.
    yield* replayAsStream(
      await this.chat(request, options),
      (text) => text.match(/\S+\s*|\s+/g) ?? [],
    );
  }

  /** The simulated answer, without latency. */
  respond(request: ChatRequest): ChatResult {
    const tools = request.toolChoice === "none" ? [] : (request.tools ?? []);
    const message =
      answerFromToolResults(request.messages) ??
      chooseToolCall(request.messages, tools, request.toolChoice) ??
      this.#textAnswer(request.messages);

    let finishReason: ChatResult["finishReason"] = message.tool_calls ? "tool_calls" : "stop";
    let content = message.content;
    const maxTokens = request.params?.max_tokens;
    if (content && maxTokens !== undefined && estimateTokens(content) > maxTokens) {
      content = content.slice(0, maxTokens * 4);
      finishReason = "length";
    }
    const outputText =
      (content ?? "") + (message.tool_calls ?? []).map((c) => c.function.arguments).join("");
    return {
      message: { ...message, content },
      finishReason,
      usage: {
        inputTokens: estimateInputTokens(request.messages, request.tools),
        outputTokens: estimateTokens(outputText) + (message.tool_calls?.length ?? 0) * 8,
      },
      model: this.model,
    };
  }

  #textAnswer(messages: readonly Message[]): AssistantMessage {
    const question = lastUserText(messages);
    const context = messages.filter((m) => m.role === "system" || m.role === "developer");
    const findings = context.flatMap((m) => (m.content ?? "").match(/^- .+$/gm) ?? []);
    const lines = [
      `[simulated ${this.model}] This is a simulated answer; configure a real provider for a real one.`,
      `Question: "${truncate(question.replace(/\s+/g, " ").trim(), 160)}"`,
    ];
    if (findings.length > 0) {
      lines.push(`Findings handed up by earlier stages (${findings.length}):`, ...findings);
    }
    return { role: "assistant", content: lines.join("\n") };
  }
}

/** After tool calls, the simulated model reads the tool messages that answered them. */
function answerFromToolResults(messages: readonly Message[]): AssistantMessage | undefined {
  const last = messages.at(-1);
  if (last?.role !== "tool") return undefined;

  const results = new Map<string, string>();
  let at = messages.length - 1;
  for (; at >= 0; at--) {
    const m = messages[at];
    if (m?.role !== "tool") break;
    results.set(m.tool_call_id, m.content);
  }
  const asking = messages[at];
  const calls = asking?.role === "assistant" ? (asking.tool_calls ?? []) : [];
  const sentences = calls
    .filter((call) => results.has(call.id))
    .map((call) => describeToolResult(call, results.get(call.id) ?? ""));
  if (sentences.length === 0) return undefined;
  return { role: "assistant", content: sentences.join(" ") };
}

function describeToolResult(call: ToolCall, output: string): string {
  if (output.startsWith("error:")) return `The ${call.function.name} tool failed (${output}).`;
  const args = parseJson(call.function.arguments);
  if (call.function.name === "calculator" && typeof args?.expression === "string") {
    return `${args.expression} = ${output}.`;
  }
  if (call.function.name === "clock") {
    const time = parseJson(output);
    if (typeof time?.local === "string") return `It is ${time.local}.`;
  }
  return `${call.function.name} returned: ${output}`;
}

const TIME_QUESTION =
  /\b(what(?:'s| is)? (?:the )?(?:current )?(?:time|date|day)|current (?:time|date)|time is it|today'?s date|what day is)\b/i;
const TIME_ZONE = /\bin ((?:[A-Z][A-Za-z_]+\/[A-Za-z_]+(?:\/[A-Za-z_]+)?)|UTC)\b/;

/** Decides on a tool call, the way a tool-using model would, for the tools on offer. */
function chooseToolCall(
  messages: readonly Message[],
  tools: readonly ToolDefinition[],
  toolChoice: ToolChoice | undefined,
): AssistantMessage | undefined {
  if (tools.length === 0) return undefined;
  const question = lastUserText(messages);
  const offered = new Set(tools.map((t) => t.function.name));

  const named = typeof toolChoice === "object" ? toolChoice.function.name : undefined;
  const may = (name: string) => offered.has(name) && (named === undefined || named === name);

  const expression = findExpression(question);
  if (expression && may("calculator")) return toolCall("calculator", { expression }, question);
  if (may("clock") && (named === "clock" || TIME_QUESTION.test(question))) {
    const zone = TIME_ZONE.exec(question)?.[1];
    return toolCall("clock", zone ? { timezone: zone } : {}, question);
  }
  if (named !== undefined && offered.has(named)) return toolCall(named, {}, question);
  // A client-defined tool named after something the question mentions, e.g. get_weather.
  const words = new Set(question.toLowerCase().match(/[a-z]+/g) ?? []);
  const byName = tools.find((t) =>
    t.function.name
      .toLowerCase()
      .split(/[_-]+/)
      .filter((w) => w.length > 3)
      .some((w) => words.has(w)),
  );
  if (byName) return toolCall(byName.function.name, {}, question);
  const first = tools[0];
  if (toolChoice === "required" && first) return toolCall(first.function.name, {}, question);
  return undefined;
}

function toolCall(name: string, args: Record<string, unknown>, seed: string): AssistantMessage {
  const id = `call_${createHash("sha256").update(`${name}:${seed}`).digest("hex").slice(0, 24)}`;
  return {
    role: "assistant",
    content: null,
    tool_calls: [{ id, type: "function", function: { name, arguments: JSON.stringify(args) } }],
  };
}

/**
 * Finds an arithmetic expression in prose: a run of numbers joined by operators, e.g.
 * "What is 17 * 23?" gives "17 * 23" and "compute (2 + 3) ^ 2" gives "(2 + 3) ^ 2". Of several,
 * the longest (the first of equals). One pass over the text, so a prompt of any length costs time
 * in proportion to it: no regular expression here may backtrack over a long run of digits.
 */
export function findExpression(text: string): string | undefined {
  const s = text.replace(/×/g, "*").replace(/÷/g, "/");
  let best: string | undefined;
  let i = 0;
  while (i < s.length) {
    if (!isExpressionChar(s.charCodeAt(i))) {
      i++;
      continue;
    }
    // A maximal run of digits, dots, spaces, operators and parentheses. It holds an expression
    // when an operator or parenthesis follows its first digit.
    const runStart = i;
    let firstDigit = -1;
    let operatorAfterDigit = false;
    for (; i < s.length; i++) {
      const code = s.charCodeAt(i);
      if (!isExpressionChar(code)) break;
      if (firstDigit < 0) {
        if (isDigitCode(code)) firstDigit = i;
      } else if (isOperatorCode(code)) operatorAfterDigit = true;
    }
    if (firstDigit < 0 || !operatorAfterDigit) continue;
    // Before its first digit an expression may have spaces, and signs or "(" before those.
    let start = firstDigit;
    while (start > runStart && isSpaceCode(s.charCodeAt(start - 1))) start--;
    while (start > runStart && isLeadingCode(s.charCodeAt(start - 1))) start--;
    let end = i;
    while (end > start && (isSpaceCode(s.charCodeAt(end - 1)) || s.charCodeAt(end - 1) === DOT)) {
      end--;
    }
    while (start < end && isSpaceCode(s.charCodeAt(start))) start++;
    if (end - start <= (best?.length ?? 0)) continue;
    const candidate = s.slice(start, end);
    if (BINARY_OPERATION.test(candidate)) best = candidate;
  }
  return best ? balanceParentheses(best) : undefined;
}

/** A digit, then an operator, then a digit or "(": linear, it backtracks over spaces only. */
const BINARY_OPERATION = /\d\s*(?:[-+*/^%]|\*\*)\s*[\d(]/;
const DOT = 0x2e;

function isDigitCode(code: number): boolean {
  return code >= 0x30 && code <= 0x39;
}

/** `-+*\/^%()`: the characters that join numbers into an expression. */
function isOperatorCode(code: number): boolean {
  switch (code) {
    case 0x2d: // -
    case 0x2b: // +
    case 0x2a: // *
    case 0x2f: // /
    case 0x5e: // ^
    case 0x25: // %
    case 0x28: // (
    case 0x29: // )
      return true;
    default:
      return false;
  }
}

/** What may come before an expression's first digit (and its spaces): a sign or "(". */
function isLeadingCode(code: number): boolean {
  return code === 0x2d || code === 0x2b || code === 0x28;
}

/** Exactly the characters of a regular expression's `\s` (and of `String.prototype.trim`). */
function isSpaceCode(code: number): boolean {
  if (code <= 0x20) return code === 0x20 || (code >= 0x09 && code <= 0x0d);
  if (code < 0xa0) return false;
  return (
    code === 0xa0 ||
    code === 0x1680 ||
    (code >= 0x2000 && code <= 0x200a) ||
    code === 0x2028 ||
    code === 0x2029 ||
    code === 0x202f ||
    code === 0x205f ||
    code === 0x3000 ||
    code === 0xfeff
  );
}

function isExpressionChar(code: number): boolean {
  return isDigitCode(code) || code === DOT || isOperatorCode(code) || isSpaceCode(code);
}

/** Drops unmatched parentheses at either end, counting each kind once: linear too. */
function balanceParentheses(expression: string): string {
  let opens = 0;
  let closes = 0;
  for (let i = 0; i < expression.length; i++) {
    const code = expression.charCodeAt(i);
    if (code === 0x28) opens++;
    else if (code === 0x29) closes++;
  }
  let start = 0;
  let end = expression.length;
  while (start < end && expression.charCodeAt(start) === 0x28 && opens > closes) {
    opens--;
    start++;
    while (start < end && isSpaceCode(expression.charCodeAt(start))) start++;
  }
  while (end > start && expression.charCodeAt(end - 1) === 0x29 && closes > opens) {
    closes--;
    end--;
    while (end > start && isSpaceCode(expression.charCodeAt(end - 1))) end--;
  }
  return expression.slice(start, end);
}

function lastUserText(messages: readonly Message[]): string {
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (m?.role === "user") return m.content;
  }
  return "";
}

function parseJson(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return value && typeof value === "object" ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}
