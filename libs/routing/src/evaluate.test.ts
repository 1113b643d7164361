import { describe, expect, it } from "vitest";
import {
  apgr,
  type Labels,
  oracleCurve,
  qualityAt,
  qualityCurve,
  randomCurve,
  shareAbove,
  shareFor,
  thresholdForShare,
} from "./evaluate.js";

const L = (weak: boolean, strong: boolean): Labels => ({ weak, strong });
// Four prompts: the strong model wins on two, loses on one, and both fail the last.
const labels = [L(false, true), L(false, true), L(true, false), L(false, false)];

describe("qualityCurve", () => {
  it("starts at always-weak and ends at always-strong", () => {
    const curve = qualityCurve([0.9, 0.8, 0.1, 0.2], labels);
    expect(curve.weakQuality).toBe(0.25);
    expect(curve.strongQuality).toBe(0.5);
    expect(curve.points[0]).toMatchObject({ share: 0, quality: 0.25 });
    expect(curve.points.at(-1)).toMatchObject({ share: 1, quality: 0.5 });
  });

  it("follows the order of the scores, highest first", () => {
    const curve = qualityCurve([0.9, 0.8, 0.1, 0.2], labels);
    expect(curve.points.map((p) => [p.share, p.quality])).toEqual([
      [0, 0.25],
      [0.25, 0.5],
      [0.5, 0.75],
      [0.75, 0.75],
      [1, 0.5],
    ]);
    expect(curve.points[2]?.threshold).toBe(0.8);
  });

  it("takes tied scores as one step: the average of every order they could come in", () => {
    const tied = qualityCurve([0.5, 0.5, 0.5, 0.5], labels);
    expect(tied.points.map((p) => [p.share, p.quality])).toEqual([
      [0, 0.25],
      [1, 0.5],
    ]);
    // Halfway along a run of ties is halfway between its ends, whatever order the rows are in.
    expect(qualityAt(tied, 0.5)).toBeCloseTo(0.375, 12);
    const reordered = qualityCurve([0.5, 0.5, 0.5, 0.5], [...labels].reverse());
    expect(qualityAt(reordered, 0.5)).toBeCloseTo(0.375, 12);
  });

  it("refuses mismatched lengths and empty input", () => {
    expect(() => qualityCurve([1, 2], labels)).toThrow(/one length/);
    expect(() => qualityCurve([], [])).toThrow(/non-empty/);
  });
});

describe("strong share at a target quality", () => {
  it("interpolates inside the step that crosses the target", () => {
    const curve = qualityCurve([0.9, 0.8, 0.1, 0.2], labels);
    expect(shareFor(curve, 0.5)).toBe(0.25);
    expect(shareFor(curve, 0.625)).toBeCloseTo(0.375, 12);
    expect(shareFor(curve, 0.9)).toBeUndefined();
  });

  it("is zero when the weak model already reaches the target", () => {
    expect(shareFor(qualityCurve([1, 0, 0, 0], labels), 0.2)).toBe(0);
  });

  it("is the straight line's share for random, and the first wins for the oracle", () => {
    const target = 0.95 * 0.5;
    expect(shareFor(randomCurve(labels), target)).toBeCloseTo((target - 0.25) / 0.25, 12);
    expect(shareFor(oracleCurve(labels), target)).toBeCloseTo(0.225, 12);
  });
});

describe("apgr", () => {
  it("is one half for a router that picks at random", () => {
    expect(apgr(randomCurve(labels))).toBeCloseTo(0.5, 12);
  });

  it("is larger for the oracle than for a router that sends the wrong prompts first", () => {
    const worst = qualityCurve([0, 0, 1, 1], labels);
    expect(apgr(oracleCurve(labels))).toBeGreaterThan(1);
    expect(apgr(worst)).toBeLessThan(0.5);
  });
});

describe("thresholds", () => {
  it("finds the score that sends a given share to the strong model", () => {
    const scores = [0.9, 0.1, 0.5, 0.7, 0.3];
    expect(thresholdForShare(scores, 0.4)).toBe(0.7);
    expect(shareAbove(scores, thresholdForShare(scores, 0.4))).toBe(0.4);
    expect(shareAbove(scores, thresholdForShare(scores, 1))).toBe(1);
    expect(shareAbove(scores, thresholdForShare(scores, 0))).toBe(0);
  });

  it("picks the step nearest the share when ties move together", () => {
    const tied = [0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1];
    expect(shareAbove(tied, thresholdForShare(tied, 0.25))).toBe(0.1);
    expect(shareAbove(tied, thresholdForShare(tied, 0.45))).toBe(0.7);
    expect(shareAbove(tied, thresholdForShare(tied, 0.9))).toBe(1);
  });

  it("rejects a share outside [0, 1]", () => {
    expect(() => thresholdForShare([0.5], 1.5)).toThrow(/between 0 and 1/);
  });
});
