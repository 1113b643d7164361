/**
 * Where the time goes: summarises V8 CPU profiles (`node --cpu-prof`) of the mesh's processes,
 * taken while `npm run bench` loads them, into self time per package and per function.
 *
 *   rm -rf /tmp/prof && NODE_OPTIONS="--cpu-prof --cpu-prof-dir=/tmp/prof" BENCH_N=1000 \
 *     node bench/mesh.bench.ts            # every node process writes a profile when it exits
 *   node bench/profile.ts /tmp/prof       # one table per process, named by the service it ran
 *
 * Run the benchmark from a scratch clone if you keep its README: a profiled run rewrites
 * bench/README.md with figures the profiler slowed down.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** What a frame belongs to: a Handoff package, a dependency, node itself, or V8's own work. */
export function packageOf(url: string, functionName: string): string {
  if (url === "") {
    if (functionName === "(garbage collector)") return "V8: garbage collection";
    if (functionName === "(idle)" || functionName === "(program)") return `V8: ${functionName}`;
    return "V8: other";
  }
  if (url.startsWith("node:")) return "node internals";
  const handoff = /\/(libs|services)\/([^/]+)\/dist\//.exec(url);
  if (handoff) return `@handoff/${handoff[2]}`;
  const dep = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (dep) return dep[1] ?? url;
  if (url.includes("/bench/")) return "bench (load generator)";
  return url;
}

/** Which process a profile came from: the service whose code it ran most, or the benchmark. */
export function processOf(profile: CpuProfile): string {
  const counts = new Map<string, number>();
  for (const node of profile.nodes) {
    const match = /\/services\/([^/]+)\/dist\//.exec(node.callFrame.url);
    const name = match ? match[1] : node.callFrame.url.includes("/bench/") ? "bench" : undefined;
    if (name) counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  return [...counts.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? "unknown";
}

/** Self time (ms) per package and per function, busy time only (idle left out). */
export function selfTimes(profile: CpuProfile) {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const perNode = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    perNode.set(id, (perNode.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000);
  });
  const packages = new Map<string, number>();
  const functions = new Map<string, number>();
  let busy = 0;
  for (const [id, ms] of perNode) {
    const node = byId.get(id);
    if (!node) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === "(idle)") continue;
    busy += ms;
    const pkg = packageOf(url, functionName);
    packages.set(pkg, (packages.get(pkg) ?? 0) + ms);
    const where = url ? `${pkg} ${url.split("/").at(-1)}:${lineNumber + 1}` : pkg;
    const key = `${functionName || "(anonymous)"} (${where})`;
    functions.set(key, (functions.get(key) ?? 0) + ms);
  }
  const top = (map: Map<string, number>, n: number) =>
    [...map.entries()].sort((a, b) => b[1] - a[1]).slice(0, n);
  return { busy, packages: top(packages, 12), functions: top(functions, 15) };
}

function main(dir: string): void {
  const files = readdirSync(dir).filter((f) => f.endsWith(".cpuprofile"));
  if (files.length === 0) {
    console.error(`no .cpuprofile files in ${dir}; see the comment at the top of this file`);
    process.exit(1);
  }
  const rows = files.map((file) => {
    const profile = JSON.parse(readFileSync(join(dir, file), "utf8")) as CpuProfile;
    return {
      name: processOf(profile),
      wallMs: (profile.endTime - profile.startTime) / 1000,
      ...selfTimes(profile),
    };
  });
  rows.sort((a, b) => b.busy - a.busy);
  const pct = (part: number, whole: number) => `${((100 * part) / whole).toFixed(1)} %`;
  for (const row of rows) {
    console.log(
      `\n### ${row.name}: ${(row.busy / 1000).toFixed(2)} s busy of ${(row.wallMs / 1000).toFixed(1)} s\n`,
    );
    console.log("| package | self time | share |\n| --- | ---: | ---: |");
    for (const [pkg, ms] of row.packages)
      console.log(`| ${pkg} | ${ms.toFixed(0)} ms | ${pct(ms, row.busy)} |`);
    console.log("\n| function (package file:line) | self time | share |\n| --- | ---: | ---: |");
    for (const [fn, ms] of row.functions) {
      console.log(`| ${fn.replaceAll("|", "\\|")} | ${ms.toFixed(0)} ms | ${pct(ms, row.busy)} |`);
    }
  }
}

if (import.meta.url === `file://${process.argv[1]}`) main(process.argv[2] ?? "/tmp/prof");
