import { Agent, type Dispatcher, EnvHttpProxyAgent, request } from "undici";

/**
 * The one HTTP call the provider adapters make: a POST with a JSON body, answered with a status,
 * headers and a body that is either read whole or as it arrives (SSE).
 *
 * By default it goes through undici's `request` on a keep-alive agent shared by every adapter in
 * the process. The global `fetch` is the same client underneath, wrapped in WHATWG `Request`,
 * `Response`, `Headers` and streams, which cost 0.2 to 0.3 ms of CPU per call on the model call's
 * hot path (`npm run bench:http`; bench/hot-path.md). An adapter given its own
 * `fetch` (a test, a proxy) still uses it, through {@link fetchPost}.
 */
export type HttpPost = (url: string, init: HttpPostInit) => Promise<HttpReply>;

export interface HttpPostInit {
  /** Header names in lower case. */
  headers: Readonly<Record<string, string>>;
  body: string;
  /** Aborts the request and the reading of its body. */
  signal?: AbortSignal | undefined;
}

/** A header's value or null, as `Headers.get` answers. */
export interface ReplyHeaders {
  get(name: string): string | null;
}

export interface HttpReply {
  readonly status: number;
  /** A 2xx status. */
  readonly ok: boolean;
  readonly headers: ReplyHeaders;
  /** The whole body as UTF-8 text. */
  text(): Promise<string>;
  /** The body as it arrives; leaving the loop early closes the connection. */
  readonly body: AsyncIterable<Uint8Array>;
  /** Gives up on the rest of the body, if any is left. Safe to call more than once. */
  discard(): void;
}

let shared: Dispatcher | undefined;

/** The adapters' agent, made on first use from the process's environment. */
function agent(): Dispatcher {
  shared ??= agentFor(process.env);
  return shared;
}

/**
 * An agent with keep-alive connections per origin, reused across calls. Its timeouts are undici's
 * (and so the global fetch's) defaults; the caller's signal is what bounds a call.
 *
 * With `NODE_USE_ENV_PROXY=1` it goes through the proxies that `HTTPS_PROXY`, `HTTP_PROXY` and
 * `NO_PROXY` name (either case), as Node's own `fetch` does under that variable; without it, no
 * proxy, as before.
 */
export function agentFor(env: NodeJS.ProcessEnv): Dispatcher {
  if (env.NODE_USE_ENV_PROXY !== "1") return new Agent();
  const pick = (name: string) => env[name.toLowerCase()] ?? env[name];
  const options: ConstructorParameters<typeof EnvHttpProxyAgent>[0] = {};
  const httpProxy = pick("HTTP_PROXY");
  const httpsProxy = pick("HTTPS_PROXY");
  const noProxy = pick("NO_PROXY");
  if (httpProxy) options.httpProxy = httpProxy;
  if (httpsProxy) options.httpsProxy = httpsProxy;
  if (noProxy) options.noProxy = noProxy;
  return new EnvHttpProxyAgent(options);
}

/** An {@link HttpPost} over undici's `request`: no WHATWG objects built per call. */
export const undiciPost: HttpPost = (url, init) => postWith(agent(), url, init);

/** {@link undiciPost} through a given agent (tests, and a proxy's). */
export async function postWith(
  dispatcher: Dispatcher,
  url: string,
  init: HttpPostInit,
): Promise<HttpReply> {
  const answer = await request(url, {
    method: "POST",
    headers: init.headers,
    body: init.body,
    dispatcher,
    ...(init.signal ? { signal: init.signal } : {}),
  });
  const { statusCode, headers, body } = answer;
  return {
    status: statusCode,
    ok: statusCode >= 200 && statusCode < 300,
    headers: {
      get(name) {
        const value = headers[name.toLowerCase()];
        if (value === undefined) return null;
        return Array.isArray(value) ? value.join(", ") : value;
      },
    },
    text: () => body.text(),
    body,
    discard() {
      if (!body.destroyed) body.destroy();
    },
  };
}

/** An {@link HttpPost} over a `fetch`: the adapters' substitute for tests and proxies. */
export function fetchPost(fetchFn: typeof fetch): HttpPost {
  return async (url, init) => {
    const response = await fetchFn(url, {
      method: "POST",
      headers: init.headers,
      body: init.body,
      signal: init.signal ?? null,
    });
    const body = response.body;
    return {
      status: response.status,
      ok: response.ok,
      headers: response.headers,
      text: () => response.text(),
      body: body ?? emptyBody(),
      discard() {
        if (body && !body.locked) body.cancel().catch(() => {});
      },
    };
  };
}

async function* emptyBody(): AsyncIterable<Uint8Array> {}

/** Lower-cased header names and their values, for {@link HttpPostInit.headers}. */
export function headerRecord(headers: Headers): Record<string, string> {
  const record: Record<string, string> = {};
  headers.forEach((value, name) => {
    record[name] = value;
  });
  return record;
}
