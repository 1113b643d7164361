import type { HandoffConfig } from "@handoff/config";
import { HandoffError } from "@handoff/contracts";
import type { JobClient } from "@handoff/mesh";
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from "fastify";
import type { Logger } from "pino";
import { type ApiKeyEntry, registerAuth } from "./auth.js";
import { errorBody, errorHandler, openAiError } from "./errors.js";
import { collectRoutes, registerApi } from "./openapi.js";
import type { Clock } from "./rate-limit.js";
import { registerChatCompletions } from "./routes/chat-completions.js";
import { registerHealth } from "./routes/health.js";
import { registerJobs } from "./routes/jobs.js";
import { registerMessages } from "./routes/messages.js";
import { registerModels } from "./routes/models.js";
import { registerResponses } from "./routes/responses.js";
import { registerTracing } from "./tracing.js";

export interface AppDeps {
  /**
   * The job client; or a function that returns it once the mesh is up (the gateway listens before
   * NATS answers): until then, every route but `/healthz` and `/readyz` answers 503
   * `HANDOFF_ERR_UNAVAILABLE`.
   */
  jobs: JobClient | (() => JobClient | undefined);
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

/** The probes, which answer while the gateway is still starting. */
const PROBES: ReadonlySet<string> = new Set(["/healthz", "/readyz"]);

function notStarted(): HandoffError {
  return new HandoffError(
    "HANDOFF_ERR_UNAVAILABLE",
    "the gateway is starting: NATS and its streams are not up yet; try again shortly",
  );
}

/**
 * A job client that is not there yet: each use reaches the one `current()` returns, or throws 503.
 * The start-up gate answers first, so routes only meet the throw in a race with the start.
 */
function deferredJobs(current: () => JobClient | undefined): JobClient {
  return new Proxy({} as JobClient, {
    get(_target, property) {
      const client = current();
      if (!client) throw notStarted();
      const value: unknown = Reflect.get(client, property, client);
      return typeof value === "function" ? value.bind(client) : value;
    },
  });
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
  // While the gateway starts (before NATS and the streams are up), only the probes answer.
  const current = typeof deps.jobs === "function" ? deps.jobs : undefined;
  const jobs = current ? deferredJobs(current) : (deps.jobs as JobClient);
  if (current) {
    app.addHook("onRequest", async (request, reply) => {
      const route = request.routeOptions.url;
      if ((route !== undefined && PROBES.has(route)) || current()) return;
      // Answered here rather than thrown: an expected state, not an error worth a stack per request.
      const traceId = request.otelSpan?.spanContext().traceId;
      return reply
        .status(503)
        .header("retry-after", "1")
        .send(errorBody(notStarted(), traceId ? { trace_id: traceId } : {}));
    });
  }
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

  // The one place a failed request is logged, once, and answered in OpenAI's shape.
  app.setErrorHandler(errorHandler(deps.config.limits.max_body_bytes, openAiError));

  app.setNotFoundHandler((request, reply) => {
    const error = new HandoffError(
      "HANDOFF_ERR_NOT_FOUND",
      `no route ${request.method} ${request.url}`,
    );
    return reply.status(404).send(errorBody(error));
  });

  const doors = {
    jobs,
    config: deps.config,
    ...(deps.maxPayload ? { maxPayload: deps.maxPayload } : {}),
  };
  // Each route declares its schemas; they validate, serialize and make the OpenAPI document.
  registerApi(app, { version: deps.version ?? "0.0.0", auth }, (api) => {
    registerHealth(api, deps.ready);
    registerChatCompletions(api, doors);
    registerMessages(api, doors);
    registerResponses(api, doors);
    registerJobs(api, { jobs, config: deps.config, auth });
    registerModels(api, deps.config);
  });
  return app;
}
