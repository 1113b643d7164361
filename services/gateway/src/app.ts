import type { HandoffConfig } from "@handoff/config";
import { HandoffError } from "@handoff/contracts";
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from "fastify";
import type { Logger } from "pino";
import { type ApiKeyEntry, registerAuth } from "./auth.js";
import { replyBodyTooLarge } from "./body-limit.js";
import { errorBody, toHandoffError } from "./errors.js";
import type { JobClient } from "./job-client.js";
import { collectRoutes, registerOpenApi } from "./openapi.js";
import type { Clock } from "./rate-limit.js";
import { registerChatCompletions } from "./routes/chat-completions.js";
import { registerHealth } from "./routes/health.js";
import { registerJobs } from "./routes/jobs.js";
import { registerModels } from "./routes/models.js";
import { registerTracing } from "./tracing.js";

export interface AppDeps {
  jobs: JobClient;
  config: HandoffConfig;
  logger: Logger;
  /** Ready to take jobs: NATS connected, streams in place. */
  ready: () => boolean;
  /** The gateway's version (its package.json), shown in the OpenAPI document. */
  version?: string;
  /** The API keys read at start (`loadApiKeys`). None: the API is open, as behind a private network. */
  apiKeys?: readonly ApiKeyEntry[];
  /** The rate limiters' clock; tests inject one. */
  clock?: Clock;
  /** Called first for every request, before the key check (the service's request counters). */
  onRequest?: (reply: FastifyReply) => void;
  /** The connected NATS server's `max_payload`: a job larger than one message is refused. */
  maxPayload?: () => number | undefined;
}

/** The gateway's HTTP app. Builds, never listens: `main.ts` listens, tests use `inject()`. */
export function buildApp(deps: AppDeps): FastifyInstance {
  const app: FastifyInstance = Fastify({
    // pino is fastify's own logger; only the generic parameters differ.
    loggerInstance: deps.logger as FastifyBaseLogger,
    bodyLimit: deps.config.limits.max_body_bytes,
  });

  // The API speaks JSON only: a text/plain body is a 415, not a string for the validator.
  app.removeContentTypeParser("text/plain");
  // Before any route: `onRoute` sees only the routes registered after it.
  collectRoutes(app);
  const { onRequest } = deps;
  if (onRequest) app.addHook("onRequest", async (_request, reply) => onRequest(reply));
  registerTracing(app);
  // After tracing, whose hook opens the span the key's name is written on.
  const apiKeys = deps.apiKeys ?? [];
  const auth = apiKeys.length > 0;
  if (auth) {
    const failures = deps.config.gateway.auth_failures;
    registerAuth(app, {
      keys: apiKeys,
      failures: {
        max: failures.max,
        windowMs: failures.window_ms,
        maxAddresses: failures.max_addresses,
      },
      ...(deps.clock ? { clock: deps.clock } : {}),
    });
  }

  // The one place a failed request is logged, once: fastify logs nothing of its own for errors a
  // handler like this one answers. A validation error's issues are already bounded (20).
  app.setErrorHandler((error, request, reply) => {
    const handoffError = toHandoffError(error, deps.config.limits.max_body_bytes);
    if (handoffError.status >= 500) request.log.error({ err: error }, handoffError.message);
    else
      request.log.info(
        {
          code: handoffError.code,
          ...(handoffError.issues
            ? { issues: handoffError.issues, total_issues: handoffError.totalIssues }
            : {}),
        },
        handoffError.message,
      );
    const traceId = request.otelSpan?.spanContext().traceId;
    const body = errorBody(handoffError, traceId ? { trace_id: traceId } : {});
    // Refused before its body was read: answer so that a client still sending reads the 413.
    if (handoffError.code === "HANDOFF_ERR_BODY_TOO_LARGE" && !request.raw.complete) {
      replyBodyTooLarge(request, reply, handoffError.status, body);
      return;
    }
    return reply.status(handoffError.status).send(body);
  });

  app.setNotFoundHandler((request, reply) => {
    const error = new HandoffError(
      "HANDOFF_ERR_NOT_FOUND",
      `no route ${request.method} ${request.url}`,
    );
    return reply.status(404).send(errorBody(error));
  });

  registerHealth(app, deps.ready);
  registerChatCompletions(app, {
    jobs: deps.jobs,
    config: deps.config,
    ...(deps.maxPayload ? { maxPayload: deps.maxPayload } : {}),
  });
  registerJobs(app, { jobs: deps.jobs, config: deps.config, auth });
  registerModels(app, deps.config);
  registerOpenApi(app, { version: deps.version ?? "0.0.0", auth });
  return app;
}
