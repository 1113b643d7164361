import { tracedHeaders } from "@handoff/mesh";
import {
  type Msg,
  type NatsConnection,
  NoRespondersError,
  RequestError,
  type Subscription,
  TimeoutError,
} from "@nats-io/nats-core";
import { ServiceError, type ServiceInfo, Svcm } from "@nats-io/services";
import {
  DEADLINE_HEADER,
  TOOL_PROTOCOL_VERSION,
  TOOL_SUBJECT_PREFIX,
  TOOLS_CHANGED_SUBJECT,
  ToolErrorCode,
  ToolMetadata,
} from "./protocol.js";
import type { SourceCallContext, SourceOutcome, SourceTool, ToolSource } from "./source.js";
import { TOOL_NAME } from "./tool.js";

/**
 * How long calls keep asking while no instance of a tool answers: long enough for a service or
 * NATS to restart, short enough that a tool that is gone is reported, not waited on.
 */
const NO_RESPONDERS_PATIENCE_MS = 3_000;

/** A pino-like logger; only what the source reports. */
export interface SourceLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface NatsToolSourceOptions {
  /** How often to ask `$SRV.INFO` which tool services exist (default 15 s). */
  intervalMs?: number;
  /** How long one discovery waits for the first answer (default 2 s)... */
  discoveryWaitMs?: number;
  /** ...and for more answers after the last one (default 250 ms). */
  discoveryStallMs?: number;
  logger?: SourceLogger;
}

interface Found {
  tool: SourceTool;
  /** The services and instance ids that serve it, for `origin` and the conflict warnings. */
  instances: Set<string>;
  schemaText: string;
}

/**
 * The tools NATS micro services offer (see `serveTools` and `protocol.ts`), found through
 * `$SRV.INFO` at start, on every announcement a tool service makes, and every `intervalMs` (which
 * is how an instance that died without a word drops out). Calls are NATS requests carrying the
 * trace context and the deadline; an error reply, a timeout or no responders come back as
 * outcomes for the model, never as exceptions.
 */
export class NatsToolSource implements ToolSource {
  readonly name = "nats";
  readonly #nc: NatsConnection;
  readonly #options: Required<Omit<NatsToolSourceOptions, "logger">> & { logger?: SourceLogger };
  #tools = new Map<string, Found>();
  #subscription: Subscription | undefined;
  #timer: NodeJS.Timeout | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  #closed = false;
  /** Counts the connection's drops, so a call can tell that its request or reply may be lost. */
  #drops = 0;
  /** True between a drop of the connection and its return. */
  #disconnected = false;
  /** The next drop, and the next reconnect: what a waiting call listens for. */
  readonly #dropped = new Moment();
  readonly #reconnected = new Moment();
  #statuses: (AsyncIterable<{ type: string }> & { stop?: () => void }) | undefined;
  /** Warnings said once per cause, not at every poll. */
  readonly #warned = new Set<string>();

  private constructor(nc: NatsConnection, options: NatsToolSourceOptions) {
    this.#nc = nc;
    this.#options = {
      intervalMs: options.intervalMs ?? 15_000,
      discoveryWaitMs: options.discoveryWaitMs ?? 2_000,
      discoveryStallMs: options.discoveryStallMs ?? 250,
      ...(options.logger ? { logger: options.logger } : {}),
    };
  }

  /** Watches for tool services and resolves after the first discovery. */
  static async start(
    nc: NatsConnection,
    options: NatsToolSourceOptions = {},
  ): Promise<NatsToolSource> {
    const source = new NatsToolSource(nc, options);
    source.#subscription = nc.subscribe(TOOLS_CHANGED_SUBJECT, {
      callback: (error) => {
        if (!error) source.#soon();
      },
    });
    void source.#watchConnection();
    await source.refresh();
    source.#timer = setInterval(() => void source.refresh(), source.#options.intervalMs);
    source.#timer.unref();
    return source;
  }

  tools(): SourceTool[] {
    return [...this.#tools.values()].map((found) => structuredClone(found.tool));
  }

  /**
   * Asks `$SRV.INFO` now and replaces the list with what answered. Concurrent calls share one
   * discovery, plus one more when a call came in while it ran (an announcement mid-discovery).
   */
  refresh(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      do {
        this.#again = false;
        await this.#discover();
      } while (this.#again && !this.#closed);
    })().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  /**
   * Calls a tool with a NATS request carrying the trace context and the deadline. What NATS loses
   * is made good where that is safe: a "no responders" reply means no instance got the call, so it
   * is made again (a service restarting, or not yet re-subscribed after a NATS restart); a call
   * whose connection dropped while it waited is made again once the connection is back when the
   * tool is idempotent, and reported to the model as lost when it is not (it may have run). All
   * within the deadline.
   */
  async call(
    name: string,
    args: Record<string, unknown>,
    ctx: SourceCallContext,
  ): Promise<SourceOutcome> {
    ctx.signal.throwIfAborted();
    const found = this.#tools.get(name);
    if (found?.tool.origin.kind !== "nats") {
      return failure("unavailable", `tool "${name}" is not served on NATS any more`);
    }
    const { subject, idempotent } = found.tool.origin;
    const payload = JSON.stringify(args);
    let unanswered: number | undefined;
    for (let attempt = 1; ; attempt++) {
      // A request sent while the connection is down is buffered, and may be flushed before the
      // subscriptions that would answer it are back: it is sent once the connection is.
      if (this.#disconnected && !(await this.#pause(attempt, ctx))) {
        return failure("unavailable", "NATS was unreachable until the call's deadline");
      }
      const timeout = Math.floor(ctx.deadline - Date.now());
      if (timeout <= 0) return failure("timeout", "the tool did not answer before the deadline");
      const drops = this.#drops;
      const outcome = await this.#request(subject, payload, timeout, ctx);
      if (outcome.kind === "reply") {
        const error = ServiceError.toServiceError(outcome.reply);
        if (error) {
          const type = error.code === ToolErrorCode.deadline ? "timeout" : "tool_error";
          return failure(type, error.message || `the tool failed (code ${error.code})`);
        }
        return { output: outcome.reply.string() };
      }
      const lost = outcome.kind === "dropped" || this.#drops !== drops;
      if (outcome.kind === "no_responders") {
        unanswered ??= Date.now();
        this.#soon();
      }
      const patient =
        outcome.kind === "no_responders"
          ? Date.now() - (unanswered ?? 0) < NO_RESPONDERS_PATIENCE_MS
          : lost && idempotent;
      // Nothing ran (no responders: a service restarting), or running again is harmless (the
      // connection dropped): wait for the connection, or a moment, then ask again.
      if (patient && (await this.#pause(attempt, ctx))) continue;
      if (outcome.kind === "no_responders") {
        return failure("no_responders", `no instance of the tool service for "${name}" is running`);
      }
      if (lost) {
        return failure(
          "unavailable",
          idempotent
            ? "the NATS connection was lost and did not come back in time"
            : `the NATS connection dropped while "${name}" ran; it may have run, and it is not idempotent, so it was not called again`,
        );
      }
      if (outcome.kind === "failed") {
        return failure("unavailable", `calling "${name}" failed: ${outcome.message}`);
      }
      return failure("timeout", `the tool did not answer within ${timeout} ms`);
    }
  }

  /** One request, raced with the caller's abort and with a drop of the connection. */
  async #request(
    subject: string,
    payload: string,
    timeout: number,
    ctx: SourceCallContext,
  ): Promise<
    | { kind: "reply"; reply: Msg }
    | { kind: "no_responders" | "timeout" | "dropped" }
    | { kind: "failed"; message: string }
  > {
    const headers = tracedHeaders({ [DEADLINE_HEADER]: String(Math.floor(ctx.deadline)) });
    const drop = this.#dropped.wait();
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(ctx.signal.reason);
      ctx.signal.addEventListener("abort", onAbort, { once: true });
    });
    aborted.catch(() => {});
    try {
      return await Promise.race([
        this.#nc
          .request(subject, payload, { timeout, headers })
          .then((reply) => ({ kind: "reply" as const, reply })),
        drop.promise.then(() => ({ kind: "dropped" as const })),
        aborted,
      ]);
    } catch (error) {
      if (ctx.signal.aborted) throw ctx.signal.reason;
      if (isNoResponders(error)) return { kind: "no_responders" };
      if (error instanceof TimeoutError || (error as Error)?.name === "TimeoutError") {
        return { kind: "timeout" };
      }
      return { kind: "failed", message: (error as Error).message };
    } finally {
      drop.cancel();
      if (onAbort) ctx.signal.removeEventListener("abort", onAbort);
    }
  }

  /**
   * Waits before asking again: until the connection is back while it is down, else a short
   * backoff. False when the deadline comes first; rejects when the caller aborts.
   */
  async #pause(attempt: number, ctx: SourceCallContext): Promise<boolean> {
    const left = ctx.deadline - Date.now();
    const backoff = Math.min(1_000, 50 * 2 ** Math.min(attempt - 1, 10));
    if (left <= backoff) return false;
    const timers: NodeJS.Timeout[] = [];
    const back = this.#disconnected ? this.#reconnected.wait() : undefined;
    const after = (ms: number, value: boolean) =>
      new Promise<boolean>((resolve) => {
        timers.push(setTimeout(() => resolve(value), ms));
      });
    let onAbort: (() => void) | undefined;
    try {
      return await Promise.race([
        back ? back.promise.then(() => true) : after(backoff, true),
        after(left, false),
        new Promise<never>((_, reject) => {
          onAbort = () => reject(ctx.signal.reason);
          ctx.signal.addEventListener("abort", onAbort, { once: true });
        }),
      ]);
    } finally {
      for (const timer of timers) clearTimeout(timer);
      back?.cancel();
      if (onAbort) ctx.signal.removeEventListener("abort", onAbort);
    }
  }

  async #watchConnection(): Promise<void> {
    const statuses = this.#nc.status() as AsyncIterable<{ type: string }> & { stop?: () => void };
    this.#statuses = statuses;
    for await (const status of statuses) {
      if (status.type === "disconnect") {
        this.#drops++;
        this.#disconnected = true;
        this.#dropped.happen();
      } else if (status.type === "reconnect") {
        this.#disconnected = false;
        this.#reconnected.happen();
        // What changed while the connection was down is found now, not at the next poll.
        this.#soon();
      }
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    clearTimeout(this.#debounce);
    this.#subscription?.unsubscribe();
    this.#statuses?.stop?.();
    await this.#running?.catch(() => {});
  }

  /** A discovery shortly, once a burst of announcements has settled. */
  #soon(): void {
    if (this.#closed) return;
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => void this.refresh(), 50);
    this.#debounce.unref();
  }

  async #discover(): Promise<void> {
    if (this.#closed || this.#nc.isClosed()) return;
    const infos: ServiceInfo[] = [];
    try {
      const client = new Svcm(this.#nc).client({
        strategy: "stall",
        maxWait: this.#options.discoveryWaitMs,
        stall: this.#options.discoveryStallMs,
      });
      for await (const info of await client.info()) infos.push(info);
    } catch (error) {
      // No service at all answers `$SRV.INFO` with "no responders": there are no tools.
      if (!isNoResponders(error)) {
        this.#options.logger?.warn(
          { err: error },
          "tool discovery failed; keeping the tools found before",
        );
        return;
      }
    }
    this.#replace(infos);
  }

  #replace(infos: readonly ServiceInfo[]): void {
    const next = new Map<string, Found>();
    // Sorted, so which definition wins a conflict does not depend on who answered first.
    const sorted = [...infos].sort((a, b) =>
      `${a.name}/${a.id}`.localeCompare(`${b.name}/${b.id}`),
    );
    for (const info of sorted) {
      for (const endpoint of info.endpoints ?? []) {
        const meta = endpoint.metadata ?? {};
        if (meta[ToolMetadata.marker] !== TOOL_PROTOCOL_VERSION) continue;
        const problem = this.#problemOf(endpoint.name, endpoint.subject, meta);
        if (problem) {
          this.#warnOnce(`${info.name}/${endpoint.name}/${problem}`, {
            service: info.name,
            tool: endpoint.name,
            problem,
          });
          continue;
        }
        const schemaText = meta[ToolMetadata.schema] ?? "";
        const existing = next.get(endpoint.name);
        if (existing) {
          if (existing.schemaText !== schemaText && existing.tool.origin.kind === "nats") {
            this.#warnOnce(`conflict/${endpoint.name}/${info.name}`, {
              tool: endpoint.name,
              service: info.name,
              problem: `a different schema than ${existing.tool.origin.service}'s; calls go to either`,
            });
          }
          existing.instances.add(info.id);
          if (existing.tool.origin.kind === "nats") {
            existing.tool.origin.instances = existing.instances.size;
          }
          continue;
        }
        next.set(endpoint.name, {
          schemaText,
          instances: new Set([info.id]),
          tool: {
            name: endpoint.name,
            description: meta[ToolMetadata.description] ?? "",
            parameters: JSON.parse(schemaText) as Record<string, unknown>,
            origin: {
              kind: "nats",
              service: info.name,
              subject: endpoint.subject,
              instances: 1,
              idempotent: meta[ToolMetadata.idempotent] === "true",
            },
          },
        });
      }
    }
    const before = [...this.#tools.keys()].sort().join(",");
    const after = [...next.keys()].sort().join(",");
    this.#tools = next;
    if (before !== after) {
      this.#options.logger?.info({ tools: [...next.keys()].sort() }, "tools on NATS changed");
    }
  }

  /** Why an endpoint marked as a tool cannot be offered, or undefined when it can. */
  #problemOf(name: string, subject: string, meta: Record<string, string>): string | undefined {
    if (!TOOL_NAME.test(name)) return "its name is not 1-64 letters, digits, '_' or '-'";
    if (subject !== `${TOOL_SUBJECT_PREFIX}.${name}`) {
      return `its subject ${subject} is not ${TOOL_SUBJECT_PREFIX}.${name}`;
    }
    let schema: unknown;
    try {
      schema = JSON.parse(meta[ToolMetadata.schema] ?? "");
    } catch {
      return `its ${ToolMetadata.schema} metadata is not JSON`;
    }
    if (typeof schema !== "object" || schema === null || Array.isArray(schema)) {
      return `its ${ToolMetadata.schema} metadata is not a JSON Schema object`;
    }
    return undefined;
  }

  #warnOnce(key: string, details: Record<string, string>): void {
    if (this.#warned.has(key)) return;
    this.#warned.add(key);
    this.#options.logger?.warn(details, "a tool service endpoint is not offered");
  }
}

/**
 * "The next time X happens", for any number of waiters. Each waiter gets a promise of its own and
 * gives it up when it is done waiting (`cancel`), so a call that ended leaves nothing here. (Racing
 * every call against one shared promise instead, which stays pending until the connection drops,
 * perhaps for days, kept a reaction on it per call, and through it the whole call, reply included:
 * memory that grew with every tool call.)
 */
class Moment {
  readonly #waiters = new Set<() => void>();

  /** A promise resolved the next time it happens, and how to stop waiting for it. */
  wait(): { promise: Promise<void>; cancel: () => void } {
    let wake = () => {};
    const promise = new Promise<void>((resolve) => {
      wake = resolve;
    });
    this.#waiters.add(wake);
    return { promise, cancel: () => void this.#waiters.delete(wake) };
  }

  /** Wakes every waiter; later waiters wait for the next time. */
  happen(): void {
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const wake of waiters) wake();
  }
}

function failure(
  type: NonNullable<SourceOutcome["error"]>["type"],
  message: string,
): SourceOutcome {
  return { output: `error: ${message}`, error: { type, message } };
}

function isNoResponders(error: unknown): boolean {
  if (error instanceof NoRespondersError) return true;
  if (error instanceof RequestError) return error.isNoResponders();
  return (error as Error | undefined)?.cause instanceof NoRespondersError;
}
