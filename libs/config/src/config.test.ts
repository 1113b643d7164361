import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { HandoffError } from "@handoff/contracts";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { simProfile } from "./defaults.js";
import { loadConfig, parseConfig } from "./load.js";
import { DEFAULT_PROMPT_CACHE, type Deployment, promptCacheOf } from "./schema.js";

const YAML = `
tiers:
  light:
    - provider: sim
      model: sim-light
  mid:
    - provider: openai-compatible
      model: gpt-4o-mini
      base_url: https://api.openai.com/v1
      api_key_env: OPENAI_API_KEY
      price: { input_per_mtok: 0.15, output_per_mtok: 0.6 }
      timeout_ms: 20000
  heavy:
    - id: claude
      provider: anthropic
      model: claude-sonnet
      api_key_env: ANTHROPIC_API_KEY
      headers:
        anthropic-beta: tools
limits:
  max_hops: 4
`;

const DEFAULT_LIMITS = {
  max_tool_steps: 6,
  max_hops: 8,
  request_timeout_ms: 60_000,
  max_body_bytes: 1_048_576,
  max_deliveries: 5,
  ack_wait_ms: 30_000,
  handoff_tokens: {},
  handoff_compaction: "select",
};

function tiers(overrides: Record<string, unknown> = {}) {
  const one = [{ provider: "sim", model: "sim-x" }];
  return { tiers: { light: one, mid: one, heavy: one, ...overrides } };
}

function configError(text: string, source: string): HandoffError {
  try {
    parseConfig(text, source);
  } catch (error) {
    if (error instanceof HandoffError) return error;
    throw error;
  }
  throw new Error("expected parseConfig to throw");
}

describe("parseConfig", () => {
  it("reads a YAML config with its deployments", () => {
    const config = parseConfig(YAML, "/etc/handoff/config.yaml");
    expect(config.tiers.mid).toEqual([
      {
        provider: "openai-compatible",
        model: "gpt-4o-mini",
        base_url: "https://api.openai.com/v1",
        api_key_env: "OPENAI_API_KEY",
        headers: {},
        price: { input_per_mtok: 0.15, output_per_mtok: 0.6 },
        timeout_ms: 20_000,
        retries: 2,
        fallbacks: [],
        max_output_tokens: 1_024,
        latency_ms: 0,
      },
    ]);
    expect(config.tiers.heavy[0]?.id).toBe("claude");
    expect(config.tiers.heavy[0]?.headers).toEqual({ "anthropic-beta": "tools" });
  });

  it("applies the defaults of limits, routing, price and timeout", () => {
    const config = parseConfig(YAML, "config.yml");
    expect(config.limits).toEqual({ ...DEFAULT_LIMITS, max_hops: 4 });
    expect(config.routing).toEqual({
      strategy: "learned",
      record_inputs: false,
      llm_fallback: "rules",
      cascade: { self_confidence: true, logprobs: true },
    });
    expect(config.tiers.light[0]).toEqual({
      provider: "sim",
      model: "sim-light",
      headers: {},
      price: { input_per_mtok: 0, output_per_mtok: 0 },
      timeout_ms: 60_000,
      retries: 2,
      fallbacks: [],
      max_output_tokens: 1_024,
      latency_ms: 0,
    });
  });

  it("uses every default limit when the section is missing", () => {
    const config = parseConfig(JSON.stringify(tiers()), "config.json");
    expect(config.limits).toEqual(DEFAULT_LIMITS);
  });

  it("reads the lean handoff's budgets and strategy, and rejects a tiny or unknown one", () => {
    const limits = {
      handoff_tokens: { heavy: 6_000, light: 2_000 },
      handoff_compaction: "summarize",
    };
    const config = parseConfig(JSON.stringify({ ...tiers(), limits }), "c.json");
    expect(config.limits).toMatchObject(limits);
    const error = configError(
      JSON.stringify({
        ...tiers(),
        limits: { handoff_tokens: { heavy: 10, huge: 1 }, handoff_compaction: "drop" },
      }),
      "c.json",
    );
    expect(error.issues?.map((i) => i.path).sort()).toEqual([
      "limits.handoff_compaction",
      "limits.handoff_tokens",
      "limits.handoff_tokens.heavy",
    ]);
  });

  it("defaults to one JetStream replica and rejects more than five", () => {
    expect(parseConfig(JSON.stringify(tiers()), "c.json").jetstream).toEqual({ replicas: 1 });
    const error = configError(JSON.stringify({ ...tiers(), jetstream: { replicas: 6 } }), "c.json");
    expect(error.issues?.map((i) => i.path)).toEqual(["jetstream.replicas"]);
  });

  it("caches no tier by default, and a tier only with a ttl_ms between 1 s and 30 days", () => {
    expect(parseConfig(JSON.stringify(tiers()), "c.json").cache).toEqual({
      tiers: {},
      sampled: false,
    });
    const cached = parseConfig(
      JSON.stringify({
        ...tiers(),
        cache: { tiers: { light: { ttl_ms: 60_000 } }, sampled: true },
      }),
      "c.json",
    );
    expect(cached.cache).toEqual({ tiers: { light: { ttl_ms: 60_000 } }, sampled: true });
    const error = configError(
      JSON.stringify({
        ...tiers(),
        cache: {
          tiers: {
            light: { ttl_ms: 500 },
            mid: { ttl_ms: 31 * 24 * 3_600_000 },
            heavy: { ttl_ms: 1.5e3 + 0.5 },
          },
        },
      }),
      "c.json",
    );
    expect(error.issues).toEqual([
      {
        path: "cache.tiers.light.ttl_ms",
        message:
          "ttl_ms must be at least 1000 (1 s): NATS expires entries at about a second's granularity",
      },
      { path: "cache.tiers.mid.ttl_ms", message: "ttl_ms must be at most 2592000000 (30 days)" },
      {
        path: "cache.tiers.heavy.ttl_ms",
        message: "ttl_ms must be a whole number of milliseconds",
      },
    ]);
    // A misspelt tier, or a tier without its ttl, is named rather than silently not cached.
    const typo = configError(
      JSON.stringify({ ...tiers(), cache: { tiers: { hevy: { ttl_ms: 60_000 }, light: {} } } }),
      "c.json",
    );
    expect(typo.issues?.map((i) => i.path).sort()).toEqual([
      "cache.tiers",
      "cache.tiers.light.ttl_ms",
    ]);
  });

  it("reads JSON when the file ends in .json", () => {
    const config = parseConfig(
      JSON.stringify({ ...tiers(), limits: { max_tool_steps: 3 } }),
      "/srv/handoff.json",
    );
    expect(config.tiers.light[0]?.model).toBe("sim-x");
    expect(config.limits.max_tool_steps).toBe(3);
  });

  it("names the file and the path of a missing model", () => {
    const text = JSON.stringify(tiers({ mid: [{ provider: "sim" }] }));
    const error = configError(text, "/etc/handoff/config.json");
    expect(error.code).toBe("HANDOFF_ERR_CONFIG");
    expect(error.retryable).toBe(false);
    expect(error.message.startsWith("/etc/handoff/config.json is invalid: ")).toBe(true);
    expect(error.message).toContain("tiers.mid[0].model: ");
    expect(error.issues?.map((i) => i.path)).toEqual(["tiers.mid[0].model"]);
  });

  it("rejects an unknown provider by its path", () => {
    const text = JSON.stringify(tiers({ heavy: [{ provider: "acme", model: "m" }] }));
    const error = configError(text, "c.json");
    expect(error.issues?.map((i) => i.path)).toEqual(["tiers.heavy[0].provider"]);
    expect(error.message).toContain("tiers.heavy[0].provider: ");
  });

  it("rejects an api_key_env that is not a variable name", () => {
    const text = JSON.stringify(
      tiers({ light: [{ provider: "openai-compatible", model: "m", api_key_env: "sk-abc 123" }] }),
    );
    const error = configError(text, "c.json");
    expect(error.issues).toEqual([
      { path: "tiers.light[0].api_key_env", message: "must be an environment variable name" },
    ]);
  });

  it("rejects an empty tier", () => {
    const error = configError(JSON.stringify(tiers({ heavy: [] })), "c.json");
    expect(error.issues).toEqual([
      { path: "tiers.heavy", message: "a tier needs at least one deployment" },
    ]);
  });

  it("rejects out-of-range limits", () => {
    const text = JSON.stringify({ ...tiers(), limits: { max_tool_steps: 0, ack_wait_ms: 10 } });
    const error = configError(text, "c.json");
    expect(error.issues?.map((i) => i.path).sort()).toEqual([
      "limits.ack_wait_ms",
      "limits.max_tool_steps",
    ]);
  });

  it("reports YAML that does not parse, naming the file, the line and the column", () => {
    const error = configError("tiers: [unclosed", "/etc/handoff/broken.yaml");
    expect(error.code).toBe("HANDOFF_ERR_CONFIG");
    expect(error.message).toMatch(
      /^\/etc\/handoff\/broken\.yaml: line 1, column \d+: not valid YAML: \S/,
    );
    // The parser's error quotes the source: it is not kept.
    expect(error.cause).toBeUndefined();
  });

  it("reports JSON that does not parse, naming the file, the line and the column", () => {
    const error = configError("{ not json", "/etc/handoff/broken.json");
    expect(error.message).toBe(
      "/etc/handoff/broken.json: line 1, column 3: not valid JSON: expected a property name in double quotes",
    );
    expect(error.cause).toBeUndefined();
  });

  it("rejects an empty document at the root", () => {
    const error = configError("", "empty.yaml");
    expect(error.issues?.map((i) => i.path)).toEqual(["(root)"]);
  });
});

describe("simProfile", () => {
  it("serves every tier with a priced sim model", () => {
    expect(simProfile.tiers.light.map((d) => [d.provider, d.model])).toEqual([
      ["sim", "sim-light"],
    ]);
    expect(simProfile.tiers.mid.map((d) => [d.provider, d.model])).toEqual([["sim", "sim-mid"]]);
    expect(simProfile.tiers.heavy.map((d) => [d.provider, d.model])).toEqual([
      ["sim", "sim-heavy"],
    ]);
    expect(simProfile.tiers.heavy[0]?.price).toEqual({ input_per_mtok: 3, output_per_mtok: 15 });
    expect(simProfile.limits).toEqual(DEFAULT_LIMITS);
  });
});

describe("loadConfig", () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "handoff-config-"));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("returns the sim profile when HANDOFF_CONFIG is not set", async () => {
    const loaded = await loadConfig({});
    expect(loaded.source).toBe("builtin:sim");
    expect(loaded.config).toBe(simProfile);
  });

  it("treats a blank HANDOFF_CONFIG as not set", async () => {
    expect((await loadConfig({ HANDOFF_CONFIG: "   " })).source).toBe("builtin:sim");
  });

  it("reads the file HANDOFF_CONFIG points at", async () => {
    const path = join(dir, "handoff.yaml");
    await writeFile(path, YAML);
    const loaded = await loadConfig({ HANDOFF_CONFIG: path });
    expect(loaded.source).toBe(path);
    expect(loaded.config.tiers.mid[0]?.model).toBe("gpt-4o-mini");
    expect(loaded.config.limits.max_hops).toBe(4);
  });

  it("reports the absolute path of a relative HANDOFF_CONFIG", async () => {
    const path = join(dir, "relative.json");
    await writeFile(path, JSON.stringify(tiers()));
    const loaded = await loadConfig({ HANDOFF_CONFIG: relative(process.cwd(), path) });
    expect(relative(process.cwd(), path).startsWith("/")).toBe(false);
    expect(loaded.source).toBe(resolve(path));
  });

  it("names the file in validation errors", async () => {
    const path = join(dir, "invalid.json");
    await writeFile(path, JSON.stringify(tiers({ light: [{ provider: "sim" }] })));
    await expect(loadConfig({ HANDOFF_CONFIG: path })).rejects.toThrow(
      `${path} is invalid: tiers.light[0].model: `,
    );
  });

  it("errors naming the path of a missing file", async () => {
    const path = join(dir, "does-not-exist.yaml");
    const promise = loadConfig({ HANDOFF_CONFIG: path });
    await expect(promise).rejects.toBeInstanceOf(HandoffError);
    await expect(promise).rejects.toMatchObject({ code: "HANDOFF_ERR_CONFIG", retryable: false });
    await expect(promise).rejects.toThrow(
      `HANDOFF_CONFIG points at ${path}, which cannot be read: `,
    );
  });
});

describe("parseConfig error wording", () => {
  it("calls a broken .JSON file JSON, whatever the case of its extension", () => {
    expect(() => parseConfig("{", "/x/config.JSON")).toThrow(
      "/x/config.JSON: line 1, column 2: not valid JSON: unexpected end of input",
    );
  });
});

describe("resilience settings and deployment ids", () => {
  it("defaults the resilience policy and caps attempts at the hard maximum", () => {
    const config = parseConfig(JSON.stringify(tiers()), "c.json");
    expect(config.resilience).toEqual({
      max_attempts: 4,
      backoff_base_ms: 250,
      backoff_max_ms: 8_000,
      max_retry_after_ms: 20_000,
      cooldown_after_failures: 3,
      cooldown_ms: 30_000,
    });
    const error = configError(
      JSON.stringify({ ...tiers(), resilience: { max_attempts: 11 } }),
      "c.json",
    );
    expect(error.issues?.map((i) => i.path)).toEqual(["resilience.max_attempts"]);
  });

  it("lets one deployment serve two tiers, but not two deployments share an id", () => {
    const same = { provider: "sim", model: "shared" };
    expect(() =>
      parseConfig(
        JSON.stringify({ tiers: { light: [same], mid: [same], heavy: [same] } }),
        "c.json",
      ),
    ).not.toThrow();
    const error = configError(
      JSON.stringify({
        tiers: { light: [same], mid: [{ ...same, timeout_ms: 5 }], heavy: [same] },
      }),
      "c.json",
    );
    expect(error.issues?.map((i) => i.path)).toEqual(["tiers.mid[0].id"]);
    expect(error.message).toContain("names a different deployment at tiers.light[0]");
  });

  it("rejects a fallback to an id no deployment has", () => {
    const error = configError(
      JSON.stringify({
        tiers: {
          light: [{ provider: "sim", model: "a", fallbacks: ["nowhere"] }],
          mid: [{ provider: "sim", model: "b" }],
          heavy: [{ provider: "sim", model: "c" }],
        },
      }),
      "c.json",
    );
    expect(error.issues).toEqual([
      { path: "tiers.light[0].fallbacks[0]", message: 'no deployment has the id "nowhere"' },
    ]);
  });
});

describe("prompt-cache prices and the Anthropic prompt cache", () => {
  const claude = (extra: Record<string, unknown> = {}) => ({
    provider: "anthropic",
    model: "claude-sonnet-4-5",
    price: { input_per_mtok: 3, output_per_mtok: 15 },
    ...extra,
  });
  const config = (heavy: Record<string, unknown>, mid: Record<string, unknown> = claude()) =>
    parseConfig(
      JSON.stringify({ tiers: { light: [mid], mid: [mid], heavy: [{ id: "h", ...heavy }] } }),
      "c.json",
    );

  it("reads the cached-input and cache-write prices, absent unless given", () => {
    const price = {
      input_per_mtok: 3,
      output_per_mtok: 15,
      cached_input_per_mtok: 0.3,
      cache_write_per_mtok: 3.75,
    };
    expect(config(claude({ price })).tiers.heavy[0]?.price).toEqual(price);
    expect(config(claude()).tiers.heavy[0]?.price).toEqual({
      input_per_mtok: 3,
      output_per_mtok: 15,
    });
    const error = configError(
      JSON.stringify({
        tiers: {
          light: [claude()],
          mid: [claude()],
          heavy: [
            claude({
              id: "h",
              price: { input_per_mtok: 3, output_per_mtok: 15, cached_input_per_mtok: -1 },
            }),
          ],
        },
      }),
      "c.json",
    );
    expect(error.issues?.map((i) => i.path)).toEqual([
      "tiers.heavy[0].price.cached_input_per_mtok",
    ]);
  });

  it("marks the tools and the system prompt by default; false marks nothing; an object the parts it names", () => {
    const of = (heavy: Record<string, unknown>) =>
      promptCacheOf(config(heavy).tiers.heavy[0] as Deployment);
    expect(of(claude())).toEqual({ tools: true, system: true, conversation: false });
    expect(of(claude({ prompt_cache: true }))).toEqual(DEFAULT_PROMPT_CACHE);
    expect(of(claude({ prompt_cache: false }))).toEqual({
      tools: false,
      system: false,
      conversation: false,
    });
    expect(of(claude({ prompt_cache: { conversation: true } }))).toEqual({
      tools: true,
      system: true,
      conversation: true,
    });
    expect(of(claude({ prompt_cache: { system: false } }))).toEqual({
      tools: true,
      system: false,
      conversation: false,
    });
  });

  it("refuses prompt_cache on a deployment that is not Anthropic's, and unknown parts", () => {
    const openai = { provider: "openai-compatible", model: "gpt-4o", prompt_cache: true };
    const error = configError(
      JSON.stringify({ tiers: { light: [claude()], mid: [openai], heavy: [claude()] } }),
      "c.json",
    );
    expect(error.issues).toEqual([
      {
        path: "tiers.mid[0].prompt_cache",
        message:
          "only anthropic deployments mark a prompt cache; OpenAI-compatible servers cache prompt prefixes on their own",
      },
    ]);
    const unknown = configError(
      JSON.stringify({
        tiers: {
          light: [claude()],
          mid: [claude()],
          heavy: [claude({ id: "h", prompt_cache: { history: true } })],
        },
      }),
      "c.json",
    );
    expect(unknown.issues?.[0]?.path).toMatch(/^tiers\.heavy\[0\]\.prompt_cache/);
  });
});

describe("config errors never quote the file", () => {
  // A key pasted into the file where it does not belong: no error may repeat it.
  const CANARY = "sk-canary-7f3a9c2e1b4d";

  /** The error's message, and everything else a terminal or a log could show of it. */
  function shown(error: HandoffError): string {
    return [
      error.message,
      error.stack ?? "",
      JSON.stringify(error),
      String(error.cause ?? ""),
    ].join("\n");
  }

  it.each([
    ["an unclosed flow sequence", `tiers:\n  light: [{ provider: sim, model: ${CANARY}\n`, 3],
    ["a tab in the indentation", `tiers:\n\tlight: ${CANARY}\n`, 2],
    ["a bad escape", `tiers:\n  light:\n    - model: "${CANARY}\\q"\n`, 3],
    ["an unknown tag", `tiers:\n  light: !${CANARY} x\n  mid: [a\n`, 4],
    ["a duplicate key", `gateway: 1\nkey: ${CANARY}\ngateway: 2\n`, 3],
    ["an implicit key over two lines", `tiers:\n  "${CANARY}\n  ": 1\n`, 2],
  ])("YAML with %s: file, line and column, no source", (_, text, line) => {
    const error = configError(text, "/etc/handoff/secret.yaml");
    expect(error.code).toBe("HANDOFF_ERR_CONFIG");
    expect(error.message).toMatch(
      new RegExp(`^/etc/handoff/secret\\.yaml: line ${line}, column \\d+: not valid YAML: \\S`),
    );
    expect(error.message).not.toContain("\n");
    expect(shown(error)).not.toContain(CANARY);
    expect(shown(error)).not.toContain("canary");
  });

  it.each([
    ["a missing comma", `{\n  "tiers": {\n    "light": "${CANARY}"\n    "mid": 1 }\n}`, 4, 5],
    ["a single-quoted key", `{\n  'api_key': "${CANARY}"\n}`, 2, 3],
    ["a line break in a string", `{\n  "key": "${CANARY}\n"\n}`, 2, 33],
    ["a bare word", `{\n  "key": ${CANARY}\n}`, 2, 10],
    ["a trailing comma", `{ "key": "${CANARY}", }`, 1, 36],
    ["a cut-off file", `{ "key": "${CANARY}`, 1, 10],
    ["text after the value", `{} ${CANARY}`, 1, 4],
  ])("JSON with %s: file, line and column, no source", (_, text, line, column) => {
    expect(() => JSON.parse(text)).toThrow();
    const error = configError(text, "/etc/handoff/secret.json");
    expect(error.code).toBe("HANDOFF_ERR_CONFIG");
    expect(error.message).toMatch(
      new RegExp(
        `^/etc/handoff/secret\\.json: line ${line}, column ${column}: not valid JSON: [a-z]`,
      ),
    );
    expect(shown(error)).not.toContain(CANARY);
    expect(shown(error)).not.toContain("canary");
  });

  it("prints no YAML warning, which would quote the file", () => {
    const emitted = vi.spyOn(process, "emitWarning").mockImplementation(() => {});
    const warned = vi.spyOn(console, "warn").mockImplementation(() => {});
    try {
      const error = configError(`tiers:\n  light: !${CANARY} x\n`, "/etc/handoff/tag.yaml");
      expect(error.message).toMatch(/^\/etc\/handoff\/tag\.yaml is invalid: tiers\.light: /);
      expect(shown(error)).not.toContain(CANARY);
      expect(emitted).not.toHaveBeenCalled();
      expect(warned).not.toHaveBeenCalled();
    } finally {
      emitted.mockRestore();
      warned.mockRestore();
    }
  });

  it("names the path of a schema error next to a secret, and not the value", () => {
    const deployment = (fields: Record<string, unknown>) => [
      { provider: "openai-compatible", model: "m", ...fields },
    ];
    const text = JSON.stringify({
      tiers: {
        light: deployment({ base_url: CANARY }),
        mid: deployment({ timeout_ms: CANARY, api_key_env: CANARY }),
        heavy: [{ provider: CANARY, model: "m" }],
      },
      gateway: { api_keys: [{ name: "ci", key_env: CANARY, requests_per_minute: CANARY }] },
      limits: { max_hops: CANARY },
    });
    for (const source of ["/etc/handoff/secret.json", "/etc/handoff/secret.yaml"]) {
      const error = configError(text, source);
      expect(error.message.startsWith(`${source} is invalid: `)).toBe(true);
      expect(error.issues?.map((i) => i.path).sort()).toEqual([
        "gateway.api_keys[0].key_env",
        "gateway.api_keys[0].requests_per_minute",
        "limits.max_hops",
        "tiers.heavy[0].provider",
        "tiers.light[0].base_url",
        "tiers.mid[0].api_key_env",
        "tiers.mid[0].timeout_ms",
      ]);
      expect(shown(error)).not.toContain(CANARY);
      expect(shown(error)).not.toContain("canary");
      // zod says which type it wanted and got, not what the value was.
      expect(error.message).toContain("tiers.mid[0].timeout_ms: Invalid input: expected number");
    }
  });
});
