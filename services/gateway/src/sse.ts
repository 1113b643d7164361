import type { FastifyReply } from "fastify";

/** A server-sent-events response: opened once, written event by event, ended once. */
export interface SseStream {
  /** A `data:` event with a JSON payload, optionally named. */
  send(data: unknown, event?: string): void;
  /** The literal `data: [DONE]` that OpenAI clients wait for. */
  done(): void;
  end(): void;
  /** Aborted when the client goes away. */
  readonly signal: AbortSignal;
  readonly closed: boolean;
}

/**
 * Takes over the response for SSE: headers now, events as they come, and a comment line every
 * 15 s so proxies keep an idle stream open.
 */
export function openSse(reply: FastifyReply, headers: Record<string, string> = {}): SseStream {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache, no-transform",
    connection: "keep-alive",
    "x-accel-buffering": "no",
    ...headers,
  });
  res.flushHeaders();
  const gone = new AbortController();
  let ended = false;
  const keepAlive = setInterval(() => {
    if (!ended) res.write(": keep-alive\n\n");
  }, 15_000);
  // The response's close, not the request's: a request "closes" as soon as its body is read.
  res.on("close", () => {
    clearInterval(keepAlive);
    if (!ended) gone.abort(new Error("client closed the stream"));
  });
  const write = (text: string) => {
    if (!ended && !res.destroyed) res.write(text);
  };
  return {
    send: (data, event) =>
      write(`${event ? `event: ${event}\n` : ""}data: ${JSON.stringify(data)}\n\n`),
    done: () => write("data: [DONE]\n\n"),
    end: () => {
      if (ended) return;
      ended = true;
      clearInterval(keepAlive);
      res.end();
    },
    get signal() {
      return gone.signal;
    },
    get closed() {
      return ended || gone.signal.aborted;
    },
  };
}
