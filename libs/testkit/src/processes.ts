import { spawn } from "node:child_process";
import { killHard, onProcessExit, serviceEnv } from "@handoff/nats-process";

/** How a process ended: an exit code, or the signal that killed it. */
export interface ProcessExit {
  code: number | null;
  signal: string | null;
}

/** A service running as its own OS process, with its output captured. */
export interface ServiceProcess {
  name: string;
  /** OS process id, or -1 if the process could not be spawned. */
  pid: number;
  /** stdout lines that parsed as JSON objects (pino records), in order. */
  logs(): Array<Record<string, unknown>>;
  /** Everything written to stdout and stderr, interleaved as it arrived. */
  output(): string;
  /**
   * Resolves with the first log record (already received or future) matching `predicate`.
   * Rejects on timeout (default 10 s) or when the process exits first, quoting the last 40
   * lines of output.
   */
  waitForLog(
    predicate: (line: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  /** SIGTERM, then SIGKILL if it has not exited after `timeoutMs` (default 10 s). */
  stop(timeoutMs?: number): Promise<ProcessExit>;
  /** SIGKILL and wait for the exit. */
  kill(): Promise<void>;
  /** Settles when the process has exited and its output has been read. */
  exited: Promise<ProcessExit>;
}

/** Options for {@link spawnService}. */
export interface SpawnServiceOptions {
  /** Label used in error messages. */
  name: string;
  /** Absolute path of the JavaScript entry point. */
  entry: string;
  /** Merged over `process.env`; an `undefined` value removes the variable. */
  env?: Record<string, string | undefined>;
  cwd?: string;
}

const TAIL_LINES = 40;
const OUTPUT_LIMIT = 1024 * 1024;

/**
 * Runs `node <entry>` as a separate process, the way services run in production, so tests
 * exercise real startup, signal handling and shutdown. The child is SIGKILLed if the test
 * process exits first.
 */
export function spawnService(options: SpawnServiceOptions): ServiceProcess {
  const env: Record<string, string> = {};
  // With the heap limits services get wherever they are started (`serviceEnv`).
  for (const [key, value] of Object.entries(serviceEnv({ ...process.env, ...options.env }))) {
    if (value !== undefined) env[key] = value;
  }
  const child = spawn(process.execPath, [options.entry], {
    cwd: options.cwd,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });

  let output = "";
  const records: Array<Record<string, unknown>> = [];
  const listeners = new Set<(record: Record<string, unknown>) => void>();
  const append = (text: string) => {
    output += text;
    // Long-running services can be chatty; the head is the least useful part to keep.
    if (output.length > OUTPUT_LIMIT) output = output.slice(-OUTPUT_LIMIT);
  };

  const onStdoutLine = (line: string) => {
    append(`${line}\n`);
    const trimmed = line.trim();
    if (!trimmed.startsWith("{")) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(trimmed);
    } catch {
      return;
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return;
    const record = parsed as Record<string, unknown>;
    records.push(record);
    for (const listener of listeners) listener(record);
  };

  const stdoutDone = lineReader(child.stdout, onStdoutLine);
  const stderrDone = lineReader(child.stderr, (line) => append(`${line}\n`));

  const unregister = onProcessExit(() => killHard(child));

  const exited = new Promise<ProcessExit>((resolve) => {
    child.once("error", (err) => {
      // Spawn failures emit "error" and possibly never "exit".
      append(`[spawn error] ${err.message}\n`);
      if (child.pid === undefined) {
        unregister();
        resolve({ code: null, signal: null });
      }
    });
    child.once("exit", (code, signal) => {
      unregister();
      // Wait for the pipes to drain so the final log lines are visible, but not forever:
      // a grandchild that inherited them would keep them open.
      const drained = Promise.all([stdoutDone, stderrDone]);
      const grace = new Promise((r) => setTimeout(r, 1_000).unref());
      void Promise.race([drained, grace]).then(() => resolve({ code, signal }));
    });
  });
  let hasExited = false;
  void exited.then(() => {
    hasExited = true;
  });

  const tail = () => {
    const lines = output.trimEnd().split("\n");
    return lines.slice(-TAIL_LINES).join("\n");
  };

  const waitForLog: ServiceProcess["waitForLog"] = (predicate, timeoutMs = 10_000) => {
    const found = records.find(predicate);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        listeners.delete(listener);
      };
      const listener = (record: Record<string, unknown>) => {
        if (!predicate(record)) return;
        cleanup();
        resolve(record);
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(
            `${options.name}: no matching log line within ${timeoutMs} ms. Last ${TAIL_LINES} lines of output:\n${tail()}`,
          ),
        );
      }, timeoutMs);
      listeners.add(listener);
      void exited.then((exit) => {
        if (!listeners.has(listener)) return;
        // The exit may be reported before the final records were dispatched; check once more.
        const late = records.find(predicate);
        cleanup();
        if (late) {
          resolve(late);
          return;
        }
        reject(
          new Error(
            `${options.name} exited (code ${exit.code}, signal ${exit.signal}) before a matching log line. Last ${TAIL_LINES} lines of output:\n${tail()}`,
          ),
        );
      });
    });
  };

  return {
    name: options.name,
    pid: child.pid ?? -1,
    logs: () => [...records],
    output: () => output,
    waitForLog,
    async stop(timeoutMs = 10_000) {
      if (!hasExited) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => killHard(child), timeoutMs);
        await exited;
        clearTimeout(timer);
      }
      return exited;
    },
    async kill() {
      if (!hasExited) killHard(child);
      await exited;
    },
    exited,
  };
}

/** Splits a stream into lines; resolves when the stream ends (flushing a final partial line). */
function lineReader(
  stream: NodeJS.ReadableStream | null,
  onLine: (line: string) => void,
): Promise<void> {
  if (stream === null) return Promise.resolve();
  return new Promise((resolve) => {
    let pending = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      pending += chunk;
      let newline = pending.indexOf("\n");
      while (newline !== -1) {
        onLine(pending.slice(0, newline).replace(/\r$/, ""));
        pending = pending.slice(newline + 1);
        newline = pending.indexOf("\n");
      }
    });
    const finish = () => {
      if (pending !== "") onLine(pending);
      pending = "";
      resolve();
    };
    stream.once("end", finish);
    stream.once("close", finish);
    stream.once("error", finish);
  });
}
