import { describe, expect, it } from "vitest";
import { clock } from "./clock.js";

// 20:00 UTC on a Friday is already Saturday morning in Tokyo, which shows the zone is applied.
const FIXED = new Date("2024-03-15T20:00:00.000Z");
const ctx = { signal: new AbortController().signal, now: () => FIXED };

interface ClockOutput {
  iso: string;
  timezone: string;
  local: string;
  unix: number;
}

const read = async (timezone?: string): Promise<ClockOutput> =>
  JSON.parse(await clock.handler(timezone === undefined ? {} : { timezone }, ctx)) as ClockOutput;

describe("clock tool", () => {
  it("defaults to UTC and uses ctx.now", async () => {
    const out = await read();
    expect(Object.keys(out)).toEqual(["iso", "timezone", "local", "unix"]);
    expect(out.iso).toBe("2024-03-15T20:00:00.000Z");
    expect(out.timezone).toBe("UTC");
    expect(out.unix).toBe(1710532800);
    // ICU puts a narrow no-break space before AM/PM, hence \s.
    expect(out.local).toMatch(/^Friday, March 15, 2024 at 8:00:00\sPM UTC$/);
  });

  it("shows local time in Asia/Tokyo while iso and unix stay UTC", async () => {
    const out = await read("Asia/Tokyo");
    expect(out.iso).toBe("2024-03-15T20:00:00.000Z");
    expect(out.timezone).toBe("Asia/Tokyo");
    expect(out.unix).toBe(1710532800);
    expect(out.local).toMatch(/^Saturday, March 16, 2024 at 5:00:00\sAM GMT\+9$/);
  });

  it("returns the canonical spelling of the zone", async () => {
    expect((await read("europe/paris")).timezone).toBe("Europe/Paris");
  });

  it("floors unix to whole seconds", async () => {
    const late = { ...ctx, now: () => new Date("2024-03-15T20:00:00.999Z") };
    const out = JSON.parse(await clock.handler({}, late)) as ClockOutput;
    expect(out.unix).toBe(1710532800);
  });

  it("rejects an unknown zone with a readable message", () => {
    expect(() => clock.handler({ timezone: "Mars/Olympus_Mons" }, ctx)).toThrow(
      new Error('unknown time zone "Mars/Olympus_Mons"'),
    );
    expect(() => clock.handler({ timezone: "" }, ctx)).toThrow('unknown time zone ""');
  });
});
