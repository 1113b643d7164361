import { readFile } from "node:fs/promises";
import { HandoffError, type JobInput, Message, ToolDefinition, toIssues } from "@handoff/contracts";
import { z } from "zod";

/**
 * Labelled prompts, one JSON object a line: the shape of `data/routing/*.jsonl` (RouteLLM's
 * grades, reshaped) and of `handoff jobs export`. A row carries the prompt as text (`prompt`) or
 * as a conversation (`messages`, as the mesh records it). The two labels say whether the weak
 * and the strong model answered it correctly; a file without them can still be scored, and
 * evaluated for strong share and cost, but not for quality.
 */

/** `true`/`false`, or `1`/`0` as spreadsheets and pandas write them. */
const Label = z
  .union([z.boolean(), z.literal(0), z.literal(1)])
  .transform((v) => v === true || v === 1);

export const RoutingRow = z
  .object({
    id: z.union([z.string().min(1), z.number()]).transform(String),
    /** Where the prompt comes from, e.g. `mmlu`, `gsm8k`, `traffic`. */
    source: z.string().optional(),
    /** The topic within the source (an MMLU subject): folds hold out whole domains. */
    domain: z.string().optional(),
    prompt: z.string().optional(),
    messages: z.array(Message).min(1).optional(),
    tools: z.array(ToolDefinition).optional(),
    weak_correct: Label.optional(),
    strong_correct: Label.optional(),
  })
  .superRefine((row, ctx) => {
    if (row.prompt === undefined && row.messages === undefined)
      ctx.addIssue({
        code: "custom",
        path: ["prompt"],
        message: "a row needs a prompt or messages",
      });
    if ((row.weak_correct === undefined) !== (row.strong_correct === undefined))
      ctx.addIssue({
        code: "custom",
        path: [row.weak_correct === undefined ? "weak_correct" : "strong_correct"],
        message: "give both labels (weak_correct and strong_correct) or neither",
      });
  });
export type RoutingRow = z.infer<typeof RoutingRow>;

/** The weak model's own answer to a prompt: what a cascade's verifier reads. */
export const AnswerRow = z.object({
  id: z.union([z.string().min(1), z.number()]).transform(String),
  weak_response: z.string(),
  /** How the answer ended, when known: `length` means the model was cut off. */
  finish_reason: z.string().optional(),
  /** Token log-probabilities of the answer, when the provider returned them. */
  logprobs: z.array(z.number()).optional(),
  weak_correct: Label.optional(),
  strong_correct: Label.optional(),
});
export type AnswerRow = z.infer<typeof AnswerRow>;

/** A row with both labels. */
export type LabelledRow = RoutingRow & { weak_correct: boolean; strong_correct: boolean };

export function isLabelled(row: RoutingRow): row is LabelledRow {
  return row.weak_correct !== undefined && row.strong_correct !== undefined;
}

/** The conversation a row stands for, in the mesh's shape. */
export function rowInput(row: RoutingRow): Pick<JobInput, "messages" | "tools"> {
  return {
    messages: row.messages ?? [{ role: "user", content: row.prompt ?? "" }],
    tools: row.tools ?? [],
  };
}

/** At most this many bad lines are listed in one error. */
const MAX_REPORTED = 10;

/**
 * Parses JSON Lines text against a schema. Every bad line is reported by its number and the zod
 * path of what is wrong (up to ten), and duplicate ids are refused, so a typo never silently
 * drops a row from an evaluation.
 */
export function parseJsonl<T extends { id: string }>(
  text: string,
  schema: z.ZodType<T>,
  source: string,
): T[] {
  const rows: T[] = [];
  const problems: string[] = [];
  const seen = new Map<string, number>();
  let problemCount = 0;
  const lines = text.split("\n");
  lines.forEach((raw, index) => {
    const line = raw.trim();
    if (!line) return;
    const at = index + 1;
    const report = (message: string) => {
      problemCount++;
      if (problems.length < MAX_REPORTED) problems.push(`line ${at}: ${message}`);
    };
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (error) {
      report(`not JSON (${(error as Error).message})`);
      return;
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      report(
        toIssues(parsed.error)
          .map((i) => `${i.path || "(row)"}: ${i.message}`)
          .join("; "),
      );
      return;
    }
    const first = seen.get(parsed.data.id);
    if (first !== undefined) {
      report(`id "${parsed.data.id}" already appears on line ${first}`);
      return;
    }
    seen.set(parsed.data.id, at);
    rows.push(parsed.data);
  });
  if (problemCount > 0) {
    const more =
      problemCount > problems.length ? ` (and ${problemCount - problems.length} more)` : "";
    throw new HandoffError(
      "HANDOFF_ERR_VALIDATION",
      `${source} has ${problemCount} invalid line${problemCount === 1 ? "" : "s"}${more}:\n  ${problems.join("\n  ")}`,
    );
  }
  if (rows.length === 0)
    throw new HandoffError("HANDOFF_ERR_VALIDATION", `${source} holds no rows`);
  return rows;
}

async function readText(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    throw new HandoffError(
      "HANDOFF_ERR_VALIDATION",
      `cannot read the ${what} ${path}: ${(error as Error).message}`,
      { cause: error },
    );
  }
}

/** Reads a prompts file (`--data`). */
export async function readRows(path: string): Promise<RoutingRow[]> {
  return parseJsonl(await readText(path, "data file"), RoutingRow, path);
}

/** Reads a weak-answers file (`--answers`), keyed by prompt id. */
export async function readAnswers(path: string): Promise<Map<string, AnswerRow>> {
  const rows = parseJsonl(await readText(path, "answers file"), AnswerRow, path);
  return new Map(rows.map((row) => [row.id, row]));
}

/**
 * Whether every row is labelled. A file mixing labelled and unlabelled rows is refused: quality
 * over part of a file would be quietly wrong.
 */
export function labelsOf(rows: readonly RoutingRow[], source: string): boolean {
  const labelled = rows.filter(isLabelled).length;
  if (labelled === 0) return false;
  if (labelled === rows.length) return true;
  const first = rows.find((row) => !isLabelled(row));
  throw new HandoffError(
    "HANDOFF_ERR_VALIDATION",
    `${source}: ${labelled} of ${rows.length} rows are labelled; row "${first?.id}" has no weak_correct/strong_correct. Label every row or none.`,
  );
}
