import { createServer, type Server, type Socket } from "node:net";

/** A TCP server that greets like nats-server of `version` and answers PING: enough for a client to connect. */
export interface FakeNatsServer {
  url: string;
  /** Connections open now. */
  connections(): number;
  /** Connections that have closed (the client gave up on this server). */
  closedByClient(): number;
  close(): Promise<void>;
}

/**
 * Starts a fake NATS server on a free loopback port that reports `version` in its INFO, for tests
 * of what a client does with a server too old for it. It speaks no more than INFO and PONG.
 */
export async function fakeNatsServer(version: string): Promise<FakeNatsServer> {
  const sockets = new Set<Socket>();
  let closed = 0;
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => {
      sockets.delete(socket);
      closed++;
    });
    socket.on("error", () => {});
    const { port } = server.address() as { port: number };
    const info = {
      server_id: "FAKE",
      server_name: "fake",
      version,
      proto: 1,
      host: "127.0.0.1",
      port,
      headers: true,
      max_payload: 1_048_576,
    };
    socket.write(`INFO ${JSON.stringify(info)}\r\n`);
    socket.on("data", (data) => {
      for (const line of String(data).split("\r\n")) if (line === "PING") socket.write("PONG\r\n");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `nats://127.0.0.1:${port}`,
    connections: () => sockets.size,
    closedByClient: () => closed,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
