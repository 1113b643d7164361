import { type ParseArgsConfig, parseArgs } from "node:util";
import type { Io } from "./progress.js";

type Options = NonNullable<ParseArgsConfig["options"]>;

/**
 * Parses a sub-command's arguments the one way every command does: a parse error goes to stderr
 * with the usage (exit 2), `--help` prints the usage (exit 0). Returns the parsed values, or the
 * exit code when the command should stop there.
 */
export function parseCommand<T extends Options>(
  argv: string[],
  options: T,
  usage: string,
  io: Io,
):
  | {
      values: ReturnType<typeof parseArgs<{ options: T; allowPositionals: true }>>["values"];
      positionals: string[];
    }
  | number {
  let parsed: ReturnType<typeof parseArgs<{ options: T; allowPositionals: true }>>;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true });
  } catch (error) {
    io.err(`${(error as Error).message}\n\n${usage}`);
    return 2;
  }
  if ((parsed.values as { help?: boolean }).help) {
    io.out(usage);
    return 0;
  }
  return parsed;
}
