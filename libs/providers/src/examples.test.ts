import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseConfig } from "@handoff/config";
import { describe, expect, it } from "vitest";
import { createModel } from "./registry.js";
import { ModelRouter } from "./router.js";

const examples = fileURLToPath(new URL("../../../deploy/config/", import.meta.url));
const files = readdirSync(examples).filter((f) => /\.ya?ml$/.test(f));

describe("the shipped example configs", () => {
  it("ship the three documented profiles", () => {
    expect(files).toEqual(
      expect.arrayContaining(["sim.yaml", "ollama.yaml", "openai-anthropic.yaml"]),
    );
  });

  it.each(files)("%s builds a model for every deployment when its keys are set", (file) => {
    const config = parseConfig(readFileSync(examples + file, "utf8"), file);
    const env = {
      OPENAI_API_KEY: "sk-test",
      ANTHROPIC_API_KEY: "sk-ant-test",
      TOGETHER_API_KEY: "tg-test",
    };
    const router = new ModelRouter(config, (d) => createModel(d, env));
    for (const tier of ["light", "mid", "heavy"] as const) {
      expect(router.deployments(tier).length).toBeGreaterThan(0);
    }
  });

  it("refuses the mixed profile without its keys, naming the variable", () => {
    const config = parseConfig(readFileSync(`${examples}openai-anthropic.yaml`, "utf8"), "mixed");
    expect(() => new ModelRouter(config, (d) => createModel(d, {}))).toThrow(/OPENAI_API_KEY/);
  });
});
