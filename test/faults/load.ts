import { isDeepStrictEqual } from "node:util";
import {
  isTerminal,
  type JobRecord,
  JobRecord as JobRecordSchema,
  type Stage,
} from "@handoff/contracts";
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { TierStage } from "./harness.js";
import type { CountingUpstream, ModelCall, Tier } from "./upstream.js";

/**
 * The load of the fault suite: jobs with a mix of routes, submitted through the gateway's async API
 * (`POST /v1/jobs` with an `Idempotency-Key`, retried until accepted, as a careful client does),
 * followed to their end, then checked one by one: answered, with the right answer and route, and
 * with exactly the model calls its route takes at the upstream.
 */

/** The routes of the mix, steered through the `rules` strategy by the prompt. */
export type Route = "light" | "tools" | "heavy" | "heavy_tools";

export interface JobSpec {
  /** Unique per job: `[job <marker>]` is in its prompt and so in every model call it causes. */
  marker: string;
  route: Route;
  prompt: string;
  /** The exact answer the job must end with. */
  answer: string;
  /** Model calls per tier the route takes: one light call; two mid calls (tool call, answer); one heavy call. */
  calls: Partial<Record<Tier, number>>;
  /** The stages the record must show. */
  hops: Stage[];
}

/** Share of each route in the mix, in tenths. */
export type Mix = Record<Route, number>;
export const DefaultMix: Mix = { light: 3, tools: 3, heavy: 2, heavy_tools: 2 };
/** Heavy-weighted: for the burst with the heavy tier stopped. */
export const HeavyMix: Mix = { light: 2, tools: 2, heavy: 4, heavy_tools: 2 };

/** A `FAULTS_*` knob from the environment (the suite's own, read only by the tests). */
export function knob(name: string): string | undefined {
  const value = process.env[name]?.trim();
  return value === undefined || value === "" ? undefined : value;
}

export function envInt(name: string, fallback: number): number {
  const raw = knob(name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) throw new Error(`${name} must be a positive integer`);
  return value;
}

/** Jobs per scenario: `FAULTS_JOBS`, default 200 (the issue's minimum). */
export const JOBS = envInt("FAULTS_JOBS", 200);
/** Jobs in the burst: `FAULTS_BURST`, default 3000. */
export const BURST = envInt("FAULTS_BURST", 3_000);
/** Submission rate of a scenario's load, jobs per second: `FAULTS_RATE`, default 40. */
export const RATE = envInt("FAULTS_RATE", 40);

const MODEL_REPLY = (tier: "light" | "heavy", prompt: string) =>
  `Hello from fault-${tier}. You asked: ${prompt}`;

/** `n` jobs of batch `batch` (lower-case letters: the marker must not look like arithmetic). */
export function makeJobs(batch: string, n: number, mix: Mix = DefaultMix): JobSpec[] {
  if (!/^[a-z]+$/.test(batch)) throw new Error(`batch names are lower-case letters: ${batch}`);
  const wheel: Route[] = [];
  for (const route of Object.keys(mix) as Route[]) {
    for (let i = 0; i < mix[route]; i++) wheel.push(route);
  }
  const jobs: JobSpec[] = [];
  for (let i = 0; i < n; i++) {
    const marker = `${batch}_${i}`;
    const tag = `[job ${marker}]`;
    const route = wheel[(i * 7) % wheel.length] as Route;
    const a = 11 + (i % 89);
    const b = 3 + ((i * 13) % 41);
    switch (route) {
      case "light": {
        const prompt = `Say hello to the team ${tag}.`;
        jobs.push({
          marker,
          route,
          prompt,
          answer: MODEL_REPLY("light", prompt),
          calls: { light: 1 },
          hops: ["classifier"],
        });
        break;
      }
      case "tools": {
        const prompt = `What is ${a} * ${b}? ${tag}`;
        jobs.push({
          marker,
          route,
          prompt,
          answer: `The tool answered: ${a * b}.`,
          calls: { mid: 2 },
          hops: ["classifier", "tool-executor"],
        });
        break;
      }
      case "heavy": {
        const prompt = `Prove step by step that the sum of two even numbers is even ${tag}.`;
        jobs.push({
          marker,
          route,
          prompt,
          answer: MODEL_REPLY("heavy", prompt),
          calls: { heavy: 1 },
          hops: ["classifier", "heavy-reasoner"],
        });
        break;
      }
      case "heavy_tools": {
        const prompt = `Prove step by step that ${a} * ${b} is ${a * b} ${tag}.`;
        jobs.push({
          marker,
          route,
          prompt,
          answer: MODEL_REPLY("heavy", prompt),
          calls: { mid: 2, heavy: 1 },
          hops: ["classifier", "tool-executor", "heavy-reasoner"],
        });
        break;
      }
    }
  }
  return jobs;
}

export function requestBody(spec: Pick<JobSpec, "prompt">, extra: Record<string, unknown> = {}) {
  return { model: "handoff", messages: [{ role: "user", content: spec.prompt }], ...extra };
}

/** A job of the load as the client sees it. */
export interface Tracked {
  spec: JobSpec;
  /** The job id of the 202 (the same for every retry of the key). */
  id: string | undefined;
  submittedAt: number | undefined;
  acceptedAt: number | undefined;
  /** POST attempts until one was accepted. */
  attempts: number;
  /** Status codes (or `network`) of the attempts that were not accepted. */
  refusals: string[];
  /** The job's record once terminal. */
  record: JobRecord | undefined;
  /** When the record says it ended (`updated_at`). */
  endedAt: number | undefined;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Runs `fn` over `items`, at most `limit` at a time. */
export async function pool<T>(items: T[], limit: number, fn: (item: T) => Promise<void>) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

export interface LoadOptions {
  gatewayUrl: string;
  /** NATS servers, for the results subject (a hint that a job ended; the record is read over HTTP). */
  natsServers: string[];
}

/** Follows a set of jobs from submission to their terminal records. */
export class Load {
  readonly jobs = new Map<string, Tracked>();
  readonly #byId = new Map<string, Tracked>();
  readonly #hinted = new Set<string>();
  #nc: NatsConnection | undefined;
  #sub: Subscription | undefined;
  #sweeping = false;
  #closed = false;
  #sweeper: Promise<void> | undefined;

  private constructor(readonly options: LoadOptions) {}

  static async open(options: LoadOptions): Promise<Load> {
    const load = new Load(options);
    load.#nc = await connect({
      servers: options.natsServers,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      name: "faults-load",
    });
    load.#sub = load.#nc.subscribe("handoff.v1.results.>");
    void (async () => {
      for await (const msg of load.#sub as Subscription) {
        try {
          const record = JobRecordSchema.safeParse(msg.json());
          if (record.success && isTerminal(record.data.status)) load.#hinted.add(record.data.id);
        } catch {
          // Not a record: the gateway's business, not ours.
        }
      }
    })();
    load.#sweeper = load.#sweep();
    return load;
  }

  /**
   * Submits `specs` at `ratePerSec` (at most `concurrency` requests in flight), each retried with
   * its `Idempotency-Key` until the gateway accepts it (202) or `giveUpMs` passes. Resolves once
   * every job is accepted or given up.
   */
  async submit(
    specs: JobSpec[],
    { ratePerSec = RATE, concurrency = 16, giveUpMs = 120_000 } = {},
  ): Promise<void> {
    const start = Date.now();
    for (const spec of specs) {
      this.jobs.set(spec.marker, {
        spec,
        id: undefined,
        submittedAt: undefined,
        acceptedAt: undefined,
        attempts: 0,
        refusals: [],
        record: undefined,
        endedAt: undefined,
      });
    }
    let index = 0;
    await pool(specs, concurrency, async (spec) => {
      const i = index++;
      const due = start + (i * 1_000) / ratePerSec;
      if (due > Date.now()) await sleep(due - Date.now());
      await this.#submitOne(this.jobs.get(spec.marker) as Tracked, giveUpMs);
    });
  }

  async #submitOne(job: Tracked, giveUpMs: number): Promise<void> {
    job.submittedAt = Date.now();
    const deadline = job.submittedAt + giveUpMs;
    let wait = 250;
    while (Date.now() < deadline) {
      job.attempts++;
      try {
        const res = await fetch(`${this.options.gatewayUrl}/v1/jobs`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            "idempotency-key": `faults-${job.spec.marker}`,
          },
          body: JSON.stringify(requestBody(job.spec)),
          signal: AbortSignal.timeout(15_000),
        });
        const body = (await res.json().catch(() => ({}))) as { id?: string };
        if (res.status === 202 && body.id) {
          job.id = body.id;
          job.acceptedAt = Date.now();
          this.#byId.set(body.id, job);
          return;
        }
        job.refusals.push(String(res.status));
        // A client error other than a rate limit will not heal by retrying.
        if (res.status >= 400 && res.status < 500 && res.status !== 429) return;
      } catch {
        job.refusals.push("network");
      }
      await sleep(wait);
      wait = Math.min(2_000, wait * 2);
    }
  }

  /** Reads a job's record over the API; true once it is terminal. */
  async #check(job: Tracked): Promise<boolean> {
    if (!job.id || job.record) return job.record !== undefined;
    try {
      const res = await fetch(`${this.options.gatewayUrl}/v1/jobs/${job.id}`, {
        signal: AbortSignal.timeout(10_000),
      });
      if (res.status !== 200) {
        await res.arrayBuffer();
        return false;
      }
      const record = JobRecordSchema.parse(await res.json());
      if (!isTerminal(record.status)) return false;
      job.record = record;
      job.endedAt = Date.parse(record.updated_at);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Polls: jobs announced on the results subject at once, the others in slow rounds (at most 100 a
   * round), so a burst of thousands does not turn into a flood of reads.
   */
  async #sweep(): Promise<void> {
    let round = 0;
    while (!this.#closed) {
      round++;
      const pending = [...this.jobs.values()].filter((j) => j.id && !j.record);
      const hinted = pending.filter((j) => this.#hinted.has(j.id as string));
      const others = pending.filter((j) => !this.#hinted.has(j.id as string));
      // Unannounced jobs are read in slices: every round while few, every fourth round (at most
      // 50) while thousands wait, so polling never competes with the load it measures.
      const slice =
        others.length <= 100
          ? others
          : round % 4 === 0
            ? rotate(others, round * 50).slice(0, 50)
            : [];
      this.#sweeping = true;
      await pool([...hinted, ...slice], 8, async (job) => {
        await this.#check(job);
      });
      this.#sweeping = false;
      await sleep(hinted.length > 0 ? 100 : 500);
    }
  }

  /** Accepted jobs not yet terminal. */
  pending(): Tracked[] {
    return [...this.jobs.values()].filter((j) => j.id && !j.record);
  }

  /** Waits until every accepted job is terminal, or `timeoutMs` passes; returns those still pending. */
  async settle(timeoutMs: number): Promise<Tracked[]> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.pending().length === 0 && !this.#sweeping) break;
      await sleep(250);
    }
    // One last read of everything still open, in case its announcement was missed.
    await pool(this.pending(), 8, async (job) => {
      await this.#check(job);
    });
    return this.pending();
  }

  /** Waits until the jobs matching `filter` are terminal. */
  async settleSome(filter: (job: Tracked) => boolean, timeoutMs: number): Promise<Tracked[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const open = this.pending().filter(filter);
      if (open.length === 0 || Date.now() > deadline) return open;
      await sleep(250);
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#sweeper;
    this.#sub?.unsubscribe();
    await this.#nc?.close();
  }
}

function rotate<T>(items: T[], by: number): T[] {
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

/** One job that broke a guarantee, and how. */
export interface Violation {
  marker: string;
  route: Route;
  job_id: string | undefined;
  problem: string;
}

export interface Verdict {
  submitted: number;
  accepted: number;
  succeeded: number;
  /** Accepted jobs that never reached a terminal state. */
  lost: Violation[];
  /** Jobs never accepted by the gateway. */
  notAccepted: Violation[];
  /** Jobs that ended failed, or with the wrong answer or route. */
  wrong: Violation[];
  /** Jobs with more model calls than their route takes (beyond a crashed process's call). */
  duplicates: Violation[];
  /** Jobs with fewer calls than their route takes (should be impossible for a succeeded job). */
  missing: Violation[];
  /**
   * Jobs whose stage ran again after the process that held them was SIGKILLed mid-work: the dead
   * process's calls, which the README documents as not covered ("a stage that dies during a model
   * call has produced nothing").
   */
  reruns: Array<{
    marker: string;
    tier: Tier;
    killed_proc: string;
    calls: number;
    deliveries: unknown;
  }>;
  /** Model calls the upstream could not tie to a job. */
  unattributed: number;
  /** Submission attempts refused (503 while NATS was down, etc.), by status. */
  refusals: Record<string, number>;
  /** Jobs accepted on a retry rather than the first attempt. */
  retriedSubmissions: number;
  routes: Record<Route, number>;
}

/**
 * Checks every job: accepted, terminal, succeeded with the exact answer and route, and with exactly
 * the model calls its route takes. A job's calls for a tier are grouped by the process that made
 * them; the group holding the last call must have exactly the route's count, and any other group
 * must come from a process the suite SIGKILLed, made before the kill (an interrupted execution,
 * reported as a re-run, not a duplicate). Everything else above the count is a duplicate.
 */
export function verify(
  load: Load,
  upstream: CountingUpstream,
  killTimes: Map<string, number> = new Map(),
  markers?: Set<string>,
): Verdict {
  const verdict: Verdict = {
    submitted: 0,
    accepted: 0,
    succeeded: 0,
    lost: [],
    notAccepted: [],
    wrong: [],
    duplicates: [],
    missing: [],
    reruns: [],
    unattributed: 0,
    refusals: {},
    retriedSubmissions: 0,
    routes: { light: 0, tools: 0, heavy: 0, heavy_tools: 0 },
  };
  for (const job of load.jobs.values()) {
    const { spec } = job;
    if (markers && !markers.has(spec.marker)) continue;
    const v = (problem: string): Violation => ({
      marker: spec.marker,
      route: spec.route,
      job_id: job.id,
      problem,
    });
    verdict.submitted++;
    verdict.routes[spec.route]++;
    for (const refusal of job.refusals) {
      verdict.refusals[refusal] = (verdict.refusals[refusal] ?? 0) + 1;
    }
    if (job.attempts > 1 && job.id) verdict.retriedSubmissions++;
    if (!job.id) {
      verdict.notAccepted.push(
        v(`never accepted after ${job.attempts} attempts: ${job.refusals.join(",")}`),
      );
    } else {
      verdict.accepted++;
      const record = job.record;
      if (!record) verdict.lost.push(v("accepted but never reached a terminal state"));
      else if (record.status !== "succeeded") {
        verdict.wrong.push(
          v(`ended ${record.status}: ${record.error?.code} ${record.error?.message}`),
        );
      } else {
        const content = record.result?.message.content;
        if (content !== spec.answer) {
          verdict.wrong.push(
            v(`answered ${JSON.stringify(content)}, expected ${JSON.stringify(spec.answer)}`),
          );
        } else if (!isDeepStrictEqual(record.hops, spec.hops)) {
          verdict.wrong.push(v(`route ${record.hops.join(">")}, expected ${spec.hops.join(">")}`));
        } else verdict.succeeded++;
      }
    }
    checkCalls(job, upstream.callsFor(spec.marker), killTimes, verdict, v);
  }
  if (!markers) verdict.unattributed = upstream.calls.filter((c) => !c.marker).length;
  return verdict;
}

function checkCalls(
  job: Tracked,
  calls: ModelCall[],
  killTimes: Map<string, number>,
  verdict: Verdict,
  v: (problem: string) => Violation,
): void {
  for (const tier of ["light", "mid", "heavy"] as Tier[]) {
    const expected = job.spec.calls[tier] ?? 0;
    const mine = calls.filter((c) => c.tier === tier);
    if (mine.length === 0) {
      if (expected > 0 && job.record?.status === "succeeded") {
        verdict.missing.push(v(`${tier}: 0 calls, expected ${expected}`));
      }
      continue;
    }
    const groups = new Map<string, ModelCall[]>();
    for (const call of mine) groups.set(call.proc, [...(groups.get(call.proc) ?? []), call]);
    const last = mine.reduce((a, b) => (b.at >= a.at ? b : a));
    const finishing = groups.get(last.proc) as ModelCall[];
    if (finishing.length > expected) {
      verdict.duplicates.push(
        v(
          `${tier}: ${finishing.length} calls by ${last.proc}, expected ${expected}${describe(mine)}`,
        ),
      );
    } else if (finishing.length < expected && job.record?.status === "succeeded") {
      verdict.missing.push(
        v(
          `${tier}: ${finishing.length} calls by ${last.proc}, expected ${expected}${describe(mine)}`,
        ),
      );
    }
    for (const [proc, group] of groups) {
      if (proc === last.proc) continue;
      const killedAt = killTimes.get(proc);
      // Calls of the killed process: a SIGKILLed process sends nothing after its death, but the
      // upstream stamps a call when its event loop reads it, which on a loaded machine can be a
      // moment after the kill was stamped (and the call still answered before the closed socket
      // was noticed, so not marked aborted). What matters is that the killed process made no
      // more calls than one run of the stage makes.
      const interrupted =
        killedAt !== undefined &&
        group.every((c) => c.at < killedAt + KILL_STAMP_SLACK_MS || c.aborted) &&
        group.length <= expected;
      if (interrupted) {
        verdict.reruns.push({
          marker: job.spec.marker,
          tier,
          killed_proc: proc,
          calls: group.length,
          deliveries: job.record?.deliveries?.[TierStage[tier]],
        });
      } else {
        verdict.duplicates.push(
          v(
            `${tier}: ${group.length} more calls by ${proc} besides ${last.proc}'s${describe(mine)}`,
          ),
        );
      }
    }
  }
}

/** How long after a kill was stamped a call the killed process sent may reach the upstream. */
const KILL_STAMP_SLACK_MS = 1_000;

function describe(calls: ModelCall[]): string {
  const t0 = calls[0]?.at ?? 0;
  return ` [${calls.map((c) => `${c.proc}@+${c.at - t0}ms${c.aborted ? "(aborted)" : ""}`).join(", ")}]`;
}

/** A short summary of a verdict for messages and the results file. */
export function summary(verdict: Verdict) {
  return {
    submitted: verdict.submitted,
    accepted: verdict.accepted,
    succeeded: verdict.succeeded,
    lost: verdict.lost.length,
    not_accepted: verdict.notAccepted.length,
    wrong: verdict.wrong.length,
    duplicate_executions: verdict.duplicates.length,
    missing_calls: verdict.missing.length,
    reruns_after_sigkill: verdict.reruns.length,
    unattributed_calls: verdict.unattributed,
    retried_submissions: verdict.retriedSubmissions,
    refused_submissions: verdict.refusals,
    routes: verdict.routes,
  };
}

/**
 * Completion timings around a fault, from the records' `updated_at`: of every job, or of the jobs
 * `only` selects (say, those whose route takes the stage that was killed).
 */
export function timings(
  load: Load,
  marks: Record<string, number>,
  only: (job: Tracked) => boolean = () => true,
) {
  const ends = [...load.jobs.values()]
    .filter(only)
    .map((j) => j.endedAt)
    .filter((t): t is number => t !== undefined)
    .sort((a, b) => a - b);
  const submits = [...load.jobs.values()]
    .map((j) => j.submittedAt)
    .filter((t): t is number => t !== undefined);
  const firstSubmit = Math.min(...submits);
  const lastEnd = ends.at(-1) ?? Number.NaN;
  let maxGap = 0;
  let gapFrom = firstSubmit;
  let previous = firstSubmit;
  for (const end of ends) {
    if (end - previous > maxGap) {
      maxGap = end - previous;
      gapFrom = previous;
    }
    previous = Math.max(previous, end);
  }
  const out: Record<string, number | null> = {
    run_ms: lastEnd - firstSubmit,
    submit_ms: Math.max(...submits) - firstSubmit,
    longest_completion_gap_ms: maxGap,
    longest_gap_starts_at_ms: gapFrom - firstSubmit,
  };
  for (const [name, at] of Object.entries(marks)) {
    const after = ends.find((t) => t >= at);
    out[`${name}_at_ms`] = at - firstSubmit;
    out[`first_completion_after_${name}_ms`] = after === undefined ? null : after - at;
    out[`all_completed_after_${name}_ms`] = Number.isNaN(lastEnd)
      ? null
      : Math.max(0, lastEnd - at);
  }
  return out;
}

/** The failures of a verdict, as the lines an assertion message shows (first few of each kind). */
export function problems(verdict: Verdict, limit = 8): string[] {
  const lines: string[] = [];
  const add = (kind: string, list: Violation[]) => {
    if (list.length === 0) return;
    lines.push(`${list.length} ${kind}:`);
    for (const item of list.slice(0, limit)) {
      lines.push(`  ${item.marker} (${item.route}, job ${item.job_id}): ${item.problem}`);
    }
  };
  add("not accepted", verdict.notAccepted);
  add("lost", verdict.lost);
  add("failed or wrong", verdict.wrong);
  add("duplicate executions", verdict.duplicates);
  add("missing calls", verdict.missing);
  if (verdict.unattributed > 0)
    lines.push(`${verdict.unattributed} model calls without a job marker`);
  return lines;
}
