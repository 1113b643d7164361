import type { FastifyInstance } from "fastify";

/** `/healthz`: the process answers. `/readyz`: NATS is connected and the streams are in place. */
export function registerHealth(app: FastifyInstance, ready: () => boolean): void {
  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/readyz", async (_request, reply) => {
    const ok = ready();
    return reply.status(ok ? 200 : 503).send({ status: ok ? "ready" : "not ready" });
  });
}
