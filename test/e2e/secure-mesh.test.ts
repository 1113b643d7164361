import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Subjects } from "@handoff/contracts";
import {
  createTestNkeyUser,
  createTestPki,
  findNatsServer,
  spawnNatsServer,
  type TestPki,
  waitFor,
} from "@handoff/testkit";
import { defineTool, serveTools } from "@handoff/tools";
import { jetstreamManager } from "@nats-io/jetstream";
import { type NatsConnection, nkeyAuthenticator } from "@nats-io/nats-core";
import { Svcm } from "@nats-io/services";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { type Mesh, postChat, type ServiceName, startMesh } from "./harness.js";

// The whole mesh under the shipped least-privilege server configuration (deploy/nats/
// handoff-auth.conf), over TLS, with a mesh signing key: it answers, and other identities can
// neither read prompts nor answer or forge jobs.

const root = fileURLToPath(new URL("../..", import.meta.url));
const AUTH_CONF = join(root, "deploy", "nats", "handoff-auth.conf");
const SERVICES: ServiceName[] = ["gateway", "classifier", "tool-executor", "heavy-reasoner"];
const identityVar: Record<string, string> = {
  gateway: "HANDOFF_NATS_GATEWAY",
  classifier: "HANDOFF_NATS_CLASSIFIER",
  "tool-executor": "HANDOFF_NATS_TOOL_EXECUTOR",
  "heavy-reasoner": "HANDOFF_NATS_HEAVY_REASONER",
  tools: "HANDOFF_NATS_TOOLS",
  admin: "HANDOFF_NATS_ADMIN",
  apps: "HANDOFF_NATS_APPS_EXAMPLE",
};
type Identity = keyof typeof identityVar;

let dir: string;
let pki: TestPki;
let mesh: Mesh;
const identities = new Map<Identity, { publicKey: string; seed: string }>();

function seedOf(identity: Identity): string {
  const found = identities.get(identity);
  if (!found) throw new Error(`no identity ${identity}`);
  return found.seed;
}

/** A client of the mesh's server with one of the configured identities (or none). */
async function client(identity: Identity | undefined, inbox?: string): Promise<NatsConnection> {
  return connect({
    servers: mesh.nats.url,
    tls: { caFile: pki.ca },
    reconnect: false,
    timeout: 3_000,
    ...(identity
      ? { authenticator: nkeyAuthenticator(new TextEncoder().encode(seedOf(identity))) }
      : {}),
    ...(inbox ? { inboxPrefix: inbox } : {}),
  });
}

/** Resolves with the first permission error the connection reports within `ms`. */
function nextPermissionError(nc: NatsConnection, ms = 2_000): Promise<string | undefined> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), ms);
    void (async () => {
      for await (const status of nc.status()) {
        const text = JSON.stringify(status) + String((status as { error?: unknown }).error ?? "");
        if (/permissions? violation/i.test(text)) {
          clearTimeout(timer);
          resolve(text);
          return;
        }
      }
    })();
  });
}

beforeAll(async () => {
  const binary = findNatsServer();
  if (!binary) throw new Error("this suite needs nats-server on PATH");
  dir = await mkdtemp(join(tmpdir(), "handoff-secure-"));
  pki = await createTestPki(dir);
  const serverEnv: Record<string, string> = {};
  for (const [name, variable] of Object.entries(identityVar)) {
    const user = createTestNkeyUser();
    identities.set(name, user);
    serverEnv[variable] = user.publicKey;
  }
  const nats = await spawnNatsServer(binary, {
    tls: true,
    config: [
      `tls { cert_file: "${pki.serverCert}", key_file: "${pki.serverKey}" }`,
      // The shipped file, as it is.
      readFileSync(AUTH_CONF, "utf8"),
    ].join("\n"),
    env: serverEnv,
    connect: {
      tls: { caFile: pki.ca },
      authenticator: nkeyAuthenticator(new TextEncoder().encode(seedOf("admin"))),
      inboxPrefix: "_INBOX_admin",
    },
  });
  mesh = await startMesh({
    nats,
    config:
      "tiers:\n  light: [{ provider: sim, model: sim-light }]\n  mid: [{ provider: sim, model: sim-mid }]\n  heavy: [{ provider: sim, model: sim-heavy }]\nmesh:\n  signing_key_env: HANDOFF_MESH_KEY\n",
    env: {
      NATS_CA: pki.ca,
      HANDOFF_MESH_KEY: "e2e-mesh-signing-key-0123456789abcdef",
    },
    serviceEnv: (name) => ({
      NATS_NKEY_SEED: seedOf(name),
      NATS_INBOX_PREFIX: `_INBOX_${name}`,
    }),
  });
}, 120_000);

afterAll(async () => {
  await mesh?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("the mesh under TLS and per-service NATS permissions", () => {
  it("answers through every tier, with no permission violation on the server", async () => {
    const tools = await postChat(mesh.gatewayUrl, "What is 17 * 23?");
    expect(tools.status).toBe(200);
    expect(JSON.stringify(tools.body)).toContain("391");
    const heavy = await postChat(
      mesh.gatewayUrl,
      "Prove step by step that there are infinitely many primes.",
    );
    expect(heavy.status).toBe(200);
    const streamed = await fetch(`${mesh.gatewayUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "handoff",
        stream: true,
        messages: [{ role: "user", content: "Hello!" }],
      }),
    });
    expect(streamed.status).toBe(200);
    expect(await streamed.text()).toContain("data: [DONE]");
    // The job's events (a KV watch) work under the gateway's permissions too.
    const submitted = await fetch(`${mesh.gatewayUrl}/v1/jobs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "handoff", messages: [{ role: "user", content: "Hi" }] }),
    });
    const { id } = (await submitted.json()) as { id: string };
    const events = await fetch(`${mesh.gatewayUrl}/v1/jobs/${id}/events`);
    expect(await events.text()).toMatch(/succeeded/);
    expect(mesh.nats.output()).not.toMatch(/Violation/);
    // Each service reports its identity and TLS, never a secret.
    const gatewayLog = mesh.processes.get("gateway")?.logs() ?? [];
    expect(gatewayLog.find((l) => l.msg === "connected to NATS")).toMatchObject({
      auth: "nkey/creds",
      tls: true,
      inbox_prefix: "_INBOX_gateway",
    });
    expect(gatewayLog.find((l) => l.msg === "gateway ready")).toMatchObject({
      mesh_signing: true,
    });
  });

  it("refuses a client without credentials, and one without TLS", async () => {
    await expect(client(undefined)).rejects.toThrow(/authorization|authentication/i);
    await expect(
      connect({
        servers: mesh.nats.url.replace("tls://", "nats://"),
        tls: null,
        reconnect: false,
        timeout: 2_000,
        authenticator: nkeyAuthenticator(new TextEncoder().encode(seedOf("apps"))),
      }),
    ).rejects.toThrow();
  });

  it("another account's client sees no prompt and cannot reach a live job", async () => {
    const apps = await client("apps");
    try {
      const seen: string[] = [];
      for (const subject of [
        Subjects.allJobs,
        "handoff.v1.results.>",
        "handoff.v1.stream.>",
        ">",
      ]) {
        const sub = apps.subscribe(subject);
        void (async () => {
          for await (const msg of sub) seen.push(msg.subject);
        })();
      }
      await apps.flush();
      // A job in flight while the other account listens and forges.
      const pending = postChat(mesh.gatewayUrl, "Hello!");
      apps.publish("handoff.v1.results.anything", JSON.stringify({ id: "x", status: "failed" }));
      apps.publish(Subjects.job("classifier"), "{}");
      const answer = await pending;
      expect(answer.status).toBe(200);
      await apps.flush();
      // It saw only its own forgeries, never the mesh's traffic.
      expect(
        seen.every((s) => s === "handoff.v1.results.anything" || s === Subjects.job("classifier")),
      ).toBe(true);
      // The mesh's streams do not exist in its account.
      const jsm = await jetstreamManager(apps);
      await expect(jsm.streams.info("HANDOFF_JOBS")).rejects.toThrow(/not found/i);
    } finally {
      await apps.close();
    }
  });

  it("inside the account, each identity is held to its own subjects", async () => {
    // The classifier may not submit new jobs; the gateway may not publish results.
    const classifier = await client("classifier", "_INBOX_classifier");
    try {
      const violation = nextPermissionError(classifier);
      classifier.publish(Subjects.job("classifier"), "{}");
      expect(await violation).toMatch(/publish/i);
    } finally {
      await classifier.close();
    }
    const gateway = await client("gateway", "_INBOX_gateway");
    try {
      const violation = nextPermissionError(gateway);
      gateway.publish(Subjects.result("some-job-id"), "{}");
      expect(await violation).toMatch(/publish/i);
    } finally {
      await gateway.close();
    }
    // The heavy-reasoner may not read the jobs' subjects, another stage's replies, or the
    // classifier's queue through the JetStream API.
    const heavy = await client("heavy-reasoner", "_INBOX_heavy-reasoner");
    try {
      let violation = nextPermissionError(heavy);
      heavy.subscribe(Subjects.allJobs);
      expect(await violation).toMatch(/subscription/i);
      violation = nextPermissionError(heavy);
      heavy.subscribe("_INBOX_classifier.>");
      expect(await violation).toMatch(/subscription/i);
      violation = nextPermissionError(heavy);
      heavy.publish("$JS.API.CONSUMER.MSG.NEXT.HANDOFF_JOBS.classifier", "{}");
      expect(await violation).toMatch(/publish/i);
      violation = nextPermissionError(heavy);
      heavy.publish("$JS.API.CONSUMER.CREATE.HANDOFF_JOBS", "{}");
      expect(await violation).toMatch(/publish/i);
    } finally {
      await heavy.close();
    }
    // The server logs each refusal: what the first test's clean log is measured against.
    expect(mesh.nats.output()).toMatch(
      /Publish Violation - Nkey "\w+", Subject "handoff\.v1\.jobs\.classifier"/,
    );
  });

  it("a tool service with the tools identity serves the mid tier, and answers nothing else", async () => {
    const tools = await client("tools", "_INBOX_tools");
    try {
      const stock = defineTool({
        name: "warehouse_stock",
        description: "Units in stock in the warehouse.",
        input: z.object({ sku: z.string().optional() }),
        handler: () => "42 units in the warehouse",
      });
      const server = await serveTools(tools, [stock], { name: "inventory" });
      // The tool-executor hears the announcement and offers it; the mid-tier model calls it.
      const answer = await waitFor(
        async () => {
          const reply = await postChat(mesh.gatewayUrl, "What is the warehouse stock?", {
            model: "handoff/mid",
          });
          return JSON.stringify(reply.body).includes("42 units") ? reply : undefined;
        },
        { timeoutMs: 10_000, what: "an answer from the warehouse_stock tool" },
      );
      expect(answer.status).toBe(200);
      // It may not answer for a built-in, nor read the mesh's jobs.
      let violation = nextPermissionError(tools);
      tools.subscribe("handoff.v1.tools.call.calculator");
      expect(await violation).toMatch(/subscription/i);
      violation = nextPermissionError(tools);
      tools.subscribe(Subjects.allJobs);
      expect(await violation).toMatch(/subscription/i);
      await server.stop();
    } finally {
      await tools.close();
    }
  });

  it("the operator's identity pings every service and reads the job records", async () => {
    const admin = await client("admin", "_INBOX_admin");
    try {
      const names: string[] = [];
      const svc = new Svcm(admin).client({ strategy: "timer", maxWait: 1_000 });
      for await (const identity of await svc.ping()) names.push(identity.name);
      // The four services, and the built-in tools the tool-executor serves.
      expect([...new Set(names)].sort()).toEqual([...SERVICES, "handoff-builtin-tools"].sort());
      const jsm = await jetstreamManager(admin);
      expect((await jsm.streams.info("KV_handoff-jobs")).state.messages).toBeGreaterThan(0);
    } finally {
      await admin.close();
    }
  });
});
