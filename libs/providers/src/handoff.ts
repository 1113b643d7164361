import type { Message, Tier, ToolRun, Usage } from "@handoff/contracts";
import type { TierCallContext, TierCallResult } from "./router.js";
import { estimateInputTokens, estimateTokens } from "./tokens.js";
import type { ChatRequest } from "./types.js";

/**
 * The lean handoff: fitting the prompt a hop sends a tier's model into that tier's token budget
 * (`limits.handoff_tokens.<tier>`). Pure functions over messages and tool runs (the summarising
 * one calls a model through whatever `chat` it is given), so every stage can use them and a test
 * can pin them down without a mesh. It lives here, beside `estimateInputTokens` and the
 * `ModelRouter` it is measured with and summarises through; `@handoff/contracts` holds schemas
 * only, and a stage's own package would keep it from the other stages.
 *
 * What is always kept: the client's system messages (wherever they are), its last user turn and
 * everything after it. What goes first: the middle of the conversation. The layout is
 *
 *   [system] [head: the first turns, up to a quarter of the budget] [ONE marker or summary]
 *   [old turns that share terms with the last user turn] [the most recent turns] [the last turn]
 *
 * The head is the trade-off with providers' prefix caches. A sliding window (drop the oldest,
 * keep the newest) changes the prompt right after the system message on every job, so a
 * provider's cache of the conversation stops hitting once compaction starts. Keeping the first
 * turns, which no later job changes, keeps `[system][head]` byte-identical across the jobs of a
 * conversation, and the cache keeps hitting on it; what comes after the marker changes from job
 * to job (the marker counts what it stands for, the selection follows the question). The price
 * is a quarter of the budget spent on old turns whether they matter or not; they are also where
 * a conversation usually states its facts, so it is seldom wasted.
 */

export type CompactionStrategy = "select" | "summarize";

/** What a compaction did: the `compaction` enrichment's numbers, less its stage and tier. */
export interface CompactionReport {
  strategy: "select" | "summarize" | "none";
  budget_tokens: number;
  tokens_before: number;
  tokens_after: number;
  turns_dropped: number;
  turns_summarised: number;
  fallback?: string;
}

export interface Compacted {
  messages: Message[];
  report: CompactionReport;
  /** The light-tier summary call's usage, when one was made (it is spent even if unused). */
  usage?: Usage;
}

export interface SelectOptions {
  /** Prompt tokens the tier's model may be sent, everything included. */
  budget: number;
  /**
   * Tokens of the prompt already spoken for besides the conversation: what the hop appends (its
   * context, an instruction) and the tool definitions.
   */
  reserve?: number;
  /** The tier the prompt is for, named in the marker. */
  tier?: Tier;
  /** Share of what the pinned messages leave that the conversation's first turns may keep. */
  headShare?: number;
}

/** Matches the marker (and summary) messages this module writes. */
export const HANDOFF_MARKER_PREFIX = "[handoff]";

const HEAD_SHARE = 0.25;
/** Share of what the head leaves that relevant old turns may take before the recent ones. */
const RELEVANCE_SHARE = 0.5;

/** The prompt tokens of `messages` with `reserve` more, as the mesh estimates them. */
export function promptTokens(messages: readonly Message[], reserve = 0): number {
  return estimateInputTokens(messages) + reserve;
}

/** The tokens `messages` add to a prompt (without the prompt's own framing). */
function messagesTokens(messages: readonly Message[]): number {
  return estimateInputTokens(messages) - estimateInputTokens([]);
}

/** A run of messages kept or dropped together: a tool-calling turn keeps its results with it. */
interface Unit {
  start: number;
  end: number;
  tokens: number;
  pinned: boolean;
  text: string;
}

function messageText(message: Message): string {
  const calls =
    message.role === "assistant" && message.tool_calls
      ? message.tool_calls.map((c) => `${c.function.name} ${c.function.arguments}`).join(" ")
      : "";
  return `${message.content ?? ""} ${calls}`;
}

function unitsOf(messages: readonly Message[], end: number): Unit[] {
  const units: Unit[] = [];
  let i = 0;
  while (i < end) {
    const start = i;
    const message = messages[i] as Message;
    i++;
    if (message.role === "assistant") {
      while (i < end && messages[i]?.role === "tool") i++;
    }
    const slice = messages.slice(start, i);
    units.push({
      start,
      end: i,
      tokens: messagesTokens(slice),
      pinned: message.role === "system" || message.role === "developer",
      text: slice.map(messageText).join(" "),
    });
  }
  return units;
}

const STOPWORDS = new Set(
  (
    "the and for are but not you your yours with this that these those from have has had was were " +
    "will would could should what which who whom when where why how can did does done been being " +
    "into onto about above below over under again then than them they their there here its it's " +
    "our ours out off very just also any all some more most other such only own same too now " +
    "please thanks thank tell said say says get got use used using like want need know earlier " +
    "told mentioned before after one two make made give gave let lets ok okay yes sure"
  ).split(" "),
);

/** The terms of a text BM25 counts: lowercase words and numbers, stopwords and short words out. */
export function terms(text: string): string[] {
  const out: string[] = [];
  for (const raw of text
    .toLowerCase()
    .match(/\p{N}+(?:[.:]\p{N}+)*(?![\p{L}_-])|[\p{L}\p{N}][\p{L}\p{N}_-]*/gu) ?? []) {
    const term = raw.replace(/[-_]+$/, "");
    if (/^\d/.test(term) ? term.length < 2 : term.length < 3) continue;
    if (STOPWORDS.has(term)) continue;
    out.push(term);
  }
  return out;
}

/**
 * BM25 scores (k1 = 1.2, b = 0.75) of `documents` for the query terms: how much each shares the
 * query's rarer terms. Deterministic; 0 for a document that shares none.
 */
export function bm25(query: readonly string[], documents: readonly string[]): number[] {
  const k1 = 1.2;
  const b = 0.75;
  const docs = documents.map((d) => terms(d));
  const n = docs.length;
  if (n === 0) return [];
  const avg = docs.reduce((sum, d) => sum + d.length, 0) / n || 1;
  const unique = [...new Set(query)];
  const df = new Map<string, number>();
  const counts = docs.map((d) => {
    const c = new Map<string, number>();
    for (const t of d) c.set(t, (c.get(t) ?? 0) + 1);
    return c;
  });
  for (const term of unique) df.set(term, counts.filter((c) => c.has(term)).length);
  return counts.map((c, i) => {
    let score = 0;
    const len = docs[i]?.length ?? 0;
    for (const term of unique) {
      const tf = c.get(term) ?? 0;
      if (tf === 0) continue;
      const d = df.get(term) ?? 0;
      const idf = Math.log(1 + (n - d + 0.5) / (d + 0.5));
      score += (idf * tf * (k1 + 1)) / (tf + k1 * (1 - b + (b * len) / avg));
    }
    return score;
  });
}

/** The marker put in place of the messages a compaction left out. */
export function markerMessage(dropped: number, tokens: number, tier?: Tier): Message {
  return {
    role: "system",
    content:
      `${HANDOFF_MARKER_PREFIX} ${dropped} earlier message${dropped === 1 ? "" : "s"} of this ` +
      `conversation (about ${tokens} tokens) were left out here by the mesh to fit the ` +
      `${tier ?? "model"} tier's token budget. Kept: the first turns, those that share terms ` +
      "with the last user message, and the most recent ones.",
  };
}

const MARKER_TOKENS = messagesTokens([markerMessage(99_999, 9_999_999, "heavy")]);

/** Which units of the middle a budget keeps, and where the tail starts. */
interface Plan {
  units: Unit[];
  keep: Set<Unit>;
  tailStart: number;
  dropped: Unit[];
}

function plan(messages: readonly Message[], options: SelectOptions, extra: number): Plan {
  const reserve = options.reserve ?? 0;
  let tailStart = -1;
  for (let i = messages.length - 1; i >= 0; i--) {
    if (messages[i]?.role === "user") {
      tailStart = i;
      break;
    }
  }
  if (tailStart === -1) tailStart = Math.max(0, messages.length - 1);
  const units = unitsOf(messages, tailStart);
  const keep = new Set<Unit>(units.filter((u) => u.pinned));
  const candidates = units.filter((u) => !u.pinned);
  const pinned =
    estimateInputTokens(messages.slice(tailStart)) +
    [...keep].reduce((sum, u) => sum + u.tokens, 0) +
    reserve +
    extra;
  const avail = Math.max(0, options.budget - pinned);

  let used = 0;
  // The head: the conversation's first turns, contiguous, so the prefix stays the same. Its
  // size follows the budget alone (not what this job's last turn or context leave), so that the
  // jobs of a conversation keep the same head; only a tight job makes it smaller.
  const headBudget = Math.min(
    avail,
    Math.floor(options.budget * (options.headShare ?? HEAD_SHARE)),
  );
  let firstAfterHead = 0;
  for (const unit of candidates) {
    if (used + unit.tokens > headBudget) break;
    keep.add(unit);
    used += unit.tokens;
    firstAfterHead++;
  }
  const rest = candidates.slice(firstAfterHead);
  // Old turns the last question needs: those sharing its rarer terms, best first.
  const question = terms(messages.slice(tailStart).map(messageText).join(" "));
  const scores = bm25(
    question,
    rest.map((u) => u.text),
  );
  const ranked = rest
    .map((unit, i) => ({ unit, score: scores[i] ?? 0, i }))
    .filter((r) => r.score > 0)
    .sort((a, b) => b.score - a.score || a.i - b.i);
  const relevanceBudget = used + Math.floor((avail - used) * RELEVANCE_SHARE);
  for (const { unit } of ranked) {
    if (used + unit.tokens > relevanceBudget) continue;
    keep.add(unit);
    used += unit.tokens;
  }
  // The most recent turns, newest first, as long as they fit.
  for (let i = rest.length - 1; i >= 0; i--) {
    const unit = rest[i] as Unit;
    if (keep.has(unit)) continue;
    if (used + unit.tokens > avail) break;
    keep.add(unit);
    used += unit.tokens;
  }
  // What is left over goes to more of the relevant ones.
  for (const { unit } of ranked) {
    if (keep.has(unit) || used + unit.tokens > avail) continue;
    keep.add(unit);
    used += unit.tokens;
  }
  return { units, keep, tailStart, dropped: units.filter((u) => !keep.has(u)) };
}

/** The messages a plan keeps, with `stand_in` where the first dropped unit was. */
function assemble(messages: readonly Message[], p: Plan, standIn: Message): Message[] {
  const out: Message[] = [];
  let placed = false;
  for (const unit of p.units) {
    if (p.keep.has(unit)) out.push(...messages.slice(unit.start, unit.end));
    else if (!placed) {
      out.push(standIn);
      placed = true;
    }
  }
  out.push(...messages.slice(p.tailStart));
  return out;
}

function unchanged(messages: readonly Message[], options: SelectOptions): Compacted {
  const tokens = promptTokens(messages, options.reserve);
  return {
    messages: [...messages],
    report: {
      strategy: "none",
      budget_tokens: options.budget,
      tokens_before: tokens,
      tokens_after: tokens,
      turns_dropped: 0,
      turns_summarised: 0,
    },
  };
}

const countMessages = (units: readonly Unit[]) =>
  units.reduce((sum, u) => sum + (u.end - u.start), 0);
const countTokens = (units: readonly Unit[]) => units.reduce((sum, u) => sum + u.tokens, 0);

/**
 * `select`: fits the conversation into the budget without a model call. Under budget, the
 * messages come back as they are. Over it, the middle is cut down as the module's doc says and
 * ONE marker stands where the left-out messages were. Deterministic: the same messages and
 * options give the same answer.
 */
export function selectHandoff(messages: readonly Message[], options: SelectOptions): Compacted {
  const before = promptTokens(messages, options.reserve);
  if (before <= options.budget) return unchanged(messages, options);
  const p = plan(messages, options, MARKER_TOKENS);
  if (p.dropped.length === 0) return unchanged(messages, options);
  const dropped = countMessages(p.dropped);
  const out = assemble(messages, p, markerMessage(dropped, countTokens(p.dropped), options.tier));
  return {
    messages: out,
    report: {
      strategy: "select",
      budget_tokens: options.budget,
      tokens_before: before,
      tokens_after: promptTokens(out, options.reserve),
      turns_dropped: dropped,
      turns_summarised: 0,
    },
  };
}

/** What `summarizeHandoff` needs of a `ModelRouter`. */
export interface SummaryRouter {
  chat(tier: Tier, request: ChatRequest, ctx: TierCallContext): Promise<TierCallResult>;
}

export interface SummarizeOptions extends SelectOptions {
  router: SummaryRouter;
  /** The summary call's context: the stage, the job's remaining budget, its cache choice. */
  call: TierCallContext;
  /** The light tier's own handoff budget: a transcript above it is not sent, `select` is used. */
  lightBudget?: number;
  /** Tokens the summary may take (default: a sixth of the budget, 64 to 512). */
  summaryTokens?: number;
}

/**
 * Compacts with the configured strategy: `select`, or `summarize` (one light call, falling back to
 * `select`). Every stage that forwards a conversation goes through here.
 */
export function compactHandoff(
  messages: readonly Message[],
  strategy: CompactionStrategy,
  options: SummarizeOptions,
): Promise<Compacted> {
  return strategy === "summarize"
    ? summarizeHandoff(messages, options)
    : Promise.resolve(selectHandoff(messages, options));
}

export const SUMMARY_INSTRUCTION =
  "You summarise part of a conversation for another model that will not see it. Write a short " +
  "summary in plain sentences. Keep every name, number, identifier, date, decision and fact " +
  "stated; leave out greetings and repetition. Do not answer anything.";

/**
 * `summarize`: like `select`, but the left-out messages are summarised by one light-tier call
 * and the summary stands where the marker would. The call's usage comes back to be put on the
 * envelope. When the call fails, answers nothing, or its transcript exceeds the light tier's own
 * handoff budget, the result is `select`'s, with `fallback` saying why.
 */
export async function summarizeHandoff(
  messages: readonly Message[],
  options: SummarizeOptions,
): Promise<Compacted> {
  const before = promptTokens(messages, options.reserve);
  if (before <= options.budget) return unchanged(messages, options);
  const summaryTokens =
    options.summaryTokens ?? Math.min(512, Math.max(64, Math.floor(options.budget / 6)));
  const p = plan(messages, options, MARKER_TOKENS + summaryTokens);
  if (p.dropped.length === 0) return unchanged(messages, options);
  const fallback = (why: string): Compacted => {
    const selected = selectHandoff(messages, options);
    return { ...selected, report: { ...selected.report, fallback: why } };
  };
  const transcript = p.dropped
    .flatMap((u) => messages.slice(u.start, u.end))
    .map((m) => `${m.role}: ${messageText(m).trim()}`)
    .join("\n");
  const request: ChatRequest = {
    messages: [
      { role: "system", content: SUMMARY_INSTRUCTION },
      { role: "user", content: transcript },
    ],
    params: { temperature: 0, max_tokens: summaryTokens },
  };
  if (options.lightBudget !== undefined && promptTokens(request.messages) > options.lightBudget) {
    return fallback(
      `the transcript to summarise exceeds the light tier's handoff budget of ${options.lightBudget} tokens`,
    );
  }
  let call: TierCallResult;
  try {
    call = await options.router.chat("light", request, options.call);
  } catch (error) {
    if (options.call.signal?.aborted) throw error;
    const why = error instanceof Error ? error.message : String(error);
    return fallback(`the summary call failed: ${why}`);
  }
  const text = (call.result.message.content ?? "").trim();
  if (!text) return { ...fallback("the summary call answered nothing"), usage: call.usage };
  const dropped = countMessages(p.dropped);
  const summary = clip(text, summaryTokens);
  const standIn: Message = {
    role: "system",
    content:
      `${HANDOFF_MARKER_PREFIX} ${dropped} earlier message${dropped === 1 ? "" : "s"} of this ` +
      `conversation (about ${countTokens(p.dropped)} tokens) were left out here by the mesh to ` +
      `fit the ${options.tier ?? "model"} tier's token budget. A summary of them:\n${summary}`,
  };
  const out = assemble(messages, p, standIn);
  return {
    messages: out,
    usage: call.usage,
    report: {
      strategy: "summarize",
      budget_tokens: options.budget,
      tokens_before: before,
      tokens_after: promptTokens(out, options.reserve),
      turns_dropped: dropped,
      turns_summarised: dropped,
    },
  };
}

/** `text` cut to about `tokens` tokens, with an ellipsis when cut. */
function clip(text: string, tokens: number): string {
  const chars = tokens * 4;
  return text.length <= chars ? text : `${text.slice(0, Math.max(0, chars - 1))}…`;
}

/**
 * Tool outputs cut to what the draft used: an output over `maxTokens` keeps its first line (a
 * header, often) and the lines that share a number or a rarer word with the draft, and says how
 * much it left out; with no draft, or no line the draft used, its head. Failed runs (their error
 * is what matters) and short outputs stay as they are.
 */
export function cutToolOutputs(
  runs: readonly ToolRun[],
  draft: string | undefined,
  maxTokens: number,
): { runs: ToolRun[]; cut: number } {
  const used = new Set(terms(draft ?? ""));
  let cut = 0;
  const out = runs.map((run) => {
    if (run.error || estimateTokens(run.output) <= maxTokens) return run;
    cut++;
    return { ...run, output: cutOutput(run.output, used, maxTokens) };
  });
  return { runs: out, cut };
}

function cutOutput(output: string, used: ReadonlySet<string>, maxTokens: number): string {
  const lines = output.split("\n");
  const total = estimateTokens(output);
  // A term of the draft picks a line only if it is distinctive there: in at most a tenth of
  // the lines (a column name or a word on every row says nothing about which row was used).
  const lineTerms = lines.map((line) => new Set(terms(line)));
  const seen = new Map<string, number>();
  for (const set of lineTerms) {
    for (const t of set) if (used.has(t)) seen.set(t, (seen.get(t) ?? 0) + 1);
  }
  const limit = Math.max(2, Math.floor(lines.length / 10));
  const picked = lines
    .map((line, i) => ({ line, i }))
    .filter(
      ({ i }) =>
        i > 0 && [...(lineTerms[i] ?? [])].some((t) => used.has(t) && (seen.get(t) ?? 0) <= limit),
    );
  if (picked.length > 0) {
    const kept = [lines[0] ?? "", ...picked.map((p) => p.line)];
    const text = clip(kept.join("\n"), maxTokens);
    return (
      `${text}\n${HANDOFF_MARKER_PREFIX} output cut by the mesh to the lines the draft used: ` +
      `${kept.length} of ${lines.length} lines (about ${estimateTokens(text)} of ${total} tokens).`
    );
  }
  const head = clip(output, maxTokens);
  return (
    `${head}\n${HANDOFF_MARKER_PREFIX} output cut by the mesh to its head: about ` +
    `${estimateTokens(head)} of ${total} tokens.`
  );
}
