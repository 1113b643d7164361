import { HandoffError } from "@handoff/contracts";
import { describe, expect, it } from "vitest";
import { parseConfig } from "./load.js";
import { servedModels } from "./schema.js";

const TIERS = `
tiers:
  light: [{ provider: sim, model: sim-light }]
  mid: [{ provider: sim, model: sim-mid }]
  heavy: [{ provider: sim, model: sim-heavy }]
`;

function configError(text: string): HandoffError {
  try {
    parseConfig(text, "handoff.yaml");
  } catch (error) {
    if (error instanceof HandoffError) return error;
    throw error;
  }
  throw new Error("expected the config to be rejected");
}

describe("the gateway section", () => {
  it("is optional: no section, no keys, an open API", () => {
    expect(parseConfig(TIERS, "handoff.yaml").gateway).toEqual({
      api_keys: [],
      auth_failures: { max: 10, window_ms: 60_000, max_addresses: 10_000 },
      idempotency_window_ms: 86_400_000,
      model_aliases: {},
    });
  });

  it("reads named keys by variable, with an optional rate", () => {
    const config = parseConfig(
      `${TIERS}
gateway:
  api_keys:
    - name: team-a
      key_env: HANDOFF_KEY_TEAM_A
      requests_per_minute: 60
    - name: ci.bot_2
      key_env: CI_KEY
`,
      "handoff.yaml",
    );
    expect(config.gateway.api_keys).toEqual([
      { name: "team-a", key_env: "HANDOFF_KEY_TEAM_A", requests_per_minute: 60, scopes: [] },
      { name: "ci.bot_2", key_env: "CI_KEY", scopes: [] },
    ]);
  });

  it("reads a key's scopes and the failed-authentication throttle, with defaults", () => {
    const config = parseConfig(
      `${TIERS}
gateway:
  api_keys:
    - { name: ops, key_env: OPS_KEY, scopes: [admin] }
  auth_failures: { max: 3 }
`,
      "handoff.yaml",
    );
    expect(config.gateway.api_keys[0]?.scopes).toEqual(["admin"]);
    expect(config.gateway.auth_failures).toEqual({
      max: 3,
      window_ms: 60_000,
      max_addresses: 10_000,
    });
    const error = configError(`${TIERS}
gateway:
  api_keys:
    - { name: a, key_env: A, scopes: [root] }
  auth_failures: { max: 0, window_ms: 10, max_addresses: 0 }
`);
    expect(error.issues?.map((i) => i.path)).toEqual([
      "gateway.api_keys[0].scopes[0]",
      "gateway.auth_failures.max",
      "gateway.auth_failures.window_ms",
      "gateway.auth_failures.max_addresses",
    ]);
  });

  it("names the path of a duplicate name or variable, and of the entry it repeats", () => {
    const error = configError(`${TIERS}
gateway:
  api_keys:
    - { name: a, key_env: K1 }
    - { name: b, key_env: K2 }
    - { name: a, key_env: K2 }
`);
    expect(error.code).toBe("HANDOFF_ERR_CONFIG");
    expect(error.issues).toEqual([
      {
        path: "gateway.api_keys[2].name",
        message: 'name "a" is already used by gateway.api_keys[0]',
      },
      {
        path: "gateway.api_keys[2].key_env",
        message: 'key_env "K2" is already used by gateway.api_keys[1]',
      },
    ]);
  });

  it("rejects a variable that is not a variable name, a bad name, and a rate that is not a positive integer", () => {
    const error = configError(`${TIERS}
gateway:
  api_keys:
    - { name: a, key_env: "sk-live-123" }
    - { name: "has space", key_env: K }
    - { name: c, key_env: C, requests_per_minute: 0 }
    - { name: d, key_env: D, requests_per_minute: 1.5 }
`);
    expect(error.issues?.map((i) => i.path)).toEqual([
      "gateway.api_keys[0].key_env",
      "gateway.api_keys[1].name",
      "gateway.api_keys[2].requests_per_minute",
      "gateway.api_keys[3].requests_per_minute",
    ]);
    expect(error.message).toContain("must be an environment variable name");
  });

  describe("model_aliases", () => {
    it("maps other vendors' names onto the models the gateway serves", () => {
      const config = parseConfig(
        `${TIERS}
gateway:
  model_aliases:
    gpt-4o-mini: handoff/light
    gpt-4o: handoff
    claude-sonnet-4-5: sim:sim-heavy
`,
        "handoff.yaml",
      );
      expect(config.gateway.model_aliases).toEqual({
        "gpt-4o-mini": "handoff/light",
        "gpt-4o": "handoff",
        "claude-sonnet-4-5": "sim:sim-heavy",
      });
      expect(servedModels(config)).toEqual([
        "handoff",
        "handoff/light",
        "handoff/mid",
        "handoff/heavy",
        "sim:sim-light",
        "sim:sim-mid",
        "sim:sim-heavy",
      ]);
    });

    it("rejects an alias to a model the gateway does not serve, naming the alias and what it may point at", () => {
      const error = configError(`${TIERS}
gateway:
  model_aliases:
    gpt-4o-mini: handoff/medium
    o3: gpt-4o-mini
`);
      expect(error.code).toBe("HANDOFF_ERR_CONFIG");
      expect(error.issues).toEqual([
        {
          path: "gateway.model_aliases.gpt-4o-mini",
          message:
            '"handoff/medium" is not a model the gateway serves (one of handoff, handoff/light, handoff/mid, handoff/heavy, sim:sim-light, sim:sim-mid, sim:sim-heavy)',
        },
        // An alias of an alias is not served either: each points at a model directly.
        {
          path: "gateway.model_aliases.o3",
          message: expect.stringContaining('"gpt-4o-mini" is not a model the gateway serves'),
        },
      ]);
    });

    it("rejects an alias that would shadow a served model, and an empty target", () => {
      const empty = configError(`${TIERS}
gateway:
  model_aliases:
    x: ""
`);
      expect(empty.issues?.map((i) => i.path)).toEqual(["gateway.model_aliases.x"]);
      const shadowing = configError(`${TIERS}
gateway:
  model_aliases:
    handoff/light: handoff/heavy
    sim:sim-mid: handoff
`);
      expect(shadowing.issues).toEqual([
        {
          path: "gateway.model_aliases.handoff/light",
          message:
            '"handoff/light" is already a model the gateway serves; an alias needs a name of its own',
        },
        {
          path: "gateway.model_aliases.sim:sim-mid",
          message:
            '"sim:sim-mid" is already a model the gateway serves; an alias needs a name of its own',
        },
      ]);
    });
  });
});
