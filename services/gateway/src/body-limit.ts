import type { IncomingMessage } from "node:http";
import type { FastifyReply, FastifyRequest } from "fastify";

/** How much of a refused body the gateway still reads and drops before it cuts the client off. */
export const DRAIN_MAX_BYTES = 64 * 1024 * 1024;
/** How long the gateway keeps reading a refused body before it cuts the client off. */
export const DRAIN_MAX_MS = 15_000;

export interface DrainLimits {
  maxBytes?: number;
  maxMs?: number;
}

/**
 * Reads and drops what is left of a request body. Resolves true once it has all been read, false
 * when the client sends more than `maxBytes`, takes longer than `maxMs`, or goes away first.
 */
function drain(req: IncomingMessage, maxBytes: number, maxMs: number): Promise<boolean> {
  if (req.complete) return Promise.resolve(true);
  if (req.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    let bytes = 0;
    const finish = (complete: boolean) => {
      clearTimeout(timer);
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("close", onClose);
      resolve(complete);
    };
    const onData = (chunk: Buffer | string) => {
      bytes += chunk.length;
      if (bytes > maxBytes) finish(false);
    };
    const onEnd = () => finish(true);
    const onClose = () => finish(req.complete);
    const timer = setTimeout(() => finish(false), maxMs);
    req.on("data", onData);
    req.once("end", onEnd);
    req.once("close", onClose);
    req.resume();
  });
}

/**
 * Answers a request whose body is over the limit so that the client can read the answer.
 * Fastify answers before reading the body and closes the connection right after, which resets it
 * under a client still sending: the client sees EPIPE or ECONNRESET instead of the 413. Here the
 * whole response goes out at once (with its Content-Length, so the client has all of it), the
 * rest of the body is read and dropped, and only then does the response end and the connection
 * close cleanly (`Connection: close`). A client that sends more than {@link DRAIN_MAX_BYTES}, or
 * for longer than {@link DRAIN_MAX_MS}, is cut off: it has had its answer long before.
 */
export function replyBodyTooLarge(
  request: FastifyRequest,
  reply: FastifyReply,
  status: number,
  body: unknown,
  limits: DrainLimits = {},
): void {
  const payload = JSON.stringify(body);
  // What the hooks set so far (trace and rate-limit headers), as fastify would have sent them.
  const headers: Record<string, number | string | string[]> = {};
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) headers[name] = value;
  }
  reply.hijack();
  const res = reply.raw;
  res.writeHead(status, {
    ...headers,
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(payload),
    connection: "close",
  });
  res.write(payload);
  void drain(request.raw, limits.maxBytes ?? DRAIN_MAX_BYTES, limits.maxMs ?? DRAIN_MAX_MS).then(
    (complete) => {
      if (complete) res.end();
      else res.destroy();
    },
  );
}
