/**
 * The bare relay, for the peer comparison of `BENCH_PEERS=1 npm run bench`: the least any design
 * can cost that keeps a gateway and a model tier as separate processes on NATS, as Handoff does.
 * Two roles of this one script, each its own process:
 *
 *   node bench/bare-relay.ts tier <nats url> <upstream base url, …/v1>
 *     answers NATS requests on `bench.relay.chat` (queue group `tier`) by posting the request's
 *     bytes to `<upstream>/chat/completions` through the provider adapters' own HTTP client
 *     (`@handoff/providers/http`) and replying with the upstream's status and body;
 *
 *   node bench/bare-relay.ts front <port> <nats url>
 *     a bare `node:http` server: `POST /v1/chat/completions` sends the body as it came on
 *     `bench.relay.chat` (NATS request-reply) and answers with the tier's reply.
 *
 * Nothing else: no framework, no parsing or validation of the request, no job record, no
 * JetStream, no redelivery, no spans. It is a lower bound to compare Handoff's durable path
 * with, not a product path. Both print `ready` when they serve; SIGTERM drains and exits.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { undiciPost } from "@handoff/providers/http";
import {
  connect,
  type MsgHdrs,
  type NatsConnection,
  NoRespondersError,
  headers as natsHeaders,
  RequestError,
} from "@nats-io/transport-node";

export const RELAY_SUBJECT = "bench.relay.chat";
/** Answered by every tier: the front's readiness check asks it before any chat. */
export const RELAY_PING_SUBJECT = "bench.relay.ping";
/** The HTTP status of a tier's reply, in a NATS header. */
export const RELAY_STATUS_HEADER = "Relay-Status";
const REQUEST_TIMEOUT_MS = 30_000;
const MAX_BODY_BYTES = 1024 * 1024;
const UPSTREAM_KEY = "sk-bench-relay";

function connectTo(url: string, name: string): Promise<NatsConnection> {
  // As the mesh's services connect: no stack traces built up front for every request.
  return connect({ servers: url, name, noAsyncTraces: true });
}

function jsonError(status: number, message: string): { status: number; body: string } {
  return { status, body: JSON.stringify({ error: { message, type: "relay_error" } }) };
}

/** The tier: NATS request in, the upstream's answer out. */
async function tier(natsUrl: string, upstreamBase: string): Promise<void> {
  const nc = await connectTo(natsUrl, "relay-tier");
  const url = `${upstreamBase.replace(/\/+$/, "")}/chat/completions`;
  const reply = (status: number, body: string): { hdrs: MsgHdrs; body: string } => {
    const hdrs = natsHeaders();
    hdrs.set(RELAY_STATUS_HEADER, String(status));
    return { hdrs, body };
  };
  nc.subscribe(RELAY_SUBJECT, {
    queue: "tier",
    callback: (error, msg) => {
      if (error) {
        console.error(`relay tier: subscription to ${RELAY_SUBJECT} failed: ${error.message}`);
        return;
      }
      undiciPost(url, {
        headers: { "content-type": "application/json", authorization: `Bearer ${UPSTREAM_KEY}` },
        body: msg.string(),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      })
        .then(async (answer) => reply(answer.status, await answer.text()))
        .catch((cause: unknown) => {
          const why = cause instanceof Error ? cause.message : String(cause);
          const { status, body } = jsonError(502, `relay tier: POST ${url} failed: ${why}`);
          return reply(status, body);
        })
        .then(({ hdrs, body }) => msg.respond(body, { headers: hdrs }));
    },
  });
  nc.subscribe(RELAY_PING_SUBJECT, { queue: "tier", callback: (_e, msg) => msg.respond("pong") });
  await nc.flush();
  console.log("ready");
  process.once("SIGTERM", () => {
    void nc.drain().finally(() => process.exit(0));
  });
}

function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) chunks.push(chunk);
    });
    req.on("end", () => resolve(size > MAX_BODY_BYTES ? undefined : Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function send(res: ServerResponse, status: number, body: string | Uint8Array): void {
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": typeof body === "string" ? Buffer.byteLength(body) : body.length,
  });
  res.end(body);
}

/** What the front answers a NATS request that failed: 503 with no tier, 504 past the timeout. */
function natsFailure(subject: string, cause: unknown): { status: number; body: string } {
  const why = cause instanceof Error ? cause.message : String(cause);
  const noTier =
    cause instanceof NoRespondersError || (cause instanceof RequestError && cause.isNoResponders());
  return jsonError(noTier ? 503 : 504, `relay front: request on ${subject} failed: ${why}`);
}

/** The front: HTTP in, one NATS request to the tier, its reply out. */
async function front(port: number, natsUrl: string): Promise<void> {
  const nc = await connectTo(natsUrl, "relay-front");
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    readBody(req)
      .then(async (body) => {
        if (req.method === "POST" && path === "/v1/chat/completions") {
          if (body === undefined) {
            const failed = jsonError(413, `request body over ${MAX_BODY_BYTES} bytes`);
            return send(res, failed.status, failed.body);
          }
          try {
            const answer = await nc.request(RELAY_SUBJECT, body, { timeout: REQUEST_TIMEOUT_MS });
            const status = Number(answer.headers?.get(RELAY_STATUS_HEADER) || 502);
            return send(res, status, answer.data);
          } catch (cause) {
            const failed = natsFailure(RELAY_SUBJECT, cause);
            return send(res, failed.status, failed.body);
          }
        }
        if (req.method === "GET" && path === "/ready") {
          try {
            await nc.request(RELAY_PING_SUBJECT, "", { timeout: 2_000 });
            return send(res, 200, JSON.stringify({ ready: true }));
          } catch (cause) {
            const failed = natsFailure(RELAY_PING_SUBJECT, cause);
            return send(res, failed.status, failed.body);
          }
        }
        const missing = jsonError(404, `no route ${req.method} ${path}`);
        return send(res, missing.status, missing.body);
      })
      .catch((cause: unknown) => {
        const why = cause instanceof Error ? cause.message : String(cause);
        if (!res.headersSent) send(res, 400, jsonError(400, `unreadable request: ${why}`).body);
      });
  });
  // Clients keep connections alive between runs; never close an idle one under them.
  server.keepAliveTimeout = 120_000;
  server.listen(port, "127.0.0.1", () => console.log("ready"));
  process.once("SIGTERM", () => {
    server.closeAllConnections();
    server.close(() => void nc.drain().finally(() => process.exit(0)));
  });
}

function usage(): never {
  console.error(
    "usage: node bench/bare-relay.ts tier <nats url> <upstream …/v1>\n" +
      "       node bench/bare-relay.ts front <port> <nats url>",
  );
  process.exit(2);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [role, first, second] = process.argv.slice(2);
  if (role === "tier" && first && second) {
    await tier(first, second);
  } else if (role === "front" && first && second) {
    const port = Number(first);
    if (!Number.isInteger(port) || port <= 0) usage();
    await front(port, second);
  } else {
    usage();
  }
}
