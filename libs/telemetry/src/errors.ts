import { inspect } from "node:util";
import { createLogger, type LoggerOptions } from "./logger.js";
import { redactSecrets } from "./secrets.js";

/**
 * How an error is shown to a person, decided in one place for the services and the CLI: an error
 * that is the user's doing (a bad config, a missing variable, invalid input, a wrong argument),
 * or another condition Handoff names with a code of its own (a provider that refused, NATS out of
 * reach), is one line, code and message, because a stack trace says nothing they can act on and
 * buries the line that does; an unexpected error (a bug) keeps its stack. `LOG_LEVEL=debug` (or
 * `trace`) shows every stack. Whatever is shown passes through `redactSecrets`.
 */

/** Handoff codes that report the caller's or the operator's mistake, not a fault of the code. */
const USER_CODES: ReadonlySet<string> = new Set([
  "HANDOFF_ERR_CONFIG",
  "HANDOFF_ERR_VALIDATION",
  "HANDOFF_ERR_UNSUPPORTED",
  "HANDOFF_ERR_BODY_TOO_LARGE",
  "HANDOFF_ERR_MAX_PAYLOAD",
  "HANDOFF_ERR_MEDIA_TYPE",
  "HANDOFF_ERR_NOT_FOUND",
  "HANDOFF_ERR_UNAUTHORIZED",
  "HANDOFF_ERR_BUDGET",
]);

function codeOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null | undefined)?.code;
  return typeof code === "string" ? code : undefined;
}

/**
 * Whether `error` is the user's doing: a `HandoffError` with one of the user's codes (config,
 * validation, ...), or a rejected command line (`node:util` `parseArgs`' `ERR_PARSE_ARGS_*`).
 * Anything else is unexpected. Recognised by name and code, so telemetry needs no contracts.
 */
export function isUserError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = codeOf(error);
  if (code === undefined) return false;
  if (error.name === "HandoffError") return USER_CODES.has(code);
  return code.startsWith("ERR_PARSE_ARGS_");
}

/** Handoff codes that mean the code itself went wrong: a stack trace is what fixes those. */
const BUG_CODES: ReadonlySet<string> = new Set([
  "HANDOFF_ERR_INTERNAL",
  "HANDOFF_ERR_INVALID_MESSAGE",
]);

/**
 * Whether `error` is one Handoff expected and named: a user's error, or a `HandoffError` whose
 * code is not one of a bug's (`HANDOFF_ERR_INTERNAL`, which wraps anything unforeseen).
 */
export function isExpectedError(error: unknown): boolean {
  if (isUserError(error)) return true;
  if (!(error instanceof Error) || error.name !== "HandoffError") return false;
  const code = codeOf(error);
  return code !== undefined && !BUG_CODES.has(code);
}

/** Whether stack traces are wanted for every error: `LOG_LEVEL` is `debug` or `trace`. */
export function wantsStacks(env: NodeJS.ProcessEnv = process.env): boolean {
  const level = env.LOG_LEVEL?.trim().toLowerCase();
  return level === "debug" || level === "trace";
}

/** Whether `error` is shown with its stack: a bug always, an expected error only at debug. */
export function showsStack(error: unknown, env: NodeJS.ProcessEnv = process.env): boolean {
  return !isExpectedError(error) || wantsStacks(env);
}

/** One line: `CODE: message` for a Handoff error, the message alone otherwise. No stack. */
export function errorLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const code = error instanceof Error && error.name === "HandoffError" ? codeOf(error) : undefined;
  const line = (code ? `${code}: ${message}` : message).replace(/\s*\n\s*/g, " ").trim();
  return redactSecrets(line);
}

/**
 * What a terminal shows of an error: {@link errorLine} for an expected error, the whole error
 * with its stack (and cause) for a bug, or for any error at `LOG_LEVEL=debug`.
 */
export function formatError(error: unknown, env: NodeJS.ProcessEnv = process.env): string {
  if (!showsStack(error, env)) return errorLine(error);
  return redactSecrets(inspect(error, { depth: 4 }));
}

/**
 * The fields a pino record carries about an error: `code` (and a user's error's `issues`), plus
 * `err`, which pino serializes with its stack, for a bug or at `LOG_LEVEL=debug`.
 */
export function errorFields(
  error: unknown,
  env: NodeJS.ProcessEnv = process.env,
): Record<string, unknown> {
  const code = codeOf(error);
  const issues = (error as { issues?: unknown } | null | undefined)?.issues;
  return {
    ...(code ? { code } : {}),
    ...(isUserError(error) && Array.isArray(issues) ? { issues } : {}),
    ...(showsStack(error, env) ? { err: error } : {}),
  };
}

export interface StartupFailureOptions extends LoggerOptions {
  env?: NodeJS.ProcessEnv;
}

/**
 * Logs why a service could not start, as one `fatal` record on its own logger (the service's may
 * not exist yet: the config comes first): `<service> failed to start: <CODE: message>`, with the
 * stack only for a bug or at `LOG_LEVEL=debug`. The caller exits non-zero; pino flushes on exit.
 */
export function logStartupFailure(
  service: string,
  error: unknown,
  options: StartupFailureOptions = {},
): void {
  const { env = process.env, ...loggerOptions } = options;
  const level = loggerOptions.level ?? env.LOG_LEVEL;
  const logger = createLogger(service, { ...loggerOptions, ...(level ? { level } : {}) });
  logger.fatal(errorFields(error, env), `${service} failed to start: ${errorLine(error)}`);
}
