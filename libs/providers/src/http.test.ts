import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { Deployment } from "@handoff/config";
import { anthropicMessage, openaiCompletion } from "@handoff/testkit";
import { afterEach, describe, expect, it, vi } from "vitest";
import { AnthropicModel } from "./anthropic/adapter.js";
import { agentFor, fetchPost, postWith, undiciPost } from "./http.js";
import { OpenAICompatibleModel } from "./openai-compatible/adapter.js";

/** What the upstreams answer: the testkit's vendor bodies, one text turn. */
const SAID = "Hi.";
const COMPLETION = openaiCompletion("gpt-4o-mini", { kind: "text", text: SAID });
const MESSAGE = anthropicMessage("claude-haiku-4-5", { kind: "text", text: SAID });

interface Upstream {
  base: string;
  /** The sockets the server accepted, in order. */
  sockets: Socket[];
  requests: Array<{ url: string; headers: IncomingMessage["headers"]; body: string }>;
}

const servers: Server[] = [];
afterEach(async () => {
  vi.unstubAllGlobals();
  await Promise.all(
    servers.splice(0).map(
      (server) =>
        new Promise((resolve) => {
          server.closeAllConnections();
          server.close(resolve);
        }),
    ),
  );
});

async function upstream(answer: unknown, extraHeaders: Record<string, string[]> = {}) {
  const seen: Upstream = { base: "", sockets: [], requests: [] };
  const server = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => {
      body += chunk;
    });
    req.on("end", () => {
      seen.requests.push({ url: req.url ?? "", headers: req.headers, body });
      res.setHeader("content-type", "application/json");
      for (const [name, values] of Object.entries(extraHeaders)) res.setHeader(name, values);
      res.end(JSON.stringify(answer));
    });
  });
  server.on("connection", (socket) => seen.sockets.push(socket));
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  seen.base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return seen;
}

const hello = { messages: [{ role: "user" as const, content: "Hello" }] };

/** An OpenAI-compatible deployment on `server`. */
function openai(server: Upstream, options: { fetch?: typeof fetch } = {}) {
  const deployment = Deployment.parse({
    id: "local",
    provider: "openai-compatible",
    model: "gpt-4o-mini",
    base_url: `${server.base}/v1`,
  });
  return new OpenAICompatibleModel(deployment, options);
}

/** Replaces the global fetch with one that fails, and returns it to check it was never called. */
function forbidGlobalFetch() {
  const globalFetch = vi.fn(() => Promise.reject(new Error("the global fetch was called")));
  vi.stubGlobal("fetch", globalFetch);
  return globalFetch;
}

describe("the adapters' HTTP client", () => {
  it("does not go through the global fetch, and keeps its connections alive for the next calls", async () => {
    const server = await upstream(COMPLETION);
    const globalFetch = forbidGlobalFetch();
    const model = openai(server);
    for (let i = 0; i < 6; i++) {
      expect((await model.chat(hello)).message.content).toBe(SAID);
    }
    expect(globalFetch).not.toHaveBeenCalled();
    expect(server.requests).toHaveLength(6);
    // A connection goes back to the pool a moment after its answer ends, so calls in a row
    // alternate between two; never one per call.
    expect(server.sockets.length).toBeLessThanOrEqual(2);
    expect(server.requests[0]?.headers).toMatchObject({
      "content-type": "application/json",
      accept: "application/json",
    });
  });

  it("serves the Anthropic adapter the same way", async () => {
    const server = await upstream(MESSAGE);
    const globalFetch = forbidGlobalFetch();
    const model = new AnthropicModel(
      Deployment.parse({
        id: "claude",
        provider: "anthropic",
        model: "claude-haiku-4-5",
        base_url: server.base,
      }),
      { env: { ANTHROPIC_API_KEY: "sk-ant-test" } },
    );
    expect((await model.chat(hello)).message.content).toBe(SAID);
    expect(globalFetch).not.toHaveBeenCalled();
    expect(server.requests[0]).toMatchObject({
      url: "/v1/messages",
      headers: { "x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01" },
    });
  });

  it("uses a fetch the deployment's caller hands it instead", async () => {
    const server = await upstream(COMPLETION);
    const calls: string[] = [];
    const own: typeof fetch = (input, init) => {
      calls.push(String(input));
      return fetch(input, init);
    };
    const model = openai(server, { fetch: own });
    expect((await model.chat(hello)).message.content).toBe(SAID);
    expect(calls).toEqual([`${server.base}/v1/chat/completions`]);
  });

  it("reads a header by any case, and a repeated one as the values joined", async () => {
    const server = await upstream({}, { "x-seen": ["a", "b"] });
    for (const post of [undiciPost, fetchPost(fetch)]) {
      const reply = await post(`${server.base}/`, { headers: {}, body: "{}" });
      expect(reply.status).toBe(200);
      expect(reply.ok).toBe(true);
      expect(reply.headers.get("Content-Type")).toBe("application/json");
      expect(reply.headers.get("x-seen")).toBe("a, b");
      expect(reply.headers.get("x-absent")).toBeNull();
      expect(await reply.text()).toBe("{}");
      reply.discard();
    }
  });

  it("goes through HTTP_PROXY under NODE_USE_ENV_PROXY=1, and straight there otherwise", async () => {
    const server = await upstream(COMPLETION);
    // The proxy answers itself: what it saw is the absolute URL of the request it was asked to
    // forward.
    const proxy = await upstream({ proxied: true });
    const target = `${server.base}/v1/chat/completions`;
    const init = { headers: { "content-type": "application/json" }, body: "{}" };
    const envs = {
      proxied: { NODE_USE_ENV_PROXY: "1", HTTP_PROXY: proxy.base },
      "lower-case names": { NODE_USE_ENV_PROXY: "1", http_proxy: proxy.base },
      "switch off": { HTTP_PROXY: proxy.base },
      "target in NO_PROXY": {
        NODE_USE_ENV_PROXY: "1",
        HTTP_PROXY: proxy.base,
        NO_PROXY: "127.0.0.1",
      },
    };
    const answers: Record<string, unknown> = {};
    for (const [name, env] of Object.entries(envs)) {
      const agent = agentFor(env);
      const reply = await postWith(agent, target, init);
      answers[name] = JSON.parse(await reply.text()).proxied ?? false;
      await agent.close();
    }
    expect(answers).toEqual({
      proxied: true,
      "lower-case names": true,
      "switch off": false,
      "target in NO_PROXY": false,
    });
    expect(proxy.requests.map((r) => r.url)).toEqual([target, target]);
  });

  it("tunnels an https call through HTTPS_PROXY under NODE_USE_ENV_PROXY=1", async () => {
    // A proxy that records the CONNECT it is asked for and refuses it: the call fails, and the
    // proxy saw where it was meant to go.
    const connects: string[] = [];
    const proxy = createServer();
    proxy.on("connect", (req: IncomingMessage, socket: Socket) => {
      connects.push(req.url ?? "");
      socket.end("HTTP/1.1 403 Forbidden\r\n\r\n");
    });
    servers.push(proxy);
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    const base = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    const agent = agentFor({ NODE_USE_ENV_PROXY: "1", HTTPS_PROXY: base });
    const init = { headers: { "content-type": "application/json" }, body: "{}" };
    await expect(
      postWith(agent, "https://api.example.invalid/v1/messages", init),
    ).rejects.toThrow();
    await agent.close();
    expect(connects).toEqual(["api.example.invalid:443"]);
  });

  it("closes the connection of a body given up half read, so nothing waits on it", async () => {
    const server = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write("data: 1\n\n");
      // ...and never ends.
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const closed = new Promise<void>((resolve) =>
      server.on("connection", (socket: Socket) => socket.on("close", () => resolve())),
    );
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    const reply = await undiciPost(url, { headers: {}, body: "{}" });
    for await (const chunk of reply.body) {
      expect(Buffer.from(chunk).toString()).toBe("data: 1\n\n");
      break;
    }
    reply.discard();
    await closed; // would time out if the connection were left open
  });
});
