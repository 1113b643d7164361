/**
 * The secret values this process holds, so that text from outside (an upstream's error body, an
 * exception's message) is scrubbed of them before it reaches a log line, a span, a job record or
 * a client. Filled once at startup from the config (`registerConfigSecrets`): the values of the
 * environment variables it names as keys, and literal credential headers. Keys are never in the
 * config file itself, only their variables' names, so a scrub by value is the one that catches a
 * key an upstream echoes back ("Incorrect API key provided: sk-...").
 */

/** What a scrubbed secret becomes; the same word pino's redaction writes. */
export const REDACTED = "[redacted]";

/** Shorter values are not scrubbed: they would blank out ordinary words. */
const MIN_SECRET_LENGTH = 8;

const secrets = new Set<string>();
/** Longest first, so a secret that contains another is replaced whole. */
let ordered: string[] = [];

/**
 * A credential that a vendor masked before echoing it, as OpenAI does in its 401 body
 * (`sk-abc***xyz`): the ends of a key are still a part of it.
 */
const MASKED = /[A-Za-z0-9_-]*\*{3,}[A-Za-z0-9_-]*/g;
/** Where a credential is echoed whatever its value: `Bearer <token>`, `api key provided: <key>`. */
const ECHOED = /\b(bearer\s+|api[ _-]?key(?: provided)?[:=]\s*)(?!\[redacted\])[^\s"',;]{8,}/gi;

/** Adds a value to scrub. Surrounding whitespace is ignored; short or empty values are skipped. */
export function registerSecret(value: string | undefined | null): void {
  const secret = value?.trim();
  if (!secret || secret.length < MIN_SECRET_LENGTH || secrets.has(secret)) return;
  secrets.add(secret);
  // How the value looks inside a JSON string (a log line), when that differs.
  const escaped = JSON.stringify(secret).slice(1, -1);
  if (escaped !== secret) secrets.add(escaped);
  ordered = [...secrets].sort((a, b) => b.length - a.length);
}

/** Registers the values of the named environment variables that are set. */
export function registerSecretEnv(
  names: Iterable<string | undefined>,
  env: NodeJS.ProcessEnv = process.env,
): void {
  for (const name of names) if (name) registerSecret(env[name]);
}

/** Header names whose values are credentials. */
const CREDENTIAL_HEADER =
  /^(authorization|proxy-authorization|api-key|x-api-key|cookie)$|token|secret/i;

/**
 * The parts of a Handoff config that name secrets. Structural, so telemetry needs no config
 * types: a `HandoffConfig` is one.
 */
export interface SecretBearingConfig {
  tiers: Record<
    string,
    ReadonlyArray<{
      api_key_env?: string | undefined;
      headers?: Record<string, string> | undefined;
    }>
  >;
  gateway?: { api_keys: ReadonlyArray<{ key_env: string }> } | undefined;
}

/**
 * Registers every secret a config points at: the values of each deployment's `api_key_env` and
 * each gateway key's `key_env`, and credential headers written into a deployment (`Authorization:
 * Bearer ...`, `api-key`). Returns the names of the variables it looked up.
 */
export function registerConfigSecrets(
  config: SecretBearingConfig,
  env: NodeJS.ProcessEnv = process.env,
): string[] {
  const names = new Set<string>();
  for (const deployments of Object.values(config.tiers)) {
    for (const deployment of deployments) {
      if (deployment.api_key_env) names.add(deployment.api_key_env);
      for (const [header, value] of Object.entries(deployment.headers ?? {})) {
        if (!CREDENTIAL_HEADER.test(header)) continue;
        registerSecret(value);
        registerSecret(value.replace(/^\s*(bearer|basic)\s+/i, ""));
      }
    }
  }
  for (const key of config.gateway?.api_keys ?? []) names.add(key.key_env);
  registerSecretEnv(names, env);
  return [...names];
}

/** How many values are registered (each counted once, with its JSON form when that differs). */
export function secretCount(): number {
  return secrets.size;
}

/** Forgets every registered value; for tests. */
export function clearSecrets(): void {
  secrets.clear();
  ordered = [];
}

/**
 * `text` without any registered secret, any masked credential and any token that follows
 * `Bearer` or "API key provided:". Use it wherever text from outside enters Handoff.
 */
export function redactSecrets(text: string): string {
  if (!text) return text;
  let out = text;
  for (const secret of ordered) {
    if (out.includes(secret)) out = out.split(secret).join(REDACTED);
  }
  if (out.includes("***")) out = out.replace(MASKED, REDACTED);
  return out.replace(ECHOED, `$1${REDACTED}`);
}
