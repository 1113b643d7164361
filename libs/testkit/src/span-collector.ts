import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { promisify } from "node:util";
import { gunzip, inflate } from "node:zlib";

const gunzipAsync = promisify(gunzip);
const inflateAsync = promisify(inflate);

/** Span kinds, named as in the OTLP `SpanKind` enum without its prefix. */
export type CollectedSpanKind = "INTERNAL" | "SERVER" | "CLIENT" | "PRODUCER" | "CONSUMER";

/** A span as received over OTLP/HTTP JSON, flattened with the service that emitted it. */
export interface CollectedSpan {
  /** 32 lowercase hex characters. */
  traceId: string;
  /** 16 lowercase hex characters. */
  spanId: string;
  /** Absent for root spans. */
  parentSpanId?: string;
  name: string;
  kind: CollectedSpanKind;
  /** The resource's `service.name`, or `unknown_service` when absent. */
  serviceName: string;
  /** Every attribute of the resource that sent the span (service, host, process, ...). */
  resource: Record<string, string | number | boolean | unknown[]>;
  /** Span attributes; int64 values beyond 2^53 stay strings to keep their precision. */
  attributes: Record<string, string | number | boolean | unknown[]>;
  startTimeUnixNano: bigint;
  endTimeUnixNano: bigint;
  status: { code: "UNSET" | "OK" | "ERROR"; message?: string };
}

/** A non-trace OTLP request body, kept so tests can assert that something was exported. */
export interface CollectedPayload {
  signal: "metrics" | "logs";
  contentType: string;
  /** Parsed JSON for JSON requests, the raw (decompressed) bytes otherwise. */
  body: unknown;
}

type Json = Record<string, unknown>;

const KINDS: readonly CollectedSpanKind[] = [
  "INTERNAL",
  "SERVER",
  "CLIENT",
  "PRODUCER",
  "CONSUMER",
];
const STATUS_CODES = ["UNSET", "OK", "ERROR"] as const;

const isObject = (value: unknown): value is Json =>
  typeof value === "object" && value !== null && !Array.isArray(value);

const asArray = (value: unknown): unknown[] => (Array.isArray(value) ? value : []);

/**
 * OTLP/JSON mandates hex ids, but exporters that use the generic protobuf JSON mapping send
 * base64; accepting both keeps such spans linkable instead of silently orphaned.
 */
function normalizeId(value: unknown, bytes: number): string | undefined {
  if (typeof value !== "string" || value === "") return undefined;
  const hex = new RegExp(`^[0-9a-fA-F]{${bytes * 2}}$`);
  if (hex.test(value)) return value.toLowerCase();
  const decoded = Buffer.from(value, "base64");
  if (decoded.length === bytes) return decoded.toString("hex");
  return value;
}

function toBigInt(value: unknown): bigint {
  if (typeof value === "bigint") return value;
  if (typeof value === "number" && Number.isFinite(value)) return BigInt(Math.trunc(value));
  if (typeof value === "string" && /^\d+$/.test(value)) return BigInt(value);
  // protobufjs "long bits" form, which some JS serializers emit.
  if (isObject(value) && typeof value.low === "number" && typeof value.high === "number") {
    return (BigInt(value.high >>> 0) << 32n) | BigInt(value.low >>> 0);
  }
  return 0n;
}

function toInt(value: unknown): number | string {
  const big = toBigInt(value);
  const asNumber = Number(big);
  return Number.isSafeInteger(asNumber) ? asNumber : big.toString();
}

function anyValue(value: unknown): unknown {
  if (!isObject(value)) return undefined;
  if ("stringValue" in value) return String(value.stringValue);
  if ("boolValue" in value) return value.boolValue === true || value.boolValue === "true";
  if ("intValue" in value) return toInt(value.intValue);
  if ("doubleValue" in value) return Number(value.doubleValue);
  if ("arrayValue" in value) {
    const inner = isObject(value.arrayValue) ? value.arrayValue.values : undefined;
    return asArray(inner).map(anyValue);
  }
  if ("kvlistValue" in value) {
    const inner = isObject(value.kvlistValue) ? value.kvlistValue.values : undefined;
    return keyValues(inner);
  }
  if ("bytesValue" in value) return String(value.bytesValue);
  return undefined;
}

function keyValues(list: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const entry of asArray(list)) {
    if (!isObject(entry) || typeof entry.key !== "string") continue;
    const value = anyValue(entry.value);
    if (value !== undefined) out[entry.key] = value;
  }
  return out;
}

function spanAttributes(list: unknown): CollectedSpan["attributes"] {
  const out: CollectedSpan["attributes"] = {};
  for (const [key, value] of Object.entries(keyValues(list))) {
    if (
      typeof value === "string" ||
      typeof value === "number" ||
      typeof value === "boolean" ||
      Array.isArray(value)
    ) {
      out[key] = value;
    } else {
      // Maps do not fit the flat attribute type; JSON keeps them assertable.
      out[key] = JSON.stringify(value);
    }
  }
  return out;
}

/** Accepts the numeric enum, the full enum name (`SPAN_KIND_SERVER`) or the short name. */
function enumName<T extends string>(
  value: unknown,
  names: readonly T[],
  prefix: string,
  offset: number,
): T | undefined {
  if (typeof value === "number") return names[value - offset];
  if (typeof value === "string") {
    if (/^\d+$/.test(value)) return names[Number(value) - offset];
    const short = value.startsWith(prefix) ? value.slice(prefix.length) : value;
    return names.find((name) => name === short);
  }
  return undefined;
}

function parseSpans(body: unknown): CollectedSpan[] {
  if (!isObject(body)) throw new Error("body is not a JSON object");
  const spans: CollectedSpan[] = [];
  for (const resourceSpans of asArray(body.resourceSpans)) {
    if (!isObject(resourceSpans)) continue;
    const resource = isObject(resourceSpans.resource) ? resourceSpans.resource : {};
    const resourceAttributes = spanAttributes(resource.attributes);
    const serviceName = resourceAttributes["service.name"];
    for (const scopeSpans of asArray(resourceSpans.scopeSpans)) {
      if (!isObject(scopeSpans)) continue;
      for (const span of asArray(scopeSpans.spans)) {
        if (!isObject(span)) continue;
        const status = isObject(span.status) ? span.status : {};
        const parentSpanId = normalizeId(span.parentSpanId, 8);
        const collected: CollectedSpan = {
          traceId: normalizeId(span.traceId, 16) ?? "",
          spanId: normalizeId(span.spanId, 8) ?? "",
          name: typeof span.name === "string" ? span.name : "",
          // SPAN_KIND_UNSPECIFIED (0) means INTERNAL per the proto's own comment.
          kind: enumName(span.kind, KINDS, "SPAN_KIND_", 1) ?? "INTERNAL",
          serviceName: typeof serviceName === "string" ? serviceName : "unknown_service",
          resource: resourceAttributes,
          attributes: spanAttributes(span.attributes),
          startTimeUnixNano: toBigInt(span.startTimeUnixNano),
          endTimeUnixNano: toBigInt(span.endTimeUnixNano),
          status: { code: enumName(status.code, STATUS_CODES, "STATUS_CODE_", 0) ?? "UNSET" },
        };
        if (parentSpanId !== undefined) collected.parentSpanId = parentSpanId;
        if (typeof status.message === "string" && status.message !== "") {
          collected.status.message = status.message;
        }
        spans.push(collected);
      }
    }
  }
  return spans;
}

function describe(span: CollectedSpan): string {
  const parent = span.parentSpanId ? ` parent=${span.parentSpanId}` : " (root)";
  return `  - ${span.serviceName}: "${span.name}" ${span.kind} trace=${span.traceId} span=${span.spanId}${parent} status=${span.status.code}`;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const raw = Buffer.concat(chunks);
  const encoding = (req.headers["content-encoding"] ?? "identity").toLowerCase().trim();
  if (encoding === "gzip" || encoding === "x-gzip") return gunzipAsync(raw);
  if (encoding === "deflate") return inflateAsync(raw);
  if (encoding === "identity" || encoding === "") return raw;
  throw new UnsupportedEncoding(encoding);
}

class UnsupportedEncoding extends Error {}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * An in-process OTLP/HTTP receiver for tests. Point exporters at {@link SpanCollector.endpoint}
 * with `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`; spans are parsed, metrics and logs are only kept.
 */
export class SpanCollector {
  /** Base URL for `OTEL_EXPORTER_OTLP_ENDPOINT`; exporters append `/v1/traces` themselves. */
  readonly endpoint: string;
  readonly #server: Server;
  #spans: CollectedSpan[] = [];
  #payloads: CollectedPayload[] = [];

  private constructor(server: Server, endpoint: string) {
    this.#server = server;
    this.endpoint = endpoint;
  }

  /** Starts a receiver on a free port of 127.0.0.1. */
  static async start(): Promise<SpanCollector> {
    let collector: SpanCollector | undefined;
    const server = createServer((req, res) => {
      // Requests cannot arrive before listen() resolved, so the collector exists by then.
      collector?.handle(req, res).catch((err: unknown) => {
        // A failure here is a collector bug; answer 500 so the exporter logs it instead of hanging.
        if (res.headersSent) res.destroy();
        else
          reply(res, 500, `collector error: ${err instanceof Error ? err.message : String(err)}`);
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    const { port } = server.address() as AddressInfo;
    collector = new SpanCollector(server, `http://127.0.0.1:${port}`);
    return collector;
  }

  /** Every span received so far, in arrival order. */
  spans(): CollectedSpan[] {
    return [...this.#spans];
  }

  /** The spans of one trace, in arrival order. */
  trace(traceId: string): CollectedSpan[] {
    const id = traceId.toLowerCase();
    return this.#spans.filter((span) => span.traceId === id);
  }

  /** Metrics and logs request bodies received so far. */
  payloads(signal?: "metrics" | "logs"): CollectedPayload[] {
    return this.#payloads.filter((payload) => signal === undefined || payload.signal === signal);
  }

  /**
   * Resolves with all spans once `predicate` holds for them. Exporters batch and retry, so
   * tests must poll rather than assert right after the operation; on timeout the error lists
   * every span received, which usually shows what went missing.
   */
  async waitFor(
    predicate: (spans: CollectedSpan[]) => boolean,
    timeoutMs = 10_000,
  ): Promise<CollectedSpan[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const spans = this.spans();
      if (predicate(spans)) return spans;
      if (Date.now() >= deadline) {
        const listing = spans.length === 0 ? "  (none)" : spans.map(describe).join("\n");
        throw new Error(
          `SpanCollector.waitFor timed out after ${timeoutMs} ms; received ${spans.length} span(s):\n${listing}`,
        );
      }
      await sleep(25);
    }
  }

  /** Forgets everything received so far. */
  clear(): void {
    this.#spans = [];
    this.#payloads = [];
  }

  /** Stops listening and drops open (keep-alive) connections so the test can end promptly. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve, reject) =>
      this.#server.close((err) => (err ? reject(err) : resolve())),
    );
    this.#server.closeAllConnections();
    await closed.catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "ERR_SERVER_NOT_RUNNING") throw err;
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0];
    const signal =
      path === "/v1/traces"
        ? "traces"
        : path === "/v1/metrics"
          ? "metrics"
          : path === "/v1/logs"
            ? "logs"
            : undefined;
    if (signal === undefined) return reply(res, 404, `no OTLP endpoint at ${path}; use /v1/traces`);
    if (req.method !== "POST") return reply(res, 405, `${req.method} not allowed; OTLP uses POST`);

    const contentType =
      (req.headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
    const isJson = contentType === "application/json";
    if (signal === "traces" && !isJson) {
      // Drain the body so the client sees the answer instead of a reset connection.
      req.resume();
      return reply(
        res,
        415,
        `unsupported Content-Type "${contentType}": this test collector only decodes OTLP JSON; set OTEL_EXPORTER_OTLP_PROTOCOL=http/json`,
      );
    }

    let body: Buffer;
    try {
      body = await readBody(req);
    } catch (err) {
      if (err instanceof UnsupportedEncoding) {
        return reply(res, 415, `unsupported Content-Encoding "${err.message}"; use gzip or none`);
      }
      return reply(res, 400, `could not read the body: ${(err as Error).message}`);
    }

    if (signal === "traces") {
      try {
        this.#spans.push(...parseSpans(JSON.parse(body.toString("utf8"))));
      } catch (err) {
        return reply(res, 400, `invalid OTLP JSON: ${(err as Error).message}`);
      }
      return ok(res, true);
    }

    let parsed: unknown = body;
    if (isJson) {
      try {
        parsed = JSON.parse(body.toString("utf8"));
      } catch {
        // Metrics and logs are only recorded; a bad body is kept raw rather than failing the exporter.
      }
    }
    this.#payloads.push({ signal, contentType, body: parsed });
    return ok(res, isJson);
  }
}

function ok(res: ServerResponse, json: boolean): void {
  if (json) {
    res.writeHead(200, { "content-type": "application/json" }).end("{}");
  } else {
    // An empty protobuf message encodes to zero bytes.
    res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
  }
}

function reply(res: ServerResponse, status: number, message: string): void {
  res
    .writeHead(status, { "content-type": "application/json" })
    .end(JSON.stringify({ code: status, message }));
}

/** Result of {@link checkTrace}. */
export interface TraceCheck {
  /** Spans without a parent. A well-formed single trace has exactly one. */
  roots: CollectedSpan[];
  /** Spans whose parent is not among the given spans of the same trace (lost propagation or a missing export). */
  broken: CollectedSpan[];
}

/** Finds the roots and the dangling children among `spans`, grouping them by trace id. */
export function checkTrace(spans: CollectedSpan[]): TraceCheck {
  const idsByTrace = new Map<string, Set<string>>();
  for (const span of spans) {
    let ids = idsByTrace.get(span.traceId);
    if (!ids) {
      ids = new Set();
      idsByTrace.set(span.traceId, ids);
    }
    ids.add(span.spanId);
  }
  const roots: CollectedSpan[] = [];
  const broken: CollectedSpan[] = [];
  for (const span of spans) {
    if (span.parentSpanId === undefined) roots.push(span);
    else if (!idsByTrace.get(span.traceId)?.has(span.parentSpanId)) broken.push(span);
  }
  return { roots, broken };
}
