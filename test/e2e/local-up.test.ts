import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { SERVICE_NODE_OPTIONS } from "@handoff/nats-process";
import { freePort, type NatsHandle, startNats, waitFor } from "@handoff/testkit";
import { afterEach, describe, expect, it } from "vitest";

/**
 * `handoff up` as people run it: through `npm start`, stopped with a signal, it leaves no process
 * behind; a service that crashes is restarted, and one that keeps crashing stops the lot.
 * Linux only: the process tree is read from /proc.
 */

const root = fileURLToPath(new URL("../..", import.meta.url));
const cli = join(root, "cli", "dist", "main.js");
const run = promisify(execFile);

interface Proc {
  pid: number;
  ppid: number;
  state: string;
}

function readProc(pid: number): Proc | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    const [state = "", ppid = "0"] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { pid, ppid: Number(ppid), state };
  } catch {
    return undefined;
  }
}

/** Alive: exists and is not a zombie waiting for its parent to read its exit. */
function alive(pid: number): boolean {
  const proc = readProc(pid);
  return proc !== undefined && proc.state !== "Z";
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ").trim();
  } catch {
    return "";
  }
}

/** Every live descendant of `pid`. */
function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const proc = readProc(Number(name));
    if (!proc || proc.state === "Z") continue;
    children.set(proc.ppid, [...(children.get(proc.ppid) ?? []), proc.pid]);
  }
  const found: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const next = queue.shift() as number;
    for (const child of children.get(next) ?? []) {
      found.push(child);
      queue.push(child);
    }
  }
  return found;
}

/** The value of `name` in the environment `pid` was started with. */
function environ(pid: number, name: string): string | undefined {
  try {
    const vars = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
    return vars.find((v) => v.startsWith(`${name}=`))?.slice(name.length + 1);
  } catch {
    return undefined;
  }
}

function servicePid(tree: number[], name: string): number | undefined {
  return tree.find((pid) => cmdline(pid).includes(join("services", name, "dist", "main.js")));
}

interface Running {
  child: ChildProcess;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Every process seen under it, so none can slip away unnoticed. */
  seen: Set<number>;
  look(): number[];
}

const started: Array<{ running?: Running; nats?: NatsHandle; state?: string }> = [];

afterEach(async () => {
  for (const { running, nats, state } of started.splice(0)) {
    if (running) {
      for (const pid of [...running.seen, running.child.pid ?? -1]) {
        try {
          if (alive(pid)) process.kill(pid, "SIGKILL");
        } catch {
          // Gone already.
        }
      }
    }
    await nats?.stop();
    if (state) rmSync(state, { recursive: true, force: true });
  }
});

async function launch(
  command: string,
  args: string[],
  detached = false,
): Promise<Running & { natsUrl: string }> {
  const nats = await startNats();
  const state = mkdtempSync(join(tmpdir(), "handoff-up-"));
  const entry: { running?: Running; nats?: NatsHandle; state?: string } = { nats, state };
  started.push(entry);
  const port = await freePort();
  const child = spawn(command, args, {
    cwd: root,
    env: {
      ...process.env,
      NATS_URL: nats.url,
      PORT: String(port),
      HOST: "127.0.0.1",
      HANDOFF_STATE_DIR: state,
      HANDOFF_CONFIG: "",
    },
    stdio: ["ignore", "pipe", "pipe"],
    // Its own process group, as a shell gives a foreground job: a Ctrl-C signals the group.
    detached,
  });
  let output = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    output += chunk;
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    output += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  const seen = new Set<number>();
  const running: Running = {
    child,
    output: () => output,
    exited,
    seen,
    look() {
      const tree = descendants(child.pid ?? -1);
      for (const pid of tree) seen.add(pid);
      return tree;
    },
  };
  entry.running = running;
  await waitFor(
    () => {
      if (child.exitCode !== null) throw new Error(`exited early:\n${output}`);
      return output.includes("Handoff gateway ready at") || undefined;
    },
    { timeoutMs: 90_000, intervalMs: 100, what: `the mesh to start; output so far:\n${output}` },
  );
  running.look();
  return { ...running, natsUrl: nats.url };
}

async function allGone(running: Running, timeoutMs = 40_000): Promise<void> {
  await waitFor(() => [...running.seen].every((pid) => !alive(pid)) || undefined, {
    timeoutMs,
    intervalMs: 200,
    what: "every process the runner started to exit",
  }).catch((error: Error) => {
    const left = [...running.seen].filter(alive).map((pid) => `${pid} ${cmdline(pid)}`);
    throw new Error(`${error.message}; still running:\n${left.join("\n")}\n${running.output()}`);
  });
}

describe("handoff up", () => {
  // npm runs the script as `sh -c "<script>"` and hands SIGINT and SIGTERM to that shell. dash
  // (Debian's sh) dies of a SIGTERM without passing it on: `handoff up` then sees its parent go and
  // stops. It ignores a SIGINT while its child runs: only `exec` in the script (the shell becomes
  // the runner) lets that one through, so that case runs when package.json's start script has it.
  const startScript: string = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).scripts
    .start;
  const cases = [
    { how: "SIGTERM to npm (kill <pid>)", detached: false, group: false, signal: "SIGTERM" },
    {
      how: "Ctrl-C (SIGINT to npm's process group)",
      detached: true,
      group: true,
      signal: "SIGINT",
    },
    { how: "SIGINT to npm alone", detached: false, group: false, signal: "SIGINT" },
  ] as const;
  for (const { how, detached, group, signal } of cases) {
    const needsExec = signal === "SIGINT" && !group;
    it.runIf(!needsExec || startScript.startsWith("exec "))(
      `npm start, stopped by ${how}, leaves no process behind`,
      async () => {
        const up = await launch("npm", ["start"], detached);
        const tree = up.look();
        for (const name of ["gateway", "classifier", "tool-executor", "heavy-reasoner"]) {
          const pid = servicePid(tree, name);
          expect(pid, `${name} under npm start`).toBeDefined();
          // Started with the heap limits every launcher gives the services.
          expect(environ(pid as number, "NODE_OPTIONS"), name).toContain(SERVICE_NODE_OPTIONS);
        }
        expect(tree.some((pid) => cmdline(pid).endsWith("cli/dist/main.js up"))).toBe(true);

        if (group) process.kill(-(up.child.pid as number), signal);
        else up.child.kill(signal);
        await up.exited;
        await allGone(up);
        expect(up.output()).toMatch(/stopping\.\.\./);
      },
    );
  }

  it("restarts a crashed service, and after five crashes in a minute stops everything and exits 1 naming it", async () => {
    const up = await launch(process.execPath, [cli, "up"]);

    // status sees the whole mesh through $SRV and the stage consumers.
    const env = { ...process.env, NATS_URL: up.natsUrl, HANDOFF_CONFIG: "" };
    const { stdout } = await run(process.execPath, [cli, "status", "--json"], { env });
    const report = JSON.parse(stdout);
    expect(report.instances.map((i: { name: string }) => i.name).sort()).toEqual([
      "classifier",
      "gateway",
      "heavy-reasoner",
      "tool-executor",
    ]);
    expect(report.stages.map((s: { consumer: boolean }) => s.consumer)).toEqual([true, true, true]);

    let victim = servicePid(up.look(), "classifier") as number;
    expect(victim).toBeDefined();
    for (let attempt = 1; attempt <= 4; attempt++) {
      process.kill(victim, "SIGKILL");
      await waitFor(
        () =>
          up.output().includes(`restarting classifier (signal SIGKILL), attempt ${attempt}`) ||
          undefined,
        { timeoutMs: 10_000, what: `restart line ${attempt}; output:\n${up.output()}` },
      );
      const previous = victim;
      victim = await waitFor(
        () => {
          const pid = servicePid(up.look(), "classifier");
          return pid !== undefined && pid !== previous ? pid : undefined;
        },
        { timeoutMs: 20_000, intervalMs: 50, what: `classifier restart ${attempt}` },
      );
      if (attempt === 1) {
        // A real restart: the new process serves again.
        await waitFor(
          async () => {
            const again = await run(process.execPath, [cli, "status", "--json"], { env });
            const names = JSON.parse(again.stdout).instances.map((i: { name: string }) => i.name);
            return names.includes("classifier") || undefined;
          },
          { timeoutMs: 30_000, intervalMs: 500, what: "the restarted classifier to answer $SRV" },
        );
      }
      expect(up.child.exitCode).toBeNull();
    }
    process.kill(victim, "SIGKILL");
    const exit = await up.exited;
    expect(exit.code).toBe(1);
    expect(up.output()).toMatch(
      /classifier crashed 5 times within 60s \(last: signal SIGKILL\); giving up; see \S+classifier\.log/,
    );
    expect(up.output()).toContain("stopped every service.");
    await allGone(up);
  });
});
