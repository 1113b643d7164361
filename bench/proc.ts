/**
 * Machine facts, per-process CPU time and resident memory from /proc (Linux), so the report can
 * say where the CPU went during a measured run and how much memory each process held after it.
 * Everything degrades to "unknown" off Linux instead of failing.
 */
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { cpus, loadavg, release, totalmem, type } from "node:os";

let clockTicks: number | undefined;

/** Kernel clock ticks per second (the unit of utime/stime in /proc/<pid>/stat). */
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
    } catch {
      clockTicks = Number.NaN;
    }
    if (!Number.isFinite(clockTicks) || clockTicks <= 0) clockTicks = 100;
  }
  return clockTicks;
}

/** Fields of /proc/<pid>/stat after the `(comm)` field, which may itself contain spaces. */
function statFields(pid: number): { comm: string; rest: string[] } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  if (open === -1 || close === -1) return undefined;
  return {
    comm: text.slice(open + 1, close),
    rest: text
      .slice(close + 2)
      .trim()
      .split(" "),
  };
}

/** User + system CPU time a process has used so far, in ms; undefined if it cannot be read. */
export function cpuTimeMs(pid: number): number | undefined {
  if (pid === process.pid) {
    const usage = process.cpuUsage();
    return (usage.user + usage.system) / 1000;
  }
  const fields = statFields(pid);
  // After "(comm)": state is field 3 of stat(5), so utime (14) and stime (15) are at 11 and 12.
  const utime = Number(fields?.rest[11]);
  const stime = Number(fields?.rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
  return ((utime + stime) * 1000) / ticksPerSecond();
}

/** Direct children of `parent` whose command name is `comm` (e.g. the spawned nats-server). */
export function childPids(parent: number, comm: string): number[] {
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return [];
  }
  const found: number[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const fields = statFields(Number(entry));
    // ppid is field 4 of stat(5): index 1 after "(comm)".
    if (fields?.comm === comm && Number(fields.rest[1]) === parent) found.push(Number(entry));
  }
  return found;
}

/**
 * The resident set size in a `/proc/<pid>/status` text, in bytes: its `VmRSS:` line, which the
 * kernel gives in kB (KiB). Undefined when the line is missing (a kernel thread, a zombie).
 */
export function parseVmRss(status: string): number | undefined {
  const match = /^VmRSS:\s+(\d+)\s*kB\s*$/m.exec(status);
  return match ? Number(match[1]) * 1024 : undefined;
}

/** A process's resident set size now, in bytes; undefined if it cannot be read. */
export function rssBytes(pid: number): number | undefined {
  try {
    return parseVmRss(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return pid === process.pid ? process.memoryUsage.rss() : undefined;
  }
}

/** The resident set size of each named process now, in bytes; processes that vanished are left out. */
export function rssOf(pids: ReadonlyMap<string, number>): Map<string, number> {
  const rss = new Map<string, number>();
  for (const [name, pid] of pids) {
    const bytes = rssBytes(pid);
    if (bytes !== undefined) rss.set(name, bytes);
  }
  return rss;
}

/**
 * Busy CPU time in the first (`cpu`) line of a /proc/stat text, in clock ticks: every core, every
 * process, less idle and iowait. Undefined if the line is not there.
 */
export function parseStatBusyTicks(stat: string): number | undefined {
  const [label, ...fields] = (stat.split("\n")[0] ?? "").trim().split(/\s+/);
  const ticks = fields.slice(0, 8).map(Number);
  if (label !== "cpu" || ticks.length < 5 || ticks.some((t) => !Number.isFinite(t))) {
    return undefined;
  }
  const total = ticks.reduce((a, b) => a + b, 0);
  return total - (ticks[3] ?? 0) - (ticks[4] ?? 0);
}

/**
 * CPU time the whole machine has spent busy so far, in ms; undefined off Linux. Next to the
 * benchmark's own processes, it shows how much of the machine other work took during a run.
 */
export function machineBusyMs(): number | undefined {
  try {
    const ticks = parseStatBusyTicks(readFileSync("/proc/stat", "utf8"));
    return ticks === undefined ? undefined : (ticks * 1000) / ticksPerSecond();
  } catch {
    return undefined;
  }
}

/** CPU time of a set of named processes, sampled before and after a measured run. */
export class CpuMeter {
  readonly #pids: ReadonlyMap<string, number>;
  #start = new Map<string, number>();

  constructor(pids: ReadonlyMap<string, number>) {
    this.#pids = pids;
  }

  start(): void {
    this.#start = this.#sample();
  }

  /** CPU ms used by each process since {@link CpuMeter.start}; processes that vanished are left out. */
  stop(): Map<string, number> {
    const end = this.#sample();
    const used = new Map<string, number>();
    for (const [name, ms] of end) {
      const before = this.#start.get(name);
      if (before !== undefined) used.set(name, ms - before);
    }
    return used;
  }

  #sample(): Map<string, number> {
    const sample = new Map<string, number>();
    for (const [name, pid] of this.#pids) {
      const ms = cpuTimeMs(pid);
      if (ms !== undefined) sample.set(name, ms);
    }
    return sample;
  }
}

export interface MachineFacts {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  /** 1-minute load average when the facts were gathered (0 where the OS has none). */
  loadAverage: number;
  node: string;
  natsServer: string;
}

function cpuModel(): string {
  try {
    const line = readFileSync("/proc/cpuinfo", "utf8")
      .split("\n")
      .find((l) => l.startsWith("model name"));
    const model = line?.split(":").slice(1).join(":").trim();
    if (model) return model;
  } catch {
    // Not Linux: fall back to what Node reports.
  }
  return cpus()[0]?.model.trim() || "unknown";
}

export function machineFacts(natsServerBinary: string): MachineFacts {
  let natsServer = "unknown";
  try {
    natsServer = execFileSync(natsServerBinary, ["--version"], { encoding: "utf8" }).trim();
  } catch {
    // Reported as unknown.
  }
  return {
    cpuModel: cpuModel(),
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    kernel: `${type()} ${release()}`,
    loadAverage: loadavg()[0] ?? 0,
    node: process.version,
    natsServer,
  };
}
