/**
 * `npm run bench:http`: the provider adapters' HTTP client against the global `fetch`, in one run.
 *
 * The same `OpenAICompatibleModel.chat` call to the mock OpenAI upstream (bench/mock-upstream.ts,
 * its own process, answering at once), made by the adapter's own client (undici's `request` on a
 * keep-alive agent, libs/providers/src/http.ts) and by the adapter handed the global `fetch`, in
 * alternating rounds. Reports this process's CPU per call and calls per second, each as a ratio to
 * `fetch` measured in the same round. Settings: `BENCH_HTTP_CALLS` (per round and client, 3000),
 * `BENCH_HTTP_ROUNDS` (3), `BENCH_CONCURRENCY` (8).
 */
import { Deployment } from "@handoff/config";
import { OpenAICompatibleModel } from "@handoff/providers";
import { freePort } from "@handoff/testkit";
import { envInt, fixed, formatTable, runConcurrent } from "./lib.ts";
import { MOCK_ANSWER } from "./mock-upstream.ts";
import { type Child, MOCK_KEY, MOCK_KEY_ENV, startMockUpstream } from "./peers.ts";

const calls = envInt(process.env, "BENCH_HTTP_CALLS", 3000);
const rounds = envInt(process.env, "BENCH_HTTP_ROUNDS", 3);
const concurrency = envInt(process.env, "BENCH_CONCURRENCY", 8);

const children: Child[] = [];
const stopAll = () => Promise.all(children.map((child) => child.stop()));

async function main(): Promise<void> {
  const upstream = await startMockUpstream(await freePort(), (child) => children.push(child));
  const deployment = Deployment.parse({
    id: "mock-light",
    provider: "openai-compatible",
    model: "mock-light",
    base_url: `${upstream.url}/v1`,
    api_key_env: MOCK_KEY_ENV,
  });
  const env = { [MOCK_KEY_ENV]: MOCK_KEY };
  const clients = {
    fetch: new OpenAICompatibleModel(deployment, { env, fetch: globalThis.fetch }),
    "adapter's own (undici request)": new OpenAICompatibleModel(deployment, { env }),
  };
  const request = { messages: [{ role: "user" as const, content: "Hello there" }] };

  console.log(
    `HTTP client benchmark: ${rounds} rounds × ${calls} chat calls per client, ${concurrency} in flight, Node ${process.version}`,
  );
  const rows: string[][] = [];
  for (let round = 1; round <= rounds; round++) {
    const measured = new Map<string, { cpuMs: number; perSec: number }>();
    for (const [name, model] of Object.entries(clients)) {
      const op = async () => {
        const result = await model.chat(request);
        if (!String(result.message.content).includes(MOCK_ANSWER)) {
          throw new Error(`${name}: not the upstream's answer`);
        }
      };
      await runConcurrent(Math.min(500, calls), concurrency, op); // warm-up
      const cpu = process.cpuUsage();
      const started = performance.now();
      await runConcurrent(calls, concurrency, op);
      const used = process.cpuUsage(cpu);
      const elapsedMs = performance.now() - started;
      measured.set(name, {
        cpuMs: (used.user + used.system) / 1000 / calls,
        perSec: calls / (elapsedMs / 1000),
      });
      process.stdout.write(`round ${round}: ${name} done\n`);
    }
    const base = measured.get("fetch");
    for (const [name, m] of measured) {
      rows.push([
        String(round),
        name,
        fixed(m.cpuMs, 3),
        base ? fixed(m.cpuMs / base.cpuMs, 2) : "",
        fixed(m.perSec, 0),
        base ? fixed(m.perSec / base.perSec, 2) : "",
      ]);
    }
  }
  console.log();
  console.log(
    formatTable(["round", "client", "CPU ms per call", "÷ fetch", "calls/s", "÷ fetch"], rows, [
      "right",
      "left",
      "right",
      "right",
      "right",
      "right",
    ]),
  );
}

main()
  .then(stopAll)
  .catch(async (error: unknown) => {
    console.error(error);
    await stopAll();
    process.exitCode = 1;
  });
