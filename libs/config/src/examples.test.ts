import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { simProfile } from "./defaults.js";
import { parseConfig } from "./load.js";

const examples = fileURLToPath(new URL("../../../deploy/config/", import.meta.url));

describe("shipped example configs", () => {
  it("every file in deploy/config validates", () => {
    const files = readdirSync(examples).filter((f) => /\.(ya?ml|json)$/.test(f));
    expect(files).toContain("sim.yaml");
    for (const file of files) {
      expect(() => parseConfig(readFileSync(examples + file, "utf8"), file)).not.toThrow();
    }
  });

  it("sim.yaml is exactly the built-in default profile", () => {
    const text = readFileSync(`${examples}sim.yaml`, "utf8");
    expect(parseConfig(text, "sim.yaml")).toEqual(simProfile);
  });
});
