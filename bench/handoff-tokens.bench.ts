/**
 * `npm run bench:handoff`: the lean handoff against forwarding everything. Replays the
 * conversations of bench/fixtures/handoff/conversations.jsonl (each as three jobs: its last three
 * user turns, in order) through an in-process mesh (the built services, one nats-server) whose
 * tiers call a recording OpenAI-wire upstream, once as the mesh forwards today and once with
 * `limits.handoff_tokens.heavy` set. The upstream simulates OpenAI's prompt cache: a request's
 * `cached_tokens` is the longest prefix it shares with an earlier request of the same model, from
 * 1,024 tokens on, in steps of 128. Writes bench/handoff-tokens.md.
 *
 *   HANDOFF_BUDGET=5000 HANDOFF_STRATEGY=select npm run bench:handoff
 */
import { readFileSync, writeFileSync } from "node:fs";
import { HandoffConfig } from "@handoff/config";
import { openaiCompletion, startNats, UpstreamServer } from "@handoff/testkit";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { createClassifierService } from "../services/classifier/dist/service.js";
import { createGateway } from "../services/gateway/dist/service.js";
import { createHeavyReasonerService } from "../services/heavy-reasoner/dist/service.js";
import { createToolExecutorService } from "../services/tool-executor/dist/service.js";
import { envInt } from "./lib.ts";

const env = process.env;
const BUDGET = envInt(env, "HANDOFF_BUDGET", 5_000, 256);
const STRATEGY = env.HANDOFF_STRATEGY === "summarize" ? "summarize" : "select";
const JOBS_PER_CONVERSATION = 3;

/** gpt-4.1's list prices for the heavy tier, gpt-4.1-mini's for light and mid (USD per Mtok). */
const PRICES = {
  light: { input_per_mtok: 0.4, cached_input_per_mtok: 0.1, output_per_mtok: 1.6 },
  heavy: { input_per_mtok: 2, cached_input_per_mtok: 0.5, output_per_mtok: 8 },
};

interface Fixture {
  id: string;
  messages: Array<Record<string, unknown>>;
  facts: string[];
}

const fixtures: Fixture[] = readFileSync(
  new URL("./fixtures/handoff/conversations.jsonl", import.meta.url),
  "utf8",
)
  .trim()
  .split("\n")
  .map((line) => JSON.parse(line) as Fixture)
  .slice(0, envInt(env, "HANDOFF_FIXTURES", 1_000));

/** The prompt as the simulated provider tokenizes it: about four characters a token. */
function promptText(body: Record<string, unknown>): string {
  return JSON.stringify(body.messages ?? []);
}

/** OpenAI's prompt cache: the longest shared prefix with an earlier prompt, 1,024 + 128·k tokens. */
class PrefixCache {
  readonly #seen = new Map<string, string[]>();
  cached(model: string, text: string): number {
    const earlier = this.#seen.get(model) ?? [];
    let best = 0;
    for (const prior of earlier) {
      const limit = Math.min(prior.length, text.length);
      let i = 0;
      while (i < limit && prior.charCodeAt(i) === text.charCodeAt(i)) i++;
      best = Math.max(best, i);
    }
    earlier.push(text);
    this.#seen.set(model, earlier);
    const tokens = Math.floor(best / 4);
    return tokens < 1_024 ? 0 : 1_024 + Math.floor((tokens - 1_024) / 128) * 128;
  }
}

interface Run {
  name: string;
  heavyPromptTokens: number;
  /** Prompt tokens of the heavy calls of second and later jobs, and of those, the cached ones. */
  laterPrompt: number;
  laterCached: number;
  laterHits: number;
  laterJobs: number;
  dollars: number;
  heavyDollars: number;
  lightCalls: number;
  fidelity: number;
  compacted: number;
}

async function run(name: string, limits: Record<string, unknown>): Promise<Run> {
  const cache = new PrefixCache();
  const upstream = await UpstreamServer.start((body) => {
    const model = String(body.model);
    const text = promptText(body);
    const prompt = Math.ceil(text.length / 4);
    const summary = model === "bench-light";
    return {
      kind: "json",
      body: openaiCompletion(
        model,
        {
          kind: "text",
          text: summary
            ? "Earlier the user and the assistant reviewed logs and metrics of several services."
            : "Here is the incident summary you asked for.",
        },
        { prompt, completion: summary ? 60 : 300, cached: cache.cached(model, text) },
      ),
    };
  });
  const deployment = (tier: "light" | "heavy", model: string) => ({
    id: model,
    provider: "openai-compatible",
    base_url: `${upstream.url}/v1`,
    api_key_env: "BENCH_UPSTREAM_KEY",
    model,
    price: PRICES[tier],
  });
  const config = HandoffConfig.parse({
    tiers: {
      light: [deployment("light", "bench-light")],
      mid: [deployment("light", "bench-mid")],
      heavy: [deployment("heavy", "bench-heavy")],
    },
    limits: { request_timeout_ms: 30_000, ...limits },
  });
  env.BENCH_UPSTREAM_KEY = "sk-bench";
  const nats = await startNats();
  const nc = await connect({ servers: nats.url });
  const logger = pino({ level: "silent" });
  const deps = { nc, config, logger, version: "0.0.0-bench", concurrency: 4 };
  const workers = [
    createClassifierService(deps),
    createToolExecutorService(deps),
    createHeavyReasonerService(deps),
  ];
  for (const worker of workers) await worker.start();
  const gateway = createGateway({
    nc,
    config,
    logger,
    version: "0.0.0-bench",
    host: "127.0.0.1",
    port: 0,
  });
  const url = await gateway.start();

  const result: Run = {
    name,
    heavyPromptTokens: 0,
    laterPrompt: 0,
    laterCached: 0,
    laterHits: 0,
    laterJobs: 0,
    dollars: 0,
    heavyDollars: 0,
    lightCalls: 0,
    fidelity: 0,
    compacted: 0,
  };
  try {
    for (const fixture of fixtures) {
      const userTurns = fixture.messages.flatMap((m, i) => (m.role === "user" ? [i] : []));
      const ends = userTurns.slice(-JOBS_PER_CONVERSATION);
      for (const [job, end] of ends.entries()) {
        const before = upstream.requests.length;
        const response = await fetch(`${url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({
            model: "handoff/heavy",
            messages: fixture.messages.slice(0, end + 1),
          }),
        });
        if (!response.ok) throw new Error(`${fixture.id} job ${job}: ${await response.text()}`);
        const completion = (await response.json()) as {
          handoff: {
            usage: Array<{
              tier: string;
              input_tokens: number;
              cached_input_tokens?: number;
              cost_usd: number;
            }>;
          };
        };
        const heavy = upstream.requests.slice(before).filter((r) => r.body.model === "bench-heavy");
        if (heavy.length !== 1) throw new Error(`${fixture.id}: ${heavy.length} heavy calls`);
        const sent = promptText(heavy[0]?.body ?? {});
        if (sent.includes("[handoff] ")) result.compacted++;
        for (const usage of completion.handoff.usage) {
          result.dollars += usage.cost_usd;
          if (usage.tier === "light") result.lightCalls++;
          if (usage.tier !== "heavy") continue;
          result.heavyDollars += usage.cost_usd;
          result.heavyPromptTokens += usage.input_tokens;
          if (job > 0) {
            result.laterJobs++;
            result.laterPrompt += usage.input_tokens;
            result.laterCached += usage.cached_input_tokens ?? 0;
            if ((usage.cached_input_tokens ?? 0) > 0) result.laterHits++;
          }
        }
        if (job === ends.length - 1 && fixture.facts.every((f) => sent.includes(f))) {
          result.fidelity++;
        }
      }
    }
  } finally {
    await gateway.stop();
    for (const worker of workers) await worker.stop();
    await nc.close();
    await nats.stop();
    await upstream.close();
  }
  return result;
}

const pct = (part: number, whole: number) => `${((100 * part) / whole).toFixed(1)}%`;
const usd = (value: number) => `$${value.toFixed(4)}`;

const everything = await run("forward everything", {});
const lean = await run(`handoff_tokens.heavy = ${BUDGET}, ${STRATEGY}`, {
  handoff_tokens: { heavy: BUDGET },
  handoff_compaction: STRATEGY,
});
const jobs = fixtures.length * JOBS_PER_CONVERSATION;
const rows = [everything, lean].map((r) => [
  r.name,
  String(r.heavyPromptTokens),
  (r.heavyPromptTokens / everything.heavyPromptTokens).toFixed(2),
  `${pct(r.laterCached, r.laterPrompt)} (${r.laterHits}/${r.laterJobs} jobs)`,
  usd(r.heavyDollars),
  usd(r.dollars),
  `${r.fidelity}/${fixtures.length} (${pct(r.fidelity, fixtures.length)})`,
  `${r.compacted}/${jobs}`,
]);
const header = [
  "run",
  "prompt tokens to heavy",
  "ratio",
  "prefix-cache hit, jobs 2+ (tokens)",
  "heavy $",
  "all $",
  "facts reach heavy",
  "jobs compacted",
];
const table = [
  `| ${header.join(" | ")} |`,
  `|${header.map(() => "---").join("|")}|`,
  ...rows.map((r) => `| ${r.join(" | ")} |`),
].join("\n");
console.log(table);

const doc = `# Lean handoff: tokens to the heavy tier

\`npm run bench:handoff\` (\`bench/handoff-tokens.bench.ts\`) replays ${fixtures.length} long
conversations (bench/fixtures/handoff/conversations.jsonl, written by
\`node bench/fixtures/make-handoff-fixtures.ts\`, seeded: 24 to 60 messages after the system prompt,
tool calls returning 60 to 120 log lines, one or two facts stated in the first user turns that the
last question asks for) through an in-process mesh, each conversation as ${JOBS_PER_CONVERSATION}
jobs (its last three user turns, in order, pinned to the heavy tier: \`handoff/heavy\`), once
forwarding everything and once with \`limits.handoff_tokens.heavy: ${BUDGET}\` and
\`handoff_compaction: ${STRATEGY}\`. Every tier calls one recording OpenAI-wire upstream that
simulates OpenAI's prompt cache: a request's \`cached_tokens\` is the longest prefix (at four
characters a token) it shares with an earlier request of the same model, counted from 1,024
tokens on in steps of 128, reported as \`usage.prompt_tokens_details.cached_tokens\`. Prices:
heavy $${PRICES.heavy.input_per_mtok} input, $${PRICES.heavy.cached_input_per_mtok} cached input,
$${PRICES.heavy.output_per_mtok} output per million tokens (gpt-4.1's list prices); light and mid
$${PRICES.light.input_per_mtok} / $${PRICES.light.cached_input_per_mtok} / $${PRICES.light.output_per_mtok}.
Each heavy answer is 300 tokens.

${table}

- **ratio**: prompt tokens the heavy tier was sent (the upstream's count), against forwarding
  everything. Target: at most 0.6.
- **prefix-cache hit, jobs 2+**: of the heavy prompt tokens of each conversation's second and third
  jobs, the share the simulated provider read from its cache (and how many of those calls read
  any). Forwarding everything, a later job's prompt starts with the whole earlier one; compacted,
  only the client's system prompt and the conversation's first turns (the head, up to a quarter of
  the budget) stay the same from job to job, and they hit only when they reach 1,024 tokens.
- **facts reach heavy**: fixtures whose planted facts all appear in what the heavy tier was sent
  on the last job. Target: at least 95%.
- **all $**: every model call of every job (with \`summarize\`, the light tier's summaries too).

Run: \`npm run bench:handoff\` (builds first); \`HANDOFF_BUDGET\` (default 5000) and
\`HANDOFF_STRATEGY\` (\`select\` or \`summarize\`) change the lean run.
`;
writeFileSync(new URL("./handoff-tokens.md", import.meta.url), doc);
