import fastifySwagger, {
  type SwaggerTransform,
  type SwaggerTransformObject,
} from "@fastify/swagger";
import type { FastifyInstance } from "fastify";
import {
  createJsonSchemaTransform,
  createJsonSchemaTransformObject,
  serializerCompiler,
  type ZodTypeProvider,
} from "fastify-type-provider-zod";
import type { OpenAPIV3_1 } from "openapi-types";
import { z } from "zod";
import { OPEN_ROUTES } from "./auth.js";
import {
  docs,
  ERROR_RESPONSES,
  type ErrorResponse,
  EVENT_DATA,
  type HeaderDoc,
  jsonResponse,
  validatorCompiler,
  writtenByHandler,
} from "./route-schema.js";

/**
 * The gateway's OpenAPI 3.1 document, `GET /openapi.json`, written by `@fastify/swagger` from the
 * routes themselves: each route declares its zod schemas and what the document says of it on its
 * `schema` (see `route-schema.ts`), and `fastify-type-provider-zod` renders the zod schemas as
 * JSON Schema 2020-12, the dialect of OpenAPI 3.1, with the schemas named in the `docs` registry
 * as components. The same declarations validate and serialize where fastify does that, so the
 * document cannot disagree with the wire. A route registered without its documentation stops the
 * app from starting ({@link requireDocumentation}).
 */

type Json = Record<string, unknown>;

export interface OpenApiOptions {
  /** The gateway's version (its package.json), as `info.version`. */
  version: string;
  /** API keys are configured: protected operations require one, and may answer 401 and 429. */
  auth: boolean;
}

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

const methodsOf = (method: string | readonly string[]): readonly string[] =>
  typeof method === "string" ? [method] : method;

/**
 * Records every route registered on `app` from now on in `app.registeredRoutes`. Call it before
 * registering routes: `onRoute` sees only the routes added after it.
 */
export function collectRoutes(app: FastifyInstance): readonly RouteEntry[] {
  const routes: RouteEntry[] = [];
  app.addHook("onRoute", (route) => {
    for (const method of methodsOf(route.method)) {
      // Fastify answers HEAD for every GET route by itself; the document describes the GET.
      if (method === "HEAD") continue;
      routes.push({ method, url: route.url });
    }
  });
  app.decorate("registeredRoutes", routes);
  return routes;
}

/**
 * Refuses, from now on, any route registered on `app` (and the plugins it registers) without the
 * documentation of its operation: an `operationId`, tags and a success response on its `schema`.
 * The app then fails to start.
 */
export function requireDocumentation(app: FastifyInstance): void {
  app.addHook("onRoute", (route) => {
    if (methodsOf(route.method).every((method) => method === "HEAD")) return;
    const schema = route.schema;
    const success = Object.keys(schema?.response ?? {}).some((status) => status.startsWith("2"));
    if (!schema?.operationId || !schema.tags?.length || !success) {
      throw new Error(
        `${String(route.method)} ${route.url} is not documented: declare its operationId, tags and success response on its schema`,
      );
    }
  });
}

/** Fastify's `/v1/jobs/:id` as OpenAPI's `/v1/jobs/{id}`. */
export function toOpenApiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, "{$1}");
}

const SCHEMAS = "#/components/schemas/";

/** A `$ref` to the component a schema is named as in `docs`; a schema without a name throws. */
function componentRef(schema: z.ZodType): Json {
  const id = docs.get(schema)?.id;
  if (!id)
    throw new Error("a schema the document refers to by name has no id in the docs registry");
  return { $ref: `${SCHEMAS}${id}` };
}

const RATE_LIMIT_HEADERS: Record<string, HeaderDoc> = {
  "x-ratelimit-limit-requests": {
    type: "integer",
    description: "The key's requests per minute (sent when the key has a limit).",
  },
  "x-ratelimit-remaining-requests": {
    type: "integer",
    description: "Requests left before the limit applies.",
  },
  "x-ratelimit-reset-requests": {
    type: "string",
    description:
      "Until the limit is fully restored, as OpenAI writes it (`850ms`, `2.5s`, `1m0s`).",
  },
};

/** As OpenAPI's header objects, for `components.headers`. */
const headerObjects = (headers: Record<string, HeaderDoc>): Record<string, Json> =>
  Object.fromEntries(
    Object.entries(headers).map(([name, { description, ...schema }]) => [
      name,
      { description, schema },
    ]),
  );

const SECURITY: ReadonlyArray<Record<string, readonly string[]>> = [
  { bearerAuth: [] },
  { apiKeyHeader: [] },
];

const jsonContent = (schema: Json): Json => ({ "application/json": { schema } });

/** `components.responses`: the error responses, each answering `ErrorBody`. */
function errorResponses(): Record<string, Json> {
  return Object.fromEntries(
    Object.entries(ERROR_RESPONSES).map(([name, { status, description }]) => [
      name,
      {
        description,
        ...(status === "429"
          ? {
              headers: Object.fromEntries(
                ["RetryAfter", ...Object.keys(RATE_LIMIT_HEADERS)].map((header) => [
                  header === "RetryAfter" ? "retry-after" : header,
                  { $ref: `#/components/headers/${header}` },
                ]),
              ),
            }
          : {}),
        content: jsonContent({ $ref: `${SCHEMAS}ErrorBody` }),
      },
    ]),
  );
}

/** Where the route transform leaves an operation's errors for the document's last pass. */
const ERRORS = "x-handoff-errors";
const ERROR_BODY = "x-handoff-error-body";

/** A response as a route declares it: zod schemas by media type, headers. */
interface DeclaredResponse {
  headers?: Record<string, HeaderDoc>;
  content?: Record<string, Record<string, unknown>>;
}

/**
 * The route transform: `fastify-type-provider-zod`'s (zod schemas as JSON Schema, named ones as
 * `$ref`s), then what it leaves out: the response headers a route declares, the event schema of
 * its streams, and, with API keys, the security of protected routes and the rate-limit headers of
 * their answers. The route's errors are passed on to {@link finishDocument}.
 */
function documentRoute(auth: boolean): SwaggerTransform {
  const zodTransform = createJsonSchemaTransform({ schemaRegistry: docs, skipList: [] });
  return (input) => {
    // A route without a schema (none of the API's: `requireDocumentation`) has none to render.
    const { errors = [], errorBody, ...schema } = input.schema ?? {};
    const { schema: transformed, url } = zodTransform({ ...input, schema });
    const guarded = auth && !OPEN_ROUTES.has(input.url);
    const declared = (schema.response ?? {}) as Record<string, DeclaredResponse>;
    const responses = (transformed.response ?? {}) as Record<string, Json>;
    for (const [status, declaration] of Object.entries(declared)) {
      const response = responses[status];
      if (!response) continue;
      const headers = {
        ...declaration.headers,
        ...(guarded && status.startsWith("2") ? RATE_LIMIT_HEADERS : {}),
      };
      if (Object.keys(headers).length > 0) response.headers = headers;
      const content = response.content as Record<string, Json> | undefined;
      for (const [type, media] of Object.entries(declaration.content ?? {})) {
        const event = media[EVENT_DATA] as z.ZodType | undefined;
        const rendered = content?.[type];
        if (event && rendered) rendered[EVENT_DATA] = componentRef(event);
      }
    }
    const errorNames: ErrorResponse[] = [
      ...(guarded ? (["Unauthorized", "RateLimited"] as const) : []),
      ...errors,
      "ServerError",
    ];
    return {
      url,
      schema: {
        ...transformed,
        ...(guarded ? { security: SECURITY } : {}),
        [ERRORS]: errorNames,
        ...(errorBody ? { [ERROR_BODY]: componentRef(errorBody) } : {}),
      },
    };
  };
}

const METHODS = new Set(["get", "put", "post", "delete", "options", "head", "patch", "trace"]);

function operationsOf(doc: Json): Json[] {
  const paths = (doc.paths ?? {}) as Record<string, Record<string, Json>>;
  return Object.values(paths).flatMap((item) =>
    Object.entries(item)
      .filter(([method]) => METHODS.has(method))
      .map(([, operation]) => operation),
  );
}

/**
 * The document's last pass: the components `fastify-type-provider-zod` renders from the `docs`
 * registry, each operation's error responses (references to `components.responses`, or written
 * out with the route's own error body), and the components named as the wire calls them.
 */
function finishDocument(): SwaggerTransformObject {
  const zodComponents = createJsonSchemaTransformObject({ schemaRegistry: docs });
  return (input) => {
    const doc = zodComponents(input) as Json;
    const shared = errorResponses();
    for (const operation of operationsOf(doc)) {
      const errors = (operation[ERRORS] ?? []) as ErrorResponse[];
      const errorBody = operation[ERROR_BODY] as Json | undefined;
      delete operation[ERRORS];
      delete operation[ERROR_BODY];
      operation.responses = {
        ...(operation.responses as Json),
        ...Object.fromEntries(
          errors.map((name) => [
            ERROR_RESPONSES[name].status,
            errorBody && name !== "ServerError"
              ? { ...shared[name], content: jsonContent(errorBody) }
              : { $ref: `#/components/responses/${name}` },
          ]),
        ),
      };
    }
    nameComponents(doc);
    return doc;
  };
}

/** The component a `$ref` points into, if it points into `components.schemas`. */
function componentOf(ref: string): string | undefined {
  if (!ref.startsWith(SCHEMAS)) return undefined;
  const [name = ""] = ref.slice(SCHEMAS.length).split("/");
  return decodeURIComponent(name).replace(/~1/g, "/").replace(/~0/g, "~");
}

function forEachRef(value: unknown, visit: (holder: Json, ref: string) => void): void {
  if (Array.isArray(value)) {
    for (const item of value) forEachRef(item, visit);
    return;
  }
  if (value === null || typeof value !== "object") return;
  const holder = value as Json;
  for (const [key, child] of Object.entries(holder)) {
    if (key === "$ref" && typeof child === "string") visit(holder, child);
    else forEachRef(child, visit);
  }
}

/** The schema components the document uses: referenced from outside them, or from one in use. */
function usedComponents(doc: Json, schemas: Record<string, unknown>): Set<string> {
  const used = new Set<string>();
  const pending: string[] = [];
  const use = (_holder: Json, ref: string) => {
    const name = componentOf(ref);
    if (name === undefined || used.has(name)) return;
    used.add(name);
    pending.push(name);
  };
  forEachRef({ ...doc, components: { ...(doc.components as Json), schemas: {} } }, use);
  for (let name = pending.pop(); name !== undefined; name = pending.pop()) {
    forEachRef(schemas[name], use);
  }
  return used;
}

/**
 * `fastify-type-provider-zod` renders every named schema twice: as a response (`<id>`, what the
 * gateway writes) and as a request (`<id>Input`, what a client may send: defaults optional, no
 * closed objects). A schema only ever sent takes its plain name (`ChatCompletionRequest`), and the
 * renderings nothing uses are dropped.
 */
function nameComponents(doc: Json): void {
  const components = doc.components as Json;
  const schemas = components.schemas as Record<string, unknown>;
  const used = usedComponents(doc, schemas);
  // The registry's names, where fastify-type-provider-zod reads them too (zod has no other way).
  for (const id of docs._idmap.keys()) {
    const input = `${id}Input`;
    if (!used.has(input) || used.has(id)) continue;
    schemas[id] = schemas[input];
    delete schemas[input];
    forEachRef(doc, (holder, ref) => {
      if (componentOf(ref) === input)
        holder.$ref = `${SCHEMAS}${id}${ref.slice(SCHEMAS.length + input.length)}`;
    });
  }
  const kept = usedComponents(doc, schemas);
  components.schemas = Object.fromEntries(
    Object.entries(schemas).filter(([name]) => kept.has(name)),
  );
}

/** The `@fastify/swagger` options of the gateway's document. */
function swaggerOptions({ version, auth }: OpenApiOptions) {
  const openapi: Partial<OpenAPIV3_1.Document> = {
    openapi: "3.1.0",
    info: {
      title: "Handoff gateway",
      version,
      description:
        "OpenAI-compatible HTTP API of the Handoff mesh: a cheap model classifies each request, a mid model runs the tools, a heavy model only for the hard part." +
        (auth
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
    components: {
      responses: errorResponses() as OpenAPIV3_1.ComponentsObject["responses"],
      headers: headerObjects({
        RetryAfter: {
          type: "integer",
          minimum: 1,
          description: "Seconds to wait before the key (or the address) may send another request.",
        },
        ...RATE_LIMIT_HEADERS,
      }) as OpenAPIV3_1.ComponentsObject["headers"],
      ...(auth
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
  return {
    openapi,
    // OpenAPI 3.1 has `const`; the zod schemas' components keep it too.
    convertConstToEnum: false,
    transform: documentRoute(auth),
    transformObject: finishDocument(),
  };
}

const OpenApiDocument = z
  .looseObject({
    openapi: z.string(),
    info: z.record(z.string(), z.unknown()),
    paths: z.record(z.string(), z.unknown()),
  })
  .register(docs, { id: "OpenApiDocument", description: "This document." });

const ApiIndex = z
  .object({
    object: z.literal("handoff.api"),
    name: z.string(),
    version: z.string(),
    auth: z.enum(["none", "api_key"]),
    links: z.record(z.string(), z.string()),
  })
  .register(docs, {
    id: "ApiIndex",
    description: "Where things are: the OpenAPI document and the main routes.",
  });

/**
 * Registers the API: the routes `routes` registers, validated and serialized with their zod
 * schemas (where they do not say their handler does), and the OpenAPI document built from them,
 * served at `GET /openapi.json`, with `GET /`, a small index pointing at it. Both answer without an
 * API key (see `OPEN_ROUTES`): a client reads them to learn how to call the rest.
 */
export function registerApi(
  app: FastifyInstance,
  options: OpenApiOptions,
  routes: (api: FastifyInstance) => void,
): void {
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.register(fastifySwagger, swaggerOptions(options));
  // A plugin of its own, loaded after @fastify/swagger's, which documents the routes added after it.
  app.register(async (api) => {
    requireDocumentation(api);
    routes(api);
    registerDocumentRoutes(api, options);
    // Written once, at start: a route the document cannot describe fails the start, not a client.
    api.addHook("onReady", async () => {
      api.swagger();
    });
  });
}

function registerDocumentRoutes(app: FastifyInstance, options: OpenApiOptions): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  api.get(
    "/openapi.json",
    {
      schema: {
        operationId: "getOpenApiDocument",
        summary: "This OpenAPI document",
        tags: ["operations"],
        response: { 200: jsonResponse("The document.", OpenApiDocument) },
        errors: [],
      },
      ...writtenByHandler,
    },
    async () => app.swagger() as z.output<typeof OpenApiDocument>,
  );
  const index: z.output<typeof ApiIndex> = {
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
  api.get(
    "/",
    {
      schema: {
        operationId: "getApiIndex",
        summary: "An index of the API",
        tags: ["operations"],
        response: { 200: jsonResponse("The index.", ApiIndex) },
        errors: [],
      },
    },
    async () => index,
  );
}
