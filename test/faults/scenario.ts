import type { Stage } from "@handoff/contracts";
import { waitFor } from "@handoff/testkit";
import type { FaultMesh } from "./harness.js";
import {
  type JobSpec,
  Load,
  type Mix,
  makeJobs,
  problems,
  RATE,
  summary,
  timings,
  type Verdict,
  verify,
} from "./load.js";
import { writeResult } from "./results.js";
import type { CountingUpstream } from "./upstream.js";

/** What a fault reports: named instants (the fault, the recovery) for the timings. */
export type Marks = Record<string, number>;

export interface ScenarioOptions {
  /** Results file name, e.g. `a-sigkill-tool-executor`. */
  id: string;
  /** One line: what the scenario does. */
  title: string;
  /** Marker batch (lower-case letters), unique within the file. */
  batch: string;
  jobs: number;
  mix?: Mix;
  ratePerSec?: number;
  /** The fault, run while the load is submitted; returns its marks. */
  fault?: (context: ScenarioContext) => Promise<Marks>;
  /** How long to wait for every job to end after submission and fault (default 180 s). */
  settleMs?: number;
  /**
   * The stage the fault hits: the timings are also given for the jobs whose route takes it
   * (`affected`), which are the ones that wait for the recovery.
   */
  affects?: Stage;
  /** Runs after every job ended and before they are checked (to poke at finished jobs). */
  afterSettle?: (context: ScenarioContext) => Promise<void>;
  /** More figures for the results file, computed after the jobs settled. */
  extra?: (context: ScenarioContext & { verdict: Verdict }) => Promise<Record<string, unknown>>;
}

export interface ScenarioContext {
  mesh: FaultMesh;
  upstream: CountingUpstream;
  load: Load;
  specs: JobSpec[];
  natsServers: string[];
}

export interface ScenarioOutcome {
  verdict: Verdict;
  marks: Marks;
  load: Load;
  figures: Record<string, unknown>;
}

/** Waits until `n` jobs of the load are accepted. */
export function accepted(load: Load, n: number, timeoutMs = 60_000): Promise<true> {
  return waitFor(() => [...load.jobs.values()].filter((j) => j.id).length >= n || undefined, {
    timeoutMs,
    intervalMs: 20,
    what: `${n} jobs to be accepted`,
  });
}

/**
 * Submits a batch at a steady rate, runs the fault meanwhile, waits for every job to end, checks
 * each one and writes the scenario's figures. Assertions are the caller's, on the verdict.
 */
export async function runScenario(
  mesh: FaultMesh,
  upstream: CountingUpstream,
  natsServers: string[],
  options: ScenarioOptions,
): Promise<ScenarioOutcome> {
  const specs = makeJobs(options.batch, options.jobs, options.mix);
  const load = await Load.open({ gatewayUrl: mesh.gatewayUrl, natsServers });
  const context: ScenarioContext = { mesh, upstream, load, specs, natsServers };
  const started = Date.now();
  try {
    const submitting = load.submit(specs, { ratePerSec: options.ratePerSec ?? RATE });
    const marks = options.fault ? await options.fault(context) : {};
    await submitting;
    const open = await load.settle(options.settleMs ?? 180_000);
    await options.afterSettle?.(context);
    const verdict = verify(load, upstream, mesh.killTimes(), new Set(specs.map((s) => s.marker)));
    const extra = options.extra ? await options.extra({ ...context, verdict }) : {};
    // What the services logged about the first few broken jobs: the diagnosis, kept with the figures.
    const broken = [...verdict.duplicates, ...verdict.lost, ...verdict.wrong].slice(0, 4);
    const diagnosis = Object.fromEntries(
      broken.map((v) => [
        `${v.marker} (${v.job_id})`,
        mesh
          .logs(undefined, (line) => line.job_id === v.job_id)
          .map(
            (line) =>
              `${String(line.time).slice(11, 23)} ${line.proc} ${line.level} d${line.delivery ?? "?"} ${line.msg}${line.err ? ` (${(line.err as { message?: string }).message})` : ""}`,
          )
          .slice(0, 16),
      ]),
    );
    const figures = {
      title: options.title,
      passed: problems(verdict).length === 0 && open.length === 0,
      wall_ms: Date.now() - started,
      jobs: summary(verdict),
      timings: timings(load, marks),
      ...(options.affects
        ? {
            affected_timings: timings(load, marks, (job) =>
              job.spec.hops.includes(options.affects as Stage),
            ),
          }
        : {}),
      reruns_after_sigkill: verdict.reruns.slice(0, 20),
      problems: problems(verdict, 20),
      ...(broken.length > 0 ? { diagnosis } : {}),
      service_warnings: warnings(mesh, started),
      ...extra,
    };
    writeResult(options.id, figures);
    return { verdict, marks, load, figures };
  } finally {
    await load.close();
  }
}

/** One message with every broken guarantee, for `expect(...).toEqual([])`. */
export function guarantees(verdict: Verdict): string[] {
  return problems(verdict);
}

/** Warnings and errors the services logged since `since`, counted per process and message. */
export function warnings(mesh: FaultMesh, since: number): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const line of mesh.logs(
    undefined,
    (l) =>
      (l.level === "warn" || l.level === "error" || l.level === "fatal") &&
      Date.parse(String(l.time)) >= since,
  )) {
    const err = (line.err as { message?: string } | undefined)?.message;
    // Numbers vary per line (retry delays, sequences): fold them so alike lines count together.
    const text = `${line.level}: ${line.msg}${err ? ` (${err})` : ""}`
      .replace(/\d+/g, "N")
      .slice(0, 240);
    const byProc = out[line.proc] ?? {};
    byProc[text] = (byProc[text] ?? 0) + 1;
    out[line.proc] = byProc;
  }
  return out;
}
