import { createServer, type Server } from "node:net";

/**
 * Asks the kernel for a currently unused TCP port on `host`.
 *
 * The port is released before this resolves, so another process can in principle grab it
 * before the caller binds; callers that spawn servers should be ready to retry. Two calls may
 * return the same port when nothing has bound the first yet: for several servers started
 * together, use {@link freePorts}.
 */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  const [port] = await freePorts(1, host);
  return port as number;
}

/**
 * `count` distinct unused TCP ports on `host`: each is held until all are known, so no two are
 * the same even when the servers that will bind them start together. As with {@link freePort},
 * they are released before this resolves.
 */
export async function freePorts(count: number, host = "127.0.0.1"): Promise<number[]> {
  if (!Number.isInteger(count) || count < 1) {
    throw new Error(`count must be an integer >= 1, got ${count}`);
  }
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const server = createServer();
      server.unref();
      servers.push(server);
      ports.push(await listenOnAnyPort(server, host));
    }
    return ports;
  } finally {
    await Promise.all(servers.map(close));
  }
}

/**
 * A currently unused TCP port on `host` that is not in `taken`, added to it before this resolves:
 * for servers started over time (a cluster's nodes, a service restarted while another is down),
 * where a port handed out earlier may not be bound yet, or no longer.
 */
export async function freePortNotIn(taken: Set<number>, host = "127.0.0.1"): Promise<number> {
  for (;;) {
    const port = await freePort(host);
    if (!taken.has(port)) {
      taken.add(port);
      return port;
    }
  }
}

function listenOnAnyPort(server: Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host, port: 0, exclusive: true }, () => {
      const address = server.address();
      if (address === null || typeof address === "string") {
        reject(new Error(`could not read the port bound on ${host}`));
        return;
      }
      resolve(address.port);
    });
  });
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
  });
}
