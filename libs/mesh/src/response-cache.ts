import { CachedAnswer, responseCacheBucket, type Tier } from "@handoff/contracts";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import { type NatsConnection, nanos } from "@nats-io/nats-core";
import type { Logger } from "pino";
import { HEADER_HEADROOM_BYTES } from "./submit-guards.js";

/**
 * The exact response cache over JetStream KV: one bucket per cached tier, `handoff-cache-<tier>`,
 * whose max age is the tier's `ttl_ms`. Every replica of every stage that calls the tier reads
 * and writes the same bucket, and it outlives them all. The router (`@handoff/providers`) decides
 * what to look up and store; this is only the store.
 */

/** The config a cache is opened with: its `cache` and `jetstream` sections. */
export interface ResponseCacheConfig {
  cache: { tiers: Partial<Record<Tier, { ttl_ms: number } | undefined>> };
  jetstream: { replicas: number };
}

/**
 * How long one read or write of the cache may take before the call goes on without it: a cache
 * that cannot answer costs a model call, never a failed job.
 */
export const CACHE_OP_TIMEOUT_MS = 1_000;

export interface KvResponseCacheOptions {
  tier: Tier;
  /** The tier's `ttl_ms`: an older entry is a miss, whatever the bucket still holds. */
  ttlMs: number;
  /** The server's `max_payload`: a larger answer is not stored. */
  maxPayload: () => number | undefined;
  logger?: Logger;
}

/** One tier's cache in its KV bucket: what `ModelRouter.useCaches` takes. */
export class KvResponseCache {
  readonly #kv: KV;
  readonly #o: KvResponseCacheOptions;

  constructor(kv: KV, options: KvResponseCacheOptions) {
    this.#kv = kv;
    this.#o = options;
  }

  get tier(): Tier {
    return this.#o.tier;
  }

  /**
   * The answer under `key`; undefined when there is none, it is older than the tier's TTL, or
   * it does not read as an answer (the next answer overwrites it). Throws when KV cannot answer.
   */
  async get(key: string): Promise<CachedAnswer | undefined> {
    let entry: Awaited<ReturnType<KV["get"]>>;
    try {
      entry = await this.#kv.get(key);
    } catch (error) {
      this.#o.logger?.warn(
        { err: error, tier: this.#o.tier },
        "response cache lookup failed; calling the model",
      );
      throw error;
    }
    if (entry?.operation !== "PUT" || entry.length === 0) return undefined;
    let value: unknown;
    try {
      value = entry.json();
    } catch {
      value = undefined;
    }
    const parsed = CachedAnswer.safeParse(value);
    if (!parsed.success) {
      this.#o.logger?.warn(
        { tier: this.#o.tier, key },
        "response cache entry is not a cached answer; ignored",
      );
      return undefined;
    }
    if (Date.parse(parsed.data.stored_at) + this.#o.ttlMs <= Date.now()) return undefined;
    return parsed.data;
  }

  /**
   * Stores `answer` under `key`. False, and nothing stored, when it would not fit in one NATS
   * message of this server (`max_payload`, less room for headers). Throws when KV fails.
   */
  async put(key: string, answer: CachedAnswer): Promise<boolean> {
    const payload = JSON.stringify(answer);
    const max = this.#o.maxPayload();
    if (max !== undefined && max > 0 && Buffer.byteLength(payload) > max - HEADER_HEADROOM_BYTES) {
      this.#o.logger?.debug(
        { tier: this.#o.tier, bytes: Buffer.byteLength(payload), max_payload: max },
        "answer too large for the response cache; not stored",
      );
      return false;
    }
    try {
      await this.#kv.put(key, payload);
      return true;
    } catch (error) {
      this.#o.logger?.warn(
        { err: error, tier: this.#o.tier },
        "response cache write failed; the answer stands",
      );
      throw error;
    }
  }
}

/**
 * Creates the response-cache bucket of `tier`, or brings an existing one's max age to `ttlMs`
 * (a changed `ttl_ms` applies at the next start). Safe to run concurrently.
 */
export async function ensureResponseCacheBucket(
  nc: NatsConnection,
  tier: Tier,
  options: { ttlMs: number; replicas?: number },
): Promise<void> {
  const name = responseCacheBucket(tier);
  await new Kvm(nc).create(name, {
    history: 1,
    replicas: options.replicas ?? 1,
    ttl: options.ttlMs,
    description: `Handoff exact response cache of the ${tier} tier`,
  });
  const jsm = await jetstreamManager(nc);
  const stream = `KV_${name}`;
  const info = await jsm.streams.info(stream);
  const maxAge = nanos(options.ttlMs);
  if (info.config.max_age !== maxAge) {
    await jsm.streams.update(stream, {
      ...info.config,
      max_age: maxAge,
      // The server refuses a dedupe window longer than the max age.
      duplicate_window: Math.min(info.config.duplicate_window, maxAge),
    });
  }
}

/**
 * The response caches of `tiers` that the config caches (`cache.tiers`), each bucket created or
 * updated first: what a stage opens at start for the tiers it calls, and hands to its router.
 * Reads and writes time out after `opTimeoutMs`.
 */
export async function openResponseCaches(
  nc: NatsConnection,
  config: ResponseCacheConfig,
  tiers: readonly Tier[],
  options: { logger?: Logger; opTimeoutMs?: number } = {},
): Promise<Partial<Record<Tier, KvResponseCache>>> {
  const caches: Partial<Record<Tier, KvResponseCache>> = {};
  const js = jetstream(nc, { timeout: options.opTimeoutMs ?? CACHE_OP_TIMEOUT_MS });
  for (const tier of tiers) {
    const settings = config.cache.tiers[tier];
    if (!settings) continue;
    const ttlMs = settings.ttl_ms;
    await ensureResponseCacheBucket(nc, tier, { ttlMs, replicas: config.jetstream.replicas });
    // The bucket exists: this only reads its info, and binds the reads and writes to `js`.
    const kv = await new Kvm(js).create(responseCacheBucket(tier), {
      history: 1,
      replicas: config.jetstream.replicas,
      ttl: ttlMs,
    });
    caches[tier] = new KvResponseCache(kv, {
      tier,
      ttlMs,
      maxPayload: () => nc.info?.max_payload,
      ...(options.logger ? { logger: options.logger } : {}),
    });
  }
  return caches;
}
