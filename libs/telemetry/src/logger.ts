import { isSpanContextValid, trace } from "@opentelemetry/api";
import { type DestinationStream, type Logger, pino } from "pino";
import { redactSecrets } from "./secrets.js";

export type { Logger } from "pino";

export interface LoggerOptions {
  level?: string;
  /** Where to write; stdout by default (tests pass a stream to read the lines back). */
  destination?: DestinationStream;
}

/** Credential headers, by their lower-case names as Node and fastify keep them. */
const CREDENTIAL_HEADERS = [
  "authorization",
  "proxy-authorization",
  "cookie",
  "set-cookie",
  "api-key",
  "x-api-key",
];

/** Keys whose values never reach a log line. */
const REDACTED = [
  "api_key",
  "apiKey",
  "authorization",
  "password",
  "secret",
  "token",
  "cookie",
  '["api-key"]',
  '["x-api-key"]',
  "*.api_key",
  "*.apiKey",
  "*.authorization",
  "*.password",
  "*.secret",
  "*.token",
  "*.cookie",
  '*["api-key"]',
  '*["x-api-key"]',
  ...CREDENTIAL_HEADERS.flatMap((name) => [`headers["${name}"]`, `*.headers["${name}"]`]),
];

/**
 * JSON logs with the active span's `trace_id` and `span_id` on every line, so a log line leads to
 * its trace in Jaeger and back. Secrets are redacted by key, and every line is scrubbed of the
 * secret values registered at startup (`registerConfigSecrets`), wherever in the line they are.
 */
export function createLogger(service: string, options: LoggerOptions = {}): Logger {
  return pino(
    {
      name: service,
      level: options.level ?? process.env.LOG_LEVEL ?? "info",
      base: { service, pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACTED, censor: "[redacted]" },
      hooks: { streamWrite: redactSecrets },
      mixin() {
        const context = trace.getActiveSpan()?.spanContext();
        if (!context || !isSpanContextValid(context)) return {};
        return { trace_id: context.traceId, span_id: context.spanId };
      },
    },
    options.destination,
  );
}
