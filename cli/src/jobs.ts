import { Buckets, JobRecord } from "@handoff/contracts";
import { Kvm } from "@nats-io/kv";
import { parseCommand } from "./args.js";
import { connectOperator } from "./operator.js";
import type { Io } from "./progress.js";

/**
 * `handoff jobs export`: the job records the mesh kept, as JSON lines a router can replay
 * (`handoff router eval --data jobs.jsonl`). Only jobs submitted while `routing.record_inputs` was
 * on carry their messages; the others are counted and skipped. Records live in the `handoff-jobs`
 * KV bucket for 24 hours.
 */

export const JOBS_USAGE = `handoff jobs export [--since <time>] [--nats <url>]

  --since <time>   only jobs created at or after this: an ISO time (2026-12-01T00:00:00Z) or a
                   duration back from now (30m, 6h, 1d); default: everything the bucket holds
  --nats <url>     NATS server (default $NATS_URL, the config's nats.url, or nats://127.0.0.1:4222)

Credentials and TLS come from the NATS_* variables or the config's \`nats\` section
($HANDOFF_CONFIG), as for the services.
Writes one JSON object a line to stdout: {"id", "source": "traffic", "created_at", "messages",
"tools", "route": {...}}. Jobs need routing.record_inputs: true in the config to carry messages.
`;

const DURATION = /^(\d+(?:\.\d+)?)(s|m|h|d)$/;
const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** `--since` as an instant: an ISO time, or a duration back from `now`. */
export function parseSince(text: string, now: Date = new Date()): Date {
  const duration = DURATION.exec(text.trim());
  if (duration) {
    const unit = duration[2] as keyof typeof UNIT_MS;
    return new Date(now.getTime() - Number(duration[1]) * UNIT_MS[unit]);
  }
  const at = new Date(text);
  if (Number.isNaN(at.getTime()) || !/^\d{4}-\d{2}-\d{2}/.test(text.trim())) {
    throw new Error(
      `--since must be an ISO time (2026-12-01T00:00:00Z) or a duration (30m, 6h, 1d), got "${text}"`,
    );
  }
  return at;
}

/** The replay row of a record, or undefined when the job kept no input. */
export function exportRow(record: JobRecord): Record<string, unknown> | undefined {
  if (!record.input) return undefined;
  return {
    id: record.id,
    source: "traffic",
    created_at: record.created_at,
    model: record.input.model,
    messages: record.input.messages,
    tools: record.input.tools,
    status: record.status,
    ...(record.route ? { route: record.route } : {}),
    cost_usd: record.cost_usd,
  };
}

export async function jobsMain(argv: string[], io: Io): Promise<number> {
  const parsed = parseCommand(
    argv,
    {
      since: { type: "string" },
      nats: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    JOBS_USAGE,
    io,
  );
  if (typeof parsed === "number") return parsed;
  const { values, positionals } = parsed;
  if (positionals[0] !== "export") {
    io.err(
      `${positionals[0] ? `unknown jobs command "${positionals[0]}"` : "jobs needs a command"}\n\n${JOBS_USAGE}`,
    );
    return 2;
  }
  let since: Date | undefined;
  try {
    since = values.since ? parseSince(values.since) : undefined;
  } catch (error) {
    io.err((error as Error).message);
    return 2;
  }
  const connection = await connectOperator(io, "handoff-jobs-export", values.nats);
  if (!connection) return 1;
  const { nc } = connection;
  let written = 0;
  let withoutInput = 0;
  let invalid = 0;
  try {
    const kv = await new Kvm(nc).open(Buckets.jobs);
    const keys: string[] = [];
    for await (const key of await kv.keys()) keys.push(key);
    keys.sort();
    for (const key of keys) {
      const entry = await kv.get(key);
      if (entry?.operation !== "PUT" || entry.length === 0) continue;
      const parsed = JobRecord.safeParse(entry.json());
      if (!parsed.success) {
        invalid++;
        continue;
      }
      if (since && Date.parse(parsed.data.created_at) < since.getTime()) continue;
      const row = exportRow(parsed.data);
      if (!row) {
        withoutInput++;
        continue;
      }
      io.out(JSON.stringify(row));
      written++;
    }
  } finally {
    await nc.close();
  }
  io.err(
    `exported ${written} job${written === 1 ? "" : "s"}` +
      (withoutInput > 0 ? `; ${withoutInput} kept no input (turn on routing.record_inputs)` : "") +
      (invalid > 0 ? `; ${invalid} records did not parse and were skipped` : ""),
  );
  return 0;
}
