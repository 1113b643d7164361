import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { HandoffError, Headers } from "@handoff/contracts";
import type { MsgHdrs } from "@nats-io/nats-core";

/** The config file's `mesh` section (see `MeshSettings` in @handoff/config). */
export interface MeshSigningSettings {
  signing_key_env?: string | undefined;
  verify_key_envs?: readonly string[] | undefined;
}

/** What a check of a message's signature found. */
export type Verdict =
  /** Signed by a key this service knows, over this subject and payload. */
  | "authentic"
  /** No signature header, while signing is on. */
  | "unsigned"
  /** A signature that does not verify, or names a key this service does not know. */
  | "forged"
  /** Signing is off: nothing can be told apart, everything passes. */
  | "unchecked";

/** Shortest key accepted: 32 bytes, as for HMAC-SHA256 keys generally. */
export const MIN_SIGNING_KEY_BYTES = 32;

interface Key {
  id: string;
  secret: Buffer;
}

const encoder = new TextEncoder();

/** A key's public name: a short digest, so a signature says which key made it without saying it. */
function keyId(secret: Buffer): string {
  return createHash("sha256").update("handoff-mesh-key:").update(secret).digest("hex").slice(0, 12);
}

function mac(secret: Buffer, subject: string, payload: Uint8Array | string): Buffer {
  const body = typeof payload === "string" ? encoder.encode(payload) : payload;
  return createHmac("sha256", secret).update(subject).update("\n").update(body).digest();
}

/**
 * Signs and checks the mesh's own messages (job envelopes, results, streamed chunks) with
 * HMAC-SHA256 over the subject and the payload, in the `Handoff-Signature` header as
 * `v1 <key id> <base64url mac>`. Binding the subject stops a message signed for one job or stage
 * from being replayed on another. Several keys verify (a rotation), one signs.
 */
export class MeshSigner {
  readonly #signing: Key | undefined;
  readonly #keys: Map<string, Key>;

  constructor(signing: Buffer | undefined, accepted: readonly Buffer[] = []) {
    this.#signing = signing ? { id: keyId(signing), secret: signing } : undefined;
    this.#keys = new Map();
    for (const secret of [...(signing ? [signing] : []), ...accepted]) {
      const key = { id: keyId(secret), secret };
      this.#keys.set(key.id, key);
    }
  }

  /** A signer that signs nothing and accepts everything: the mesh without a signing key. */
  static disabled(): MeshSigner {
    return new MeshSigner(undefined);
  }

  /** Messages are signed and checked. */
  get enabled(): boolean {
    return this.#keys.size > 0;
  }

  /** The header value that signs `payload` for `subject`, or undefined when signing is off. */
  signature(subject: string, payload: Uint8Array | string): string | undefined {
    const key = this.#signing;
    if (!key) return undefined;
    return `v1 ${key.id} ${mac(key.secret, subject, payload).toString("base64url")}`;
  }

  /** Adds the signature to `headers` (a plain record, as `tracedHeaders` takes). */
  sign(
    subject: string,
    payload: Uint8Array | string,
    headers: Record<string, string> = {},
  ): Record<string, string> {
    const value = this.signature(subject, payload);
    if (value !== undefined) headers[Headers.signature] = value;
    return headers;
  }

  /** Checks a received message against every accepted key. */
  verify(subject: string, payload: Uint8Array | string, headers: MsgHdrs | undefined): Verdict {
    if (!this.enabled) return "unchecked";
    const value = headers?.get(Headers.signature) ?? "";
    if (value === "") return "unsigned";
    const [version, id, signature] = value.split(" ");
    if (version !== "v1" || !id || !signature) return "forged";
    const key = this.#keys.get(id);
    if (!key) return "forged";
    const expected = mac(key.secret, subject, payload);
    const given = Buffer.from(signature, "base64url");
    return given.length === expected.length && timingSafeEqual(given, expected)
      ? "authentic"
      : "forged";
  }
}

type Env = Readonly<Record<string, string | undefined>>;

function readKey(env: Env, name: string, field: string): Buffer {
  const value = env[name]?.trim();
  if (!value) {
    throw new HandoffError(
      "HANDOFF_ERR_CONFIG",
      `${field} names ${name}, which is not set or is empty`,
    );
  }
  const secret = Buffer.from(value, "utf8");
  if (secret.length < MIN_SIGNING_KEY_BYTES) {
    throw new HandoffError(
      "HANDOFF_ERR_CONFIG",
      `${field}: the key in ${name} is ${secret.length} bytes; a mesh signing key needs at least ${MIN_SIGNING_KEY_BYTES} (e.g. \`openssl rand -base64 48\`)`,
    );
  }
  return secret;
}

/**
 * The signer the config asks for: `mesh.signing_key_env` signs (and verifies), each of
 * `mesh.verify_key_envs` only verifies. A named variable that is unset, empty or too short stops
 * the start with an error naming it (never its value). With neither set, signing is off.
 */
export function loadMeshSigner(
  settings: MeshSigningSettings | undefined,
  env: Env = process.env,
): MeshSigner {
  const verifyEnvs = settings?.verify_key_envs ?? [];
  if (!settings?.signing_key_env) {
    if (verifyEnvs.length > 0) {
      throw new HandoffError(
        "HANDOFF_ERR_CONFIG",
        "mesh.verify_key_envs needs mesh.signing_key_env: a service that checks signatures must sign too",
      );
    }
    return MeshSigner.disabled();
  }
  const signing = readKey(env, settings.signing_key_env, "mesh.signing_key_env");
  const accepted = verifyEnvs.map((name, index) =>
    readKey(env, name, `mesh.verify_key_envs[${index}]`),
  );
  return new MeshSigner(signing, accepted);
}
