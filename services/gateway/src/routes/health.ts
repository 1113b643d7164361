import type { FastifyInstance } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import { docs, jsonResponse } from "../route-schema.js";

const Status = z
  .object({ status: z.enum(["ok", "ready", "not ready"]) })
  .register(docs, { id: "Status" });

/** `/healthz`: the process answers. `/readyz`: NATS is connected and the streams are in place. */
export function registerHealth(app: FastifyInstance, ready: () => boolean): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  api.get(
    "/healthz",
    {
      schema: {
        operationId: "health",
        summary: "Liveness: the process answers",
        tags: ["operations"],
        response: { 200: jsonResponse("Alive.", Status) },
        errors: [],
      },
    },
    async () => ({ status: "ok" as const }),
  );
  api.get(
    "/readyz",
    {
      schema: {
        operationId: "ready",
        summary: "Readiness: NATS is connected and the streams are in place",
        tags: ["operations"],
        response: { 200: jsonResponse("Ready.", Status), 503: jsonResponse("Not ready.", Status) },
        errors: [],
      },
    },
    async (_request, reply) => {
      const ok = ready();
      return reply.status(ok ? 200 : 503).send({ status: ok ? "ready" : "not ready" });
    },
  );
}
