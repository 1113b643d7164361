import { describe, expect, it } from "vitest";
import {
  type AnswerRecord,
  analyseCacheRuns,
  type CacheOutcome,
  type RunRecord,
} from "./cache-analysis.ts";
import {
  generateWorkload,
  hitCeiling,
  type Prompt,
  prng,
  promptPool,
  type WorkloadRequest,
  zipfSampler,
} from "./cache-workload.ts";

describe("the cache benchmark's workload", () => {
  it("is the same for the same seed, and another for another", () => {
    const spec = (seed: number) => ({
      requests: 300,
      seed,
      pool: promptPool(100, seed),
      zipfExponent: 0.9,
      tenants: [
        { name: "a", share: 0.6 },
        { name: "b", share: 0.4 },
      ],
      sampledShare: 0.1,
      noCacheShare: 0.05,
    });
    const texts = (seed: number) =>
      generateWorkload(spec(seed)).map(
        (r) => `${r.tenant} ${r.sampled} ${r.noCache} ${r.prompt.text}`,
      );
    expect(texts(7)).toEqual(texts(7));
    expect(texts(8)).not.toEqual(texts(7));
  });

  it("draws a pool of distinct prompts in the kind pattern", () => {
    const pool = promptPool(300, 42);
    expect(new Set(pool.map((p) => p.text)).size).toBe(300);
    expect(pool.filter((p) => p.kind === "light")).toHaveLength(180);
    expect(pool.filter((p) => p.kind === "heavy")).toHaveLength(90);
    const tools = pool.filter((p) => p.kind === "tools");
    expect(tools).toHaveLength(30);
    for (const p of tools) {
      const [, a, b] = /^What is (\d+) \* (\d+)\?$/.exec(p.text) ?? [];
      expect(Number(a) * Number(b)).toBe(p.product);
    }
  });

  it("samples ranks with Zipf popularity: rank 1 about twice rank 2 at exponent 1", () => {
    const rank = zipfSampler(50, 1);
    const random = prng(1);
    const counts = new Array<number>(50).fill(0);
    for (let i = 0; i < 100_000; i++) {
      const r = rank(random());
      counts[r] = (counts[r] ?? 0) + 1;
    }
    const [first = 0, second = 0] = counts;
    expect(first / second).toBeGreaterThan(1.85);
    expect(first / second).toBeLessThan(2.15);
    expect(counts.every((c) => c > 0)).toBe(true);
    expect(rank(0)).toBe(0);
    expect(rank(0.999_999_9)).toBe(49);
  });

  it("counts the ceiling: repeats, cacheable repeats, same-tenant cacheable repeats", () => {
    const p = (id: number): Prompt => ({ id, kind: "light", text: `p${id}` });
    const r = (
      index: number,
      id: number,
      tenant: string,
      flags: Partial<WorkloadRequest> = {},
    ) => ({
      index,
      prompt: p(id),
      tenant,
      sampled: false,
      noCache: false,
      ...flags,
    });
    const ceiling = hitCeiling([
      r(0, 1, "a"),
      r(1, 1, "b"), // repeat, other tenant: not in the ceiling
      r(2, 1, "a"), // in the ceiling
      r(3, 2, "a", { sampled: true }),
      r(4, 2, "a"), // repeat, but the first ask was sampled: not stored
      r(5, 2, "a", { noCache: true }), // repeat, not cacheable
      r(6, 2, "a"), // in the ceiling
    ]);
    expect(ceiling).toMatchObject({
      requests: 7,
      distinctPrompts: 2,
      repeats: 5,
      cacheableRepeats: 4,
      sameTenantRepeats: 2,
      cacheableRequests: 5,
    });
    expect(ceiling.eligible).toEqual([false, false, true, false, false, false, true]);
  });
});

describe("the cache benchmark's analysis", () => {
  const prompt: Prompt = { id: 0, kind: "light", text: "Hello" };
  const workload: WorkloadRequest[] = [
    { index: 0, prompt, tenant: "a", sampled: false, noCache: false },
    { index: 1, prompt, tenant: "a", sampled: false, noCache: false },
    { index: 2, prompt, tenant: "b", sampled: false, noCache: false },
  ];
  const COST = 0.001;

  function answer(index: number, outcome: CacheOutcome | undefined, at: number): AnswerRecord {
    const hit = outcome === "hit";
    return {
      index,
      content: "hi",
      costUsd: hit ? 0 : COST,
      calls: [
        {
          stage: "classifier",
          tier: "light",
          model: "m",
          costUsd: hit ? 0 : COST,
          cache: outcome,
          savedUsd: hit ? COST : undefined,
        },
      ],
      answerCache: outcome,
      header: outcome ?? null,
      sentMs: at,
      doneMs: at + 10,
    };
  }
  const upstream = (n: number) =>
    Array.from({ length: n }, () => ({ tier: "light", prompt: "Hello", turn: 0 }));
  const uncached: RunRecord = {
    cached: false,
    answers: [answer(0, undefined, 0), answer(1, undefined, 20), answer(2, undefined, 40)],
    upstream: upstream(3),
    elapsedMs: 50,
  };

  it("accepts runs that add up, and counts what it checked", () => {
    const cached: RunRecord = {
      cached: true,
      answers: [answer(0, "miss", 0), answer(1, "hit", 20), answer(2, "miss", 40)],
      upstream: upstream(2),
      elapsedMs: 50,
    };
    const analysis = analyseCacheRuns(workload, uncached, cached);
    expect(analysis.problems).toEqual([]);
    expect(analysis.cached).toMatchObject({ hits: 1, lookups: 3, hitRequests: 1 });
    expect(analysis.cached.savedUsd).toBeCloseTo(COST, 12);
    expect(analysis.checks).toMatchObject({
      keysStored: 2,
      inFlightDuplicates: 0,
      ceilingMissed: 0,
      crossTenantChances: 1,
    });
  });

  it("flags a hit served across tenants", () => {
    const cached: RunRecord = {
      cached: true,
      answers: [answer(0, "miss", 0), answer(1, "hit", 20), answer(2, "hit", 40)],
      upstream: upstream(1),
      elapsedMs: 50,
    };
    const { problems } = analyseCacheRuns(workload, uncached, cached);
    expect(problems.join("\n")).toMatch(/crossed tenants/);
  });

  it("flags a repeat that missed after its answer was stored, and upstream calls the answers do not explain", () => {
    const cached: RunRecord = {
      cached: true,
      answers: [answer(0, "miss", 0), answer(1, "miss", 20), answer(2, "miss", 40)],
      upstream: upstream(4),
      elapsedMs: 50,
    };
    const { problems } = analyseCacheRuns(workload, uncached, cached);
    expect(problems.join("\n")).toMatch(/missed after its answer was stored/);
    expect(problems.join("\n")).toMatch(/answers say 3, the upstream got 4/);
  });

  it("takes a second miss while the first is in flight as a duplicate, not a failure", () => {
    const overlapping = { ...answer(1, "miss", 5) };
    const cached: RunRecord = {
      cached: true,
      answers: [answer(0, "miss", 0), overlapping, answer(2, "miss", 40)],
      upstream: upstream(3),
      elapsedMs: 50,
    };
    const analysis = analyseCacheRuns(workload, uncached, cached);
    expect(analysis.problems).toEqual([]);
    expect(analysis.checks.inFlightDuplicates).toBe(1);
    expect(analysis.checks.ceilingMissed).toBe(1);
  });
});
