import { createServer, type Server } from "node:http";

export interface HealthChecks {
  /** Alive: the process serves requests at all. */
  live: () => boolean;
  /** Ready: connected to NATS with the topology in place. */
  ready: () => boolean;
}

/**
 * A tiny `/healthz` + `/readyz` HTTP server for worker services (they have no HTTP API of their
 * own), for Kubernetes probes and compose health checks. Off unless `HEALTH_PORT` is set.
 */
export async function startHealthServer(
  port: number,
  checks: HealthChecks,
  host = "0.0.0.0",
): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const ok =
      path === "/healthz" ? checks.live() : path === "/readyz" ? checks.ready() : undefined;
    if (ok === undefined) {
      res.writeHead(404, { "content-type": "application/json" }).end('{"error":"not found"}');
      return;
    }
    res
      .writeHead(ok ? 200 : 503, { "content-type": "application/json" })
      .end(JSON.stringify({ status: ok ? "ok" : "unavailable" }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, resolve);
  });
  return server;
}
