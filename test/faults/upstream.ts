import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { openaiModelReply } from "@handoff/testkit";

/**
 * The model vendor of the fault suite: an OpenAI-compatible `/v1/chat/completions` that answers
 * like the testkit's small tool-using model (`openaiModelReply`, the same wire format as
 * `UpstreamServer`), after a configurable think time per model, so a job can be caught mid-call.
 *
 * It counts what matters for "zero duplicate executions": every request, with the job marker
 * found in its messages (`[job <batch>_<n>]`), the model (one per tier), the process that sent it
 * (the `x-fault-proc` header each service's config adds), when it arrived, and whether its answer
 * was delivered or the caller went away first (a SIGKILL mid-call).
 */

export type Tier = "light" | "mid" | "heavy";

/** One model call as the upstream saw it. */
export interface ModelCall {
  /** The job marker found in the request's messages; undefined if none. */
  marker: string | undefined;
  tier: Tier | undefined;
  model: string;
  /** The `x-fault-proc` header: which service process made the call. */
  proc: string;
  at: number;
  /** When the answer was written out, or undefined if the connection closed first. */
  answeredAt: number | undefined;
  /** The caller hung up before the answer was written (it died or gave up mid-call). */
  aborted: boolean;
}

/** The models each tier is configured with, one per tier, so a call names its tier. */
export const TierModels: Record<Tier, string> = {
  light: "fault-light",
  mid: "fault-mid",
  heavy: "fault-heavy",
};

const MARKER = /\[job ([a-z]+_\d+)\]/;

function tierOf(model: string): Tier | undefined {
  return (Object.keys(TierModels) as Tier[]).find((tier) => TierModels[tier] === model);
}

function markerOf(body: Record<string, unknown>): string | undefined {
  const messages = (body.messages ?? []) as Array<{ content?: unknown }>;
  for (const message of messages) {
    const text =
      typeof message.content === "string" ? message.content : JSON.stringify(message.content ?? "");
    const found = MARKER.exec(text);
    if (found) return found[1];
  }
  return undefined;
}

export class CountingUpstream {
  readonly calls: ModelCall[] = [];
  readonly #byMarker = new Map<string, ModelCall[]>();
  readonly #open = new Set<ServerResponse>();

  private constructor(
    private readonly server: Server,
    /** Base URL for a deployment's `base_url`: `http://127.0.0.1:<port>/v1`. */
    readonly baseUrl: string,
    /** Think time per tier, in milliseconds. */
    readonly latencyMs: Record<Tier, number>,
  ) {}

  static async start(latencyMs: Record<Tier, number>): Promise<CountingUpstream> {
    let self: CountingUpstream | undefined;
    const server = createServer((req, res) => {
      void self?.handle(req, res);
    });
    server.keepAliveTimeout = 30_000;
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    self = new CountingUpstream(server, `http://127.0.0.1:${port}/v1`, latencyMs);
    return self;
  }

  /** The calls a job caused, in arrival order. */
  callsFor(marker: string): ModelCall[] {
    return this.#byMarker.get(marker) ?? [];
  }

  /** Calls still waiting for their answer, optionally only those of one process. */
  inFlight(proc?: string): number {
    return this.calls.filter(
      (c) => c.answeredAt === undefined && !c.aborted && (proc === undefined || c.proc === proc),
    ).length;
  }

  async close(): Promise<void> {
    for (const res of this.#open) res.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    let body: Record<string, unknown>;
    try {
      body = (text ? JSON.parse(text) : {}) as Record<string, unknown>;
    } catch {
      res.writeHead(400, { "content-type": "application/json" }).end('{"error":"bad json"}');
      return;
    }
    const model = String(body.model);
    const header = req.headers["x-fault-proc"];
    const call: ModelCall = {
      marker: markerOf(body),
      tier: tierOf(model),
      model,
      proc: Array.isArray(header) ? (header[0] ?? "") : (header ?? ""),
      at: Date.now(),
      answeredAt: undefined,
      aborted: false,
    };
    this.calls.push(call);
    if (call.marker) {
      const list = this.#byMarker.get(call.marker) ?? [];
      list.push(call);
      this.#byMarker.set(call.marker, list);
    }
    this.#open.add(res);
    res.once("finish", () => {
      call.answeredAt = Date.now();
    });
    res.once("close", () => {
      this.#open.delete(res);
      if (!res.writableFinished) call.aborted = true;
    });
    const delay = call.tier ? this.latencyMs[call.tier] : 0;
    if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
    if (res.destroyed || call.aborted) return;
    const reply = openaiModelReply(body);
    if (reply.kind === "json") {
      res.writeHead(reply.status ?? 200, { "content-type": "application/json" });
      res.end(JSON.stringify(reply.body));
      return;
    }
    if (reply.kind === "sse") {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      for (const event of reply.events) res.write(event);
      res.end();
    }
  }
}
