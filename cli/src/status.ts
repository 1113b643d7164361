import { Buckets, JobStatus, type ServiceName, ServiceNames } from "@handoff/contracts";
import { type StageQueue, stageQueues } from "@handoff/mesh";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { Svcm } from "@nats-io/services";
import { formatAge, readStream, reportCommand, table } from "./operator.js";
import type { Io } from "./progress.js";

export const STATUS_USAGE = `handoff status [--json] [--nats <url>] [--wait <ms>]

The whole mesh at a glance:
  instances      every instance answering the NATS service API ($SRV.INFO and $SRV.STATS):
                 service, id, version, uptime and its counters
  stages         per stage, from its JetStream consumer: lag (jobs no replica has been handed
                 yet), ack pending (in progress), redelivered (of those, delivered more than
                 once), and dead letters kept (see handoff dlq list)
  jobs           job records in the ${Buckets.jobs} bucket (24 hours) by status

  --json         one JSON object, for scripts
  --nats <url>   NATS server (default $NATS_URL, the config's nats.url, or nats://127.0.0.1:4222)
  --wait <ms>    how long to collect service API answers (default 1000)

Credentials and TLS come from the NATS_* variables or the config's \`nats\` section
($HANDOFF_CONFIG), as for the services.
`;

export interface InstanceStatus {
  name: string;
  id: string;
  version: string;
  /** When the instance started (ISO time), from $SRV.STATS. */
  started?: string;
  /** Its counters, as its stats handler returns them. */
  stats: Record<string, unknown>;
}

export type JobCounts = Record<JobStatus, number> & {
  /** Records that did not parse. */
  unreadable: number;
};

export interface StatusReport {
  nats: string;
  instances: InstanceStatus[];
  /** Services no instance of which answered. */
  missing: ServiceName[];
  stages: StageQueue[];
  dead_letters: number;
  jobs: JobCounts;
}

const KV_OPERATION = "KV-Operation";

/** Every Handoff instance answering `$SRV.INFO`, with what it answers to `$SRV.STATS`. */
export async function serviceInstances(
  nc: NatsConnection,
  waitMs = 1_000,
): Promise<InstanceStatus[]> {
  const client = new Svcm(nc).client({ strategy: "timer", maxWait: waitMs });
  const ours = new Set<string>(ServiceNames);
  const [infos, stats] = await Promise.all([
    (async () => {
      const all = [];
      for await (const info of await client.info()) all.push(info);
      return all;
    })(),
    (async () => {
      const all = [];
      for await (const entry of await client.stats()) all.push(entry);
      return all;
    })(),
  ]);
  const statsById = new Map(stats.map((entry) => [entry.id, entry]));
  const instances: InstanceStatus[] = [];
  // An instance that answered only one of the two still counts.
  const seen = new Set<string>();
  for (const entry of [...infos, ...stats]) {
    if (!ours.has(entry.name) || seen.has(entry.id)) continue;
    seen.add(entry.id);
    const stat = statsById.get(entry.id);
    const data = stat?.endpoints?.find((endpoint) => endpoint.data !== undefined)?.data;
    instances.push({
      name: entry.name,
      id: entry.id,
      version: entry.version,
      ...(stat?.started ? { started: stat.started } : {}),
      stats: data && typeof data === "object" ? (data as Record<string, unknown>) : {},
    });
  }
  const order = (name: string) => ServiceNames.indexOf(name as ServiceName);
  return instances.sort((a, b) => order(a.name) - order(b.name) || a.id.localeCompare(b.id));
}

/** Job records by status, read from the bucket's stream in batches. */
export async function jobCounts(nc: NatsConnection, io?: Io): Promise<JobCounts> {
  const counts: JobCounts = { queued: 0, running: 0, succeeded: 0, failed: 0, unreadable: 0 };
  const stream = `KV_${Buckets.jobs}`;
  const jsm = await jetstreamManager(nc, { checkAPI: false });
  const exists = await jsm.streams.info(stream).then(
    () => true,
    () => false,
  );
  if (!exists) return counts;
  for await (const msg of readStream(jetstream(nc), stream, {
    filter: `$KV.${Buckets.jobs}.>`,
    lastPerSubject: true,
    title: "reading job records",
    ...(io ? { io } : {}),
  })) {
    const operation = msg.headers?.get(KV_OPERATION);
    if (operation === "DEL" || operation === "PURGE" || msg.data.length === 0) continue;
    try {
      const status = JobStatus.safeParse(msg.json<{ status?: unknown }>().status);
      if (status.success) counts[status.data]++;
      else counts.unreadable++;
    } catch {
      counts.unreadable++;
    }
  }
  return counts;
}

export async function collectStatus(
  nc: NatsConnection,
  servers: string,
  options: { waitMs?: number; io?: Io } = {},
): Promise<StatusReport> {
  const jsm = await jetstreamManager(nc);
  const [instances, stages, jobs] = await Promise.all([
    serviceInstances(nc, options.waitMs),
    stageQueues(jsm),
    jobCounts(nc, options.io),
  ]);
  const running = new Set(instances.map((instance) => instance.name));
  return {
    nats: servers,
    instances,
    missing: ServiceNames.filter((name) => !running.has(name)),
    stages,
    dead_letters: stages.reduce((sum, stage) => sum + stage.dead_letters, 0),
    jobs,
  };
}

function counters(stats: Record<string, unknown>): string {
  const parts = Object.entries(stats)
    .filter(([, value]) => typeof value === "number" || typeof value === "string")
    .map(([key, value]) => `${key.replaceAll("_", " ")} ${value}`);
  return parts.length > 0 ? parts.join(", ") : "-";
}

/** The report for people. */
export function formatStatus(report: StatusReport, now: Date = new Date()): string[] {
  const lines = [`NATS ${report.nats}`, "", `instances (${report.instances.length})`];
  if (report.instances.length > 0) {
    const rows = report.instances.map((instance) => [
      instance.name,
      instance.id,
      instance.version,
      instance.started ? formatAge(now.getTime() - Date.parse(instance.started)) : "?",
      counters(instance.stats),
    ]);
    lines.push(
      ...table(["SERVICE", "INSTANCE", "VERSION", "UP", "COUNTERS"], rows).map((l) => `  ${l}`),
    );
  }
  if (report.missing.length > 0) {
    lines.push(`  no instance answers for: ${report.missing.join(", ")}`);
  }
  lines.push("", "stages (lag: waiting for a replica; ack pending: in progress)");
  const rows = report.stages.map((queue) =>
    queue.consumer
      ? [
          queue.stage,
          String(queue.lag),
          String(queue.ack_pending),
          String(queue.redelivered),
          String(queue.dead_letters),
        ]
      : [queue.stage, "-", "-", "-", String(queue.dead_letters), "(no consumer: never started)"],
  );
  lines.push(
    ...table(
      ["STAGE", "LAG", "ACK PENDING", "REDELIVERED", "DEAD LETTERS"],
      rows,
      new Set([1, 2, 3, 4]),
    ).map((l) => `  ${l}`.trimEnd()),
  );
  if (report.dead_letters > 0) {
    lines.push(`  ${report.dead_letters} dead letters: handoff dlq list`);
  }
  const { jobs } = report;
  lines.push(
    "",
    `jobs (records in ${Buckets.jobs})`,
    `  queued ${jobs.queued}   running ${jobs.running}   succeeded ${jobs.succeeded}   failed ${jobs.failed}` +
      (jobs.unreadable > 0 ? `   unreadable ${jobs.unreadable}` : ""),
  );
  return lines;
}

export function statusMain(
  argv: string[],
  io: Io,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  return reportCommand(
    argv,
    io,
    env,
    { usage: STATUS_USAGE, name: "handoff-status", what: "status" },
    (connection, waitMs) => collectStatus(connection.nc, connection.servers, { waitMs, io }),
    (report) => formatStatus(report),
  );
}
