import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// Tests run against the TypeScript sources of the libs, not their build output: `@handoff/<lib>`
// is its src/index.ts, and a subpath export `@handoff/<lib>/<module>` its src/<module>.ts.
const libsDir = fileURLToPath(new URL("./libs", import.meta.url));
const libs = readdirSync(libsDir).join("|");
const alias = [
  { find: new RegExp(`^@handoff/(${libs})$`), replacement: `${libsDir}/$1/src/index.ts` },
  {
    find: new RegExp(`^@handoff/(${libs})/([a-z-]+)$`),
    replacement: `${libsDir}/$1/src/$2.ts`,
  },
];

export default defineConfig({
  resolve: { alias },
  test: {
    projects: [
      {
        resolve: { alias },
        test: {
          name: "unit",
          include: [
            "libs/*/src/**/*.test.ts",
            "services/*/src/**/*.test.ts",
            "cli/src/**/*.test.ts",
            "deploy/**/*.test.ts",
            "bench/**/*.test.ts",
          ],
        },
      },
      {
        resolve: { alias },
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          testTimeout: 30_000,
          hookTimeout: 60_000,
        },
      },
      {
        resolve: { alias },
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          // The suites spawn whole meshes of processes; one at a time keeps a 2-core box honest.
          fileParallelism: false,
        },
      },
      {
        resolve: { alias },
        test: {
          name: "faults",
          include: ["test/faults/**/*.test.ts"],
          // Each scenario kills and restarts real nats-server and service processes under load.
          testTimeout: 600_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
