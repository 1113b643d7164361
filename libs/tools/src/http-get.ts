import { promises as dns, type LookupAddress, type LookupOptions } from "node:dns";
import http, { type IncomingMessage } from "node:http";
import https from "node:https";
import { isIP, isIPv4, isIPv6, type LookupFunction } from "node:net";
import { z } from "zod";
import { defineTool, type Tool } from "./tool.js";

/**
 * Resolves a hostname to every address it has. The default is `dns.lookup` with `all: true`, the
 * resolver the operating system uses (so /etc/hosts counts); tests inject their own.
 */
export type HttpGetLookup = (hostname: string) => Promise<LookupAddress[]>;

/** How `createHttpGetTool` is configured; only `allowHosts` is required. */
export interface HttpGetOptions {
  /**
   * Hosts the tool may fetch from, checked on the first request and on every redirect. An entry is
   * an exact hostname (`example.com`), an IP literal (`127.0.0.1`, `::1`), or a wildcard
   * `*.example.com` that matches every subdomain at any depth but not `example.com` itself.
   * Matching is case-insensitive and ignores a trailing dot. Every port of an allowed host is
   * allowed, so do not list a host whose other ports serve something the model must not reach.
   */
  allowHosts: readonly string[];
  /**
   * Lets the tool connect to loopback, private, link-local and other non-public addresses.
   * Default false: an allowed name that resolves (or is rebound) to an internal address is still
   * refused, which is what stops the model from reaching the machine's own services.
   */
  allowPrivate?: boolean;
  /** Redirects followed before giving up; each one is checked like the first request. Default 3. */
  maxRedirects?: number;
  /** Body bytes returned at most; a longer body is cut there and marked as cut. Default 100_000. */
  maxBytes?: number;
  /**
   * Limit in milliseconds for the whole call: every DNS lookup, connection, redirect and the body.
   * Default 10_000.
   */
  timeoutMs?: number;
  /** Replaces the DNS resolver, for tests. */
  lookup?: HttpGetLookup;
}

/** Why an address is not public; see `classifyAddress`. */
export type AddressKind =
  | "unspecified"
  | "loopback"
  | "private"
  | "link-local"
  | "unique-local"
  | "carrier-grade NAT"
  | "multicast"
  | "broadcast"
  | "reserved";

interface Range {
  base: bigint;
  bits: number;
  kind: AddressKind;
}

function parseIPv4(address: string): bigint {
  return address.split(".").reduce((value, part) => (value << 8n) | BigInt(part), 0n);
}

/** 128-bit value of an IPv6 address, which must already have passed `isIPv6`. */
function parseIPv6(address: string): bigint {
  let text = address.replace(/%.*$/, ""); // a zone id (fe80::1%eth0) does not change the address
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text)?.[1];
  if (dotted !== undefined) {
    const v4 = parseIPv4(dotted);
    text = `${text.slice(0, -dotted.length)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const groups = (part: string) => (part === "" ? [] : part.split(":"));
  const left = groups(head);
  const right = tail === undefined ? [] : groups(tail);
  const zeros = Array<string>(8 - left.length - right.length).fill("0");
  return [...left, ...zeros, ...right].reduce((value, g) => (value << 16n) | BigInt(`0x${g}`), 0n);
}

function v4(cidr: string, kind: AddressKind): Range {
  const [base = "", bits = ""] = cidr.split("/");
  return { base: parseIPv4(base), bits: Number(bits), kind };
}

function v6(cidr: string, kind: AddressKind): Range {
  const [base = "", bits = ""] = cidr.split("/");
  return { base: parseIPv6(base), bits: Number(bits), kind };
}

const inRange = (value: bigint, width: number, range: Range): boolean => {
  const shift = BigInt(width - range.bits);
  return value >> shift === range.base >> shift;
};

// First match wins, so narrower ranges come before the ranges that contain them.
const IPV4_RANGES: readonly Range[] = [
  v4("0.0.0.0/8", "unspecified"), // "this network"; Linux connects 0.0.0.0 to the local machine
  v4("10.0.0.0/8", "private"),
  v4("100.64.0.0/10", "carrier-grade NAT"),
  v4("127.0.0.0/8", "loopback"),
  v4("169.254.0.0/16", "link-local"), // includes the cloud metadata service at 169.254.169.254
  v4("172.16.0.0/12", "private"),
  v4("192.0.0.0/24", "reserved"), // IETF protocol assignments
  v4("192.0.2.0/24", "reserved"), // documentation
  v4("192.88.99.0/24", "reserved"), // former 6to4 relay anycast
  v4("192.168.0.0/16", "private"),
  v4("198.18.0.0/15", "reserved"), // benchmarking
  v4("198.51.100.0/24", "reserved"), // documentation
  v4("203.0.113.0/24", "reserved"), // documentation
  v4("224.0.0.0/4", "multicast"),
  v4("255.255.255.255/32", "broadcast"),
  v4("240.0.0.0/4", "reserved"),
];

const IPV6_RANGES: readonly Range[] = [
  v6("::/128", "unspecified"),
  v6("::1/128", "loopback"),
  v6("::/96", "reserved"), // deprecated IPv4-compatible addresses
  v6("64:ff9b:1::/48", "private"), // NAT64 prefix for local use
  v6("100::/64", "reserved"), // discard-only
  v6("2001:db8::/32", "reserved"), // documentation
  v6("fc00::/7", "unique-local"),
  v6("fe80::/10", "link-local"),
  v6("fec0::/10", "private"), // deprecated site-local
  v6("ff00::/8", "multicast"),
];

// Prefixes whose addresses carry an IPv4 address in the given bits; the IPv4 address decides.
const IPV4_MAPPED = v6("::ffff:0:0/96", "reserved");
const NAT64 = v6("64:ff9b::/96", "reserved");
const SIX_TO_FOUR = v6("2002::/16", "reserved");
// Only this block is handed out as public unicast; anything else in IPv6 is not a host on the web.
const GLOBAL_UNICAST = v6("2000::/3", "reserved");

function classifyIPv4(value: bigint): AddressKind | undefined {
  return IPV4_RANGES.find((range) => inRange(value, 32, range))?.kind;
}

function classifyIPv6(value: bigint): AddressKind | undefined {
  // ::ffff:127.0.0.1 reaches 127.0.0.1, so embedded IPv4 addresses are judged as IPv4.
  if (inRange(value, 128, IPV4_MAPPED) || inRange(value, 128, NAT64)) {
    return classifyIPv4(value & 0xffffffffn);
  }
  if (inRange(value, 128, SIX_TO_FOUR)) return classifyIPv4((value >> 80n) & 0xffffffffn);
  const kind = IPV6_RANGES.find((range) => inRange(value, 128, range))?.kind;
  if (kind !== undefined) return kind;
  return inRange(value, 128, GLOBAL_UNICAST) ? undefined : "reserved";
}

/**
 * Says why an IP address is not a public internet address, or `undefined` when it is. IPv6 forms
 * that carry an IPv4 address (`::ffff:10.0.0.1`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged
 * by the IPv4 address inside. Throws if `address` is not an IPv4 or IPv6 address.
 */
export function classifyAddress(address: string): AddressKind | undefined {
  if (isIPv4(address)) return classifyIPv4(parseIPv4(address));
  if (isIPv6(address)) return classifyIPv6(parseIPv6(address));
  throw new Error(`"${address}" is not an IP address`);
}

const withArticle = (kind: AddressKind): string =>
  `${kind === "unspecified" ? "an" : "a"} ${kind} address`;

interface HostPattern {
  wildcard: boolean;
  /** As the URL parser writes it: lower case, punycode, IPv6 in brackets, no trailing dot. */
  host: string;
}

const stripDot = (host: string): string => (host.endsWith(".") ? host.slice(0, -1) : host);

/** Normalizes an `allowHosts` entry the way `URL` normalizes hostnames, so the two compare. */
function parseHostPattern(entry: string): HostPattern {
  const trimmed = entry.trim();
  const wildcard = trimmed.startsWith("*.");
  // "[::1]", as in a URL, and "::1" both name the IPv6 loopback.
  const name = (wildcard ? trimmed.slice(2) : trimmed).replace(/^\[(.*)\]$/, "$1");
  const bad = new Error(
    `allowHosts entry "${entry}" is not a hostname, IP address or "*.domain" wildcard`,
  );
  if (isIPv6(name)) {
    if (wildcard) throw bad;
    return { wildcard, host: new URL(`http://[${name}]/`).hostname };
  }
  // A scheme, port or path would be swallowed by the URL parser below instead of being refused.
  if (name === "" || /[*/:@?#[\]\s]/.test(name)) throw bad;
  let host: string;
  try {
    host = stripDot(new URL(`http://${name}/`).hostname);
  } catch {
    throw bad;
  }
  if (host === "" || (wildcard && isIP(host) !== 0)) throw bad;
  return { wildcard, host };
}

function hostAllowed(patterns: readonly HostPattern[], hostname: string): boolean {
  const host = stripDot(hostname);
  return patterns.some((p) => (p.wildcard ? host.endsWith(`.${p.host}`) : host === p.host));
}

/** `hostname` from a URL without the brackets around an IPv6 literal, as sockets want it. */
const bareHost = (url: URL): string => url.hostname.replace(/^\[(.*)\]$/, "$1");

/**
 * A `lookup` for http.request that answers with addresses already resolved and checked, so the
 * socket cannot be sent elsewhere by a second DNS answer (DNS rebinding). Node asks with
 * `all: true` when it races IPv4 and IPv6 (autoSelectFamily), and for one address otherwise.
 */
function pinnedLookup(addresses: readonly LookupAddress[]): LookupFunction {
  return (hostname: string, options: LookupOptions, callback) => {
    const family = options.family === "IPv4" ? 4 : options.family === "IPv6" ? 6 : options.family;
    const usable = addresses.filter((a) => !family || a.family === family);
    const first = usable[0];
    if (first === undefined) {
      const err: NodeJS.ErrnoException = new Error(`no IPv${family} address for ${hostname}`);
      err.code = "ENOTFOUND";
      callback(err, "");
    } else if (options.all) {
      callback(null, usable);
    } else {
      callback(null, first.address, first.family);
    }
  };
}

/** Rejects with the signal's reason when it fires; dns.lookup itself cannot be cancelled. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    signal.throwIfAborted();
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** text/*, JSON and XML, including structured suffixes such as application/problem+json. */
function isTextType(mediaType: string): boolean {
  return (
    mediaType.startsWith("text/") ||
    mediaType === "application/json" ||
    mediaType === "application/xml" ||
    mediaType.endsWith("+json") ||
    mediaType.endsWith("+xml")
  );
}

const ACCEPT =
  "text/*, application/json, application/xml, application/*+json, application/*+xml;q=0.9";

/**
 * Builds the `http_get` tool: fetches one URL with GET and returns the status and the text body to
 * the model. The model chooses the URL, so every rule that keeps it away from places it must not
 * reach is enforced here, on the first request and again on every redirect:
 *
 * - only `http:` and `https:`, no `user:password@` in the URL, and only hosts on `allowHosts`;
 * - each name is resolved once, every address it has must be public (unless `allowPrivate`), and
 *   the connection goes to exactly those checked addresses, never to a second DNS answer;
 * - redirects are followed by hand, at most `maxRedirects`, and may switch between http and https;
 * - `timeoutMs` covers the whole call, and `ctx.signal` cancels it;
 * - only text is returned, and at most `maxBytes` of it: a longer body is cut, not refused,
 *   because the start of a long page is usually what the model wanted, and it is told that it was
 *   cut. Compressed bodies are not requested, so the limit counts the bytes the model gets.
 *
 * Throws at creation if an option is invalid.
 */
export function createHttpGetTool(options: HttpGetOptions): Tool {
  const {
    allowPrivate = false,
    maxRedirects = 3,
    maxBytes = 100_000,
    timeoutMs = 10_000,
    lookup = (hostname: string) => dns.lookup(hostname, { all: true, order: "verbatim" }),
  } = options;
  if (options.allowHosts.length === 0) {
    throw new Error("allowHosts is empty: list at least one host the tool may fetch from");
  }
  const patterns = options.allowHosts.map(parseHostPattern);
  for (const [name, value, min] of [
    ["maxRedirects", maxRedirects, 0],
    ["maxBytes", maxBytes, 1],
    ["timeoutMs", timeoutMs, 1],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < min) {
      throw new Error(`${name} must be an integer of at least ${min}, got ${value}`);
    }
  }
  const allowed = options.allowHosts.join(", ");

  /** Refuses a URL the model may not fetch, before anything goes on the network. */
  function checkUrl(url: URL): void {
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new Error(`only http: and https: URLs can be fetched, not ${url.protocol}`);
    }
    if (url.username !== "" || url.password !== "") {
      throw new Error("URLs with a user name or password (user:pass@host) are not allowed");
    }
    if (!hostAllowed(patterns, url.hostname)) {
      throw new Error(`host "${url.hostname}" is not on the allowlist (allowed: ${allowed})`);
    }
  }

  /** Every address the URL's host stands for, each one checked. */
  async function resolve(url: URL, signal: AbortSignal): Promise<LookupAddress[]> {
    const host = bareHost(url);
    const literal = isIP(host) !== 0;
    let found: LookupAddress[];
    if (literal) {
      found = [{ address: host, family: isIP(host) }];
    } else {
      try {
        found = await untilAborted(lookup(host), signal);
      } catch (err) {
        if (signal.aborted) throw err;
        const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        throw new Error(`cannot resolve host "${host}": ${code}`);
      }
      if (found.length === 0) throw new Error(`host "${host}" has no addresses`);
    }
    return found.map(({ address }) => {
      const family = isIP(address);
      if (family === 0) throw new Error(`host "${host}" resolves to "${address}", not an address`);
      const kind = classifyAddress(address);
      if (kind !== undefined && !allowPrivate) {
        const what = literal ? `"${host}" is` : `"${host}" resolves to ${address},`;
        throw new Error(`${what} ${withArticle(kind)}; private addresses are not allowed`);
      }
      return { address, family };
    });
  }

  /** Sends the GET to the checked addresses and waits for the response head. */
  function send(
    url: URL,
    addresses: LookupAddress[],
    signal: AbortSignal,
  ): Promise<IncomingMessage> {
    return new Promise((resolveResponse, reject) => {
      const request = (url.protocol === "https:" ? https : http).request({
        method: "GET",
        protocol: url.protocol,
        // The name, not the address, so the Host header and TLS name (SNI, certificate) stay right.
        hostname: bareHost(url),
        port: url.port === "" ? undefined : Number(url.port),
        path: `${url.pathname}${url.search}`,
        headers: {
          accept: ACCEPT,
          "accept-encoding": "identity",
          "user-agent": "handoff-http_get",
        },
        lookup: pinnedLookup(addresses),
        // No pooled sockets: a kept-alive socket could lead to an address checked by another call.
        agent: false,
        signal,
      });
      request.once("response", resolveResponse);
      request.once("error", reject);
      request.end();
    });
  }

  /** The text for the model: a header line, then at most `maxBytes` of the body. */
  async function render(url: URL, response: IncomingMessage): Promise<string> {
    const status = `HTTP ${response.statusCode} ${response.statusMessage ?? ""}`.trimEnd();
    const contentType = response.headers["content-type"];
    const mediaType = contentType?.split(";")[0]?.trim().toLowerCase() ?? "";
    const empty =
      response.statusCode === 204 ||
      response.statusCode === 304 ||
      response.headers["content-length"] === "0";
    if (mediaType === "" && !empty) {
      throw new Error(`${status} from ${url.href} has no Content-Type; only text is returned`);
    }
    if (mediaType !== "" && !isTextType(mediaType)) {
      throw new Error(
        `${status} from ${url.href} is ${mediaType}; only text (text/*, JSON, XML) is returned`,
      );
    }
    const encoding = response.headers["content-encoding"]?.trim().toLowerCase();
    if (encoding && encoding !== "identity") {
      throw new Error(`${status} from ${url.href} came compressed (${encoding}); cannot read it`);
    }

    const chunks: Buffer[] = [];
    let size = 0;
    let cut = false;
    for await (const chunk of response as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      size += chunk.length;
      // Leaving the loop destroys the response and its socket, so the rest is never downloaded.
      if (size > maxBytes) {
        cut = true;
        break;
      }
    }
    const body = Buffer.concat(chunks).subarray(0, maxBytes);
    // `stream: true` holds back a character split by the cut instead of printing U+FFFD.
    const text = new TextDecoder("utf-8").decode(body, { stream: cut });
    const type = contentType === undefined ? "" : ` (${contentType})`;
    const marker = cut ? `\n[cut: the response exceeded ${maxBytes} bytes]` : "";
    return `${status} from ${url.href}${type}\n\n${text}${marker}`;
  }

  async function fetchText(start: URL, signal: AbortSignal): Promise<string> {
    let url = start;
    for (let redirects = 0; ; redirects++) {
      url.hash = ""; // never sent to the server
      let response: IncomingMessage;
      try {
        checkUrl(url);
        const addresses = await resolve(url, signal);
        response = await send(url, addresses, signal).catch((err: Error) => {
          throw signal.aborted ? err : new Error(`request to ${url.href} failed: ${err.message}`);
        });
      } catch (err) {
        if (redirects === 0 || signal.aborted) throw err;
        throw new Error(`redirected to ${url.href}: ${(err as Error).message}`);
      }
      const location = response.headers.location;
      if (!REDIRECTS.has(response.statusCode ?? 0) || location === undefined) {
        try {
          return await render(url, response);
        } finally {
          response.destroy(); // a refused or cut body is not read to its end
        }
      }
      response.destroy();
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        throw new Error(`${url.href} redirected to an invalid URL: ${location}`);
      }
      if (redirects === maxRedirects) {
        throw new Error(`too many redirects: followed ${maxRedirects}, then ${url.href} → ${next}`);
      }
      url = next;
    }
  }

  return defineTool({
    name: "http_get",
    // A GET changes nothing on a well-behaved server: a call lost with the connection is repeated.
    idempotent: true,
    description:
      "Fetches a URL with HTTP GET and returns a line with the status and final URL, then the " +
      `body as text. Only these hosts can be fetched: ${allowed}. Only text responses (HTML, ` +
      `plain text, JSON, XML) are returned, cut after ${maxBytes} bytes; up to ${maxRedirects} ` +
      "redirects are followed. Error statuses such as 404 are returned like any other.",
    input: z.object({
      url: z.url().describe("Absolute http:// or https:// URL to fetch, e.g. https://example.com/"),
    }),
    handler: async ({ url }, ctx) => {
      const deadline = new AbortController();
      const timer = setTimeout(() => deadline.abort(), timeoutMs);
      const signal = AbortSignal.any([ctx.signal, deadline.signal]);
      try {
        return await fetchText(new URL(url), signal);
      } catch (err) {
        if (ctx.signal.aborted) throw ctx.signal.reason;
        if (deadline.signal.aborted) {
          throw new Error(
            `timed out after ${timeoutMs} ms fetching ${url} (the limit covers DNS, connecting, redirects and the body)`,
          );
        }
        throw err;
      } finally {
        clearTimeout(timer);
      }
    },
  });
}
