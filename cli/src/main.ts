import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { formatError as formatFailure } from "@handoff/telemetry";
import { ask, formatCompletion, formatError } from "./ask.js";
import { submitMain, watchMain } from "./client-commands.js";
import { dlqMain } from "./dlq.js";
import { jobsMain } from "./jobs.js";
import { ServiceFailed, startLocalMesh } from "./local-mesh.js";
import { routerMain } from "./router.js";
import { statusMain } from "./status.js";
import { toolsMain } from "./tools.js";

const USAGE = `handoff: run the Handoff mesh locally and talk to it

  handoff up                    start NATS (if needed) and the four services, restart any that
                                crashes; Ctrl-C stops them
  handoff status [--json]       instances, per-stage lag, redeliveries, dead letters, jobs by status
  handoff dlq list | show <seq> | replay <seq>   dead letters: list, inspect, run again (see --help)
  handoff tools [--json]        every tool the mesh can see, where it lives, who may use it
  handoff ask "<question>"      send a question to the gateway; print answer, route, cost, trace
                                (--nats: over NATS, through the client library)
  handoff submit "<question>"   queue a job (HTTP, or --nats); print its id (see --help)
  handoff watch <id>            print a job's events until it ends (HTTP, or --nats)
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

/**
 * Stop requests for `up`: SIGINT, SIGTERM, SIGHUP (a closed terminal), and, when started through
 * npm (`npm start`, `npx handoff up`), the death of the parent process. npm hands SIGINT and
 * SIGTERM to the shell it runs the script in, and that shell may die without passing them on;
 * this process then has a new parent, and stops the mesh as if it had been signalled.
 */
function stopRequests(): { signal: AbortSignal; reason: () => string; dispose(): void } {
  const controller = new AbortController();
  let reason = "";
  const request = (why: string) => {
    if (controller.signal.aborted) return;
    reason = why;
    controller.abort();
  };
  const handlers = (["SIGINT", "SIGTERM", "SIGHUP"] as const).map((signal) => {
    const handler = () => request(signal);
    process.on(signal, handler);
    return [signal, handler] as const;
  });
  const parent = process.ppid;
  const watch = process.env.npm_lifecycle_event
    ? setInterval(() => {
        if (process.ppid !== parent) request(`parent process ${parent} exited`);
      }, 250)
    : undefined;
  watch?.unref();
  return {
    signal: controller.signal,
    reason: () => reason,
    dispose() {
      clearInterval(watch);
      for (const [signal, handler] of handlers) process.off(signal, handler);
    },
  };
}

/** `handoff up`: the mesh until a stop request (exit 0), or until a service crashes too often (1). */
async function up(): Promise<number> {
  // Listening before anything starts: a signal during start-up stops what has started.
  const requests = stopRequests();
  // Whoever reads our output may be gone (a killed npm's pipe): stopping the mesh goes on.
  process.stdout.on("error", () => {});
  process.stderr.on("error", () => {});
  const stopped = new Promise<"stop">((resolve) => {
    requests.signal.addEventListener("abort", () => resolve("stop"), { once: true });
  });
  try {
    let mesh: Awaited<ReturnType<typeof startLocalMesh>>;
    try {
      mesh = await startLocalMesh({ root, say, signal: requests.signal });
    } catch (error) {
      if (requests.signal.aborted) {
        say(`${requests.reason()}: start-up stopped`);
        return 0;
      }
      if (error instanceof ServiceFailed) {
        console.error(`${error.message}\nstopped every service.`);
        return 1;
      }
      throw error;
    }
    say(`Handoff gateway ready at ${mesh.gatewayUrl}`);
    say(`logs:     ${mesh.logDir}/*.log`);
    say(`try:      npx handoff ask "What is 17 * 23?"   (and: npx handoff status)`);
    const outcome = await Promise.race([stopped, mesh.failed]);
    if (outcome === "stop") {
      say(`${requests.reason()}: stopping...`);
      await mesh.stop();
      return 0;
    }
    console.error(`${outcome.message}\nstopped every service.`);
    return 1;
  } finally {
    requests.dispose();
  }
}

async function main(argv: string[]): Promise<number> {
  // Nouns with verbs of their own parse their own options.
  if (argv[0] === "router") return routerMain(argv.slice(1), io);
  if (argv[0] === "jobs") return jobsMain(argv.slice(1), io);
  if (argv[0] === "status") return statusMain(argv.slice(1), io);
  if (argv[0] === "dlq") return dlqMain(argv.slice(1), io);
  if (argv[0] === "tools") return toolsMain(argv.slice(1), io);
  if (argv[0] === "submit") return submitMain(argv.slice(1), io);
  if (argv[0] === "watch") return watchMain(argv.slice(1), io);
  if (argv[0] === "ask" && argv.includes("--nats"))
    return submitMain(argv.slice(1), io, process.env, true);
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
    case "up":
      return up();
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
    // and so does everything at LOG_LEVEL=debug. A service that died says so, with its log.
    console.error(error instanceof ServiceFailed ? error.message : formatFailure(error));
    const usage = (error as { code?: unknown }).code;
    process.exit(typeof usage === "string" && usage.startsWith("ERR_PARSE_ARGS_") ? 2 : 1);
  },
);
