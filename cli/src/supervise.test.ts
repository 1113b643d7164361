import { type ChildProcess, spawn } from "node:child_process";
import { afterEach, describe, expect, it } from "vitest";
import { describeExit, type RestartPolicy, Supervisor } from "./supervise.js";

const fast: RestartPolicy = { maxCrashes: 3, windowMs: 60_000, backoffMs: () => 100 };
const supervisors: Supervisor[] = [];

afterEach(async () => {
  await Promise.all(supervisors.splice(0).map((s) => s.stop(2_000)));
});

function node(script: string, detached = false): ChildProcess {
  return spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "ignore"], detached });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function supervisor(policy: RestartPolicy, lines: string[], now?: () => number): Supervisor {
  const s = new Supervisor({ policy, say: (line) => lines.push(line), ...(now ? { now } : {}) });
  supervisors.push(s);
  return s;
}

describe("Supervisor", () => {
  it("restarts a process that crashes, says so, and gives up naming it after maxCrashes in the window", async () => {
    const lines: string[] = [];
    const s = supervisor(fast, lines);
    let starts = 0;
    s.arm();
    s.add("crashy", () => {
      starts++;
      return node("process.exit(3)");
    });
    const reason = await s.failure;
    expect(reason.service).toBe("crashy");
    expect(reason.crashes).toBe(3);
    expect(reason.exit).toEqual({ code: 3, signal: null });
    expect(reason.message).toBe("crashy crashed 3 times within 60s (last: exit code 3); giving up");
    expect(starts).toBe(3);
    expect(lines).toEqual([
      "restarting crashy (exit code 3), attempt 1 in 0.1s",
      "restarting crashy (exit code 3), attempt 2 in 0.1s",
    ]);
  });

  it("waits the policy's backoff before each restart", async () => {
    const lines: string[] = [];
    const waits: number[] = [];
    const s = supervisor(
      {
        maxCrashes: 3,
        windowMs: 60_000,
        backoffMs: (attempt) => {
          waits.push(attempt);
          return 300 * attempt;
        },
      },
      lines,
    );
    const startedAt: number[] = [];
    s.arm();
    s.add("slow", () => {
      startedAt.push(Date.now());
      return node("process.exit(1)");
    });
    await s.failure;
    expect(waits).toEqual([1, 2]);
    const [first = 0, second = 0, third = 0] = startedAt;
    expect(second - first).toBeGreaterThanOrEqual(300);
    expect(third - second).toBeGreaterThanOrEqual(600);
  });

  it("counts only the crashes within the window", async () => {
    const lines: string[] = [];
    let clock = 0;
    // Every crash is a minute after the last one: none shares the window with another.
    const s = supervisor(fast, lines, () => {
      clock += 61_000;
      return clock;
    });
    let starts = 0;
    s.arm();
    s.add("flaky", () => {
      starts++;
      return node("process.exit(2)");
    });
    await until(() => starts >= 5);
    expect(s.failed).toBeUndefined();
    expect(lines.slice(0, 4)).toEqual(
      Array(4).fill("restarting flaky (exit code 2), attempt 1 in 0.1s"),
    );
  });

  it("before arm(), a crash fails at once: the mesh never came up", async () => {
    const lines: string[] = [];
    const s = supervisor(fast, lines);
    let starts = 0;
    s.add("broken", () => {
      starts++;
      return node("process.exit(1)");
    });
    const reason = await s.failure;
    expect(reason).toMatchObject({ service: "broken", duringStart: true, crashes: 1 });
    expect(reason.message).toBe("broken exited during start-up (exit code 1)");
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(starts).toBe(1);
    expect(lines).toEqual([]);
  });

  it("says which signal killed a process, and restarts it", async () => {
    const lines: string[] = [];
    const s = supervisor(fast, lines);
    s.arm();
    const first = s.add("victim", () => node("setInterval(() => {}, 1000)"));
    first.kill("SIGKILL");
    await until(
      () => s.children().get("victim") !== first && s.children().get("victim")?.pid !== undefined,
    );
    expect(lines).toEqual(["restarting victim (signal SIGKILL), attempt 1 in 0.1s"]);
    expect(alive(s.children().get("victim")?.pid ?? -1)).toBe(true);
  });

  it("stop() ends each process with its whole process group and cancels pending restarts", async () => {
    const s = supervisor(fast, []);
    s.arm();
    // A detached child (its own group) that starts a grandchild and prints its pid.
    const parent = s.add("parent", () =>
      node(
        `const c = require("node:child_process").spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
         console.log(c.pid); setInterval(() => {}, 1000);`,
        true,
      ),
    );
    const grandchild = await new Promise<number>((resolve) =>
      parent.stdout?.once("data", (chunk: Buffer) => resolve(Number(chunk.toString().trim()))),
    );
    expect(alive(grandchild)).toBe(true);
    let restarts = 0;
    s.add("crashing", () => {
      restarts++;
      return node("process.exit(1)");
    });
    await s.stop(2_000);
    expect(parent.exitCode !== null || parent.signalCode !== null).toBe(true);
    await until(() => !alive(grandchild), 5_000);
    const after = restarts;
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(restarts).toBe(after);
    expect(s.failed).toBeUndefined();
  });

  it("describes exits", () => {
    expect(describeExit({ code: 1, signal: null })).toBe("exit code 1");
    expect(describeExit({ code: null, signal: "SIGTERM" })).toBe("signal SIGTERM");
  });
});
