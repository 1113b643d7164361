import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectNats, natsConnectionOptions } from "@handoff/mesh";
import {
  createTestNkeyUser,
  createTestOperator,
  createTestPki,
  findNatsServer,
  type NatsHandle,
  type SpawnNatsOptions,
  spawnNatsServer,
  type TestPki,
} from "@handoff/testkit";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

// Every way a NATS user authenticates, each against a nats-server that demands it: the services
// and the CLI connect through connectNats, so each form is proven on that path.

const binary = findNatsServer();
if (!binary) throw new Error("these tests need nats-server on PATH (apt-get install nats-server)");

let dir: string;
let pki: TestPki;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "handoff-nats-auth-"));
  pki = await createTestPki(dir);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Connects the way a service does, proves a round trip, and closes. */
async function roundTrip(env: NodeJS.ProcessEnv): Promise<string> {
  const nc: NatsConnection = await connectNats({ name: "auth-test", env });
  try {
    const sub = nc.subscribe("auth.echo", { max: 1 });
    void (async () => {
      for await (const msg of sub) msg.respond(`echo ${msg.string()}`);
    })();
    await nc.flush();
    const reply = await nc.request("auth.echo", "hi", { timeout: 2_000 });
    return reply.string();
  } finally {
    await nc.close();
  }
}

/** A first connection attempt with the options a service would use; "connected" if it works. */
async function refused(env: NodeJS.ProcessEnv): Promise<string> {
  try {
    const nc = await connect({
      ...natsConnectionOptions(undefined, env),
      reconnect: false,
      timeout: 3_000,
    });
    await nc.close();
    return "connected";
  } catch (error) {
    return (error as Error).message;
  }
}

async function withServer(
  config: string,
  fn: (server: NatsHandle) => Promise<void>,
  extra: Pick<SpawnNatsOptions, "tls" | "connect"> = {},
): Promise<void> {
  const server = await spawnNatsServer(binary as string, {
    jetstream: false,
    config,
    ...(extra.tls ? { tls: true } : {}),
    ...(extra.connect ? { connect: extra.connect } : {}),
  });
  try {
    await fn(server);
  } finally {
    await server.stop();
  }
}

describe("connecting to a NATS server that requires credentials", () => {
  it("user and password (NATS_USER, NATS_PASSWORD)", async () => {
    await withServer(
      'authorization { users = [ { user: "svc", password: "pw-4f2a" } ] }\n',
      async (server) => {
        expect(
          await roundTrip({ NATS_URL: server.url, NATS_USER: "svc", NATS_PASSWORD: "pw-4f2a" }),
        ).toBe("echo hi");
        expect(
          await refused({ NATS_URL: server.url, NATS_USER: "svc", NATS_PASSWORD: "nope" }),
        ).toMatch(/authorization/i);
        expect(await refused({ NATS_URL: server.url })).toMatch(/authorization/i);
      },
      { connect: { user: "svc", pass: "pw-4f2a" } },
    );
  });

  it("a token (NATS_TOKEN, or nats.token_env in the config)", async () => {
    await withServer(
      'authorization { token: "tok-91b7" }\n',
      async (server) => {
        expect(await roundTrip({ NATS_URL: server.url, NATS_TOKEN: "tok-91b7" })).toBe("echo hi");
        const options = natsConnectionOptions(
          { url: server.url, token_env: "MY_TOKEN" },
          { MY_TOKEN: "tok-91b7" },
        );
        expect(options.token).toBe("tok-91b7");
        expect(await refused({ NATS_URL: server.url, NATS_TOKEN: "tok-wrong" })).toMatch(
          /authorization/i,
        );
      },
      { connect: { token: "tok-91b7" } },
    );
  });

  it("an nkey seed (NATS_NKEY_SEED as the seed itself or a file)", async () => {
    const user = createTestNkeyUser();
    const seedFile = join(dir, "svc.nk");
    await writeFile(seedFile, `${user.seed}\n`, { mode: 0o600 });
    const stranger = createTestNkeyUser();
    const { nkeyAuthenticator } = await import("@nats-io/nats-core");
    await withServer(
      `authorization { users = [ { nkey: ${user.publicKey} } ] }\n`,
      async (server) => {
        expect(await roundTrip({ NATS_URL: server.url, NATS_NKEY_SEED: user.seed })).toBe(
          "echo hi",
        );
        expect(await roundTrip({ NATS_URL: server.url, NATS_NKEY_SEED: seedFile })).toBe("echo hi");
        expect(await refused({ NATS_URL: server.url, NATS_NKEY_SEED: stranger.seed })).toMatch(
          /authorization/i,
        );
      },
      { connect: { authenticator: nkeyAuthenticator(new TextEncoder().encode(user.seed)) } },
    );
  });

  it("a creds file (user JWT and seed, operator mode) with JetStream", async () => {
    const operator = createTestOperator();
    const credsFile = join(dir, "svc.creds");
    await writeFile(credsFile, operator.userCreds("svc"), { mode: 0o600 });
    const { credsAuthenticator } = await import("@nats-io/nats-core");
    const server = await spawnNatsServer(binary as string, {
      jetstream: true,
      config: operator.serverConfig,
      connect: {
        authenticator: credsAuthenticator(new TextEncoder().encode(operator.userCreds("probe"))),
      },
    });
    try {
      expect(await roundTrip({ NATS_URL: server.url, NATS_CREDS: credsFile })).toBe("echo hi");
      // The mesh needs JetStream in the account the creds belong to.
      const nc = await connectNats({
        name: "auth-test",
        env: { NATS_URL: server.url, NATS_CREDS: credsFile },
      });
      try {
        const info = await nc.request("$JS.API.INFO", "", { timeout: 2_000 });
        expect(info.json<{ error?: unknown }>().error).toBeUndefined();
      } finally {
        await nc.close();
      }
      const other = createTestOperator();
      const foreign = join(dir, "foreign.creds");
      await writeFile(foreign, other.userCreds("x"), { mode: 0o600 });
      expect(await refused({ NATS_URL: server.url, NATS_CREDS: foreign })).toMatch(
        /authorization|authentication/i,
      );
    } finally {
      await server.stop();
    }
  });

  it("TLS with a private CA (tls:// and NATS_CA), and refuses without the CA", async () => {
    await withServer(
      `tls { cert_file: "${pki.serverCert}", key_file: "${pki.serverKey}" }\n`,
      async (server) => {
        expect(server.url).toMatch(/^tls:\/\//);
        expect(await roundTrip({ NATS_URL: server.url, NATS_CA: pki.ca })).toBe("echo hi");
        // Without the CA the server's certificate is not trusted.
        expect(await refused({ NATS_URL: server.url })).toMatch(/certificate|self.signed|verify/i);
      },
      { tls: true, connect: { tls: { caFile: pki.ca } } },
    );
  });

  it("mutual TLS (NATS_CERT and NATS_KEY) with a password on top", async () => {
    await withServer(
      [
        `tls { cert_file: "${pki.serverCert}", key_file: "${pki.serverKey}", ca_file: "${pki.ca}", verify: true }`,
        'authorization { users = [ { user: "svc", password: "pw-77" } ] }',
        "",
      ].join("\n"),
      async (server) => {
        const base = {
          NATS_URL: server.url,
          NATS_CA: pki.ca,
          NATS_USER: "svc",
          NATS_PASSWORD: "pw-77",
        };
        expect(
          await roundTrip({ ...base, NATS_CERT: pki.clientCert, NATS_KEY: pki.clientKey }),
        ).toBe("echo hi");
        // No client certificate: the server ends the handshake.
        expect(await refused(base)).not.toBe("connected");
      },
      {
        tls: true,
        connect: {
          tls: { caFile: pki.ca, certFile: pki.clientCert, keyFile: pki.clientKey },
          user: "svc",
          pass: "pw-77",
        },
      },
    );
  });

  it("a tls:// URL refuses a server that offers no TLS", async () => {
    await withServer("", async (server) => {
      const plain = server.url.replace(/^nats:/, "tls:");
      expect(await refused({ NATS_URL: plain })).toMatch(/tls/i);
    });
  });
});

describe("connection settings", () => {
  it("the environment overrides the config file, and the config names files relative to itself", () => {
    const options = natsConnectionOptions(
      { url: "nats://a:4222", user: "from-file", inbox_prefix: "_INBOX_cfg" },
      { NATS_URL: "nats://b:4222", NATS_INBOX_PREFIX: "_INBOX_env" },
    );
    expect(options.servers).toEqual(["nats://b:4222"]);
    expect(options.user).toBe("from-file");
    expect(options.inboxPrefix).toBe("_INBOX_env");
  });

  it("errors name the variable and the file, never the secret", () => {
    const secret = "SUAKCANARYCANARYCANARYCANARY";
    expect(() => natsConnectionOptions({}, { NATS_NKEY_SEED: secret })).toThrow(/NATS_NKEY_SEED/);
    try {
      natsConnectionOptions({}, { NATS_NKEY_SEED: secret });
    } catch (error) {
      expect((error as Error).message).not.toContain(secret);
    }
    expect(() => natsConnectionOptions({}, { NATS_CREDS: "/nonexistent/x.creds" })).toThrow(
      /NATS_CREDS names \/nonexistent\/x\.creds, which cannot be read \(ENOENT\)/,
    );
    expect(() => natsConnectionOptions({}, { NATS_TOKEN: "t", NATS_USER: "u" })).toThrow(
      /choose one way to authenticate to NATS: user and NATS_TOKEN/,
    );
    expect(() => natsConnectionOptions({}, { NATS_CERT: "/x.pem" })).toThrow(
      /NATS_CERT and NATS_KEY/,
    );
    expect(() => natsConnectionOptions({ token_env: "UNSET_VAR_X" }, {})).toThrow(
      /nats.token_env names UNSET_VAR_X, which is not set/,
    );
  });
});
