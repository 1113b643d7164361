import {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  ErrorBody,
  HandoffError,
  JobRecord,
} from "@handoff/contracts";
import type { FastifySchemaCompiler, FastifySerializerCompiler } from "fastify";
import { z } from "zod";

/**
 * How a route declares itself: its `schema` holds zod schemas (`body`, `headers`, `params`,
 * `response`) and what the OpenAPI document says of it (`operationId`, `summary`, `description`,
 * `tags`, `errors`). Fastify validates with the schemas ({@link validatorCompiler}) and serializes
 * with them (fastify-type-provider-zod's `serializerCompiler`) unless the route says its handler
 * does ({@link parsedByHandler}, {@link writtenByHandler}), and `@fastify/swagger` writes the
 * document from the same declarations (see `openapi.ts`).
 */

/** What the OpenAPI document says of a zod schema. */
export interface DocMeta {
  /**
   * Names the schema as a component (`#/components/schemas/<id>`): the document refers to it
   * wherever it is used instead of repeating it.
   */
  id?: string;
  description?: string;
  examples?: unknown[];
  /** Any other JSON Schema annotation (`format`, ...). */
  [keyword: string]: unknown;
}

/**
 * The document's names and descriptions of zod schemas. Its own registry, not zod's global one:
 * naming a schema here changes nothing else that renders it (`GET /v1/schemas/:name`).
 */
export const docs = z.registry<DocMeta>();

// The mesh's OpenAI-shaped wire messages, named as components of the document.
ChatCompletionRequest.register(docs, { id: "ChatCompletionRequest" });
ChatCompletion.register(docs, { id: "ChatCompletion" });
ChatCompletionChunk.register(docs, { id: "ChatCompletionChunk" });
JobRecord.register(docs, { id: "JobRecord" });
ErrorBody.register(docs, { id: "ErrorBody" });

/** The error responses routes answer with, each with the codes that answer with it. */
export const ERROR_RESPONSES = {
  BadRequest: {
    status: "400",
    description:
      "`HANDOFF_ERR_VALIDATION` (the failing paths in `issues`, at most 20, with `total_issues` counting them all; the first in `param`) or `HANDOFF_ERR_UNSUPPORTED` (e.g. `logprobs` on a stream, or where a deployment that may answer cannot return them: Anthropic). Free-form JSON (tool `parameters`, a `response_format` schema) may nest at most 64 levels.",
  },
  Unauthorized: {
    status: "401",
    description:
      "`HANDOFF_ERR_UNAUTHORIZED`: no API key, or an unknown one. `issues[0].message` is OpenAI's code, `invalid_api_key`.",
  },
  BudgetExceeded: {
    status: "402",
    description: "`HANDOFF_ERR_BUDGET`: no tier can answer within `max_cost_usd`.",
  },
  NotFound: {
    status: "404",
    description:
      "`HANDOFF_ERR_NOT_FOUND`. With API keys, also a job another key submitted (unless the key has the `admin` scope).",
  },
  ModelNotFound: {
    status: "404",
    description:
      "`model_not_found` (OpenAI's code; `HANDOFF_ERR_MODEL_NOT_FOUND` in job records), `param: model`: the gateway neither serves the model named nor has it in `gateway.model_aliases`.",
  },
  BodyTooLarge: {
    status: "413",
    description:
      "`HANDOFF_ERR_BODY_TOO_LARGE`: the body is over `limits.max_body_bytes`. `HANDOFF_ERR_MAX_PAYLOAD`: the job would not fit in one message of the NATS server (its `max_payload`); nothing was stored.",
  },
  UnsupportedMediaType: {
    status: "415",
    description: "`HANDOFF_ERR_MEDIA_TYPE`: the body must be `application/json`.",
  },
  IdempotencyMismatch: {
    status: "422",
    description:
      "`HANDOFF_ERR_IDEMPOTENCY_MISMATCH`: the `Idempotency-Key` was already used, within `gateway.idempotency_window_ms`, with a different request (another body or route). The message names the key; `param` is `headers.idempotency-key`.",
  },
  RateLimited: {
    status: "429",
    description:
      "`HANDOFF_ERR_RATE_LIMITED`: the key's requests per minute are spent on this gateway instance, or the client's address failed authentication too often (`gateway.auth_failures`). `issues[0].message` is OpenAI's code, `rate_limit_exceeded`.",
  },
  UpstreamFailed: {
    status: "502",
    description:
      "`HANDOFF_ERR_PROVIDER`, `HANDOFF_ERR_PROVIDER_REJECTED` or `HANDOFF_ERR_RETRIES_EXHAUSTED`: the models failed; `job_id` names the job.",
  },
  Timeout: {
    status: "504",
    description:
      "`HANDOFF_ERR_DEADLINE`: no answer in time. The job may still finish: `GET /v1/jobs/{job_id}`.",
  },
  ServerError: {
    status: "default",
    description: "Any other failure (`HANDOFF_ERR_INTERNAL`, `HANDOFF_ERR_UNAVAILABLE`, ...).",
  },
} as const satisfies Record<string, { status: string; description: string }>;
export type ErrorResponse = keyof typeof ERROR_RESPONSES;

declare module "fastify" {
  interface FastifySchema {
    /**
     * The error responses the route may answer with, by name ({@link ERROR_RESPONSES}). Every
     * route may also answer `ServerError`; with API keys, protected routes `Unauthorized` and
     * `RateLimited` too.
     */
    errors?: readonly ErrorResponse[];
    /** The (named) schema of the route's error bodies, when it is not `ErrorBody`. */
    errorBody?: z.ZodType;
  }
}

/**
 * A response header as the route documents it: a JSON Schema with its description (the form
 * `@fastify/swagger` turns into an OpenAPI header object).
 */
export type HeaderDoc = { description: string } & Record<string, unknown>;

/** A response with a JSON body of `schema`, and the headers it carries. */
export function jsonResponse<T extends z.ZodType>(
  description: string,
  schema: T,
  headers?: Record<string, HeaderDoc>,
) {
  return {
    description,
    ...(headers ? { headers } : {}),
    content: { "application/json": { schema } },
  };
}

/**
 * On a media type of server-sent events: the (named) schema of each event's `data:` line, which
 * OpenAPI 3.1 has no keyword for.
 */
export const EVENT_DATA = "x-handoff-event-data";

/** A `text/event-stream` answer whose events each carry one `event` as their `data:`. */
export function eventStream(description: string, event: z.ZodType) {
  return {
    "text/event-stream": {
      schema: z.string().register(docs, { description }),
      [EVENT_DATA]: event,
    },
  };
}

/**
 * Route options: the handler parses its own input (each door answers a bad request in its own
 * dialect, with its own issue paths and codes), so the route's request schemas document it and
 * fastify does not validate with them.
 */
export const parsedByHandler = {
  validatorCompiler: (() => () => true) satisfies FastifySchemaCompiler<unknown>,
};

/**
 * Route options: the handler's answers are written as they are (`JSON.stringify`), so the route's
 * response schemas document them and fastify does not serialize with them (a zod schema would
 * strip what it does not name, and refuse what it does not expect).
 */
export const writtenByHandler = {
  serializerCompiler: (() => (data: unknown) =>
    JSON.stringify(data)) satisfies FastifySerializerCompiler<unknown>,
};

/**
 * Fastify's validation of a route's zod schemas (its `params`, `querystring`, ...): a value that
 * fails is a 400 `HANDOFF_ERR_VALIDATION` with the issues and their paths (`messages[0].role`), as
 * every other validation of the gateway. (fastify-type-provider-zod's `validatorCompiler` fails
 * with fastify's `FST_ERR_VALIDATION` and JSON-pointer paths instead.)
 */
export const validatorCompiler: FastifySchemaCompiler<z.ZodType> =
  ({ schema, httpPart }) =>
  (data) => {
    const parsed = schema.safeParse(data);
    return parsed.success
      ? { value: parsed.data }
      : { error: HandoffError.validation(`request ${httpPart ?? "input"}`, parsed.error) };
  };
