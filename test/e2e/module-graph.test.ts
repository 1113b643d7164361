import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { ServiceNames } from "@handoff/contracts";
import { describe, expect, it } from "vitest";
import { entry, type ServiceName } from "./harness.js";

/**
 * What each service loads at start. A service that only routes or answers has no use for the MCP
 * SDK (only the tool-executor talks to MCP servers): loading it cost the classifier, which reached
 * it through the routing library's calculator, about 200 modules, 5 MB of heap after GC and 11 MB
 * of RSS before its first job.
 */

const run = promisify(execFile);

/**
 * Imports a service's entry point with a resolve hook that records every module it loads, then
 * prints them and exits: the static imports are all resolved by the time `import()` returns.
 */
const RECORDER = `
import { registerHooks } from "node:module";
const loaded = new Set();
registerHooks({
  resolve(specifier, context, next) {
    const resolved = next(specifier, context);
    loaded.add(resolved.url);
    return resolved;
  },
});
await import(process.argv[1]);
process.stdout.write(JSON.stringify([...loaded]));
process.exit(0);
`;

async function modulesOf(name: ServiceName): Promise<string[]> {
  const { stdout } = await run(
    process.execPath,
    ["--input-type=module", "--eval", RECORDER, entry(name)],
    {
      // Nowhere to connect: the service is only loaded, never started.
      env: { ...process.env, NATS_URL: "nats://127.0.0.1:1", LOG_LEVEL: "silent" },
      timeout: 30_000,
    },
  );
  return JSON.parse(stdout) as string[];
}

const mcp = (urls: readonly string[]) =>
  urls.filter((url) => url.includes("@modelcontextprotocol"));

describe("what each service loads", () => {
  it("only the tool-executor loads the MCP SDK", async () => {
    const graphs = await Promise.all(
      ServiceNames.map(async (name) => [name, await modulesOf(name)] as const),
    );
    for (const [name, urls] of graphs) {
      // The recorder saw the service's own modules, so an empty MCP list means something.
      expect(urls.some((url) => url.includes(`/services/${name}/dist/`))).toBe(true);
      if (name === "tool-executor") expect(mcp(urls).length).toBeGreaterThan(0);
      else expect(mcp(urls), `${name} loads the MCP SDK`).toEqual([]);
    }
  });
});
