import { createHash } from "node:crypto";
import type { HandoffConfig } from "@handoff/config";
import { HandoffError, isTerminal, JobRecord } from "@handoff/contracts";
import { ensureIdempotencyBucket, type JobClient, type JobStore, unavailable } from "@handoff/mesh";
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { FastifyRequest } from "fastify";
import { z } from "zod";
import type { HeaderDoc } from "./route-schema.js";

/**
 * `Idempotency-Key` on `POST /v1/jobs` and `POST /v1/chat/completions`, as Stripe's API and the
 * IETF draft (draft-ietf-httpapi-idempotency-key-header) define it: the same key from the same
 * tenant within `gateway.idempotency_window_ms` names the same job, never a second run.
 *
 * Each key is claimed in the `handoff-idempotency` KV bucket with a create (a compare-and-set on
 * "no entry"), so of two concurrent requests with one key exactly one submits; the other reads the
 * winner's claim and waits for its job. The claim holds the job's id and a hash of the request, so
 * the same key with a different request is refused (422) instead of answered with another
 * request's job.
 */

/** The request header, as clients send it. */
export const IDEMPOTENCY_HEADER = "Idempotency-Key";
/** Set to `true` on an answer that replays an earlier request's job. */
export const REPLAYED_HEADER = "Idempotent-Replayed";
/** {@link REPLAYED_HEADER}, as the answers that may carry it document it. */
export const REPLAYED_HEADER_DOC: HeaderDoc = {
  const: "true",
  description:
    "`true` when the answer is an earlier request's job, replayed for its `Idempotency-Key`.",
};
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;
/** What a key may hold: printable ASCII, space to `~`. */
export const IDEMPOTENCY_KEY_PATTERN = /^[\x20-\x7e]+$/;

/**
 * The request's `Idempotency-Key`, if it sent one: 1 to 255 printable ASCII characters (space to
 * `~`), else a 400 naming the header.
 */
export function idempotencyKeyOf(request: FastifyRequest): string | undefined {
  const raw = request.headers["idempotency-key"];
  if (raw === undefined) return undefined;
  const value = Array.isArray(raw) ? raw.join(", ") : raw;
  if (
    value.length >= 1 &&
    value.length <= MAX_IDEMPOTENCY_KEY_LENGTH &&
    IDEMPOTENCY_KEY_PATTERN.test(value)
  ) {
    return value;
  }
  throw new HandoffError(
    "HANDOFF_ERR_VALIDATION",
    `header ${IDEMPOTENCY_HEADER} must be 1 to ${MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters`,
    {
      issues: [
        {
          path: "headers.idempotency-key",
          message: `got ${value.length} characters${value.length > 0 && !/^[\x20-\x7e]*$/.test(value) ? ", not all printable ASCII" : ""}`,
        },
      ],
    },
  );
}

/** JSON with every object's keys sorted: equal values, equal text, whatever order they came in. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v ?? null)).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

const sha256 = (text: string) => createHash("sha256").update(text, "utf8").digest("hex");

/**
 * What makes two requests "the same" for a key: the route and the JSON body, canonicalized (key
 * order and whitespace do not count). Headers do not count.
 */
export function requestHash(route: string, body: unknown): string {
  return sha256(canonicalJson({ route, body }));
}

/**
 * The bucket key of a tenant's idempotency key. Hashed: KV keys allow few characters, and an
 * idempotency key may hold any printable ASCII. The tenant is the API key's name (`""` when the
 * API is open: every caller is one tenant).
 */
export function idempotencyEntryKey(tenant: string, key: string): string {
  return sha256(JSON.stringify([tenant, key]));
}

/** What the bucket holds per key. */
export const IdempotencyEntry = z.object({
  /** The job the key names. */
  job_id: z.string(),
  /** {@link requestHash} of the request that claimed the key. */
  body_hash: z.string(),
  /** When the key was claimed (the job's `created_at`): the window counts from here. */
  created_at: z.iso.datetime(),
  /** The job's deadline and trace id, to replay `POST /v1/jobs`'s 202 as it was. */
  deadline: z.string(),
  trace_id: z.string().optional(),
});
export type IdempotencyEntry = z.infer<typeof IdempotencyEntry>;

/** A request that carries an `Idempotency-Key`. */
export interface IdempotentRequest {
  /** The API key's name; `""` when the API is open. */
  tenant: string;
  key: string;
  /** {@link requestHash} of the request. */
  bodyHash: string;
  /** The job this request would submit if it wins the key. */
  job: Omit<IdempotencyEntry, "body_hash">;
}

/** The key is this request's: it submits its job, and releases the key if the job never starts. */
export interface Claim {
  readonly kind: "claimed";
  readonly jobId: string;
  /**
   * Gives the key up when the job ended without any stage working on it (it could not be stored
   * or queued, or failed before it ran), so a retry with the key runs it; a job that started
   * keeps the key. Never throws.
   */
  releaseUnlessStarted(): Promise<void>;
}

/** An earlier request holds the key, with the same request: its job, as stored now. */
export interface Replay {
  readonly kind: "replay";
  readonly entry: IdempotencyEntry;
  readonly record: JobRecord;
}

export interface IdempotencyOptions {
  /** `gateway.idempotency_window_ms`: a claim older than this is forgotten. */
  windowMs: number;
  /**
   * How long a claim may stay without its job before it counts as abandoned (its gateway died
   * between claiming and storing the job) and another request may take the key over.
   */
  pendingTimeoutMs?: number;
  /** How often a request waiting for another's claim looks again. */
  pollMs?: number;
}

/** The `previousSeq` of a put did not match: another writer got there first. */
function lostRace(error: unknown): boolean {
  return (
    error instanceof JetStreamApiError &&
    (error.code === JetStreamApiCodes.StreamWrongLastSequence ||
      error.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The job never got to a stage: nothing ran, nothing was spent. */
function neverStarted(record: JobRecord | undefined): boolean {
  return (
    record === undefined ||
    (record.status === "failed" && record.hops.length === 0 && record.usage.length === 0)
  );
}

/** Idempotency keys in their KV bucket, with the job records they point at. */
export class IdempotencyStore {
  readonly #windowMs: number;
  readonly #pendingTimeoutMs: number;
  readonly #pollMs: number;

  constructor(
    readonly kv: KV,
    private readonly jobs: JobStore,
    options: IdempotencyOptions,
  ) {
    this.#windowMs = options.windowMs;
    this.#pendingTimeoutMs = options.pendingTimeoutMs ?? 30_000;
    this.#pollMs = options.pollMs ?? 25;
  }

  /**
   * Claims the request's key, or finds the job an earlier request with the same key submitted.
   * The same key with a different request is a 422 naming the key. An earlier claim whose job is
   * not stored yet is waited for: it is stored within milliseconds, or its claim is released (the
   * job could not be queued; this request then claims the key), or, after `pendingTimeoutMs`
   * without a job, it is taken over.
   */
  async acquire(request: IdempotentRequest): Promise<Claim | Replay> {
    const entryKey = idempotencyEntryKey(request.tenant, request.key);
    const jobId = request.job.job_id;
    const value = JSON.stringify({ ...request.job, body_hash: request.bodyHash });
    // Waiting on a live claim is bounded by the claim's own age (see below); this bounds the
    // rest, in case NATS keeps answering in ways that never settle.
    const giveUpAt = Date.now() + this.#pendingTimeoutMs + 60_000;
    while (Date.now() < giveUpAt) {
      try {
        const revision = await this.kv.create(entryKey, value);
        return this.#claim(entryKey, revision, jobId);
      } catch (error) {
        if (!lostRace(error)) throw unavailable("the idempotency store is unavailable", error);
      }
      const entry = await this.#read(entryKey);
      // Released between our create and our read: try again.
      if (!entry) continue;
      const { existing, revision } = entry;
      const age = existing
        ? Date.now() - Date.parse(existing.created_at)
        : Number.POSITIVE_INFINITY;
      if (!existing || age >= this.#windowMs) {
        // Out of the window (the bucket's max_age may be longer than the configured window).
        const taken = await this.#takeOver(entryKey, value, revision);
        if (taken !== undefined) return this.#claim(entryKey, taken, jobId);
        continue;
      }
      if (existing.body_hash !== request.bodyHash) throw mismatch(request.key);
      const record = await this.#job(existing.job_id);
      if (record && !neverStarted(record)) return { kind: "replay", entry: existing, record };
      if (record) {
        // Its job was never queued (NATS was away) and its gateway could not release the key.
        const taken = await this.#takeOver(entryKey, value, revision);
        if (taken !== undefined) return this.#claim(entryKey, taken, jobId);
        continue;
      }
      if (age >= this.#pendingTimeoutMs) {
        // Claimed long ago and its job never stored: its gateway died in between.
        const taken = await this.#takeOver(entryKey, value, revision);
        if (taken !== undefined) return this.#claim(entryKey, taken, jobId);
        continue;
      }
      await sleep(this.#pollMs);
    }
    throw HandoffError.retryable(
      "HANDOFF_ERR_UNAVAILABLE",
      `the job of ${IDEMPOTENCY_HEADER} "${request.key}" could not be found; try again`,
    );
  }

  async #read(
    entryKey: string,
  ): Promise<{ existing: IdempotencyEntry | undefined; revision: number } | undefined> {
    let entry: Awaited<ReturnType<KV["get"]>>;
    try {
      entry = await this.kv.get(entryKey);
    } catch (error) {
      throw unavailable("the idempotency store is unavailable", error);
    }
    if (entry?.operation !== "PUT") return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(entry.string());
    } catch {
      parsed = undefined;
    }
    const existing = IdempotencyEntry.safeParse(parsed);
    return { existing: existing.success ? existing.data : undefined, revision: entry.revision };
  }

  async #job(id: string): Promise<JobRecord | undefined> {
    try {
      return await this.jobs.get(id);
    } catch (error) {
      throw unavailable("the job store is unavailable", error);
    }
  }

  /** Replaces the entry at `revision` with ours; undefined if someone else changed it first. */
  async #takeOver(entryKey: string, value: string, revision: number): Promise<number | undefined> {
    try {
      return await this.kv.update(entryKey, value, revision);
    } catch (error) {
      if (lostRace(error)) return undefined;
      throw unavailable("the idempotency store is unavailable", error);
    }
  }

  #claim(entryKey: string, revision: number, jobId: string): Claim {
    return {
      kind: "claimed",
      jobId,
      releaseUnlessStarted: async () => {
        try {
          if (!neverStarted(await this.jobs.get(jobId))) return;
          // Only our own claim: one taken over since is someone else's.
          await this.kv.delete(entryKey, { previousSeq: revision });
        } catch {
          // NATS is gone: the claim is taken over once `pendingTimeoutMs` has passed.
        }
      },
    };
  }
}

function mismatch(key: string): HandoffError {
  return new HandoffError(
    "HANDOFF_ERR_IDEMPOTENCY_MISMATCH",
    `${IDEMPOTENCY_HEADER} "${key}" was already used with a different request; ` +
      "send a new key for a new request",
    { issues: [{ path: "headers.idempotency-key", message: "reused with a different request" }] },
  );
}

/**
 * Waits until job `id` ends, following its record. Resolves to the terminal record, or undefined
 * once `timeoutMs` has passed (or `signal` aborts): the job may still finish later.
 */
export async function waitForJob(
  store: JobStore,
  id: string,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<JobRecord | undefined> {
  let watch: Awaited<ReturnType<KV["watch"]>>;
  try {
    // The current record first, then every change.
    watch = await store.kv.watch({ key: id });
  } catch (error) {
    throw unavailable("the job store is unavailable", error);
  }
  const stop = () => watch.stop();
  const timer = setTimeout(stop, Math.max(0, timeoutMs));
  // Aborted while the watch was being opened (the client left): nobody waits any more.
  if (signal?.aborted) stop();
  else signal?.addEventListener("abort", stop, { once: true });
  try {
    for await (const entry of watch) {
      if (entry.operation !== "PUT") continue;
      let value: unknown;
      try {
        value = JSON.parse(entry.string());
      } catch {
        continue;
      }
      const record = JobRecord.safeParse(value);
      if (record.success && isTerminal(record.data.status)) return record.data;
    }
    return undefined;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", stop);
    watch.stop();
  }
}

/** Opened once per job client: both routes share it. */
const stores = new WeakMap<JobClient, Promise<IdempotencyStore>>();

/**
 * The idempotency store of the gateway whose jobs `jobs` submits, opened (and created, if the
 * topology has not) on first use, next to the job-record bucket on the same JetStream.
 */
export function idempotencyStoreFor(
  jobs: JobClient,
  config: HandoffConfig,
): Promise<IdempotencyStore> {
  const known = stores.get(jobs);
  if (known) return known;
  const windowMs = config.gateway.idempotency_window_ms;
  const opened = (async () => {
    try {
      // Made at start by the gateway's topology; opening it again is one JetStream call.
      const bucket = await ensureIdempotencyBucket(jobs.nc, {
        replicas: config.jetstream.replicas,
        idempotencyWindowMs: windowMs,
      });
      return new IdempotencyStore(bucket, jobs.store, { windowMs });
    } catch (error) {
      // Not kept: the next request tries again.
      stores.delete(jobs);
      throw unavailable("the idempotency store is unavailable", error);
    }
  })();
  stores.set(jobs, opened);
  return opened;
}

/** Where an HTTP route claims keys: the gateway's bucket next to `jobs`' records, or `idempotency`. */
export interface IdempotencyDeps {
  jobs: JobClient;
  config: HandoffConfig;
  /** Where `Idempotency-Key`s are claimed; by default the bucket next to `jobs`' records. */
  idempotency?: IdempotencyStore;
}

/**
 * Claims the request's `Idempotency-Key` for `job`, or finds the job an earlier identical request
 * submitted with it ({@link IdempotencyStore.acquire}). The key is the API key's (every caller's,
 * when the API is open); the request is its `route` and JSON body, as sent.
 */
export async function claimIdempotencyKey(
  request: FastifyRequest,
  deps: IdempotencyDeps,
  route: string,
  key: string,
  job: IdempotentRequest["job"],
): Promise<Claim | Replay> {
  const store = deps.idempotency ?? (await idempotencyStoreFor(deps.jobs, deps.config));
  return store.acquire({
    tenant: request.apiKeyName ?? "",
    key,
    bodyHash: requestHash(route, request.body),
    job,
  });
}
