/**
 * The model vendor of `npm run bench:cache`: the testkit's `UpstreamServer`, which speaks
 * OpenAI's chat-completions wire format and records every request it gets, behind a small HTTP
 * front that holds each request for {@link UPSTREAM_LATENCY_MS} first (the testkit's server
 * answers JSON at once). Its answers are deterministic: the same model asked the same messages
 * says the same thing, whoever asks, and every text answer repeats the user's prompt.
 */
import {
  createServer,
  Agent as HttpAgent,
  request as httpRequest,
  type IncomingHttpHeaders,
} from "node:http";
import type { AddressInfo } from "node:net";
import {
  decideMove,
  openaiCompletion,
  type RecordedRequest,
  UpstreamServer,
} from "@handoff/testkit";
import { fnv1a, prng } from "./cache-workload.ts";

/**
 * How long the upstream takes to answer any request, in ms: a fixed, small stand-in for a model
 * call (a real one takes hundreds of ms to seconds), so that a miss costs a little more than a
 * hit's round trips without making the run long.
 */
export const UPSTREAM_LATENCY_MS = 30;

/** The three tiers' models as the config names them, with list prices in USD per million tokens. */
export const MODELS = {
  light: { model: "gpt-4o-mini", price: { input_per_mtok: 0.15, output_per_mtok: 0.6 } },
  mid: { model: "gpt-4o", price: { input_per_mtok: 2.5, output_per_mtok: 10 } },
  heavy: { model: "o1", price: { input_per_mtok: 15, output_per_mtok: 60 } },
} as const;

export type TierName = keyof typeof MODELS;

/** The tier a model name belongs to. */
export function tierOfModel(model: string): TierName | undefined {
  return (Object.keys(MODELS) as TierName[]).find((tier) => MODELS[tier].model === model);
}

/** Output tokens a text answer runs to, by tier: how long an answer of that tier usually is. */
const OUTPUT_TOKENS: Record<TierName, { min: number; spread: number }> = {
  light: { min: 40, spread: 120 },
  mid: { min: 30, spread: 40 },
  heavy: { min: 500, spread: 1000 },
};

const FILLER = `
  first note that the claim follows since each step holds hence we see and so by induction
  it is clear here a short answer with some detail on why this works in general
`
  .trim()
  .split(/\s+/);

/**
 * The text answer of `model` to `prompt`: the prompt, then filler words to about four characters
 * a token of the tier's usual answer length, both fixed by a hash of (model, prompt).
 */
export function answerText(model: string, prompt: string): string {
  const tier = tierOfModel(model) ?? "light";
  const seed = fnv1a(`${model}\u0000${prompt}`);
  const { min, spread } = OUTPUT_TOKENS[tier];
  const chars = 4 * (min + (seed % spread));
  const random = prng(seed);
  let text = `${model} answers "${prompt}":`;
  while (text.length < chars) text += ` ${FILLER[Math.floor(random() * FILLER.length)]}`;
  return `${text}.`;
}

interface WireMessage {
  role: string;
  content?: unknown;
  tool_calls?: Array<{ function: { name: string; arguments: string } }>;
}

/** The first user message's text: the prompt of the workload a request stands for. */
export function promptOf(body: Record<string, unknown>): string {
  const messages = (body.messages ?? []) as WireMessage[];
  const user = messages.find((m) => m.role === "user");
  return typeof user?.content === "string" ? user.content : "";
}

/** Which model call of its job a request is: 0 for the first, 1 after one tool round, … */
export function turnOf(body: Record<string, unknown>): number {
  const messages = (body.messages ?? []) as WireMessage[];
  return messages.filter((m) => m.role === "assistant").length;
}

/**
 * What the upstream says: a tool call when offered a calculator and asked arithmetic (the
 * testkit's `decideMove`), the tool's result after one, and {@link answerText} otherwise. Prompt
 * tokens are the request's messages and tools at four characters a token.
 */
function reply(body: Record<string, unknown>) {
  const model = String(body.model);
  const messages = (body.messages ?? []) as WireMessage[];
  const tools = (body.tools ?? []) as Array<{ function: { name: string } }>;
  const afterTool = messages.at(-1)?.role === "tool";
  const move = decideMove(
    messages,
    tools.map((t) => t.function.name),
    model,
    afterTool,
  );
  const prompt = Math.ceil(
    (JSON.stringify(messages).length + (tools.length > 0 ? JSON.stringify(tools).length : 0)) / 4,
  );
  if (move.kind === "tool") {
    return {
      kind: "json" as const,
      body: openaiCompletion(model, move, { prompt, completion: 24 }),
    };
  }
  const text = afterTool ? move.text : answerText(model, promptOf(body));
  return {
    kind: "json" as const,
    body: openaiCompletion(
      model,
      { kind: "text", text },
      { prompt, completion: Math.ceil(text.length / 4) },
    ),
  };
}

export interface BenchUpstream {
  /** Where the mesh sends its calls: the delaying front (`…/v1` is the OpenAI base URL). */
  url: string;
  /** Every request the upstream answered, in order of arrival (after the delay). */
  requests: RecordedRequest[];
  close(): Promise<void>;
}

/** Hop-by-hop headers a proxy must not forward. */
const HOP_BY_HOP = ["connection", "keep-alive", "transfer-encoding", "upgrade"];

function forwardable(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = { ...headers };
  for (const name of HOP_BY_HOP) delete out[name];
  return out;
}

/** Starts the upstream and its delaying front, both on 127.0.0.1 and free ports. */
export async function startBenchUpstream(latencyMs = UPSTREAM_LATENCY_MS): Promise<BenchUpstream> {
  const upstream = await UpstreamServer.start(reply);
  const target = new URL(upstream.url);
  const agent = new HttpAgent({ keepAlive: true });
  const front = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      setTimeout(() => {
        const out = httpRequest(
          {
            host: target.hostname,
            port: target.port,
            method: req.method,
            path: req.url,
            headers: forwardable(req.headers),
            agent,
          },
          (answer) => {
            res.writeHead(answer.statusCode ?? 502, forwardable(answer.headers));
            answer.pipe(res);
          },
        );
        out.on("error", (error) => {
          if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
          res.end(`bench upstream front: ${error.message}`);
        });
        out.end(Buffer.concat(chunks));
      }, latencyMs);
    });
  });
  await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", resolve));
  const { port } = front.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests: upstream.requests,
    async close() {
      front.closeAllConnections();
      await new Promise<void>((resolve) => front.close(() => resolve()));
      agent.destroy();
      await upstream.close();
    },
  };
}
