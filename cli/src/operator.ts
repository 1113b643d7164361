import { type HandoffConfig, loadConfig } from "@handoff/config";
import { checkNatsServerVersion, natsConnectionOptions } from "@handoff/mesh";
import { DeliverPolicy, type JetStreamClient, type JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { parseCommand } from "./args.js";
import { type Io, progressBar } from "./progress.js";

/**
 * What the operator commands (`status`, `dlq`) share: one NATS connection made the way the
 * services make theirs (the config's `nats` section and the `NATS_*` variables: credentials, TLS,
 * inbox prefix), and a reader for whole streams.
 */
export interface OperatorConnection {
  nc: NatsConnection;
  config: HandoffConfig;
  /** The servers, for messages. */
  servers: string;
}

/**
 * Connects as the operator; on failure says why on stderr and returns undefined (exit 1). A
 * config mistake is one line naming the variable or file, as for the services.
 */
export async function connectOperator(
  io: Io,
  name: string,
  nats: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): Promise<OperatorConnection | undefined> {
  let servers = nats ?? "";
  try {
    const { config } = await loadConfig(env);
    const options = natsConnectionOptions(config.nats, env, nats);
    servers = options.servers.join(",");
    const nc = await connect({ ...options, name, maxReconnectAttempts: 0 });
    try {
      checkNatsServerVersion(nc.info?.version, `the NATS server at ${nc.getServer()}`);
    } catch (error) {
      await nc.close().catch(() => {});
      throw error;
    }
    return { nc, config, servers };
  } catch (error) {
    io.err(`cannot connect to NATS${servers ? ` at ${servers}` : ""}: ${(error as Error).message}`);
    return undefined;
  }
}

export interface ReadStreamOptions {
  /** One subject filter (nats-server 2.9 takes only one). */
  filter?: string;
  /** Only the last message of each subject (a KV bucket's current values). */
  lastPerSubject?: boolean;
  /** Progress on stderr (a bar on a terminal) when there are at least this many; default 2000. */
  progressFrom?: number;
  /** Progress title. */
  title?: string;
  io?: Io;
}

/**
 * Every message of a stream (or of one subject of it), oldest first, through an ordered consumer:
 * one round trip per batch instead of one per message. Stops at the last message that was there
 * when it started. Long reads show their progress.
 */
export async function* readStream(
  js: JetStreamClient,
  stream: string,
  options: ReadStreamOptions = {},
): AsyncGenerator<JsMsg> {
  const consumer = await js.consumers.get(stream, {
    ...(options.filter ? { filter_subjects: options.filter } : {}),
    deliver_policy: options.lastPerSubject ? DeliverPolicy.LastPerSubject : DeliverPolicy.All,
  });
  try {
    const total = (await consumer.info(true)).num_pending;
    if (total === 0) return;
    const progress =
      total >= (options.progressFrom ?? 2_000)
        ? progressBar(options.title ?? `reading ${stream}`, options.io?.progress)
        : undefined;
    let read = 0;
    let yielded = 0;
    while (read < total) {
      const batch = await consumer.fetch({
        max_messages: Math.min(500, total - read),
        expires: 5_000,
      });
      let got = 0;
      try {
        for await (const msg of batch) {
          got++;
          read++;
          yielded++;
          // The last message there was: the rest of the count was deleted meanwhile.
          if (msg.info.pending === 0) read = total;
          yield msg;
          if (read >= total) break;
        }
      } finally {
        batch.stop();
      }
      progress?.update(read, total);
      // Nothing came within the wait: the rest was deleted meanwhile (expired, replayed).
      if (got === 0) break;
    }
    progress?.done(`${yielded} messages`);
  } finally {
    await consumer.delete().catch(() => false);
  }
}

/** `12s`, `5m`, `3h 20m`, `2d 4h`: how long ago, for people. */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 ? `${h}h ${m % 60}m` : `${h}h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d}d ${h % 24}h` : `${d}d`;
}

/** Rows as aligned columns; `right` names the columns aligned right (numbers). */
export function table(
  header: readonly string[],
  rows: readonly (readonly string[])[],
  right: ReadonlySet<number> = new Set(),
): string[] {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? "").length)),
  );
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, column) => {
        const width = widths[column] ?? 0;
        // The last column is not padded: no trailing spaces.
        if (column === cells.length - 1 && !right.has(column)) return cell;
        return right.has(column) ? cell.padStart(width) : cell.padEnd(width);
      })
      .join("  ");
  return [line(header), ...rows.map(line)];
}

/**
 * A read-only report over NATS, the way `status` and `tools` work: `--json`, `--nats`, `--wait`
 * (how long to collect service answers), one operator connection, and the report printed as JSON
 * or as lines for people.
 */
export async function reportCommand<R>(
  argv: string[],
  io: Io,
  env: NodeJS.ProcessEnv,
  spec: { usage: string; name: string; what: string },
  collect: (connection: OperatorConnection, waitMs: number) => Promise<R>,
  format: (report: R) => string[],
): Promise<number> {
  const parsed = parseCommand(
    argv,
    {
      json: { type: "boolean" },
      nats: { type: "string" },
      wait: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    spec.usage,
    io,
  );
  if (typeof parsed === "number") return parsed;
  const { values } = parsed;
  const waitMs = values.wait === undefined ? 1_000 : Number(values.wait);
  if (!Number.isInteger(waitMs) || waitMs <= 0) {
    io.err(`--wait must be a whole number of milliseconds, got "${values.wait}"`);
    return 2;
  }
  const connection = await connectOperator(io, spec.name, values.nats, env);
  if (!connection) return 1;
  try {
    const report = await collect(connection, waitMs);
    if (values.json) io.out(JSON.stringify(report, null, 2));
    else for (const line of format(report)) io.out(line);
    return 0;
  } catch (error) {
    io.err(`${spec.what} failed: ${(error as Error).message}`);
    return 1;
  } finally {
    await connection.nc.close();
  }
}
