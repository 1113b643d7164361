import type { ChildProcess } from "node:child_process";

type Cleanup = () => void;

const cleanups = new Set<Cleanup>();
let installed = false;

/**
 * Registers a synchronous cleanup to run when the current process exits, so children never
 * outlive a crashed or interrupted test run. Only synchronous work is possible at "exit".
 * Returns a function that unregisters it.
 */
export function onProcessExit(cleanup: Cleanup): () => void {
  if (!installed) {
    installed = true;
    process.on("exit", () => {
      for (const fn of cleanups) {
        try {
          fn();
        } catch {
          // Nothing useful can be done while the process is exiting.
        }
      }
    });
  }
  cleanups.add(cleanup);
  return () => {
    cleanups.delete(cleanup);
  };
}

/** True once the child has exited or been killed by a signal. */
export function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Sends SIGKILL if the child still runs, ignoring the race where it already went away. */
export function killHard(child: ChildProcess): void {
  if (hasExited(child)) return;
  try {
    child.kill("SIGKILL");
  } catch {
    // Already gone.
  }
}

/** Resolves true once `child` has exited, or false after `timeoutMs`. */
export function waitExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (hasExited(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const onExit = () => {
      clearTimeout(timer);
      resolve(true);
    };
    const timer = setTimeout(() => {
      child.off("exit", onExit);
      resolve(false);
    }, timeoutMs);
    child.once("exit", onExit);
  });
}
