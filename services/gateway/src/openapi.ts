import {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  ErrorBody,
  JobId,
  JobRecord,
  WireSchemas,
} from "@handoff/contracts";
import type { FastifyInstance } from "fastify";
import {
  AnthropicErrorBody,
  AnthropicMessage,
  AnthropicMessagesRequest,
  AnthropicStreamEvent,
} from "./anthropic.js";
import { OPEN_ROUTES } from "./auth.js";
import { ResponseObject, ResponseStreamEvent, ResponsesRequest } from "./responses.js";

/**
 * The gateway's OpenAPI 3.1 document. Request and response bodies come from the same zod schemas
 * the gateway validates with (`z.toJSONSchema`, JSON Schema 2020-12, the dialect OpenAPI 3.1
 * uses), so the document cannot disagree with the wire. The paths are listed here by hand, and a
 * test compares them with the routes the app registers (collected by {@link collectRoutes}), so a
 * route cannot be added or removed without the document following.
 */

type Json = Record<string, unknown>;

/** One route the app registered: its method and fastify's URL pattern (`/v1/jobs/:id`). */
export interface RouteEntry {
  method: string;
  url: string;
}

declare module "fastify" {
  interface FastifyInstance {
    /** Every route registered, in order (HEAD twins of GET routes left out). */
    registeredRoutes: readonly RouteEntry[];
  }
}

/**
 * Records every route registered on `app` from now on in `app.registeredRoutes`. Call it before
 * registering routes: `onRoute` sees only the routes added after it.
 */
export function collectRoutes(app: FastifyInstance): readonly RouteEntry[] {
  const routes: RouteEntry[] = [];
  app.addHook("onRoute", (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const method of methods) {
      // Fastify answers HEAD for every GET route by itself; the document describes the GET.
      if (method === "HEAD") continue;
      routes.push({ method, url: route.url });
    }
  });
  app.decorate("registeredRoutes", routes);
  return routes;
}

/** Fastify's `/v1/jobs/:id` as OpenAPI's `/v1/jobs/{id}`. */
export function toOpenApiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, "{$1}");
}

const SCHEMAS = "#/components/schemas/";
const ref = (kind: string, name: string): Json => ({ $ref: `#/components/${kind}/${name}` });
const schemaRef = (name: string): Json => ({ $ref: `${SCHEMAS}${name}` });

/** Characters OpenAPI allows in a component's name. */
function componentName(text: string): string {
  return text.replace(/[^A-Za-z0-9._-]/g, "_");
}

/**
 * Turns one generated JSON Schema into components: the schema itself under `name`, and each of
 * its `$defs` (zod writes them for schemas with a registered `id`, and for cycles) as a component
 * of its own named `<name>.<def>`. Every `$ref` is rewritten to point at components: a `$ref` of
 * `#/$defs/x` inside a component would otherwise resolve against the OpenAPI document's root,
 * where there is no `$defs`, and a bare `#` (a cycle back to the root) would mean the document.
 */
export function hoistDefs(name: string, generated: Json): Record<string, Json> {
  const { $schema: _dialect, $id: _id, $defs, ...root } = generated;
  const defs = ($defs ?? {}) as Record<string, Json>;
  const defNames = new Map(
    Object.keys(defs).map((def) => [def, componentName(`${name}.${def}`)] as const),
  );
  const rewrite = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(rewrite);
    if (value === null || typeof value !== "object") return value;
    const out: Json = {};
    for (const [key, child] of Object.entries(value)) {
      out[key] = key === "$ref" && typeof child === "string" ? rewriteRef(child) : rewrite(child);
    }
    return out;
  };
  const rewriteRef = (target: string): string => {
    if (!target.startsWith("#")) return target; // an absolute URI: left as written
    const pointer = target.slice(1);
    const def = pointer.match(/^\/\$defs\/([^/]+)(.*)$/);
    if (def) {
      const defName = defNames.get(decodePointerToken(def[1] ?? ""));
      if (defName) return `${SCHEMAS}${defName}${def[2] ?? ""}`;
    }
    return `${SCHEMAS}${componentName(name)}${pointer}`;
  };
  const components: Record<string, Json> = { [componentName(name)]: rewrite(root) as Json };
  for (const [def, schema] of Object.entries(defs)) {
    components[defNames.get(def) ?? def] = rewrite(schema) as Json;
  }
  return components;
}

function decodePointerToken(token: string): string {
  return decodeURIComponent(token).replace(/~1/g, "/").replace(/~0/g, "~");
}

interface ZodLike {
  toJSONSchema(params: { io: "input" | "output"; unrepresentable: "any" }): unknown;
}

/**
 * The wire schemas, named as components. Requests are described as what a client may send (zod's
 * input: defaults optional), responses as what the gateway writes (zod's output).
 */
const ZOD_COMPONENTS: ReadonlyArray<readonly [string, ZodLike, "input" | "output"]> = [
  ["ChatCompletionRequest", ChatCompletionRequest, "input"],
  ["ChatCompletion", ChatCompletion, "output"],
  ["ChatCompletionChunk", ChatCompletionChunk, "output"],
  ["JobRecord", JobRecord, "output"],
  ["ErrorBody", ErrorBody, "output"],
  ["ResponsesRequest", ResponsesRequest, "input"],
  ["Response", ResponseObject, "output"],
  ["ResponseStreamEvent", ResponseStreamEvent, "output"],
  ["AnthropicMessagesRequest", AnthropicMessagesRequest, "input"],
  ["AnthropicMessage", AnthropicMessage, "output"],
  ["AnthropicStreamEvent", AnthropicStreamEvent, "output"],
  ["AnthropicErrorBody", AnthropicErrorBody, "output"],
];

const TIERS = ["light", "mid", "heavy"];

/**
 * Response bodies the routes build by hand, without a zod schema of their own; the integration
 * test validates live responses against these.
 */
const HAND_WRITTEN_SCHEMAS: Record<string, Json> = {
  Model: {
    type: "object",
    description: "OpenAI's model object, with how Handoff serves the model.",
    required: ["id", "object", "created", "owned_by", "handoff"],
    properties: {
      id: { type: "string", examples: ["handoff", "handoff/mid", "sim:sim-mid"] },
      object: { const: "model" },
      created: { type: "integer" },
      owned_by: { type: "string" },
      handoff: {
        type: "object",
        description:
          "`route: auto` is classifier-routed, `route: pinned` forces a tier; a deployment shows its tier, provider, model and price.",
        properties: {
          route: { enum: ["auto", "pinned"] },
          alias_of: {
            type: "string",
            description:
              "On an alias (`gateway.model_aliases`): the served model it stands for, whose details follow.",
          },
          tier: { enum: TIERS },
          provider: { type: "string" },
          model: { type: "string" },
          price: {
            type: "object",
            required: ["input_per_mtok", "output_per_mtok"],
            properties: {
              input_per_mtok: { type: "number", minimum: 0 },
              output_per_mtok: { type: "number", minimum: 0 },
            },
          },
        },
      },
    },
  },
  ModelList: {
    type: "object",
    required: ["object", "data"],
    properties: { object: { const: "list" }, data: { type: "array", items: schemaRef("Model") } },
  },
  JobAccepted: {
    type: "object",
    description: "A job taken for asynchronous processing.",
    required: ["id", "object", "status", "created_at", "deadline", "links"],
    properties: {
      id: { type: "string" },
      object: { const: "handoff.job" },
      status: { const: "queued" },
      created_at: { type: "string", format: "date-time" },
      deadline: { type: "string", format: "date-time" },
      trace_id: { type: "string" },
      links: {
        type: "object",
        required: ["self", "events"],
        properties: { self: { type: "string" }, events: { type: "string" } },
      },
    },
  },
  Status: {
    type: "object",
    required: ["status"],
    properties: { status: { enum: ["ok", "ready", "not ready"] } },
  },
  ApiIndex: {
    type: "object",
    description: "Where things are: the OpenAPI document and the main routes.",
    required: ["object", "name", "version", "auth", "links"],
    properties: {
      object: { const: "handoff.api" },
      name: { type: "string" },
      version: { type: "string" },
      auth: { enum: ["none", "api_key"] },
      links: { type: "object", additionalProperties: { type: "string" } },
    },
  },
  JsonSchema: {
    type: "object",
    description: "A JSON Schema (draft 2020-12) document.",
  },
  OpenApiDocument: {
    type: "object",
    description: "This document.",
    required: ["openapi", "info", "paths"],
  },
};

/** Error responses, each with the codes that answer with it. */
const ERROR_RESPONSES: Record<string, { status: string; description: string }> = {
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
};

const RATE_LIMIT_HEADERS: Record<string, Json> = {
  "x-ratelimit-limit-requests": {
    description: "The key's requests per minute (sent when the key has a limit).",
    schema: { type: "integer" },
  },
  "x-ratelimit-remaining-requests": {
    description: "Requests left before the limit applies.",
    schema: { type: "integer" },
  },
  "x-ratelimit-reset-requests": {
    description:
      "Until the limit is fully restored, as OpenAI writes it (`850ms`, `2.5s`, `1m0s`).",
    schema: { type: "string" },
  },
};

/** How each route is described: `METHOD /openapi/path`. */
interface Operation {
  operationId: string;
  summary: string;
  description?: string;
  tags: string[];
  parameters?: Json[];
  requestBody?: Json;
  /** Success responses by status. */
  responses: Record<string, Json>;
  /** Error responses this operation can answer with, by `ERROR_RESPONSES` name. */
  errors: string[];
  /**
   * The schema of this operation's error bodies when not `ErrorBody` (Anthropic's door): its
   * error responses are then written out with it. `default` stays the shared `ServerError`.
   */
  errorSchema?: string;
}

const jsonContent = (schema: Json): Json => ({ "application/json": { schema } });
const sseContent = (description: string, event: string): Json => ({
  "text/event-stream": {
    schema: { type: "string", description },
    // OpenAPI 3.1 cannot type one event; this names the schema of each event's `data:` line.
    "x-handoff-event-data": schemaRef(event),
  },
});

const OPERATIONS: Record<string, Operation> = {
  "POST /v1/chat/completions": {
    operationId: "createChatCompletion",
    summary: "Create a chat completion",
    description:
      "OpenAI's chat-completions request; the mesh classifies it and answers from the cheapest tier that can. The answer carries a `handoff` object: route, per-hop usage, cost, trace id. With `stream: true` the answer is OpenAI's server-sent `chat.completion.chunk` events, ending in `data: [DONE]` (or an error event in `ErrorBody`'s shape). With an `Idempotency-Key` an earlier identical request holds, nothing is run again: the answer is that request's job's, waited for up to this request's timeout, with `Idempotent-Replayed: true`; streamed, it comes whole in one content chunk once the job ends.",
    tags: ["chat"],
    parameters: [
      ref("parameters", "TimeoutHeader"),
      ref("parameters", "MaxCostHeader"),
      ref("parameters", "IdempotencyKeyHeader"),
    ],
    requestBody: { required: true, content: jsonContent(schemaRef("ChatCompletionRequest")) },
    responses: {
      "200": {
        description: "The completion, or with `stream: true` its chunks as server-sent events.",
        headers: {
          "x-handoff-job-id": { description: "The job's id.", schema: { type: "string" } },
          "x-handoff-trace-id": { description: "The job's trace id.", schema: { type: "string" } },
          "idempotent-replayed": ref("headers", "IdempotentReplayed"),
        },
        content: {
          ...jsonContent(schemaRef("ChatCompletion")),
          ...sseContent(
            "`data: <ChatCompletionChunk JSON>` events, then `data: [DONE]`.",
            "ChatCompletionChunk",
          ),
        },
      },
    },
    errors: [
      "BadRequest",
      "BudgetExceeded",
      "ModelNotFound",
      "BodyTooLarge",
      "UnsupportedMediaType",
      "IdempotencyMismatch",
      "UpstreamFailed",
      "Timeout",
    ],
  },
  "POST /v1/messages": {
    operationId: "createMessage",
    summary: "Create a message (Anthropic's Messages API)",
    description:
      "Anthropic's Messages request (`model`, `max_tokens`, `system`, `messages` of text, `tool_use` and `tool_result` blocks, client `tools`, `tool_choice`, `temperature`, `top_p`, `stop_sequences`, `stream`, `metadata`), run as the same job a chat completion is, answered as Anthropic's `message` plus the `handoff` report. Any other field (`thinking`, `top_k`, image or document blocks, server tools, `cache_control`, ...) is a 400 naming it. The key may come as `x-api-key`, as Anthropic's SDKs send it. With `stream: true` the answer is Anthropic's named events: `message_start`, `content_block_start`, `content_block_delta` (`text_delta`, `input_json_delta`), `content_block_stop`, `message_delta` (stop reason, usage, `handoff`), `message_stop`; a failure is an `error` event. Errors, 401 and 429 included, are in Anthropic's shape (`AnthropicErrorBody`), Handoff's code in `error.details.error_code`. `stop_reason` is never `stop_sequence`: the mesh does not record which stop sequence ended an answer, and reports `end_turn`.",
    tags: ["chat"],
    parameters: [
      ref("parameters", "TimeoutHeader"),
      ref("parameters", "MaxCostHeader"),
      ref("parameters", "IdempotencyKeyHeader"),
    ],
    requestBody: { required: true, content: jsonContent(schemaRef("AnthropicMessagesRequest")) },
    responses: {
      "200": {
        description: "The message, or with `stream: true` its server-sent events.",
        headers: {
          "x-handoff-job-id": { description: "The job's id.", schema: { type: "string" } },
          "x-handoff-trace-id": { description: "The job's trace id.", schema: { type: "string" } },
          "idempotent-replayed": ref("headers", "IdempotentReplayed"),
        },
        content: {
          ...jsonContent(schemaRef("AnthropicMessage")),
          ...sseContent(
            "`event: <type>` and `data: <AnthropicStreamEvent JSON>` events, from `message_start` to `message_stop`.",
            "AnthropicStreamEvent",
          ),
        },
      },
    },
    errors: [
      "BadRequest",
      "BudgetExceeded",
      "BodyTooLarge",
      "UnsupportedMediaType",
      "IdempotencyMismatch",
      "UpstreamFailed",
      "Timeout",
    ],
    errorSchema: "AnthropicErrorBody",
  },
  "POST /v1/responses": {
    operationId: "createResponse",
    summary: "Create a response (OpenAI's Responses API)",
    description:
      "OpenAI's Responses request, run as the same job a chat completion is: `model`, `input` (a string, or `message` items of role user, system, developer or assistant with text content, `function_call` and `function_call_output` items), `instructions` (sent as a system message), function `tools`, `tool_choice`, `parallel_tool_calls`, `temperature`, `top_p`, `max_output_tokens`, `text.format` (`text`, `json_object`, `json_schema`), `stream`, `metadata`, `user`, `safety_identifier`, `prompt_cache_key`. The answer is OpenAI's `response` object plus the `handoff` report; `usage` sums every model call of the job. The gateway keeps no conversation state: `store: true` is accepted without effect (nothing is stored to retrieve), and `previous_response_id`, `conversation` and `item_reference` input items are a 400 naming the field; send the whole conversation in `input` (with the AI SDK, `providerOptions.openai.store: false`). Any other field or value the mesh cannot honour (built-in tools, image, file or audio inputs, `reasoning`, `background`, `include`, log-probabilities, `truncation: auto`) is a 400 `HANDOFF_ERR_UNSUPPORTED` naming it. With `stream: true` the answer is OpenAI's typed events, each `event: <type>` with `data` carrying `type` and `sequence_number`: `response.created`, `response.in_progress`, the message's `response.output_item.added`, `response.content_part.added`, `response.output_text.delta`s as the answering tier streams, `response.output_text.done`, `response.content_part.done`, `response.output_item.done`, each function call's `response.output_item.added`, `response.function_call_arguments.delta` and `.done`, `response.output_item.done`, then `response.completed` (`response.incomplete` when cut at `max_output_tokens`) with the whole response; a job that fails after the stream opened ends it with `response.failed`. An `Idempotency-Key` is honoured as on chat completions.",
    tags: ["chat"],
    parameters: [
      ref("parameters", "TimeoutHeader"),
      ref("parameters", "MaxCostHeader"),
      ref("parameters", "IdempotencyKeyHeader"),
    ],
    requestBody: { required: true, content: jsonContent(schemaRef("ResponsesRequest")) },
    responses: {
      "200": {
        description: "The response, or with `stream: true` its typed server-sent events.",
        headers: {
          "x-handoff-job-id": { description: "The job's id.", schema: { type: "string" } },
          "x-handoff-trace-id": { description: "The job's trace id.", schema: { type: "string" } },
          "idempotent-replayed": ref("headers", "IdempotentReplayed"),
        },
        content: {
          ...jsonContent(schemaRef("Response")),
          ...sseContent(
            "`event: <type>` and `data: <ResponseStreamEvent JSON>` events, from `response.created` to `response.completed`.",
            "ResponseStreamEvent",
          ),
        },
      },
    },
    errors: [
      "BadRequest",
      "BudgetExceeded",
      "ModelNotFound",
      "BodyTooLarge",
      "UnsupportedMediaType",
      "IdempotencyMismatch",
      "UpstreamFailed",
      "Timeout",
    ],
  },
  "GET /v1/models": {
    operationId: "listModels",
    summary: "List the models",
    description:
      "`handoff` (routed by the classifier), one pinned name per tier (`handoff/light`, `handoff/mid`, `handoff/heavy`), every configured deployment, and the aliases of `gateway.model_aliases`.",
    tags: ["models"],
    responses: {
      "200": { description: "The model list.", content: jsonContent(schemaRef("ModelList")) },
    },
    errors: [],
  },
  "GET /v1/models/{id}": {
    operationId: "retrieveModel",
    summary: "Get one model",
    description:
      "One entry of the model list, by id (OpenAI's `models.retrieve`). An id with a `/` is percent-encoded: `handoff%2Flight`.",
    tags: ["models"],
    parameters: [
      {
        name: "id",
        in: "path",
        required: true,
        description: "A model id from `GET /v1/models`.",
        schema: { type: "string", examples: ["handoff", "handoff/light"] },
      },
    ],
    responses: {
      "200": { description: "The model.", content: jsonContent(schemaRef("Model")) },
    },
    errors: ["ModelNotFound"],
  },
  "POST /v1/jobs": {
    operationId: "createJob",
    summary: "Submit a chat completion as an asynchronous job",
    description:
      "Answers at once with the job's id; follow `GET /v1/jobs/{id}` or its events. `stream` must be false or absent. With an `Idempotency-Key` an earlier identical request holds, no job is submitted: the answer is the first request's 202, with `Idempotent-Replayed: true`.",
    tags: ["jobs"],
    parameters: [
      ref("parameters", "TimeoutHeader"),
      ref("parameters", "MaxCostHeader"),
      ref("parameters", "IdempotencyKeyHeader"),
    ],
    requestBody: { required: true, content: jsonContent(schemaRef("ChatCompletionRequest")) },
    responses: {
      "202": {
        description: "The job is queued.",
        headers: {
          location: { description: "The job's URL.", schema: { type: "string" } },
          "idempotent-replayed": ref("headers", "IdempotentReplayed"),
        },
        content: jsonContent(schemaRef("JobAccepted")),
      },
    },
    errors: [
      "BadRequest",
      "ModelNotFound",
      "BodyTooLarge",
      "UnsupportedMediaType",
      "IdempotencyMismatch",
    ],
  },
  "GET /v1/jobs/{id}": {
    operationId: "getJob",
    summary: "Get a job's record",
    description: "The stored record: status, stages visited, usage, cost, result or error.",
    tags: ["jobs"],
    parameters: [ref("parameters", "JobId")],
    responses: {
      "200": { description: "The job's record.", content: jsonContent(schemaRef("JobRecord")) },
    },
    errors: ["BadRequest", "NotFound"],
  },
  "GET /v1/jobs/{id}/events": {
    operationId: "streamJobEvents",
    summary: "Follow a job's record as server-sent events",
    description:
      "The current record, then every change, each as an event named by the job's status, until the job ends.",
    tags: ["jobs"],
    parameters: [ref("parameters", "JobId")],
    responses: {
      "200": {
        description: "The record's changes.",
        content: sseContent("`event: <status>` and `data: <JobRecord JSON>` events.", "JobRecord"),
      },
    },
    errors: ["BadRequest", "NotFound"],
  },
  "GET /v1/schemas/{name}": {
    operationId: "getWireSchema",
    summary: "Get the JSON Schema of a wire message",
    tags: ["schemas"],
    parameters: [
      {
        name: "name",
        in: "path",
        required: true,
        description: "A wire message's name, optionally with `.json` or `.schema.json`.",
        schema: { type: "string", examples: Object.keys(WireSchemas) },
      },
    ],
    responses: {
      "200": { description: "The JSON Schema.", content: jsonContent(schemaRef("JsonSchema")) },
    },
    errors: ["NotFound"],
  },
  "GET /healthz": {
    operationId: "health",
    summary: "Liveness: the process answers",
    tags: ["operations"],
    responses: { "200": { description: "Alive.", content: jsonContent(schemaRef("Status")) } },
    errors: [],
  },
  "GET /readyz": {
    operationId: "ready",
    summary: "Readiness: NATS is connected and the streams are in place",
    tags: ["operations"],
    responses: {
      "200": { description: "Ready.", content: jsonContent(schemaRef("Status")) },
      "503": { description: "Not ready.", content: jsonContent(schemaRef("Status")) },
    },
    errors: [],
  },
  "GET /openapi.json": {
    operationId: "getOpenApiDocument",
    summary: "This OpenAPI document",
    tags: ["operations"],
    responses: {
      "200": {
        description: "The document.",
        content: jsonContent(schemaRef("OpenApiDocument")),
      },
    },
    errors: [],
  },
  "GET /": {
    operationId: "getApiIndex",
    summary: "An index of the API",
    tags: ["operations"],
    responses: {
      "200": { description: "The index.", content: jsonContent(schemaRef("ApiIndex")) },
    },
    errors: [],
  },
};

/** Every `METHOD /path` the document describes, in OpenAPI's path syntax. */
export function documentedOperations(): string[] {
  return Object.keys(OPERATIONS);
}

export interface OpenApiOptions {
  /** The gateway's version (its package.json), as `info.version`. */
  version: string;
  /** API keys are configured: protected operations require one, and may answer 401 and 429. */
  auth: boolean;
}

/** Builds the OpenAPI 3.1 document of the gateway. Pure: the same options give the same document. */
export function buildOpenApiDocument(options: OpenApiOptions): Json {
  const schemas: Record<string, Json> = {};
  for (const [name, schema, io] of ZOD_COMPONENTS) {
    Object.assign(
      schemas,
      hoistDefs(name, schema.toJSONSchema({ io, unrepresentable: "any" }) as Json),
    );
  }
  Object.assign(schemas, HAND_WRITTEN_SCHEMAS);

  const { $schema: _dialect, ...jobIdSchema } = JobId.toJSONSchema() as Json;
  const parameters: Record<string, Json> = {
    JobId: { name: "id", in: "path", required: true, schema: jobIdSchema },
    TimeoutHeader: {
      name: "x-handoff-timeout-ms",
      in: "header",
      required: false,
      description:
        "How long to wait for the answer before a 504, in ms (`handoff.timeout_ms` in the body wins).",
      schema: { type: "integer", minimum: 100, maximum: 600_000 },
    },
    MaxCostHeader: {
      name: "x-handoff-max-cost-usd",
      in: "header",
      required: false,
      description: "Upper bound on the job's model spend, in US dollars (`max_cost_usd` wins).",
      schema: { type: "number", exclusiveMinimum: 0, maximum: 1_000_000 },
    },
    IdempotencyKeyHeader: {
      name: "Idempotency-Key",
      in: "header",
      required: false,
      description:
        "Makes the request safe to retry: the same key from the same API key (every caller, when the API is open) within `gateway.idempotency_window_ms` (24 h by default) gets the first request's job back, never a second run. The same key with a different body or route is a 422. A key whose job could not be queued is released. Malformed (empty, over 255 characters, not printable ASCII): 400.",
      schema: { type: "string", minLength: 1, maxLength: 255, pattern: "^[\\x20-\\x7E]+$" },
    },
  };

  const responses: Record<string, Json> = {};
  for (const [name, { status, description }] of Object.entries(ERROR_RESPONSES)) {
    const headers: Json =
      status === "429"
        ? {
            "retry-after": ref("headers", "RetryAfter"),
            ...rateLimitHeaderRefs(),
          }
        : {};
    responses[name] = {
      description,
      ...(Object.keys(headers).length > 0 ? { headers } : {}),
      content: jsonContent(schemaRef("ErrorBody")),
    };
  }

  const paths: Record<string, Record<string, Json>> = {};
  for (const [key, operation] of Object.entries(OPERATIONS)) {
    const [method = "", path = ""] = key.split(" ");
    const isProtected = options.auth && !OPEN_ROUTES.has(toFastifyPath(path));
    const errors = isProtected
      ? ["Unauthorized", "RateLimited", ...operation.errors]
      : operation.errors;
    const success = Object.fromEntries(
      Object.entries(operation.responses).map(([status, response]) => [
        status,
        isProtected && status.startsWith("2")
          ? {
              ...response,
              headers: { ...(response.headers as Json | undefined), ...rateLimitHeaderRefs() },
            }
          : response,
      ]),
    );
    const errorResponses = Object.fromEntries(
      [...errors, "ServerError"].map((name) => [
        ERROR_RESPONSES[name]?.status ?? name,
        operation.errorSchema && name !== "ServerError"
          ? { ...responses[name], content: jsonContent(schemaRef(operation.errorSchema)) }
          : ref("responses", name),
      ]),
    );
    const {
      errors: _errors,
      responses: _responses,
      errorSchema: _errorSchema,
      ...rest
    } = operation;
    paths[path] ??= {};
    paths[path][method.toLowerCase()] = {
      ...rest,
      ...(isProtected ? { security: [{ bearerAuth: [] }, { apiKeyHeader: [] }] } : {}),
      responses: { ...success, ...errorResponses },
    };
  }

  return {
    openapi: "3.1.0",
    info: {
      title: "Handoff gateway",
      version: options.version,
      description:
        "OpenAI-compatible HTTP API of the Handoff mesh: a cheap model classifies each request, a mid model runs the tools, a heavy model only for the hard part." +
        (options.auth
          ? " Requests to `/v1/*` need an API key; each key's rate limit is counted per gateway instance."
          : ""),
      license: { name: "Apache-2.0", identifier: "Apache-2.0" },
    },
    tags: [
      { name: "chat" },
      { name: "models" },
      { name: "jobs" },
      { name: "schemas" },
      { name: "operations" },
    ],
    paths,
    components: {
      schemas,
      parameters,
      responses,
      headers: {
        RetryAfter: {
          description: "Seconds to wait before the key (or the address) may send another request.",
          schema: { type: "integer", minimum: 1 },
        },
        IdempotentReplayed: {
          description:
            "`true` when the answer is an earlier request's job, replayed for its `Idempotency-Key`.",
          schema: { const: "true" },
        },
        ...RATE_LIMIT_HEADERS,
      },
      ...(options.auth
        ? {
            securitySchemes: {
              bearerAuth: {
                type: "http",
                scheme: "bearer",
                description: "`Authorization: Bearer <key>`, as OpenAI's clients send it.",
              },
              apiKeyHeader: {
                type: "apiKey",
                in: "header",
                name: "api-key",
                description: "`api-key: <key>`, as Azure OpenAI's clients send it.",
              },
            },
          }
        : {}),
    },
  };
}

function rateLimitHeaderRefs(): Json {
  return Object.fromEntries(
    Object.keys(RATE_LIMIT_HEADERS).map((name) => [name, ref("headers", name)]),
  );
}

function toFastifyPath(path: string): string {
  return path.replace(/\{([A-Za-z0-9_]+)\}/g, ":$1");
}

/**
 * `GET /openapi.json`, the document, and `GET /`, a small index pointing at it. Both answer
 * without an API key (see `OPEN_ROUTES`): a client reads them to learn how to call the rest.
 */
export function registerOpenApi(app: FastifyInstance, options: OpenApiOptions): void {
  // Built once: the document depends only on the options, and schema generation is not free.
  const document = buildOpenApiDocument(options);
  app.get("/openapi.json", async () => document);
  const index = {
    object: "handoff.api",
    name: "Handoff gateway",
    version: options.version,
    auth: options.auth ? "api_key" : "none",
    links: {
      openapi: "/openapi.json",
      chat_completions: "/v1/chat/completions",
      models: "/v1/models",
      jobs: "/v1/jobs",
      health: "/healthz",
      ready: "/readyz",
    },
  };
  app.get("/", async () => index);
}
