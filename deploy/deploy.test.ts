/**
 * Static checks of the deployment files: docker-compose.yml, the Dockerfile, the NATS config and
 * Helm values, and the kustomize manifests in deploy/k8s. Nothing here needs a Docker engine or a
 * cluster: the compose file is validated against the Compose Specification JSON schema (shipped in
 * the `docker-compose` npm package) and every Kubernetes object against the OpenAPI schemas of
 * `kubernetes-models` / `@kubernetes-models/keda`. The secure setup is checked too: every service
 * connects over TLS with its own nkey seed and reply prefix, mounted from secrets that
 * scripts/nats-identities.mjs writes, and no secret is written into any of these files.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { basename, dirname, join, posix } from "node:path";
import { fileURLToPath } from "node:url";
import { parseConfig } from "@handoff/config";
import { Stages, Streams } from "@handoff/contracts";
import { NatsEnv } from "@handoff/mesh";
import { SERVICE_SEMI_SPACE_MB, serviceEnv } from "@handoff/nats-process";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import { Ajv } from "ajv";
import { Deployment } from "kubernetes-models/apps/v1";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { ConfigMap, Namespace, Service } from "kubernetes-models/v1";
import { describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import {
  IDENTITIES,
  MESH_KEY_ENV,
  FILES as SECRET_FILES,
  TLS_DNS_NAMES,
} from "../scripts/nats-identities.mjs";

// biome-ignore lint/suspicious/noExplicitAny: parsed YAML is untyped; the tests check its shape.
type Any = any;

const root = fileURLToPath(new URL("..", import.meta.url));
const read = (rel: string) => readFileSync(join(root, rel), "utf8");

const GATEWAY = "gateway";
const WORKERS = ["classifier", "tool-executor", "heavy-reasoner"] as const;
const SERVICES = [GATEWAY, ...WORKERS];
const JOBS_STREAM = "HANDOFF_JOBS";

/** The environment variables the services read (see the services' docs). */
const COMMON_ENV = [
  // NATS_URL, NATS_CREDS, NATS_NKEY_SEED, NATS_CA, NATS_INBOX_PREFIX, ... (libs/mesh connect.ts)
  ...Object.values(NatsEnv),
  // The mesh signing key, as mesh.signing_key_env names it in the shipped configs.
  MESH_KEY_ENV,
  "HANDOFF_CONFIG",
  "LOG_LEVEL",
  "HANDOFF_CONCURRENCY",
  "OTEL_SERVICE_NAME",
  "OTEL_EXPORTER_OTLP_ENDPOINT",
  "OTEL_EXPORTER_OTLP_PROTOCOL",
  "OTEL_TRACES_EXPORTER",
  "OTEL_METRICS_EXPORTER",
  "OTEL_LOGS_EXPORTER",
];
const GATEWAY_ENV = [...COMMON_ENV, "PORT", "HOST"];
const WORKER_ENV = [...COMMON_ENV, "HEALTH_PORT"];
const allowedEnv = (service: string) => (service === GATEWAY ? GATEWAY_ENV : WORKER_ENV);
const OTLP_PROTOCOLS = ["http/protobuf", "http/json", "grpc"];
const PINO_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/** Directories under services/ that hold a package. */
const serviceDirs = readdirSync(join(root, "services")).filter((name) =>
  existsSync(join(root, "services", name, "package.json")),
);

/** Strips `#` and `//` comments from a NATS server config. */
const stripNatsComments = (text: string) =>
  text
    .split("\n")
    .map((line) => line.replace(/(^|\s)(#|\/\/).*$/, ""))
    .join("\n");

/** The `$HANDOFF_NATS_*` variables deploy/nats/handoff-auth.conf reads from the environment. */
const authConfVariables = () => [
  ...new Set(
    [
      ...stripNatsComments(read("deploy/nats/handoff-auth.conf")).matchAll(/\$(HANDOFF_NATS_\w+)/g),
    ].map((m) => m[1] as string),
  ),
];

/** The service's NATS identity in scripts/nats-identities.mjs. */
const identityOf = (service: string) => IDENTITIES.find((identity) => identity.name === service);

/** True when the server certificate the script makes is valid for `host` (one-label wildcards). */
const certificateNames = (host: string) =>
  TLS_DNS_NAMES.some((name) =>
    name.startsWith("*.")
      ? host.endsWith(name.slice(1)) && !host.slice(0, -name.length + 1).includes(".")
      : host === name,
  );

/** The host names in a NATS_URL (comma-separated server URLs). */
const natsHosts = (url: string) => url.split(",").map((server) => new URL(server.trim()).hostname);

/** Secret material that must never be written into a deployment file. */
const SECRET_PATTERNS: [string, RegExp][] = [
  ["an nkey seed", /\bS[UAOCNPX][A-Z2-7]{50,}\b/],
  ["a PEM private key", /-----BEGIN [A-Z ]*PRIVATE KEY-----/],
  ["a creds file", /BEGIN (NATS USER JWT|USER NKEY SEED)/],
  ["a mesh key value", new RegExp(`${MESH_KEY_ENV}\\s*[:=]\\s*["']?[A-Za-z0-9+/=]{32,}`)],
];

/** Files below a folder of the repository, recursively. */
function filesUnder(rel: string): string[] {
  return readdirSync(join(root, rel), { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? filesUnder(posix.join(rel, entry.name))
      : entry.isFile()
        ? [posix.join(rel, entry.name)]
        : [],
  );
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml

const composeText = read("docker-compose.yml");
const compose: Any = parse(composeText, { merge: true });

const builtServices = () =>
  Object.entries<Any>(compose.services).filter(([, service]) => service.build !== undefined);

/** Host ports a service publishes, from the short (`[ip:]host:container[/proto]`) or long syntax. */
function publishedPorts(service: Any): number[] {
  return (service.ports ?? []).map((port: Any) => {
    if (typeof port === "object") return Number(port.published);
    const parts = String(port)
      .replace(/\/(tcp|udp)$/, "")
      .split(":");
    expect(parts.length, `port ${port} names no host port`).toBeGreaterThanOrEqual(2);
    return Number(parts[parts.length - 2]);
  });
}

/** The command of a healthcheck as one string. */
const healthcheckCommand = (service: Any): string => {
  const test = service.healthcheck?.test;
  return Array.isArray(test) ? test.join(" ") : String(test ?? "");
};

describe("docker-compose.yml", () => {
  it("matches the Compose Specification schema", () => {
    const require = createRequire(import.meta.url);
    const schema = JSON.parse(
      readFileSync(require.resolve("docker-compose/schema/compose-spec.json"), "utf8"),
    );
    // The schema is draft-07, Ajv's default; its `$schema` URL is not one Ajv has registered.
    delete schema.$schema;
    const validate = new Ajv({ strict: false, allErrors: true }).compile(schema);
    const valid = validate(compose);
    const errors = (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`);
    expect(errors).toEqual([]);
    expect(valid).toBe(true);
  });

  it("runs nats, jaeger and the four services", () => {
    expect(Object.keys(compose.services).sort()).toEqual(["nats", "jaeger", ...SERVICES].sort());
  });

  it("tells how to use it in its opening comment", () => {
    const header = composeText.slice(0, composeText.search(/^[^#\n]/m));
    expect(header).toContain("docker compose up --build");
    expect(header).toContain("curl");
    expect(header).toContain("/v1/chat/completions");
    expect(header).toContain("http://localhost:16686");
  });

  it("builds every service under services/ from the one Dockerfile", () => {
    const built = builtServices();
    expect(built.map(([name]) => name).sort()).toEqual([...serviceDirs].sort());
    for (const [name, service] of built) {
      const build = typeof service.build === "string" ? { context: service.build } : service.build;
      const context = join(root, build.context ?? ".");
      const dockerfile = join(context, build.dockerfile ?? "Dockerfile");
      expect(dockerfile, name).toBe(join(root, "Dockerfile"));
      expect(existsSync(dockerfile)).toBe(true);
      const arg = build.args?.SERVICE;
      expect(arg, `${name}: build arg SERVICE`).toBe(name);
      expect(existsSync(join(root, "services", arg, "package.json")), `services/${arg}`).toBe(true);
      expect(service.image, name).toMatch(new RegExp(`^ghcr\\.io/handoff-dev/handoff-${name}:`));
    }
  });

  it("starts every service only once NATS is healthy", () => {
    for (const [name, service] of builtServices()) {
      expect(Array.isArray(service.depends_on), `${name}: long depends_on syntax`).toBe(false);
      expect(service.depends_on?.nats?.condition, name).toBe("service_healthy");
    }
    expect(compose.services.nats.healthcheck, "nats needs a healthcheck").toBeDefined();
  });

  it("sets only the environment variables the services read, with sound values", () => {
    for (const [name, service] of builtServices()) {
      const env: Record<string, unknown> = Array.isArray(service.environment)
        ? Object.fromEntries(
            service.environment.map((entry: string) => entry.split(/=(.*)/s).slice(0, 2)),
          )
        : (service.environment ?? {});
      for (const key of Object.keys(env)) {
        expect(allowedEnv(name), `${name} sets ${key}`).toContain(key);
      }
      expect(env.NATS_URL, name).toBe("tls://nats:4222");
      expect(env.OTEL_EXPORTER_OTLP_ENDPOINT, name).toBe("http://jaeger:4318");
      expect(env.OTEL_EXPORTER_OTLP_PROTOCOL, name).toBe("http/protobuf");
      if (env.LOG_LEVEL !== undefined) expect(PINO_LEVELS).toContain(env.LOG_LEVEL);
      if (env.OTEL_SERVICE_NAME !== undefined) expect(env.OTEL_SERVICE_NAME).toBe(name);
      if (name !== GATEWAY) {
        expect(env.HEALTH_PORT, `${name}: HEALTH_PORT`).toBeDefined();
        const port = String(env.HEALTH_PORT);
        expect(healthcheckCommand(service), name).toMatch(
          new RegExp(`node -e .*fetch\\(.*:${port}/readyz`),
        );
      }
    }
  });

  it("checks the gateway with node's fetch on /readyz", () => {
    const gateway = compose.services.gateway;
    const port = gateway.environment?.PORT ?? "8080";
    expect(healthcheckCommand(gateway)).toMatch(new RegExp(`node -e .*fetch\\(.*:${port}/readyz`));
  });

  it("publishes NATS 4222/8222, Jaeger 16686/4317/4318 and the gateway 8080, nothing else", () => {
    const published = Object.fromEntries(
      Object.entries<Any>(compose.services).map(([name, service]) => [
        name,
        publishedPorts(service).sort((a, b) => a - b),
      ]),
    );
    expect(published).toEqual({
      nats: [4222, 8222],
      jaeger: [4317, 4318, 16686],
      gateway: [8080],
      classifier: [],
      "tool-executor": [],
      "heavy-reasoner": [],
    });
  });

  it("runs NATS 2.10+ with the mounted config, a healthcheck and a named volume for JetStream", () => {
    const nats = compose.services.nats;
    const [, major, minor] = String(nats.image).match(/^nats:(\d+)\.(\d+)/) ?? [];
    expect(Number(major) > 2 || (Number(major) === 2 && Number(minor) >= 10), nats.image).toBe(
      true,
    );
    expect(nats.image, "the healthcheck needs wget from the alpine image").toMatch(/-alpine/);
    expect(healthcheckCommand(nats)).toContain("/healthz?js-enabled-only=true");

    const mounts: string[] = nats.volumes.map(String);
    const conf = mounts.find((m) => m.startsWith("./deploy/nats/nats.conf:"));
    expect(conf, "deploy/nats/nats.conf is mounted").toBeDefined();
    const target = conf?.split(":")[1];
    expect(String(nats.command)).toContain(target);

    const storeDir = stripNatsComments(read("deploy/nats/nats.conf")).match(
      /store_dir\s*[:=]?\s*"?([^"\s]+)"?/,
    )?.[1];
    const named = mounts
      .map((m) => m.split(":"))
      .filter(([source]) => source !== undefined && !/^[./~]/.test(source));
    const storeVolume = named.find(([, path]) => path !== undefined && storeDir?.startsWith(path));
    expect(storeVolume, `a named volume holds store_dir ${storeDir}`).toBeDefined();
    expect(Object.keys(compose.volumes ?? {})).toContain(storeVolume?.[0]);
  });

  it("connects every service over TLS with its own seed, the CA and its own reply prefix", () => {
    const secrets: Record<string, Any> = compose.secrets ?? {};
    for (const [name, service] of builtServices()) {
      const env: Record<string, string> = service.environment ?? {};
      // Where each of the service's Compose secrets is mounted, and from which file.
      const mounted = new Map<string, string>(
        (service.secrets ?? []).map((entry: Any) => {
          const source = typeof entry === "string" ? entry : entry.source;
          const target = typeof entry === "string" ? undefined : entry.target;
          const path = target?.startsWith("/") ? target : `/run/secrets/${target ?? source}`;
          expect(secrets[source], `${name}: secret ${source} is declared`).toBeDefined();
          return [path, String(secrets[source]?.file)];
        }),
      );
      const identity = identityOf(name);
      expect(identity, `${name} has an identity in scripts/nats-identities.mjs`).toBeDefined();
      expect(String(env.NATS_URL), name).toMatch(/^tls:\/\//);
      for (const host of natsHosts(String(env.NATS_URL))) {
        expect(certificateNames(host), `${name}: the certificate names ${host}`).toBe(true);
      }
      expect(mounted.get(env.NATS_NKEY_SEED), `${name}: NATS_NKEY_SEED is its own seed`).toBe(
        `./deploy/secrets/${identity?.file}`,
      );
      expect(mounted.get(env.NATS_CA), `${name}: NATS_CA is the CA`).toBe(
        `./deploy/secrets/${SECRET_FILES.ca}`,
      );
      expect(env.NATS_INBOX_PREFIX, name).toBe(`_INBOX_${name}`);
      // No other identity's seed in this container.
      const seeds = [...mounted.values()].filter((file) => file.endsWith(".nk"));
      expect(seeds, name).toEqual([`./deploy/secrets/${identity?.file}`]);
    }
    // Every secret is a file the script writes, under the git-ignored deploy/secrets.
    const written = [...IDENTITIES.map((i) => i.file), ...Object.values(SECRET_FILES)];
    for (const [key, secret] of Object.entries<Any>(secrets)) {
      expect(Object.keys(secret), `secret ${key}: a file, not a value`).toEqual(["file"]);
      expect(
        written.map((file) => `./deploy/secrets/${file}`),
        key,
      ).toContain(secret.file);
    }
  });

  it("gives every service the mesh key from deploy/secrets/mesh.env and a config that signs with it", () => {
    for (const [name, service] of builtServices()) {
      const envFiles = [service.env_file ?? []]
        .flat()
        .map((entry: Any) => (typeof entry === "string" ? entry : entry.path));
      expect(envFiles, name).toContain(`./deploy/secrets/${SECRET_FILES.meshEnv}`);
      expect(Object.keys(service.environment ?? {}), `${name}: no key inline`).not.toContain(
        MESH_KEY_ENV,
      );
      const configPath = String(service.environment?.HANDOFF_CONFIG);
      const mount = (service.volumes ?? [])
        .map(String)
        .map((m: string) => m.split(":"))
        .find(([, target]: string[]) => target === configPath);
      expect(mount, `${name}: HANDOFF_CONFIG ${configPath} is mounted`).toBeDefined();
      const [source = "", , flags] = mount ?? [];
      expect(flags, `${name}: the config is read-only`).toBe("ro");
      expect(source).toMatch(/^\.\/deploy\/config\/[\w.-]+\.ya?ml$/);
      const config = parseConfig(read(source), source);
      expect(config.mesh.signing_key_env, `${name}: ${source} signs`).toBe(MESH_KEY_ENV);
    }
  });

  it("runs NATS with TLS and handoff-auth.conf, the public keys from deploy/secrets", () => {
    const nats = compose.services.nats;
    const mounts: string[][] = nats.volumes.map((m: Any) => String(m).split(":"));
    const confTarget = mounts.find(([source]) => source === "./deploy/nats/nats.conf")?.[1] ?? "";
    const conf = stripNatsComments(read("deploy/nats/nats.conf"));

    // `include handoff-auth.conf`, resolved next to nats.conf, is the mounted policy.
    const include = conf.match(/^\s*include\s+"?([^"\s;]+)"?/m)?.[1];
    expect(include, "nats.conf includes the auth policy").toBeDefined();
    const includeTarget = posix.join(posix.dirname(confTarget), include ?? "");
    const auth = mounts.find(([, target]) => target === includeTarget);
    expect(auth?.[0], `${includeTarget} is deploy/nats/handoff-auth.conf`).toBe(
      "./deploy/nats/handoff-auth.conf",
    );
    expect(auth?.[2]).toBe("ro");

    // The TLS files, from the script's tls/ folder mounted read-only.
    const tls = conf.match(/\btls\s*[:=]?\s*\{([^}]*)\}/)?.[1] ?? "";
    const file = (key: string) => tls.match(new RegExp(`${key}\\s*[:=]?\\s*"?([^"\\s]+)"?`))?.[1];
    const tlsMount = mounts.find(([source]) => source === "./deploy/secrets/tls");
    expect(tlsMount?.[2], "deploy/secrets/tls is mounted read-only").toBe("ro");
    expect(file("cert_file")).toBe(
      posix.join(tlsMount?.[1] ?? "", basename(SECRET_FILES.serverCert)),
    );
    expect(file("key_file")).toBe(
      posix.join(tlsMount?.[1] ?? "", basename(SECRET_FILES.serverKey)),
    );
    // Monitoring stays plain HTTP for the healthcheck; clients get TLS.
    expect(conf).not.toMatch(/https_port/);
    expect(conf).not.toMatch(/allow_non_tls/);

    const envFiles = [nats.env_file ?? []]
      .flat()
      .map((e: Any) => (typeof e === "string" ? e : e.path));
    expect(envFiles).toContain(`./deploy/secrets/${SECRET_FILES.identitiesEnv}`);
  });

  it("runs Jaeger v2", () => {
    expect(compose.services.jaeger.image).toMatch(/^jaegertracing\/jaeger:2\.\d+/);
  });

  it("runs two tool-executor replicas", () => {
    expect(compose.services["tool-executor"].deploy?.replicas).toBe(2);
  });
});

// ---------------------------------------------------------------------------------------------
// NATS

describe("deploy/nats", () => {
  it("nats.conf enables JetStream with a file store fsynced on every write", () => {
    const conf = stripNatsComments(read("deploy/nats/nats.conf"));
    const jetstream = conf.match(/jetstream\s*[:=]?\s*\{([^}]*)\}/)?.[1];
    expect(jetstream, "a jetstream { ... } block").toBeDefined();
    expect(jetstream).toMatch(/store_dir\s*[:=]?\s*\S+/);
    expect(jetstream).toMatch(/sync_interval\s*[:=]?\s*"?always"?/);
    expect(conf).toMatch(/http_port\s*[:=]?\s*8222\b/);
  });

  it("the identities script makes every HANDOFF_NATS_* variable handoff-auth.conf reads", () => {
    const variables = authConfVariables();
    expect(variables.length).toBeGreaterThan(0);
    expect(IDENTITIES.map((identity) => identity.env).sort()).toEqual([...variables].sort());
    for (const identity of IDENTITIES) {
      if (identity.name === "admin" || identity.name === "apps-example") continue;
      // Each service's identity may read only its own reply subjects.
      expect(read("deploy/nats/handoff-auth.conf")).toContain(`"_INBOX_${identity.name}.>"`);
    }
  });

  it("values.yaml serves TLS, includes handoff-auth.conf and takes the public keys from a Secret", () => {
    const values: Any = parse(read("deploy/nats/values.yaml"));
    expect(values.config.nats.tls).toMatchObject({ enabled: true });
    expect(values.config.nats.tls.secretName).toMatch(/^[a-z0-9-]+$/);
    expect(values.tlsCA).toMatchObject({ enabled: true });
    expect(values.tlsCA.secretName).toMatch(/^[a-z0-9-]+$/);
    expect(values.config.monitor.tls?.enabled ?? false, "KEDA reads /jsz over HTTP").toBe(false);
    expect(values.config.merge.$include).toBe("./handoff-auth.conf");
    // The policy is put into the chart's ConfigMap at install, under the name the include reads.
    expect(read("deploy/nats/values.yaml")).toContain(
      "--set-file 'configMap.merge.data.handoff-auth\\.conf=deploy/nats/handoff-auth.conf'",
    );
    const env = values.container.env;
    for (const variable of authConfVariables()) {
      expect(env[variable]?.valueFrom?.secretKeyRef, variable).toMatchObject({ key: variable });
      expect(env[variable]?.value, `${variable} is not written here`).toBeUndefined();
    }
    for (const host of natsHosts(
      String(ofKind("ConfigMap").find((c) => c.metadata.name === "handoff-common")?.data.NATS_URL),
    )) {
      expect(host, "NATS_URL names the release's Service").toMatch(/\.nats\.svc\.cluster\.local$/);
    }
  });

  it("values.yaml asks the Helm chart for a 3-node JetStream cluster on PVCs, synced always", () => {
    const values: Any = parse(read("deploy/nats/values.yaml"));
    expect(values.config.cluster).toMatchObject({ enabled: true, replicas: 3 });
    const jetstream = values.config.jetstream;
    expect(jetstream.enabled).toBe(true);
    expect(jetstream.fileStore.enabled).toBe(true);
    expect(jetstream.fileStore.pvc.enabled).toBe(true);
    expect(String(jetstream.fileStore.pvc.size)).toMatch(/^\d+(Mi|Gi|Ti)$/);
    expect(jetstream.merge.sync_interval).toBe("always");
    expect(values.config.monitor).toMatchObject({ enabled: true, port: 8222 });
  });
});

// ---------------------------------------------------------------------------------------------
// Dockerfile

interface Instruction {
  keyword: string;
  args: string;
}

/** The Dockerfile as instructions (continuation lines joined, comments dropped), split by stage. */
function dockerfileStages(text: string) {
  const instructions: Instruction[] = text
    .replace(/\\\r?\n/g, " ")
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"))
    .map((line) => {
      const [, keyword = "", args = ""] = line.match(/^(\S+)\s*(.*)$/) ?? [];
      return { keyword: keyword.toUpperCase(), args };
    });
  const globalArgs = new Map<string, string>();
  const stages: { name: string; from: string; body: Instruction[] }[] = [];
  for (const instruction of instructions) {
    if (instruction.keyword === "FROM") {
      const [image = "", , name = String(stages.length)] = instruction.args.split(/\s+/);
      const from = image.replace(/\$\{?(\w+)\}?/g, (_, arg: string) => globalArgs.get(arg) ?? "");
      stages.push({ name, from, body: [] });
    } else if (stages.length === 0 && instruction.keyword === "ARG") {
      const [key = "", value = ""] = instruction.args.split("=");
      globalArgs.set(key, value);
    } else {
      stages.at(-1)?.body.push(instruction);
    }
  }
  return { globalArgs, stages };
}

describe("Dockerfile", () => {
  const { stages } = dockerfileStages(read("Dockerfile"));
  const runtime = stages.at(-1);
  const body = runtime?.body ?? [];
  const last = (keyword: string) => body.filter((i) => i.keyword === keyword).at(-1);

  it("takes the service as ARG SERVICE and keeps it for the CMD", () => {
    const declares = (instructions: Instruction[]) =>
      instructions.some((i) => i.keyword === "ARG" && i.args.split("=")[0] === "SERVICE");
    expect(declares(body), "ARG SERVICE in the runtime stage").toBe(true);
    // The CMD expands ${SERVICE} when the container starts, so the value must be in the env.
    expect(body.some((i) => i.keyword === "ENV" && /\bSERVICE=\$\{?SERVICE\}?/.test(i.args))).toBe(
      true,
    );
  });

  it("copies the manifest of every workspace before npm ci, or the lockfile would not match", () => {
    const manifests = stages.find((stage) => stage.name === "manifests");
    const copy = manifests?.body.find((i) => i.keyword === "RUN" && i.args.includes("for pkg in"));
    const globs =
      /for pkg in ([^;]+); do/
        .exec(copy?.args ?? "")?.[1]
        ?.trim()
        .split(/\s+/) ?? [];
    const workspaces = (JSON.parse(read("package.json")) as { workspaces: string[] }).workspaces;
    expect(globs.sort()).toEqual([...workspaces].sort());
  });

  it("gives the services the young-generation cap the other launchers give them, not the old-generation limit", () => {
    const env = body.filter((i) => i.keyword === "ENV").map((i) => i.args);
    const cap = `--max-semi-space-size=${SERVICE_SEMI_SPACE_MB}`;
    expect(serviceEnv({}).NODE_OPTIONS).toContain(cap);
    expect(env.some((args) => args.includes(`NODE_OPTIONS="${cap}"`))).toBe(true);
    // In a container Node sizes V8's heap from the container's memory limit; a fixed old-space
    // limit would sit above the manifests' limits (service-env.ts says why).
    expect(env.join("\n")).not.toContain("--max-old-space-size");
  });

  it("runs on the official Node 24 image", () => {
    expect(runtime?.from).toMatch(/^node:24(-slim|-alpine)?$/);
  });

  it("runs as a non-root user", () => {
    const user = last("USER")?.args;
    expect(user, "USER in the runtime stage").toBeDefined();
    expect(["root", "0", "0:0"]).not.toContain(user);
  });

  it("starts services/$SERVICE/dist/main.js with node as PID 1 and stops it with SIGTERM", () => {
    const cmd = last("CMD")?.args ?? "";
    const argv: string[] = JSON.parse(cmd);
    expect(Array.isArray(argv), "exec-form CMD").toBe(true);
    expect(argv.join(" ")).toMatch(/services\/\$\{?SERVICE\}?\/dist\/main\.js/);
    // Docker expands no variables in an exec-form CMD: the service path needs `sh -c`, and the
    // shell must `exec` node so that node, not the shell, is PID 1 and gets SIGTERM.
    expect(argv[0], "a shell expands $SERVICE").toMatch(/(^|\/)(ba)?sh$/);
    expect(argv[1]).toBe("-c");
    expect(argv.at(-1), "the shell must exec node").toMatch(/^exec node /);
    expect(last("ENTRYPOINT")).toBeUndefined();
    expect(last("STOPSIGNAL")?.args).toBe("SIGTERM");
  });

  it("ships the data libs read at run time, such as the router model, next to their dist", () => {
    const build = stages.find((stage) => stage.name === "build");
    const copiesModels = build?.body.some(
      (i) => i.keyword === "RUN" && /cp -R "\$pkg\/models" "\/dist\/\$pkg\/models"/.test(i.args),
    );
    expect(copiesModels, "the build stage copies libs/*/models into /dist").toBe(true);
    // The classifier reads it from libs/routing/models, and nothing keeps it out of the context.
    expect(existsSync(join(root, "libs/routing/models/router.json"))).toBe(true);
    expect(read(".dockerignore")).not.toMatch(/models/);
  });

  it("ships production dependencies only", () => {
    const installs = (stage: { body: Instruction[] }) =>
      stage.body.filter((i) => i.keyword === "RUN" && /\bnpm (ci|install|i)\b/.test(i.args));
    const devStages = new Set(
      stages
        .filter((stage) => installs(stage).some((i) => !i.args.includes("--omit=dev")))
        .map((stage) => stage.name),
    );
    expect(
      stages.some((stage) => installs(stage).some((i) => i.args.includes("--omit=dev"))),
      "an npm ci/install --omit=dev",
    ).toBe(true);
    for (const copy of body.filter((i) => i.keyword === "COPY")) {
      const from = copy.args.match(/--from=(\S+)/)?.[1];
      if (from === undefined || !devStages.has(from)) continue;
      const [source = ""] = copy.args.replace(/--\S+/g, "").trim().split(/\s+/);
      expect(source, `COPY from ${from}, which has dev dependencies`).not.toMatch(
        /node_modules|^\/app\/?$|^\.\/?$/,
      );
    }
  });

  it(".dockerignore keeps dependencies, build output and local state out of the context", () => {
    const ignored = read(".dockerignore")
      .split("\n")
      .map((line) =>
        line
          .trim()
          .replace(/^\*\*\//, "")
          .replace(/\/$/, ""),
      )
      .filter((line) => line !== "" && !line.startsWith("#"));
    for (const entry of [
      "node_modules",
      "dist",
      ".git",
      ".turbo",
      ".handoff",
      ".tools",
      "coverage",
    ]) {
      expect(ignored, entry).toContain(entry);
    }
    for (const needed of ["package.json", "package-lock.json", "libs", "services", "turbo.json"]) {
      expect(ignored, needed).not.toContain(needed);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Kubernetes (kustomize)

const k8sDir = join(root, "deploy", "k8s");
const manifestFiles = readdirSync(k8sDir)
  .filter((file) => /\.ya?ml$/.test(file) && file !== "kustomization.yaml")
  .filter((file) => statSync(join(k8sDir, file)).isFile())
  .sort();

// Kubernetes reads manifests as YAML 1.1, where `defaultMode: 0400` is octal (256).
const objects: { file: string; object: Any }[] = manifestFiles.flatMap((file) =>
  parseAllDocuments(readFileSync(join(k8sDir, file), "utf8"), { version: "1.1" })
    .filter((doc) => doc.contents !== null)
    .map((doc) => {
      if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors[0]?.message}`);
      return { file, object: doc.toJS() };
    }),
);
const ofKind = (kind: string) => objects.map((o) => o.object).filter((o) => o.kind === kind);

/** A schema-validating model class per apiVersion/kind the manifests may use. */
const models: Record<string, new (data: Any) => { validate(): void }> = {
  "v1/Namespace": Namespace,
  "v1/ConfigMap": ConfigMap,
  "v1/Service": Service,
  "apps/v1/Deployment": Deployment,
  "autoscaling/v2/HorizontalPodAutoscaler": HorizontalPodAutoscaler,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
};

/** Resolves a probe or Service port (a number or a container port name) to a number. */
function containerPort(container: Any, port: number | string): number | undefined {
  if (typeof port === "number") return port;
  return container.ports?.find((p: Any) => p.name === port)?.containerPort;
}

const envOf = (container: Any): Record<string, string> =>
  Object.fromEntries((container.env ?? []).map((e: Any) => [e.name, e.value]));

describe("deploy/k8s", () => {
  it("parses, and every object matches its Kubernetes / KEDA schema", () => {
    expect(objects.length).toBeGreaterThan(0);
    for (const { file, object } of objects) {
      expect(object.metadata?.name, `${file}: metadata.name`).toBeTruthy();
      const key = `${object.apiVersion}/${object.kind}`;
      const Model = models[key];
      expect(Model, `${file}: no schema check for ${key}; add its model to the test`).toBeDefined();
      if (Model) expect(() => new Model(object).validate(), `${file}: ${key}`).not.toThrow();
    }
  });

  it("kustomization.yaml lists every manifest file, and only those", () => {
    const kustomization: Any = parse(read("deploy/k8s/kustomization.yaml"));
    expect(kustomization.kind).toBe("Kustomization");
    expect(kustomization.namespace).toBe("handoff");
    expect([...kustomization.resources].sort()).toEqual(manifestFiles);
    expect(ofKind("Namespace").map((n) => n.metadata.name)).toEqual(["handoff"]);
  });

  it("has one Deployment per service, each running that service's image and name", () => {
    const deployments = ofKind("Deployment");
    expect(deployments.map((d) => d.metadata.name).sort()).toEqual([...SERVICES].sort());
    for (const deployment of deployments) {
      const name = deployment.metadata.name;
      expect(serviceDirs, `${name} is a directory under services/`).toContain(name);
      const [container, ...others] = deployment.spec.template.spec.containers;
      expect(others, `${name}: one container`).toEqual([]);
      expect(container.image).toMatch(
        new RegExp(`^ghcr\\.io/handoff-dev/handoff-${name}:\\d+\\.\\d+\\.\\d+$`),
      );
      expect(container.command, `${name}: the image's CMD picks the service`).toBeUndefined();
      expect(container.args, `${name}: the image's CMD picks the service`).toBeUndefined();
      expect(envOf(container).OTEL_SERVICE_NAME, name).toBe(name);
      expect(deployment.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(
        30,
      );
      expect(container.resources?.requests?.cpu, `${name}: cpu request`).toBeDefined();
      expect(container.resources?.limits?.memory, `${name}: memory limit`).toBeDefined();
      const podSecurity = deployment.spec.template.spec.securityContext ?? {};
      expect(podSecurity.runAsNonRoot, `${name}: runAsNonRoot`).toBe(true);
    }
  });

  it("sets only the environment variables the services read", () => {
    const configMaps = new Map(ofKind("ConfigMap").map((c) => [c.metadata.name, c]));
    for (const deployment of ofKind("Deployment")) {
      const name = deployment.metadata.name;
      const [container] = deployment.spec.template.spec.containers;
      const keys = Object.keys(envOf(container));
      for (const source of container.envFrom ?? []) {
        const configMap = configMaps.get(source.configMapRef?.name);
        expect(configMap, `${name}: envFrom ${source.configMapRef?.name}`).toBeDefined();
        keys.push(...Object.keys(configMap?.data ?? {}));
      }
      for (const key of keys) expect(allowedEnv(name), `${name} sets ${key}`).toContain(key);
      const env: Record<string, string | undefined> = Object.assign(
        {},
        ...(container.envFrom ?? []).map((s: Any) => configMaps.get(s.configMapRef?.name)?.data),
        envOf(container),
      );
      expect(String(env.NATS_URL), `${name}: NATS_URL`).toMatch(
        /^tls:\/\/[^,\s]+(,tls:\/\/[^,\s]+)*$/,
      );
      for (const host of natsHosts(String(env.NATS_URL))) {
        expect(certificateNames(host), `${name}: the certificate names ${host}`).toBe(true);
      }
      if (env.OTEL_EXPORTER_OTLP_PROTOCOL !== undefined) {
        expect(OTLP_PROTOCOLS).toContain(env.OTEL_EXPORTER_OTLP_PROTOCOL);
      }
      if (env.LOG_LEVEL !== undefined) expect(PINO_LEVELS).toContain(env.LOG_LEVEL);
    }
  });

  it("mounts each service's own NATS seed and the CA from a Secret, read-only, mode 0400", () => {
    for (const deployment of ofKind("Deployment")) {
      const name = deployment.metadata.name;
      const pod = deployment.spec.template.spec;
      const [container] = pod.containers;
      const env = envOf(container);
      expect(env.NATS_INBOX_PREFIX, name).toBe(`_INBOX_${name}`);
      for (const variable of ["NATS_NKEY_SEED", "NATS_CA"]) {
        const path = env[variable];
        expect(path, `${name}: ${variable}`).toMatch(/^\//);
        const mount = (container.volumeMounts ?? []).find(
          (m: Any) => dirname(path ?? "") === m.mountPath.replace(/\/$/, ""),
        );
        expect(mount, `${name}: ${variable} ${path} is on a mounted volume`).toBeDefined();
        expect(mount?.readOnly, `${name}: ${variable} read-only`).toBe(true);
        const volume = pod.volumes.find((v: Any) => v.name === mount?.name);
        expect(volume?.secret?.secretName, `${name}: ${variable} from its own Secret`).toBe(
          `handoff-nats-${name}`,
        );
        expect(volume?.secret?.defaultMode, `${name}: defaultMode 0400`).toBe(0o400);
      }
      expect(basename(env.NATS_NKEY_SEED ?? "")).toBe("seed");
      expect(basename(env.NATS_CA ?? "")).toBe("ca.pem");
      // 0400 files are root's: fsGroup makes them the pod's group's (0440) so uid 1000 reads them.
      expect(pod.securityContext?.fsGroup, `${name}: fsGroup`).toBe(
        pod.securityContext?.runAsGroup,
      );
      // Other identities' Secrets are not mounted here.
      const secretNames = pod.volumes
        .filter((v: Any) => v.secret)
        .map((v: Any) => v.secret.secretName);
      expect(secretNames, name).toEqual([`handoff-nats-${name}`]);
    }
  });

  it("takes the mesh key from a Secret, and mounts a config that signs with it", () => {
    const kustomization: Any = parse(read("deploy/k8s/kustomization.yaml"));
    const generated = new Map<string, string>(
      (kustomization.configMapGenerator ?? []).flatMap((generator: Any) =>
        (generator.files ?? []).map((file: string) => {
          const [key, source = key] = file.split("=");
          return [`${generator.name}/${basename(key ?? "")}`, source];
        }),
      ),
    );
    const common = ofKind("ConfigMap").find((c) => c.metadata.name === "handoff-common");
    for (const deployment of ofKind("Deployment")) {
      const name = deployment.metadata.name;
      const pod = deployment.spec.template.spec;
      const [container] = pod.containers;
      const key = (container.env ?? []).find((e: Any) => e.name === MESH_KEY_ENV);
      expect(key?.value, `${name}: no key inline`).toBeUndefined();
      expect(key?.valueFrom?.secretKeyRef, name).toMatchObject({
        name: "handoff-mesh-key",
        key: MESH_KEY_ENV,
      });
      const configPath = String(envOf(container).HANDOFF_CONFIG ?? common?.data.HANDOFF_CONFIG);
      const mount = (container.volumeMounts ?? []).find(
        (m: Any) => dirname(configPath) === m.mountPath.replace(/\/$/, ""),
      );
      expect(mount?.readOnly, `${name}: HANDOFF_CONFIG ${configPath} is mounted read-only`).toBe(
        true,
      );
      const volume = pod.volumes.find((v: Any) => v.name === mount?.name);
      const source = generated.get(`${volume?.configMap?.name}/${basename(configPath)}`);
      expect(
        source,
        `${name}: ${configPath} comes from the kustomization's configMapGenerator`,
      ).toBeDefined();
      const file = `deploy/k8s/${source}`;
      const config = parseConfig(read(file), file);
      expect(config.mesh.signing_key_env, file).toBe(MESH_KEY_ENV);
      for (const variable of config.mesh.verify_key_envs) {
        expect(
          (container.env ?? []).find((e: Any) => e.name === variable)?.valueFrom?.secretKeyRef,
        ).toBeDefined();
      }
    }
  });

  it("holds no Secret and reads no file outside deploy/k8s", () => {
    expect(ofKind("Secret")).toEqual([]);
    const kustomization: Any = parse(read("deploy/k8s/kustomization.yaml"));
    expect(kustomization.secretGenerator, "Secrets are made with kubectl").toBeUndefined();
    for (const generator of kustomization.configMapGenerator ?? []) {
      for (const entry of [...(generator.files ?? []), ...(generator.envs ?? [])]) {
        const source = String(entry).split("=").at(-1) ?? "";
        expect(source, "inside deploy/k8s").not.toMatch(/^(\/|\.\.)/);
        expect(existsSync(join(k8sDir, source)), `${source} is in the repository`).toBe(true);
      }
    }
  });

  it("probes the gateway on 8080 and the workers on HEALTH_PORT", () => {
    for (const deployment of ofKind("Deployment")) {
      const name = deployment.metadata.name;
      const [container] = deployment.spec.template.spec.containers;
      const env = envOf(container);
      const expected = name === GATEWAY ? Number(env.PORT ?? 8080) : Number(env.HEALTH_PORT);
      if (name === GATEWAY) expect(expected).toBe(8080);
      else expect(expected, `${name}: HEALTH_PORT`).toBe(9090);
      for (const [probe, path] of [
        ["livenessProbe", "/healthz"],
        ["readinessProbe", "/readyz"],
      ] as const) {
        const get = container[probe]?.httpGet;
        expect(get?.path, `${name}: ${probe}`).toBe(path);
        expect(containerPort(container, get?.port), `${name}: ${probe} port`).toBe(expected);
      }
    }
  });

  it("exposes the gateway through a Service that selects its pods", () => {
    const [deployment] = ofKind("Deployment").filter((d) => d.metadata.name === GATEWAY);
    const services = ofKind("Service").filter((s) => s.metadata.name === GATEWAY);
    expect(services).toHaveLength(1);
    const [service] = services;
    const labels = deployment.spec.template.metadata.labels;
    expect(labels).toMatchObject(service.spec.selector);
    const [container] = deployment.spec.template.spec.containers;
    for (const port of service.spec.ports) {
      expect(containerPort(container, port.targetPort ?? port.port)).toBe(8080);
    }
  });

  it("scales the gateway on CPU with a HorizontalPodAutoscaler", () => {
    const hpas = ofKind("HorizontalPodAutoscaler");
    expect(hpas).toHaveLength(1);
    const [hpa] = hpas;
    expect(hpa.spec.scaleTargetRef).toMatchObject({ kind: "Deployment", name: GATEWAY });
    expect(hpa.spec.minReplicas).toBeLessThanOrEqual(hpa.spec.maxReplicas);
    expect(
      hpa.spec.metrics.some((m: Any) => m.type === "Resource" && m.resource?.name === "cpu"),
    ).toBe(true);
  });

  it("scales each worker with a KEDA nats-jetstream trigger on its own consumer", () => {
    const values: Any = parse(read("deploy/nats/values.yaml"));
    const scaled = new Map<string, Any>();
    for (const scaledObject of ofKind("ScaledObject")) {
      const target = scaledObject.spec.scaleTargetRef;
      expect(target.kind ?? "Deployment").toBe("Deployment");
      const triggers = scaledObject.spec.triggers.filter((t: Any) => t.type === "nats-jetstream");
      expect(triggers.length, scaledObject.metadata.name).toBeGreaterThan(0);
      for (const { metadata } of triggers) {
        expect(metadata.stream).toBe(JOBS_STREAM);
        // The stream lives in the HANDOFF account of handoff-auth.conf, not in $G.
        expect(metadata.account).toBe("HANDOFF");
        expect(WORKERS).toContain(metadata.consumer);
        expect(target.name, "the trigger's consumer is the target's stage").toBe(metadata.consumer);
        expect(Number(metadata.lagThreshold)).toBeGreaterThan(0);
        const port = String(metadata.natsServerMonitoringEndpoint).split(":").at(-1);
        expect(Number(port), "NATS monitoring port").toBe(values.config.monitor.port);
      }
      expect(scaledObject.spec.minReplicaCount ?? 0).toBeLessThanOrEqual(
        scaledObject.spec.maxReplicaCount ?? 100,
      );
      scaled.set(target.name, scaledObject);
    }
    expect([...scaled.keys()].sort()).toEqual([...WORKERS].sort());
    const deployments = new Set(ofKind("Deployment").map((d) => d.metadata.name));
    for (const worker of WORKERS) expect(deployments, worker).toContain(worker);
  });

  it("leaves the replica count of autoscaled Deployments to the autoscaler", () => {
    const autoscaled = new Set([
      ...ofKind("HorizontalPodAutoscaler").map((h) => h.spec.scaleTargetRef.name),
      ...ofKind("ScaledObject").map((s) => s.spec.scaleTargetRef.name),
    ]);
    for (const deployment of ofKind("Deployment")) {
      if (autoscaled.has(deployment.metadata.name)) {
        expect(deployment.spec.replicas, deployment.metadata.name).toBeUndefined();
      }
    }
  });
});

describe("secrets", () => {
  it("no secret is written into the compose file, the manifests, the NATS config or the docs", () => {
    const files = [
      "docker-compose.yml",
      "Dockerfile",
      ...filesUnder("deploy/k8s"),
      ...filesUnder("deploy/nats"),
      ...filesUnder("deploy/config"),
      "deploy/README.md",
    ];
    for (const file of files) {
      const text = read(file);
      for (const [what, pattern] of SECRET_PATTERNS) {
        expect(pattern.test(text), `${file} holds ${what}`).toBe(false);
      }
    }
  });

  it("deploy/secrets stays out of git and out of the Docker build context", () => {
    const entries = (file: string) =>
      read(file)
        .split("\n")
        .map((line) => line.trim().replace(/^\/|\/$/g, ""));
    expect(entries(".gitignore")).toContain("deploy/secrets");
    expect(entries(".dockerignore")).toContain("deploy/secrets");
  });
});

describe("names shared with the code", () => {
  it("uses the stream and stage names of @handoff/contracts", () => {
    expect(Streams.jobs).toBe(JOBS_STREAM);
    expect([...Stages].sort()).toEqual([...WORKERS].sort());
  });
});
