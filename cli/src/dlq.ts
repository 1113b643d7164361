import { readFile } from "node:fs/promises";
import {
  Buckets,
  DeadLetter,
  Headers,
  isTerminal,
  type JobRecord,
  Stage,
  Streams,
  Subjects,
} from "@handoff/contracts";
import { isApiError, JobStore, loadMeshSigner, type MeshSigner } from "@handoff/mesh";
import { JetStreamApiCodes, jetstream, jetstreamManager, type StoredMsg } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { type MsgHdrs, type NatsConnection, headers as natsHeaders } from "@nats-io/nats-core";
import { parseCommand } from "./args.js";
import { connectOperator, readStream, table } from "./operator.js";
import type { Io } from "./progress.js";

export const DLQ_USAGE = `handoff dlq list [--stage <stage>] [--json]
handoff dlq show <seq> [--json]
handoff dlq replay <seq> [--deadline <duration>] [--payload <file>] [--json]

Dead letters are the payloads a stage could not process, kept on handoff.v1.dlq.<stage> (stream
${Streams.deadLetters}, 14 days) with the reason, the error and the payload exactly as received.

  list           one line each: sequence, time, stage, reason, job, deliveries, error
  show <seq>     the whole dead letter as JSON, payload included (parsed when it is JSON;
                 --json prints it exactly as stored, as a string)
  replay <seq>   publish the payload again to the stage that dead-lettered it, with a new dedupe
                 id and the original trace context, re-open the job's record, then delete the
                 dead letter so it cannot be replayed twice. The replay is signed when the mesh
                 signs (mesh.signing_key_env in $HANDOFF_CONFIG, the key in this shell), except
                 for an unauthentic one: that is never signed, whatever it carries.

  --stage <stage>        list only this stage's (classifier, tool-executor, heavy-reasoner)
  --deadline <duration>  replay with a new deadline this long from now (30s, 10m, 2h): a job
                         whose deadline has passed is refused on arrival, so replay refuses it
  --payload <file>       replay this payload instead (a fixed one); it is signed like any replay
  --json                 machine-readable output
  --nats <url>           NATS server (default $NATS_URL, the config's nats.url, or
                         nats://127.0.0.1:4222)

Credentials and TLS come from the NATS_* variables or the config's \`nats\` section.
`;

/** Marks a replayed message with the dead letter it came from. */
export const REPLAY_OF_HEADER = "Handoff-Replay-Of";
/**
 * The original message's `Handoff-Signature`, when the dead letter kept it: it stays valid for the
 * same subject and payload, so a replay carries it without the operator holding the mesh key.
 */
export const ORIGINAL_SIGNATURE_HEADER = "Handoff-Original-Signature";
const TRACE_HEADERS = ["traceparent", "tracestate", "baggage"] as const;

/** One row of `dlq list`. */
export interface DeadLetterRow {
  seq: number;
  time: string;
  stage: string;
  reason: string;
  job_id?: string;
  deliveries?: number;
  error: string;
}

function parseLetter(text: string): DeadLetter | undefined {
  try {
    const parsed = DeadLetter.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

export function deadLetterRow(
  seq: number,
  storedAt: Date,
  text: string,
  subject: string,
): DeadLetterRow {
  const letter = parseLetter(text);
  if (!letter) {
    return {
      seq,
      time: storedAt.toISOString(),
      stage: subject.slice(`${Subjects.prefix}.dlq.`.length),
      reason: "?",
      error: "not a dead letter this version reads",
    };
  }
  return {
    seq,
    time: letter.recorded_at,
    stage: letter.stage,
    reason: letter.reason,
    ...(letter.job_id ? { job_id: letter.job_id } : {}),
    deliveries: letter.deliveries,
    error: `${letter.error.code}: ${letter.error.message}`,
  };
}

export async function listDeadLetters(
  nc: NatsConnection,
  stage: Stage | undefined,
  io?: Io,
): Promise<DeadLetterRow[]> {
  const jsm = await jetstreamManager(nc);
  const exists = await jsm.streams.info(Streams.deadLetters).then(
    () => true,
    () => false,
  );
  if (!exists) return [];
  const rows: DeadLetterRow[] = [];
  for await (const msg of readStream(jetstream(nc), Streams.deadLetters, {
    filter: stage ? Subjects.deadLetter(stage) : Subjects.allDeadLetters,
    title: "reading dead letters",
    ...(io ? { io } : {}),
  })) {
    rows.push(deadLetterRow(msg.seq, msg.time, msg.string(), msg.subject));
  }
  return rows;
}

export function formatRows(rows: readonly DeadLetterRow[]): string[] {
  if (rows.length === 0) return ["no dead letters"];
  const clip = (text: string, width: number) =>
    text.length > width ? `${text.slice(0, width - 1)}…` : text;
  return [
    ...table(
      ["SEQ", "TIME", "STAGE", "REASON", "JOB", "DELIVERIES", "ERROR"],
      rows.map((row) => [
        String(row.seq),
        row.time.replace(/\.\d+Z$/, "Z"),
        row.stage,
        row.reason,
        row.job_id ?? "-",
        row.deliveries === undefined ? "-" : String(row.deliveries),
        clip(row.error.replaceAll("\n", " "), 100),
      ]),
      new Set([0, 5]),
    ),
    "",
    `${rows.length} dead letter${rows.length === 1 ? "" : "s"}; handoff dlq show <seq> for one, handoff dlq replay <seq> to run it again`,
  ];
}

async function getLetter(
  nc: NatsConnection,
  seq: number,
): Promise<{ stored: StoredMsg; letter: DeadLetter } | string> {
  const jsm = await jetstreamManager(nc);
  const stored = await jsm.streams.getMessage(Streams.deadLetters, { seq }).catch((error) => {
    // No stream: nothing was ever dead-lettered.
    if (isApiError(error, JetStreamApiCodes.StreamNotFound)) return null;
    throw error;
  });
  if (!stored?.subject.startsWith(`${Subjects.prefix}.dlq.`)) {
    return `no dead letter with sequence ${seq} (replayed, expired, or never there): see handoff dlq list`;
  }
  const letter = parseLetter(stored.string());
  if (!letter) return `message ${seq} on ${stored.subject} is not a dead letter this version reads`;
  return { stored, letter };
}

function headerRecord(h: MsgHdrs | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of h?.keys() ?? []) out[key] = h?.get(key) ?? "";
  return out;
}

/** The whole dead letter with where it is stored; `exact` keeps the payload as stored text. */
export function showLetter(stored: StoredMsg, letter: DeadLetter, exact: boolean) {
  let payload: unknown = letter.payload;
  if (!exact) {
    try {
      payload = JSON.parse(letter.payload);
    } catch {
      // Not JSON: shown as the text it is.
    }
  }
  return {
    seq: stored.seq,
    stored_at: stored.time.toISOString(),
    dlq_subject: stored.subject,
    headers: headerRecord(stored.header),
    ...letter,
    payload,
  };
}

const DURATION = /^(\d+(?:\.\d+)?)(s|m|h|d)$/;
const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** What a replay did, for people and for `--json`. */
export interface ReplayOutcome {
  seq: number;
  stage: Stage;
  reason: DeadLetter["reason"];
  subject: string;
  job_id?: string;
  /** The job stream's sequence of the replayed message. */
  stream_sequence: number;
  /** JetStream dropped it: the same dead letter was replayed within the dedupe window. */
  duplicate: boolean;
  msg_id: string;
  trace?: string;
  /** `kept`: the original's signature; `signed`: with this shell's mesh key; `unsigned`. */
  signature: "kept" | "signed" | "unsigned";
  payload_changed: boolean;
  /** The job's record was terminal and is `queued` again, so the stage runs the job. */
  record_reopened: boolean;
  deleted: boolean;
  notes: string[];
}

export interface ReplayOptions {
  /** New deadline, ms from now. */
  deadlineMs?: number;
  /** A payload to send instead of the stored one. */
  payload?: string;
  signer: MeshSigner;
  now?: Date;
}

/** The job id a payload names, when it is an object with one. */
function payloadId(payload: string): string | undefined {
  try {
    const value = JSON.parse(payload) as { id?: unknown };
    return typeof value?.id === "string" ? value.id : undefined;
  } catch {
    return undefined;
  }
}

/** The envelope's deadline, when the payload is an envelope with one. */
function envelopeDeadline(payload: string): string | undefined {
  try {
    const value = JSON.parse(payload) as { budget?: { deadline?: unknown } };
    return typeof value?.budget?.deadline === "string" ? value.budget.deadline : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Republishes a dead letter's payload to the subject it was dead-lettered from. The trace headers
 * come along; the dedupe id is new (`dlq-replay:<seq>:<stored ms>`), so the original forward's id
 * does not drop it, while a second replay of the same letter is dropped. A letter recorded as
 * `unauthentic` is never signed. Deletes the dead letter once JetStream has stored the replay.
 */
export async function replayDeadLetter(
  nc: NatsConnection,
  seq: number,
  options: ReplayOptions,
): Promise<ReplayOutcome | string> {
  const found = await getLetter(nc, seq);
  if (typeof found === "string") return found;
  const { stored, letter } = found;
  const now = options.now ?? new Date();
  const notes: string[] = [];
  if (letter.subject !== Subjects.job(letter.stage)) {
    return `dead letter ${seq} came from ${letter.subject}, not from a stage's job subject; it is not replayed`;
  }
  let payload = options.payload ?? letter.payload;
  if (options.deadlineMs !== undefined) {
    let envelope: { budget?: { deadline?: string } };
    try {
      envelope = JSON.parse(payload);
    } catch {
      return `--deadline needs a payload that is a job envelope, and dead letter ${seq}'s is not JSON`;
    }
    if (!envelope || typeof envelope !== "object" || !envelope.budget) {
      return `--deadline needs a payload that is a job envelope (with a budget), and dead letter ${seq}'s is not`;
    }
    envelope.budget.deadline = new Date(now.getTime() + options.deadlineMs).toISOString();
    payload = JSON.stringify(envelope);
  }
  const deadline = envelopeDeadline(payload);
  if (deadline && Date.parse(deadline) <= now.getTime()) {
    return `the job's deadline passed at ${deadline}, so ${letter.stage} would fail it on arrival; replay it with a new one: handoff dlq replay ${seq} --deadline 10m`;
  }
  const changed = payload !== letter.payload;

  const subject = letter.subject;
  const h = natsHeaders();
  for (const name of TRACE_HEADERS) {
    const value = stored.header.get(name);
    if (value) h.set(name, value);
  }
  h.set(Headers.stage, letter.stage);
  if (letter.job_id) h.set(Headers.jobId, letter.job_id);
  h.set(REPLAY_OF_HEADER, String(seq));
  let signature: ReplayOutcome["signature"] = "unsigned";
  if (letter.reason === "unauthentic") {
    notes.push(
      "not signed: it was dead-lettered as unauthentic, and a replay never signs what the mesh did not; a stage that checks signatures dead-letters it again",
    );
  } else {
    // A dead letter that kept the original's signature: still valid for the same subject and payload.
    const kept = stored.header.get(ORIGINAL_SIGNATURE_HEADER);
    if (kept && !changed) {
      h.set(Headers.signature, kept);
      signature = "kept";
    } else {
      const value = options.signer.signature(subject, payload);
      if (value !== undefined) {
        h.set(Headers.signature, value);
        signature = "signed";
      } else {
        notes.push(
          "not signed: no mesh.signing_key_env in this shell's config; if the stages check signatures, they dead-letter it again as unauthentic",
        );
      }
    }
  }

  // A dead-lettered job ended (failed); a stage acks an ended job without running it. Re-open
  // its record, but only for a job the mesh named itself: an unauthentic payload may name any job.
  const store =
    letter.job_id && letter.reason !== "unauthentic" && payloadId(payload) === letter.job_id
      ? new JobStore(await new Kvm(nc).open(Buckets.jobs))
      : undefined;
  let previous: JobRecord | undefined;
  let reopened = false;
  if (store && letter.job_id) {
    const id = letter.job_id;
    reopened = await store.update(id, (current) => {
      if (!current || !isTerminal(current.status)) return undefined;
      previous = current;
      const { error: _error, result: _result, ...rest } = current;
      return { ...rest, status: "queued", stage: letter.stage, updated_at: now.toISOString() };
    });
  }

  const msgID = `dlq-replay:${seq}:${stored.time.getTime()}`;
  // Nothing was replayed: the record goes back to how it was.
  const restore = async () => {
    const before = previous;
    if (store && before) await store.update(before.id, () => before).catch(() => false);
    reopened = false;
  };
  let ack: Awaited<ReturnType<ReturnType<typeof jetstream>["publish"]>>;
  try {
    ack = await jetstream(nc).publish(subject, payload, { msgID, headers: h });
  } catch (error) {
    await restore();
    throw error;
  }
  if (ack.duplicate) {
    await restore();
    notes.push(
      "JetStream dropped it as a duplicate: this dead letter was replayed moments ago; that replay stands",
    );
  }
  const jsm = await jetstreamManager(nc);
  const deleted = await jsm.streams.deleteMessage(Streams.deadLetters, seq).catch(() => false);
  if (!deleted)
    notes.push(
      `dead letter ${seq} could not be deleted; the dedupe id stops a second replay for a while`,
    );
  const trace = stored.header.get("traceparent");
  return {
    seq,
    stage: letter.stage,
    reason: letter.reason,
    subject,
    ...(letter.job_id ? { job_id: letter.job_id } : {}),
    stream_sequence: ack.seq,
    duplicate: ack.duplicate,
    msg_id: msgID,
    ...(trace ? { trace: trace.split("-")[1] ?? trace } : {}),
    signature,
    payload_changed: changed,
    record_reopened: reopened,
    deleted,
    notes,
  };
}

export function formatReplay(outcome: ReplayOutcome): string[] {
  const lines = [
    `replayed dead letter ${outcome.seq} (${outcome.stage}, ${outcome.reason}${outcome.job_id ? `, job ${outcome.job_id}` : ""}) to ${outcome.subject}` +
      (outcome.duplicate ? "" : ` as job stream message ${outcome.stream_sequence}`),
    `  dedupe id ${outcome.msg_id}${outcome.trace ? `; trace ${outcome.trace}` : ""}; ${
      outcome.signature === "kept"
        ? "the original signature kept"
        : outcome.signature === "signed"
          ? "signed with the mesh key"
          : "unsigned"
    }${outcome.payload_changed ? "; payload changed" : ""}`,
  ];
  if (outcome.record_reopened)
    lines.push(`  job ${outcome.job_id}: record re-opened (queued at ${outcome.stage})`);
  if (outcome.deleted) lines.push(`  dead letter ${outcome.seq} deleted`);
  for (const note of outcome.notes) lines.push(`  note: ${note}`);
  return lines;
}

function parseSeq(text: string | undefined): number | undefined {
  if (text === undefined || !/^\d+$/.test(text)) return undefined;
  const seq = Number(text);
  return Number.isSafeInteger(seq) && seq > 0 ? seq : undefined;
}

export async function dlqMain(
  argv: string[],
  io: Io,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const parsed = parseCommand(
    argv,
    {
      stage: { type: "string" },
      json: { type: "boolean" },
      nats: { type: "string" },
      deadline: { type: "string" },
      payload: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    DLQ_USAGE,
    io,
  );
  if (typeof parsed === "number") return parsed;
  const { values, positionals } = parsed;
  const [verb, target] = positionals;
  if (verb !== "list" && verb !== "show" && verb !== "replay") {
    io.err(`${verb ? `unknown dlq command "${verb}"` : "dlq needs a command"}\n\n${DLQ_USAGE}`);
    return 2;
  }
  let stage: Stage | undefined;
  if (values.stage !== undefined) {
    const parsed = Stage.safeParse(values.stage);
    if (!parsed.success) {
      io.err(`--stage must be one of ${Stage.options.join(", ")}, got "${values.stage}"`);
      return 2;
    }
    stage = parsed.data;
  }
  const seq = parseSeq(target);
  if (verb !== "list" && seq === undefined) {
    io.err(
      `dlq ${verb} needs the dead letter's sequence number (see handoff dlq list), got ${target === undefined ? "nothing" : `"${target}"`}`,
    );
    return 2;
  }
  let deadlineMs: number | undefined;
  if (values.deadline !== undefined) {
    const match = DURATION.exec(values.deadline.trim());
    if (!match) {
      io.err(`--deadline must be a duration (30s, 10m, 2h, 1d), got "${values.deadline}"`);
      return 2;
    }
    deadlineMs = Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS];
  }
  let payload: string | undefined;
  if (values.payload !== undefined) {
    try {
      payload = (await readFile(values.payload, "utf8")).replace(/\r?\n$/, "");
    } catch (error) {
      io.err(
        `--payload ${values.payload} cannot be read: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      );
      return 2;
    }
  }

  const connection = await connectOperator(io, `handoff-dlq-${verb}`, values.nats, env);
  if (!connection) return 1;
  const { nc } = connection;
  try {
    if (verb === "list") {
      const rows = await listDeadLetters(nc, stage, io);
      if (values.json) for (const row of rows) io.out(JSON.stringify(row));
      else for (const line of formatRows(rows)) io.out(line);
      return 0;
    }
    if (verb === "show") {
      const found = await getLetter(nc, seq as number);
      if (typeof found === "string") {
        io.err(found);
        return 1;
      }
      io.out(JSON.stringify(showLetter(found.stored, found.letter, values.json === true), null, 2));
      return 0;
    }
    let signer: MeshSigner;
    try {
      signer = loadMeshSigner(connection.config.mesh, env);
    } catch (error) {
      io.err(`cannot sign the replay as the mesh does: ${(error as Error).message}`);
      return 1;
    }
    const outcome = await replayDeadLetter(nc, seq as number, {
      signer,
      ...(deadlineMs !== undefined ? { deadlineMs } : {}),
      ...(payload !== undefined ? { payload } : {}),
    });
    if (typeof outcome === "string") {
      io.err(outcome);
      return 1;
    }
    if (values.json) io.out(JSON.stringify(outcome, null, 2));
    else for (const line of formatReplay(outcome)) io.out(line);
    return 0;
  } catch (error) {
    io.err(`dlq ${verb} failed: ${(error as Error).message}`);
    return 1;
  } finally {
    await nc.close();
  }
}
