/**
 * The workload of `npm run bench:cache`, generated deterministically from a seed: a pool of
 * distinct prompts (greetings and short questions the router sends to the light tier, "prove" and
 * "derive" prompts it sends to the heavy tier, a few products it sends to the tool loop), drawn
 * with a Zipf-like popularity, each request with its tenant and whether it samples
 * (`temperature: 0.7`) or bypasses the cache (`Cache-Control: no-cache`). No I/O here.
 */

/** mulberry32: a small seeded PRNG, uniform on [0, 1). The same seed gives the same sequence. */
export function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a, 32 bits: a stable hash of a string, for deterministic per-prompt choices. */
export function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/**
 * A sampler of ranks 0..n-1 with P(rank r) ∝ 1 / (r + 1)^exponent (Zipf; exponent 0 is uniform),
 * by inverse CDF over the precomputed cumulative weights.
 */
export function zipfSampler(n: number, exponent: number): (u: number) => number {
  if (!Number.isInteger(n) || n < 1) throw new Error(`zipf needs n >= 1, got ${n}`);
  const cdf = new Array<number>(n);
  let total = 0;
  for (let r = 0; r < n; r++) {
    total += 1 / (r + 1) ** exponent;
    cdf[r] = total;
  }
  return (u) => {
    const target = u * total;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((cdf[mid] as number) > target) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  };
}

/** Where the router sends a prompt: what the bench expects, and checks on every answer. */
export type PromptKind = "light" | "heavy" | "tools";

export interface Prompt {
  id: number;
  kind: PromptKind;
  text: string;
  /** For a tools prompt: the product the answer must state. */
  product?: number;
}

/** The route (stages) each kind of prompt takes, as `handoff.route` reports it. */
export const ROUTES: Record<PromptKind, readonly string[]> = {
  light: ["classifier"],
  heavy: ["classifier", "heavy-reasoner"],
  tools: ["classifier", "tool-executor"],
};

/** The items of a `|`-separated list, trimmed. */
function list(text: string): string[] {
  return text
    .split("|")
    .map((item) => item.trim())
    .filter((item) => item !== "");
}

const NAMES = list(`
  Maria | Kenji | Amara | Lucas | Priya | Tomás | Ingrid | Omar | Chloé | Dmitri |
  Aiyana | Felix | Zanele | Mateo | Yuki | Nadia | Liam | Sofia | Arjun | Elena | Kwame |
  Hana | Oscar | Leila | Rafael | Mei | Jonas | Fatima | Diego | Astrid
`);
const COUNTRIES = list(`
  Peru | Kenya | Norway | Vietnam | Chile | Portugal | Ghana | Mongolia | Uruguay |
  Finland | Morocco | Nepal | Ireland | Colombia | Senegal | Austria | Jordan | Bolivia |
  Laos | Croatia | Tunisia | Ecuador | Latvia | Malawi | Iceland | Paraguay | Bhutan |
  Estonia | Namibia | Slovenia
`);
const PHRASES = list(`
  good morning | thank you very much | see you tomorrow | where is the station |
  I love this song | happy birthday
`);
const LANGUAGES = list("Spanish | French | German | Italian | Portuguese");
const WORDS = list(`
  happy | quick | bright | calm | brave | tiny | huge | clever | gentle | angry |
  silent | rich | sad | strange | warm | honest | lazy | busy | shy | proud | empty |
  famous | fragile | eager | fierce | humble | lucky | noisy | polite | rare
`);
const COLORS = list("black | white | ginger | grey | spotted | golden");
const PETS = list("cat | puppy | parrot | rabbit | hamster");
const WEATHER = list("rainy | snowy | windy | foggy | sunny | stormy");
const ACTIVITIES = list(`
  with kids | alone | in a small flat | on holiday | after work
`);

const PRIMES = [3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53];
const ORDINALS = list("second | third | fourth | fifth | sixth | seventh");
const DISTRIBUTIONS = list(`
  binomial | Poisson | geometric | exponential | gamma | beta | uniform |
  negative binomial | hypergeometric | Laplace | logistic | Rayleigh | chi-squared |
  Weibull | Pareto
`);
const MOMENTS = list("mean | variance | moment generating function");
const THEOREMS = [
  "every tree with n vertices has n-1 edges",
  "a graph is bipartite if and only if it has no odd cycle",
  "every planar graph can be coloured with six colours",
  "the harmonic series diverges",
  "there is no largest prime number",
  "a continuous function on a closed interval is bounded",
  "every finite integral domain is a field",
  "the set of real numbers is uncountable",
  "a group of prime order is cyclic",
  "the composition of two injective functions is injective",
  "every convergent sequence of real numbers is a Cauchy sequence",
  "the product of two odd integers is odd",
  "the sum of the angles of a triangle in the Euclidean plane is a straight angle",
  "a subgroup of a cyclic group is cyclic",
  "every bounded monotone sequence converges",
];
const DERIVATIONS = [
  "the gradient of the softmax cross-entropy loss with respect to the logits",
  "the normal equations of ordinary least squares",
  "the Euler-Lagrange equation from the principle of stationary action",
  "the formula for the period of a simple pendulum at small angles",
  "Bayes' rule from the definition of conditional probability",
  "the closed form of a geometric series",
  "the quadratic formula by completing the square",
  "the backpropagation rule for a two-layer neural network",
  "the Black-Scholes partial differential equation",
  "the escape velocity of a planet from energy conservation",
  "the maximum likelihood estimator of a Gaussian's variance",
  "the Fourier transform of a Gaussian",
  "the time complexity of merge sort from its recurrence",
  "the relativistic Doppler shift",
  "the capacitance of a parallel-plate capacitor",
];

function cartesian<A, B>(as: readonly A[], bs: readonly B[]): Array<[A, B]> {
  return as.flatMap((a) => bs.map((b): [A, B] => [a, b]));
}

/** Every light prompt the pool can draw from, in a fixed order (more than any pool needs). */
function lightCandidates(): string[] {
  return [
    ...NAMES.map((n) => `Hi, I'm ${n}. How are you today?`),
    ...COUNTRIES.map((c) => `What is the capital of ${c}?`),
    ...cartesian(PHRASES, LANGUAGES).map(([p, l]) => `Translate '${p}' into ${l}.`),
    ...WORDS.map((w) => `Give me a synonym for '${w}'.`),
    ...cartesian(COLORS, PETS).map(([c, p]) => `Suggest a name for a ${c} ${p}.`),
    ...cartesian(WEATHER, ACTIVITIES).map(
      ([w, a]) => `Good morning! Any tips for a ${w} day ${a}?`,
    ),
  ];
}

/** Every heavy prompt the pool can draw from, in a fixed order. */
function heavyCandidates(): string[] {
  return [
    ...PRIMES.map((p) => `Prove that the number log base 2 of ${p} is irrational.`),
    ...THEOREMS.map((t) => `Prove that ${t}.`),
    ...DERIVATIONS.map((d) => `Derive ${d}.`),
    ...cartesian(MOMENTS, DISTRIBUTIONS).map(
      ([m, d]) => `Derive the ${m} of the ${d} distribution.`,
    ),
    ...ORDINALS.map((o) => `Derive the closed form of the sum of the first n ${o} powers.`),
  ];
}

function shuffled<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

/**
 * The kind of prompt at each popularity rank, in a repeating pattern of ten (6 light, 3 heavy,
 * 1 tools), so the request mix hardly depends on which prompts the draw favours.
 */
const KIND_PATTERN: readonly PromptKind[] = [
  "light",
  "heavy",
  "light",
  "light",
  "heavy",
  "light",
  "tools",
  "light",
  "heavy",
  "light",
];

/**
 * `size` distinct prompts, ordered by popularity rank (0 the most asked), their kinds following
 * {@link KIND_PATTERN}.
 */
export function promptPool(size: number, seed: number): Prompt[] {
  const random = prng(seed);
  const light = shuffled(lightCandidates(), random);
  const heavy = shuffled(heavyCandidates(), random);
  const products = new Set<string>();
  const pool: Prompt[] = [];
  for (let id = 0; id < size; id++) {
    const kind = KIND_PATTERN[id % KIND_PATTERN.length] as PromptKind;
    if (kind === "tools") {
      let text: string;
      let a: number;
      let b: number;
      do {
        a = 11 + Math.floor(random() * 89);
        b = 11 + Math.floor(random() * 89);
        text = `What is ${a} * ${b}?`;
      } while (products.has(text));
      products.add(text);
      pool.push({ id, kind, text, product: a * b });
      continue;
    }
    const text = (kind === "light" ? light : heavy).shift();
    if (text === undefined)
      throw new Error(`not enough distinct ${kind} prompts for a pool of ${size}`);
    pool.push({ id, kind, text });
  }
  return pool;
}

/** One request of the workload. */
export interface WorkloadRequest {
  index: number;
  prompt: Prompt;
  tenant: string;
  /** `temperature: 0.7`: not cached (the default `cache.sampled: false`). */
  sampled: boolean;
  /** `Cache-Control: no-cache`: neither reads nor writes the cache. */
  noCache: boolean;
}

export interface WorkloadSpec {
  requests: number;
  seed: number;
  pool: readonly Prompt[];
  zipfExponent: number;
  /** The tenants, and the share of requests each sends (summing to 1). */
  tenants: ReadonlyArray<{ name: string; share: number }>;
  sampledShare: number;
  noCacheShare: number;
}

/** The requests, in the order they are sent: the same for the same spec. */
export function generateWorkload(spec: WorkloadSpec): WorkloadRequest[] {
  const random = prng(spec.seed ^ 0x5eed);
  const rank = zipfSampler(spec.pool.length, spec.zipfExponent);
  const out: WorkloadRequest[] = [];
  for (let index = 0; index < spec.requests; index++) {
    const prompt = spec.pool[rank(random())] as Prompt;
    const t = random();
    let acc = 0;
    let tenant = spec.tenants.at(-1)?.name as string;
    for (const candidate of spec.tenants) {
      acc += candidate.share;
      if (t < acc) {
        tenant = candidate.name;
        break;
      }
    }
    const sampled = random() < spec.sampledShare;
    const noCache = random() < spec.noCacheShare;
    out.push({ index, prompt, tenant, sampled, noCache });
  }
  return out;
}

/** Whether a request may read and write the cache (as the shipped defaults decide). */
export const cacheable = (r: Pick<WorkloadRequest, "sampled" | "noCache">): boolean =>
  !r.sampled && !r.noCache;

/**
 * How many hits the workload allows at most, step by step: of all requests, those whose prompt
 * was asked before (by anyone, in any way); of those, the cacheable ones; of those, the ones
 * whose tenant had asked that prompt cacheably before (the only ones an exact, per-tenant cache
 * can answer, and all of them if each request finished before the next one started).
 */
export interface HitCeiling {
  requests: number;
  distinctPrompts: number;
  /** Requests whose prompt was asked earlier, by any tenant, cacheable or not. */
  repeats: number;
  /** …and that are themselves cacheable. */
  cacheableRepeats: number;
  /** …and whose own tenant asked the same prompt cacheably earlier: the hit ceiling. */
  sameTenantRepeats: number;
  cacheableRequests: number;
  /** By request index: whether it is one of the `sameTenantRepeats`. */
  eligible: boolean[];
}

export function hitCeiling(workload: readonly WorkloadRequest[]): HitCeiling {
  const seen = new Set<number>();
  const stored = new Set<string>();
  let repeats = 0;
  let cacheableRepeats = 0;
  let sameTenantRepeats = 0;
  let cacheableRequests = 0;
  const eligible: boolean[] = [];
  for (const r of workload) {
    const key = `${r.tenant}\u0000${r.prompt.id}`;
    const can = cacheable(r);
    if (can) cacheableRequests++;
    eligible[r.index] = can && stored.has(key);
    if (seen.has(r.prompt.id)) {
      repeats++;
      if (can) {
        cacheableRepeats++;
        if (stored.has(key)) sameTenantRepeats++;
      }
    }
    seen.add(r.prompt.id);
    if (can) stored.add(key);
  }
  return {
    requests: workload.length,
    distinctPrompts: seen.size,
    repeats,
    cacheableRepeats,
    sameTenantRepeats,
    cacheableRequests,
    eligible,
  };
}

/**
 * `count` prompts for the warm-up, none of them in any pool (their words and numbers differ),
 * in the same mix of kinds; their ids follow the pool's (`firstId` on).
 */
export function warmupPrompts(count: number, firstId: number): Prompt[] {
  return Array.from({ length: count }, (_, i): Prompt => {
    const id = firstId + i;
    const kind = KIND_PATTERN[i % KIND_PATTERN.length] as PromptKind;
    if (kind === "tools") {
      return { id, kind, text: `What is ${101 + i} * 7?`, product: (101 + i) * 7 };
    }
    const text =
      kind === "light"
        ? `Hello, this is warm-up message number ${i}. Please say hi back.`
        : `Prove that warm-up lemma number ${i} holds for every natural number n.`;
    return { id, kind, text };
  });
}
