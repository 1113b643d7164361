import { describe, expect, it } from "vitest";
import { type PlotInput, type PlotSeries, renderPlotSvg } from "./plot.js";

/**
 * A small well-formedness checker: one root element, balanced and properly nested tags, quoted
 * attributes without duplicates, and no raw `<` or stray `&` in text or attribute values.
 * Returns the problems found (none for a well-formed document).
 */
function xmlProblems(xml: string): string[] {
  const problems: string[] = [];
  const entity = /&(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);/g;
  const checkText = (text: string, where: string) => {
    const stripped = text.replace(entity, "");
    if (stripped.includes("&")) problems.push(`stray & in ${where}: ${text.slice(0, 40)}`);
    if (stripped.includes("<")) problems.push(`raw < in ${where}: ${text.slice(0, 40)}`);
  };
  let rest = xml.replace(/^<\?xml[^?]*\?>/, "").replace(/<!--[\s\S]*?-->/g, "");
  const stack: string[] = [];
  let roots = 0;
  const tagRe = /^<(\/?)([A-Za-z_][\w.:-]*)((?:\s+[A-Za-z_][\w.:-]*\s*=\s*"[^"]*")*)\s*(\/?)>/;
  while (rest.length > 0) {
    const lt = rest.indexOf("<");
    const text = lt < 0 ? rest : rest.slice(0, lt);
    if (stack.length === 0 && text.trim() !== "") problems.push(`text outside the root: ${text}`);
    checkText(text, "text");
    if (lt < 0) break;
    rest = rest.slice(lt);
    const m = tagRe.exec(rest);
    if (!m) {
      problems.push(`malformed tag: ${rest.slice(0, 60)}`);
      break;
    }
    const [whole, closing, name, attrs = "", selfClosing] = m;
    const seen = new Set<string>();
    for (const a of attrs.matchAll(/([A-Za-z_][\w.:-]*)\s*=\s*"([^"]*)"/g)) {
      const [, key = "", value = ""] = a;
      if (seen.has(key)) problems.push(`duplicate attribute ${key} on <${name}>`);
      seen.add(key);
      checkText(value, `attribute ${key} of <${name}>`);
    }
    if (closing) {
      if (attrs.trim() !== "" || selfClosing) problems.push(`bad closing tag ${whole}`);
      const open = stack.pop();
      if (open !== name) problems.push(`</${name}> closes <${open}>`);
    } else {
      if (stack.length === 0) roots++;
      if (!selfClosing) stack.push(name as string);
    }
    rest = rest.slice(whole.length);
  }
  if (stack.length > 0) problems.push(`unclosed: ${stack.join(" > ")}`);
  if (roots !== 1) problems.push(`${roots} root elements`);
  return problems;
}

/** Every element `<name ...>` whose class attribute contains `cls`, as attribute maps. */
function elements(svg: string, name: string, cls?: string): Array<Record<string, string>> {
  const out: Array<Record<string, string>> = [];
  for (const m of svg.matchAll(new RegExp(`<${name}\\b([^>]*)>`, "g"))) {
    const attrs: Record<string, string> = {};
    for (const a of (m[1] ?? "").matchAll(/([\w:-]+)="([^"]*)"/g))
      attrs[a[1] as string] = a[2] ?? "";
    if (cls === undefined || (attrs.class ?? "").split(" ").includes(cls)) out.push(attrs);
  }
  return out;
}

function pathPoints(d: string): Array<[number, number]> {
  return [...d.matchAll(/[ML](-?[\d.]+) (-?[\d.]+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
}

function curve(n: number, f: (x: number) => number): Array<[number, number]> {
  return Array.from({ length: n + 1 }, (_, i) => [i / n, f(i / n)] as [number, number]);
}

function sampleInput(): PlotInput {
  return {
    title: "Routing on held-out prompts (2,888 prompts)",
    series: [
      {
        name: "random",
        kind: "baseline",
        points: [
          [0, 0.65],
          [1, 0.79],
        ],
      },
      {
        name: "oracle",
        kind: "baseline",
        points: [
          [0, 0.65],
          [0.2, 0.848],
          [1, 0.79],
        ],
      },
      {
        name: "learned",
        kind: "strategy",
        points: curve(2888, (x) => 0.65 + 0.14 * Math.sqrt(x) + 0.004 * Math.sin(x * 400)),
        mark: 0.35,
      },
      {
        name: "cascade",
        kind: "strategy",
        points: curve(1000, (x) => 0.65 + 0.14 * x ** 0.7),
        mark: 0.48,
      },
    ],
    lines: [
      { label: "always-weak", y: 0.65, style: "weak" },
      { label: "always-strong", y: 0.79, style: "strong" },
      { label: "target (95% of strong)", y: 0.7505, style: "target" },
    ],
  };
}

describe("renderPlotSvg", () => {
  it("produces a well-formed standalone SVG document", () => {
    const svg = renderPlotSvg(sampleInput());
    expect(xmlProblems(svg)).toEqual([]);
    expect(svg).toMatch(/<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" version="1\.1"/);
    expect(svg).toContain('width="760" height="480" viewBox="0 0 760 480"');
    // A white background first thing, for GitHub's dark theme.
    expect(svg).toMatch(/<title>[^<]*<\/title>\n<rect width="760" height="480" fill="#ffffff"\/>/);
    // Nothing external: no scripts, images, links, or web fonts.
    expect(svg).not.toMatch(/<script|<image|href=|@import|@font-face|url\(/);
    expect(svg).toContain("system-ui");
  });

  it("the checker itself rejects broken markup", () => {
    expect(xmlProblems("<svg><g></svg>")).not.toEqual([]);
    expect(xmlProblems('<svg><text a="1" a="2">x</text></svg>')).not.toEqual([]);
    expect(xmlProblems("<svg><text>a & b</text></svg>")).not.toEqual([]);
    expect(xmlProblems("<svg/><svg/>")).not.toEqual([]);
    expect(xmlProblems('<svg><text x="1">a &amp; b</text></svg>')).toEqual([]);
  });

  it("draws one path and one legend entry per series, baselines dashed, strategies solid", () => {
    const input = sampleInput();
    const svg = renderPlotSvg(input);
    const paths = elements(svg, "path", "series");
    expect(paths).toHaveLength(input.series.length);
    const baselines = elements(svg, "path", "series-baseline");
    const strategies = elements(svg, "path", "series-strategy");
    expect(baselines).toHaveLength(2);
    expect(strategies).toHaveLength(2);
    for (const p of baselines) expect(p["stroke-dasharray"]).toBeDefined();
    for (const p of strategies) expect(p["stroke-dasharray"]).toBeUndefined();
    // Strategies get distinct colours.
    expect(new Set(strategies.map((p) => p.stroke)).size).toBe(2);

    const legend = [
      ...svg.matchAll(/<g class="legend-series">.*?<text[^>]*>([^<]*)<\/text><\/g>/g),
    ];
    expect(legend.map((m) => m[1]).sort()).toEqual(input.series.map((s) => s.name).sort());
    const lineLegend = [
      ...svg.matchAll(/<g class="legend-line">.*?<text[^>]*>([^<]*)<\/text><\/g>/g),
    ];
    expect(lineLegend.map((m) => m[1])).toEqual(input.lines.map((l) => l.label));
  });

  it("draws each reference line across the plot, with its value", () => {
    const svg = renderPlotSvg(sampleInput());
    expect(elements(svg, "line", "ref")).toHaveLength(3);
    expect(elements(svg, "line", "ref-target")[0]?.["stroke-dasharray"]).toBeDefined();
    for (const v of ["65.0%", "79.0%", "75.1%"]) expect(svg).toContain(`>${v}</text>`);
  });

  it("marks where a series reaches the target, labelled with its x", () => {
    const svg = renderPlotSvg(sampleInput());
    expect(elements(svg, "circle", "mark")).toHaveLength(2);
    const labels = [...svg.matchAll(/<text class="mark-label"[^>]*>([^<]*)<\/text>/g)].map(
      (m) => m[1],
    );
    expect(labels).toEqual(["35%", "48%"]);
  });

  it("escapes hostile text everywhere it appears", () => {
    const input = sampleInput();
    input.title = `<script>&"'`;
    (input.series[2] as PlotSeries).name = `a<b>&"c'`;
    (input.lines[0] as PlotInput["lines"][number]).label = "weak & <cheap>";
    const svg = renderPlotSvg(input);
    expect(xmlProblems(svg)).toEqual([]);
    expect(svg).not.toContain("<script");
    expect(svg).toContain("&lt;script&gt;&amp;&quot;&apos;");
    expect(svg).toContain("a&lt;b&gt;&amp;&quot;c&apos;");
    expect(svg).toContain("weak &amp; &lt;cheap&gt;");

    // Characters XML 1.0 cannot carry at all are dropped (or replaced), not passed through.
    input.title = "bell\u0007 and a lone \uD800 surrogate";
    const odd = renderPlotSvg(input);
    const controls = [...odd].filter((ch) => ch < " " && ch !== "\n" && ch !== "\t");
    expect(controls).toEqual([]);
    expect(odd).toContain("bell and a lone \uFFFD surrogate");
  });

  it("downsamples long curves: bounded, first and last kept, shape within a pixel", () => {
    // A wiggly curve that needs many points, and a straight one that needs two.
    const wiggly = curve(5000, (x) => 0.5 + 0.4 * Math.sqrt(x) + 0.02 * Math.sin(x * 150));
    wiggly[0] = [0, 0.5];
    wiggly[5000] = [1, 0.9];
    const input: PlotInput = {
      title: "t",
      series: [
        { name: "wiggly", kind: "strategy", points: wiggly },
        { name: "straight", kind: "baseline", points: curve(4000, (x) => 0.5 + 0.4 * x) },
      ],
      lines: [
        { label: "weak", y: 0.5, style: "weak" },
        { label: "strong", y: 0.9, style: "strong" },
      ],
    };
    const svg = renderPlotSvg(input);
    const [straightPath, wigglyPath] = elements(svg, "path", "series"); // baselines first
    const pts = pathPoints(wigglyPath?.d ?? "");
    expect(pts.length).toBeGreaterThan(20);
    expect(pts.length).toBeLessThanOrEqual(400);
    expect(pathPoints(straightPath?.d ?? "")).toHaveLength(2);

    // Pixel mapping, read off the drawing: x from the 0% and 100% gridlines, y from the lines.
    const gridX = elements(svg, "line", "grid-x").map((l) => Number(l.x1));
    const left = gridX[0] as number;
    const right = gridX.at(-1) as number;
    const yWeak = Number(elements(svg, "line", "ref-weak")[0]?.y1);
    const yStrong = Number(elements(svg, "line", "ref-strong")[0]?.y1);
    const toPx = ([x, y]: readonly [number, number]): [number, number] => [
      left + x * (right - left),
      yWeak + ((y - 0.5) / 0.4) * (yStrong - yWeak),
    ];
    // First and last points are kept exactly (to print precision).
    expect(pts[0]?.[0]).toBeCloseTo(left, 1);
    expect(pts[0]?.[1]).toBeCloseTo(yWeak, 1);
    expect(pts.at(-1)?.[0]).toBeCloseTo(right, 1);
    expect(pts.at(-1)?.[1]).toBeCloseTo(yStrong, 1);
    // Every original point lies within a pixel of the drawn polyline.
    const distance = (p: [number, number]) => {
      let best = Number.POSITIVE_INFINITY;
      for (let k = 1; k < pts.length; k++) {
        const [ax, ay] = pts[k - 1] as [number, number];
        const [bx, by] = pts[k] as [number, number];
        const dx = bx - ax;
        const dy = by - ay;
        const t = Math.max(
          0,
          Math.min(1, ((p[0] - ax) * dx + (p[1] - ay) * dy) / (dx * dx + dy * dy)),
        );
        best = Math.min(best, Math.hypot(p[0] - ax - t * dx, p[1] - ay - t * dy));
      }
      return best;
    };
    const worst = Math.max(...wiggly.filter((_, i) => i % 7 === 0).map((p) => distance(toPx(p))));
    expect(worst).toBeLessThan(1);
  });

  it("caps the point count even for a curve too noisy to simplify", () => {
    let seed = 7;
    const noisy = curve(6000, () => {
      seed = (seed * 1664525 + 1013904223) >>> 0;
      return 0.3 + 0.6 * (seed / 2 ** 32);
    });
    const svg = renderPlotSvg({
      title: "noise",
      series: [{ name: "noisy", kind: "strategy", points: noisy }],
      lines: [],
    });
    const pts = pathPoints(elements(svg, "path", "series")[0]?.d ?? "");
    expect(pts.length).toBeLessThanOrEqual(400);
    expect(pts[0]?.[0]).toBe(Number(elements(svg, "line", "grid-x")[0]?.x1));
    expect(pts.at(-1)?.[0]).toBe(Number(elements(svg, "line", "grid-x")[10]?.x1));
  });

  it("prints numbers with at most two decimals", () => {
    const svg = renderPlotSvg(sampleInput());
    expect(svg).not.toMatch(/\d\.\d{3,}/);
  });

  it("chooses a y range that includes every line and point, on a nice step", () => {
    const input: PlotInput = {
      title: "range",
      series: [{ name: "s", kind: "strategy", points: curve(50, (x) => 0.6 + 0.2 * x) }],
      lines: [
        { label: "low", y: 0.31, style: "weak" },
        { label: "high", y: 0.97, style: "strong" },
        { label: "target", y: 0.9215, style: "target" },
      ],
    };
    const svg = renderPlotSvg(input);
    const area = elements(svg, "rect", "plot-area")[0] as Record<string, string>;
    const top = Number(area.y);
    const bottom = top + Number(area.height);
    for (const line of elements(svg, "line", "ref")) {
      expect(Number(line.y1)).toBeGreaterThan(top);
      expect(Number(line.y1)).toBeLessThan(bottom);
    }
    const ticks = [...svg.matchAll(/<text class="y-tick"[^>]*>([\d.]+)%<\/text>/g)].map((m) =>
      Number(m[1]),
    );
    expect(ticks[0]).toBeLessThan(31);
    expect(ticks.at(-1)).toBeGreaterThan(97);
    expect(ticks.at(-1)).toBeLessThanOrEqual(100);
    const steps = new Set(ticks.slice(1).map((t, i) => t - (ticks[i] as number)));
    expect(steps.size).toBe(1);
    expect([1, 2, 5, 10, 20, 25]).toContain([...steps][0]);

    // A narrow range gets a fine step, and still covers the data.
    const narrow = renderPlotSvg({
      title: "narrow",
      series: [
        {
          name: "s",
          kind: "strategy",
          points: [
            [0, 0.7],
            [1, 0.74],
          ],
        },
      ],
      lines: [],
    });
    const fine = [...narrow.matchAll(/<text class="y-tick"[^>]*>([\d.]+)%<\/text>/g)].map((m) =>
      Number(m[1]),
    );
    expect(fine[0]).toBeLessThanOrEqual(70);
    expect(fine.at(-1)).toBeGreaterThanOrEqual(74);
    expect(fine.length).toBeGreaterThanOrEqual(4);
  });

  it("labels the axes and the x ticks from 0% to 100% every 10%", () => {
    const svg = renderPlotSvg(sampleInput());
    expect(svg).toContain(">Calls to the strong model (%)</text>");
    expect(svg).toContain(">Quality (share answered correctly)</text>");
    const xTicks = [...svg.matchAll(/<text class="x-tick"[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]);
    expect(xTicks).toEqual(Array.from({ length: 11 }, (_, i) => `${i * 10}%`));
  });

  it("is deterministic", () => {
    const a = renderPlotSvg(sampleInput());
    const b = renderPlotSvg(structuredClone(sampleInput()));
    expect(b).toBe(a);
    expect(renderPlotSvg(sampleInput())).toBe(a);
  });

  it("honours width and height", () => {
    const svg = renderPlotSvg({ ...sampleInput(), width: 1000, height: 600 });
    expect(svg).toContain('width="1000" height="600" viewBox="0 0 1000 600"');
    expect(xmlProblems(svg)).toEqual([]);
  });

  it("rejects invalid input with a message naming the problem", () => {
    expect(() => renderPlotSvg({ title: "t", series: [], lines: [] })).toThrow(/no series/);

    const withPoint = (p: [number, number]): PlotInput => {
      const input = sampleInput();
      const cascade = input.series[3] as PlotSeries;
      const points = [...cascade.points] as Array<[number, number]>;
      points[3] = p;
      input.series[3] = { ...cascade, points };
      return input;
    };
    expect(() => renderPlotSvg(withPoint([Number.NaN, 0.7]))).toThrow(/"cascade" point 3\b/);
    expect(() => renderPlotSvg(withPoint([0.003, 1.2]))).toThrow(/"cascade" point 3\b.*\[0, 1\]/);
    expect(() => renderPlotSvg(withPoint([0.003, -0.1]))).toThrow(/"cascade"/);
    expect(() => renderPlotSvg(withPoint([0.9, 0.7]))).toThrow(/"cascade" point 4.*sorted/);

    const badMark = sampleInput();
    (badMark.series[2] as PlotSeries).mark = 1.5;
    expect(() => renderPlotSvg(badMark)).toThrow(/"learned" has mark 1\.5/);

    const badLine = sampleInput();
    (badLine.lines[1] as PlotInput["lines"][number]).y = Number.NaN;
    expect(() => renderPlotSvg(badLine)).toThrow(/line "always-strong"/);

    const onePoint = sampleInput();
    (onePoint.series[0] as PlotSeries).points = [[0, 0.65]];
    expect(() => renderPlotSvg(onePoint)).toThrow(/"random" needs at least 2 points/);

    expect(() => renderPlotSvg({ ...sampleInput(), width: 50 })).toThrow(/width/);
  });
});
