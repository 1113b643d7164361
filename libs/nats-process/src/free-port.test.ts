import { createServer } from "node:net";
import { describe, expect, it } from "vitest";
import { freePort, freePortNotIn, freePorts } from "./free-port.js";

function bind(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port, exclusive: true }, () =>
      server.close(() => resolve()),
    );
  });
}

describe("freePorts", () => {
  it("returns distinct ports, each free to bind afterwards", async () => {
    // Taken one by one and released in between, 300 ports from the kernel's ephemeral range
    // repeat one with a probability of about 0.96; held together they cannot.
    const ports = await freePorts(300);
    expect(ports).toHaveLength(300);
    expect(new Set(ports).size).toBe(300);
    for (const port of ports.slice(0, 20)) await bind(port);
  });

  it("names a count that is not a positive integer", async () => {
    await expect(freePorts(0)).rejects.toThrow("count must be an integer >= 1, got 0");
    await expect(freePorts(1.5)).rejects.toThrow("got 1.5");
  });

  it("freePortNotIn never returns a port it was told is taken, and records each one", async () => {
    // Each port is released before the next call, as when servers start one after another: the
    // kernel hands some out again (5 to 8 in 300 here), and the set is what keeps them apart.
    const taken = new Set<number>();
    const ports: number[] = [];
    for (let i = 0; i < 300; i++) ports.push(await freePortNotIn(taken));
    expect(new Set(ports).size).toBe(300);
    expect([...taken].sort()).toEqual([...ports].sort());
  });

  it("freePort returns one port that can be bound", async () => {
    await bind(await freePort());
  });
});
