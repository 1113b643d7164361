import { afterEach, describe, expect, it } from "vitest";
import { createLogger } from "./logger.js";
import {
  clearSecrets,
  REDACTED,
  redactSecrets,
  registerConfigSecrets,
  registerSecret,
  registerSecretEnv,
  secretCount,
} from "./secrets.js";

const KEY = "sk-canary-provider-4e1f9b7c";
const GATEWAY_KEY = "hk-canary-gateway-0d2a6e";

afterEach(() => clearSecrets());

function sink() {
  const raw: string[] = [];
  return { raw, write: (chunk: string) => raw.push(chunk) };
}

describe("redactSecrets", () => {
  it("leaves text alone while nothing is registered", () => {
    expect(redactSecrets(`HTTP 401: Incorrect key ${KEY}`)).toBe(`HTTP 401: Incorrect key ${KEY}`);
  });

  it("replaces every occurrence of a registered value", () => {
    registerSecret(KEY);
    expect(redactSecrets(`${KEY} and again ${KEY}.`)).toBe(`${REDACTED} and again ${REDACTED}.`);
  });

  it("ignores short and empty values, which would blank out ordinary words", () => {
    registerSecret("");
    registerSecret(undefined);
    registerSecret("abc");
    expect(secretCount()).toBe(0);
    expect(redactSecrets("abc")).toBe("abc");
  });

  it("trims a value read from a file that ends in a newline", () => {
    registerSecret(`  ${KEY}\n`);
    expect(redactSecrets(`key=${KEY}`)).not.toContain(KEY);
  });

  it("scrubs a key the vendor masked, and a token after Bearer or 'API key provided'", () => {
    expect(redactSecrets("Incorrect API key provided: sk-abc***xyz. See the docs.")).toBe(
      `Incorrect API key provided: ${REDACTED}. See the docs.`,
    );
    expect(redactSecrets("sent Authorization: Bearer abcdefghijkl")).toBe(
      `sent Authorization: Bearer ${REDACTED}`,
    );
    expect(redactSecrets("Incorrect API key provided: unregistered-value-123")).toBe(
      `Incorrect API key provided: ${REDACTED}`,
    );
  });

  it("replaces the longer of two overlapping secrets whole", () => {
    registerSecret("secret-value-1");
    registerSecret("secret-value-1-and-more");
    expect(redactSecrets("x secret-value-1-and-more y")).toBe(`x ${REDACTED} y`);
  });

  it("registers the values of named variables that are set", () => {
    registerSecretEnv(["SET", "UNSET", undefined], { SET: KEY });
    expect(secretCount()).toBe(1);
    expect(redactSecrets(KEY)).toBe(REDACTED);
  });
});

describe("registerConfigSecrets", () => {
  it("registers deployments' api_key_env, gateway keys' key_env and literal credential headers", () => {
    const names = registerConfigSecrets(
      {
        tiers: {
          light: [{ api_key_env: "OPENAI_KEY" }],
          mid: [
            { headers: { Authorization: "Bearer literal-token-9a8b7c", "x-trace": "visible1" } },
          ],
          heavy: [{ api_key_env: "OPENAI_KEY" }, { headers: { "api-key": "azure-literal-55aa" } }],
        },
        gateway: { api_keys: [{ key_env: "GATEWAY_KEY" }] },
      },
      { OPENAI_KEY: KEY, GATEWAY_KEY: GATEWAY_KEY },
    );
    expect(names.sort()).toEqual(["GATEWAY_KEY", "OPENAI_KEY"]);
    const text = redactSecrets(
      `${KEY} ${GATEWAY_KEY} literal-token-9a8b7c azure-literal-55aa visible1`,
    );
    expect(text).toBe(`${REDACTED} ${REDACTED} ${REDACTED} ${REDACTED} visible1`);
  });
});

describe("the logger", () => {
  it("scrubs registered values wherever they are in a line", () => {
    registerSecret(KEY);
    registerSecret('quote"d-secret-value');
    const out = sink();
    const logger = createLogger("gateway", { destination: out });
    logger.info(
      {
        upstream: { body: `{"error":{"message":"Incorrect key ${KEY}"}}` },
        q: 'quote"d-secret-value',
      },
      `provider said ${KEY}`,
    );
    logger.error({ err: new Error(`failed with ${KEY}`) }, "boom");
    const text = out.raw.join("");
    expect(text).not.toContain(KEY);
    expect(text).not.toContain("quote");
    expect(text).toContain(REDACTED);
    // Still JSON.
    for (const line of out.raw) expect(() => JSON.parse(line)).not.toThrow();
  });

  it("redacts credential headers by name", () => {
    const out = sink();
    createLogger("gateway", { destination: out }).info(
      {
        req: {
          headers: {
            authorization: "Bearer abc",
            "api-key": "k1",
            "x-api-key": "k2",
            cookie: "c=1",
            "proxy-authorization": "p",
            accept: "json",
          },
        },
        res: { headers: { "set-cookie": "s=1" } },
      },
      "request",
    );
    const line = JSON.parse(out.raw[0] ?? "{}");
    expect(line.req.headers).toEqual({
      authorization: REDACTED,
      "api-key": REDACTED,
      "x-api-key": REDACTED,
      cookie: REDACTED,
      "proxy-authorization": REDACTED,
      accept: "json",
    });
    expect(line.res.headers["set-cookie"]).toBe(REDACTED);
  });
});
