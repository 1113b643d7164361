/**
 * What the two runs of `npm run bench:cache` add up to, and the checks that they add up: the
 * figures of each run (requests, upstream calls, hits, dollars, latency) and the cross-checks
 * between the answers, the upstream's own record, and the two runs. Pure: no I/O, so the unit
 * test can feed it made-up runs. Any failed check is a problem; the bench reports none of its
 * numbers when there is one.
 */
import { cacheable, type HitCeiling, hitCeiling, type WorkloadRequest } from "./cache-workload.ts";
import { percentile } from "./lib.ts";

export type CacheOutcome = "hit" | "miss" | "bypass";

/** One model call of a job, as its answer's `handoff.usage` reports it. */
export interface CallRecord {
  stage: string;
  tier: string;
  model: string;
  costUsd: number;
  cache?: CacheOutcome | undefined;
  savedUsd?: number | undefined;
}

/** One answered request of a run (already checked on its own: status, route, text). */
export interface AnswerRecord {
  /** The workload request it answers. */
  index: number;
  content: string;
  /** `handoff.cost_usd`. */
  costUsd: number;
  calls: CallRecord[];
  /** `handoff.cache` and the `x-handoff-cache` header. */
  answerCache: string | undefined;
  header: string | null;
  /** When the request was sent and its answer read, in ms from the start of the run. */
  sentMs: number;
  doneMs: number;
}

/** One request the upstream received: which prompt, tier and model call of its job. */
export interface UpstreamCall {
  tier: string;
  prompt: string;
  /** 0 for a job's first call of the tier, 1 after a tool round, … */
  turn: number;
}

export interface RunRecord {
  /** Whether the run's config caches the tiers. */
  cached: boolean;
  /** By workload index. */
  answers: AnswerRecord[];
  upstream: UpstreamCall[];
  elapsedMs: number;
}

export interface LatencySummary {
  n: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
}

export function latencySummary(values: readonly number[]): LatencySummary | undefined {
  if (values.length === 0) return undefined;
  return {
    n: values.length,
    p50Ms: percentile(values, 50),
    p99Ms: percentile(values, 99),
    meanMs: values.reduce((a, b) => a + b, 0) / values.length,
  };
}

/** How the cached run treated a request: every call a hit, a cacheable request that was not, or neither. */
export type RequestClass = "hit" | "miss" | "bypass";

export interface RunFigures {
  requests: number;
  elapsedMs: number;
  perSecond: number;
  upstreamCalls: number;
  /** Model calls the answers report (hits included). */
  modelCalls: number;
  /** Calls that looked the cache up: hits and misses. */
  lookups: number;
  hits: number;
  bypassed: number;
  /** Requests all of whose calls were hits: no model was called for them. */
  hitRequests: number;
  /** Requests with some calls hits and some not (a tool loop whose turns went differently). */
  partialRequests: number;
  cacheableRequests: number;
  spentUsd: number;
  savedUsd: number;
  latency: LatencySummary;
}

export interface CacheChecks {
  /** The workload's ceiling: what a per-tenant exact cache can answer at most. */
  ceiling: HitCeiling;
  /** Distinct (tenant, prompt, tier, turn) keys whose answer the cached run stored. */
  keysStored: number;
  /**
   * Cacheable misses of a key while another miss of the same key was still in flight: both reach
   * the model, since nothing holds the second back until the first is stored.
   */
  inFlightDuplicates: number;
  /** Cacheable requests the ceiling counts that were not answered wholly from the cache. */
  ceilingMissed: number;
  /**
   * Cacheable lookups when only the other tenant had the same call's answer stored: each one a
   * chance for an answer to cross tenants. All of them must be misses.
   */
  crossTenantChances: number;
  /** (prompt, tier, turn) whose upstream requests matched the answers' non-hit calls. */
  upstreamKeysMatched: number;
  /** Largest |uncached spend − (cached spend + saved)|, in USD. */
  spendGapUsd: number;
}

export interface CacheAnalysis {
  uncached: RunFigures;
  cached: RunFigures;
  checks: CacheChecks;
  /** Latency by how the cached run treated the request, the same requests in both runs. */
  byClass: Array<{
    cls: RequestClass;
    route: string;
    uncached: LatencySummary | undefined;
    cached: LatencySummary | undefined;
  }>;
  /** Requests, hits and dollars by route. */
  byRoute: Array<{
    route: string;
    requests: number;
    hitRequests: number;
    uncachedSpentUsd: number;
    cachedSpentUsd: number;
    savedUsd: number;
  }>;
  /** Everything that did not add up; empty when the run is sound. */
  problems: string[];
}

const TOLERANCE_USD = 1e-12;

function figures(run: RunRecord, workload: readonly WorkloadRequest[]): RunFigures {
  let modelCalls = 0;
  let lookups = 0;
  let hits = 0;
  let bypassed = 0;
  let hitRequests = 0;
  let partialRequests = 0;
  let spentUsd = 0;
  let savedUsd = 0;
  for (const answer of run.answers) {
    modelCalls += answer.calls.length;
    const callHits = answer.calls.filter((c) => c.cache === "hit").length;
    hits += callHits;
    lookups += answer.calls.filter((c) => c.cache === "hit" || c.cache === "miss").length;
    bypassed += answer.calls.filter((c) => c.cache === "bypass").length;
    if (callHits > 0 && callHits === answer.calls.length) hitRequests++;
    else if (callHits > 0) partialRequests++;
    spentUsd += answer.costUsd;
    for (const call of answer.calls) savedUsd += call.savedUsd ?? 0;
  }
  const latencies = run.answers.map((a) => a.doneMs - a.sentMs);
  return {
    requests: run.answers.length,
    elapsedMs: run.elapsedMs,
    perSecond: (run.answers.length * 1000) / run.elapsedMs,
    upstreamCalls: run.upstream.length,
    modelCalls,
    lookups,
    hits,
    bypassed,
    hitRequests,
    partialRequests,
    cacheableRequests: workload.filter(cacheable).length,
    spentUsd,
    savedUsd,
    latency: latencySummary(latencies) as LatencySummary,
  };
}

/** Each call of an answer with its turn: its place among the answer's calls of the same tier. */
function callsWithTurns(answer: AnswerRecord): Array<CallRecord & { turn: number }> {
  const seen = new Map<string, number>();
  return answer.calls.map((call) => {
    const turn = seen.get(call.tier) ?? 0;
    seen.set(call.tier, turn + 1);
    return { ...call, turn };
  });
}

/** Keeps the first few problems of a kind, and counts the rest. */
class Problems {
  readonly list: string[] = [];
  readonly #counts = new Map<string, number>();

  add(kind: string, detail: string): void {
    const count = (this.#counts.get(kind) ?? 0) + 1;
    this.#counts.set(kind, count);
    if (count <= 3) this.list.push(`${kind}: ${detail}`);
  }

  done(): string[] {
    const extra = [...this.#counts].filter(([, n]) => n > 3).map(([k, n]) => `${k}: ${n} in all`);
    return [...this.list, ...extra];
  }
}

export function analyseCacheRuns(
  workload: readonly WorkloadRequest[],
  uncached: RunRecord,
  cached: RunRecord,
): CacheAnalysis {
  const problems = new Problems();
  const ceiling = hitCeiling(workload);

  for (const [name, run] of [
    ["uncached", uncached],
    ["cached", cached],
  ] as const) {
    if (run.answers.length !== workload.length) {
      problems.add(`${name} run`, `${run.answers.length} answers for ${workload.length} requests`);
    }
    for (const [index, answer] of run.answers.entries()) {
      if (answer?.index !== index) problems.add(`${name} run`, `answer ${index} is missing`);
    }
  }
  if (problems.list.length > 0) {
    throw new Error(`the runs are incomplete:\n${problems.done().join("\n")}`);
  }

  // 1. Cache markers: none without a cache; with one, bypass exactly when the request asks for it.
  for (const answer of uncached.answers) {
    if (answer.answerCache !== undefined || answer.header !== null) {
      problems.add("uncached run reports a cache outcome", `request ${answer.index}`);
    }
    if (answer.calls.some((c) => c.cache !== undefined || c.savedUsd !== undefined)) {
      problems.add("uncached run has a call with a cache outcome", `request ${answer.index}`);
    }
  }
  for (const answer of cached.answers) {
    const request = workload[answer.index] as WorkloadRequest;
    if (answer.header !== answer.answerCache) {
      problems.add(
        "x-handoff-cache differs from handoff.cache",
        `request ${answer.index}: ${answer.header} vs ${answer.answerCache}`,
      );
    }
    if (answer.answerCache !== answer.calls.at(-1)?.cache) {
      problems.add(
        "handoff.cache is not the answering call's",
        `request ${answer.index}: ${answer.answerCache} vs ${answer.calls.at(-1)?.cache}`,
      );
    }
    for (const call of answer.calls) {
      const expected = cacheable(request) ? ["hit", "miss"] : ["bypass"];
      if (!expected.includes(call.cache ?? "none")) {
        problems.add(
          "unexpected cache outcome",
          `request ${answer.index} (sampled ${request.sampled}, no-cache ${request.noCache}): ${call.tier} ${call.cache}`,
        );
      }
      if (call.cache === "hit") {
        if (call.costUsd !== 0 || !(call.savedUsd !== undefined && call.savedUsd > 0)) {
          problems.add(
            "a hit that cost or saved nothing",
            `request ${answer.index}: cost ${call.costUsd}, saved ${call.savedUsd}`,
          );
        }
      } else if (call.savedUsd !== undefined || !(call.costUsd > 0)) {
        problems.add(
          "a model call that cost nothing or claims a saving",
          `request ${answer.index}: ${call.tier} ${call.cache}, cost ${call.costUsd}, saved ${call.savedUsd}`,
        );
      }
    }
  }

  // 2. The same answer text for a prompt, in both runs, whoever asked and however.
  const textOf = new Map<number, string>();
  for (const run of [uncached, cached]) {
    for (const answer of run.answers) {
      const request = workload[answer.index] as WorkloadRequest;
      const known = textOf.get(request.prompt.id);
      if (known === undefined) textOf.set(request.prompt.id, answer.content);
      else if (known !== answer.content) {
        problems.add(
          `${run.cached ? "cached" : "uncached"} run: an answer differs from the uncached one`,
          `request ${answer.index} (${request.tenant}, "${request.prompt.text}")`,
        );
      }
    }
  }

  // 3. A call's cost is the same wherever the model made it; a hit saved exactly that.
  const costOf = new Map<string, number>();
  for (const run of [uncached, cached]) {
    for (const answer of run.answers) {
      const request = workload[answer.index] as WorkloadRequest;
      for (const call of callsWithTurns(answer)) {
        if (call.cache === "hit") continue;
        const key = `${request.prompt.id}|${call.tier}|${call.turn}`;
        const known = costOf.get(key);
        if (known === undefined) costOf.set(key, call.costUsd);
        else if (Math.abs(known - call.costUsd) > TOLERANCE_USD) {
          problems.add("the same call cost differently", `${key}: ${known} vs ${call.costUsd}`);
        }
      }
    }
  }
  for (const answer of cached.answers) {
    const request = workload[answer.index] as WorkloadRequest;
    for (const call of callsWithTurns(answer)) {
      if (call.cache !== "hit") continue;
      const key = `${request.prompt.id}|${call.tier}|${call.turn}`;
      const cost = costOf.get(key);
      if (cost === undefined || Math.abs(cost - (call.savedUsd ?? -1)) > TOLERANCE_USD) {
        problems.add("saved_usd is not what the call cost", `${key}: ${call.savedUsd} vs ${cost}`);
      }
    }
  }

  // 4. The upstream received exactly the calls the answers say were not hits.
  let upstreamKeysMatched = 0;
  for (const [name, run] of [
    ["uncached", uncached],
    ["cached", cached],
  ] as const) {
    const claimed = new Map<string, number>();
    for (const answer of run.answers) {
      const request = workload[answer.index] as WorkloadRequest;
      for (const call of callsWithTurns(answer)) {
        if (call.cache === "hit") continue;
        const key = `${call.tier}|${call.turn}|${request.prompt.text}`;
        claimed.set(key, (claimed.get(key) ?? 0) + 1);
      }
    }
    const received = new Map<string, number>();
    for (const call of run.upstream) {
      const key = `${call.tier}|${call.turn}|${call.prompt}`;
      received.set(key, (received.get(key) ?? 0) + 1);
    }
    for (const key of new Set([...claimed.keys(), ...received.keys()])) {
      const a = claimed.get(key) ?? 0;
      const b = received.get(key) ?? 0;
      if (a !== b) {
        problems.add(
          `${name} run: upstream requests differ from the answers' model calls`,
          `${key}: answers say ${a}, the upstream got ${b}`,
        );
      } else if (run.cached) upstreamKeysMatched++;
    }
  }

  // 5. Per (tenant, prompt, tier, turn), in the cached run: a miss after a stored miss of the
  //    same key is a cache that failed; a hit needs a miss of its own tenant before it.
  interface Lookup {
    index: number;
    tenant: string;
    call: string;
    outcome: CacheOutcome;
    sentMs: number;
    doneMs: number;
  }
  const byCall = new Map<string, Lookup[]>();
  for (const answer of cached.answers) {
    const request = workload[answer.index] as WorkloadRequest;
    for (const call of callsWithTurns(answer)) {
      if (call.cache !== "hit" && call.cache !== "miss") continue;
      const key = `${request.prompt.id}|${call.tier}|${call.turn}`;
      const list = byCall.get(key) ?? [];
      list.push({
        index: answer.index,
        tenant: request.tenant,
        call: key,
        outcome: call.cache,
        sentMs: answer.sentMs,
        doneMs: answer.doneMs,
      });
      byCall.set(key, list);
    }
  }
  let keysStored = 0;
  let inFlightDuplicates = 0;
  let crossTenantChances = 0;
  for (const lookups of byCall.values()) {
    const tenants = new Set(lookups.map((l) => l.tenant));
    for (const tenant of tenants) {
      const own = lookups.filter((l) => l.tenant === tenant);
      const misses = own.filter((l) => l.outcome === "miss");
      if (misses.length > 0) keysStored++;
      inFlightDuplicates += Math.max(0, misses.length - 1);
      for (const miss of misses) {
        const stale = misses.find((m) => m !== miss && m.doneMs < miss.sentMs);
        if (stale) {
          problems.add(
            "a repeat missed after its answer was stored",
            `request ${miss.index} (${tenant}, ${miss.call}) sent ${(miss.sentMs - stale.doneMs).toFixed(1)} ms after request ${stale.index} was answered`,
          );
        }
      }
      for (const hit of own.filter((l) => l.outcome === "hit")) {
        if (!misses.some((m) => m.sentMs < hit.doneMs)) {
          problems.add(
            "a hit with no miss of its own tenant before it (crossed tenants?)",
            `request ${hit.index} (${tenant}, ${hit.call})`,
          );
        }
      }
      // Lookups that found only the other tenants' answer stored: the chances to cross.
      const others = lookups.filter((l) => l.tenant !== tenant && l.outcome === "miss");
      for (const lookup of own) {
        const otherStored = others.some((m) => m.doneMs < lookup.sentMs);
        const ownMaybeStored = misses.some((m) => m !== lookup && m.sentMs < lookup.doneMs);
        if (!otherStored || ownMaybeStored) continue;
        crossTenantChances++;
        if (lookup.outcome !== "miss") {
          problems.add(
            "an answer crossed tenants",
            `request ${lookup.index} (${tenant}, ${lookup.call}) hit while only another tenant's answer was stored`,
          );
        }
      }
    }
  }

  // 6. Hits only where the workload allows one.
  let ceilingMissed = 0;
  for (const answer of cached.answers) {
    const allHit = answer.calls.length > 0 && answer.calls.every((c) => c.cache === "hit");
    if (allHit && !ceiling.eligible[answer.index]) {
      problems.add(
        "a request answered from the cache that no earlier request of its tenant could have stored",
        `request ${answer.index}`,
      );
    }
    if (!allHit && ceiling.eligible[answer.index]) ceilingMissed++;
  }

  const u = figures(uncached, workload);
  const c = figures(cached, workload);

  // 7. Without a cache every call reaches the upstream; with one, the savings close the gap.
  if (u.upstreamCalls !== u.modelCalls) {
    problems.add(
      "uncached run: upstream calls differ from model calls",
      `${u.upstreamCalls} vs ${u.modelCalls}`,
    );
  }
  if (u.hits !== 0 || u.savedUsd !== 0) problems.add("uncached run has hits", `${u.hits}`);
  const spendGapUsd = Math.abs(u.spentUsd - (c.spentUsd + c.savedUsd));
  if (spendGapUsd > 1e-9 * Math.max(1, u.spentUsd)) {
    problems.add(
      "uncached spend is not cached spend + saved",
      `${u.spentUsd} vs ${c.spentUsd} + ${c.savedUsd}`,
    );
  }

  // Latency of the same requests in both runs, by what the cached run made of them.
  const classOf = (answer: AnswerRecord): RequestClass => {
    const request = workload[answer.index] as WorkloadRequest;
    if (!cacheable(request)) return "bypass";
    return answer.calls.every((call) => call.cache === "hit") ? "hit" : "miss";
  };
  const byClass: CacheAnalysis["byClass"] = [];
  for (const cls of ["hit", "miss", "bypass"] as const) {
    for (const route of ["all", "light", "heavy", "tools"]) {
      const indices = cached.answers
        .filter((a) => classOf(a) === cls)
        .map((a) => a.index)
        .filter((i) => route === "all" || workload[i]?.prompt.kind === route);
      const of = (run: RunRecord) =>
        latencySummary(
          indices.map((i) => {
            const a = run.answers[i] as AnswerRecord;
            return a.doneMs - a.sentMs;
          }),
        );
      byClass.push({ cls, route, uncached: of(uncached), cached: of(cached) });
    }
  }

  const byRoute: CacheAnalysis["byRoute"] = ["light", "heavy", "tools"].map((route) => {
    const indices = workload.filter((r) => r.prompt.kind === route).map((r) => r.index);
    const sum = (run: RunRecord, of: (a: AnswerRecord) => number) =>
      indices.reduce((total, i) => total + of(run.answers[i] as AnswerRecord), 0);
    return {
      route,
      requests: indices.length,
      hitRequests: indices.filter((i) =>
        (cached.answers[i] as AnswerRecord).calls.every((call) => call.cache === "hit"),
      ).length,
      uncachedSpentUsd: sum(uncached, (a) => a.costUsd),
      cachedSpentUsd: sum(cached, (a) => a.costUsd),
      savedUsd: sum(cached, (a) => a.calls.reduce((t, call) => t + (call.savedUsd ?? 0), 0)),
    };
  });

  return {
    uncached: u,
    cached: c,
    byRoute,
    checks: {
      ceiling,
      keysStored,
      inFlightDuplicates,
      ceilingMissed,
      crossTenantChances,
      upstreamKeysMatched,
      spendGapUsd,
    },
    byClass,
    problems: problems.done(),
  };
}
