import { HandoffConfig, simProfile } from "@handoff/config";
import { ErrorBody } from "@handoff/contracts";
import type { JobClient } from "@handoff/mesh";
import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { buildApp } from "../app.js";

const config = HandoffConfig.parse({
  ...simProfile,
  gateway: { model_aliases: { "gpt-4o-mini": "handoff/light", "claude-x": "sim:sim-heavy" } },
});

let app: FastifyInstance | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
});

function appWith(cfg: HandoffConfig = config): FastifyInstance {
  // Nothing here submits a job.
  app = buildApp({
    jobs: {} as JobClient,
    config: cfg,
    logger: pino({ level: "silent" }),
    ready: () => true,
  });
  return app;
}

describe("GET /v1/models", () => {
  it("lists the routed names, the deployments and the aliases, each alias with what it stands for", async () => {
    const res = await appWith().inject({ method: "GET", url: "/v1/models" });
    expect(res.statusCode).toBe(200);
    const { object, data } = res.json() as { object: string; data: Array<Record<string, unknown>> };
    expect(object).toBe("list");
    expect(data.map((m) => m.id)).toEqual([
      "handoff",
      "handoff/light",
      "handoff/mid",
      "handoff/heavy",
      "sim:sim-light",
      "sim:sim-mid",
      "sim:sim-heavy",
      "gpt-4o-mini",
      "claude-x",
    ]);
    expect(data.find((m) => m.id === "gpt-4o-mini")).toMatchObject({
      object: "model",
      owned_by: "handoff",
      handoff: { alias_of: "handoff/light", route: "pinned", tier: "light" },
    });
    expect(data.find((m) => m.id === "claude-x")).toMatchObject({
      handoff: { alias_of: "sim:sim-heavy", tier: "heavy", provider: "sim", model: "sim-heavy" },
    });
  });
});

describe("GET /v1/models/:id", () => {
  it("answers the model object of a served id, an encoded pinned name and an alias", async () => {
    const server = appWith();
    const list = (await server.inject({ method: "GET", url: "/v1/models" })).json() as {
      data: unknown[];
    };
    for (const [url, id] of [
      ["/v1/models/handoff", "handoff"],
      ["/v1/models/handoff%2Fheavy", "handoff/heavy"],
      ["/v1/models/sim:sim-mid", "sim:sim-mid"],
      ["/v1/models/gpt-4o-mini", "gpt-4o-mini"],
    ] as const) {
      const res = await server.inject({ method: "GET", url });
      expect(res.statusCode, url).toBe(200);
      // The same object the list has.
      expect(res.json(), url).toEqual(list.data.find((m) => (m as { id: string }).id === id));
    }
  });

  it("is a 404 in OpenAI's shape, code model_not_found and param model, for any other id", async () => {
    const res = await appWith().inject({ method: "GET", url: "/v1/models/gpt-5-turbo" });
    expect(res.statusCode).toBe(404);
    const { error } = ErrorBody.parse(res.json());
    expect(error).toMatchObject({
      type: "invalid_request_error",
      code: "model_not_found",
      param: "model",
    });
    expect(error.message).toContain("`gpt-5-turbo` does not exist");
    // Not an alias of the prototype's.
    const proto = await appWith().inject({ method: "GET", url: "/v1/models/constructor" });
    expect(proto.statusCode).toBe(404);
  });
});
