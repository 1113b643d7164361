import { createServer } from "node:net";

/**
 * Asks the kernel for a currently unused TCP port on `host`.
 *
 * The port is released before this resolves, so another process can in principle grab it
 * before the caller binds; callers that spawn servers should be ready to retry.
 */
export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen({ host, port: 0, exclusive: true }, () => {
      const address = server.address();
      if (address === null || typeof address === "string") {
        server.close();
        reject(new Error(`could not read the port bound on ${host}`));
        return;
      }
      const { port } = address;
      server.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}
