/**
 * An OTLP/HTTP sink for the "tracing on" run of `BENCH_PEERS=1 npm run bench`: accepts
 * `POST /v1/traces` (and `/v1/metrics`, `/v1/logs`), reads the body and answers 200 with an
 * empty export response, like a collector that keeps nothing. Run as its own process
 * (`node bench/otlp-sink.ts <port>`), so the cost of receiving spans is charged to nobody else;
 * it prints `listening on <port>` when it serves. `GET /stats` says how many exports, bytes and
 * spans it received, so the benchmark can check that spans really left the services.
 *
 * Only `node:` imports: the process stays small, and the unit tests can import the span count.
 */
import { createServer } from "node:http";

/** The OTLP/HTTP paths, one per signal. */
const SIGNALS = new Set(["/v1/traces", "/v1/metrics", "/v1/logs"]);

/**
 * Calls `visit` for each field of the protobuf message in `buf[start, end)`: its number, wire type
 * and, for a length-delimited field, where its bytes are. Throws on a truncated message.
 */
function eachField(
  buf: Uint8Array,
  start: number,
  end: number,
  visit: (field: number, wireType: number, from: number, to: number) => void,
): void {
  let at = start;
  const varint = (): number => {
    let value = 0;
    let scale = 1;
    for (;;) {
      if (at >= end) throw new Error("truncated protobuf varint");
      const byte = buf[at++] as number;
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
      scale *= 128;
    }
  };
  while (at < end) {
    const tag = varint();
    const field = Math.floor(tag / 8);
    const wireType = tag % 8;
    let from = at;
    if (wireType === 0) varint();
    else if (wireType === 1) at += 8;
    else if (wireType === 5) at += 4;
    else if (wireType === 2) {
      const length = varint();
      from = at;
      at += length;
    } else throw new Error(`unsupported protobuf wire type ${wireType}`);
    if (at > end) throw new Error("truncated protobuf field");
    visit(field, wireType, from, at);
  }
}

/**
 * Spans in an OTLP `ExportTraceServiceRequest` in protobuf: `resource_spans` (field 1) →
 * `scope_spans` (field 2) → `spans` (field 2).
 */
export function countSpansProtobuf(buf: Uint8Array): number {
  let spans = 0;
  const nested = (from: number, to: number, field: number, inner: (f: number, t: number) => void) =>
    eachField(buf, from, to, (number, wireType, f, t) => {
      if (number === field && wireType === 2) inner(f, t);
    });
  nested(0, buf.length, 1, (rf, rt) =>
    nested(rf, rt, 2, (sf, st) =>
      nested(sf, st, 2, () => {
        spans++;
      }),
    ),
  );
  return spans;
}

/** Spans in an OTLP `ExportTraceServiceRequest` in JSON (`http/json`). */
export function countSpansJson(text: string): number {
  const body = JSON.parse(text) as {
    resourceSpans?: Array<{ scopeSpans?: Array<{ spans?: unknown[] }> }>;
  };
  let spans = 0;
  for (const resource of body.resourceSpans ?? []) {
    for (const scope of resource.scopeSpans ?? []) spans += scope.spans?.length ?? 0;
  }
  return spans;
}

function serve(port: number): void {
  let exports = 0;
  let bytes = 0;
  let spans = 0;
  let unreadable = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const path = (req.url ?? "/").split("?")[0] ?? "/";
      if (req.method === "POST" && SIGNALS.has(path)) {
        const body = Buffer.concat(chunks);
        const json = (req.headers["content-type"] ?? "").includes("json");
        exports++;
        bytes += body.length;
        if (path === "/v1/traces") {
          try {
            // Compressed bodies (OTEL_EXPORTER_OTLP_COMPRESSION=gzip) are counted as unreadable.
            spans += json ? countSpansJson(body.toString("utf8")) : countSpansProtobuf(body);
          } catch {
            unreadable++;
          }
        }
        // An empty Export*ServiceResponse: no partial success, nothing rejected.
        res.writeHead(200, {
          "content-type": json ? "application/json" : "application/x-protobuf",
        });
        res.end(json ? "{}" : undefined);
      } else if (req.method === "GET" && path === "/stats") {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ exports, bytes, spans, unreadable }));
      } else {
        res.writeHead(404);
        res.end();
      }
    });
  });
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
    console.error("usage: node bench/otlp-sink.ts <port>");
    process.exit(2);
  }
  serve(port);
}
