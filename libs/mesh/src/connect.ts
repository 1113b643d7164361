import { readFileSync } from "node:fs";
import { HandoffError } from "@handoff/contracts";
import {
  type Authenticator,
  type ConnectionOptions,
  credsAuthenticator,
  type NatsConnection,
  nkeyAuthenticator,
  type TlsOptions,
} from "@nats-io/nats-core";
import { fromSeed } from "@nats-io/nkeys";
import { connect } from "@nats-io/transport-node";
import type { Logger } from "pino";

/** The config file's `nats` section (see `NatsSettings` in @handoff/config). */
export interface NatsSettings {
  url?: string | undefined;
  creds_file?: string | undefined;
  nkey_seed_file?: string | undefined;
  user?: string | undefined;
  password_env?: string | undefined;
  token_env?: string | undefined;
  tls?:
    | {
        ca_file?: string | undefined;
        cert_file?: string | undefined;
        key_file?: string | undefined;
      }
    | undefined;
  inbox_prefix?: string | undefined;
}

export interface ConnectOptions {
  /** Comma-separated server URLs, as in `NATS_URL`; overrides `settings.url` and `NATS_URL`. */
  servers?: string | undefined;
  /** The config file's `nats` section; the `NATS_*` environment variables override it. */
  settings?: NatsSettings | undefined;
  /** Where `NATS_*` variables are read; default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Connection name shown by the server's monitoring (e.g. `classifier`). */
  name: string;
  logger?: Logger;
  /**
   * Let nats.js retry the first connect itself, silently and without end. The services leave this
   * off and retry with `retryStartup`, which logs each attempt and stops on SIGTERM.
   */
  waitOnFirstConnect?: boolean;
}

export const DEFAULT_NATS_URL = "nats://127.0.0.1:4222";

/**
 * The oldest nats-server Handoff supports: the mesh is tested on 2.9 (Debian's package). Checked by
 * {@link connectNats} on every connection it opens.
 */
export const MIN_NATS_SERVER_VERSION = "2.9.0";

/** `major.minor.patch` of a version string (`v2.10.4`, `2.11.0-RC.1`), or undefined. */
function parseVersion(version: string): [number, number, number] | undefined {
  const match = /^v?(\d+)\.(\d+)(?:\.(\d+))?/.exec(version.trim());
  if (!match) return undefined;
  return [Number(match[1]), Number(match[2]), Number(match[3] ?? 0)];
}

/**
 * Refuses a server older than {@link MIN_NATS_SERVER_VERSION} (or one that names no version) with a
 * config error naming both versions: an old server is a deployment mistake that waiting will not
 * fix, so the service stops instead of retrying.
 */
export function checkNatsServerVersion(
  version: string | undefined,
  server = "the NATS server",
): void {
  const found = version === undefined ? undefined : parseVersion(version);
  const minimum = parseVersion(MIN_NATS_SERVER_VERSION) as [number, number, number];
  const older =
    found === undefined ||
    found[0] < minimum[0] ||
    (found[0] === minimum[0] &&
      (found[1] < minimum[1] || (found[1] === minimum[1] && found[2] < minimum[2])));
  if (!older) return;
  const what = version === undefined || version === "" ? "no version" : `version ${version}`;
  throw configError(
    `${server} reports ${what}; Handoff needs nats-server ${MIN_NATS_SERVER_VERSION} or newer: upgrade the server`,
  );
}

export function natsServers(value: string | undefined): string[] {
  const servers = (value ?? DEFAULT_NATS_URL)
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  return servers.length > 0 ? servers : [DEFAULT_NATS_URL];
}

/** The environment variables that configure a NATS connection, as the README documents them. */
export const NatsEnv = {
  url: "NATS_URL",
  creds: "NATS_CREDS",
  nkeySeed: "NATS_NKEY_SEED",
  user: "NATS_USER",
  password: "NATS_PASSWORD",
  token: "NATS_TOKEN",
  ca: "NATS_CA",
  cert: "NATS_CERT",
  key: "NATS_KEY",
  inboxPrefix: "NATS_INBOX_PREFIX",
} as const;

function configError(message: string): HandoffError {
  return new HandoffError("HANDOFF_ERR_CONFIG", message);
}

/** Reads a credential file; the error names where the path came from, never the content. */
function readSecretFile(path: string, from: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
    throw configError(`${from} names ${path}, which cannot be read (${reason})`);
  }
}

/**
 * `NATS_NKEY_SEED` holds the seed itself, or the path of a file that does. A value that is not a
 * path is never quoted back: it may be a mistyped seed.
 */
function nkeySeed(value: string, from: string): Uint8Array {
  const trimmed = value.trim();
  const isPath = /[/\\.]/.test(trimmed);
  const seed = isPath ? readSecretFile(trimmed, from).trim() : trimmed;
  const bytes = new TextEncoder().encode(seed);
  try {
    fromSeed(bytes);
  } catch {
    throw configError(
      `${from} does not hold a valid nkey seed ("SU..." as nsc or nk write it, or the path of a file holding one)`,
    );
  }
  return bytes;
}

function envValue(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name]?.trim();
  return value ? value : undefined;
}

/**
 * Turns the `nats` config section and the `NATS_*` environment into nats.js connection options:
 * one authentication method (creds file, nkey seed, user and password, or token), TLS files, and
 * the inbox prefix. A variable overrides the field it shadows. Secrets are read here, once, and
 * every error names the variable or field and the file, never a secret.
 */
export function natsConnectionOptions(
  settings: NatsSettings = {},
  env: NodeJS.ProcessEnv = process.env,
  servers?: string,
): ConnectionOptions & { servers: string[] } {
  const urls = natsServers(servers ?? envValue(env, NatsEnv.url) ?? settings.url);
  const options: ConnectionOptions & { servers: string[] } = { servers: urls };

  const creds = envValue(env, NatsEnv.creds)
    ? { path: envValue(env, NatsEnv.creds) as string, from: NatsEnv.creds }
    : settings.creds_file
      ? { path: settings.creds_file, from: "nats.creds_file" }
      : undefined;
  const seed = envValue(env, NatsEnv.nkeySeed)
    ? { value: envValue(env, NatsEnv.nkeySeed) as string, from: NatsEnv.nkeySeed }
    : settings.nkey_seed_file
      ? {
          value: readSecretFile(settings.nkey_seed_file, "nats.nkey_seed_file"),
          from: `nats.nkey_seed_file (${settings.nkey_seed_file})`,
        }
      : undefined;
  const user = envValue(env, NatsEnv.user) ?? settings.user;
  const passwordFrom = envValue(env, NatsEnv.password) ? NatsEnv.password : settings.password_env;
  const password = passwordFrom ? envValue(env, passwordFrom) : undefined;
  if (settings.password_env && !envValue(env, NatsEnv.password) && password === undefined) {
    throw configError(
      `nats.password_env names ${settings.password_env}, which is not set or is empty`,
    );
  }
  const tokenFrom = envValue(env, NatsEnv.token) ? NatsEnv.token : settings.token_env;
  const token = tokenFrom ? envValue(env, tokenFrom) : undefined;
  if (settings.token_env && !envValue(env, NatsEnv.token) && token === undefined) {
    throw configError(`nats.token_env names ${settings.token_env}, which is not set or is empty`);
  }

  const chosen = [
    creds?.from,
    seed?.from,
    user !== undefined && "user",
    token !== undefined && (tokenFrom as string),
  ].filter((x): x is string => typeof x === "string");
  if (chosen.length > 1) {
    throw configError(
      `choose one way to authenticate to NATS: ${chosen.join(" and ")} are both set`,
    );
  }
  if (password !== undefined && user === undefined) {
    throw configError(`${passwordFrom} is set but no user is (${NatsEnv.user} or nats.user)`);
  }
  const authenticators: Authenticator[] = [];
  if (creds) {
    const text = readSecretFile(creds.path, creds.from);
    if (!/BEGIN NATS USER JWT/.test(text) || !/BEGIN USER NKEY SEED/.test(text)) {
      throw configError(
        `${creds.from} names ${creds.path}, which is not a creds file (a user JWT and an nkey seed, as nsc writes them)`,
      );
    }
    authenticators.push(credsAuthenticator(new TextEncoder().encode(text)));
  }
  if (seed) authenticators.push(nkeyAuthenticator(nkeySeed(seed.value, seed.from)));
  if (authenticators.length > 0) options.authenticator = authenticators;
  if (user !== undefined) {
    options.user = user;
    if (password !== undefined) options.pass = password;
  }
  if (token !== undefined) options.token = token;

  const ca = envValue(env, NatsEnv.ca) ?? settings.tls?.ca_file;
  const cert = envValue(env, NatsEnv.cert) ?? settings.tls?.cert_file;
  const key = envValue(env, NatsEnv.key) ?? settings.tls?.key_file;
  if ((cert === undefined) !== (key === undefined)) {
    throw configError(
      `a NATS client certificate needs both ${NatsEnv.cert} and ${NatsEnv.key} (or nats.tls.cert_file and nats.tls.key_file)`,
    );
  }
  const wantsTls = urls.some((url) => /^tls:\/\//i.test(url));
  if (ca !== undefined || cert !== undefined || wantsTls) {
    const tls: TlsOptions = {};
    for (const [file, from] of [
      [ca, NatsEnv.ca],
      [cert, NatsEnv.cert],
      [key, NatsEnv.key],
    ] as const) {
      if (file !== undefined) readSecretFile(file, from);
    }
    if (ca !== undefined) tls.caFile = ca;
    if (cert !== undefined) tls.certFile = cert;
    if (key !== undefined) tls.keyFile = key;
    // With tls set, nats.js refuses a server that does not offer TLS: `tls://` means required.
    options.tls = tls;
  }
  const inboxPrefix = envValue(env, NatsEnv.inboxPrefix) ?? settings.inbox_prefix;
  if (inboxPrefix !== undefined) {
    if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(inboxPrefix)) {
      throw configError(`${NatsEnv.inboxPrefix} must be subject tokens without wildcards`);
    }
    options.inboxPrefix = inboxPrefix;
  }
  return options;
}

/** What the connection authenticates with, for the start-up log line (never a secret). */
export function describeNatsAuth(options: ConnectionOptions): Record<string, unknown> {
  return {
    auth: options.authenticator
      ? "nkey/creds"
      : options.user
        ? `user ${options.user}`
        : options.token
          ? "token"
          : "none",
    tls: Boolean(options.tls),
    ...(options.inboxPrefix ? { inbox_prefix: options.inboxPrefix } : {}),
  };
}

/**
 * Connects with unbounded reconnects: a NATS restart or a dropped link pauses the mesh, it does not
 * kill it. Connection state changes are logged. The first connect fails at once when no server
 * answers (unless `waitOnFirstConnect`): `retryStartup` retries it. A server older than
 * {@link MIN_NATS_SERVER_VERSION} is refused with a config error.
 */
export async function connectNats(options: ConnectOptions): Promise<NatsConnection> {
  const resolved = natsConnectionOptions(options.settings, options.env, options.servers);
  const nc = await connect({
    ...resolved,
    name: options.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    waitOnFirstConnect: options.waitOnFirstConnect ?? false,
    // Otherwise every request (a KV read or write, a JetStream publish: several per job) builds two
    // Error objects with stack traces up front, in case it fails: 5 to 10% of a stage's CPU in
    // bench/profile.md. A failed request still rejects with the same error types and messages.
    noAsyncTraces: true,
  });
  try {
    checkNatsServerVersion(nc.info?.version, `the NATS server at ${nc.getServer()}`);
  } catch (error) {
    await nc.close().catch(() => {});
    throw error;
  }
  const logger = options.logger;
  if (logger) {
    logger.info({ server: nc.getServer(), ...describeNatsAuth(resolved) }, "connected to NATS");
    void (async () => {
      for await (const status of nc.status()) {
        switch (status.type) {
          case "disconnect":
          case "reconnecting":
            logger.warn({ nats: status }, `NATS ${status.type}`);
            break;
          case "reconnect":
            logger.info({ nats: status }, "NATS reconnected");
            break;
          case "error":
            logger.error({ nats: status }, "NATS error");
            break;
          default:
            logger.debug({ nats: status }, `NATS ${status.type}`);
        }
      }
    })();
  }
  return nc;
}

/** Follows the connection's status events, for readiness probes. */
export function trackConnection(nc: NatsConnection): { connected: () => boolean } {
  let connected = !nc.isClosed();
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === "disconnect" || status.type === "close") connected = false;
      if (status.type === "reconnect") connected = true;
    }
    connected = false;
  })();
  return { connected: () => connected && !nc.isClosed() };
}
