/**
 * scripts/nats-identities.mjs, run as a user runs it, into a temporary directory: the files and
 * their modes, seeds that match the public keys the server is given, a mesh key the services
 * accept, a server certificate that verifies against the CA for every name the deployments use,
 * and a second run that refuses to overwrite anything without --force. With nats-server on PATH,
 * the compose server config is also checked (`nats-server -t`) with these very files.
 */
import { execFile } from "node:child_process";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { parseConfig } from "@handoff/config";
import { loadMeshSigner, natsConnectionOptions } from "@handoff/mesh";
import { findNatsServer } from "@handoff/testkit";
import { fromSeed } from "@nats-io/nkeys";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  FILES,
  IDENTITIES,
  MESH_KEY_ENV,
  TLS_DNS_NAMES,
  TLS_IPS,
} from "../scripts/nats-identities.mjs";

const run = promisify(execFile);
const root = fileURLToPath(new URL("..", import.meta.url));
const SCRIPT = join(root, "scripts", "nats-identities.mjs");

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the script with node, as `node scripts/nats-identities.mjs ...` from the repository. */
async function script(...args: string[]): Promise<Result> {
  try {
    const { stdout, stderr } = await run(process.execPath, [SCRIPT, ...args], { cwd: root });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: Number(e.code ?? 1), stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

async function openssl(...args: string[]): Promise<Result> {
  try {
    const { stdout, stderr } = await run("openssl", args);
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: Number(e.code ?? 1), stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

/** KEY=VALUE lines, comments and blank lines skipped (the env_file / --from-env-file format). */
function envFile(path: string): Record<string, string> {
  return Object.fromEntries(
    readFileSync(path, "utf8")
      .split("\n")
      .filter((line) => line.trim() !== "" && !line.startsWith("#"))
      .map((line) => {
        const at = line.indexOf("=");
        return [line.slice(0, at), line.slice(at + 1)];
      }),
  );
}

const mode = (path: string) => statSync(path).mode & 0o777;

let work: string;
let out: string;
let first: Result;
const at = (file: string) => join(out, file);

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "handoff-identities-"));
  // A directory that does not exist yet: the script makes it.
  out = join(work, "secrets");
  first = await script(out);
}, 30_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe("scripts/nats-identities.mjs", () => {
  it("writes every file, and prints them without a secret", () => {
    expect(first.stderr).toBe("");
    expect(first.code).toBe(0);
    const files = [...IDENTITIES.map((identity) => identity.file), ...Object.values(FILES)];
    expect(IDENTITIES.map((identity) => identity.file).sort()).toEqual(
      [
        "gateway.nk",
        "classifier.nk",
        "tool-executor.nk",
        "heavy-reasoner.nk",
        "tools.nk",
        "admin.nk",
        "apps-example.nk",
      ].sort(),
    );
    expect(Object.values(FILES).sort()).toEqual(
      [
        "nats-identities.env",
        "mesh.env",
        "tls/ca.pem",
        "tls/server.pem",
        "tls/server-key.pem",
      ].sort(),
    );
    for (const file of files) {
      expect(existsSync(at(file)), file).toBe(true);
      expect(first.stdout, `the output names ${file}`).toContain(file);
    }
    for (const identity of IDENTITIES) {
      expect(first.stdout).not.toContain(readFileSync(at(identity.file), "utf8").trim());
    }
    expect(first.stdout).not.toContain(envFile(at(FILES.meshEnv))[MESH_KEY_ENV]);
    expect(first.stdout).not.toMatch(/PRIVATE KEY|\bS[UAO][A-Z2-7]{40,}/);
  });

  it("makes the directories 0700 and the secrets 0600; the certificates are public (0644)", () => {
    expect(mode(out)).toBe(0o700);
    expect(mode(at("tls"))).toBe(0o700);
    for (const file of [
      ...IDENTITIES.map((identity) => identity.file),
      FILES.identitiesEnv,
      FILES.meshEnv,
      FILES.serverKey,
    ]) {
      expect(mode(at(file)).toString(8), file).toBe("600");
    }
    for (const file of [FILES.ca, FILES.serverCert]) {
      expect(mode(at(file)).toString(8), file).toBe("644");
    }
  });

  it("writes user seeds that parse with @nats-io/nkeys and match the public keys in nats-identities.env", () => {
    const publicKeys = envFile(at(FILES.identitiesEnv));
    expect(Object.keys(publicKeys).sort()).toEqual(IDENTITIES.map((i) => i.env).sort());
    const seen = new Set<string>();
    for (const identity of IDENTITIES) {
      const seed = readFileSync(at(identity.file), "utf8").trim();
      expect(seed, identity.file).toMatch(/^SU[A-Z2-7]{56}$/);
      const publicKey = fromSeed(new TextEncoder().encode(seed)).getPublicKey();
      expect(publicKey, identity.env).toMatch(/^U[A-Z2-7]{55}$/);
      expect(publicKeys[identity.env], identity.env).toBe(publicKey);
      seen.add(publicKey);
    }
    expect(seen.size, "every identity is different").toBe(IDENTITIES.length);
  });

  it("gives the server every HANDOFF_NATS_* variable deploy/nats/handoff-auth.conf reads", () => {
    const conf = readFileSync(join(root, "deploy/nats/handoff-auth.conf"), "utf8")
      .split("\n")
      .map((line) => line.replace(/#.*$/, ""))
      .join("\n");
    const referenced = [...new Set([...conf.matchAll(/\$(HANDOFF_NATS_\w+)/g)].map((m) => m[1]))];
    expect(referenced.length).toBeGreaterThan(0);
    expect(Object.keys(envFile(at(FILES.identitiesEnv))).sort()).toEqual(referenced.sort());
  });

  it("writes a mesh key the services accept, for the variable the shipped configs sign with", () => {
    const env = envFile(at(FILES.meshEnv));
    expect(Object.keys(env)).toEqual([MESH_KEY_ENV]);
    expect(Buffer.from(env[MESH_KEY_ENV] ?? "", "base64")).toHaveLength(48);
    for (const file of ["deploy/config/compose.yaml", "deploy/k8s/config/handoff.yaml"]) {
      const config = parseConfig(readFileSync(join(root, file), "utf8"), file);
      expect(config.mesh.signing_key_env, file).toBe(MESH_KEY_ENV);
      expect(loadMeshSigner(config.mesh, env).enabled, file).toBe(true);
    }
  });

  it("gives each service what it connects with: its seed file, the CA, tls://", () => {
    for (const identity of IDENTITIES) {
      const options = natsConnectionOptions(
        {},
        {
          NATS_URL: "tls://nats:4222",
          NATS_CA: at(FILES.ca),
          NATS_NKEY_SEED: at(identity.file),
          NATS_INBOX_PREFIX: `_INBOX_${identity.name}`,
        },
      );
      expect(options.authenticator, identity.name).toBeDefined();
      expect(options.tls).toEqual({ caFile: at(FILES.ca) });
    }
  });

  it("signs a server certificate that verifies against the CA, for every name the deployments use", async () => {
    const verify = await openssl("verify", "-CAfile", at(FILES.ca), at(FILES.serverCert));
    expect(verify.stdout.trim()).toBe(`${at(FILES.serverCert)}: OK`);
    expect(verify.code).toBe(0);
    const hosts = TLS_DNS_NAMES.map((name) => name.replace(/^\*\./, "nats-0."));
    expect(hosts).toEqual(
      expect.arrayContaining([
        "nats",
        "localhost",
        "nats.nats.svc.cluster.local",
        "nats-0.nats.nats.svc.cluster.local",
        "nats-0.nats-headless.nats.svc.cluster.local",
      ]),
    );
    for (const host of hosts) {
      const check = await openssl(
        "x509",
        "-in",
        at(FILES.serverCert),
        "-noout",
        "-checkhost",
        host,
      );
      expect(check.stdout, host).toContain(`Hostname ${host} does match certificate`);
    }
    expect(TLS_IPS).toEqual(["127.0.0.1"]);
    const ip = await openssl(
      "x509",
      "-in",
      at(FILES.serverCert),
      "-noout",
      "-checkip",
      "127.0.0.1",
    );
    expect(ip.stdout).toContain("IP 127.0.0.1 does match certificate");
    const other = await openssl(
      "x509",
      "-in",
      at(FILES.serverCert),
      "-noout",
      "-checkhost",
      "nats.example.com",
    );
    expect(other.stdout).toContain("does NOT match");

    // The key is the certificate's; the CA is a CA and the server certificate is not.
    const cert = new X509Certificate(readFileSync(at(FILES.serverCert)));
    const ca = new X509Certificate(readFileSync(at(FILES.ca)));
    expect(cert.checkPrivateKey(createPrivateKey(readFileSync(at(FILES.serverKey))))).toBe(true);
    expect(cert.verify(ca.publicKey)).toBe(true);
    expect(ca.ca).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.keyUsage ?? []).toContain("1.3.6.1.5.5.7.3.1"); // serverAuth
    // The CA's key is not left next to its certificate.
    expect(existsSync(at("tls/ca-key.pem"))).toBe(false);
  });

  it("refuses to overwrite without --force, and replaces everything with it", async () => {
    const before = readFileSync(at("gateway.nk"), "utf8");
    const again = await script(out);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/refusing to overwrite/);
    expect(again.stderr).toContain("--force");
    expect(readFileSync(at("gateway.nk"), "utf8")).toBe(before);

    // One file left from an earlier run is enough to refuse.
    const partial = join(work, "partial");
    const created = await script(partial);
    expect(created.code).toBe(0);
    await rm(join(partial, "mesh.env"));
    const refused = await script(partial);
    expect(refused.code).not.toBe(0);
    expect(existsSync(join(partial, "mesh.env")), "nothing written when refusing").toBe(false);

    writeFileSync(at("mesh.env"), "stale\n", { mode: 0o644 });
    const forced = await script(out, "--force");
    expect(forced.stderr).toBe("");
    expect(forced.code).toBe(0);
    expect(readFileSync(at("gateway.nk"), "utf8")).not.toBe(before);
    expect(mode(at("mesh.env")).toString(8), "a replaced file gets the secret's mode").toBe("600");
    expect(Object.keys(envFile(at("mesh.env")))).toEqual([MESH_KEY_ENV]);
  }, 30_000);

  it("answers a missing directory or an unknown option with its usage", async () => {
    for (const args of [[], ["--nope", join(work, "x")], [join(work, "a"), join(work, "b")]]) {
      const result = await script(...args);
      expect(result.code, args.join(" ")).toBe(2);
      expect(result.stderr).toContain("usage: node scripts/nats-identities.mjs <dir>");
    }
  });
});

// The compose server config with these files, as nats-server reads it (when it is installed).
const natsServer = findNatsServer();

describe.skipIf(natsServer === undefined)("deploy/nats/nats.conf with the generated files", () => {
  it("is a valid server config (nats-server -t) with the public keys in the environment", async () => {
    const dir = join(work, "etc");
    await mkdir(dir, { recursive: true });
    const version = await run(natsServer as string, ["--version"]);
    const [, minor] = version.stdout.match(/v2\.(\d+)\./) ?? [];
    let conf = readFileSync(join(root, "deploy/nats/nats.conf"), "utf8")
      .replaceAll("/etc/nats/tls/", `${join(out, "tls")}/`)
      .replace(/store_dir:\s*"\/data"/, `store_dir: "${join(work, "data")}"`);
    // sync_interval came with nats-server 2.10 (compose runs 2.12); older binaries reject it.
    if (Number(minor) < 10) conf = conf.replace(/^\s*sync_interval:.*$/m, "");
    writeFileSync(join(dir, "nats.conf"), conf);
    writeFileSync(
      join(dir, "handoff-auth.conf"),
      readFileSync(join(root, "deploy/nats/handoff-auth.conf")),
    );
    const serverEnv = { PATH: process.env.PATH, ...envFile(at(FILES.identitiesEnv)) };
    const ok = await run(natsServer as string, ["-t", "-c", join(dir, "nats.conf")], {
      env: serverEnv,
    }).then(
      () => "valid",
      (error: { stderr?: string }) => error.stderr ?? "failed",
    );
    expect(ok).toBe("valid");
    // Without the public keys the server does not start.
    const missing = await run(natsServer as string, ["-t", "-c", join(dir, "nats.conf")], {
      env: { PATH: process.env.PATH },
    }).then(
      () => "valid",
      (error: { stderr?: string }) => error.stderr ?? "failed",
    );
    expect(missing).toMatch(/HANDOFF_NATS_\w+/);
  });
});
