import { z } from "zod";
import { defineTool } from "./tool.js";

/** Builds the formatter, turning the runtime's RangeError into a message the model can act on. */
function localFormatter(timeZone: string): Intl.DateTimeFormat {
  try {
    return new Intl.DateTimeFormat("en-US", { dateStyle: "full", timeStyle: "long", timeZone });
  } catch (err) {
    if (err instanceof RangeError) throw new Error(`unknown time zone "${timeZone}"`);
    throw err;
  }
}

/** The current date and time, because models do not know it. */
export const clock = defineTool({
  name: "clock",
  idempotent: true,
  description:
    "Returns the current date and time as JSON: iso (ISO 8601, UTC), timezone, local (readable " +
    "date and time in that zone) and unix (seconds since 1970-01-01 UTC).",
  input: z.object({
    timezone: z.string().optional().describe("IANA time zone, e.g. Europe/Paris; default UTC"),
  }),
  handler: ({ timezone = "UTC" }, ctx) => {
    const formatter = localFormatter(timezone);
    const now = ctx.now();
    return JSON.stringify({
      iso: now.toISOString(),
      // The canonical spelling, so "europe/paris" comes back as "Europe/Paris".
      timezone: formatter.resolvedOptions().timeZone,
      local: formatter.format(now),
      unix: Math.floor(now.getTime() / 1000),
    });
  },
});
