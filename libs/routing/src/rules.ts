import type { JobInput, RouteDecision } from "@handoff/contracts";
import { routingText } from "./text.js";

type RulesInput = Pick<JobInput, "messages" | "tools">;

/** What the rules strategy concluded, and the evidence. */
export interface Classification {
  decision: RouteDecision;
  confidence: number;
  reason: string;
  /** Names of the signals that fired, e.g. `heavy:proof`, `tools:arithmetic`. */
  signals: string[];
  /** Whether tools are likely useful, even on the heavy route. */
  wantsTools: boolean;
}

interface Signal {
  name: string;
  weight: number;
  test: (text: string, input: RulesInput) => boolean;
}

const words = (pattern: string) => new RegExp(`\\b(?:${pattern})\\b`, "i");

/** Evidence that the request needs the frontier model. */
const HEAVY: Signal[] = [
  {
    name: "proof",
    weight: 2,
    test: (t) => words("prove|proof|theorem|lemma|derive|derivation").test(t),
  },
  { name: "step-by-step", weight: 1, test: (t) => /step[- ]by[- ]step|rigorous(?:ly)?/i.test(t) },
  {
    name: "analysis",
    weight: 1,
    test: (t) => words("analy[sz]e|analysis|trade-?offs?|evaluate|critique|compare").test(t),
  },
  {
    name: "design",
    weight: 2,
    test: (t) =>
      /\b(?:design|architect)\b.{0,40}\b(?:system|service|schema|api|architecture)\b/i.test(t),
  },
  {
    name: "code",
    weight: 1,
    test: (t) => /```|\bfunction\s*\(|\b(?:refactor|debug|implement)\b/i.test(t),
  },
  { name: "long-prompt", weight: 1, test: (t) => t.length > 1_200 },
  { name: "many-questions", weight: 1, test: (t) => (t.match(/\?/g)?.length ?? 0) >= 3 },
];

/** Evidence that a tool (calculator, clock, or one of the client's) answers it best. */
const TOOLS: Signal[] = [
  { name: "arithmetic", weight: 2, test: (t) => /\d\s*(?:[-+*/^%×÷]|\*\*)\s*[(\d]/.test(t) },
  {
    name: "calculation",
    weight: 1,
    test: (t) =>
      words("calculate|compute|evaluate the expression|square root|percent(?:age)? of").test(t),
  },
  {
    name: "time",
    weight: 2,
    test: (t) =>
      /\bwhat(?:'s| is)? (?:the )?(?:current )?(?:time|date|day)\b|\btime is it\b|\btoday'?s date\b/i.test(
        t,
      ),
  },
  { name: "client-tools", weight: 2, test: (_t, input) => input.tools.length > 0 },
];

function fired(signals: Signal[], text: string, input: RulesInput) {
  const hits = signals.filter((s) => s.test(text, input));
  return { hits, score: hits.reduce((sum, s) => sum + s.weight, 0) };
}

/** The tool signals alone: whether a tool (built-in or the client's) likely answers best. */
export function toolSignals(input: RulesInput): string[] {
  return fired(TOOLS, routingText(input), input).hits.map((s) => `tools:${s.name}`);
}

/**
 * The rules' weighed heavy evidence as a score in [0, 1): 1 − e^(−weight/2). It is a fixed
 * monotone map, not fitted to data; at the rules' default threshold of 0.5 it reproduces their
 * decision (heavy from a weight of 2).
 */
export function rulesScore(input: RulesInput): { score: number; heavy: string[]; weight: number } {
  const heavy = fired(HEAVY, routingText(input), input);
  return {
    score: 1 - Math.exp(-heavy.score / 2),
    heavy: heavy.hits.map((s) => `heavy:${s.name}`),
    weight: heavy.score,
  };
}

/**
 * The `rules` strategy: keyword and shape signals on the latest user message, weighed. It costs
 * no model call, so the classifier stays the cheapest hop. Heavy needs a score of 2 (one strong
 * signal or two weak ones); tools need one tool signal; everything else is light.
 */
export function classifyByRules(input: RulesInput): Classification {
  const text = routingText(input);
  const heavy = fired(HEAVY, text, input);
  const tools = fired(TOOLS, text, input);
  const signals = [
    ...heavy.hits.map((s) => `heavy:${s.name}`),
    ...tools.hits.map((s) => `tools:${s.name}`),
  ];
  const wantsTools = tools.score > 0;

  if (heavy.score >= 2) {
    return {
      decision: "heavy",
      confidence: Math.min(0.95, 0.55 + 0.1 * heavy.score),
      reason: `heavy signals ${heavy.hits.map((s) => s.name).join(", ")} (score ${heavy.score})`,
      signals,
      wantsTools,
    };
  }
  if (wantsTools) {
    return {
      decision: "tools",
      confidence: Math.min(0.95, 0.6 + 0.1 * tools.score - 0.1 * heavy.score),
      reason: `tool signals ${tools.hits.map((s) => s.name).join(", ")} (score ${tools.score})`,
      signals,
      wantsTools,
    };
  }
  return {
    decision: "light",
    // Short, plain requests are the safest light calls; a weak heavy signal lowers confidence.
    confidence: Math.max(0.5, (text.length < 300 ? 0.85 : 0.7) - 0.15 * heavy.score),
    reason:
      heavy.score > 0
        ? `weak heavy signal ${heavy.hits.map((s) => s.name).join(", ")} below threshold`
        : "no heavy or tool signals",
    signals,
    wantsTools,
  };
}

const PINNED = /^handoff\/(light|mid|heavy)$/;
const PINNED_DECISION = { light: "light", mid: "tools", heavy: "heavy" } as const;

/**
 * A request for `handoff/light`, `handoff/mid` or `handoff/heavy` pins its tier: the client
 * chose, so the classifier only records it. Undefined for any other model name.
 */
export function classifyPinned(
  input: Pick<JobInput, "model" | "messages" | "tools">,
): Classification | undefined {
  const tier = PINNED.exec(input.model)?.[1] as keyof typeof PINNED_DECISION | undefined;
  if (!tier) return undefined;
  const rules = classifyByRules(input);
  return {
    decision: PINNED_DECISION[tier],
    confidence: 1,
    reason: `model ${input.model} pins the ${tier} tier`,
    signals: [`pinned:${tier}`],
    wantsTools: tier === "mid" || rules.wantsTools,
  };
}
