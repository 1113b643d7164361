import type { ChildProcess } from "node:child_process";

/** How a supervised process ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface RestartPolicy {
  /** This many crashes of one service within `windowMs` and the supervisor gives up. */
  maxCrashes: number;
  windowMs: number;
  /** The wait before restart number `attempt` (1, 2, ...). */
  backoffMs(attempt: number): number;
}

/** Half a second, doubling to 8 s; five crashes within a minute and `handoff up` gives up. */
export const DEFAULT_RESTART_POLICY: RestartPolicy = {
  maxCrashes: 5,
  windowMs: 60_000,
  backoffMs: (attempt) => Math.min(8_000, 500 * 2 ** Math.max(0, attempt - 1)),
};

export function describeExit(exit: Exit): string {
  return exit.signal ? `signal ${exit.signal}` : `exit code ${exit.code}`;
}

/** Why the supervisor gave up: a service crashed too often, or before the mesh was up. */
export class GaveUp extends Error {
  constructor(
    readonly service: string,
    /** Crashes counted in the window (1 for a crash during start-up). */
    readonly crashes: number,
    readonly exit: Exit,
    readonly duringStart: boolean,
    message: string,
  ) {
    super(message);
    this.name = "GaveUp";
  }
}

interface Entry {
  name: string;
  start: () => ChildProcess;
  child: ChildProcess;
  crashes: number[];
  restart?: NodeJS.Timeout;
}

export interface SupervisorOptions {
  policy?: RestartPolicy;
  /** Progress lines for a person ("restarting ..."). */
  say?: (line: string) => void;
  now?: () => number;
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Signals a child's whole process group when it leads one (spawned `detached`), else the child. */
function signal(child: ChildProcess, sig: NodeJS.Signals): void {
  if (exited(child) || child.pid === undefined) return;
  try {
    process.kill(-child.pid, sig);
  } catch {
    try {
      child.kill(sig);
    } catch {
      // Already gone.
    }
  }
}

/**
 * Keeps the processes it started running: a process that exits when it was not told to stop is
 * started again after a backoff, and the restart is said. When one crashes `maxCrashes` times
 * within `windowMs` (or at all before {@link Supervisor.arm}, while the mesh starts), the
 * supervisor gives up: {@link Supervisor.failure} resolves, and its owner stops everything.
 */
export class Supervisor {
  readonly #policy: RestartPolicy;
  readonly #say: (line: string) => void;
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>();
  #armed = false;
  #stopping = false;
  #failed: GaveUp | undefined;
  #fail!: (reason: GaveUp) => void;
  /** Resolves (never rejects) when the supervisor gives up on a service. */
  readonly failure: Promise<GaveUp>;

  /** If this process exits without stopping them (a crash), its services still get a SIGTERM. */
  readonly #onExit = () => {
    for (const entry of this.#entries.values()) signal(entry.child, "SIGTERM");
  };

  constructor(options: SupervisorOptions = {}) {
    this.#policy = options.policy ?? DEFAULT_RESTART_POLICY;
    this.#say = options.say ?? (() => {});
    this.#now = options.now ?? Date.now;
    this.failure = new Promise((resolve) => {
      this.#fail = resolve;
    });
    process.on("exit", this.#onExit);
  }

  /** Starts `name` with `start` and supervises it. */
  add(name: string, start: () => ChildProcess): ChildProcess {
    const entry: Entry = { name, start, child: start(), crashes: [] };
    this.#entries.set(name, entry);
    this.#watch(entry);
    return entry.child;
  }

  /** From now on a crash is restarted; before, while the mesh starts, it is fatal at once. */
  arm(): void {
    this.#armed = true;
  }

  get failed(): GaveUp | undefined {
    return this.#failed;
  }

  /** The running processes by service. */
  children(): Map<string, ChildProcess> {
    return new Map([...this.#entries].map(([name, entry]) => [name, entry.child]));
  }

  /**
   * Stops every process: SIGTERM to each (their process group), SIGKILL to what still runs after
   * `timeoutMs`; pending restarts are cancelled. Safe to call more than once.
   */
  async stop(timeoutMs = 15_000): Promise<void> {
    this.#stopping = true;
    await Promise.all(
      [...this.#entries.values()].map(async (entry) => {
        clearTimeout(entry.restart);
        const child = entry.child;
        if (exited(child)) return;
        const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
        signal(child, "SIGTERM");
        const timer = setTimeout(() => signal(child, "SIGKILL"), timeoutMs);
        await gone;
        clearTimeout(timer);
      }),
    );
    process.off("exit", this.#onExit);
  }

  #watch(entry: Entry): void {
    const child = entry.child;
    child.once("error", () => {
      // A spawn that failed (ENOENT, EACCES) also emits "exit" when it had a pid; without one
      // it never will, so count it here.
      if (child.pid === undefined) this.#exited(entry, child, { code: null, signal: null });
    });
    child.once("exit", (code, sig) => this.#exited(entry, child, { code, signal: sig }));
  }

  #exited(entry: Entry, child: ChildProcess, exit: Exit): void {
    if (this.#stopping || this.#failed || entry.child !== child) return;
    if (!this.#armed) {
      this.#giveUp(
        new GaveUp(
          entry.name,
          1,
          exit,
          true,
          `${entry.name} exited during start-up (${describeExit(exit)})`,
        ),
      );
      return;
    }
    const now = this.#now();
    entry.crashes = [...entry.crashes.filter((at) => now - at < this.#policy.windowMs), now];
    const crashes = entry.crashes.length;
    if (crashes >= this.#policy.maxCrashes) {
      this.#giveUp(
        new GaveUp(
          entry.name,
          crashes,
          exit,
          false,
          `${entry.name} crashed ${crashes} times within ${Math.round(this.#policy.windowMs / 1000)}s (last: ${describeExit(exit)}); giving up`,
        ),
      );
      return;
    }
    const delay = this.#policy.backoffMs(crashes);
    this.#say(
      `restarting ${entry.name} (${describeExit(exit)}), attempt ${crashes} in ${(delay / 1000).toFixed(1)}s`,
    );
    entry.restart = setTimeout(() => {
      entry.restart = undefined;
      if (this.#stopping || this.#failed) return;
      entry.child = entry.start();
      this.#watch(entry);
    }, delay);
  }

  #giveUp(reason: GaveUp): void {
    this.#failed = reason;
    for (const entry of this.#entries.values()) clearTimeout(entry.restart);
    this.#fail(reason);
  }
}
