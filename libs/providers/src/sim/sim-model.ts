import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type {
  AssistantMessage,
  ChoiceLogprobs,
  Message,
  ResponseFormat,
  ToolCall,
  ToolDefinition,
} from "@handoff/contracts";
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
import { jsonInstance } from "./json-instance.js";

export interface SimOptions {
  model: string;
  /** Time the simulated model takes to answer, so timeouts, heartbeats and kills can be exercised. */
  latencyMs?: number;
}

/**
 * A deterministic simulated model for tests, demos and benchmarks. It never pretends to be a real
 * model: every prose answer says it is simulated (and usage says so too). It does what a real
 * model does with a request's options, so every client feature can be tried on it:
 *
 * - Tool calls: arithmetic goes to a `calculator` tool and questions about the time to a `clock`
 *   tool, when those tools are offered, and any tool whose name the question mentions is called
 *   too, all in one turn (parallel tool calls) unless `parallel_tool_calls` is false. Arguments
 *   are valid against the tool's parameters. Once the tools have answered it reports their results.
 * - `response_format`: `json_schema` answers with JSON valid against the schema (the answer's
 *   text and the tools' numbers where properties ask for them), `json_object` with a JSON object.
 * - `logprobs` (and `top_logprobs`): made-up, deterministic log-probabilities of its word tokens.
 *
 * The same request always gets the same response.
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
    yield* replayAsStream(await this.chat(request, options), simTokens);
  }

  /** The simulated answer, without latency. */
  respond(request: ChatRequest): ChatResult {
    const tools = request.toolChoice === "none" ? [] : (request.tools ?? []);
    const params = request.params ?? {};
    // Instructions after the last turn (the mesh puts its own there) do not change what that
    // turn was: tool results are still waiting for their answer.
    const turns = withoutTrailingInstructions(request.messages);
    const answered = answerFromToolResults(turns);
    let message =
      answered ??
      chooseToolCalls(request.messages, tools, request.toolChoice, params.parallel_tool_calls) ??
      this.#textAnswer(request.messages);
    if (!message.tool_calls && params.response_format && params.response_format.type !== "text") {
      message = {
        ...message,
        content: formatAnswer(params.response_format, {
          text: oneLine(message.content ?? ""),
          numbers: answered ? toolNumbers(turns) : [],
          question: lastUserText(request.messages),
        }),
      };
    }

    let finishReason: ChatResult["finishReason"] = message.tool_calls ? "tool_calls" : "stop";
    let content = message.content;
    const maxTokens = params.max_tokens;
    if (content && maxTokens !== undefined && estimateTokens(content) > maxTokens) {
      content = content.slice(0, maxTokens * 4);
      finishReason = "length";
    }
    const outputText =
      (content ?? "") + (message.tool_calls ?? []).map((c) => c.function.arguments).join("");
    const choiceLogprobs =
      params.logprobs === true && content
        ? simLogprobs(content, params.top_logprobs ?? 0)
        : undefined;
    return {
      message: { ...message, content },
      finishReason,
      usage: {
        inputTokens: estimateInputTokens(request.messages, request.tools),
        outputTokens: estimateTokens(outputText) + (message.tool_calls?.length ?? 0) * 8,
      },
      model: this.model,
      ...(choiceLogprobs ? { choiceLogprobs } : {}),
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

/** The conversation up to its last turn: without the system and developer messages after it. */
function withoutTrailingInstructions(messages: readonly Message[]): readonly Message[] {
  let end = messages.length;
  while (
    end > 0 &&
    (messages[end - 1]?.role === "system" || messages[end - 1]?.role === "developer")
  ) {
    end--;
  }
  return end === messages.length ? messages : messages.slice(0, end);
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

/**
 * Decides on tool calls, the way a tool-using model would, for the tools on offer: the calculator
 * for arithmetic, the clock for the time, and every tool named after something the question
 * mentions (e.g. get_weather for "weather"), all in one turn; only the first with
 * `parallel_tool_calls: false`. A named tool choice calls that tool alone; `required` calls the
 * first tool when none fits.
 */
function chooseToolCalls(
  messages: readonly Message[],
  tools: readonly ToolDefinition[],
  toolChoice: ToolChoice | undefined,
  parallel: boolean | undefined,
): AssistantMessage | undefined {
  if (tools.length === 0) return undefined;
  const question = lastUserText(messages);
  const offered = new Map(tools.map((t) => [t.function.name, t] as const));
  const named = typeof toolChoice === "object" ? toolChoice.function.name : undefined;
  const may = (name: string) => offered.has(name) && (named === undefined || named === name);
  const calls: Array<{ name: string; args: Record<string, unknown> }> = [];
  const call = (name: string) => {
    if (!calls.some((c) => c.name === name)) {
      calls.push({ name, args: argumentsFor(offered.get(name), question) });
    }
  };

  if (findExpression(question) && may("calculator")) call("calculator");
  if (may("clock") && (named === "clock" || TIME_QUESTION.test(question))) call("clock");
  if (named !== undefined) {
    if (offered.has(named)) call(named);
  } else {
    // Client-defined tools named after something the question mentions, e.g. get_weather.
    const words = new Set(question.toLowerCase().match(/[a-z]+/g) ?? []);
    for (const tool of tools) {
      // get_weather, get-weather and getWeather all mention the weather.
      const mentioned = tool.function.name
        .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
        .toLowerCase()
        .split(/[_-]+/)
        .filter((w) => w.length > 3)
        .some((w) => words.has(w));
      if (mentioned) call(tool.function.name);
    }
  }
  const first = tools[0];
  if (calls.length === 0 && toolChoice === "required" && first) call(first.function.name);
  if (calls.length === 0) return undefined;
  return toolCalls(parallel === false ? calls.slice(0, 1) : calls, question);
}

/**
 * A call's arguments: the calculator's expression and the clock's time zone from the question;
 * for any other tool, an object valid against its parameters, with what the question says where
 * a parameter asks for it (a city, a query).
 */
function argumentsFor(tool: ToolDefinition | undefined, question: string): Record<string, unknown> {
  const name = tool?.function.name;
  if (name === "calculator") {
    const expression = findExpression(question);
    return expression ? { expression } : {};
  }
  if (name === "clock") {
    const zone = TIME_ZONE.exec(question)?.[1];
    return zone ? { timezone: zone } : {};
  }
  const parameters = tool?.function.parameters;
  if (!parameters) return {};
  const args = jsonInstance(parameters, { question, requiredOnly: true });
  return args !== null && typeof args === "object" && !Array.isArray(args)
    ? (args as Record<string, unknown>)
    : {};
}

function toolCalls(
  calls: ReadonlyArray<{ name: string; args: Record<string, unknown> }>,
  seed: string,
): AssistantMessage {
  return {
    role: "assistant",
    content: null,
    tool_calls: calls.map(({ name, args }) => ({
      id: `call_${createHash("sha256").update(`${name}:${seed}`).digest("hex").slice(0, 24)}`,
      type: "function" as const,
      function: { name, arguments: JSON.stringify(args) },
    })),
  };
}

/**
 * The answer in the JSON `response_format` asked for: valid against a `json_schema`'s schema, or
 * for `json_object` (and a `json_schema` without a schema) a JSON object holding the answer.
 */
function formatAnswer(
  format: ResponseFormat,
  hints: { text: string; numbers: readonly number[]; question: string },
): string {
  if (format.type === "json_schema" && format.json_schema.schema) {
    return JSON.stringify(jsonInstance(format.json_schema.schema, hints));
  }
  return JSON.stringify({ answer: hints.text, simulated: true });
}

/** The numbers the tools answered with, in the order of their results. */
function toolNumbers(messages: readonly Message[]): number[] {
  const numbers: number[] = [];
  for (let at = messages.length - 1; at >= 0; at--) {
    const m = messages[at];
    if (m?.role !== "tool") break;
    const text = m.content.trim();
    const value = Number(text);
    if (text !== "" && Number.isFinite(value)) numbers.unshift(value);
  }
  return numbers;
}

/** The simulated model's tokens: words with their trailing space, as it streams them. */
function simTokens(text: string): string[] {
  return text.match(/\S+\s*|\s+/g) ?? [];
}

/**
 * Made-up log-probabilities of the answer's tokens, the same for the same text: each in
 * (-0.7, 0], with `top` alternatives (the token itself first, then other words of the answer,
 * each less likely), as OpenAI's `choices[].logprobs` lays them out.
 */
function simLogprobs(text: string, top: number): ChoiceLogprobs {
  const tokens = simTokens(text);
  const distinct = [...new Set(tokens)];
  const bytes = (token: string) => [...Buffer.from(token, "utf8")];
  const content = tokens.map((token, index) => {
    const logprob = -(hashNumber(`${index}:${token}`) % 700) / 1000;
    // Other words of the answer, distinct, from a place the token picks.
    const others = distinct.filter((other) => other !== token);
    const start = hashNumber(`${index}:${token}:alternatives`);
    const count = Math.max(0, Math.min(top - 1, others.length));
    const alternatives = Array.from({ length: count }, (_, k) => {
      const other = others[(start + k) % others.length] ?? "";
      return { token: other, logprob: round4(logprob - 1.5 * (k + 1)), bytes: bytes(other) };
    });
    const entry = { token, logprob, bytes: bytes(token) };
    return { ...entry, top_logprobs: top > 0 ? [entry, ...alternatives] : [] };
  });
  return { content, refusal: null };
}

function hashNumber(text: string): number {
  return createHash("sha256").update(text).digest().readUInt32BE(0);
}

function round4(n: number): number {
  return Math.round(n * 1e4) / 1e4;
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").trim();
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
