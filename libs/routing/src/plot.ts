/**
 * The quality-vs-cost plot `handoff router eval --plot out.svg` writes: for each routing strategy,
 * the share of prompts answered correctly (y) against the share of prompts sent to the strong model
 * (x, 0–100%), next to the random and oracle baselines and the always-weak, always-strong and
 * target reference lines. The output is one self-contained SVG 1.1 document (no fonts, scripts or
 * images), with a white background so it also reads on GitHub's dark theme, and it is a pure
 * function of its input: the same input gives the same string.
 */

export interface PlotSeries {
  /** Legend label, e.g. "learned" or "cascade". */
  name: string;
  /** Curve points: x = strong share in [0,1], y = quality in [0,1]; sorted by x, starting at x=0 and ending at x=1. Can be thousands of points (piecewise-linear). */
  points: ReadonlyArray<readonly [number, number]>;
  /** Baselines (random, oracle) are drawn dashed and muted; strategies solid and coloured. */
  kind: "strategy" | "baseline";
  /** Optional marker: the x where this series first reaches the target quality (drawn as a dot with a small label like "35%"). */
  mark?: number;
}

export interface PlotInput {
  title: string; // e.g. "Routing on held-out prompts (2,888 prompts)"
  series: PlotSeries[];
  /** Horizontal reference lines: always-weak quality, always-strong quality, and the target (95% of always-strong). */
  lines: Array<{ label: string; y: number; style: "weak" | "strong" | "target" }>;
  width?: number; // default 760
  height?: number; // default 480
}

/** Most points drawn per series; longer curves are simplified to this many or fewer. */
const MAX_POINTS = 400;
/** How far (in pixels) a simplified curve may stray from the original before the cap forces more. */
const TOLERANCE_PX = 0.5;

const FONT_STACK =
  'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Helvetica, Arial, sans-serif';

/** Okabe–Ito colours for the strategies (the yellow is left out: it vanishes on white). */
const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000"];

const INK = "#1f2328";
const MUTED_INK = "#57606a";
const GRID = "#e6e8eb";
const AXIS = "#8c959f";

interface Stroke {
  color: string;
  width: number;
  dash?: string;
  cap?: "round" | "butt";
}

const BASELINE_STYLES: Record<"random" | "oracle" | "other", Stroke> = {
  random: { color: "#8c959f", width: 1.75, dash: "6 4" },
  oracle: { color: "#24292f", width: 2, dash: "0.1 4", cap: "round" },
  other: { color: "#6e7781", width: 1.75, dash: "10 3 2 3" },
};

const LINE_STYLES: Record<"weak" | "strong" | "target", Stroke> = {
  weak: { color: "#afb8c1", width: 1.25 },
  strong: { color: "#57606a", width: 1.25 },
  target: { color: "#B3257D", width: 1.5, dash: "7 4" },
};

/** Renders the plot as a standalone SVG document. Throws an Error naming the problem on bad input. */
export function renderPlotSvg(input: PlotInput): string {
  validate(input);
  const width = input.width ?? 760;
  const height = input.height ?? 480;

  // Vertical range: every curve point and every reference line, with a margin, on a nice step.
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (const s of input.series) {
    for (const [, y] of s.points) {
      lo = Math.min(lo, y);
      hi = Math.max(hi, y);
    }
  }
  for (const line of input.lines) {
    lo = Math.min(lo, line.y);
    hi = Math.max(hi, line.y);
  }
  const yAxis = niceRange(lo, hi);

  // Legend: one row per series, then one per reference line, then the key for the marks.
  const strategies = input.series.filter((s) => s.kind === "strategy");
  const baselines = input.series.filter((s) => s.kind === "baseline");
  const strokes = new Map<PlotSeries, Stroke>();
  strategies.forEach((s, i) => {
    strokes.set(s, { color: PALETTE[i % PALETTE.length] as string, width: 2.5 });
  });
  const usedBaseline = new Set<string>();
  for (const s of baselines) {
    const key = /oracle/i.test(s.name) ? "oracle" : /random/i.test(s.name) ? "random" : "other";
    const fallback = (["random", "oracle", "other"] as const).find((k) => !usedBaseline.has(k));
    const chosen = usedBaseline.has(key) && fallback !== undefined ? fallback : key;
    usedBaseline.add(chosen);
    strokes.set(s, BASELINE_STYLES[chosen]);
  }
  const hasMarks = input.series.some((s) => s.mark !== undefined);

  type Row =
    | { type: "series"; series: PlotSeries; text: string }
    | { type: "line"; line: PlotInput["lines"][number]; text: string }
    | { type: "mark"; text: string }
    | { type: "gap" };
  const rows: Row[] = [];
  for (const s of [...strategies, ...baselines])
    rows.push({ type: "series", series: s, text: s.name });
  if (input.lines.length > 0) {
    rows.push({ type: "gap" });
    for (const line of input.lines) rows.push({ type: "line", line, text: line.label });
  }
  if (hasMarks) {
    rows.push({ type: "gap" });
    rows.push({ type: "mark", text: "reaches the target" });
  }

  const legendFont = 12;
  const swatchW = 26;
  const legendPad = 10;
  const maxLegendText = Math.max(80, Math.round(width * 0.24));
  const legendTextW = Math.min(
    maxLegendText,
    Math.max(0, ...rows.map((r) => (r.type === "gap" ? 0 : textWidth(r.text, legendFont)))),
  );
  const legendW = Math.ceil(legendPad * 2 + swatchW + 8 + legendTextW);
  const tagW = input.lines.length > 0 ? 42 : 0;

  const plotLeft = 66;
  const plotTop = 50;
  const legendX = width - 12 - legendW;
  const plotRight = legendX - 14 - tagW;
  const plotBottom = height - 58;
  const plotW = plotRight - plotLeft;
  const plotH = plotBottom - plotTop;
  if (plotW < 80 || plotH < 80) {
    throw new Error(
      `renderPlotSvg: ${width}×${height} leaves no room for the plot area (need at least about 300×200)`,
    );
  }
  const px = (x: number) => plotLeft + x * plotW;
  const py = (y: number) => plotBottom - ((y - yAxis.min) / (yAxis.max - yAxis.min)) * plotH;

  const out: string[] = [];
  out.push('<?xml version="1.0" encoding="UTF-8"?>');
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${esc(FONT_STACK)}">`,
  );
  out.push(`<title>${esc(input.title)}</title>`);
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);

  // Title, shrunk (down to a limit) and then cut when it would not fit across the image; the
  // <title> element above keeps it whole.
  const titleRoom = width - plotLeft - 12;
  let titleSize = 16;
  while (titleSize > 12 && textWidth(input.title, titleSize, true) > titleRoom) titleSize -= 1;
  const title = truncate(input.title, titleSize, titleRoom, true);
  out.push(
    `<text class="title" x="${fmt(plotLeft)}" y="30" font-size="${titleSize}" font-weight="600" fill="${INK}">${esc(title)}</text>`,
  );

  // Plot area, gridlines and tick labels.
  out.push(
    `<rect class="plot-area" x="${fmt(plotLeft)}" y="${fmt(plotTop)}" width="${fmt(plotW)}" height="${fmt(plotH)}" fill="#ffffff"/>`,
  );
  out.push(`<g class="grid" stroke="${GRID}" stroke-width="1" shape-rendering="crispEdges">`);
  for (let i = 0; i <= 10; i++) {
    const x = fmt(px(i / 10));
    out.push(
      `<line class="grid-x" x1="${x}" y1="${fmt(plotTop)}" x2="${x}" y2="${fmt(plotBottom)}"/>`,
    );
  }
  for (const t of yAxis.ticks) {
    const y = fmt(py(t));
    out.push(
      `<line class="grid-y" x1="${fmt(plotLeft)}" y1="${y}" x2="${fmt(plotRight)}" y2="${y}"/>`,
    );
  }
  out.push("</g>");

  out.push(`<g font-size="11" fill="${MUTED_INK}">`);
  for (let i = 0; i <= 10; i++) {
    out.push(
      `<text class="x-tick" x="${fmt(px(i / 10))}" y="${fmt(plotBottom + 17)}" text-anchor="middle">${i * 10}%</text>`,
    );
  }
  for (const t of yAxis.ticks) {
    out.push(
      `<text class="y-tick" x="${fmt(plotLeft - 7)}" y="${fmt(py(t) + 4)}" text-anchor="end">${pct(t, yAxis.decimals)}</text>`,
    );
  }
  out.push("</g>");

  out.push(
    `<text class="axis-title" x="${fmt(plotLeft + plotW / 2)}" y="${fmt(plotBottom + 42)}" text-anchor="middle" font-size="12.5" fill="${INK}">Calls to the strong model (%)</text>`,
  );
  const yTitleX = 18;
  const yTitleY = plotTop + plotH / 2;
  out.push(
    `<text class="axis-title" x="${fmt(yTitleX)}" y="${fmt(yTitleY)}" transform="rotate(-90 ${fmt(yTitleX)} ${fmt(yTitleY)})" text-anchor="middle" font-size="12.5" fill="${INK}">Quality (share answered correctly)</text>`,
  );

  // Reference lines across the plot area, with their values just outside its right edge.
  if (input.lines.length > 0) {
    out.push('<g class="reference-lines" fill="none">');
    for (const line of input.lines) {
      const y = fmt(py(line.y));
      out.push(
        `<line class="ref ref-${line.style}" x1="${fmt(plotLeft)}" y1="${y}" x2="${fmt(plotRight)}" y2="${y}"${strokeAttrs(LINE_STYLES[line.style])}/>`,
      );
    }
    out.push("</g>");
    const tags = spreadLabels(
      input.lines.map((l) => py(l.y)),
      13,
      plotTop,
      plotBottom,
    );
    out.push('<g class="reference-values" font-size="11" font-weight="600">');
    input.lines.forEach((line, i) => {
      const color = line.style === "weak" ? "#6e7781" : LINE_STYLES[line.style].color;
      out.push(
        `<text x="${fmt(plotRight + 5)}" y="${fmt((tags[i] as number) + 4)}" fill="${color}">${pct(line.y, 1)}</text>`,
      );
    });
    out.push("</g>");
  }

  // Curves: baselines underneath, strategies on top, in the order given.
  out.push('<g class="curves" fill="none" stroke-linejoin="round" stroke-linecap="round">');
  for (const s of [...baselines, ...strategies]) {
    const pts = simplify(
      s.points.map(([x, y]) => [px(x), py(y)] as const),
      TOLERANCE_PX,
      MAX_POINTS,
    );
    const d = pts.map(([x, y], i) => `${i === 0 ? "M" : "L"}${fmt(x)} ${fmt(y)}`).join("");
    out.push(
      `<path class="series series-${s.kind}" d="${d}"${strokeAttrs(strokes.get(s) as Stroke)}/>`,
    );
  }
  out.push("</g>");

  // Marks: a dot where each series first reaches the target, a faint drop line to the x axis, and
  // the x value next to the dot (placed where it does not cover another mark's label).
  const marked = [...strategies, ...baselines].filter((s) => s.mark !== undefined);
  if (marked.length > 0) {
    const placed: Box[] = [];
    const dots = marked.map((s) => {
      const x = px(s.mark as number);
      const y = py(interpolate(s.points, s.mark as number));
      return { s, x, y };
    });
    for (const { x, y } of dots) placed.push({ x0: x - 5, y0: y - 5, x1: x + 5, y1: y + 5 });
    out.push('<g class="marks">');
    for (const { s, x, y } of dots) {
      const color = (strokes.get(s) as Stroke).color;
      out.push(
        `<line x1="${fmt(x)}" y1="${fmt(y + 5)}" x2="${fmt(x)}" y2="${fmt(plotBottom)}" stroke="${color}" stroke-width="1" stroke-opacity="0.45" stroke-dasharray="2 3"/>`,
      );
    }
    for (const { s, x, y } of dots) {
      const color = (strokes.get(s) as Stroke).color;
      out.push(
        `<circle class="mark" cx="${fmt(x)}" cy="${fmt(y)}" r="4.5" fill="${color}" stroke="#ffffff" stroke-width="1.5"/>`,
      );
    }
    for (const { s, x, y } of dots) {
      const color = (strokes.get(s) as Stroke).color;
      const label = markLabel(s.mark as number);
      const w = textWidth(label, 11, true);
      // Up-left of the dot first: a curve crossing the target rises from lower left to upper right.
      const candidates: Array<{ anchor: "start" | "end"; tx: number; ty: number }> = [
        { anchor: "end", tx: x - 6, ty: y - 7 },
        { anchor: "start", tx: x + 6, ty: y + 15 },
        { anchor: "end", tx: x - 6, ty: y + 15 },
        { anchor: "start", tx: x + 6, ty: y - 7 },
      ];
      const boxOf = (c: (typeof candidates)[number]): Box => ({
        x0: c.anchor === "end" ? c.tx - w : c.tx,
        x1: c.anchor === "end" ? c.tx : c.tx + w,
        y0: c.ty - 10,
        y1: c.ty + 2,
      });
      const pick =
        candidates.find((c) => !placed.some((b) => overlaps(b, boxOf(c)))) ??
        (candidates[0] as (typeof candidates)[number]);
      placed.push(boxOf(pick));
      const attrs = `x="${fmt(pick.tx)}" y="${fmt(pick.ty)}" text-anchor="${pick.anchor}" font-size="11" font-weight="700"`;
      // Drawn twice, a white outline under the fill, so the label reads on top of curves.
      out.push(
        `<text ${attrs} fill="#ffffff" stroke="#ffffff" stroke-width="3" stroke-linejoin="round">${label}</text>`,
      );
      out.push(`<text class="mark-label" ${attrs} fill="${color}">${label}</text>`);
    }
    out.push("</g>");
  }

  // Axis frame on top of everything drawn in the plot area.
  out.push(
    `<rect x="${fmt(plotLeft)}" y="${fmt(plotTop)}" width="${fmt(plotW)}" height="${fmt(plotH)}" fill="none" stroke="${AXIS}" stroke-width="1" shape-rendering="crispEdges"/>`,
  );

  // Legend.
  const rowH = 20;
  const gapH = 8;
  const legendH =
    legendPad * 2 + rows.reduce((sum, r) => sum + (r.type === "gap" ? gapH : rowH), 0) - 4;
  out.push(`<g class="legend" font-size="${legendFont}" fill="${INK}">`);
  out.push(
    `<rect x="${fmt(legendX)}" y="${fmt(plotTop)}" width="${fmt(legendW)}" height="${fmt(legendH)}" rx="4" fill="#ffffff" stroke="#d0d7de"/>`,
  );
  let rowY = plotTop + legendPad + 8;
  const sx0 = legendX + legendPad;
  const sx1 = sx0 + swatchW;
  const tx = sx1 + 8;
  for (const r of rows) {
    if (r.type === "gap") {
      const y = rowY - 8 + gapH / 2 - 2;
      out.push(
        `<line x1="${fmt(sx0)}" y1="${fmt(y)}" x2="${fmt(legendX + legendW - legendPad)}" y2="${fmt(y)}" stroke="#eaeef2"/>`,
      );
      rowY += gapH;
      continue;
    }
    const text = esc(truncate(r.text, legendFont, legendTextW));
    if (r.type === "series") {
      out.push(
        `<g class="legend-series"><line x1="${fmt(sx0)}" y1="${fmt(rowY)}" x2="${fmt(sx1)}" y2="${fmt(rowY)}"${strokeAttrs({ ...(strokes.get(r.series) as Stroke), cap: "round" })}/><text x="${fmt(tx)}" y="${fmt(rowY + 4)}">${text}</text></g>`,
      );
    } else if (r.type === "line") {
      out.push(
        `<g class="legend-line"><line x1="${fmt(sx0)}" y1="${fmt(rowY)}" x2="${fmt(sx1)}" y2="${fmt(rowY)}"${strokeAttrs(LINE_STYLES[r.line.style])}/><text x="${fmt(tx)}" y="${fmt(rowY + 4)}" fill="${MUTED_INK}">${text}</text></g>`,
      );
    } else {
      out.push(
        `<g class="legend-mark"><circle cx="${fmt((sx0 + sx1) / 2)}" cy="${fmt(rowY)}" r="4.5" fill="${MUTED_INK}" stroke="#ffffff" stroke-width="1.5"/><text x="${fmt(tx)}" y="${fmt(rowY + 4)}" fill="${MUTED_INK}">${text}</text></g>`,
      );
    }
    rowY += rowH;
  }
  out.push("</g>");

  out.push("</svg>");
  return `${out.join("\n")}\n`;
}

function validate(input: PlotInput): void {
  if (input === null || typeof input !== "object") {
    throw new Error("renderPlotSvg: input must be an object");
  }
  if (typeof input.title !== "string") throw new Error("renderPlotSvg: title must be a string");
  if (!Array.isArray(input.series) || input.series.length === 0) {
    throw new Error("renderPlotSvg: no series to plot (series is empty)");
  }
  if (!Array.isArray(input.lines)) throw new Error("renderPlotSvg: lines must be an array");
  for (const [key, value, min] of [
    ["width", input.width, 300],
    ["height", input.height, 200],
  ] as const) {
    if (value !== undefined && !(Number.isFinite(value) && value >= min && value <= 10_000)) {
      throw new Error(`renderPlotSvg: ${key} must be a number from ${min} to 10000, got ${value}`);
    }
  }
  input.series.forEach((s, si) => {
    const name = typeof s?.name === "string" ? JSON.stringify(s.name) : `#${si}`;
    if (typeof s?.name !== "string") throw new Error(`renderPlotSvg: series ${name} has no name`);
    if (s.kind !== "strategy" && s.kind !== "baseline") {
      throw new Error(
        `renderPlotSvg: series ${name} has kind ${JSON.stringify(s.kind)}; expected "strategy" or "baseline"`,
      );
    }
    if (!Array.isArray(s.points) || s.points.length < 2) {
      throw new Error(`renderPlotSvg: series ${name} needs at least 2 points`);
    }
    let prevX = Number.NEGATIVE_INFINITY;
    s.points.forEach((p, i) => {
      const x = p?.[0];
      const y = p?.[1];
      if (!isUnit(x) || !isUnit(y)) {
        throw new Error(
          `renderPlotSvg: series ${name} point ${i} is (${x}, ${y}); x and y must be numbers in [0, 1]`,
        );
      }
      if (x < prevX) {
        throw new Error(
          `renderPlotSvg: series ${name} point ${i} has x=${x} after x=${prevX}; points must be sorted by x`,
        );
      }
      prevX = x;
    });
    if (s.mark !== undefined && !isUnit(s.mark)) {
      throw new Error(`renderPlotSvg: series ${name} has mark ${s.mark}; it must be in [0, 1]`);
    }
  });
  input.lines.forEach((line, i) => {
    const label = typeof line?.label === "string" ? JSON.stringify(line.label) : `#${i}`;
    if (typeof line?.label !== "string")
      throw new Error(`renderPlotSvg: line ${label} has no label`);
    if (!isUnit(line.y)) {
      throw new Error(`renderPlotSvg: line ${label} has y=${line.y}; it must be in [0, 1]`);
    }
    if (line.style !== "weak" && line.style !== "strong" && line.style !== "target") {
      throw new Error(
        `renderPlotSvg: line ${label} has style ${JSON.stringify(line.style)}; expected "weak", "strong" or "target"`,
      );
    }
  });
}

function isUnit(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v) && v >= 0 && v <= 1;
}

interface YAxis {
  min: number;
  max: number;
  ticks: number[];
  /** Decimals the tick labels need, in percent. */
  decimals: number;
}

/**
 * The y range: the data's range widened by a margin, its ends rounded out to the finest of the
 * nice steps (1, 2, 5, 10, 20, 25 points of percentage) that gives at most 8 intervals, clamped to
 * [0, 1]. Computed in whole steps so that 0.05 * k prints as 5k%, not 5k.000000001%.
 */
function niceRange(lo: number, hi: number): YAxis {
  const pad = Math.max((hi - lo) * 0.06, 0.01);
  const steps = [0.01, 0.02, 0.05, 0.1, 0.2, 0.25];
  let step = steps[steps.length - 1] as number;
  let k0 = 0;
  let k1 = Math.round(1 / step);
  for (const s of steps) {
    const a = Math.max(0, Math.floor((lo - pad) / s + 1e-9));
    const b = Math.min(Math.round(1 / s), Math.ceil((hi + pad) / s - 1e-9));
    if (b - a <= 8) {
      step = s;
      k0 = a;
      k1 = b;
      break;
    }
  }
  if (k1 <= k0) k1 = k0 + 1;
  const ticks: number[] = [];
  for (let k = k0; k <= k1; k++) ticks.push(Math.round(k * step * 1e6) / 1e6);
  return { min: ticks[0] as number, max: ticks.at(-1) as number, ticks, decimals: 0 };
}

/** Linear interpolation of a curve sorted by x, at x; the first point at that x if several. */
function interpolate(points: ReadonlyArray<readonly [number, number]>, x: number): number {
  let lo = 0;
  let hi = points.length - 1;
  const first = points[0] as readonly [number, number];
  const last = points[hi] as readonly [number, number];
  if (x <= first[0]) return first[1];
  if (x >= last[0]) return last[1];
  // Smallest index with points[i][0] >= x.
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((points[mid] as readonly [number, number])[0] < x) lo = mid + 1;
    else hi = mid;
  }
  const b = points[lo] as readonly [number, number];
  const a = points[lo - 1] as readonly [number, number];
  if (b[0] === x || b[0] === a[0]) return b[1];
  return a[1] + ((x - a[0]) / (b[0] - a[0])) * (b[1] - a[1]);
}

type Pt = readonly [number, number];

/**
 * Ramer–Douglas–Peucker in pixel space: keeps the first and last points and every point needed to
 * stay within `tolerance` pixels of the original polyline; if that still leaves more than
 * `maxPoints`, the tolerance grows until it does not.
 */
function simplify(points: readonly Pt[], tolerance: number, maxPoints: number): Pt[] {
  if (points.length <= 2) return [...points];
  let eps = tolerance;
  for (;;) {
    const keep = rdp(points, eps);
    if (keep.length <= maxPoints) return keep;
    eps *= 1.5;
  }
}

function rdp(points: readonly Pt[], eps: number): Pt[] {
  const n = points.length;
  const keep = new Uint8Array(n);
  keep[0] = 1;
  keep[n - 1] = 1;
  const stack: Array<[number, number]> = [[0, n - 1]];
  while (stack.length > 0) {
    const [i, j] = stack.pop() as [number, number];
    if (j <= i + 1) continue;
    const a = points[i] as Pt;
    const b = points[j] as Pt;
    let worst = -1;
    let worstD = eps;
    for (let k = i + 1; k < j; k++) {
      const d = segmentDistance(points[k] as Pt, a, b);
      if (d > worstD) {
        worstD = d;
        worst = k;
      }
    }
    if (worst >= 0) {
      keep[worst] = 1;
      stack.push([i, worst], [worst, j]);
    }
  }
  const out: Pt[] = [];
  for (let k = 0; k < n; k++) if (keep[k]) out.push(points[k] as Pt);
  return out;
}

function segmentDistance(p: Pt, a: Pt, b: Pt): number {
  const dx = b[0] - a[0];
  const dy = b[1] - a[1];
  const len2 = dx * dx + dy * dy;
  let t = len2 === 0 ? 0 : ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len2;
  t = Math.max(0, Math.min(1, t));
  return Math.hypot(p[0] - (a[0] + t * dx), p[1] - (a[1] + t * dy));
}

/**
 * Vertical positions for labels wanted at `ys`, moved apart to at least `gap` pixels and kept
 * within [top, bottom], in the order given.
 */
function spreadLabels(ys: number[], gap: number, top: number, bottom: number): number[] {
  const order = ys.map((y, i) => ({ y, i })).sort((p, q) => p.y - q.y || p.i - q.i);
  const pos = order.map((o) => o.y);
  for (let k = 1; k < pos.length; k++) {
    pos[k] = Math.max(pos[k] as number, (pos[k - 1] as number) + gap);
  }
  const overflow = (pos.at(-1) ?? bottom) - bottom;
  if (overflow > 0) {
    pos[pos.length - 1] = bottom;
    for (let k = pos.length - 2; k >= 0; k--) {
      pos[k] = Math.min(pos[k] as number, (pos[k + 1] as number) - gap);
    }
  }
  for (let k = 0; k < pos.length; k++) pos[k] = Math.max(pos[k] as number, top);
  const out = new Array<number>(ys.length);
  order.forEach((o, k) => {
    out[o.i] = pos[k] as number;
  });
  return out;
}

interface Box {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

function overlaps(a: Box, b: Box): boolean {
  return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;
}

function strokeAttrs(s: Stroke): string {
  let attrs = ` stroke="${s.color}" stroke-width="${fmt(s.width)}"`;
  if (s.dash !== undefined) attrs += ` stroke-dasharray="${s.dash}"`;
  if (s.cap !== undefined) attrs += ` stroke-linecap="${s.cap}"`;
  return attrs;
}

/** A coordinate with at most one decimal, no trailing zeros, and never "-0". */
function fmt(n: number): string {
  const r = Math.round(n * 10) / 10;
  return String(r === 0 ? 0 : r);
}

/** A share as a percentage with the given decimals, e.g. pct(0.7505, 1) = "75.1%". */
function pct(share: number, decimals: number): string {
  const v = Math.round(share * 100 * 10 ** decimals) / 10 ** decimals;
  return `${v.toFixed(decimals)}%`;
}

/** A mark's x as a whole percentage, or with one decimal below 1% (so 0.4% is not "0%"). */
function markLabel(x: number): string {
  const p = x * 100;
  return p > 0 && p < 0.95 ? pct(x, 1) : pct(x, 0);
}

/** Escapes text for XML content and attribute values; drops characters XML 1.0 forbids. */
function esc(text: string): string {
  let out = "";
  for (const ch of text) {
    const c = ch.codePointAt(0) as number;
    if (c < 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) continue;
    if (c === 0xfffe || c === 0xffff) continue;
    if (c >= 0xd800 && c <= 0xdfff)
      out += "\uFFFD"; // a lone surrogate
    else if (ch === "&") out += "&amp;";
    else if (ch === "<") out += "&lt;";
    else if (ch === ">") out += "&gt;";
    else if (ch === '"') out += "&quot;";
    else if (ch === "'") out += "&apos;";
    else out += ch;
  }
  return out;
}

/**
 * A rough width of text in a sans-serif font, for layout only (no font metrics at hand); on the
 * generous side (DejaVu Sans, the widest common fallback), so that boxes fit the text.
 */
function textWidth(text: string, size: number, bold = false): number {
  let em = 0;
  for (const ch of text) {
    if (/[iljI.,:;'|!()[\]{} ]/.test(ch)) em += 0.32;
    else if (/[mwMW@%]/.test(ch)) em += 0.92;
    else if (/[A-Z]/.test(ch)) em += 0.7;
    else if (/[0-9]/.test(ch)) em += 0.64;
    else if (/[frt]/.test(ch)) em += 0.42;
    else em += 0.6;
  }
  return em * size * (bold ? 1.2 : 1);
}

/** The text cut (with an ellipsis) to fit in maxWidth, or the text itself when it fits. */
function truncate(text: string, size: number, maxWidth: number, bold = false): string {
  if (textWidth(text, size, bold) <= maxWidth) return text;
  const chars = [...text];
  while (chars.length > 1 && textWidth(`${chars.join("")}…`, size, bold) > maxWidth) chars.pop();
  return `${chars.join("")}…`;
}
