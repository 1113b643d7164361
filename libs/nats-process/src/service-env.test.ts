import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { SERVICE_SEMI_SPACE_MB, serviceEnv } from "./service-env.js";

describe("serviceEnv", () => {
  it("adds the young-generation cap to NODE_OPTIONS, keeping what was there", () => {
    expect(serviceEnv({ PATH: "/bin" })).toEqual({
      PATH: "/bin",
      NODE_OPTIONS: "--max-semi-space-size=16",
    });
    expect(serviceEnv({ NODE_OPTIONS: " --enable-source-maps " }).NODE_OPTIONS).toBe(
      "--enable-source-maps --max-semi-space-size=16",
    );
  });

  it("leaves an operator's own semi-space size alone", () => {
    for (const options of ["--max-semi-space-size=64", "--inspect --max-semi-space-size 32"]) {
      expect(serviceEnv({ NODE_OPTIONS: options }).NODE_OPTIONS).toBe(options);
    }
    // A flag that only starts the same way is not a semi-space size.
    expect(serviceEnv({ NODE_OPTIONS: "--max-semi-space-size-x" }).NODE_OPTIONS).toBe(
      "--max-semi-space-size-x --max-semi-space-size=16",
    );
  });

  it("is a cap node accepts and V8 applies", () => {
    // Allocates quickly enough for V8 to grow its young generation as far as it may: 134 MB on
    // a machine with a lot of memory, without the cap.
    const script = [
      "const v8 = require('node:v8');",
      "const a = [];",
      "for (let i = 0; i < 2e6; i++) a.push({ i });",
      "a.length = 0;",
      "for (let i = 0; i < 3e6; i++) a.push([i]);",
      "const young = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');",
      "console.log(young.space_size);",
    ].join(" ");
    const env = serviceEnv({ PATH: process.env.PATH });
    const young = Number(execFileSync(process.execPath, ["-e", script], { env, encoding: "utf8" }));
    expect(young).toBeGreaterThan(0);
    // Two semi-spaces at most: never more than twice the cap.
    expect(young).toBeLessThanOrEqual(2 * SERVICE_SEMI_SPACE_MB * 1024 * 1024);
  });
});
