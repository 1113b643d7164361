import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { findNatsServer } from "@handoff/testkit";
import { knob } from "./load.js";

/**
 * Figures of each scenario, written as the tests run (before their assertions, so a failing run
 * keeps them too): `test/faults/.results/<scenario>.json`, git-ignored (test/faults/.gitignore).
 * docs/reliability.md is written from them.
 */

export const RESULTS_DIR = fileURLToPath(new URL("./.results/", import.meta.url));

function natsVersion(): string | undefined {
  const binary = findNatsServer();
  if (!binary) return undefined;
  try {
    return execFileSync(binary, ["--version"], { encoding: "utf8" }).trim();
  } catch {
    return undefined;
  }
}

const environment = {
  nats_server: natsVersion(),
  node: process.version,
  cpus: (() => {
    try {
      return execFileSync("nproc", { encoding: "utf8" }).trim();
    } catch {
      return undefined;
    }
  })(),
  jobs: knob("FAULTS_JOBS") ?? "200 (default)",
  burst: knob("FAULTS_BURST") ?? "3000 (default)",
};

export function writeResult(scenario: string, figures: Record<string, unknown>): void {
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(
    join(RESULTS_DIR, `${scenario}.json`),
    `${JSON.stringify({ scenario, recorded_at: new Date().toISOString(), environment, ...figures }, null, 2)}\n`,
  );
}
