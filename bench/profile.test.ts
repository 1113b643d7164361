import { describe, expect, it } from "vitest";
import { packageOf, processOf, selfTimes } from "./profile.ts";

const frame = (id: number, functionName: string, url: string, children: number[] = []) => ({
  id,
  callFrame: { functionName, url, lineNumber: 9 },
  children,
});

describe("profile summary", () => {
  it("names what a frame belongs to", () => {
    expect(packageOf("file:///x/libs/mesh/dist/runner.js", "f")).toBe("@handoff/mesh");
    expect(packageOf("file:///x/services/gateway/dist/app.js", "f")).toBe("@handoff/gateway");
    expect(packageOf("file:///x/node_modules/@nats-io/nats-core/lib/errors.js", "f")).toBe(
      "@nats-io/nats-core",
    );
    expect(packageOf("file:///x/node_modules/zod/v4/core/schemas.js", "f")).toBe("zod");
    expect(packageOf("node:internal/encoding", "encode")).toBe("node internals");
    expect(packageOf("", "(garbage collector)")).toBe("V8: garbage collection");
  });

  it("adds up self time per package and function, leaving idle out, and names the process", () => {
    const profile = {
      nodes: [
        frame(1, "(root)", "", [2, 3, 4]),
        frame(2, "(idle)", ""),
        frame(3, "handle", "file:///x/services/classifier/dist/service.js"),
        frame(4, "parse", "file:///x/node_modules/zod/v4/core/schemas.js"),
      ],
      samples: [2, 3, 3, 4, 2],
      timeDeltas: [1000, 2000, 3000, 4000, 5000],
      startTime: 0,
      endTime: 15_000,
    };
    const { busy, packages, functions } = selfTimes(profile);
    expect(busy).toBe(9);
    expect(packages).toEqual([
      ["@handoff/classifier", 5],
      ["zod", 4],
    ]);
    expect(functions[0]).toEqual(["handle (@handoff/classifier service.js:10)", 5]);
    expect(processOf(profile)).toBe("classifier");
  });
});
