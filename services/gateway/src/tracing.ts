import {
  context,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import type { FastifyInstance, FastifyRequest } from "fastify";

const tracer = trace.getTracer("@handoff/gateway");

declare module "fastify" {
  interface FastifyRequest {
    /** The request's SERVER span: the root of the job's trace. */
    otelSpan?: Span;
  }
}

/** Probes are not traced: they would bury the requests that matter. */
const UNTRACED = new Set(["/healthz", "/readyz"]);

/**
 * One SERVER span per request, from the first byte to the response, continuing a `traceparent`
 * the client sent. Handlers run inside it with `inRequestSpan`.
 */
export function registerTracing(app: FastifyInstance): void {
  app.decorateRequest("otelSpan", undefined);

  app.addHook("onRequest", (request, reply, done) => {
    const route = request.routeOptions.url;
    if (route && UNTRACED.has(route)) return done();
    const parent = propagation.extract(ROOT_CONTEXT, request.headers);
    const span = tracer.startSpan(
      `${request.method} ${route ?? "unmatched"}`,
      {
        kind: SpanKind.SERVER,
        attributes: {
          "http.request.method": request.method,
          "url.path": request.url.split("?")[0] ?? request.url,
          "url.scheme": request.protocol,
          ...(route ? { "http.route": route } : {}),
          "server.address": request.hostname,
          "client.address": request.ip,
          "user_agent.original": request.headers["user-agent"] ?? "",
        },
      },
      parent,
    );
    request.otelSpan = span;
    // The raw response's close ends the span: it fires for replies, streamed (hijacked)
    // responses and clients that hang up alike.
    reply.raw.once("close", () => {
      const status = reply.raw.statusCode;
      span.setAttribute("http.response.status_code", status);
      if (status >= 500) {
        span.setAttribute("error.type", String(status));
        span.setStatus({ code: SpanStatusCode.ERROR });
      }
      if (!reply.raw.writableFinished) span.setAttribute("handoff.client_aborted", true);
      span.end();
    });
    done();
  });

  app.addHook("onError", (request, _reply, error, done) => {
    request.otelSpan?.recordException(error);
    done();
  });
}

/** Runs `fn` with the request's SERVER span active, so spans and logs inside join its trace. */
export function inRequestSpan<T>(request: FastifyRequest, fn: () => Promise<T>): Promise<T> {
  const span = request.otelSpan;
  if (!span) return fn();
  return context.with(trace.setSpan(context.active(), span), fn);
}
