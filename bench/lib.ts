/**
 * Small pure helpers for the benchmarks: percentiles, a concurrency-limited runner that records
 * each operation's latency, summaries, ratios and a plain-text table. No I/O here, so the unit
 * tests can pin every edge case.
 */

/**
 * The `p`-th percentile (0..100) of `values` by the nearest-rank method: the smallest value such
 * that at least p% of the values are less than or equal to it. Always one of the inputs, never an
 * interpolation. `values` need not be sorted; it is not modified.
 */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) throw new Error("percentile of an empty list");
  if (!Number.isFinite(p) || p < 0 || p > 100) {
    throw new Error(`percentile must be between 0 and 100, got ${p}`);
  }
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1] as number;
}

/** What {@link runConcurrent} measured. */
export interface RunResult {
  /** Latency of each operation in milliseconds, indexed by operation number. */
  latenciesMs: number[];
  /** Wall time from the first operation's start to the last one's end. */
  elapsedMs: number;
}

/** A monotonic clock in milliseconds. */
export type Clock = () => number;

/**
 * Runs `op(0)` .. `op(n - 1)` with at most `concurrency` of them in flight, starting the next as
 * soon as one finishes, and records each one's latency. The first failure stops new operations
 * from starting; once the ones in flight have settled, it is rethrown naming the operation, so a
 * run with errors never yields numbers.
 */
export async function runConcurrent(
  n: number,
  concurrency: number,
  op: (index: number) => Promise<unknown>,
  clock: Clock = () => performance.now(),
): Promise<RunResult> {
  if (!Number.isInteger(n) || n < 0) throw new Error(`n must be an integer >= 0, got ${n}`);
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new Error(`concurrency must be an integer >= 1, got ${concurrency}`);
  }
  const latenciesMs = new Array<number>(n).fill(0);
  let next = 0;
  let failure: { index: number; error: unknown } | undefined;

  const worker = async () => {
    while (failure === undefined && next < n) {
      const index = next++;
      const started = clock();
      try {
        await op(index);
      } catch (error) {
        failure ??= { index, error };
        return;
      }
      latenciesMs[index] = clock() - started;
    }
  };

  const started = clock();
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  const elapsedMs = clock() - started;
  if (failure !== undefined) {
    const { index, error } = failure;
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(`operation ${index} of ${n} failed: ${reason}`, { cause: error });
  }
  return { latenciesMs, elapsedMs };
}

/** Throughput and latency of one measured run. */
export interface Summary {
  ops: number;
  elapsedMs: number;
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  maxMs: number;
}

export function summarize(result: RunResult): Summary {
  const { latenciesMs, elapsedMs } = result;
  if (latenciesMs.length === 0) throw new Error("cannot summarize a run of zero operations");
  const total = latenciesMs.reduce((sum, ms) => sum + ms, 0);
  return {
    ops: latenciesMs.length,
    elapsedMs,
    opsPerSec: elapsedMs > 0 ? (latenciesMs.length * 1000) / elapsedMs : Number.POSITIVE_INFINITY,
    p50Ms: percentile(latenciesMs, 50),
    p99Ms: percentile(latenciesMs, 99),
    meanMs: total / latenciesMs.length,
    maxMs: Math.max(...latenciesMs),
  };
}

/** `value / base`, or NaN when the base is zero or not finite (shown as "n/a"). */
export function ratio(value: number, base: number): number {
  return base === 0 || !Number.isFinite(base) || !Number.isFinite(value)
    ? Number.NaN
    : value / base;
}

/** A number with `digits` decimals; "n/a" for NaN and infinities. */
export function fixed(value: number, digits: number): string {
  return Number.isFinite(value) ? value.toFixed(digits) : "n/a";
}

/** Three significant digits at most, without exponent notation: 0.0123, 1.23, 12.3, 1234. */
export function sig3(value: number): string {
  if (!Number.isFinite(value)) return "n/a";
  const abs = Math.abs(value);
  if (abs >= 100) return value.toFixed(0);
  if (abs >= 10) return value.toFixed(1);
  if (abs >= 1) return value.toFixed(2);
  if (abs === 0) return "0";
  const digits = Math.min(6, 2 - Math.floor(Math.log10(abs)));
  return value.toFixed(digits);
}

/**
 * A Markdown pipe table, padded so it also reads well as plain text on a terminal. `align` marks
 * the columns to right-align (numbers); the others are left-aligned.
 */
export function formatTable(
  headers: readonly string[],
  rows: ReadonlyArray<readonly string[]>,
  align: ReadonlyArray<"left" | "right"> = [],
): string {
  for (const [i, row] of rows.entries()) {
    if (row.length !== headers.length) {
      throw new Error(`row ${i} has ${row.length} cells, the table has ${headers.length} columns`);
    }
  }
  const widths = headers.map((header, col) =>
    Math.max(3, header.length, ...rows.map((row) => (row[col] as string).length)),
  );
  const right = (col: number) => align[col] === "right";
  const line = (cells: readonly string[]) =>
    `| ${cells
      .map((cell, col) => {
        const width = widths[col] as number;
        return right(col) ? cell.padStart(width) : cell.padEnd(width);
      })
      .join(" | ")} |`;
  const rule = `|${widths
    .map((width, col) => (right(col) ? `${"-".repeat(width + 1)}:` : "-".repeat(width + 2)))
    .join("|")}|`;
  return [line(headers), rule, ...rows.map(line)].join("\n");
}

/**
 * An optional positive integer from the environment: `fallback` when unset or blank, an error
 * naming the variable when set to anything but a positive integer. `min` allows 0 (to disable).
 */
export function envInt(
  env: Readonly<Record<string, string | undefined>>,
  name: string,
  fallback: number,
  min = 1,
): number {
  const raw = env[name]?.trim();
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(value) || value < min) {
    throw new Error(`${name} must be an integer >= ${min}, got "${env[name]}"`);
  }
  return value;
}

/** A setting's text, trimmed; undefined when it is unset or blank. */
export function envText(
  env: Readonly<Record<string, string | undefined>>,
  name: string,
): string | undefined {
  return env[name]?.trim() || undefined;
}

/**
 * An optional on/off switch from the environment: off when unset or blank, `1`/`true`/`yes`/`on`
 * for on and `0`/`false`/`no`/`off` for off (any case); anything else is an error naming the
 * variable, so a typo never silently turns a mode off.
 */
export function envFlag(env: Readonly<Record<string, string | undefined>>, name: string): boolean {
  const raw = env[name]?.trim().toLowerCase();
  if (raw === undefined || raw === "") return false;
  if (["1", "true", "yes", "on"].includes(raw)) return true;
  if (["0", "false", "no", "off"].includes(raw)) return false;
  throw new Error(`${name} must be 1 or 0 (or true/false, yes/no, on/off), got "${env[name]}"`);
}

/** `promise`, or a rejection naming `what` if it has not settled within `ms`. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

/**
 * What a message seen on the server is for, from its subject and reply subject: used to count the
 * NATS messages one operation costs (publishes, deliveries, JetStream API calls, KV reads and
 * writes, pulls, acks and replies). A message JetStream delivers to a consumer keeps its original
 * subject; its `$JS.ACK.` reply subject is what tells it apart from the publish.
 */
export function classifySubject(subject: string, reply = ""): string {
  const tokens = subject.split(".");
  const [first, second, third] = tokens;
  if (reply.startsWith("$JS.ACK.")) {
    return first === "$KV" ? "KV delivery (watch)" : `JetStream delivery (${streamTopic(tokens)})`;
  }
  if (first === "_INBOX") return "reply: PubAck, KV read, ackAck… (_INBOX)";
  if (first === "$KV") return "KV write ($KV)";
  if (first === "$JS" && second === "ACK") return "ack ($JS.ACK)";
  if (first === "$JS" && second === "API") {
    if (third === "CONSUMER" && tokens[3] === "MSG" && tokens[4] === "NEXT") {
      return "pull request (CONSUMER.MSG.NEXT)";
    }
    if (third === "DIRECT" || (third === "STREAM" && tokens[3] === "MSG" && tokens[4] === "GET")) {
      return "KV read (stream get)";
    }
    return "other JetStream API";
  }
  if (first === "handoff" && third === "results") return "result (core publish)";
  if ((first === "handoff" && third === "jobs") || (first === "bench" && second === "js")) {
    return `JetStream publish (${streamTopic(tokens)})`;
  }
  if (first === "bench" && second === "rr") return "request (core)";
  return `other (${tokens.slice(0, 2).join(".")})`;
}

/** `handoff.v1.jobs.<stage>` → `<stage>`; anything else → `bench`. */
function streamTopic(tokens: readonly string[]): string {
  return tokens[0] === "handoff" && tokens[2] === "jobs" ? tokens.slice(3).join(".") : "bench";
}

/**
 * Word-wraps `text` (whitespace collapsed) to lines of at most `width` characters, prefixing the
 * first line with `first` and the others with `rest` (for Markdown bullets and quotes). A word
 * longer than the width gets a line of its own rather than being split.
 */
export function wrap(text: string, width: number, first = "", rest = first): string {
  const words = text.split(/\s+/).filter((word) => word !== "");
  const lines: string[] = [];
  let line = first;
  let empty = true;
  for (const word of words) {
    if (!empty && line.length + 1 + word.length > width) {
      lines.push(line);
      line = rest;
      empty = true;
    }
    line += empty ? word : ` ${word}`;
    empty = false;
  }
  lines.push(line);
  return lines.map((l) => l.trimEnd()).join("\n");
}
