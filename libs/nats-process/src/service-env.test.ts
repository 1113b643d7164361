import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import {
  SERVICE_NODE_OPTIONS,
  SERVICE_OLD_SPACE_MB,
  SERVICE_SEMI_SPACE_MB,
  serviceEnv,
} from "./service-env.js";

const run = (script: string, env: NodeJS.ProcessEnv) =>
  execFileSync(process.execPath, ["-e", script], { env, encoding: "utf8" }).trim();

describe("serviceEnv", () => {
  it("adds the young- and old-generation limits to NODE_OPTIONS, keeping what was there", () => {
    expect(SERVICE_NODE_OPTIONS).toBe("--max-semi-space-size=8 --max-old-space-size=1024");
    expect(serviceEnv({ PATH: "/bin" })).toEqual({
      PATH: "/bin",
      NODE_OPTIONS: SERVICE_NODE_OPTIONS,
    });
    expect(serviceEnv({ NODE_OPTIONS: " --enable-source-maps " }).NODE_OPTIONS).toBe(
      `--enable-source-maps ${SERVICE_NODE_OPTIONS}`,
    );
  });

  it("leaves an operator's own sizes alone, each on its own", () => {
    for (const options of [
      "--max-semi-space-size=64 --max-old-space-size=4096",
      "--inspect --max-semi-space-size 32 --max-old-space-size-percentage=50",
    ]) {
      expect(serviceEnv({ NODE_OPTIONS: options }).NODE_OPTIONS).toBe(options);
    }
    expect(serviceEnv({ NODE_OPTIONS: "--max-semi-space-size=64" }).NODE_OPTIONS).toBe(
      "--max-semi-space-size=64 --max-old-space-size=1024",
    );
    expect(serviceEnv({ NODE_OPTIONS: "--max-old-space-size=300" }).NODE_OPTIONS).toBe(
      "--max-old-space-size=300 --max-semi-space-size=8",
    );
    // A flag that only starts the same way names neither size.
    expect(
      serviceEnv({ NODE_OPTIONS: "--max-semi-space-size-x --max-old-space-size-y" }).NODE_OPTIONS,
    ).toBe(`--max-semi-space-size-x --max-old-space-size-y ${SERVICE_NODE_OPTIONS}`);
  });

  it("gives limits node accepts and V8 applies", () => {
    // Allocates quickly enough for V8 to grow its young generation as far as it may: 134 MB on
    // a machine with a lot of memory, without the cap.
    const script = [
      "const v8 = require('node:v8');",
      "const a = [];",
      "for (let i = 0; i < 2e6; i++) a.push({ i });",
      "a.length = 0;",
      "for (let i = 0; i < 3e6; i++) a.push([i]);",
      "const young = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');",
      "console.log(JSON.stringify([young.space_size, v8.getHeapStatistics().heap_size_limit]));",
    ].join(" ");
    const [young, limit] = JSON.parse(run(script, serviceEnv({ PATH: process.env.PATH }))) as [
      number,
      number,
    ];
    expect(young).toBeGreaterThan(0);
    // Two semi-spaces at most: never more than twice the cap.
    expect(young).toBeLessThanOrEqual(2 * SERVICE_SEMI_SPACE_MB * 1024 * 1024);
    // The whole heap's limit: the old generation's and the young generation's.
    expect(limit / 1024 / 1024).toBeGreaterThanOrEqual(SERVICE_OLD_SPACE_MB);
    expect(limit / 1024 / 1024).toBeLessThan(SERVICE_OLD_SPACE_MB + 64);
  });

  it("keeps the old generation smaller under garbage that outlives the young generation", () => {
    // In-flight state that survives two scavenges and then dies, as a request's does under load:
    // a window of 2,000 objects of about 3 kB, replaced one at a time. V8's peak old-space size
    // is deterministic for a given V8 and flags (37 MB with the semi-space cap alone, 24 MB with
    // both on Node 24).
    const script = [
      "const v8 = require('node:v8');",
      "const window = new Array(2000);",
      "let peak = 0;",
      "for (let i = 0; i < 200000; i++) {",
      "  window[i % 2000] = { id: i, body: 'x'.repeat(64) + i,",
      "    parts: Array.from({ length: 40 }, (_, k) => ({ k, v: i + k })) };",
      "  if (i % 1000 === 0) {",
      "    const old = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'old_space');",
      "    peak = Math.max(peak, old.space_size);",
      "  }",
      "}",
      "console.log(peak);",
    ].join("\n");
    const peak = (options: string) =>
      Number(run(script, { PATH: process.env.PATH, NODE_OPTIONS: options }));
    const withBoth = peak(serviceEnv({}).NODE_OPTIONS as string);
    const youngOnly = peak(`--max-semi-space-size=${SERVICE_SEMI_SPACE_MB}`);
    expect(withBoth).toBeLessThan(youngOnly * 0.8);
  });
});
