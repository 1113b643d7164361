import { describe, expect, it } from "vitest";
import type { MachineFacts } from "./proc.ts";
import {
  escapeXml,
  formatGrowth,
  growth,
  HEAP_RULE,
  IDLE_RULE,
  judge,
  judgeChange,
  lastHalfStart,
  niceStep,
  peakGrowth,
  peakRanges,
  RSS_RULE,
  renderHeapVerdicts,
  renderLinePlotSvg,
  renderRoundTable,
  renderRssVerdicts,
  renderSoakMarkdown,
  renderSoakSvg,
  type SoakReport,
  type SoakRound,
  verdicts,
  yRange,
} from "./soak-report.ts";

const machine: MachineFacts = {
  cpuModel: "Test CPU",
  cores: 2,
  memoryGiB: 8,
  kernel: "Linux 6.0",
  loadAverage: 0.5,
  node: "v24.0.0",
  natsServer: "nats-server: v2.10.0",
};

/**
 * A report of `rss.length` rounds of 10,000 requests: per process, its RSS and heap after each
 * round (heap optional), and its readings before the load and idle.
 */
function report(
  series: Record<
    string,
    { rss: number[]; heap?: number[]; start?: [number, number]; idle?: [number, number] }
  >,
  services: string[] = Object.keys(series),
): SoakReport {
  const names = Object.keys(series);
  const n = Math.max(...names.map((name) => series[name]?.rss.length ?? 0));
  const rounds: SoakRound[] = Array.from({ length: n }, (_, i) => ({
    round: i + 1,
    requests: 10_000,
    totalRequests: (i + 1) * 10_000,
    elapsedMs: 20_000,
    opsPerSec: 500,
    p50Ms: 25,
    p99Ms: 110,
    memory: Object.fromEntries(
      names.map((name) => [
        name,
        {
          rssMb: series[name]?.rss[i] ?? Number.NaN,
          heapMb: series[name]?.heap?.[i],
          heapTotalMb: series[name]?.heap ? 100 : undefined,
        },
      ]),
    ),
  }));
  const snapshot = (which: "start" | "idle") => {
    const memory = Object.fromEntries(
      names.flatMap((name) => {
        const reading = series[name]?.[which];
        return reading ? [[name, { rssMb: reading[0], heapMb: reading[1] }]] : [];
      }),
    );
    return Object.keys(memory).length > 0 ? { idleMs: 65_000, memory } : undefined;
  };
  return {
    settings: { n: n * 10_000, concurrency: 16, rounds: n, settleMs: 2_000, warmup: 2_000 },
    machine,
    command: "npm run build && SOAK_N=100000 node bench/soak.bench.ts",
    processes: names,
    services,
    rounds,
    start: snapshot("start"),
    idle: snapshot("idle"),
    heapNote: "Heap read through the inspector.",
    startedAt: new Date("2025-01-01T00:00:00Z"),
    finishedAt: new Date("2025-01-01T00:05:00Z"),
    warnings: [],
    audit: "| what | where | bound |\n| --- | --- | --- |\n| `#busy` | runner.ts | finally |",
  };
}

describe("lastHalfStart", () => {
  it("is the round that ends the first half, 0-based", () => {
    expect(lastHalfStart(10)).toBe(4); // from the end of round 5 to the end of round 10
    expect(lastHalfStart(4)).toBe(1);
    expect(lastHalfStart(3)).toBe(0);
    expect(lastHalfStart(2)).toBe(0);
    expect(lastHalfStart(1)).toBe(0);
  });
});

describe("growth", () => {
  const totals = [10_000, 20_000, 30_000, 40_000];

  it("measures the change between two rounds, absolute, relative and per 10k requests", () => {
    const g = growth([100, 110, 120, 150], totals, 1, 3);
    expect(g).toMatchObject({ from: 2, to: 4, startMb: 110, endMb: 150, requests: 20_000 });
    expect(g?.deltaMb).toBeCloseTo(40);
    expect(g?.relative).toBeCloseTo(40 / 110);
    expect(g?.mbPer10k).toBeCloseTo(20);
    expect(formatGrowth(g)).toBe("+40.0 MB (+36.4%)");
  });

  it("shows a shrink as negative", () => {
    expect(formatGrowth(growth([200, 150], totals, 0, 1))).toBe("-50.0 MB (-25.0%)");
  });

  it("is undefined when an end is unknown or the rounds are not in order", () => {
    expect(growth([100, undefined, 120], totals, 1, 2)).toBeUndefined();
    expect(growth([100, Number.NaN], totals, 0, 1)).toBeUndefined();
    expect(growth([100, 120], totals, 1, 1)).toBeUndefined();
    expect(formatGrowth(undefined)).toBe("n/a");
  });
});

describe("peakGrowth", () => {
  const totals = Array.from({ length: 10 }, (_, i) => (i + 1) * 10_000);

  it("compares the peaks of the two halves, after the warm-up round", () => {
    expect(peakRanges(10)).toEqual({ first: [2, 5], last: [6, 10] });
    expect(peakRanges(4)).toEqual({ first: [2, 2], last: [3, 4] });
    expect(peakRanges(3)).toEqual({ first: [1, 1], last: [2, 3] });
    expect(peakRanges(2)).toEqual({ first: [1, 1], last: [2, 2] });
  });

  it("does not count a dip as growth: a steady process whose reading fell for a round", () => {
    // The classifier of one run: 300 MB at rounds 4 and 5, about 333 MB at every other.
    const rss = [335.8, 333.8, 331.9, 301.2, 300.6, 333.5, 326.2, 333.0, 334.8, 333.4];
    const peaks = peakGrowth(rss, totals);
    expect(peaks).toMatchObject({ from: 2, to: 9, startMb: 333.8, endMb: 334.8 });
    expect(judge(peaks, RSS_RULE)).toBe("steady");
    // The end points alone would have called it growing.
    expect(judge(growth(rss, totals, 4, 9), RSS_RULE)).toBe("growing");
  });

  it("catches a leak, which lifts the peaks with everything else", () => {
    const rss = Array.from({ length: 10 }, (_, i) => 200 + 4 * i + (i % 2 === 0 ? 5 : -5));
    const peaks = peakGrowth(rss, totals);
    expect(peaks?.deltaMb).toBeCloseTo(16); // 221 at round 5, 237 at round 9
    expect(peaks?.requests).toBe(50_000);
    expect(peaks?.mbPer10k).toBeCloseTo(3.2);
    expect(judge(peaks, RSS_RULE)).toBe("growing");
  });

  it("has nothing to compare with fewer than two rounds or no readings", () => {
    expect(peakGrowth([100], [10_000])).toBeUndefined();
    expect(peakGrowth([100, undefined], [1, 2])).toBeUndefined();
  });
});

describe("the RSS verdict", () => {
  const at = (rssMb: number) => ({ memory: { classifier: { rssMb } } });
  const report = (rss: number[], start: number, idle: number | undefined) => ({
    processes: ["classifier"],
    services: ["classifier"],
    rounds: rss.map((rssMb, i) => ({ ...at(rssMb), totalRequests: (i + 1) * 10_000 })),
    start: at(start),
    idle: idle === undefined ? undefined : at(idle),
  });
  // The classifier of one run with the young-generation cap: one high reading at rounds 6 and 7
  // (the old generation before a full GC), back to the first half's level after.
  const spike = [175.4, 179.2, 182.0, 181.7, 184.8, 213.4, 196.7, 181.0, 185.0, 180.4];

  it("is steady when the peaks grew but the process came back to its start once idle", () => {
    const [v] = verdicts(report(spike, 165.3, 122.8) as never);
    expect(v?.peaks?.deltaMb).toBeCloseTo(28.6);
    expect(v?.backWhenIdle).toBe(true);
    expect(v?.verdict).toBe("steady");
  });

  it("is growing when the peaks grew and the process kept it while idle, or was not read idle", () => {
    const leak = Array.from({ length: 10 }, (_, i) => 170 + 5 * i);
    const [kept] = verdicts(report(leak, 165, 210) as never);
    expect(kept?.backWhenIdle).toBe(false);
    expect(kept?.verdict).toBe("growing");
    const [unread] = verdicts(report(spike, 165.3, undefined) as never);
    expect(unread?.backWhenIdle).toBeUndefined();
    expect(unread?.verdict).toBe("growing");
  });
});

describe("judge", () => {
  const g = (startMb: number, endMb: number) => growth([startMb, endMb], [1, 2], 0, 1);

  it("calls steady what grew under the absolute allowance, or under the relative one", () => {
    expect(judge(g(100, 109.9), RSS_RULE)).toBe("steady"); // +9.9 MB
    expect(judge(g(400, 415), RSS_RULE)).toBe("steady"); // +15 MB, but +3.75%
    expect(judge(g(100, 80), RSS_RULE)).toBe("steady"); // shrinking
    expect(judge(g(30, 31.9), HEAP_RULE)).toBe("steady");
  });

  it("calls growing what exceeds both", () => {
    expect(judge(g(100, 111), RSS_RULE)).toBe("growing"); // +11 MB, +11%
    expect(judge(g(30, 33), HEAP_RULE)).toBe("growing"); // +3 MB, +10%
    expect(judge(undefined, RSS_RULE)).toBe("n/a");
  });

  it("judges a change from a start the same way", () => {
    expect(judgeChange(30, 4.9, IDLE_RULE)).toBe("steady");
    expect(judgeChange(80, 7, IDLE_RULE)).toBe("steady"); // +8.75%
    expect(judgeChange(30, 6, IDLE_RULE)).toBe("growing");
    expect(judgeChange(30, Number.NaN, IDLE_RULE)).toBe("n/a");
  });
});

describe("verdicts", () => {
  const noisy = [180, 120, 124, 119, 125, 121, 126, 120, 123, 122];
  const leaking = Array.from({ length: 10 }, (_, i) => 120 + 6 * i);

  it("ignores the warm-up round, judges the last half, and checks the limit", () => {
    const v = verdicts(
      report(
        {
          steady: { rss: noisy, heap: noisy.map((x) => x / 4) },
          leaky: { rss: leaking, heap: leaking.map((x) => x / 4) },
          "nats-server": { rss: leaking.map((x) => x * 2) },
        },
        ["steady", "leaky"],
      ),
    );
    const [steady, leaky, nats] = v;
    expect(steady?.afterWarmup).toMatchObject({ from: 2, to: 10, startMb: 120, endMb: 122 });
    expect(steady?.lastHalf).toMatchObject({ from: 5, to: 10 });
    expect(steady?.verdict).toBe("steady");
    expect(steady?.heapVerdict).toBe("steady");
    expect(steady?.underLimit).toBe(true);
    expect(leaky?.verdict).toBe("growing"); // +30 MB over the last half
    expect(leaky?.heapVerdict).toBe("growing");
    expect(leaky?.lastHalf?.mbPer10k).toBeCloseTo(6);
    expect(leaky?.underLimit).toBe(true); // 174 MB
    // Not a service: no limit, no heap.
    expect(nats?.underLimit).toBeUndefined();
    expect(nats?.heapVerdict).toBe("n/a");
  });

  it("judges the heap by the idle reading against the start, whatever it did under load", () => {
    // Under load the heap follows the rate (jobs held until their deadline): it "grows" over the
    // last half here, yet comes back once idle.
    const rising = [60, 70, 80, 90, 100, 110, 120, 130, 140, 150];
    const [back, kept] = verdicts(
      report({
        back: { rss: noisy, heap: rising, start: [110, 30], idle: [150, 31] },
        kept: { rss: noisy, heap: noisy.map(() => 60), start: [110, 30], idle: [250, 45] },
      }),
    );
    expect(judge(back?.heapLastHalf, HEAP_RULE)).toBe("growing");
    expect(back?.heapLeftMb).toBeCloseTo(1);
    expect(back?.heapVerdict).toBe("steady");
    expect(back?.underLimitIdle).toBe(true);
    expect(kept?.heapLeftMb).toBeCloseTo(15);
    expect(kept?.heapVerdict).toBe("growing");
    expect(kept?.underLimitIdle).toBe(false);
  });

  it("has nothing to judge with a single round", () => {
    const [only] = verdicts(report({ one: { rss: [100] } }));
    expect(only?.lastHalf).toBeUndefined();
    expect(only?.verdict).toBe("n/a");
    expect(only?.finalRssMb).toBe(100);
  });
});

describe("tables and the report", () => {
  const full = report(
    {
      gateway: {
        rss: [150, 140, 141, 142, 140, 141, 142, 141, 140, 141],
        heap: [31, 31, 31, 31, 31, 31, 31, 31, 31, 31],
        start: [120, 30],
        idle: [139, 30.5],
      },
      classifier: {
        rss: [250, 240, 241, 242, 250, 251, 262, 271, 280, 290],
        heap: [60, 61, 62, 63, 64, 65, 70, 75, 80, 85],
        start: [120, 30],
        idle: [285, 70],
      },
      "nats-server": { rss: [40, 60, 80, 100, 120, 140, 160, 180, 200, 220], start: [20, 0] },
    },
    ["gateway", "classifier"],
  );

  it("has a row per reading: before the load, each round, idle", () => {
    const rss = renderRoundTable(full, "rss");
    const lines = rss.split("\n");
    expect(lines[0]).toMatch(/^\| reading +\| requests \| req\/s \| p50 ms \| p99 ms \| gateway/);
    expect(lines[2]).toMatch(/^\| start /);
    expect(lines[3]).toMatch(/^\| round 1 +\| +10000 \| +500 \| +25.0 \| +110.0 \| +150.0 /);
    expect(lines.at(-1)).toMatch(/^\| idle 65 s \| +100000 \|/);
    const heap = renderRoundTable(full, "heap");
    expect(heap).toContain("31.0 / 100");
    // nats-server has no heap reading.
    expect(heap.split("\n")[3]).toMatch(/\| +n\/a \|$/);
  });

  it("marks what broke the limit or kept growing", () => {
    const rss = renderRssVerdicts(full);
    expect(rss.split("\n")[0]).toContain("< 200 MB at r10");
    expect(rss.split("\n")[0]).toContain("< 200 MB idle");
    const classifier = rss.split("\n").find((l) => l.startsWith("| classifier")) ?? "";
    expect(classifier).toContain("growing");
    expect(classifier).toContain("**NO**");
    expect(rss).toContain("(not a service)");
    const heap = renderHeapVerdicts(full);
    expect(heap.split("\n")[0]).toMatch(/\| idle \| idle − start \| verdict +\|$/);
    expect(heap).not.toContain("nats-server");
    const gatewayHeap = heap.split("\n").find((l) => l.startsWith("| gateway")) ?? "";
    expect(gatewayHeap).toMatch(/\| +30\.5 \| +\+0\.5 MB \| steady +\|$/);
    expect(heap.split("\n").find((l) => l.startsWith("| classifier"))).toContain("**growing**");
  });

  it("writes the markdown with the result, the method, the machine, the plot and the audit", () => {
    const md = renderSoakMarkdown(full, "soak.svg");
    expect(md.startsWith("# Soak benchmark\n")).toBe(true);
    for (const heading of [
      "## Result",
      "## How it was measured",
      "## Machine",
      "## RSS (MB)",
      "## V8 heap after a full GC, used / committed (MB)",
      "## In-process maps",
    ]) {
      expect(md).toContain(`\n${heading}\n`);
    }
    expect(md).toContain("![RSS and heap per process");
    expect(md).toContain("(soak.svg)");
    expect(md).toContain("npm run build && SOAK_N=100000 node bench/soak.bench.ts");
    expect(md).toContain("Test CPU, 2 cores, 8 GiB RAM");
    const text = md.replace(/\s+/g, " ");
    expect(text).toContain(
      "- `gateway`: RSS steady (its peak in the last half of the rounds +0.0 MB (+0.0%) on the first half's); heap after GC steady: 30.0 MB before the load, 30.5 MB idle after it; RSS 141.0 MB after the last round (under 200 MB), 139.0 MB idle (under).",
    );
    expect(text).toContain(
      "- `classifier`: RSS growing (its peak in the last half of the rounds +40.0 MB",
    );
    expect(text).toContain("heap after GC growing: 30.0 MB before the load, 70.0 MB idle after it");
    expect(text).toContain("(over 200 MB), 285.0 MB idle (over)");
    expect(text).toContain("after 2000 warm-up requests");
    expect(text).toContain("Before them, 2000 warm-up requests");
    expect(md).toContain("| `#busy` | runner.ts | finally |");
    expect(text).toContain("stands idle for 65 s");
  });

  it("leaves the heap out when it was not read", () => {
    const rssOnly = report({ gateway: { rss: [150, 140, 141] } });
    rssOnly.audit = undefined;
    const md = renderSoakMarkdown(rssOnly);
    expect(md).not.toContain("V8 heap");
    expect(md).not.toContain("## In-process maps");
    const svg = renderSoakSvg(rssOnly);
    expect(svg.match(/<polyline /g)).toHaveLength(1);
  });
});

describe("the plot", () => {
  it("is one SVG document with a line per process per panel and the readings as labels", () => {
    const svg = renderLinePlotSvg(
      "Memory <test> & more",
      ["start", "1", "2", "idle"],
      [
        {
          title: "RSS (MB)",
          lines: [
            { name: "gateway", values: [100, 120, 121, 110] },
            { name: "classifier", values: [100, 200, 210, 150] },
          ],
        },
        { title: "heap", lines: [{ name: "gateway", values: [30, 31, 31, 30] }] },
      ],
    );
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith("</svg>")).toBe(true);
    expect(svg.match(/<polyline /g)).toHaveLength(3);
    expect(svg.match(/<circle /g)).toHaveLength(12);
    expect(svg).toContain("Memory &lt;test&gt; &amp; more");
    expect(svg).toContain(">idle</text>");
    expect(svg).toContain(">start</text>");
    expect(svg).not.toMatch(/NaN|undefined/);
    // Pure: the same input, the same text.
    const again = renderLinePlotSvg(
      "x",
      ["1"],
      [{ title: "t", lines: [{ name: "a", values: [1] }] }],
    );
    expect(again).toBe(
      renderLinePlotSvg("x", ["1"], [{ title: "t", lines: [{ name: "a", values: [1] }] }]),
    );
  });

  it("breaks a line where a reading is missing", () => {
    const svg = renderLinePlotSvg(
      "gap",
      ["1", "2", "3", "4", "5"],
      [{ title: "t", lines: [{ name: "a", values: [1, 2, undefined, 4, 5] }] }],
    );
    expect(svg.match(/<polyline /g)).toHaveLength(2);
    expect(svg.match(/<circle /g)).toHaveLength(4);
  });

  it("refuses input it cannot draw", () => {
    expect(() => renderLinePlotSvg("x", [], [])).toThrow(/nothing to plot/);
    expect(() =>
      renderLinePlotSvg("x", ["1", "2"], [{ title: "t", lines: [{ name: "a", values: [1] }] }]),
    ).toThrow(/line a has 1 values for 2 labels/);
  });

  it("plots the readings of a report: start, every round, idle", () => {
    const svg = renderSoakSvg(
      report({ gateway: { rss: [150, 140], heap: [31, 31], start: [120, 30], idle: [139, 30] } }),
    );
    expect(svg).toContain(">start</text>");
    expect(svg).toContain(">idle</text>");
    expect(svg.match(/<polyline /g)).toHaveLength(2); // RSS and heap
  });
});

describe("axes", () => {
  it("steps by 1, 2 or 5 times a power of ten", () => {
    expect(niceStep(100)).toBe(20);
    expect(niceStep(480)).toBe(100);
    expect(niceStep(7)).toBe(2);
    expect(niceStep(0)).toBe(1);
    expect(niceStep(Number.NaN)).toBe(1);
  });

  it("starts at 0 and ends a step above the highest value", () => {
    expect(yRange([100, 480])).toEqual({ max: 600, step: 200 });
    expect(yRange([100, 300])).toEqual({ max: 400, step: 100 });
    expect(yRange([])).toEqual({ max: 1, step: 0.2 });
    expect(yRange([Number.NaN, 10])).toEqual({ max: 15, step: 5 });
  });

  it("escapes XML text", () => {
    expect(escapeXml(`<a href="x">&</a>`)).toBe("&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;");
  });
});
