import type { LookupAddress } from "node:dns";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, LookupFunction } from "node:net";
import tls from "node:tls";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  type AddressKind,
  classifyAddress,
  createHttpGetTool,
  type HttpGetOptions,
} from "./http-get.js";
import { type Tool, type ToolContext, ToolRegistry } from "./tool.js";

interface TestServer {
  /** `http://host:port` with the IPv6 host in brackets. */
  origin: string;
  port: number;
  /** Counted on the socket, so a refused fetch can be shown to make no connection at all. */
  connections: number;
  requests: IncomingMessage[];
}

const servers: http.Server[] = [];

afterEach(async () => {
  vi.restoreAllMocks();
  const closing = servers.splice(0).map(
    (server) =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  await Promise.all(closing);
});

async function serve(
  handler: (req: IncomingMessage, res: ServerResponse, server: TestServer) => void,
  host = "127.0.0.1",
): Promise<TestServer> {
  const server = http.createServer();
  servers.push(server);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const state: TestServer = {
    origin: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    port,
    connections: 0,
    requests: [],
  };
  server.on("connection", () => state.connections++);
  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    state.requests.push(req);
    handler(req, res, state);
  });
  return state;
}

const text =
  (body: string, type = "text/plain; charset=utf-8") =>
  (_: unknown, res: ServerResponse) => {
    res.writeHead(200, { "content-type": type });
    res.end(body);
  };

const newCtx = (signal = new AbortController().signal): ToolContext => ({
  signal,
  now: () => new Date(0),
});

const get = async (tool: Tool, url: string, ctx = newCtx()): Promise<string> =>
  tool.handler({ url }, ctx);

/** A resolver from a fixed table that records every name it was asked for. */
function fakeDns(table: Record<string, string[]>) {
  const asked: string[] = [];
  const lookup = async (hostname: string): Promise<LookupAddress[]> => {
    asked.push(hostname);
    const addresses = table[hostname];
    if (addresses === undefined) {
      throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" });
    }
    return addresses.map((address) => ({ address, family: address.includes(":") ? 6 : 4 }));
  };
  return { asked, lookup };
}

/**
 * Pretends the network routes `publicAddress` to this machine, so a fetch that passes the
 * public-address check can still reach a local test server. It wraps the `lookup` the tool hands
 * to http.request, translating only at the socket level, and records where sockets were sent.
 */
function routePublicToLoopback(publicAddress: string) {
  const connectedTo: string[] = [];
  const request = http.request;
  const translate = (address: string) => {
    connectedTo.push(address);
    return address === publicAddress ? "127.0.0.1" : address;
  };
  vi.spyOn(http, "request").mockImplementation(((options: http.RequestOptions) => {
    const pinned = options.lookup;
    if (pinned === undefined) return request(options);
    const lookup: LookupFunction = (hostname, lookupOptions, callback) =>
      pinned(hostname, lookupOptions, (err, address, family) => {
        if (Array.isArray(address)) {
          callback(
            err,
            address.map((a) => ({ ...a, address: translate(a.address) })),
          );
        } else {
          callback(err, err ? address : translate(address), family);
        }
      });
    return request({ ...options, lookup });
  }) as typeof http.request);
  return { connectedTo };
}

/** A tool for local servers: private addresses allowed, everything else as given. */
const localTool = (options: Partial<HttpGetOptions> = {}) =>
  createHttpGetTool({ allowHosts: ["127.0.0.1", "localhost"], allowPrivate: true, ...options });

describe("classifyAddress", () => {
  const table: [string, AddressKind | undefined][] = [
    ["8.8.8.8", undefined],
    ["1.1.1.1", undefined],
    ["172.15.255.255", undefined],
    ["172.32.0.0", undefined],
    ["100.63.255.255", undefined],
    ["100.128.0.0", undefined],
    ["2606:4700::1", undefined],
    ["2001:4860:4860::8888", undefined],
    ["::ffff:8.8.8.8", undefined],
    ["64:ff9b::808:808", undefined],
    ["10.0.0.1", "private"],
    ["10.255.255.255", "private"],
    ["172.16.0.1", "private"],
    ["172.31.255.255", "private"],
    ["192.168.1.1", "private"],
    ["169.254.169.254", "link-local"],
    ["100.64.0.1", "carrier-grade NAT"],
    ["100.127.255.255", "carrier-grade NAT"],
    ["127.0.0.1", "loopback"],
    ["127.255.0.9", "loopback"],
    ["0.0.0.0", "unspecified"],
    ["0.1.2.3", "unspecified"],
    ["224.0.0.1", "multicast"],
    ["239.255.255.250", "multicast"],
    ["255.255.255.255", "broadcast"],
    ["240.0.0.1", "reserved"],
    ["192.0.2.1", "reserved"],
    ["198.18.0.1", "reserved"],
    ["::", "unspecified"],
    ["::1", "loopback"],
    ["0:0:0:0:0:0:0:1", "loopback"],
    ["fe80::1", "link-local"],
    ["fe80::1%eth0", "link-local"],
    ["febf:ffff::1", "link-local"],
    ["fc00::1", "unique-local"],
    ["fd12:3456::1", "unique-local"],
    ["ff02::1", "multicast"],
    ["2001:db8::1", "reserved"],
    ["::ffff:127.0.0.1", "loopback"],
    ["::ffff:7f00:1", "loopback"],
    ["::FFFF:10.1.2.3", "private"],
    ["::ffff:169.254.169.254", "link-local"],
    ["::ffff:0.0.0.0", "unspecified"],
    ["64:ff9b::7f00:1", "loopback"],
    ["2002:c0a8:0101::1", "private"], // 6to4 for 192.168.1.1
    ["::7f00:1", "reserved"], // deprecated IPv4-compatible
    ["4000::1", "reserved"], // outside 2000::/3
  ];

  it.each(table)("%s is %s", (address, kind) => {
    expect(classifyAddress(address)).toBe(kind);
  });

  it("throws on a string that is not an address", () => {
    expect(() => classifyAddress("localhost")).toThrow('"localhost" is not an IP address');
    expect(() => classifyAddress("1.2.3.256")).toThrow("not an IP address");
  });
});

describe("http_get options", () => {
  it("refuses an empty allowlist and malformed entries at creation", () => {
    expect(() => createHttpGetTool({ allowHosts: [] })).toThrow("allowHosts is empty");
    for (const entry of ["*", "*.", "a.*.com", "example.com:8080", "http://example.com", ""]) {
      expect(() => createHttpGetTool({ allowHosts: [entry] }), entry).toThrow(
        `allowHosts entry "${entry}"`,
      );
    }
    expect(() => createHttpGetTool({ allowHosts: ["*.10.0.0.1"] })).toThrow("allowHosts entry");
  });

  it("refuses limits that are not positive integers", () => {
    expect(() => createHttpGetTool({ allowHosts: ["a.test"], maxBytes: 0 })).toThrow(
      "maxBytes must be an integer of at least 1, got 0",
    );
    expect(() => createHttpGetTool({ allowHosts: ["a.test"], timeoutMs: 1.5 })).toThrow(
      "timeoutMs",
    );
    expect(() => createHttpGetTool({ allowHosts: ["a.test"], maxRedirects: -1 })).toThrow(
      "maxRedirects",
    );
  });

  it("offers the model a url argument and a description naming the allowed hosts", () => {
    const registry = new ToolRegistry([createHttpGetTool({ allowHosts: ["docs.example.com"] })]);
    const [definition] = registry.definitions();
    expect(definition?.function.name).toBe("http_get");
    expect(definition?.function.description).toContain("docs.example.com");
    expect(definition?.function.parameters).toMatchObject({
      type: "object",
      properties: { url: { type: "string", format: "uri" } },
      required: ["url"],
    });
  });
});

describe("http_get allowlist and URL rules", () => {
  it("refuses a host that is not on the allowlist without connecting", async () => {
    const server = await serve(text("secret"));
    const tool = createHttpGetTool({ allowHosts: ["example.com"], allowPrivate: true });
    await expect(get(tool, `${server.origin}/`)).rejects.toThrow(
      'host "127.0.0.1" is not on the allowlist (allowed: example.com)',
    );
    expect(server.connections).toBe(0);
  });

  it("matches exact names and *.wildcards case-insensitively, wildcards not matching the apex", async () => {
    const server = await serve((req, res) => {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(`host=${req.headers.host}`);
    });
    const dns = fakeDns({
      "api.example.test": ["127.0.0.1"],
      "a.b.example.test": ["127.0.0.1"],
      "exact.test.": ["127.0.0.1"], // looked up as written
    });
    const tool = createHttpGetTool({
      allowHosts: ["*.Example.TEST", "EXACT.test"],
      allowPrivate: true,
      lookup: dns.lookup,
    });
    const at = (host: string) => `http://${host}:${server.port}/`;

    expect(await get(tool, at("API.example.test"))).toContain(
      `host=api.example.test:${server.port}`,
    );
    expect(await get(tool, at("a.b.example.test"))).toContain("host=a.b.example.test");
    expect(await get(tool, at("exact.test."))).toContain("host=exact.test.");
    for (const host of ["example.test", "badexample.test", "sub.exact.test", "example.test.evil"]) {
      await expect(get(tool, at(host)), host).rejects.toThrow(
        `host "${host}" is not on the allowlist`,
      );
    }
    expect(dns.asked).toEqual(["api.example.test", "a.b.example.test", "exact.test."]);
    expect(server.requests).toHaveLength(3);
  });

  it("refuses other schemes and credentials in the URL", async () => {
    const server = await serve(text("secret"));
    const tool = localTool();
    await expect(get(tool, "ftp://127.0.0.1/file")).rejects.toThrow(
      "only http: and https: URLs can be fetched, not ftp:",
    );
    await expect(get(tool, "file:///etc/passwd")).rejects.toThrow("not file:");
    await expect(get(tool, `http://user:pw@127.0.0.1:${server.port}/`)).rejects.toThrow(
      "URLs with a user name or password (user:pass@host) are not allowed",
    );
    expect(server.connections).toBe(0);
  });
});

describe("http_get private addresses", () => {
  it("refuses loopback by default even for an allowlisted host, without connecting", async () => {
    const server = await serve(text("secret"));
    const tool = createHttpGetTool({ allowHosts: ["localhost", "127.0.0.1", "::1"] });
    await expect(get(tool, `http://localhost:${server.port}/`)).rejects.toThrow(
      /^"localhost" resolves to (127\.0\.0\.1|::1), a loopback address; private addresses are not allowed$/,
    );
    await expect(get(tool, `${server.origin}/`)).rejects.toThrow(
      '"127.0.0.1" is a loopback address; private addresses are not allowed',
    );
    await expect(get(tool, `http://[::1]:${server.port}/`)).rejects.toThrow(
      '"::1" is a loopback address',
    );
    const literals = createHttpGetTool({ allowHosts: ["0.0.0.0", "fd00::1", "100.64.0.1"] });
    await expect(get(literals, "http://0.0.0.0/")).rejects.toThrow('"0.0.0.0" is an unspecified');
    await expect(get(literals, "http://[fd00::1]/")).rejects.toThrow('"fd00::1" is a unique-local');
    await expect(get(literals, "http://100.64.0.1/")).rejects.toThrow(
      "a carrier-grade NAT address",
    );
    // The URL parser turns these spellings into 127.0.0.1 before the check sees them.
    for (const spelling of ["2130706433", "0x7f.1", "127.1"]) {
      const tricky = createHttpGetTool({ allowHosts: ["127.0.0.1"] });
      await expect(get(tricky, `http://${spelling}:${server.port}/`)).rejects.toThrow(
        '"127.0.0.1" is a loopback address',
      );
    }
    expect(server.connections).toBe(0);
  });

  it("fetches loopback hosts when allowPrivate is set", async () => {
    const server = await serve(text("hello from loopback"));
    const tool = localTool();
    expect(await get(tool, `http://localhost:${server.port}/a`)).toContain("hello from loopback");
    expect(await get(tool, `${server.origin}/b`)).toBe(
      `HTTP 200 OK from ${server.origin}/b (text/plain; charset=utf-8)\n\nhello from loopback`,
    );
  });

  it("fetches [::1] when allowPrivate is set", async (t) => {
    const server = await serve(text("hello over IPv6"), "::1").catch(() => undefined);
    if (server === undefined) return t.skip();
    const tool = createHttpGetTool({ allowHosts: ["[::1]"], allowPrivate: true });
    expect(await get(tool, `${server.origin}/`)).toContain("hello over IPv6");
  });

  it("refuses an allowlisted name that resolves to a private address", async () => {
    const server = await serve(text("secret"));
    const dns = fakeDns({ "good.test": ["127.0.0.1"], "mixed.test": ["8.8.8.8", "10.0.0.7"] });
    const tool = createHttpGetTool({ allowHosts: ["*.test"], lookup: dns.lookup });
    await expect(get(tool, `http://good.test:${server.port}/`)).rejects.toThrow(
      '"good.test" resolves to 127.0.0.1, a loopback address; private addresses are not allowed',
    );
    // One private address among public ones is enough: the connection could go to any of them.
    await expect(get(tool, `http://mixed.test:${server.port}/`)).rejects.toThrow(
      '"mixed.test" resolves to 10.0.0.7, a private address',
    );
    expect(server.connections).toBe(0);
  });

  it("reports names that do not resolve or resolve to nonsense", async () => {
    const dns = fakeDns({ "empty.test": [], "junk.test": ["not-an-ip"] });
    const tool = createHttpGetTool({ allowHosts: ["*.test"], lookup: dns.lookup });
    await expect(get(tool, "http://missing.test/")).rejects.toThrow(
      'cannot resolve host "missing.test": ENOTFOUND',
    );
    await expect(get(tool, "http://empty.test/")).rejects.toThrow(
      'host "empty.test" has no addresses',
    );
    await expect(get(tool, "http://junk.test/")).rejects.toThrow('resolves to "not-an-ip"');
  });
});

describe("http_get DNS rebinding", () => {
  it("connects to the address it checked, not to a second DNS answer", async () => {
    const server = await serve(text("hello"));
    const network = routePublicToLoopback("8.8.4.4");
    let calls = 0;
    // The first answer is public and passes the check; a second one would point at loopback.
    const lookup = async (): Promise<LookupAddress[]> => [
      { address: calls++ === 0 ? "8.8.4.4" : "127.0.0.1", family: 4 },
    ];
    const tool = createHttpGetTool({ allowHosts: ["rebind.test"], lookup });
    expect(await get(tool, `http://rebind.test:${server.port}/`)).toContain("hello");
    expect(calls).toBe(1);
    expect(network.connectedTo).toEqual(["8.8.4.4"]);
  });

  it("sends the hostname in the Host header while connecting to the checked address", async () => {
    const server = await serve((req, res) => {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(`host=${req.headers.host} path=${req.url}`);
    });
    const dns = fakeDns({ "good.test": ["127.0.0.1"] });
    const tool = createHttpGetTool({
      allowHosts: ["good.test"],
      allowPrivate: true,
      lookup: dns.lookup,
    });
    const out = await get(tool, `http://good.test:${server.port}/p?q=1#frag`);
    expect(out).toBe(
      `HTTP 200 OK from http://good.test:${server.port}/p?q=1 (text/plain)\n\n` +
        `host=good.test:${server.port} path=/p?q=1`,
    );
    expect(dns.asked).toEqual(["good.test"]);
  });

  it("opens a fresh connection per request, never a socket another check led to", async () => {
    const server = await serve(text("hi"));
    const network = routePublicToLoopback("8.8.4.4");
    const permissive = createHttpGetTool({
      allowHosts: ["same.test"],
      allowPrivate: true,
      lookup: fakeDns({ "same.test": ["127.0.0.1"] }).lookup,
    });
    const strict = createHttpGetTool({
      allowHosts: ["same.test"],
      lookup: fakeDns({ "same.test": ["8.8.4.4"] }).lookup,
    });
    const url = `http://same.test:${server.port}/`;
    await get(permissive, url);
    await get(strict, url);
    expect(server.connections).toBe(2);
    expect(network.connectedTo).toEqual(["127.0.0.1", "8.8.4.4"]);
  });

  it("keeps the hostname as the TLS server name for https", async () => {
    const names: string[] = [];
    // No certificate: the handshake fails, but only after the client has sent its server name.
    const server = tls.createServer({
      SNICallback: (name, callback) => {
        names.push(name);
        callback(null, undefined);
      },
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const dns = fakeDns({ "secure.test": ["127.0.0.1"] });
      const tool = createHttpGetTool({
        allowHosts: ["secure.test"],
        allowPrivate: true,
        lookup: dns.lookup,
      });
      await expect(get(tool, `https://secure.test:${port}/`)).rejects.toThrow(
        `request to https://secure.test:${port}/ failed`,
      );
      expect(names).toEqual(["secure.test"]);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe("http_get redirects", () => {
  it("refuses a redirect to a private address when private addresses are not allowed", async () => {
    const server = await serve((req, res) => {
      const to: Record<string, string> = {
        "/by-name": `http://inner.test:${server.port}/secret`,
        "/literal": `http://127.0.0.1:${server.port}/secret`,
        "/mapped": `http://[::ffff:127.0.0.1]:${server.port}/secret`,
      };
      res.writeHead(302, { location: to[req.url ?? ""] ?? "/" }).end();
    });
    const network = routePublicToLoopback("8.8.4.4");
    const dns = fakeDns({ "pub.test": ["8.8.4.4"], "inner.test": ["10.0.0.5"] });
    const tool = createHttpGetTool({
      allowHosts: ["pub.test", "inner.test", "127.0.0.1", "::ffff:127.0.0.1"],
      lookup: dns.lookup,
    });
    const from = (path: string) => get(tool, `http://pub.test:${server.port}${path}`);
    await expect(from("/by-name")).rejects.toThrow(
      `redirected to http://inner.test:${server.port}/secret: "inner.test" resolves to ` +
        "10.0.0.5, a private address; private addresses are not allowed",
    );
    await expect(from("/literal")).rejects.toThrow('"127.0.0.1" is a loopback address');
    await expect(from("/mapped")).rejects.toThrow('"::ffff:7f00:1" is a loopback address');
    expect(server.requests.map((r) => r.url)).toEqual(["/by-name", "/literal", "/mapped"]);
    expect(network.connectedTo).toEqual(["8.8.4.4", "8.8.4.4", "8.8.4.4"]);
    expect(dns.asked).toEqual(["pub.test", "inner.test", "pub.test", "pub.test"]);
  });

  it("follows relative and absolute redirects and reports the final URL", async () => {
    const server = await serve((req, res) => {
      if (req.url === "/start") res.writeHead(301, { location: "/middle" }).end();
      else if (req.url === "/middle") {
        res.writeHead(307, { location: `http://localhost:${server.port}/end` }).end();
      } else text("arrived")(req, res);
    });
    const out = await get(localTool(), `${server.origin}/start`);
    expect(out).toBe(
      `HTTP 200 OK from http://localhost:${server.port}/end (text/plain; charset=utf-8)\n\narrived`,
    );
    expect(server.requests.map((r) => r.url)).toEqual(["/start", "/middle", "/end"]);
  });

  it("refuses a redirect to a host that is not on the allowlist", async () => {
    const evil = await serve(text("secret"));
    const start = await serve((_, res) => {
      res.writeHead(302, { location: `http://evil.test:${evil.port}/steal` }).end();
    });
    const dns = fakeDns({ "good.test": ["127.0.0.1"], "evil.test": ["127.0.0.1"] });
    const tool = createHttpGetTool({
      allowHosts: ["good.test"],
      allowPrivate: true,
      lookup: dns.lookup,
    });
    await expect(get(tool, `http://good.test:${start.port}/`)).rejects.toThrow(
      `redirected to http://evil.test:${evil.port}/steal: host "evil.test" is not on the allowlist`,
    );
    expect(start.requests).toHaveLength(1);
    expect(evil.connections).toBe(0);
    expect(dns.asked).toEqual(["good.test"]);
  });

  it("resolves and checks every hop again", async () => {
    const target = await serve(text("second hop"));
    const start = await serve((req, res) => {
      const next = req.url === "/to-junk" ? "junk.test" : "second.test";
      res.writeHead(302, { location: `http://${next}:${target.port}/` }).end();
    });
    const dns = fakeDns({
      "first.test": ["127.0.0.1"],
      "second.test": ["127.0.0.1"],
      "junk.test": ["999.1.1.1"],
    });
    const tool = createHttpGetTool({
      allowHosts: ["*.test"],
      allowPrivate: true,
      lookup: dns.lookup,
    });
    expect(await get(tool, `http://first.test:${start.port}/`)).toContain("second hop");
    expect(dns.asked).toEqual(["first.test", "second.test"]);
    await expect(get(tool, `http://first.test:${start.port}/to-junk`)).rejects.toThrow(
      `redirected to http://junk.test:${target.port}/: host "junk.test" resolves to "999.1.1.1"`,
    );
    expect(target.requests).toHaveLength(1);
  });

  it("gives up after maxRedirects", async () => {
    const server = await serve((req, res) => {
      const n = Number(req.url?.slice(1));
      res.writeHead(302, { location: `/${n + 1}` }).end();
    });
    const tool = localTool({ maxRedirects: 2 });
    await expect(get(tool, `${server.origin}/0`)).rejects.toThrow(
      `too many redirects: followed 2, then ${server.origin}/2 → ${server.origin}/3`,
    );
    expect(server.requests.map((r) => r.url)).toEqual(["/0", "/1", "/2"]);
  });

  it("returns a 3xx without Location as it is", async () => {
    const server = await serve((_, res) => {
      res.writeHead(300, { "content-type": "text/plain" }).end("pick one");
    });
    expect(await get(localTool(), `${server.origin}/`)).toBe(
      `HTTP 300 Multiple Choices from ${server.origin}/ (text/plain)\n\npick one`,
    );
  });
});

describe("http_get body limits and content types", () => {
  it("cuts an endless body at maxBytes, closes the connection and says so", async () => {
    let closed: () => void = () => {};
    const serverClosed = new Promise<void>((resolve) => {
      closed = resolve;
    });
    const server = await serve((_, res) => {
      res.writeHead(200, { "content-type": "text/plain" });
      const chunk = Buffer.alloc(64 * 1024, "x");
      const pump = () => {
        while (res.write(chunk)) {}
      };
      res.on("drain", pump);
      res.on("close", closed);
      pump();
    });
    const started = Date.now();
    const out = await get(localTool({ maxBytes: 1000 }), `${server.origin}/`);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(out).toBe(
      `HTTP 200 OK from ${server.origin}/ (text/plain)\n\n${"x".repeat(1000)}\n` +
        "[cut: the response exceeded 1000 bytes]",
    );
    await serverClosed;
  });

  it("does not mark a body of exactly maxBytes as cut", async () => {
    const server = await serve(text("y".repeat(100)));
    const out = await get(localTool({ maxBytes: 100 }), `${server.origin}/`);
    expect(out.endsWith(`\n\n${"y".repeat(100)}`)).toBe(true);
  });

  it("drops a character split by the cut instead of garbling it", async () => {
    const server = await serve(text("é".repeat(10))); // two bytes each
    const out = await get(localTool({ maxBytes: 5 }), `${server.origin}/`);
    expect(out).toMatch(/\n\néé\n\[cut: the response exceeded 5 bytes\]$/);
  });

  it("returns JSON, XML and +json types, and error statuses", async () => {
    const server = await serve((req, res) => {
      if (req.url === "/json") res.writeHead(200, { "content-type": "application/json" }).end("{}");
      else if (req.url === "/xml")
        res.writeHead(200, { "content-type": "application/xml" }).end("<a/>");
      else if (req.url === "/problem") {
        res.writeHead(400, { "content-type": "application/problem+json" }).end('{"title":"bad"}');
      } else res.writeHead(404, { "content-type": "text/html" }).end("<h1>Not here</h1>");
    });
    const tool = localTool();
    expect(await get(tool, `${server.origin}/json`)).toMatch(/\n\n\{\}$/);
    expect(await get(tool, `${server.origin}/xml`)).toMatch(/\n\n<a\/>$/);
    expect(await get(tool, `${server.origin}/problem`)).toBe(
      `HTTP 400 Bad Request from ${server.origin}/problem (application/problem+json)\n\n{"title":"bad"}`,
    );
    expect(await get(tool, `${server.origin}/missing`)).toBe(
      `HTTP 404 Not Found from ${server.origin}/missing (text/html)\n\n<h1>Not here</h1>`,
    );
  });

  it("refuses non-text, untyped and compressed bodies", async () => {
    const server = await serve((req, res) => {
      if (req.url === "/png") res.writeHead(200, { "content-type": "image/png" }).end("\x89PNG");
      else if (req.url === "/gzip") {
        res.writeHead(200, { "content-type": "text/plain", "content-encoding": "gzip" }).end("z");
      } else if (req.url === "/empty") res.writeHead(204).end();
      else {
        res.removeHeader("content-type");
        res.end("mystery bytes");
      }
    });
    const tool = localTool();
    await expect(get(tool, `${server.origin}/png`)).rejects.toThrow(
      `HTTP 200 OK from ${server.origin}/png is image/png; only text (text/*, JSON, XML) is returned`,
    );
    await expect(get(tool, `${server.origin}/untyped`)).rejects.toThrow("has no Content-Type");
    await expect(get(tool, `${server.origin}/gzip`)).rejects.toThrow("came compressed (gzip)");
    expect(await get(tool, `${server.origin}/empty`)).toBe(
      `HTTP 204 No Content from ${server.origin}/empty\n\n`,
    );
    expect(server.requests[0]?.headers["accept-encoding"]).toBe("identity");
  });
});

describe("http_get time limits and cancellation", () => {
  it("times out on a server that never answers", async () => {
    const server = await serve(() => {});
    const started = Date.now();
    await expect(get(localTool({ timeoutMs: 150 }), `${server.origin}/`)).rejects.toThrow(
      `timed out after 150 ms fetching ${server.origin}/`,
    );
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it("times out on a body that stalls halfway", async () => {
    const server = await serve((_, res) => {
      res.writeHead(200, { "content-type": "text/plain" });
      res.write("partial");
    });
    await expect(get(localTool({ timeoutMs: 150 }), `${server.origin}/`)).rejects.toThrow(
      "timed out after 150 ms",
    );
  });

  it("times out on a DNS lookup that hangs", async () => {
    const tool = createHttpGetTool({
      allowHosts: ["slow.test"],
      lookup: () => new Promise(() => {}),
      timeoutMs: 100,
    });
    await expect(get(tool, "http://slow.test/")).rejects.toThrow("timed out after 100 ms");
  });

  it("counts the limit over the whole redirect chain, not per hop", async () => {
    const server = await serve((req, res) => {
      const n = Number(req.url?.slice(1));
      setTimeout(() => res.writeHead(302, { location: `/${n + 1}` }).end(), 100);
    });
    // Each hop takes 100 ms, well under the limit; three of them do not.
    const tool = localTool({ timeoutMs: 250, maxRedirects: 10 });
    await expect(get(tool, `${server.origin}/0`)).rejects.toThrow("timed out after 250 ms");
    expect(server.requests.length).toBeLessThanOrEqual(3);
  });

  it("stops when ctx.signal is aborted, with its reason", async () => {
    const server = await serve(() => {});
    const controller = new AbortController();
    const reason = new Error("job cancelled");
    setTimeout(() => controller.abort(reason), 50);
    const started = Date.now();
    await expect(get(localTool(), `${server.origin}/`, newCtx(controller.signal))).rejects.toBe(
      reason,
    );
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it("does nothing when ctx.signal is already aborted", async () => {
    const server = await serve(text("never"));
    const controller = new AbortController();
    controller.abort(new Error("too late"));
    await expect(get(localTool(), `${server.origin}/`, newCtx(controller.signal))).rejects.toThrow(
      "too late",
    );
    expect(server.connections).toBe(0);
  });
});
