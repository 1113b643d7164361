/**
 * A mock OpenAI upstream for the peer comparison of `BENCH_PEERS=1 npm run bench`: answers
 * `POST /v1/chat/completions` at once with a valid, non-streamed `chat.completion`, whoever asks
 * (the benchmark directly, Portkey's gateway, or the mesh's light tier). Run as its own process
 * (`node bench/mock-upstream.ts <port>`), so its CPU is charged to nobody else; it prints
 * `listening on <port>` when it serves. `GET /stats` says how many completions it has answered.
 *
 * Only `node:` imports: the process stays small, and the unit tests can import the answer.
 */
import { createServer } from "node:http";

/** What every answer says; the benchmark checks that it reaches the client. */
export const MOCK_ANSWER = "Hello! I am the benchmark's mock upstream. How can I help?";

/** Tokens at about four characters a token, as a rough stand-in for a tokenizer. */
export function roughTokens(text: string): number {
  return Math.max(1, Math.ceil(text.length / 4));
}

/**
 * The `chat.completion` object OpenAI answers a non-streamed request with: id, object, created
 * (Unix seconds), model, one choice (index, message {role, content}, logprobs, finish_reason) and
 * usage (prompt, completion and total tokens).
 */
export function chatCompletion(options: {
  id: string;
  model: string;
  content: string;
  promptTokens: number;
  createdSeconds: number;
}) {
  const completionTokens = roughTokens(options.content);
  return {
    id: options.id,
    object: "chat.completion",
    created: options.createdSeconds,
    model: options.model,
    choices: [
      {
        index: 0,
        message: { role: "assistant", content: options.content, refusal: null },
        logprobs: null,
        finish_reason: "stop",
      },
    ],
    usage: {
      prompt_tokens: options.promptTokens,
      completion_tokens: completionTokens,
      total_tokens: options.promptTokens + completionTokens,
    },
  };
}

/** The answer to one request body: the model it asked for, the prompt counted from its messages. */
export function answerTo(body: string, id: string, nowMs: number): string {
  let model = "mock";
  let promptTokens = 1;
  try {
    const request = JSON.parse(body) as { model?: unknown; messages?: unknown };
    if (typeof request.model === "string" && request.model !== "") model = request.model;
    if (Array.isArray(request.messages))
      promptTokens = roughTokens(JSON.stringify(request.messages));
  } catch {
    // Not JSON: answered all the same; the benchmark's checks are on the client side.
  }
  return JSON.stringify(
    chatCompletion({
      id,
      model,
      content: MOCK_ANSWER,
      promptTokens,
      createdSeconds: Math.floor(nowMs / 1000),
    }),
  );
}

function serve(port: number): void {
  let completions = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const path = (req.url ?? "/").split("?")[0];
      if (req.method === "POST" && path === "/v1/chat/completions") {
        completions++;
        const body = answerTo(
          Buffer.concat(chunks).toString("utf8"),
          `chatcmpl-mock${completions}`,
          Date.now(),
        );
        res.writeHead(200, {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(body),
        });
        res.end(body);
      } else if (req.method === "GET" && path === "/stats") {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ completions }));
      } else {
        res.writeHead(404, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { message: `no route ${req.method} ${path}` } }));
      }
    });
  });
  // Clients keep connections alive between runs; never close an idle one under them.
  server.keepAliveTimeout = 120_000;
  server.listen(port, "127.0.0.1", () => console.log(`listening on ${port}`));
  process.once("SIGTERM", () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const port = Number(process.argv[2]);
  if (!Number.isInteger(port) || port <= 0) {
    console.error("usage: node bench/mock-upstream.ts <port>");
    process.exit(2);
  }
  serve(port);
}
