import { execFile } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { createAccount, createOperator, createUser, type KeyPair } from "@nats-io/nkeys";

const run = promisify(execFile);

/** Files of a throwaway certificate authority, a server certificate and a client certificate. */
export interface TestPki {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await run("openssl", args, { cwd });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? "";
    throw new Error(`openssl ${args[0]} failed (is openssl installed?): ${stderr.trim()}`);
  }
}

/**
 * Writes a CA and two certificates it signed into `dir` with the openssl command: one for a
 * server on 127.0.0.1/localhost, one for a client (for servers that verify clients).
 */
export async function createTestPki(dir: string): Promise<TestPki> {
  const days = ["-days", "2"];
  await openssl(
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      "ca-key.pem",
      "-out",
      "ca.pem",
      "-subj",
      "/CN=handoff test CA",
      ...days,
    ],
    dir,
  );
  const issue = async (name: string, subject: string, extensions: string) => {
    await writeFile(join(dir, `${name}.ext`), extensions);
    await openssl(
      [
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        `${name}-key.pem`,
        "-out",
        `${name}.csr`,
        "-subj",
        subject,
      ],
      dir,
    );
    await openssl(
      [
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-out",
        `${name}.pem`,
        "-extfile",
        `${name}.ext`,
        ...days,
      ],
      dir,
    );
  };
  await issue(
    "server",
    "/CN=localhost",
    "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
  );
  await issue("client", "/CN=handoff-client", "extendedKeyUsage=clientAuth\n");
  return {
    ca: join(dir, "ca.pem"),
    serverCert: join(dir, "server.pem"),
    serverKey: join(dir, "server-key.pem"),
    clientCert: join(dir, "client.pem"),
    clientKey: join(dir, "client-key.pem"),
  };
}

const encoder = new TextEncoder();

function base64url(data: Uint8Array | string): string {
  return Buffer.from(typeof data === "string" ? encoder.encode(data) : data).toString("base64url");
}

/** A NATS JWT (the v2 claim format nsc writes), signed by `issuer`. */
function signJwt(issuer: KeyPair, subject: string, name: string, nats: object): string {
  const claims: Record<string, unknown> = {
    iat: Math.floor(Date.now() / 1_000),
    iss: issuer.getPublicKey(),
    name,
    sub: subject,
    nats: { ...nats, version: 2 },
  };
  claims.jti = createHash("sha256")
    .update(JSON.stringify(claims))
    .update(randomUUID())
    .digest("hex");
  const head = base64url(JSON.stringify({ typ: "JWT", alg: "ed25519-nkey" }));
  const body = base64url(JSON.stringify(claims));
  const signature = issuer.sign(encoder.encode(`${head}.${body}`));
  return `${head}.${body}.${base64url(signature)}`;
}

/** An operator with one account (JetStream on), which mints users and their creds files. */
export interface TestOperator {
  /** nats.conf text: the operator, a memory resolver and the account preloaded. */
  serverConfig: string;
  /** A creds file (user JWT and nkey seed) for a new user of the account. */
  userCreds(name: string): string;
}

/**
 * Decentralized (JWT) authentication, as `nsc` sets it up, without nsc: an operator signs an
 * account, the account signs users, and the server trusts the operator.
 */
export function createTestOperator(): TestOperator {
  const operator = createOperator();
  const account = createAccount();
  // JetStream needs a system account in operator mode.
  const system = createAccount();
  const unlimited = -1;
  const operatorJwt = signJwt(operator, operator.getPublicKey(), "handoff-test", {
    type: "operator",
  });
  const accountJwt = signJwt(operator, account.getPublicKey(), "HANDOFF", {
    type: "account",
    limits: {
      subs: unlimited,
      data: unlimited,
      payload: unlimited,
      imports: unlimited,
      exports: unlimited,
      wildcards: true,
      conn: unlimited,
      leaf: unlimited,
      mem_storage: unlimited,
      disk_storage: unlimited,
      streams: unlimited,
      consumer: unlimited,
    },
    default_permissions: { pub: {}, sub: {} },
  });
  const systemJwt = signJwt(operator, system.getPublicKey(), "SYS", { type: "account" });
  return {
    serverConfig: [
      `operator: ${operatorJwt}`,
      `system_account: ${system.getPublicKey()}`,
      "resolver: MEMORY",
      "resolver_preload: {",
      `  ${account.getPublicKey()}: ${accountJwt}`,
      `  ${system.getPublicKey()}: ${systemJwt}`,
      "}",
      "",
    ].join("\n"),
    userCreds(name) {
      const user = createUser();
      const jwt = signJwt(account, user.getPublicKey(), name, {
        type: "user",
        pub: {},
        sub: {},
        subs: unlimited,
        data: unlimited,
        payload: unlimited,
      });
      const seed = new TextDecoder().decode(user.getSeed());
      return [
        "-----BEGIN NATS USER JWT-----",
        jwt,
        "------END NATS USER JWT------",
        "",
        "-----BEGIN USER NKEY SEED-----",
        seed,
        "------END USER NKEY SEED------",
        "",
      ].join("\n");
    },
  };
}

/** An nkey user: the public key goes in the server's config, the seed stays with the client. */
export function createTestNkeyUser(): { publicKey: string; seed: string } {
  const user = createUser();
  return { publicKey: user.getPublicKey(), seed: new TextDecoder().decode(user.getSeed()) };
}
