import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * Local stand-ins for model vendors, speaking their real wire formats (OpenAI chat completions,
 * Anthropic messages; JSON and SSE streaming), so the mesh and its clients are tested against the
 * protocol rather than a mock of our own code. Each server answers from a script of replies
 * queued per path, and otherwise from a default that behaves like a small tool-using model.
 */

/** One scripted answer to one request. */
export type UpstreamReply =
  | { kind: "json"; status?: number; body: unknown; headers?: Record<string, string> }
  | { kind: "sse"; events: string[]; cut?: boolean; delayMs?: number }
  /** Accepts the request and never answers: for timeouts. */
  | { kind: "hang" };

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingMessage["headers"];
  body: Record<string, unknown>;
  at: number;
}

type Replier = (body: Record<string, unknown>) => UpstreamReply;

/** An HTTP server on 127.0.0.1 that replays scripted vendor responses. */
export class UpstreamServer {
  readonly requests: RecordedRequest[] = [];
  readonly #queues = new Map<string, UpstreamReply[]>();
  readonly #hanging = new Set<ServerResponse>();

  private constructor(
    private readonly server: Server,
    readonly url: string,
    private readonly fallback: Replier,
  ) {}

  /** Starts a server whose unscripted requests get `fallback`'s reply. */
  static async start(fallback: Replier): Promise<UpstreamServer> {
    let self: UpstreamServer | undefined;
    const server = createServer((req, res) => {
      void self?.handle(req, res);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    self = new UpstreamServer(server, `http://127.0.0.1:${port}`, fallback);
    return self;
  }

  /** Queues replies for the next requests to `path`, in order. */
  enqueue(path: string, ...replies: UpstreamReply[]): void {
    this.#queues.set(path, [...(this.#queues.get(path) ?? []), ...replies]);
  }

  /** Requests received for `path` (optionally only those for one model). */
  received(path: string, model?: string): RecordedRequest[] {
    return this.requests.filter((r) => r.path === path && (!model || r.body.model === model));
  }

  async close(): Promise<void> {
    for (const res of this.#hanging) res.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    const body = (text ? JSON.parse(text) : {}) as Record<string, unknown>;
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    this.requests.push({
      method: req.method ?? "GET",
      path,
      headers: req.headers,
      body,
      at: Date.now(),
    });
    const reply = this.#queues.get(path)?.shift() ?? this.fallback(body);
    switch (reply.kind) {
      case "json":
        res.writeHead(reply.status ?? 200, {
          "content-type": "application/json",
          ...reply.headers,
        });
        res.end(JSON.stringify(reply.body));
        return;
      case "hang":
        this.#hanging.add(res);
        res.on("close", () => this.#hanging.delete(res));
        return;
      case "sse": {
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
        const events = reply.cut
          ? reply.events.slice(0, Math.ceil(reply.events.length / 2))
          : reply.events;
        for (const event of events) {
          // Wait for each write to reach the socket: a cut must come after what was sent.
          await new Promise<void>((resolve) => res.write(event, () => resolve()));
          if (reply.delayMs) await new Promise((resolve) => setTimeout(resolve, reply.delayMs));
        }
        if (reply.cut) {
          // A cut stream loses its connection mid-way, as a crashed upstream does.
          await new Promise((resolve) => setTimeout(resolve, 50));
          res.destroy();
        } else res.end();
        return;
      }
    }
  }
}

// --- What a small tool-using model would say ----------------------------------------------------

interface WireMessage {
  role: string;
  content?: unknown;
  tool_calls?: Array<{ function: { name: string; arguments: string } }>;
}

function text(content: unknown): string {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content
      .map((part: { type?: string; text?: string; content?: unknown }) =>
        part.type === "tool_result" ? text(part.content) : (part.text ?? ""),
      )
      .join("");
  }
  return "";
}

/** What tool results say: a tool message's text, or the `tool_result` blocks' of a user turn. */
function toolResultText(content: unknown): string {
  if (!Array.isArray(content)) return text(content);
  return text(content.filter((part: { type?: string }) => part.type === "tool_result"));
}

/**
 * The question a user turn asks: its text, or of a turn in blocks (Anthropic's), the first text
 * block's, as the client wrote it; what the mesh adds to the turn after it (its context from
 * earlier hops, an instruction) comes as later blocks.
 */
function firstText(content: unknown): string {
  if (!Array.isArray(content)) return text(content);
  const first = (content as Array<{ type?: string; text?: string }>).find(
    (part) => part.type === "text",
  );
  return first?.text ?? text(content);
}

/** The decision of the scripted model: answer with text, or call a tool. */
export type ModelMove =
  | { kind: "text"; text: string }
  | { kind: "tool"; name: string; arguments: Record<string, unknown> };

/**
 * A deterministic policy: after a tool result, state it; offered a calculator and asked
 * arithmetic, call it; offered a tool whose name the question mentions, call it; else greet.
 */
export function decideMove(
  messages: WireMessage[],
  toolNames: string[],
  model: string,
  lastIsToolResult: boolean,
): ModelMove {
  // The last turn: instructions after it (the mesh puts its own there) do not change what it was.
  const last = [...messages].reverse().find((m) => m.role !== "system" && m.role !== "developer");
  if (lastIsToolResult) {
    return { kind: "text", text: `The tool answered: ${toolResultText(last?.content)}.` };
  }
  const question = firstText([...messages].reverse().find((m) => m.role === "user")?.content);
  const expression = /(\d+(?:\.\d+)?\s*[-+*/]\s*\d+(?:\.\d+)?)/.exec(question)?.[1];
  if (expression && toolNames.includes("calculator")) {
    return { kind: "tool", name: "calculator", arguments: { expression } };
  }
  const words = question.toLowerCase();
  const named = toolNames.find((name) =>
    name
      .split(/[_-]/)
      .filter((w) => w.length > 3)
      .some((w) => words.includes(w)),
  );
  if (named) return { kind: "tool", name: named, arguments: { city: "Paris" } };
  return { kind: "text", text: `Hello from ${model}. You asked: ${question}` };
}

// --- OpenAI chat completions --------------------------------------------------------------------

const CREATED = 1_727_000_000;

/** `data: <json>\n\n`, one SSE event. */
export const sseEvent = (data: unknown, event?: string): string =>
  `${event ? `event: ${event}\n` : ""}data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`;

function openaiChunk(
  model: string,
  delta: Record<string, unknown>,
  finish: string | null = null,
  logprobs: OpenAILogprobs | null = null,
) {
  return {
    id: "chatcmpl-upstream",
    object: "chat.completion.chunk",
    created: CREATED,
    model,
    system_fingerprint: "fp_upstream",
    choices: [{ index: 0, delta, logprobs, finish_reason: finish }],
  };
}

/**
 * Token counts of a scripted answer. `cached`, when given, is reported as OpenAI reports the
 * prompt tokens it read from its prompt cache: `prompt_tokens_details.cached_tokens`, a part of
 * `prompt_tokens`, with the rest of OpenAI's details beside it.
 */
export interface OpenAIUsage {
  prompt: number;
  completion: number;
  cached?: number;
}

/** OpenAI's `usage` object for `usage`. */
function openaiUsage(usage: OpenAIUsage) {
  return {
    prompt_tokens: usage.prompt,
    completion_tokens: usage.completion,
    total_tokens: usage.prompt + usage.completion,
    ...(usage.cached === undefined
      ? {}
      : {
          prompt_tokens_details: { cached_tokens: usage.cached, audio_tokens: 0 },
          completion_tokens_details: {
            reasoning_tokens: 0,
            audio_tokens: 0,
            accepted_prediction_tokens: 0,
            rejected_prediction_tokens: 0,
          },
        }),
  };
}

/** Options of the scripted OpenAI answers. */
export interface OpenAIReplyOptions {
  /**
   * Token log-probabilities to answer with, as to a request with `logprobs: true`: a text move's
   * content is cut into one token per number, in order, each reported as OpenAI does. A tool move
   * has no content tokens and carries none.
   */
  logprobs?: number[];
}

/** One entry of `choices[].logprobs.content`, as OpenAI sends it without `top_logprobs`. */
interface OpenAITokenLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: [];
}

interface OpenAILogprobs {
  content: OpenAITokenLogprob[];
  refusal: null;
}

/**
 * The content tokens of `text` carrying `logprobs`: the text cut into as many consecutive pieces
 * as there are numbers, as even in length as whole characters allow, so the tokens put together
 * are the text again. Undefined without numbers to spread.
 */
function contentTokens(
  text: string,
  logprobs: number[] | undefined,
): OpenAITokenLogprob[] | undefined {
  if (!logprobs) return undefined;
  const chars = [...text];
  if (logprobs.length > chars.length) {
    throw new Error(
      `cannot spread ${logprobs.length} logprobs over the ${chars.length} characters of "${text}"`,
    );
  }
  return logprobs.map((logprob, i) => {
    const from = Math.floor((i * chars.length) / logprobs.length);
    const to = Math.floor(((i + 1) * chars.length) / logprobs.length);
    const token = chars.slice(from, to).join("");
    return { token, logprob, bytes: [...Buffer.from(token, "utf8")], top_logprobs: [] };
  });
}

/** A non-streamed `chat.completion` for a move, with `options.logprobs` on its content tokens. */
export function openaiCompletion(
  model: string,
  move: ModelMove,
  usage: OpenAIUsage = { prompt: 40, completion: 12 },
  options: OpenAIReplyOptions = {},
) {
  const tokens = move.kind === "text" ? contentTokens(move.text, options.logprobs) : undefined;
  const logprobs: OpenAILogprobs | null = tokens ? { content: tokens, refusal: null } : null;
  const message =
    move.kind === "text"
      ? { role: "assistant", content: move.text, refusal: null }
      : {
          role: "assistant",
          content: null,
          refusal: null,
          tool_calls: [
            {
              id: "call_upstream_1",
              type: "function",
              function: { name: move.name, arguments: JSON.stringify(move.arguments) },
            },
          ],
        };
  return {
    id: "chatcmpl-upstream",
    object: "chat.completion",
    created: CREATED,
    model,
    system_fingerprint: "fp_upstream",
    choices: [
      {
        index: 0,
        message,
        logprobs,
        finish_reason: move.kind === "text" ? "stop" : "tool_calls",
      },
    ],
    usage: openaiUsage(usage),
  };
}

/**
 * The streamed form of a move, chunked as OpenAI documents it, with the include_usage chunk. With
 * `options.logprobs`, a text move streams one content token a chunk, each chunk carrying its
 * token's log-probability, as OpenAI streams an answer to `logprobs: true`.
 */
export function openaiStream(
  model: string,
  move: ModelMove,
  usage: OpenAIUsage = { prompt: 40, completion: 12 },
  options: OpenAIReplyOptions = {},
): string[] {
  const events = [
    sseEvent(openaiChunk(model, { role: "assistant", content: move.kind === "text" ? "" : null })),
  ];
  const tokens = move.kind === "text" ? contentTokens(move.text, options.logprobs) : undefined;
  if (tokens) {
    for (const token of tokens) {
      events.push(
        sseEvent(
          openaiChunk(model, { content: token.token }, null, { content: [token], refusal: null }),
        ),
      );
    }
  } else if (move.kind === "text") {
    for (const piece of move.text.match(/\S+\s*/g) ?? []) {
      events.push(sseEvent(openaiChunk(model, { content: piece })));
    }
  } else {
    const args = JSON.stringify(move.arguments);
    events.push(
      sseEvent(
        openaiChunk(model, {
          tool_calls: [
            {
              index: 0,
              id: "call_upstream_1",
              type: "function",
              function: { name: move.name, arguments: "" },
            },
          ],
        }),
      ),
    );
    for (let at = 0; at < args.length; at += 8) {
      events.push(
        sseEvent(
          openaiChunk(model, {
            tool_calls: [{ index: 0, function: { arguments: args.slice(at, at + 8) } }],
          }),
        ),
      );
    }
  }
  events.push(sseEvent(openaiChunk(model, {}, move.kind === "text" ? "stop" : "tool_calls")));
  events.push(
    sseEvent({
      ...openaiChunk(model, {}),
      choices: [],
      usage: openaiUsage(usage),
    }),
  );
  events.push(sseEvent("[DONE]"));
  return events;
}

/** OpenAI's error body, e.g. for a 429 or a 500. */
export function openaiError(
  status: number,
  message: string,
  retryAfterSeconds?: number,
): UpstreamReply {
  return {
    kind: "json",
    status,
    body: {
      error: {
        message,
        type:
          status === 429 ? "requests" : status >= 500 ? "server_error" : "invalid_request_error",
        param: null,
        code: status === 429 ? "rate_limit_exceeded" : null,
      },
    },
    ...(retryAfterSeconds !== undefined
      ? { headers: { "retry-after": String(retryAfterSeconds) } }
      : {}),
  };
}

/** The default OpenAI-compatible upstream: a small tool-using model on `/v1/chat/completions`. */
export function openaiModelReply(body: Record<string, unknown>): UpstreamReply {
  const model = String(body.model);
  const messages = (body.messages ?? []) as WireMessage[];
  const tools = ((body.tools ?? []) as Array<{ function: { name: string } }>).map(
    (t) => t.function.name,
  );
  const lastTurn = [...messages]
    .reverse()
    .find((m) => m.role !== "system" && m.role !== "developer");
  const move = decideMove(messages, tools, model, lastTurn?.role === "tool");
  return body.stream
    ? { kind: "sse", events: openaiStream(model, move) }
    : { kind: "json", body: openaiCompletion(model, move) };
}

// --- Anthropic messages -------------------------------------------------------------------------

/**
 * Token counts of a scripted Anthropic answer. With `cacheRead` or `cacheWrite` given, the usage
 * carries Anthropic's prompt-cache fields: `input` is then, as Anthropic counts it, only the
 * prompt tokens after the last cache breakpoint, and the cached ones come on top.
 */
export interface AnthropicUsage {
  input: number;
  output: number;
  cacheRead?: number;
  cacheWrite?: number;
}

/** Anthropic's `usage` object for `usage`, with `output` output tokens. */
function anthropicUsage(usage: AnthropicUsage, output = usage.output) {
  if (usage.cacheRead === undefined && usage.cacheWrite === undefined) {
    return { input_tokens: usage.input, output_tokens: output };
  }
  return {
    input_tokens: usage.input,
    cache_creation_input_tokens: usage.cacheWrite ?? 0,
    cache_read_input_tokens: usage.cacheRead ?? 0,
    cache_creation: {
      ephemeral_5m_input_tokens: usage.cacheWrite ?? 0,
      ephemeral_1h_input_tokens: 0,
    },
    output_tokens: output,
    service_tier: "standard",
  };
}

/** A non-streamed Anthropic `message` for a move. */
export function anthropicMessage(
  model: string,
  move: ModelMove,
  usage: AnthropicUsage = { input: 40, output: 12 },
) {
  return {
    id: "msg_upstream",
    type: "message",
    role: "assistant",
    model,
    content:
      move.kind === "text"
        ? [{ type: "text", text: move.text }]
        : [{ type: "tool_use", id: "toolu_upstream_1", name: move.name, input: move.arguments }],
    stop_reason: move.kind === "text" ? "end_turn" : "tool_use",
    stop_sequence: null,
    usage: anthropicUsage(usage),
  };
}

/**
 * The streamed form of a move, as Anthropic's event sequence: `message_start` carries the input
 * counts (the prompt-cache ones too, when given), `message_delta` the output count, and with the
 * prompt-cache fields the cumulative input counts again, as the current API sends them.
 */
export function anthropicStream(
  model: string,
  move: ModelMove,
  usage: AnthropicUsage = { input: 40, output: 12 },
): string[] {
  const events = [
    sseEvent(
      {
        type: "message_start",
        message: {
          id: "msg_upstream",
          type: "message",
          role: "assistant",
          content: [],
          model,
          stop_reason: null,
          stop_sequence: null,
          usage: anthropicUsage(usage, 1),
        },
      },
      "message_start",
    ),
  ];
  if (move.kind === "text") {
    events.push(
      sseEvent(
        { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
        "content_block_start",
      ),
    );
    events.push(sseEvent({ type: "ping" }, "ping"));
    for (const piece of move.text.match(/\S+\s*/g) ?? []) {
      events.push(
        sseEvent(
          { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: piece } },
          "content_block_delta",
        ),
      );
    }
  } else {
    events.push(
      sseEvent(
        {
          type: "content_block_start",
          index: 0,
          content_block: { type: "tool_use", id: "toolu_upstream_1", name: move.name, input: {} },
        },
        "content_block_start",
      ),
    );
    const args = JSON.stringify(move.arguments);
    for (let at = 0; at < args.length; at += 8) {
      events.push(
        sseEvent(
          {
            type: "content_block_delta",
            index: 0,
            delta: { type: "input_json_delta", partial_json: args.slice(at, at + 8) },
          },
          "content_block_delta",
        ),
      );
    }
  }
  events.push(sseEvent({ type: "content_block_stop", index: 0 }, "content_block_stop"));
  events.push(
    sseEvent(
      {
        type: "message_delta",
        delta: { stop_reason: move.kind === "text" ? "end_turn" : "tool_use", stop_sequence: null },
        usage:
          usage.cacheRead === undefined && usage.cacheWrite === undefined
            ? { output_tokens: usage.output }
            : {
                input_tokens: usage.input,
                cache_creation_input_tokens: usage.cacheWrite ?? 0,
                cache_read_input_tokens: usage.cacheRead ?? 0,
                output_tokens: usage.output,
              },
      },
      "message_delta",
    ),
  );
  events.push(sseEvent({ type: "message_stop" }, "message_stop"));
  return events;
}

/** Anthropic's error body, e.g. for a 429, 500 or 529. */
export function anthropicError(
  status: number,
  message: string,
  retryAfterSeconds?: number,
): UpstreamReply {
  const type =
    status === 429
      ? "rate_limit_error"
      : status === 529
        ? "overloaded_error"
        : status >= 500
          ? "api_error"
          : "invalid_request_error";
  return {
    kind: "json",
    status,
    body: { type: "error", error: { type, message } },
    ...(retryAfterSeconds !== undefined
      ? { headers: { "retry-after": String(retryAfterSeconds) } }
      : {}),
  };
}

/** The default Anthropic upstream: a small tool-using model on `/v1/messages`. */
export function anthropicModelReply(body: Record<string, unknown>): UpstreamReply {
  const model = String(body.model);
  const messages = (body.messages ?? []) as WireMessage[];
  const tools = ((body.tools ?? []) as Array<{ name: string }>).map((t) => t.name);
  const last = messages.at(-1);
  const lastIsToolResult =
    Array.isArray(last?.content) &&
    (last.content as Array<{ type?: string }>).some((b) => b.type === "tool_result");
  const move = decideMove(messages, tools, model, lastIsToolResult);
  return body.stream
    ? { kind: "sse", events: anthropicStream(model, move) }
    : { kind: "json", body: anthropicMessage(model, move) };
}
