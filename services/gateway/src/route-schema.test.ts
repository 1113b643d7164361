import { ErrorBody } from "@handoff/contracts";
import Fastify, { type FastifyInstance } from "fastify";
import { afterEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { errorHandler, openAiError } from "./errors.js";
import { registerApi } from "./openapi.js";
import { jsonResponse, parsedByHandler, writtenByHandler } from "./route-schema.js";

const Thing = z.object({ n: z.number().int(), name: z.string() });

let app: FastifyInstance | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
});

/** An app with the gateway's compilers and error handler, and one route on `options`. */
function appWith(options: object): FastifyInstance {
  app = Fastify();
  app.setErrorHandler(errorHandler(1_000_000, openAiError));
  registerApi(app, { version: "1", auth: false }, (api) => {
    api.post(
      "/things",
      {
        schema: {
          operationId: "createThing",
          tags: ["operations"],
          body: Thing,
          response: { 200: jsonResponse("The thing.", Thing) },
        },
        ...options,
      },
      async (request) => ({ ...(request.body as object), extra: true }),
    );
  });
  return app;
}

describe("a route's schemas", () => {
  it("validate its input, a failure answering as every validation of the gateway does", async () => {
    const res = await appWith({}).inject({
      method: "POST",
      url: "/things",
      payload: { n: 1.5, name: 2 },
    });
    expect(res.statusCode).toBe(400);
    const { error } = ErrorBody.parse(res.json());
    expect(error).toMatchObject({
      code: "HANDOFF_ERR_VALIDATION",
      param: "n",
      total_issues: 2,
    });
    expect(error.message).toMatch(/^request body is invalid: n: .*; name: /);
    expect(error.issues?.map((issue) => issue.path)).toEqual(["n", "name"]);
  });

  it("serialize its answers, keeping only what they name", async () => {
    const res = await appWith({}).inject({
      method: "POST",
      url: "/things",
      payload: { n: 1, name: "a" },
    });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ n: 1, name: "a" });
  });

  it("only document a route whose handler reads its input and writes its answers", async () => {
    const target = appWith({ ...parsedByHandler, ...writtenByHandler });
    const res = await target.inject({ method: "POST", url: "/things", payload: { n: 1.5 } });
    expect(res.statusCode).toBe(200);
    // The body as sent, and the answer as written: nothing validated, nothing stripped.
    expect(res.json()).toEqual({ n: 1.5, extra: true });
    const doc = target.swagger() as { paths: Record<string, Record<string, unknown>> };
    expect(doc.paths["/things"]?.post).toMatchObject({
      operationId: "createThing",
      requestBody: { content: { "application/json": { schema: { type: "object" } } } },
    });
  });
});
