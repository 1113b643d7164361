/**
 * The processes and requests of the peer comparison (`BENCH_PEERS=1 npm run bench`): Portkey's
 * open-source AI gateway installed from npm into a temporary folder, the mock OpenAI upstream,
 * the OTLP sink and the bare relay (each its own process), the config of a mesh whose light tier
 * is the mock, and one checked chat request to any of them. The measuring itself is done by
 * bench/mesh.bench.ts.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { delimiter, dirname, join } from "node:path";
import { killHard, onProcessExit } from "@handoff/nats-process";
import { waitFor } from "@handoff/testkit";
import type { Workload } from "./baselines.ts";
import { MOCK_ANSWER } from "./mock-upstream.ts";

/** What is installed: the 1.15 line of Portkey's gateway (a stateless Node proxy). */
export const PORTKEY_PACKAGE = "@portkey-ai/gateway";
export const PORTKEY_RANGE = "~1.15.2";
const READY_TIMEOUT_MS = 30_000;
const INSTALL_TIMEOUT_MS = 300_000;

/** The model names the mesh's tiers send to the mock upstream (and the peers ask it for). */
export const MOCK_MODELS = { light: "mock-light", mid: "mock-mid", heavy: "mock-heavy" } as const;
/** The variable holding the upstream key the mesh sends (`api_key_env`); the mock ignores it. */
export const MOCK_KEY_ENV = "BENCH_MOCK_UPSTREAM_KEY";
export const MOCK_KEY = "sk-bench-mock";

// ---------------------------------------------------------------------------------------------
// Child processes: `node <args>`, output kept, stopped with SIGTERM, killed if the bench exits.

export interface Child {
  name: string;
  pid: number;
  output(): string;
  exited: Promise<{ code: number | null; signal: string | null }>;
  /** SIGTERM, SIGKILL after `timeoutMs`; resolves once it has exited. Safe to call twice. */
  stop(timeoutMs?: number): Promise<void>;
}

const OUTPUT_LIMIT = 256 * 1024;

export function spawnNode(
  name: string,
  args: string[],
  options: { env?: Record<string, string | undefined>; cwd?: string } = {},
): Child {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries({ ...process.env, ...options.env })) {
    if (value !== undefined) env[key] = value;
  }
  const child: ChildProcess = spawn(process.execPath, args, {
    cwd: options.cwd,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const append = (chunk: Buffer) => {
    output += chunk.toString("utf8");
    if (output.length > OUTPUT_LIMIT) output = output.slice(-OUTPUT_LIMIT);
  };
  child.stdout?.on("data", append);
  child.stderr?.on("data", append);
  const unregister = onProcessExit(() => killHard(child));
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    child.once("error", (error) => {
      output += `[spawn error] ${error.message}\n`;
      if (child.pid === undefined) {
        unregister();
        resolve({ code: null, signal: null });
      }
    });
    child.once("exit", (code, signal) => {
      unregister();
      resolve({ code, signal });
    });
  });
  let done = false;
  void exited.then(() => {
    done = true;
  });
  return {
    name,
    pid: child.pid ?? -1,
    output: () => output,
    exited,
    async stop(timeoutMs = 10_000) {
      if (!done) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => killHard(child), timeoutMs);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}

/**
 * Starts a child and waits until `ready()` says yes; fails early, quoting its output, if it exits
 * first. The child is handed to `register` (the bench's clean-ups) before anything can fail.
 */
export async function startChild(
  name: string,
  args: string[],
  ready: () => Promise<boolean>,
  register: (child: Child) => void,
  options: { env?: Record<string, string | undefined>; cwd?: string } = {},
): Promise<Child> {
  const child = spawnNode(name, args, options);
  register(child);
  const died = child.exited.then((exit) => {
    throw new Error(
      `${name} exited before it was ready (code ${exit.code}, signal ${exit.signal}):\n${child.output().slice(-4000)}`,
    );
  });
  await Promise.race([
    waitFor(
      async () => {
        try {
          return await ready();
        } catch {
          return false;
        }
      },
      { timeoutMs: READY_TIMEOUT_MS, intervalMs: 100, what: `${name} to serve` },
    ),
    died,
  ]);
  return child;
}

async function answers(url: string): Promise<boolean> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
  await res.arrayBuffer();
  return res.status === 200;
}

/** The mock OpenAI upstream (bench/mock-upstream.ts) on `port`. */
export function startMockUpstream(port: number, register: (child: Child) => void) {
  const url = `http://127.0.0.1:${port}`;
  return startChild(
    "mock upstream",
    [new URL("mock-upstream.ts", import.meta.url).pathname, String(port)],
    () => answers(`${url}/stats`),
    register,
  ).then((child) => ({ child, url }));
}

/** The OTLP/HTTP sink (bench/otlp-sink.ts) on `port`. */
export function startOtlpSink(port: number, register: (child: Child) => void) {
  const url = `http://127.0.0.1:${port}`;
  return startChild(
    "OTLP sink",
    [new URL("otlp-sink.ts", import.meta.url).pathname, String(port)],
    () => answers(`${url}/stats`),
    register,
  ).then((child) => ({ child, url }));
}

/**
 * The bare relay (bench/bare-relay.ts): its tier process on `natsUrl`, posting to `upstreamV1`,
 * then its front on `port`, ready once a NATS request reaches the tier. A tier that exits first
 * fails the start with its output.
 */
export async function startRelay(
  natsUrl: string,
  upstreamV1: string,
  port: number,
  register: (child: Child) => void,
): Promise<{ front: Child; tier: Child; url: string }> {
  const script = new URL("bare-relay.ts", import.meta.url).pathname;
  const url = `http://127.0.0.1:${port}`;
  const tier = spawnNode("relay tier", [script, "tier", natsUrl, upstreamV1]);
  register(tier);
  const tierDied = tier.exited.then((exit) => {
    throw new Error(
      `relay tier exited before the relay was ready (code ${exit.code}, signal ${exit.signal}):\n${tier.output().slice(-4000)}`,
    );
  });
  const front = await Promise.race([
    startChild(
      "relay front",
      [script, "front", String(port), natsUrl],
      () => answers(`${url}/ready`),
      register,
    ),
    tierDied,
  ]);
  return { front, tier, url };
}

/** `GET <url>/stats` of the mock upstream or the sink. */
export async function statsOf<T>(url: string): Promise<T> {
  const res = await fetch(`${url}/stats`, { signal: AbortSignal.timeout(5_000) });
  if (res.status !== 200) throw new Error(`${url}/stats: HTTP ${res.status}`);
  return (await res.json()) as T;
}

// ---------------------------------------------------------------------------------------------
// Portkey's gateway: installed into a temporary folder, started on a chosen port.

export interface PortkeyInstall {
  /** build/start-server.js, the package's bin. */
  entry: string;
  version: string;
  /** npm's own summary line, e.g. "added 95 packages in 3s". */
  summary: string;
  ms: number;
}

/**
 * `npm` from PATH, with the running node's folder first on PATH: npm's `#!/usr/bin/env node`
 * then runs on this node rather than an older system one.
 */
function npmEnv(): Record<string, string | undefined> {
  return { ...process.env, PATH: [dirname(process.execPath), process.env.PATH].join(delimiter) };
}

/**
 * `npm install --prefix <dir> @portkey-ai/gateway@~1.15.2`, nothing else: no scripts (the
 * package's only one, `patch-package`, has no patches to apply in the published package), no
 * audit, no dev dependencies. The repository is never touched.
 */
export async function installPortkey(dir: string, signal: AbortSignal): Promise<PortkeyInstall> {
  const started = performance.now();
  const args = [
    "install",
    "--prefix",
    dir,
    "--no-audit",
    "--no-fund",
    "--ignore-scripts",
    "--omit=dev",
    "--no-update-notifier",
    `${PORTKEY_PACKAGE}@${PORTKEY_RANGE}`,
  ];
  const output = await new Promise<string>((resolve, reject) => {
    execFile(
      "npm",
      args,
      {
        cwd: dir,
        env: npmEnv(),
        timeout: INSTALL_TIMEOUT_MS,
        signal,
        maxBuffer: 16 * 1024 * 1024,
      },
      (error, stdout, stderr) => {
        if (error) {
          reject(
            new Error(
              `npm install ${PORTKEY_PACKAGE} failed: ${error.message}\n${stdout}${stderr}`,
            ),
          );
        } else resolve(`${stdout}${stderr}`);
      },
    );
  });
  const pkgDir = join(dir, "node_modules", ...PORTKEY_PACKAGE.split("/"));
  const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")) as {
    version?: string;
    bin?: string | Record<string, string>;
  };
  const bin = typeof pkg.bin === "string" ? pkg.bin : Object.values(pkg.bin ?? {})[0];
  const entry = join(pkgDir, bin ?? "build/start-server.js");
  if (!existsSync(entry)) throw new Error(`${PORTKEY_PACKAGE}: no ${entry} after npm install`);
  const summary =
    output
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => /^(added|changed|up to date)/.test(line))
      .at(-1) ?? "installed";
  return { entry, version: pkg.version ?? "unknown", summary, ms: performance.now() - started };
}

/**
 * Starts Portkey's gateway: `node build/start-server.js --port=<port> --headless`. The port is
 * read from the command line only (`--port=`, default 8787); `--headless` leaves out its web
 * console and live log stream. It needs no config: each request names its provider in headers.
 * It is ready when `GET /` answers ("AI Gateway says hey!").
 */
export function startPortkey(entry: string, port: number, register: (child: Child) => void) {
  const url = `http://127.0.0.1:${port}`;
  return startChild(
    "Portkey",
    [entry, `--port=${port}`, "--headless"],
    () => answers(`${url}/`),
    register,
    { cwd: dirname(dirname(entry)), env: { PORT: String(port) } },
  ).then((child) => ({ child, url }));
}

/** The headers that route a Portkey request to an OpenAI-compatible server at `baseUrl` (…/v1). */
export function portkeyHeaders(baseUrl: string): Record<string, string> {
  return {
    "x-portkey-provider": "openai",
    "x-portkey-custom-host": baseUrl,
    authorization: `Bearer ${MOCK_KEY}`,
  };
}

// ---------------------------------------------------------------------------------------------
// The mesh's config and the request.

/**
 * A Handoff config whose every tier is an `openai-compatible` deployment on the mock upstream
 * (only light is used: requests ask for `handoff/light`). No API keys: the gateway is open.
 */
export function peerConfigYaml(upstreamUrl: string): string {
  const tier = (name: keyof typeof MOCK_MODELS) => [
    `  ${name}:`,
    `    - id: ${MOCK_MODELS[name]}`,
    "      provider: openai-compatible",
    `      model: ${MOCK_MODELS[name]}`,
    `      base_url: ${upstreamUrl}/v1`,
    `      api_key_env: ${MOCK_KEY_ENV}`,
  ];
  return ["tiers:", ...tier("light"), ...tier("mid"), ...tier("heavy"), ""].join("\n");
}

/** The one question every peer workload asks. */
export const PEER_QUESTION = "Hello there";

/**
 * One `POST <baseUrl>/chat/completions`, checked: HTTP 200 and the mock's answer text in
 * `choices[0].message.content` (so it really went through to the upstream), and, when given,
 * the route Handoff reports.
 */
export function chatRequest(options: {
  baseUrl: string;
  model: string;
  headers?: Record<string, string>;
  route?: string[];
  timeoutMs: number;
  signal: AbortSignal;
}): Workload {
  const body = JSON.stringify({
    model: options.model,
    messages: [{ role: "user", content: PEER_QUESTION }],
  });
  const headers = { "content-type": "application/json", ...options.headers };
  const route = options.route?.join(" -> ");
  return {
    async op(index) {
      const res = await fetch(`${options.baseUrl}/chat/completions`, {
        method: "POST",
        headers,
        body,
        signal: AbortSignal.any([AbortSignal.timeout(options.timeoutMs), options.signal]),
      });
      const text = await res.text();
      if (res.status !== 200) {
        throw new Error(`request ${index}: HTTP ${res.status}: ${text.slice(0, 500)}`);
      }
      const answer = JSON.parse(text) as {
        choices?: Array<{ message?: { content?: unknown } }>;
        handoff?: { route?: unknown };
      };
      const content = answer.choices?.[0]?.message?.content;
      if (typeof content !== "string" || !content.includes(MOCK_ANSWER)) {
        throw new Error(`request ${index}: not the upstream's answer: ${text.slice(0, 500)}`);
      }
      if (route !== undefined) {
        const got = Array.isArray(answer.handoff?.route) ? answer.handoff.route.join(" -> ") : "?";
        if (got !== route) throw new Error(`request ${index}: route ${got}, expected ${route}`);
      }
    },
    close: async () => {},
  };
}
