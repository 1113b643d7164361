#!/usr/bin/env node
// Writes the secrets a secure Handoff deployment mounts, into one directory:
//
//   node scripts/nats-identities.mjs deploy/secrets [--force]
//
//   <service>.nk          an nkey seed per NATS identity (the services, admin, the APPS example)
//   nats-identities.env   their PUBLIC keys, HANDOFF_NATS_*=U..., which deploy/nats/handoff-auth.conf
//                         reads from the NATS server's environment
//   mesh.env              HANDOFF_MESH_KEY=<48 random bytes, base64>, the mesh signing key
//   tls/ca.pem            a private CA (its key is not kept: a new certificate means a new CA)
//   tls/server.pem        the NATS server's certificate, signed by that CA, for the names below
//   tls/server-key.pem    its private key
//
// The directory is created with mode 0700 and the secrets with 0600 (the two certificates are
// public: 0644). Existing files are never overwritten without --force. Needs `npm ci` (for
// @nats-io/nkeys) and the openssl command. Prints what it wrote, never a secret.

import { execFile } from "node:child_process";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { createUser, fromSeed } from "@nats-io/nkeys";

const run = promisify(execFile);
const repoRoot = fileURLToPath(new URL("..", import.meta.url));

/** A path as the user would type it: relative to the working directory when inside it. */
function shown(path) {
  const rel = relative(process.cwd(), path);
  return rel === "" ? "." : rel.startsWith("..") ? path : rel;
}

/** One nkey identity per service, plus the operator's and the example account's. */
export const IDENTITIES = [
  { name: "gateway", env: "HANDOFF_NATS_GATEWAY", file: "gateway.nk" },
  { name: "classifier", env: "HANDOFF_NATS_CLASSIFIER", file: "classifier.nk" },
  { name: "tool-executor", env: "HANDOFF_NATS_TOOL_EXECUTOR", file: "tool-executor.nk" },
  { name: "heavy-reasoner", env: "HANDOFF_NATS_HEAVY_REASONER", file: "heavy-reasoner.nk" },
  { name: "tools", env: "HANDOFF_NATS_TOOLS", file: "tools.nk" },
  { name: "admin", env: "HANDOFF_NATS_ADMIN", file: "admin.nk" },
  { name: "apps-example", env: "HANDOFF_NATS_APPS_EXAMPLE", file: "apps-example.nk" },
];

/** The variable mesh.env sets: what `mesh.signing_key_env` names in the shipped configs. */
export const MESH_KEY_ENV = "HANDOFF_MESH_KEY";
const MESH_KEY_BYTES = 48;

/** Names the server certificate is valid for: compose, the host, and the Helm release `nats`. */
export const TLS_DNS_NAMES = [
  "nats",
  "localhost",
  "nats.nats.svc.cluster.local",
  "*.nats.nats.svc.cluster.local",
  "*.nats-headless.nats.svc.cluster.local",
];
export const TLS_IPS = ["127.0.0.1"];
const CA_DAYS = 3650;
const SERVER_DAYS = 825;

/** Every file the script writes, relative to the output directory. */
export const FILES = {
  identitiesEnv: "nats-identities.env",
  meshEnv: "mesh.env",
  ca: "tls/ca.pem",
  serverCert: "tls/server.pem",
  serverKey: "tls/server-key.pem",
};

const SECRET_MODE = 0o600;
const PUBLIC_MODE = 0o644;
const DIR_MODE = 0o700;

const USAGE = `usage: node scripts/nats-identities.mjs <dir> [--force]

Writes NATS nkey identities, a mesh signing key and a TLS CA with the NATS server's certificate
into <dir> (e.g. deploy/secrets). Refuses to overwrite existing files unless --force is given.`;

class UsageError extends Error {}

function parseArgs(argv) {
  let force = false;
  const positional = [];
  for (const arg of argv) {
    if (arg === "--force" || arg === "-f") force = true;
    else if (arg === "--help" || arg === "-h") return { help: true };
    else if (arg.startsWith("-")) throw new UsageError(`unknown option ${arg}`);
    else positional.push(arg);
  }
  if (positional.length !== 1) throw new UsageError("give exactly one output directory");
  return { dir: positional[0], force };
}

async function openssl(args, cwd) {
  try {
    await run("openssl", args, { cwd });
  } catch (error) {
    if (error?.code === "ENOENT") throw new Error("the openssl command is needed and not on PATH");
    const stderr = String(error?.stderr ?? "").trim();
    throw new Error(`openssl ${args[0]} failed: ${stderr || error.message}`);
  }
}

/** An EC P-256 private key as PKCS#8 PEM (made by node, so any openssl or LibreSSL signs it). */
function ecKeyPem() {
  return generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey.export({
    type: "pkcs8",
    format: "pem",
  });
}

function opensslConfig() {
  const alt = [
    ...TLS_DNS_NAMES.map((name, i) => `DNS.${i + 1} = ${name}`),
    ...TLS_IPS.map((ip, i) => `IP.${i + 1} = ${ip}`),
  ];
  return [
    "[req]",
    "distinguished_name = dn",
    "prompt = no",
    "[dn]",
    "CN = unused",
    "[v3_ca]",
    "basicConstraints = critical, CA:TRUE, pathlen:0",
    "keyUsage = critical, keyCertSign, cRLSign",
    "subjectKeyIdentifier = hash",
    "[v3_server]",
    "basicConstraints = critical, CA:FALSE",
    "keyUsage = critical, digitalSignature, keyEncipherment",
    "extendedKeyUsage = serverAuth",
    "subjectKeyIdentifier = hash",
    "authorityKeyIdentifier = keyid, issuer",
    "subjectAltName = @alt",
    "[alt]",
    ...alt,
    "",
  ].join("\n");
}

/** A CA and a server certificate it signed; the CA's key lives only in a temporary directory. */
async function makeTls() {
  const work = await mkdtemp(join(tmpdir(), "handoff-pki-"));
  try {
    await writeFile(join(work, "openssl.cnf"), opensslConfig());
    await writeFile(join(work, "ca-key.pem"), ecKeyPem(), { mode: SECRET_MODE });
    const serverKey = ecKeyPem();
    await writeFile(join(work, "server-key.pem"), serverKey, { mode: SECRET_MODE });
    const cnf = ["-config", "openssl.cnf"];
    await openssl(
      [
        "req",
        "-new",
        "-x509",
        ...cnf,
        "-extensions",
        "v3_ca",
        "-key",
        "ca-key.pem",
        "-subj",
        "/CN=Handoff NATS CA",
        "-sha256",
        "-days",
        String(CA_DAYS),
        "-out",
        "ca.pem",
      ],
      work,
    );
    await openssl(
      [
        "req",
        "-new",
        ...cnf,
        "-key",
        "server-key.pem",
        "-subj",
        "/CN=nats",
        "-sha256",
        "-out",
        "server.csr",
      ],
      work,
    );
    await openssl(
      [
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-set_serial",
        `0x${randomBytes(16).toString("hex")}`,
        "-sha256",
        "-days",
        String(SERVER_DAYS),
        "-extfile",
        "openssl.cnf",
        "-extensions",
        "v3_server",
        "-out",
        "server.pem",
      ],
      work,
    );
    return {
      ca: await readFile(join(work, "ca.pem"), "utf8"),
      serverCert: await readFile(join(work, "server.pem"), "utf8"),
      serverKey,
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function makeIdentities() {
  const decoder = new TextDecoder();
  return IDENTITIES.map((identity) => {
    const user = createUser();
    const seed = decoder.decode(user.getSeed());
    const publicKey = user.getPublicKey();
    // The seed must give back the same identity, as the services will read it.
    if (fromSeed(new TextEncoder().encode(seed)).getPublicKey() !== publicKey) {
      throw new Error(`the seed made for ${identity.name} does not match its public key`);
    }
    return { ...identity, seed, publicKey };
  });
}

/** Writes the files, all or nothing when one already exists (unless `force`). */
export async function writeIdentities(dirArg, { force = false, log = console.log } = {}) {
  const dir = resolve(dirArg);
  const targets = [...IDENTITIES.map((identity) => identity.file), ...Object.values(FILES)].map(
    (file) => join(dir, file),
  );
  const existing = targets.filter((file) => existsSync(file));
  if (existing.length > 0 && !force) {
    throw new Error(
      `refusing to overwrite ${existing.map(shown).join(", ")}; ` +
        "pass --force to replace every identity, key and certificate (all services and the NATS server then need the new ones)",
    );
  }

  const tls = await makeTls();
  const identities = makeIdentities();
  const meshKey = randomBytes(MESH_KEY_BYTES).toString("base64");

  // A directory made here is 0700; one that already existed is left as it is, with a warning.
  for (const sub of [dir, join(dir, "tls")]) {
    if (!existsSync(sub)) {
      await mkdir(sub, { recursive: true, mode: DIR_MODE });
      await chmod(sub, DIR_MODE);
    }
    const mode = (await stat(sub)).mode & 0o777;
    if (mode & 0o077) {
      log(`warning: ${sub} is open to others (mode ${mode.toString(8)}): chmod 700 it`);
    }
  }

  const written = [];
  const put = async (file, content, mode, what) => {
    const path = join(dir, file);
    await writeFile(path, content, { mode, flag: force ? "w" : "wx" });
    await chmod(path, mode); // a replaced file keeps its old mode otherwise
    written.push({ path, mode, what });
  };

  for (const identity of identities) {
    await put(identity.file, `${identity.seed}\n`, SECRET_MODE, `nkey seed of ${identity.name}`);
  }
  await put(
    FILES.identitiesEnv,
    [
      "# Public nkeys of the Handoff NATS identities, for the server (deploy/nats/handoff-auth.conf).",
      ...identities.map((identity) => `${identity.env}=${identity.publicKey}`),
      "",
    ].join("\n"),
    SECRET_MODE,
    `public keys (${identities.map((identity) => identity.env).join(", ")})`,
  );
  await put(
    FILES.meshEnv,
    [
      "# The mesh signing key (mesh.signing_key_env). Every Handoff service needs the same one.",
      `${MESH_KEY_ENV}=${meshKey}`,
      "",
    ].join("\n"),
    SECRET_MODE,
    `${MESH_KEY_ENV}, ${MESH_KEY_BYTES} random bytes (base64)`,
  );
  await put(FILES.ca, tls.ca, PUBLIC_MODE, `CA certificate (${CA_DAYS} days; its key is not kept)`);
  await put(
    FILES.serverCert,
    tls.serverCert,
    PUBLIC_MODE,
    `NATS server certificate (${SERVER_DAYS} days) for ${[...TLS_DNS_NAMES, ...TLS_IPS].join(", ")}`,
  );
  await put(FILES.serverKey, tls.serverKey, SECRET_MODE, "NATS server private key");

  log(`Wrote into ${shown(dir)}/:`);
  for (const { path, mode, what } of written) {
    log(`  ${relative(dir, path).padEnd(21)} ${mode.toString(8).padStart(4, "0")}  ${what}`);
  }
  log(nextSteps(dir));
  return { dir, files: written.map((entry) => entry.path) };
}

/** What to do with the files: compose, and the kubectl commands for Kubernetes. */
function nextSteps(absDir) {
  const dir = shown(absDir);
  const compose =
    absDir === join(repoRoot, "deploy", "secrets")
      ? "Docker Compose reads these files where they are: docker compose up --build"
      : "docker-compose.yml reads them from deploy/secrets: write them there for Compose";
  const services = IDENTITIES.filter((identity) =>
    ["gateway", "classifier", "tool-executor", "heavy-reasoner"].includes(identity.name),
  );
  return [
    "",
    compose,
    "",
    "Kubernetes (see deploy/README.md):",
    "  kubectl create namespace nats; kubectl create namespace handoff",
    `  kubectl -n nats create secret generic handoff-nats-identities --from-env-file=${dir}/${FILES.identitiesEnv}`,
    `  kubectl -n nats create secret tls handoff-nats-server-tls --cert=${dir}/${FILES.serverCert} --key=${dir}/${FILES.serverKey}`,
    `  kubectl -n nats create secret generic handoff-nats-ca --from-file=ca.crt=${dir}/${FILES.ca}`,
    ...services.map(
      (identity) =>
        `  kubectl -n handoff create secret generic handoff-nats-${identity.name} --from-file=seed=${dir}/${identity.file} --from-file=ca.pem=${dir}/${FILES.ca}`,
    ),
    `  kubectl -n handoff create secret generic handoff-mesh-key --from-env-file=${dir}/${FILES.meshEnv}`,
    "",
    `Keep ${dir}/admin.nk (the operator's identity) off the application hosts.`,
  ].join("\n");
}

async function main(argv) {
  let args;
  try {
    args = parseArgs(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`${error.message}\n\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  try {
    await writeIdentities(args.dir, { force: args.force });
    return 0;
  } catch (error) {
    console.error(`nats-identities: ${error.message}`);
    return 1;
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = await main(process.argv.slice(2));
}
