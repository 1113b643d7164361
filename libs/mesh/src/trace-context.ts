import { type MsgHdrs, headers as natsHeaders } from "@nats-io/nats-core";
import {
  type Context,
  context,
  propagation,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapSetter,
  trace,
} from "@opentelemetry/api";

/** Moves W3C trace context (`traceparent`, `tracestate`, `baggage`) through NATS headers. */
const setter: TextMapSetter<MsgHdrs> = {
  set(carrier, key, value) {
    carrier.set(key, value);
  },
};

const getter: TextMapGetter<MsgHdrs | undefined> = {
  keys: (carrier) => (carrier ? carrier.keys() : []),
  get: (carrier, key) => {
    const value = carrier?.get(key);
    return value === "" ? undefined : value;
  },
};

/** Headers carrying the active trace context, plus any extra headers given. */
export function tracedHeaders(extra: Record<string, string> = {}, ctx = context.active()): MsgHdrs {
  const h = natsHeaders();
  for (const [key, value] of Object.entries(extra)) h.set(key, value);
  propagation.inject(ctx, h, setter);
  return h;
}

/** The trace context a message carries, to parent the consumer's span. */
export function extractContext(h: MsgHdrs | undefined): Context {
  return propagation.extract(context.active(), h, getter);
}

export const tracer = trace.getTracer("@handoff/mesh");

/**
 * Runs `fn` inside a PRODUCER span named `send <subject>`, so the publish is its own hop in the
 * trace and the headers it injects point at it.
 */
export async function withProducerSpan<T>(
  subject: string,
  attributes: Record<string, string | number | boolean>,
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  return tracer.startActiveSpan(
    `send ${subject}`,
    {
      kind: SpanKind.PRODUCER,
      attributes: {
        "messaging.system": "nats",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": subject,
        ...attributes,
      },
    },
    async (span) => {
      try {
        return await fn(span);
      } catch (error) {
        markError(span, error);
        throw error;
      } finally {
        span.end();
      }
    },
  );
}

export function markError(span: Span, error: unknown): void {
  const err = error instanceof Error ? error : new Error(String(error));
  span.recordException(err);
  const code = (error as { code?: unknown }).code;
  span.setAttribute("error.type", typeof code === "string" ? code : err.name);
  span.setStatus({ code: SpanStatusCode.ERROR, message: err.message });
}

/** The trace id of the active span, if one is recording. */
export function activeTraceId(): string | undefined {
  const ctx = trace.getActiveSpan()?.spanContext();
  return ctx && trace.isSpanContextValid(ctx) ? ctx.traceId : undefined;
}
