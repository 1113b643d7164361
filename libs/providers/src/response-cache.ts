import { createHash } from "node:crypto";
import type { Deployment } from "@handoff/config";
import { type CachedAnswer, type JobEnvelope, NO_TENANT, type Tier } from "@handoff/contracts";
import type { ChatRequest } from "./types.js";

/**
 * The exact response cache of one tier, as the router uses it: answers by key. `libs/mesh`
 * implements it over JetStream KV (`KvResponseCache`), shared by every replica and kept across
 * restarts.
 */
export interface ResponseCache {
  /**
   * The answer stored under `key`, or undefined when there is none (or it expired). Throws when
   * the store cannot answer: the router then calls the model.
   */
  get(key: string): Promise<CachedAnswer | undefined>;
  /**
   * Stores `answer` under `key`; false when it was not stored (too large for the store). Throws
   * when the store fails: the router carries on with the answer it has.
   */
  put(key: string, answer: CachedAnswer): Promise<boolean>;
}

/** A call's part in the response cache: whose answer it is, and what its request allows. */
export interface CallCache {
  /** The job's owner (API key name or NATS-door tenant), `_` for none: whose cache it reads. */
  tenant: string;
  /** Neither read nor write the cache (`Cache-Control: no-cache`, `"handoff": {"cache": false}`). */
  bypass?: boolean;
  /** Cache the answer even when the request samples (`"handoff": {"cache": true}`). */
  sampled?: boolean;
}

/** The {@link CallCache} of a job's model calls: its owner, and what its request chose. */
export function callCacheOf(envelope: Pick<JobEnvelope, "owner" | "cache">): CallCache {
  return {
    tenant: envelope.owner ?? NO_TENANT,
    ...(envelope.cache?.bypass ? { bypass: true } : {}),
    ...(envelope.cache?.sampled ? { sampled: true } : {}),
  };
}

/** Whether a request samples: a temperature above 0. No temperature counts as none. */
export function samples(request: ChatRequest): boolean {
  return (request.params?.temperature ?? 0) > 0;
}

/**
 * JSON with every object's keys in sorted order and `undefined` members left out, so two
 * requests that differ only in the order of their keys hash alike. Arrays keep their order.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value))
    return value.map((item) => (item === undefined ? null : sortKeys(item)));
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      const member = (value as Record<string, unknown>)[key];
      if (member !== undefined) out[key] = sortKeys(member);
    }
    return out;
  }
  return value;
}

export interface CacheKeyInput {
  tenant: string;
  tier: Tier;
  /** The tier's first deployment: the model the key stands for. */
  deployment: Pick<Deployment, "provider" | "model">;
  request: ChatRequest;
}

/**
 * The key of an answer: `<tenant>.<sha256 hex>`, the hash over the canonical JSON of everything
 * that decides the answer: the tenant, the tier and its deployment's provider and model, the
 * messages, the tools, the tool choice, every output-changing parameter (temperature, top_p,
 * max_tokens, stop, seed, response_format, parallel_tool_calls, logprobs, top_logprobs), and
 * whether the mesh asked for log-probabilities. The tenant leads the key, so no tenant reads
 * another's answers.
 */
export function responseCacheKey({ tenant, tier, deployment, request }: CacheKeyInput): string {
  const canonical = canonicalJson({
    v: 1,
    tenant,
    tier,
    provider: deployment.provider,
    model: deployment.model,
    messages: request.messages,
    tools: request.tools ?? [],
    tool_choice: request.toolChoice ?? null,
    params: request.params ?? {},
    logprobs: request.logprobs === true,
  });
  return `${tenant}.${createHash("sha256").update(canonical).digest("hex")}`;
}

/**
 * A cached answer's text in the pieces a hit streams it in: whole words, about `size` characters
 * a piece, at most 64 pieces, so a streaming client reads it as it would a model's.
 */
export function replayPieces(text: string, size = 16): string[] {
  const words = text.match(/\s*\S+\s*/g) ?? [text];
  const target = Math.max(size, Math.ceil(text.length / MAX_REPLAY_PIECES));
  const pieces: string[] = [];
  let piece = "";
  for (const word of words) {
    if (piece.length > 0 && piece.length + word.length > target) {
      pieces.push(piece);
      piece = "";
    }
    piece += word;
  }
  if (piece.length > 0) pieces.push(piece);
  // Whatever the words did not cover (a text of spaces only) still arrives.
  if (pieces.join("") !== text) return [text];
  return mergedPairs(pieces, MAX_REPLAY_PIECES);
}

/** The most pieces a cached answer is streamed in. */
const MAX_REPLAY_PIECES = 64;

/** Joins neighbouring pieces until there are at most `max`. */
function mergedPairs(pieces: string[], max: number): string[] {
  let out = pieces;
  while (out.length > max) {
    const next: string[] = [];
    for (let at = 0; at < out.length; at += 2) next.push(out[at] + (out[at + 1] ?? ""));
    out = next;
  }
  return out;
}
