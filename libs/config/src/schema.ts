import { z } from "zod";

/**
 * The Handoff config file (`HANDOFF_CONFIG`, YAML or JSON): which model serves each tier, how
 * requests are routed, and the limits every service enforces. Swapping a vendor is an edit here.
 */

/**
 * List price of a model, in US dollars per million tokens. A call's prompt tokens are priced in
 * three parts: those the provider read from its prompt cache at `cached_input_per_mtok`, those
 * it wrote to it at `cache_write_per_mtok`, the rest at `input_per_mtok`. Either cache price left
 * out is `input_per_mtok`: no discount, no surcharge, unless configured.
 */
export const Price = z.object({
  input_per_mtok: z.number().nonnegative(),
  output_per_mtok: z.number().nonnegative(),
  /** Prompt tokens read from the provider's cache (OpenAI: half the input price or less; Anthropic: a tenth). */
  cached_input_per_mtok: z.number().nonnegative().optional(),
  /** Prompt tokens written to the provider's cache (Anthropic, 5-minute entries: 1.25 times the input price). */
  cache_write_per_mtok: z.number().nonnegative().optional(),
});
export type Price = z.infer<typeof Price>;

/**
 * Which parts of a prompt an `anthropic` deployment marks as a cached prefix, each with one
 * `cache_control: {type: "ephemeral"}` breakpoint (Anthropic allows four; these are at most three).
 */
export const PromptCache = z
  .object({
    /** The tool definitions: a breakpoint on the last one. */
    tools: z.boolean().default(true),
    /** The system prompt (with the tools before it): sent as a text block with a breakpoint. */
    system: z.boolean().default(true),
    /**
     * The conversation up to its last user turn: a breakpoint on the last block before that
     * turn, so the next request of the same conversation reads the history from the cache. Off by
     * default: a conversation that never comes back pays the cache write's surcharge for nothing.
     */
    conversation: z.boolean().default(false),
  })
  .strict();
export type PromptCache = z.infer<typeof PromptCache>;

/** What an `anthropic` deployment marks when its config says nothing: the tools and the system prompt. */
export const DEFAULT_PROMPT_CACHE: PromptCache = { tools: true, system: true, conversation: false };

/**
 * The parts of the prompt a deployment marks for Anthropic's prompt cache: `prompt_cache: false`
 * none, `true` or absent the defaults, an object the parts it names over the defaults.
 */
export function promptCacheOf(deployment: Pick<Deployment, "prompt_cache">): PromptCache {
  const setting = deployment.prompt_cache;
  if (setting === false) return { tools: false, system: false, conversation: false };
  if (setting === true || setting === undefined) return { ...DEFAULT_PROMPT_CACHE };
  return setting;
}

/** One model behind a tier. A tier lists several; the first healthy one answers. */
export const Deployment = z.object({
  /** Stable name for logs and metrics; defaults to `<provider>:<model>`. */
  id: z.string().min(1).optional(),
  provider: z.enum(["sim", "openai-compatible", "anthropic"]),
  model: z.string().min(1),
  /** API base URL, e.g. `https://api.openai.com/v1` or `http://localhost:11434/v1` for Ollama. */
  base_url: z.url().optional(),
  /** Name of the environment variable holding the API key (the key itself never goes in the file). */
  api_key_env: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be an environment variable name")
    .optional(),
  /** Extra HTTP headers sent with every request (e.g. Azure's `api-version` routing). */
  headers: z.record(z.string(), z.string()).default({}),
  price: Price.default({ input_per_mtok: 0, output_per_mtok: 0 }),
  /** Per-attempt timeout of one model call. */
  timeout_ms: z.number().int().positive().default(60_000),
  /** Attempts on this deployment (the first try and its retries) before falling back. */
  retries: z.number().int().min(1).max(5).default(2),
  /**
   * Deployment ids (of any tier) to try when this one fails, after the rest of its own tier.
   * Cycles are allowed: the attempt cap ends them.
   */
  fallbacks: z.array(z.string().min(1)).default([]),
  /** Output tokens assumed for a call that sets no `max_tokens`, when checking a budget. */
  max_output_tokens: z.number().int().positive().default(1_024),
  /** `sim` only: how long the simulated model takes to answer. */
  latency_ms: z.number().int().nonnegative().default(0),
  /**
   * `anthropic` only: mark the prompt's stable prefix for Anthropic's prompt cache with
   * `cache_control`. Absent or `true`: the tools and the system prompt; `false`: nothing; or the
   * parts, e.g. `{ conversation: true }` to mark the conversation up to its last user turn too.
   * OpenAI and the servers that copy it cache prefixes without being asked: nothing to set.
   */
  prompt_cache: z.union([z.boolean(), PromptCache]).optional(),
});
export type Deployment = z.infer<typeof Deployment>;

/** How a deployment is named in logs, metrics, spans and `fallbacks`. */
export function deploymentId(deployment: Pick<Deployment, "id" | "provider" | "model">): string {
  return deployment.id ?? `${deployment.provider}:${deployment.model}`;
}

/** The model names every gateway serves: `handoff` (classifier-routed) and one per pinned tier. */
export const ROUTED_MODELS = ["handoff", "handoff/light", "handoff/mid", "handoff/heavy"] as const;

/**
 * The model names a config serves, aliases aside: {@link ROUTED_MODELS} and every deployment id,
 * in the order `GET /v1/models` lists them.
 */
export function servedModels(config: {
  tiers: Record<
    "light" | "mid" | "heavy",
    ReadonlyArray<Pick<Deployment, "id" | "provider" | "model">>
  >;
}): string[] {
  const ids = [config.tiers.light, config.tiers.mid, config.tiers.heavy].flat().map(deploymentId);
  return [...new Set<string>([...ROUTED_MODELS, ...ids])];
}

const TierDeployments = z.array(Deployment).min(1, "a tier needs at least one deployment");

/** Tuning of the `cascade` strategy. */
export const CascadeSettings = z.object({
  /**
   * Ask the light model to end its answer with a "Confidence: N%" line, which the verifier reads
   * and the client never sees.
   */
  self_confidence: z.boolean().default(true),
  /** Ask the provider for token log-probabilities (OpenAI-compatible servers return them). */
  logprobs: z.boolean().default(true),
  /** Pre-route scores at or above this go straight to the heavy tier, skipping the light answer. */
  direct_heavy_above: z.number().min(0).max(1).optional(),
  /** Log-odds per unit of token uncertainty (1 − e^mean logprob) above its reference; a prior. */
  logprob_weight: z.number().optional(),
  /** Log-odds per unit of self-reported confidence above its reference (negative: surer, lower). */
  self_confidence_weight: z.number().optional(),
});
export type CascadeSettings = z.infer<typeof CascadeSettings>;

/** The routing strategy names, in the order the docs list them. */
export const RoutingStrategies = ["rules", "learned", "llm", "cascade"] as const;

/**
 * How the classifier routes. Every strategy scores a request in [0, 1] (how much it needs the
 * heavy tier); the score is compared with `threshold`.
 */
export const Routing = z
  .object({
    strategy: z.enum(RoutingStrategies).default("learned"),
    /**
     * Scores at or above this go to the heavy tier. Default: the strategy's own (the model file's
     * calibrated threshold for `learned` and `cascade`, 0.5 for `rules` and `llm`). Set it with
     * `handoff router calibrate --strong-share <share>`.
     */
    threshold: z.number().min(0).max(1).optional(),
    /** Scores at or above this (and below `threshold`) go to the mid tier. Unset: no mid band. */
    mid_threshold: z.number().min(0).max(1).optional(),
    /**
     * Router model file for `learned` and `cascade` (from `handoff router train`); a relative path
     * is read from the config file's folder. Default: the model shipped with Handoff.
     */
    model: z.string().min(1).optional(),
    /**
     * Keep each job's request messages on its record, so `handoff jobs export` can replay your
     * traffic through any strategy. Records live as long as the job bucket keeps them (24 hours).
     */
    record_inputs: z.boolean().default(false),
    /** The strategy that decides when the `llm` strategy's light model fails or answers badly. */
    llm_fallback: z.enum(["rules", "learned"]).default("rules"),
    cascade: CascadeSettings.default(CascadeSettings.parse({})),
  })
  .superRefine((routing, ctx) => {
    if (
      routing.mid_threshold !== undefined &&
      routing.threshold !== undefined &&
      routing.mid_threshold >= routing.threshold
    ) {
      ctx.addIssue({
        code: "custom",
        path: ["mid_threshold"],
        message: `must be below threshold (${routing.threshold}): the mid band lies under the heavy one`,
      });
    }
  });
export type Routing = z.infer<typeof Routing>;

export const Limits = z.object({
  /** Model turns the tool-executor takes before it gives up and escalates. */
  max_tool_steps: z.number().int().min(1).max(32).default(6),
  /** Stage visits per job: a guard against a plan that loops. */
  max_hops: z.number().int().min(1).max(32).default(8),
  /** How long the gateway waits for an answer before answering 504. */
  request_timeout_ms: z.number().int().positive().default(60_000),
  /** Largest request body the gateway accepts (413 above). */
  max_body_bytes: z.number().int().positive().default(1_048_576),
  /** JetStream deliveries of one job to one stage before it is dead-lettered. */
  max_deliveries: z.number().int().min(1).max(100).default(5),
  /** How long a stage may hold a job without a heartbeat before JetStream redelivers it. */
  ack_wait_ms: z.number().int().min(1_000).default(30_000),
  /**
   * The lean handoff: the prompt tokens (estimated, about four characters a token) a hop may
   * forward to a tier's model. The client's system messages and its last user turn always go;
   * older turns beyond the budget are compacted (`handoff_compaction`), and tool outputs the
   * heavy tier's context carries are cut to what the draft used. A tier left out gets
   * everything, as before.
   */
  handoff_tokens: z
    .object({
      light: z.number().int().min(256).optional(),
      mid: z.number().int().min(256).optional(),
      heavy: z.number().int().min(256).optional(),
    })
    .strict()
    .default({}),
  /**
   * How turns beyond a handoff budget are compacted: `select` keeps the old turns that share
   * terms with the last user turn and puts one marker in place of the rest (no model call);
   * `summarize` replaces them with a light-tier summary, falling back to `select` when the call
   * fails or the job's budget forbids it.
   */
  handoff_compaction: z.enum(["select", "summarize"]).default("select"),
});
export type Limits = z.infer<typeof Limits>;

/** No configuration may allow more attempts than this for one model call. */
export const HARD_MAX_ATTEMPTS = 10;

/** Retries, fallbacks and cooldowns: one policy for every model call. */
export const Resilience = z.object({
  /** Attempts per model call across retries and fallbacks: a hard cap, whatever else is set. */
  max_attempts: z.number().int().min(1).max(HARD_MAX_ATTEMPTS).default(4),
  /** First retry delay; it doubles per retry, with full jitter. */
  backoff_base_ms: z.number().int().min(0).default(250),
  backoff_max_ms: z.number().int().min(0).default(8_000),
  /** A `Retry-After` longer than this moves on to the next deployment instead of waiting. */
  max_retry_after_ms: z.number().int().min(0).default(20_000),
  /** Consecutive failures that take a deployment out of rotation (a circuit breaker). */
  cooldown_after_failures: z.number().int().min(1).default(3),
  /** How long a deployment stays out of rotation. */
  cooldown_ms: z.number().int().min(0).default(30_000),
});
export type Resilience = z.infer<typeof Resilience>;

export const JetStreamSettings = z.object({
  /** Copies of each stream and bucket across a NATS cluster: 3 in production, 1 on one server. */
  replicas: z.number().int().min(1).max(5).default(1),
});

const CACHE_TTL_MIN_MS = 1_000;
const CACHE_TTL_MAX_MS = 30 * 24 * 60 * 60 * 1_000;

/** One cached tier: how long its answers are kept. */
export const CacheTier = z
  .object({
    /**
     * How long an answer is kept (the max age of its KV bucket): at least 1 s (NATS expires
     * entries at about a second's granularity), at most 30 days.
     */
    ttl_ms: z
      .number({ error: "ttl_ms must be a number of milliseconds" })
      .int("ttl_ms must be a whole number of milliseconds")
      .min(
        CACHE_TTL_MIN_MS,
        `ttl_ms must be at least ${CACHE_TTL_MIN_MS} (1 s): NATS expires entries at about a second's granularity`,
      )
      .max(CACHE_TTL_MAX_MS, `ttl_ms must be at most ${CACHE_TTL_MAX_MS} (30 days)`),
  })
  .strict();
export type CacheTier = z.infer<typeof CacheTier>;

/**
 * The exact response cache: per tier, answers kept in JetStream KV (`handoff-cache-<tier>`),
 * keyed by the tenant and a hash of everything that determines the answer. A tier left out is
 * not cached; none is by default.
 */
export const CacheSettings = z.object({
  tiers: z
    .object({
      light: CacheTier.optional(),
      mid: CacheTier.optional(),
      heavy: CacheTier.optional(),
    })
    .strict()
    .default({}),
  /**
   * Cache requests that sample (temperature above 0) too. Off: only requests at temperature 0
   * (or none given) are cached, unless the request asks with `"handoff": {"cache": true}`.
   */
  sampled: z.boolean().default(false),
});
export type CacheSettings = z.infer<typeof CacheSettings>;

/** An environment variable's name: where a secret lives, so the file never holds it. */
const EnvVarName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be an environment variable name");

/**
 * A tool name, or a glob of names (`*` any run of characters, `?` one), as the tool allowlists
 * take them: `calculator`, `docs__*`, `*`.
 */
export const ToolPattern = z
  .string()
  .regex(
    /^[A-Za-z0-9_*?-]{1,64}$/,
    "must be a tool name or a glob of one ('*' and '?' as wildcards)",
  );

/**
 * A Model Context Protocol server the tool-executor mounts: a command it starts and talks to
 * over stdio, or a streamable HTTP URL. Its tools are offered as `<name>__<tool>`.
 */
export const McpServerSettings = z
  .object({
    /** Namespaces the server's tools: a tool `search` of server `docs` is offered as `docs__search`. */
    name: z
      .string()
      .regex(
        /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/,
        "must be lowercase letters and digits, words joined by single '-', starting with a letter",
      )
      .max(24),
    /** stdio: the program to start (found on PATH), and its arguments. */
    command: z.string().min(1).optional(),
    args: z.array(z.string()).default([]),
    /** stdio: its working folder (relative paths are read from the config file's folder). */
    cwd: z.string().min(1).optional(),
    /**
     * stdio: variables set for it. It inherits only a minimal environment (PATH, HOME, ...), never
     * the tool-executor's own secrets; pass a secret by naming the variable that holds it in
     * `env_from`.
     */
    env: z.record(EnvVarName, z.string()).default({}),
    /** stdio: variables copied from the tool-executor's environment: `{ GITHUB_TOKEN: GH_TOKEN }`. */
    env_from: z.record(EnvVarName, EnvVarName).default({}),
    /** Streamable HTTP: the server's endpoint. */
    url: z.url({ protocol: /^https?$/ }).optional(),
    /** HTTP: headers whose values come from variables: `{ Authorization: DOCS_MCP_AUTH }`. */
    headers_env: z.record(z.string().regex(/^[A-Za-z0-9-]+$/), EnvVarName).default({}),
  })
  .superRefine((server, ctx) => {
    if ((server.command === undefined) === (server.url === undefined)) {
      ctx.addIssue({
        code: "custom",
        path: ["command"],
        message: "give either command (a stdio server) or url (a streamable HTTP server)",
      });
    }
  });
export type McpServerSettings = z.infer<typeof McpServerSettings>;

/**
 * The tools the mid tier may call: the built-ins, every tool service on NATS, and MCP servers,
 * behind allowlists per tier (here) and per API key (`gateway.api_keys[].tools`).
 */
export const ToolsSettings = z
  .object({
    /** The tool-executor serves the calculator and the clock as a NATS tool service. */
    builtin: z.boolean().default(true),
    /**
     * Per tier, the tools its model is offered and may call, by name or glob: `mid` for the tool
     * loop, `light` for the turns it makes on the light model when the job's budget cannot afford
     * the mid one. A tier left out may use every tool; an empty list, none.
     */
    allow: z
      .object({
        light: z.array(ToolPattern).optional(),
        mid: z.array(ToolPattern).optional(),
      })
      .strict()
      .default({}),
    /** The longest one tool call may take; the job's deadline cuts it shorter. */
    call_timeout_ms: z.number().int().min(100).max(600_000).default(30_000),
    /** Tool output beyond this many bytes (UTF-8) is cut, with a marker, before the model sees it. */
    max_output_bytes: z.number().int().min(256).max(1_048_576).default(16_384),
    /**
     * How often the tool-executor asks `$SRV.INFO` which tool services exist, besides the
     * announcements tool services send when they start and stop.
     */
    discovery_interval_ms: z.number().int().min(500).max(3_600_000).default(15_000),
    mcp: z.array(McpServerSettings).default([]),
  })
  .superRefine((tools, ctx) => {
    const seen = new Map<string, number>();
    tools.mcp.forEach((server, index) => {
      const at = seen.get(server.name);
      if (at === undefined) seen.set(server.name, index);
      else
        ctx.addIssue({
          code: "custom",
          path: ["mcp", index, "name"],
          message: `"${server.name}" is already the name of tools.mcp[${at}]`,
        });
    });
  });
export type ToolsSettings = z.infer<typeof ToolsSettings>;

/** One client of the gateway: a named API key and, optionally, its request rate. */
export const ApiKey = z.object({
  /** Who holds the key, as logs and spans show it (`handoff.api_key.name`). Never the key itself. */
  name: z
    .string()
    .regex(
      /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/,
      "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
    ),
  /** Name of the environment variable holding the key (the key itself never goes in the file). */
  key_env: EnvVarName,
  /**
   * Requests this key may make per minute, as a token bucket: up to this many at once, refilled
   * evenly over the minute. Counted by each gateway instance on its own, so N replicas allow up
   * to N times this rate. Absent: no limit.
   */
  requests_per_minute: z.number().int().positive().max(1_000_000).optional(),
  /**
   * What the key may do beyond its own jobs. `admin`: read every job, whichever key submitted it.
   * Without it a key reads only the jobs it submitted.
   */
  scopes: z.array(z.enum(["admin"])).default([]),
  /**
   * The tools this key's requests may use, by name or glob, within what the tier allows
   * (`tools.allow`). Absent: every tool the tier allows; an empty list: none.
   */
  tools: z.array(ToolPattern).optional(),
});
export type ApiKey = z.infer<typeof ApiKey>;

/**
 * The gateway's HTTP front door. With no `api_keys` the API is open, as behind a private network;
 * with any, every `/v1/*` request needs one of them (`Authorization: Bearer <key>` or `api-key`).
 */
export const GatewaySettings = z
  .object({
    api_keys: z.array(ApiKey).default([]),
    /**
     * Failed authentication (a missing or wrong key), counted per client address: after `max`
     * failures within `window_ms` of the first, the address gets `429` until that window ends,
     * even with a right key. `max_addresses` bounds the addresses tracked at once; past it the
     * oldest are forgotten first. Counted by each gateway instance on its own.
     */
    auth_failures: z
      .object({
        max: z.number().int().min(1).max(1_000_000).default(10),
        window_ms: z.number().int().min(1_000).max(86_400_000).default(60_000),
        max_addresses: z.number().int().min(1).max(10_000_000).default(10_000),
      })
      .default({ max: 10, window_ms: 60_000, max_addresses: 10_000 }),
    /**
     * How long an `Idempotency-Key` names its job: the same key from the same API key within this
     * window gets that job (or its answer) back instead of a second run. At most 24 h, as long as
     * job records are kept.
     */
    idempotency_window_ms: z.number().int().min(1_000).max(86_400_000).default(86_400_000),
    /**
     * Other names for the models the gateway serves, so clients written for another vendor work
     * unchanged: `gpt-4o-mini: handoff/light`. A request for a name that is neither served nor
     * aliased is a 404 `model_not_found`. Each alias must point at a served model: `handoff`,
     * `handoff/light`, `handoff/mid`, `handoff/heavy`, or a deployment id.
     */
    model_aliases: z.record(z.string().min(1).max(256), z.string()).default({}),
  })
  .superRefine((gateway, ctx) => {
    // A name identifies the caller in logs and owns a rate bucket; a variable is one key. Either
    // shared by two entries would make two callers indistinguishable.
    for (const field of ["name", "key_env"] as const) {
      const first = new Map<string, number>();
      gateway.api_keys.forEach((key, index) => {
        const at = first.get(key[field]);
        if (at === undefined) first.set(key[field], index);
        else
          ctx.addIssue({
            code: "custom",
            path: ["api_keys", index, field],
            message: `${field} "${key[field]}" is already used by gateway.api_keys[${at}]`,
          });
      });
    }
  });
export type GatewaySettings = z.infer<typeof GatewaySettings>;

/** TLS to the NATS server: a CA to trust, and a client certificate for servers that verify clients. */
export const NatsTls = z
  .object({
    /** PEM file of the CA that signed the server's certificate (else the system's CAs). */
    ca_file: z.string().min(1).optional(),
    /** PEM client certificate, with `key_file`, for a server with `verify: true`. */
    cert_file: z.string().min(1).optional(),
    key_file: z.string().min(1).optional(),
  })
  .superRefine((tls, ctx) => {
    if ((tls.cert_file === undefined) !== (tls.key_file === undefined)) {
      ctx.addIssue({
        code: "custom",
        path: [tls.cert_file === undefined ? "cert_file" : "key_file"],
        message: "a client certificate needs both cert_file and key_file",
      });
    }
  });
export type NatsTls = z.infer<typeof NatsTls>;

/**
 * How the services and the CLI connect to NATS. Every field has an environment variable that
 * overrides it (`NATS_URL`, `NATS_CREDS`, ...); secrets are named by file or variable, never
 * written here. Relative paths are read from the config file's folder.
 */
export const NatsSettings = z
  .object({
    /** Comma-separated server URLs; `tls://` requires TLS. */
    url: z.string().min(1).optional(),
    /** A creds file (user JWT and nkey seed), as `nsc` writes it. */
    creds_file: z.string().min(1).optional(),
    /** A file holding an nkey seed (`SU...`), for servers that list users by nkey. */
    nkey_seed_file: z.string().min(1).optional(),
    user: z.string().min(1).optional(),
    /** The variable holding `user`'s password. */
    password_env: EnvVarName.optional(),
    /** The variable holding an authorization token. */
    token_env: EnvVarName.optional(),
    tls: NatsTls.optional(),
    /**
     * Prefix of this connection's reply subjects (default `_INBOX`). Give each identity its own
     * (the shipped server config uses `_INBOX_<service>`) so no one else may subscribe to replies.
     */
    inbox_prefix: z
      .string()
      .regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/, "must be subject tokens without wildcards")
      .optional(),
  })
  .superRefine((nats, ctx) => {
    const methods = (["creds_file", "nkey_seed_file", "user", "token_env"] as const).filter(
      (field) => nats[field] !== undefined,
    );
    if (methods.length > 1) {
      ctx.addIssue({
        code: "custom",
        path: [methods[1] as string],
        message: `choose one way to authenticate: ${methods.join(" and ")} are both set`,
      });
    }
    if (nats.password_env !== undefined && nats.user === undefined) {
      ctx.addIssue({ code: "custom", path: ["password_env"], message: "needs `user`" });
    }
  });
export type NatsSettings = z.infer<typeof NatsSettings>;

/** Message authenticity inside the mesh. */
export const MeshSettings = z.object({
  /**
   * The variable holding the mesh signing key (at least 32 bytes of secret). When set, every
   * service signs what it publishes and accepts only what a key it knows signed.
   */
  signing_key_env: EnvVarName.optional(),
  /**
   * Variables holding keys that are still accepted but no longer used to sign: the old key during
   * a rotation (see the README's Security section).
   */
  verify_key_envs: z.array(EnvVarName).max(4).default([]),
});
export type MeshSettings = z.infer<typeof MeshSettings>;

export const HandoffConfig = z
  .object({
    tiers: z.object({
      light: TierDeployments,
      mid: TierDeployments,
      heavy: TierDeployments,
    }),
    routing: Routing.default(Routing.parse({})),
    limits: Limits.default(Limits.parse({})),
    resilience: Resilience.default(Resilience.parse({})),
    jetstream: JetStreamSettings.default({ replicas: 1 }),
    gateway: GatewaySettings.default(GatewaySettings.parse({})),
    nats: NatsSettings.default({}),
    mesh: MeshSettings.default({ verify_key_envs: [] }),
    tools: ToolsSettings.default(ToolsSettings.parse({})),
    cache: CacheSettings.default({ tiers: {}, sampled: false }),
  })
  .superRefine((config, ctx) => {
    // Deployment ids name fallbacks, breakers, spans and metrics. One deployment may serve
    // several tiers, but two different deployments may not share an id.
    const seen = new Map<string, { at: string; same: string }>();
    for (const [tier, list] of Object.entries(config.tiers)) {
      list.forEach((deployment, index) => {
        const id = deploymentId(deployment);
        const first = seen.get(id);
        const same = JSON.stringify(deployment);
        if (first && first.same !== same) {
          ctx.addIssue({
            code: "custom",
            path: ["tiers", tier, index, "id"],
            message: `deployment id "${id}" names a different deployment at ${first.at}; give one of them its own id`,
          });
        } else if (!first) seen.set(id, { at: `tiers.${tier}[${index}]`, same });
      });
    }
    // An alias names a served model, and is not itself one: it would hide the model it shadows.
    const served = new Set(servedModels(config));
    for (const [alias, target] of Object.entries(config.gateway.model_aliases)) {
      if (served.has(alias)) {
        ctx.addIssue({
          code: "custom",
          path: ["gateway", "model_aliases", alias],
          message: `"${alias}" is already a model the gateway serves; an alias needs a name of its own`,
        });
      } else if (!served.has(target)) {
        ctx.addIssue({
          code: "custom",
          path: ["gateway", "model_aliases", alias],
          message: `"${target}" is not a model the gateway serves (one of ${[...served].join(", ")})`,
        });
      }
    }
    for (const [tier, list] of Object.entries(config.tiers)) {
      list.forEach((deployment, index) => {
        if (deployment.prompt_cache !== undefined && deployment.provider !== "anthropic") {
          ctx.addIssue({
            code: "custom",
            path: ["tiers", tier, index, "prompt_cache"],
            message: `only anthropic deployments mark a prompt cache; ${deployment.provider === "openai-compatible" ? "OpenAI-compatible servers cache prompt prefixes on their own" : "the sim model has none"}`,
          });
        }
        deployment.fallbacks.forEach((target, at) => {
          if (!seen.has(target)) {
            ctx.addIssue({
              code: "custom",
              path: ["tiers", tier, index, "fallbacks", at],
              message: `no deployment has the id "${target}"`,
            });
          }
        });
      });
    }
  });
export type HandoffConfig = z.infer<typeof HandoffConfig>;
export type HandoffConfigInput = z.input<typeof HandoffConfig>;
