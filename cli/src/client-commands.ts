import {
  type HandoffClient,
  HandoffClientError,
  httpClient,
  type JobOutcome,
  natsClient,
} from "@handoff/client";
import type { JobEvent } from "@handoff/contracts";
import { parseCommand } from "./args.js";
import { formatCompletion } from "./ask.js";
import { connectOperator } from "./operator.js";
import type { Io } from "./progress.js";

/**
 * `handoff submit`, `handoff watch` and `handoff ask --nats`: the client library's two doors from
 * the command line. Over HTTP (the gateway at `--url`) by default; `--nats` publishes on
 * `handoff.v1.requests.<tenant>` and follows `HANDOFF_EVENTS` instead.
 */

export const SUBMIT_USAGE = `handoff submit "<question>" [options]   queue a job, print its id
handoff watch <job id> [options]         print a job's events until it ends
handoff ask --nats "<question>"          ask over NATS instead of HTTP

options:
  --nats                 over NATS ($NATS_URL, with the NATS_* credentials) instead of HTTP
  --tenant <name>        NATS: the tenant the job belongs to (default: none)
  --url <gateway>        HTTP: the gateway (default $HANDOFF_URL or http://127.0.0.1:8080)
  --api-key <key>        HTTP: the API key (default $HANDOFF_API_KEY)
  --idempotency-key <k>  submit: the same key gets the same job, never a second run
  --model <name>         submit/ask: the model (default handoff)
  --timeout <ms>         watch/ask: how long to wait (default 120000)
  --json                 one JSON object a line
`;

const OPTIONS = {
  nats: { type: "boolean" },
  tenant: { type: "string" },
  url: { type: "string" },
  "api-key": { type: "string" },
  "idempotency-key": { type: "string" },
  model: { type: "string" },
  timeout: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

interface Door {
  client: HandoffClient;
  close(): Promise<void>;
}

async function openDoor(
  values: { nats?: boolean; tenant?: string; url?: string; "api-key"?: string },
  io: Io,
  env: NodeJS.ProcessEnv,
): Promise<Door | undefined> {
  if (values.nats) {
    const connection = await connectOperator(io, "handoff-cli-client", undefined, env);
    if (!connection) return undefined;
    const client = natsClient({
      nc: connection.nc,
      ...(values.tenant ? { tenant: values.tenant } : {}),
    });
    return { client, close: () => connection.nc.close() };
  }
  const apiKey = values["api-key"] ?? env.HANDOFF_API_KEY;
  const client = httpClient({
    url: values.url ?? env.HANDOFF_URL ?? "http://127.0.0.1:8080",
    ...(apiKey ? { apiKey } : {}),
  });
  return { client, close: async () => {} };
}

function timeoutOf(text: string | undefined, io: Io): number | undefined | false {
  if (text === undefined) return 120_000;
  const ms = Number(text);
  if (!Number.isInteger(ms) || ms <= 0) {
    io.err(`--timeout must be a whole number of milliseconds, got "${text}"`);
    return false;
  }
  return ms;
}

function describe(event: JobEvent): string {
  switch (event.type) {
    case "queued":
      return `${event.at}  queued${event.replayed ? " (an earlier job with this idempotency key)" : ""}`;
    case "running":
      return `${event.at}  running${event.stage ? ` at ${event.stage}` : ""}`;
    case "succeeded":
      return `${event.at}  succeeded\n\n${formatCompletion(event.completion)}`;
    case "failed":
      return `${event.at}  failed: ${event.error.code}: ${event.error.message}${(event.error.issues ?? []).map((i) => `\n  ${i.path}: ${i.message}`).join("")}`;
  }
}

function printFailure(error: unknown, io: Io): number {
  if (error instanceof HandoffClientError) {
    io.err(
      `${error.code}: ${error.message}${(error.issues ?? []).map((i) => `\n  ${i.path}: ${i.message}`).join("")}`,
    );
    return 1;
  }
  throw error;
}

/** `handoff submit` (and, with `wait`, `handoff ask --nats`). */
export async function submitMain(
  argv: string[],
  io: Io,
  env: NodeJS.ProcessEnv = process.env,
  wait = false,
): Promise<number> {
  const parsed = parseCommand(argv, OPTIONS, SUBMIT_USAGE, io);
  if (typeof parsed === "number") return parsed;
  const { values, positionals } = parsed;
  const question = positionals.join(" ").trim();
  if (!question) {
    io.err(`a question is needed\n\n${SUBMIT_USAGE}`);
    return 2;
  }
  const timeoutMs = timeoutOf(values.timeout, io);
  if (timeoutMs === false) return 2;
  const door = await openDoor(values, io, env);
  if (!door) return 1;
  try {
    const job = await door.client.submit(
      { model: values.model ?? "handoff", messages: [{ role: "user", content: question }] },
      values["idempotency-key"] ? { idempotencyKey: values["idempotency-key"] } : {},
    );
    if (!wait) {
      io.out(values.json ? JSON.stringify(job) : job.id);
      return 0;
    }
    const outcome: JobOutcome = await door.client.result(job.id, {
      ...(timeoutMs ? { timeoutMs } : {}),
    });
    if (values.json) io.out(JSON.stringify(outcome));
    else if (outcome.status === "succeeded") io.out(formatCompletion(outcome.completion));
    else io.err(`${outcome.error.code}: ${outcome.error.message}`);
    return outcome.status === "succeeded" ? 0 : 1;
  } catch (error) {
    return printFailure(error, io);
  } finally {
    await door.close();
  }
}

/** `handoff watch <id>`: the job's events as they come, until it ends. */
export async function watchMain(
  argv: string[],
  io: Io,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const parsed = parseCommand(argv, OPTIONS, SUBMIT_USAGE, io);
  if (typeof parsed === "number") return parsed;
  const { values, positionals } = parsed;
  const id = positionals[0];
  if (!id) {
    io.err(`watch needs a job id\n\n${SUBMIT_USAGE}`);
    return 2;
  }
  const timeoutMs = timeoutOf(values.timeout, io);
  if (timeoutMs === false) return 2;
  const door = await openDoor(values, io, env);
  if (!door) return 1;
  let failed = false;
  try {
    for await (const event of door.client.events(id, timeoutMs ? { timeoutMs } : {})) {
      io.out(values.json ? JSON.stringify(event) : describe(event));
      failed = event.type === "failed";
    }
    return failed ? 1 : 0;
  } catch (error) {
    return printFailure(error, io);
  } finally {
    await door.close();
  }
}
