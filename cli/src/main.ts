import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { formatError as formatFailure } from "@handoff/telemetry";
import { ask, formatCompletion, formatError } from "./ask.js";
import { jobsMain } from "./jobs.js";
import { startLocalMesh } from "./local-mesh.js";
import { routerMain } from "./router.js";

const USAGE = `handoff: run the Handoff mesh locally and talk to it

  handoff up                    start NATS (if needed) and the four services; Ctrl-C stops them
  handoff ask "<question>"      send a question to the gateway; print answer, route, cost, trace
  handoff demo                  up, ask two example questions, then stop
  handoff job <id>              print a job's stored record
  handoff jobs export [--since <time>]   write recorded jobs as JSON lines, for replay (see --help)
  handoff router <train|score|eval|calibrate|split>   routing strategies offline (see --help)

options:
  --url <gateway>      gateway URL for ask/job (default $HANDOFF_URL or http://127.0.0.1:8080)
  --timeout <ms>       how long ask waits for the answer
  --json               print the raw JSON response
`;

const root = fileURLToPath(new URL("../..", import.meta.url));
const say = (line: string) => console.log(line);

const EXAMPLES = ["What is 17 * 23?", "Prove step by step that there are infinitely many primes."];

async function askAndPrint(url: string, question: string, json: boolean, timeoutMs?: number) {
  const outcome = await ask({ url, question, ...(timeoutMs ? { timeoutMs } : {}) });
  if (json)
    console.log(
      JSON.stringify(outcome.ok ? outcome.completion : { error: outcome.error }, null, 2),
    );
  else
    console.log(
      outcome.ok
        ? formatCompletion(outcome.completion)
        : formatError(outcome.status, outcome.error),
    );
  return outcome.ok;
}

const io = {
  out: (line: string) => console.log(line),
  err: (line: string) => console.error(line),
};

async function main(argv: string[]): Promise<number> {
  // Nouns with verbs of their own parse their own options.
  if (argv[0] === "router") return routerMain(argv.slice(1), io);
  if (argv[0] === "jobs") return jobsMain(argv.slice(1), io);
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      url: { type: "string" },
      timeout: { type: "string" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const [command, ...rest] = positionals;
  const url = values.url ?? process.env.HANDOFF_URL ?? "http://127.0.0.1:8080";
  const timeoutMs = values.timeout ? Number(values.timeout) : undefined;
  if (timeoutMs !== undefined && !Number.isInteger(timeoutMs)) {
    console.error(`--timeout must be a whole number of milliseconds, got "${values.timeout}"`);
    return 2;
  }

  switch (values.help ? "help" : command) {
    case "up": {
      const mesh = await startLocalMesh({ root, say });
      say(`Handoff gateway ready at ${mesh.gatewayUrl}`);
      say(`logs:     ${mesh.logDir}/*.log`);
      say(`try:      npx handoff ask "What is 17 * 23?"`);
      await new Promise<void>((resolve) => {
        process.once("SIGINT", resolve);
        process.once("SIGTERM", resolve);
      });
      say("stopping...");
      await mesh.stop();
      return 0;
    }
    case "demo": {
      const mesh = await startLocalMesh({ root, say });
      say(`Handoff gateway ready at ${mesh.gatewayUrl}\n`);
      let ok = true;
      try {
        for (const question of EXAMPLES) {
          say(`$ handoff ask "${question}"`);
          ok = (await askAndPrint(mesh.gatewayUrl, question, values.json, timeoutMs)) && ok;
          say("");
        }
      } finally {
        await mesh.stop();
      }
      return ok ? 0 : 1;
    }
    case "ask": {
      const question = rest.join(" ").trim();
      if (!question) {
        console.error('ask needs a question: handoff ask "What is 17 * 23?"');
        return 2;
      }
      try {
        return (await askAndPrint(url, question, values.json, timeoutMs)) ? 0 : 1;
      } catch (error) {
        console.error(
          `no gateway answers at ${url} (${(error as Error).message}); start one with: npm start`,
        );
        return 1;
      }
    }
    case "job": {
      const id = rest[0];
      if (!id) {
        console.error("job needs an id: handoff job <id>");
        return 2;
      }
      const res = await fetch(new URL(`/v1/jobs/${encodeURIComponent(id)}`, url));
      console.log(JSON.stringify(await res.json(), null, 2));
      return res.ok ? 0 : 1;
    }
    default:
      console.log(USAGE);
      return command === undefined || values.help ? 0 : 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    // A bad argument, config or variable is one line (code and message); a bug shows its stack,
    // and so does everything at LOG_LEVEL=debug.
    console.error(formatFailure(error));
    const usage = (error as { code?: unknown }).code;
    process.exit(typeof usage === "string" && usage.startsWith("ERR_PARSE_ARGS_") ? 2 : 1);
  },
);
